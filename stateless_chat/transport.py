"""The one network seam: send a chat-completions body, stream the reply back.

This is the only module that imports ``openai`` (lazily: the import costs ~0.6 s,
and ``--dry-run`` or ``--help`` never need it). The SDK's own retries are off; this
module retries with exponential backoff and jitter (honouring ``Retry-After``) so
that every retry can be reported as an event, and fails over to the next endpoint
with the same self-contained payload when one endpoint gives up.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from stateless_chat.errors import (
    ConnectError,
    ContextLengthError,
    RequestError,
    ServerError,
    StreamError,
    redact,
)
from stateless_chat.messages import Event, FailedOver, Retrying, Usage
from stateless_chat.sanitize import strip_controls, whole_characters

if TYPE_CHECKING:
    import openai

PLACEHOLDER_KEY = "sk-no-key-needed"
_RETRY_STATUSES = {408, 409, 429}
_BODY_SHOWN = 200  # characters of a non-JSON error body worth showing in a one-line message
_CONTEXT_NUMBERS = re.compile(r"maximum context length is (\d+).*?(?:resulted in|requested) (\d+)", re.S)


@dataclass
class Reply:
    """A complete reply: its text, the server's usage (if reported) and the endpoint that gave it."""

    text: str
    usage: Usage | None
    endpoint: str
    finish_reason: str | None = None


@dataclass
class StreamedReply:
    """An iterator of text deltas; ``reply`` is filled in when the stream has ended cleanly."""

    deltas: Iterator[str]
    endpoint: str
    reply: Reply | None = field(default=None)


def host_of(url: str) -> str:
    """Return ``host:port`` of an endpoint URL, for one-line messages."""
    parts = urlsplit(url)
    return parts.netloc or url


class Transport:
    """Sends request bodies to a list of OpenAI-compatible endpoints, with retries and failover."""

    def __init__(
        self,
        endpoints: Sequence[str],
        api_key: str | None,
        *,
        timeout: float = 60.0,
        max_retries: int = 2,
        on_event: Callable[[Event], None] = lambda event: None,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        health_check: Callable[[], None] | None = None,
    ) -> None:
        """``health_check``, when given, is asked whenever an endpoint cannot be reached or a
        reply breaks off: if it raises (e.g. the local model's server has died), that error is
        reported instead, at once and without retries, since retrying cannot help."""
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self.endpoints = tuple(endpoints)
        self._api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.on_event = on_event
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep
        self._health_check = health_check
        self._clients: dict[str, openai.OpenAI] = {}
        self.preferred = 0  # index of the endpoint that last worked; the next request starts there

    # ---- public --------------------------------------------------------------

    def stream(self, body: dict[str, Any]) -> StreamedReply:
        """Open a streamed completion (retrying and failing over) and return its deltas.

        Retries and failover happen only before the first delta; a stream cut after
        that raises ``StreamError`` from the iterator, and the caller keeps nothing.
        """
        body = {**body, "stream": True}
        stream, endpoint = self._open(body)
        result = StreamedReply(deltas=iter(()), endpoint=endpoint)
        result.deltas = self._deltas(stream, endpoint, result)
        return result

    def complete(self, body: dict[str, Any]) -> Reply:
        """Send a non-streamed request (retrying and failing over) and return the whole reply."""
        body = {key: value for key, value in body.items() if key not in ("stream", "stream_options")}
        response, endpoint = self._open(body)
        try:
            choice = response.choices[0]
            text = whole_characters(choice.message.content or "")
            finish = choice.finish_reason
        except (AttributeError, IndexError, TypeError) as error:
            raise StreamError(f"{host_of(endpoint)} sent a reply without a message") from error
        return Reply(text=text, usage=_usage(getattr(response, "usage", None)), endpoint=endpoint,
                     finish_reason=finish)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    # ---- internals -----------------------------------------------------------

    def _client(self, endpoint: str) -> openai.OpenAI:
        client = self._clients.get(endpoint)
        if client is None:
            import openai

            client = openai.OpenAI(
                base_url=endpoint,
                api_key=self._api_key or PLACEHOLDER_KEY,
                max_retries=0,
                timeout=self.timeout,
            )
            self._clients[endpoint] = client
        return client

    def _open(self, body: dict[str, Any]) -> tuple[Any, str]:
        """Return (SDK response, endpoint) from the first endpoint that answers, starting at the preferred."""
        order = [(self.preferred + i) % len(self.endpoints) for i in range(len(self.endpoints))]
        for index, next_index in zip(order, [*order[1:], None], strict=True):
            endpoint = self.endpoints[index]
            try:
                response = self._with_retries(endpoint, body, give_up_on_refusal=next_index is not None)
            except (ConnectError, ServerError) as error:
                if next_index is None or not _can_fail_over(error):
                    raise
                self.on_event(FailedOver(host_of(endpoint), str(error), host_of(self.endpoints[next_index])))
                continue
            self.preferred = index
            return response, endpoint
        raise AssertionError("unreachable: the last endpoint returns or raises")

    def _with_retries(self, endpoint: str, body: dict[str, Any], *, give_up_on_refusal: bool) -> Any:
        attempt = 0
        while True:
            try:
                return self._client(endpoint).chat.completions.create(**body)
            except Exception as raw:  # the SDK's errors, translated below
                error, retry_after = self._translate(raw, endpoint)
            if isinstance(error, ConnectError) and self._health_check is not None:
                self._health_check()
            if not _is_retryable(error) or attempt >= self.max_retries:
                raise error
            if give_up_on_refusal and _is_refusal(error):
                raise error
            attempt += 1
            delay = self._delay(attempt, retry_after)
            self.on_event(Retrying(host_of(endpoint), attempt, self.max_retries, delay, str(error)))
            self._sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Return the wait before retry ``attempt``: ``Retry-After`` when given, else backoff with jitter."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), 60.0)
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _deltas(self, stream: Any, endpoint: str, result: StreamedReply) -> Iterator[str]:
        parts: list[str] = []
        usage: Usage | None = None
        finish: str | None = None
        try:
            for chunk in stream:
                if getattr(chunk, "usage", None) is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices or ():
                    content = choice.delta.content if choice.delta is not None else None
                    if content:
                        content = whole_characters(content)
                        parts.append(content)
                        yield content
                    if choice.finish_reason:
                        finish = choice.finish_reason
        except Exception as raw:  # GeneratorExit (the caller stopped early) is no Exception
            error, _ = self._translate(raw, endpoint)
            if not isinstance(error, StreamError):
                # Mid-stream, httpx's errors arrive unwrapped: the connection broke off.
                cause = raw.__cause__ or raw.__context__ or raw
                detail = self._clean(str(cause)) or type(cause).__name__
                error = StreamError(f"the reply from {host_of(endpoint)} broke off: {detail}")
            if self._health_check is not None:
                self._health_check()
            raise error from raw
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if finish is None:
            raise StreamError(f"the reply from {host_of(endpoint)} ended before it was finished")
        result.reply = Reply(text="".join(parts), usage=usage, endpoint=endpoint, finish_reason=finish)

    def _clean(self, text: str) -> str:
        """Return outside text fit for a terminal (stderr, status lines): one line, no controls, no key."""
        return redact(" ".join(strip_controls(text).split()), self._api_key)

    def _translate(self, raw: Exception, endpoint: str) -> tuple[RequestError, float | None]:
        """Return our error for an SDK/network exception (key redacted) and any Retry-After seconds."""
        import openai

        host = host_of(endpoint)
        clean = self._clean
        if isinstance(raw, RequestError):
            return raw, None
        if isinstance(raw, openai.APITimeoutError):
            hint = "raise timeout in the config file if the server is just slow"
            return ConnectError(f"{host} did not answer within {self.timeout:g} s ({hint})"), None
        if isinstance(raw, openai.APIConnectionError):
            cause = raw.__cause__ or raw.__context__
            detail = clean(str(cause)) if cause and str(cause) else "connection failed"
            # httpx's ConnectError means no connection was made; anything else broke an open one.
            if cause is None or type(cause).__name__ == "ConnectError":
                return ConnectError(f"could not connect to {host}: {detail} (is the server running?)"), None
            return ConnectError(f"the connection to {host} broke: {detail}"), None
        if isinstance(raw, openai.APIStatusError):
            status = raw.status_code
            message = clean(_error_message(raw))
            retry_after = _retry_after(raw)
            if status == 400 and _is_context_error(raw, message):
                limit, requested = _context_numbers(raw, message)
                return ContextLengthError(f"{host}: {message}", limit=limit, requested=requested), None
            if status == 401:
                hint = "check OPENAI_API_KEY or api_key in the config file"
                return ServerError(f"{host} rejected the API key (401): {hint}", status), None
            return ServerError(f"{host} answered {status}: {message}", status), retry_after
        if isinstance(raw, openai.APIError):
            return StreamError(f"{host} sent a reply that could not be read: {clean(str(raw))}"), None
        if isinstance(raw, (json.JSONDecodeError, UnicodeDecodeError)):  # not any ValueError: bad URLs are
            hint = "is the base URL an OpenAI-compatible endpoint?"
            detail = clean(str(raw))
            return StreamError(f"{host} sent a reply that is not valid JSON ({detail}): {hint}"), None
        return RequestError(f"request to {host} failed: {type(raw).__name__}: {clean(str(raw))}"), None


def _usage(raw: Any) -> Usage | None:
    if raw is None:
        return None
    return Usage(getattr(raw, "prompt_tokens", None), getattr(raw, "completion_tokens", None))


def _error_message(error: Any) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    if isinstance(body, str) and body.strip():
        # A proxy's error page, not JSON: show its start on one line.
        text = " ".join(body.split())
        return text if len(text) <= _BODY_SHOWN else text[: _BODY_SHOWN - 1] + "…"
    return str(getattr(error, "message", "") or error)


def _is_context_error(error: Any, message: str) -> bool:
    """Return whether a 400 says the request is longer than the context: OpenAI's and vLLM's
    ``context_length_exceeded``, llama.cpp's ``exceed_context_size_error``, or words to that effect.

    The SDK has already unwrapped ``{"error": {...}}``: ``code`` and ``type`` come from the inner object.
    """
    marks = (getattr(error, "code", None), getattr(error, "type", None))
    text = message.lower()
    return any(mark in ("context_length_exceeded", "exceed_context_size_error") for mark in marks) or any(
        words in text for words in ("context length", "context window", "context size")
    )


def _context_numbers(error: Any, message: str) -> tuple[int | None, int | None]:
    """Return the (limit, requested) tokens the server reported: llama.cpp's fields, else OpenAI's wording."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        limit, requested = body.get("n_ctx"), body.get("n_prompt_tokens")
        if isinstance(limit, int) and isinstance(requested, int):
            return limit, requested
    found = _CONTEXT_NUMBERS.search(message)
    return (int(found.group(1)), int(found.group(2))) if found else (None, None)


def _retry_after(error: Any) -> float | None:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after")
    if not isinstance(value, str):
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
    return seconds if math.isfinite(seconds) else None  # "nan" would reach time.sleep and raise


def _is_retryable(error: RequestError) -> bool:
    if isinstance(error, ConnectError):
        return True
    if isinstance(error, ServerError) and error.status is not None:
        return error.status in _RETRY_STATUSES or error.status >= 500
    return False


def _can_fail_over(error: RequestError) -> bool:
    """An endpoint that is down or overloaded can be replaced; a rejected request cannot."""
    return _is_retryable(error)


def _is_refusal(error: RequestError) -> bool:
    return isinstance(error, ConnectError) and "refused" in str(error).lower()
