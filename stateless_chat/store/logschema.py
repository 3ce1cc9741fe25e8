"""The conversation log's schema, and the migrations that bring any older log to it.

The schema is versioned by ``PRAGMA user_version`` and built by ``MIGRATIONS``, applied in order
from version 1 (a new file runs them all, so a new log and a migrated one are the same). A
migration is a tuple of SQL statements or a function of the connection; append only.

Version 4 stores what is new and nothing twice (``logcodec``): each message of a conversation
once (``texts``, indexed for search and recall), each entry of the conversation with the slot
it is in (``entries``: the conversation is read back from them, no snapshot), a request as its
parameters (``params``, shared) and an ordered reference to stored messages (``requests``), and
every change made between turns (``events``). Migrating a version 3 log checks that every body it
held is rebuilt from the parts to the same text, byte for byte; a body that would not be is
kept verbatim, so nothing is lost.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stateless_chat.store.logcodec import TextRow, dumps, join_body, key_of, ranges, split_body, text_row

# Version 1: conversations (with the latest snapshot), one row per turn, and the latest state
# of every message, indexed by an external-content FTS5 table kept in step by triggers.
_V1 = (
    """CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        started TEXT NOT NULL,      -- ISO 8601, UTC
        active TEXT NOT NULL,       -- when the last turn was logged (or started), ISO 8601, UTC
        model TEXT NOT NULL,        -- of the latest turn
        endpoint TEXT NOT NULL,     -- of the latest turn
        snapshot TEXT               -- JSON save-file dict after the latest turn; NULL before the first
    )""",
    "CREATE INDEX conversations_active ON conversations (active)",
    """CREATE TABLE turns (
        cid TEXT NOT NULL REFERENCES conversations (id),
        turn INTEGER NOT NULL,
        logged_at TEXT NOT NULL,
        model TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        request TEXT NOT NULL,      -- JSON: the exact body sent
        reply TEXT NOT NULL,
        finish_reason TEXT,
        usage TEXT,                 -- JSON as reported, or NULL
        events TEXT NOT NULL,       -- JSON list of one-line strings
        PRIMARY KEY (cid, turn)
    )""",
    """CREATE TABLE messages (
        cid TEXT NOT NULL REFERENCES conversations (id),
        id INTEGER NOT NULL,
        turn INTEGER NOT NULL,
        role TEXT NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,         -- JSON: the message dict in its latest state
        body TEXT NOT NULL,         -- what the index holds: content, tool call names and arguments
        UNIQUE (cid, id)
    )""",
    """CREATE VIRTUAL TABLE messages_fts USING fts5 (
        body, content='messages', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
    )""",
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts (rowid, body) VALUES (new.rowid, new.body);
    END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.rowid, old.body);
    END""",
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages
    WHEN old.body IS NOT new.body BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.rowid, old.body);
        INSERT INTO messages_fts (rowid, body) VALUES (new.rowid, new.body);
    END""",
)


def _usage_sql(*paths: str) -> str:
    """Return SQL for the first whole number found at one of the JSON ``paths`` of ``usage``."""
    cases = " ".join(
        f"WHEN json_type(usage, '{p}') = 'integer' THEN json_extract(usage, '{p}')" for p in paths
    )
    return f"CASE WHEN usage IS NULL THEN NULL {cases} END"


# Version 2: the reported token counts get columns of their own, so they can be summed in SQL;
# turns logged before are filled in from their usage JSON.
_V2 = (
    "ALTER TABLE turns ADD COLUMN prompt_tokens INTEGER",
    "ALTER TABLE turns ADD COLUMN completion_tokens INTEGER",
    "ALTER TABLE turns ADD COLUMN cached_tokens INTEGER",
    f"""UPDATE turns SET
        prompt_tokens = {_usage_sql("$.prompt_tokens")},
        completion_tokens = {_usage_sql("$.completion_tokens")},
        cached_tokens = {_usage_sql("$.cached_tokens", "$.prompt_tokens_details.cached_tokens")}""",
)

# Version 3: a turn may send several requests (a tool loop); ``request`` stays the last one, the one
# ``reply`` answers, and the ones before it are kept in order (NULL when there were none).
_V3 = (
    "ALTER TABLE turns ADD COLUMN earlier TEXT",  # JSON list of request bodies, or NULL
)

# What the full-text index holds of a stored message: its text, then its tool calls' JSON (their
# names and arguments are words of it), or ``plain`` when that holds terminal controls. No
# subquery: FTS5's integrity check refuses a content view with one. ``X`` stands for ``new`` or
# ``old`` in the triggers.
INDEXED_BODY = "coalesce(X.plain, coalesce(X.content, '') || coalesce(char(10) || X.tool_calls, ''))"

# Version 4, the tables (the data of a version 3 log is moved into them by ``_to_v4``).
V4_TABLES = (
    """CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        started TEXT NOT NULL,      -- ISO 8601, UTC
        active TEXT NOT NULL,       -- when it last changed, ISO 8601, UTC
        model TEXT NOT NULL,        -- of the latest turn
        endpoint TEXT NOT NULL,     -- of the latest turn
        head INTEGER NOT NULL DEFAULT 0,  -- counts its writes: a chat that finds it moved on forks
        next_id INTEGER,            -- the conversation's counters; NULL: nothing to continue yet
        next_turn INTEGER,
        next_pos INTEGER NOT NULL DEFAULT 0,  -- the next position in a slot of ``entries``
        settings TEXT,              -- JSON: the settings it was left with (never a key)
        memory TEXT,                -- JSON: the standing notes and whether they are sent; NULL: none yet
        ledger TEXT,                -- JSON list: the accounting of turns not in ``turns`` with theirs
        parent TEXT                 -- the conversation it was forked from
    )""",
    "CREATE INDEX conversations_active ON conversations (active)",
    """CREATE TABLE texts (
        id INTEGER PRIMARY KEY,
        cid TEXT NOT NULL,
        key INTEGER NOT NULL,       -- logcodec.key_of(the message's JSON): to find it again
        role TEXT NOT NULL,
        content TEXT,               -- the text (what the index holds, also of a raw message)
        name TEXT,
        tool_calls TEXT,            -- JSON
        tool_call_id TEXT,
        raw TEXT,                   -- the message's exact JSON when it has another shape; else NULL
        plain TEXT                  -- what the index holds when the text has terminal controls; else NULL
    )""",
    "CREATE INDEX texts_key ON texts (cid, key)",
    f"CREATE VIEW text_bodies (id, body) AS SELECT X.id, {INDEXED_BODY} FROM texts AS X",
    """CREATE VIRTUAL TABLE texts_fts USING fts5 (
        body, content='text_bodies', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    )""",
    f"""CREATE TRIGGER texts_fts_insert AFTER INSERT ON texts BEGIN
        INSERT INTO texts_fts (rowid, body) VALUES (new.id, {INDEXED_BODY.replace("X.", "new.")});
    END""",
    f"""CREATE TRIGGER texts_fts_delete AFTER DELETE ON texts BEGIN
        INSERT INTO texts_fts (texts_fts, rowid, body)
        VALUES ('delete', old.id, {INDEXED_BODY.replace("X.", "old.")});
    END""",
    """CREATE TABLE entries (
        cid TEXT NOT NULL,
        id INTEGER NOT NULL,
        text INTEGER NOT NULL,      -- texts.id: the message
        turn INTEGER NOT NULL,
        kind TEXT NOT NULL,
        slot TEXT,                  -- system, summary, history, recalled, evicted; NULL: left it
        pos INTEGER NOT NULL,       -- the order within its slot
        pinned INTEGER NOT NULL DEFAULT 0,
        source TEXT,
        tokens INTEGER NOT NULL DEFAULT 0,
        finish_reason TEXT,
        evicted_how TEXT,
        evicted_turn INTEGER,
        PRIMARY KEY (cid, id)
    ) WITHOUT ROWID""",
    "CREATE INDEX entries_text ON entries (text)",
    """CREATE TABLE params (
        id INTEGER PRIMARY KEY,
        key INTEGER NOT NULL,       -- logcodec.key_of(json)
        json TEXT NOT NULL,         -- a body with "messages":[] in place of its messages
        at INTEGER NOT NULL         -- where in json the messages go
    )""",
    "CREATE INDEX params_key ON params (key)",
    """CREATE TABLE requests (
        cid TEXT NOT NULL,
        turn INTEGER NOT NULL,
        step INTEGER NOT NULL,      -- 0, 1, ... in the order sent; the last one got the reply
        params INTEGER,             -- params.id
        refs TEXT,                  -- its messages: texts.id in order, as runs ("12-40,43")
        raw TEXT,                   -- the exact body, when it is not stored in parts; else NULL
        PRIMARY KEY (cid, turn, step)
    ) WITHOUT ROWID""",
    """CREATE TABLE turns (
        cid TEXT NOT NULL,
        turn INTEGER NOT NULL,
        logged_at TEXT NOT NULL,
        model TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        answer INTEGER,             -- texts.id of the message the reply became
        reply TEXT,                 -- the reply, when it is not that message's text; else NULL
        finish_reason TEXT,
        usage TEXT,                 -- JSON as reported, or NULL
        events TEXT NOT NULL,       -- JSON list of one-line strings
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        cached_tokens INTEGER,
        seconds REAL,               -- from the turn's start to the end of its reply
        -- the turn's accounting (ledger.TurnStats); NULL for turns logged before version 4, whose
        -- accounting is in conversations.ledger
        estimated_tokens INTEGER,
        baseline_tokens INTEGER,
        evictions INTEGER,
        summary_prompt_tokens INTEGER,
        summary_completion_tokens INTEGER,
        summary_cached_tokens INTEGER,
        predicted_cached_tokens INTEGER,
        cache_break TEXT,
        steps INTEGER,
        PRIMARY KEY (cid, turn)
    ) WITHOUT ROWID""",
    """CREATE TABLE events (
        cid TEXT NOT NULL,
        seq INTEGER NOT NULL,       -- the conversation's head once it was written
        at TEXT NOT NULL,
        turn INTEGER NOT NULL,      -- the turn it came after
        kind TEXT NOT NULL,         -- edit, cancelled, fork, migrated
        what TEXT NOT NULL,         -- one line
        detail TEXT,                -- JSON
        PRIMARY KEY (cid, seq)
    ) WITHOUT ROWID""",
)


def _loads(text: str | None) -> Any:
    """Return the JSON value of ``text``, or None when it is absent or not JSON (a damaged row)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def api_message(data: Mapping[str, Any]) -> dict[str, Any]:
    """Return the API message of a save-file message dict (``persist.entry_data``'s form)."""
    message: dict[str, Any] = {"role": data.get("role"), "content": data.get("content")}
    for key in ("name", "tool_calls", "tool_call_id"):
        if data.get(key) is not None:
            message[key] = data[key]
    return message


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


class _Texts:
    """The stored messages of one conversation while it is migrated: each distinct one once."""

    def __init__(self, db: sqlite3.Connection, cid: str) -> None:
        self.db, self.cid = db, cid
        self.ids: dict[str, int] = {}  # the message's JSON text -> texts.id

    def id_of(self, message: Mapping[str, Any]) -> tuple[int, TextRow]:
        row = text_row(message)
        text = row.json()
        found = self.ids.get(text)
        if found is None:
            found = self.db.execute(
                "INSERT INTO texts (cid, key, role, content, name, tool_calls, tool_call_id, raw, plain)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.cid, key_of(text), row.role, row.content, row.name, row.tool_calls, row.tool_call_id,
                 row.raw, row.plain()),
            ).lastrowid
            assert found is not None
            self.ids[text] = found
        return found, row


class _Params:
    """The stored request parameters while a log is migrated: each distinct one once."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.ids: dict[str, int] = {}

    def id_of(self, params: str, at: int) -> int:
        found = self.ids.get(params)
        if found is None:
            found = self.db.execute("INSERT INTO params (key, json, at) VALUES (?, ?, ?)",
                                    (key_of(params), params, at)).lastrowid
            assert found is not None
            self.ids[params] = found
        return found


def _store_request(db: sqlite3.Connection, cid: str, turn: int, step: int, body: Any, original: str,
                   texts: _Texts, params: _Params) -> None:
    """Store one request body of a version 3 log in parts, or verbatim when the parts would not give
    back ``original`` (its text as it was logged) byte for byte."""
    split = split_body(body) if isinstance(body, dict) else None
    if split is not None:
        rows = [texts.id_of(m) for m in split.messages]
        if join_body(split.params, split.at, (row.json() for _, row in rows)) == original:
            db.execute("INSERT INTO requests (cid, turn, step, params, refs) VALUES (?, ?, ?, ?, ?)",
                       (cid, turn, step, params.id_of(split.params, split.at), ranges([i for i, _ in rows])))
            return
    db.execute("INSERT INTO requests (cid, turn, step, raw) VALUES (?, ?, ?, ?)", (cid, turn, step, original))


def _entry_values(cid: str, data: Mapping[str, Any], text: int, slot: str | None,
                  pos: int) -> tuple[Any, ...]:
    eviction = data.get("eviction")
    how = eviction.get("how") if isinstance(eviction, dict) else None
    kind = data.get("kind")
    source, finish = data.get("source"), data.get("finish_reason")
    return (cid, _int(data.get("id")), text, _int(data.get("turn")),
            kind if isinstance(kind, str) else "turn",
            slot, pos, 1 if data.get("pinned") else 0, source if isinstance(source, str) else None,
            _int(data.get("tokens")), finish if isinstance(finish, str) else None,
            how if isinstance(how, str) else None,
            _int(eviction.get("turn")) if isinstance(eviction, dict) else None)


_INSERT_ENTRY = """INSERT OR REPLACE INTO entries (cid, id, text, turn, kind, slot, pos, pinned, source,
    tokens, finish_reason, evicted_how, evicted_turn) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


def _migrate_conversation(db: sqlite3.Connection, row: Sequence[Any], params: _Params) -> None:
    cid, started, active, model, endpoint, snapshot_text = row
    texts = _Texts(db, cid)
    snapshot = _loads(snapshot_text)
    if not isinstance(snapshot, dict):
        snapshot = None
    pos = 0
    placed: set[int] = set()
    if snapshot is not None:
        live, evicted = snapshot.get("messages"), snapshot.get("evicted")
        slots: list[tuple[str, Any]] = [("system", snapshot.get("system")),
                                        ("summary", snapshot.get("summary"))]
        slots += [("history", m) for m in (live if isinstance(live, list) else ())]
        slots += [("evicted", m) for m in (evicted if isinstance(evicted, list) else ())]
        for slot, data in slots:
            if not isinstance(data, dict) or not isinstance(data.get("role"), str):
                continue
            text, _ = texts.id_of(api_message(data))
            db.execute(_INSERT_ENTRY, _entry_values(cid, data, text, slot, pos))
            placed.add(_int(data.get("id")))
            pos += 1
    rows = db.execute("SELECT data FROM messages_v3 WHERE cid = ? ORDER BY id", (cid,)).fetchall()
    for (data_text,) in rows:
        data = _loads(data_text)
        if not isinstance(data, dict) or not isinstance(data.get("role"), str):
            continue
        if _int(data.get("id"), -1) in placed:
            continue
        text, _ = texts.id_of(api_message(data))
        db.execute(_INSERT_ENTRY, _entry_values(cid, data, text, None, pos))
        pos += 1
    turns = db.execute(
        """SELECT turn, logged_at, model, endpoint, request, reply, finish_reason, usage, events,
                  prompt_tokens, completion_tokens, cached_tokens, earlier
           FROM turns_v3 WHERE cid = ? ORDER BY turn""", (cid,)
    ).fetchall()
    lost: list[str] = []
    for (turn, logged_at, turn_model, turn_endpoint, request, reply, finish, usage, events, prompt,
         completion, cached, earlier) in turns:
        step = 0
        if earlier is not None:
            bodies = _loads(earlier)
            if isinstance(bodies, list) and "[" + ",".join(dumps(b) for b in bodies) + "]" == earlier:
                for body in bodies:
                    _store_request(db, cid, turn, step, body, dumps(body), texts, params)
                    step += 1
            else:  # kept as it was, in the migration's event
                lost.append(earlier)
        _store_request(db, cid, turn, step, _loads(request), request, texts, params)
        answer = texts.ids.get(TextRow("assistant", reply).json())
        db.execute(
            """INSERT INTO turns (cid, turn, logged_at, model, endpoint, answer, reply, finish_reason, usage,
                                  events, prompt_tokens, completion_tokens, cached_tokens)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (cid, turn, logged_at, turn_model, turn_endpoint, answer, None if answer is not None else reply,
             finish, usage, events, prompt, completion, cached),
        )
    next_id = next_turn = settings = ledger = memory = None
    if snapshot is not None:
        if isinstance(snapshot.get("memory"), dict):  # a snapshot from a stateless-chat with standing memory
            memory = dumps({**snapshot["memory"], "sent": True})
        next_id, next_turn = _int(snapshot.get("next_id"), 1), _int(snapshot.get("next_turn"), 1)
        if isinstance(snapshot.get("settings"), dict):
            settings = dumps(snapshot["settings"])
        totals = snapshot.get("totals")
        stats = totals.get("turns") if isinstance(totals, dict) else None
        ledger = dumps(stats if isinstance(stats, list) else [])
    head = len(turns)
    db.execute(
        """INSERT INTO conversations (id, started, active, model, endpoint, head, next_id, next_turn,
                                      next_pos, settings, ledger, memory)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (cid, started, active, model, endpoint, head + (1 if lost or snapshot_text and not snapshot else 0),
         next_id, next_turn, pos, settings, ledger, memory),
    )
    if lost or (snapshot_text is not None and snapshot is None):
        # What could not be taken apart is kept whole: nothing of a log is lost by migrating it.
        detail = dumps({"earlier": lost, "snapshot": snapshot_text if snapshot is None else None})
        db.execute("INSERT INTO events (cid, seq, at, turn, kind, what, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (cid, head + 1, active, len(turns), "migrated",
                    "parts of this conversation's log could not be read; they are kept as they were", detail))


def _to_v4(db: sqlite3.Connection) -> None:
    """Move a version 3 log into the version 4 tables (see the module's docstring)."""
    for statement in ("DROP TRIGGER messages_fts_insert", "DROP TRIGGER messages_fts_delete",
                      "DROP TRIGGER messages_fts_update", "DROP TABLE messages_fts",
                      "DROP INDEX conversations_active",
                      "ALTER TABLE conversations RENAME TO conversations_v3",
                      "ALTER TABLE turns RENAME TO turns_v3", "ALTER TABLE messages RENAME TO messages_v3"):
        db.execute(statement)
    for statement in V4_TABLES:
        db.execute(statement)
    params = _Params(db)
    for row in db.execute(
        "SELECT id, started, active, model, endpoint, snapshot FROM conversations_v3 ORDER BY id"
    ).fetchall():
        _migrate_conversation(db, row, params)
    for table in ("conversations_v3", "turns_v3", "messages_v3"):
        db.execute(f"DROP TABLE {table}")


# Version 5: an entry auto recall brought back keeps its mark (``Entry.recalled``: the first to
# leave again), so that ``-c`` continues the conversation exactly as it was left.
_V5 = ("ALTER TABLE entries ADD COLUMN recalled INTEGER NOT NULL DEFAULT 0",)

Migration = tuple[str, ...] | Callable[[sqlite3.Connection], None]
# The migration that takes a file from version N-1 to N is MIGRATIONS[N - 1]. Append only.
MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _to_v4, _V5)
SCHEMA_VERSION = len(MIGRATIONS)


def run(db: sqlite3.Connection, migration: Migration) -> None:
    """Apply one migration on ``db`` (inside the caller's transaction)."""
    if callable(migration):
        migration(db)
    else:
        for statement in migration:
            db.execute(statement)


__all__ = ["INDEXED_BODY", "MIGRATIONS", "SCHEMA_VERSION", "V4_TABLES", "api_message", "run"]
