"""Shared fixtures: a real OpenAI-compatible server on loopback and a REPL driven through a pipe."""

from __future__ import annotations

import io
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from stateless_chat.app import App
from stateless_chat.chat.session import Session, TurnRecord
from stateless_chat.config import Settings
from stateless_chat.store import journal
from stateless_chat.ui.render import Renderer
from stateless_chat.ui.repl import Repl
from stateless_chat.wire.openai_backend import open_backend
from tests.fakeserver import FakeServer

CTRL_D = "\x04"
ESC_ENTER = "\x1b\r"


def pytest_configure(config: pytest.Config) -> None:
    """Children inherit an ignored SIGHUP (a run under nohup, some CI shells): restore the
    default, so the tests of what a closed terminal does see what a user's chat would."""
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the real user's config, data dir and API key."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "STATELESS_CHAT_MODEL", "STATELESS_CHAT_BUDGET",
                 "STATELESS_CHAT_POLICY", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)


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


def app_for(session: Session) -> App:
    """Return ``session`` as an app holds it: with its log and tools, as the app would give them."""
    return App(session.settings, session, log=journal.of(session), tools=session.tools)


def repl_for(session: Session, console: Console, **options: Any) -> Repl:
    """Return a real Repl over ``session`` (see ``app_for``) on ``console``."""
    return Repl(app_for(session), Renderer(console), **options)


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
