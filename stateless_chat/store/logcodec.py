"""How the conversation log stores what was sent: each message once, a request as its parameters
plus an ordered reference to stored messages, rebuilt byte for byte on demand.

A request body is stored in parts. Its ``messages`` array is cut out: each message is stored
once per conversation (``TextRow``: the API's fields as columns, so that the text is kept once
and indexed directly), and what remains, the parameters (model, limits, tools, stream options),
is stored once however many requests share it (``split_body``). ``join_body`` puts them back
together as the exact compact JSON text ``dumps`` makes of the whole body, because it is that
text: each part is what ``json.dumps`` writes for it inside the whole (same separators, same key
order). Anything that would not come back identical (a lone surrogate, which makes ``dumps``
escape the whole body as ASCII; a message of another shape than the API's) is stored verbatim.

Pure functions over standard library types; no SQL here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stateless_chat.core.messages import content_parts
from stateless_chat.sanitize import LONE_SURROGATE, strip_controls, whole_characters

# The keys of a message as ``Message.to_api`` writes them, in its order.
MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")
_CALL_KEYS = ["id", "type", "function"]
_FUNCTION_KEYS = ["name", "arguments"]
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def dumps(value: Any) -> str:
    """Return ``value`` as compact JSON text, as the log stores a body: UTF-8 as is, or all ASCII
    when it holds half a surrogate pair (which UTF-8 cannot carry)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(value, separators=(",", ":")) if LONE_SURROGATE.search(text) else text


# The characters ``strip_controls`` removes, or that start what it removes (newline and tab stay).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def key_of(text: str) -> int:
    """Return a 64-bit fingerprint of ``text`` (a signed integer, as SQLite stores one)."""
    digest = hashlib.blake2b(text.encode("utf-8", errors="surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True)
class TextRow:
    """One stored message: the API's fields, or ``raw`` (its exact JSON) when it has another shape.

    ``content`` is what the full-text index holds, also for a raw message (its text, made
    storable); ``tool_calls`` is the compact JSON of the calls.
    """

    role: str
    content: str | None
    name: str | None = None
    tool_calls: str | None = None
    tool_call_id: str | None = None
    raw: str | None = None

    def json(self) -> str:
        """Return the message's JSON text, exactly as it stands in a request body."""
        if self.raw is not None:
            return self.raw
        parts = ['{"role":', _string(self.role), ',"content":',
                 "null" if self.content is None else _string(self.content)]
        if self.name is not None:
            parts += [',"name":', _string(self.name)]
        if self.tool_calls is not None:
            parts += [',"tool_calls":', self.tool_calls]
        if self.tool_call_id is not None:
            parts += [',"tool_call_id":', _string(self.tool_call_id)]
        parts.append("}")
        return "".join(parts)

    def plain(self) -> str | None:
        """Return what the full-text index holds of this message when that is not its stored text
        (its text, then its calls' JSON), or None: the text without terminal controls, so a word
        coloured by escape sequences is found, and no snippet prints what is left of one."""
        body = (self.content or "") + ("" if self.tool_calls is None else "\n" + self.tool_calls)
        if _CONTROLS.search(body) is None:  # every sequence starts with one: nothing to strip
            return None
        stripped = strip_controls(body)
        return None if stripped == body else stripped

    def message(self) -> dict[str, Any]:
        """Return the message as the request held it."""
        if self.raw is not None:
            value = json.loads(self.raw)
            return value if isinstance(value, dict) else {"value": value}
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            data["name"] = self.name
        if self.tool_calls is not None:
            data["tool_calls"] = json.loads(self.tool_calls)
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        return data


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _is_call(call: object) -> bool:
    if not isinstance(call, dict) or list(call) != _CALL_KEYS or call["type"] != "function":
        return False
    function = call["function"]
    return (isinstance(call["id"], str) and isinstance(function, dict) and list(function) == _FUNCTION_KEYS
            and all(isinstance(v, str) for v in function.values()))


def text_row(message: Mapping[str, Any]) -> TextRow:
    """Return how ``message`` (one item of a request's ``messages``) is stored: as columns when it
    has exactly the API's shape and comes back identical, else verbatim."""
    keys = list(message)
    role, content = message.get("role"), message.get("content")
    canonical = (
        keys == [k for k in MESSAGE_KEYS if k in message] and keys[:2] == ["role", "content"]
        and isinstance(role, str) and (content is None or isinstance(content, str))
        and all(isinstance(message.get(k), str) for k in ("name", "tool_call_id") if k in message)
        and (("tool_calls" not in message)
             or (isinstance(message["tool_calls"], list) and message["tool_calls"]
                 and all(_is_call(c) for c in message["tool_calls"])))
    )
    shown = _index_text(message)
    if canonical:
        calls = message.get("tool_calls")
        row = TextRow(str(role), content, message.get("name"), None if calls is None else dumps(calls),
                      message.get("tool_call_id"))
        whole = row.json()
        if not LONE_SURROGATE.search(whole) and whole == dumps(dict(message)):
            return row
    return TextRow(whole_characters(str(role)), shown, raw=dumps(dict(message)))


def _index_text(message: Mapping[str, Any]) -> str:
    """Return the text of a message of any shape: its content when that is text; for text and image
    parts, the text with one ``[image: MIME]`` line an image (never its base64); else its JSON."""
    content = message.get("content")
    if isinstance(content, list):
        text, images = content_parts(content)
        if text or images:
            return whole_characters((text or "") + "".join(f"\n[image: {image.mime}]" for image in images))
    text = content if isinstance(content, str) else "" if content is None else dumps(content)
    return whole_characters(text)


def fast_key(message: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """Return a key that tells a plain message (no tool calls) from every other one without
    serializing it, or None when the message needs its JSON to be told apart. The key holds the
    message's own strings (no copy); their hashes are kept by the strings themselves."""
    if "tool_calls" in message or len(message) > 4:
        return None
    values = tuple(message.values())
    if not all(value is None or type(value) is str for value in values):
        return None
    return (tuple(message), *values)


@dataclass(frozen=True)
class Split:
    """A request body cut at its messages: ``params`` is the body's JSON with ``"messages":[]`` in
    place, ``at`` the index in it right after that ``[``."""

    params: str
    at: int
    messages: Sequence[Mapping[str, Any]]


def split_body(body: Mapping[str, Any]) -> Split | None:
    """Return ``body`` cut at its ``messages`` array, or None when it cannot be stored in parts
    (no such array, a message that is not an object, a lone surrogate anywhere)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return None
    parts: list[str] = []
    at = -1
    for key, value in body.items():
        if not isinstance(key, str):
            return None
        if key == "messages":
            parts.append('"messages":[')
            at = sum(len(p) for p in parts) + len(parts)  # the commas between the parts
            parts[-1] += "]"
        else:
            parts.append(_string(key) + ":" + json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    params = "{" + ",".join(parts) + "}"
    if LONE_SURROGATE.search(params):
        return None
    return Split(params, at, messages)


def join_body(params: str, at: int, messages: Iterable[str]) -> str:
    """Return the body's JSON text: ``params`` with the messages' JSON texts put back at ``at``."""
    return params[:at] + ",".join(messages) + params[at:]


def ranges(ids: Sequence[int]) -> str:
    """Return ``ids`` in their order as runs: ``[3, 4, 5, 9, 2]`` is ``"3-5,9,2"``."""
    runs: list[str] = []
    start = previous = None
    for number in ids:
        if previous is not None and number == previous + 1:
            previous = number
            continue
        if start is not None:
            runs.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = number
    if start is not None:
        runs.append(str(start) if start == previous else f"{start}-{previous}")
    return ",".join(runs)


def unranges(text: str) -> list[int]:
    """Return the ids ``ranges`` wrote, in order; ValueError for text it did not write."""
    ids: list[int] = []
    for run in text.split(",") if text else ():
        match = _RANGE.match(run)
        if match is None:
            raise ValueError(f"not a list of message references: {run[:40]!r}")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        if last < first:
            raise ValueError(f"not a list of message references: {run[:40]!r}")
        ids.extend(range(first, last + 1))
    return ids


__all__ = ["Split", "TextRow", "dumps", "fast_key", "join_body", "key_of", "ranges", "split_body", "text_row",
           "unranges"]
