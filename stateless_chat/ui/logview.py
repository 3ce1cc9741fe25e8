"""What ``stateless-chat logs`` prints: the conversation log as plain text, fit for pipes.

Everything read from the log was written by a model, a user or a server, so every piece of
text is stripped of terminal controls (``sanitize.strip_controls``) before it is printed, and
the one-line fields (first lines, snippets, models, endpoints) hold no line breaks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from stateless_chat.core.messages import content_parts
from stateless_chat.sanitize import strip_controls
from stateless_chat.store.logstore import ConversationRow, LogStore, SearchHit, TurnRow

_HOW = {"dropped": "evicted", "folded": "summarized", "removed": "removed"}
_TAB = "    "


def clean(text: object) -> str:
    """Return ``text`` as one terminal-safe line."""
    return " ".join(strip_controls(str(text)).split())


def when(moment: datetime) -> str:
    """Return ``moment`` in local time, to the minute."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def list_lines(rows: Sequence[ConversationRow]) -> list[str]:
    """Return one line per conversation: id, last active, model, turns, first line."""
    lines = []
    for row in rows:
        turns = f"{row.turns} turn" + ("" if row.turns == 1 else "s")
        first = clean(row.first_line) or "(no message)"
        lines.append(f"{row.id}  {when(row.active)}  {clean(row.model)}  {turns}  {first}")
    return lines


def _label(message: Mapping[str, Any], replaced: bool = False) -> str:
    """Return the heading of one logged message: number, role or kind, turn, and what became of it
    (``replaced``: it is no longer in the conversation at all)."""
    number, role, kind = message.get("id"), message.get("role"), message.get("kind")
    if number == 0:
        return "#0 system prompt"
    if kind == "summary":
        return f"#{number} summary of evicted turns"
    what = f"file {message.get('source')}" if kind == "file" else str(role)
    notes = [f"turn {message.get('turn')}"]
    if message.get("pinned"):
        notes.append("pinned")
    eviction = message.get("eviction")
    if replaced:
        notes.append("replaced by /retry, /edit or /undo: no longer in the conversation")
    elif isinstance(eviction, Mapping):
        how = _HOW.get(str(eviction.get("how")), str(eviction.get("how")))
        notes.append(f"{how} in turn {eviction.get('turn')}: no longer sent")
    if message.get("finish_reason") == "length":
        notes.append("✂ cut at the length limit")
    return clean(f"#{number} {what} ({', '.join(notes)})")


def _body(message: Mapping[str, Any]) -> list[str]:
    """Return the text of one logged message, indented; tool calls one line each."""
    text, images = content_parts(message.get("content"))
    text = (text or "") + "".join(f"\n[image: {image.mime}]" for image in images)
    lines = [_TAB + line for line in strip_controls(text).split("\n")]
    if lines == [_TAB]:
        lines = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            lines.append(_TAB + clean(f"→ {function.get('name')} {function.get('arguments')}"))
    return [line.rstrip() for line in lines]


def _ids_in(snapshot: Mapping[str, Any] | None) -> set[object] | None:
    """Return the ids of every message the conversation still holds after its last turn (sent or
    evicted), from its snapshot; None without one. A logged message not among them was replaced:
    ``/retry`` and ``/edit`` send the last message again in place of the last exchange, ``/undo``
    removes it, and the log keeps what the exchange said."""
    if snapshot is None:
        return None
    held = [snapshot.get("system"), snapshot.get("summary"), *(snapshot.get("messages") or ()),
            *(snapshot.get("evicted") or ())]
    return {m.get("id") for m in held if isinstance(m, Mapping)}


def show_lines(store: LogStore, cid: str) -> list[str]:
    """Return the transcript of conversation ``cid``: a heading, then every message by number, each
    marked with its turn and, once evicted, how and when it left (or that it was replaced); then each
    turn's events."""
    row = next(iter(store.conversations(1, cid=cid)), None)
    turns: list[TurnRow] = store.turns(cid)
    messages = sorted(store.messages(cid), key=lambda m: (m.get("id") != 0, m.get("kind") != "summary",
                                                         m.get("id", 0)))
    lines = []
    if row is not None:
        lines.append(clean(f"conversation {row.id} · started {when(row.started)} · last turn "
                           f"{when(row.active)} · {row.model} · {row.endpoint} · {len(turns)} turn(s)"))
    kept = _ids_in(store.snapshot(cid))
    for message in messages:
        replaced = kept is not None and message.get("id") not in kept
        lines += ["", _label(message, replaced), *_body(message)]
    events = [(turn.turn, event) for turn in turns for event in turn.events]
    if events:
        lines += ["", "events:"]
        lines += [_TAB + clean(f"turn {number}: {event}") for number, event in events]
    return lines


def search_lines(hits: Sequence[SearchHit]) -> list[str]:
    """Return one line per hit: conversation id, message number, role, turn, and the snippet."""
    return [f"{clean(hit.cid)}  #{hit.message_id}  {clean(hit.role)}  turn {hit.turn}:  {clean(hit.snippet)}"
            for hit in hits]
