"""What the log writes of a conversation: only what changed, and always enough to read it back whole.

Random sequences of every edit ``Conversation`` has (turns, evictions, pins, /drop, /trim, /clear,
/undo, recall, a summary, a recount) are written through the real store (in memory) one change at
a time, as the journal writes them; after each one the conversation read back must be the one
written, and a turn must write only its own entries.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from stateless_chat.core.history import Conversation
from stateless_chat.core.messages import Entry, Message, ToolCall
from stateless_chat.errors import CommandError
from stateless_chat.store import logdiff
from stateless_chat.store.logdiff import Mirror
from stateless_chat.store.logstore import Change, LogStore, memory_data


def measure(message: Message) -> int:
    return len((message.content or "").split()) + 3


def with_turn(conversation: Conversation, n: int, rng: random.Random) -> Conversation:
    """Return ``conversation`` with one more turn: a question, maybe a tool call and its result, a reply."""
    question = conversation.new_entry("user", f"question {n} " + "word " * rng.randrange(5), measure)
    entries = [question]
    if rng.random() < 0.2:
        call = ToolCall(f"c{n}", "look", f'{{"q": {n}}}')
        entries.append(conversation.new_entry("assistant", None, measure, turn=question.turn,
                                              tool_calls=(call,), id=question.id + 1))
        entries.append(conversation.new_entry("tool", f"result {n}", measure, turn=question.turn,
                                              tool_call_id=call.id, id=question.id + 2))
    entries.append(conversation.new_entry("assistant", f"answer {n}", measure, turn=question.turn,
                                          id=entries[-1].id + 1))
    return conversation.append(*entries)


def evicted_oldest(conversation: Conversation, how: str) -> Conversation:
    live = [e for e in conversation.history if not e.pinned]
    if not live:
        return conversation
    turn = live[0].turn
    return conversation._evict({e.id for e in conversation.live if e.turn == turn}, how)  # type: ignore[arg-type]


def edit(conversation: Conversation, rng: random.Random, n: int) -> tuple[str, Conversation]:
    """Return one random edit of ``conversation`` and its name."""
    choice = rng.choice(["turn", "turn", "turn", "evict", "fold", "pin", "drop", "trim", "clear", "undo",
                         "recall", "summary", "recount", "system"])
    try:
        if choice == "turn":
            return choice, with_turn(conversation, n, rng)
        if choice == "evict":
            return choice, evicted_oldest(conversation, "dropped")
        if choice == "fold":
            return choice, evicted_oldest(conversation, "folded")
        if choice == "pin" and conversation.history:
            entry = rng.choice(conversation.history)
            return choice, conversation.set_pinned(entry.id, not entry.pinned)
        if choice == "drop" and conversation.live:
            return choice, conversation.drop([rng.choice(conversation.live).id])[0]
        if choice == "trim":
            return choice, conversation.trim(rng.randrange(4))[0]
        if choice == "clear" and rng.random() < 0.3:
            return choice, conversation.clear()[0]
        if choice == "undo":
            return choice, conversation.without_last_turn(measure)[0]
        if choice == "recall" and conversation.evicted:
            return choice, conversation.recall([rng.choice(conversation.evicted).id])[0]
        if choice == "summary":
            text = f"summary {n}"
            message = Message("system", text)
            summary = Entry(conversation.next_id, message, measure(message), n, kind="summary")
            next_id = conversation.next_id + 1
            return choice, dataclasses.replace(conversation, summary=summary, next_id=next_id)
        if choice == "recount":
            return choice, conversation.recounted(lambda m: measure(m) + 1)
        if choice == "system":
            return choice, conversation.with_system(f"be brief {n}", measure)
    except CommandError:
        pass
    return "nothing", conversation


def counted_out(conversation: Conversation) -> Conversation:
    """Return ``conversation`` with every token count 0: counts are measured again by each run that loads
    a conversation, and the log does not write a recount alone."""
    def zero(entries: tuple[Entry, ...]) -> tuple[Entry, ...]:
        return tuple(dataclasses.replace(e, tokens=0) for e in entries)

    head = zero(tuple(e for e in (conversation.system, conversation.summary) if e is not None))
    system = head[0] if conversation.system is not None else None
    summary = head[-1] if conversation.summary is not None else None
    return dataclasses.replace(conversation, system=system, summary=summary,
                               history=zero(conversation.history), recalled=zero(conversation.recalled),
                               evicted=zero(conversation.evicted))


@pytest.mark.parametrize("seed", range(40))
def test_every_sequence_of_edits_reads_back_whole_and_a_turn_writes_only_itself(seed: int) -> None:
    rng = random.Random(seed)
    store = LogStore.memory()
    cid = store.start_conversation(model="m", endpoint="e")
    mirror, head = Mirror(), 0
    conversation = Conversation.start("be brief", measure)
    for n in range(1, 60):
        name, changed = edit(conversation, rng, n)
        whole = not mirror.written
        delta = mirror.delta(changed, whole=whole)
        if name == "turn" and not whole:
            new = {e.id for e in changed.all_entries()} - {e.id for e in conversation.all_entries()}
            settled = {e.id for e in conversation.recalled}  # a recalled entry settles into the history
            assert {p.entry.id for p in delta.placed} == new | settled, name
        if name in ("nothing", "recount") and not whole:
            assert delta.empty, name
        memory = memory_data(changed.memory, changed.memory_sent) if whole else None
        head = store.write(cid, Change(delta, memory=memory), head=head)
        mirror.wrote(delta, whole=whole)
        conversation = changed
        restored = store.restore(cid)
        assert restored is not None and restored.problems == ()
        assert counted_out(restored.conversation) == counted_out(conversation), (seed, n, name)
    store.close()


def test_an_evicted_slot_that_only_grows_is_looked_at_only_at_its_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The work of a write does not grow with the chat: old evicted entries are not compared again."""
    conversation = Conversation.start(None, measure)
    rng = random.Random(1)
    for n in range(1, 200):
        conversation = with_turn(conversation, n, rng)
        if n > 5:
            conversation = evicted_oldest(conversation, "dropped")
    mirror = Mirror()
    mirror.wrote(mirror.delta(conversation, whole=True), whole=True)
    compared: list[int] = []
    same = logdiff._same

    def counted(a: Entry, b: Entry) -> bool:
        compared.append(b.id)
        return same(a, b)

    monkeypatch.setattr(logdiff, "_same", counted)
    grown = evicted_oldest(with_turn(conversation, 200, rng), "dropped")
    delta = mirror.delta(grown)
    assert len(delta.placed) <= 8  # the new turn's entries and the turn it evicted
    assert len(conversation.evicted) > 350 and len(compared) <= len(grown.live)  # never the evicted ones
    recalled = grown.recall([grown.evicted[0].id])[0]  # a recall takes one out of the middle: compared whole
    compared.clear()
    mirror.wrote(delta)
    assert [p.slot for p in mirror.delta(recalled).placed] == ["recalled"] * len(recalled.recalled)
    assert len(compared) > 350
