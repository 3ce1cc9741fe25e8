"""The session: the state a chat keeps between turns, its settings, and every edit of it.

A turn is ``chat.turn.run_turn``, a function over values; the session hands it its state and
keeps the state that comes back only when the reply is complete. Anything that goes wrong
before that (an HTTP error, a cut stream, Ctrl-C) leaves the previous values in place: nothing
to undo, nothing duplicated, and the message kept for ``/retry``. Every edit of the conversation
(/drop, /trim, /clear, /undo, /load ...) is a method here, so commands only parse, call, and
describe what happened. Where a turn's output goes is given per call (``Hooks``); what is told
of each completed turn (the log) is given at construction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from stateless_chat.chat.summarizer import Summaries, Summarizer
from stateless_chat.chat.turn import (
    FailedTurn,
    Hooks,
    Plan,
    Recaller,
    Toolbox,
    TurnRecord,
    TurnSetup,
    TurnState,
    chat_request,
    plan_message,
    policy_for,
    run_turn,
    summarizer_for,
    tools_key,
)
from stateless_chat.core.billing import Bill, TurnTokens, bill, price_for
from stateless_chat.core.cache import Prediction, predict
from stateless_chat.core.context import Fit, Policy, too_big_alone
from stateless_chat.core.history import Conversation
from stateless_chat.core.ledger import Ledger
from stateless_chat.core.messages import Entry, Event, Message, Summarized
from stateless_chat.core.sizing import Counting, Sizer
from stateless_chat.core.summary import fold, summary_cap, turns_within
from stateless_chat.core.tokens import TokenCounter
from stateless_chat.errors import UsageError
from stateless_chat.wire.request import ChatRequest, Dialect

if TYPE_CHECKING:
    from stateless_chat.config import Settings
    from stateless_chat.wire.backend import ChatBackend, Reply


@dataclass(frozen=True)
class Unanswered:
    """A message whose turn failed or was cancelled, kept for ``/retry`` to send again.

    ``base`` and ``pin`` are what it was sent with when it replaced the last exchange (``/retry``,
    ``/edit``); ``after`` is the conversation as the failed turn left it (unchanged), so that a
    replacement is sent again only while that still holds.
    """

    text: str
    base: Conversation | None
    pin: bool
    after: Conversation


class Session:
    """Holds the conversation between turns and runs turns against a ``ChatBackend``.

    ``tools`` are offered to the model, ``recall`` brings evicted turns back before a turn,
    ``retrieve`` fills the retrieved slot with documents for its message, ``on_turn`` is told of
    every completed turn (the conversation log), ``hooks`` is where a call that gives no hooks of its
    own sends its events. When ``exact`` is False, entries are sized by
    their UTF-8 byte length (an upper bound on tokens) until that bound does not fit the budget.
    """

    def __init__(
        self,
        settings: Settings,
        backend: ChatBackend | None,
        counter: Counting | None = None,
        *,
        tools: Toolbox | None = None,
        recall: Recaller | None = None,
        retrieve: Recaller | None = None,
        on_turn: Iterable[Callable[[TurnRecord], None]] = (),
        on_failed: Iterable[Callable[[FailedTurn], None]] = (),
        hooks: Hooks | None = None,
        exact: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.tools = tools
        self.recall = recall
        self.retrieve = retrieve
        self.on_turn = tuple(on_turn)
        self.on_failed = tuple(on_failed)  # told of a turn that failed after its tools ran (the log)
        self.hooks = hooks or Hooks()
        self.clock = clock
        counter = counter or TokenCounter(settings.model, settings.encoding, settings.default_encoding)
        sizer = Sizer(counter, exact)
        self.state = TurnState(Conversation.start(settings.system, sizer), Ledger(), sizer)
        self.summaries = Summaries()  # summaries written, and not yet billed to a turn
        self._tools_cost: tuple[Any, int] = (None, 0)  # the last tools array counted, and its size
        self.unanswered: Unanswered | None = None  # the last turn that failed, for /retry
        self.context_source = ""  # where the context window's figure came from, when the caller knows
        self.learned_source = ""  # where the learned budget came from, when an earlier run learned it

    # ---- state -------------------------------------------------------------------

    @property
    def conversation(self) -> Conversation:
        return self.state.conversation

    @conversation.setter
    def conversation(self, conversation: Conversation) -> None:
        """Replace the conversation (an edit: the ledger and the rest of the state stay)."""
        self.state = replace(self.state, conversation=conversation)

    @property
    def ledger(self) -> Ledger:
        return self.state.ledger

    def snapshot(self) -> TurnState:
        """Return the state as it is, to put back with ``rollback``."""
        return self.state

    def rollback(self, state: TurnState) -> None:
        """Put back a ``snapshot``: the conversation and its accounting move together."""
        self.state = state

    # ---- measuring -----------------------------------------------------------

    @property
    def counter(self) -> Counting:
        return self.state.sizer.counter

    def count_with(self, counter: Counting) -> None:
        """Count with ``counter`` from now on (the meter a chat is given), the held history measured
        again with it."""
        sizer = replace(self.state.sizer, counter=counter)
        self.state = replace(self.state, sizer=sizer, conversation=self.conversation.recounted(sizer))

    def framing(self) -> int:
        """Return what the next request adds beyond its messages (the reply priming, or the chat
        template's own tokens)."""
        return self.state.sizer.framing(self.conversation.system_leads)

    @property
    def exact(self) -> bool:
        return self.state.sizer.exact

    def measure(self, message: Message) -> int:
        """Return the billed size of ``message`` (an upper bound until counting is exact)."""
        return self.state.sizer(message)

    def measure_text(self, text: str) -> int:
        """Return the billed size of ``text`` sent as a user message."""
        return self.state.sizer.text(text)

    def make_exact(self) -> None:
        """Switch to exact counts, measuring the held history once."""
        self.state = self.state.made_exact()

    @property
    def learned_budget(self) -> int | None:
        return self.state.learned_budget

    @property
    def budget(self) -> int:
        return self.state.budget(self.settings)

    @property
    def context_limit(self) -> int:
        """Return the most tokens one request may hold (``TurnState.context_limit``)."""
        return self.state.context_limit(self.settings)

    @property
    def reserve(self) -> int:
        return self.settings.effective_reply_reserve

    @property
    def memory_room(self) -> int:
        """Return the most tokens the standing memory may take: ``memory_budget`` or a tenth of the budget."""
        return self.settings.memory_room(self.budget)

    def low_water(self, budget: int) -> int:
        """Return where eviction stops once it must start: ``evict_to`` of ``budget``."""
        return int(self.settings.evict_to * budget)

    def too_big_alone(self, tokens: int, budget: int | None = None) -> bool:
        """Return whether a request of just ``tokens`` prompt tokens cannot fit the budget with the
        reply reserve (``context.too_big_alone``, with this session's numbers)."""
        return too_big_alone(tokens, self.reserve, budget or self.budget)

    def next_request_tokens(self, draft: str = "") -> int:
        """Return the prompt tokens the next request would carry with ``draft`` as its message (and the
        tools array: the toolbar's figure is the request's)."""
        size = self.conversation.tokens + self.framing() + self.tools_tokens(self.tools_offered())
        if draft:
            size += self.measure(Message("user", draft))
        return size

    # ---- the next request ------------------------------------------------------

    def setup(self) -> TurnSetup:
        """Return what a turn of this session runs with."""
        return TurnSetup(self.settings, self.backend, tools=self.tools, recall=self.recall, clock=self.clock,
                         summaries=self.summaries, retrieve=self.retrieve)

    def tools_offered(self) -> list[dict[str, Any]]:
        """Return the request's ``tools`` array: the enabled tools ([] without tools)."""
        return list(self.setup().tools_offered())

    def tools_tokens(self, tools: Sequence[Mapping[str, Any]]) -> int:
        """Return what ``tools`` add to a request (a byte bound until counting is exact), counted again
        only when the tools (or the counting) change: the toolbar asks on every key."""
        if not tools:
            return 0
        key = (json.dumps(list(tools), ensure_ascii=False), self.state.sizer)
        if self._tools_cost[0] != key:
            self._tools_cost = (key, self.state.sizer.tools(tools))
        return self._tools_cost[1]

    def body_of(self, request: ChatRequest) -> dict[str, Any]:
        """Return the exact JSON body of ``request`` as the endpoint would be sent it now (the default
        dialect without an endpoint): what ``/raw`` shows and the server receives."""
        return self.backend.body(request) if self.backend is not None else Dialect().body(request)

    def body(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """Return the exact JSON body of a turn's request for ``messages``."""
        return self.body_of(chat_request(self.settings, messages, tools))

    def policy(self, *, summarize: bool = True) -> Policy:
        """Return the configured eviction policy; it summarizes only with ``summarize`` and an endpoint."""
        return policy_for(self.state, self.setup(), self._summarizer() if summarize else None)

    def _summarizer(self) -> Summarizer | None:
        return summarizer_for(self.state, self.setup(), self.hooks.on_event)

    def plan(self, text: str, *, budget: int | None = None, summarize: bool = True) -> Plan:
        """Return the fitted request for a new user message ``text``; no network unless summarizing.

        Raises ``BudgetError`` when what must be sent (system, pins, this message) cannot fit.
        """
        plan, self.state = plan_message(self.state, self.setup(), text, budget=budget,
                                        summarizer=self._summarizer() if summarize else None)
        return plan

    def preview_body(self, text: str | None = None) -> dict[str, Any]:
        """Return the body the next request would send (with ``text`` as its message), sending nothing.

        Fitting is done without the summary call, so a preview never touches the network.
        """
        if text:
            return self.body_of(self.plan(text, summarize=False).request)
        return self.body(self.conversation.messages())

    # ---- the server's cache --------------------------------------------------------

    @property
    def endpoint_name(self) -> str:
        """Return the endpoint the next request goes to first (``host:port``)."""
        return self.backend.name if self.backend is not None else ""

    def predict(self, entries: Sequence[Entry], tools: Sequence[Mapping[str, Any]] = (),
                fit: Fit | None = None, base: Conversation | None = None) -> Prediction:
        """Return how much of a request sending ``entries`` repeats the last request, and why not all
        (``fit``: the eviction about to happen, which explains what is missing from ``base``)."""
        conversation = base or self.conversation
        return predict(self.state.last_sent, entries, tools=tools_key(tools), endpoint=self.endpoint_name,
                       model=self.settings.model, now=self.clock(), lifetime=self.settings.cache_lifetime,
                       why_gone=lambda entry_id: conversation.why_gone(entry_id, fit))

    def cache_prediction(self) -> Prediction:
        """Return the predicted cache share of the next request (without its new message)."""
        return self.predict(self.conversation.request_entries(), self.tools_offered())

    def bill(self) -> Bill:
        """Return what this session's turns cost at the model's price (None without one), and what a
        naive full resend with the server's cache would have cost."""
        turns = [TurnTokens(t.sent, t.cached, t.completion, t.baseline_sent) for t in self.ledger.turns]
        return bill(turns, price_for(self.settings.model, self.settings.prices))

    # ---- one turn --------------------------------------------------------------

    def send(self, text: str, on_delta: Callable[[str], None] | None = None, *, hooks: Hooks | None = None,
             base: Conversation | None = None, pin: bool = False) -> Reply:
        """Run one turn for user message ``text`` (``chat.turn.run_turn``) and return the final reply.

        With ``base`` (``/retry``, ``/edit``) the message is sent from that conversation, and with
        ``pin`` it is pinned once answered (it replaces a pinned turn). The new state is kept only
        when the reply is complete; on any error or KeyboardInterrupt, at any step, the conversation
        is exactly what it was before, and the message is kept in ``unanswered`` for ``/retry``.
        Each completed turn's record goes to ``on_turn``.
        """
        hooks = hooks or self.hooks
        if on_delta is not None:
            hooks = replace(hooks, on_delta=on_delta)
        if self.on_failed:
            hooks = replace(hooks, on_failed=self._failed)
        if not text.strip():
            raise UsageError("empty message: type something to send")
        start = self.state if base is None else replace(self.state, conversation=base)
        try:
            outcome = run_turn(start, text, setup=self.setup(), hooks=hooks)
        except BaseException:
            self.unanswered = Unanswered(text, base, pin, self.state.conversation)
            raise
        state, record = outcome.state, outcome.record
        if pin:
            state = replace(state, conversation=state.conversation.pin_last_question())
            record = replace(record, conversation=state.conversation)
        self.state = state
        self.unanswered = None
        for told in self.on_turn:
            told(record)
        return outcome.reply

    def _failed(self, record: FailedTurn) -> None:
        for told in self.on_failed:
            told(record)

    def learn_budget(self, budget: int, source: str) -> None:
        """Start within ``budget``, learned by an earlier run (``source`` says where): what a refusal would
        teach this chat, known before its first request."""
        self.state = replace(self.state, learned_budget=budget)
        self.learned_source = source

    def cancel(self, text: str, before: TurnState, *, base: Conversation | None = None,
               pin: bool = False) -> None:
        """Cancel the turn of ``text`` sent from state ``before`` (a ``snapshot``), even one that already
        completed: the state is ``before`` again and the message is kept for ``/retry``."""
        self.state = before
        self.unanswered = Unanswered(text, base, pin, before.conversation)

    # ---- steering ----------------------------------------------------------------

    def reconfigure(self, **changes: Any) -> None:
        """Apply setting ``changes`` (e.g. ``model``, ``budget``, ``policy``, ``system``) to this session.

        The new settings are validated first (``ConfigError`` leaves everything unchanged).
        A new model or encoding gets a new token counter and the history is measured again;
        a new model or budget forgets the budget learned from a server refusal.
        """
        settings = self.settings.replace(**changes)
        counting = (settings.model, settings.encoding, settings.default_encoding)
        state = self.state
        if counting != (self.settings.model, self.settings.encoding, self.settings.default_encoding):
            sizer = replace(state.sizer, counter=state.sizer.counter.for_model(*counting))
            state = replace(state, sizer=sizer, conversation=state.conversation.recounted(sizer))
        if "system" in changes:
            state = replace(state, conversation=state.conversation.with_system(settings.system, state.sizer))
        if "memory" in changes:
            turned = state.conversation.memory_turned(settings.memory != "off", state.sizer)
            state = replace(state, conversation=turned)
        if {"model", "budget", "context_window"} & set(changes):
            state = replace(state, learned_budget=None, refused_budget=None)
            self.learned_source = ""
        self.settings, self.state = settings, state

    def summarize_now(self, hooks: Hooks | None = None) -> Summarized:
        """Fold the live turns but the newest (and pinned ones) into the running summary now,
        oldest first, as many as one summary request within the budget can carry.

        Returns the ``Summarized`` event (the caller shows it; the request's own events, a retry say,
        go to ``hooks.on_event``). Makes one summary request; on any
        error the conversation is unchanged. Raises ``UsageError`` when there is no
        endpoint, nothing to fold, or the oldest turn alone is too long for the request.
        """
        hooks = hooks or self.hooks
        summarizer = summarizer_for(self.state, self.setup(), hooks.on_event)
        if summarizer is None:
            raise UsageError("no endpoint to summarize with")
        conversation = self.conversation
        budget = self.budget
        candidate = conversation.candidate(budget=budget, reserve=self.reserve, framing=self.framing())
        newest = conversation.history[-1].turn if conversation.history else None
        turns = [turn for turn in candidate.evictable_turns() if turn != newest]
        if not turns:
            raise UsageError("nothing to summarize: only the newest turn and pinned turns are live")
        turns = turns_within(candidate, turns, summarizer.capacity(candidate))
        if not turns:
            raise UsageError(f"the oldest turn is too long to summarize within the budget of {budget:,} "
                             "tokens: /drop it or raise the budget")
        done = fold(candidate, turns, summarizer, self.measure, cap=summary_cap(budget))
        self.conversation = conversation.apply(Fit(done.request, folded=done.folded, events=(done.event,)))
        return done.event

    # ---- editing -----------------------------------------------------------------

    def pin(self, entry_id: int, pinned: bool = True) -> None:
        """Pin (or unpin) message ``entry_id``; CommandError for one that cannot be."""
        self.conversation = self.conversation.set_pinned(entry_id, pinned)

    def drop(self, ids: Collection[int]) -> list[Entry]:
        """Remove the whole turns of messages ``ids`` (or the summary) and return what went."""
        self.conversation, gone = self.conversation.drop(ids)
        return gone

    def trim(self, keep: int) -> list[Entry]:
        """Keep only the newest ``keep`` turns (and pinned ones); return the entries removed."""
        self.conversation, gone = self.conversation.trim(keep)
        return gone

    def clear(self) -> list[Entry]:
        """Remove every unpinned turn and the summary; return the entries removed."""
        self.conversation, gone = self.conversation.clear()
        return gone

    def undo(self) -> tuple[Entry, ...]:
        """Forget the newest turn; return its entries."""
        self.conversation, gone = self.conversation.without_last_turn(self.state.sizer)
        return gone

    def recall_turn(self, entry_id: int) -> tuple[Entry, ...]:
        """Bring the evicted turn of message ``entry_id`` back (``/recall N``): it is sent right before
        the next message; return its entries. CommandError for a message that is not evicted."""
        self.conversation, back = self.conversation.recall([entry_id])
        return back

    def add_entry(self, entry: Entry) -> None:
        """Append ``entry`` (a file or resource attached as a message) to the conversation."""
        self.conversation = self.conversation.append(entry)

    def load(self, conversation: Conversation, ledger: Ledger, settings: Mapping[str, Any],
             *, keep: Collection[str] = ()) -> list[Event]:
        """Make a saved conversation this session's, with its saved ``settings`` except those named in
        ``keep`` (the ones the user set on this command line). Counts are measured again with the
        session's counter. Return the standing notes found in a conversation from before standing
        memory (its user messages are read once), as events for the caller to show. Raises
        ``ConfigError`` (nothing changed) for settings invalid here."""
        self.reconfigure(**{k: v for k, v in settings.items() if k not in keep})  # validates first
        conversation = conversation.recounted(self.state.sizer).with_slots_of(self.conversation)
        if "system" in keep:
            conversation = conversation.with_system(self.settings.system, self.state.sizer)
        conversation = conversation.memory_turned(self.settings.memory != "off", self.state.sizer)
        # A conversation from before standing memory: its user messages are read for it once.
        conversation, noted = conversation.remember_all(self.state.sizer, room=self.memory_room,
                                                        mode=self.settings.memory)
        self.state = replace(self.state, conversation=conversation, ledger=ledger)
        return noted


__all__ = ["Hooks", "Plan", "Recaller", "Session", "TurnRecord", "Unanswered"]
