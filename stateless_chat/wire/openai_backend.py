"""The openai implementation of the backend seam: one endpoint, one attempt per request.

This is the only module that imports ``openai`` (lazily: the import costs ~0.4 s,
and ``--dry-run`` or ``--help`` never need it; a streamed reply does not either: ``wire.direct``
sends it as the SDK would, and only an error imports the SDK, to be the SDK's error). The SDK's
own retries are off (``backend.Failover`` retries, so each retry can be shown as an event), and the body
we built is sent as JSON bytes through the SDK's low-level ``post``: the SDK keeps
doing HTTP, streaming (SSE) and errors, but does not walk the body again (its
``chat.completions.create`` spends ~137 µs a message re-validating it).

Errors are mapped by their type: the SDK's timeout, connection and status errors, the
network's ``ConnectionRefusedError``, JSON that does not parse. Anything else is a bug
and propagates.

Credentials: each endpoint is sent its own key (``keys``) or else the one ``api_key``, as
``Authorization: Bearer``. A URL's ``user:password@`` is taken out of the URL the SDK sees
(so no message, error or saved file can show it) and sent as HTTP Basic auth instead, in the
same header: such an endpoint is sent no key. The organization and project the SDK reads from
the environment go to OpenAI's own endpoint only (``is_openai``). Redirects are followed only
within the endpoint's origin, and reply bodies are capped (``wire.Guard``).
"""

from __future__ import annotations

import base64
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from stateless_chat.core.messages import Event, Notice
from stateless_chat.errors import (
    ConnectError,
    ConnectionRefused,
    ContextLengthError,
    MalformedReply,
    ParameterRejected,
    RequestError,
    RequestTimeout,
    ServerError,
    Stalled,
    StreamBroke,
    StreamError,
    keep_secret,
    redact,
)
from stateless_chat.sanitize import public_url, strip_controls, url_password
from stateless_chat.wire import DEFAULT_MAX_REPLY_BYTES, direct
from stateless_chat.wire.backend import Chunk, Reply, ignore, parse_chunk, parse_completion
from stateless_chat.wire.failover import Failover
from stateless_chat.wire.request import ChatRequest, Dialect

if TYPE_CHECKING:
    import openai

PLACEHOLDER_KEY = "sk-no-key-needed"
_BODY_SHOWN = 200  # characters of a non-JSON error body worth showing in a one-line message
_NOT_OPENAI = "is the base URL an OpenAI-compatible endpoint?"
_SLOW = "raise timeout in the config file if the model is just slow"


def host_of(url: str) -> str:
    """Return ``host:port`` of an endpoint URL, for one-line messages (never its credentials)."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return url
    host = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:  # a port that is not a number
        port = None
    return f"{host}:{port}" if port is not None else host


class _Watchdog:
    """Hangs up a stream when no token has arrived for ``timeout`` seconds.

    The read timeout cannot see this: a server that sends keep-alive comments every
    second keeps every read short while no token ever comes. ``touch`` marks progress.
    """

    def __init__(self, timeout: float, hang_up: Any) -> None:
        self.timeout = timeout
        self._hang_up = hang_up
        self._last = time.monotonic()
        self._done = threading.Event()
        self.fired = False
        self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)
        self._thread.start()

    def touch(self) -> None:
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._done.wait(max(0.05, self._last + self.timeout - time.monotonic())):
            if time.monotonic() - self._last >= self.timeout:
                self.fired = True
                self._hang_up()
                return

    def stop(self) -> None:
        self._done.set()


OPENAI_HOST = "api.openai.com"


def is_openai(endpoint: str) -> bool:
    """Return whether ``endpoint`` is OpenAI's own API (https://api.openai.com), the one endpoint that
    is sent the organization and project the environment names (``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``)."""
    parts = urlsplit(endpoint)
    return parts.scheme == "https" and parts.hostname == OPENAI_HOST and parts.port in (None, 443)


class OpenAIBackend:
    """Sends bodies to one OpenAI-compatible endpoint with the openai SDK, one attempt each."""

    def __init__(self, endpoint: str, api_key: str | None, *, timeout: float = 60.0,
                 max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES) -> None:
        self.endpoint = public_url(endpoint)  # without user:password, which go in the header instead
        self._api_key = api_key
        self.timeout = timeout
        self.max_reply_bytes = max_reply_bytes
        self._headers = {"Content-Type": "application/json", "Accept-Encoding": "gzip, deflate"}
        user, password = urlsplit(endpoint).username, url_password(endpoint)
        if user is not None or password is not None:
            keep_secret(password)
            # The URL holds them percent-encoded ("p%40ss" for "p@ss"); the header, as they are.
            pair = f"{unquote(user or '')}:{unquote(password or '')}"
            basic = base64.b64encode(pair.encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"
            keep_secret(unquote(password or ""))
            keep_secret(basic)
        keep_secret(api_key)
        self._client: openai.OpenAI | None = None
        self._direct: direct.DirectClient | None = None  # a streamed request's client without the SDK
        self.dialect = Dialect()  # what this endpoint's server accepts, learned from its refusals

    @property
    def name(self) -> str:
        return host_of(self.endpoint)

    def _sdk(self) -> openai.OpenAI:
        if self._client is None:
            import openai

            from stateless_chat.wire.guard import Guard

            http = openai.DefaultHttpxClient(event_hooks={"response": [Guard(self.endpoint, self.name,
                                                                               self.max_reply_bytes)]})
            client = openai.OpenAI(base_url=self.endpoint, api_key=self._api_key or PLACEHOLDER_KEY,
                                   max_retries=0, timeout=self.timeout, http_client=http)
            if not is_openai(self.endpoint):
                # The SDK reads OPENAI_ORG_ID and OPENAI_PROJECT_ID from the environment and sends them
                # as headers to whatever base URL it is given: they are OpenAI's identifiers, for it only.
                client.organization = None
                client.project = None
            self._client = client
        return self._client

    def body(self, request: ChatRequest) -> dict[str, Any]:
        return self.dialect.body(request)

    def send(self, request: ChatRequest, on_event: Callable[[Event], None] = ignore) -> Reply:
        """Send ``request`` in this endpoint's dialect; when the server refuses one parameter that the
        dialect can do without, learn it and send it once more."""
        body = self.dialect.body(request)
        try:
            return self._post(body)
        except ParameterRejected as refused:
            note = self.dialect.adapt(refused, body)
            if note is None:
                raise
            if note:
                on_event(Notice(note))
        return self._post(self.dialect.body(request))

    def _post(self, body: Mapping[str, Any]) -> Reply:
        # An error being handled around this call (a request resent from an ``except`` block) is not
        # this request's: an error of the SDK here has it as its context, which must not be taken for
        # one of ours raised beneath the SDK.
        outer = sys.exc_info()[1]
        streamed = bool(body.get("stream"))
        content = json.dumps(body, ensure_ascii=False).encode()
        # A streamed request goes without the SDK (``wire.direct``), until something has loaded it (an
        # error, a request not streamed): from then on it sends them all, there being nothing to save.
        if streamed and self._client is None and direct.usable():
            return self._post_direct(body, content, outer)
        import openai

        try:
            raw = self._sdk().post(
                "/chat/completions", cast_to=object, content=content,
                options={"headers": dict(self._headers)},
                stream=streamed, stream_cls=openai.Stream[object],
            )
        except Exception as error:  # the SDK's errors, mapped by type; others re-raised as bugs
            raise self._translate(error, began=False, outer=outer) from error
        if not streamed:
            chunk = parse_completion(raw)
            if chunk is None:
                raise MalformedReply(f"{self.name} sent a reply without a message: {_NOT_OPENAI}")
            return Reply(body, public_url(self.endpoint), iter([chunk]), name=self.name)
        stream: openai.Stream[object] = raw  # type: ignore[assignment]
        return self._streamed(body, stream, stream.response.headers.get("content-type", ""), outer)

    def _post_direct(self, body: Mapping[str, Any], content: bytes, outer: BaseException | None) -> Reply:
        """``_post`` of a streamed request without the SDK (``wire.direct``): its errors are the SDK's."""
        if self._direct is None:
            from stateless_chat.wire.guard import Guard

            self._direct = direct.DirectClient(self.endpoint, self._api_key or PLACEHOLDER_KEY,
                                               timeout=self.timeout,
                                               hook=Guard(self.endpoint, self.name, self.max_reply_bytes))
        request = self._direct.request("/chat/completions", content, self._headers)
        try:
            response = self._direct.open(request)
        except Exception as error:  # the SDK's error for it (its import paid only now), then ours
            error = self._as_sdk_error(error)
            raise self._translate(error, began=False, outer=outer) from error
        kind = response.headers.get("content-type", "")
        return self._streamed(body, direct.DirectStream(response), kind, outer)

    def _streamed(self, body: Mapping[str, Any], stream: Any, kind: str,
                  outer: BaseException | None) -> Reply:
        """Return the ``Reply`` reading ``stream`` (the SDK's or ``wire.direct``'s), answered with content
        type ``kind``; a reply that is not a stream of events is closed and refused (``MalformedReply``)."""
        if "json" not in kind and "event-stream" not in kind:
            stream.close()
            raise MalformedReply(f"{self.name} answered with {kind.split(';')[0] or 'no content type'}, "
                                 f"not a stream of events: {_NOT_OPENAI}")
        return Reply(body, public_url(self.endpoint), self._chunks(stream, outer), name=self.name,
                     close=stream.close)

    def embed(self, model: str, texts: Sequence[str]) -> list[list[float]]:
        """Return the embeddings of ``texts`` from the endpoint's ``/embeddings``, in order (the same
        credentials, redirect rule and reply cap as chat requests; one attempt). A server that answers
        with one vector per token (llama.cpp without pooling) has them averaged."""
        outer = sys.exc_info()[1]
        content = json.dumps({"model": model, "input": list(texts)}, ensure_ascii=False).encode()
        try:
            raw = self._sdk().post("/embeddings", cast_to=object, content=content,
                                   options={"headers": dict(self._headers)})
        except Exception as error:  # the SDK's errors, mapped by type; others re-raised as bugs
            raise self._translate(error, began=False, outer=outer) from error
        vectors = parse_embeddings(raw, len(texts))
        if vectors is None:
            raise MalformedReply(f"{self.name} sent embeddings that cannot be read: {_NOT_OPENAI}")
        return vectors

    def _chunks(self, stream: Any, outer: BaseException | None = None) -> Iterator[Chunk]:
        watchdog = _Watchdog(self.timeout, stream.close)
        try:
            for data in stream:
                chunk = parse_chunk(data)
                if chunk.text or chunk.tool_calls:
                    watchdog.touch()
                yield chunk
        except Exception as error:  # GeneratorExit (the reader stopped early) is no Exception
            if watchdog.fired:
                raise Stalled(f"{self.name} sent no token for {self.timeout:g} s ({_SLOW})") from error
            error = self._as_sdk_error(error)
            raise self._translate(error, began=True, outer=outer) from error
        finally:
            watchdog.stop()
            stream.close()
        if watchdog.fired:
            raise Stalled(f"{self.name} sent no token for {self.timeout:g} s ({_SLOW})")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._direct is not None:
            self._direct.close()
            self._direct = None

    # ---- errors ----------------------------------------------------------------

    def _clean(self, text: str) -> str:
        """Return outside text fit for a terminal (stderr, status lines): one line, no controls, no key."""
        return redact(" ".join(strip_controls(text).split()), self._api_key)

    def _translate(self, raw: Exception, *, began: bool, outer: BaseException | None = None) -> RequestError:
        """Return our error for ``raw``, an exception from the SDK or the network, by its type; re-raise
        anything else (a bug). ``began``: the reply stream had opened."""
        import openai

        host = self.name
        for cause in _chain(raw, outer):  # ours, raised under the SDK (wire.Guard): it says it best
            if isinstance(cause, RequestError):
                return cause
        if isinstance(raw, openai.APITimeoutError):
            if began:
                return Stalled(f"{host} sent nothing for {self.timeout:g} s ({_SLOW})")
            hint = "raise timeout in the config file if the server is just slow"
            return RequestTimeout(f"{host} did not answer within {self.timeout:g} s ({hint})")
        if isinstance(raw, openai.APIConnectionError):
            root = _root_cause(raw)
            detail = self._clean(str(root)) if root is not None and str(root) else "connection failed"
            if began:
                return StreamBroke(f"the reply from {host} broke off: {detail}")
            if isinstance(root, ConnectionRefusedError):
                return ConnectionRefused(f"could not connect to {host}: {detail} (is the server running?)")
            if isinstance(root, OSError) and not isinstance(root, ConnectionResetError):
                return ConnectError(f"could not connect to {host}: {detail} (is the server running?)")
            return ConnectError(f"the connection to {host} broke: {detail}")
        if isinstance(raw, openai.APIStatusError):
            return self._status_error(raw)
        if isinstance(raw, openai.APIError):  # an error event inside the stream
            return StreamError(f"{host} sent a reply that could not be read: {self._clean(str(raw))}")
        if isinstance(raw, (json.JSONDecodeError, UnicodeDecodeError)):  # not any ValueError: bad URLs are
            return MalformedReply(f"{host} sent a reply that is not valid JSON ({self._clean(str(raw))}): "
                                  f"{_NOT_OPENAI}")
        raise raw

    def _as_sdk_error(self, raw: Exception) -> Exception:
        """Return the SDK's error for what ``wire.direct`` raised (as ``openai._base_client`` and
        ``openai.Stream`` make them, the network's error as its cause); any other error as it is."""
        if not isinstance(raw, (direct.EventError, direct.StatusError, direct.NetworkError)):
            return raw
        import openai

        if isinstance(raw, direct.EventError):
            return openai.APIError(raw.message, raw.request, body=raw.body)
        if isinstance(raw, direct.StatusError):
            refusal: Exception = self._sdk()._make_status_error_from_response(raw.response)
            return refusal
        if not isinstance(raw, direct.NetworkError):
            return raw
        wrapped = openai.APITimeoutError(request=raw.request) if raw.timeout \
            else openai.APIConnectionError(request=raw.request)
        wrapped.__cause__ = raw.error
        return wrapped

    def _status_error(self, raw: Any) -> ServerError:
        host = self.name
        status: int = raw.status_code
        message = self._clean(_error_message(raw))
        if status == 400 and _is_context_error(raw, message):
            limit, requested = _context_numbers(raw, message)
            return ContextLengthError(f"{host}: {message}", limit=limit, requested=requested)
        if status == 400 and (_param_of(raw) == "stream_options" or "stream_options" in message):
            return ParameterRejected(f"{host} answered {status}: {message}", "stream_options", status)
        if status == 400 and "max_completion_tokens" in message and "max_tokens" in message:
            # OpenAI's reasoning models: "'max_tokens' is not supported with this model. Use
            # 'max_completion_tokens' instead." (a max_tokens that is merely too large says no such thing)
            return ParameterRejected(f"{host} answered {status}: {message}", "max_tokens", status)
        if status == 401:
            hint = "check OPENAI_API_KEY or api_key in the config file"
            return ServerError(f"{host} rejected the API key (401): {hint}", status)
        if status == 404 and not urlsplit(self.endpoint).path.rstrip("/").endswith("/v1"):
            message += f" (does the base URL need /v1 at its end? it is {self._clean(self.endpoint)})"
        return ServerError(f"{host} answered {status}: {message}", status, _retry_after(raw))


def parse_embeddings(raw: object, count: int) -> list[list[float]] | None:
    """Return the ``count`` vectors of an embeddings reply in input order, or None when it is not one:
    ``data`` items with an ``embedding`` of numbers (or of lists of them: one a token, averaged), all of
    one length."""
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, list) or len(data) != count:
        return None
    found: dict[int, list[float]] = {}
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            return None
        index = item.get("index", position)
        vector = _vector(item.get("embedding"))
        if vector is None or not isinstance(index, int) or isinstance(index, bool) or index in found:
            return None
        found[index] = vector
    vectors = [found.get(i) for i in range(count)]
    if any(v is None for v in vectors) or len({len(v or ()) for v in vectors}) != 1 or not vectors[0]:
        return None
    return [v for v in vectors if v is not None]


def _vector(value: object) -> list[float] | None:
    """Return an embedding as one list of floats: itself, or the mean of its per-token rows."""
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(row, list) for row in value):
        rows = [_vector(row) for row in value]
        if any(r is None for r in rows) or len({len(r or ()) for r in rows}) != 1:
            return None
        return [sum(column) / len(rows) for column in zip(*(r for r in rows if r is not None), strict=True)]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value):
        return None
    return [float(x) for x in value]


def _chain(error: BaseException, outer: BaseException | None = None) -> Iterator[BaseException]:
    """Yield ``error`` and its causes, outermost first, up to ``outer`` (an error that was being handled
    before ``error`` happened, and the causes of that one: not ``error``'s own)."""
    seen: set[int] = {id(e) for e in _chain(outer)} if outer is not None else set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def _root_cause(error: BaseException) -> BaseException | None:
    """Return the innermost cause of ``error`` (the network's own exception, when there is one)."""
    seen: set[int] = set()
    cause = error.__cause__ or error.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        deeper = cause.__cause__ or cause.__context__
        if deeper is None:
            return cause
        cause = deeper
    return cause


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


def _param_of(error: Any) -> str | None:
    """Return the ``param`` an OpenAI-style error names (the SDK unwrapped ``{"error": {...}}``)."""
    body = getattr(error, "body", None)
    param = body.get("param") if isinstance(body, dict) else None
    return param if isinstance(param, str) else None


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
    import re

    body = getattr(error, "body", None)
    if isinstance(body, dict):
        limit, requested = body.get("n_ctx"), body.get("n_prompt_tokens")
        if isinstance(limit, int) and isinstance(requested, int):
            return limit, requested
    found = re.search(r"maximum context length is (\d+).*?(?:resulted in|requested) (\d+)", message, re.S)
    return (int(found.group(1)), int(found.group(2))) if found else (None, None)


def _retry_after(error: Any) -> float | None:
    import math
    from email.utils import parsedate_to_datetime

    headers = getattr(getattr(error, "response", None), "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    if not isinstance(value, str):
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
    return seconds if math.isfinite(seconds) else None  # "nan" would reach time.sleep and raise


def open_backend(
    endpoints: Sequence[str],
    api_key: str | None,
    *,
    keys: Mapping[str, str] | None = None,
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    timeout: float = 60.0,
    max_retries: int = 2,
    backoff_base: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    health_check: Callable[[], None] | None = None,
    retry_timeouts: bool = True,
) -> Failover:
    """Return the backend for ``endpoints``: one ``OpenAIBackend`` each, behind retries and failover.

    Each endpoint is sent its own key from ``keys`` (``""``: none) when it has one, else ``api_key``.
    """
    own = keys or {}
    backends = [OpenAIBackend(endpoint, own.get(endpoint, api_key), timeout=timeout,
                              max_reply_bytes=max_reply_bytes) for endpoint in endpoints]
    return Failover(backends, max_retries=max_retries, backoff_base=backoff_base,
                    sleep=sleep, health_check=health_check, retry_timeouts=retry_timeouts)
