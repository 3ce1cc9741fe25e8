"""The conversation log: every completed turn of every conversation, in one SQLite file.

Each turn is logged once its reply has arrived completely (``journal`` does it): the
exact request bodies, the reply, the usage the server reported, the turn's events, every message of
the conversation in its current state and a snapshot of the whole conversation (the
save-file dict of ``persist.to_data``) that ``--continue`` restores. ``logs list``,
``logs show`` and ``logs search`` read it back, and recall uses its full-text index
to bring evicted messages back by relevance.

The file lives at ``$XDG_DATA_HOME/stateless-chat/logs.db`` (the caller computes the
path). It is private: created with mode 0600, and SQLite gives its ``-wal`` and ``-shm``
sidecars the same mode. It is shared: several chats may log into it at once, so it
runs in WAL mode with a busy timeout and every write is one ``BEGIN IMMEDIATE``
transaction, which either lands whole or leaves the file as it was. Every failure
(a damaged file, a full disk, a read-only location, a schema from a newer version) is
a ``LogError`` of one line; the chat itself never depends on the log.

The schema is versioned by ``PRAGMA user_version`` and built by ``MIGRATIONS``, applied
in order from version 1; a file from a newer version is refused, never touched.
Only the standard library is used: this is core.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from stateless_chat.core.messages import content_parts
from stateless_chat.errors import LogError
from stateless_chat.sanitize import LONE_SURROGATE, strip_controls, whole_characters

DEFAULT_NAME = "logs.db"
BUSY_TIMEOUT = 10.0  # seconds a write waits for another process's transaction before giving up
# Keys that would hold a credential, wherever they appear in what is logged. The request body
# never holds one (the key travels in a header); this is defence in depth.
SECRET_KEYS = frozenset({"authorization", "proxy_authorization", "api_key", "x_api_key"})
# The smallest bm25 score (higher is better) a recalled message needs: about what one mention
# of a word found in a third of all logged messages scores. A word found in half of them or
# more scores close to 0, so a match on such words alone is no reason to bring a message back.
MIN_RECALL_SCORE = 0.5

# ---- schema ---------------------------------------------------------------------------------

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

# Version 3: a turn may send several requests (a tool loop: each step resends the conversation with
# the calls and results so far); ``request`` stays the last one, the one ``reply`` answers, and
# the ones before it are kept in order (NULL when there were none, as for every older turn).
_V3 = (
    "ALTER TABLE turns ADD COLUMN earlier TEXT",  # JSON list of request bodies, or NULL
)

# The statements that take a file from version N-1 to N are MIGRATIONS[N - 1]. Append only.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3)
SCHEMA_VERSION = len(MIGRATIONS)

# ---- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnLog:
    """What is logged after one completed turn.

    ``messages`` holds every message of the conversation in its current state (live,
    evicted, the system prompt and the summary), as save-file dicts with an ``id``;
    ``snapshot`` is the whole conversation as ``persist.to_data`` returns it. ``request``
    is the body ``reply`` answers; ``earlier`` the bodies the turn sent before it, in order
    (the steps of a tool loop).
    """

    turn: int
    request: dict[str, Any]
    reply: str
    finish_reason: str | None
    usage: dict[str, Any] | None
    events: tuple[str, ...]
    messages: tuple[dict[str, Any], ...]
    snapshot: dict[str, Any]
    endpoint: str = ""
    model: str = ""
    earlier: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ConversationRow:
    """One conversation as ``logs list`` shows it; ``first_line`` is its first user message, one line."""

    id: str
    started: datetime
    active: datetime
    model: str
    endpoint: str
    turns: int
    first_line: str


@dataclass(frozen=True)
class TurnRow:
    """One logged turn, as it was logged; the token columns are the reported usage (None: not said)."""

    turn: int
    logged_at: datetime
    request: dict[str, Any]
    reply: str
    finish_reason: str | None
    usage: dict[str, Any] | None
    events: tuple[str, ...]
    model: str
    endpoint: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    earlier: tuple[dict[str, Any], ...] = ()

    @property
    def requests(self) -> tuple[dict[str, Any], ...]:
        """Return every request body the turn sent, in order; the last one got ``reply``."""
        return (*self.earlier, self.request)


@dataclass(frozen=True)
class SearchHit:
    """A message that matches a search; the match is marked ``[like this]`` in ``snippet``.

    ``score`` is the bm25 relevance, higher is better.
    """

    cid: str
    message_id: int
    role: str
    turn: int
    snippet: str
    score: float


@dataclass(frozen=True)
class RecallHit:
    """A message relevant to a recall query; ``score`` is its bm25 relevance, higher is better."""

    message_id: int
    turn: int
    score: float


@dataclass(frozen=True)
class TokenTotals:
    """The reported tokens of a conversation's logged turns, summed (turns that reported none add 0)."""

    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


# ---- helpers --------------------------------------------------------------------------------

_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case: ASCII order is time order
_ID_TIME_DIGITS = 9  # milliseconds since 1970 in 45 bits: good until the year 3084
_ID_RANDOM_DIGITS = 4
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WORD = re.compile(r"[^\W_]+")  # a run of letters and digits, as the unicode61 tokenizer sees a token
_SEARCH_CHUNK = re.compile(r'"([^"]*)"(\*?)|(\S+)')
_MAX_QUERY_TERMS = 64
_FIRST_LINE_WIDTH = 80
_STOP_WORDS = frozenset(
    """a about above after again against all also am an and any anything are aren as at be because been
    before being below between both but by can cannot could couldn d did didn do does doesn doing don
    done down during each earlier else ever few for from further get got had hadn has hasn have haven
    having he hello her here hers herself hey hi him himself his how i if in into is isn it its itself
    just know let ll m me mention mentioned more most my myself no nor not now o of off ok okay on once
    one only or other ought our ours ourselves out over own please re recall remember s said same say
    shall she should shouldn so some something such t tell than thank thanks that the their theirs them
    themselves then there these they thing things think this those through to told too under until up
    us ve very was wasn we were weren what when where which while who whom why will with won would
    wouldn y yes you your yours yourself yourselves""".split()
)


def _shown(path: Path) -> str:
    """Return ``path`` for a one-line message: as is, or as a repr if it holds a newline or other control."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def _reason(error: BaseException) -> str:
    """Return the first line of what ``error`` says, with a hint of what to do for the common cases."""
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    else:
        lines = str(error).strip().splitlines()
        text = lines[0] if lines else type(error).__name__
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return f"{text} (another stateless-chat is writing to it; try again)"
    if "readonly" in lowered or "read-only" in lowered or "permission denied" in lowered:
        return f"{text} (check the permissions of the file and its directory)"
    if "full" in lowered or "no space" in lowered:
        return f"{text} (free some disk space)"
    if "malformed" in lowered or "not a database" in lowered:
        return f"{text} (the file is damaged: move it away and a new log is started)"
    return text


def _failure(path: Path, doing: str, error: BaseException) -> LogError:
    return LogError(f"cannot {doing} the conversation log {_shown(path)}: {_reason(error)}")


def _utc(when: datetime | None) -> datetime:
    """Return ``when`` (now when None; a naive time is taken as local) as an aware UTC time."""
    return datetime.now(timezone.utc) if when is None else when.astimezone(timezone.utc)


def _stamp(when: datetime) -> str:
    """Return ``when`` as fixed-width ISO 8601 UTC text, so that text order is time order."""
    return _utc(when).isoformat(timespec="microseconds")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _new_id(when: datetime) -> str:
    """Return a conversation id: the start time in milliseconds, then random digits (13 characters).

    Ids sort by start time as text, and two processes that start in the same millisecond
    still differ (and the primary key catches the one-in-a-million tie).
    """
    millis = max(0, int(_utc(when).timestamp() * 1000)) % len(_ID_ALPHABET) ** _ID_TIME_DIGITS
    digits = []
    for _ in range(_ID_TIME_DIGITS):
        millis, digit = divmod(millis, len(_ID_ALPHABET))
        digits.append(_ID_ALPHABET[digit])
    # 256 is a multiple of the alphabet's 32 letters: every letter equally likely (and no ``secrets``
    # import, ~4 ms of a one-shot run)
    noise = "".join(_ID_ALPHABET[byte % len(_ID_ALPHABET)] for byte in os.urandom(_ID_RANDOM_DIGITS))
    return "".join(reversed(digits)) + noise


def _scrubbed(value: Any) -> Any:
    """Return ``value`` (JSON-like) without any key that names a credential, at any depth."""
    if isinstance(value, Mapping):
        return {
            key: _scrubbed(item)
            for key, item in value.items()
            if str(key).lower().replace("-", "_") not in SECRET_KEYS
        }
    if isinstance(value, (list, tuple)):
        return [_scrubbed(item) for item in value]
    return value


def _json(value: Any) -> str:
    """Return ``value`` as compact JSON text; half a surrogate pair is escaped, since SQLite stores UTF-8."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(value, separators=(",", ":")) if LONE_SURROGATE.search(text) else text


def _text(value: str) -> str:
    """Return ``value`` storable as UTF-8 (half a surrogate pair becomes U+FFFD)."""
    return whole_characters(value)


def _usage_count(usage: Mapping[str, Any] | None, *keys: str) -> int | None:
    """Return the whole number at the first of ``keys`` (a dotted path) in ``usage``, else None.

    The same rule as the version 2 migration's SQL, so old and new rows agree.
    """
    for key in keys:
        value: Any = usage
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _message_row(cid: str, message: Mapping[str, Any]) -> tuple[Any, ...]:
    """Return the ``messages`` row of one message dict; ValueError when it has no usable id or role."""
    number = message.get("id")
    role = message.get("role")
    if not isinstance(number, int) or isinstance(number, bool) or not isinstance(role, str):
        raise ValueError("every message needs a whole-number 'id' and a 'role'")
    turn = message.get("turn")
    kind = message.get("kind")
    parts = [content_parts(message.get("content"))[0] or ""]
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            parts += [str(function.get("name") or ""), str(function.get("arguments") or "")]
    # Indexed without terminal controls: a snippet cut out of an escape sequence (or with a match
    # marker put inside one) would print its leftovers, and "\x1b[31mred" would index "31mred".
    body = strip_controls(_text("\n".join(p for p in parts if isinstance(p, str) and p)))
    return (
        cid,
        number,
        turn if isinstance(turn, int) and not isinstance(turn, bool) else 0,
        role,
        kind if isinstance(kind, str) else "turn",
        _json(_scrubbed(message)),
        body,
    )


def _first_line(text: str | None) -> str:
    """Return the first non-blank line of ``text``, cut to ``_FIRST_LINE_WIDTH`` characters."""
    for line in (text or "").splitlines():
        line = " ".join(_CONTROL.sub(" ", line).split())
        if line:
            return line if len(line) <= _FIRST_LINE_WIDTH else line[: _FIRST_LINE_WIDTH - 1] + "…"
    return ""


def _one_line(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())


def _quoted(term: str) -> str:
    """Return ``term`` as an FTS5 string: whatever it holds, it is text to match, never syntax."""
    return '"' + term.replace('"', '""') + '"'


def search_query(text: str) -> str:
    """Return the FTS5 query for what a user typed: every word must match, in any order.

    ``"a phrase"`` matches those words in a row and a trailing ``*`` matches a prefix
    (``laun*``); nothing else is syntax (``OR``, ``NEAR(``, a lone ``"`` are words or
    nothing), so no query a user types is an FTS5 syntax error. Raises ``LogError``
    when nothing in ``text`` can be searched for.
    """
    parts: list[str] = []
    for match in _SEARCH_CHUNK.finditer(_CONTROL.sub(" ", _text(text))):
        phrase, phrase_star, word = match.groups()
        chunk, star = (phrase, phrase_star) if word is None else (word.rstrip("*"), "*" * word.endswith("*"))
        if _WORD.search(chunk):
            parts.append(_quoted(chunk) + star)
    if not parts:
        raise LogError("search needs a word to look for, e.g. stateless-chat logs search launch code")
    return " ".join(parts[:_MAX_QUERY_TERMS])


def recall_terms(text: str) -> list[str]:
    """Return the content words of ``text`` recall looks for: lower case, each once, in order, with
    stop words and chat filler ("what", "the", "remember") left out."""
    terms: dict[str, None] = {}
    for word in _WORD.findall(_text(text)):
        word = word.lower()
        if word not in _STOP_WORDS:
            terms.setdefault(word)
    return list(terms)[:_MAX_QUERY_TERMS]


def recall_query(text: str) -> str | None:
    """Return an FTS5 query matching any content word of ``text``, or None when it has none.

    Words are OR-ed so that a message sharing only some of them still counts (bm25 ranks
    those sharing more and rarer words higher); stop words and chat filler ("what", "the",
    "remember") are left out, so "what is the" recalls nothing.
    """
    terms = recall_terms(text)
    if not terms:
        return None
    return " OR ".join(_quoted(term) for term in terms)


# ---- opening --------------------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    """Return a connection to ``path`` in autocommit mode: transactions are begun explicitly."""
    return sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)


def _create_private(path: Path) -> None:
    """Make sure ``path`` is a regular file we can write, creating it (and its directory) private.

    A new file gets mode 0600 whatever the umask; SQLite gives the ``-wal`` and ``-shm``
    files it creates next to it the same mode. An existing file keeps its mode.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        handle = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    else:
        os.fchmod(handle, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise OSError(0, "not a regular file")
    finally:
        os.close(handle)


def _check_length(path: Path) -> None:
    """Raise ``LogError`` when the file is shorter than its own header says: it was cut.

    SQLite would open such a file and fail only when a query reaches a missing page.
    A non-empty ``-wal`` may hold the missing pages, so then the check is left to SQLite.
    """
    with open(path, "rb") as file:
        header = file.read(100)
        length = os.fstat(file.fileno()).st_size
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return  # empty (a new file), or not a database at all: SQLite says which
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    size_valid = header[24:28] == header[92:96]  # the page count is kept up to date by SQLite >= 3.7.0
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return
    if size_valid and length < pages * page_size:
        raise LogError(
            f"cannot open the conversation log {_shown(path)}: the file is damaged (it holds {length:,} of "
            f"{pages * page_size:,} bytes; move it away and a new log is started)"
        )


def _use_wal(db: sqlite3.Connection) -> None:
    """Put the file in WAL mode (readers and a writer at once), as it stays once set.

    Changing the mode does not wait on the busy handler: two processes opening a new
    file at once see "database is locked" here, so it is retried for ``BUSY_TIMEOUT``.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL").fetchone()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to ``SCHEMA_VERSION`` in one transaction, which also proves the file writable.

    Raises ``LogError`` for a schema newer than this code, or a database that is not a log.
    """
    with _transaction(db):
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LogError(
                f"the conversation log {_shown(path)} has schema version {version}, newer than this "
                f"stateless-chat reads ({SCHEMA_VERSION}); upgrade stateless-chat, or move the file away"
            )
        if version == 0 and db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
            raise LogError(f"{_shown(path)} is an SQLite database but not a conversation log; move it away")
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                db.execute(statement)
        # Also the write probe: a read-only file fails here, at open, rather than at the first turn.
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if version == SCHEMA_VERSION:
            db.execute("ROLLBACK")


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block as one write transaction: committed whole, or rolled back whole on any error."""
    db.execute("BEGIN IMMEDIATE")  # take the write lock now: no deadlock upgrading a read later
    try:
        yield db
        if db.in_transaction:
            db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (a full disk, an I/O error)
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


# The row (and its index entry) is rewritten only when the message changed.
_UPSERT_MESSAGE = """INSERT INTO messages (cid, id, turn, role, kind, data, body) VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (cid, id) DO UPDATE SET
        turn = excluded.turn, role = excluded.role, kind = excluded.kind, data = excluded.data,
        body = excluded.body
    WHERE data IS NOT excluded.data"""

# ---- the store ------------------------------------------------------------------------------


class LogStore:
    """An open conversation log. Use ``LogStore.open``; close it (or use ``with``) when done.

    Every method raises ``LogError`` (one line) when the file cannot be read or written;
    a failed write leaves what was logged before intact.
    """

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db

    @classmethod
    def open(cls, path: Path) -> LogStore:
        """Return the log at ``path``, created (mode 0600, parent directories too) when missing.

        Runs in WAL mode with a busy timeout, migrated to the current schema. Raises
        ``LogError`` when the location is not writable, the file is damaged or not a log,
        or its schema is newer than this code reads.
        """
        try:
            path = Path(path).expanduser()
        except RuntimeError as error:  # ~user with no such user
            raise LogError(f"cannot open the conversation log {_shown(Path(path))}: {error}") from None
        try:
            _create_private(path)
            _check_length(path)
        except OSError as error:
            raise _failure(path, "open", error) from None
        try:
            db = _connect(path)
        except sqlite3.Error as error:
            raise _failure(path, "open", error) from None
        try:
            _use_wal(db)
            db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable once checkpointed, never corrupt
            db.execute("PRAGMA foreign_keys = ON")
            _migrate(db, path)
        except LogError:
            db.close()
            raise
        except sqlite3.Error as error:
            db.close()
            raise _failure(path, "open", error) from None
        return cls(path, db)

    @classmethod
    def memory(cls) -> LogStore:
        """Return a log held in memory, gone when closed: the index recall uses when the log on disk
        is turned off or failed."""
        path = Path(":memory:")
        try:
            db = _connect(path)
            _migrate(db, path)
        except sqlite3.Error as error:
            raise _failure(path, "open", error) from None
        return cls(path, db)

    def close(self) -> None:
        """Close the file; a second close does nothing."""
        with suppress(sqlite3.Error):
            self._db.execute("PRAGMA optimize")
        self._db.close()

    def __enter__(self) -> LogStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._db
        except sqlite3.Error as error:
            raise _failure(self.path, "read", error) from None
        except ValueError as error:  # a stored JSON text that no longer parses, a key it cannot encode
            raise _failure(self.path, "read", error) from None

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        try:
            with _transaction(self._db) as db:
                yield db
        except (sqlite3.Error, OSError, ValueError) as error:  # ValueError: text SQLite cannot encode
            raise _failure(self.path, "write", error) from None

    # ---- writing ------------------------------------------------------------------------

    def start_conversation(self, *, model: str, endpoint: str, started: datetime | None = None) -> str:
        """Return the id of a new conversation started at ``started`` (now when None).

        Ids are 13 characters, unique across processes and sort by start time.
        """
        when = _utc(started)
        for _ in range(8):
            cid = _new_id(when)
            try:
                with _transaction(self._db) as db:
                    db.execute(
                        "INSERT INTO conversations (id, started, active, model, endpoint)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (cid, _stamp(when), _stamp(when), _text(model), _text(endpoint)),
                    )
                return cid
            except sqlite3.IntegrityError:
                continue  # another process took this id in the same millisecond
            except sqlite3.Error as error:
                raise _failure(self.path, "write", error) from None
        raise LogError(f"cannot write the conversation log {_shown(self.path)}: no free conversation id")

    def log_turn(self, cid: str, record: TurnLog, *, at: datetime | None = None) -> None:
        """Log ``record`` as turn ``record.turn`` of conversation ``cid``, at ``at`` (now when None).

        One transaction: the turn row, every message upserted by its id (the latest state
        wins; messages not in ``record`` keep their last logged state), the full-text index,
        and the conversation's snapshot replaced. Logging the same turn again replaces it,
        so retrying after a failure is safe. Raises ``LogError`` (one line) for an unknown
        conversation, a record that is not JSON, or any failure to write; then nothing of
        this turn is stored and what was logged before is intact.
        """
        stamp = _stamp(_utc(at))
        try:
            usage = _scrubbed(record.usage) if record.usage is not None else None
            turn_row = (
                cid, record.turn, stamp, _text(record.model), _text(record.endpoint),
                _json(_scrubbed(record.request)),
                _json(_scrubbed(list(record.earlier))) if record.earlier else None, _text(record.reply),
                None if record.finish_reason is None else _text(record.finish_reason),
                None if usage is None else _json(usage), _json([_text(str(e)) for e in record.events]),
                _usage_count(usage, "prompt_tokens"), _usage_count(usage, "completion_tokens"),
                _usage_count(usage, "cached_tokens", "prompt_tokens_details.cached_tokens"),
            )
            message_rows = [_message_row(cid, m) for m in record.messages]
            snapshot = _json(_scrubbed(record.snapshot))
        except (TypeError, ValueError) as error:
            raise LogError(f"cannot log turn {record.turn}: {_reason(error)}") from None
        with self._writing() as db:
            if db.execute("SELECT 1 FROM conversations WHERE id = ?", (cid,)).fetchone() is None:
                raise LogError(f"no conversation {_one_line(cid)!r} in the log {_shown(self.path)}")
            db.execute(
                """INSERT INTO turns (cid, turn, logged_at, model, endpoint, request, earlier, reply,
                                      finish_reason, usage, events, prompt_tokens, completion_tokens,
                                      cached_tokens)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (cid, turn) DO UPDATE SET
                       logged_at = excluded.logged_at, model = excluded.model, endpoint = excluded.endpoint,
                       request = excluded.request, earlier = excluded.earlier, reply = excluded.reply,
                       finish_reason = excluded.finish_reason, usage = excluded.usage,
                       events = excluded.events,
                       prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
                       cached_tokens = excluded.cached_tokens""",
                turn_row,
            )
            db.executemany(_UPSERT_MESSAGE, message_rows)
            db.execute(
                """UPDATE conversations SET active = ?, snapshot = ?,
                       model = CASE WHEN ? <> '' THEN ? ELSE model END,
                       endpoint = CASE WHEN ? <> '' THEN ? ELSE endpoint END
                   WHERE id = ?""",
                (stamp, snapshot, *[_text(record.model)] * 2, *[_text(record.endpoint)] * 2, cid),
            )

    def index(self, cid: str, messages: Collection[Mapping[str, Any]]) -> None:
        """Store ``messages`` (save-file dicts with an ``id``) of conversation ``cid`` in their latest
        state, and in the full-text index, without logging a turn: what recall needs of messages no
        turn of this log has carried yet (a conversation loaded from a file). One transaction."""
        try:
            rows = [_message_row(cid, m) for m in messages]
        except (TypeError, ValueError) as error:
            raise LogError(f"cannot index the messages: {_reason(error)}") from None
        if not rows:
            return
        with self._writing() as db:
            if db.execute("SELECT 1 FROM conversations WHERE id = ?", (cid,)).fetchone() is None:
                raise LogError(f"no conversation {_one_line(cid)!r} in the log {_shown(self.path)}")
            db.executemany(_UPSERT_MESSAGE, rows)

    # ---- reading ------------------------------------------------------------------------

    def latest(self) -> str | None:
        """Return the id of the most recently active conversation with a logged turn (None: none yet).

        This is what ``--continue`` resumes; a conversation with no turn has nothing to restore.
        """
        with self._reading() as db:
            row = db.execute(
                "SELECT id FROM conversations WHERE snapshot IS NOT NULL"
                " ORDER BY active DESC, id DESC LIMIT 1"
            ).fetchone()
        return None if row is None else str(row[0])

    def snapshot(self, cid: str) -> dict[str, Any] | None:
        """Return the save-file dict of conversation ``cid`` after its latest turn (None: no such
        conversation, or no turn logged yet)."""
        with self._reading() as db:
            row = db.execute("SELECT snapshot FROM conversations WHERE id = ?", (cid,)).fetchone()
            if row is None or row[0] is None:
                return None
            data = json.loads(row[0])
        return data if isinstance(data, dict) else None

    def find(self, cid_prefix: str) -> str:
        """Return the full id of the one conversation whose id starts with ``cid_prefix``.

        Raises ``LogError`` when no conversation, or more than one, matches.
        """
        prefix = _text(cid_prefix).strip().lower()
        shown = repr(_one_line(cid_prefix.strip()))
        if not prefix:
            raise LogError("give a conversation id (stateless-chat logs list shows them)")
        with self._reading() as db:
            rows = db.execute(
                "SELECT id FROM conversations WHERE id >= ? AND substr(id, 1, ?) = ? ORDER BY id LIMIT 3",
                (prefix, len(prefix), prefix),
            ).fetchall()
        ids = [str(row[0]) for row in rows]
        if not ids:
            raise LogError(f"no conversation {shown} (stateless-chat logs list shows them)")
        if len(ids) > 1:
            more = ", ..." if len(ids) > 2 else ""
            raise LogError(f"{shown} is ambiguous: it starts {ids[0]}, {ids[1]}{more}; give more of the id")
        return ids[0]

    def conversations(self, limit: int = 20, *, cid: str | None = None) -> list[ConversationRow]:
        """Return up to ``limit`` conversations (or just ``cid``), the most recently active first (so the
        first one with a turn is what ``--continue`` resumes)."""
        where = "" if cid is None else "WHERE c.id = ?"
        with self._reading() as db:
            rows = db.execute(
                f"""SELECT c.id, c.started, c.active, c.model, c.endpoint,
                          (SELECT count(*) FROM turns AS t WHERE t.cid = c.id),
                          (SELECT m.body FROM messages AS m WHERE m.cid = c.id AND m.role = 'user'
                           ORDER BY m.kind <> 'turn', m.id LIMIT 1)
                   FROM conversations AS c {where} ORDER BY c.active DESC, c.id DESC LIMIT ?""",
                (max(0, limit),) if cid is None else (cid, max(0, limit)),
            ).fetchall()
            return [
                ConversationRow(
                    id=row[0], started=_time(row[1]), active=_time(row[2]), model=row[3], endpoint=row[4],
                    turns=row[5], first_line=_first_line(row[6]),
                )
                for row in rows
            ]

    def messages(self, cid: str) -> list[dict[str, Any]]:
        """Return the latest logged state of every message of conversation ``cid``, by id."""
        with self._reading() as db:
            rows = db.execute("SELECT data FROM messages WHERE cid = ? ORDER BY id", (cid,)).fetchall()
            return [json.loads(row[0]) for row in rows]

    def turns(self, cid: str) -> list[TurnRow]:
        """Return the logged turns of conversation ``cid``, in turn order."""
        with self._reading() as db:
            rows = db.execute(
                """SELECT turn, logged_at, request, reply, finish_reason, usage, events, model, endpoint,
                          prompt_tokens, completion_tokens, cached_tokens, earlier
                   FROM turns WHERE cid = ? ORDER BY turn""",
                (cid,),
            ).fetchall()
            return [
                TurnRow(
                    turn=row[0], logged_at=_time(row[1]), request=json.loads(row[2]), reply=row[3],
                    finish_reason=row[4], usage=None if row[5] is None else json.loads(row[5]),
                    events=tuple(json.loads(row[6])), model=row[7], endpoint=row[8],
                    prompt_tokens=row[9], completion_tokens=row[10], cached_tokens=row[11],
                    earlier=() if row[12] is None else tuple(json.loads(row[12])),
                )
                for row in rows
            ]

    def token_totals(self, cid: str) -> TokenTotals:
        """Return the reported tokens of conversation ``cid``'s logged turns, summed in SQL."""
        with self._reading() as db:
            row = db.execute(
                """SELECT count(*), total(prompt_tokens), total(completion_tokens), total(cached_tokens)
                   FROM turns WHERE cid = ?""",
                (cid,),
            ).fetchone()
        return TokenTotals(int(row[0]), int(row[1]), int(row[2]), int(row[3]))

    def search(self, query: str, *, limit: int = 20, cid: str | None = None) -> list[SearchHit]:
        """Return the messages (of every conversation, or of ``cid``) matching ``query``, best first.

        ``query`` is what a user typed; ``search_query`` makes it safe. Raises ``LogError``
        when it holds nothing to search for.
        """
        match = search_query(query)
        where = "" if cid is None else "AND m.cid = ?"
        parameters: tuple[Any, ...] = (match,) if cid is None else (match, cid)
        with self._reading() as db:
            rows = db.execute(
                f"""SELECT m.cid, m.id, m.role, m.turn,
                           snippet(messages_fts, 0, '[', ']', '…', 16), bm25(messages_fts) AS rank
                    FROM messages_fts JOIN messages AS m ON m.rowid = messages_fts.rowid
                    WHERE messages_fts MATCH ? {where}
                    ORDER BY rank, m.cid DESC, m.id LIMIT ?""",
                (*parameters, max(0, limit)),
            ).fetchall()
        return [SearchHit(row[0], row[1], row[2], row[3], _one_line(row[4]), -row[5]) for row in rows]

    def recall(
        self,
        cid: str,
        query: str,
        *,
        among: Collection[int],
        limit: int = 5,
        min_score: float = MIN_RECALL_SCORE,
    ) -> list[RecallHit]:
        """Return the messages of conversation ``cid`` with ids in ``among`` most relevant to ``query``.

        Best first, at most ``limit``, only those scoring above ``min_score`` (bm25, higher is
        better; document frequencies are those of the whole log). Any content word of
        ``query`` may match; stop words never do, so a query of only those recalls nothing.
        """
        match = recall_query(query)
        # Membership is tested here, not in SQL: passing thousands of ids into the query costs
        # far more than the search (11 ms against 0.2 ms at 20,000 messages).
        wanted = among if isinstance(among, (set, frozenset, range)) else {int(i) for i in among}
        if match is None or not wanted or limit < 1:
            return []
        hits: list[RecallHit] = []
        with self._reading() as db:
            rows = db.execute(
                """SELECT m.id, m.turn, bm25(messages_fts) AS rank
                   FROM messages_fts JOIN messages AS m ON m.rowid = messages_fts.rowid
                   WHERE messages_fts MATCH ? AND m.cid = ?
                   ORDER BY rank, m.id""",
                (match, cid),
            )
            for number, turn, rank in rows:
                if -rank <= min_score:
                    break  # best first: the rest score lower still
                if number in wanted:
                    hits.append(RecallHit(number, turn, -rank))
                    if len(hits) == limit:
                        break
        return hits

