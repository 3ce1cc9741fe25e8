"""What the HTTP layer lets through: redirects within one origin only, and replies of bounded size.

``transport`` gives the openai SDK an HTTP client whose response hook is ``Guard``:

- A redirect to another origin (scheme, host or port) is refused with ``RedirectRefused``
  before it is followed: a 307/308 would resend the whole conversation there. Redirects
  within the endpoint's own origin are followed as usual.
- Every response body is counted as it is read, after decompression, and reading stops
  with ``ReplyTooLarge`` at ``max_reply_bytes``. The client decompresses gzip and deflate
  itself, in bounded steps, so a small compressed body cannot expand in memory past the
  limit (a 3 MB gzip of 3 GB of zeros costs no more than the limit); it asks for no other
  content encoding and refuses one it did not ask for.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx2

from stateless_chat.errors import MalformedReply, RedirectRefused, ReplyTooLarge
from stateless_chat.sanitize import one_line, public_url

ACCEPT_ENCODING = "gzip, deflate"
_STEP = 64 * 1024  # the most bytes one decompression step may produce


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


class _Inflater:
    """gzip or deflate (zlib-wrapped or raw, as servers send either), yielding at most ``_STEP`` at a time."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16 if self._gzip else zlib.MAX_WBITS)
        self._first = True

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            try:
                out = self._decompressor.decompress(data, _STEP)
            except zlib.error:
                if not self._first or self._gzip:
                    raise
                self._decompressor = zlib.decompressobj(-zlib.MAX_WBITS)  # deflate without the zlib header
                out = self._decompressor.decompress(data, _STEP)
            self._first = False
            if out:
                yield out
            data = self._decompressor.unconsumed_tail
            if self._decompressor.eof:
                return

    def flush(self) -> bytes:
        return self._decompressor.flush()


class CappedStream(httpx2.SyncByteStream):
    """A response body decompressed here (when it was compressed) that ends with ``ReplyTooLarge``
    once more than ``limit`` bytes have come."""

    def __init__(self, inner: httpx2.SyncByteStream, limit: int, encoding: str, name: str) -> None:
        self._inner = inner
        self._limit = limit
        self._inflater = _Inflater(encoding) if encoding else None
        self._name = name
        self._count = 0

    def _counted(self, data: bytes) -> bytes:
        self._count += len(data)
        if self._count > self._limit:
            raise ReplyTooLarge(
                f"the reply from {self._name} passed max_reply_bytes ({self._limit:,} bytes after "
                "decompression): it was cut off there and is not kept (raise max_reply_bytes in the "
                "config file if such replies are real)"
            )
        return data

    def __iter__(self) -> Iterator[bytes]:
        try:
            for raw in self._inner:
                if self._inflater is None:
                    yield self._counted(raw)
                    continue
                for piece in self._inflater.feed(raw):
                    yield self._counted(piece)
            if self._inflater is not None:
                rest = self._inflater.flush()
                if rest:
                    yield self._counted(rest)
        except zlib.error as error:
            raise MalformedReply(f"{self._name} sent a compressed reply that does not decompress ({error})") \
                from None

    def close(self) -> None:
        self._inner.close()


class Guard:
    """The response hook of one endpoint's HTTP client (see the module docstring)."""

    def __init__(self, endpoint: str, name: str, max_reply_bytes: int) -> None:
        self.origin = _origin(endpoint)
        self.name = name
        self.max_reply_bytes = max_reply_bytes

    def __call__(self, response: httpx2.Response) -> None:
        if response.has_redirect_location:
            target = response.request.url.join(response.headers["location"])
            if _origin(str(target)) != self.origin:
                shown = one_line(public_url(str(target)))[:200]
                raise RedirectRefused(
                    f"{self.name} answered {response.status_code}, redirecting to {shown}: a redirect away "
                    "from the endpoint's scheme, host and port is not followed (the request carries the "
                    "whole conversation); set base_url to that address if you trust it",
                    response.status_code,
                )
        codings = [c.strip().lower() for c in response.headers.get("content-encoding", "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            raise MalformedReply(f"{self.name} sent its reply with content encoding "
                                 f"{one_line(', '.join(codings))[:60]}, which was not asked for")
        if codings:
            del response.headers["content-encoding"]  # decoded by CappedStream, not again by httpx
        stream = response.stream
        assert isinstance(stream, httpx2.SyncByteStream)
        response.stream = CappedStream(stream, self.max_reply_bytes, codings[0] if codings else "", self.name)
