"""Standing memory: the slot in the conversation model, the session's requests through the real client,
the REPL (event line, /memory, /remember, /forget, /history, /tokens, /preview), save files, the log and
one-shot -c chains, and auto recall saying what it could not fit."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.chat.turn import Hooks
from stateless_chat.core.context import DropOldest
from stateless_chat.core.history import Conversation
from stateless_chat.core.memory import MEMORY_HEADER, MEMORY_ID
from stateless_chat.core.messages import Event, MemoryFull, Message, Notice, Recalled, Remembered, describe
from stateless_chat.errors import CommandError, ServerError
from stateless_chat.store import persist
from stateless_chat.store.logstore import DEFAULT_NAME
from stateless_chat.ui.commands import next_eviction
from tests.fakeserver import FakeServer, is_summary_request
from tests.support import attach_journal, make_session, run_cli, run_repl, state

CELSIUS = "Please always give temperatures in Celsius."
ANA = "My wife's name is Ana."


def count(message: Message) -> int:
    return 3 + len(message.text) // 4


def said(conversation: Conversation, text: str) -> tuple[Conversation, list[Event]]:
    """Return ``conversation`` with a turn of user message ``text`` (and a reply) committed, as the
    session commits it, and the memory's events."""
    ask = conversation.new_entry("user", text, count)
    conversation = conversation.append(ask)
    conversation = conversation.append(conversation.new_entry("assistant", "ok " * 30, count, turn=ask.turn))
    return conversation.remember(ask, count, room=400, mode="auto")


def contents(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"]]


# ---- the slot in the model -----------------------------------------------------------------


def test_standing_sentences_become_notes_linked_to_their_message() -> None:
    conversation, events = said(Conversation.start("sys", count), f"Hi! {CELSIUS} Is Oslo cold in March?")
    note = conversation.memory.notes[0]
    assert (note.label, note.text, note.source, note.turn) == ("m1", CELSIUS, 1, 1)
    assert events == [Remembered(1, CELSIUS, note.tokens, 1)]
    assert describe(events[0]) == f'kept as standing (m1): "{CELSIUS}" · /forget m1'
    block = conversation.memory_block
    assert block is not None and block.id == MEMORY_ID and block.kind == "memory"
    assert block.content == f"{MEMORY_HEADER}\n- {CELSIUS}"
    # The live history keeps the message as it was; the slot is counted in every request.
    assert conversation.history[0].content == f"Hi! {CELSIUS} Is Oslo cold in March?"
    assert [e.id for e in conversation.request_entries()] == [0, MEMORY_ID, 1, 2]
    assert conversation.tokens == sum(e.tokens for e in conversation.request_entries())
    again, none = said(conversation, f"{CELSIUS} Is it always colder before dawn?")
    assert none == [] and len(again.memory.notes) == 1  # said again: kept once; the question: never


def test_the_slot_is_never_evicted_and_sits_between_the_system_prompt_and_the_summary() -> None:
    conversation, _ = said(Conversation.start("sys", count), ANA)
    for n in range(12):
        conversation, _ = said(conversation, f"tell me about lakes, part {n}")
    candidate = conversation.candidate(budget=200, reserve=20)
    assert candidate.memory is conversation.memory_block
    assert candidate.size == sum(e.tokens for e in candidate.entries()) + 3 + 20
    fitted = DropOldest().fit(candidate)
    assert fitted.dropped and 1 in fitted.dropped  # the turn it came from went ...
    # ... the note stays, right after the system prompt
    assert fitted.request.entries()[:2] == (conversation.system, conversation.memory_block)
    after = conversation.apply(fitted)
    assert after.memory == conversation.memory and ANA in after.messages()[1].text


def test_memory_budget_refuses_an_addition_and_names_what_forget_could_free() -> None:
    conversation = Conversation.start(None, count)
    ask = conversation.new_entry("user", f"{CELSIUS} {ANA} I'm allergic to shellfish and to peanuts.", count)
    conversation = conversation.append(ask)
    room = count(Message("system", f"{MEMORY_HEADER}\n- {CELSIUS}\n- {ANA}"))
    kept, events = conversation.remember(ask, count, room=room, mode="auto")
    assert [n.text for n in kept.memory.notes] == [CELSIUS, ANA]
    full = events[-1]
    assert isinstance(full, MemoryFull) and full.texts == ("I'm allergic to shellfish and to peanuts.",)
    line = describe(full)
    assert line.startswith('not kept as standing: "I\'m allergic to shellfish and to peanuts.": the memory '
                           f"would pass memory_budget ({kept.memory.size(count)} of {room} tokens used)")
    assert "/forget m1" in line and "/forget m2" in line
    with pytest.raises(CommandError, match="would pass memory_budget"):
        kept.remember_text("I live in Oslo.", count, room=room)


def test_manual_and_off_keep_nothing_by_themselves_and_off_sends_nothing() -> None:
    conversation = Conversation.start(None, count)
    ask = conversation.new_entry("user", CELSIUS, count)
    conversation = conversation.append(ask)
    assert conversation.remember(ask, count, room=400, mode="manual") == (conversation, [])
    manual, note = conversation.remember_text("Use metric units.", count, room=400)
    assert note.source is None and manual.memory_block is not None
    off = manual.memory_turned(False, count)
    assert off.memory == manual.memory and off.memory_block is None
    assert [e.id for e in off.request_entries()] == [1]
    assert off.memory_turned(True, count).memory_block == manual.memory_block
    forgotten, gone = manual.forget("m1", count)
    assert gone == note and forgotten.memory.notes == () and forgotten.memory_block is None
    with pytest.raises(CommandError, match="no note m7"):
        manual.forget("m7", count)


def test_an_older_conversation_is_read_for_its_memory_once() -> None:
    conversation, _ = said(Conversation.start(None, count), CELSIUS)
    conversation, _ = said(conversation, ANA)
    data = {"format": persist.FORMAT, "version": 2, "messages": [persist.entry_data(e) for e in
                                                                 conversation.live],
            "next_id": conversation.next_id, "next_turn": conversation.next_turn}
    old = persist.from_data(data).conversation  # saved before standing memory: no "memory" key
    assert old.memory.notes == () and not old.memory.scanned
    read, events = old.remember_all(count, room=400, mode="auto")
    assert [n.text for n in read.memory.notes] == [CELSIUS, ANA] and len(events) == 2
    assert read.remember_all(count, room=400, mode="auto") == (read, [])


# ---- the session, through the real client ----------------------------------------------------


def test_requests_carry_the_slot_in_order_system_memory_summary_history_new(server: FakeServer) -> None:
    session = make_session(server, system="sys", policy="summarize", budget=500, reply_reserve=60)
    told: list[Event] = []
    session.hooks = Hooks(on_event=told.append)
    session.send(f"Hello. {CELSIUS}")
    assert describe(told[0]) == f'kept as standing (m1): "{CELSIUS}" · /forget m1'
    for n in range(8):
        session.send(f"tell me about lakes and rivers, part {n} " + "water " * 20)
    body = [b for b in server.requests if not is_summary_request(b)][-1]
    sent = contents(body)
    assert sent[0] == "sys" and sent[1] == f"{MEMORY_HEADER}\n- {CELSIUS}"
    assert sent[2].startswith("Summary of the earlier conversation")  # the summary comes after the memory
    assert all(CELSIUS not in text for text in sent[3:])  # the turn it came from is folded away
    assert session.ledger.turns[-1].estimated_prompt_tokens + 60 <= 500
    summary_request = next(b for b in server.requests if is_summary_request(b))
    assert contents(summary_request)[1] == sent[1]  # the summary request is aligned with what was sent


def test_a_failed_turn_keeps_nothing(server: FakeServer) -> None:
    session = make_session(server)
    server.fail_next(500)
    with pytest.raises(ServerError):
        session.send(CELSIUS)
    assert session.conversation.memory.notes == ()


# ---- the REPL ------------------------------------------------------------------------------


def test_repl_event_line_memory_forget_remember_history_tokens(server: FakeServer) -> None:
    session = make_session(server, system="sys")
    run = run_repl(session, [f"Hi. {CELSIUS} Is it always colder before dawn?\r", "/memory\r",
                             "/remember I live in Oslo.\r", "/history\r", "/tokens\r", "/forget m1\r",
                             "/memory\r", "what now?\r", "/forget m9\r"], width=160)
    out = run.output
    assert f'· kept as standing (m1): "{CELSIUS}" · /forget m1' in out
    assert "standing memory: 1 note(s)" in out and "m1 · " in out and f"from #1 (turn 1): {CELSIUS}" in out
    assert 'kept as standing (m2): "I live in Oslo." · /forget m2' in out
    assert "standing memory (sent after the system prompt, never evicted)" in out
    assert "standing memory " in out and "next eviction: in ~" in out  # /tokens: the slot is a part
    assert f'forgot m1: "{CELSIUS}" is no longer sent; message #1, where you said it, is unchanged' in out
    assert "m2 · " in out and "by /remember: I live in Oslo." in out
    assert "error: no note m9 in the standing memory" in out
    last = contents(server.requests[-1])
    assert last[:2] == ["sys", f"{MEMORY_HEADER}\n- I live in Oslo."]
    assert last[2] == f"Hi. {CELSIUS} Is it always colder before dawn?"  # the history keeps the message


def test_a_fact_given_with_a_question_is_kept_without_the_question(server: FakeServer) -> None:
    """Through the REPL: the note of "Since I'm vegan, what could I make tonight?" is the fact alone,
    so the next requests carry "I'm vegan", not a question about tonight's dinner."""
    session = make_session(server, system="sys")
    run = run_repl(session, ["Since I'm vegan, what could I make for dinner tonight?\r", "thanks!\r"],
                   width=160)
    assert '· kept as standing (m1): "I\'m vegan" · /forget m1' in run.output
    last = contents(server.requests[-1])
    assert last[:2] == ["sys", f"{MEMORY_HEADER}\n- I'm vegan"]
    assert last[2] == "Since I'm vegan, what could I make for dinner tonight?"  # the history keeps it whole


def test_undo_takes_back_the_notes_of_the_turn_it_removes(server: FakeServer) -> None:
    session = make_session(server)
    run = run_repl(session, [f"{ANA}\r", "/undo\r", "/memory\r", f"{ANA} Hello.\r"])
    assert "no standing notes" in run.output
    assert [n.label for n in session.conversation.memory.notes] == ["m2"]  # said again: a new note
    assert contents(server.requests[-1]) == [f"{ANA} Hello."]  # nothing of the taken-back turn was sent


def test_repl_memory_off_then_auto(server: FakeServer) -> None:
    session = make_session(server, memory="off")
    run = run_repl(session, [f"{CELSIUS}\r", "/memory\r", "/remember Use metric.\r", "/memory manual\r",
                             "/remember Use metric.\r", "/memory off\r", "/memory\r", "hello\r"])
    out = run.output
    assert "no standing notes: memory off" in out
    refused = out.index("error: memory is off")
    assert out.index("kept as standing") > refused  # only once /remember could add it
    assert 'kept as standing (m1): "Use metric."' in out
    assert "kept but not sent: memory is off" in out
    assert all(m["role"] != "system" for m in server.requests[-1]["messages"])


def test_preview_says_what_the_next_eviction_takes(server: FakeServer) -> None:
    session = make_session(server, budget=600, reply_reserve=50)
    run = run_repl(session, [f"{ANA}\r"] + [f"lakes part {n} " + "water " * 25 + "\r" for n in range(4)]
                   + ["/preview\r"], width=200)
    found = next_eviction(session)
    assert found.turns and found.turns[0].turn == 1 and found.room > 0
    out = run.output
    assert f"in about {found.room:,} tokens of new messages and replies" in out
    assert "drop-oldest will drop, oldest first, down to about" in out
    assert "turn 1 · #1-#2 · " in out and "(its standing sentence stays: m1)" in out
    # And that is what happens: the next turns evict exactly those turns first.
    told: list[Event] = []
    session.hooks = Hooks(on_event=told.append)
    while not any(describe(e).startswith("evicted") for e in told):
        session.send("more lakes " + "water " * 25)
    first = next(e for e in told if describe(e).startswith("evicted"))
    assert describe(first).startswith(f"evicted #1-#2 (turn 1, 2 messages, {found.turns[0].tokens:,} tokens)")
    none = make_session(server, policy="none")
    assert "policy none never evicts" in run_repl(none, ["/preview\r"]).output


# ---- save files, the log and -c ------------------------------------------------------------


def test_save_and_load_carry_the_memory(server: FakeServer, tmp_path: Path) -> None:
    session = make_session(server)
    run_repl(session, [f"{ANA}\r", "/remember Use metric.\r", f"/save {tmp_path / 'c.json'}\r"])
    data = json.loads((tmp_path / "c.json").read_text())
    assert [n["text"] for n in data["memory"]["notes"]] == [ANA, "Use metric."]
    assert data["memory"]["notes"][0]["source"] == 1 and data["memory"]["notes"][1]["source"] is None
    other = make_session(server)
    run = run_repl(other, [f"/load {tmp_path / 'c.json'}\r", "/memory\r", "hi\r"])
    assert "m2 · " in run.output and "by /remember: Use metric." in run.output
    assert contents(server.requests[-1])[0] == f"{MEMORY_HEADER}\n- {ANA}\n- Use metric."
    assert "kept as standing" not in run.output  # nothing read again: the file had its memory


def test_an_older_save_file_gets_its_memory_once_on_load(server: FakeServer, tmp_path: Path) -> None:
    session = make_session(server, memory="off")
    run_repl(session, [f"{CELSIUS}\r", "second\r"])
    data = persist.to_data(*state(session))
    del data["memory"]  # as version 2 files were written before standing memory
    (tmp_path / "old.json").write_text(json.dumps(data))
    other = make_session(server)
    run = run_repl(other, [f"/load {tmp_path / 'old.json'}\r", "next\r"])
    assert f'kept as standing (m1): "{CELSIUS}" · /forget m1' in run.output
    assert contents(server.requests[-1])[0] == f"{MEMORY_HEADER}\n- {CELSIUS}"


def test_one_shot_continue_chains_carry_the_memory(server: FakeServer) -> None:
    url = ("--base-url", server.url)
    assert run_cli(*url, "-v", f"Hello. {CELSIUS}").returncode == 0
    done = run_cli(*url, "-c", "-v", "What about Oslo in March?")
    assert done.returncode == 0, done.stderr
    assert contents(server.requests[-1])[0] == f"{MEMORY_HEADER}\n- {CELSIUS}"
    done = run_cli(*url, "-c", "-v", f"{ANA} Thanks.")
    assert b'kept as standing (m2): "My wife\'s name is Ana."' in done.stderr
    done = run_cli(*url, "-c", "And for tomorrow?")
    assert contents(server.requests[-1])[0] == f"{MEMORY_HEADER}\n- {CELSIUS}\n- {ANA}"
    users = [m["content"] for m in server.requests[-1]["messages"] if m["role"] == "user"]
    assert sum(CELSIUS in t for t in users) == 1  # turn 1 itself, as it was; the slot holds it once
    dry = run_cli("--dry-run", "-c", "next")
    assert json.loads(dry.stdout)["messages"][0]["content"] == f"{MEMORY_HEADER}\n- {CELSIUS}\n- {ANA}"


def test_a_conversation_from_an_older_log_gets_its_memory_detected_once(server: FakeServer) -> None:
    url = ("--base-url", server.url)
    assert run_cli(*url, "--memory", "off", f"Hello. {CELSIUS}").returncode == 0
    from stateless_chat.config import default_data_dir

    path = default_data_dir(os.environ) / DEFAULT_NAME
    with sqlite3.connect(path) as db:  # as a log written before standing memory holds it: no memory
        db.execute("UPDATE conversations SET memory = NULL")
    done = run_cli(*url, "-c", "-v", "and Oslo?")
    assert b'kept as standing (m1): "Please always give temperatures in Celsius."' in done.stderr
    assert contents(server.requests[-1])[0] == f"{MEMORY_HEADER}\n- {CELSIUS}"
    done = run_cli(*url, "-c", "-v", "and Bergen?")
    assert b"kept as standing" not in done.stderr  # detected once: the log holds it now
    assert contents(server.requests[-1])[0] == f"{MEMORY_HEADER}\n- {CELSIUS}"


def test_the_log_holds_the_event_lines(server: FakeServer, tmp_path: Path) -> None:
    session = make_session(server)
    log = attach_journal(session, tmp_path / "logs.db")
    session.send(f"OK. {ANA}")
    from stateless_chat.store.logstore import LogStore

    with LogStore.open(tmp_path / "logs.db") as store:
        (turn,) = store.turns(log.cid or "")
        assert f'kept as standing (m1): "{ANA}" · /forget m1' in turn.events
    log.close()


# ---- recall on by default, and what it cannot fit ------------------------------------------------


def test_recall_is_on_by_default_and_says_what_did_not_fit(server: FakeServer, tmp_path: Path) -> None:
    session = make_session(server, budget=1200, reply_reserve=100, recall_budget=40)
    assert session.settings.recall == "auto"
    log = attach_journal(session, tmp_path / "logs.db")
    told: list[Event] = []
    session.hooks = Hooks(on_event=told.append)
    session.send("the heron sanctuary opens at dawn " + "marsh " * 60)  # a turn far larger than 40 tokens
    session.send("the wifi password is kestrel")
    while not session.conversation.evicted or session.conversation.evicted[0].turn != 1:
        session.send("tell me about lakes " + "water " * 40)
    told.clear()
    session.send("when does the heron sanctuary open?")
    notices = [describe(e) for e in told if isinstance(e, Notice)]
    assert any(line.startswith("recall: turn 1 (") and "matched but did not fit the recall budget of 40 "
               "tokens (recall_budget); /recall N brings one back" in line for line in notices), notices
    assert not any(isinstance(e, Recalled) and e.turn == 1 for e in told)
    told.clear()
    session.send("and the heron sanctuary closes when?")
    assert not any(isinstance(e, Notice) and "turn 1 (" in describe(e) for e in told)  # said once
    log.close()


@pytest.mark.parametrize("first", ["stateless_chat.ui.commands", "stateless_chat.ui.memorycommands"])
def test_memory_commands_are_there_without_the_repl(first: str) -> None:
    """/memory, /remember, /forget and /preview are registered whoever imports the registry first: a
    fresh interpreter that never imports the REPL dispatches them."""
    import subprocess
    import sys

    from tests.support import ROOT

    code = f"""
import importlib, sys
importlib.import_module({first!r})
from stateless_chat.app import App
from stateless_chat.chat.session import Session
from stateless_chat.config import Settings
from stateless_chat.ui.commands import REGISTRY, dispatch
assert "stateless_chat.ui.repl" not in sys.modules
assert {{"memory", "remember", "forget", "preview"}} <= set(REGISTRY)
session = Session(Settings(base_url="http://127.0.0.1:9"), None)
app = App(session.settings, session)
print(dispatch(app, "/remember I am vegetarian.").lines[0])
print("\\n".join(dispatch(app, "/memory").lines))
"""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'kept as standing (m1): "I am vegetarian."' in done.stdout
    assert "m1 · " in done.stdout and "by /remember: I am vegetarian." in done.stdout
