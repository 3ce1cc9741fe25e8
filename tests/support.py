"""What the tests share: running the command (in this process or as a child), a real terminal,
and sessions and REPLs over the fake server. Fixtures stay in ``conftest.py``; helpers live here, so
that no test file imports another."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from stateless_chat.app import App
from stateless_chat.chat.session import Session, TurnRecord
from stateless_chat.config import Settings
from stateless_chat.core.history import Conversation
from stateless_chat.core.ledger import Ledger
from stateless_chat.store import journal
from stateless_chat.store.journal import Journal
from stateless_chat.ui.render import Renderer
from stateless_chat.ui.repl import Repl
from stateless_chat.wire.openai_backend import open_backend
from tests.fakeserver import FakeServer

ROOT = Path(__file__).resolve().parents[1]
CTRL_D = "\x04"
ESC_ENTER = "\x1b\r"


# ---- the command, in this process or as a child ---------------------------------------------


@dataclass(frozen=True)
class Ran:
    """What a command did: its exit status and the bytes it wrote (a CompletedProcess look-alike)."""

    returncode: int
    stdout: bytes
    stderr: bytes


def run_cli(*args: str, stdin: bytes | None = b"", env: dict[str, str] | None = None,
            timeout: float = 30) -> Ran:
    """Run ``stateless-chat ARGS`` in this process (Typer's CliRunner) with ``stdin``; return what it did.

    ``timeout`` is accepted for ``run_process`` compatibility; the suite's own timeout bounds a hang.
    """
    from typer.testing import CliRunner

    from stateless_chat.cli import PROG, app

    environment = {"OPENAI_API_KEY": None, "OPENAI_BASE_URL": None, **(env or {})}
    result = CliRunner().invoke(app, list(args), input=stdin, env=environment, prog_name=PROG,
                                catch_exceptions=False)
    return Ran(result.exit_code, result.stdout_bytes, result.stderr_bytes)


def run_process(*args: str, stdin: bytes | None = b"", env: dict[str, str] | None = None,
                timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m stateless_chat ARGS`` with stdin piped; return the finished process."""
    environment = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    environment["PYTHONPATH"] = str(ROOT)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "stateless_chat", *args],
        input=stdin, capture_output=True, timeout=timeout, env=environment, cwd=ROOT,
    )


# ---- a real terminal ---------------------------------------------------------------------------


def terminal_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(
        PYTHONPATH=str(ROOT),
        TERM="xterm-256color",
        HOME=str(tmp_path / "home"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
    )
    env.pop("NO_COLOR", None)
    return env


def spawn(server: FakeServer, tmp_path: Path, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable, ["-m", "stateless_chat", "--base-url", server.url, *args],
        env=terminal_env(tmp_path), cwd=str(ROOT), encoding="utf-8", timeout=20, dimensions=(40, 120),
    )
    child.expect("/help for commands")
    return child


def prompt_ready(child: pexpect.spawn) -> None:
    """Wait for the prompt: the bold '>' prompt_toolkit draws (styled, so matched as a regex)."""
    child.expect(r">(\x1b\[[0-9;?]*[a-zA-Z])*( |\r|$)")


def ask(child: pexpect.spawn, text: str, expect: str) -> None:
    prompt_ready(child)
    child.send(text + "\r")
    child.expect_exact(expect)


# ---- sessions and REPLs over the fake server -------------------------------------------------


def make_session(server: FakeServer, *, on_turn: Sequence[Callable[[TurnRecord], None]] = (),
                 **settings: Any) -> Session:
    """Return a session talking to ``server`` through the real openai client (no SDK retries), telling
    ``on_turn`` of each completed turn."""
    values: dict[str, Any] = {"base_url": server.url, "max_retries": 0, "timeout": 10.0}
    values.update(settings)
    config = Settings(**values)
    backend = open_backend(config.endpoints, config.api_key, keys=dict(config.endpoint_keys),
                           max_reply_bytes=config.max_reply_bytes, timeout=config.timeout,
                           max_retries=config.max_retries, backoff_base=0.01)
    return Session(config, backend, on_turn=on_turn)


@dataclass
class ReplRun:
    session: Session
    output: str
    exit_code: int


def state(session: Session) -> tuple[Conversation, Ledger, Settings]:
    """Return the values a save file (and the log) takes of ``session``."""
    return session.conversation, session.ledger, session.settings


def attach_journal(session: Session, path: Path | None, *, warn: Callable[[str], None] = lambda line: None,
                   strict: bool = False) -> Journal:
    """Return a journal logging ``session`` into the log at ``path``, wired as the app wires it
    (``app.open_log``): told of every turn (and of one that failed after its tools ran), asked to
    recall."""
    log = journal.open_journal(path, session.settings, warn=warn, strict=strict)
    session.on_turn = (*session.on_turn, log)
    session.on_failed = (*session.on_failed, log)
    session.recall = log.recall
    return log


def app_for(session: Session) -> App:
    """Return ``session`` as an app holds it: with its log and tools, as the app would give them."""
    return App(session.settings, session, log=journal.of(session.on_turn), tools=session.tools)


def repl_for(session: Session, console: Console, **options: Any) -> Repl:
    """Return a real Repl over ``session`` (see ``app_for``) on ``console``, every change its commands
    make logged as ``cli.run_repl`` wires it."""
    app = app_for(session)
    repl = Repl(app, Renderer(console), **options)
    log = app.log
    if log is not None:
        repl.after_change = lambda what: log.edited(what, *state(session))
    return repl


def run_repl(session: Session, keys: Sequence[str], *, width: int = 100) -> ReplRun:
    """Type ``keys`` into a real Repl (prompt_toolkit pipe input) and return what it printed.

    Each item is sent as typed text; the run ends with Ctrl-D if ``keys`` does not end it.
    """
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=False, color_system=None, highlight=False)
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        for key in keys:
            pipe.send_text(key)
        if not keys or keys[-1] != CTRL_D:
            pipe.send_text(CTRL_D)
        repl = repl_for(session, console, input=pipe, output=DummyOutput())
        code = repl.run()
    return ReplRun(session, buffer.getvalue(), code)


def standing_block(*sentences: str) -> str:
    """Return the content of the system message that carries the standing notes ``sentences`` (the
    slot every request sends right after the system prompt once the user said something standing)."""
    from stateless_chat.core.memory import Note, block_message

    return block_message([Note(number, text) for number, text in enumerate(sentences, 1)]).text
