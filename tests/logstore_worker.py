"""A second process for tests/test_logstore.py, and the turn records both of them log.

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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stateless_chat.errors import LogError  # noqa: E402
from stateless_chat.store.logstore import LogStore, TurnLog  # noqa: E402


def message(number: int, turn: int, role: str, content: str | None, **extra: Any) -> dict[str, Any]:
    """Return a message dict as the save file holds it."""
    data: dict[str, Any] = {
        "id": number, "role": role, "content": content, "turn": turn, "pinned": False, "kind": "turn",
        "source": None, "tokens": len((content or "").split()) + 3, "eviction": None,
    }
    data.update(extra)
    return data


def make_turn(turn: int, tag: str, *, reply: str | None = None) -> TurnLog:
    """Return turn ``turn`` of a conversation where turn N asks "question N" and gets "answer N"."""
    messages = []
    for n in range(1, turn + 1):
        messages.append(message(2 * n - 1, n, "user", f"{tag} question {n}"))
        messages.append(message(2 * n, n, "assistant", reply if reply and n == turn else f"{tag} answer {n}"))
    sent = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    request = {"model": "test-model", "messages": sent, "stream": True}
    return TurnLog(
        turn=turn,
        request=request,
        reply=messages[-1]["content"],
        finish_reason="stop",
        usage={"prompt_tokens": 10 * turn, "completion_tokens": 5, "cached_tokens": turn},
        events=(),
        messages=tuple(messages),
        snapshot={"format": "stateless-chat/conversation", "version": 1, "messages": messages,
                  "next_id": 2 * turn + 1, "next_turn": turn + 1},
        endpoint="http://127.0.0.1:9/v1",
        model="test-model",
    )


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
        cid = store.start_conversation(model="test-model", endpoint="http://127.0.0.1:9/v1")
        for turn in range(1, turns + 1):
            store.log_turn(cid, make_turn(turn, tag))
    print(cid)
    return 0


def fill(path: Path, cid: str, turn: int) -> int:
    with LogStore.open(path) as store:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        largest = max(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(path.name))
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 16 * 1024, hard))
        try:
            store.log_turn(cid, make_turn(turn, "big", reply="x " * 2_000_000))
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
