"""The REPL's input history file: private, a regular file only, and safe to share between chats.

The file keeps prompt_toolkit's ``FileHistory`` format (``# time`` then ``+line`` for each line of
an entry). prompt_toolkit appends an entry with several buffered writes, so two chats sharing
the file (two terminals) could splice their entries into each other; ``append_entry`` writes
each entry with one ``write`` under an exclusive ``flock``, and ``read_entries`` reads the file
under a shared one. ``prepare`` opens or creates the file 0600 and makes an existing one 0600,
but only a regular file: a ``history_file`` that is a device (``/dev/null``), a fifo or a
directory is left alone, and the chat keeps its input history in memory instead.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from stateless_chat.sanitize import one_line

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# A file name as prompt_toolkit's FileHistory keeps it.
FileName = str | bytes | os.PathLike[str] | os.PathLike[bytes]


@contextlib.contextmanager
def _locked(fd: int, *, exclusive: bool) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover - not POSIX
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def prepare(path: Path) -> str | None:
    """Make ``path`` ready to hold the input history: created 0600 (typed lines can hold secrets), an
    existing one made 0600. Return None when it is, else the one line that says why it is not used
    (not a regular file, or it cannot be opened), having changed nothing."""
    refused = one_line(f"the input history {path} is not a regular file: it is left alone, and this "
                       "chat's input history is kept in memory")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return refused
    except OSError:
        pass  # not there yet (or not to be looked at): opening it says which
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_NONBLOCK: opening a fifo that no one reads must not hang the start.
        fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY | os.O_NONBLOCK | _CLOEXEC, 0o600)
    except OSError as error:
        return one_line(f"cannot open the input history {path}: {error.strerror or error}; it is kept "
                        "in memory for this chat")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # it changed since the look above
            return refused
        if stat.S_IMODE(info.st_mode) != 0o600:
            os.fchmod(fd, 0o600)  # the file opened, not whatever the path names by now
    except OSError as error:
        return one_line(f"cannot make the input history {path} private: {error.strerror or error}; it "
                        "is kept in memory for this chat")
    finally:
        os.close(fd)
    return None


def read_entries(path: FileName) -> list[str]:
    """Return the entries of the history file at ``path``, newest first ([] when there is none)."""
    try:
        fd = os.open(path, os.O_RDONLY | _CLOEXEC)
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as file, _locked(fd, exclusive=False):
        data = file.read()
    entries: list[str] = []
    lines: list[str] = []
    for raw in data.splitlines(keepends=True):
        line = raw.decode("utf-8", errors="replace")
        if line.startswith("+"):
            lines.append(line[1:])
            continue
        if lines:
            entries.append("".join(lines)[:-1])
        lines = []
    if lines:
        entries.append("".join(lines)[:-1])
    entries.reverse()
    return entries


def append_entry(path: FileName, entry: str) -> None:
    """Append ``entry`` to the history file at ``path``: one ``write``, under an exclusive lock."""
    text = f"\n# {datetime.datetime.now()}\n" + "".join(f"+{line}\n" for line in entry.split("\n"))
    data = text.encode("utf-8", errors="replace")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | _CLOEXEC)
    try:
        with _locked(fd, exclusive=True):
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
    finally:
        os.close(fd)
