"""Storage: save files, the conversation log in SQLite, file locks.

Takes values (conversations, ledgers, turn records), never a session.
"""
