"""The documents' index: chunks of files in an SQLite file, searched with FTS5 and ranked by bm25.

One file per user (``docs_db``, default ``$XDG_DATA_HOME/stateless-chat/docs.db``, mode 0600, WAL
so that two chats can use it at once), apart from the conversation log. It holds every file
indexed so far, by absolute path, with the size and modification time it was indexed at (a file
that changed is indexed again), its chunks with their line spans and heading paths, an FTS5
index over the headings (with the file's name) and the text, stemmed with Porter's algorithm
(``configure`` finds ``configuration``), and, with an embedding model, each chunk's vector.
Which files a chat retrieves from is the chat's business (``documents.Library``); this module
is all the SQL. Only the standard library is used.
"""

from __future__ import annotations

import math
import os
import sqlite3
import stat
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stateless_chat.errors import UsageError
from stateless_chat.workspace.chunking import Chunk

SCHEMA_VERSION = 1
BUSY_TIMEOUT = 10.0
HEADING_WEIGHT = 2.0  # bm25 weight of the heading column (with the file's name) against the text's 1.0

_SCHEMA = (
    """CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,  -- absolute
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        indexed TEXT NOT NULL,      -- ISO 8601, UTC
        chunks INTEGER NOT NULL,
        chars INTEGER NOT NULL
    )""",
    """CREATE TABLE chunks (
        id INTEGER PRIMARY KEY,
        file INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
        start INTEGER NOT NULL,     -- first line, 1-based
        end INTEGER NOT NULL,       -- last line
        heading TEXT NOT NULL,      -- the headings above it, A > B
        body TEXT NOT NULL,
        names TEXT NOT NULL         -- what the heading column indexes: the headings and the file's name
    )""",
    "CREATE INDEX chunks_file ON chunks (file)",
    """CREATE VIRTUAL TABLE chunks_fts USING fts5 (
        names, body, content='chunks', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2'
    )""",
    """CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts (rowid, names, body) VALUES (new.id, new.names, new.body);
    END""",
    """CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts (chunks_fts, rowid, names, body)
        VALUES ('delete', old.id, old.names, old.body);
    END""",
    """CREATE TABLE vectors (
        chunk INTEGER NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
        model TEXT NOT NULL,
        vector BLOB NOT NULL,       -- float32, the machine's byte order, normalized to length 1
        PRIMARY KEY (chunk, model)
    )""",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class DocsError(UsageError):
    """The documents' index cannot be opened, read or written."""


@dataclass(frozen=True)
class FileRow:
    """A file in the index: its id, path, the size and time it was indexed at, and its chunks."""

    id: int
    path: str
    size: int
    mtime_ns: int
    indexed: str
    chunks: int
    chars: int


@dataclass(frozen=True)
class Indexed:
    """A file read and chunked, to be put in the index: its absolute path, size and modification time
    (as stat saw them before it was read), its chunks and its length in characters."""

    path: str
    size: int
    mtime_ns: int
    chunks: Sequence[Chunk]
    chars: int


@dataclass(frozen=True)
class Hit:
    """A chunk that matches a query: ``score`` is its bm25 relevance (higher is better) and ``share``
    that score against the most a chunk holding every word of the query once would score."""

    id: int
    file: int
    path: str
    start: int
    end: int
    heading: str
    body: str
    score: float
    share: float


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _quoted(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _hit(row: Sequence[Any], score: float, ideal: float) -> Hit:
    """Return the hit for a row of chunk id, file id, path, first and last line, heading and text."""
    return Hit(int(row[0]), int(row[1]), str(row[2]), int(row[3]), int(row[4]), str(row[5]), str(row[6]),
               score, score / ideal if ideal > 0 else 0.0)


def names_of(path: str, heading: str) -> str:
    """Return what the heading column indexes for a chunk: its headings and its file's name and folder
    (``docs/patterns/fileuploads.rst``: ``patterns fileuploads``)."""
    folder, name = os.path.split(path)
    parts = (os.path.basename(folder), os.path.splitext(name)[0])
    return f"{heading}\n{' '.join(parts)}".replace("_", " ").replace("-", " ")


class DocStore:
    """An open documents' index (see the module's docstring)."""

    def __init__(self, db: sqlite3.Connection, path: Path | None) -> None:
        self.db = db
        self.path = path
        self._df: dict[str, int] = {}  # documents holding each query word, until the index changes
        self._size: tuple[int, float] | None = None  # chunks, and their mean length in tokens (bm25's)

    @classmethod
    def open(cls, path: Path) -> DocStore:
        """Open (creating, mode 0600) the index at ``path``; ``DocsError`` when it cannot be used."""
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if not stat.S_ISREG(os.fstat(handle).st_mode):
                    raise OSError(0, "not a regular file")
            finally:
                os.close(handle)
            db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # The index can be built again from the files: a power cut may lose its last transactions,
            # never its consistency (WAL), and a commit costs no fsync.
            db.execute("PRAGMA synchronous=NORMAL")
            store = cls(db, path)
            store._prepare()
            return store
        except (OSError, sqlite3.Error) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise DocsError(f"cannot open the documents' index {path}: {reason}") from None

    @classmethod
    def memory(cls) -> DocStore:
        """Return an index held in memory (when the file cannot be used)."""
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        store = cls(db, None)
        store._prepare()
        return store

    def _prepare(self) -> None:
        db = self.db
        db.execute("PRAGMA foreign_keys=ON")
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            if tables:
                raise sqlite3.DatabaseError("it is not a documents' index")
            with self._writing():
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute("INSERT INTO meta VALUES ('version', ?)", (str(SCHEMA_VERSION),))
            return
        version = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        if version is None or int(version[0]) > SCHEMA_VERSION:
            raise sqlite3.DatabaseError("it was written by a newer stateless-chat")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        self._df.clear()
        self._size = None

    # ---- files ------------------------------------------------------------------------------

    def files(self, paths: Collection[str] | None = None) -> dict[str, FileRow]:
        """Return the indexed files (those at ``paths`` only, when given), by path."""
        rows = self.db.execute("SELECT id, path, size, mtime_ns, indexed, chunks, chars FROM files")
        found = {row[1]: FileRow(*row) for row in rows}
        return found if paths is None else {p: found[p] for p in paths if p in found}

    def put(self, files: Sequence[Indexed]) -> dict[str, int]:
        """Index ``files`` (each in place of what its path held), in one transaction; return their ids
        by path."""
        ids: dict[str, int] = {}
        now = _now()
        try:
            with self._writing() as db:
                for item in files:
                    db.execute("DELETE FROM files WHERE path = ?", (item.path,))
                    cursor = db.execute(
                        "INSERT INTO files (path, size, mtime_ns, indexed, chunks, chars) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (item.path, item.size, item.mtime_ns, now, len(item.chunks), item.chars))
                    file_id = ids[item.path] = int(cursor.lastrowid or 0)
                    db.executemany(
                        "INSERT INTO chunks (file, start, end, heading, body, names) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [(file_id, c.start, c.end, c.heading, c.text, names_of(item.path, c.heading))
                         for c in item.chunks])
            return ids
        except sqlite3.Error as error:
            raise DocsError(f"cannot write the documents' index: {error}") from None

    def forget(self, paths: Iterable[str]) -> None:
        """Remove the files at ``paths`` and their chunks from the index."""
        try:
            with self._writing() as db:
                db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in paths])
        except sqlite3.Error as error:
            raise DocsError(f"cannot write the documents' index: {error}") from None

    # ---- search ------------------------------------------------------------------------------

    def _stats(self) -> tuple[int, float]:
        if self._size is None:
            count, chars = self.db.execute(
                "SELECT count(*), coalesce(sum(length(body)), 0) FROM chunks").fetchone()
            self._size = (int(count), chars / 4 / count if count else 1.0)
        return self._size

    def _document_frequency(self, term: str) -> int:
        known = self._df.get(term)
        if known is None:
            row = self.db.execute("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?",
                                  (_quoted(term),)).fetchone()
            known = self._df[term] = int(row[0])
        return known

    def idf(self, term: str) -> float:
        """Return the inverse document frequency of ``term`` as FTS5's bm25 weighs it (a word that no
        chunk holds weighs the most)."""
        count, _ = self._stats()
        held = self._document_frequency(term)
        return max(1e-6, math.log((count - held + 0.5) / (held + 0.5)))

    def search(self, terms: Sequence[str], *, among: Collection[int] | None = None,
               limit: int = 20) -> list[Hit]:
        """Return the chunks of files ``among`` (ids; None: every file) that hold any of ``terms``
        (lower-case words), best first by bm25, at most ``limit``.

        ``share`` measures a hit against the query: its score over the sum of each word's weight
        (the score a chunk holding every word once would get). Words no chunk holds count there
        too, so a message about something the documents never mention scores a low share.
        """
        if not terms or limit < 1 or (among is not None and not among):
            return []
        try:
            ideal = sum(self.idf(term) for term in terms)
            query = " OR ".join(_quoted(term) for term in terms)
            wanted = limit * 4  # ranked, then looked up: chunks of files not ``among`` are passed over
            while True:
                ranked = self.db.execute(
                    f"""SELECT rowid, bm25(chunks_fts, {HEADING_WEIGHT}, 1.0) FROM chunks_fts
                        WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?""", (query, wanted)).fetchall()
                marks = ",".join("?" * len(ranked))
                rows = {row[0]: row for row in self.db.execute(
                    f"""SELECT c.id, c.file, f.path, c.start, c.end, c.heading, c.body
                        FROM chunks AS c JOIN files AS f ON f.id = c.file WHERE c.id IN ({marks})""",
                    [rowid for rowid, _ in ranked])}
                hits = [_hit(rows[rowid], -rank, ideal) for rowid, rank in ranked
                        if rowid in rows and (among is None or rows[rowid][1] in among)]
                if len(hits) >= limit or len(ranked) < wanted:
                    return hits[:limit]
                wanted *= 8  # most of the best chunks were of other files: look further down
        except sqlite3.Error as error:
            raise DocsError(f"cannot search the documents' index: {error}") from None

    # ---- vectors ----------------------------------------------------------------------------

    def unembedded(self, model: str, among: Collection[int], limit: int) -> list[tuple[int, str]]:
        """Return up to ``limit`` chunks of files ``among`` that have no vector from ``model`` yet: their
        ids and the text to embed (the headings, then the text)."""
        if not among:
            return []
        marks = ",".join("?" * len(among))
        rows = self.db.execute(
            f"""SELECT c.id, c.heading, c.body FROM chunks AS c
                WHERE c.file IN ({marks})
                AND NOT EXISTS (SELECT 1 FROM vectors AS v WHERE v.chunk = c.id AND v.model = ?)
                ORDER BY c.id LIMIT ?""", [*among, model, limit])
        return [(int(row[0]), f"{row[1]}\n\n{row[2]}" if row[1] else str(row[2])) for row in rows]

    def put_vectors(self, model: str, vectors: Sequence[tuple[int, bytes]]) -> None:
        """Keep the vectors (float32 bytes, normalized) of chunks from ``model``."""
        try:
            with self._writing() as db:
                db.executemany("INSERT OR REPLACE INTO vectors (chunk, model, vector) VALUES (?, ?, ?)",
                               [(chunk, model, blob) for chunk, blob in vectors])
        except sqlite3.Error as error:
            raise DocsError(f"cannot write the documents' index: {error}") from None

    def vectors(self, model: str, among: Collection[int]) -> list[tuple[int, bytes]]:
        """Return the chunk ids and vectors (float32 bytes) from ``model`` of the files ``among``."""
        if not among:
            return []
        marks = ",".join("?" * len(among))
        rows = self.db.execute(
            f"""SELECT v.chunk, v.vector FROM vectors AS v JOIN chunks AS c ON c.id = v.chunk
                WHERE v.model = ? AND c.file IN ({marks}) ORDER BY v.chunk""", [model, *among])
        return [(int(row[0]), bytes(row[1])) for row in rows]

    def hits(self, ids: Sequence[int]) -> dict[int, Hit]:
        """Return the chunks ``ids`` as hits (no score), by id."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f"""SELECT c.id, c.file, f.path, c.start, c.end, c.heading, c.body
                FROM chunks AS c JOIN files AS f ON f.id = c.file WHERE c.id IN ({marks})""", list(ids))
        return {int(row[0]): _hit(row, 0.0, 0.0) for row in rows}

    def chunks_of(self, file_id: int) -> list[tuple[int, int, int, str, str]]:
        """Return the chunks of a file: (id, first line, last line, heading, text), in order."""
        rows = self.db.execute("SELECT id, start, end, heading, body FROM chunks WHERE file = ? ORDER BY id",
                               (file_id,))
        return [(int(r[0]), int(r[1]), int(r[2]), str(r[3]), str(r[4])) for r in rows]


__all__ = ["DocStore", "DocsError", "FileRow", "Hit", "Indexed", "names_of"]
