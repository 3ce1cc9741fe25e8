"""Standing memory: the short statements every request carries right after the system prompt.

A ``Note`` is one sentence the user said must hold (a standing requirement, a fact about them),
verbatim, linked to the message it came from (none when added by ``/remember``), numbered ``m1``,
``m2`` ... (never reused). ``Memory`` holds the notes; ``block`` is the one system message that
carries them in a request. The slot is never evicted: it changes only when a note is added or
removed, so it stays in the server's cached prefix from one request to the next.

Pure values and functions: ``history.Conversation`` holds a ``Memory`` and its block, the
detector is ``standing``; no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from stateless_chat.core.messages import Entry, Event, MemoryFull, Message, Remembered
from stateless_chat.core.standing import standing
from stateless_chat.core.tokens import PER_MESSAGE
from stateless_chat.errors import CommandError

MEMORY_HEADER = ("Standing notes: what the user said must hold for the whole conversation, in their own "
                 "words (requirements to follow, facts about them):")
MEMORY_ID = -1  # the block's entry id in a request (the cache prediction compares entries by id)
FREEABLE_SHOWN = 3  # notes an over-budget line names as /forget candidates

Counter = Callable[[Message], int]


@dataclass(frozen=True)
class Note:
    """One standing statement: the user's sentence, where it came from, and what its line costs."""

    id: int
    text: str
    source: int | None = None  # the id of the user message it was found in; None: /remember
    turn: int | None = None
    tokens: int = 0  # the tokens its line adds to the block

    @property
    def label(self) -> str:
        """Return how the user names it: ``m3``."""
        return f"m{self.id}"


def line(text: str) -> str:
    """Return the block's line for a note's text (one line, whatever the sentence held)."""
    return "- " + " ".join(text.split())


def block_message(notes: Sequence[Note]) -> Message:
    """Return the system message that carries ``notes`` in a request."""
    return Message("system", "\n".join([MEMORY_HEADER, *(line(note.text) for note in notes)]))


def note_tokens(text: str, counter: Counter) -> int:
    """Return what one note's line adds to the block (its own message less the framing it shares)."""
    return max(1, counter(Message("system", line(text))) - PER_MESSAGE)


def _same(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


@dataclass(frozen=True)
class Memory:
    """The notes of one conversation, and whether its user messages have been read for them.

    ``scanned`` is False only for a conversation saved (or logged) before standing memory existed:
    its user messages are read once, when it is continued (``Conversation.remember_all``).
    """

    notes: tuple[Note, ...] = ()
    next_id: int = 1
    scanned: bool = True

    def find(self, label: str) -> Note:
        """Return the note named ``label`` (``m3``, ``3``); CommandError when there is none."""
        text = label.strip().lower()
        number = text[1:] if text.startswith("m") else text
        if not number.isdigit():
            raise CommandError(f"{label!r} is not a note: notes are named m1, m2 ... (/memory lists them)")
        for note in self.notes:
            if note.id == int(number):
                return note
        raise CommandError(f"no note m{int(number)} in the standing memory (/memory lists them)")

    def has(self, text: str) -> bool:
        return any(_same(note.text, text) for note in self.notes)

    def size(self, counter: Counter, notes: Sequence[Note] | None = None) -> int:
        """Return the block's billed size with ``notes`` (default: these), 0 with none."""
        kept = self.notes if notes is None else notes
        return counter(block_message(kept)) if kept else 0

    def adding(self, text: str, counter: Counter, *, room: int, source: int | None = None,
               turn: int | None = None) -> tuple[Memory, Note | None]:
        """Return the memory with ``text`` added as a note, and the note; the same memory and None when
        the block would pass ``room`` tokens with it."""
        note = Note(self.next_id, text.strip(), source, turn, note_tokens(text, counter))
        if self.size(counter, (*self.notes, note)) > room:
            return self, None
        return replace(self, notes=(*self.notes, note), next_id=self.next_id + 1), note

    def without(self, note: Note) -> Memory:
        return replace(self, notes=tuple(n for n in self.notes if n.id != note.id))

    def recounted(self, counter: Counter) -> Memory:
        return replace(self, notes=tuple(replace(n, tokens=note_tokens(n.text, counter)) for n in self.notes))

    def freeable(self) -> tuple[tuple[str, int], ...]:
        """Return the largest notes (label, tokens): what ``/forget`` could free, largest first."""
        largest = sorted(self.notes, key=lambda n: (-n.tokens, n.id))[:FREEABLE_SHOWN]
        return tuple((n.label, n.tokens) for n in largest)


def block_entry(memory: Memory, counter: Counter) -> Entry | None:
    """Return the entry a request carries for ``memory`` (None without notes)."""
    if not memory.notes:
        return None
    message = block_message(memory.notes)
    return Entry(MEMORY_ID, message, counter(message), turn=0, pinned=True, kind="memory")


def detect(memory: Memory, entries: Sequence[Entry], counter: Counter, *,
           room: int) -> tuple[Memory, list[Event]]:
    """Return ``memory`` with the standing sentences of the typed user messages in ``entries`` added,
    in order, each once, and an event for each (``Remembered``), or one ``MemoryFull`` for those that
    would pass ``room`` tokens."""
    events: list[Event] = []
    refused: list[str] = []
    for entry in entries:
        if entry.role != "user" or entry.kind != "turn":
            continue  # a /file's text is not the user's words
        for sentence in standing(entry.content):
            if memory.has(sentence):
                continue
            memory, note = memory.adding(sentence, counter, room=room, source=entry.id, turn=entry.turn)
            if note is None:
                refused.append(sentence)
            else:
                events.append(Remembered(note.id, note.text, note.tokens, note.source))
    if refused:
        events.append(MemoryFull(tuple(refused), memory.size(counter), room, memory.freeable()))
    return memory, events


__all__ = ["MEMORY_HEADER", "MEMORY_ID", "Memory", "Note", "block_entry", "block_message", "detect"]
