"""What changed in a conversation since the log last wrote it: the work of a write is what is new.

The log keeps every entry of a conversation once, with the slot it is in (``system``,
``summary``, ``history``, ``recalled``, ``evicted``) and a position that orders each slot.
``Mirror`` remembers what the log holds and returns, for the conversation as it is now, only
the entries that are new, changed or moved (``Delta``), and the ids that left the conversation
(the turn ``/undo`` forgot, a summary replaced by the next one).

Finding them costs what the live slots hold plus what is new, not the length of the chat: the
evicted slot only grows at its end (an eviction appends), so while its old part is the same
objects (a conversation value shares them), only its new end is looked at. The entries held by
reference (``core.evicted``: read back from this log, their text unread) are never looked at: they
are in the log as they are, and one that comes back is placed in its new slot. Anything else (a
recall takes entries out of it, a recount replaces them all) is found by comparing it whole.

Positions only grow: an entry that enters a slot gets the next one, so each slot's order is its
entries' order of arrival, which is the order ``Conversation`` keeps them in (it appends and
filters; it never reorders). Should an entry stand out of that order, it and those after it are
placed anew, so the order read back is always the conversation's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stateless_chat.core.evicted import Evicted
from stateless_chat.core.history import Conversation
from stateless_chat.core.messages import Entry

SLOTS = ("system", "memory", "summary", "history", "recalled", "evicted")


@dataclass(frozen=True)
class Placed:
    """An entry as the log keeps it: in ``slot`` at ``pos``."""

    entry: Entry
    slot: str
    pos: int


@dataclass(frozen=True)
class Delta:
    """What a write changes: the entries placed (new, changed or moved), the ids that left the
    conversation, and the conversation's counters after it."""

    placed: tuple[Placed, ...]
    gone: tuple[int, ...]
    next_id: int
    next_turn: int
    next_pos: int
    evicted: Evicted  # the evicted slot this delta brings the log to

    @property
    def empty(self) -> bool:
        return not self.placed and not self.gone


def _same(a: Entry, b: Entry) -> bool:
    """Return whether ``a`` and ``b`` are the same entry in the same state, token count aside: a count
    is measured again by every run that loads the conversation (by its own counter), so a recount
    alone is nothing to write."""
    return a is b or (a.message == b.message and a.turn == b.turn and a.pinned == b.pinned
                      and a.kind == b.kind and a.source == b.source and a.eviction == b.eviction
                      and a.finish_reason == b.finish_reason and a.recalled == b.recalled)


class Mirror:
    """What the log holds of one conversation. ``delta`` reads it; ``wrote`` updates it once the
    write has landed (a failed write leaves it as it was)."""

    def __init__(self) -> None:
        self.known: dict[int, Placed] = {}
        self.live: set[int] = set()  # the ids in the slots other than evicted
        self.evicted: Evicted | None = None  # None: nothing written yet
        self.next_id = 0
        self.next_turn = 0
        self.next_pos = 0

    @property
    def written(self) -> bool:
        return self.evicted is not None

    def delta(self, conversation: Conversation, *, whole: bool = False) -> Delta:
        """Return what must be written to bring the log to ``conversation``; with ``whole``, every
        entry, placed anew (a new conversation in the log: a fork, a loaded file)."""
        known = {} if whole else self.known
        placed: list[Placed] = []
        next_pos = 0 if whole else self.next_pos
        seen: set[int] = set()

        def place(slot: str, entries: Iterable[Entry]) -> None:
            nonlocal next_pos
            last = -1
            for entry in entries:
                seen.add(entry.id)
                before = known.get(entry.id)
                if before is not None and before.slot == slot and before.pos > last:
                    last = before.pos
                    if not _same(before.entry, entry):
                        placed.append(Placed(entry, slot, last))
                    continue
                last = next_pos
                next_pos += 1
                placed.append(Placed(entry, slot, last))

        system, summary, block = conversation.system, conversation.summary, conversation.memory_block
        place("system", () if system is None else (system,))
        place("memory", () if block is None else (block,))
        place("summary", () if summary is None else (summary,))
        place("history", conversation.history)
        place("recalled", conversation.recalled)
        old = Evicted() if whole or self.evicted is None else self.evicted
        new = conversation.evicted
        leaving = set() if whole else set(self.live)
        added = None if new is old else new.extends(old)
        if new is old:
            pass
        elif added is not None:  # only new at its end
            place("evicted", added)
        elif new.held is not None and new.same_held(old):
            # The held part (in the log as it was read back) is unchanged but for what came back,
            # which is placed in its new slot above: only what was evicted since is compared.
            leaving |= {e.id for e in old.tail}
            place("evicted", new.tail)
        else:  # compared whole: what stands where it stood stays, the rest is placed anew
            leaving |= set(old.ids())
            place("evicted", new)
        gone = tuple(sorted(leaving - seen))
        return Delta(tuple(placed), gone, conversation.next_id, conversation.next_turn, next_pos,
                     conversation.evicted)

    def wrote(self, delta: Delta, *, whole: bool = False) -> None:
        """Note that ``delta`` (from ``delta(..., whole=whole)``) is now in the log."""
        if whole:
            self.known.clear()
            self.live.clear()
        for item in delta.placed:
            self.known[item.entry.id] = item
            if item.slot == "evicted":
                self.live.discard(item.entry.id)
            else:
                self.live.add(item.entry.id)
        for number in delta.gone:
            self.known.pop(number, None)
            self.live.discard(number)
        self.evicted = delta.evicted
        self.next_id, self.next_turn, self.next_pos = delta.next_id, delta.next_turn, delta.next_pos

    def prime(self, placed: Iterable[Placed], conversation: Conversation, next_pos: int) -> None:
        """Know the log as holding ``conversation`` with its entries ``placed`` (as read back)."""
        self.clear()
        for item in placed:
            self.known[item.entry.id] = item
            if item.slot != "evicted":
                self.live.add(item.entry.id)
        self.evicted = conversation.evicted
        self.next_id, self.next_turn, self.next_pos = conversation.next_id, conversation.next_turn, next_pos

    def clear(self) -> None:
        """Forget everything: the next write is a whole one."""
        self.__init__()  # type: ignore[misc]


__all__ = ["SLOTS", "Delta", "Mirror", "Placed"]
