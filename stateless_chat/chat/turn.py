"""One turn of the stateless loop, as a function over values: state in, outcome out.

The turn (``run_turn``: a state, a text, a setup and hooks in) fits the history to the budget, resends it all,
runs the tool steps the reply asks for, and returns a ``TurnOutcome``: the new state (the
conversation with the exchange appended, the ledger with the turn's costs), the final reply,
and a ``TurnRecord`` the log stores as it is. Nothing is changed in place: a turn that fails
or is cancelled at any step raises, and the caller still holds the state it passed in.

The way down: the text becomes an entry (``core.history``), the recalled slot is filled
(``setup.recall``), the policy fits the candidate (``core.context``), the plan becomes a
``ChatRequest`` (``wire.request``) and the cache is predicted (``core.cache``); the backend
sends it in its endpoint's dialect (``wire``); the reply is committed into new values
(``core.history``, ``core.ledger``). Events go to ``hooks.on_event`` as they happen and are
kept in the record; text deltas to ``hooks.on_delta``; tool calls are approved by
``hooks.approve``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from stateless_chat.chat.summarizer import Summaries, Summarizer
from stateless_chat.core.cache import Prediction, Sent, predict, sent_from
from stateless_chat.core.context import Fit, Policy, too_big_alone
from stateless_chat.core.history import Conversation
from stateless_chat.core.ledger import Ledger, TurnStats
from stateless_chat.core.messages import (
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
from stateless_chat.core.policies import PolicyTools, make_policy
from stateless_chat.core.sizing import Sizer
from stateless_chat.core.tokens import REPLY_PRIMING, byte_lower_bound
from stateless_chat.errors import BudgetError, ContextLengthError, StreamError, UsageError, raise_budget
from stateless_chat.wire.backend import ChatBackend, Reply, ignore
from stateless_chat.wire.overflow import context_error_behind
from stateless_chat.wire.request import ChatRequest

if TYPE_CHECKING:
    from stateless_chat.config import Settings
    from stateless_chat.tools.servers import ToolResult, ToolSpec


class Toolbox(Protocol):
    """The tools a turn offers the model (``tools.toolbox.Toolbox`` is the one the app builds)."""

    def api_tools(self) -> list[dict[str, Any]]: ...

    def lookup(self, offered: str) -> ToolSpec | None: ...

    def call(self, offered: str, arguments: str, *, timeout: float = ...) -> ToolResult: ...


# Before a turn's first request: given the new message, the conversation and the budget, return the
# conversation with evicted turns brought back into its recalled slot, and a ``Recalled`` event each.
Recaller = Callable[[str, Conversation, int], tuple[Conversation, Sequence[Event]]]


def _nothing(delta: str) -> None:
    pass


def _refuse(call: ToolCall, spec: ToolSpec) -> bool:
    return False


@dataclass(frozen=True)
class Hooks:
    """Where one call's output goes: its events, the reply's text as it streams, and the question
    whether a tool call may run (refused unless someone says yes)."""

    on_event: Callable[[Event], None] = ignore
    on_delta: Callable[[str], None] = _nothing
    approve: Callable[[ToolCall, ToolSpec], bool] = _refuse


@dataclass(frozen=True)
class TurnState:
    """What a turn may change, taken together, so that a cancelled turn puts all of it back at once.

    ``sizer`` measures the conversation (it becomes exact when byte bounds stop fitting);
    ``last_sent`` is what the last request sent, for the cache prediction; ``said`` the notes
    said once per session; ``learned_budget`` the budget a refused-then-answered request taught,
    ``refused_budget`` the largest a context-length refusal allows.
    """

    conversation: Conversation
    ledger: Ledger
    sizer: Sizer
    last_sent: Sent | None = None
    said: frozenset[str] = frozenset()
    learned_budget: int | None = None
    refused_budget: int | None = None

    def made_exact(self) -> TurnState:
        """Return this state counted exactly (the history measured again when it was not)."""
        if self.sizer.exact:
            return self
        sizer = self.sizer.made_exact()
        return replace(self, sizer=sizer, conversation=self.conversation.recounted(sizer))

    def budget(self, settings: Settings) -> int:
        """Return the budget of the next request: the configured one, or less once a server taught it."""
        budget = settings.effective_budget
        return min(budget, self.learned_budget) if self.learned_budget else budget

    def context_limit(self, settings: Settings) -> int:
        """Return the most tokens one request may hold: the context window, or less once the server
        said so (a context-length refusal)."""
        known = [b for b in (self.learned_budget, self.refused_budget) if b]
        return min([settings.effective_context_window, *known])


@dataclass(frozen=True)
class TurnSetup:
    """What a turn runs with and does not change: the settings, where requests go, the tools
    offered, how evicted turns are recalled, the clock (for the cache's lifetime), and the summaries
    written so far with what they cost until a turn completes."""

    settings: Settings
    backend: ChatBackend | None
    tools: Toolbox | None = None
    recall: Recaller | None = None
    clock: Callable[[], float] = time.time
    summaries: Summaries = field(default_factory=Summaries)

    @property
    def endpoint(self) -> str:
        """Return the endpoint the next request goes to first (``host:port``)."""
        return self.backend.name if self.backend is not None else ""

    def tools_offered(self) -> tuple[dict[str, Any], ...]:
        """Return the request's ``tools`` array: the enabled tools, identical from step to step."""
        return tuple(self.tools.api_tools()) if self.tools is not None else ()


@dataclass(frozen=True)
class Plan:
    """The next request, fitted to the budget: this turn's new entries, what fitting did, the
    request, and how much of it repeats the previous request (the server's cached prefix, predicted)."""

    pending: tuple[Entry, ...]
    fit: Fit
    request: ChatRequest
    budget: int
    cache: Prediction
    endpoint: str  # where the request was to go first (the prediction assumed it)
    base: Conversation  # the conversation it sends, with any recalled turns in their slot


@dataclass(frozen=True)
class TurnRecord:
    """One completed turn, as the log stores it.

    ``requests`` are the exact bodies of the chat requests the turn sent and got a reply to,
    in order (its tool steps, then the final one, which ``reply`` answers); ``events`` are the
    events it emitted; ``conversation`` is the conversation after the turn; ``model`` the model
    it was sent to.
    """

    turn: int
    requests: tuple[Mapping[str, Any], ...]
    reply: Reply
    stats: TurnStats
    events: tuple[Event, ...]
    conversation: Conversation
    model: str


@dataclass(frozen=True)
class TurnOutcome:
    """What a completed turn returns: the state after it, its final reply, and its record."""

    state: TurnState
    reply: Reply
    record: TurnRecord


def tools_key(tools: Sequence[Mapping[str, Any]]) -> str:
    """Return a ``tools`` array as the text that must not change for the cache to hold."""
    return json.dumps(list(tools), sort_keys=False, separators=(",", ":")) if tools else ""


def baseline_tokens(conversation: Conversation, pending: Sequence[Entry]) -> int:
    """Return what a request sending ``conversation`` with ``pending`` would cost had nothing ever been
    evicted or summarized (each entry once, wherever it is now)."""
    held = sum(e.tokens for e in conversation.live) + sum(e.tokens for e in pending)
    system = conversation.system.tokens if conversation.system is not None else 0
    return held + system + sum(e.tokens for e in conversation.evicted) + REPLY_PRIMING


def chat_request(settings: Settings, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] = ()
                 ) -> ChatRequest:
    """Return the turn's request for ``messages``: the model, the reply reserve as its length limit,
    the temperature and streaming the settings say."""
    return ChatRequest.of(settings.model, messages, settings.effective_reply_reserve, tools=tools,
                          temperature=settings.temperature, stream=settings.stream)


def policy_for(state: TurnState, setup: TurnSetup, summarizer: Summarizer | None) -> Policy:
    """Return the configured eviction policy; it summarizes only with a ``summarizer``."""
    return make_policy(setup.settings.policy, PolicyTools(state.sizer, summarizer))


def summarizer_for(state: TurnState, setup: TurnSetup, on_event: Callable[[Event], None] = ignore
                   ) -> Summarizer | None:
    """Return the summary writer for one turn or one ``/summarize`` (None without an endpoint)."""
    if setup.backend is None:
        return None
    settings = setup.settings
    return Summarizer(setup.backend, model=settings.model, temperature=settings.temperature,
                      measure=state.sizer, context_limit=state.context_limit(settings),
                      summaries=setup.summaries, on_event=on_event)


def plan_pending(state: TurnState, setup: TurnSetup, base: Conversation, pending: tuple[Entry, ...], *,
                 budget: int, summarizer: Summarizer | None) -> Plan:
    """Return the fitted request that sends ``base`` with this turn's ``pending`` messages last."""
    settings = setup.settings
    tools = setup.tools_offered()
    reserve = settings.effective_reply_reserve
    candidate = base.candidate(pending, budget=budget, reserve=reserve, tools=state.sizer.tools(tools),
                               low_water=int(settings.evict_to * budget))
    fitted = policy_for(state, setup, summarizer).fit(candidate)
    request = chat_request(settings, fitted.request.messages(), tools)
    cache = predict(state.last_sent, fitted.kept, tools=tools_key(tools), endpoint=setup.endpoint,
                    model=settings.model, now=setup.clock(), lifetime=settings.cache_lifetime,
                    why_gone=lambda entry_id: base.why_gone(entry_id, fitted))
    return Plan(pending=pending, fit=fitted, request=request, budget=budget, cache=cache,
                endpoint=setup.endpoint, base=base)


def plan_message(state: TurnState, setup: TurnSetup, text: str, *, budget: int | None = None,
                 summarizer: Summarizer | None = None) -> tuple[Plan, TurnState]:
    """Return the fitted request for a new user message ``text``, and the state it was planned in
    (counted exactly when byte bounds did not fit); no network unless ``summarizer`` folds.

    Raises ``BudgetError`` when what must be sent (system, pins, this message) cannot fit.
    """
    settings = setup.settings
    reserve = settings.effective_reply_reserve
    budget = budget or state.budget(settings)
    at_least = byte_lower_bound(text)
    if too_big_alone(at_least, reserve, budget):
        needed = at_least + reserve + REPLY_PRIMING
        raise BudgetError(
            f"this message is at least {at_least:,} tokens; the budget is {budget:,} with "
            f"{reserve:,} held for the reply: shorten it or {raise_budget(needed)}", needed=needed
        )
    question = state.conversation.new_entry("user", text, state.sizer)
    recalled: Sequence[Event] = ()
    base = state.conversation
    if setup.recall is not None:
        base, recalled = setup.recall(text, base, budget)
    if not state.sizer.exact:  # sized by byte bounds: unless they fit as they are, count exactly first
        tools = state.sizer.tools(setup.tools_offered())
        if not base.candidate((question,), budget=budget, reserve=reserve, tools=tools).fits:
            return plan_message(state.made_exact(), setup, text, budget=budget, summarizer=summarizer)
    plan = plan_pending(state, setup, base, (question,), budget=budget, summarizer=summarizer)
    if recalled:
        plan = replace(plan, fit=replace(plan.fit, events=(*recalled, *plan.fit.events)))
    return plan, state


@dataclass
class _Steps:
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

    def next_id(self) -> int:
        """Return the first id no entry of the conversation or of this turn has."""
        ids = [e.id for e in self.pending] + ([self.base.summary.id] if self.base.summary else [])
        return max([self.base.next_id, *(i + 1 for i in ids)])

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


class _Turn:
    """One run of ``run_turn``: the values it started from, what it has told, and its steps."""

    def __init__(self, state: TurnState, setup: TurnSetup, hooks: Hooks) -> None:
        self.state = state
        self.setup = setup
        self.hooks = hooks
        self.settings = setup.settings
        self.reserve = setup.settings.effective_reply_reserve
        self.told: list[Event] = []
        self.said = set(state.said)
        self.summarizer = summarizer_for(state, setup, hooks.on_event)

    def tell(self, event: Event) -> None:
        self.told.append(event)
        self.hooks.on_event(event)

    def tell_all(self, events: Sequence[Event]) -> None:
        for event in events:
            self.tell(event)

    def say_break(self, prediction: Prediction) -> None:
        if prediction.cause is not None:
            self.tell(CacheBreak(prediction.cause, prediction.shared, prediction.previous))

    def say_once(self, key: str, event: Event) -> None:
        if key not in self.said:
            self.said.add(key)
            self.tell(event)

    # ---- the loop ------------------------------------------------------------------------

    def run(self, text: str) -> TurnOutcome:
        backend = self.setup.backend
        assert backend is not None
        plan, self.state = plan_message(self.state, self.setup, text, summarizer=self.summarizer)
        steps = _Steps(plan.base, list(plan.pending))
        self.tell_all(plan.fit.events)
        self.say_break(plan.cache)
        learned = self.state.learned_budget
        refused = self.state.refused_budget
        last_sent = self.state.last_sent
        count = 0
        while True:
            try:
                reply = self.request(backend, plan)
            except ContextLengthError as error:
                plan, refused = self.replan_smaller(steps, plan, error, refused)
                reply = self.request(backend, plan)
                learned = plan.budget  # learned only from a request that is answered
            steps.base = steps.base.apply(plan.fit)
            steps.requests.append(dict(reply.body))
            last_sent = sent_from(plan.fit.kept, tools=tools_key(plan.request.tools), endpoint=reply.name,
                                  model=self.settings.model, at=self.setup.clock())
            calls = reply.tool_calls if plan.request.tools else ()
            if not calls or count == self.settings.max_tool_steps:
                break
            count += 1
            steps.add_step(plan, reply, self.reserve)
            steps.pending += [self.step_entry(steps, reply, calls), *self.run_calls(steps, calls)]
            state = replace(self.state, last_sent=last_sent)
            plan = plan_pending(state, self.setup, steps.base, tuple(steps.pending), budget=plan.budget,
                                summarizer=self.summarizer)
            self.tell_all(plan.fit.events)
            self.say_break(plan.cache)
        if calls and count == self.settings.max_tool_steps:
            self.tell(ToolStepsExhausted(count))
        state = replace(self.state, last_sent=last_sent, learned_budget=learned, refused_budget=refused)
        return self.commit(state, steps, plan, reply, over_limit=bool(calls))

    def request(self, backend: ChatBackend, plan: Plan) -> Reply:
        """Send the plan's request and stream its reply to ``hooks.on_delta``; a stream that ends before
        its first token is asked about once more without streaming (``overflow``), so that a context
        that is too small is reported as such."""
        shown = False
        reply = backend.send(plan.request, self.hooks.on_event)
        try:
            for delta in reply:
                shown = True
                self.hooks.on_delta(delta)
        except StreamError as error:
            # Only a stream that ended cleanly with nothing in it: a broken connection is no question
            # for the server, and a reply already shown is not asked for again.
            if shown or not plan.request.stream or type(error) is not StreamError:
                raise
            behind = context_error_behind(backend, plan.request, self.hooks.on_event)
            if behind is None:
                raise
            raise behind from error
        finally:
            reply.close()
        return reply

    def replan_smaller(self, steps: _Steps, plan: Plan, error: ContextLengthError,
                       refused: int | None) -> tuple[Plan, int]:
        """Return a plan cut to what the server says fits, after one context-length refusal, and the
        budget no request may pass now.

        The server's numbers give the ratio of its count to ours; the new budget is its limit
        (less the reply reserve) divided by that ratio, with a 5% margin; once the resent
        request is answered, the turn keeps it for the rest of the session (``learned_budget``).
        Re-raises ``error`` when nothing can be cut: a policy that never evicts, or system, pins
        and the new message alone exceed the new budget.
        """
        reserve = self.reserve
        if not policy_for(self.state, self.setup, None).evicts:
            raise error
        prompt = plan.fit.total - reserve
        if error.limit and error.requested and error.requested > 0:
            ratio = error.requested / max(prompt, 1)
            budget = int((error.limit - reserve) / ratio * 0.95) + reserve
        else:
            budget = int(plan.fit.total * 0.75)
        budget = min(budget, plan.budget - 1)
        if budget <= reserve:
            raise error
        refused = min(budget, refused or budget)  # no request may pass it now, summary requests included
        self.summarizer = summarizer_for(replace(self.state, refused_budget=refused), self.setup,
                                         self.hooks.on_event)
        try:
            smaller = plan_pending(self.state, self.setup, steps.base, tuple(steps.pending), budget=budget,
                                   summarizer=self.summarizer)
        except BudgetError:
            raise error from None
        self.tell(ContextRetry(error.limit, error.requested, budget))
        told = {event.turn for event in plan.fit.events if isinstance(event, Evicted)}
        self.tell_all([e for e in smaller.fit.events if not (isinstance(e, Evicted) and e.turn in told)])
        if smaller.cache.cause != plan.cache.cause:
            self.say_break(smaller.cache)
        return smaller, refused

    # ---- tools -------------------------------------------------------------------------------

    def step_entry(self, steps: _Steps, reply: Reply, calls: Sequence[ToolCall]) -> Entry:
        """Return the assistant message of a tool step: its text (if any) and its calls."""
        return steps.base.new_entry("assistant", reply.text or None, self.state.sizer, turn=steps.number,
                                    tool_calls=calls, finish_reason=reply.finish_reason, id=steps.next_id())

    def run_calls(self, steps: _Steps, calls: Sequence[ToolCall]) -> list[Entry]:
        """Show, approve and run each call; return their ``tool`` results, in the calls' order."""
        toolbox = self.setup.tools
        assert toolbox is not None
        settings = self.settings
        results: list[Entry] = []
        for call in calls:
            spec = toolbox.lookup(call.name)
            shown = spec.display if spec is not None else call.name
            self.tell(ToolCalled(shown, call.arguments))
            refused = spec is not None and not (settings.approve == "always" or spec.approve == "always"
                                                or self.hooks.approve(call, spec))
            if refused:
                text, error = "the user did not approve this call", False
            else:
                result = toolbox.call(call.name, call.arguments, timeout=settings.tool_timeout)
                text, error = result.text, result.is_error
            text, whole = self.capped_result(text)
            entry = steps.base.new_entry("tool", text, self.state.sizer, turn=steps.number,
                                         tool_call_id=call.id, id=steps.next_id() + len(results) + 1)
            results.append(entry)
            cut = whole if whole != entry.tokens else None
            self.tell(ToolAnswered(shown, entry.tokens, cut, error, refused))
        return results

    def capped_result(self, text: str) -> tuple[str, int]:
        """Return a tool result cut to ``tool_result_max_tokens`` (with a note saying how much was cut),
        and its size before."""
        cap = self.settings.tool_result_max_tokens
        measure = self.state.sizer
        size = measure(Message("tool", text))
        if size <= cap:
            return text, size
        note = "\n[cut: the result was {:,} tokens; the first {:,} characters of {:,} are shown]"
        lo, hi = 0, len(text)
        while lo < hi:  # the longest prefix that fits the cap with its note
            mid = (lo + hi + 1) // 2
            if measure(Message("tool", text[:mid] + note.format(size, mid, len(text)))) <= cap:
                lo = mid
            else:
                hi = mid - 1
        return text[:lo] + note.format(size, lo, len(text)), size

    # ---- the end of a turn -------------------------------------------------------------------

    def commit(self, state: TurnState, steps: _Steps, plan: Plan, reply: Reply, *,
               over_limit: bool = False) -> TurnOutcome:
        """Return the outcome of the completed turn: the exchange appended, its costs in the ledger."""
        fitted = plan.fit
        measure = state.sizer
        conversation = steps.base.append(*steps.pending)
        # Tool calls are kept only when tools were offered: a call with no result after it would make
        # every later request invalid. Calls past the step limit get a result that says so.
        calls = reply.tool_calls if plan.request.tools else ()
        answer = conversation.new_entry("assistant", reply.text or (None if calls else ""), measure,
                                        turn=steps.number, tool_calls=calls,
                                        finish_reason=reply.finish_reason, id=steps.next_id())
        unanswered = [conversation.new_entry("tool", "not run: the tool step limit of this turn was reached",
                                             measure, turn=steps.number, tool_call_id=call.id,
                                             id=answer.id + 1 + index)
                      for index, call in enumerate(calls if over_limit else ())]
        usage = reply.usage
        for note in reply.notes:
            self.say_once(note, Notice(note))
        if (usage is None or usage.prompt_tokens is None) and not reply.notes:
            self.say_once("usage missing", UsageMissing())
        if reply.tool_calls and not calls:
            names = ", ".join(call.name for call in reply.tool_calls)
            self.tell(Notice(f"the reply asks for tool calls ({names}) but no tools are enabled: "
                             "nothing was run, and only its text is kept"))
        if answer.cut:
            self.tell(ReplyCut(self.reserve))
        estimated = fitted.total - self.reserve
        spent = self.setup.summaries.take()
        cache = plan.cache
        if reply.name != plan.endpoint and len(steps.requests) == 1 and state.ledger.turns:
            cache = Prediction(0, cache.total, f"failed over to {reply.name}", cache.previous)
            self.say_break(cache)
        events = (*steps.events, *fitted.events)
        stats = TurnStats(
            turn=steps.number,
            estimated_prompt_tokens=estimated,
            reported_prompt_tokens=usage.prompt_tokens if usage else None,
            reported_completion_tokens=usage.completion_tokens if usage else None,
            baseline_prompt_tokens=max(baseline_tokens(self.state.conversation, steps.pending), estimated)
            + steps.estimated,
            evictions=sum(1 for e in events if isinstance(e, (Evicted, Summarized))),
            events=events,
            summary_prompt_tokens=spent.prompt + steps.prompt,
            summary_completion_tokens=spent.completion + steps.completion,
            summary_cached_tokens=spent.cached + steps.cached,
            finish_reason=reply.finish_reason,
            reported_cached_tokens=usage.cached_tokens if usage else None,
            predicted_cached_tokens=cache.shared,
            cache_break=cache.cause or steps.cache_break,
            steps=len(steps.requests),
        )
        conversation = conversation.append(answer, *unanswered)
        # Standing memory: the user message is read for what must hold as it is committed.
        conversation, noted = conversation.remember(steps.pending[0], measure, mode=self.settings.memory,
                                                    room=self.settings.memory_room(plan.budget))
        self.tell_all(noted)
        after = replace(state, conversation=conversation, ledger=state.ledger.add(stats),
                        said=frozenset(self.said))
        record = TurnRecord(steps.number, (*steps.requests[:-1], reply.body), reply, stats, tuple(self.told),
                            after.conversation, self.settings.model)
        return TurnOutcome(after, reply, record)


def run_turn(state: TurnState, text: str, *, setup: TurnSetup,
             hooks: Hooks | None = None) -> TurnOutcome:
    """Run one turn for user message ``text`` from ``state`` and return its outcome.

    When tools are offered and the reply asks for tool calls, each call is shown, run if
    approved (``hooks.approve``), and its result joins the turn; then the next request goes,
    the turn's calls and results pending in it, never evicted: each step is one more stateless,
    budgeted request, up to ``max_tool_steps``. Raises on any error (and lets KeyboardInterrupt
    through) at any step; the caller's ``state`` is a value, so nothing needs undoing.
    """
    if not text.strip():
        raise UsageError("empty message: type something to send")
    if setup.backend is None:
        raise UsageError("no endpoint to send to")
    if setup.tools is not None:
        state = state.made_exact()  # tool schemas are counted with the encoding
    turn = _Turn(state, setup, hooks or Hooks())
    return turn.run(text)


__all__ = ["Hooks", "Plan", "Recaller", "Toolbox", "TurnOutcome", "TurnRecord", "TurnSetup", "TurnState",
           "chat_request", "plan_message", "plan_pending", "run_turn", "tools_key"]
