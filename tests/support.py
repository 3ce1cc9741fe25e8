"""What the tests share: running the command (in this process or as a child), a real terminal,
and sessions and REPLs over the fake server. Fixtures stay in ``conftest.py``; helpers live here, so
that no test file imports another."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pexpect
from prompt_toolkit.application import create_app_session
from prompt_toolkit.data_structures import Size
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.input import PipeInput, create_pipe_input
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
from stateless_chat.workspace.attach import Workspace
from tests.fakeserver import FakeServer, Scripted

ROOT = Path(__file__).resolve().parents[1]
CTRL_D = "\x04"
ESC_ENTER = "\x1b\r"
Seen = TypeVar("Seen")


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
    """Return ``session`` as an app holds it: with its log, tools and workspace, as the app would give
    them (here found among what the session tells of each turn, where the tests attached them)."""
    return App(session.settings, session, log=observer(session, Journal), tools=session.tools,
               workspace=observer(session, Workspace))


def observer(session: Session, kind: type[Seen]) -> Seen | None:
    """Return the ``kind`` (a journal, a workspace) a test attached to ``session``, if any."""
    return next((o for o in session.on_turn if isinstance(o, kind)), None)


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


class WideOutput(DummyOutput):
    """A terminal wide enough for every part of the toolbar (80 columns: tests/test_pty.py)."""

    def get_size(self) -> Size:
        return Size(rows=40, columns=200)


@contextmanager
def piped_repl(session: Session) -> Iterator[tuple[Repl, PipeInput]]:
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=WideOutput()):
        yield repl_for(session, Console(file=io.StringIO()), input=pipe, output=WideOutput()), pipe


def text_of(parts: StyleAndTextTuples) -> str:
    return "".join(part[1] for part in parts)


CPR = "\x1b[6n"


ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


PROMPT = r">(\x1b\[[0-9;?]*[a-zA-Z])*( |\r|$)"


def plain(text: str) -> str:
    """Return terminal output without its escape sequences and carriage returns."""
    return ANSI.sub("", text).replace("\r", "")


class Terminal:
    """The chat in an 80-column pseudo-terminal, answering its cursor position requests."""

    def __init__(self, server: FakeServer, tmp_path: Path, *args: str) -> None:
        self.child = pexpect.spawn(
            sys.executable, ["-m", "stateless_chat", "--base-url", server.url, *args],
            env=terminal_env(tmp_path), cwd=str(ROOT), encoding="utf-8", timeout=20, dimensions=(24, 80),
        )
        self.seen = ""  # everything read since the last call to ``read``

    def expect(self, pattern: str) -> str:
        """Wait for ``pattern`` (a regex); return what came before it, answering CPRs meanwhile."""
        before = ""
        while True:
            index = self.child.expect([pattern, re.escape(CPR)])
            before += self.child.before
            if index == 0:
                self.seen += before + self.child.after
                return before
            before += CPR
            self.child.send("\x1b[1;1R")

    def prompt(self) -> str:
        return self.expect(PROMPT)

    def send(self, text: str) -> None:
        self.child.send(text)

    def read(self) -> str:
        """Return (as plain text) everything read since the last call."""
        seen, self.seen = plain(self.seen), ""
        return seen

    def leave(self) -> None:
        """Press Ctrl-D (at a prompt already drawn) and wait for the chat to end."""
        self.child.sendcontrol("d")
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert self.child.exitstatus == 0


def toolbar_with_draft(session: Session, draft: str) -> tuple[str, str]:
    """Return the toolbar's text and its token part's style with ``draft`` typed at the prompt."""
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        repl = repl_for(session, Console(file=io.StringIO()), input=pipe, output=DummyOutput())

        async def typed() -> StyleAndTextTuples:
            repl.prompt.default_buffer.text = draft
            return repl.toolbar()

        parts = asyncio.run(typed())
    return "".join(part[1] for part in parts), next(part[0] for part in parts if "prompt " in part[1])


SERVER = str(Path(__file__).with_name("mcp_server.py"))


Answer = Callable[[list[dict[str, Any]]], str]


def calling(*steps: tuple[tuple[str, str], ...], answer: Answer | None = None
            ) -> Callable[[dict[str, Any]], str | Scripted]:
    """Return a replier that asks for ``steps[k]`` (a tuple of (tool, arguments) calls) at step k of a
    turn, then answers with the tool results it was given."""

    def replier(body: dict[str, Any]) -> str | Scripted:
        messages = body["messages"]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        done = sum(1 for m in messages[last_user:] if m["role"] == "assistant")
        if "tools" in body and done < len(steps):
            calls = tuple((f"call_{done}_{k}", name, args) for k, (name, args) in enumerate(steps[done]))
            return Scripted("Let me check." if done == 0 else "", calls)
        results = [m["content"] for m in messages[last_user:] if m["role"] == "tool"]
        return answer(messages) if answer else "The tools said: " + " | ".join(results)

    return replier


def write_config(tmp_path: Path, *only: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f'[mcp.servers.calc]\ncommand = {json.dumps(sys.executable)}\n'
                      f'args = [{json.dumps(SERVER)}, "--only", "{",".join(only) or "add"}"]\n')
    return config


def integrity(path: Path) -> tuple[str, str]:
    """Return SQLite's integrity check and the full-text index's own check ("ok" when it passes)."""
    db = sqlite3.connect(path)
    try:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        try:
            db.execute("INSERT INTO texts_fts (texts_fts, rank) VALUES ('integrity-check', 1)")
            fts = "ok"
        except sqlite3.DatabaseError as error:
            fts = str(error)
        return check, fts
    finally:
        db.close()
