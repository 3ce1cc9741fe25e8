"""The fake endpoint, proved with the real ``openai`` client.

What the client gives you for each fault (the StreamError logic builds on this):

* HTTP 500 / 429 / 400 → ``InternalServerError`` / ``RateLimitError`` / ``BadRequestError``
  raised by ``create()`` itself (before any chunk), ``.code`` from the error JSON.
* stream cut, chunked framing (the default, like real endpoints) → ``APIConnectionError``
  raised while iterating, after the chunks that did arrive were yielded.
* stream cut, ``Connection: close`` framing → no exception: iteration just ends, and no
  chunk ever carried a ``finish_reason``. So "no finish_reason seen" must mean StreamError.
* malformed SSE data → ``json.JSONDecodeError`` (a ``ValueError``, *not* an ``openai``
  error) raised while iterating.
* client read timeout (``delay_next`` / ``hang_stream_next``) → ``APITimeoutError``
  (a subclass of ``APIConnectionError``).
* server stopped → ``APIConnectionError`` from ``create()``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakeserver import (
    FakeServer,
    approx_completion_tokens,
    approx_tokens,
    default_replier,
    split_reply,
)

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as srv:
        yield srv


def make_client(srv: FakeServer, timeout: float = 5.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url, api_key="sk-test", max_retries=0, timeout=timeout)


@pytest.fixture
def client(server: FakeServer) -> Iterator[openai.OpenAI]:
    with make_client(server) as c:
        yield c


def user(text: str) -> Any:  # Any: the SDK's TypedDict message params are not worth spelling here
    return {"role": "user", "content": text}


def stream_chunks(client: openai.OpenAI, messages: list[Any], **kw: Any) -> list[Any]:
    return list(client.chat.completions.create(model="fake-model", messages=messages, stream=True, **kw))


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finish_reasons(chunks: list[Any]) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


# ---- normal replies -----------------------------------------------------------------


def test_stream_with_usage_gives_text_deltas_and_usage(server: FakeServer, client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "system", "content": "be brief"}, user("hello there wide world")]
    chunks = stream_chunks(client, messages, stream_options={"include_usage": True})

    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    content_deltas = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_deltas) >= 4  # split by words, not sent in one piece
    reply = "echo: hello there wide world"
    assert text_of(chunks) == reply
    assert finish_reasons(chunks) == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == approx_tokens(messages)
    assert last.usage.completion_tokens == approx_completion_tokens(reply)
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])

    [body] = server.requests
    assert body["messages"] == messages
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_stream_without_include_usage_sends_no_usage(client: openai.OpenAI) -> None:
    chunks = stream_chunks(client, [user("hi")])
    assert text_of(chunks) == "echo: hi"
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_non_streaming_completion(server: FakeServer, client: openai.OpenAI) -> None:
    messages: list[Any] = [user("first"), {"role": "assistant", "content": "echo: first"}, user("second one")]
    resp = client.chat.completions.create(model="fake-model", messages=messages)
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content == "echo: second one"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == approx_tokens(messages) == 3 + (3 + 2) + (3 + 3) + (3 + 3)
    assert resp.usage.completion_tokens == approx_completion_tokens("echo: second one") == 4
    assert server.requests[0]["messages"] == messages
    assert "stream" not in server.requests[0]


def test_models_list(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["fake-model"]


def test_headers_are_recorded(server: FakeServer, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="fake-model", messages=[user("x")])
    [headers] = server.request_headers
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["content-type"] == "application/json"


def test_name_is_answered_only_when_the_request_carries_it(client: openai.OpenAI) -> None:
    first = user("Please remember my name is Byte Dai")
    ask = user("What is my name?")
    alone = client.chat.completions.create(model="fake-model", messages=[ask])
    assert alone.choices[0].message.content == "I don't know your name."

    echoed = {"role": "assistant", "content": "echo: Please remember my name is Byte Dai"}
    history: list[Any] = [first, echoed, ask]
    assert text_of(stream_chunks(client, history)) == "Your name is Byte Dai."

    # the assistant's own words are not evidence; a system summary is
    no_user = [history[1], ask]
    assert text_of(stream_chunks(client, no_user)) == "I don't know your name."
    summary = {"role": "system", "content": "Summary: Please remember my name is Byte Dai | other"}
    assert text_of(stream_chunks(client, [summary, ask])) == "Your name is Byte Dai."


def test_summary_request_is_short_and_keeps_a_name() -> None:
    long_line = "x" * 100
    body = {
        "messages": [
            {"role": "system", "content": "SUMMARIZE-CONVERSATION in a few lines."},
            user("Please remember that my name is Byte Dai, thanks"),
            {"role": "assistant", "content": long_line},
        ]
    }
    reply = default_replier(body)
    assert reply == "Summary: Please remember that my name is Byte Dai | " + "x" * 40
    # the summary folded into a system message still answers the question
    later = {"messages": [{"role": "system", "content": reply}, user("what is my name")]}
    assert default_replier(later) == "Your name is Byte Dai."


def test_replier_can_be_replaced() -> None:
    seen: list[dict[str, Any]] = []

    def replier(body: dict[str, Any]) -> str:
        seen.append(body)
        return f"{len(body['messages'])} messages"

    with FakeServer(replier=replier) as srv, make_client(srv) as c:
        chunks = stream_chunks(c, [user("a"), user("b")])
    assert text_of(chunks) == "2 messages"
    assert seen == srv.requests


def test_concurrent_requests_are_all_recorded(server: FakeServer, client: openai.OpenAI) -> None:
    def ask(i: int) -> None:
        client.chat.completions.create(model="fake-model", messages=[user(f"n{i}")])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    contents = sorted(r["messages"][0]["content"] for r in server.requests)
    assert contents == sorted(f"n{i}" for i in range(8))
    assert len(server.request_headers) == 8
    server.clear()
    assert server.requests == [] and server.request_headers == []


# ---- scripted faults ----------------------------------------------------------------


def test_fail_next_500_then_recovers(server: FakeServer, client: openai.OpenAI) -> None:
    server.fail_next(n=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as info:
            stream_chunks(client, [user("hi")])
        assert info.value.status_code == 500
        assert isinstance(info.value.body, dict) and info.value.body["type"] == "server_error"
    assert server.pending_faults == 0
    assert text_of(stream_chunks(client, [user("hi")])) == "echo: hi"
    assert len(server.requests) == 3  # failed requests are recorded too


def test_rate_limit_with_retry_after(server: FakeServer, client: openai.OpenAI) -> None:
    server.fail_next(status=429, retry_after=7)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="fake-model", messages=[user("hi")])
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.code == "rate_limit_exceeded"


def test_custom_text_error_body(server: FakeServer, client: openai.OpenAI) -> None:
    server.fail_next(status=502, body="<html>Bad Gateway</html>")
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="fake-model", messages=[user("hi")])
    assert info.value.status_code == 502
    assert "Bad Gateway" in info.value.response.text


def test_faults_apply_in_order(server: FakeServer, client: openai.OpenAI) -> None:
    server.fail_next()
    server.context_exceeded_next(limit=100, requested=150)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="fake-model", messages=[user("1")])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="fake-model", messages=[user("2")])
    assert client.chat.completions.create(model="fake-model", messages=[user("3")]).choices[0].message.content


def test_context_exceeded_next(server: FakeServer, client: openai.OpenAI) -> None:
    server.context_exceeded_next(limit=4096, requested=5000)
    with pytest.raises(openai.BadRequestError) as info:
        stream_chunks(client, [user("hi")])
    assert info.value.code == "context_length_exceeded"
    assert "maximum context length is 4096 tokens" in info.value.message
    assert "resulted in 5000 tokens" in info.value.message


def test_sticky_context_limit(server: FakeServer, client: openai.OpenAI) -> None:
    small = [user("short")]
    big = [user("y" * 200)]
    server.context_limit = approx_tokens(small)
    assert text_of(stream_chunks(client, small)) == "echo: short"
    for _ in range(2):
        with pytest.raises(openai.BadRequestError) as info:
            stream_chunks(client, big)
        assert info.value.code == "context_length_exceeded"
        assert f"resulted in {approx_tokens(big)} tokens" in info.value.message
        assert f"maximum context length is {approx_tokens(small)} tokens" in info.value.message


def test_cut_stream_chunked_raises_connection_error(server: FakeServer, client: openai.OpenAI) -> None:
    server.cut_stream_next(after_chunks=2)
    got: list[Any] = []
    start = time.monotonic()
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(
            model="fake-model", messages=[user("one two three four")], stream=True
        ):
            got.append(chunk)
    assert time.monotonic() - start < 2  # the socket really closed; nothing waited for a timeout
    assert len(got) == 2
    assert text_of(got) == "echo: "
    assert finish_reasons(got) == []


def test_cut_stream_close_framing_just_ends_without_finish_reason() -> None:
    with FakeServer(stream_framing="close") as srv, make_client(srv) as c:
        srv.cut_stream_next(after_chunks=3)
        chunks = stream_chunks(c, [user("one two three four")])
        assert text_of(chunks) == "echo: one "
        assert finish_reasons(chunks) == []
        # the same framing uncut does deliver the finish_reason
        assert finish_reasons(stream_chunks(c, [user("one two")])) == ["stop"]


def test_cut_non_streaming_raises_connection_error(server: FakeServer, client: openai.OpenAI) -> None:
    server.cut_stream_next()
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="fake-model", messages=[user("hi")])


def test_malformed_stream_raises_value_error(server: FakeServer, client: openai.OpenAI) -> None:
    server.malformed_next()
    with pytest.raises(json.JSONDecodeError):
        stream_chunks(client, [user("hello world")])
    assert text_of(stream_chunks(client, [user("ok")])) == "echo: ok"


def test_delay_next_times_out_client(server: FakeServer) -> None:
    server.delay_next(2.0)
    with make_client(server, timeout=0.3) as c:
        start = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            c.chat.completions.create(model="fake-model", messages=[user("slow")])
        assert time.monotonic() - start < 1.5
        # consumed: the next request is answered at once
        assert c.chat.completions.create(model="fake-model", messages=[user("fast")]).choices[0].message


def test_delay_next_then_answers(server: FakeServer, client: openai.OpenAI) -> None:
    server.delay_next(0.3)
    start = time.monotonic()
    assert text_of(stream_chunks(client, [user("late")])) == "echo: late"
    assert time.monotonic() - start >= 0.3


def test_hang_stream_times_out_while_iterating(server: FakeServer) -> None:
    server.hang_stream_next(after_chunks=2, seconds=5)
    got: list[Any] = []
    with make_client(server, timeout=0.3) as c:
        with pytest.raises(openai.APITimeoutError):
            for chunk in c.chat.completions.create(
                model="fake-model", messages=[user("a b c")], stream=True
            ):
                got.append(chunk)
    assert len(got) == 2


def test_omit_usage(server: FakeServer, client: openai.OpenAI) -> None:
    server.omit_usage = True
    chunks = stream_chunks(client, [user("hi")], stream_options={"include_usage": True})
    assert text_of(chunks) == "echo: hi"
    assert all(c.usage is None for c in chunks)
    assert client.chat.completions.create(model="fake-model", messages=[user("hi")]).usage is None


def test_stop_refuses_later_connections() -> None:
    srv = FakeServer()
    with make_client(srv) as c:
        # a kept-alive pooled connection must not outlive stop()
        assert c.chat.completions.create(model="fake-model", messages=[user("hi")]).choices
        srv.stop()
        srv.stop()  # idempotent
        with pytest.raises(openai.APIConnectionError):
            c.chat.completions.create(model="fake-model", messages=[user("hi")])
        with pytest.raises(openai.APIConnectionError):
            stream_chunks(c, [user("hi")])


def test_stop_interrupts_a_hanging_stream() -> None:
    srv = FakeServer()
    srv.hang_stream_next(after_chunks=1, seconds=30)
    with make_client(srv, timeout=10) as c:
        stream = c.chat.completions.create(model="fake-model", messages=[user("a b")], stream=True)
        first: Any = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
        start = time.monotonic()
        srv.stop()
        with pytest.raises(openai.APIConnectionError):
            list(stream)
        assert time.monotonic() - start < 3


# ---- helpers ------------------------------------------------------------------------


def test_approx_tokens_rule() -> None:
    assert approx_tokens([]) == 3
    assert approx_tokens([user("")]) == 6
    assert approx_tokens([user("abcd"), user("abcde")]) == 3 + 4 + 5
    assert approx_tokens([{"role": "user", "content": [{"type": "text", "text": "abcdefgh"}]}]) == 8


@settings(max_examples=50)
@given(st.text())
def test_split_reply_round_trips(text: str) -> None:
    pieces = split_reply(text)
    assert "".join(pieces) == text
    assert all(p for p in pieces)
