"""The pure core: the conversation model, its slots, policies, counting and accounting.

Imports nothing of the package but the base modules (errors, sanitize, sensitive, validate).
"""
