"""Saving and loading conversations (JSON), and exporting them as a Markdown transcript.

A save file holds everything the client knows about a conversation: the live
messages with their ids, roles, turns, pins, kinds and sources, the running
summary, the evicted originals, the session totals, and the settings except the
API key, which is never written. Files are created with mode 0600 (a conversation
is private) and replaced atomically, so a crash never leaves half a file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stateless_chat.config import Settings, default_data_dir
from stateless_chat.errors import UsageError
from stateless_chat.history import Conversation
from stateless_chat.messages import Entry, Message, TurnStats
from stateless_chat.session import Session, Totals

FORMAT = "stateless-chat/conversation"
FORMAT_VERSION = 1
SECRET_SETTINGS = frozenset({"api_key"})
# The settings a loaded file brings back: what shaped the conversation. Endpoints,
# timeouts and display choices stay as this run configured them.
RESTORED_SETTINGS = (
    "model", "system", "temperature", "max_tokens", "reply_reserve", "context_window", "budget", "policy",
    "encoding", "default_encoding",
)
_ROLES = ("system", "user", "assistant")
# Half a surrogate pair: JSON can escape one ("\\udcff"), but no request could carry it.
_SURROGATE = re.compile("[\ud800-\udfff]")
_KINDS = ("turn", "file", "summary")


class SaveFileError(UsageError):
    """A save file cannot be read, is not a conversation, or comes from a newer version."""


@dataclass(frozen=True)
class Saved:
    """A conversation read from a save file: the value, its totals and its saved settings."""

    conversation: Conversation
    totals: Totals
    settings: dict[str, Any]


def expand(path: Path | str) -> Path:
    """Return ``path`` with a leading ``~`` or ``~user`` expanded; ``SaveFileError`` for an unknown user."""
    try:
        return Path(path).expanduser()
    except RuntimeError as error:
        raise SaveFileError(f"cannot expand {str(path)!r}: {error}") from None


# ---- writing ----------------------------------------------------------------------


def _entry(entry: Entry) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": entry.id,
        "role": entry.role,
        "content": entry.content,
        "turn": entry.turn,
        "pinned": entry.pinned,
        "kind": entry.kind,
        "source": entry.source,
        "tokens": entry.tokens,
    }
    if entry.message.name is not None:
        data["name"] = entry.message.name
    return data


def _turn_stats(stats: TurnStats) -> dict[str, Any]:
    data = dataclasses.asdict(stats)
    data.pop("events")  # events are shown when they happen; the counts below keep what they cost
    return data


def to_data(session: Session) -> dict[str, Any]:
    """Return the JSON-ready save data of ``session`` (never containing the API key)."""
    conversation = session.conversation
    settings = {
        f.name: getattr(session.settings, f.name)
        for f in dataclasses.fields(Settings)
        if f.name not in SECRET_SETTINGS
    }
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
    totals = session.totals
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "system": _entry(conversation.system) if conversation.system else None,
        "summary": _entry(conversation.summary) if conversation.summary else None,
        "messages": [_entry(e) for e in conversation.entries],
        "evicted": [_entry(e) for e in conversation.evicted],
        "next_id": conversation.next_id,
        "next_turn": conversation.next_turn,
        "totals": {
            "sent": totals.sent,
            "baseline": totals.baseline,
            "completion": totals.completion,
            "turns": [_turn_stats(t) for t in totals.turns],
        },
    }


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, the file created with mode 0600.

    The text goes to a new 0600 file in the same directory, which then replaces
    ``path``; an existing file keeps its content until the new one is complete. Raises
    ``SaveFileError`` (one line) when it cannot be written.
    """
    try:
        _write_private(expand(path), text)
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


def save(session: Session, path: Path) -> Path:
    """Write ``session``'s conversation to ``path`` (mode 0600) and return the path written."""
    path = expand(path)
    write_private(path, json.dumps(to_data(session), indent=2, ensure_ascii=False) + "\n")
    return path


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


def _read_entry(data: object, where: str) -> Entry:
    if not isinstance(data, dict):
        raise ValueError(f"{where} is not an object")
    role = data.get("role")
    kind = data.get("kind", "turn")
    if role not in _ROLES:
        raise ValueError(f"{where}: role must be one of {', '.join(_ROLES)}")
    if kind not in _KINDS:
        raise ValueError(f"{where}: kind must be one of {', '.join(_KINDS)}")
    source = data.get("source")
    name = data.get("name")
    if source is not None and not isinstance(source, str) or name is not None and not isinstance(name, str):
        raise ValueError(f"{where}: source and name must be strings")
    tokens = data.get("tokens", 0)
    return Entry(
        id=_need(data, "id", int, where),
        message=Message(role, _need(data, "content", str, where), name),
        tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else 0,
        turn=_need(data, "turn", int, where),
        pinned=bool(data.get("pinned", False)),
        kind=kind,
        source=source,
    )


def _count(data: Mapping[str, Any], key: str, where: str, default: int | None = 0) -> Any:
    """Return the whole number at ``key``, ``default`` when it is absent (or null, when the default is)."""
    value = data.get(key, default)
    if value is not default and (not isinstance(value, int) or isinstance(value, bool)):
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
    )


def _read_totals(data: object) -> Totals:
    """Return the totals in ``data`` (none for a file without them); ValueError when they are malformed,
    since /stats and /tokens do arithmetic on them."""
    if data is None:
        return Totals()
    if not isinstance(data, dict) or not isinstance(data.get("turns", []), list):
        raise ValueError("the totals are not an object with a list of turns")
    turns = [_read_turn_stats(t, f"the totals of turn {i + 1}") for i, t in enumerate(data.get("turns", []))]
    return Totals(sent=_count(data, "sent", "the totals"), baseline=_count(data, "baseline", "the totals"),
                  completion=_count(data, "completion", "the totals"), turns=turns)


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
    conversation = Conversation(
        system=_read_entry(system, "the system prompt") if system is not None else None,
        summary=_read_entry(summary, "the summary") if summary is not None else None,
        entries=tuple(_read_entry(m, f"message {i + 1}") for i, m in enumerate(messages)),
        evicted=tuple(_read_entry(m, f"evicted message {i + 1}") for i, m in enumerate(evicted)),
    )
    ids = [e.id for e in conversation.all_entries() if e.role != "system" or e.kind == "summary"]
    if len(ids) != len(set(ids)):
        raise ValueError("two messages share a number")
    next_id = max([_need(data, "next_id", int, "the file"), *(i + 1 for i in ids)])
    turns = [e.turn for e in conversation.entries + conversation.evicted]
    next_turn = max([_need(data, "next_turn", int, "the file"), *(t + 1 for t in turns)])
    conversation = dataclasses.replace(conversation, next_id=next_id, next_turn=next_turn)
    raw = data.get("settings")
    settings = {k: v for k, v in raw.items() if k not in SECRET_SETTINGS} if isinstance(raw, dict) else {}
    return Saved(conversation, _read_totals(data.get("totals")), settings)


def load(path: Path) -> Saved:
    """Return the conversation saved at ``path``; ``SaveFileError`` (one line, naming the file) if it
    cannot be read or is not a conversation this version understands."""
    path = expand(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SaveFileError(f"no such conversation file: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SaveFileError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    try:
        data = json.loads(text)
        if "\\u" in text and _SURROGATE.search(json.dumps(data, ensure_ascii=False)):
            raise ValueError("the file is not valid Unicode: it escapes half a surrogate pair")
        return from_data(data)
    except json.JSONDecodeError as error:
        raise SaveFileError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno})") from None
    except (ValueError, TypeError) as error:
        raise SaveFileError(f"{path}: {error}") from None


def restore(session: Session, saved: Saved, *, keep: Collection[str] = ()) -> None:
    """Make ``saved`` the session's conversation, with its settings except those named in ``keep``
    (the ones the user set on this command line). Counts are measured again with the session's
    counter. Raises ``ConfigError`` (nothing changed) when the saved settings are invalid here."""
    changes = {k: saved.settings[k] for k in RESTORED_SETTINGS if k in saved.settings and k not in keep}
    session.reconfigure(**changes)  # validates before it changes anything
    conversation = saved.conversation.recounted(session.measure)
    if "system" in keep:
        conversation = conversation.with_system(session.settings.system, session.measure)
    session.conversation = conversation
    session.totals = saved.totals


# ---- export -----------------------------------------------------------------------


def _quote_heading(entry: Entry, state: str) -> str:
    label = {"user": "User", "assistant": "Assistant", "system": "System"}[entry.role]
    if entry.kind == "file":
        label = f"File `{entry.source}`" if entry.source else "File"
    notes = [n for n in ("pinned" if entry.pinned else "", state) if n]
    suffix = f" ({', '.join(notes)})" if notes else ""
    return f"### #{entry.id} {label}{suffix}"


def to_markdown(session: Session) -> str:
    """Return a readable Markdown transcript of ``session``: settings, system prompt, summary, and
    every message in order (evicted ones marked, since the model no longer sees them)."""
    conversation = session.conversation
    settings = session.settings
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        "# stateless-chat transcript",
        "",
        f"- exported: {stamp}",
        f"- model: `{settings.model}`",
        f"- budget: {session.budget:,} tokens, policy `{settings.policy}`",
        f"- prompt tokens sent: {session.totals.sent:,} (no-eviction baseline {session.totals.baseline:,})",
        "",
    ]
    if conversation.system is not None:
        lines += ["## System prompt", "", conversation.system.content, ""]
    if conversation.summary is not None:
        lines += ["## Summary of evicted turns", "", conversation.summary.content, ""]
    lines += ["## Messages", ""]
    for entry in conversation.all_entries():
        if entry.role == "system":
            continue
        state = "" if conversation.is_live(entry.id) else "evicted: no longer sent"
        lines += [_quote_heading(entry, state), "", entry.content, ""]
    return "\n".join(lines)


def export(session: Session, path: Path) -> Path:
    """Write the Markdown transcript of ``session`` to ``path`` (mode 0600) and return the path."""
    path = expand(path)
    write_private(path, to_markdown(session))
    return path
