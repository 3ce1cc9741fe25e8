"""The conversation log at any length: 10,000 turns of a 32,000-token window, logged into a real
SQLite file, measured at 100, 1,000 and 10,000 turns.

A real ``Session`` (budget 32,000, drop-oldest down to half of it, exact counts) runs the turns; its
backend answers in-process (``replay.Replies``), so that nothing but the client's own work is
in the loop. The journal is wired as the chat wires it and timed around its call: the log's write
time per turn. The turns are ~60-word questions and ~260-word replies drawn from a 4,000-word
vocabulary (so that the full-text index is a real one). At each mark: the bytes the log grew per
turn over the last 50 turns (the file and its WAL, checkpointed) against the text those turns
added, the write time (median and slowest of those 50), the whole log against the whole
conversation's text; and, at the last mark, reading the conversation back as ``-c`` does
(opening the log and ``restore``, then ``Session.load``, the session's own recount, apart), and
``logs list`` / ``logs search``'s own work in this process (process start-up aside).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT  # noqa: F401  (puts the checkout on sys.path)

BUDGET = 32_000
MARKS = (100, 1_000, 10_000)
WINDOW = 50  # turns each mark's figures are taken over
VOCABULARY = 4_000


@dataclass(frozen=True)
class LogMark:
    """The log at one mark."""

    turns: int
    bytes_per_turn: float  # the log's growth over the last WINDOW turns
    text_per_turn: float  # the conversation text those turns added (UTF-8)
    write_ms: float  # median journal write over the last WINDOW turns
    slowest_ms: float
    log_bytes: int  # the whole log (checkpointed)
    text_bytes: int  # the whole conversation's text
    messages: int


@dataclass(frozen=True)
class LogResult:
    marks: tuple[LogMark, ...]
    restore_ms: float  # opening the log and reading the conversation back (-c), at the last mark
    load_ms: float  # Session.load of it: the session's recount, not the log's work
    list_ms: float  # logs list: the 20 most recent conversations, their lines
    search_ms: float  # logs search: 20 hits for a word, their lines
    evicted: int  # messages evicted at the last mark


def _words(rng: random.Random, vocabulary: Sequence[str], count: int) -> str:
    return " ".join(rng.choice(vocabulary) for _ in range(count)) + "."


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def run(marks: Sequence[int] = MARKS, seed: int = 7) -> LogResult:
    """Run ``max(marks)`` turns and return the log's figures at each mark."""
    import sqlite3

    from stateless_chat.chat.session import Session, TurnRecord
    from stateless_chat.config import Settings
    from stateless_chat.store import journal
    from stateless_chat.store.logstore import LogStore
    from stateless_chat.store.replay import Replies, replay_backend
    from stateless_chat.ui import logview

    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(VOCABULARY)]
    # Recall and standing memory off: this part measures the log alone (part 8 measures recall).
    settings = Settings(base_url="http://127.0.0.1:9/v1", budget=BUDGET, context_window=128_000, stream=False,
                        max_retries=0, timeout=5.0, recall="off", memory="off")
    backend = Replies()
    session = Session(settings, replay_backend(backend))
    marks_out: list[LogMark] = []
    with tempfile.TemporaryDirectory(prefix="bench-log-") as directory:
        path = Path(directory) / "stateless-chat" / "logs.db"
        log = journal.open_journal(path, settings)
        times: list[float] = []

        def timed(record: TurnRecord) -> None:
            started = time.perf_counter()
            log(record)
            times.append(time.perf_counter() - started)

        session.on_turn = (*session.on_turn, timed)
        session.recall = log.recall
        text = 0
        texts: list[int] = []
        sizes: dict[int, int] = {}
        store = log.store
        assert store is not None
        windows = {mark: min(WINDOW, mark // 2) for mark in marks}
        starts = {mark - window for mark, window in windows.items()}
        for turn in range(1, max(marks) + 1):
            question = _words(rng, vocabulary, 60)
            backend.answer = _words(rng, vocabulary, 260)
            session.send(question)
            text += len(question.encode()) + len(backend.answer.encode())
            texts.append(text)
            if turn in windows or turn in starts:
                store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                sizes[turn] = _size(path)
            if turn in windows:
                window = windows[turn]
                last = [t * 1000 for t in times[-window:]]
                before = turn - window
                marks_out.append(LogMark(
                    turns=turn, bytes_per_turn=(sizes[turn] - sizes[before]) / window,
                    text_per_turn=(text - texts[before - 1]) / window,
                    write_ms=statistics.median(last), slowest_ms=max(last), log_bytes=sizes[turn],
                    text_bytes=text,
                    messages=len(session.conversation.all_entries()),
                ))
        cid = log.cid
        log.close()
        assert cid is not None
        started = time.perf_counter()
        with LogStore.open(path) as reader:
            restored = reader.restore(reader.latest() or cid)
        restore = time.perf_counter() - started
        assert restored is not None and restored.conversation.next_turn == max(marks) + 1
        again = Session(settings, None, exact=False)  # as a one-shot -c: byte bounds until they do not fit
        started = time.perf_counter()
        again.load(*journal.loadable(restored))
        load = time.perf_counter() - started
        with LogStore.open(path, read_only=True) as reader:
            word = vocabulary[0]
            started = time.perf_counter()
            listed = logview.list_lines(reader.conversations(20), settings.prices)
            list_time = time.perf_counter() - started
            started = time.perf_counter()
            found = logview.search_lines(reader.search(word, limit=20))
            search_time = time.perf_counter() - started
        assert listed and found
        check = sqlite3.connect(path)
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        check.close()
    return LogResult(tuple(marks_out), restore * 1000, load * 1000, list_time * 1000, search_time * 1000,
                     len(restored.conversation.evicted))
