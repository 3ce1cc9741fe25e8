"""The conversation log, wired to a chat by values: every turn and every change written to SQLite, a
logged conversation continued as it was left, and evicted turns recalled by relevance.

The journal holds no session. It is told of each completed turn (``__call__``, given the
``TurnRecord`` the session emits: the conversation, accounting and settings after it), of each
change made between turns (``edited``: a command changed the conversation or the settings), and
of a turn cancelled after its tools ran (a ``FailedTurn``); before each request it is asked to
recall (``recall``, the session's ``recaller``). It decides what to log: only what changed since
the log last wrote (``logdiff``), so a turn costs what is new, not the length of the chat. All SQL
is in ``logstore``.

Two chats continuing one conversation never overwrite each other: every write names the state
it follows, and a chat that finds the conversation moved on by another goes on as a fork (a new
conversation holding all of its own state), saying so in one line with the new id.

Logging never stops the chat. When the log cannot be opened or written (a damaged file, a
full disk, a read-only location) one line says so and the chat goes on with logging off; a
failed write stores nothing of its change and leaves what was logged before intact. Recall
then keeps working from an index held in memory, as it does when logging is turned off.
Only the standard library and the core are used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stateless_chat.chat.values import FailedTurn, TurnRecord
from stateless_chat.config import Settings
from stateless_chat.core.evicted import Evicted
from stateless_chat.core.history import STATE_OF_EVICTION, Conversation
from stateless_chat.core.ledger import Ledger
from stateless_chat.core.memory import Memory
from stateless_chat.core.messages import Entry, Event, Notice, Recalled, ToolAnswered, ToolCalled, describe
from stateless_chat.core.relevance import no_reason
from stateless_chat.errors import LogError, UsageError
from stateless_chat.sanitize import url_password
from stateless_chat.sensitive import secret_in_text
from stateless_chat.store import persist
from stateless_chat.store.logdiff import Mirror
from stateless_chat.store.logstore import (
    Change,
    Conflict,
    EventLog,
    LogStore,
    RecallHit,
    Restored,
    TurnLog,
    memory_data,
    recall_terms,
)

# How many matching messages one recall asks the index for; they are grouped into turns.
RECALL_HITS = 24
# The words an event line quotes from what made a turn come back.
SHOWN_WORDS = 4
# Evictions auto recall may undo: what the policy evicted. What the user removed (/drop, /trim,
# /clear) comes back only when asked for by number.
AUTO_RECALLABLE = frozenset({"dropped", "folded"})
# The most of a command line an edit event keeps.
WHAT_WIDTH = 200
_WORDS = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class RecallMatch:
    """An evicted turn that matches a query, as ``/recall QUERY`` lists it."""

    turn: int
    ids: tuple[int, ...]
    tokens: int
    state: str  # how it left: evicted, summarized or removed
    score: float
    first_line: str


def _warn_nowhere(text: str) -> None:
    pass


class _Target:
    """One conversation in one store, as this chat last wrote it: its id, its head and a mirror."""

    def __init__(self, store: LogStore) -> None:
        self.store = store
        self.cid: str | None = None
        self.head = 0
        self.mirror = Mirror()
        self.settings: dict[str, Any] | None = None  # as last written
        self.based = False  # whether the accounting of the turns before this chat's is written
        self.memory: tuple[Memory, bool] | None = None  # the standing memory as last written, and sent

    def reset(self) -> None:
        self.cid, self.head, self.settings, self.based, self.memory = None, 0, None, False, None
        self.mirror.clear()


class Journal:
    """Logs one chat's turns and changes into a ``LogStore`` and recalls its evicted turns.

    ``store`` is the log on disk (None when logging is off or has failed); ``settings`` the chat's
    (recall reads them; a turn's record and ``edited`` bring them up to date). ``warn`` shows one
    line to the user. ``saved`` is the conversation as last saved to (or loaded from) a file, so
    ``/load`` can tell whether the one it replaces is kept anywhere else than the log.
    """

    def __init__(self, store: LogStore | None, settings: Settings, *, path: Path | None = None,
                 warn: Callable[[str], None] = _warn_nowhere) -> None:
        self.store = store
        self.settings = settings
        self.path = path if path is not None else (store.path if store is not None else None)
        self.warn = warn
        self.saved: Conversation | None = None
        self._log = _Target(store) if store is not None else None
        self._memory: _Target | None = None  # the recall index when there is no log on disk
        self._among: tuple[Evicted | None, set[int]] = (None, set())  # auto recall's candidates
        self._said_skipped: set[int] = set()  # turns said to match but not to fit the recall budget
        self._words: dict[tuple[int, str], frozenset[str]] = {}  # the words of each entry sent
        self._warned: set[int] = set()  # messages already said to look like a secret
        self._ledger = Ledger()  # the chat's accounting as last told (a fork starts from it)
        self._last_cid: str | None = None

    @property
    def logging(self) -> bool:
        return self.store is not None

    @property
    def cid(self) -> str | None:
        """The id of this conversation in the log, None until something of it is written (after logging
        stopped, the last one it had)."""
        return self._log.cid if self._log is not None else self._last_cid

    # ---- logging -------------------------------------------------------------------------

    def __call__(self, record: TurnRecord | FailedTurn) -> None:
        """Log a completed turn, or a turn that failed after its tools ran (the session's observer).
        Damaged evicted entries read since the conversation was continued are said here, one line each."""
        self._guarded(lambda: self._record(record))
        store = self._log.store if self._log is not None else None
        if store is not None and store.unread:
            cid = self.cid or "?"
            for line in store.unread:
                self.warn(f"a damaged row of conversation {cid} in the log was left out: {line}")
            store.unread.clear()

    def edited(self, what: str, conversation: Conversation, ledger: Ledger, settings: Settings) -> None:
        """Log what a command (``what``: its line) changed between turns: the entries that changed and
        the settings, as an event; nothing when it changed nothing."""
        self.settings, self._ledger = settings, ledger
        line = " ".join(what.split())
        line = line if len(line) <= WHAT_WIDTH else line[: WHAT_WIDTH - 1] + "…"
        self._guarded(lambda: self._write(conversation, ledger, settings, event=EventLog(
            "edit", line, conversation.next_turn - 1), quiet=True))

    def forked(self) -> None:
        """Log into a new conversation from the next write on (``/load`` replaced this one)."""
        if self._log is not None:
            self._log.reset()
        if self._memory is not None:
            self._memory.reset()
        self._said_skipped.clear()

    def _guarded(self, write: Callable[[], None]) -> None:
        if self._log is None:
            return
        try:
            write()
        except LogError as error:
            self._fail(str(error))
        except Exception as error:  # a bug here must not cost the chat its turn
            self._fail(f"the conversation log failed (a bug in stateless-chat): {type(error).__name__}: "
                       f"{error}")

    def _record(self, record: TurnRecord | FailedTurn) -> None:
        if isinstance(record, FailedTurn):
            self._cancelled(record)
            return
        reply = record.reply
        conversation = record.conversation
        assert conversation is not None and record.ledger is not None and record.settings is not None
        self.settings, self._ledger = record.settings, record.ledger
        usage = reply.usage
        counts = None
        if usage is not None:
            counts = {key: value for key, value in (("prompt_tokens", usage.prompt_tokens),
                                                    ("completion_tokens", usage.completion_tokens),
                                                    ("cached_tokens", usage.cached_tokens))
                      if value is not None}
        answer = next((e for e in reversed(conversation.history) if e.turn == record.turn
                       and e.role == "assistant"), None)
        model = record.model or str(record.requests[-1].get("model") or record.settings.model) \
            if record.requests else record.model
        turn = TurnLog(
            turn=record.turn, requests=tuple(record.requests), reply=reply.text,
            finish_reason=reply.finish_reason, usage=counts,
            events=tuple(describe(event) for event in record.events), answer=answer, stats=record.stats,
            model=model, endpoint=reply.endpoint, seconds=record.seconds,
        )
        before = Ledger(record.ledger.turns[:-1])  # the turn's own accounting is in its row
        self._write(conversation, before, record.settings, turn=turn, endpoint=reply.endpoint)
        self._warn_secrets(conversation, record.turn)

    def _cancelled(self, record: FailedTurn) -> None:
        """Log a turn that failed after its tools ran: its message and the calls, with what they did."""
        assert self._log is not None
        calls: list[dict[str, Any]] = []
        for event in record.events:
            if isinstance(event, ToolCalled):
                calls.append({"tool": event.tool, "arguments": event.arguments})
            elif isinstance(event, ToolAnswered) and calls:
                calls[-1].update(ran=not event.refused, error=event.error, result_tokens=event.tokens)
        question = next((e.content for e in record.pending if e.role == "user"), "")
        results = [{"id": e.message.tool_call_id, "content": e.content}
                   for e in record.pending if e.role == "tool"]
        what = (f"turn {record.turn} {record.reason} after its tools ran: "
                + ", ".join(f"{c['tool']} {c['arguments']}" for c in calls))
        detail = {"reason": record.reason, "message": question, "calls": calls, "results": results,
                  "requests": len(record.requests), "events": [describe(e) for e in record.events]}
        target = self._log
        if target.cid is None:
            target.cid = target.store.start_conversation(model=record.model, endpoint="")
        self._commit(target, Change(event=EventLog("cancelled", what, record.turn, detail)), None, None)

    def _write(self, conversation: Conversation, ledger: Ledger, settings: Settings, *,
               turn: TurnLog | None = None, event: EventLog | None = None, endpoint: str = "",
               quiet: bool = False) -> None:
        """Write what changed (and ``turn`` or ``event``) to the log; with ``quiet``, nothing at all
        when nothing changed."""
        target = self._log
        assert target is not None
        settings_data = persist.settings_data(settings)
        whole = not target.mirror.written
        delta = target.mirror.delta(conversation, whole=whole)
        changed_settings = settings_data if settings_data != target.settings else None
        memory = (conversation.memory, conversation.memory_sent)
        changed_memory = None if target.memory == memory and not whole else memory_data(*memory)
        if quiet and delta.empty and changed_settings is None and changed_memory is None:
            return
        if target.cid is None:
            target.cid = target.store.start_conversation(model=settings.model, endpoint=endpoint)
        change = Change(delta, settings=changed_settings, memory=changed_memory,
                        ledger=None if target.based else ledger.turns, turn=turn, event=event,
                        model=turn.model if turn is not None else "", endpoint=endpoint)
        self._commit(target, change, conversation, ledger, whole=whole)

    def _commit(self, target: _Target, change: Change, conversation: Conversation | None,
                ledger: Ledger | None, *, whole: bool = False) -> None:
        """Write ``change``; when another chat moved the conversation on meanwhile, write this chat's
        whole state to a new conversation instead (a fork) and say so. ``ledger`` is the accounting
        of the turns before ``change``'s."""
        assert target.cid is not None
        try:
            target.head = target.store.write(target.cid, change, head=target.head)
        except Conflict:
            if conversation is None or ledger is None:  # an event alone: it goes where the chat now is
                target.head = target.store.head(target.cid) or 0
                target.head = target.store.write(target.cid, change, head=target.head)
                return
            old = target.cid
            target.reset()
            target.cid = target.store.start_conversation(model=self.settings.model, endpoint=change.endpoint,
                                                         parent=old)
            settings_data = persist.settings_data(self.settings)
            delta = target.mirror.delta(conversation, whole=True)
            fork = EventLog("fork", f"forked from {old}: another chat continued it meanwhile", 0)
            memory = (conversation.memory, conversation.memory_sent)
            target.head = target.store.write(target.cid, Change(
                delta, settings=settings_data, memory=memory_data(*memory), ledger=ledger.turns, event=fork),
                head=0)
            target.mirror.wrote(delta, whole=True)
            target.settings, target.based, target.memory = settings_data, True, memory
            target.head = target.store.write(target.cid, Change(
                turn=change.turn, event=change.event, model=change.model, endpoint=change.endpoint),
                head=target.head)
            self.warn(f"conversation {old} was continued by another chat meanwhile; this chat goes on as "
                      f"{target.cid} (stateless-chat --cid {target.cid}), and both are kept")
            return
        if change.delta is not None:
            target.mirror.wrote(change.delta, whole=whole)
        if change.settings is not None:
            target.settings = dict(change.settings)
        if change.ledger is not None:
            target.based = True
        if change.memory is not None and conversation is not None:
            target.memory = (conversation.memory, conversation.memory_sent)

    def _warn_secrets(self, conversation: Conversation, turn: int) -> None:
        """Say once of each message of ``turn`` that looks like it carries a secret where it is kept and
        how to remove it (as ``/file`` does of a file)."""
        for entry in conversation.history:
            if entry.turn != turn or entry.role != "user" or entry.kind != "turn" or entry.id in self._warned:
                continue  # a file added with /file was said of when it was added
            settings = self.settings
            known = (settings.api_key, *(key for _, key in settings.endpoint_keys),
                     *(url_password(url) for url in settings.endpoints))
            reason = secret_in_text(entry.content, known)
            if reason is not None:
                self._warned.add(entry.id)
                self.warn(f"warning: message #{entry.id} looks like it carries a secret ({reason}); it was "
                          f"sent, and is kept in the conversation log {self.path}: stateless-chat logs rm "
                          f"{self.cid} deletes this conversation from it")

    def _fail(self, reason: str) -> None:
        """Turn logging off for the rest of the chat, saying so in one line."""
        store, self.store = self.store, None
        self._last_cid = self.cid
        self._log = None
        if store is not None:
            try:
                store.close()
            except Exception:  # noqa: BLE001 - closing a failed store must not fail too
                pass
        self.warn(f"{' '.join(reason.split())}; the chat goes on without logging")

    def close(self) -> None:
        self._last_cid = self.cid
        for target in (self._log, self._memory):
            if target is not None:
                target.store.close()
        self.store = None
        self._log = self._memory = None

    # ---- continuing ------------------------------------------------------------------------

    def resume(self, wanted: str | None) -> Restored:
        """Return the logged conversation ``wanted`` (an id or its start; None: the most recent one) as
        it was left, and log into it from now on. The caller makes it the chat's
        (``Session.load(*journal.loadable(restored))``). A damaged row left out is one ``warn`` line.

        Raises ``LogError`` when there is no log, no such conversation, or it cannot be restored.
        """
        target = self._log
        if target is None:
            raise UsageError("-c/--continue and --cid read the conversation log, which is turned off "
                             "(--no-log or log = false)")
        store = target.store
        cid = store.find(wanted) if wanted is not None else store.latest()
        if cid is None:
            raise LogError(f"nothing to continue: the conversation log {self.path} has no conversation yet")
        restored = store.restore(cid)
        if restored is None:
            raise LogError(f"conversation {cid} has nothing logged yet: nothing to continue")
        if restored.problems:
            self.warn(f"{len(restored.problems)} damaged row(s) of conversation {cid} were left out: "
                      f"{restored.problems[0]}")
        target.reset()
        target.cid, target.head, target.based = cid, restored.head, True
        target.memory = (restored.conversation.memory, restored.conversation.memory_sent)
        self._ledger = restored.ledger
        target.mirror.prime(restored.placed, restored.conversation, restored.next_pos)
        target.settings = persist.settings_data(restored.settings) if restored.settings else None
        if self._memory is not None:
            self._memory.reset()
        return restored

    # ---- recall ----------------------------------------------------------------------------

    def _index(self, conversation: Conversation) -> tuple[LogStore, str]:
        """Return the store recall searches and this conversation's id in it, with every message of
        ``conversation`` in its current state written to it first."""
        target = self._log
        if target is not None:
            try:
                if target.cid is None:
                    target.cid = target.store.start_conversation(model=self.settings.model, endpoint="")
                whole = not target.mirror.written
                delta = target.mirror.delta(conversation, whole=whole)
                if not delta.empty or whole:
                    self._commit(target, Change(delta), conversation, self._ledger, whole=whole)
                assert target.cid is not None
                return target.store, target.cid
            except LogError as error:
                self._fail(str(error))
        if self._memory is None:
            self._memory = _Target(LogStore.memory())
        memory = self._memory
        if memory.cid is None:
            memory.cid = memory.store.start_conversation(model="", endpoint="")
        whole = not memory.mirror.written
        delta = memory.mirror.delta(conversation, whole=whole)
        if not delta.empty or whole:
            memory.head = memory.store.write(memory.cid, Change(delta), head=memory.head)
            memory.mirror.wrote(delta, whole=whole)
        return memory.store, memory.cid

    def _hits(self, conversation: Conversation, query: str, among: Collection[int],
              min_score: float | None = None, passed: Callable[[str], bool] | None = None) -> list[RecallHit]:
        if not among:
            return []
        store, cid = self._index(conversation)
        if min_score is None:
            return store.recall(cid, query, among=among, limit=RECALL_HITS, passed=passed)
        return store.recall(cid, query, among=among, limit=RECALL_HITS, min_score=min_score, passed=passed)

    def recall(self, text: str, conversation: Conversation, budget: int) -> tuple[Conversation, list[Event]]:
        """Return ``conversation`` with the evicted turns most relevant to ``text`` in its recalled
        slot, best first within the recall budget, and a ``Recalled`` event for each (the session's
        ``recaller``), and one ``Notice`` naming the matching turns that did not fit that budget (each
        turn said once). Does nothing unless ``recall = "auto"``; a failure of the index recalls nothing."""
        settings = self.settings
        if settings.recall != "auto":
            return conversation, []
        evicted = conversation.evicted
        try:
            if self._among[0] is not evicted:  # of the held entries, their rows only are read
                recallable = {row[0] for row in evicted.rows() if row[3] in AUTO_RECALLABLE}
                self._among = (evicted, recallable)
            among = self._among[1]
            terms = self._lacking(text, conversation)
            passed = no_reason(text, terms)
            hits = self._hits(conversation, " ".join(terms), among, passed=passed) if terms else []
            turns = _turns(conversation, hits)
        except LogError as error:
            self.warn(f"recall failed: {' '.join(str(error).split())}")
            return conversation, []
        room = whole = settings.recall_room(budget)
        chosen: list[tuple[int, list[Entry]]] = []
        skipped: list[tuple[int, list[Entry]]] = []
        seen: set[tuple[str, ...]] = set()
        for turn, entries in turns:
            said = tuple(e.content for e in entries)
            if said in seen:  # a copy of a turn already chosen adds nothing
                continue
            seen.add(said)
            size = sum(e.tokens for e in entries)
            if size <= room:
                room -= size
                chosen.append((turn, entries))
            elif turn not in self._said_skipped:  # said once per turn, not before every request
                self._said_skipped.add(turn)
                skipped.append((turn, entries))
        told: list[Event] = [_skipped(skipped, whole)] if skipped else []
        if not chosen:
            return conversation, told
        recalled, _ = conversation.recall((e.id for _, entries in chosen for e in entries), auto=True)
        events: list[Event] = []
        for turn, entries in sorted(chosen):
            words = set(_WORDS.findall(" ".join(_indexed_text(e) for e in entries).lower()))
            shown = tuple(term for term in terms if term in words)[:SHOWN_WORDS]
            events.append(Recalled(turn, tuple(e.id for e in entries), sum(e.tokens for e in entries), shown))
        return recalled, events + told

    def _lacking(self, text: str, conversation: Conversation) -> list[str]:
        """Return the content words of ``text`` that nothing the next request sends holds: what auto
        recall looks for. A word the request already carries has its context there; looking for it
        would bring back older turns that only say it again (a topic asked about twice, a phrase the
        user repeats), and those are what the window evicted, not what the message needs."""
        sent: set[str] = set()
        words = self._words
        kept: dict[tuple[int, str], frozenset[str]] = {}
        for entry in conversation.request_entries():
            key = (entry.id, entry.content)
            found = words.get(key)
            if found is None:
                found = frozenset(_WORDS.findall(_indexed_text(entry).lower()))
            kept[key] = found
            sent |= found
        self._words = kept  # only what is still sent: the cache never outgrows the window
        return [term for term in recall_terms(text) if term not in sent]

    def matches(self, query: str, conversation: Conversation) -> list[RecallMatch]:
        """Return the evicted turns of ``conversation`` that match ``query``, best first (``/recall``).

        Raises ``LogError`` when the index cannot be searched.
        """
        among = set(conversation.evicted.ids())
        hits = self._hits(conversation, query, among, min_score=0.0)
        found = []
        scores = {hit.turn: hit.score for hit in reversed(hits)}  # each turn's best score
        for turn, entries in _turns(conversation, hits):
            eviction = entries[0].eviction
            state = STATE_OF_EVICTION[eviction.how] if eviction is not None else "evicted"
            first = next((e for e in entries if e.content.strip()), entries[0])
            found.append(RecallMatch(turn, tuple(e.id for e in entries), sum(e.tokens for e in entries),
                                     state, scores[turn], " ".join(first.content.split())))
        return found


def _skipped(skipped: Sequence[tuple[int, list[Entry]]], room: int) -> Notice:
    """Return the line that says which matching turns auto recall left out because they did not fit."""
    shown = ", ".join(f"turn {turn} ({sum(e.tokens for e in entries):,} tokens, /recall {entries[0].id})"
                      for turn, entries in skipped[:3])
    more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return Notice(f"recall: {shown}{more} matched but did not fit the recall budget of {room:,} tokens "
                  "(recall_budget); /recall N brings one back")


def _indexed_text(entry: Entry) -> str:
    """Return what the index holds of ``entry``: its text, and its tool calls' names and arguments."""
    parts = [entry.content]
    parts += [f"{call.name} {call.arguments}" for call in entry.message.tool_calls]
    return "\n".join(parts)


def _turns(conversation: Conversation, hits: Sequence[RecallHit]) -> list[tuple[int, list[Entry]]]:
    """Return the evicted turns of ``hits``, best first, each with its evicted entries."""
    wanted = {hit.turn for hit in hits}
    by_turn: dict[int, list[Entry]] = {}
    for entry in conversation.evicted.of_turns(wanted) if wanted else ():  # only these are read
        if entry.turn in wanted:
            by_turn.setdefault(entry.turn, []).append(entry)
    order = list(dict.fromkeys(hit.turn for hit in hits if hit.turn in by_turn))
    return [(turn, by_turn[turn]) for turn in order]


def loadable(restored: Restored) -> tuple[Conversation, Ledger, dict[str, Any]]:
    """Return what ``Session.load`` takes to continue ``restored``: the value, its accounting and the
    settings that shaped it (as ``persist.loadable`` of a file)."""
    settings = {k: restored.settings[k] for k in persist.RESTORED_SETTINGS if k in restored.settings}
    return restored.conversation, restored.ledger, settings


def open_journal(path: Path | None, settings: Settings, *, warn: Callable[[str], None] = _warn_nowhere,
                 strict: bool = False) -> Journal:
    """Return a journal logging into the log at ``path`` (None: logging off) with the chat's
    ``settings``. A log that cannot be opened is one ``warn`` line, and logging is off (with
    ``strict``, for a chat that continues a logged conversation, it is a ``LogError``); a mode it
    tightened is one line each. The caller wires it: ``session.observers.append(journal)``,
    ``session.recaller = journal.recall``."""
    store = None
    if path is not None:
        try:
            store = LogStore.open(path)
        except LogError as error:
            if strict:
                raise
            warn(f"{' '.join(str(error).split())}; the chat goes on without logging")
        else:
            for note in store.notes:
                warn(note)
    return Journal(store, settings, path=path, warn=warn)


__all__ = ["Journal", "RecallMatch", "loadable", "open_journal"]
