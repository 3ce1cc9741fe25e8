"""A second process for tests/test_logstore.py, and the scripted conversations both of them log.

    python tests/logstore_worker.py log PATH TURNS TAG DIR
        creates DIR/TAG.ready, waits for DIR/go, then opens the log, starts a conversation,
        logs TURNS turns and prints the conversation's id
    python tests/logstore_worker.py fill PATH CID TURN
        lets this process write files no bigger than they are now (RLIMIT_FSIZE, so the disk is
        "full" even for root), tries to log a large turn TURN, prints the error, exits 3 on LogError
"""

from __future__ import annotations

import resource
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stateless_chat.core.history import Conversation  # noqa: E402
from stateless_chat.core.ledger import TurnStats  # noqa: E402
from stateless_chat.core.messages import Entry, Message  # noqa: E402
from stateless_chat.errors import LogError  # noqa: E402
from stateless_chat.store.logdiff import Mirror  # noqa: E402
from stateless_chat.store.logstore import Change, EventLog, LogStore, TurnLog, memory_data  # noqa: E402

ENDPOINT = "http://127.0.0.1:9/v1"


def entry(number: int, turn: int, role: str, content: str | None, **extra: Any) -> Entry:
    """Return an entry of a scripted conversation."""
    fields = {k: extra.pop(k) for k in ("name", "tool_calls", "tool_call_id") if k in extra}
    message = Message(role, content, **fields)  # type: ignore[arg-type]
    return Entry(number, message, len((content or "").split()) + 3, turn, **extra)


def conversation_at(turn: int, tag: str, *, reply: str | None = None) -> Conversation:
    """Return the conversation after turn ``turn``: turn N asks "TAG question N", gets "TAG answer N"."""
    entries = []
    for n in range(1, turn + 1):
        entries.append(entry(2 * n - 1, n, "user", f"{tag} question {n}"))
        entries.append(entry(2 * n, n, "assistant", reply if reply and n == turn else f"{tag} answer {n}"))
    return Conversation(history=tuple(entries), next_id=2 * turn + 1, next_turn=turn + 1)


def make_turn(turn: int, tag: str, *, reply: str | None = None,
              conversation: Conversation | None = None) -> TurnLog:
    """Return the record of turn ``turn`` of ``conversation`` (by default ``conversation_at``)."""
    conversation = conversation or conversation_at(turn, tag, reply=reply)
    answer = conversation.history[-1]
    sent = [e.message.to_api() for e in conversation.history[:-1]]
    request = {"model": "test-model", "messages": sent, "stream": True}
    stats = TurnStats(turn, 10 * turn, 10 * turn, 5, 12 * turn, finish_reason="stop",
                      reported_cached_tokens=turn)
    return TurnLog(turn=turn, requests=(request,), reply=answer.content, finish_reason="stop",
                   usage={"prompt_tokens": 10 * turn, "completion_tokens": 5, "cached_tokens": turn},
                   answer=answer, stats=stats, endpoint=ENDPOINT, model="test-model", seconds=0.25)


class Scripted:
    """Writes a conversation into a store as the journal does: what changed since the last write,
    after the head it last wrote."""

    def __init__(self, store: LogStore, cid: str, *, head: int = 0) -> None:
        self.store, self.cid, self.head = store, cid, head
        self.mirror = Mirror()

    def write(self, conversation: Conversation, *, turn: TurnLog | None = None, event: EventLog | None = None,
              settings: dict[str, Any] | None = None, at: datetime | None = None) -> int:
        whole = not self.mirror.written
        delta = self.mirror.delta(conversation, whole=whole)
        self.head = self.store.write(
            self.cid, Change(delta, settings=settings, ledger=() if whole else None, turn=turn, event=event,
                             memory=memory_data(conversation.memory, conversation.memory_sent) if whole
                             else None, model=turn.model if turn else "",
                             endpoint=turn.endpoint if turn else ""),
            head=self.head, at=at)
        self.mirror.wrote(delta, whole=whole)
        return self.head

    def turn(self, turn: int, tag: str, *, reply: str | None = None, at: datetime | None = None) -> int:
        return self.write(conversation_at(turn, tag, reply=reply), turn=make_turn(turn, tag, reply=reply),
                          at=at)


def ready_and_wait(directory: Path, tag: str) -> bool:
    """Say this worker is ready (``TAG.ready``), then wait for the ``go`` file that starts every worker
    at once; False when it never comes."""
    (directory / f"{tag}.ready").touch()
    deadline = time.monotonic() + 60
    while not (directory / "go").exists():
        if time.monotonic() > deadline:
            print("no go file", file=sys.stderr)
            return False
        time.sleep(0.005)
    return True


def log(path: Path, turns: int, tag: str, directory: Path) -> int:
    if not ready_and_wait(directory, tag):
        return 2
    with LogStore.open(path) as store:
        cid = store.start_conversation(model="test-model", endpoint=ENDPOINT)
        writer = Scripted(store, cid)
        for turn in range(1, turns + 1):
            writer.turn(turn, tag)
    print(cid)
    return 0


def fill(path: Path, cid: str, turn: int) -> int:
    with LogStore.open(path) as store:
        restored = store.restore(cid)
        assert restored is not None
        writer = Scripted(store, cid, head=restored.head)
        writer.mirror.prime(restored.placed, restored.conversation, restored.next_pos)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        largest = max(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(path.name))
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 16 * 1024, hard))
        try:
            writer.turn(turn, "big", reply="x " * 2_000_000)
        except LogError as error:
            print(error)
            return 3
    return 0


def main(argv: list[str]) -> int:
    command, path = argv[1], Path(argv[2])
    if command == "log":
        return log(path, int(argv[3]), argv[4], Path(argv[5]))
    if command == "fill":
        return fill(path, argv[3], int(argv[4]))
    print(f"unknown command {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
