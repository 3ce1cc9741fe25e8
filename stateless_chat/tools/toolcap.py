"""A tool result cut to ``tool_result_max_tokens``, tokenizing it once (and only as far as needed).

A result may be megabytes (up to ``tool_result_max_bytes``) that the request may carry only a
couple of thousand tokens of. The old way, a binary search over prefixes, tokenized the whole
result about 26 times, and exact BPE over one long run of a letter is quadratic. Here the
result is tokenized once, over a window at its start just big enough to hold the cap (grown
fourfold in the rare case it was not), and cut where the cap falls; the size before the cut
is exact when the window held the whole result, else estimated from the window's rate and
said to be ("about"). Without an encoding (counting by bytes), the cut is computed from the
byte sizes, as the counts are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from stateless_chat.core.messages import Message
from stateless_chat.core.tokens import EncodingUnavailable

NOTE = "\n[cut: the result was {about}{size:,} tokens; the first {kept:,} of {chars:,} characters are shown]"
WINDOW_CHARS_PER_TOKEN = 6  # the first window: enough for the cap in all but unusual text
MARGIN = 2  # tokens left for a cut's last token to re-tokenize differently


class Codec(Protocol):
    """What counts tokens exactly (``tokens.TokenCounter``): ``encode`` raises where it cannot."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def cap_result(text: str, cap: int, measure: Callable[[Message], int], codec: Codec | None = None
               ) -> tuple[str, int]:
    """Return ``text`` as a ``tool`` message within ``cap`` tokens (by ``measure``), cut with a note
    saying how much was cut, and its size before.

    ``codec`` tokenizes when ``measure`` counts exactly; without it (or when it cannot encode)
    the cut follows ``measure``'s byte-based count.
    """
    overhead = measure(Message("tool", ""))
    if overhead + _utf8_len(text) <= cap:  # no token is shorter than a byte: it fits as it is
        return text, measure(Message("tool", text))
    note_cost = measure(Message("tool", NOTE.format(about="about ", size=10**12, kept=10**12, chars=10**12)))
    room = max(cap - note_cost - MARGIN, 0)
    if codec is not None:
        try:
            kept, size, exact = _cut_by_tokens(text, room, codec)
        except EncodingUnavailable:  # no encoding after all: count as measure does
            codec = None
    if codec is None:
        kept, size, exact = _cut_by_measure(text, room, overhead, measure)
    size += overhead
    if len(kept) == len(text):
        return text, size
    while True:
        about = "" if exact else "about "
        capped = kept + NOTE.format(about=about, size=size, kept=len(kept), chars=len(text))
        if measure(Message("tool", capped)) <= cap or not kept:
            return capped, size
        kept = kept[: len(kept) * 9 // 10]  # a last token counted differently: shorten, rarely needed


def _cut_by_tokens(text: str, room: int, codec: Codec) -> tuple[str, int, bool]:
    """Return the prefix of ``text`` that is ``room`` tokens, the tokens of ``text`` and whether that
    count is exact (the whole text was tokenized) or estimated from the window."""
    window = max(room * WINDOW_CHARS_PER_TOKEN, 4096)
    while True:
        ids = codec.encode(text[:window])
        if len(ids) > room or window >= len(text):
            break
        window *= 4
    whole = window >= len(text)
    if whole and len(ids) <= room:
        return text, len(ids), True
    kept = codec.decode(ids[:room])
    while kept and not text.startswith(kept):  # a character split between tokens: drop its half
        kept = kept[:-1]
    size = len(ids) if whole else round(len(ids) * len(text) / window)
    return kept, size, whole


def _cut_by_measure(text: str, room: int, overhead: int, measure: Callable[[Message], int]
                    ) -> tuple[str, int, bool]:
    """Return the prefix of ``text`` that ``measure`` (a count proportional to bytes) puts at ``room``,
    the count of ``text`` and True (the count is what ``measure`` says)."""
    size = measure(Message("tool", text)) - overhead
    data = text.encode("utf-8", "surrogatepass")
    keep = len(data) * room // max(size, 1)
    kept = data[:keep].decode("utf-8", "ignore")
    return kept, size, True
