"""Keys typed while the chat is busy (a reply streams, a summary is made) are not drawn into it.

Between prompts the terminal is in its ordinary cooked mode, which echoes every key where the
cursor is: in the middle of the reply being shown. ``held_keys`` turns the echo off for that
time and back on afterwards. The keys themselves stay queued in the terminal, so what was typed
shows up at the next prompt as type-ahead. Ctrl-C still interrupts (signals are untouched).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO


@contextlib.contextmanager
def held_keys(stream: TextIO | None = None) -> Iterator[None]:
    """Turn off the echo of the terminal behind ``stream`` (stdin by default) for the ``with`` block.

    Does nothing when ``stream`` is not a terminal (a pipe, a test's input) or the platform has no
    ``termios``.
    """
    saved = _echo_off(sys.stdin if stream is None else stream)
    try:
        yield
    finally:
        if saved is not None:
            fd, attributes = saved
            with contextlib.suppress(Exception):
                import termios

                termios.tcsetattr(fd, termios.TCSANOW, attributes)


def _echo_off(stream: TextIO | None) -> tuple[int, list[Any]] | None:
    """Turn the echo off; return the descriptor and the attributes to put back, or None if nothing changed."""
    try:
        import termios
    except ImportError:  # not a POSIX system
        return None
    try:
        if stream is None:
            return None
        fd = stream.fileno()
        if not os.isatty(fd):
            return None
        attributes: list[Any] = termios.tcgetattr(fd)
        quiet = list(attributes)
        quiet[3] = quiet[3] & ~termios.ECHO  # lflag
        # TCSANOW, not TCSAFLUSH: keys already typed are kept for the next prompt.
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
    except (AttributeError, OSError, ValueError, termios.error):  # no descriptor, closed, not a tty
        return None
    return fd, attributes


__all__ = ["held_keys"]
