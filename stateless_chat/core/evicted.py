"""The evicted slot: the messages no longer sent, some of them held by reference until they are needed.

A conversation read back from the log (``-c``) may have evicted tens of thousands of messages; the
next request sends none of them. Reading them whole would make continuing a long conversation
cost its whole text. So the evicted messages that were in the log when it was read back are
``Held``: their count and tokens are known, and an ``Archive`` (the log, given as a value: this
module imports nothing from the store) gives what the conversation needs of each (id, turn, tokens,
how it left) when that is first asked, and the entries themselves (their text) when those are.
``/history all``, recall, ``/save``, ``/export`` and a fork read them; a turn does not.

``Evicted`` is an immutable sequence of entries: the held part (less the ones that came back, by
``recall``) then the entries evicted since (``tail``). Iterating it, indexing it or comparing it
reads the held part (once: it is kept). ``len``, ``tokens``, ``ids``, ``rows``, ``get``,
``of_turns``, ``without`` and ``+`` do not read the held text.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Protocol, overload

from stateless_chat.core.messages import Entry, EvictionHow, Message

Counter = Callable[[Message], int]

# What the conversation needs of an evicted entry without its text: id, turn, tokens, how it left.
Row = tuple[int, int, int, EvictionHow]


class Archive(Protocol):
    """Where held entries are kept (the log): each entry's ``Row``, and the entries, in slot order."""

    def index(self) -> Sequence[Row]:
        """Return the ``Row`` of every held entry, in slot order."""
        ...

    def read(self, ids: Collection[int] | None) -> Sequence[Entry]:
        """Return the held entries with ``ids`` (None: all of them), in slot order."""
        ...


class Held:
    """``count`` evicted entries of ``tokens`` tokens (as stored) kept in ``archive``, not read yet.

    What is read is kept: the rows once asked, the entries once all are read. With ``counter`` the
    entries read are counted again by it (the session's counter; the stored counts are another run's).
    """

    __slots__ = ("_archive", "_counter", "_entries", "_rows", "count", "tokens")

    def __init__(self, count: int, tokens: int, archive: Archive, counter: Counter | None = None,
                 *, _rows: list[tuple[Row, ...]] | None = None) -> None:
        self.count = count
        self.tokens = tokens
        self._archive = archive
        self._counter = counter
        self._rows = [] if _rows is None else _rows  # shared with recounted copies: the rows do not change
        self._entries: tuple[Entry, ...] | None = None

    def rows(self) -> tuple[Row, ...]:
        if not self._rows:
            self._rows.append(tuple(self._archive.index()))
        return self._rows[0]

    def _counted(self, entries: Iterable[Entry]) -> tuple[Entry, ...]:
        counter = self._counter
        if counter is None:
            return tuple(entries)
        return tuple(replace(e, tokens=counter(e.message)) for e in entries)

    def entries(self) -> tuple[Entry, ...]:
        """Return every held entry, read (once) from the archive."""
        if self._entries is None:
            self._entries = self._counted(self._archive.read(None))
        return self._entries

    def read(self, ids: Collection[int]) -> tuple[Entry, ...]:
        """Return the held entries with ``ids``, in slot order (only those are read)."""
        if not ids:
            return ()
        if self._entries is not None:
            return tuple(e for e in self._entries if e.id in ids)
        return self._counted(self._archive.read(ids))

    def recounted(self, counter: Counter) -> Held:
        """Return these entries, counted by ``counter`` when they are read."""
        return Held(self.count, self.tokens, self._archive, counter, _rows=self._rows)

    def same(self, other: Held | None) -> bool:
        """Return whether ``other`` holds the same entries (counted alike or not)."""
        return other is self or (other is not None and other._archive is self._archive)


class Evicted(Sequence[Entry]):
    """The evicted entries in order: ``held`` (less the ids in ``gone``, which came back) then ``tail``."""

    __slots__ = ("_all", "_gone", "_held", "_tail")

    def __init__(self, entries: Iterable[Entry] = (), *, held: Held | None = None,
                 gone: frozenset[int] = frozenset()) -> None:
        self._tail = tuple(entries)
        self._held = held
        self._gone = gone if held is not None else frozenset()
        self._all: tuple[Entry, ...] | None = None if held is not None else self._tail

    @property
    def held(self) -> Held | None:
        return self._held

    @property
    def tail(self) -> tuple[Entry, ...]:
        """The entries evicted since the held ones were read back (all of them when nothing is held)."""
        return self._tail

    def whole(self) -> tuple[Entry, ...]:
        """Return every entry, the held ones read (once) from where they are kept."""
        if self._all is None:
            assert self._held is not None
            gone = self._gone
            held = self._held.entries()
            self._all = tuple(e for e in held if e.id not in gone) + self._tail if gone else held + self._tail
        return self._all

    def loaded(self) -> tuple[Entry, ...]:
        """Return the entries already in memory (those not read yet are left out)."""
        return self._all if self._all is not None else self._tail

    # ---- a sequence ------------------------------------------------------------------------

    def __len__(self) -> int:
        if self._all is not None:
            return len(self._all)
        assert self._held is not None
        return self._held.count - len(self._gone) + len(self._tail)

    @overload
    def __getitem__(self, index: int) -> Entry: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Entry, ...]: ...

    def __getitem__(self, index: int | slice) -> Entry | tuple[Entry, ...]:
        return self.whole()[index]

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.whole())

    def __reversed__(self) -> Iterator[Entry]:
        return reversed(self.whole())

    def __bool__(self) -> bool:
        return len(self) > 0

    def __add__(self, other: Iterable[Entry]) -> Evicted:
        """Return these entries with ``other`` appended (nothing held is read)."""
        more = tuple(other)
        if not more:
            return self
        return Evicted(self._tail + more, held=self._held, gone=self._gone)

    def __radd__(self, other: tuple[Entry, ...]) -> tuple[Entry, ...]:
        return tuple(other) + self.whole()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Evicted):
            if other._held is self._held and other._gone == self._gone:
                return other._tail == self._tail
            return other.whole() == self.whole()
        if isinstance(other, tuple):
            return self.whole() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.whole())

    def __repr__(self) -> str:
        if self._all is None:
            return f"Evicted({len(self)} held by reference, tail={self._tail!r})"
        return f"Evicted({self._all!r})"

    # ---- what the conversation needs, the held text unread ---------------------------------

    @property
    def tokens(self) -> int:
        """Return the tokens of every entry (the held ones as stored)."""
        own = sum(e.tokens for e in self._tail)
        held = self._held
        if held is None:
            return own
        if self._all is not None:
            return sum(e.tokens for e in self._all)
        gone = self._gone
        if not gone:
            return held.tokens + own
        return held.tokens - sum(row[2] for row in held.rows() if row[0] in gone) + own

    def rows(self) -> list[Row]:
        """Return each entry's ``Row`` (id, turn, tokens, how it left), in order."""
        rows: list[Row] = []
        if self._held is not None and self._all is None:
            gone = self._gone
            rows += [row for row in self._held.rows() if row[0] not in gone]
            entries: Iterable[Entry] = self._tail
        else:
            entries = self.loaded()
        rows += [(e.id, e.turn, e.tokens, e.eviction.how if e.eviction is not None else "dropped")
                 for e in entries]
        return rows

    def ids(self) -> list[int]:
        """Return the ids of the entries, in order."""
        return [row[0] for row in self.rows()]

    def get(self, entry_id: int) -> Entry | None:
        """Return the entry ``entry_id``, or None when it is not evicted."""
        found = self.read({entry_id})
        return found[0] if found else None

    def read(self, ids: Collection[int]) -> tuple[Entry, ...]:
        """Return the entries with ``ids``, in order (of the held ones, only those are read)."""
        wanted = ids if isinstance(ids, (set, frozenset)) else set(ids)
        if self._held is None or self._all is not None:
            return tuple(e for e in self.loaded() if e.id in wanted)
        gone = self._gone
        held_ids = {row[0] for row in self._held.rows() if row[0] in wanted and row[0] not in gone}
        return self._held.read(held_ids) + tuple(e for e in self._tail if e.id in wanted)

    def of_turns(self, turns: Collection[int]) -> tuple[Entry, ...]:
        """Return the entries of ``turns``, in order."""
        return self.read({row[0] for row in self.rows() if row[1] in turns})

    def without(self, ids: Collection[int]) -> Evicted:
        """Return these entries less those with ``ids`` (nothing held is read)."""
        wanted = ids if isinstance(ids, (set, frozenset)) else set(ids)
        if not wanted:
            return self
        tail = tuple(e for e in self._tail if e.id not in wanted)
        if self._held is None:
            return self if len(tail) == len(self._tail) else Evicted(tail)
        held = {row[0] for row in self._held.rows() if row[0] in wanted} - self._gone
        if not held and len(tail) == len(self._tail):
            return self
        return Evicted(tail, held=self._held, gone=self._gone | held)

    def recounted(self, counter: Counter) -> Evicted:
        """Return these entries with their counts measured by ``counter`` (the held ones when read)."""
        tail = tuple(replace(e, tokens=counter(e.message)) for e in self._tail)
        if self._held is None:
            return Evicted(tail)
        return Evicted(tail, held=self._held.recounted(counter), gone=self._gone)

    def same_held(self, other: Evicted) -> bool:
        """Return whether ``other`` holds the same entries by reference as these (or neither holds any)."""
        return other._held is None if self._held is None else self._held.same(other._held)

    def extends(self, old: Evicted) -> tuple[Entry, ...] | None:
        """Return the entries these have past ``old`` when they are ``old`` with entries appended (the
        same objects at its place), or None."""
        if not self.same_held(old) or self._gone != old._gone or len(self._tail) < len(old._tail):
            return None
        if all(a is b for a, b in zip(old._tail, self._tail, strict=False)):
            return self._tail[len(old._tail):]
        return None


__all__ = ["Archive", "Evicted", "Held", "Row"]
