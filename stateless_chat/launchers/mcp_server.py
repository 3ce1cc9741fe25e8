"""Start one MCP server and end its whole process group with the chat (run by path, never imported).

Run as ``python -I -S mcp_server.py LIFELINE KEEP_LC_CTYPE COMMAND ARGS...``. LIFELINE is the path
of a FIFO held open for writing by the chat (or "pid:N" where no FIFO could be made: then this
polls for its parent N to go away). KEEP_LC_CTYPE is "0" when LC_CTYPE was not in the environment
the chat gave: Python's locale coercion adds it, and the server must get exactly the environment
configured. -I -S: no user site, no PYTHON* variables, no site-packages.

It forks the server and watches two things: the server's exit, and the lifeline, whose only
writer is the chat. Whichever comes first ends this whole process group (the SDK starts it as a
new session): the server, and anything the server started. It also logs, on stderr (the server's
log file), how the server ended, each line starting with ``[stateless-chat] ``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn


def report(text: str) -> None:
    try:
        os.write(2, ("[stateless-chat] " + text + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def end_group(code: int) -> NoReturn:
    if os.getpgrp() == os.getpid():
        try:
            os.killpg(0, signal.SIGKILL)
        except OSError:
            pass
    os._exit(code)


def lifeline_watch(lifeline: str) -> Callable[[], None]:
    """Return a function that returns once the chat has ended (its end of ``lifeline`` closed)."""
    if lifeline.startswith("pid:"):
        chat = int(lifeline[4:])

        def wait_for_the_parent() -> None:
            while os.getppid() == chat:
                time.sleep(0.5)

        return wait_for_the_parent
    fd = os.open(lifeline, os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.unlink(lifeline)
    except OSError:
        pass
    os.set_blocking(fd, True)

    def wait_for_end_of_file() -> None:
        try:
            while os.read(fd, 512):
                pass
        except OSError:
            pass

    return wait_for_end_of_file


def main(argv: list[str]) -> NoReturn:
    lifeline, keep_lc_ctype, command = argv[1], argv[2], argv[3:]
    if keep_lc_ctype == "0":
        os.environ.pop("LC_CTYPE", None)
    wait_for_the_chat_to_end = lifeline_watch(lifeline)
    server = os.fork()
    if server == 0:
        try:
            os.execvp(command[0], command)
        except OSError as error:
            report(f"cannot run {command[0]}: {error.strerror or error}")
        os._exit(127)

    # Only the server holds the protocol's pipes, so the chat reads end-of-file the moment it exits.
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)

    def watch() -> None:
        wait_for_the_chat_to_end()
        report("the chat ended or stopped the server: ending its process group")
        end_group(1)

    threading.Thread(target=watch, daemon=True).start()
    code = os.waitstatus_to_exitcode(os.waitpid(server, 0)[1])
    if code >= 0:
        report(f"exited with status {code}")
    else:
        try:
            name = f" ({signal.Signals(-code).name})"
        except ValueError:
            name = ""
        report(f"was killed by signal {-code}{name}")
    end_group(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main(sys.argv)
