"""The terminal: the REPL, rendering, slash commands, the toolbar.

The only layer (with cli) that imports rich or prompt_toolkit.
"""
