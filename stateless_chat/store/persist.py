"""Saving and loading conversations (JSON), and exporting them as a Markdown transcript.

A save file holds everything the client knows about a conversation: the live
messages with their ids, roles, turns, pins, kinds and sources (and tool calls,
mirroring the chat API), the running summary, the evicted originals with how and
when each left, the per-turn accounting, and the settings except the API key, which
is never written, and the standing memory (its notes, each with the message it came from).
Files are created with mode 0600 (a conversation is private) and
replaced atomically, so a crash never leaves half a file. Version 1 files (before
tool messages and eviction records) still load.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stateless_chat.config import Settings, default_data_dir
from stateless_chat.core.evicted import Evicted
from stateless_chat.core.history import STATE_OF_EVICTION, Conversation
from stateless_chat.core.ledger import Ledger, TurnStats
from stateless_chat.core.memory import Memory, Note
from stateless_chat.core.messages import Entry, Eviction, EvictionHow, Message, ToolCall, content_parts
from stateless_chat.errors import UsageError
from stateless_chat.sanitize import LONE_SURROGATE, public_url

FORMAT = "stateless-chat/conversation"
FORMAT_VERSION = 2
MAX_SAVE_BYTES = 64 * 1024 * 1024  # far past any conversation a budget allows; /dev/zero is refused
# Never written to a save file or the log: the key, and the MCP servers' commands and environments
# (which may hold their own keys).
SECRET_SETTINGS = frozenset({"api_key", "mcp"})
# The settings a loaded file brings back: what shaped the conversation. Endpoints,
# timeouts and display choices stay as this run configured them.
RESTORED_SETTINGS = (
    "model", "system", "temperature", "max_tokens", "reply_reserve", "context_window", "budget", "policy",
    "encoding", "default_encoding",
)
_ROLES = ("system", "user", "assistant", "tool")
_KINDS = ("turn", "file", "summary")
_HOWS = tuple(STATE_OF_EVICTION)


class SaveFileError(UsageError):
    """A save file cannot be read, is not a conversation, or comes from a newer version."""


@dataclass(frozen=True)
class Saved:
    """A conversation read from a save file: the value, its accounting and its saved settings."""

    conversation: Conversation
    ledger: Ledger
    settings: dict[str, Any]


def expand(path: Path | str) -> Path:
    """Return ``path`` with a leading ``~`` or ``~user`` expanded; ``SaveFileError`` for an unknown user."""
    try:
        return Path(path).expanduser()
    except RuntimeError as error:
        raise SaveFileError(f"cannot expand {str(path)!r}: {error}") from None


# ---- writing ----------------------------------------------------------------------


def entry_data(entry: Entry) -> dict[str, Any]:
    """Return ``entry`` as a save file (and the log) holds it: the API's message fields, and ours."""
    data: dict[str, Any] = {"id": entry.id, **entry.message.to_api(), "turn": entry.turn,
                            "pinned": entry.pinned, "kind": entry.kind, "source": entry.source,
                            "tokens": entry.tokens}
    if entry.finish_reason is not None:
        data["finish_reason"] = entry.finish_reason
    if entry.eviction is not None:
        data["eviction"] = {"how": entry.eviction.how, "turn": entry.eviction.turn}
    return data


def _turn_stats(stats: TurnStats) -> dict[str, Any]:
    data = dataclasses.asdict(stats)
    data.pop("events")  # events are shown when they happen; the counts below keep what they cost
    return data


def memory_data(memory: Memory) -> dict[str, Any]:
    """Return the standing memory as a save file (and the log's snapshot) holds it."""
    return {"notes": [{"id": n.id, "text": n.text, "source": n.source, "turn": n.turn, "tokens": n.tokens}
                      for n in memory.notes],
            "next_id": memory.next_id}


def _read_memory(data: object) -> Memory:
    """Return the standing memory in save ``data`` (a file from before it has none: its user messages
    are to be read for it once, ``scanned`` False); ValueError when it is malformed."""
    if data is None:
        return Memory(scanned=False)
    if not isinstance(data, dict) or not isinstance(data.get("notes"), list):
        raise ValueError("the standing memory is not an object with a list of notes")
    notes = []
    for index, raw in enumerate(data["notes"]):
        where = f"standing note {index + 1}"
        if not isinstance(raw, dict):
            raise ValueError(f"{where} is not an object")
        source, turn = _count(raw, "source", where, None), _count(raw, "turn", where, None)
        notes.append(Note(_need(raw, "id", int, where), _need(raw, "text", str, where), source, turn,
                          _count(raw, "tokens", where)))
    ids = [n.id for n in notes]
    if len(ids) != len(set(ids)):
        raise ValueError("two standing notes share a number")
    next_id = max([_count(data, "next_id", "the standing memory", 1), *(i + 1 for i in ids)])
    return Memory(tuple(notes), next_id)


def settings_data(settings: Settings | Mapping[str, Any]) -> dict[str, Any]:
    """Return ``settings`` as a save file (and the log) keeps them: JSON-ready, without the key, the
    MCP servers or a URL's user:password. A mapping is taken as such a dict already."""
    if isinstance(settings, Mapping):
        return {k: v for k, v in settings.items() if k not in SECRET_SETTINGS}
    data = {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(Settings)
        if f.name not in SECRET_SETTINGS and not f.metadata.get("internal")  # endpoint_keys: secrets
    }
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
    data["prices"] = {model: dataclasses.asdict(price) for model, price in settings.prices.items()}
    # A URL's user:password is a secret like the key: the file keeps where, never how to log in.
    if data.get("base_url"):
        data["base_url"] = public_url(data["base_url"])
    data["base_urls"] = [public_url(url) for url in data.get("base_urls", [])]
    return data


def to_data(conversation: Conversation, ledger: Ledger,
            settings: Settings | Mapping[str, Any]) -> dict[str, Any]:
    """Return the JSON-ready save data of a conversation, its accounting and its settings (never
    containing the API key)."""
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": settings_data(settings),
        "system": entry_data(conversation.system) if conversation.system else None,
        "summary": entry_data(conversation.summary) if conversation.summary else None,
        "memory": memory_data(conversation.memory),
        # Recalled entries are sent next, right before the new message: where they settle on the
        # next turn, at the end of the live messages.
        "messages": [entry_data(e) for e in conversation.live],
        "evicted": [entry_data(e) for e in conversation.evicted],
        "next_id": conversation.next_id,
        "next_turn": conversation.next_turn,
        # The sums are for readers of the file; loading derives them again from the turns.
        "totals": {
            "sent": ledger.sent,
            "baseline": ledger.baseline,
            "completion": ledger.completion,
            "turns": [_turn_stats(t) for t in ledger.turns],
        },
    }


def write_private(path: Path, text: str, *, make_parents: bool = True) -> None:
    """Write ``text`` to ``path`` atomically, the file created with mode 0600.

    The text goes to a new 0600 file in the same directory, which then replaces
    ``path``; an existing file keeps its content until the new one is complete. Only a
    regular file is ever replaced (a device, a fifo or a directory at ``path`` is refused),
    and missing directories are created only with ``make_parents``. Raises
    ``SaveFileError`` (one line) when it cannot be written.
    """
    path = expand(path)
    if path.exists() and not path.is_file():
        raise SaveFileError(f"cannot write {path}: it is not a regular file")
    if not make_parents and not path.parent.is_dir():
        raise SaveFileError(f"cannot write {path}: no such directory {path.parent}")
    try:
        _write_private(path, text)
    except OSError as error:
        raise SaveFileError(f"cannot write {path}: {error.strerror or error}") from None


def _write_private(path: Path, text: str) -> None:
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o600)  # mkstemp's 0600, whatever the umask took from it
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def save(path: Path, conversation: Conversation, ledger: Ledger,
         settings: Settings | Mapping[str, Any]) -> Path:
    """Write the conversation (with its accounting and settings) to ``path`` (mode 0600) and return
    the path written.

    A conversation too large for ``load`` to read back (``MAX_SAVE_BYTES``) is refused instead.
    """
    path = expand(path)
    text = json.dumps(to_data(conversation, ledger, settings), indent=2, ensure_ascii=False) + "\n"
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_SAVE_BYTES:
        raise SaveFileError(f"cannot write {path}: the conversation is {size:,} bytes, more than a "
                            f"conversation file may hold ({MAX_SAVE_BYTES:,}); /export writes a transcript")
    write_private(path, text)
    return path


def _messages(conversation: Conversation) -> dict[int, tuple[str, str]]:
    """Return the role and text of every message but the system prompt and the summary, by id."""
    entries = conversation.all_entries()
    return {e.id: (e.role, e.content) for e in entries if e.id != 0 and e.kind != "summary"}


def overwrite_refusal(path: Path, conversation: Conversation) -> str | None:
    """Return why saving ``conversation`` to ``path`` would destroy something else, or None.

    A file holding an earlier state of the same conversation may be replaced: the message
    numbers both hold say the same things (an /undo, /retry or /edit since only drops some),
    or, when they share none (the first turn retried), both begin with the same message.
    Not so a file holding another conversation, nor any file that is not a conversation.
    """
    path = expand(path)
    if not path.is_file():
        return None  # a new file; or not a regular file, which writing refuses with its own line
    try:
        theirs = _messages(load(path).conversation)
    except SaveFileError:
        return f"{path} exists and is not a stateless-chat conversation"
    ours = _messages(conversation)
    shared = theirs.keys() & ours.keys()
    if not theirs or (shared and all(theirs[i] == ours[i] for i in shared)):
        return None
    if not shared and ours and theirs[min(theirs)] == ours[min(ours)]:
        return None
    first = " ".join(theirs[min(theirs)][1].split())
    first = first if len(first) <= 40 else first[:39] + "…"
    return f"{path} holds a different conversation (its first message: {first!r})"


def default_save_path(env: Mapping[str, str], now: datetime | None = None) -> Path:
    """Return a new save path in the data dir, named by the local time (``conversations/…json``)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    directory = default_data_dir(env) / "conversations"
    path = directory / f"{stamp}.json"
    counter = 1
    while path.exists():
        counter += 1
        path = directory / f"{stamp}-{counter}.json"
    return path


# ---- reading ----------------------------------------------------------------------


def _need(data: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ValueError(f"{where}: {key!r} is missing or of the wrong type")
    return value


def _optional_str(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}: {key!r} must be a string")
    return value


def _read_calls(raw: object, where: str) -> tuple[ToolCall, ...]:
    """Return the tool calls of a saved message (the API's ``tool_calls`` form)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError(f"{where}: 'tool_calls' must be a list")
    calls = []
    for item in raw:
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict):
            raise ValueError(f"{where}: a tool call has no function")
        calls.append(ToolCall(_need(item, "id", str, where), _need(function, "name", str, where),
                              _need(function, "arguments", str, where)))
    return tuple(calls)


def _read_eviction(raw: object, where: str) -> Eviction | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("how") not in _HOWS:
        raise ValueError(f"{where}: 'eviction' must say how it left: one of {', '.join(_HOWS)}")
    return Eviction(raw["how"], _need(raw, "turn", int, where))


def _read_entry(data: object, where: str) -> Entry:
    if not isinstance(data, dict):
        raise ValueError(f"{where} is not an object")
    role = data.get("role")
    kind = data.get("kind", "turn")
    if role not in _ROLES:
        raise ValueError(f"{where}: role must be one of {', '.join(_ROLES)}")
    if kind not in _KINDS:
        raise ValueError(f"{where}: kind must be one of {', '.join(_KINDS)}")
    calls = _read_calls(data.get("tool_calls"), where)
    content, images = content_parts(data.get("content"))
    if not isinstance(content, str) and not (content is None and calls):
        raise ValueError(f"{where}: 'content' is missing or of the wrong type")
    tokens = data.get("tokens", 0)
    message = Message(role, content, _optional_str(data, "name", where), calls,
                      _optional_str(data, "tool_call_id", where), images)
    return Entry(
        id=_need(data, "id", int, where),
        message=message,
        tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else 0,
        turn=_need(data, "turn", int, where),
        pinned=bool(data.get("pinned", False)),
        kind=kind,
        source=_optional_str(data, "source", where),
        eviction=_read_eviction(data.get("eviction"), where),
        finish_reason=_optional_str(data, "finish_reason", where),
    )


def _count(data: Mapping[str, Any], key: str, where: str, default: int | None = 0) -> Any:
    """Return the whole number at ``key``, ``default`` when it is absent (or null, when the default is)."""
    value = data.get(key, default)
    if value is not default and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ValueError(f"{where}: {key!r} must be a whole number")
    return value


def _read_turn_stats(data: object, where: str) -> TurnStats:
    if not isinstance(data, dict):
        raise ValueError(f"{where} is not an object")
    return TurnStats(
        turn=_need(data, "turn", int, where),
        estimated_prompt_tokens=_need(data, "estimated_prompt_tokens", int, where),
        reported_prompt_tokens=_count(data, "reported_prompt_tokens", where, None),
        reported_completion_tokens=_count(data, "reported_completion_tokens", where, None),
        baseline_prompt_tokens=_need(data, "baseline_prompt_tokens", int, where),
        evictions=_count(data, "evictions", where),
        summary_prompt_tokens=_count(data, "summary_prompt_tokens", where),
        summary_completion_tokens=_count(data, "summary_completion_tokens", where),
        summary_cached_tokens=_count(data, "summary_cached_tokens", where),
        finish_reason=_optional_str(data, "finish_reason", where),
        reported_cached_tokens=_count(data, "reported_cached_tokens", where, None),
        predicted_cached_tokens=_count(data, "predicted_cached_tokens", where),
        cache_break=_optional_str(data, "cache_break", where),
        steps=_count(data, "steps", where, 1),
    )


def _read_ledger(data: object) -> Ledger:
    """Return the per-turn accounting in ``data`` (none for a file without it); ValueError when it is
    malformed, since /stats and /tokens do arithmetic on it. The sums are derived, not read."""
    if data is None:
        return Ledger()
    if not isinstance(data, dict) or not isinstance(data.get("turns", []), list):
        raise ValueError("the totals are not an object with a list of turns")
    for key in ("sent", "baseline", "completion"):
        _count(data, key, "the totals")
    return Ledger(tuple(_read_turn_stats(t, f"the totals of turn {i + 1}")
                        for i, t in enumerate(data.get("turns", []))))


def from_data(data: object) -> Saved:
    """Return the conversation in save ``data``; ``ValueError`` says what is wrong with it."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not a stateless-chat conversation file")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError("the file has no format version")
    if version > FORMAT_VERSION:
        raise ValueError(f"format version {version} is newer than this stateless-chat reads "
                         f"({FORMAT_VERSION})")
    system = data.get("system")
    summary = data.get("summary")
    messages = _need(data, "messages", list, "the file")
    evicted = data.get("evicted") or []
    if not isinstance(evicted, list):
        raise ValueError("the file: 'evicted' must be a list")
    conversation = Conversation(
        system=_read_entry(system, "the system prompt") if system is not None else None,
        summary=_read_entry(summary, "the summary") if summary is not None else None,
        history=tuple(_read_entry(m, f"message {i + 1}") for i, m in enumerate(messages)),
        evicted=Evicted(_read_entry(m, f"evicted message {i + 1}") for i, m in enumerate(evicted)),
    )
    conversation.check()
    ids = [e.id for e in conversation.all_entries() if e.id != 0]
    if len(ids) != len(set(ids)):
        raise ValueError("two messages share a number")
    next_id = max([_need(data, "next_id", int, "the file"), *(i + 1 for i in ids)])
    turns = [e.turn for e in (*conversation.history, *conversation.evicted)]
    next_turn = max([_need(data, "next_turn", int, "the file"), *(t + 1 for t in turns)])
    # Version 1 kept no eviction records: what was evicted then was folded if there is a summary.
    how: EvictionHow = "folded" if conversation.summary is not None else "dropped"
    record = Eviction(how, next_turn)
    evicted_entries = Evicted(e if e.eviction is not None else dataclasses.replace(e, eviction=record)
                            for e in conversation.evicted)
    live = tuple(dataclasses.replace(e, eviction=None) for e in conversation.history)
    conversation = dataclasses.replace(conversation, history=live, evicted=evicted_entries, next_id=next_id,
                                       next_turn=next_turn, memory=_read_memory(data.get("memory")))
    raw = data.get("settings")
    settings = {k: v for k, v in raw.items() if k not in SECRET_SETTINGS} if isinstance(raw, dict) else {}
    return Saved(conversation, _read_ledger(data.get("totals")), settings)


def load(path: Path) -> Saved:
    """Return the conversation saved at ``path``; ``SaveFileError`` (one line, naming the file) if it
    cannot be read or is not a conversation this version understands."""
    path = expand(path)
    text = read_limited(path, MAX_SAVE_BYTES, what="conversation file")
    try:
        data = json.loads(text)
        if "\\u" in text and LONE_SURROGATE.search(json.dumps(data, ensure_ascii=False)):
            raise ValueError("the file is not valid Unicode: it escapes half a surrogate pair")
        return from_data(data)
    except json.JSONDecodeError as error:
        raise SaveFileError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno})") from None
    except RecursionError:
        raise SaveFileError(f"{path}: nested too deeply to be a conversation file") from None
    except (ValueError, TypeError) as error:
        raise SaveFileError(f"{path}: {error}") from None


def read_limited(path: Path, limit: int, *, what: str) -> str:
    """Return the UTF-8 text of the regular file ``path``; ``SaveFileError`` (one line) when it is
    missing, not a regular file (a device, a fifo), larger than ``limit`` bytes or not UTF-8."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SaveFileError(f"{path} is not a regular file")
        if info.st_size > limit:
            raise SaveFileError(f"{path} is {info.st_size:,} bytes: too large for a {what} "
                                f"(at most {limit:,})")
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except FileNotFoundError:
        raise SaveFileError(f"no such {what}: {path}") from None
    except OSError as error:
        raise SaveFileError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > limit:
        raise SaveFileError(f"{path} is larger than {limit:,} bytes: too large for a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SaveFileError(f"cannot read {path}: not UTF-8 (bad byte at offset {error.start})") from None


def context_source(settings: Mapping[str, Any], keep: Collection[str], source: str) -> str | None:
    """Return where the context window's figure comes from once ``settings`` (as ``loadable`` gives
    them) are loaded from ``source`` (``the save file PATH``): that source, when they bring one back
    (``/model`` and ``/load`` say so), else None."""
    if source and settings.get("context_window") is not None and "context_window" not in keep:
        return f"as saved in {source}"
    return None


def loadable(saved: Saved) -> tuple[Conversation, Ledger, dict[str, Any]]:
    """Return what ``Session.load`` takes to make ``saved`` the conversation: the value, its
    accounting, and the saved settings that shaped it (``RESTORED_SETTINGS``; endpoints, timeouts
    and display choices stay as this run configured them). ``Session.load`` returns the standing
    notes read from a conversation saved before standing memory, for the caller to show."""
    settings = {k: saved.settings[k] for k in RESTORED_SETTINGS if k in saved.settings}
    return saved.conversation, saved.ledger, settings


# ---- export -----------------------------------------------------------------------


_HOW_SHOWN = {"evicted": "evicted: no longer sent", "summarized": "summarized: no longer sent",
              "removed": "removed: no longer sent"}
_FENCE_LINE = re.compile(r"^ {0,3}(`{3,}|~{3,})", re.M)


def _quote_heading(entry: Entry, state: str) -> str:
    label = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool result"}[entry.role]
    if entry.kind == "file":
        label = f"File `{entry.source}`" if entry.source else "File"
    notes = [n for n in ("pinned" if entry.pinned else "", _HOW_SHOWN.get(state, ""),
                         "cut at the length limit" if entry.cut else "") if n]
    suffix = f" ({', '.join(notes)})" if notes else ""
    return f"### #{entry.id} {label}{suffix}"


def closed_fences(text: str) -> str:
    """Return ``text`` with a code fence it left open closed, so the rest of a transcript is not
    swallowed into one code block."""
    fence: str | None = None
    for match in _FENCE_LINE.finditer(text):
        mark = match.group(1)
        if fence is None:
            fence = mark
        elif mark[0] == fence[0] and len(mark) >= len(fence):
            fence = None
    return text if fence is None else text.rstrip("\n") + "\n" + fence


def _body(entry: Entry) -> str:
    message = entry.message
    lines = [closed_fences(message.text)] if message.text else []
    lines += [f"- called `{call.name}` with `{call.arguments}`" for call in message.tool_calls]
    return "\n\n".join(lines)


def to_markdown(conversation: Conversation, ledger: Ledger, settings: Settings | Mapping[str, Any],
                budget: int | None) -> str:
    """Return a readable Markdown transcript of a conversation: settings, system prompt, summary, and
    every message in order (evicted ones marked with how they left, since the model no longer sees
    them)."""
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    model, policy = (settings.get("model"), settings.get("policy")) if isinstance(settings, Mapping) \
        else (settings.model, settings.policy)
    lines = [
        "# stateless-chat transcript",
        "",
        f"- exported: {stamp}",
        f"- model: `{model}`",
        f"- budget: {budget:,} tokens, policy `{policy}`" if budget else f"- policy `{policy}`",
        f"- prompt tokens sent: {ledger.sent:,} (no-eviction baseline {ledger.baseline:,})",
        "",
    ]
    if conversation.system is not None:
        lines += ["## System prompt", "", closed_fences(conversation.system.content), ""]
    if conversation.memory.notes:
        lines += ["## Standing memory", ""]
        lines += [f"- {note.label}: {' '.join(note.text.split())}" for note in conversation.memory.notes]
        lines.append("")
    if conversation.summary is not None:
        lines += ["## Summary of evicted turns", "", closed_fences(conversation.summary.content), ""]
    lines += ["## Messages", ""]
    for entry in conversation.all_entries():
        state = conversation.state(entry)
        if state in ("system", "summary"):
            continue
        lines += [_quote_heading(entry, state), "", _body(entry), ""]
    return "\n".join(lines)


def export(path: Path, conversation: Conversation, ledger: Ledger, settings: Settings | Mapping[str, Any],
           budget: int | None) -> Path:
    """Write the Markdown transcript of a conversation to ``path`` (mode 0600) and return the path;
    the directory must exist (a mistyped path must not create directories)."""
    path = expand(path)
    write_private(path, to_markdown(conversation, ledger, settings, budget), make_parents=False)
    return path
