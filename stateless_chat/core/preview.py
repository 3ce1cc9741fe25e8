"""What the next eviction will take, before it happens: the turns, their size, and how far off it is.

``preview(candidate, policy)`` simulates the request that first passes the budget (the present
conversation and a new message just large enough) through the same ``drop_turns`` the policies
use, and returns which turns would go, oldest first, down to the low-water mark (``evict_to``),
and how many tokens the conversation can still grow before that. Under ``summarize`` the same turns
are folded into the summary instead (its fold goes to the same mark); under ``none`` nothing goes.
Pure: no I/O, nothing changed; ``/preview``, ``/tokens`` (``ui.commands.next_eviction``) and the
toolbar show it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from stateless_chat.core.context import Candidate, drop_turns
from stateless_chat.core.messages import Entry, Evicted, Message
from stateless_chat.core.tokens import PER_MESSAGE
from stateless_chat.errors import BudgetError


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


__all__ = ["Preview", "PreviewTurn", "preview"]
