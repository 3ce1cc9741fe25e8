"""The conversation the client owns: an immutable value, replaced whole after each turn.

Because every operation returns a new ``Conversation``, a turn that fails (an HTTP
error, Ctrl-C, a cut stream) simply never replaces the old value: the history is
exactly what it was before the turn, with no half reply and no duplicated message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from stateless_chat.errors import CommandError
from stateless_chat.messages import Entry, EntryKind, Message, Role

Counter = Callable[[Message], int]


@dataclass(frozen=True)
class Conversation:
    """Everything the next request is built from, plus what was evicted.

    ``system`` has id 0 and is always sent. ``summary`` (if any) folds evicted turns.
    ``entries`` are the live messages, in order, that the next request resends;
    ``evicted`` keeps the originals that are no longer sent, so the user can see them.
    Ids are 1-based, shown by ``/history``, and never reused.
    """

    system: Entry | None = None
    entries: tuple[Entry, ...] = ()
    summary: Entry | None = None
    evicted: tuple[Entry, ...] = ()
    next_id: int = 1
    next_turn: int = 1

    # ---- building ------------------------------------------------------------

    @staticmethod
    def start(system: str | None, counter: Counter) -> Conversation:
        """Return an empty conversation with ``system`` as its pinned system prompt."""
        return Conversation().with_system(system, counter)

    def with_system(self, text: str | None, counter: Counter) -> Conversation:
        """Return this conversation with the system prompt set (or removed when ``text`` is empty)."""
        if not text:
            return replace(self, system=None)
        message = Message("system", text)
        return replace(self, system=Entry(0, message, counter(message), turn=0, pinned=True))

    def new_entry(
        self,
        role: Role,
        content: str,
        counter: Counter,
        *,
        turn: int | None = None,
        kind: EntryKind = "turn",
        pinned: bool = False,
        source: str | None = None,
    ) -> Entry:
        """Return an entry numbered ``next_id``; the caller appends it with ``append``."""
        message = Message(role, content)
        return Entry(
            id=self.next_id,
            message=message,
            tokens=counter(message),
            turn=self.next_turn if turn is None else turn,
            pinned=pinned,
            kind=kind,
            source=source,
        )

    def append(self, *new: Entry) -> Conversation:
        """Return the conversation with ``new`` entries at the end; ids and turns advance past them."""
        if not new:
            return self
        return replace(
            self,
            entries=self.entries + new,
            next_id=max(self.next_id, max(e.id for e in new) + 1),
            next_turn=max(self.next_turn, max(e.turn for e in new) + 1),
        )

    # ---- reading -------------------------------------------------------------

    def request_entries(self, pending: Iterable[Entry] = ()) -> tuple[Entry, ...]:
        """Return what the next request sends, in order: system, summary, history, ``pending``."""
        head = tuple(e for e in (self.system, self.summary) if e is not None)
        return head + self.entries + tuple(pending)

    def messages(self, pending: Iterable[Entry] = ()) -> list[Message]:
        """Return the messages of the next request, in order."""
        return [e.message for e in self.request_entries(pending)]

    def all_entries(self) -> list[Entry]:
        """Return every entry ever added (live and evicted): the summary first, then by id (the
        system prompt is id 0)."""
        live = [e for e in (self.system, self.summary) if e is not None] + list(self.entries)
        return sorted(live + list(self.evicted), key=lambda e: (e.kind != "summary", e.id))

    def find(self, entry_id: int) -> Entry:
        """Return the live or evicted entry with ``entry_id``; CommandError when there is none."""
        for entry in self.all_entries():
            if entry.id == entry_id:
                return entry
        raise CommandError(f"no message #{entry_id}; /history lists the numbers")

    def is_live(self, entry_id: int) -> bool:
        return any(e.id == entry_id for e in self.entries)

    @property
    def tokens(self) -> int:
        """Billed size of system, summary and live history (without reply priming)."""
        return sum(e.tokens for e in self.request_entries())

    @property
    def turn_count(self) -> int:
        return len({e.turn for e in self.entries if e.turn > 0})

    # ---- editing -------------------------------------------------------------

    def recounted(self, counter: Counter) -> Conversation:
        """Return the conversation with every entry's token count measured again by ``counter``."""

        def again(entry: Entry | None) -> Entry | None:
            return None if entry is None else replace(entry, tokens=counter(entry.message))

        return replace(
            self,
            system=again(self.system),
            summary=again(self.summary),
            entries=tuple(replace(e, tokens=counter(e.message)) for e in self.entries),
            evicted=tuple(replace(e, tokens=counter(e.message)) for e in self.evicted),
        )

    def set_pinned(self, entry_id: int, pinned: bool) -> Conversation:
        """Return the conversation with entry ``entry_id`` pinned or unpinned."""
        if entry_id == 0:
            raise CommandError("the system prompt is always pinned")
        if self.summary is not None and entry_id == self.summary.id:
            raise CommandError("the summary is always sent; it cannot be pinned (each fold replaces it)")
        if not self.is_live(entry_id):
            self.find(entry_id)
            raise CommandError(f"message #{entry_id} is no longer sent; only live messages can be pinned")
        return replace(
            self,
            entries=tuple(replace(e, pinned=pinned) if e.id == entry_id else e for e in self.entries),
        )

    def without(self, ids: set[int], *, keep_as_evicted: bool = False) -> Conversation:
        """Return the conversation without the live entries in ``ids``."""
        removed = tuple(e for e in self.entries if e.id in ids)
        kept = tuple(e for e in self.entries if e.id not in ids)
        evicted = self.evicted + removed if keep_as_evicted else self.evicted
        return replace(self, entries=kept, evicted=evicted)

    def with_live(
        self, entries: tuple[Entry, ...], summary: Entry | None, evicted: tuple[Entry, ...]
    ) -> Conversation:
        """Return the conversation after eviction: new live entries and summary, more evicted."""
        ids = [e.id for e in entries] + ([summary.id] if summary is not None else [])
        next_id = max([self.next_id, *(i + 1 for i in ids)])
        return replace(
            self, entries=entries, summary=summary, evicted=self.evicted + evicted, next_id=next_id
        )
