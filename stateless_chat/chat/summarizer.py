"""The summary writer: one separate stateless request to the chat's endpoint for the running summary.

The ``summarize`` policy (``core.summary.Summarize``) decides what to fold and asks its writer
once; this is the writer a chat gives it. The request is a ``ChatRequest`` like any other,
so the endpoint's dialect shapes it (a server that refused ``max_tokens`` gets
``max_completion_tokens`` here too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stateless_chat.core.context import Candidate, request_size
from stateless_chat.core.messages import Entry, Event, Message
from stateless_chat.core.summary import (
    FOLD_SLACK,
    SUMMARY_MIN_REPLY,
    SUMMARY_PROMPT,
    SummaryError,
    summary_cap,
    summary_instruction,
    summary_message,
    summary_text,
    transcript_line,
)
from stateless_chat.core.tokens import PER_MESSAGE, REPLY_PRIMING
from stateless_chat.wire.backend import ChatBackend, ignore
from stateless_chat.wire.request import ChatRequest


@dataclass(frozen=True)
class Spent:
    """Tokens spent on summary requests that no turn has been billed for yet."""

    prompt: int = 0
    cached: int = 0
    completion: int = 0

    def __add__(self, other: Spent) -> Spent:
        return Spent(self.prompt + other.prompt, self.cached + other.cached,
                     self.completion + other.completion)


class Summaries:
    """What a chat's summary requests leave behind across turns: the summaries written, so that a fold
    asked for again (a turn that failed after its summary, then retried) is answered without a second
    request, and what they cost that no turn has been billed for yet: an answered request cost tokens
    even when its turn then failed, or when ``/summarize`` made it between turns, so each completed
    turn takes what the account holds."""

    def __init__(self) -> None:
        self._spent = Spent()
        self.written: dict[tuple[int, ...], str] = {}

    def add(self, spent: Spent) -> None:
        self._spent = self._spent + spent

    def take(self) -> Spent:
        """Return what the account holds, and empty it."""
        spent, self._spent = self._spent, Spent()
        return spent


class Summarizer:
    """Writes summaries by a separate stateless request to ``backend``.

    The request is aligned with the server's cache: it sends the conversation's messages as
    the last request sent them (system prompt, standing memory, summary, history), so the server
    reads that prefix from its cache, and asks in one final user message for the summary of the messages
    to fold. When that request would not fit ``context_limit``, it falls back to a new request
    of its own: the summary prompt and a transcript of the folded messages, within the budget.
    Identical folds are answered from ``summaries`` (a retried turn refits the same turns), and
    what the requests cost goes to its account.
    """

    def __init__(self, backend: ChatBackend, *, model: str, temperature: float | None,
                 measure: Callable[[Message], int], context_limit: int, summaries: Summaries,
                 on_event: Callable[[Event], None] = ignore) -> None:
        self.backend = backend
        self.model = model
        self.temperature = temperature
        self.measure = measure
        self.context_limit = context_limit
        self.on_event = on_event
        self.summaries = summaries

    def _aligned(self, candidate: Candidate, folded: Sequence[Entry]) -> tuple[list[Message], int] | None:
        """Return the cache-aligned request's messages and its prompt size, or None when it and the
        summary's reply would not fit the context window."""
        prefix = list(candidate.head) + list(candidate.history)  # as the last request sent them
        prefix += candidate.recalled  # after what the last request sent: its cached prefix stays whole
        ask = Message("user", summary_instruction(candidate, folded))
        prompt = sum(e.tokens for e in prefix) + self.measure(ask) + REPLY_PRIMING
        if prompt + summary_cap(candidate.budget) > self.context_limit:
            return None
        return [e.message for e in prefix] + [ask], prompt

    def capacity(self, candidate: Candidate) -> int | None:
        """Return how many tokens of messages one summary request can carry: no limit when the
        cache-aligned request fits the context window; else what a transcript request within the
        budget can carry (the prompt, the previous summary, and ``SUMMARY_MIN_REPLY`` for the reply)."""
        if self._aligned(candidate, ()) is not None:
            return None
        # Measured each time: the counter changes with /model, and this runs only when folding.
        prompt = self.measure(Message("system", SUMMARY_PROMPT)) + PER_MESSAGE
        earlier = candidate.summary.tokens if candidate.summary is not None else 0
        return candidate.budget - prompt - earlier - SUMMARY_MIN_REPLY - REPLY_PRIMING - FOLD_SLACK

    def write(self, candidate: Candidate, folded: Sequence[Entry]) -> str:
        """Return the summary of the candidate's summary and ``folded`` from one request."""
        previous = summary_text(candidate.summary)
        key = (hash(previous), *(hash(e.message) for e in folded))
        cached = self.summaries.written.get(key)
        if cached is not None:
            return cached
        measure = self.measure
        budget = candidate.budget
        longest = summary_cap(budget) - measure(summary_message(""))
        aligned = self._aligned(candidate, folded)
        if aligned is not None:
            messages, prompt = aligned
            room = self.context_limit - prompt
        else:
            # The earlier summary opens the transcript as it is, with no heading line: the prompt
            # says what it is, and every fold then wraps it in as little new text as possible.
            lines = [previous] if previous else []
            lines += [transcript_line(e.message) for e in folded]
            messages = [Message("system", SUMMARY_PROMPT), Message("user", "\n\n".join(lines))]
            prompt = request_size(Entry(0, m, measure(m), 0) for m in messages)
            room = budget - prompt
        # The reply gets what the request leaves, at most what the summary's cap leaves its text
        # (past the header and framing), and never less than SUMMARY_MIN_REPLY.
        request = ChatRequest.of(self.model, messages, max(SUMMARY_MIN_REPLY, min(longest, room)),
                                 temperature=self.temperature)
        reply = self.backend.send(request, self.on_event).wait()
        usage = reply.usage
        reported = usage.prompt_tokens if usage is not None else None
        self.summaries.add(Spent(prompt if reported is None else reported,
                                (usage.cached_tokens if usage is not None else None) or 0,
                                (usage.completion_tokens if usage is not None else None) or 0))
        text = reply.text.strip()
        if not text:
            raise SummaryError("the summary came back empty")
        self.summaries.written[key] = text
        return text


__all__ = ["Spent", "Summaries", "Summarizer"]
