"""The wire: one request value, each endpoint's dialect, the backends that send it and the replies.

Imports the core and the base modules only (never config, chat, store, tools or ui).
"""

# The largest reply body accepted (after decompression): far past any real reply (a 128k-token
# streamed reply is ~30 MB of events), small enough that a decompression bomb cannot exhaust memory.
# Here, not in a module of the wire: the settings read it, and must not import a backend to.
DEFAULT_MAX_REPLY_BYTES = 64 * 1024 * 1024
