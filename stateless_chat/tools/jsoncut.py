"""Cutting one oversized JSON text while it streams in: the strings are kept up to a byte cap.

An MCP server answers a tool call with one line of JSON; a line of 50 MB must not cost 50 MB
(let alone the gigabytes a parsed copy takes). ``JsonCutter`` reads such a line chunk by chunk
and keeps its structure (everything outside strings) whole and its strings up to ``cap`` bytes
in all, so that what it returns is a small, valid JSON text of the same shape: the big text
of a result is cut, the keys and short values around it are kept (every string keeps at least
``SHORT`` bytes, so ``"jsonrpc": "2.0"`` after a huge result survives).

It never holds more than about twice ``cap`` bytes, and its work is one regular-expression
scan per chunk: the bulk of a big line is the inside of a string, which a C-level match skips.
A line that cannot be cut into something small (megabytes outside strings: a huge array of
numbers; or very many strings) is given up on: ``finish`` then returns no text, but still
the request id the line answered, when it was seen, so that the call can be failed at once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

SHORT = 64  # bytes every string keeps even once the cap is reached (keys, "2.0", mime types, ids)
# The rest of a string's body: a run of anything but a quote or a backslash, and escapes.
_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_STRUCTURE = re.compile(rb"[{}\[\],:]")
# Where a line was given up on, its request id is looked for at its end (where a Node server puts it).
_TAIL_ID = re.compile(rb'"id"\s*:\s*(-?\d+|"[^"\\]{0,64}")\s*}\s*$')
TAIL = 256


@dataclass(frozen=True)
class Cut:
    """What was kept of one line: ``text`` (valid JSON if the line was; None when given up on),
    the line's size (``total`` bytes), the bytes of string content dropped, and the top-level
    ``id`` seen (a number or string, or None)."""

    text: bytes | None
    total: int
    dropped: int
    id: int | str | None


def _safe_prefix(body: bytes) -> bytes:
    """Return the longest prefix of the string body ``body`` (as cut) that is a whole JSON string
    body: no half escape, no half UTF-8 character, no lone high surrogate at its end."""
    for _ in range(12):
        try:
            value = json.loads(b'"' + body + b'"')
        except ValueError:
            body = body[:-1]
            continue
        if value and "\ud800" <= value[-1] <= "\udbff":  # half of a surrogate pair (\\uD83D without its mate)
            body = body[:-6]
            continue
        return body
    return b""


class JsonCutter:
    """Feed one JSON text in chunks (``feed``), then ``finish``: its strings cut to ``cap`` bytes in all.

    The text is one line of newline-delimited JSON: it holds no newline outside strings (and a
    valid one none inside either). Work and memory are linear in the chunks and bounded by ``cap``.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._out: list[bytes] = []
        self._kept = 0  # bytes in _out
        self._total = 0
        self._dropped = 0
        self._outside = 0
        self._carry = b""
        self._tail = b""
        self._given_up = False
        # Inside a string: the pieces of its body kept so far, their size, and what it may keep.
        self._in_string = False
        self._body: list[bytes] = []
        self._body_size = 0
        self._allow = 0
        self._cut_here = False
        # Structure: the open containers, whether the next string is a key of the top object,
        # the last key read there, and the top-level "id" value once read.
        self._stack: list[int] = []
        self._expect_key = False
        self._key: bytes | None = None
        self._id_text: list[bytes] | None = None
        self._id: int | str | None = None

    # ---- feeding -------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """Take the next part of the text."""
        self._total += len(chunk)
        self._tail = (self._tail + chunk)[-TAIL:]
        data = self._carry + chunk if self._carry else chunk
        self._carry = b""
        pos, end = 0, len(data)
        while pos < end:
            if self._in_string:
                if self._body_size >= self._allow and self._skip(data, pos):
                    return
                stop = _BODY.match(data, pos).end()  # type: ignore[union-attr]  # matches the empty string
                self._string_part(data, pos, stop)
                if stop == end:
                    return
                if data[stop] == 0x22:  # the closing quote
                    self._close_string()
                    pos = stop + 1
                else:  # a backslash as the chunk's last byte: its escaped character comes next
                    self._carry = data[stop:]
                    return
            else:
                quote = data.find(b'"', pos)
                stop = end if quote < 0 else quote
                self._outside_part(data[pos:stop])
                if quote < 0:
                    return
                self._open_string()
                pos = quote + 1

    def _skip(self, data: bytes, pos: int) -> bool:
        """Drop the rest of ``data`` if all of it is inside the current (full) string; return whether.

        The fast path of a huge string: with escaped backslashes and escaped quotes taken out
        (``bytes.replace``, at memory speed), a quote left means the string ends in this chunk.
        """
        rest = data[pos:]
        if b'"' in rest.replace(b"\\\\", b"").replace(b'\\"', b""):
            return False
        backslashes = len(rest) - len(rest.rstrip(b"\\"))
        if backslashes % 2:  # the chunk ends in the middle of an escape
            self._carry = rest[-1:]
            rest = rest[:-1]
        self._dropped += len(rest)
        self._cut_here = True
        return True

    def _string_part(self, data: bytes, start: int, stop: int) -> None:
        size = stop - start
        room = self._allow - self._body_size
        if room >= size:
            self._body.append(data[start:stop])
            self._body_size += size
            return
        if room > 0:
            self._body.append(data[start:start + room])
            self._body_size += room
        self._dropped += size - max(room, 0)
        self._cut_here = True

    def _open_string(self) -> None:
        self._in_string = True
        self._body, self._body_size, self._cut_here = [], 0, False
        self._allow = max(self.cap - self._kept, SHORT)

    def _close_string(self) -> None:
        self._in_string = False
        body = b"".join(self._body)
        self._body = []
        if self._cut_here:
            safe = _safe_prefix(body)
            self._dropped += len(body) - len(safe)
            body = safe
        self._emit(b'"' + body + b'"')
        if self._stack == [0x7B]:  # a string directly in the top object: a key, or a value
            if self._expect_key:
                self._key = body if len(body) <= SHORT else None
                self._expect_key = False
            elif self._id_text is not None:
                self._id = json.loads(b'"' + body + b'"')
                self._id_text = None

    def _outside_part(self, segment: bytes) -> None:
        if not segment or self._given_up:
            return
        self._outside += len(segment)
        if self._outside > self.cap:
            self._give_up()
            return
        self._emit(segment)
        start = 0
        for match in _STRUCTURE.finditer(segment):
            if self._id_text is not None:
                self._id_text.append(segment[start:match.start()])
            self._structure(match.group()[0])
            start = match.end()
        if self._id_text is not None:
            self._id_text.append(segment[start:])

    def _structure(self, char: int) -> None:
        top = self._stack == [0x7B]
        if char in (0x7B, 0x5B):  # { [
            if top and self._id_text is not None:
                self._id_text = None  # the id is not a number or string: not kept
            self._stack.append(char)
            self._expect_key = char == 0x7B and len(self._stack) == 1
        elif char in (0x7D, 0x5D):  # } ]
            self._end_id()
            if self._stack:
                self._stack.pop()
        elif char == 0x2C and top:  # , in the top object: the next string is a key
            self._end_id()
            self._expect_key = True
        elif char == 0x3A and top and self._key == b"id":  # : after the key "id"
            self._id_text = []
            self._key = None

    def _end_id(self) -> None:
        if self._id_text is not None and self._stack == [0x7B]:
            text = b"".join(self._id_text).strip()
            self._id_text = None
            try:
                value = json.loads(text) if text else None
            except ValueError:
                value = None
            if isinstance(value, int) and not isinstance(value, bool):
                self._id = value

    def _emit(self, piece: bytes) -> None:
        if self._given_up:
            return
        self._out.append(piece)
        self._kept += len(piece)
        if self._kept > 2 * self.cap + 1024:  # very many short strings: nothing small can be made of it
            self._give_up()

    def _give_up(self) -> None:
        self._given_up = True
        self._out = []

    # ---- the result ----------------------------------------------------------------------

    def finish(self) -> Cut:
        """Return what was kept of the text (``text`` None when it could not be cut small)."""
        if self._in_string or self._carry:  # the text ended inside a string: it was not JSON
            self._give_up()
        text = None if self._given_up else b"".join(self._out)
        if text is None and self._id is None:
            found = _TAIL_ID.search(self._tail)
            if found is not None:
                value = json.loads(found.group(1))
                self._id = value if isinstance(value, (int, str)) else None
        return Cut(text, self._total, self._dropped, self._id)
