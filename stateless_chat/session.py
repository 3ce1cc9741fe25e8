"""One turn of the stateless loop: fit the history to the budget, resend it all, record the reply.

The session owns the ``Conversation`` value and replaces it only when a reply is
complete. Anything that goes wrong before that (an HTTP error, a cut stream,
Ctrl-C) leaves the previous value in place: nothing to undo, nothing duplicated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from stateless_chat.config import Settings
from stateless_chat.context import (
    Fit,
    Summarizer,
    evictable_turns,
    fold,
    request_size,
    summary_cap,
    summary_message,
    turns_within,
)
from stateless_chat.context import fit as fit_policy
from stateless_chat.errors import BudgetError, ContextLengthError, ServerError, UsageError
from stateless_chat.history import Conversation
from stateless_chat.messages import (
    ContextRetry,
    Entry,
    Event,
    Evicted,
    Message,
    Notice,
    Summarized,
    TurnStats,
    Usage,
    UsageMissing,
)
from stateless_chat.tokens import PER_MESSAGE, REPLY_PRIMING, TokenCounter, byte_lower_bound, byte_upper_bound
from stateless_chat.transport import Reply, Transport

SUMMARY_PROMPT = """SUMMARIZE-CONVERSATION
You compress the earlier part of a chat so that it can replace those messages.
Write a concise summary, in the conversation's language, that keeps:
- every name, number, identifier and fact the user gave;
- every constraint, preference or instruction the user said must hold;
- decisions made and their reasons;
- open questions and unfinished tasks.
The transcript may open with your earlier summary of even older turns (the text before the
first "user:" line): merge it in, dropping nothing it kept.
Write it as plain notes, addressed to the assistant who continues the chat.
Do not add anything that was not said."""

# The smallest reply a summary request asks for, even when its transcript leaves less room.
SUMMARY_MIN_REPLY = 32
# Tokens of slack in a summary request for what per-message counts cannot see exactly.
FOLD_SLACK = 16


@dataclass(frozen=True)
class Plan:
    """The next request, fitted to the budget: what it sends, the body, and what fitting did."""

    pending: Entry
    fit: Fit
    body: dict[str, Any]
    budget: int


@dataclass
class Totals:
    """Session-wide token accounting: the real bill of resending and the no-eviction baseline.

    ``sent`` sums each turn's prompt tokens as the server reported them (our estimate for a
    turn it did not report), summary requests included: what resending the history really
    cost. ``completion`` sums the reported completion tokens, summaries included.
    ``estimated`` sums our own counts of the chat requests. ``baseline`` is what the same
    turns would have cost with nothing ever evicted or summarized, in ``sent``'s units: each
    turn's no-eviction count is scaled by that turn's reported/estimated ratio, so with no
    eviction ``baseline == sent`` even when the server's tokenizer is not ours.
    """

    sent: int = 0
    estimated: int = 0
    baseline: int = 0
    completion: int = 0
    turns: list[TurnStats] = field(default_factory=list)


class Session:
    """Holds the conversation and runs turns against a ``Transport``."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport | None,
        counter: TokenCounter | None = None,
        *,
        on_event: Callable[[Event], None] = lambda event: None,
        exact: bool = True,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.counter = counter or TokenCounter(settings.model, settings.encoding, settings.default_encoding)
        self.on_event = on_event
        # When False, entries are sized by their UTF-8 byte length (an upper bound on tokens)
        # and the encoding is loaded only if that bound does not fit the budget.
        self.exact = exact
        self.conversation = Conversation.start(settings.system, self.measure)
        self.totals = Totals()
        self._summary_cache: dict[tuple[int, ...], str] = {}
        # Tokens of the summary requests not yet billed to a turn's stats.
        self._summary_prompt_spent = 0
        self._summary_completion_spent = 0
        self._summary_prompt_size: tuple[object, int] = (None, 0)  # ((counter, exact), tokens)
        self.learned_budget: int | None = None
        self.ask_usage = True  # streamed requests ask for usage (stream_options) unless the server refuses
        self._usage_missing_said = False  # UsageMissing is emitted once per session, not every turn

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
        if self.settings.max_tokens is not None:
            body["max_tokens"] = self.settings.max_tokens
        if self.settings.stream:
            body["stream"] = True
            if self.ask_usage:
                body["stream_options"] = {"include_usage": True}
        return body

    def plan(self, text: str, *, budget: int | None = None, summarize: bool = True) -> Plan:
        """Return the fitted request for a new user message ``text``; no network unless summarizing.

        Raises ``BudgetError`` when what must be sent (system, pins, this message) cannot fit.
        """
        budget = budget or self.budget
        at_least = byte_lower_bound(text)
        if at_least + REPLY_PRIMING + self.reserve > budget:
            raise BudgetError(
                f"this message is at least {at_least:,} tokens; the budget is {budget:,}: "
                "shorten it or raise the budget (/budget N or --budget N)"
            )
        pending = self.conversation.new_entry("user", text, self.measure)
        entries = self.conversation.request_entries([pending])
        if not self.exact and request_size(entries, self.reserve) > budget:
            self.make_exact()
            pending = self.conversation.new_entry("user", text, self.measure)
            entries = self.conversation.request_entries([pending])
        can_summarize = summarize and self.transport is not None
        summarizer = partial(self._summarize, budget=budget) if can_summarize else None
        fitted = fit_policy(
            self.settings.policy,
            entries,
            budget,
            self.measure,
            reserve=self.reserve,
            summarizer=summarizer,
            next_id=self.conversation.next_id + 1,
            fold_limit=self._fold_limit(budget) if self.settings.policy == "summarize" else None,
        )
        messages = [e.message for e in fitted.kept]
        return Plan(pending=pending, fit=fitted, body=self.body(messages), budget=budget)

    def _fold_limit(self, budget: int) -> int:
        """Return how many tokens of messages one summary request can carry within ``budget``.

        The request holds the summary prompt, the previous summary and the folded messages
        (each about its billed size: ``role: content`` stands in for the message framing),
        and leaves at least ``SUMMARY_MIN_REPLY`` for the summary itself.
        """
        key = (self.counter, self.exact)
        if self._summary_prompt_size[0] != key:
            self._summary_prompt_size = (key, self.measure(Message("system", SUMMARY_PROMPT)))
        prompt = self._summary_prompt_size[1] + PER_MESSAGE
        previous = self.conversation.summary.tokens if self.conversation.summary else 0
        return budget - prompt - previous - SUMMARY_MIN_REPLY - REPLY_PRIMING - FOLD_SLACK

    def _summarize(self, previous: str | None, messages: Sequence[Message], *, budget: int) -> str:
        """Fold ``messages`` (and the previous summary) into a new summary by a separate stateless call
        that fits ``budget``, the budget of the request being fitted."""
        key = (hash(previous), *(hash(m) for m in messages))
        cached = self._summary_cache.get(key)
        if cached is not None:
            return cached
        assert self.transport is not None
        # The earlier summary opens the transcript as it is, with no heading line: the prompt
        # says what it is, and every fold then wraps it in as little new text as possible.
        lines = [previous] if previous else []
        lines += [f"{m.role}: {m.content}" for m in messages]
        request = [Message("system", SUMMARY_PROMPT), Message("user", "\n\n".join(lines))]
        # The summary request obeys the budget too: its reply gets what the transcript leaves,
        # at most what the summary's cap leaves its text (past the header and framing), and
        # never less than SUMMARY_MIN_REPLY.
        prompt = sum(self.measure(m) for m in request) + REPLY_PRIMING
        longest = summary_cap(budget) - self.measure(summary_message(""))
        body = {
            "model": self.settings.model,
            "messages": [m.to_api() for m in request],
            "max_tokens": max(SUMMARY_MIN_REPLY, min(longest, budget - prompt)),
        }
        if self.settings.temperature is not None:
            body["temperature"] = self.settings.temperature
        reply = self.transport.complete(body)
        usage = reply.usage or Usage(None, None)
        self._summary_prompt_spent += prompt if usage.prompt_tokens is None else usage.prompt_tokens
        self._summary_completion_spent += usage.completion_tokens or 0
        text = reply.text.strip()
        if not text:
            raise ValueError("the summary came back empty")
        self._summary_cache[key] = text
        return text

    # ---- one turn --------------------------------------------------------------

    def send(self, text: str, on_delta: Callable[[str], None] = lambda delta: None) -> Reply:
        """Run one turn for user message ``text`` and return the complete reply.

        The conversation is replaced only when the reply is complete; on any error or
        KeyboardInterrupt it is exactly what it was before.
        """
        if not text.strip():
            raise UsageError("empty message: type something to send")
        if self.transport is None:
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
        told = {turn for event in plan.fit.events if isinstance(event, Evicted) for turn in event.turns}
        self._emit([e for e in smaller.fit.events if not (isinstance(e, Evicted) and set(e.turns) <= told)])
        return smaller

    def _request(self, body: dict[str, Any], on_delta: Callable[[str], None]) -> Reply:
        assert self.transport is not None
        if not body.get("stream"):
            reply = self.transport.complete(body)
            on_delta(reply.text)
            return reply
        try:
            streamed = self.transport.stream(body)
        except ServerError as error:
            # Servers that predate stream_options reject the whole request over it (400):
            # send it again without, and stop asking for usage in this session.
            if error.status != 400 or "stream_options" not in str(error) or "stream_options" not in body:
                raise
            self.ask_usage = False
            self.on_event(Notice("the server does not accept stream_options: usage will not be reported"))
            body = {key: value for key, value in body.items() if key != "stream_options"}
            streamed = self.transport.stream(body)
        deltas = streamed.deltas
        try:
            for delta in deltas:
                on_delta(delta)
        finally:
            close = getattr(deltas, "close", None)
            if close is not None:
                close()
        assert streamed.reply is not None  # the iterator ended cleanly, so the reply is complete
        return streamed.reply

    def _baseline(self, pending: Entry) -> int:
        """Return what the request would cost had nothing ever been evicted or summarized."""
        before = self.conversation
        held = sum(e.tokens for e in before.request_entries([pending]) if e.kind != "summary")
        return held + sum(e.tokens for e in before.evicted) + REPLY_PRIMING

    def _commit(self, plan: Plan, reply: Reply) -> None:
        fitted = plan.fit
        baseline = self._baseline(plan.pending)
        live = tuple(e for e in fitted.kept if e.kind != "summary" and e.role != "system")
        conversation = self.conversation.with_live(live, fitted.summary, fitted.evicted)
        answer = conversation.new_entry("assistant", reply.text, self.measure, turn=plan.pending.turn)
        self.conversation = conversation.append(answer)

        estimated = fitted.total - self.reserve
        usage = reply.usage
        if (usage is None or usage.prompt_tokens is None) and not self._usage_missing_said:
            self._usage_missing_said = True
            self.on_event(UsageMissing())
        reported_prompt = usage.prompt_tokens if usage else None
        reported_completion = usage.completion_tokens if usage else None
        evictions = sum(1 for e in fitted.events if isinstance(e, (Evicted, Summarized)))
        stats = TurnStats(
            turn=plan.pending.turn,
            estimated_prompt_tokens=estimated,
            reported_prompt_tokens=reported_prompt,
            reported_completion_tokens=reported_completion,
            baseline_prompt_tokens=max(baseline, estimated),
            evictions=evictions,
            events=fitted.events,
            summary_prompt_tokens=self._summary_prompt_spent,
            summary_completion_tokens=self._summary_completion_spent,
        )
        self._summary_prompt_spent = self._summary_completion_spent = 0
        totals = self.totals
        totals.turns.append(stats)
        totals.estimated += estimated
        totals.sent += stats.sent
        totals.baseline += stats.baseline_sent
        totals.completion += (reported_completion or 0) + stats.summary_completion_tokens

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
        if self.transport is None:
            raise UsageError("no endpoint to summarize with")
        conversation = self.conversation
        entries = conversation.request_entries()
        turns = evictable_turns(entries)
        if not turns:
            raise UsageError("nothing to summarize: only the newest turn and pinned turns are live")
        budget = self.budget
        turns = turns_within(entries, turns, self._fold_limit(budget))
        if not turns:
            raise UsageError(f"the oldest turn is too long to summarize within the budget of {budget:,} "
                             "tokens: /drop it or raise the budget")
        kept, folded, summary, event = fold(entries, turns, partial(self._summarize, budget=budget),
                                            self.measure, cap=summary_cap(budget),
                                            summary_id=conversation.next_id)
        live = tuple(e for e in kept if e.kind != "summary" and e.role != "system")
        self.conversation = conversation.with_live(live, summary, folded)
        self.on_event(event)
        return event

    # ---- previews ----------------------------------------------------------------

    def preview_body(self, text: str | None = None) -> dict[str, Any]:
        """Return the body the next request would send (with ``text`` as its message), sending nothing.

        Fitting is done without the summary call, so a preview never touches the network.
        """
        if text:
            return self.plan(text, summarize=False).body
        return self.body(self.conversation.messages())


__all__ = ["Plan", "Session", "Summarizer", "Totals", "SUMMARY_PROMPT"]
