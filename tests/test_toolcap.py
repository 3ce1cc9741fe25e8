"""toolcap.cap_result: a tool result cut to the token cap, tokenized once over a prefix."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from stateless_chat.core.messages import Message
from stateless_chat.core.tokens import TokenCounter, byte_upper_bound
from stateless_chat.tools.toolcap import cap_result


class Recording:
    """A real counter that records how many characters each ``encode`` was given."""

    def __init__(self) -> None:
        self.counter = TokenCounter("gpt-4o")
        self.encoded: list[int] = []

    def encode(self, text: str) -> list[int]:
        self.encoded.append(len(text))
        return self.counter.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.counter.decode(ids)


TEXTS = {
    "words": "The quick brown fox jumps over the lazy dog. " * 40_000,
    "one letter": "a" * 1_000_000,
    "unicode": "数据😀 é " * 100_000,
}


@pytest.mark.parametrize("kind", TEXTS)
def test_a_big_result_is_cut_to_the_cap_by_one_tokenization_of_a_prefix(kind: str) -> None:
    text = TEXTS[kind]
    codec = Recording()
    measure = codec.counter.count_message
    capped, size = cap_result(text, 500, measure, codec)
    kept, _, note = capped.rpartition("\n[cut: ")
    assert text.startswith(kept) and len(kept) > 100
    assert measure(Message("tool", capped)) <= 500
    assert note.startswith("the result was about ") and f"of {len(text):,} characters are shown]" in note
    assert len(codec.encoded) == 1 and codec.encoded[0] < len(text) // 10  # once, over a prefix
    assert size > 500


def test_a_result_that_fits_is_whole_and_its_size_exact() -> None:
    counter = TokenCounter("gpt-4o")
    text = "short result " * 50
    assert cap_result(text, 2000, counter.count_message, counter) == (text, counter.count_message(
        Message("tool", text)))


def test_a_result_tokenized_whole_has_its_exact_size_in_the_note() -> None:
    counter = TokenCounter("gpt-4o")
    text = "word " * 700  # within the first window: tokenized whole
    capped, size = cap_result(text, 300, counter.count_message, counter)
    assert size == counter.count_message(Message("tool", text))
    assert f"[cut: the result was {size:,} tokens; the first " in capped


def test_counting_by_bytes_cuts_by_bytes() -> None:
    text = "ü" * 10_000
    capped, size = cap_result(text, 1000, byte_upper_bound)
    assert size == byte_upper_bound(Message("tool", text))
    assert byte_upper_bound(Message("tool", capped)) <= 1000
    assert capped.startswith("ü" * 400)
