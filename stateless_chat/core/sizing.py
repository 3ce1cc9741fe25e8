"""How the conversation is measured: exact counts, or byte bounds until exact counts are needed.

A one-shot run that fits its budget easily never needs the encoding (loading it costs a
noticeable share of start-up), so it can size every message by its UTF-8 byte length, an
upper bound on its tokens. The first time that bound does not fit, or once tools are
offered (their schemas are counted with the encoding), the sizer becomes exact and the
history is measured again. Every size of one conversation comes from one sizer.

The counter is anything ``Counting``: ``core.tokens.TokenCounter`` (tiktoken), or the meter a chat
is given (``chat.meter.Meter``: the server's own tokenizer, or a calibration). What a request adds
beyond its messages (``framing``: the reply priming, or a chat template's own tokens) comes from it
too, once counts are exact.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from stateless_chat.core.messages import Message, ToolCall, Usage
from stateless_chat.core.tokens import REPLY_PRIMING, byte_upper_bound

# What a tools array adds past its JSON bytes when sized by bytes: the framing the API wraps it in.
TOOLS_BYTE_FRAMING = 12


class Counting(Protocol):
    """What a session asks of its token counter (``TokenCounter`` and ``chat.meter.Meter`` are ones)."""

    model: str
    encoding_name: str

    def count_message(self, message: Message) -> int: ...

    def count_tools(self, tools: Sequence[Mapping[str, Any]]) -> int: ...

    def request_tokens(self, leading_system: bool = True) -> int: ...

    def count_usage(self, prompt_tokens: int, text: str, calls: Sequence[ToolCall],
                    turn: int) -> Usage | None: ...

    @property
    def label(self) -> str: ...

    def how(self) -> str: ...

    def warm(self) -> None: ...

    def for_model(self, model: str, encoding: str | None = None,
                  default_encoding: str = "o200k_base") -> Counting: ...


@dataclass(frozen=True)
class Sizer:
    """Sizes messages and tools arrays with ``counter`` (``exact``) or by their byte length."""

    counter: Counting
    exact: bool = True

    def __call__(self, message: Message) -> int:
        """Return the billed size of ``message`` (an upper bound until counting is exact)."""
        if self.exact:
            return self.counter.count_message(message)
        return byte_upper_bound(message)

    def text(self, text: str) -> int:
        """Return the billed size of ``text`` sent as a user message."""
        return self(Message("user", text))

    def tools(self, tools: Sequence[Mapping[str, Any]]) -> int:
        """Return what ``tools`` add to a request (a byte bound until counting is exact)."""
        if not tools:
            return 0
        if self.exact:
            return self.counter.count_tools(tools)
        return len(json.dumps(list(tools), ensure_ascii=False).encode()) + TOOLS_BYTE_FRAMING

    def framing(self, leading_system: bool = True) -> int:
        """Return what a request adds beyond its messages: the counter's (a chat template's tokens, which
        may depend on whether a system message leads) once counts are exact, the reply priming before."""
        return self.counter.request_tokens(leading_system) if self.exact else REPLY_PRIMING

    def made_exact(self) -> Sizer:
        """Return the exact sizer with the same counter (this one when it is exact already)."""
        return self if self.exact else replace(self, exact=True)


__all__ = ["Counting", "Sizer"]
