"""One turn of the stateless loop: fit the history to the budget, resend it all, record the reply.

The session owns the ``Conversation`` value and the ``Ledger`` and replaces both only
when a reply is complete. Anything that goes wrong before that (an HTTP error, a cut
stream, Ctrl-C) leaves the previous values in place: nothing to undo, nothing
duplicated. Every edit of the conversation (/drop, /trim, /clear, /undo, /load ...)
is a method here, so commands only parse, call, and describe what happened.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stateless_chat.config import Settings
from stateless_chat.context import Fit, Policy, too_big_alone
from stateless_chat.errors import (
    BudgetError,
    ContextLengthError,
    ParameterRejected,
    StreamError,
    UsageError,
    raise_budget,
)
from stateless_chat.history import Conversation
from stateless_chat.ledger import Ledger, TurnStats
from stateless_chat.messages import (
    ContextRetry,
    Entry,
    Event,
    Evicted,
    Message,
    Notice,
    ReplyCut,
    Summarized,
    UsageMissing,
)
from stateless_chat.overflow import context_error_behind
from stateless_chat.policies import PolicyTools, make_policy
from stateless_chat.summary import Summarizer, fold, summary_cap, turns_within
from stateless_chat.tokens import REPLY_PRIMING, TokenCounter, byte_lower_bound, byte_upper_bound

if TYPE_CHECKING:
    from stateless_chat.backend import ChatBackend, Reply


@dataclass(frozen=True)
class Plan:
    """The next request, fitted to the budget: this turn's new entries, what fitting did, the body."""

    pending: tuple[Entry, ...]
    fit: Fit
    body: dict[str, Any]
    budget: int


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


@dataclass(frozen=True)
class State:
    """What a turn may change, taken together, so that a cancelled turn puts both back at once."""

    conversation: Conversation
    ledger: Ledger


class Session:
    """Holds the conversation and runs turns against a ``ChatBackend``."""

    def __init__(
        self,
        settings: Settings,
        backend: ChatBackend | None,
        counter: TokenCounter | None = None,
        *,
        on_event: Callable[[Event], None] = lambda event: None,
        exact: bool = True,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.counter = counter or TokenCounter(settings.model, settings.encoding, settings.default_encoding)
        self.on_event = on_event
        # When False, entries are sized by their UTF-8 byte length (an upper bound on tokens)
        # and the encoding is loaded only if that bound does not fit the budget.
        self.exact = exact
        self.conversation = Conversation.start(settings.system, self.measure)
        self.ledger = Ledger()
        self.summarizer = Summarizer(self)
        self.learned_budget: int | None = None
        self.ask_usage = True  # streamed requests ask for usage (stream_options) unless the server refuses
        # The reply's length limit is sent as max_tokens, or as max_completion_tokens once a server
        # refuses max_tokens for it (OpenAI's reasoning models).
        self.limit_key = "max_tokens"
        self.unanswered: Unanswered | None = None  # the last turn that failed, for /retry (the chat sets it)
        self.context_source = ""  # where the context window's figure came from, when the caller knows
        self._said: set[str] = set()  # notes said once per session (usage missing, usage ignored)

    # ---- state -------------------------------------------------------------------

    def snapshot(self) -> State:
        """Return the conversation and ledger as they are, to put back with ``rollback``."""
        return State(self.conversation, self.ledger)

    def rollback(self, state: State) -> None:
        """Put back a ``snapshot``: the conversation and its accounting move together."""
        self.conversation, self.ledger = state.conversation, state.ledger

    # ---- measuring -----------------------------------------------------------

    def measure(self, message: Message) -> int:
        """Return the billed size of ``message`` (an upper bound until counting is exact)."""
        if self.exact:
            return self.counter.count_message(message)
        return byte_upper_bound(message)

    def measure_text(self, text: str) -> int:
        """Return the billed size of ``text`` sent as a user message."""
        return self.measure(Message("user", text))

    def make_exact(self) -> None:
        """Switch to exact counts, measuring the held history once."""
        if not self.exact:
            self.exact = True
            self.conversation = self.conversation.recounted(self.measure)

    @property
    def budget(self) -> int:
        learned = self.learned_budget
        budget = self.settings.effective_budget
        return min(budget, learned) if learned else budget

    @property
    def reserve(self) -> int:
        return self.settings.effective_reply_reserve

    def too_big_alone(self, tokens: int, budget: int | None = None) -> bool:
        """Return whether a request of just ``tokens`` prompt tokens cannot fit the budget with the
        reply reserve (``context.too_big_alone``, with this session's numbers)."""
        return too_big_alone(tokens, self.reserve, budget or self.budget)

    def next_request_tokens(self, draft: str = "") -> int:
        """Return the prompt tokens the next request would carry with ``draft`` as its message."""
        size = self.conversation.tokens + REPLY_PRIMING
        if draft:
            size += self.measure(Message("user", draft))
        return size

    # ---- building the request ------------------------------------------------

    def body(self, messages: Sequence[Message]) -> dict[str, Any]:
        """Return the exact JSON body for ``messages``: what ``/raw`` shows and the server receives."""
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [m.to_api() for m in messages],
        }
        if self.settings.temperature is not None:
            body["temperature"] = self.settings.temperature
        # The reply may use what the budget holds back for it, and no more: a local model that
        # never stops would otherwise write until its context is full.
        body[self.limit_key] = self.reserve
        if self.settings.stream:
            body["stream"] = True
            if self.ask_usage:
                body["stream_options"] = {"include_usage": True}
        return body

    def policy(self, *, summarize: bool = True) -> Policy:
        """Return the configured eviction policy; it summarizes only with ``summarize`` and an endpoint."""
        writer = self.summarizer if summarize and self.backend is not None else None
        return make_policy(self.settings.policy, PolicyTools(self.measure, writer))

    def plan(self, text: str, *, budget: int | None = None, summarize: bool = True) -> Plan:
        """Return the fitted request for a new user message ``text``; no network unless summarizing.

        Raises ``BudgetError`` when what must be sent (system, pins, this message) cannot fit.
        """
        budget = budget or self.budget
        at_least = byte_lower_bound(text)
        if self.too_big_alone(at_least, budget):
            needed = at_least + self.reserve + REPLY_PRIMING
            raise BudgetError(
                f"this message is at least {at_least:,} tokens; the budget is {budget:,} with "
                f"{self.reserve:,} held for the reply: shorten it or {raise_budget(needed)}", needed=needed
            )
        pending = (self.conversation.new_entry("user", text, self.measure),)
        candidate = self.conversation.candidate(pending, budget=budget, reserve=self.reserve)
        if not self.exact and not candidate.fits:
            self.make_exact()
            pending = (self.conversation.new_entry("user", text, self.measure),)
            candidate = self.conversation.candidate(pending, budget=budget, reserve=self.reserve)
        fitted = self.policy(summarize=summarize).fit(candidate)
        return Plan(pending=pending, fit=fitted, body=self.body(fitted.request.messages()), budget=budget)

    # ---- one turn --------------------------------------------------------------

    def send(self, text: str, on_delta: Callable[[str], None] = lambda delta: None) -> Reply:
        """Run one turn for user message ``text`` and return the complete reply.

        The conversation is replaced only when the reply is complete; on any error or
        KeyboardInterrupt it is exactly what it was before.
        """
        if not text.strip():
            raise UsageError("empty message: type something to send")
        if self.backend is None:
            raise UsageError("no endpoint to send to")
        plan = self.plan(text)
        self._emit(plan.fit.events)
        try:
            reply = self._request(plan.body, on_delta)
        except ContextLengthError as error:
            plan = self._replan_smaller(text, plan, error)
            reply = self._request(plan.body, on_delta)
            self.learned_budget = plan.budget  # learned only from a turn that succeeds
        self._commit(plan, reply)
        return reply

    def _replan_smaller(self, text: str, plan: Plan, error: ContextLengthError) -> Plan:
        """Return a plan cut to what the server says fits, after one context-length refusal.

        The server's numbers give the ratio of its count to ours; the new budget is its limit
        (less the reply reserve) divided by that ratio, with a 5% margin; once the resent
        request is answered, ``send`` keeps it for the rest of the session (``learned_budget``).
        Re-raises ``error`` when nothing can be cut: policy ``none``, or system, pins and the
        new message alone exceed the new budget.
        """
        if self.settings.policy == "none":
            raise error
        prompt = plan.fit.total - self.reserve
        if error.limit and error.requested and error.requested > 0:
            ratio = error.requested / max(prompt, 1)
            budget = int((error.limit - self.reserve) / ratio * 0.95) + self.reserve
        else:
            budget = int(plan.fit.total * 0.75)
        budget = min(budget, plan.budget - 1)
        if budget <= self.reserve:
            raise error
        try:
            smaller = self.plan(text, budget=budget)
        except BudgetError:
            raise error from None
        self.on_event(ContextRetry(error.limit, error.requested, budget))
        told = {event.turn for event in plan.fit.events if isinstance(event, Evicted)}
        self._emit([e for e in smaller.fit.events if not (isinstance(e, Evicted) and e.turn in told)])
        return smaller

    def _request(self, body: dict[str, Any], on_delta: Callable[[str], None]) -> Reply:
        """Send ``body`` and stream its reply to ``on_delta``; a stream that ends before its first
        token is asked about once more without streaming (``overflow``), so that a context that is
        too small is reported as such."""
        shown = False

        def feed(delta: str) -> None:
            nonlocal shown
            shown = True
            on_delta(delta)

        try:
            return self._stream(body, feed)
        except StreamError as error:
            # Only a stream that ended cleanly with nothing in it: a broken connection is no question
            # for the server, and a reply already shown is not asked for again.
            if shown or not body.get("stream") or type(error) is not StreamError:
                raise
            assert self.backend is not None
            behind = context_error_behind(self.backend, body, self.limit_key)
            if behind is None:
                raise
            raise behind from error

    def _stream(self, body: dict[str, Any], on_delta: Callable[[str], None]) -> Reply:
        assert self.backend is not None
        try:
            reply = self.backend.send(body)
        except ParameterRejected as error:
            if error.param == "stream_options" and "stream_options" in body:
                # Servers that predate stream_options reject the whole request over it (400):
                # send it again without, and stop asking for usage in this session.
                self.ask_usage = False
                self.on_event(Notice("the server does not accept stream_options: usage will not be reported"))
                body = {key: value for key, value in body.items() if key != "stream_options"}
            elif error.param == "max_tokens" and "max_tokens" in body:
                # OpenAI's reasoning models take the same limit only as max_completion_tokens.
                self.limit_key = "max_completion_tokens"
                body = {("max_completion_tokens" if key == "max_tokens" else key): value
                        for key, value in body.items()}
            else:
                raise
            reply = self.backend.send(body)
        try:
            for delta in reply:
                on_delta(delta)
        finally:
            reply.close()
        return reply

    def _baseline(self, pending: Sequence[Entry]) -> int:
        """Return what the request would cost had nothing ever been evicted or summarized."""
        before = self.conversation
        held = sum(e.tokens for e in before.history) + sum(e.tokens for e in pending)
        system = before.system.tokens if before.system is not None else 0
        return held + system + sum(e.tokens for e in before.evicted) + REPLY_PRIMING

    def _say_once(self, key: str, event: Event) -> None:
        if key not in self._said:
            self._said.add(key)
            self.on_event(event)

    def _commit(self, plan: Plan, reply: Reply) -> None:
        fitted = plan.fit
        baseline = self._baseline(plan.pending)
        conversation = self.conversation.apply(fitted).append(*plan.pending)
        turn = plan.pending[0].turn
        # Tool calls are kept only when tools were offered: a call with no result after it would make
        # every later request invalid.
        calls = reply.tool_calls if "tools" in plan.body else ()
        answer = conversation.new_entry("assistant", reply.text or (None if calls else ""), self.measure,
                                        turn=turn, tool_calls=calls, finish_reason=reply.finish_reason)
        usage = reply.usage
        for note in reply.notes:
            self._say_once(note, Notice(note))
        if (usage is None or usage.prompt_tokens is None) and not reply.notes:
            self._say_once("usage missing", UsageMissing())
        if reply.tool_calls and not calls:
            names = ", ".join(call.name for call in reply.tool_calls)
            self.on_event(Notice(f"the reply asks for tool calls ({names}) but no tools are enabled: "
                                 "nothing was run, and only its text is kept"))
        if answer.cut:
            self.on_event(ReplyCut(self.reserve))
        estimated = fitted.total - self.reserve
        summary_prompt, summary_completion = self.summarizer.take_spent()
        stats = TurnStats(
            turn=plan.pending[0].turn,
            estimated_prompt_tokens=estimated,
            reported_prompt_tokens=usage.prompt_tokens if usage else None,
            reported_completion_tokens=usage.completion_tokens if usage else None,
            baseline_prompt_tokens=max(baseline, estimated),
            evictions=sum(1 for e in fitted.events if isinstance(e, (Evicted, Summarized))),
            events=fitted.events,
            summary_prompt_tokens=summary_prompt,
            summary_completion_tokens=summary_completion,
            finish_reason=reply.finish_reason,
        )
        self.conversation = conversation.append(answer)
        self.ledger = self.ledger.add(stats)

    def _emit(self, events: Sequence[Event]) -> None:
        for event in events:
            self.on_event(event)

    # ---- steering ----------------------------------------------------------------

    def reconfigure(self, **changes: Any) -> None:
        """Apply setting ``changes`` (e.g. ``model``, ``budget``, ``policy``, ``system``) to this session.

        The new settings are validated first (``ConfigError`` leaves everything unchanged).
        A new model or encoding gets a new token counter and the history is measured again;
        a new model or budget forgets the budget learned from a server refusal.
        """
        settings = self.settings.replace(**changes)
        counting = (settings.model, settings.encoding, settings.default_encoding)
        counter = self.counter
        if counting != (self.settings.model, self.settings.encoding, self.settings.default_encoding):
            counter = TokenCounter(*counting)
        changed_counter = counter is not self.counter
        self.settings, self.counter = settings, counter
        if changed_counter:
            self.conversation = self.conversation.recounted(self.measure)
        if "system" in changes:
            self.conversation = self.conversation.with_system(settings.system, self.measure)
        if {"model", "budget", "context_window"} & set(changes):
            self.learned_budget = None

    def summarize_now(self) -> Summarized:
        """Fold the live turns but the newest (and pinned ones) into the running summary now,
        oldest first, as many as one summary request within the budget can carry.

        Returns the ``Summarized`` event (also emitted). Makes one summary request; on any
        error the conversation is unchanged. Raises ``UsageError`` when there is no
        endpoint, nothing to fold, or the oldest turn alone is too long for the request.
        """
        if self.backend is None:
            raise UsageError("no endpoint to summarize with")
        conversation = self.conversation
        budget = self.budget
        candidate = conversation.candidate(budget=budget, reserve=self.reserve)
        newest = conversation.history[-1].turn if conversation.history else None
        turns = [turn for turn in candidate.evictable_turns() if turn != newest]
        if not turns:
            raise UsageError("nothing to summarize: only the newest turn and pinned turns are live")
        turns = turns_within(candidate, turns, self.summarizer.capacity(budget, conversation.summary))
        if not turns:
            raise UsageError(f"the oldest turn is too long to summarize within the budget of {budget:,} "
                             "tokens: /drop it or raise the budget")
        done = fold(candidate, turns, self.summarizer, self.measure, cap=summary_cap(budget))
        self.conversation = conversation.apply(Fit(done.request, folded=done.folded, events=(done.event,)))
        self.on_event(done.event)
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
        self.conversation, gone = self.conversation.without_last_turn()
        return gone

    def load(self, conversation: Conversation, ledger: Ledger, settings: Mapping[str, Any],
             *, keep: Collection[str] = ()) -> None:
        """Make a saved conversation this session's, with its saved ``settings`` except those named in
        ``keep`` (the ones the user set on this command line). Counts are measured again with the
        session's counter. Raises ``ConfigError`` (nothing changed) for settings invalid here."""
        self.reconfigure(**{k: v for k, v in settings.items() if k not in keep})  # validates first
        conversation = conversation.recounted(self.measure)
        if "system" in keep:
            conversation = conversation.with_system(self.settings.system, self.measure)
        self.conversation, self.ledger = conversation, ledger

    # ---- previews ----------------------------------------------------------------

    def preview_body(self, text: str | None = None) -> dict[str, Any]:
        """Return the body the next request would send (with ``text`` as its message), sending nothing.

        Fitting is done without the summary call, so a preview never touches the network.
        """
        if text:
            return self.plan(text, summarize=False).body
        return self.body(self.conversation.messages())


__all__ = ["Plan", "Session", "State", "Unanswered"]
