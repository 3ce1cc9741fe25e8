"""The turn and the session that holds its state between turns.

Imports core, wire, tools and config; never store or ui (the log and the screen are passed in as hooks).
"""
