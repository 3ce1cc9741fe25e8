"""stateless-chat: a terminal chat client that owns, shows and budgets the conversation's context."""

__version__ = "0.1.0"
