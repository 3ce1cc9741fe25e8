"""Tests for the eviction policies (context, summary, policies).

The tests build a request as one flat tuple (system, summary, turns, the new message) and
``candidate`` splits it into the typed slots a policy sees; ``Outcome`` reads a ``Fit`` back
as the kept and evicted entries of that tuple, so each test states its expectation plainly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stateless_chat.core.context import REPLY_PRIMING, Candidate, DropOldest, Fit, KeepAll, request_size
from stateless_chat.core.messages import (
    Entry,
    EntryKind,
    Event,
    Evicted,
    Message,
    Notice,
    OverBudget,
    Role,
    Summarized,
    SummaryFailed,
)
from stateless_chat.core.policies import POLICY_NAMES, PolicyTools, make_policy
from stateless_chat.core.summary import SUMMARY_HEADER, Summarize, summary_text
from stateless_chat.errors import BudgetError, RequestError, UsageError

SUMMARY_ID = 500
Summarizer = Callable[[str | None, Sequence[Message]], str]


def counter(message: Message) -> int:
    return 3 + len(message.text) // 4


def candidate(entries: Sequence[Entry], budget: int, reserve: int = 0, next_id: int = 0,
              low_water: int | None = None) -> Candidate:
    """Split a flat request (system, summary, turns, the new message last) into its slots."""
    system = next((e for e in entries if e.turn == 0 and e.kind != "summary"), None)
    summary = next((e for e in entries if e.kind == "summary"), None)
    turns = [e for e in entries if e.turn > 0]
    return Candidate(system, summary, tuple(turns[:-1]), tuple(turns[-1:]), budget=budget, reserve=reserve,
                     next_id=next_id, low_water=low_water)


@dataclass(frozen=True)
class Outcome:
    """A ``Fit`` read back against the flat request it came from."""

    fit: Fit
    evicted: tuple[Entry, ...]

    @property
    def kept(self) -> tuple[Entry, ...]:
        return self.fit.kept

    @property
    def summary(self) -> Entry | None:
        return self.fit.request.summary

    @property
    def events(self) -> tuple[Event, ...]:
        return self.fit.events

    @property
    def total(self) -> int:
        return self.fit.total

    @property
    def over_budget(self) -> bool:
        return self.fit.over_budget


def outcome(fit: Fit, entries: Sequence[Entry]) -> Outcome:
    gone = set(fit.dropped) | set(fit.folded)
    return Outcome(fit, tuple(e for e in entries if e.id in gone and e.kind != "summary"))


class FunctionWriter:
    """A summary writer made of a plain function, with an optional fold limit."""

    def __init__(self, write: Summarizer, limit: int | None = None) -> None:
        self._write = write
        self.limit = limit

    def capacity(self, candidate: Candidate) -> int | None:
        return self.limit

    def write(self, candidate: Candidate, folded: Sequence[Entry]) -> str:
        return self._write(summary_text(candidate.summary), [e.message for e in folded])


def drop_oldest(entries: Sequence[Entry], budget: int, counter: object, *, reserve: int = 0) -> Outcome:
    return outcome(DropOldest().fit(candidate(entries, budget, reserve)), entries)


def keep_all(entries: Sequence[Entry], budget: int, counter: object, *, reserve: int = 0) -> Outcome:
    return outcome(KeepAll().fit(candidate(entries, budget, reserve)), entries)


def summarize(entries: Sequence[Entry], budget: int, count: Callable[[Message], int], summarizer: Summarizer,
              *, reserve: int = 0, summary_id: int = 0, fold_limit: int | None = None,
              low_water: int | None = None) -> Outcome:
    policy = Summarize(FunctionWriter(summarizer, fold_limit), count)
    return outcome(policy.fit(candidate(entries, budget, reserve, summary_id, low_water)), entries)


def fit(name: str, entries: Sequence[Entry], budget: int, count: Callable[[Message], int], *,
        summarizer: Summarizer | None = None, next_id: int = 0, fold_limit: int | None = None) -> Outcome:
    writer = FunctionWriter(summarizer, fold_limit) if summarizer is not None else None
    policy = make_policy(name, PolicyTools(count, writer))
    return outcome(policy.fit(candidate(entries, budget, 0, next_id)), entries)


def evicted(entries: Sequence[Entry], turn: int, tokens: int, total_after: int, budget: int) -> Evicted:
    """The ``Evicted`` event for ``turn`` of the flat request ``entries``."""
    return Evicted(turn=turn, ids=tuple(e.id for e in entries if e.turn == turn), tokens=tokens,
                   total_after=total_after, budget=budget)


def summarized(entries: Sequence[Entry], turns: Sequence[int], summary_id: int, before: int,
               after: int) -> Summarized:
    """The ``Summarized`` event for folding ``turns`` of the flat request ``entries``."""
    ids = tuple(e.id for e in entries if e.turn in turns and e.kind != "summary")
    return Summarized(ids=ids, summary_id=summary_id, tokens_before=before, tokens_after=after)


def folded_turns(event: Summarized, entries: Sequence[Entry]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(e.turn for e in entries if e.id in event.ids))


def build(
    turns: Sequence[Sequence[int]],
    *,
    new: int = 10,
    system: int | None = None,
    summary: int | None = None,
    pins: Sequence[int] = (),
) -> tuple[Entry, ...]:
    """Build a candidate request.

    Each turn is a list of token sizes: two sizes make a user message and its reply,
    one size makes a /file entry. Ids are 1, 2, ... in order (the system prompt and the
    summary included); ``pins`` lists the ids to pin. Turns are numbered from 1 and the
    new user message gets the next turn.
    """
    out: list[Entry] = []

    def add(role: Role, tokens: int, turn: int, kind: EntryKind = "turn", source: str | None = None) -> None:
        ident = len(out) + 1
        message = Message(role, f"{role} {ident}")
        out.append(Entry(ident, message, tokens, turn, pinned=ident in pins, kind=kind, source=source))

    if system is not None:
        out.append(Entry(1, Message("system", "be brief"), system, 0, pinned=True))
    if summary is not None:
        ident = len(out) + 1
        out.append(Entry(ident, Message("system", SUMMARY_HEADER + "old facts"), summary, 0, kind="summary"))
    for number, sizes in enumerate(turns, start=1):
        if len(sizes) == 1:
            add("user", sizes[0], number, kind="file", source=f"f{number}.txt")
        else:
            add("user", sizes[0], number)
            add("assistant", sizes[1], number)
    add("user", new, len(turns) + 1)
    return tuple(out)


def fixed_size(entries: Sequence[Entry], reserve: int, *, with_summary: bool = True) -> int:
    """The request size of what no policy may drop: turn 0, the newest turn, pinned turns."""
    newest = entries[-1].turn
    pinned_turns = {e.turn for e in entries if e.pinned}
    return (
        sum(
            e.tokens
            for e in entries
            if (e.turn == 0 and (with_summary or e.kind != "summary"))
            or e.turn == newest
            or e.turn in pinned_turns
        )
        + REPLY_PRIMING
        + reserve
    )


def unpinned_old_turns(entries: Sequence[Entry]) -> list[int]:
    newest = entries[-1].turn
    pinned_turns = {e.turn for e in entries if e.pinned}
    order: list[int] = []
    for e in entries:
        if e.turn > 0 and e.turn != newest and e.turn not in pinned_turns and e.turn not in order:
            order.append(e.turn)
    return order


def is_subsequence(sub: Sequence[Entry], full: Sequence[Entry]) -> bool:
    """True when ``sub`` is ``full`` with some entries removed (by identity), order kept."""
    it = iter(full)
    return all(any(x is y for y in it) for x in sub)


def first_non_system(entries: Sequence[Entry]) -> Entry | None:
    return next((e for e in entries if e.role != "system"), None)


# ---- strategies -----------------------------------------------------------------


@st.composite
def cases(draw: st.DrawFn) -> tuple[tuple[Entry, ...], int, int]:
    turns = draw(st.lists(st.lists(st.integers(1, 400), min_size=1, max_size=2), max_size=8))
    system = draw(st.none() | st.integers(1, 300))
    summary = draw(st.none() | st.integers(5, 150))
    entries = build(turns, new=draw(st.integers(1, 400)), system=system, summary=summary)
    pinnable = [e.id for e in entries if e.turn > 0]
    pins = draw(st.sets(st.sampled_from(pinnable), max_size=3))
    entries = tuple(replace(e, pinned=True) if e.id in pins else e for e in entries)
    budget = draw(st.integers(0, 3000))
    reserve = draw(st.integers(0, 300))
    return entries, budget, reserve


# ---- request_size ---------------------------------------------------------------


def test_request_size_adds_priming_and_reserve() -> None:
    entries = build([[100, 200]], new=50, system=20)
    assert request_size(entries) == 370 + REPLY_PRIMING
    assert request_size(entries, reserve=1000) == 370 + REPLY_PRIMING + 1000
    assert request_size(()) == REPLY_PRIMING


# ---- drop_oldest: properties ----------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(cases())
def test_drop_oldest_properties(case: tuple[tuple[Entry, ...], int, int]) -> None:
    entries, budget, reserve = case
    if fixed_size(entries, reserve) > budget:
        with pytest.raises(BudgetError):
            drop_oldest(entries, budget, counter, reserve=reserve)
        return
    result = drop_oldest(entries, budget, counter, reserve=reserve)

    assert result.total == request_size(result.kept, reserve) <= budget
    assert not result.over_budget
    assert all(any(e is k for k in result.kept) for e in entries if e.pinned)
    assert is_subsequence(result.kept, entries)
    assert is_subsequence(result.evicted, entries)
    # kept and evicted partition the input
    assert len(result.kept) + len(result.evicted) == len(entries)
    assert all(any(e is k for k in result.kept) != any(e is v for v in result.evicted) for e in entries)
    first = first_non_system(result.kept)
    assert first is not None and first.role == "user"
    assert result.kept[-1] is entries[-1]
    assert result.summary == next((e for e in entries if e.kind == "summary"), None)

    # the evicted turns are the oldest evictable ones, and no more than needed
    evicted_turns = [ev.turn for ev in result.events if isinstance(ev, Evicted)]
    assert evicted_turns == unpinned_old_turns(entries)[: len(evicted_turns)]
    assert sorted({e.turn for e in result.evicted}) == sorted(evicted_turns)
    if evicted_turns:
        last = [e for e in entries if e.turn == evicted_turns[-1]]
        assert request_size(result.kept, reserve) + sum(e.tokens for e in last) > budget
    else:
        assert result.kept == entries

    events = [ev for ev in result.events if isinstance(ev, Evicted)]
    assert len(events) == len(result.events)
    assert sum(ev.tokens for ev in events) == sum(e.tokens for e in result.evicted)
    assert sum(len(ev.ids) for ev in events) == len(result.evicted)
    assert all(ev.budget == budget for ev in events)
    if events:
        assert events[-1].total_after == result.total
        assert events[0].total_after == request_size(entries, reserve) - events[0].tokens


# ---- drop_oldest: examples ------------------------------------------------------


def test_drop_oldest_keeps_everything_that_fits() -> None:
    entries = build([[100, 200]], new=50, system=20)
    result = drop_oldest(entries, 1000, counter)
    assert result.kept == entries
    assert result.evicted == ()
    assert result.events == ()
    assert result.total == 373


def test_drop_oldest_evicts_oldest_turn_first() -> None:
    entries = build([[100, 200], [100, 200], [50]], new=40, system=50)
    # 50 + 300 + 300 + 50 + 40 + 3 = 743
    result = drop_oldest(entries, 500, counter)
    assert result.events == (evicted(entries, 1, 300, 443, 500),)
    assert [e.id for e in result.kept] == [1, 4, 5, 6, 7]
    assert [e.id for e in result.evicted] == [2, 3]
    assert result.total == 443


def test_drop_oldest_emits_one_event_per_turn_and_counts_the_reserve() -> None:
    entries = build([[100, 200], [100, 200], [50]], new=40, system=50)
    result = drop_oldest(entries, 500, counter, reserve=100)
    assert result.events == (
        evicted(entries, 1, 300, 543, 500),
        evicted(entries, 2, 300, 243, 500),
    )
    assert [e.id for e in result.kept] == [1, 6, 7]


def test_drop_oldest_skips_pinned_turns() -> None:
    # pinning the reply of turn 1 protects the whole turn, user message included
    entries = build([[100, 200], [100, 200]], new=40, pins=[2])
    result = drop_oldest(entries, 400, counter)
    assert result.events == (evicted(entries, 2, 300, 343, 400),)
    assert [e.id for e in result.kept] == [1, 2, 5]


def test_drop_oldest_keeps_the_summary() -> None:
    entries = build([[100, 200], [100, 200]], new=40, system=10, summary=60)
    result = drop_oldest(entries, 450, counter)
    assert [e.kind for e in result.kept[:2]] == ["turn", "summary"]
    assert result.summary is entries[1]
    assert [ev.turn for ev in result.events if isinstance(ev, Evicted)] == [1]


def test_budget_error_names_the_largest_pins() -> None:
    entries = build([[2400, 100], [300, 900], [200, 100]], new=100, system=200, pins=[2, 5])
    # needs 200 + 2500 + 1200 + 100 + 3 = 4,003 after dropping turn 3
    with pytest.raises(BudgetError) as info:
        drop_oldest(entries, 4000, counter)
    text = str(info.value)
    assert "pinned messages need 4,003 tokens" in text
    assert "the budget is 4,000" in text
    assert "unpin #2 (2,400 tokens) or raise the budget to 4,003" in text and info.value.needed == 4003


def test_budget_error_lists_several_pins_when_one_is_not_enough() -> None:
    entries = build([[1000, 100], [900, 100], [800, 100]], new=100, pins=[1, 3, 5])
    with pytest.raises(BudgetError, match=r"unpin #1 \(1,000 tokens\), #3 \(900 tokens\) or raise"):
        drop_oldest(entries, 1500, counter)


def test_budget_error_for_a_message_that_alone_is_too_big() -> None:
    entries = build([[100, 100]], new=9000)
    with pytest.raises(BudgetError, match=r"^this message is 9,000 tokens; the budget is 4,000: shorten it"):
        drop_oldest(entries, 4000, counter)


def test_budget_error_mentions_the_reply_reserve() -> None:
    entries = build([], new=3500)
    with pytest.raises(BudgetError, match="3,500 tokens; the budget is 4,000 with 1,000 held back"):
        drop_oldest(entries, 4000, counter, reserve=1000)


def test_budget_error_for_a_large_file() -> None:
    entries = (Entry(1, Message("user", "x"), 5000, 1, kind="file", source="big.log"),)
    with pytest.raises(BudgetError, match="^the file big.log is 5,000 tokens"):
        drop_oldest(entries, 4000, counter)


def test_budget_error_for_a_large_system_prompt() -> None:
    entries = build([[10, 10]], new=10, system=5000)
    with pytest.raises(BudgetError, match="shorten the system prompt or raise the budget"):
        drop_oldest(entries, 4000, counter)


# ---- summarize: properties ------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(cases(), st.integers(0, 4000), st.none() | st.integers(0, 1500))
def test_summarize_properties(
    case: tuple[tuple[Entry, ...], int, int], length: int, fold_limit: int | None
) -> None:
    entries, budget, reserve = case
    calls: list[tuple[str | None, list[Message]]] = []

    def summarizer(previous: str | None, messages: Sequence[Message]) -> str:
        calls.append((previous, list(messages)))
        return "x" * length

    old = next((e for e in entries if e.kind == "summary"), None)
    try:
        result = summarize(entries, budget, counter, summarizer, reserve=reserve, summary_id=SUMMARY_ID,
                           fold_limit=fold_limit)
    except BudgetError:
        assert fixed_size(entries, reserve) > budget
        return
    assert result.total == request_size(result.kept, reserve) <= budget
    assert all(any(e is k for k in result.kept) for e in entries if e.pinned)
    first = first_non_system(result.kept)
    assert first is not None and first.role == "user"
    assert result.kept[-1] is entries[-1]
    originals = [e for e in result.kept if e.kind != "summary"]
    assert is_subsequence(originals, entries)
    assert is_subsequence(result.evicted, entries)

    summarized = [ev for ev in result.events if isinstance(ev, Summarized)]
    if not calls:
        assert not summarized
        assert result.summary is old
        return
    assert len(calls) == 1 and len(summarized) == 1
    event = summarized[0]
    previous, messages = calls[0]
    # the head is folded: a prefix of the evictable turns, passed to the summarizer in order
    turns = folded_turns(event, entries)
    assert list(turns) == unpinned_old_turns(entries)[: len(turns)]
    folded = [e for e in entries if e.turn in turns]
    assert messages == [e.message for e in folded]
    assert fold_limit is None or sum(e.tokens for e in folded) <= fold_limit  # one request carries it
    assert previous == (old.content[len(SUMMARY_HEADER):] if old else None)
    assert all(any(e is v for v in result.evicted) for e in folded)
    # the new summary replaces the old one, right after the system prompt
    summary = result.summary
    assert summary is not None
    assert [e for e in result.kept if e.kind == "summary"] == [summary]
    assert summary.id == (old.id if old else SUMMARY_ID)
    assert summary.content.startswith(SUMMARY_HEADER)
    assert summary.tokens == counter(summary.message) <= max(64, budget // 4)
    assert summary.role == "system" and summary.turn == 0 and not summary.pinned
    position = result.kept.index(summary)
    assert all(e.role == "system" and e.kind != "summary" for e in result.kept[:position])
    assert all(e.role != "system" for e in result.kept[position + 1:])
    assert event.tokens_after == summary.tokens
    assert event.tokens_before == sum(e.tokens for e in folded) + (old.tokens if old else 0)


@settings(max_examples=200, deadline=None)
@given(cases())
def test_summarize_failure_falls_back_to_drop_oldest(case: tuple[tuple[Entry, ...], int, int]) -> None:
    entries, budget, reserve = case

    calls: list[int] = []

    def broken(previous: str | None, messages: Sequence[Message]) -> str:
        calls.append(len(messages))
        raise RequestError("server went away\ntraceback detail")

    try:
        expected = drop_oldest(entries, budget, counter, reserve=reserve)
    except BudgetError:
        with pytest.raises(BudgetError):
            summarize(entries, budget, counter, broken, reserve=reserve)
        return
    result = summarize(entries, budget, counter, broken, reserve=reserve)
    assert (result.kept, result.evicted, result.summary, result.total) == (
        expected.kept,
        expected.evicted,
        expected.summary,
        expected.total,
    )
    if calls:
        assert len(calls) == 1 and calls[0] > 0
        assert result.events == (SummaryFailed("server went away"), *expected.events)
    elif result.events and isinstance(result.events[0], Notice):
        assert result.events[1:] == expected.events
    else:
        assert result.events == expected.events == ()


# ---- summarize: examples --------------------------------------------------------


def test_summarize_folds_the_head_and_keeps_the_tail() -> None:
    entries = build([[100, 200], [100, 200], [100, 200]], new=40, system=50)
    seen: list[tuple[str | None, list[Message]]] = []

    def summarizer(previous: str | None, messages: Sequence[Message]) -> str:
        seen.append((previous, list(messages)))
        return "the user likes tea"

    # total 50 + 900 + 40 + 3 = 993; cap = max(64, 800 // 4) = 200
    # folding turn 1 leaves 693 + 200 > 800; folding turns 1-2 leaves 393 + 200 <= 800
    result = summarize(entries, 800, counter, summarizer, summary_id=SUMMARY_ID)
    summary_message = Message("system", SUMMARY_HEADER + "the user likes tea")
    summary = Entry(SUMMARY_ID, summary_message, counter(summary_message), 0, kind="summary")
    assert seen == [(None, [e.message for e in entries[1:5]])]
    assert result.summary == summary
    assert result.kept == (entries[0], summary, *entries[5:])
    assert result.evicted == entries[1:5]
    assert result.events == (summarized(entries, (1, 2), SUMMARY_ID, 600, summary.tokens),)
    assert result.total == 50 + summary.tokens + 300 + 40 + REPLY_PRIMING


def test_summarize_replaces_the_previous_summary_and_keeps_its_id() -> None:
    entries = build([[100, 200], [100, 200]], new=40, system=50, summary=30)
    seen: list[str | None] = []

    def summarizer(previous: str | None, messages: Sequence[Message]) -> str:
        seen.append(previous)
        return f"{previous}; more"

    # cap = 600 // 4 = 150; folding turn 1 leaves 393 + 150 <= 600
    result = summarize(entries, 600, counter, summarizer, summary_id=SUMMARY_ID)
    assert seen == ["old facts"]
    assert result.summary is not None
    assert result.summary.id == 2
    assert result.summary.content == SUMMARY_HEADER + "old facts; more"
    assert [e.id for e in result.kept] == [1, 2, 5, 6, 7]
    assert result.events == (summarized(entries, (1,), 2, 330, result.summary.tokens),)


def test_summarize_puts_the_summary_first_without_a_system_prompt() -> None:
    entries = build([[100, 200], [100, 200]], new=40)
    result = summarize(entries, 500, counter, lambda previous, messages: "s", summary_id=9)
    assert result.kept[0].kind == "summary"
    assert result.kept[0].id == 9
    assert first_non_system(result.kept) is entries[2]


def test_summarize_does_nothing_when_the_request_fits() -> None:
    entries = build([[100, 200]], new=40, summary=30)

    def summarizer(previous: str | None, messages: Sequence[Message]) -> str:
        raise AssertionError("must not be called")

    result = summarize(entries, 1000, counter, summarizer)
    assert result.kept == entries and result.events == () and result.summary is entries[0]


def test_summarize_cuts_a_summary_longer_than_its_cap() -> None:
    entries = build([[100, 200], [100, 200]], new=40)
    result = summarize(entries, 400, counter, lambda previous, messages: "word " * 1000)
    assert result.summary is not None
    cap = max(64, 400 // 4)
    assert cap - 1 <= result.summary.tokens <= cap
    assert result.summary.content.endswith("…")
    assert result.total <= 400


def test_summarize_failure_reports_the_first_line_and_drops_oldest() -> None:
    entries = build([[100, 200], [100, 200], [100, 200]], new=40, system=50, summary=30)

    def broken(previous: str | None, messages: Sequence[Message]) -> str:
        raise RequestError("HTTP 503: overloaded\nretry later")

    result = summarize(entries, 700, counter, broken)
    assert result.events == (
        SummaryFailed("HTTP 503: overloaded"),
        evicted(entries, 1, 300, 723, 700),
        evicted(entries, 2, 300, 423, 700),
    )
    assert result.summary is entries[1]
    assert [e.id for e in result.kept] == [1, 2, 7, 8, 9]


def test_summarize_without_room_for_a_summary_drops_instead() -> None:
    # without turn 1 the request takes 696 of 700 tokens: 4 tokens of room are too few for a summary
    entries = build([[100, 100], [300, 300]], new=93, pins=[3])
    result = summarize(entries, 700, counter, lambda previous, messages: "s")
    assert isinstance(result.events[0], Notice)
    assert result.events[1:] == (evicted(entries, 1, 200, 696, 700),)
    assert result.summary is None


def test_summarize_raises_when_pins_alone_exceed_the_budget() -> None:
    entries = build([[100, 100]], new=50, pins=[1])
    with pytest.raises(BudgetError, match="unpin #1"):
        summarize(entries, 200, counter, lambda previous, messages: "s")


# ---- keep_all -------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(cases())
def test_keep_all_never_evicts(case: tuple[tuple[Entry, ...], int, int]) -> None:
    entries, budget, reserve = case
    result = keep_all(entries, budget, counter, reserve=reserve)
    assert result.kept == entries and result.evicted == ()
    assert result.total == request_size(entries, reserve)
    if result.total > budget:
        assert result.events == (OverBudget(total=result.total, budget=budget),)
        assert result.over_budget
    else:
        assert result.events == ()


def test_keep_all_reports_over_budget() -> None:
    entries = build([[100, 200]], new=50)
    result = keep_all(entries, 300, counter)
    assert result.events == (OverBudget(total=353, budget=300),)


# ---- dispatcher -----------------------------------------------------------------


def test_every_configurable_policy_name_is_dispatched() -> None:
    for name in POLICY_NAMES:
        assert fit(name, build([[10, 20]], new=5), 1000, counter).total > 0


def test_fit_dispatches_to_each_policy() -> None:
    entries = build([[100, 200], [100, 200]], new=40)
    assert fit("none", entries, 400, counter).events == (OverBudget(total=643, budget=400),)
    assert fit("drop-oldest", entries, 400, counter) == drop_oldest(entries, 400, counter)
    result = fit("summarize", entries, 400, counter, summarizer=lambda p, m: "s", next_id=77)
    assert result.summary is not None and result.summary.id == 77
    assert isinstance(result.events[0], Summarized)


def test_fit_rejects_an_unknown_policy() -> None:
    with pytest.raises(UsageError, match="unknown context policy 'lru': choose one of drop-oldest"):
        fit("lru", build([], new=10), 100, counter)


def test_fit_summarize_without_a_summarizer_drops_oldest() -> None:
    entries = build([[100, 200], [100, 200]], new=40, summary=20)
    result = fit("summarize", entries, 400, counter, next_id=77)
    expected = drop_oldest(entries, 400, counter)
    assert (result.kept, result.evicted, result.events) == (expected.kept, expected.evicted, expected.events)
    assert result.summary is entries[0]


def test_summarize_folds_down_to_the_low_water_mark_but_keeps_the_latest_turn() -> None:
    # Six turns of 100, a new message of 40: 643 tokens against a budget of 600. Summary cap 150.
    # Folding turns 1-2 is the minimum (443 + 150 <= 600), but then the next turn would summarize
    # again; it goes on down to the low-water mark, 397, reached after turn 4 (243 + 150 <= 397).
    entries = build([[50, 50]] * 6, new=40)
    calls: list[int] = []

    def summarizer(previous: str | None, messages: Sequence[Message]) -> str:
        calls.append(len(messages))
        return "s"

    result = summarize(entries, 600, counter, summarizer, summary_id=99, low_water=397)
    assert result.events[0] == summarized(entries, (1, 2, 3, 4), 99, 400,
                                          result.summary.tokens if result.summary else 0)
    assert calls == [8]
    assert [e.turn for e in result.kept if e.turn] == [5, 5, 6, 6, 7]


def test_summarize_keeps_the_latest_evictable_turn_verbatim() -> None:
    entries = build([[50, 50]] * 2, new=40)  # 243 against 230: folding turn 1 is enough (143 + 64)
    result = summarize(entries, 230, counter, lambda p, m: "s", summary_id=99)
    assert isinstance(result.events[0], Summarized) and folded_turns(result.events[0], entries) == (1,)
    assert [e.turn for e in result.kept if e.turn] == [2, 2, 3]


def test_summarize_folds_no_more_than_the_summary_request_can_carry() -> None:
    entries = build([[50, 50]] * 6, new=40)
    result = summarize(entries, 600, counter, lambda p, m: "s", summary_id=99, fold_limit=250)
    # Turns 1-2 must go whatever the limit; turn 3 would take the folded text to 300 > 250.
    assert isinstance(result.events[0], Summarized) and folded_turns(result.events[0], entries) == (1, 2)


def test_fit_passes_the_fold_limit_to_summarize() -> None:
    entries = build([[50, 50]] * 6, new=40)
    result = fit("summarize", entries, 600, counter, summarizer=lambda p, m: "s", fold_limit=250)
    assert isinstance(result.events[0], Summarized) and folded_turns(result.events[0], entries) == (1, 2)


def test_summarize_folds_what_one_summary_request_can_carry_and_drops_the_rest() -> None:
    # 643 tokens against 400 (summary cap 100): turns 1-4 must go, but one summary request
    # carries only 250 tokens of messages: turns 1-2 are folded, then the oldest turns left
    # are dropped until the request with its (short) summary fits: turn 3 only.
    entries = build([[50, 50]] * 6, new=40)
    seen: list[list[Message]] = []

    def summarizer(previous: str | None, messages: Sequence[Message]) -> str:
        seen.append(list(messages))
        return "s"

    result = summarize(entries, 400, counter, summarizer, summary_id=99, fold_limit=250)
    assert seen == [[e.message for e in entries[:4]]]
    summary = result.summary
    assert summary is not None
    assert result.events == (
        summarized(entries, (1, 2), 99, 200, summary.tokens),
        evicted(entries, 3, 100, 343 + summary.tokens, 400),
    )
    assert [e.turn for e in result.kept if e.turn] == [4, 4, 5, 5, 6, 6, 7]
    assert [e.turn for e in result.evicted] == [1, 1, 2, 2, 3, 3]
    assert result.total <= 400


def test_summarize_drops_a_turn_too_long_for_any_summary_request() -> None:
    entries = build([[200, 100], [50, 50]], new=40)
    result = summarize(entries, 300, counter, lambda p, m: pytest.fail("no summary request"), fold_limit=250)
    assert isinstance(result.events[0], Notice)
    assert result.events[1:] == (evicted(entries, 1, 300, 143, 300),)
    assert result.summary is None
