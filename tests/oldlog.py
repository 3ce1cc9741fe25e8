"""A log as version 1 of the program wrote it, built with version 1's own DDL, for the migration tests."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from stateless_chat.store import logstore

T0 = datetime(2025, 1, 30, 8, 0, tzinfo=timezone.utc)

def saved_message(number: int, turn: int, role: str, content: str | None, **extra: Any) -> dict[str, Any]:
    """Return a message dict as a save file (and the version 1 to 3 logs) held it."""
    data: dict[str, Any] = {
        "id": number, "role": role, "content": content, "turn": turn, "pinned": False, "kind": "turn",
        "source": None, "tokens": len((content or "").split()) + 3, "eviction": None,
    }
    data.update(extra)
    return data


def v1_turn(turn: int) -> tuple[dict[str, Any], str, list[dict[str, Any]], dict[str, Any]]:
    """Return turn ``turn`` of the old conversation as version 1 code logged it: request, reply,
    messages, snapshot."""
    messages = []
    for n in range(1, turn + 1):
        messages += [saved_message(2 * n - 1, n, "user", f"old question {n}"),
                     saved_message(2 * n, n, "assistant", f"old answer {n}")]
    request = {"model": "test-model", "messages": [{"role": m["role"], "content": m["content"]}
                                                   for m in messages[:-1]], "stream": True}
    snapshot = {"format": "stateless-chat/conversation", "version": 2, "settings": {"model": "test-model"},
                "system": None, "summary": None, "messages": messages, "evicted": [], "next_id": 2 * turn + 1,
                "next_turn": turn + 1, "totals": {"sent": 0, "baseline": 0, "completion": 0, "turns": [
                    {"turn": n, "estimated_prompt_tokens": 10 * n, "reported_prompt_tokens": None,
                     "reported_completion_tokens": None, "baseline_prompt_tokens": 10 * n}
                    for n in range(1, turn + 1)]}}
    return request, messages[-1]["content"], messages, snapshot


def build_v1(path: Path) -> str:
    """Create a version 1 log with the version 1 DDL and log three turns into it as version 1
    code did: no token columns."""
    db = sqlite3.connect(path, isolation_level=None)
    for statement in logstore.MIGRATIONS[0]:
        assert isinstance(statement, str)
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    cid = "0000old000000"
    db.execute("INSERT INTO conversations VALUES (?, ?, ?, 'old-model', 'http://old/v1', NULL)",
               (cid, T0.isoformat(timespec="microseconds"), T0.isoformat(timespec="microseconds")))
    usages: list[dict[str, Any] | None] = [
        {"prompt_tokens": 100, "completion_tokens": 10},
        None,
        {"prompt_tokens": 300, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 200}},
    ]
    for turn, usage in enumerate(usages, start=1):
        request, reply, messages, snapshot = v1_turn(turn)
        stamp = (T0 + timedelta(minutes=turn)).isoformat(timespec="microseconds")
        db.execute("BEGIN")
        db.execute("INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (cid, turn, stamp, "test-model", "http://127.0.0.1:9/v1",
                    json.dumps(request, separators=(",", ":")), reply, "stop",
                    None if usage is None else json.dumps(usage), "[]"))
        for m in messages:
            db.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT (cid, id) DO UPDATE SET data = excluded.data, body = excluded.body",
                       (cid, m["id"], m["turn"], m["role"], m["kind"], json.dumps(m), m["content"]))
        db.execute("UPDATE conversations SET active = ?, snapshot = ? WHERE id = ?",
                   (stamp, json.dumps(snapshot), cid))
        db.execute("COMMIT")
    db.close()
    return cid
