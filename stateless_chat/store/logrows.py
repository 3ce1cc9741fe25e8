"""The conversation log's values: what a write takes and what reading gives back, and the rules
that turn them into rows and rows back into them (an entry, a turn's accounting, a time, an id).

Only the standard library and the core's value types are used: this is core.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from stateless_chat.core.history import Conversation
from stateless_chat.core.ledger import Ledger, TurnStats
from stateless_chat.core.memory import Memory, Note
from stateless_chat.core.messages import Entry, Eviction, Image, Message, ToolCall, content_parts
from stateless_chat.errors import LogError
from stateless_chat.sanitize import strip_controls, whole_characters
from stateless_chat.store.logcodec import dumps
from stateless_chat.store.logdiff import Delta, Placed
from stateless_chat.store.logsearch import CONTROL

# Keys that would hold a credential, wherever they appear in what is logged. The request body
# never holds one (the key travels in a header); this is defence in depth.
SECRET_KEYS = frozenset({"authorization", "proxy_authorization", "api_key", "x_api_key"})
ROLES = frozenset({"system", "user", "assistant", "tool"})
KINDS = frozenset({"turn", "file", "summary", "memory", "instructions", "skills", "skill", "docs"})
HOWS = frozenset({"dropped", "folded", "removed"})
SLOTS = ("system", "memory", "summary", "history", "recalled", "evicted")


class Conflict(LogError):
    """The conversation was written by another chat since this one read it: nothing was written."""


# ---- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnLog:
    """One completed turn: ``requests`` every body it sent, in order (the steps of a tool loop; the
    last one got ``reply``), ``answer`` the message the reply became, ``stats`` its accounting."""

    turn: int
    requests: tuple[Mapping[str, Any], ...]
    reply: str
    finish_reason: str | None = None
    usage: Mapping[str, Any] | None = None
    events: tuple[str, ...] = ()
    answer: Entry | None = None
    stats: TurnStats | None = None
    model: str = ""
    endpoint: str = ""
    seconds: float | None = None


@dataclass(frozen=True)
class EventLog:
    """A change between turns (``edit``), a turn cancelled after its tools ran (``cancelled``), a
    fork: one line, and what else there is to keep as JSON."""

    kind: str
    what: str
    turn: int
    detail: Any = None


@dataclass(frozen=True)
class Change:
    """One write to a conversation: the entries that changed, the settings (None: unchanged), the
    accounting of turns not logged here (None: unchanged), a turn, an event."""

    delta: Delta | None = None
    settings: Mapping[str, Any] | None = None
    memory: Mapping[str, Any] | None = None  # the standing notes (``memory_data``); None: unchanged
    ledger: Sequence[TurnStats] | None = None
    turn: TurnLog | None = None
    event: EventLog | None = None
    model: str = ""
    endpoint: str = ""


@dataclass(frozen=True)
class Restored:
    """A conversation read back as it was left: the value, its accounting and settings, where each
    entry stands in the log (for the journal's ``Mirror``), and the notes on rows left out."""

    cid: str
    conversation: Conversation
    ledger: Ledger
    settings: dict[str, Any]
    head: int
    placed: tuple[Placed, ...]
    next_pos: int
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConversationRow:
    """One conversation as ``logs list`` shows it: ``first_line`` is its first user message, one line;
    ``usage`` the reported tokens by model (prompt, cached, completion); ``seconds`` the turns' time."""

    id: str
    started: datetime
    active: datetime
    model: str
    endpoint: str
    turns: int
    first_line: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    seconds: float = 0.0
    usage: tuple[tuple[str, int, int, int], ...] = ()
    parent: str | None = None


@dataclass(frozen=True)
class TurnRow:
    """One logged turn; the token columns are the reported usage (None: not said), ``stats`` its
    accounting (None for turns logged before version 4), ``problem`` what was damaged in its row."""

    turn: int
    logged_at: datetime
    reply: str
    finish_reason: str | None
    usage: dict[str, Any] | None
    events: tuple[str, ...]
    model: str
    endpoint: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    seconds: float | None = None
    steps: int = 1
    stats: TurnStats | None = None
    problem: str | None = None


@dataclass(frozen=True)
class EventRow:
    """A logged change between turns, cancelled turn or fork."""

    seq: int
    at: datetime
    turn: int
    kind: str
    what: str
    detail: Any = None


@dataclass(frozen=True)
class SearchHit:
    """A message that matches a search; the match is marked ``[like this]`` in ``snippet``.

    ``score`` is the bm25 relevance, higher is better.
    """

    cid: str
    message_id: int
    role: str
    turn: int
    snippet: str
    score: float


@dataclass(frozen=True)
class RecallHit:
    """A message relevant to a recall query; ``score`` is its bm25 relevance, higher is better."""

    message_id: int
    turn: int
    score: float


@dataclass(frozen=True)
class TokenTotals:
    """The reported tokens of a conversation's logged turns, summed (turns that reported none add 0)."""

    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class Filters:
    """What ``conversations`` lists: active since ``since``, a turn with a model containing ``model``,
    a message matching ``words`` (as ``search``), or just ``cid``."""

    since: datetime | None = None
    model: str | None = None
    words: str | None = None
    cid: str | None = None
    before: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---- helpers --------------------------------------------------------------------------------

_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case: ASCII order is time order
_ID_TIME_DIGITS = 9  # milliseconds since 1970 in 45 bits: good until the year 3084
_ID_RANDOM_DIGITS = 4
_FIRST_LINE_WIDTH = 80


def utc(when: datetime | None) -> datetime:
    """Return ``when`` (now when None; a naive time is taken as local) as an aware UTC time."""
    return datetime.now(timezone.utc) if when is None else when.astimezone(timezone.utc)


def stamp_of(when: datetime) -> str:
    """Return ``when`` as fixed-width ISO 8601 UTC text, so that text order is time order."""
    return utc(when).isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def new_id(when: datetime) -> str:
    """Return a conversation id: the start time in milliseconds, then random digits (13 characters).

    Ids sort by start time as text, and two processes that start in the same millisecond
    still differ (and the primary key catches the one-in-a-million tie).
    """
    millis = max(0, int(utc(when).timestamp() * 1000)) % len(_ID_ALPHABET) ** _ID_TIME_DIGITS
    digits = []
    for _ in range(_ID_TIME_DIGITS):
        millis, digit = divmod(millis, len(_ID_ALPHABET))
        digits.append(_ID_ALPHABET[digit])
    # 256 is a multiple of the alphabet's 32 letters: every letter equally likely (and no ``secrets``
    # import, ~4 ms of a one-shot run)
    noise = "".join(_ID_ALPHABET[byte % len(_ID_ALPHABET)] for byte in os.urandom(_ID_RANDOM_DIGITS))
    return "".join(reversed(digits)) + noise


def is_secret(key: object) -> bool:
    return str(key).lower().replace("-", "_") in SECRET_KEYS


def scrubbed(value: Any) -> Any:
    """Return ``value`` (JSON-like) without any key that names a credential, at any depth."""
    if isinstance(value, Mapping):
        return {key: scrubbed(item) for key, item in value.items() if not is_secret(key)}
    if isinstance(value, (list, tuple)):
        return [scrubbed(item) for item in value]
    return value


def storable(value: str) -> str:
    """Return ``value`` storable as UTF-8 (half a surrogate pair becomes U+FFFD)."""
    return whole_characters(value)


def loads(text: str | None) -> Any:
    """Return the JSON value of ``text``; ValueError (one line) when it is not JSON or nested too deep."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("its JSON is nested too deeply") from None
    except ValueError:
        raise ValueError("it is not valid JSON") from None


def usage_count(usage: Mapping[str, Any] | None, *keys: str) -> int | None:
    """Return the whole number at the first of ``keys`` (a dotted path) in ``usage``, else None.

    The same rule as the version 2 migration's SQL, so old and new rows agree.
    """
    for key in keys:
        value: Any = usage
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def first_line(text: str | None) -> str:
    """Return the first non-blank line of ``text``, cut to ``_FIRST_LINE_WIDTH`` characters, without
    terminal controls (whole escape sequences, not only their first character)."""
    for line in strip_controls(text or "").splitlines():
        line = " ".join(CONTROL.sub(" ", line).split())
        if line:
            return line if len(line) <= _FIRST_LINE_WIDTH else line[: _FIRST_LINE_WIDTH - 1] + "…"
    return ""


def one_line(text: str) -> str:
    return " ".join(CONTROL.sub(" ", text).split())


STATS_FIELDS = (
    "turn", "estimated_prompt_tokens", "reported_prompt_tokens", "reported_completion_tokens",
    "baseline_prompt_tokens", "evictions", "summary_prompt_tokens", "summary_completion_tokens",
    "summary_cached_tokens", "finish_reason", "reported_cached_tokens", "predicted_cached_tokens",
    "cache_break", "steps",
)
# A turn's accounting as ``turns`` columns, in the order of ``stats_from_row``'s values.
STATS_COLUMNS = ("turn, estimated_tokens, prompt_tokens, completion_tokens, baseline_tokens, evictions, "
                 "summary_prompt_tokens, summary_completion_tokens, summary_cached_tokens, finish_reason, "
                 "cached_tokens, predicted_cached_tokens, cache_break, steps")


def stats_from_row(values: Sequence[Any]) -> TurnStats:
    """Return the accounting of the ``turns`` row whose ``STATS_COLUMNS`` are ``values``."""
    (turn, estimated, prompt, completion, baseline, evictions, summary_prompt, summary_completion,
     summary_cached, finish, cached, predicted, cache_break, steps) = values
    if _FAST_STATS:  # as entry_fast: a long conversation's ledger is thousands of these
        stats: TurnStats = _built(TurnStats, {
            "turn": turn, "estimated_prompt_tokens": estimated, "reported_prompt_tokens": prompt,
            "reported_completion_tokens": completion, "baseline_prompt_tokens": baseline,
            "evictions": evictions or 0, "events": (), "summary_prompt_tokens": summary_prompt or 0,
            "summary_completion_tokens": summary_completion or 0,
            "summary_cached_tokens": summary_cached or 0, "finish_reason": finish,
            "reported_cached_tokens": cached, "predicted_cached_tokens": predicted or 0,
            "cache_break": cache_break, "steps": steps or 1})
        return stats
    return TurnStats(turn, estimated, prompt, completion, baseline, evictions or 0, (), summary_prompt or 0,
                     summary_completion or 0, summary_cached or 0, finish, cached, predicted or 0,
                     cache_break, steps or 1)


def memory_data(memory: Memory, sent: bool) -> dict[str, Any]:
    """Return the standing memory as the log keeps it: its notes, the next note's number, whether it is
    sent (memory on)."""
    return {"notes": [{"id": n.id, "text": n.text, "source": n.source, "turn": n.turn, "tokens": n.tokens}
                      for n in memory.notes], "next_id": memory.next_id, "sent": sent}


def memory_from(data: object) -> tuple[Memory, bool]:
    """Return the standing memory ``memory_data`` wrote and whether it is sent; a conversation logged
    before standing memory (None) has its user messages to read for it once (``scanned`` False).
    ValueError when it is malformed."""
    if data is None:
        return Memory(scanned=False), True
    if not isinstance(data, dict) or not isinstance(data.get("notes"), list):
        raise ValueError("the standing memory is not an object with a list of notes")
    notes = []
    for raw in data["notes"]:
        if not isinstance(raw, dict) or type(raw.get("id")) is not int \
                or not isinstance(raw.get("text"), str):
            raise ValueError("a standing note has no number or no text")
        source, turn, tokens = raw.get("source"), raw.get("turn"), raw.get("tokens")
        notes.append(Note(raw["id"], raw["text"], source if type(source) is int else None,
                          turn if type(turn) is int else None, tokens if type(tokens) is int else 0))
    next_id = data.get("next_id")
    next_id = max([next_id if type(next_id) is int else 1, *(n.id + 1 for n in notes)])
    return Memory(tuple(notes), next_id), data.get("sent") is not False


def stats_data(stats: TurnStats) -> dict[str, Any]:
    """Return ``stats`` as the save file and the log's JSON keep it (without its events)."""
    return {name: getattr(stats, name) for name in STATS_FIELDS}


def stats_from(data: object) -> TurnStats:
    """Return the accounting in ``data`` (``stats_data``'s form); ValueError when it is malformed."""
    if not isinstance(data, dict):
        raise ValueError("a turn's accounting is not an object")
    values: dict[str, Any] = {}
    for name in STATS_FIELDS:
        value = data.get(name)
        if name in ("finish_reason", "cache_break"):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"a turn's {name!r} is not text")
        elif name.startswith("reported_"):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"a turn's {name!r} is not a whole number")
        elif value is None and name not in ("turn", "estimated_prompt_tokens", "baseline_prompt_tokens"):
            continue  # the default
        elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"a turn's {name!r} is not a whole number")
        values[name] = value
    return TurnStats(**values)



# Reading a long conversation back (-c) builds tens of thousands of entries; the dataclasses' own
# __init__ (one object.__setattr__ per field, frozen) is most of that time. A row whose every value
# has been checked is built by filling the instance's __dict__ instead: the same value (equality,
# hash, repr and dataclasses.replace see the same fields), valid while neither class has slots nor
# a __post_init__ (tests/test_logstore.py checks both ways give equal entries).
_FAST = all(not hasattr(cls, "__slots__") and not hasattr(cls, "__post_init__") for cls in (Entry, Message))
_FAST_STATS = not hasattr(TurnStats, "__slots__") and not hasattr(TurnStats, "__post_init__") \
    and len(fields(TurnStats)) == 15
_new = object.__new__
_set = object.__setattr__


def _built(cls: type[Any], fields: dict[str, Any]) -> Any:
    made = _new(cls)
    _set(made, "__dict__", fields)
    return made


def entry_fast(values: Sequence[Any], evictions: dict[tuple[str, int], Eviction]) -> Entry | None:
    """Return the entry of a plain row (no tool calls, no raw message, every value of its type) built
    without the dataclasses' __init__, or None when the row needs ``entry_from_row``."""
    (number, turn, kind, slot, _, pinned, source, tokens, finish, how, evicted_turn,
     role, content, name, calls_text, call_id, raw, recalled) = values
    if not _FAST or raw is not None or calls_text is not None or type(content) is not str:
        return None
    if role not in ROLES or kind not in KINDS or slot not in SLOTS or (how is not None and how not in HOWS):
        return None
    if type(number) is not int or type(turn) is not int or type(tokens) is not int:
        return None
    eviction = None
    if how is not None:
        eviction = evictions.get((how, evicted_turn))
        if eviction is None:
            eviction = evictions[(how, evicted_turn)] = Eviction(how, int(evicted_turn or 0))
    message = _built(Message, {"role": role, "content": content, "name": name if type(name) is str else None,
                               "tool_calls": (), "tool_call_id": call_id if type(call_id) is str else None,
                               "images": ()})
    entry: Entry = _built(Entry, {
        "id": number, "message": message, "tokens": tokens, "turn": turn, "pinned": bool(pinned),
        "kind": kind, "source": source if type(source) is str else None, "eviction": eviction,
        "finish_reason": finish if type(finish) is str else None, "recalled": bool(recalled)})
    return entry


def entry_from_row(values: Sequence[Any], evictions: dict[tuple[str, int], Eviction], *,
                   strict: bool = True) -> Entry:
    """Return the entry of one ``entries`` row joined with its stored message; ValueError when damaged."""
    (number, turn, kind, slot, _, pinned, source, tokens, finish, how, evicted_turn,
     role, content, name, calls_text, call_id, raw, recalled) = values
    if raw is not None:
        data = loads(raw)
        if not isinstance(data, dict):
            raise ValueError("its message is not an object")
        role, content, name = data.get("role"), data.get("content"), data.get("name")
        call_id = data.get("tool_call_id")
        calls_value = data.get("tool_calls")
    else:
        calls_value = None if calls_text is None else loads(calls_text)
    if role not in ROLES:
        raise ValueError(f"its role is {str(role)[:20]!r}")
    if kind not in KINDS:
        raise ValueError(f"its kind is {str(kind)[:20]!r}")
    if strict and slot not in SLOTS:
        raise ValueError(f"its slot is {str(slot)[:20]!r}")
    images: tuple[Image, ...] = ()
    if isinstance(content, list):
        text, images = content_parts(content)
        content = text if images else dumps(content)
    elif not isinstance(content, str) and content is not None:
        content = dumps(content)
    calls: tuple[ToolCall, ...] = ()
    if calls_value is not None:
        if not isinstance(calls_value, list):
            raise ValueError("its tool calls are not a list")
        for call in calls_value:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                raise ValueError("a tool call has no function")
            calls += (ToolCall(str(call.get("id")), str(function.get("name")),
                               str(function.get("arguments"))),)
    eviction = None
    if how is not None:
        if how not in HOWS:
            raise ValueError(f"its eviction is {str(how)[:20]!r}")
        eviction = evictions.get((how, evicted_turn))
        if eviction is None:
            eviction = evictions[(how, evicted_turn)] = Eviction(how, int(evicted_turn or 0))
    message = Message(role, content, name if isinstance(name, str) else None, calls,
                      call_id if isinstance(call_id, str) else None, images)
    return Entry(number, message, int(tokens or 0), int(turn), bool(pinned), kind, source, eviction, finish,
                 bool(recalled))

