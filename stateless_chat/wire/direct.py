"""A streamed chat request sent with httpx2 directly, as the openai SDK sends it.

Importing the SDK costs ~0.4 s (its ~650 pydantic models), most of a one-shot answer's
start-up, while a streamed reply uses nothing of it: ``wire.openai_backend`` sends it
through here instead, with what the SDK would send (the same URL, body bytes, headers and
timeouts, over the same kind of HTTP client with the same response hook) and reads the
events as the SDK's ``Stream`` does. Anything but a reply that opened (a refusal, a network
error, an error event) is handed back for the backend to turn into the SDK's own error, so
every message stays the one the SDK path gives. Settings the SDK reads from the environment
(``OPENAI_ORG_ID``, ``OPENAI_CUSTOM_HEADERS`` ...) send the request through the SDK itself
(``usable``).
"""

from __future__ import annotations

import os
import re
import ssl
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx2

# Environment variables the SDK reads besides the key and the base URL (which the chat reads
# itself and passes on): any of them set, and the request goes through the SDK.
_SDK_ENVIRONMENT = re.compile(r"OPENAI_(?!API_KEY$|BASE_URL$)\w+")
_LINE_END = re.compile(rb"[\r\n]")

# The SDK's HTTP client defaults (openai._constants) and its exceptions' classes (openai._httpx2).
DEFAULT_TIMEOUT = httpx2.Timeout(timeout=600, connect=5.0)
DEFAULT_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
TIMEOUT_ERRORS: tuple[type[Exception], ...] = (httpx2.TimeoutException,)
REQUEST_ERRORS: tuple[type[Exception], ...] = (httpx2.RequestError, ssl.SSLError)
StatusError = httpx2.HTTPStatusError  # a refusal (4xx, 5xx), its body read: ``DirectClient.open``


def usable(environ: Mapping[str, str] = os.environ) -> bool:
    """Return whether a request may go through here: the SDK would read nothing more from ``environ``."""
    return not any(_SDK_ENVIRONMENT.match(name) for name in environ)


class EventError(Exception):
    """An error event in a reply stream (``{"error": {...}}``): what the SDK raises as ``APIError``."""

    def __init__(self, message: str, body: object, request: httpx2.Request) -> None:
        super().__init__(message)
        self.message = message
        self.body = body
        self.request = request


class NetworkError(Exception):
    """A timeout or network error (``error``) of ``request``: what the SDK raises as ``APITimeoutError``
    (``timeout``) or ``APIConnectionError``, with ``error`` as its cause."""

    def __init__(self, error: Exception, request: httpx2.Request) -> None:
        super().__init__(str(error))
        self.error = error
        self.request = request
        self.timeout = isinstance(error, TIMEOUT_ERRORS)


def _sdk_version() -> str:
    """Return the installed openai SDK's version without importing it (its ``_version.py``)."""
    from importlib.util import find_spec

    try:
        spec = find_spec("openai")
        origin = spec.origin if spec is not None else None
        if origin:
            text = open(os.path.join(os.path.dirname(origin), "_version.py"), encoding="utf-8").read()
            found = re.search(r"__version__\s*=\s*[\"']([^\"']+)", text)
            if found:
                return found.group(1)
    except (OSError, ImportError, ValueError):
        pass
    from importlib.metadata import version

    return version("openai")


def _os_name() -> str:
    import platform

    try:
        system = platform.system().lower()
        name = platform.platform().lower()
    except Exception:
        return "Unknown"
    if "iphone" in name or "ipad" in name:
        return "iOS"
    known = {"darwin": "MacOS", "windows": "Windows"}
    if system in known:
        return known[system]
    if "android" in name:
        return "Android"
    if system in ("freebsd", "openbsd"):
        return {"freebsd": "FreeBSD", "openbsd": "OpenBSD"}[system]
    if system == "linux":
        try:
            distro = platform.freedesktop_os_release().get("ID", "").lower()
        except OSError:
            distro = ""
        return {"freebsd": "FreeBSD", "openbsd": "OpenBSD"}.get(distro, "Linux")
    return f"Other:{name}" if name else "Unknown"


def _arch() -> str:
    import platform

    try:
        machine = platform.machine().lower()
    except Exception:
        return "unknown"
    if machine in ("arm64", "aarch64"):
        return "arm64"
    if machine == "arm":
        return "arm"
    if machine == "x86_64":
        return "x64"
    if sys.maxsize <= 2**32:
        return "x32"
    return f"other:{machine}" if machine else "unknown"


def sdk_headers(api_key: str, timeout: float, custom: Mapping[str, str]) -> dict[str, str]:
    """Return the headers the SDK sends with a request: its bearer auth, its defaults, ``custom``
    (ours: they win, an ``Authorization`` of their own included), its retry count and read timeout."""
    import platform

    version = _sdk_version()
    headers = httpx2.Headers({"Authorization": f"Bearer {api_key}"} if api_key else {})
    headers.update({
        "Accept": "application/json",
        "Content-Type": "application/json",
        "User-Agent": f"OpenAI/Python {version}",
        "X-Stainless-Lang": "python",
        "X-Stainless-Package-Version": version,
        "X-Stainless-OS": _os_name(),
        "X-Stainless-Arch": _arch(),
        "X-Stainless-Runtime": platform.python_implementation(),
        "X-Stainless-Runtime-Version": platform.python_version(),
        "X-Stainless-Async": "false",
    })
    headers.update(dict(custom))
    headers["x-stainless-retry-count"] = "0"
    headers["x-stainless-read-timeout"] = str(timeout)
    return dict(headers.multi_items())


def endpoint_url(base_url: str, path: str) -> str:
    """Return ``path`` under ``base_url`` as the SDK joins them (a trailing slash added to the base)."""
    base = httpx2.URL(base_url)
    raw, separator, query = base.raw_path.partition(b"?")
    if not raw.endswith(b"/"):
        base = base.copy_with(raw_path=raw + b"/" + separator + query)
    return str(base.copy_with(raw_path=base.raw_path + path.lstrip("/").encode()))


def tls_for(base_url: str, environ: Mapping[str, str] = os.environ) -> ssl.SSLContext | bool:
    """Return the client's ``verify``: True (the system's trusted certificates, loaded at once: ~20 ms)
    unless nothing could use TLS: a plain ``http://`` endpoint (a redirect away from its scheme is
    refused, ``wire.guard``) and no proxy in ``environ``. Then a context that trusts no certificate,
    so that any TLS it were asked for would fail closed."""
    proxied = any(name.lower().endswith("_proxy") for name in environ)
    if urlsplit(base_url).scheme.lower() != "http" or proxied:
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class DirectClient:
    """One endpoint's HTTP client, made as the SDK makes its default one, with ``hook`` on responses."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float,
                 hook: Callable[[httpx2.Response], None]) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = timeout
        self.http = httpx2.Client(timeout=DEFAULT_TIMEOUT, limits=DEFAULT_LIMITS, follow_redirects=True,
                                  event_hooks={"response": [hook]}, verify=tls_for(base_url))

    def request(self, path: str, content: bytes, headers: Mapping[str, str]) -> httpx2.Request:
        return self.http.build_request("POST", endpoint_url(self.base_url, path), content=content,
                                       headers=sdk_headers(self.api_key, self.timeout, headers),
                                       timeout=self.timeout)

    def open(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` and return its response, its body not read yet: a success (2xx) only. A
        refusal is raised as ``httpx2.HTTPStatusError`` with its body read, as the SDK reads it."""
        try:
            response = self.http.send(request, stream=True)
        except (*TIMEOUT_ERRORS, *REQUEST_ERRORS) as error:
            raise NetworkError(error, request) from error
        try:
            response.raise_for_status()
        except StatusError:
            if not response.is_closed:
                response.read()
            raise
        return response

    def close(self) -> None:
        self.http.close()


class DirectStream:
    """The events of a streamed reply, as the SDK's ``Stream[object]`` yields them: each ``data`` parsed
    as JSON until ``[DONE]``; an ``{"error": ...}`` event raised as ``EventError``."""

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response

    def __iter__(self) -> Iterator[object]:
        response = self.response
        try:
            for event, data in _events(_read(response)):
                if data.startswith("[DONE]"):
                    break
                if event and event.startswith("thread."):  # the Assistants' events, as the SDK yields them
                    parsed = _json(data)
                    if event == "error" and isinstance(parsed, Mapping) and parsed.get("error"):
                        raise _event_error(parsed, response)
                    yield {"data": parsed, "event": event}
                    continue
                parsed = _json(data)
                if isinstance(parsed, Mapping) and parsed.get("error"):
                    raise _event_error(parsed, response)
                yield parsed
        finally:
            response.close()

    def close(self) -> None:
        self.response.close()


def _read(response: httpx2.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_bytes()
    except (*TIMEOUT_ERRORS, *REQUEST_ERRORS) as error:
        raise NetworkError(error, response.request) from error


def _json(data: str) -> Any:
    import json

    return json.loads(data)


def _event_error(data: Mapping[str, Any], response: httpx2.Response) -> EventError:
    error = data.get("error")
    message = error.get("message") if isinstance(error, Mapping) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return EventError(message, data["error"], response.request)


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Yield the lines of a byte stream split at CR, LF or CRLF (the SDK's ``_SSELineDecoder``)."""
    buffer = bytearray()
    skip_lf = False
    for chunk in chunks:
        start = 0
        for match in _LINE_END.finditer(chunk):
            end = match.start()
            if skip_lf and end == start and chunk[end] == 10:
                skip_lf = False
                start = end + 1
                continue
            skip_lf = False
            buffer.extend(chunk[start:end])
            line = bytes(buffer)
            buffer.clear()
            skip_lf = chunk[end] == 13
            start = end + 1
            yield line
        if start < len(chunk):
            skip_lf = False
            buffer.extend(chunk[start:])
    if buffer:
        yield bytes(buffer)


def _events(chunks: Iterator[bytes]) -> Iterator[tuple[str | None, str]]:
    """Yield each server-sent event's type and data (the SDK's ``SSEDecoder``)."""
    event: str | None = None
    data: list[str] = []
    last_id: str | None = None
    retry: int | None = None
    for raw in _lines(chunks):
        line = raw.decode("utf-8")
        if not line:
            if not event and not data and not last_id and retry is None:
                continue
            yield event, "\n".join(data)
            event, data, retry = None, [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            if "\0" not in value:
                last_id = value
        elif name == "retry":
            try:
                retry = int(value)
            except (TypeError, ValueError):
                pass
