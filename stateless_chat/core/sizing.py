"""How the conversation is measured: exact counts, or byte bounds until exact counts are needed.

A one-shot run that fits its budget easily never needs the encoding (loading it costs a
noticeable share of start-up), so it can size every message by its UTF-8 byte length, an
upper bound on its tokens. The first time that bound does not fit, or once tools are
offered (their schemas are counted with the encoding), the sizer becomes exact and the
history is measured again. Every size of one conversation comes from one sizer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from stateless_chat.core.messages import Message
from stateless_chat.core.tokens import TokenCounter, byte_upper_bound

# What a tools array adds past its JSON bytes when sized by bytes: the framing the API wraps it in.
TOOLS_BYTE_FRAMING = 12


@dataclass(frozen=True)
class Sizer:
    """Sizes messages and tools arrays with ``counter`` (``exact``) or by their byte length."""

    counter: TokenCounter
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

    def made_exact(self) -> Sizer:
        """Return the exact sizer with the same counter (this one when it is exact already)."""
        return self if self.exact else replace(self, exact=True)


__all__ = ["Sizer"]
