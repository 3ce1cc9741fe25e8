"""The conversation the client owns: an immutable value in typed slots, replaced whole after each turn.

Because every operation returns a new ``Conversation``, a turn that fails (an HTTP
error, Ctrl-C, a cut stream) simply never replaces the old value: the history is
exactly what it was before the turn, with no half reply and no duplicated message.

The slots are the parts every request is built from, in request order: the system
prompt, the instructions (AGENTS.md files), the skills index, the active skills' bodies, the
standing memory (the user's own sentences that must hold for the whole conversation, in one
block: ``memory``; never evicted), the running summary, the live history (pinned
entries marked), the recalled entries (evicted turns brought back, sent right before the new
message and never inside the prefix the server has cached), the documents retrieved for the
new message, and, given by the caller, the new message. What changes rarely comes first, what
changes every turn last, so the server's cached prefix stays whole. The context slots
(instructions, skills, retrieved documents) are this run's: their entries have negative ids,
outside the numbered history, and are neither evicted nor saved. Entries
that are no longer sent move to ``evicted`` with an ``Eviction`` record saying how and
when they left; a recalled entry is one of them moved back, and when the next entries
are appended it settles into the history where it was sent. This module and ``context`` are
the only places that know which slot an entry is in; everything else asks them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace

from stateless_chat.core.context import Candidate, Fit
from stateless_chat.core.evicted import Evicted
from stateless_chat.core.memory import Memory, Note, block_entry, detect
from stateless_chat.core.messages import (
    SLOT_KINDS,
    Entry,
    EntryKind,
    Event,
    Eviction,
    EvictionHow,
    Image,
    MemoryFull,
    Message,
    Role,
    ToolCall,
)
from stateless_chat.core.tokens import REPLY_PRIMING
from stateless_chat.errors import CommandError

Counter = Callable[[Message], int]

# The ids of the context slots' entries: negative, so that no message number /history shows is taken.
INSTRUCTIONS_ID = -2  # (-1 is the standing memory's block: core.memory.MEMORY_ID)
SKILL_INDEX_ID = -3
SKILL_IDS = -100  # the active skills are -100, -101, ... in the order they were turned on
DOCS_IDS = -1000  # the retrieved documents' entries

# What /history, /files, /export and the save file call an entry, by slot and eviction record.
STATE_OF_EVICTION: dict[EvictionHow, str] = {
    "dropped": "evicted", "folded": "summarized", "removed": "removed",
}


def entry_state(entry: Entry, conversation: Conversation) -> str:
    """Return what the user is shown for ``entry``: ``system``, ``summary``, ``sent`` (live), or how
    it left: ``evicted`` (dropped to fit), ``summarized`` (folded) or ``removed`` (by a command)."""
    if entry.id == 0:
        return "system"
    if entry.kind in SLOT_KINDS:
        return {"docs": "retrieved", "skill": "active"}.get(entry.kind, "sent")
    if entry.kind == "summary":
        return "summary"
    if entry.eviction is not None:
        return STATE_OF_EVICTION[entry.eviction.how]
    if any(e.id == entry.id for e in conversation.recalled):
        return "recalled"
    return "sent"


@dataclass(frozen=True)
class Conversation:
    """Everything the next request is built from, plus what was evicted.

    ``system`` has id 0 and is always sent, then this run's ``instructions``, ``skill_index`` and
    active ``skills``. ``memory`` holds the standing notes, sent after them as ``memory_block``
    (None without notes, or with ``memory_sent`` False: memory turned off). ``summary`` (if any)
    folds evicted turns and is sent next. ``history``
    holds the live messages, in order, that the next request resends; ``evicted`` keeps the
    originals no longer sent, each with its ``Eviction`` record, so the user can see them (read
    back from the log, they are held by reference, their text read when asked: ``core.evicted``).
    ``recalled`` holds evicted turns brought back (``recall``) for the next request, sent
    after the history, then ``retrieved`` (document chunks for the new message only), right
    before the new message; ``append`` settles the recalled entries into the history and empties
    ``retrieved``. Ids are 1-based, shown by ``/history``, and never reused.
    """

    system: Entry | None = None
    memory: Memory = Memory()
    memory_block: Entry | None = None
    memory_sent: bool = True
    summary: Entry | None = None
    history: tuple[Entry, ...] = ()
    recalled: tuple[Entry, ...] = ()
    evicted: Evicted = Evicted()  # a tuple of entries is taken too
    instructions: Entry | None = None  # the instruction files (AGENTS.md), composed
    skill_index: Entry | None = None  # each skill's name and description
    skills: tuple[Entry, ...] = ()  # the bodies of the skills turned on (/skill NAME)
    retrieved: tuple[Entry, ...] = ()  # document chunks for the next request only
    next_id: int = 1
    next_turn: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.evicted, Evicted):
            object.__setattr__(self, "evicted", Evicted(self.evicted))

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

    # ---- the context slots ------------------------------------------------------

    def with_instructions(self, text: str | None, counter: Counter, *,
                          source: str | None = None) -> Conversation:
        """Return this conversation with the instructions slot holding ``text`` (None: empty)."""
        entry = _slot(INSTRUCTIONS_ID, "instructions", "system", text, counter, source)
        return replace(self, instructions=entry)

    def with_skill_index(self, text: str | None, counter: Counter) -> Conversation:
        """Return this conversation with the skills index holding ``text`` (None: empty)."""
        return replace(self, skill_index=_slot(SKILL_INDEX_ID, "skills", "system", text, counter, None))

    def with_skills(self, bodies: Sequence[tuple[str, str]], counter: Counter) -> Conversation:
        """Return this conversation with the active skills' slot holding ``bodies`` ((name, text) pairs,
        in the order they were turned on). An entry that did not change is kept as it was."""
        kept = {(e.source, e.content): e for e in self.skills}
        entries = []
        for index, (name, text) in enumerate(bodies):
            before = kept.get((name, text))
            entry = before if before is not None and before.id == SKILL_IDS - index else \
                _slot(SKILL_IDS - index, "skill", "system", text, counter, name)
            assert entry is not None
            entries.append(entry)
        return replace(self, skills=tuple(entries))

    def with_retrieved(self, texts: Sequence[tuple[str, str]], counter: Counter) -> Conversation:
        """Return this conversation with the retrieved slot holding ``texts`` ((source, text) pairs),
        sent right before the next message only: ``append`` empties it."""
        entries = tuple(_slot(DOCS_IDS - index, "docs", "user", text, counter, source)
                        for index, (source, text) in enumerate(texts))
        return replace(self, retrieved=tuple(e for e in entries if e is not None))

    def with_slots_of(self, other: Conversation) -> Conversation:
        """Return this conversation with ``other``'s instructions, skills index and active skills (a
        loaded conversation keeps this run's)."""
        return replace(self, instructions=other.instructions, skill_index=other.skill_index,
                       skills=other.skills)

    @property
    def head(self) -> tuple[Entry, ...]:
        """Return what every request sends first, in order: the system prompt, the instructions, the
        skills index, the active skills, the standing memory and the summary (the slots that change
        rarely, the rarest first)."""
        first = tuple(e for e in (self.system, self.instructions, self.skill_index) if e is not None)
        last = tuple(e for e in (self.memory_block, self.summary) if e is not None)
        return first + self.skills + last

    def slot_entries(self) -> tuple[Entry, ...]:
        """Return the entries of the context slots, in request order (instructions, skills index,
        active skills, retrieved documents)."""
        return tuple(e for e in self.head if e.kind in SLOT_KINDS) + self.retrieved

    def new_entry(
        self,
        role: Role,
        content: str | None,
        counter: Counter,
        *,
        turn: int | None = None,
        kind: EntryKind = "turn",
        pinned: bool = False,
        source: str | None = None,
        tool_calls: Sequence[ToolCall] = (),
        tool_call_id: str | None = None,
        finish_reason: str | None = None,
        id: int | None = None,
        images: Sequence[Image] = (),
    ) -> Entry:
        """Return an entry numbered ``next_id`` (or ``id``); the caller appends it with ``append``."""
        message = Message(role, content, tool_calls=tuple(tool_calls), tool_call_id=tool_call_id,
                          images=tuple(images))
        return Entry(
            id=self.next_id if id is None else id,
            message=message,
            tokens=counter(message),
            turn=self.next_turn if turn is None else turn,
            pinned=pinned,
            kind=kind,
            source=source,
            finish_reason=finish_reason,
        )

    def append(self, *new: Entry) -> Conversation:
        """Return the conversation with ``new`` entries at the end of the history, after the recalled
        entries (which settle into the history where they were sent); ids and turns advance past them."""
        if not new:
            return self
        return replace(
            self,
            history=self.history + self.recalled + new,
            recalled=(),
            retrieved=(),
            next_id=max(self.next_id, max(e.id for e in new) + 1),
            next_turn=max(self.next_turn, max(e.turn for e in new) + 1),
        )

    # ---- reading -------------------------------------------------------------

    def candidate(
        self, pending: Iterable[Entry] = (), *, budget: int, reserve: int = 0, tools: int = 0,
        low_water: int | None = None, framing: int = REPLY_PRIMING,
    ) -> Candidate:
        """Return the next request, slot by slot, with ``pending`` (this turn's new messages) last."""
        pending = tuple(pending)
        next_id = max([self.next_id, *(e.id + 1 for e in pending)])
        return Candidate(system=self.system, summary=self.summary, history=self.history, pending=pending,
                         recalled=self.recalled, budget=budget, reserve=reserve, tools=tools, next_id=next_id,
                         low_water=low_water, memory=self.memory_block, framing=framing,
                         instructions=self.instructions, skill_index=self.skill_index, skills=self.skills,
                         retrieved=self.retrieved)

    def why_gone(self, entry_id: int, fit: Fit | None = None) -> str:
        """Return why entry ``entry_id`` is no longer sent: from its eviction record, or from the
        ``fit`` about to be applied."""
        entry = self.evicted.get(entry_id)
        how: EvictionHow | None = entry.eviction.how if entry is not None and entry.eviction else None
        if fit is not None and (entry_id in fit.dropped or entry_id in fit.folded):
            entry = next((e for e in self.live if e.id == entry_id), None)
            how = "dropped" if entry_id in fit.dropped else "folded"
        if entry is None or how is None:
            return f"message #{entry_id} is no longer sent"
        if how == "dropped":
            return f"turn {entry.turn} was evicted (#{entry_id})"
        if how == "folded":
            return f"turn {entry.turn} was folded into the summary (#{entry_id})"
        return f"#{entry_id} was removed (/drop, /trim or /clear)"

    def request_entries(self, pending: Iterable[Entry] = ()) -> tuple[Entry, ...]:
        """Return what the next request sends, in order: the head (system, instructions, skills, memory,
        summary), history, recalled, retrieved, ``pending``."""
        return self.head + self.history + self.recalled + self.retrieved + tuple(pending)

    def messages(self, pending: Iterable[Entry] = ()) -> list[Message]:
        """Return the messages of the next request, in order."""
        return [e.message for e in self.request_entries(pending)]

    def all_entries(self) -> list[Entry]:
        """Return every entry ever added (live and evicted): the summary first, then by id (the
        system prompt is id 0)."""
        live = [e for e in (self.system, self.summary) if e is not None] + list(self.live)
        return sorted(live + list(self.evicted.whole()), key=lambda e: (e.kind != "summary", e.id))

    def find(self, entry_id: int) -> Entry:
        """Return the live or evicted entry with ``entry_id``; CommandError when there is none."""
        for entry in (self.system, self.summary, *self.live):
            if entry is not None and entry.id == entry_id:
                return entry
        evicted = self.evicted.get(entry_id)  # of the evicted ones, only this one is read
        if evicted is not None:
            return evicted
        raise CommandError(f"no message #{entry_id}; /history lists the numbers")

    @property
    def live(self) -> tuple[Entry, ...]:
        """Return the entries the next request resends besides the system prompt and summary: the
        history, then the recalled entries."""
        return self.history + self.recalled

    def is_live(self, entry_id: int) -> bool:
        return any(e.id == entry_id for e in self.live)

    def state(self, entry: Entry) -> str:
        """Return what the user is shown for ``entry`` (see ``entry_state``)."""
        return entry_state(entry, self)

    @property
    def system_leads(self) -> bool:
        """Return whether a system message opens the next request (the system prompt, or the summary):
        some chat templates add a default system prompt of their own to a request without one."""
        return self.system is not None or self.summary is not None

    @property
    def tokens(self) -> int:
        """Billed size of the head slots (system, instructions, skills, memory, summary), the live
        history and the retrieved documents (without reply priming)."""
        return sum(e.tokens for e in self.request_entries())

    @property
    def turn_count(self) -> int:
        return len({e.turn for e in self.history})

    @property
    def pinned_count(self) -> int:
        return sum(1 for e in self.history if e.pinned)

    def turn_ids(self, turn: int) -> list[int]:
        """Return the ids of the live entries of ``turn``."""
        return [e.id for e in self.history if e.turn == turn]

    def last_turn(self) -> tuple[Entry, ...]:
        """Return the live entries of the newest turn; CommandError when the history is empty."""
        if not self.history:
            raise CommandError("no exchange in the history")
        last = max(e.turn for e in self.history)
        return tuple(e for e in self.history if e.turn == last)

    def last_question(self) -> Entry | None:
        """Return the typed user message that opened the newest turn (None for a /file turn)."""
        return next((e for e in self.last_turn() if e.role == "user" and e.kind == "turn"), None)

    def files(self) -> list[Entry]:
        """Return every entry added by /file, live or not, by id."""
        return [e for e in self.all_entries() if e.kind == "file"]

    # ---- standing memory -----------------------------------------------------

    def with_memory(self, memory: Memory, counter: Counter) -> Conversation:
        """Return the conversation with ``memory`` in its slot (its block rebuilt, unless memory is off)."""
        block = block_entry(memory, counter) if self.memory_sent else None
        return replace(self, memory=memory, memory_block=block)

    def memory_turned(self, on: bool, counter: Counter) -> Conversation:
        """Return the conversation with its memory sent (``on``) or kept but not sent (memory off)."""
        if on == self.memory_sent and (self.memory_block is not None) == (on and bool(self.memory.notes)):
            return self
        return replace(self, memory_sent=on).with_memory(self.memory, counter)

    def remember(self, entry: Entry, counter: Counter, *, room: int,
                 mode: str) -> tuple[Conversation, list[Event]]:
        """Return the conversation with the standing sentences of the committed user message ``entry``
        kept as notes (``mode`` "auto" only), and an event for each, or one for those that would pass
        ``room`` tokens: what the session calls as each user message is committed."""
        if mode != "auto":
            return self, []
        memory, events = detect(self.memory, (entry,), counter, room=room)
        return (self.with_memory(memory, counter) if memory is not self.memory else self), events

    def remember_all(self, counter: Counter, *, room: int, mode: str) -> tuple[Conversation, list[Event]]:
        """Return a conversation from before standing memory with its user messages (live and evicted,
        in order) read for standing sentences, once; unchanged when that was done or ``mode`` is not auto."""
        if self.memory.scanned or mode != "auto":
            return self, []
        users = [e for e in self.all_entries() if e.role == "user" and e.kind == "turn"]
        memory, events = detect(replace(self.memory, scanned=True), users, counter, room=room)
        return self.with_memory(memory, counter), events

    def remember_text(self, text: str, counter: Counter, *, room: int) -> tuple[Conversation, Note]:
        """Return the conversation with ``text`` kept as a note by hand (``/remember``), and the note.
        CommandError, changing nothing, for empty text, a note it already has, or one past ``room``."""
        if not text.strip():
            raise CommandError("usage: /remember TEXT (a sentence to send with every request)")
        if self.memory.has(text):
            raise CommandError("that is already in the standing memory (/memory lists it)")
        memory, note = self.memory.adding(text, counter, room=room)
        if note is None:
            from stateless_chat.core.messages import describe

            full = MemoryFull((text,), self.memory.size(counter), room, self.memory.freeable())
            raise CommandError(describe(full))
        return self.with_memory(memory, counter), note

    def forget(self, label: str, counter: Counter) -> tuple[Conversation, Note]:
        """Return the conversation without note ``label`` (``m3``), and the note; CommandError for none."""
        note = self.memory.find(label)
        return self.with_memory(self.memory.without(note), counter), note

    # ---- editing -------------------------------------------------------------

    def recounted(self, counter: Counter) -> Conversation:
        """Return the conversation with every entry's token count measured again by ``counter``."""

        def again(entry: Entry | None) -> Entry | None:
            return None if entry is None else replace(entry, tokens=counter(entry.message))

        def all_again(entries: tuple[Entry, ...]) -> tuple[Entry, ...]:
            return tuple(replace(e, tokens=counter(e.message)) for e in entries)

        return replace(
            self,
            system=again(self.system),
            memory=self.memory.recounted(counter),
            memory_block=again(self.memory_block),
            summary=again(self.summary),
            history=all_again(self.history),
            recalled=all_again(self.recalled),
            evicted=self.evicted.recounted(counter),
            instructions=again(self.instructions),
            skill_index=again(self.skill_index),
            skills=all_again(self.skills),
            retrieved=all_again(self.retrieved),
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
            history=tuple(replace(e, pinned=pinned) if e.id == entry_id else e for e in self.history),
            recalled=tuple(replace(e, pinned=pinned) if e.id == entry_id else e for e in self.recalled),
        )

    def pin_last_question(self) -> Conversation:
        """Return the conversation with the newest turn's typed message pinned (a retried pinned turn)."""
        question = self.last_question()
        return self if question is None else self.set_pinned(question.id, True)

    def _evict(self, ids: Collection[int], how: EvictionHow) -> Conversation:
        """Return the conversation with the live entries in ``ids`` moved to ``evicted`` as ``how``."""
        record = Eviction(how, self.next_turn)
        gone = tuple(replace(e, eviction=record) for e in self.live if e.id in ids)
        return replace(self, history=tuple(e for e in self.history if e.id not in ids),
                       recalled=tuple(e for e in self.recalled if e.id not in ids),
                       evicted=self.evicted + gone)

    def whole_turns(self, ids: Iterable[int]) -> set[int]:
        """Return the ids of every live entry sharing a turn with an entry in ``ids``."""
        wanted = set(ids)
        turns = {e.turn for e in self.live if e.id in wanted}
        return {e.id for e in self.live if e.turn in turns}

    def drop(self, ids: Iterable[int]) -> tuple[Conversation, list[Entry]]:
        """Return the conversation with the whole turns of live messages ``ids`` removed (kept in
        ``evicted`` as ``removed``), and the live entries that went; ``ids`` may name the summary,
        which is discarded (its originals stay evicted). CommandError, changing nothing, for the
        system prompt or a message that is no longer sent."""
        wanted = set(ids)
        summary_id = self.summary.id if self.summary is not None else None
        live = {e.id for e in self.live}
        for number in sorted(wanted):
            if number == 0:
                raise CommandError("the system prompt cannot be dropped; /system --clear removes it")
            if number not in live and number != summary_id:
                self.find(number)
                raise CommandError(f"message #{number} is no longer sent; only live messages can be dropped")
        turn_ids = self.whole_turns(wanted & live)
        gone = [e for e in self.live if e.id in turn_ids]
        if summary_id in wanted:
            assert self.summary is not None
            gone.insert(0, self.summary)
        updated = self._evict(turn_ids, "removed")
        if summary_id in wanted:
            updated = replace(updated, summary=None)
        return updated, gone

    def trim(self, keep: int) -> tuple[Conversation, list[Entry]]:
        """Return the conversation with all but the newest ``keep`` turns removed (pinned turns stay),
        and the entries that went."""
        order = list(dict.fromkeys(e.turn for e in self.live))
        pinned = {e.turn for e in self.live if e.pinned}
        newest = set(order[len(order) - keep:]) if keep else set()
        ids = {e.id for e in self.live if e.turn not in newest and e.turn not in pinned}
        gone = [e for e in self.live if e.id in ids]
        return self._evict(ids, "removed"), gone

    def clear(self) -> tuple[Conversation, list[Entry]]:
        """Return the conversation with every unpinned turn removed and no summary, and the entries
        that went; the system prompt and the pinned turns stay."""
        pinned = {e.turn for e in self.live if e.pinned}
        ids = {e.id for e in self.live if e.turn not in pinned}
        gone = [e for e in self.live if e.id in ids]
        return replace(self._evict(ids, "removed"), summary=None), gone

    def without_last_turn(self, counter: Counter) -> tuple[Conversation, tuple[Entry, ...]]:
        """Return the conversation without its newest turn (forgotten, not kept as evicted: /undo,
        /retry and /edit replace it) and without the standing notes its message gave (the user took
        it back; sent again, it gives them again), and that turn's entries."""
        turn = self.last_turn()
        ids = {e.id for e in turn}
        conversation = replace(self, history=tuple(e for e in self.history if e.id not in ids))
        taken = [note for note in self.memory.notes if note.source in ids]
        if taken:
            memory = self.memory
            for note in taken:
                memory = memory.without(note)
            conversation = conversation.with_memory(memory, counter)
        return conversation, turn

    def apply(self, fit: Fit) -> Conversation:
        """Return the conversation after the policy's ``fit``: the history and recalled entries it
        kept, its summary, and the entries it dropped or folded moved to ``evicted`` with their records.

        The fitted request's recalled entries may have been recalled for it (``recall`` on a copy of
        this conversation): they leave ``evicted`` here. One recalled and then evicted by the same fit
        stays evicted as it was. The pending entries of the fitted request are not added here: they
        join the history with the reply, when the turn completes.
        """
        request = fit.request
        by_id = {e.id: e for e in self.live}
        dropped, folded = Eviction("dropped", self.next_turn), Eviction("folded", self.next_turn)
        gone = [replace(by_id[i], eviction=dropped) for i in fit.dropped if i in by_id]
        gone += [replace(by_id[i], eviction=folded) for i in fit.folded if i in by_id]
        gone.sort(key=lambda e: e.id)
        back = {e.id for e in request.recalled}
        evicted = self.evicted.without(back) if back else self.evicted
        ids = [e.id for e in request.history] + ([request.summary.id] if request.summary is not None else [])
        next_id = max([self.next_id, *(i + 1 for i in ids)])
        return replace(self, history=request.history, recalled=request.recalled, summary=request.summary,
                       evicted=evicted + gone, next_id=next_id)

    def recall(self, ids: Iterable[int]) -> tuple[Conversation, tuple[Entry, ...]]:
        """Return the conversation with the whole turns of evicted messages ``ids`` moved back into the
        recalled slot (sent right before the next message), and the entries that came back.

        One copy: an entry is either evicted or recalled, never both, so a turn is never recalled
        twice; evicted again, it goes back to ``evicted`` with its new record. CommandError,
        changing nothing, for a message that is live, the system prompt or the summary.
        """
        wanted = set(ids)
        evicted = set(self.evicted.ids())
        for number in sorted(wanted):
            if number not in evicted:
                entry = self.find(number)
                where = "the system prompt" if entry.id == 0 else "the summary" if entry.kind == "summary" \
                    else f"message #{number}"
                raise CommandError(f"{where} is still sent; only evicted messages can be recalled")
        turns = {row[1] for row in self.evicted.rows() if row[0] in wanted}
        back = self.evicted.of_turns(turns)
        if not back:
            return self, ()
        recalled = tuple(sorted(self.recalled + tuple(replace(e, eviction=None) for e in back),
                                key=lambda e: e.id))
        return replace(self, recalled=recalled, evicted=self.evicted.without({e.id for e in back})), back

    def check(self) -> None:
        """Raise ValueError naming the first entry that is in a slot it cannot be in: a system
        message in the history or among the evicted (it would be sent once, then lost), a summary
        outside the summary slot, or an evicted entry without its record."""
        for entry in self.history + self.recalled + self.evicted.loaded():
            where = "message" if entry.eviction is None else "evicted message"
            if entry.kind in SLOT_KINDS:
                raise ValueError(f"{where} #{entry.id} is a {entry.kind} entry outside its slot")
            if entry.role == "system":
                raise ValueError(f"{where} #{entry.id} is a system message; only the system prompt and the "
                                 "summary may be system messages")
            if entry.kind == "summary":
                raise ValueError(f"{where} #{entry.id} is a summary outside the summary slot")
        if self.summary is not None and (self.summary.role != "system" or self.summary.kind != "summary"):
            raise ValueError("the summary is not a system message of kind summary")
        if self.system is not None and self.system.role != "system":
            raise ValueError("the system prompt is not a system message")
        if self.memory_block is not None and self.memory_block.kind != "memory":
            raise ValueError("the memory slot holds something else than the standing notes")


def _slot(entry_id: int, kind: EntryKind, role: Role, text: str | None, counter: Counter,
          source: str | None) -> Entry | None:
    """Return the entry of a context slot holding ``text`` (None when there is no text)."""
    if not text:
        return None
    message = Message(role, text)
    return Entry(entry_id, message, counter(message), turn=0, pinned=True, kind=kind, source=source)
