"""Advisory locks between stateless-chat processes (``flock``), for files several runs may share.

``exclusive(path)`` holds a lock named after ``path``: the file ``.NAME.lock`` beside it,
removed again when the lock is released (a symbolic link there is refused, never followed). A
one-shot ``--save FILE`` holds it from reading the file to writing it back, so two runs
continuing the same file take turns instead of the last writer dropping the other's exchange.
Where ``fcntl`` does not exist, nothing is locked.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


def lock_path(path: Path) -> Path:
    """Return the lock file that stands for ``path``."""
    return path.parent / f".{path.name}.lock"


def _open_lock_file(path: Path) -> int:
    """Return a descriptor of the lock file ``path``, created (0600) if need be.

    Never through a symbolic link: one planted there would have the lock create its target, wherever
    it points. A link, or anything but a regular file (opened without blocking, so a fifo cannot hold
    the run up), is refused with ``OSError`` and left as it is."""
    flags = (os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_NONBLOCK", 0))
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as error:
        if error.errno == errno.ELOOP or path.is_symlink():
            raise OSError(errno.ELOOP, f"{path} is a symbolic link, not a lock file: it is left alone "
                                       "(remove it if you did not put it there)") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file, so not a lock file: it is left alone")
    return fd


def _acquire(path: Path, *, wait: bool) -> int | None:
    """Return a descriptor of ``path`` holding its exclusive lock; None when ``wait`` is False and
    another process holds it.

    A lock file is removed by the process that held it, so a lock won on a file that is no longer
    at ``path`` (removed, or replaced by a newer one meanwhile) is worthless: try again on what is there.
    """
    assert fcntl is not None
    while True:
        fd = _open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            held, there = os.fstat(fd), os.stat(path)
            if (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def exclusive(path: Path, on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold the exclusive lock that stands for ``path`` (``lock_path``); call ``on_wait`` once first
    when another process holds it. ``OSError`` when the lock file cannot be created."""
    if fcntl is None:  # pragma: no cover - not POSIX
        yield
        return
    where = lock_path(path)
    where.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(where, wait=False)
    if fd is None:
        on_wait()
        fd = _acquire(where, wait=True)
    assert fd is not None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(where)  # while still held: a waiter that wins this file sees it gone and tries again
        os.close(fd)
