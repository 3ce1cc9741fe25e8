"""Shared fixtures: a real OpenAI-compatible server on loopback and a REPL driven through a pipe."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakeserver import FakeServer


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
