"""Servers written to misbehave: each answers every POST with whatever its ``respond`` writes.

``Hostile(respond)`` listens on 127.0.0.1 (stdlib ``http.server``), records each request's
JSON body and headers, and hands the handler to ``respond``, which writes a raw reply:
a status, any headers, bytes the real API would never send. The helpers below build the
common pieces (a whole JSON reply, an SSE stream, a redirect). Driven through the real
openai client; nothing in the SDK is patched.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    hostile: Hostile

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up on a hostile reply is the point


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        hostile = self.server.hostile
        with hostile.lock:
            hostile.requests.append(json.loads(raw) if raw else None)
            hostile.headers.append({k.lower(): v for k, v in self.headers.items()})
        try:
            hostile.respond(self)
        except OSError:
            pass
        self.close_connection = True


Respond = Callable[[BaseHTTPRequestHandler], None]


class Hostile:
    """A misbehaving OpenAI-compatible endpoint; ``url`` ends in ``/v1``."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.lock = threading.Lock()
        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.hostile = self
        self.port: int = self._httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.origin}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Hostile:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None,
         content_type: str = "application/json") -> None:
    """Write a whole reply: ``status``, ``Content-Type``, ``Content-Length``, ``headers``, ``body``."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Connection", "close")  # each request its own connection: no reuse races
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)
    handler.wfile.flush()


def completion(text: str = "hello", usage: str | None = None) -> bytes:
    """Return a whole chat completion whose ``usage`` is the raw JSON text ``usage`` (any bytes)."""
    choices = json.dumps([{"index": 0, "message": {"role": "assistant", "content": text},
                           "finish_reason": "stop"}])
    tail = f', "usage": {usage}' if usage is not None else ""
    return f'{{"id": "x", "object": "chat.completion", "choices": {choices}{tail}}}'.encode()


def event(data: str | dict[str, Any]) -> bytes:
    """Return one SSE event carrying ``data`` (a dict is JSON-encoded)."""
    text = data if isinstance(data, str) else json.dumps(data)
    return f"data: {text}\n\n".encode()


def delta(text: str, finish: str | None = None) -> dict[str, Any]:
    """Return a ``chat.completion.chunk`` object carrying ``text``."""
    return {"id": "x", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def stream_head(handler: BaseHTTPRequestHandler, headers: dict[str, str] | None = None) -> None:
    """Start a 200 SSE reply framed by closing the connection (so any bytes may follow)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Connection", "close")
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.flush()


def stream(handler: BaseHTTPRequestHandler, events: Iterable[bytes]) -> None:
    """Write a whole SSE reply of ``events``."""
    stream_head(handler)
    for item in events:
        handler.wfile.write(item)
        handler.wfile.flush()


def reply_stream(text: str, usage: str | None = None) -> list[bytes]:
    """Return the events of a streamed reply of ``text`` (its usage the raw JSON ``usage``), ``[DONE]``."""
    events = [event(delta(piece)) for piece in re.findall(r"\S+\s*", text)]
    events.append(event(delta("", "stop")))
    if usage is not None:
        events.append(f'data: {{"id": "x", "object": "chat.completion.chunk", "choices": [], '
                      f'"usage": {usage}}}\n\n'.encode())
    return [*events, event("[DONE]")]
