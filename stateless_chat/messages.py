"""Value types that flow through the core: messages, history entries and events.

Everything here is a frozen dataclass, so two values compare equal exactly when
their contents do. The core emits events as these plain objects; the terminal
layer (``render.py``) decides how they look.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]
EntryKind = Literal["turn", "file", "summary"]


@dataclass(frozen=True)
class Message:
    """One chat message as the API sees it."""

    role: Role
    content: str
    name: str | None = None

    def to_api(self) -> dict[str, str]:
        """Return the JSON object the chat-completions API expects for this message."""
        data = {"role": self.role, "content": self.content}
        if self.name is not None:
            data["name"] = self.name
        return data


@dataclass(frozen=True)
class Entry:
    """A message in the conversation, with what the client knows about it.

    ``id`` is the stable number ``/history`` shows (1-based, never reused).
    ``turn`` groups a user message with the assistant reply that answered it;
    eviction removes whole turns so a request never opens with an orphan reply.
    ``tokens`` is the message's billed size (content plus per-message overhead),
    counted once when the entry is created.
    """

    id: int
    message: Message
    tokens: int
    turn: int
    pinned: bool = False
    kind: EntryKind = "turn"
    source: str | None = None  # the path, for entries added by /file

    @property
    def role(self) -> Role:
        return self.message.role

    @property
    def content(self) -> str:
        return self.message.content


@dataclass(frozen=True)
class Usage:
    """Token usage the server reported for one request (``None`` when it did not say)."""

    prompt_tokens: int | None
    completion_tokens: int | None


# ---- events -----------------------------------------------------------------


@dataclass(frozen=True)
class Evicted:
    """Whole turns were dropped from the request to fit the budget."""

    turns: tuple[int, ...]
    messages: int
    tokens: int
    total_after: int
    budget: int


@dataclass(frozen=True)
class Summarized:
    """The oldest turns were folded into the running summary."""

    turns: tuple[int, ...]
    tokens_before: int
    tokens_after: int


@dataclass(frozen=True)
class SummaryFailed:
    """The summary call failed; the policy fell back to dropping the oldest turns."""

    reason: str


@dataclass(frozen=True)
class OverBudget:
    """The request exceeds the budget and the policy chose not to evict."""

    total: int
    budget: int


@dataclass(frozen=True)
class Retrying:
    """A request failed with a retryable error and will be sent again after ``delay`` seconds."""

    endpoint: str
    attempt: int
    max_retries: int
    delay: float
    reason: str


@dataclass(frozen=True)
class FailedOver:
    """An endpoint failed; the same payload goes to ``next_endpoint``."""

    endpoint: str
    reason: str
    next_endpoint: str


@dataclass(frozen=True)
class ContextRetry:
    """The server said the context was too long; history was cut further and the request resent."""

    reported_limit: int | None
    reported_tokens: int | None
    new_budget: int


@dataclass(frozen=True)
class UsageMissing:
    """The server's reply carried no ``usage``; counts stay our own estimates."""


@dataclass(frozen=True)
class Notice:
    """A plain informational line from the core."""

    text: str


Event = (
    Evicted | Summarized | SummaryFailed | OverBudget | Retrying | FailedOver | ContextRetry
    | UsageMissing | Notice
)


@dataclass(frozen=True)
class TurnStats:
    """What one turn cost: our estimate and what the server reported.

    ``summary_prompt_tokens`` and ``summary_completion_tokens`` are what the summary requests
    made since the previous turn cost (the server's counts; our count of a prompt it did not
    report), including any made for a turn that then failed or by ``/summarize``.
    """

    turn: int
    estimated_prompt_tokens: int
    reported_prompt_tokens: int | None
    reported_completion_tokens: int | None
    baseline_prompt_tokens: int  # what the request would have cost with no eviction (our count)
    evictions: int = 0
    events: tuple[Event, ...] = field(default=())
    summary_prompt_tokens: int = 0
    summary_completion_tokens: int = 0

    @property
    def sent(self) -> int:
        """Return the prompt tokens this turn was billed, its summary requests included: the
        server's count, else ours."""
        reported = self.reported_prompt_tokens
        return (self.estimated_prompt_tokens if reported is None else reported) + self.summary_prompt_tokens

    @property
    def baseline_sent(self) -> int:
        """Return the no-eviction cost in ``sent``'s units (our count scaled by the server's ratio).

        With no eviction this equals ``sent`` even when the server's tokenizer is not ours.
        """
        reported = self.reported_prompt_tokens
        if reported is None or self.estimated_prompt_tokens <= 0:
            return self.baseline_prompt_tokens
        return round(self.baseline_prompt_tokens * reported / self.estimated_prompt_tokens)


def _turns(turns: tuple[int, ...]) -> str:
    if not turns:
        return "turns"
    if len(turns) == 1:
        return f"turn {turns[0]}"
    if list(turns) == list(range(turns[0], turns[-1] + 1)):
        return f"turns {turns[0]}-{turns[-1]}"
    return "turns " + ", ".join(str(t) for t in turns)


def describe(event: Event) -> str:
    """Return the one-line, plain-text description of ``event`` that the UI shows."""
    if isinstance(event, Evicted):
        noun = "message" if event.messages == 1 else "messages"
        return (
            f"evicted {_turns(event.turns)} ({event.messages} {noun}, {event.tokens:,} tokens): "
            f"{event.total_after:,} / {event.budget:,}"
        )
    if isinstance(event, Summarized):
        return (
            f"summarized {_turns(event.turns)} ({event.tokens_before:,} tokens) "
            f"into {event.tokens_after:,} tokens"
        )
    if isinstance(event, SummaryFailed):
        return f"summary failed ({event.reason}); dropped the oldest turns instead"
    if isinstance(event, OverBudget):
        return f"over budget: {event.total:,} / {event.budget:,} tokens (policy none: nothing evicted)"
    if isinstance(event, Retrying):
        return (
            f"retry {event.attempt}/{event.max_retries} on {event.endpoint} in {event.delay:.1f} s: "
            f"{event.reason}"
        )
    if isinstance(event, FailedOver):
        return f"{event.endpoint} failed ({event.reason}); sending the same request to {event.next_endpoint}"
    if isinstance(event, ContextRetry):
        said = ""
        if event.reported_limit and event.reported_tokens:
            said = f" (server: {event.reported_tokens:,} > {event.reported_limit:,})"
        return f"context too long{said}; cut history to a budget of {event.new_budget:,} and resent"
    if isinstance(event, UsageMissing):
        return "the server reported no usage; token counts are our own estimates"
    return event.text
