"""The next request in typed slots, and the eviction policies that fit it to the budget.

A ``Candidate`` is the request before fitting: the system prompt, the instructions, the
skills index and active skills, the standing memory (never evicted), the running summary, the
live history (pinned entries marked), recalled entries, retrieved documents, this turn's pending
messages, and the size of the ``tools`` array. Policies evict only history and recalled turns.
A policy's ``fit`` returns a ``Fit``:
the request it will send, which history ids it dropped or folded, and its events;
``Conversation.apply`` turns that into the next conversation.

The unit of eviction is a *turn*: every history entry sharing a turn number (a user
message, its reply, and any tool calls and results between them). A turn is evictable
when none of its entries is pinned; the pending turn is never in the history. Removing
whole turns means a request never opens with an orphan reply and a tool result is never
separated from its call. A turn auto recall brought back for an earlier request, settled
into the history since (its entries marked ``recalled``), is the first to go when room is needed:
it served the request that needed it and must not crowd recent turns out. The turns recalled
for this request are the last to go (they are sent after the history, for this message).

Policies never do I/O. ``summarize`` (in ``summary``) gets its summary writer injected;
the session passes one that makes its own stateless request. The registry of policy
names is ``policies.POLICIES``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from stateless_chat.core.messages import SLOT_KINDS, Entry, Event, Evicted, Message, OverBudget
from stateless_chat.core.tokens import REPLY_PRIMING
from stateless_chat.errors import OFFER_FEWER_TOOLS, BudgetError, raise_budget


def request_size(entries: Iterable[Entry], reserve: int = 0, framing: int = REPLY_PRIMING) -> int:
    """Return the tokens a request with ``entries`` takes: their billed sizes, ``framing`` (what the
    request adds beyond its messages: the reply priming, or a chat template's own tokens) and
    ``reserve`` (the room held back for the reply)."""
    return sum(e.tokens for e in entries) + framing + reserve


def too_big_alone(tokens: int, reserve: int, budget: int) -> bool:
    """Return whether a request of ``tokens`` prompt tokens (before the reply priming) cannot fit
    ``budget`` with ``reserve`` held for the reply: the one budget check every caller uses."""
    return tokens + REPLY_PRIMING + reserve > budget


@dataclass(frozen=True)
class Candidate:
    """The next request before fitting, slot by slot, in request order.

    ``pending`` is this turn's new messages (the user message; in a tool loop also the
    turn's calls and results so far): always sent, never evicted. ``tools`` is the
    billed size of the request's ``tools`` array. ``next_id`` is the first id no entry
    has (a new summary takes it). ``low_water`` is where eviction stops once it has to
    start (``target``): evicting below the budget leaves room for several turns that only
    append, so the server's cached prefix stays whole between evictions.
    """

    system: Entry | None
    summary: Entry | None
    history: tuple[Entry, ...]
    pending: tuple[Entry, ...]
    budget: int
    reserve: int = 0
    tools: int = 0
    recalled: tuple[Entry, ...] = ()
    next_id: int = 0
    low_water: int | None = None
    memory: Entry | None = None  # the standing notes, after the skills: never evicted
    framing: int = REPLY_PRIMING
    instructions: Entry | None = None
    skill_index: Entry | None = None
    skills: tuple[Entry, ...] = ()
    retrieved: tuple[Entry, ...] = ()

    @property
    def target(self) -> int:
        """Return the size eviction goes down to once the request is over budget (at most the budget)."""
        return self.budget if self.low_water is None else min(self.budget, self.low_water)

    @property
    def head(self) -> tuple[Entry, ...]:
        """Return the entries sent before the history: system, instructions, skills index, active
        skills, standing memory, summary."""
        first = tuple(e for e in (self.system, self.instructions, self.skill_index) if e is not None)
        last = tuple(e for e in (self.memory, self.summary) if e is not None)
        return first + self.skills + last

    def entries(self) -> tuple[Entry, ...]:
        """Return every entry the request sends, in order."""
        return self.head + self.history + self.recalled + self.retrieved + self.pending

    def messages(self) -> list[Message]:
        return [e.message for e in self.entries()]

    @property
    def size(self) -> int:
        """Return the request's tokens: every entry, the tools, the reply priming and the reserve."""
        return request_size(self.entries(), self.reserve, self.framing) + self.tools

    @property
    def fits(self) -> bool:
        return self.size <= self.budget

    def evictable_turns(self) -> list[int]:
        """Return the turns of the history, then of the recalled entries, that may be evicted (none of
        their entries pinned), in request order."""
        live = self.history + self.recalled
        pinned = {e.turn for e in live if e.pinned}
        # dict keys: insertion-ordered and O(1) membership, so this stays linear in the history
        return list(dict.fromkeys(e.turn for e in live if e.turn not in pinned))

    def eviction_order(self) -> list[int]:
        """Return the evictable turns in the order the policies evict them: first the turns auto recall
        brought back for an earlier request (settled into the history, marked ``recalled``), then
        the rest as ``evictable_turns`` lists them."""
        turns = self.evictable_turns()
        settled = {e.turn for e in self.history if e.recalled}
        if not settled:
            return turns
        return [t for t in turns if t in settled] + [t for t in turns if t not in settled]

    def settled_recalled(self) -> list[int]:
        """Return the evictable turns of the history that auto recall brought back for an earlier
        request (marked ``recalled``), in request order."""
        settled = {e.turn for e in self.history if e.recalled}
        return [t for t in self.evictable_turns() if t in settled] if settled else []

    def turns(self) -> dict[int, list[Entry]]:
        """Return the entries of the history and the recalled ones grouped by turn, in request order."""
        groups: dict[int, list[Entry]] = {}
        for e in self.history + self.recalled:
            groups.setdefault(e.turn, []).append(e)
        return groups

    def turn_sizes(self) -> dict[int, int]:
        """Return the billed size of each history turn."""
        return {turn: sum(e.tokens for e in group) for turn, group in self.turns().items()}

    def without_turns(self, turns: Iterable[int]) -> Candidate:
        """Return the candidate without the history and recalled entries of ``turns``."""
        gone = set(turns)
        return replace(self, history=tuple(e for e in self.history if e.turn not in gone),
                       recalled=tuple(e for e in self.recalled if e.turn not in gone))


@dataclass(frozen=True)
class Fit:
    """What one policy decided for the next request.

    ``request`` is what it sends. ``dropped`` and ``folded`` are the ids of the history
    entries it evicted, and how; the running summary after the fit is ``request.summary``.
    """

    request: Candidate
    dropped: tuple[int, ...] = ()
    folded: tuple[int, ...] = ()
    events: tuple[Event, ...] = ()

    @property
    def total(self) -> int:
        """Return the request's size, reply priming and reserve included."""
        return self.request.size

    @property
    def budget(self) -> int:
        return self.request.budget

    @property
    def over_budget(self) -> bool:
        """True when the request is larger than the budget (only ``none`` allows that)."""
        return self.total > self.budget

    @property
    def kept(self) -> tuple[Entry, ...]:
        return self.request.entries()

    @property
    def evicted_count(self) -> int:
        return len(self.dropped) + len(self.folded)


class Policy(Protocol):
    """An eviction policy: given the candidate request, say what goes where."""

    name: str
    evicts: bool  # whether it ever leaves anything out (``none`` does not: it only warns)

    def fit(self, candidate: Candidate) -> Fit:
        """Return the fitted request; raise ``BudgetError`` when what must be sent cannot fit."""
        ...


def drop_turns(candidate: Candidate, *, recalled_only: bool = False
               ) -> tuple[Candidate, tuple[int, ...], tuple[Event, ...]]:
    """Return the candidate with its evictable turns dropped in ``eviction_order`` (the turns auto
    recall brought back for earlier requests first, then the oldest), the dropped ids, and one
    ``Evicted`` event per turn.

    Nothing goes while the request fits the budget; once it does not, turns go until it fits
    ``candidate.target`` (the low-water mark), or none is left to drop. Raises ``BudgetError``
    when every evictable turn is gone and the request still does not fit the budget. With
    ``recalled_only``, only the recalled turns settled into the history go, and a request that
    still does not fit is returned as it is (the caller evicts the rest its own way).
    """
    total = candidate.size
    if total <= candidate.budget:  # the common turn: nothing to evict, no per-entry work beyond the sum
        return candidate, (), ()
    groups = candidate.turns()
    settled = set(candidate.settled_recalled())
    gone: list[int] = []
    events: list[Evicted] = []
    for turn in candidate.settled_recalled() if recalled_only else candidate.eviction_order():
        if total <= candidate.target:
            break
        tokens = sum(e.tokens for e in groups[turn])
        total -= tokens
        gone.append(turn)
        events.append(Evicted(turn=turn, ids=tuple(e.id for e in groups[turn]), tokens=tokens,
                              total_after=total, budget=candidate.budget, recalled=turn in settled))
    fitted = candidate.without_turns(gone) if gone else candidate
    if total > candidate.budget and not recalled_only:
        raise budget_error(fitted)
    dropped = tuple(i for event in events for i in event.ids)
    return fitted, dropped, tuple(events)


def budget_error(candidate: Candidate) -> BudgetError:
    """Build the error for a request whose unevictable part exceeds the budget.

    The message says what takes the room and what the user can do: unpin the largest
    pinned entries (by id), shorten the new message, or raise the budget.
    """
    budget, reserve = candidate.budget, candidate.reserve
    size = candidate.size
    raise_hint = raise_budget(size)
    reserve_note = f" with {reserve:,} held back for the reply" if reserve else ""
    pending = sum(e.tokens for e in candidate.pending)
    last = candidate.pending[-1] if candidate.pending else None
    if last is not None and too_big_alone(last.tokens, reserve, budget):
        what = f"the file {last.source}" if last.kind == "file" and last.source else "this message"
        return BudgetError(
            f"{what} is {last.tokens:,} tokens; the budget is {budget:,}{reserve_note}: "
            f"shorten it or {raise_hint}", needed=size
        )
    system = candidate.system.tokens if candidate.system is not None else 0
    memory = candidate.memory.tokens if candidate.memory is not None else 0
    summary = candidate.summary.tokens if candidate.summary is not None else 0
    pinned = sum(e.tokens for e in candidate.history + candidate.recalled)
    context = sum(e.tokens for e in candidate.head if e.kind in SLOT_KINDS)
    documents = sum(e.tokens for e in candidate.retrieved)
    parts = [
        (name, n)
        for name, n in (
            ("pinned messages", pinned),
            ("system prompt", system),
            ("instructions and skills", context),
            ("standing memory", memory),
            ("summary", summary),
            ("documents", documents),
            ("tools", candidate.tools),
            ("this message", pending),
            ("reply reserve", reserve),
        )
        if n
    ]
    breakdown = ", ".join(f"{name} {n:,}" for name, n in parts)
    head = (f"{'pinned messages need' if pinned else 'the request needs'} {size:,} tokens ({breakdown}) "
            f"but the budget is {budget:,}")
    tools = candidate.tools
    # The tools are what is too big: without them it would fit, or they are its largest part.
    if tools and (size - tools <= budget or tools >= max(n for _, n in parts)):
        return BudgetError(f"{head}: {OFFER_FEWER_TOOLS} or {raise_hint}", needed=size)
    candidates = sorted((e for e in candidate.history if e.pinned), key=lambda e: (-e.tokens, e.id))
    excess = size - budget
    named: list[Entry] = []
    for e in candidates:
        if len(named) == 3 or sum(n.tokens for n in named) >= excess:
            break
        named.append(e)
    if named:
        unpin = ", ".join(f"#{e.id} ({e.tokens:,} tokens)" for e in named)
        return BudgetError(f"{head}: unpin {unpin} or {raise_hint}", needed=size)
    if system > pending and system >= memory:
        return BudgetError(f"{head}: shorten the system prompt or {raise_hint}", needed=size)
    if memory > pending:
        return BudgetError(f"{head}: /forget a standing note (/memory lists them) or {raise_hint}",
                           needed=size)
    return BudgetError(f"{head}: {raise_hint}", needed=size)


class DropOldest:
    """Drop the oldest unpinned turns until the request fits (the running summary, if any, stays)."""

    name = "drop-oldest"
    evicts = True

    def fit(self, candidate: Candidate) -> Fit:
        fitted, dropped, events = drop_turns(candidate)
        return Fit(fitted, dropped=dropped, events=events)


class KeepAll:
    """Policy ``none``: send everything; an ``OverBudget`` event says when that exceeds the budget,
    so the user sees why the server may refuse it."""

    name = "none"
    evicts = False

    def fit(self, candidate: Candidate) -> Fit:
        total = candidate.size
        events: tuple[Event, ...] = ()
        if total > candidate.budget:
            events = (OverBudget(total=total, budget=candidate.budget),)
        return Fit(candidate, events=events)


def entries_of(candidate: Candidate, turns: Sequence[int]) -> list[Entry]:
    """Return the history and recalled entries of ``turns``, in request order."""
    chosen = set(turns)
    return [e for e in candidate.history + candidate.recalled if e.turn in chosen]
