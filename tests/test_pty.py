"""The REPL end to end in a real pseudo-terminal (pexpect): type, read the screen, press keys."""

from __future__ import annotations

import sys
from pathlib import Path

import pexpect
import pytest

from tests.fakeserver import FakeServer
from tests.support import ROOT, ask, prompt_ready, spawn, terminal_env


@pytest.mark.timeout(60)
def test_chat_in_a_real_terminal(server: FakeServer, tmp_path: Path) -> None:
    child = spawn(server, tmp_path, "-s", "You are terse.")
    ask(child, "Please remember my name is Byte Dai", "echo: Please remember")
    child.expect_exact('kept as standing (m1): "Please remember my name is Byte Dai" · /forget m1')
    ask(child, "What is my name?", "Your name is Byte Dai.")
    prompt_ready(child)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert len(server.requests) == 2
    # The system prompt, the standing memory, the history resent whole, the new message.
    assert [m["role"] for m in server.requests[1]["messages"]] == ["system", "system", "user", "assistant",
                                                                   "user"]
    history = tmp_path / "data" / "stateless-chat" / "input_history"
    assert "What is my name?" in history.read_text()
    assert history.stat().st_mode & 0o777 == 0o600


@pytest.mark.timeout(60)
def test_ctrl_c_cancels_a_streaming_reply_and_up_arrow_recalls(server: FakeServer, tmp_path: Path) -> None:
    child = spawn(server, tmp_path)
    ask(child, "first", "echo: first")
    server.hang_stream_next(after_chunks=2, seconds=15)
    ask(child, "second", "echo:")
    child.sendcontrol("c")
    child.expect_exact("cancelled")
    prompt_ready(child)
    child.send("\x1b[A")  # Up: recalls "second"
    child.send("\r")
    child.expect_exact("echo: second")
    prompt_ready(child)
    child.send("/exit\r")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    last = server.requests[-1]["messages"]
    assert [m["content"] for m in last] == ["first", "echo: first", "second"]


@pytest.mark.timeout(60)
def test_sigterm_at_the_prompt_ends_cleanly(server: FakeServer, tmp_path: Path) -> None:
    import signal
    import time

    for _ in range(3):  # the prompt loads its history in the background: hit it at different moments
        child = spawn(server, tmp_path)
        prompt_ready(child)
        started = time.monotonic()
        child.kill(signal.SIGTERM)
        child.expect(pexpect.EOF)
        child.close()
        assert "Traceback" not in child.before and "Unhandled exception" not in child.before
        assert child.exitstatus == 143
        assert time.monotonic() - started < 2.5  # ended by unwinding, not by the watchdog


@pytest.mark.timeout(60)
def test_one_shot_in_a_terminal_renders_markdown_unless_no_color(server: FakeServer, tmp_path: Path) -> None:
    server.replier = lambda body: "# Title\n\n**bold** and `code`"

    def one_shot(**extra: str) -> str:
        env = terminal_env(tmp_path) | extra
        child = pexpect.spawn(sys.executable, ["-m", "stateless_chat", "--base-url", server.url, "q"],
                              env=env, cwd=str(ROOT), encoding="utf-8", timeout=20, dimensions=(40, 120))
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0, child.before
        return str(child.before)

    assert one_shot(NO_COLOR="1") == "# Title\r\n\r\n**bold** and `code`\r\n"
    rendered = one_shot()
    assert "Title" in rendered and "bold" in rendered and "**" not in rendered and "\x1b[" in rendered
