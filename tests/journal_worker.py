"""A chat in a process of its own, for tests/test_journal.py: two of them log into one file at once.

    python tests/journal_worker.py URL PATH TURNS TAG DIR
        creates DIR/TAG.ready, waits for DIR/go, then chats TURNS turns ("TAG question N") with
        the server at URL through a real Session whose journal logs into PATH (budget small
        enough that turns are evicted), and prints the conversation's id
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stateless_chat.chat.session import Session  # noqa: E402
from stateless_chat.config import Settings  # noqa: E402
from stateless_chat.store import journal  # noqa: E402
from stateless_chat.wire.openai_backend import open_backend  # noqa: E402
from tests.logstore_worker import ready_and_wait  # noqa: E402


def main(url: str, path: Path, turns: int, tag: str, directory: Path) -> int:
    settings = Settings(base_url=url, max_retries=0, timeout=30.0, budget=400, reply_reserve=50)
    session = Session(settings, open_backend(settings.endpoints, "sk-worker", max_retries=0, timeout=30.0))
    warnings: list[str] = []
    log = journal.open_journal(path, session.settings, warn=warnings.append, strict=True)
    session.on_turn = (*session.on_turn, log)
    session.recall = log.recall
    if not ready_and_wait(directory, tag):
        return 2
    for turn in range(1, turns + 1):
        session.send(f"{tag} question {turn} " + "and some words to fill the budget " * 3)
    log.close()
    if warnings:
        print("\n".join(warnings), file=sys.stderr)
        return 3
    print(log.cid)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])))
