"""jsoncut.JsonCutter: an oversized JSON line cut to a byte cap while it streams, still valid JSON."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stateless_chat.tools.jsoncut import SHORT, JsonCutter
from stateless_chat.tools.mcp_stdio import CUT_META, LineReader

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


def cut(data: bytes, cap: int, chunk: int) -> Any:
    cutter = JsonCutter(cap)
    for start in range(0, len(data), chunk):
        cutter.feed(data[start:start + chunk])
    return cutter.finish()


def same_shape(original: Any, kept: Any) -> bool:
    """Whether ``kept`` is ``original`` with strings cut to prefixes (keys too)."""
    if isinstance(original, str):
        return isinstance(kept, str) and original.startswith(kept)
    if isinstance(original, list):
        return isinstance(kept, list) and len(kept) == len(original) and all(map(same_shape, original, kept))
    if isinstance(original, dict):
        return isinstance(kept, dict) and len(kept) == len(original)
    return bool(original == kept)


@settings(max_examples=150, deadline=None)
@given(value=json_values, cap=st.integers(1, 400), chunk=st.integers(1, 97), ascii_only=st.booleans())
def test_any_json_comes_out_valid_with_its_strings_cut_to_prefixes(value: Any, cap: int, chunk: int,
                                                                    ascii_only: bool) -> None:
    data = json.dumps(value, ensure_ascii=ascii_only).encode()
    result = cut(data, cap, chunk)
    assert result.total == len(data)
    if result.text is None:  # given up on: only when more than the cap is structure or short strings
        return
    kept = json.loads(result.text)
    assert same_shape(value, kept)
    json.dumps(kept).encode("utf-8")  # no lone surrogate made by the cut
    if result.dropped == 0:
        assert kept == value


@settings(max_examples=40, deadline=None)
@given(chunk=st.integers(1, 5000))
def test_a_big_result_keeps_its_envelope_and_the_id_however_it_is_chunked(chunk: int) -> None:
    # A Node server puts "jsonrpc" and "id" after the result.
    text = 'line with "quotes" and \\ backslashes\n' * 2000
    message = {"result": {"content": [{"type": "text", "text": text}]}, "jsonrpc": "2.0", "id": 42}
    result = cut(json.dumps(message).encode(), 1000, chunk)
    kept = json.loads(result.text or b"")
    assert kept["jsonrpc"] == "2.0" and kept["id"] == 42 and result.id == 42
    body = kept["result"]["content"][0]["text"]
    assert 900 <= len(json.dumps(body)) - 2 <= 1000 and text.startswith(body)  # the cap counts bytes sent
    assert result.dropped >= len(json.dumps(text)) - 1100


def test_a_line_that_is_mostly_structure_is_given_up_on_but_its_id_is_kept() -> None:
    for message in ({"result": {"numbers": [1] * 5000}, "jsonrpc": "2.0", "id": 7},
                    {"jsonrpc": "2.0", "id": "req-7", "result": {"numbers": [1] * 5000}}):
        result = cut(json.dumps(message).encode(), 1000, 512)
        assert result.text is None and result.id == message["id"]


def test_many_short_strings_are_kept_within_twice_the_cap() -> None:
    result = cut(json.dumps(["ab"] * 10_000).encode(), 2000, 4096)
    assert result.text is None  # it cannot be made small by cutting strings
    assert SHORT > 2


def test_the_line_reader_marks_the_cut_in_the_result_meta() -> None:
    reader = LineReader(4096)
    content = [{"type": "text", "text": "x" * 100_000}]
    big = json.dumps({"jsonrpc": "2.0", "id": 3, "result": {"content": content}})
    small = json.dumps({"jsonrpc": "2.0", "id": 4, "result": {"content": []}})
    data = (big + "\n" + small + "\n").encode()
    messages = [m for start in range(0, len(data), 1000) for m in reader.feed(data[start:start + 1000])]
    assert len(messages) == 2
    first = messages[0].message.model_dump(by_alias=True)  # type: ignore[union-attr]
    assert first["id"] == 3 and first["result"]["_meta"][CUT_META]["bytes"] == len(big)
    assert len(first["result"]["content"][0]["text"]) <= 4096
    assert "_meta" not in messages[1].message.model_dump(by_alias=True)["result"]  # type: ignore[union-attr]


def test_a_malformed_answer_becomes_an_error_for_its_request() -> None:
    reader = LineReader(4096)
    [answer] = reader.feed(b'{"jsonrpc": "1.0", "id": 9, "result": {"tools": []}}\n')
    data = answer.message.model_dump(by_alias=True)  # type: ignore[union-attr]
    assert data["id"] == 9 and "malformed" in data["error"]["message"]
    [noise] = reader.feed(b"not json at all\n")
    assert isinstance(noise, Exception)
