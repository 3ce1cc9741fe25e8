"""The recalled slot of the conversation model: recall moves evicted turns back, the request sends them
right before the new message, the policies evict them like history (after it), and the next turn
settles them into the history where they were sent; a turn auto recall brought back stays marked
there and is the first to leave when room is needed. No log needed for most: a recaller is any
function (the last tests recall through the real log)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from stateless_chat.chat.session import Session
from stateless_chat.chat.turn import baseline_tokens
from stateless_chat.core.context import DropOldest
from stateless_chat.core.history import Conversation, entry_state
from stateless_chat.core.messages import Entry, Evicted, Eviction, Message, Recalled, describe
from stateless_chat.core.summary import Summarize, summary_instruction
from stateless_chat.errors import CommandError, RequestError
from tests.fakeserver import FakeServer
from tests.support import attach_journal, make_session


def count(message: Message) -> int:
    return 3 + len(message.text) // 4


def chat(turns: int, *, evicted: int = 0, text: str = "x" * 40) -> Conversation:
    """Return a conversation of ``turns`` turns (user + assistant), the first ``evicted`` dropped."""
    conversation = Conversation.start("system", count)
    for turn in range(1, turns + 1):
        ask = conversation.new_entry("user", f"q{turn} {text}", count)
        conversation = conversation.append(ask)
        conversation = conversation.append(conversation.new_entry("assistant", f"a{turn} {text}", count,
                                                                  turn=turn))
    if evicted:
        ids = [e.id for e in conversation.history if e.turn <= evicted]
        conversation, _ = conversation.drop(ids)
        record = Eviction("dropped", conversation.next_turn)
        conversation = replace(conversation, evicted=tuple(replace(e, eviction=record)
                                                           for e in conversation.evicted))
    return conversation


def test_recall_moves_the_whole_turn_back_into_its_own_slot() -> None:
    conversation = chat(5, evicted=3)
    recalled, back = conversation.recall([4])  # message 4: the reply of turn 2
    assert [e.id for e in back] == [3, 4] and all(e.eviction is not None for e in back)
    assert [e.id for e in recalled.recalled] == [3, 4] and all(e.eviction is None for e in recalled.recalled)
    assert [e.id for e in recalled.evicted] == [1, 2, 5, 6]
    assert recalled.history == conversation.history
    assert [e.id for e in recalled.request_entries()] == [0, 7, 8, 9, 10, 3, 4]
    assert recalled.tokens == conversation.tokens + sum(e.tokens for e in back)
    assert [entry_state(recalled.find(i), recalled) for i in (3, 1, 7)] == ["recalled", "evicted", "sent"]
    assert recalled.is_live(3) and recalled.live == recalled.history + recalled.recalled
    recalled.check()
    again, more = recalled.recall([1, 6])
    assert [e.id for e in again.recalled] == [1, 2, 3, 4, 5, 6] and again.evicted == () and len(more) == 4


@pytest.mark.parametrize("number, said", [
    (7, "message #7 is still sent"), (0, "the system prompt is still sent"), (99, "no message #99")])
def test_only_evicted_messages_can_be_recalled(number: int, said: str) -> None:
    conversation = chat(5, evicted=3)
    with pytest.raises(CommandError, match=said):
        conversation.recall([number])
    recalled, _ = conversation.recall([1])
    with pytest.raises(CommandError, match="message #1 is still sent"):  # one copy: never twice
        recalled.recall([1])


def test_the_next_entries_settle_the_recalled_ones_into_the_history_where_they_were_sent() -> None:
    conversation, _ = chat(5, evicted=3).recall([1])
    ask = conversation.new_entry("user", "next", count)
    settled = conversation.append(ask)
    assert settled.recalled == ()
    assert [e.id for e in settled.history] == [7, 8, 9, 10, 1, 2, 11]
    assert [e.id for e in settled.request_entries()] == [e.id for e in conversation.request_entries([ask])]


def test_pin_drop_trim_and_clear_see_recalled_entries_as_live() -> None:
    conversation, _ = chat(5, evicted=3).recall([1])
    pinned = conversation.set_pinned(1, True)
    assert pinned.recalled[0].pinned and pinned.pinned_count == 0  # the count is of the history
    dropped, gone = conversation.drop([2])
    assert [e.id for e in gone] == [1, 2] and dropped.recalled == ()
    assert dropped.find(1).eviction == Eviction("removed", dropped.next_turn)
    trimmed, gone = conversation.trim(1)
    assert [e.id for e in trimmed.live] == [1, 2]  # the newest turn by request order is the recalled one
    cleared, gone = conversation.clear()
    assert cleared.live == () and {e.id for e in gone} == {1, 2, 7, 8, 9, 10}


def test_drop_oldest_evicts_recalled_turns_after_every_history_turn() -> None:
    conversation, _ = chat(5, evicted=2).recall([1])
    pending = (conversation.new_entry("user", "new " + "y" * 40, count),)
    size = sum(e.tokens for e in conversation.request_entries(pending)) + 3
    history_turn = sum(e.tokens for e in conversation.history if e.turn == 3)
    fit = DropOldest().fit(conversation.candidate(pending, budget=size - 1))
    assert [e.turn for e in fit.events if hasattr(e, "turn")] == [3]  # the oldest history turn first
    assert fit.total <= size - 1 and fit.total == size - history_turn
    tight = DropOldest().fit(conversation.candidate(pending, budget=size - 4 * history_turn))
    assert [getattr(e, "turn", None) for e in tight.events] == [3, 4, 5, 1]
    after = conversation.apply(tight)
    assert after.recalled == () and after.find(1).eviction == Eviction("dropped", conversation.next_turn)
    assert sorted(e.id for e in after.evicted) == list(range(1, 11))  # each once, none lost


def test_apply_takes_entries_recalled_for_the_request_out_of_evicted_and_leaves_others_as_they_were() -> None:
    """What ``Session.plan`` does: recall on a copy, fit, then apply the fit to the conversation as it
    was; an entry recalled and then dropped by the same fit stays evicted with its old record."""
    before = chat(5, evicted=3)
    copy, _ = before.recall([1, 3])
    pending = (copy.new_entry("user", "new", count),)
    candidate = copy.candidate(pending, budget=10_000)
    fit = DropOldest().fit(replace(candidate, recalled=tuple(e for e in candidate.recalled if e.turn == 1)))
    after = before.apply(fit)
    assert [e.id for e in after.recalled] == [1, 2]
    assert [e.id for e in after.evicted] == [3, 4, 5, 6] and after.find(3).eviction == before.find(3).eviction


class FoldingWriter:
    """A summary writer that notes the ids of what it folds and writes a short summary, no request."""

    def __init__(self) -> None:
        self.folded: list[list[int]] = []

    def capacity(self, candidate: object) -> None:
        return None

    def write(self, candidate: object, entries: list[Entry]) -> str:
        self.folded.append([e.id for e in entries])
        return "short"


def test_summarize_folds_a_recalled_turn_like_history_after_it() -> None:
    conversation, _ = chat(4, evicted=1).recall([1])
    pending = (conversation.new_entry("user", "new", count),)
    candidate = conversation.candidate(pending, budget=60, low_water=20)
    writer = FoldingWriter()
    folded = writer.folded

    fit = Summarize(writer, count).fit(candidate)
    assert folded == [[3, 4, 5, 6, 7, 8, 1, 2]]  # in request order: the history, then the recalled turn
    assert fit.folded == (3, 4, 5, 6, 7, 8, 1, 2) and fit.request.recalled == ()
    # the summary request resends what the last request sent, then the recalled turn: numbered so
    instruction = summary_instruction(candidate, [e for e in candidate.entries() if e.id in (7, 8, 1)])
    assert "conversation messages 5-7 above" in instruction
    after = conversation.apply(fit)
    assert all(after.find(i).eviction == Eviction("folded", conversation.next_turn) for i in folded[0])
    assert after.recalled == () and len(after.evicted) == 8


def test_a_recaller_fills_the_slot_of_the_next_request_and_a_failed_turn_changes_nothing(
    server: FakeServer,
) -> None:
    session = make_session(server, budget=400, reply_reserve=50)
    for n in range(12):
        session.send(f"message {n} " + "words to fill the budget " * 4)
    evicted = session.conversation.evicted
    assert evicted
    events: list[object] = []
    session.hooks = replace(session.hooks, on_event=events.append)

    def recaller(text: str, conversation: Conversation, budget: int) -> tuple[Conversation, list[Recalled]]:
        recalled, back = conversation.recall([1])
        return recalled, [Recalled(1, tuple(e.id for e in back), sum(e.tokens for e in back), ("message",))]

    session.recall = recaller
    preview = session.preview_body("hello")
    assert [m["content"] for m in preview["messages"][-3:]] == [
        evicted[0].content, evicted[1].content, "hello"]
    assert session.conversation.evicted == evicted  # a plan changes nothing
    before = session.conversation
    server.fail_next(status=400)
    with pytest.raises(RequestError):
        session.send("hello")
    assert session.conversation is before
    session.send("hello")
    failed, said = [e for e in events if isinstance(e, Recalled)]  # said before each attempt went out
    assert failed == said
    assert describe(said) == f'recalled turn 1 ({said.tokens} tokens): "message"'
    assert [m["content"] for m in server.requests[-1]["messages"][-3:]] == [
        evicted[0].content, evicted[1].content, "hello"]
    assert session.conversation.is_live(1) and session.conversation.recalled == ()
    assert session.ledger.turns[-1].events[0] == said


def test_the_baseline_counts_recalled_entries_once(server: FakeServer) -> None:
    session: Session = make_session(server, budget=400, reply_reserve=50)
    for n in range(12):
        session.send(f"message {n} " + "words to fill the budget " * 4)
    everything = baseline_tokens(session.conversation, ())
    session.conversation, _ = session.conversation.recall([1])
    assert baseline_tokens(session.conversation, ()) == everything


# ---- auto-recalled turns leave first -------------------------------------------------------------


def test_an_auto_recalled_turn_settles_marked_and_drop_oldest_evicts_it_before_older_history() -> None:
    conversation, _ = chat(5, evicted=2).recall([1], auto=True)
    assert all(e.recalled for e in conversation.recalled)
    settled = conversation.append(conversation.new_entry("user", "new " + "y" * 40, count))
    assert [e.turn for e in settled.history] == [3, 3, 4, 4, 5, 5, 1, 1, 6] and settled.find(1).recalled
    assert entry_state(settled.find(1), settled) == "recalled"
    pending = (settled.new_entry("user", "next", count),)
    size = sum(e.tokens for e in settled.request_entries(pending)) + 3
    fit = DropOldest().fit(settled.candidate(pending, budget=size - 1))
    left, = fit.events
    assert isinstance(left, Evicted) and left.turn == 1 and left.recalled  # not turn 3, the oldest
    assert describe(left).startswith("evicted #1-#2 (recalled turn 1 left again, 2 messages, ")
    after = settled.apply(fit)
    assert [e.turn for e in after.history] == [3, 3, 4, 4, 5, 5, 6]
    assert not after.find(1).recalled and after.find(1).eviction == Eviction("dropped", settled.next_turn)
    # the user's own /recall N settles as any history turn: evicted in its place, after older ones
    mine, _ = chat(5, evicted=2).recall([1])
    mine = mine.append(mine.new_entry("user", "new " + "y" * 40, count))
    assert not mine.find(1).recalled
    fit = DropOldest().fit(mine.candidate(pending, budget=size - 1))
    assert [getattr(e, "turn", None) for e in fit.events] == [3]


def test_summarize_drops_an_auto_recalled_turn_first_and_folds_only_if_that_is_not_enough() -> None:
    conversation, _ = chat(4, evicted=1).recall([1], auto=True)
    settled = conversation.append(conversation.new_entry("user", "new", count))
    pending = (settled.new_entry("user", "next", count),)
    size = sum(e.tokens for e in settled.request_entries(pending)) + 3
    writer = FoldingWriter()
    folded = writer.folded

    fit = Summarize(writer, count).fit(settled.candidate(pending, budget=size - 1))
    assert folded == [] and fit.dropped == (1, 2) and fit.folded == ()  # enough: no summary request
    tight = Summarize(writer, count).fit(settled.candidate(pending, budget=60, low_water=20))
    assert tight.dropped[:2] == (1, 2) and folded and 1 not in folded[0]  # never folded twice
    assert isinstance(tight.events[0], Evicted) and tight.events[0].recalled


def test_an_auto_recalled_turn_is_sent_with_the_message_that_needed_it_then_leaves_first(
    server: FakeServer, tmp_path: Path,
) -> None:
    """Through the session and the real log: the fact comes back for the question that needs it;
    when room is needed next, it leaves before the turns that are recent, which stay."""
    session = make_session(server, budget=600, reply_reserve=100, recall="auto", memory="off", evict_to=1.0)
    events: list[object] = []
    session.hooks = replace(session.hooks, on_event=events.append)
    log = attach_journal(session, tmp_path / "logs.db")
    topics = ["weather", "cooking", "music", "trains", "gardens", "tides", "bridges", "castles", "pottery",
              "chess", "kites", "lanterns", "orchards", "harbours", "glaciers", "deserts"]

    def filler(n: int) -> str:
        return f"Tell me about {topics[n]} {n}: " + f"{topics[n]} " * 30

    session.send("Please note: the launch code is 7491.")
    n = 0
    while session.conversation.is_live(1):
        n += 1
        session.send(filler(n))
    told = len(events)
    session.send("What was the launch code?")
    question = server.requests[-1]["messages"]
    assert any("7491" in (m["content"] or "") for m in question[:-1])  # sent with the message that needed it
    assert any(isinstance(e, Recalled) and e.turn == 1 for e in events[told:])
    asked = next(e.turn for e in session.conversation.history if e.content == "What was the launch code?")
    oldest = session.conversation.history[0].turn  # the oldest turn of the window, not recalled
    assert oldest not in (1, asked)
    told = len(events)
    while not any(isinstance(e, Evicted) for e in events[told:]):  # until room is needed again
        n += 1
        session.send(filler(n))
    gone = [e for e in events[told:] if isinstance(e, Evicted)]
    assert [e.turn for e in gone] == [1] and gone[0].recalled  # the recalled turn leaves first, alone
    assert "7491" not in str(server.requests[-1]["messages"])
    live = {e.turn for e in session.conversation.history}
    assert oldest in live and asked in live  # every turn of the window stays, the oldest one too
    assert session.conversation.find(1).eviction is not None and not session.conversation.find(1).recalled
    log.close()


def test_the_mark_of_an_auto_recalled_turn_is_logged_and_continued_by_c(server: FakeServer,
                                                                        tmp_path: Path) -> None:
    """``-c`` continues the conversation exactly as it was left: a turn auto recall brought back is
    still the first to leave (its mark is in the log, not only in save files)."""
    from stateless_chat.store.logstore import LogStore

    session = make_session(server, budget=600, reply_reserve=100, recall="auto", memory="off", evict_to=1.0)
    log = attach_journal(session, tmp_path / "logs.db")
    session.send("Please note: the launch code is 7491.")
    n = 0
    while session.conversation.is_live(1):
        n += 1
        session.send(f"Tell me about topic {n}: " + f"subject{n} " * 30)
    session.send("What was the launch code?")
    marked = [e.id for e in session.conversation.history if e.recalled]
    assert marked and {session.conversation.find(i).turn for i in marked} == {1}
    log.close()
    with LogStore.open(tmp_path / "logs.db") as store:
        restored = store.restore(log.cid or "")
    assert restored is not None
    assert [e.id for e in restored.conversation.history if e.recalled] == marked
    assert restored.conversation.history == session.conversation.history  # the mark counts in equality
