"""The prefix cache, predicted: how much of the next request repeats the last one, and what broke it.

Servers cache the longest prefix a request shares with earlier ones (OpenAI from 1,024
tokens in 128-token steps, DeepSeek on disk, vLLM, llama.cpp's KV cache). Resending the
whole history is cheap as long as it only grows at its end. ``PrefixCache`` keeps what the
last request sent (by message, with our token counts) and, for the next one, returns the
tokens of the longest run of whole messages it shares from the start (an upper bound on
what the server can reuse) and, when the new request does not start with the whole last
one, the cause: the eviction of a turn, a rewritten summary, a changed system prompt or standing memory, a
/drop or /clear, a switched model, another endpoint, or time past the cache lifetime.
Pure bookkeeping: it never talks to a server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stateless_chat.core.memory import MEMORY_ID
from stateless_chat.core.messages import Entry, Message

DEFAULT_LIFETIME = 300.0  # seconds a server keeps a prefix warm (OpenAI says 5-10 minutes when idle)


@dataclass(frozen=True)
class Sent:
    """What one request sent: its messages (with entry ids, 0 for the system prompt) and sizes."""

    ids: tuple[int, ...]
    messages: tuple[Message, ...]
    sizes: tuple[int, ...]
    tools: str
    endpoint: str
    model: str
    at: float
    kinds: tuple[str, ...] = ()  # each entry's kind (the context slots are told apart by it)
    sources: tuple[str | None, ...] = ()

    @property
    def tokens(self) -> int:
        return sum(self.sizes)


@dataclass(frozen=True)
class Prediction:
    """How much of a request repeats the previous one: ``shared`` of ``total`` message tokens.

    ``cause`` says why the previous request is not a prefix of this one (None when it is,
    or when there was no previous request).
    """

    shared: int
    total: int
    cause: str | None = None
    previous: int = 0

    @property
    def share(self) -> float:
        return self.shared / self.total if self.total else 0.0


def sent_from(entries: Sequence[Entry], *, tools: str, endpoint: str, model: str, at: float) -> Sent:
    """Return the record of a request that sent ``entries`` (with the given tools array)."""
    ids, messages, sizes = (tuple(e.id for e in entries), tuple(e.message for e in entries),
                            tuple(e.tokens for e in entries))
    return Sent(ids, messages, sizes, tools, endpoint, model, at, tuple(e.kind for e in entries),
                tuple(e.source for e in entries))


def predict(
    previous: Sent | None,
    entries: Sequence[Entry],
    *,
    tools: str,
    endpoint: str,
    model: str,
    now: float,
    lifetime: float = DEFAULT_LIFETIME,
    why_gone: Callable[[int], str] = lambda entry_id: f"message #{entry_id} is no longer sent",
) -> Prediction:
    """Return how much of a request sending ``entries`` repeats ``previous``, and why not all of it.

    ``why_gone(id)`` says why the entry the previous request sent at the first difference is
    missing now (how it was evicted).
    """
    total = sum(e.tokens for e in entries)
    if previous is None:
        return Prediction(0, total)
    cold = Prediction(0, total, previous=previous.tokens)
    if model != previous.model:
        return _with(cold, f"model switched from {previous.model} to {model}")
    if endpoint != previous.endpoint:
        return _with(cold, f"sent to another endpoint ({endpoint}, after {previous.endpoint})")
    idle = now - previous.at
    if idle > lifetime:
        return _with(cold, f"idle {_duration(idle)}, past the cache lifetime of {_duration(lifetime)}")
    if tools != previous.tools:
        return _with(cold, tools_change(previous.tools, tools))
    shared = 0
    count = min(len(entries), len(previous.ids))
    index = 0
    while index < count and entries[index].id == previous.ids[index] and \
            entries[index].message == previous.messages[index]:
        shared += entries[index].tokens
        index += 1
    if index == len(previous.ids):
        return Prediction(shared, total, None, previous.tokens)
    if index < len(previous.kinds) and previous.kinds[index] == "docs":
        # The documents retrieved for the last message are sent with it only: by design no break,
        # and what the server reads again is that message alone.
        return Prediction(shared, total, None, previous.tokens)
    return Prediction(shared, total, _cause(previous, entries, index, why_gone), previous.tokens)


def tools_change(before: str, after: str) -> str:
    """Return what changed between two ``tools`` arrays (as the JSON text sent), by function name:
    ``the tools offered changed (added x; removed y; changed z)``."""
    def functions(text: str) -> dict[str, str]:
        try:
            tools = json.loads(text) if text else []
        except ValueError:
            return {}
        found = {}
        for tool in tools if isinstance(tools, list) else ():
            function = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(function, dict):
                found[str(function.get("name"))] = json.dumps(function, sort_keys=True)
        return found

    old, new = functions(before), functions(after)
    parts = []
    changes = (("added", [n for n in new if n not in old]), ("removed", [n for n in old if n not in new]),
               ("changed", [n for n in new if n in old and new[n] != old[n]]))
    for label, names in changes:
        if names:
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            parts.append(f"{label} {', '.join(names[:5])}{more}")
    return "the tools offered changed" + (f" ({'; '.join(parts)})" if parts else "")


def _with(prediction: Prediction, cause: str) -> Prediction:
    return Prediction(prediction.shared, prediction.total, cause, prediction.previous)


def _cause(previous: Sent, entries: Sequence[Entry], index: int, why_gone: Callable[[int], str]) -> str:
    """Return why the request differs from ``previous`` at message ``index``."""
    gone = previous.ids[index]
    here = entries[index] if index < len(entries) else None
    if gone == MEMORY_ID or (here is not None and here.id == MEMORY_ID):
        return "the standing memory changed"
    slot = _slot_cause(previous, entries, index)
    if slot is not None:
        return slot
    if here is not None and here.id == gone:
        if gone == 0:
            return "the system prompt changed"
        return "the summary was rewritten" if here.kind == "summary" else f"message #{gone} changed"
    if gone == 0:
        return "the system prompt was removed"
    if here is not None and here.id == 0:
        return "a system prompt was added"
    if any(e.id == gone for e in entries):
        return f"message #{gone} moved"
    return why_gone(gone)


_SLOT_NAMES = {"instructions": "the instructions", "skills": "the skills index"}


def _slot_cause(previous: Sent, entries: Sequence[Entry], index: int) -> str | None:
    """Return why the request differs at ``index`` when a context slot's entry is there (instruction
    files read again, the skills index, a skill turned on or off), else None."""
    before = previous.kinds[index] if index < len(previous.kinds) else None
    here = entries[index] if index < len(entries) else None
    if before == "skill" or (here is not None and here.kind == "skill"):
        now = {e.source for e in entries if e.kind == "skill"}
        then = {source for kind, source in zip(previous.kinds, previous.sources, strict=False)
                if kind == "skill"}
        off, on = sorted(str(name) for name in then - now), sorted(str(name) for name in now - then)
        said = [f"skill {name} was turned off" for name in off]
        said += [f"skill {name} was turned on" for name in on]
        return ", ".join(said) or "an active skill changed"
    for kind in (before, here.kind if here is not None else None):
        if kind in _SLOT_NAMES:
            name = _SLOT_NAMES[kind]
            if before != kind:
                return f"{name} were added" if kind == "instructions" else f"{name} was added"
            if here is None or here.kind != kind:
                return f"{name} were removed" if kind == "instructions" else f"{name} was removed"
            return f"{name} changed"
    return None


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
