"""One turn of the stateless loop, as a function over values: state in, outcome out.

The turn (``run_turn``: a state, a text, a setup and hooks in) fits the history to the budget,
resends it all, runs the tool steps the reply asks for, and returns a ``TurnOutcome``: the new
state (the conversation with the exchange appended, the ledger with the turn's costs), the
final reply, and a ``TurnRecord`` the log stores as it is. Nothing is changed in place: a turn
that fails or is cancelled at any step raises, and the caller still holds the state it passed in.

The way down, one stage a module: the text is planned into a request (``chat.planning``: the
entry, the recalled slot, the policy's fit, the ``ChatRequest``, the cache prediction); the
request is exchanged (``wire.exchange``: sent in the endpoint's dialect, streamed); a tool step
runs its calls (``chat.toolsteps``) and plans the next request; the completed turn is
committed into new values (``chat.commit``). Events go to ``hooks.on_event`` as they happen and
into the record; text deltas to ``hooks.on_delta``; tool calls are approved by ``hooks.approve``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

from stateless_chat.chat.commit import Steps, baseline_tokens, commit
from stateless_chat.chat.planning import (
    chat_request,
    plan_message,
    plan_pending,
    plan_step,
    policy_for,
    replan_smaller,
    say_break,
    summarizer_for,
    tools_key,
)
from stateless_chat.chat.toolsteps import run_calls, step_entry
from stateless_chat.chat.values import (
    FailedTurn,
    Hooks,
    Plan,
    Recaller,
    Told,
    Toolbox,
    TurnOutcome,
    TurnRecord,
    TurnSetup,
    TurnState,
)
from stateless_chat.core.cache import sent_from
from stateless_chat.core.messages import ToolCalled, ToolStepsExhausted
from stateless_chat.core.standing import standing
from stateless_chat.errors import ContextLengthError, UsageError
from stateless_chat.wire.exchange import exchange


def run_turn(state: TurnState, text: str, *, setup: TurnSetup,
             hooks: Hooks | None = None) -> TurnOutcome:
    """Run one turn for user message ``text`` from ``state`` and return its outcome.

    When tools are offered and the reply asks for tool calls, each call is shown, run if
    approved (``hooks.approve``), and its result joins the turn; then the next request goes,
    the turn's calls and results pending in it, never evicted: each step is one more stateless,
    budgeted request, up to ``max_tool_steps``. Raises on any error (and lets KeyboardInterrupt
    through) at any step; the caller's ``state`` is a value, so nothing needs undoing.
    """
    hooks = hooks or Hooks()
    backend = setup.backend
    if not text.strip():
        raise UsageError("empty message: type something to send")
    if backend is None:
        raise UsageError("no endpoint to send to")
    settings = setup.settings
    reserve = settings.effective_reply_reserve
    started = time.monotonic()
    told = Told(hooks.on_event, state.said)
    summarizer = summarizer_for(state, setup, hooks.on_event)
    plan, state = plan_message(state, setup, text, summarizer=summarizer)
    for event in plan.fit.events:
        told(event)
    say_break(plan.cache, told)
    steps = Steps(plan.base, list(plan.pending))
    learned, refused, last_sent = state.learned_budget, state.refused_budget, state.last_sent
    warming = _Warming(text, hooks.on_delta) if settings.memory == "auto" else None
    on_delta = warming or hooks.on_delta
    count = 0
    while True:
        try:
            reply = exchange(backend, plan.request, on_delta, hooks.on_event)
        except ContextLengthError as error:
            plan, refused, summarizer = replan_smaller(state, setup, plan, steps.base, tuple(steps.pending),
                                                       error, refused, on_event=told)
            reply = exchange(backend, plan.request, on_delta, hooks.on_event)
            learned = plan.budget  # learned only from a request that is answered
        except BaseException as error:
            _failed(steps, told, error, settings.model, hooks)
            raise
        steps.base = steps.base.apply(plan.fit)
        steps.requests.append(dict(reply.body))
        last_sent = sent_from(plan.fit.kept, tools=tools_key(plan.request.tools), endpoint=reply.name,
                              model=settings.model, at=setup.clock())
        calls = reply.tool_calls if plan.request.tools else ()
        if not calls or count == settings.max_tool_steps:
            break
        count += 1
        if not state.sizer.exact:  # the turn calls tools: exact counts from here on (free until used)
            state = state.made_exact()
            steps.base = steps.base.recounted(state.sizer)
            steps.pending = [replace(e, tokens=state.sizer(e.message)) for e in steps.pending]
        steps.add_step(plan, reply, reserve)
        assert setup.tools is not None  # a request offers tools only when there are some
        step = step_entry(steps.base, reply, calls, state.sizer, turn=steps.number, id=steps.next_id())
        steps.pending.append(step)
        try:
            steps.pending += run_calls(steps.base, calls, setup.tools, settings, state.sizer, hooks, told,
                                       turn=steps.number, first_id=step.id + 1)
            plan = plan_step(replace(state, last_sent=last_sent), setup, steps.base, tuple(steps.pending),
                             budget=plan.budget, summarizer=summarizer, on_event=told)
        except BaseException as error:
            _failed(steps, told, error, settings.model, hooks)
            raise
    if calls and count == settings.max_tool_steps:
        told(ToolStepsExhausted(count))
    after = replace(state, last_sent=last_sent, learned_budget=learned, refused_budget=refused)
    if warming is not None:
        warming.join()
    return commit(state, after, steps, plan, reply, told, model=settings.model, reserve=reserve,
                  spent=setup.summaries.take(), over_limit=bool(calls),
                  memory=settings.memory, memory_room=settings.memory_room(plan.budget), settings=settings,
                  seconds=time.monotonic() - started)


class _Warming:
    """``on_delta`` that, at the reply's first text, starts reading the user's ``text`` for standing
    sentences on a thread: the rules' regexes compile on first use (tens of ms), which then happens
    while the server is still sending, and the commit's detection (``Conversation.remember``) finds
    them compiled instead of adding that time to the turn. ``join`` before the commit."""

    def __init__(self, text: str, on_delta: Callable[[str], None]) -> None:
        self.text = text
        self.on_delta = on_delta
        self.thread: threading.Thread | None = None

    def __call__(self, delta: str) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._read, name="standing-warm-up", daemon=True)
            self.thread.start()
        self.on_delta(delta)

    def _read(self) -> None:
        try:
            standing(self.text)
        except Exception:  # the commit reads it again, and raises what it raises there
            pass

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


def _failed(steps: Steps, told: Told, error: BaseException, model: str, hooks: Hooks) -> None:
    """Tell ``hooks.on_failed`` of a turn that fails after tools ran (the calls happened, whatever
    becomes of the turn); the caller still holds the state it passed in."""
    if not any(isinstance(event, ToolCalled) for event in told.events):
        return
    reason = "cancelled" if isinstance(error, KeyboardInterrupt) else " ".join(str(error).split())
    hooks.on_failed(FailedTurn(steps.number, tuple(steps.requests), tuple(steps.pending), tuple(told.events),
                               reason or type(error).__name__, model))


__all__ = ["FailedTurn", "Hooks", "Plan", "Recaller", "Toolbox", "TurnOutcome", "TurnRecord", "TurnSetup",
           "TurnState",
           "baseline_tokens", "chat_request", "plan_message", "plan_pending", "policy_for", "run_turn",
           "summarizer_for", "tools_key"]
