"""The tool lists of MCP servers, remembered between runs so that tools cost nothing until called.

A request offers the tools of every enabled server; knowing them used to mean starting every
server before the first request (seconds, and a hundred MB, for a "hello" that calls none).
Each server's list is remembered in ``mcp-tools.json`` in the data folder, keyed by a hash of
what starts the server (its command, arguments and environment: another version or setting
of it is another key, and no value of its environment is written out). With a list
remembered, the tools are offered at once and the server starts on its first call (in the
chat, in the background). When a started server lists other tools than remembered, its new
list is used and remembered, and the change is said (the tools array changes: a cache break).

The file is private (0600) and small; it is rewritten whole (a temporary file, then renamed)
with the entries of other servers kept as they are on disk, so two chats can share it. A file
that cannot be read or parsed is treated as empty: the servers then start to be asked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "mcp-tools.json"
VERSION = 1


@dataclass(frozen=True)
class RememberedTool:
    """A tool as its server listed it: name, description and input schema (keys sorted)."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class Remembered:
    """What a server said about itself when it last started: its tools and its instructions."""

    tools: tuple[RememberedTool, ...]
    instructions: str | None = None
    resources: bool = False  # it declares resources (the read_resource tool is offered for it)


def server_key(command: str, args: Sequence[str], env: Mapping[str, str]) -> str:
    """Return the key of a server's entry: a hash of its command, arguments and environment."""
    what = json.dumps([command, list(args), sorted(env.items())], ensure_ascii=False)
    return hashlib.sha256(what.encode("utf-8", "surrogatepass")).hexdigest()


def _tool(data: Any) -> RememberedTool | None:
    if not isinstance(data, dict):
        return None
    name, description, schema = data.get("name"), data.get("description", ""), data.get("input_schema")
    if not isinstance(name, str) or not isinstance(description, str) or not isinstance(schema, dict):
        return None
    return RememberedTool(name, description, schema)


def _entry(data: Any) -> Remembered | None:
    if not isinstance(data, dict) or not isinstance(data.get("tools"), list):
        return None
    tools = [_tool(item) for item in data["tools"]]
    if any(tool is None for tool in tools):
        return None
    instructions = data.get("instructions")
    return Remembered(tuple(t for t in tools if t is not None),
                      instructions if isinstance(instructions, str) else None, data.get("resources") is True)


class ToolCache:
    """The remembered tool lists in ``directory/mcp-tools.json``; thread-safe, read once."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / FILE_NAME
        self._lock = threading.Lock()
        self._entries: dict[str, Remembered] | None = None

    def _read(self) -> dict[str, Any]:
        """Return the file's ``servers`` table as stored ({} when it is missing or unreadable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        servers = data.get("servers") if isinstance(data, dict) and data.get("version") == VERSION else None
        return servers if isinstance(servers, dict) else {}

    def _loaded(self) -> dict[str, Remembered]:
        if self._entries is None:
            entries = {key: _entry(value) for key, value in self._read().items()}
            self._entries = {key: entry for key, entry in entries.items() if entry is not None}
        return self._entries

    def get(self, key: str) -> Remembered | None:
        """Return what is remembered of the server with ``key`` (None: it must start to be known)."""
        with self._lock:
            return self._loaded().get(key)

    def put(self, key: str, remembered: Remembered) -> bool:
        """Remember ``remembered`` for ``key``; return whether it differs from what was remembered.

        A file that cannot be written is left as it is: the tools are known for this run anyway.
        """
        with self._lock:
            if self._loaded().get(key) == remembered:
                return False
            self._loaded()[key] = remembered
            stored = self._read()
            stored[key] = {
                "tools": [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                          for t in remembered.tools],
                "instructions": remembered.instructions,
                "resources": remembered.resources,
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            with contextlib.suppress(OSError):
                self._write({"version": VERSION, "servers": stored})
            return True

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".mcp-tools.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:  # mkstemp makes it 0600
                json.dump(data, out, ensure_ascii=False, sort_keys=True)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def describe_change(before: Remembered | None, after: Remembered) -> str:
    """Return how ``after`` differs from ``before``, e.g. ``2 tools added (a, b), 1 changed (c)``."""
    if before is None:
        return f"{len(after.tools)} tools, none remembered before"
    old = {t.name: t for t in before.tools}
    new = {t.name: t for t in after.tools}
    parts = []
    changes = (("added", [n for n in new if n not in old]), ("removed", [n for n in old if n not in new]),
               ("changed", [n for n in new if n in old and new[n] != old[n]]))
    for label, names in changes:
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            parts.append(f"{len(names)} {label} ({shown})")
    if before.instructions != after.instructions:
        parts.append("its instructions changed")
    return ", ".join(parts) or "no change"
