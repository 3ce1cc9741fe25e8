"""The conversation log: round trips, privacy, two writers at once, damaged and read-only files,
failed writes, schema migration, search and recall. Real SQLite files throughout."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stateless_chat.core.history import Conversation
from stateless_chat.core.ledger import TurnStats
from stateless_chat.core.messages import Eviction, ToolCall
from stateless_chat.errors import ChatError, LogError
from stateless_chat.store import logschema, logstore, persist
from stateless_chat.store.logcodec import dumps
from stateless_chat.store.logdiff import Mirror
from stateless_chat.store.logstore import (
    DEFAULT_NAME,
    MIN_RECALL_SCORE,
    SCHEMA_VERSION,
    Change,
    Conflict,
    LogStore,
    TurnLog,
)
from tests.logstore_worker import Scripted, conversation_at, entry, make_turn
from tests.oldlog import T0, build_v1, v1_turn
from tests.support import integrity

WORKER = Path(__file__).resolve().parent / "logstore_worker.py"


def _modes_are_enforced() -> bool:
    """Return whether this process is stopped by a file's mode (not root, or root without
    CAP_DAC_OVERRIDE); root otherwise writes to a 0400 file and into a 0500 directory."""
    with tempfile.TemporaryDirectory() as directory:
        probe = Path(directory) / "probe"
        probe.write_text("")
        probe.chmod(0o400)
        try:
            with probe.open("a"):
                return False
        except PermissionError:
            return True


MODES_ENFORCED = _modes_are_enforced()


def log_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "stateless-chat" / DEFAULT_NAME


def one_line(error: pytest.ExceptionInfo[LogError]) -> str:
    text = str(error.value)
    assert text and "\n" not in text and "\r" not in text, text
    assert "Traceback" not in text
    return text


# ---- round trip -------------------------------------------------------------------------------


def test_round_trip_of_turns_messages_and_the_conversation(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    store = LogStore.open(path)
    assert store.path == path and path.is_file() and store.notes == []
    cid = store.start_conversation(model="gpt-4o-mini", endpoint="https://api.example/v1", started=T0)
    writer = Scripted(store, cid)

    system = entry(0, 0, "system", "be brief", pinned=True)
    ask = entry(1, 1, "user", "my name is Ada\nand I like maps")
    call = entry(2, 1, "assistant", None, tool_calls=(ToolCall("call_1", "get_weather", '{"city":"Oslo"}'),),
                 finish_reason="tool_calls")
    result = entry(3, 1, "tool", "rain, 4 degrees", tool_call_id="call_1")
    answer = entry(4, 1, "assistant", "Rain in Oslo, Ada.", finish_reason="stop")
    one = Conversation(system=system, history=(ask, call, result, answer), next_id=5, next_turn=2)
    sent = {"model": "gpt-4o-mini", "messages": [e.message.to_api() for e in (system, ask, call, result)],
            "api_key": "sk-do-not-keep-1", "extra_headers": {"Authorization": "Bearer sk-do-not-keep-2"}}
    first = TurnLog(
        turn=1, requests=(sent,), reply="Rain in Oslo, Ada.", finish_reason="stop",
        usage={"prompt_tokens": 120, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 64}},
        answer=answer, stats=TurnStats(1, 118, 120, 9, 118, finish_reason="stop", reported_cached_tokens=64),
        endpoint="https://api.example/v1", model="gpt-4o-mini", seconds=1.5,
    )
    writer.write(one, turn=first, settings={"model": "gpt-4o-mini", "api_key": "sk-do-not-keep-3"},
                 at=T0 + timedelta(seconds=5))

    # Turn 2: turn 1 is evicted (its latest state must win), and a new pair arrives.
    gone = Eviction("dropped", 2)
    hello = entry(5, 2, "user", "hello?")
    again = entry(6, 2, "assistant", "Hello again.", finish_reason="length")
    two = Conversation(system=system, history=(hello, again),
                       evicted=tuple(dataclasses.replace(e, eviction=gone)
                                     for e in (ask, call, result, answer)),
                       next_id=7, next_turn=3)
    second = TurnLog(turn=2, requests=({"model": "gpt-4o", "messages": [system.message.to_api(),
                                                                        hello.message.to_api()]},),
                     reply="Hello again.", finish_reason="length", usage=None,
                     events=("· evicted turn 1 (4 messages, 80 tokens): 900 / 1,000",), answer=again,
                     stats=TurnStats(2, 40, None, None, 200, evictions=1, finish_reason="length"),
                     model="gpt-4o")
    writer.write(two, turn=second, at=T0 + timedelta(seconds=9))
    store.close()

    with LogStore.open(path) as store:  # a new process would see the same
        turns = store.turns(cid)
        assert [t.turn for t in turns] == [1, 2]
        first_row, second_row = turns
        # the exact body, but never a credential, whatever key it hides under
        assert store.bodies(cid, 1) == [dumps({"model": "gpt-4o-mini", "messages": sent["messages"],
                                               "extra_headers": {}})]
        assert store.bodies(cid, 2) == [dumps(second.requests[0])]
        assert (first_row.reply, first_row.finish_reason, first_row.events) == (
            "Rain in Oslo, Ada.", "stop", ())
        assert first_row.usage == first.usage and first_row.logged_at == T0 + timedelta(seconds=5)
        assert (first_row.prompt_tokens, first_row.completion_tokens, first_row.cached_tokens) == (120, 9, 64)
        assert (first_row.model, first_row.endpoint, first_row.seconds) == ("gpt-4o-mini", "https://api.example/v1",
                                                                            1.5)
        assert first_row.stats == first.stats
        assert (second_row.reply, second_row.finish_reason, second_row.usage, second_row.events) == (
            "Hello again.", "length", None, second.events)
        assert (second_row.prompt_tokens, second_row.model, second_row.endpoint) == (None, "gpt-4o", "")

        assert [(m["id"], m["slot"], m.get("eviction")) for m in store.messages(cid)] == [
            (0, "system", None), *((i, "evicted", {"how": "dropped", "turn": 2}) for i in (1, 2, 3, 4)),
            (5, "history", None), (6, "history", None)]
        restored = store.restore(cid)
        assert restored is not None and restored.conversation == two and restored.problems == ()
        assert restored.ledger.turns == (first.stats, second.stats)
        assert restored.settings == {"model": "gpt-4o-mini"}
        assert store.latest() == cid

        [row] = store.conversations()
        assert (row.id, row.started, row.active, row.turns) == (cid, T0, T0 + timedelta(seconds=9), 2)
        # The latest turn's model; the endpoint of the latest turn that named one.
        assert (row.model, row.endpoint) == ("gpt-4o", "https://api.example/v1")
        assert row.first_line == "my name is Ada"
        assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.seconds) == (120, 9, 64, 1.5)
        assert store.token_totals(cid) == logstore.TokenTotals(2, 120, 9, 64)

    raw = b"".join(p.read_bytes() for p in path.parent.iterdir())
    assert b"sk-do-not-keep" not in raw


def test_each_message_is_stored_once_and_a_turn_writes_only_what_is_new(tmp_path: Path) -> None:
    """Storage linear in what is new: a turn adds its two messages, its request a row of references."""
    with LogStore.open(log_path(tmp_path)) as store:
        cid = store.start_conversation(model="m", endpoint="e")
        writer = Scripted(store, cid)
        counts = []
        for turn in range(1, 41):
            writer.turn(turn, "t")
            counts.append(store._db.execute(
                "SELECT (SELECT count(*) FROM texts), (SELECT count(*) FROM params),"
                " (SELECT count(*) FROM entries)"
            ).fetchone())
        assert counts[-1] == (80, 1, 80)  # 40 user messages and 40 replies, once each; one set of params
        assert all(b[0] - a[0] == 2 for a, b in zip(counts, counts[1:], strict=False))
        refs = store._db.execute("SELECT refs FROM requests WHERE turn = 40").fetchone()[0]
        assert refs == "1-79"  # the 79 messages the request sent, as one run of references
        assert store.bodies(cid, 40) == [dumps(make_turn(40, "t").requests[0])]


def test_a_write_after_another_chats_write_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    with LogStore.open(log_path(tmp_path)) as store:
        cid = store.start_conversation(model="m", endpoint="e")
        first, second = Scripted(store, cid), Scripted(store, cid)
        first.turn(1, "alpha")
        with pytest.raises(Conflict):
            second.turn(1, "bravo")  # it read the conversation before alpha's turn: it must not overwrite it
        assert [t.reply for t in store.turns(cid)] == ["alpha answer 1"]
        assert [m["content"] for m in store.messages(cid)] == ["alpha question 1", "alpha answer 1"]
        assert store.search("bravo") == []
        assert store.head(cid) == first.head == 1
    assert integrity(log_path(tmp_path)) == ("ok", "ok")


def test_a_write_for_an_unknown_conversation_or_not_json_is_refused(tmp_path: Path) -> None:
    with LogStore.open(log_path(tmp_path)) as store:
        cid = store.start_conversation(model="m", endpoint="e")
        with pytest.raises(LogError) as error:
            Scripted(store, "nosuchid").turn(1, "x")
        assert "no conversation 'nosuchid'" in one_line(error)
        bad = dataclasses.replace(make_turn(1, "x"), requests=({"body": object()},))
        with pytest.raises(LogError) as error:
            Scripted(store, cid).write(conversation_at(1, "x"), turn=bad)
        assert "cannot write the conversation log" in one_line(error)
        assert store.turns(cid) == [] and store.messages(cid) == [] and store.restore(cid) is None
        assert store.latest() is None  # a conversation with nothing written has nothing to resume
        assert isinstance(error.value, ChatError) and error.value.exit_code == 1


# ---- ids, find, latest ------------------------------------------------------------------------


def test_ids_are_short_unique_and_sort_by_start_time(tmp_path: Path) -> None:
    with LogStore.open(log_path(tmp_path)) as store:
        times = [T0 + timedelta(minutes=m) for m in (30, 0, 10, 20)]
        ids = [store.start_conversation(model="m", endpoint="e", started=t) for t in times]
        same = [store.start_conversation(model="m", endpoint="e", started=T0) for _ in range(20)]
        assert all(len(cid) == 13 and cid.isalnum() and cid == cid.lower() for cid in ids + same)
        assert len(set(ids + same)) == len(ids) + len(same)
        assert [cid for _, cid in sorted(zip(times, ids, strict=True))] == sorted(ids)
        assert all(cid[:9] == same[0][:9] for cid in same)  # the time part: same millisecond

        assert store.find(ids[0]) == ids[0]
        assert store.find(ids[0][:11].upper()) == ids[0]  # case and length of the prefix do not matter
        with pytest.raises(LogError) as error:
            store.find(same[0][:9])
        assert "is ambiguous" in one_line(error)
        with pytest.raises(LogError) as error:
            store.find("zzzzzzzz")
        assert "no conversation 'zzzzzzzz'" in one_line(error)
        for blank in ("", "   "):
            with pytest.raises(LogError):
                store.find(blank)
        with pytest.raises(LogError) as error:
            store.find("%\n_")  # no LIKE wildcards, and the message stays one line
        one_line(error)


def test_latest_and_the_list_follow_activity(tmp_path: Path) -> None:
    with LogStore.open(log_path(tmp_path)) as store:
        assert store.latest() is None and store.conversations() == []
        old = store.start_conversation(model="m", endpoint="e", started=T0)
        new = store.start_conversation(model="m", endpoint="e", started=T0 + timedelta(hours=1))
        older = Scripted(store, old)
        older.turn(1, "old", at=T0 + timedelta(minutes=1))
        Scripted(store, new).turn(1, "new", at=T0 + timedelta(hours=1, minutes=1))
        assert store.latest() == new
        older.turn(2, "old", at=T0 + timedelta(hours=2))
        assert store.latest() == old  # the conversation resumed last is the one -c resumes
        empty = store.start_conversation(model="m", endpoint="e", started=T0 + timedelta(hours=3))
        assert store.latest() == old  # it has nothing to restore yet
        rows = store.conversations()
        assert [r.id for r in rows] == [empty, old, new]
        assert [(r.turns, r.first_line) for r in rows] == [
            (0, ""), (2, "old question 1"), (1, "new question 1")]
        assert [r.id for r in store.conversations(limit=1)] == [empty]


# ---- privacy ----------------------------------------------------------------------------------


def test_the_file_and_its_wal_sidecars_are_private_even_under_umask_0(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    previous = os.umask(0)
    try:
        store = LogStore.open(path)
    finally:
        os.umask(previous)
    try:
        cid = store.start_conversation(model="m", endpoint="e")
        Scripted(store, cid).turn(1, "private")
        names = sorted(p.name for p in path.parent.iterdir())
        assert names == [DEFAULT_NAME, f"{DEFAULT_NAME}-shm", f"{DEFAULT_NAME}-wal"]
        for name in names:
            assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


# ---- two writers ------------------------------------------------------------------------------


def test_two_processes_log_fifty_turns_each_into_one_file_at_once(tmp_path: Path) -> None:
    path = log_path(tmp_path)  # neither process finds a file: both create and migrate it at once
    signals = tmp_path / "signals"
    signals.mkdir()
    workers = {
        tag: subprocess.Popen([sys.executable, str(WORKER), "log", str(path), "50", tag, str(signals)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for tag in ("w1", "w2")
    }
    deadline = time.monotonic() + 60
    while not all((signals / f"{tag}.ready").exists() for tag in workers):
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.01)
    (signals / "go").touch()
    cids = {}
    for tag, worker in workers.items():
        out, err = worker.communicate(timeout=100)
        assert worker.returncode == 0, err
        cids[tag] = out.strip()

    assert integrity(path) == ("ok", "ok")
    with LogStore.open(path) as store:
        assert sorted(r.id for r in store.conversations()) == sorted(cids.values())
        for tag, cid in cids.items():
            assert [t.turn for t in store.turns(cid)] == list(range(1, 51))
            assert [t.reply for t in store.turns(cid)][-1] == f"{tag} answer 50"
            restored = store.restore(cid)
            assert restored is not None and restored.conversation == conversation_at(50, tag)
            assert store.bodies(cid, 50) == [dumps(make_turn(50, tag).requests[0])]
            assert store.token_totals(cid).prompt_tokens == sum(10 * t for t in range(1, 51))
            [hit] = store.search(f'"{tag} question 50"')
            assert (hit.cid, hit.message_id) == (cid, 99)


# ---- files that cannot be used ----------------------------------------------------------------


def fresh_log(path: Path, turns: int = 3) -> str:
    with LogStore.open(path) as store:
        cid = store.start_conversation(model="m", endpoint="e")
        writer = Scripted(store, cid)
        for turn in range(1, turns + 1):
            writer.turn(turn, "kept")
    return cid


@pytest.mark.skipif(not MODES_ENFORCED, reason="root writes through modes; the mode=ro test stands in")
def test_a_read_only_file_is_refused_at_open(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    fresh_log(path)
    path.chmod(0o400)
    with pytest.raises(LogError) as error:
        LogStore.open(path)
    assert str(path) in one_line(error)


@pytest.mark.skipif(not MODES_ENFORCED, reason="root writes through modes; the mode=ro test stands in")
def test_a_read_only_directory_is_refused_at_open(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.parent.chmod(0o500)
    try:
        with pytest.raises(LogError) as error:
            LogStore.open(path)
        assert "Permission denied" in one_line(error)
    finally:
        path.parent.chmod(0o700)


def test_a_read_only_database_is_refused_at_open_simulated_with_sqlite_mode_ro(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same refusal through SQLite's own read-only mode, which holds for root too."""
    path = log_path(tmp_path)
    cid = fresh_log(path)

    def read_only(target: Path) -> sqlite3.Connection:
        return sqlite3.connect(f"{target.as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=1)

    monkeypatch.setattr(logstore, "_connect", read_only)
    with pytest.raises(LogError) as error:
        LogStore.open(path)
    text = one_line(error)
    assert text.startswith(f"cannot open the conversation log {path}: attempt to write a readonly database")
    monkeypatch.undo()
    with LogStore.open(path) as store:
        assert len(store.turns(cid)) == 3


def test_an_unusable_location_is_refused_at_open(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(LogError) as error:
        LogStore.open(blocker / "stateless-chat" / DEFAULT_NAME)
    assert "cannot open the conversation log" in one_line(error)
    with pytest.raises(LogError) as error:
        LogStore.open(tmp_path)  # a directory, not a file
    one_line(error)


@pytest.mark.parametrize("size", [16, 100, 4096, 50_000])
def test_a_file_of_random_bytes_is_refused_and_left_alone(tmp_path: Path, size: int) -> None:
    path = log_path(tmp_path)
    path.parent.mkdir(parents=True)
    junk = os.urandom(size)
    path.write_bytes(junk)
    with pytest.raises(LogError) as error:
        LogStore.open(path)
    assert "damaged" in one_line(error)
    assert path.read_bytes() == junk


@pytest.mark.parametrize("keep", [0.5, 0.99, 50])
def test_a_truncated_log_is_refused_at_open(tmp_path: Path, keep: float) -> None:
    path = log_path(tmp_path)
    fresh_log(path, turns=30)
    data = path.read_bytes()
    assert len(data) > 8 * 4096 and not path.with_name(DEFAULT_NAME + "-wal").exists()
    cut = data[: int(len(data) * keep) if keep < 1 else int(keep)]
    path.write_bytes(cut)
    with pytest.raises(LogError) as error:
        LogStore.open(path)
    assert "damaged" in one_line(error)
    assert path.read_bytes() == cut


@pytest.mark.parametrize("page", [1, 2, 5, 12, -1])
def test_a_damaged_page_is_a_one_line_error_at_open_or_at_use(tmp_path: Path, page: int) -> None:
    """Damage inside the file (not its length) is found when SQLite reaches it: whatever is
    reached, the caller gets a LogError of one line, never an sqlite3 exception."""
    path = log_path(tmp_path)
    cid = fresh_log(path, turns=30)
    data = bytearray(path.read_bytes())
    pages = len(data) // 4096
    start = (page % pages) * 4096
    data[start + 8: start + 4096] = random.Random(page).randbytes(4096 - 8)
    path.write_bytes(bytes(data))
    try:
        store = LogStore.open(path)
    except LogError as error:
        assert "\n" not in str(error)
        return
    calls: list[Callable[[], object]] = [
        lambda: store.turns(cid), lambda: store.messages(cid), lambda: store.restore(cid),
        lambda: store.bodies(cid, 30), lambda: store.events(cid),
        lambda: store.conversations(), lambda: store.latest(), lambda: store.search("kept question"),
        lambda: store.recall(cid, "kept answer", among=range(100)), lambda: store.token_totals(cid),
        lambda: Scripted(store, cid, head=30).turn(31, "kept"),
        lambda: store.start_conversation(model="m", endpoint="e"), lambda: store.delete([cid]),
    ]
    try:
        for call in calls:
            try:
                call()
            except LogError as error:
                assert "\n" not in str(error)
    finally:
        store.close()


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (text TEXT)")
    db.commit()
    db.close()
    with pytest.raises(LogError) as error:
        LogStore.open(path)
    assert "not a conversation log" in one_line(error)


def test_a_schema_newer_than_this_code_is_refused_and_untouched(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    fresh_log(path)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    db.commit()
    db.close()
    with pytest.raises(LogError) as error:
        LogStore.open(path)
    assert f"schema version {SCHEMA_VERSION + 7}, newer than this stateless-chat reads" in one_line(error)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 7
    db.close()


def test_a_failed_write_leaves_what_was_logged_before(tmp_path: Path) -> None:
    """A second process whose disk is 'full' (a file-size limit, so root cannot write past it
    either) fails to log a large turn: one line, and the earlier turns are intact."""
    path = log_path(tmp_path)
    cid = fresh_log(path)
    done = subprocess.run([sys.executable, str(WORKER), "fill", str(path), cid, "4"],
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 3, done.stdout + done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith(f"cannot write the conversation log {path}: ")

    assert integrity(path) == ("ok", "ok")
    with LogStore.open(path) as store:
        assert [t.reply for t in store.turns(cid)] == ["kept answer 1", "kept answer 2", "kept answer 3"]
        restored = store.restore(cid)
        assert restored is not None and restored.conversation == conversation_at(3, "kept")
        assert store.search("big") == []
        writer = Scripted(store, cid, head=restored.head)
        writer.mirror.prime(restored.placed, restored.conversation, restored.next_pos)
        writer.turn(4, "kept")  # and the log goes on
        assert len(store.turns(cid)) == 4


# ---- migrations -------------------------------------------------------------------------------


def test_a_version_1_log_is_migrated_keeping_all_its_data(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    path.parent.mkdir(parents=True)
    cid = build_v1(path)
    with LogStore.open(path) as store:
        turns = store.turns(cid)
        assert [(t.turn, t.reply, t.model) for t in turns] == [
            (1, "old answer 1", "test-model"), (2, "old answer 2", "test-model"),
            (3, "old answer 3", "test-model")]
        assert [store.bodies(cid, n) for n in (1, 2, 3)] == [
            [json.dumps(v1_turn(n)[0], separators=(",", ":"))] for n in (1, 2, 3)]
        assert [(t.prompt_tokens, t.completion_tokens, t.cached_tokens) for t in turns] == [
            (100, 10, None), (None, None, None), (300, 30, 200)]
        assert store.token_totals(cid) == logstore.TokenTotals(3, 400, 40, 200)
        assert [{k: v for k, v in m.items() if k != "slot"} for m in store.messages(cid)] == [
            {k: v for k, v in m.items() if k != "eviction"} for m in v1_turn(3)[2]]
        restored = store.restore(cid)
        assert restored is not None and [e.content for e in restored.conversation.history] == [
            m["content"] for m in v1_turn(3)[2]]
        assert [t.estimated_prompt_tokens for t in restored.ledger.turns] == [10, 20, 30]
        assert store.latest() == cid and store.find("0000old") == cid
        assert [h.message_id for h in store.search('"old question 2"')] == [3]
        writer = Scripted(store, cid, head=restored.head)
        writer.mirror.prime(restored.placed, restored.conversation, restored.next_pos)
        writer.turn(4, "old")
        assert store.token_totals(cid).prompt_tokens == 440

    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental: logs rm gives space back
    db.close()
    assert integrity(path) == ("ok", "ok")


V3_ROWS = Path(__file__).resolve().parent / "data" / "v3log.sql"


def load_v3(path: Path) -> dict[tuple[str, int], tuple[str, str | None]]:
    """Make a version 3 log at ``path`` from ``tests/data/v3log.sql`` (rows a version 3 stateless-chat
    logged in real chats, see tests/data/make_v3_log.py); return each turn's request and earlier
    requests as the text the file holds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    for migration in logstore.MIGRATIONS[:3]:
        logschema.run(db, migration)
    db.executescript(V3_ROWS.read_text(encoding="utf-8", errors="surrogatepass"))
    db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    sent = {(cid, turn): (request, earlier)
            for cid, turn, request, earlier in db.execute("SELECT cid, turn, request, earlier FROM turns")}
    db.close()
    return sent


def test_every_body_of_a_migrated_log_rebuilds_to_the_exact_json_that_was_sent(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    sent = load_v3(path)
    old = sqlite3.connect(path)
    snapshots = {cid: json.loads(text) for cid, text in old.execute(
        "SELECT id, snapshot FROM conversations WHERE snapshot IS NOT NULL")}
    old_messages = old.execute("SELECT cid, id, data FROM messages ORDER BY cid, id").fetchall()
    old.close()
    assert len(sent) >= 30 and any(earlier for _, earlier in sent.values())
    with LogStore.open(path) as store:
        for (cid, turn), (request, earlier) in sent.items():
            bodies = store.bodies(cid, turn)
            assert bodies[-1] == request, (cid, turn)  # byte for byte
            assert ("[" + ",".join(bodies[:-1]) + "]" if earlier else None) == earlier
        # stored in parts, not as the old copies: every message once, a request as references
        parts = store._db.execute("SELECT count(*) FROM requests WHERE raw IS NULL").fetchone()[0]
        assert parts >= len(sent) - 1
        for cid, snapshot in snapshots.items():  # what -c continued before is what it continues now
            restored = store.restore(cid)
            assert restored is not None and restored.problems == ()
            saved = persist.from_data(snapshot)
            assert restored.conversation == saved.conversation and restored.ledger == saved.ledger
            assert restored.settings == snapshot.get("settings", {})
        kept = {(cid, m["id"]): m for cid in snapshots for m in store.messages(cid)}
        for cid, number, data in old_messages:  # every message, in its latest state
            if cid in snapshots:
                old_data = {k: v for k, v in json.loads(data).items() if (k, v) != ("eviction", None)}
                assert {k: v for k, v in kept[(cid, number)].items() if k != "slot"} == old_data
        assert store.search("heron") and store.search('"launch code"')
    assert integrity(path) == ("ok", "ok")


def test_a_new_log_and_a_migrated_one_have_the_same_schema(tmp_path: Path) -> None:
    old, new, v3 = tmp_path / "old.db", tmp_path / "new.db", tmp_path / "v3" / "v3.db"
    build_v1(old)
    load_v3(v3)
    for path in (old, new, v3):
        LogStore.open(path).close()

    def schema(path: Path) -> list[tuple[str, str]]:
        db = sqlite3.connect(path)
        try:
            return db.execute("SELECT name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_stat%' "
                              "ORDER BY name").fetchall()
        finally:
            db.close()

    assert schema(old) == schema(new) == schema(v3)


# ---- search and recall ------------------------------------------------------------------------

CORPUS = [
    ("user", "the launch code is 7491, keep it safe"),
    ("assistant", "Noted. I will keep it safe."),
    ("user", "what is the weather like in Paris?"),
    ("assistant", "Sunny and warm in Paris today."),
    ("user", "can you review my code?"),
    ("assistant", "Sure, paste it here."),
    ("user", "tell me a joke about chickens"),
    ("assistant", "Why did the chicken cross the road?"),
    ("user", "let us talk about rockets and orbits"),
    ("assistant", "Rockets launch from Cape Canaveral."),
]


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[LogStore, str, str]:
    """Return an open log with two conversations: CORPUS (five turns), and an unrelated one."""
    store = LogStore.open(log_path(tmp_path))
    cid = store.start_conversation(model="m", endpoint="e", started=T0)
    entries = [entry(i, (i + 1) // 2, role, text) for i, (role, text) in enumerate(CORPUS, start=1)]
    entries.append(entry(11, 6, "assistant", None,
                         tool_calls=(ToolCall("c1", "lookup_orbit", '{"body": "Europa"}'),)))
    writer = Scripted(store, cid)
    for turn in range(1, 7):
        upto = tuple(e for e in entries if e.turn <= turn)
        writer.write(Conversation(history=upto, next_id=upto[-1].id + 1, next_turn=turn + 1))
    other = store.start_conversation(model="m", endpoint="e", started=T0 + timedelta(hours=1))
    Scripted(store, other).write(Conversation(history=(
        entry(1, 1, "user", "the launch code for the other project is 1234"),
        entry(2, 1, "assistant", "Filed under other launch codes."),
    ), next_id=3, next_turn=2))
    return store, cid, other


def test_search_finds_the_planted_message_and_marks_the_match(corpus: tuple[LogStore, str, str]) -> None:
    store, cid, other = corpus
    hits = store.search("launch code")  # every word, any order: "codes" and "rockets launch" do not match
    assert [(h.cid, h.message_id) for h in hits] == [(cid, 1), (other, 1)]  # the shorter message first
    planted = next(h for h in hits if (h.cid, h.message_id) == (cid, 1))
    assert planted.snippet == "the [launch] [code] is 7491, keep it safe"
    assert (planted.role, planted.turn) == ("user", 1)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all("7491" not in h.snippet for h in hits if h.cid == other)

    assert [(h.cid, h.message_id) for h in store.search("launch code", cid=cid)] == [(cid, 1)]
    assert [h.message_id for h in store.search("7491")] == [1]
    assert {(h.cid, h.message_id) for h in store.search('"launch code"')} == {(cid, 1), (other, 1)}
    assert {h.message_id for h in store.search("rocket*", cid=cid)} == {9, 10}
    assert [h.message_id for h in store.search("europa")] == [11]  # tool call arguments are indexed
    assert [h.message_id for h in store.search("lookup_orbit")] == [11]  # and tool names
    assert {h.message_id for h in store.search("PARIS", cid=cid)} == {3, 4}
    assert len(store.search("the", limit=3)) == 3
    assert store.search("launch code", cid="nosuchid") == []


@pytest.mark.parametrize("query", [
    '"', '""', "*", "**", "NEAR(", "NEAR(a b", "a OR", "OR", "AND NOT", "NOT launch", "(launch", "launch)",
    "launch:code", "body:launch", "{body}: launch", "^launch", "-launch", "+launch", "launch*code", '"launch',
    'launch"code', "'launch'", "\\", "\x00launch", "launch\x00code", "ünïcödé", "日本語のテキスト",
    "🚀 launch",
    "a" * 5000, " ".join(["launch"] * 500), "\u200b", "l\u0301aunch", "launch \udcff code", "\ud800",
])
def test_hostile_search_queries_never_reach_the_user_as_syntax_errors(
    corpus: tuple[LogStore, str, str], query: str
) -> None:
    store, _, _ = corpus
    try:
        hits = store.search(query)
    except LogError as error:
        assert "search needs a word" in str(error) and "\n" not in str(error)
    else:
        assert isinstance(hits, list)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(st.characters() | st.integers(0xD800, 0xDFFF).map(chr), max_size=40))  # lone halves too
def test_any_text_is_a_safe_query(corpus: tuple[LogStore, str, str], query: str) -> None:
    store, cid, _ = corpus
    try:
        store.search(query)
    except LogError as error:
        assert "\n" not in str(error)
    assert isinstance(store.recall(cid, query, among=range(1, 12)), list)


@pytest.mark.parametrize("query", ["", "   ", '"', "* ** ***", "\x00\x01", "-- !! ??"])
def test_a_search_with_nothing_to_look_for_is_a_one_line_error(
    corpus: tuple[LogStore, str, str], query: str
) -> None:
    store, _, _ = corpus
    with pytest.raises(LogError) as error:
        store.search(query)
    assert "search needs a word" in one_line(error)


def test_recall_ranks_the_evicted_messages_by_relevance(corpus: tuple[LogStore, str, str]) -> None:
    store, cid, _ = corpus
    evicted = range(1, 12)
    hits = store.recall(cid, "What was the launch code again?", among=evicted)
    assert hits[0].message_id == 1 and hits[0].turn == 1
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.score > MIN_RECALL_SCORE for h in hits)
    assert {h.message_id for h in hits} <= {1, 5, 10}  # launch or code; never the other conversation's

    assert [h.message_id for h in store.recall(cid, "weather in Paris?", among=evicted)] == [3, 4]
    assert [h.message_id for h in store.recall(cid, "Europa", among=evicted)] == [11]
    assert store.recall(cid, "what is the", among=evicted) == []  # stop words only
    assert store.recall(cid, "what did I tell you earlier?", among=evicted) == []
    assert store.recall(cid, "zebra", among=evicted) == []
    assert store.recall(cid, "launch code", among=[]) == []
    assert 1 not in {h.message_id for h in store.recall(cid, "launch code", among=[2, 3, 5, 10])}
    assert len(store.recall(cid, "launch code rockets paris", among=evicted, limit=2)) == 2
    assert store.recall(cid, "launch code", among=evicted, min_score=1e9) == []
    assert store.recall("nosuchid", "launch code", among=evicted) == []


def test_recall_query_keeps_content_words_and_drops_stop_words() -> None:
    assert logstore.recall_query("What was the Launch CODE? the code!") == '"launch" OR "code"'
    assert logstore.recall_query("what is the") is None
    assert logstore.recall_query('a "quoted" NEAR(xy) OR y') == '"quoted" OR "near" OR "xy"'
    # Lone letters and digits are what any version or list has: "3.8" is "3" and "8" to the index.
    assert logstore.recall_query("stuck on Python 3.8, item 12") == '"stuck" OR "python" OR "item" OR "12"'
    assert logstore.search_query('launch "code 7491" laun* OR "') == '"launch" "code 7491" "laun"* "OR"'


# ---- what the wiring needs (stateless_chat/journal.py) ----------------------------------------


def test_a_turn_of_several_requests_keeps_them_all_in_order(tmp_path: Path) -> None:
    store = LogStore.open(log_path(tmp_path))
    cid = store.start_conversation(model="m", endpoint="e")
    writer = Scripted(store, cid)
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    steps = ({"model": "m", "messages": [{"role": "user", "content": "step 1"}]},
             {"model": "m", "messages": [{"role": "user", "content": "step 1"},
                                         {"role": "assistant", "content": None, "tool_calls": call},
                                         {"role": "tool", "content": "done", "tool_call_id": "c1"}],
              "tools": [{"type": "function", "function": {"name": "f"}}]})
    first = make_turn(1, "t")
    writer.write(conversation_at(1, "t"), turn=dataclasses.replace(first, requests=(*steps, *first.requests)))
    writer.turn(2, "t")
    assert store.bodies(cid, 1) == [dumps(body) for body in (*steps, *first.requests)]
    assert store.bodies(cid, 2) == [dumps(make_turn(2, "t").requests[0])]
    assert store.bodies(cid, 3) == []
    assert [t.steps for t in store.turns(cid)] == [3, 1]
    store.close()


def test_messages_are_written_without_a_turn_and_one_conversation_is_listed(tmp_path: Path) -> None:
    """What recall needs of a conversation no turn has carried yet (one loaded from a file): its
    messages, searchable, and nothing to continue until a turn or an edit says what it is."""
    store = LogStore.open(log_path(tmp_path))
    cid = store.start_conversation(model="m", endpoint="e", started=T0)
    entries = (entry(1, 1, "user", "the launch code is 7491"), entry(2, 1, "assistant", "ok"),
               *(entry(n, n // 2, "user", f"filler {n}") for n in range(3, 12)))
    head = store.write(cid, Change(Mirror().delta(Conversation(history=entries))), head=0)
    assert [h.message_id for h in store.recall(cid, "launch code?", among=range(1, 12))] == [1]
    assert store.turns(cid) == [] and head == 1
    [row] = store.conversations(cid=cid)
    assert (row.id, row.turns, row.first_line) == (cid, 0, "the launch code is 7491")
    assert store.conversations(cid="nosuchid") == []
    with pytest.raises(LogError, match="no conversation 'nosuchid'"):
        store.write("nosuchid", Change(), head=0)
    store.close()


def test_a_log_in_memory_searches_like_one_on_disk(tmp_path: Path) -> None:
    store = LogStore.memory()
    cid = store.start_conversation(model="", endpoint="")
    entries = tuple(entry(i, (i + 1) // 2, role, text) for i, (role, text) in enumerate(CORPUS, start=1))
    store.write(cid, Change(Mirror().delta(Conversation(history=entries))), head=0)
    assert store.recall(cid, "What was the launch code again?", among=range(1, 11))[0].message_id == 1
    assert store.search("paris", cid=cid)[0].message_id in (3, 4)
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_an_entry_read_back_the_fast_way_equals_one_built_the_usual_way() -> None:
    """Reading -c back builds plain entries without the dataclasses' __init__ (logrows.entry_fast): the
    result must be the same value, or the fast way must step aside."""
    from stateless_chat.store.logrows import entry_fast, entry_from_row

    rows = [
        (7, 3, "turn", "evicted", 12, 1, None, 40, "stop", "dropped", 9, "user", "hello there", None, None,
         None, None, 0),
        (8, 3, "file", "history", 13, 0, "/tmp/x.txt", 5, None, None, None, "user", "a file", None, None,
         None, None, 1),
        (9, 3, "turn", "history", 14, 0, None, 5, None, None, None, "tool", "4", None, None, "call_1", None,
         0),
    ]
    for row in rows:
        fast, usual = entry_fast(row, {}), entry_from_row(row, {})
        assert fast is not None and fast == usual and hash(fast) == hash(usual) and repr(fast) == repr(usual)
        assert dataclasses.replace(fast, pinned=True) == dataclasses.replace(usual, pinned=True)
    odd = [(1, 1, "turn", "history", 0, 0, None, 5, None, None, None, "assistant", None, None,
            '[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]', None, None, 0),
           (2, 1, "turn", "history", 0, 0, None, 5, None, None, None, "robot", "x", None, None, None, None,
            0),
           (3, 1, "turn", "history", 0, 0, None, 5, None, None, None, "user", b"bytes", None, None, None,
            None, 0)]
    assert [entry_fast(row, {}) for row in odd] == [None, None, None]  # the careful way reads these


def test_a_log_another_chat_creates_at_the_same_moment_is_opened_not_refused(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch
                                                                           ) -> None:
    """Two chats starting at once with no log yet: both find no file, one creates it first; the other's
    exclusive create fails (``File exists``), and it must use the file the first one made."""
    from stateless_chat.store import logopen

    path = log_path(tmp_path)
    real_open = os.open

    def the_other_chat_first(name: os.PathLike[str] | str, flags: int, mode: int = 0o777) -> int:
        if Path(name) == path and flags & os.O_EXCL and not path.exists():
            os.close(real_open(path, os.O_RDWR | os.O_CREAT, 0o600))  # the other chat's create
        return real_open(name, flags, mode)

    monkeypatch.setattr(logopen.os, "open", the_other_chat_first)
    assert logopen.make_private(path, create=True) == []
    monkeypatch.undo()
    with LogStore.open(path) as store:  # and it is a log like any other
        assert store.latest() is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
