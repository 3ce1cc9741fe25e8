"""Planning a request: fit what the turn sends to the budget, build the request, predict the cache.

``plan_message`` plans a turn's first request for the user's text; ``plan_pending`` plans any
request of the turn from its pending messages (a tool step's too); ``replan_smaller`` plans
again, smaller, after the server refused the request as longer than its context. Each says
what fitting did (evictions, a summary, a cache break) to ``on_event`` as it plans.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from stateless_chat.chat.summarizer import Summarizer
from stateless_chat.chat.values import Plan, TurnSetup, TurnState
from stateless_chat.core.cache import Prediction, predict
from stateless_chat.core.context import Policy, too_big_alone
from stateless_chat.core.history import Conversation
from stateless_chat.core.messages import CacheBreak, ContextRetry, Entry, Event, Evicted, Message
from stateless_chat.core.policies import PolicyTools, make_policy
from stateless_chat.core.tokens import REPLY_PRIMING, byte_lower_bound
from stateless_chat.errors import BudgetError, ContextLengthError, raise_budget
from stateless_chat.wire.backend import ignore
from stateless_chat.wire.request import ChatRequest

if TYPE_CHECKING:
    from stateless_chat.config import Settings


def tools_key(tools: Sequence[Mapping[str, Any]]) -> str:
    """Return a ``tools`` array as the text that must not change for the cache to hold."""
    return json.dumps(list(tools), sort_keys=False, separators=(",", ":")) if tools else ""


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


def say_break(prediction: Prediction, on_event: Callable[[Event], None]) -> None:
    """Tell ``on_event`` why the request does not start with the whole previous one, if it does not."""
    if prediction.cause is not None:
        on_event(CacheBreak(prediction.cause, prediction.shared, prediction.previous))


def plan_pending(state: TurnState, setup: TurnSetup, base: Conversation, pending: tuple[Entry, ...], *,
                 budget: int, summarizer: Summarizer | None) -> Plan:
    """Return the fitted request that sends ``base`` with this turn's ``pending`` messages last."""
    settings = setup.settings
    tools = setup.tools_offered()
    policy = make_policy(settings.policy, PolicyTools(state.sizer, summarizer))
    candidate = base.candidate(pending, budget=budget, reserve=settings.effective_reply_reserve,
                               tools=state.sizer.tools(tools), low_water=int(settings.evict_to * budget),
                               framing=state.sizer.framing(base.system_leads))
    fitted = policy.fit(candidate)
    request = ChatRequest.of(settings.model, fitted.request.messages(), settings.effective_reply_reserve,
                             tools=tools, temperature=settings.temperature, stream=settings.stream)
    cache = predict(state.last_sent, fitted.kept, tools=tools_key(tools), endpoint=setup.endpoint,
                    model=settings.model, now=setup.clock(), lifetime=settings.cache_lifetime,
                    why_gone=lambda entry_id: base.why_gone(entry_id, fitted))
    return Plan(pending=pending, fit=fitted, request=request, budget=budget, cache=cache,
                endpoint=setup.endpoint, base=base)


def plan_step(state: TurnState, setup: TurnSetup, base: Conversation, pending: tuple[Entry, ...], *,
              budget: int, summarizer: Summarizer | None, on_event: Callable[[Event], None]) -> Plan:
    """Return ``plan_pending``'s plan for the next step of a turn, its evictions and any cache break
    told to ``on_event``."""
    plan = plan_pending(state, setup, base, pending, budget=budget, summarizer=summarizer)
    for event in plan.fit.events:
        on_event(event)
    say_break(plan.cache, on_event)
    return plan


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
    if setup.retrieve is not None:
        base, found = setup.retrieve(text, base, budget)
        recalled = (*recalled, *found)
    if not state.sizer.exact:  # sized by byte bounds: unless they fit as they are, count exactly first
        tools = state.sizer.tools(setup.tools_offered())
        if not base.candidate((question,), budget=budget, reserve=reserve, tools=tools).fits:
            return plan_message(state.made_exact(), setup, text, budget=budget, summarizer=summarizer)
    plan = plan_pending(state, setup, base, (question,), budget=budget, summarizer=summarizer)
    if recalled:
        plan = replace(plan, fit=replace(plan.fit, events=(*recalled, *plan.fit.events)))
    return plan, state


def replan_smaller(state: TurnState, setup: TurnSetup, plan: Plan, base: Conversation,
                   pending: tuple[Entry, ...], error: ContextLengthError, refused: int | None, *,
                   on_event: Callable[[Event], None]) -> tuple[Plan, int, Summarizer | None]:
    """Return a plan cut to what the server says fits, after one context-length refusal of ``plan``,
    the budget no request may pass now, and the summary writer that keeps within it.

    The server's numbers give the ratio of its count to ours; the new budget is its limit (less
    the reply reserve) divided by that ratio, with a 5% margin; once the resent request is
    answered, the turn keeps it for the rest of the session (``learned_budget``). Re-raises
    ``error`` when nothing can be cut: a policy that never evicts, or system, pins and the new
    message alone exceed the new budget.
    """
    reserve = setup.settings.effective_reply_reserve
    if error.limit and error.limit <= reserve:  # no history to cut could help: say what to set
        hold = max(1, error.limit // 4)
        raise ContextLengthError(
            f"the server's whole context is {error.limit:,} tokens, no more than the {reserve:,} held for "
            f"the reply: hold less (--max-tokens {hold}, /reserve {hold} in the chat, or reply_reserve = "
            f"{hold} in the config file)", error.status, error.limit, error.requested,
        ) from error
    if not policy_for(state, setup, None).evicts:
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
    summarizer = summarizer_for(replace(state, refused_budget=refused), setup, on_event)
    try:
        smaller = plan_pending(state, setup, base, pending, budget=budget, summarizer=summarizer)
    except BudgetError:
        raise error from None
    on_event(ContextRetry(error.limit, error.requested, budget))
    told = {event.turn for event in plan.fit.events if isinstance(event, Evicted)}
    for event in smaller.fit.events:
        if not (isinstance(event, Evicted) and event.turn in told):
            on_event(event)
    if smaller.cache.cause != plan.cache.cause:
        say_break(smaller.cache, on_event)
    return smaller, refused, summarizer


__all__ = ["chat_request", "plan_message", "plan_pending", "plan_step", "policy_for", "replan_smaller",
           "say_break", "summarizer_for", "tools_key"]
