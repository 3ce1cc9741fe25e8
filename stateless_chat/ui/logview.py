"""What ``stateless-chat logs`` prints: the conversation log as plain text or JSON, fit for pipes.

Everything read from the log was written by a model, a user or a server, so every piece of
text is stripped of terminal controls (``sanitize.strip_controls``) before it is printed, and
the one-line fields (first lines, snippets, models, endpoints) hold no line breaks. Costs are
the reported tokens at the prices the run knows (the built-in table and ``[prices]``); a model
without a price has no cost, never a made-up one. The caller masks every key it knows in all of it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import Any

from stateless_chat.core.billing import Price, dollars, price_for
from stateless_chat.core.messages import content_parts
from stateless_chat.errors import UsageError, redact
from stateless_chat.sanitize import strip_controls
from stateless_chat.store import persist
from stateless_chat.store.logstore import ConversationRow, EventRow, LogStore, SearchHit, TurnRow, stats_data

_HOW = {"dropped": "evicted", "folded": "summarized", "removed": "removed"}
_TAB = "    "
_AGO = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

Prices = Mapping[str, Price]
_NO_PRICES: Prices = {}


def clean(text: object) -> str:
    """Return ``text`` as one terminal-safe line."""
    return " ".join(strip_controls(str(text)).split())


def when(moment: datetime) -> str:
    """Return ``moment`` in local time, to the minute."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """Return the moment ``text`` names: a date or time (``2025-01-30``, ``2025-01-30T08:00``, local
    unless it says its zone) or a time ago (``30m``, ``12h``, ``7d``, ``2w``). ``UsageError`` else."""
    value = text.strip()
    ago = _AGO.match(value.lower())
    if ago:
        return (now or datetime.now(timezone.utc)) - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{clean(text)!r} is not a date: give one like 2025-01-30 or 2025-01-30T08:00, or "
                         "a time ago like 12h or 7d") from None
    return moment if moment.tzinfo else moment.astimezone()


def cost(usage: Sequence[tuple[str, int, int, int]], prices: Prices | None) -> float | None:
    """Return what ``usage`` (model, prompt, cached, completion) cost, None when a model has no price."""
    prices = prices or _NO_PRICES
    total = 0.0
    for model, prompt, cached, completion in usage:
        price = price_for(model, prices)
        if price is None:
            return None
        total += price.cost(max(0, prompt - cached), cached, completion)
    return total


def _seconds(value: float | None) -> str:
    return "-" if not value else f"{value:,.1f} s"


def list_lines(rows: Sequence[ConversationRow], prices: Prices | None = None) -> list[str]:
    """Return one line per conversation: id, last active, model, turns, tokens, cost, time, first line."""
    lines = []
    for row in rows:
        turns = f"{row.turns} turn" + ("" if row.turns == 1 else "s")
        first = clean(row.first_line) or "(no message)"
        spent = cost(row.usage, prices)
        tokens = f"{row.prompt_tokens + row.completion_tokens:,} tokens"
        lines.append(f"{row.id}  {when(row.active)}  {clean(row.model)}  {turns}  {tokens}  "
                     f"{'-' if spent is None else dollars(spent)}  {_seconds(row.seconds)}  {first}")
    return lines


def list_records(rows: Sequence[ConversationRow], prices: Prices | None = None) -> list[dict[str, Any]]:
    """Return each conversation as a JSON-ready record."""
    return [{
        "id": row.id, "started": row.started.isoformat(), "active": row.active.isoformat(),
        "model": row.model, "endpoint": row.endpoint, "turns": row.turns, "first_line": row.first_line,
        "parent": row.parent,
        "usage": {"prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
                  "cached_tokens": row.cached_tokens},
        "cost_usd": cost(row.usage, prices), "seconds": row.seconds,
    } for row in rows]


def _label(message: Mapping[str, Any]) -> str:
    """Return the heading of one logged message: number, role or kind, turn, and what became of it."""
    number, role, kind = message.get("id"), message.get("role"), message.get("kind")
    if message.get("problem"):
        return clean(f"#{number} {role} (turn {message.get('turn')}): damaged in the log: "
                     f"{message['problem']}")
    if number == 0:
        return "#0 system prompt"
    if kind == "memory":
        return "standing memory" + (" (sent with every request)" if message.get("slot")
                                    else " (replaced since)")
    if kind == "summary":
        return f"#{number} summary of evicted turns" + ("" if message.get("slot") else " (replaced since)")
    what = f"file {message.get('source')}" if kind == "file" else str(role)
    notes = [f"turn {message.get('turn')}"]
    if message.get("pinned"):
        notes.append("pinned")
    eviction = message.get("eviction")
    if isinstance(eviction, Mapping):
        how = _HOW.get(str(eviction.get("how")), str(eviction.get("how")))
        notes.append(f"{how} in turn {eviction.get('turn')}: no longer sent")
    elif not message.get("slot"):  # an exchange /retry or /edit sent again in its place, or /undo removed
        notes.append("replaced by /retry, /edit or /undo: no longer in the conversation")
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


def _turn_line(turn: TurnRow, prices: Prices | None) -> str:
    """Return one turn's line: model, tokens as reported, cost, time, requests, how it ended."""
    if turn.problem:
        return clean(f"turn {turn.turn}: damaged in the log ({turn.problem})")
    prompt, completion, cached = turn.prompt_tokens, turn.completion_tokens, turn.cached_tokens
    if prompt is None:
        tokens = "usage not reported"
    else:
        tokens = (f"prompt {prompt:,}" + (f" ({cached:,} cached)" if cached else "")
                  + f", completion {completion or 0:,}")
    spent = None if prompt is None else cost([(turn.model, prompt, cached or 0, completion or 0)], prices)
    parts = [f"turn {turn.turn}", turn.model, tokens]
    if spent is not None:
        parts.append(dollars(spent))
    parts.append(_seconds(turn.seconds))
    if turn.steps > 1:
        parts.append(f"{turn.steps} requests")
    if turn.finish_reason and turn.finish_reason != "stop":
        parts.append(f"finish {turn.finish_reason}")
    return clean(" · ".join(parts))


def show_lines(store: LogStore, cid: str, prices: Prices | None = None) -> list[str]:
    """Return the transcript of conversation ``cid``: a heading, then every message by number, each
    marked with its turn and, once evicted, how and when it left; then each turn's usage, cost and
    time, and every event: the turns', the changes made between turns, cancelled turns, forks."""
    row = next(iter(store.conversations(1, cid=cid)), None)
    turns = store.turns(cid)
    messages = sorted(store.messages(cid), key=lambda m: (m.get("id") != 0, m.get("kind") != "summary",
                                                         m.get("id", 0)))
    lines = []
    if row is not None:
        spent = cost(row.usage, prices)
        lines.append(clean(f"conversation {row.id} · started {when(row.started)} · last active "
                           f"{when(row.active)} · {row.model} · {row.endpoint} · {len(turns)} turn(s) · "
                           f"{row.prompt_tokens + row.completion_tokens:,} tokens"
                           + ("" if spent is None else f" · {dollars(spent)}")
                           + ("" if row.parent is None else f" · forked from {row.parent}")))
    for message in messages:
        lines += ["", _label(message), *_body(message)]
    if turns:
        lines += ["", "turns:"] + [_TAB + _turn_line(turn, prices) for turn in turns]
    events = [(turn.turn, 0, f"turn {turn.turn}: {event}") for turn in turns for event in turn.events]
    events += [(event.turn, 1, _event_line(event)) for event in store.events(cid)]
    if events:
        lines += ["", "events:"]
        lines += [_TAB + clean(line) for _, _, line in sorted(events, key=lambda e: (e[0], e[1]))]
    return lines


def _event_line(event: EventRow) -> str:
    kinds = {"edit": "after turn", "cancelled": "turn", "fork": "", "migrated": ""}
    where = kinds.get(event.kind, "")
    prefix = f"{where} {event.turn}: " if where and event.kind != "cancelled" else ""
    return f"{prefix}{event.what} ({when(event.at)})"


def show_record(store: LogStore, cid: str, prices: Prices | None = None) -> dict[str, Any]:
    """Return conversation ``cid`` as one JSON-ready record: the conversation's row, every message,
    every turn (usage, cost, accounting, time; its request bodies are ``--request N``), every event."""
    rows = store.conversations(1, cid=cid)
    if not rows:
        return {}
    row = rows[0]
    turns = []
    for turn in store.turns(cid):
        record = asdict(turn)
        record["logged_at"] = turn.logged_at.isoformat()
        record["stats"] = None if turn.stats is None else stats_data(turn.stats)
        usage = [(turn.model, turn.prompt_tokens, turn.cached_tokens or 0, turn.completion_tokens or 0)]
        record["cost_usd"] = None if turn.prompt_tokens is None else cost(usage, prices)  # type: ignore[arg-type]
        turns.append(record)
    events = [{"seq": e.seq, "at": e.at.isoformat(), "turn": e.turn, "kind": e.kind, "what": e.what,
               "detail": e.detail} for e in store.events(cid)]
    return {"conversation": list_records([row], prices)[0], "messages": store.messages(cid),
            "turns": turns, "events": events}


def request_text(store: LogStore, cid: str, turn: int, step: int | None = None) -> str:
    """Return the exact body turn ``turn`` sent (``step``: which request of a tool loop, from 1; by
    default the last, the one the reply answers). ``UsageError`` when there is no such request."""
    bodies = store.bodies(cid, turn)
    if not bodies:
        numbers = [t.turn for t in store.turns(cid)]
        known = f"turns {numbers[0]} to {numbers[-1]}" if numbers else "no turn"
        raise UsageError(f"conversation {cid} has no turn {turn} logged ({known})")
    if step is None:
        return bodies[-1]
    if not 1 <= step <= len(bodies):
        raise UsageError(f"turn {turn} sent {len(bodies)} request(s): --step takes 1 to {len(bodies)}")
    return bodies[step - 1]


def export_text(store: LogStore, cid: str, form: str) -> str:
    """Return conversation ``cid`` as it was left, as a Markdown transcript (``md``) or a save file
    (``json``, which ``--load`` reads)."""
    restored = store.restore(cid)
    if restored is None:
        raise UsageError(f"conversation {cid} has nothing logged to export yet")
    settings = restored.settings
    if form == "json":
        import json

        data = persist.to_data(restored.conversation, restored.ledger, settings)
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    budget = settings.get("budget")
    return persist.to_markdown(restored.conversation, restored.ledger, settings,
                               budget if isinstance(budget, int) else None)


def _snippet(hit: SearchHit) -> str:
    """Return the hit's snippet with every key the run knows masked, even one a match mark cuts in two
    (``sk-[key]-...``): then the line is shown without its marks."""
    text = clean(hit.snippet)
    plain = text.replace("[", "").replace("]", "")
    masked = redact(plain)
    return masked if masked != plain else text


def search_lines(hits: Sequence[SearchHit]) -> list[str]:
    """Return one line per hit: conversation id, message number, role, turn, and the snippet."""
    return [f"{clean(hit.cid)}  #{hit.message_id}  {clean(hit.role)}  turn {hit.turn}:  {_snippet(hit)}"
            for hit in hits]


def search_records(hits: Sequence[SearchHit]) -> list[dict[str, Any]]:
    return [{**asdict(hit), "snippet": _snippet(hit)} for hit in hits]
