"""One turn of the stateless loop: fit the history to the budget, resend it all, record the reply.

The session owns the ``Conversation`` value and the ``Ledger`` and replaces both only
when a reply is complete. Anything that goes wrong before that (an HTTP error, a cut
stream, Ctrl-C) leaves the previous values in place: nothing to undo, nothing
duplicated. Every edit of the conversation (/drop, /trim, /clear, /undo, /load ...)
is a method here, so commands only parse, call, and describe what happened.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from stateless_chat.billing import Bill, TurnTokens, bill, price_for
from stateless_chat.cache import Prediction, Sent, predict, sent_from
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
    CacheBreak,
    ContextRetry,
    Entry,
    Event,
    Evicted,
    Message,
    Notice,
    ReplyCut,
    Summarized,
    ToolAnswered,
    ToolCall,
    ToolCalled,
    ToolStepsExhausted,
    UsageMissing,
)
from stateless_chat.overflow import context_error_behind
from stateless_chat.policies import PolicyTools, make_policy
from stateless_chat.summary import Summarizer, fold, summary_cap, turns_within
from stateless_chat.tokens import REPLY_PRIMING, TokenCounter, byte_lower_bound, byte_upper_bound

if TYPE_CHECKING:
    from stateless_chat.backend import ChatBackend, Reply
    from stateless_chat.tools import ToolResult, ToolSpec


class Toolbox(Protocol):
    """The tools a session offers the model (``tools.ToolServers`` is one)."""

    def api_tools(self) -> list[dict[str, Any]]: ...

    def lookup(self, offered: str) -> ToolSpec | None: ...

    def call(self, offered: str, arguments: str, *, timeout: float = ...) -> ToolResult: ...


@dataclass(frozen=True)
class Plan:
    """The next request, fitted to the budget: this turn's new entries, what fitting did, the body,
    and how much of it repeats the previous request (the server's cached prefix, predicted)."""

    pending: tuple[Entry, ...]
    fit: Fit
    body: dict[str, Any]
    budget: int
    cache: Prediction
    endpoint: str  # where the request was to go first (the prediction assumed it)
    base: Conversation | None = None  # the conversation it sends, with any recalled turns in their slot


@dataclass
class _Turn:
    """A turn while it runs: the conversation with its evictions so far, its new messages, and what
    its earlier requests (tool steps) cost; nothing of it is kept unless the turn completes."""

    base: Conversation
    pending: list[Entry]
    requests: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    prompt: int = 0  # the earlier steps' prompt tokens (the server's count, else ours)
    cached: int = 0
    completion: int = 0
    estimated: int = 0  # the earlier steps' prompt tokens by our count
    cache_break: str | None = None

    @property
    def number(self) -> int:
        return self.pending[0].turn

    def add_step(self, plan: Plan, reply: Reply, reserve: int) -> None:
        """Count an answered tool-step request into the turn."""
        usage = reply.usage
        estimated = plan.fit.total - reserve
        self.estimated += estimated
        self.prompt += usage.prompt_tokens if usage and usage.prompt_tokens is not None else estimated
        self.cached += (usage.cached_tokens if usage else None) or 0
        self.completion += (usage.completion_tokens if usage else None) or 0
        self.events += plan.fit.events
        self.cache_break = self.cache_break or plan.cache.cause


@dataclass(frozen=True)
class TurnRecord:
    """One completed turn, as ``Session.observers`` are told of it (the conversation log).

    ``requests`` are the exact bodies of the chat requests the turn sent and got a reply to,
    in order (its tool steps, then the final one, which ``reply`` answers); ``events`` are the
    events it emitted.
    """

    turn: int
    requests: tuple[Mapping[str, Any], ...]
    reply: Reply
    stats: TurnStats
    events: tuple[Event, ...]
    retrieved: tuple[Entry, ...] = ()  # the documents its requests carried (the retrieved slot)


# Before a turn's first request: given the new message, the conversation and the budget, return the
# conversation with evicted turns brought back into its recalled slot, and a ``Recalled`` event each.
Recaller = Callable[[str, Conversation, int], tuple[Conversation, Sequence[Event]]]


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.counter = counter or TokenCounter(settings.model, settings.encoding, settings.default_encoding)
        self._told: list[Event] = []  # the events this turn emitted, for its TurnRecord
        self.on_event = on_event
        self.observers: list[Callable[[TurnRecord], None]] = []  # told of every completed turn (the log)
        self.recaller: Recaller | None = None  # brings evicted turns back before a turn (auto recall)
        self.retriever: Recaller | None = None  # fills the retrieved slot before a turn (documents)
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
        self.clock = clock
        self.last_sent: Sent | None = None  # what the last chat request sent, for the cache prediction
        self.refused_budget: int | None = None  # the budget a context-length refusal implied
        self.toolbox: Toolbox | None = None  # the tools offered to the model (MCP servers)
        # Asked before each tool call that is not approved already ("always"); the REPL asks the user.
        self.approve: Callable[[ToolCall, ToolSpec], bool] = lambda call, spec: False

    @property
    def on_event(self) -> Callable[[Event], None]:
        """Where the session's events go (set it to the UI's handler); the turn's record keeps them too."""
        return self._tell

    @on_event.setter
    def on_event(self, listener: Callable[[Event], None]) -> None:
        self._listener = listener

    def _tell(self, event: Event) -> None:
        self._told.append(event)
        self._listener(event)

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
    def context_limit(self) -> int:
        """Return the most tokens one request may hold: the context window, or less once the server
        said so (a context-length refusal)."""
        window = self.settings.effective_context_window
        known = [b for b in (self.learned_budget, self.refused_budget) if b]
        return min([window, *known])

    @property
    def reserve(self) -> int:
        return self.settings.effective_reply_reserve

    def low_water(self, budget: int) -> int:
        """Return where eviction stops once it must start: ``evict_to`` of ``budget``."""
        return int(self.settings.evict_to * budget)

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

    def tools_offered(self) -> list[dict[str, Any]]:
        """Return the request's ``tools`` array: the enabled tools, identical from step to step
        ([] without tools)."""
        return self.toolbox.api_tools() if self.toolbox is not None else []

    def tools_tokens(self, tools: Sequence[Mapping[str, Any]]) -> int:
        """Return what ``tools`` add to a request (a byte bound until counting is exact)."""
        if not tools:
            return 0
        if self.exact:
            return self.counter.count_tools(tools)
        return len(json.dumps(list(tools), ensure_ascii=False).encode()) + 12

    def body(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """Return the exact JSON body for ``messages``: what ``/raw`` shows and the server receives."""
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [m.to_api() for m in messages],
        }
        if tools:
            body["tools"] = list(tools)
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
        def fitted() -> Plan:
            question = self.conversation.new_entry("user", text, self.measure)
            base, recalled = self._recall(text, budget)
            if not self.exact:  # sized by byte bounds: unless they fit as they are, count exactly first
                tools = self.tools_tokens(self.tools_offered())
                if not base.candidate((question,), budget=budget, reserve=self.reserve, tools=tools).fits:
                    self.make_exact()
                    return fitted()
            plan = self.plan_pending(base, (question,), budget=budget, summarize=summarize)
            if recalled:
                plan = replace(plan, fit=replace(plan.fit, events=(*recalled, *plan.fit.events)))
            return plan

        return fitted()

    def plan_pending(self, base: Conversation, pending: tuple[Entry, ...], *, budget: int,
                     summarize: bool = True) -> Plan:
        """Return the fitted request that sends ``base`` with this turn's ``pending`` messages last."""
        tools = self.tools_offered()
        candidate = base.candidate(pending, budget=budget, reserve=self.reserve,
                                   tools=self.tools_tokens(tools), low_water=self.low_water(budget))
        fitted = self.policy(summarize=summarize).fit(candidate)
        body = self.body(fitted.request.messages(), tools)
        return Plan(pending=pending, fit=fitted, body=body, budget=budget,
                    cache=self.predict(fitted.kept, body, fitted, base), endpoint=self.endpoint_name,
                    base=base)

    def _recall(self, text: str, budget: int) -> tuple[Conversation, Sequence[Event]]:
        """Return the conversation for the next request: with the evicted turns ``recaller`` brings
        back for ``text`` in its recalled slot and the documents ``retriever`` finds in its retrieved
        slot (``self.conversation`` itself is not changed)."""
        conversation: Conversation = self.conversation
        events: Sequence[Event] = ()
        if self.recaller is not None:
            conversation, events = self.recaller(text, conversation, budget)
        if self.retriever is not None:
            conversation, found = self.retriever(text, conversation, budget)
            events = (*events, *found)
        return conversation, events

    # ---- the server's cache --------------------------------------------------------

    @property
    def endpoint_name(self) -> str:
        """Return the endpoint the next request goes to first (``host:port``)."""
        return self.backend.name if self.backend is not None else ""

    def predict(self, entries: Sequence[Entry], body: Mapping[str, Any] | None = None,
                fit: Fit | None = None, base: Conversation | None = None) -> Prediction:
        """Return how much of a request sending ``entries`` repeats the last request, and why not all
        (``fit``: the eviction about to happen, which explains what is missing from ``base``)."""
        conversation = base or self.conversation
        return predict(self.last_sent, entries, tools=_tools_key(body), endpoint=self.endpoint_name,
                       model=self.settings.model, now=self.clock(), lifetime=self.settings.cache_lifetime,
                       why_gone=lambda entry_id: conversation.why_gone(entry_id, fit))

    def bill(self) -> Bill:
        """Return what this session's turns cost at the model's price (None without one), and what a
        naive full resend with the server's cache would have cost."""
        turns = [TurnTokens(t.sent, t.cached, t.completion, t.baseline_sent) for t in self.ledger.turns]
        return bill(turns, price_for(self.settings.model, self.settings.prices))

    def cache_prediction(self) -> Prediction:
        """Return the predicted cache share of the next request (without its new message)."""
        tools = self.toolbox.api_tools() if self.toolbox is not None else []
        return self.predict(self.conversation.request_entries(), {"tools": tools} if tools else None)

    # ---- one turn --------------------------------------------------------------

    def send(self, text: str, on_delta: Callable[[str], None] = lambda delta: None) -> Reply:
        """Run one turn for user message ``text`` and return the final reply.

        When tools are offered and the reply asks for tool calls, each call is shown, run if
        approved (``approve``), and its result joins the turn; then the next request goes, the
        turn's calls and results pending in it, never evicted: each step is one more stateless,
        budgeted request, up to ``max_tool_steps``. The conversation is replaced only when the
        final reply is complete; on any error or KeyboardInterrupt, at any step, it is exactly
        what it was before the turn.
        """
        if not text.strip():
            raise UsageError("empty message: type something to send")
        if self.backend is None:
            raise UsageError("no endpoint to send to")
        if self.toolbox is not None:
            self.make_exact()  # tool schemas are counted with the encoding
        self._told = []
        plan = self.plan(text)
        turn = _Turn(plan.base or self.conversation, list(plan.pending))
        self._emit(plan.fit.events)
        self._say_break(plan.cache)
        steps = 0
        while True:
            try:
                reply = self._request(plan.body, on_delta)
            except ContextLengthError as error:
                plan = self._replan_smaller(turn, plan, error)
                reply = self._request(plan.body, on_delta)
                self.learned_budget = plan.budget  # learned only from a request that is answered
            turn.base = turn.base.apply(plan.fit)
            turn.requests.append(plan.body)
            self.last_sent = sent_from(plan.fit.kept, tools=_tools_key(plan.body), endpoint=reply.name,
                                       model=self.settings.model, at=self.clock())
            calls = reply.tool_calls if "tools" in plan.body else ()
            if not calls or steps == self.settings.max_tool_steps:
                break
            steps += 1
            turn.add_step(plan, reply, self.reserve)
            turn.pending += [self._step_entry(turn, reply, calls), *self._run_calls(turn, calls)]
            plan = self.plan_pending(turn.base, tuple(turn.pending), budget=plan.budget)
            self._emit(plan.fit.events)
            self._say_break(plan.cache)
        if calls and steps == self.settings.max_tool_steps:
            self.on_event(ToolStepsExhausted(steps))
        self._commit(turn, plan, reply, over_limit=bool(calls))
        return reply

    def _next_id(self, turn: _Turn) -> int:
        """Return the first id no entry of the conversation or of this turn has."""
        ids = [e.id for e in turn.pending] + ([turn.base.summary.id] if turn.base.summary else [])
        return max([turn.base.next_id, *(i + 1 for i in ids)])

    def _step_entry(self, turn: _Turn, reply: Reply, calls: Sequence[ToolCall]) -> Entry:
        """Return the assistant message of a tool step: its text (if any) and its calls."""
        return turn.base.new_entry("assistant", reply.text or None, self.measure, turn=turn.number,
                                   tool_calls=calls, finish_reason=reply.finish_reason,
                                   id=self._next_id(turn))

    def _run_calls(self, turn: _Turn, calls: Sequence[ToolCall]) -> list[Entry]:
        """Show, approve and run each call; return their ``tool`` results, in the calls' order."""
        toolbox = self.toolbox
        assert toolbox is not None
        results: list[Entry] = []
        for call in calls:
            spec = toolbox.lookup(call.name)
            shown = spec.display if spec is not None else call.name
            self.on_event(ToolCalled(shown, call.arguments))
            refused = spec is not None and not (self.settings.approve == "always" or spec.approve == "always"
                                                or self.approve(call, spec))
            if refused:
                text, error = "the user did not approve this call", False
            else:
                result = toolbox.call(call.name, call.arguments, timeout=self.settings.tool_timeout)
                text, error = result.text, result.is_error
            text, whole = self._capped_result(text)
            entry = turn.base.new_entry("tool", text, self.measure, turn=turn.number, tool_call_id=call.id,
                                        id=self._next_id(turn) + len(results) + 1)
            results.append(entry)
            self.on_event(ToolAnswered(shown, entry.tokens, whole if whole != entry.tokens else None, error,
                                       refused))
        return results

    def _capped_result(self, text: str) -> tuple[str, int]:
        """Return a tool result cut to ``tool_result_max_tokens`` (with a note saying how much was cut),
        and its size before."""
        cap = self.settings.tool_result_max_tokens
        size = self.measure(Message("tool", text))
        if size <= cap:
            return text, size
        note = "\n[cut: the result was {:,} tokens; the first {:,} characters of {:,} are shown]"
        lo, hi = 0, len(text)
        while lo < hi:  # the longest prefix that fits the cap with its note
            mid = (lo + hi + 1) // 2
            if self.measure(Message("tool", text[:mid] + note.format(size, mid, len(text)))) <= cap:
                lo = mid
            else:
                hi = mid - 1
        return text[:lo] + note.format(size, lo, len(text)), size

    def _replan_smaller(self, turn: _Turn, plan: Plan, error: ContextLengthError) -> Plan:
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
        self.refused_budget = min(budget, self.refused_budget or budget)  # no request may pass it now
        try:
            smaller = self.plan_pending(turn.base, tuple(turn.pending), budget=budget)
        except BudgetError:
            raise error from None
        self.on_event(ContextRetry(error.limit, error.requested, budget))
        told = {event.turn for event in plan.fit.events if isinstance(event, Evicted)}
        self._emit([e for e in smaller.fit.events if not (isinstance(e, Evicted) and e.turn in told)])
        if smaller.cache.cause != plan.cache.cause:
            self._say_break(smaller.cache)
        return smaller

    def _say_break(self, prediction: Prediction) -> None:
        if prediction.cause is not None:
            self.on_event(CacheBreak(prediction.cause, prediction.shared, prediction.previous))

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
        held = sum(e.tokens for e in before.live) + sum(e.tokens for e in pending)
        head = sum(e.tokens for e in before.head if e.kind != "summary")  # the summary folds the evicted
        return held + head + sum(e.tokens for e in before.evicted) + REPLY_PRIMING

    def _say_once(self, key: str, event: Event) -> None:
        if key not in self._said:
            self._said.add(key)
            self.on_event(event)

    def _commit(self, turn: _Turn, plan: Plan, reply: Reply, *, over_limit: bool = False) -> None:
        fitted = plan.fit
        baseline = self._baseline((*turn.base.retrieved, *turn.pending))
        conversation = turn.base.append(*turn.pending)
        # Tool calls are kept only when tools were offered: a call with no result after it would make
        # every later request invalid. Calls past the step limit get a result that says so.
        calls = reply.tool_calls if "tools" in plan.body else ()
        answer = conversation.new_entry("assistant", reply.text or (None if calls else ""), self.measure,
                                        turn=turn.number, tool_calls=calls, finish_reason=reply.finish_reason,
                                        id=self._next_id(turn))
        unanswered = [conversation.new_entry("tool", "not run: the tool step limit of this turn was reached",
                                             self.measure, turn=turn.number, tool_call_id=call.id,
                                             id=answer.id + 1 + index)
                      for index, call in enumerate(calls if over_limit else ())]
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
        summary_prompt, summary_cached, summary_completion = self.summarizer.take_spent()
        cache = plan.cache
        if reply.name != plan.endpoint and len(turn.requests) == 1 and self.ledger.turns:
            cache = Prediction(0, cache.total, f"failed over to {reply.name}", cache.previous)
            self._say_break(cache)
        stats = TurnStats(
            turn=turn.number,
            estimated_prompt_tokens=estimated,
            reported_prompt_tokens=usage.prompt_tokens if usage else None,
            reported_completion_tokens=usage.completion_tokens if usage else None,
            baseline_prompt_tokens=max(baseline, estimated) + turn.estimated,
            evictions=sum(1 for e in (*turn.events, *fitted.events) if isinstance(e, (Evicted, Summarized))),
            events=(*turn.events, *fitted.events),
            summary_prompt_tokens=summary_prompt + turn.prompt,
            summary_completion_tokens=summary_completion + turn.completion,
            summary_cached_tokens=summary_cached + turn.cached,
            finish_reason=reply.finish_reason,
            reported_cached_tokens=usage.cached_tokens if usage else None,
            predicted_cached_tokens=cache.shared,
            cache_break=cache.cause or turn.cache_break,
            steps=len(turn.requests),
        )
        self.conversation = conversation.append(answer, *unanswered)
        self.ledger = self.ledger.add(stats)
        record = TurnRecord(turn.number, (*turn.requests[:-1], reply.body), reply, stats, tuple(self._told),
                            turn.base.retrieved)
        self._told = []
        for observer in self.observers:
            observer(record)

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
            self.learned_budget = self.refused_budget = None

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
        turns = turns_within(candidate, turns, self.summarizer.capacity(candidate))
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
        conversation = conversation.recounted(self.measure).with_slots_of(self.conversation)
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


def _tools_key(body: Mapping[str, Any] | None) -> str:
    """Return the request's ``tools`` array as the text that must not change for the cache to hold."""
    tools = body.get("tools") if body is not None else None
    return json.dumps(tools, sort_keys=False, separators=(",", ":")) if tools else ""


__all__ = ["Plan", "Recaller", "Session", "State", "TurnRecord", "Unanswered"]
