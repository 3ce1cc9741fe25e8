"""The wire: one request value, each endpoint's dialect, the backends that send it and the replies.

Imports the core and the base modules only (never config, chat, store, tools or ui).
"""
