"""`--local` through the real CLI: the child llama.cpp server starts, answers, and never outlives the chat."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

from stateless_chat.wire.local import local_available
from tests.support import ROOT, prompt_ready, run_cli

needs_local = pytest.mark.skipif(
    not local_available(),
    reason="the local extra is not installed (pip install 'stateless-chat[local]')",
)


def port_is_closed(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def wait_gone(done: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def wait_closed(port: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_is_closed(port):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(local_available(), reason="only meaningful without the local extra")
def test_local_without_the_extra_says_how_to_get_it() -> None:
    done = run_cli("--local", "hi")
    assert done.returncode == 2
    line = done.stderr.decode().strip()
    assert len(line.splitlines()) == 1 and "stateless-chat[local]" in line


def test_missing_key_names_both_ways_out() -> None:
    done = run_cli("--base-url", "https://api.openai.com/v1", "hi")
    assert done.returncode == 2
    assert b"OPENAI_API_KEY" in done.stderr and b"stateless-chat[local]" in done.stderr


@needs_local
@pytest.mark.timeout(180)
def test_no_key_and_no_base_url_chats_with_the_local_model() -> None:
    done = run_cli("--temperature", "0", "--max-tokens", "24", "-v", "-u", "What is the capital of France?",
                   timeout=150)
    assert done.returncode == 0, done.stderr
    err = done.stderr.decode()
    assert "using the bundled local model" in err
    port = int(re.search(r"127\.0\.0\.1:(\d+)", err).group(1))  # type: ignore[union-attr]  # -v: its start
    assert done.stdout.strip()
    # Counts for the local model are exact: its server's tokenizer and chat template count them, and the
    # usage a streamed reply does not carry is counted the same way; -u says so once.
    usage = [line for line in err.splitlines() if ": usage: " in line]
    assert len(usage) == 1 and "≈" not in usage[0] and "not reported; completion" in usage[0], usage
    assert re.search(r"usage: prompt \d+ counted exactly, not reported; completion \d+ counted", usage[0])
    assert usage[0].count("counted with its own tokenizer") == 1 and "--no-stream" not in usage[0]
    assert "learning the local model's chat template" not in err  # one-shot: learned only when counting
    assert port_is_closed(port)


@needs_local
@pytest.mark.timeout(180)
def test_a_local_one_shot_says_one_line_and_nothing_with_q() -> None:
    done = run_cli("--max-tokens", "8", "hi", timeout=150)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.decode().splitlines() if "reply cut at the length" not in line]
    assert len(lines) == 1 and "using the bundled local model" in lines[0], lines  # no start-up progress
    quiet = run_cli("-q", "--max-tokens", "8", "-u", "hi", timeout=150)
    assert quiet.returncode == 0 and quiet.stdout.strip() and quiet.stderr == b""


@needs_local
@pytest.mark.timeout(180)
def test_the_child_server_is_stopped_on_ctrl_d_sigterm_and_a_closed_terminal(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(PYTHONPATH=str(ROOT), TERM="xterm", HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "d"),
               TMPDIR=str(tmp_path))
    # SIGHUP (the terminal window closed) ends the chat like SIGTERM, with its cleanup.
    for ending, sig in (("ctrl-d", None), ("sigterm", signal.SIGTERM), ("sighup", signal.SIGHUP)):
        child = pexpect.spawn(sys.executable, ["-m", "stateless_chat", "--local", "--max-tokens", "16"],
                              env=env, cwd=str(ROOT), encoding="utf-8", timeout=120, dimensions=(40, 200))
        child.expect(r"127\.0\.0\.1:(\d+)")
        port = int(child.match.group(1))
        child.expect("/help for commands")
        prompt_ready(child)  # keys typed before the prompt takes the terminal may be flushed
        assert not port_is_closed(port)
        if sig is None:
            child.sendcontrol("d")
        else:
            child.kill(sig)
        child.expect(pexpect.EOF)
        child.close()
        assert "Traceback" not in (child.before or "")
        assert wait_closed(port), f"the local server outlived the chat after {ending}"
        # Nor does its log file: nobody is left to read it.
        assert wait_gone(lambda: not list(tmp_path.glob("stateless-chat-llama-*.log"))), ending


@needs_local
@pytest.mark.timeout(180)
def test_a_crash_of_the_child_mid_chat_is_one_line_with_its_log(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(PYTHONPATH=str(ROOT), TERM="xterm", HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "d"),
               TMPDIR=str(tmp_path))  # the log the message names is kept: here, not in the real temp dir
    child = pexpect.spawn(sys.executable, ["-m", "stateless_chat", "--local", "--max-tokens", "8"],
                          env=env, cwd=str(ROOT), encoding="utf-8", timeout=120, dimensions=(40, 250))
    child.expect(r"127\.0\.0\.1:(\d+)")
    port = int(child.match.group(1))
    child.expect("/help for commands")
    prompt_ready(child)
    found = subprocess.run(["pgrep", "-f", "--", f"--port {port}"], capture_output=True, text=True)
    for pid in found.stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    assert wait_closed(port)
    child.send("hello\r")
    child.expect("error: local model server was killed by signal 9 unexpectedly")
    child.expect(r"\(log: [^)]+\)")
    prompt_ready(child)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert "Traceback" not in (child.before or "")
    assert "retry" not in (child.before or "")


@needs_local
@pytest.mark.timeout(300)
def test_ctrl_c_while_the_local_model_reads_a_long_prompt_does_not_hold_up_the_next_turn(
    tmp_path: Path,
) -> None:
    """The chat as a user meets it: a long file, a question, Ctrl-C while the spinner waits for the first
    token. llama.cpp cannot stop reading a prompt (minutes for this one on a slow CPU), so the chat stops
    its server and starts it again with the next message, which is answered (within pexpect's timeout,
    far less than the abandoned prompt would take). The spinner shows while the model starts, too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(PYTHONPATH=str(ROOT), TERM="xterm", HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "d"),
               TMPDIR=str(tmp_path))
    notes = tmp_path / "notes.txt"
    notes.write_text(" ".join(f"Fact {i}: the dragon's name is Ember." for i in range(300)))
    child = pexpect.spawn(sys.executable, ["-m", "stateless_chat", "--local"], env=env, cwd=str(ROOT),
                          encoding="utf-8", timeout=90, dimensions=(40, 200))
    child.expect("starting the local model")  # the spinner, with the seconds waited
    child.expect("/help for commands")
    prompt_ready(child)
    child.send(f"/file {notes}\r")
    child.expect_exact("added")
    prompt_ready(child)
    child.send("Tell me everything about the dragon.\r")
    child.expect("waiting for the reply")
    child.sendcontrol("c")
    child.expect("stopped the local model")
    child.expect("cancelled")
    prompt_ready(child)
    child.send("/drop 1\r")
    child.expect("dropped #1")
    prompt_ready(child)
    child.send("Say hi.\r")
    prompt_ready(child)
    child.send("/history\r")
    child.expect(r"│ +3 │ assistant")  # the reply is in
    prompt_ready(child)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert "Traceback" not in (child.before or "") and "error" not in (child.before or "")
