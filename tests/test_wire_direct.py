"""A streamed request sent without the SDK (``wire.direct``) is the SDK's request, read as the SDK
reads its reply: the same headers and body reach the server, the same events come back."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx2
import pytest
from openai._streaming import SSEDecoder

from stateless_chat.errors import StreamError
from stateless_chat.wire import direct
from stateless_chat.wire.openai_backend import OpenAIBackend
from tests.fakeserver import FakeServer

BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "q"}], "stream": True,
        "stream_options": {"include_usage": True}}


def read(backend: OpenAIBackend) -> str:
    reply = backend._post(BODY)
    try:
        return "".join(reply)
    finally:
        reply.close()


def test_the_server_gets_what_the_sdk_sends(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = OpenAIBackend(server.url, "sk-test", timeout=30)
    assert read(sent) == "echo: q" and sent._client is None and sent._direct is not None
    monkeypatch.setattr(direct, "usable", lambda environ=None: False)
    through_sdk = OpenAIBackend(server.url, "sk-test", timeout=30)
    assert read(through_sdk) == "echo: q" and through_sdk._client is not None
    direct_headers, sdk_headers = server.request_headers
    assert direct_headers == sdk_headers
    first, second = server.requests
    assert first == second


def test_basic_auth_from_the_url_replaces_the_key(server: FakeServer) -> None:
    url = server.url.replace("http://", "http://user:p%40ss@")
    backend = OpenAIBackend(url, "sk-test", timeout=30)
    assert read(backend) == "echo: q"
    assert server.request_headers[0]["authorization"] == "Basic dXNlcjpwQHNz"


CHUNKS = [
    [b"data: {\"a\": 1}\n\n", b"data: [DONE]\n\n"],
    [b"da", b"ta: {\"a\"", b": 2}\r", b"\n\r\n: a comment\n\ndata: 3\n\n"],
    [b"event: x\ndata: {\"b\": [1,\n", b"data: 2]}\nid: 7\nretry: 10\n\n\n"],
    [b"data: 1\rdata: 2\r\r", b"data: \"no end\""],
    [b"\n\n\nid: only\n\n"],
]


@pytest.mark.parametrize("chunks", CHUNKS)
def test_events_are_split_as_the_sdk_splits_them(chunks: list[bytes]) -> None:
    ours = [(event, data) for event, data in direct._events(iter(chunks))]
    sdk = [(sse.event, sse.data) for sse in SSEDecoder().iter_bytes(iter(chunks))]
    assert ours == sdk


def test_an_error_event_is_the_sdks_stream_error(server: FakeServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'data: {"error": {"message": "overloaded"}}\n\n'

    class Response:
        request = httpx2.Request("POST", server.url + "/chat/completions")
        closed = False

        def iter_bytes(self) -> Iterator[bytes]:
            return chunks()

        def close(self) -> None:
            self.closed = True

    backend = OpenAIBackend(server.url, "sk-test", timeout=30)
    response = Response()
    with pytest.raises(StreamError, match="127.0.0.1:[0-9]+ sent a reply that could not be read: overloaded"):
        list(backend._chunks(direct.DirectStream(response)))  # type: ignore[arg-type]
    assert response.closed


def test_a_plain_http_endpoint_loads_no_certificates_unless_a_proxy_is_set() -> None:
    context = direct.tls_for("http://127.0.0.1:8080/v1", {})
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname  # fails closed
    assert direct.tls_for("https://api.openai.com/v1", {}) is True
    assert direct.tls_for("http://127.0.0.1:8080/v1", {"https_proxy": "http://proxy:3128"}) is True


def test_settings_the_sdk_reads_from_the_environment_send_through_it() -> None:
    assert direct.usable({"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "u", "HOME": "/"})
    assert not direct.usable({"OPENAI_ORG_ID": "org"})
    assert not direct.usable({"OPENAI_CUSTOM_HEADERS": "X-A: b"})
