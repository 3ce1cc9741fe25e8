"""What a chat brings besides the conversation: instruction files, skills and documents, each kept in a
slot of the conversation model (``attach.Workspace``).

Above the store (documents reuse the log's stop words) and below the app, which attaches it.
"""
