"""The conversation log, wired to a session: every completed turn written to SQLite, a logged
conversation continued, and evicted turns recalled by relevance.

The session knows nothing of it. ``attach`` puts a ``Journal`` in ``Session.on_turn`` (told
of each completed turn, it logs the turn) and makes it the session's ``recaller`` (before each
request, with ``recall = "auto"``, it brings back the evicted turns most relevant to the new
message). All SQL is in ``logstore``; this module decides what to log and what to recall.

Logging never stops the chat. When the log cannot be opened or written (a damaged file, a
full disk, a read-only location) one line says so and the chat goes on with logging off; a
failed write stores nothing of its turn and leaves what was logged before intact. Recall
then keeps working from an index held in memory, as it does when logging is turned off.
Only the standard library and the core are used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from stateless_chat.chat.session import Session, TurnRecord
from stateless_chat.core.history import STATE_OF_EVICTION, Conversation
from stateless_chat.core.messages import Entry, Event, Notice, Recalled, describe
from stateless_chat.errors import LogError, UsageError
from stateless_chat.store import persist
from stateless_chat.store.logstore import LogStore, RecallHit, TurnLog, recall_terms

# How many matching messages one recall asks the index for; they are grouped into turns.
RECALL_HITS = 24
# The words an event line quotes from what made a turn come back.
SHOWN_WORDS = 4
# Evictions auto recall may undo: what the policy evicted. What the user removed (/drop, /trim,
# /clear) comes back only when asked for by number.
AUTO_RECALLABLE = frozenset({"dropped", "folded"})
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


class _Mirror:
    """What one store holds of this conversation: each entry as last written there.

    Finding what changed is linear in the live messages only while the evicted ones stay the
    same tuple (a conversation value shares it until something is evicted), so a long chat's
    thousands of evicted messages cost nothing per request.
    """

    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}
        self.evicted: tuple[Entry, ...] | None = None  # the evicted slot as last written in full

    def changed(self, conversation: Conversation) -> list[Entry]:
        """Return the entries of ``conversation`` that differ from what the store holds."""
        head = [e for e in (conversation.system, conversation.summary) if e is not None]
        evicted = () if conversation.evicted is self.evicted else conversation.evicted
        changed = []
        for entry in chain(head, conversation.live, evicted):
            before = self.entries.get(entry.id)
            if before is not entry and before != entry:  # an entry that did not change is the same object
                changed.append(entry)
        return changed

    def wrote(self, changed: Iterable[Entry], conversation: Conversation) -> None:
        """Note that ``changed`` (from ``changed(conversation)``) is now in the store."""
        self.entries.update((e.id, e) for e in changed)
        self.evicted = conversation.evicted

    def clear(self) -> None:
        self.entries.clear()
        self.evicted = None


class Journal:
    """Logs one session's turns into a ``LogStore`` and recalls its evicted turns.

    ``store`` is the log on disk (None when logging is off or has failed); ``cid`` the id of
    this conversation in it, None until its first turn is logged. ``warn`` shows one line to
    the user. ``saved`` is the conversation as last saved to (or loaded from) a file, so
    ``/load`` can tell whether the one it replaces is kept anywhere else than the log.
    """

    def __init__(self, session: Session, store: LogStore | None, *, path: Path | None = None,
                 cid: str | None = None, warn: Callable[[str], None] = _warn_nowhere) -> None:
        self.session = session
        self.store = store
        self.path = path if path is not None else (store.path if store is not None else None)
        self.cid = cid
        self.warn = warn
        self.saved: Conversation | None = None
        self._logged = _Mirror()  # what the log on disk holds
        self._memory: LogStore | None = None  # the recall index when there is no log on disk
        self._memory_cid = ""
        self._indexed = _Mirror()  # what the index in memory holds
        self._among: tuple[tuple[Entry, ...] | None, set[int]] = (None, set())  # auto recall's candidates
        self._said_skipped: set[int] = set()  # turns said to match but not to fit the recall budget

    @property
    def logging(self) -> bool:
        return self.store is not None

    # ---- logging -------------------------------------------------------------------------

    def __call__(self, record: TurnRecord) -> None:
        """Log the completed turn ``record`` (the session calls this at the end of each turn)."""
        store = self.store
        if store is None:
            return
        try:
            self._log(store, record)
        except LogError as error:
            self._fail(str(error))
        except Exception as error:  # a bug here must not cost the chat its turn
            self._fail(f"the conversation log failed (a bug in stateless-chat): {type(error).__name__}: "
                       f"{error}")

    def _log(self, store: LogStore, record: TurnRecord) -> None:
        session = self.session
        reply = record.reply
        requests = [dict(body) for body in record.requests] or [{}]
        if self.cid is None:
            self.cid = store.start_conversation(model=session.settings.model, endpoint=reply.endpoint)
        conversation = session.conversation
        changed = self._logged.changed(conversation)
        usage = reply.usage
        counts = None
        if usage is not None:
            counts = {key: value for key, value in (("prompt_tokens", usage.prompt_tokens),
                                                    ("completion_tokens", usage.completion_tokens),
                                                    ("cached_tokens", usage.cached_tokens))
                      if value is not None}
        store.log_turn(self.cid, TurnLog(
            turn=record.turn,
            request=requests[-1],
            earlier=tuple(requests[:-1]),
            reply=reply.text,
            finish_reason=reply.finish_reason,
            usage=counts,
            events=tuple(describe(event) for event in record.events),
            messages=tuple(persist.entry_data(e) for e in changed),
            snapshot=persist.to_data(session),
            endpoint=reply.endpoint,
            model=str(requests[-1].get("model") or session.settings.model),
        ))
        self._logged.wrote(changed, conversation)

    def _fail(self, reason: str) -> None:
        """Turn logging off for the rest of the chat, saying so in one line."""
        store, self.store = self.store, None
        if store is not None:
            try:
                store.close()
            except Exception:  # noqa: BLE001 - closing a failed store must not fail too
                pass
        self.warn(f"{' '.join(reason.split())}; the chat goes on without logging")

    def forked(self) -> None:
        """Start a new conversation in the log at the next turn (``/load`` replaced this one)."""
        self.cid = None
        self._logged.clear()
        self._memory_cid = ""
        self._indexed.clear()
        self._said_skipped.clear()

    def close(self) -> None:
        for store in (self.store, self._memory):
            if store is not None:
                store.close()
        self.store = self._memory = None

    # ---- continuing ------------------------------------------------------------------------

    def resume(self, wanted: str | None, *, keep: Iterable[str] = ()) -> str:
        """Make the logged conversation ``wanted`` (an id or its start; None: the most recent one)
        the session's, as it was after its last turn, and log into it from now on; return its id.

        Settings named in ``keep`` (given on this command line) win over the logged ones.
        Raises ``LogError`` when there is no log, no such conversation, or it cannot be restored.
        """
        store = self.store
        if store is None:
            raise UsageError("-c/--continue and --cid read the conversation log, which is turned off "
                             "(--no-log or log = false)")
        cid = store.find(wanted) if wanted is not None else store.latest()
        if cid is None:
            raise LogError(f"nothing to continue: the conversation log {self.path} has no conversation yet")
        data = store.snapshot(cid)
        if data is None:
            raise LogError(f"conversation {cid} has no turn logged yet: nothing to continue")
        try:
            saved = persist.from_data(data)
        except (ValueError, TypeError) as error:
            raise LogError(f"conversation {cid} in the log cannot be restored: {error}") from None
        restored = persist.restore(self.session, saved, keep=set(keep),
                                   source=f"conversation {cid} of the log")
        for event in restored:
            self.session.hooks.on_event(event)  # standing notes read from an older log, once
        self.forked()
        self.cid = cid
        return cid

    # ---- recall ----------------------------------------------------------------------------

    def _index(self, conversation: Conversation) -> tuple[LogStore, str]:
        """Return the store recall searches and this conversation's id in it, with every message of
        ``conversation`` in its current state written to it first."""
        store = self.store
        if store is not None:
            try:
                if self.cid is None:
                    self.cid = store.start_conversation(model=self.session.settings.model,
                                                        endpoint=self.session.endpoint_name)
                changed = self._logged.changed(conversation)
                store.index(self.cid, [persist.entry_data(e) for e in changed])
                self._logged.wrote(changed, conversation)
                return store, self.cid
            except LogError as error:
                self._fail(str(error))
        if self._memory is None:
            self._memory = LogStore.memory()
        if not self._memory_cid:
            self._memory_cid = self._memory.start_conversation(model="", endpoint="")
        changed = self._indexed.changed(conversation)
        self._memory.index(self._memory_cid, [persist.entry_data(e) for e in changed])
        self._indexed.wrote(changed, conversation)
        return self._memory, self._memory_cid

    def _hits(self, conversation: Conversation, query: str, among: Collection[int],
              min_score: float | None = None) -> list[RecallHit]:
        if not among:
            return []
        store, cid = self._index(conversation)
        if min_score is None:
            return store.recall(cid, query, among=among, limit=RECALL_HITS)
        return store.recall(cid, query, among=among, limit=RECALL_HITS, min_score=min_score)

    def recall(self, text: str, conversation: Conversation, budget: int) -> tuple[Conversation, list[Event]]:
        """Return ``conversation`` with the evicted turns most relevant to ``text`` in its recalled
        slot, best first within the recall budget, and a ``Recalled`` event for each (the session's
        ``recaller``), and one ``Notice`` naming the matching turns that did not fit that budget (each
        turn said once). Does nothing unless ``recall = "auto"``; a failure of the index recalls nothing."""
        settings = self.session.settings
        if settings.recall != "auto":
            return conversation, []
        evicted = conversation.evicted
        if self._among[0] is not evicted:
            recallable = {e.id for e in evicted if e.eviction and e.eviction.how in AUTO_RECALLABLE}
            self._among = (evicted, recallable)
        among = self._among[1]
        try:
            hits = self._hits(conversation, text, among)
        except LogError as error:
            self.warn(f"recall failed: {' '.join(str(error).split())}")
            return conversation, []
        room = whole = settings.recall_room(budget)
        turns = _turns(conversation, hits)
        chosen: list[tuple[int, list[Entry]]] = []
        skipped: list[tuple[int, list[Entry]]] = []
        for turn, entries in turns:
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
        recalled, _ = conversation.recall(e.id for _, entries in chosen for e in entries)
        terms = recall_terms(text)
        events: list[Event] = []
        for turn, entries in sorted(chosen):
            words = set(_WORDS.findall(" ".join(_indexed_text(e) for e in entries).lower()))
            shown = tuple(term for term in terms if term in words)[:SHOWN_WORDS]
            events.append(Recalled(turn, tuple(e.id for e in entries), sum(e.tokens for e in entries), shown))
        return recalled, events + told

    def matches(self, query: str) -> list[RecallMatch]:
        """Return the evicted turns of this conversation that match ``query``, best first (``/recall``).

        Raises ``LogError`` when the index cannot be searched.
        """
        conversation = self.session.conversation
        among = {e.id for e in conversation.evicted}
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
    for entry in conversation.evicted:
        if entry.turn in wanted:
            by_turn.setdefault(entry.turn, []).append(entry)
    order = list(dict.fromkeys(hit.turn for hit in hits if hit.turn in by_turn))
    return [(turn, by_turn[turn]) for turn in order]


def of(session: Session) -> Journal | None:
    """Return the journal attached to ``session``, if any."""
    return next((o for o in session.on_turn if isinstance(o, Journal)), None)


def attach(session: Session, path: Path | None, *, warn: Callable[[str], None] = _warn_nowhere,
           strict: bool = False) -> Journal:
    """Attach a journal to ``session``: log its turns into the log at ``path`` (None: logging off)
    and recall from it. A log that cannot be opened is one ``warn`` line, and logging is off
    (with ``strict``, for a chat that continues a logged conversation, it is a ``LogError``)."""
    store = None
    if path is not None:
        try:
            store = LogStore.open(path)
        except LogError as error:
            if strict:
                raise
            warn(f"{' '.join(str(error).split())}; the chat goes on without logging")
    journal = Journal(session, store, path=path, warn=warn)
    session.on_turn = (*session.on_turn, journal)
    session.recall = journal.recall
    return journal


__all__ = ["Journal", "RecallMatch", "attach", "of"]
