"""Opening the conversation log: private whatever was there, never through a link, in WAL mode,
migrated; and the one-line errors every failure of the log becomes.

Only the standard library is used: this is core.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from stateless_chat.errors import LogError
from stateless_chat.store import logschema

BUSY_TIMEOUT = 10.0  # seconds a write waits for another process's transaction before giving up
SIDECARS = ("-wal", "-shm", "-journal")
MIGRATIONS = logschema.MIGRATIONS
SCHEMA_VERSION = logschema.SCHEMA_VERSION


def shown_path(path: Path) -> str:
    """Return ``path`` for a one-line message: as is, or as a repr if it holds a newline or other control."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def reason_of(error: BaseException) -> str:
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
    if "too large" in lowered or "disk i/o" in lowered:
        return f"{text} (the disk may be full: free some space)"
    if "malformed" in lowered or "not a database" in lowered:
        return f"{text} (the file is damaged: move it away and a new log is started)"
    return text


def failure(path: Path, doing: str, error: BaseException) -> LogError:
    return LogError(f"cannot {doing} the conversation log {shown_path(path)}: {reason_of(error)}")


# ---- opening --------------------------------------------------------------------------------


def connect(path: Path, *, read_only: bool = False, immutable: bool = False) -> sqlite3.Connection:
    """Return a connection to ``path`` in autocommit mode: transactions are begun explicitly.

    ``read_only`` opens it read-only; ``immutable`` as a file nothing changes (no locks, no WAL
    index: what a full disk leaves readable)."""
    if read_only:
        name = str(path.resolve()).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
        uri = f"file:{name}?mode=ro" + ("&immutable=1" if immutable else "")
        return sqlite3.connect(uri, timeout=BUSY_TIMEOUT, isolation_level=None, uri=True)
    return sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)


def _mode(mode: int) -> str:
    return format(stat.S_IMODE(mode), "04o")


def make_private(path: Path, *, create: bool) -> list[str]:
    """Make the log's folder 0700, and the log and its sidecars regular files of mode 0600 (created
    when ``create``), whatever they were; return a note for each mode tightened. A symbolic link at
    any of them is refused (OSError): the log would be written wherever it points."""
    notes: list[str] = []
    folder = path.parent
    if create:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode):
        info = os.stat(folder)  # a linked folder (~/.local/share on another disk) is the user's choice
    # Only the data folder the log makes its own ("stateless-chat"): a log_db elsewhere (the home, a
    # shared directory) keeps its folder's mode, and the file alone is made private.
    if folder.name == "stateless-chat" and stat.S_IMODE(info.st_mode) & 0o077 and info.st_uid == os.getuid():
        os.chmod(folder, 0o700)
        notes.append(f"the folder of the conversation log {shown_path(folder)} was mode "
                     f"{_mode(info.st_mode)}: made 0700 (it holds your conversations)")
    for name in (path, *(path.with_name(path.name + s) for s in SIDECARS)):
        try:
            info = os.lstat(name)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            raise LogError(f"cannot open the conversation log {shown_path(path)}: {shown_path(name)} is a "
                           f"symbolic link (to {shown_path(Path(os.readlink(name)))}), and the log is never "
                           "written through one: move it away, or set log_db to the file it points to")
        if not stat.S_ISREG(info.st_mode):
            raise LogError(f"cannot open the conversation log {shown_path(path)}: {shown_path(name)} is not "
                           "a regular file")
        if stat.S_IMODE(info.st_mode) != 0o600 and info.st_uid == os.getuid():
            os.chmod(name, 0o600, follow_symlinks=False)
            notes.append(f"{shown_path(name)} was mode {_mode(info.st_mode)}: made 0600 (it holds your "
                         "conversations)")
    if create and not path.exists():
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except FileExistsError:  # another chat made it in the meantime: what is there now is checked
            return [*notes, *make_private(path, create=False)]
        try:
            os.fchmod(handle, 0o600)
        finally:
            os.close(handle)
    return notes


def check_length(path: Path) -> None:
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
            f"cannot open the conversation log {shown_path(path)}: the file is damaged (it holds {length:,} "
            f"of {pages * page_size:,} bytes; move it away and a new log is started)"
        )


def use_wal(db: sqlite3.Connection) -> None:
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


def migrate(db: sqlite3.Connection, path: Path, *, probe: bool = True) -> int:
    """Bring the schema to ``SCHEMA_VERSION`` in one transaction, which also proves the file writable
    (with ``probe``); return the version it had. Raises ``LogError`` for a schema newer than this
    code, or a database that is not a log."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version == SCHEMA_VERSION and not probe:
        return version
    with transaction(db):
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise LogError(
                f"the conversation log {shown_path(path)} has schema version {version}, newer than this "
                f"stateless-chat reads ({SCHEMA_VERSION}); upgrade stateless-chat, or move the file away"
            )
        if version == 0 and db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
            raise LogError(f"{shown_path(path)} is an SQLite database but not a conversation log; "
                           "move it away")
        for migration in MIGRATIONS[version:]:
            logschema.run(db, migration)
        # Also the write probe: a read-only file fails here, at open, rather than at the first turn.
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if version == SCHEMA_VERSION:
            db.execute("ROLLBACK")
    return version


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
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

