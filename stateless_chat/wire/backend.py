"""The backend seam: send one chat-completions body, get back a ``Reply`` that owns its stream.

``ChatBackend`` is the one interface the core talks to. ``transport.OpenAIBackend``
implements it for one endpoint (the only code that imports ``openai``); ``Failover``
wraps several backends with retries, backoff and failover, and is a ``ChatBackend``
itself. A backend turns what arrives into neutral ``Chunk`` values; ``Reply`` puts
them together (text, tool calls, usage, finish reason) the same way for every backend.

As in ``llm``'s ``Response``, a reply records the exact body it sent and is read once:
iterate it for the text deltas as they arrive, or ``wait()`` for all of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from stateless_chat.core.messages import Event, ToolCall, Usage
from stateless_chat.errors import StreamError
from stateless_chat.sanitize import whole_characters
from stateless_chat.wire.request import ChatRequest


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of one tool call in a streamed reply; pieces with the same ``index`` join up."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Chunk:
    """One parsed piece of a reply: text, tool-call pieces, the finish reason, usage, and a note
    when the server sent something we had to ignore (e.g. usage that is not a whole number)."""

    text: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    note: str = ""


class _CallParts:
    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []


class Reply:
    """The reply to one request. It owns its stream and records the body that was sent.

    Iterating yields the text deltas as they arrive (once); when the stream has ended
    cleanly, ``done`` is True and ``text``, ``tool_calls``, ``usage`` and
    ``finish_reason`` are final. A stream that ends without a finish reason raises
    ``StreamError``. ``close()`` hangs up (the server stops generating).
    """

    def __init__(
        self,
        body: Mapping[str, Any],
        endpoint: str,
        chunks: Iterator[Chunk],
        *,
        name: str | None = None,
        close: Callable[[], None] = lambda: None,
    ) -> None:
        self.body = body
        self.endpoint = endpoint  # the base URL that answered, credentials removed
        self.name = name or endpoint  # how messages name it (host:port)
        self._chunks = chunks
        self._close = close
        self._buffer: list[Chunk] = []
        self._parts: list[str] = []
        self._calls: dict[int, _CallParts] = {}
        self._read = False
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.notes: list[str] = []
        self.done = False
        # Asked when the stream fails mid-reply; it may raise a better error (the server died).
        self.on_failure: Callable[[], None] | None = None

    def prefetch(self) -> None:
        """Read until the first chunk that carries anything, keeping it for iteration.

        Failures before the first token raise here, where nothing has been shown yet, so
        ``Failover`` can retry them like any connection failure.
        """
        for chunk in self._chunks:
            self._buffer.append(chunk)
            if chunk.text or chunk.tool_calls or chunk.finish_reason:
                return

    def _pending(self) -> Iterator[Chunk]:
        while self._buffer:
            yield self._buffer.pop(0)
        yield from self._chunks

    def __iter__(self) -> Iterator[str]:
        if self._read:
            raise RuntimeError("a reply can be read only once")
        self._read = True
        try:
            for chunk in self._pending():
                self._take(chunk)
                if chunk.text:
                    self._parts.append(chunk.text)
                    yield chunk.text
        except StreamError:
            if self.on_failure is not None:
                self.on_failure()
            raise
        finally:
            self.close()
        if self.finish_reason is None:
            raise StreamError(f"the reply from {self.name} ended before it was finished")
        self.done = True

    def _take(self, chunk: Chunk) -> None:
        if chunk.usage is not None:
            self.usage = chunk.usage if self.usage is None else self.usage.merged(chunk.usage)
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if chunk.note and chunk.note not in self.notes:
            self.notes.append(chunk.note)
        for piece in chunk.tool_calls:
            parts = self._calls.setdefault(piece.index, _CallParts())
            parts.id = piece.id or parts.id
            parts.name = piece.name or parts.name
            parts.arguments.append(piece.arguments)

    def wait(self) -> Reply:
        """Read the whole reply (if not yet read) and return it."""
        if not self._read:
            for _ in self:
                pass
        return self

    def close(self) -> None:
        """Hang up: the connection is closed, so the server stops generating. Safe to call twice."""
        self._close()

    @property
    def text(self) -> str:
        """Return the text received so far (all of it once ``done``)."""
        return "".join(self._parts)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """Return the tool calls the reply asks for, in the order the server numbered them."""
        return tuple(
            ToolCall(parts.id or f"call_{index}", parts.name, "".join(parts.arguments))
            for index, parts in sorted(self._calls.items())
        )


class ChatBackend(Protocol):
    """Sends one ``ChatRequest`` in its endpoint's dialect and returns its reply; ``name`` labels it
    in messages. Events (a retry, a failover, a refused parameter) go to the ``on_event`` of the call."""

    @property
    def name(self) -> str: ...

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """Return the exact JSON body ``send`` would send for ``request`` now."""
        ...

    def send(self, request: ChatRequest, on_event: Callable[[Event], None] = ...) -> Reply:
        """Send ``request`` (streamed when ``request.stream``) and return the reply, not yet read.

        Raises a ``RequestError`` when the request fails before the reply begins.
        """
        ...

    def close(self) -> None: ...


def ignore(event: Event) -> None:
    """The ``on_event`` of a call whose events nobody shows."""


# ---- parsing what a server sent --------------------------------------------------


def _whole(value: object) -> int | None:
    """Return ``value`` when it is a finite, non-negative whole number (as an int), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        return None
    number = int(value)
    return number if number >= 0 else None


_COUNTS = ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "prompt_cache_hit_tokens",
           "prompt_cache_miss_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def parse_usage(raw: object, timings: object = None) -> tuple[Usage | None, str]:
    """Return the usage in a server's ``usage`` object (and llama.cpp's ``timings``), and a note when
    some of it had to be ignored.

    Cached prompt tokens come in several dialects, all turned into ``Usage.cached_tokens``
    (a part of ``prompt_tokens``, so nothing is billed twice):

    * OpenAI, vLLM, OpenRouter, newer llama.cpp: ``prompt_tokens_details.cached_tokens``,
      included in ``prompt_tokens``;
    * DeepSeek: ``prompt_cache_hit_tokens`` + ``prompt_cache_miss_tokens`` = ``prompt_tokens``;
    * Anthropic-style fields that gateways pass through: ``cache_read_input_tokens`` and
      ``cache_creation_input_tokens`` are *not* part of ``input_tokens``, so the prompt is their
      sum; next to an OpenAI ``prompt_tokens`` they are taken as included in it, unless the read
      alone exceeds it;
    * llama.cpp's ``timings``: ``cache_n`` tokens reused, ``prompt_n`` evaluated.

    Usage is untrusted input: a count that is not a finite, non-negative whole number is
    dropped (as if not reported), so it can never crash the client or be saved unreadable.
    """
    times = timings if isinstance(timings, Mapping) else {}
    if not isinstance(raw, Mapping):
        if not times:
            return None, ("" if raw is None else "the server's usage is not an object: ignored")
        raw = {}
    counts = {key: _whole(raw.get(key)) for key in _COUNTS}
    bad = [key for key in _COUNTS if raw.get(key) is not None and counts[key] is None]
    details = raw.get("prompt_tokens_details")
    cached = _whole(details.get("cached_tokens")) if isinstance(details, Mapping) else None
    if isinstance(details, Mapping) and details.get("cached_tokens") is not None and cached is None:
        bad.append("cached_tokens")
    prompt, completion = counts["prompt_tokens"], counts["completion_tokens"]
    hit, miss = counts["prompt_cache_hit_tokens"], counts["prompt_cache_miss_tokens"]
    if hit is not None:
        cached = hit if cached is None else cached
        prompt = prompt if prompt is not None else hit + (miss or 0)
    read, created = counts["cache_read_input_tokens"], counts["cache_creation_input_tokens"]
    if read is not None or created is not None:
        outside = (read or 0) + (created or 0)
        if prompt is None and counts["input_tokens"] is not None:
            prompt = counts["input_tokens"] + outside
        elif prompt is not None and read is not None and read > prompt:
            prompt += outside
        cached = read if cached is None else cached
    if prompt is None and counts["input_tokens"] is not None:
        prompt = counts["input_tokens"]
    if completion is None and counts["output_tokens"] is not None:
        completion = counts["output_tokens"]
    cache_n, prompt_n = _whole(times.get("cache_n")), _whole(times.get("prompt_n"))
    if cached is None and cache_n is not None:
        cached = cache_n
        prompt = prompt if prompt is not None else cache_n + (prompt_n or 0)
    if completion is None:
        completion = _whole(times.get("predicted_n"))
    if prompt is not None and cached is not None:
        cached = min(cached, prompt)
    usage = Usage(prompt, completion, cached)
    note = f"the server's usage ({', '.join(bad)}) is not a whole number: ignored" if bad else ""
    if usage == Usage(None, None, None):
        return None, note
    return usage, note


def _text(value: object) -> str:
    return whole_characters(value) if isinstance(value, str) else ""


def parse_tool_calls(raw: object, *, streamed: bool) -> tuple[ToolCallDelta, ...]:
    """Return the tool-call pieces in a message's (or a delta's) ``tool_calls`` list."""
    if not isinstance(raw, list):
        return ()
    pieces = []
    for position, item in enumerate(raw):
        if not isinstance(item, Mapping):
            continue
        function = item.get("function")
        function = function if isinstance(function, Mapping) else {}
        index = item.get("index") if streamed else position
        pieces.append(ToolCallDelta(
            index=index if isinstance(index, int) and not isinstance(index, bool) else position,
            id=_text(item.get("id")) or None,
            name=_text(function.get("name")) or None,
            arguments=_text(function.get("arguments")),
        ))
    return tuple(pieces)


def parse_chunk(data: object) -> Chunk:
    """Return the ``Chunk`` in one streamed ``chat.completion.chunk`` object (parsed JSON)."""
    if not isinstance(data, Mapping):
        return Chunk()
    usage, note = parse_usage(data.get("usage"), data.get("timings"))
    text, finish = "", None
    calls: tuple[ToolCallDelta, ...] = ()
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            text = _text(delta.get("content"))
            calls = parse_tool_calls(delta.get("tool_calls"), streamed=True)
        finish = _text(choice.get("finish_reason")) or None
    return Chunk(text=text, tool_calls=calls, finish_reason=finish, usage=usage, note=note)


def parse_completion(data: object) -> Chunk | None:
    """Return a whole (non-streamed) completion as one ``Chunk``; None when it holds no message."""
    if not isinstance(data, Mapping):
        return None
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        return None
    usage, note = parse_usage(data.get("usage"), data.get("timings"))
    return Chunk(
        text=_text(message.get("content")),
        tool_calls=parse_tool_calls(message.get("tool_calls"), streamed=False),
        finish_reason=_text(choice.get("finish_reason")) or "stop",
        usage=usage,
        note=note,
    )
