"""The end of a turn: the exchange appended to the conversation, its costs added to the ledger.

``Steps`` is a turn while it runs (its conversation with the evictions so far, its new
messages, what its earlier requests cost); ``commit`` turns a completed turn into its
``TurnOutcome``. Nothing here is kept unless the turn completes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from stateless_chat.chat.summarizer import Spent
from stateless_chat.chat.values import Plan, StepCost, Told, TurnOutcome, TurnRecord, TurnState
from stateless_chat.core.cache import Prediction
from stateless_chat.core.history import Conversation
from stateless_chat.core.ledger import TurnStats
from stateless_chat.core.messages import (
    CacheBreak,
    Entry,
    Event,
    Evicted,
    Notice,
    ReplyCut,
    Summarized,
    UsageMissing,
)
from stateless_chat.core.tokens import REPLY_PRIMING
from stateless_chat.wire.backend import Reply

if TYPE_CHECKING:
    from stateless_chat.config import Settings


@dataclass
class Steps:
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
    costs: list[StepCost] = field(default_factory=list)  # each answered tool-step request, by our count

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
        self.costs.append(StepCost(estimated, plan.cache.shared, plan.cache.cause))


def baseline_tokens(conversation: Conversation, pending: Sequence[Entry],
                    framing: int = REPLY_PRIMING) -> int:
    """Return what a request sending ``conversation`` with ``pending`` would cost had nothing ever been
    evicted or summarized (each entry once, wherever it is now), ``framing`` added (what a request adds
    beyond its messages)."""
    held = sum(e.tokens for e in conversation.live) + sum(e.tokens for e in pending)
    head = sum(e.tokens for e in conversation.head if e.kind != "summary")  # the summary folds the evicted
    return held + head + conversation.evicted.tokens + framing  # the held evicted text is not read


def commit(before: TurnState, after: TurnState, steps: Steps, plan: Plan, reply: Reply, told: Told, *,
           model: str, reserve: int, spent: Spent, memory: str, memory_room: int,
           over_limit: bool = False, settings: Settings | None = None, seconds: float = 0.0) -> TurnOutcome:
    """Return the outcome of the completed turn: the exchange appended to ``after``'s conversation, its
    costs (and ``spent`` on summaries) in the ledger, what it told in its record.

    ``before`` is the state the turn started from (for the no-eviction baseline). With ``memory``
    "auto" the user message is read for standing sentences as it is committed, kept as notes within
    ``memory_room`` tokens (``Conversation.remember``).
    """
    fitted = plan.fit
    measure = after.sizer
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
    if (usage is None or usage.prompt_tokens is None) and measure.exact:  # counted, when the counter can
        usage = measure.counter.count_usage(fitted.total - reserve, reply.text, calls, steps.number) or usage
    for note in reply.notes:
        told.once(note, Notice(note))
    if (usage is None or usage.prompt_tokens is None) and not reply.notes:
        told.once("usage missing", UsageMissing())
    if reply.tool_calls and not calls:
        names = ", ".join(call.name for call in reply.tool_calls)
        told(Notice(f"the reply asks for tool calls ({names}) but no tools are enabled: "
                    "nothing was run, and only its text is kept"))
    if answer.cut:
        told(ReplyCut(reserve))
    estimated = fitted.total - reserve
    cache = plan.cache
    if reply.name != plan.endpoint and len(steps.requests) == 1 and after.ledger.turns:
        cache = Prediction(0, cache.total, f"failed over to {reply.name}", cache.previous)
        told(CacheBreak(cache.cause or "", cache.shared, cache.previous))
    events = (*steps.events, *fitted.events)
    before_all = before.conversation  # what the request would have cost with nothing ever evicted
    baseline = baseline_tokens(before_all, (*steps.base.retrieved, *steps.pending),
                               measure.framing(before_all.system_leads))
    stats = TurnStats(
        turn=steps.number,
        estimated_prompt_tokens=estimated,
        reported_prompt_tokens=usage.prompt_tokens if usage else None,
        reported_completion_tokens=usage.completion_tokens if usage else None,
        baseline_prompt_tokens=max(baseline, estimated) + steps.estimated,
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
    conversation, noted = conversation.remember(steps.pending[0], measure, room=memory_room, mode=memory)
    for event in noted:
        told(event)
    state = replace(after, conversation=conversation, ledger=after.ledger.add(stats),
                    said=frozenset(told.said))
    record = TurnRecord(steps.number, (*steps.requests[:-1], reply.body), reply, stats, tuple(told.events),
                        state.conversation, model, steps.base.retrieved, state.ledger, settings, seconds,
                        (*steps.costs, StepCost(estimated, cache.shared, cache.cause)))
    return TurnOutcome(state, reply, record)


__all__ = ["Steps", "baseline_tokens", "commit"]
