"""Continuing a long conversation (-c) without reading its evicted text: the evicted entries read back
from the log are held by reference (``core.evicted``), and everything that uses them reads them when
asked: ``/history all``, recall (by hand, auto, the ``recall_history`` tool), ``/save``, a fork, and
the log itself, which goes on as if they had been read.

Real SQLite files; the chat's own ``Session`` and journal, answered in this process.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.chat.session import Session
from stateless_chat.config import Settings
from stateless_chat.core.evicted import Evicted, Held, Row
from stateless_chat.core.history import Conversation
from stateless_chat.core.messages import Entry, Eviction, Message
from stateless_chat.store import journal, logstore, persist
from stateless_chat.store.logstore import LogStore
from stateless_chat.store.replay import Replies, replay_backend
from stateless_chat.tools.toolbox import RecallTool
from stateless_chat.ui.commands import history_rows

TOPICS = ["harbour", "glacier", "orchard", "lantern", "volcano", "meadow", "canyon", "lagoon"]


def settings(**changes: Any) -> Settings:
    values: dict[str, Any] = dict(base_url="http://127.0.0.1:9/v1", budget=900, reply_reserve=100,
                                  recall_budget=300, context_window=4_000, stream=False, max_retries=0,
                                  timeout=5.0, recall="auto", memory="off")
    values.update(changes)
    return Settings(**values)


def chat(path: Path, turns: int, **changes: Any) -> tuple[Session, journal.Journal, Replies]:
    """Return a session that ran ``turns`` turns logged into ``path`` (most of them evicted)."""
    run = settings(**changes)
    backend = Replies()
    session = Session(run, replay_backend(backend))
    log = journal.open_journal(path, run)
    session.on_turn = (*session.on_turn, log)
    session.recall = log.recall
    for n in range(1, turns + 1):
        topic = TOPICS[n % len(TOPICS)]
        backend.answer = f"Answer {n}: the {topic} number {n} " + "stone river cloud " * 12
        session.send(f"Question {n} about the {topic} zq{n}x " + "field hill road " * 10)
    return session, log, backend


def continued(path: Path, **changes: Any) -> tuple[Session, journal.Journal, Replies]:
    """Return a session continuing the latest conversation of ``path`` as ``-c`` does."""
    run = settings(**changes)
    backend = Replies()
    log = journal.open_journal(path, run)
    restored = log.resume(None)
    session = Session(run, replay_backend(backend))
    session.load(*journal.loadable(restored))
    session.on_turn = (*session.on_turn, log)
    session.recall = log.recall
    return session, log, backend


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Collection[int] | None]:
    """What the log is asked to read of the held entries: the ids (None: all of them)."""
    asked: list[Collection[int] | None] = []
    original = logstore._Archive.read

    def spy(self: Any, ids: Collection[int] | None) -> list[Entry]:
        asked.append(None if ids is None else set(ids))
        return original(self, ids)

    monkeypatch.setattr(logstore._Archive, "read", spy)
    return asked


def texts(entries: Sequence[Entry]) -> list[tuple[int, str, Eviction | None]]:
    return [(e.id, e.content, e.eviction) for e in entries]


def test_continue_holds_the_evicted_entries_and_a_turn_reads_none_of_their_text(
        tmp_path: Path, reads: list[Collection[int] | None]) -> None:
    path = tmp_path / "logs.db"
    first, log, _ = chat(path, 30)
    log.close()
    before = first.conversation
    assert len(before.evicted) > 30
    session, log, backend = continued(path)
    evicted = session.conversation.evicted
    assert evicted.held is not None and evicted.loaded() == ()  # nothing of their text was read
    assert len(evicted) == len(before.evicted)
    assert evicted.tokens == sum(e.tokens for e in before.evicted)
    assert session.conversation.history == before.history
    backend.answer = "Nothing to do with any of it."
    session.send("A question on nothing said before, qwv")
    session.send("And one more on nothing, qwv")
    log.close()
    assert None not in reads  # neither the turns, nor recall, nor the log's writes read all of them
    assert evicted.loaded() == ()


def test_history_save_and_the_log_after_continue_hold_the_evicted_text(
        tmp_path: Path, reads: list[Collection[int] | None]) -> None:
    path = tmp_path / "logs.db"
    first, log, _ = chat(path, 24)
    log.close()
    original = list(first.conversation.evicted)
    session, log, _ = continued(path)
    session.send("A new question, qwv")
    log.close()
    rows, hidden = history_rows(session, include_evicted=True)
    assert hidden == 0
    shown = {row.id: row for row in rows}
    for entry in original:
        assert entry.id in shown and shown[entry.id].state in ("evicted", "summarized")
    assert reads == [None] or None in reads  # /history all read them, once
    data = persist.to_data(session.conversation, session.ledger, {})
    saved = {m["id"]: m["content"] for m in data["evicted"]}
    assert all(saved[e.id] == e.content for e in original)
    loaded, _, _ = persist.loadable(persist.from_data(data))
    assert texts(loaded.evicted)[:len(original)] == texts(original)
    # Read back again, the log holds the whole conversation as the continued chat left it.
    with LogStore.open(path) as reader:
        again = reader.restore(reader.latest() or "")
        assert again is not None
        assert texts(again.conversation.evicted) == texts(session.conversation.evicted)
        assert again.conversation.history == session.conversation.history


def test_recall_after_continue_reads_only_the_turns_it_brings_back(
        tmp_path: Path, reads: list[Collection[int] | None]) -> None:
    path = tmp_path / "logs.db"
    first, log, _ = chat(path, 24)
    log.close()
    target = next(e for e in first.conversation.evicted if e.role == "user" and "zq3x" in e.content)
    session, log, backend = continued(path)
    backend.answer = "It was the third."
    session.send("What about zq3x again?")  # auto recall by the log's index
    assert None not in reads and reads and all(len(ids or ()) <= 4 for ids in reads)
    recalled_text = [e.content for e in session.conversation.live if e.id == target.id]
    assert recalled_text == [target.content]
    # By hand, and the recall_history tool: the matches are read, nothing else.
    other = next(e for e in first.conversation.evicted if e.role == "user" and "zq5x" in e.content)
    conversation, back = session.conversation.recall([other.id])
    assert [e.content for e in back if e.id == other.id] == [other.content]
    assert other.id not in conversation.evicted.ids()
    tool = RecallTool(lambda query: log.matches(query, session.conversation),
                      lambda: session.conversation.evicted)
    turn = next(row[1] for row in session.conversation.evicted.rows() if row[1] not in (3, other.turn))
    result = tool.call(f'{{"query": "zq{turn}x"}}')
    assert f"zq{turn}x" in result.text and not result.is_error
    assert None not in reads
    session.send("Thanks.")
    log.close()
    with LogStore.open(path) as reader:
        again = reader.restore(reader.latest() or "")
        assert again is not None
        assert texts(again.conversation.evicted) == texts(session.conversation.evicted)
        assert again.conversation.live == session.conversation.live


def test_a_fork_after_continue_writes_the_held_entries_whole(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    first, log, _ = chat(path, 20)
    log.close()
    original = texts(first.conversation.evicted)
    one, log_one, _ = continued(path)
    two, log_two, _ = continued(path)
    one.send("The first chat goes on.")
    two.send("The second chat goes on too.")  # writes second: a fork, holding all of its own state
    assert log_two.cid != log_one.cid
    log_one.close()
    log_two.close()
    with LogStore.open(path) as reader:
        forked = reader.restore(log_two.cid or "")
        assert forked is not None
        assert texts(forked.conversation.evicted)[:len(original)] == original
        assert texts(forked.conversation.evicted) == texts(two.conversation.evicted)


class Shelf:
    """An archive in memory that counts what it is asked."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = list(entries)
        self.asked: list[Collection[int] | None] = []

    def index(self) -> list[Row]:
        self.asked.append(())
        return [(e.id, e.turn, e.tokens, e.eviction.how if e.eviction else "dropped") for e in self.entries]

    def read(self, ids: Collection[int] | None) -> list[Entry]:
        self.asked.append(None if ids is None else set(ids))
        return [e for e in self.entries if ids is None or e.id in ids]


def entry(number: int, how: str = "dropped") -> Entry:
    message = Message("user" if number % 2 else "assistant", f"text {number}")
    return Entry(number, message, 10, turn=(number + 1) // 2, eviction=Eviction(how, 9))  # type: ignore[arg-type]


def test_evicted_held_by_reference_is_read_only_when_its_text_is_asked() -> None:
    shelf = Shelf([entry(n) for n in range(1, 9)] + [entry(9, "removed"), entry(10, "removed")])
    held = Evicted(held=Held(10, 100, shelf))
    more = held + (entry(11),)
    assert len(more) == 11 and more.tokens == 110 and shelf.asked == []
    conversation = Conversation(history=(), evicted=more, next_id=12, next_turn=7)
    assert conversation.why_gone(3) == "turn 2 was evicted (#3)"
    assert shelf.asked == [(), {3}]
    recalled, back = conversation.recall([4])
    assert [e.id for e in back] == [3, 4] and [e.content for e in back] == ["text 3", "text 4"]
    assert len(recalled.evicted) == 9 and recalled.evicted.tokens == 90
    assert 3 not in recalled.evicted.ids() and None not in shelf.asked
    assert recalled.evicted.extends(recalled.evicted + (entry(12),)) is None
    assert (recalled.evicted + (entry(12),)).extends(recalled.evicted) == (entry(12),)
    counted = recalled.evicted.recounted(lambda message: 7)
    assert counted.get(5) == Entry(5, entry(5).message, 7, turn=3, eviction=Eviction("dropped", 9))
    assert None not in shelf.asked
    assert [e.id for e in recalled.evicted] == [1, 2, 5, 6, 7, 8, 9, 10, 11]  # now it is read, once
    assert recalled.evicted == tuple(e for e in shelf.entries if e.id not in (3, 4)) + (entry(11),)
    assert shelf.asked.count(None) == 1
    # A tuple is taken where the conversation is built, and compares equal to the same entries.
    plain = Conversation(evicted=(entry(1),))  # type: ignore[arg-type]
    assert isinstance(plain.evicted, Evicted) and plain.evicted == (entry(1),)
    assert plain == Conversation(evicted=Evicted([entry(1)]))


def test_a_damaged_evicted_row_read_after_c_is_left_out_and_said_once(tmp_path: Path) -> None:
    """Held entries are read when asked, after ``-c``: a damaged one is left out there (as ``restore``
    leaves out a damaged live one) and the next turn says so in one line, once."""
    import sqlite3

    path = tmp_path / "logs.db"
    first, log, _ = chat(path, 12)
    log.close()
    damaged = first.conversation.evicted[0].id
    with sqlite3.connect(path) as db:  # the stored message of the first evicted entry becomes no message
        db.execute("UPDATE texts SET raw = '[1, 2]', role = 'user' WHERE id = "
                   "(SELECT text FROM entries WHERE id = ? AND slot = 'evicted')", (damaged,))
    session, log, backend = continued(path)
    warned: list[str] = []
    log.warn = warned.append
    read = list(session.conversation.evicted)  # what /history all or /save reads: every held entry
    assert damaged not in [e.id for e in read] and len(read) == len(first.conversation.evicted) - 1
    backend.answer = "fine"
    session.send("one more question")
    assert len(warned) == 1 and warned[0].startswith(
        f"a damaged row of conversation {log.cid} in the log was left out: message #{damaged}: ")
    session.send("and another")
    assert len(warned) == 1  # said once
    log.close()
