"""Context limits learned from servers' refusals, kept so that later runs start within them.

A chat that a server refuses as too long (``context_length_exceeded``) cuts its request to what the
server's numbers imply and keeps that budget for the rest of the chat. ``Keeper`` (a session
observer) writes each such budget, once answered, to ``limits.json`` in the data folder, per
endpoint and model; ``find`` gives it to the next run, which starts within it (a one-shot ``-c``
chain no longer relearns it on every run), and says where it came from (``Learned.source``).
Delete the file, or the entry, to forget a limit. The file is private (0600) and replaced whole.
Only the standard library and the core are used.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

from stateless_chat.chat.values import FailedTurn, TurnRecord
from stateless_chat.config import default_data_dir
from stateless_chat.core.messages import ContextRetry
from stateless_chat.sanitize import public_url

FILE_NAME = "limits.json"
MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Learned:
    """A budget a server's refusal implied, for one endpoint and model, and when it was learned.

    ``limit`` is the context the server said it has (None: it did not say)."""

    endpoint: str
    model: str
    budget: int
    limit: int | None
    learned: str  # ISO date

    @property
    def cap(self) -> int:
        """Return the budget a later run starts within: the learned one, never past the context the
        server said it has (a budget learned while counting by byte bounds can be larger)."""
        return min(self.budget, self.limit) if self.limit else self.budget

    def source(self, path: Path) -> str:
        """Return where this limit came from, for a line the user reads."""
        said = f" (it said its context is {self.limit:,} tokens)" if self.limit else ""
        return f"learned from {self.endpoint}'s refusal on {self.learned}{said}, kept in {path}"


def path_for(env: Mapping[str, str]) -> Path:
    """Return where learned limits are kept: ``limits.json`` in the data folder."""
    return default_data_dir(env) / FILE_NAME


def _key(endpoint: str, model: str) -> str:
    return f"{public_url(endpoint).rstrip('/')} {model}"


def load(path: Path) -> dict[str, Learned]:
    """Return the limits kept at ``path`` by endpoint and model; {} when there is no file, or it cannot
    be read (a damaged file forgets its limits: they are learned again)."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    found: dict[str, Learned] = {}
    for key, item in (data.items() if isinstance(data, dict) else ()):
        try:
            learned = Learned(str(item["endpoint"]), str(item["model"]), int(item["budget"]),
                              None if item.get("limit") is None else int(item["limit"]), str(item["learned"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if learned.budget > 0:
            found[str(key)] = learned
    return found


def find(path: Path, endpoint: str, model: str) -> Learned | None:
    """Return the limit learned for ``model`` at ``endpoint``, if any."""
    return load(path).get(_key(endpoint, model))


def remember(path: Path, learned: Learned) -> None:
    """Keep ``learned`` at ``path`` (the smaller budget wins over one kept before); OSError when the
    file cannot be written."""
    from stateless_chat.store.filelock import exclusive
    from stateless_chat.store.persist import write_private

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with exclusive(path):
        kept = load(path)
        key = _key(learned.endpoint, learned.model)
        before = kept.get(key)
        if before is not None and before.budget <= learned.budget:
            return
        kept[key] = learned
        text = json.dumps({k: asdict(v) for k, v in sorted(kept.items())}, indent=2) + "\n"
        write_private(path, text)


class Keeper:
    """Told of each turn (a session observer): keeps the budget a context-length refusal implied, once
    the request sent again within it was answered. ``warn`` gets one line when it cannot be kept."""

    def __init__(self, path: Path, warn: Callable[[str], None] = lambda line: None) -> None:
        self.path = path
        self.warn = warn

    def __call__(self, record: TurnRecord | FailedTurn) -> None:
        if isinstance(record, FailedTurn):
            return
        for event in record.events:
            if isinstance(event, ContextRetry):
                learned = Learned(record.reply.endpoint, record.model, event.new_budget, event.reported_limit,
                                  date.today().isoformat())
                try:
                    remember(self.path, learned)
                except Exception as error:  # noqa: BLE001 - keeping a limit must never cost the turn
                    self.warn(f"cannot keep the learned context limit in {self.path}: {error}")


__all__ = ["FILE_NAME", "Keeper", "Learned", "find", "load", "path_for", "remember"]
