"""Eviction policies: which history entries the next request keeps.

Every policy is a pure function of the candidate request. ``entries`` is the whole
request in order: the system prompt (role ``system``, turn 0, pinned) if any, the
running summary (kind ``summary``, turn 0) if any, the history, and the new user
message last. The unit of eviction is a *turn*: every entry sharing a turn number
greater than 0. A turn is evictable when none of its entries is pinned and it is not
the newest turn (the one holding the new message). Removing whole turns means a
request never opens, after the system entries, with an orphan assistant reply.

Policies never do I/O. ``summarize`` gets the summary call injected as a plain
callable; the session passes one that makes its own stateless request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from stateless_chat.errors import BudgetError, UsageError
from stateless_chat.messages import (
    Entry,
    Event,
    Evicted,
    Message,
    Notice,
    OverBudget,
    Summarized,
    SummaryFailed,
)
from stateless_chat.tokens import REPLY_PRIMING

SUMMARY_HEADER = "Summary of the earlier conversation:\n"
SUMMARY_MIN_MAX = 64  # a summary may always take at least this many tokens
ELLIPSIS = "…"

Counter = Callable[[Message], int]
Summarizer = Callable[[str | None, Sequence[Message]], str]


@dataclass(frozen=True)
class Fit:
    """What one policy decided for the next request.

    ``kept`` is what the request sends, in order. ``evicted`` holds the original
    entries this call removed (folded or dropped), in order, so the user can inspect
    them. ``summary`` is the running summary after this call; when present it is also
    inside ``kept``. ``total`` is the request size of ``kept`` including the reply
    priming and the reserve.
    """

    kept: tuple[Entry, ...]
    evicted: tuple[Entry, ...]
    summary: Entry | None
    events: tuple[Event, ...]
    total: int
    budget: int

    @property
    def over_budget(self) -> bool:
        """True when the request is larger than the budget (only ``keep_all`` allows that)."""
        return self.total > self.budget


def request_size(entries: Iterable[Entry], reserve: int = 0) -> int:
    """Return the tokens a request with ``entries`` takes: their billed sizes, the reply priming
    and ``reserve`` (the room held back for the reply)."""
    return sum(e.tokens for e in entries) + REPLY_PRIMING + reserve


def _newest_turn(entries: Sequence[Entry]) -> int | None:
    """Return the turn of the new message (the last entry), or None when there is no such turn."""
    if entries and entries[-1].turn > 0:
        return entries[-1].turn
    return None


def evictable_turns(entries: Sequence[Entry]) -> list[int]:
    """Return the turn numbers that may be evicted, oldest first (by first appearance).

    A turn is evictable when its number is above 0, no entry of it is pinned or a
    summary, and it is not the newest turn.
    """
    newest = _newest_turn(entries)
    blocked = {e.turn for e in entries if e.pinned or e.kind == "summary"}
    # dict keys: insertion-ordered and O(1) membership, so this stays linear in the history
    order: dict[int, None] = {}
    for e in entries:
        if e.turn > 0 and e.turn != newest and e.turn not in blocked:
            order[e.turn] = None
    return list(order)


def _current_summary(entries: Sequence[Entry]) -> Entry | None:
    """Return the running summary, which sits among the leading turn-0 entries (system, summary)."""
    for e in entries:
        if e.kind == "summary":
            return e
        if e.turn > 0:
            return None
    return None


def _drop(
    entries: Sequence[Entry], budget: int, reserve: int
) -> tuple[tuple[Entry, ...], tuple[Entry, ...], list[Event]]:
    """Evict the oldest evictable turns until the request fits.

    Returns (kept, evicted, one ``Evicted`` event per turn). Raises ``BudgetError``
    when every evictable turn is gone and the request still does not fit.
    """
    total = request_size(entries, reserve)
    if total <= budget:  # the common turn: nothing to evict, so no per-entry work beyond the sum
        return tuple(entries), (), []
    gone: set[int] = set()
    events: list[Event] = []
    turns = iter(evictable_turns(entries))
    while total > budget:
        turn = next(turns, None)
        if turn is None:
            raise _budget_error([e for e in entries if e.turn not in gone], budget, reserve)
        removed = [e for e in entries if e.turn == turn]
        tokens = sum(e.tokens for e in removed)
        total -= tokens
        gone.add(turn)
        events.append(Evicted(turns=(turn,), messages=len(removed), tokens=tokens, total_after=total,
                              budget=budget))
    kept = tuple(e for e in entries if e.turn not in gone)
    evicted = tuple(e for e in entries if e.turn in gone)
    return kept, evicted, events


def _budget_error(kept: Sequence[Entry], budget: int, reserve: int) -> BudgetError:
    """Build the error for a request whose unevictable part exceeds the budget.

    The message says what takes the room and what the user can do: unpin the largest
    pinned entries (by id), shorten the new message, or raise the budget.
    """
    size = request_size(kept, reserve)
    raise_hint = f"raise the budget (/budget {size})"
    reserve_note = f" with {reserve:,} held back for the reply" if reserve else ""
    newest = _newest_turn(kept)
    last = kept[-1] if kept else None
    if last is not None and newest is not None and last.tokens + REPLY_PRIMING + reserve > budget:
        what = f"the file {last.source}" if last.kind == "file" and last.source else "this message"
        return BudgetError(
            f"{what} is {last.tokens:,} tokens; the budget is {budget:,}{reserve_note}: "
            f"shorten it or {raise_hint}"
        )
    system = sum(e.tokens for e in kept if e.turn == 0 and e.kind != "summary")
    summary = sum(e.tokens for e in kept if e.kind == "summary")
    new = sum(e.tokens for e in kept if newest is not None and e.turn == newest)
    pinned = size - REPLY_PRIMING - reserve - system - summary - new
    parts = [
        (name, n)
        for name, n in (
            ("pinned messages", pinned),
            ("system prompt", system),
            ("summary", summary),
            ("this message", new),
            ("reply reserve", reserve),
        )
        if n
    ]
    breakdown = ", ".join(f"{name} {n:,}" for name, n in parts)
    lead = "pinned messages" if pinned else "the request"
    head = f"{lead} need {size:,} tokens ({breakdown}) but the budget is {budget:,}"
    candidates = sorted(
        (e for e in kept if e.pinned and e.turn > 0 and e.turn != newest),
        key=lambda e: (-e.tokens, e.id),
    )
    excess = size - budget
    named: list[Entry] = []
    for e in candidates:
        if len(named) == 3 or sum(n.tokens for n in named) >= excess:
            break
        named.append(e)
    if named:
        unpin = ", ".join(f"#{e.id} ({e.tokens:,} tokens)" for e in named)
        return BudgetError(f"{head}: unpin {unpin} or {raise_hint}")
    if system > new:
        return BudgetError(f"{head}: shorten the system prompt or {raise_hint}")
    return BudgetError(f"{head}: {raise_hint}")


def drop_oldest(entries: Sequence[Entry], budget: int, counter: Counter, *, reserve: int = 0) -> Fit:
    """Return the request with the oldest evictable turns dropped until it fits ``budget``.

    An existing summary is kept (it is small and holds earlier constraints). Emits one
    ``Evicted`` per dropped turn. Raises ``BudgetError`` when the system prompt, the
    summary, the pinned turns and the new message alone exceed the budget. ``counter``
    is unused; it is taken so every policy has the same signature.
    """
    entries = tuple(entries)
    kept, evicted, events = _drop(entries, budget, reserve)
    return Fit(kept, evicted, _current_summary(kept), tuple(events), request_size(kept, reserve), budget)


def keep_all(entries: Sequence[Entry], budget: int, counter: Counter, *, reserve: int = 0) -> Fit:
    """Return the request unchanged (policy ``none``); emits ``OverBudget`` when it exceeds ``budget``
    so the user sees why the server may refuse it."""
    entries = tuple(entries)
    total = request_size(entries, reserve)
    events: tuple[Event, ...] = (OverBudget(total=total, budget=budget),) if total > budget else ()
    return Fit(entries, (), _current_summary(entries), events, total, budget)


def summary_message(text: str) -> Message:
    """Return the system message that carries the running summary ``text``."""
    return Message("system", SUMMARY_HEADER + text)


def summary_text(entry: Entry | None) -> str | None:
    """Return the summary text of a summary entry without its header (None without a summary)."""
    if entry is None:
        return None
    content = entry.content
    return content[len(SUMMARY_HEADER):] if content.startswith(SUMMARY_HEADER) else content


def summary_cap(budget: int) -> int:
    """Return the most tokens the running summary may take under ``budget``: a quarter of it, at
    least ``SUMMARY_MIN_MAX``. The summary request asks for no longer a reply."""
    return max(SUMMARY_MIN_MAX, budget // 4)


def _capped_summary(text: str, cap: int, counter: Counter) -> Message:
    """Return the summary message for ``text``, cut (with an ellipsis) to at most ``cap`` tokens.

    The caller guarantees ``cap`` holds at least the header and the ellipsis.
    """
    text = text.strip()
    message = summary_message(text)
    if counter(message) <= cap:
        return message
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix whose message still fits the cap
        mid = (lo + hi + 1) // 2
        if counter(summary_message(text[:mid].rstrip() + ELLIPSIS)) <= cap:
            lo = mid
        else:
            hi = mid - 1
    return summary_message(text[:lo].rstrip() + ELLIPSIS)


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _drop_instead(
    entries: Sequence[Entry], budget: int, counter: Counter, reserve: int, turns: Sequence[int], why: str
) -> Fit:
    """Return ``drop_oldest``'s fit, led by a notice saying ``why`` there is no summary (when
    there were ``turns`` to summarize at all)."""
    result = drop_oldest(entries, budget, counter, reserve=reserve)
    if not turns:
        return result
    return replace(result, events=(Notice(f"{why}: dropped the oldest turns instead"), *result.events))


def summarize(
    entries: Sequence[Entry],
    budget: int,
    counter: Counter,
    summarizer: Summarizer,
    *,
    reserve: int = 0,
    summary_id: int = 0,
    fold_limit: int | None = None,
) -> Fit:
    """Return the request with its oldest turns folded into the running summary.

    When over budget, folds the shortest prefix of evictable turns whose removal leaves
    room for a summary of at most ``summary_cap(budget)`` tokens (less if the rest
    leaves less room); then, as aider does, it keeps folding until half the room the
    turns may use is free, so the next summary is several turns away, as long as the
    latest evictable turn stays verbatim. The folded messages never exceed ``fold_limit``
    tokens (what one summary request can carry; no limit when None): when the prefix that
    must go is longer, its oldest turns are folded and the rest dropped. It calls
    ``summarizer(previous summary text, folded messages)`` once, and puts the new
    summary right after the system prompt, replacing the old one. A summary longer than
    its cap is cut to it. The new summary keeps the old summary's id, or takes
    ``summary_id`` when there was none. The folded and dropped originals are returned in
    ``evicted`` (the replaced summary is not: its text lives on in the new one).

    Falls back to ``drop_oldest`` (keeping the old summary) when the summarizer raises
    (emitting ``SummaryFailed`` first), when no room is left for any summary, or when the
    oldest evictable turn alone is more than one summary request can carry.
    """
    entries = tuple(entries)
    old = _current_summary(entries)
    total = request_size(entries, reserve)
    if total <= budget:
        return Fit(entries, (), old, (), total, budget)
    turns = evictable_turns(entries)
    rest = [e for e in entries if e.kind != "summary"]
    movable = set(turns)
    room = budget - request_size((e for e in rest if e.turn not in movable), reserve)
    if not turns or room < counter(summary_message(ELLIPSIS)):
        return _drop_instead(entries, budget, counter, reserve, turns, "no room left for a summary")
    cap = min(summary_cap(budget), room)
    target = budget - (room - cap) // 2
    turn_tokens = _turn_tokens(rest)
    size = request_size(rest, reserve)
    folded_turns: list[int] = []
    # What still does not fit past what one summary request can carry is dropped below.
    for turn in turns_within(rest, turns, fold_limit):
        # Once it fits, fold more only toward the target, and keep the latest turn verbatim.
        if size + cap <= budget and (size + cap <= target or turn == turns[-1]):
            break
        size -= turn_tokens[turn]
        folded_turns.append(turn)
    if not folded_turns and size + cap > budget:
        return _drop_instead(entries, budget, counter, reserve, turns,
                             "the oldest turn is too long to summarize within the budget")
    try:
        candidate, folded, new, event = fold(entries, folded_turns, summarizer, counter, cap=cap,
                                             summary_id=summary_id)
    except Exception as exc:  # the summarizer may fail in any way; the request must still go out
        result = drop_oldest(entries, budget, counter, reserve=reserve)
        return replace(result, events=(SummaryFailed(reason=_first_line(exc)), *result.events))
    # Drops the turns past the fold limit; otherwise the choice of the prefix and the cap make
    # this fit already, and dropping is a safety net for a counter not monotone in the text length.
    kept, dropped, events = _drop(candidate, budget, reserve)
    return Fit(kept, folded + dropped, new, (event, *events), request_size(kept, reserve), budget)


def _turn_tokens(entries: Iterable[Entry]) -> dict[int, int]:
    """Return the billed size of each turn of ``entries``."""
    sizes: dict[int, int] = {}
    for e in entries:
        sizes[e.turn] = sizes.get(e.turn, 0) + e.tokens
    return sizes


def turns_within(entries: Sequence[Entry], turns: Sequence[int], limit: int | None) -> list[int]:
    """Return the longest prefix of ``turns`` whose messages in ``entries`` take at most ``limit``
    tokens, what one summary request can carry (all of ``turns`` when ``limit`` is None)."""
    if limit is None:
        return list(turns)
    sizes = _turn_tokens(entries)
    within: list[int] = []
    for turn in turns:
        limit -= sizes.get(turn, 0)
        if limit < 0:
            break
        within.append(turn)
    return within


def fold(
    entries: Sequence[Entry],
    turns: Sequence[int],
    summarizer: Summarizer,
    counter: Counter,
    *,
    cap: int,
    summary_id: int = 0,
) -> tuple[tuple[Entry, ...], tuple[Entry, ...], Entry, Summarized]:
    """Return ``entries`` with ``turns`` folded into the running summary, and what that did.

    Calls ``summarizer(previous summary text, folded messages)`` once and raises what it
    raises. Returns (the entries with the new summary in the old one's place, right after
    the system prompt, and without the folded turns; the folded originals, in order; the new
    summary; its ``Summarized`` event). The summary is cut to ``cap`` tokens (enough for
    the header and an ellipsis) and keeps the old summary's id, or takes ``summary_id``.
    """
    old = _current_summary(entries)
    chosen = set(turns)
    folded = tuple(e for e in entries if e.turn in chosen and e.kind != "summary")
    text = summarizer(summary_text(old), [e.message for e in folded])
    message = _capped_summary(text, cap, counter)
    new = Entry(id=old.id if old is not None else summary_id, message=message, tokens=counter(message),
                turn=0, pinned=False, kind="summary")
    remaining = [e for e in entries if e.turn not in chosen and e.kind != "summary"]
    at = 0
    while at < len(remaining) and remaining[at].turn == 0 and remaining[at].role == "system":
        at += 1
    event = Summarized(
        turns=tuple(turns),
        tokens_before=sum(e.tokens for e in folded) + (old.tokens if old is not None else 0),
        tokens_after=new.tokens,
    )
    return (*remaining[:at], new, *remaining[at:]), folded, new, event


def fit(
    policy: str,
    entries: Sequence[Entry],
    budget: int,
    counter: Counter,
    *,
    reserve: int = 0,
    summarizer: Summarizer | None = None,
    next_id: int = 0,
    fold_limit: int | None = None,
) -> Fit:
    """Run the policy named ``policy`` and return its ``Fit``.

    ``next_id`` is the id a new summary takes when there is no summary yet; the caller
    can tell it was used by ``result.summary.id == next_id``. ``summarize`` without a
    ``summarizer`` behaves as ``drop-oldest``. Raises ``UsageError`` for an unknown policy
    name, and ``BudgetError`` as the policies do.
    """
    if policy == "summarize" and summarizer is not None:
        return summarize(entries, budget, counter, summarizer, reserve=reserve, summary_id=next_id,
                         fold_limit=fold_limit)
    if policy in ("drop-oldest", "summarize"):  # summarize without a summarizer: drop instead
        return drop_oldest(entries, budget, counter, reserve=reserve)
    if policy == "none":
        return keep_all(entries, budget, counter, reserve=reserve)
    raise UsageError(f"unknown context policy {policy!r}: choose one of drop-oldest, summarize, none")
