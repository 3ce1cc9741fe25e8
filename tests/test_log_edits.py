"""Every change is logged, not only turns: each command that edits the conversation or its settings,
as the last thing done before leaving the chat, is what ``-c`` brings back, compared whole.

The chat is the real REPL (prompt_toolkit's pipe input) talking to the fake server through the real
openai client, logging into a real SQLite file at the default path; ``-c`` is the real command line
(``--dry-run -c``: the exact body the continued chat would send) and the journal's own resume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.chat.session import Session
from stateless_chat.config import default_data_dir
from stateless_chat.store import journal, persist
from stateless_chat.store.logstore import DEFAULT_NAME, LogStore
from tests.fakeserver import FakeServer
from tests.support import attach_journal, make_session, run_cli, run_repl, state

TURNS = [f"Turn {n}: rivers mountains valleys forests meadows " * 3 + "\r" for n in range(1, 7)]


def log_path() -> Path:
    import os

    return default_data_dir(os.environ) / DEFAULT_NAME


def chat(server: FakeServer, keys: list[str], *, errors: bool = False, **settings: Any) -> Session:
    """Return the session of a chat that typed ``keys`` (the last is the command under test)."""
    values: dict[str, Any] = {"budget": 900, "reply_reserve": 100, "policy": "summarize",
                              "system": "Be brief."}
    values.update(settings)
    session = make_session(server, **values)
    attach_journal(session, log_path())
    run = run_repl(session, keys, width=300)
    assert errors or "error" not in run.output.lower(), run.output
    return session


def continued(server: FakeServer) -> Session:
    """Return a new chat continuing the most recent conversation from the log (as ``-c`` does)."""
    again = make_session(server)
    log = attach_journal(again, log_path())
    again.load(*journal.loadable(log.resume(None)))
    return again


def compare_whole(left: Session, server: FakeServer) -> None:
    """Assert that ``-c`` brings back exactly what ``left`` was left as: the conversation, its
    accounting, the settings that shaped it, and the next request to the byte."""
    right = continued(server)
    assert right.conversation == left.conversation
    assert right.ledger == left.ledger
    for name in persist.RESTORED_SETTINGS:
        assert getattr(right.settings, name) == getattr(left.settings, name), name
    done = run_cli("--dry-run", "-c", "and next?")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == left.preview_body("and next?")


@pytest.mark.parametrize("command", [
    "/pin 3", "/unpin 1", "/drop 5", "/trim 1", "/clear", "/undo", "/system You answer in French.",
    "/model gpt-4o", "/budget 1200", "/reserve 64", "/policy drop-oldest", "/evict-to 0.3",
    "/remember I am allergic to peanuts", "/forget m1",
])
def test_an_edit_as_the_last_act_before_exit_is_what_continue_brings_back(server: FakeServer,
                                                                          command: str) -> None:
    keys = [*TURNS[:3], "/pin 1\r"] if command == "/unpin 1" else TURNS[:3]
    if command == "/forget m1":
        keys = [*keys, "/remember always answer in French\r"]
    session = chat(server, [*keys, command + "\r"])
    compare_whole(session, server)
    with LogStore.open(log_path()) as store:
        cid = store.latest()
        assert cid is not None
        assert store.events(cid)[-1].what == command  # and the log says what was done


def test_summarize_as_the_last_act_is_kept_with_its_folded_originals(server: FakeServer) -> None:
    """The issue's case: /summarize (a request the user paid for) then exit; -c had lost it."""
    session = chat(server, [*TURNS[:5], "/summarize\r"], budget=4000)
    summary = session.conversation.summary
    assert summary is not None and any(e.eviction and e.eviction.how == "folded"
                                       for e in session.conversation.evicted)
    compare_whole(session, server)
    with LogStore.open(log_path()) as store:
        cid = store.latest() or ""
        assert store.events(cid)[-1].what == "/summarize"
        shown = [m for m in store.messages(cid) if m["id"] == summary.id]
        assert shown and shown[0]["slot"] == "summary" and shown[0]["content"] == summary.content


def test_a_file_and_a_recall_as_the_last_act_are_kept(server: FakeServer, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("the launch code is 7491\n")
    session = chat(server, [*TURNS[:2], f"/file {notes} --pin\r"])
    compare_whole(session, server)
    session = chat(server, [*TURNS, "/recall 1\r"], budget=350, policy="drop-oldest")
    assert session.conversation.recalled
    compare_whole(session, server)


def test_load_as_the_last_act_is_what_continue_brings_back(server: FakeServer, tmp_path: Path) -> None:
    saved = tmp_path / "saved.json"
    first = chat(server, [*TURNS[:4], f"/save {saved}\r"])
    assert persist.load(saved).conversation == first.conversation
    session = chat(server, [TURNS[5], f"/load {saved}\r"])
    compare_whole(session, server)
    with LogStore.open(log_path()) as store:
        cid = store.latest() or ""
        assert store.events(cid)[-1].what == f"/load {saved}"
        assert len(store.conversations(10)) == 3  # the two chats, and the loaded one as a new conversation


def test_a_command_that_changes_nothing_writes_nothing(server: FakeServer) -> None:
    session = chat(server, [*TURNS[:2], "/history\r", "/tokens\r", "/stats\r", "/pin 99\r"], errors=True)
    del session
    with LogStore.open(log_path()) as store:
        cid = store.latest() or ""
        assert store.events(cid) == [] and store.head(cid) == 2  # the two turns, nothing more


def test_two_edits_and_a_turn_then_continue(server: FakeServer) -> None:
    session = chat(server, [*TURNS[:3], "/pin 3\r", "/drop 1\r", TURNS[3], TURNS[4], "/trim 1\r", "/undo\r"])
    compare_whole(session, server)
    with LogStore.open(log_path()) as store:
        cid = store.latest() or ""
        assert [e.what for e in store.events(cid)] == ["/pin 3", "/drop 1", "/trim 1", "/undo"]
        assert [t.turn for t in store.turns(cid)] == [1, 2, 3, 4, 5]
    again = continued(server)
    assert state(again)[0] == session.conversation
