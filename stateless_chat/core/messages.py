"""Value types that flow through the core: messages, history entries and events.

Everything here is a frozen dataclass, so two values compare equal exactly when
their contents do. The core emits events as these plain objects; the terminal
layer (``render.py``) decides how they look.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
EntryKind = Literal["turn", "file", "summary", "memory", "instructions", "skills", "skill", "docs"]
# The kinds of the context slots: entries this run puts in the request (instruction files, the skills
# index, active skills, retrieved documents), never part of the numbered history, never saved.
SLOT_KINDS: frozenset[str] = frozenset({"instructions", "skills", "skill", "docs"})
EvictionHow = Literal["dropped", "folded", "removed"]


@dataclass(frozen=True)
class ToolCall:
    """One function call an assistant message asks for, as the chat API holds it.

    ``arguments`` is the JSON text the model wrote, kept verbatim (it is resent as is).
    """

    id: str
    name: str
    arguments: str

    def to_api(self) -> dict[str, Any]:
        """Return the ``tool_calls`` item the chat-completions API expects."""
        function = {"name": self.name, "arguments": self.arguments}
        return {"id": self.id, "type": "function", "function": function}


@dataclass(frozen=True)
class Image:
    """An image a message carries: its base64 ``data`` and its ``mime`` type."""

    mime: str
    data: str = field(repr=False)

    def url(self) -> str:
        """Return the image as the ``data:`` URL of an ``image_url`` content part."""
        return f"data:{self.mime};base64,{self.data}"


@dataclass(frozen=True)
class Message:
    """One chat message as the API sees it.

    ``content`` may be None only for an assistant message that holds ``tool_calls``;
    a ``tool`` message answers the call named by ``tool_call_id``. A user message may carry
    ``images`` (what tools returned, for a model that reads them): its content is then sent as
    parts, the text first, then one ``image_url`` part per image.
    """

    role: Role
    content: str | None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    images: tuple[Image, ...] = ()

    @property
    def text(self) -> str:
        """Return the content as text ("" for an assistant message that only calls tools)."""
        return self.content or ""

    def to_api(self) -> dict[str, Any]:
        """Return the JSON object the chat-completions API expects for this message."""
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.images:
            parts = [{"type": "image_url", "image_url": {"url": image.url()}} for image in self.images]
            data["content"] = [{"type": "text", "text": self.content or ""}, *parts]
        if self.name is not None:
            data["name"] = self.name
        if self.tool_calls:
            data["tool_calls"] = [call.to_api() for call in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        return data


def content_parts(content: Any) -> tuple[str | None, tuple[Image, ...]]:
    """Return the text and the images of a message's ``content`` as the API holds it (a string, or
    text and ``image_url`` parts with ``data:`` URLs; other parts are left out)."""
    if content is None or isinstance(content, str):
        return content, ()
    texts: list[str] = []
    images: list[Image] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        url = (part.get("image_url") or {}).get("url") if part.get("type") == "image_url" else None
        if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
            mime, data = url[5:].split(";base64,", 1)
            images.append(Image(mime, data))
    return "\n".join(texts), tuple(images)


@dataclass(frozen=True)
class Eviction:
    """How an entry left the request, and during which turn.

    ``dropped``: evicted by drop-oldest to fit the budget; ``folded``: summarized into the
    running summary; ``removed``: taken out by the user (/drop, /trim, /clear).
    """

    how: EvictionHow
    turn: int


@dataclass(frozen=True)
class Entry:
    """A message in the conversation, with what the client knows about it.

    ``id`` is the stable number ``/history`` shows (1-based, never reused).
    ``turn`` groups a user message with everything that answered it (the reply, tool
    calls and their results); eviction removes whole turns, so a request never opens
    with an orphan reply and a tool result is never separated from its call.
    ``tokens`` is the message's billed size (content plus per-message overhead),
    counted once when the entry is created. ``eviction`` is set once the entry is no
    longer sent; ``finish_reason`` is the server's for a reply (``length``: cut short).
    ``recalled`` marks an evicted turn auto recall brought back: it serves the request that needed
    it and, once settled into the history, is the first to leave again when room is needed.
    """

    id: int
    message: Message
    tokens: int
    turn: int
    pinned: bool = False
    kind: EntryKind = "turn"
    source: str | None = None  # the path (/file), the files read (instructions), the skill's name (skill)
    eviction: Eviction | None = None
    finish_reason: str | None = None
    recalled: bool = False

    @property
    def role(self) -> Role:
        return self.message.role

    @property
    def content(self) -> str:
        """Return the message's text ("" for a reply that only calls tools)."""
        return self.message.text

    @property
    def cut(self) -> bool:
        """Return whether this reply stopped at the length limit rather than where the model ended it."""
        return self.finish_reason == "length"


@dataclass(frozen=True)
class Usage:
    """Token usage the server reported for one request (``None`` when it did not say).

    ``prompt_tokens`` always includes ``cached_tokens``, the part of the prompt the server
    read from its prefix cache (billed at the cached price), whatever dialect it spoke.
    """

    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None = None

    def merged(self, later: Usage) -> Usage:
        """Return ``later`` with what it does not say taken from this usage (a stream may report its
        counts in two chunks: llama.cpp's timings, then the usage)."""
        return Usage(*(new if new is not None else old for new, old in zip(
            (later.prompt_tokens, later.completion_tokens, later.cached_tokens),
            (self.prompt_tokens, self.completion_tokens, self.cached_tokens), strict=True)))

    @property
    def uncached_tokens(self) -> int | None:
        """Return the prompt tokens billed at the full input price (None when not reported)."""
        if self.prompt_tokens is None:
            return None
        return max(0, self.prompt_tokens - (self.cached_tokens or 0))


def span(ids: Sequence[int], mark: str = "#") -> str:
    """Return numbers with runs joined, as the user types message numbers: ``#3``, ``#3-#6``,
    ``#3-#6, #9`` (``mark`` is what precedes each number)."""
    ordered = sorted(set(ids))
    if not ordered:
        return "nothing"
    runs: list[list[int]] = []
    for number in ordered:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ", ".join(f"{mark}{run[0]}" + (f"-{mark}{run[-1]}" if len(run) > 1 else "") for run in runs)


# ---- events -----------------------------------------------------------------
# Message numbers in events are the ones /history shows, so the user can type them back.


@dataclass(frozen=True)
class Evicted:
    """One whole turn (messages ``ids``) was dropped from the request to fit the budget;
    ``recalled``: a turn auto recall had brought back, leaving again (first, before older turns)."""

    turn: int
    ids: tuple[int, ...]
    tokens: int
    total_after: int
    budget: int
    recalled: bool = False


@dataclass(frozen=True)
class Summarized:
    """The oldest turns (messages ``ids``) were folded into the running summary ``summary_id``."""

    ids: tuple[int, ...]
    summary_id: int
    tokens_before: int
    tokens_after: int


@dataclass(frozen=True)
class SummaryFailed:
    """The summary request failed; the policy fell back to dropping the oldest turns."""

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
class ReplyCut:
    """The reply stopped at the length limit (``finish_reason: length``); it is kept, marked as cut."""

    max_tokens: int | None


@dataclass(frozen=True)
class CacheBreak:
    """The request does not start with the whole previous one: the server's cache of it is lost
    past ``shared`` tokens (of the ``previous`` request's), because of ``cause``."""

    cause: str
    shared: int
    previous: int


@dataclass(frozen=True)
class ToolCalled:
    """The model asked for a tool call, shown as ``→ server.tool {arguments}``."""

    tool: str
    arguments: str


@dataclass(frozen=True)
class ToolAnswered:
    """A tool call's result joined the turn: its billed size, and whether it was cut, failed or refused."""

    tool: str
    tokens: int
    cut_from: int | None = None  # the result's size before it was cut to tool_result_max_tokens
    error: bool = False
    refused: bool = False


@dataclass(frozen=True)
class ToolProgress:
    """A running tool call's server said how far it is: ``progress`` of ``total`` (when known), and
    perhaps a message. Shown live on the call's line."""

    tool: str
    progress: float
    total: float | None = None
    message: str | None = None


@dataclass(frozen=True)
class ToolStepsExhausted:
    """The model still asked for tools after ``limit`` steps: the turn ends there."""

    limit: int


@dataclass(frozen=True)
class Recalled:
    """An evicted turn (messages ``ids``) was brought back for this request, right before the new
    message, because it shares ``words`` with it (auto recall)."""

    turn: int
    ids: tuple[int, ...]
    tokens: int
    words: tuple[str, ...] = ()


@dataclass(frozen=True)
class Retrieved:
    """A chunk of an added document went into the request, right before the new message: its
    ``source`` (``path:first-last`` lines), its heading path and its size (our count)."""

    source: str
    tokens: int
    heading: str = ""


@dataclass(frozen=True)
class Remembered:
    """A standing sentence was kept in the memory slot as note ``m{id}`` (from message ``source``, or
    by ``/remember`` when None)."""

    id: int
    text: str
    tokens: int
    source: int | None = None


@dataclass(frozen=True)
class MemoryFull:
    """Standing sentences were not kept: with them the memory slot would pass ``budget`` tokens (it
    holds ``used``); ``freeable`` names the largest notes (label, tokens) ``/forget`` could drop."""

    texts: tuple[str, ...]
    used: int
    budget: int
    freeable: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Notice:
    """A plain informational line from the core."""

    text: str


Event = (
    Evicted | Summarized | SummaryFailed | OverBudget | Retrying | FailedOver | ContextRetry
    | UsageMissing | ReplyCut | CacheBreak | ToolCalled | ToolAnswered | ToolProgress | ToolStepsExhausted
    | Recalled | Retrieved | Remembered | MemoryFull | Notice
)


def _quoted(text: str, width: int = 100) -> str:
    """Return ``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def describe(event: Event) -> str:
    """Return the one-line, plain-text description of ``event`` that the UI shows."""
    if isinstance(event, Evicted):
        count = len(event.ids)
        noun = "message" if count == 1 else "messages"
        if event.recalled:
            return (f"evicted {span(event.ids)} (recalled turn {event.turn} left again, {count} {noun}, "
                    f"{event.tokens:,} tokens): {event.total_after:,} / {event.budget:,}")
        return (
            f"evicted {span(event.ids)} (turn {event.turn}, {count} {noun}, {event.tokens:,} tokens): "
            f"{event.total_after:,} / {event.budget:,}"
        )
    if isinstance(event, Summarized):
        return (
            f"summarized {span(event.ids)} ({event.tokens_before:,} tokens) "
            f"into the summary #{event.summary_id} ({event.tokens_after:,} tokens)"
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
        return ("the server reported no usage, so token counts are our own estimates (some servers, "
                "llama-cpp-python among them, send none with a streamed reply; --no-stream gets it)")
    if isinstance(event, CacheBreak):
        return (f"cache break: {event.cause}; {event.shared:,} of the last request's {event.previous:,} "
                "tokens can be read from the server's cache")
    if isinstance(event, ToolCalled):
        return f"→ {event.tool} {event.arguments}"
    if isinstance(event, ToolAnswered):
        if event.refused:
            return f"← {event.tool} not run: the call was not approved"
        cut = f", cut from {event.cut_from:,}" if event.cut_from is not None else ""
        return f"← {event.tokens:,} tokens{cut}" + (" (the tool reported an error)" if event.error else "")
    if isinstance(event, ToolProgress):
        done = f"{event.progress:g}/{event.total:g}" if event.total else f"{event.progress:g}"
        if event.total:
            done += f" ({min(event.progress / event.total, 1):.0%})"
        return f"… {event.tool} {done}" + (f": {event.message}" if event.message else "")
    if isinstance(event, ToolStepsExhausted):
        return f"stopped after {event.limit} tool steps (max_tool_steps): the model still asked for tools"
    if isinstance(event, Recalled):
        said = f': "{" ".join(event.words)}"' if event.words else ""
        return f"recalled turn {event.turn} ({event.tokens:,} tokens){said}"
    if isinstance(event, Retrieved):
        heading = f" · {event.heading}" if event.heading else ""
        return f"retrieved {event.source} ({event.tokens:,} tokens){heading}"
    if isinstance(event, Remembered):
        return f'kept as standing (m{event.id}): "{_quoted(event.text)}" · /forget m{event.id}'
    if isinstance(event, MemoryFull):
        what = (f'"{_quoted(event.texts[0])}"' if len(event.texts) == 1
                else f'{len(event.texts)} sentences ("{_quoted(event.texts[0])}" ...)')
        free = " or ".join(f"/forget {label} ({tokens:,} tokens)" for label, tokens in event.freeable)
        room = f"{free} would make room, or raise memory_budget" if free else "raise memory_budget"
        return (f"not kept as standing: {what}: the memory would pass memory_budget ({event.used:,} of "
                f"{event.budget:,} tokens used); {room}")
    if isinstance(event, ReplyCut):
        limit = f" (max_tokens {event.max_tokens:,})" if event.max_tokens is not None else ""
        return f"reply cut at the length limit{limit}"
    return event.text
