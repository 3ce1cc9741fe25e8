"""No lost turns: two chats continuing one conversation never overwrite each other.

Two real processes (``python -m stateless_chat -c``) and a slow server: the first reads the
conversation and waits for its reply; meanwhile the second continues the same conversation and
logs its turn. When the first one's reply comes, the conversation has moved on: it goes on as a
fork (a new conversation holding all of its own state), one line says so with the new id, and
both turns are in the log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from stateless_chat.config import default_data_dir
from stateless_chat.store.logstore import DEFAULT_NAME, LogStore
from tests.fakeserver import FakeServer
from tests.support import ROOT, integrity, run_process


def test_two_processes_continuing_one_conversation_both_keep_their_turn(server: FakeServer) -> None:
    path = default_data_dir(os.environ) / DEFAULT_NAME
    assert run_process("--base-url", server.url, "my name is Ada").returncode == 0
    with LogStore.open(path) as store:
        original = store.latest()
    assert original is not None
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["PYTHONPATH"] = str(ROOT)
    server.delay_next(15)  # the slow chat's reply takes 15 seconds: time for the other to start, chat, log
    slow = subprocess.Popen([sys.executable, "-m", "stateless_chat", "--base-url", server.url, "-c",
                             "from the slow chat"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while len(server.requests) < 2:  # it has read the log and sent its request
            assert time.monotonic() < deadline and slow.poll() is None, slow.communicate()
            time.sleep(0.02)
        fast = run_process("--base-url", server.url, "-c", "from the fast chat")
        assert fast.returncode == 0 and fast.stderr == b"", fast.stderr
        out, err = slow.communicate(timeout=60)
    finally:
        if slow.poll() is None:
            slow.kill()
    assert slow.returncode == 0 and out == b"echo: from the slow chat\n"
    [line] = err.decode().splitlines()
    prefix = (f"stateless-chat: conversation {original} was continued by another chat meanwhile; "
              "this chat goes on as ")
    assert line.startswith(prefix) and line.endswith(", and both are kept"), line
    fork = line[len(prefix):].split()[0]
    assert line.endswith(f"{fork} (stateless-chat --cid {fork}), and both are kept")

    assert integrity(path) == ("ok", "ok")
    with LogStore.open(path) as store:
        assert [t.reply for t in store.turns(original)] == [
            "echo: my name is Ada", "echo: from the fast chat"]
        assert [t.reply for t in store.turns(fork)] == ["echo: from the slow chat"]
        assert store.turns(fork)[0].turn == 2  # its own turn 2, after the same turn 1
        [row] = store.conversations(cid=fork)
        assert row.parent == original
        kept = store.restore(original)
        forked = store.restore(fork)
        assert kept is not None and forked is not None
        assert [e.content for e in kept.conversation.history] == [
            "my name is Ada", "echo: my name is Ada", "from the fast chat", "echo: from the fast chat"]
        assert [e.content for e in forked.conversation.history] == [
            "my name is Ada", "echo: my name is Ada", "from the slow chat", "echo: from the slow chat"]
        assert [t.turn for t in forked.ledger.turns] == [1, 2]  # its accounting came with it
        assert store.latest() == fork  # the chat that wrote last is the one -c continues
    # and each goes on by its id
    assert run_process("--base-url", server.url, "--cid", original, "and you?").returncode == 0
    assert [m["content"] for m in server.requests[-1]["messages"]][-3:] == [
        "from the fast chat", "echo: from the fast chat", "and you?"]


def test_a_chat_that_only_reads_the_log_never_forks(server: FakeServer, tmp_path: Path) -> None:
    """--dry-run -c and logs list read a conversation another chat is writing: nothing forks."""
    assert run_process("--base-url", server.url, "hello").returncode == 0
    for _ in range(2):
        done = run_process("--base-url", server.url, "--dry-run", "-c", "next")
        assert done.returncode == 0 and b"continued by another chat" not in done.stderr
    assert run_process("--base-url", server.url, "-c", "again").stderr == b""
    with LogStore.open(default_data_dir(os.environ) / DEFAULT_NAME) as store:
        [row] = store.conversations()
        assert row.turns == 2 and row.parent is None
