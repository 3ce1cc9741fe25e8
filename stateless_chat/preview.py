"""What the next eviction will take, before it happens: the turns, their size, and how far off it is.

``preview(candidate, policy)`` simulates the request that first passes the budget (the present
conversation and a new message just large enough) through the same ``drop_turns`` the policies
use, and returns which turns would go, oldest first, down to the low-water mark (``evict_to``),
and how many tokens the conversation can still grow before that. Under ``summarize`` the same turns
are folded into the summary instead (its fold goes to the same mark); under ``none`` nothing goes.
Pure: no I/O, nothing changed; ``/preview``, ``/tokens`` and the toolbar show it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from stateless_chat.context import Candidate, drop_turns
from stateless_chat.errors import BudgetError
from stateless_chat.messages import Entry, Evicted, Message
from stateless_chat.tokens import PER_MESSAGE

if TYPE_CHECKING:
    from stateless_chat.session import Session


@dataclass(frozen=True)
class PreviewTurn:
    """One turn the next eviction would take: its messages, size, and its first line."""

    turn: int
    ids: tuple[int, ...]
    tokens: int
    first_line: str


@dataclass(frozen=True)
class Preview:
    """The next eviction, as it would happen if the conversation grew past the budget now.

    ``room`` is how many tokens the next request's new message (and what later turns add) may
    take before a request passes ``budget``; ``turns`` are what would go then, down to about
    ``after`` tokens (the low-water mark). ``stuck`` says why nothing can make room (only pinned
    turns, the system prompt and the standing memory are left), else None.
    """

    policy: str
    budget: int
    room: int
    turns: tuple[PreviewTurn, ...] = ()
    after: int = 0
    stuck: str | None = None

    @property
    def tokens(self) -> int:
        return sum(turn.tokens for turn in self.turns)

    @property
    def evicts(self) -> bool:
        """Return whether the policy evicts at all (``none`` sends an over-budget request whole)."""
        return self.policy != "none"


def _first_line(entries: Sequence[Entry]) -> str:
    text = next((e.content for e in entries if e.role == "user" and e.content.strip()), "")
    if not text:
        text = next((e.content for e in entries if e.content.strip()), "")
    line = " ".join(text.split())
    return line if len(line) <= 60 else line[:59] + "…"


def preview(candidate: Candidate, policy: str) -> Preview:
    """Return what the next eviction of ``candidate`` (the conversation without a new message) would
    take under ``policy``, and how far off it is."""
    room = candidate.budget - candidate.size - PER_MESSAGE
    if policy == "none":
        return Preview(policy, candidate.budget, room)
    # The first request that does not fit: this conversation and a message one token past the room.
    trigger = Entry(0, Message("user", ""), max(room, 0) + PER_MESSAGE + 1, turn=-1)
    over = replace(candidate, pending=(trigger,))
    try:
        _, _, told = drop_turns(over)
    except BudgetError:
        return Preview(policy, candidate.budget, room,
                       stuck="only pinned turns, the system prompt and the standing memory are left")
    events = [event for event in told if isinstance(event, Evicted)]
    groups = candidate.turns()
    turns = tuple(PreviewTurn(e.turn, e.ids, e.tokens, _first_line(groups[e.turn])) for e in events)
    after = events[-1].total_after if events else candidate.size  # the request's size once they went
    return Preview(policy, candidate.budget, room, turns, after)


def next_eviction(session: Session) -> Preview:
    """Return what the next eviction of ``session``'s conversation would take (``preview``)."""
    budget = session.budget
    candidate = session.conversation.candidate(budget=budget, reserve=session.reserve,
                                               tools=session.tools_tokens(session.tools_offered()),
                                               low_water=session.low_water(budget))
    return preview(candidate, session.settings.policy)


def eviction_line(found: Preview) -> str:
    """Return the next eviction in one line (``/tokens``)."""
    if not found.evicts:
        return "next eviction: none (policy none sends a request over the budget whole, with a warning)"
    if found.stuck is not None:
        return f"next eviction: nothing can go ({found.stuck})"
    how = "fold" if found.policy == "summarize" else "drop"
    turns = f"turn {found.turns[0].turn}" if len(found.turns) == 1 else \
        f"turns {found.turns[0].turn}-{found.turns[-1].turn}"
    return (f"next eviction: in ~{max(found.room, 0):,} tokens, {found.policy} will {how} {turns} "
            f"({len(found.turns)} turn(s), ~{found.tokens:,} tokens); /preview lists them")


__all__ = ["Preview", "PreviewTurn", "eviction_line", "next_eviction", "preview"]
