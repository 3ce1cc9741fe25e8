"""The conversation log wired to the chat: every turn logged, two chats at once, a damaged, read-only
or full log, a first-version log continued, -c/--cid, `stateless-chat logs`, recall and /save safety.

Real SQLite files in temporary directories, real servers on loopback (tests/fakeserver.py) and
the real openai client throughout; the CLI runs in this process (CliRunner) or as a real child.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.chat.session import Session, TurnRecord
from stateless_chat.core.ledger import TurnStats
from stateless_chat.core.messages import Recalled, describe
from stateless_chat.errors import ServerError
from stateless_chat.store import journal, persist
from stateless_chat.store.journal import Journal
from stateless_chat.store.logcodec import dumps
from stateless_chat.store.logstore import DEFAULT_NAME, LogStore
from stateless_chat.wire.backend import Reply
from tests.fakeserver import FakeServer, is_summary_request
from tests.oldlog import build_v1
from tests.support import attach_journal, integrity, make_session, run_cli, run_process, run_repl

WORKER = Path(__file__).resolve().parent / "journal_worker.py"
KEY = "sk-test-secret-key-0123456789"
ESCAPES = "\x1b[2J\x1b]52;c;aGFjaw==\x07\x1b]0;title\x07\x9b31m"


def log_file(tmp_path: Path) -> Path:
    """Where the CLI logs in these tests: the default path under the test's XDG_DATA_HOME."""
    return tmp_path / "data" / "stateless-chat" / DEFAULT_NAME


def logged(server: FakeServer, tmp_path: Path, **settings: Any) -> tuple[Session, Journal, list[str]]:
    """Return a session talking to ``server`` whose journal logs into ``tmp_path/logs.db``, and the
    list its warnings go to."""
    session = make_session(server, **settings)
    warnings: list[str] = []
    log = attach_journal(session, tmp_path / "logs.db", warn=warnings.append)
    assert log.logging and warnings == []
    return session, log, warnings


def words(n: int, tag: str) -> str:
    return f"Turn {n} about {tag}: " + "rivers mountains valleys forests meadows " * 8


# ---- the log --------------------------------------------------------------------------------


def test_every_turn_is_logged_as_sent_with_reply_usage_cache_events_and_messages(
    server: FakeServer, tmp_path: Path
) -> None:
    server.cache_dialect = "openai"
    server.cache_min, server.cache_step = 0, 1
    session, log, warnings = logged(server, tmp_path, api_key=KEY, system="Be brief.", budget=700,
                                    reply_reserve=100)
    events: list[Any] = []
    session.hooks = replace(session.hooks, on_event=events.append)
    for n in range(1, 9):
        session.send(words(n, "hills"))
    session.pin(session.conversation.history[-2].id)
    session.send("and one more")
    assert warnings == [] and log.cid is not None and session.conversation.evicted

    with LogStore.open(tmp_path / "logs.db") as store:
        turns = store.turns(log.cid)
        assert [t.turn for t in turns] == list(range(1, 10))
        chat = [r for r in server.requests if not is_summary_request(r)]
        bodies = [store.bodies(log.cid, t.turn) for t in turns]
        assert [json.loads(b) for [b] in bodies] == chat  # the exact bodies, as the server received them
        assert [b for [b] in bodies] == [dumps(body) for body in chat]  # byte for byte as logged
        assert [t.reply for t in turns] == [e.content for e in session.conversation.all_entries()
                                            if e.role == "assistant"][-9:]
        assert all(t.finish_reason == "stop" for t in turns)
        ledger = session.ledger.turns
        assert [(t.prompt_tokens, t.completion_tokens, t.cached_tokens) for t in turns] == [
            (s.reported_prompt_tokens, s.reported_completion_tokens, s.reported_cached_tokens)
            for s in ledger]
        assert any(t.cached_tokens for t in turns)
        told = [describe(e) for e in events]
        assert [line for t in turns for line in t.events] == told
        assert any(line.startswith("evicted #") for line in told)
        # every message in its latest state, evicted ones with their records
        entries = sorted(session.conversation.all_entries(), key=lambda e: e.id)
        messages = store.messages(log.cid)
        assert [{k: v for k, v in m.items() if k != "slot"} for m in messages] == [
            persist.entry_data(e) for e in entries]
        assert any(m.get("eviction") for m in messages) and any(m.get("pinned") and m["id"] for m in messages)
        restored = store.restore(log.cid)
        assert restored is not None
        assert restored.conversation == session.conversation and restored.ledger == session.ledger
        assert [t.seconds is not None and t.seconds > 0 for t in turns] == [True] * 9
        assert store.latest() == log.cid
    for name in os.listdir(tmp_path):  # the key travels in a header: never in the log or its sidecars
        if name.startswith("logs.db"):
            assert KEY.encode() not in (tmp_path / name).read_bytes()


def test_a_turn_of_several_requests_logs_them_all_in_order(server: FakeServer, tmp_path: Path) -> None:
    """A tool loop sends several requests in one turn (issue 13): the observer gets them all."""
    session, log, _ = logged(server, tmp_path)
    session.send("first")
    stats = session.ledger.turns[-1]
    bodies = ({"model": "m", "messages": [{"role": "user", "content": "step 1"}]},
              {"model": "m", "messages": [{"role": "user", "content": "step 2"}]})
    answered = Reply(bodies[-1], "http://127.0.0.1:9/v1", iter(()))
    later = session.conversation.new_entry("user", "step 2", session.measure)
    conversation = session.conversation.append(later)
    ledger = session.ledger.add(dataclasses.replace(stats, turn=2))
    log(TurnRecord(2, bodies, answered, ledger.turns[-1], (), conversation, "m", ledger=ledger,
                   settings=session.settings, seconds=0.5))
    with LogStore.open(tmp_path / "logs.db") as store:
        second = store.turns(log.cid or "")[1]
        assert store.bodies(log.cid or "", 2) == [dumps(body) for body in bodies] and second.steps == 2


def test_cli_logs_by_default_at_the_xdg_path_and_not_with_no_log(server: FakeServer, tmp_path: Path) -> None:
    assert run_cli("--base-url", server.url, "--no-log", "hello").returncode == 0
    assert not log_file(tmp_path).exists()
    config = tmp_path / "off.toml"
    config.write_text("log = false\n")
    assert run_cli("--base-url", server.url, "--config", str(config), "hello").returncode == 0
    assert not log_file(tmp_path).exists()

    assert run_cli("--base-url", server.url, "hello").returncode == 0
    assert log_file(tmp_path).is_file() and (log_file(tmp_path).stat().st_mode & 0o777) == 0o600
    moved = tmp_path / "elsewhere" / "chats.db"
    config.write_text(f"log_db = {json.dumps(str(moved))}\n")
    assert run_cli("--base-url", server.url, "--config", str(config), "moved").returncode == 0
    with LogStore.open(moved) as store:
        [row] = store.conversations()
        assert row.first_line == "moved" and row.turns == 1
    with LogStore.open(log_file(tmp_path)) as store:
        assert [r.first_line for r in store.conversations()] == ["hello"]


def test_two_chats_log_into_one_file_at_once(server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "shared" / DEFAULT_NAME
    turns = 12
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    children = [subprocess.Popen([sys.executable, str(WORKER), server.url, str(path), str(turns), tag,
                                  str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env)
                for tag in ("alpha", "bravo")]
    try:
        for _ in range(6000):
            if all((tmp_path / f"{tag}.ready").exists() for tag in ("alpha", "bravo")):
                break
            if any(child.poll() is not None for child in children):
                break
            time.sleep(0.01)
        (tmp_path / "go").touch()
        outputs = [child.communicate(timeout=100) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert [child.returncode for child in children] == [0, 0], outputs
    cids = [out.strip() for out, _ in outputs]
    assert len(set(cids)) == 2
    assert integrity(path) == ("ok", "ok")
    with LogStore.open(path) as store:
        for cid, tag in zip(cids, ("alpha", "bravo"), strict=True):
            logged_turns = store.turns(cid)
            assert [t.turn for t in logged_turns] == list(range(1, turns + 1))
            assert all(json.loads(store.bodies(cid, t.turn)[-1])["messages"][-1]["content"].startswith(
                f"{tag} question {t.turn} ") for t in logged_turns)
            messages = store.messages(cid)
            assert [m["id"] for m in messages] == list(range(1, 2 * turns + 1))
            assert all(tag in m["content"] for m in messages)
            assert any(m.get("eviction") for m in messages)  # the small budget evicted
            restored = store.restore(cid)
            assert restored is not None and restored.conversation.next_turn == turns + 1


# ---- a log that cannot be used -------------------------------------------------------------


def test_a_damaged_log_is_one_line_and_the_one_shot_answer_still_comes(server: FakeServer,
                                                                       tmp_path: Path) -> None:
    path = log_file(tmp_path)
    path.parent.mkdir(parents=True)
    junk = b"SQLite format 3\x00" + bytes(range(256)) * 40
    path.write_bytes(junk)
    done = run_cli("--base-url", server.url, "still answered?")
    assert done.returncode == 0 and done.stdout == b"echo: still answered?\n"
    [line] = done.stderr.decode().splitlines()
    assert line.startswith(f"stateless-chat: cannot open the conversation log {path}: ")
    assert line.endswith("; the chat goes on without logging")
    assert path.read_bytes() == junk  # nothing touched


def test_a_damaged_log_in_the_chat_is_one_line_and_the_chat_runs(server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    path.write_bytes(b"not a database at all " * 100)
    session = make_session(server)
    warnings: list[str] = []
    log = attach_journal(session, path, warn=warnings.append)
    assert not log.logging and len(warnings) == 1 and "\n" not in warnings[0]
    run = run_repl(session, ["hello\r", "how are you\r"])
    assert "echo: how are you" in run.output and len(session.ledger.turns) == 2
    assert path.read_bytes() == b"not a database at all " * 100


def test_an_unwritable_location_is_one_line(server: FakeServer, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = tmp_path / "c.toml"
    config.write_text(f"log_db = {json.dumps(str(blocker / 'logs.db'))}\n")
    done = run_cli("--base-url", server.url, "--config", str(config), "hi")
    assert done.returncode == 0 and done.stdout == b"echo: hi\n"
    [line] = done.stderr.decode().splitlines()
    assert line.startswith(f"stateless-chat: cannot open the conversation log {blocker / 'logs.db'}: ")


def test_a_read_only_log_is_one_line_and_the_chat_runs(server: FakeServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite opened read-only (root writes through file modes, so this is how a read-only file
    looks to the log whoever runs the tests)."""
    path = tmp_path / "logs.db"
    LogStore.open(path).close()
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda where, **kw: real(f"file:{where}?mode=ro", uri=True, **kw))
    session = make_session(server)
    warnings: list[str] = []
    log = attach_journal(session, path, warn=warnings.append)
    monkeypatch.undo()
    assert not log.logging
    [line] = warnings
    assert "cannot open the conversation log" in line and "readonly" in line.lower()
    session.send("still works")


def test_a_full_disk_mid_chat_is_one_line_keeps_what_was_logged_and_the_chat_goes_on(
    server: FakeServer, tmp_path: Path
) -> None:
    assert run_process("--base-url", server.url, "first, kept", env={"XDG_DATA_HOME": str(tmp_path / "data")}
                       ).returncode == 0
    path = log_file(tmp_path)
    largest = max(32 * 1024, *(p.stat().st_size for p in path.parent.iterdir()))

    def full_disk() -> None:  # files may not grow past their size now: even root gets EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 64 * 1024, hard))

    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]), PYTHONDONTWRITEBYTECODE="1",
               XDG_DATA_HOME=str(tmp_path / "data"))
    big = "a long message " * 6_000
    done = subprocess.run([sys.executable, "-m", "stateless_chat", "--base-url", server.url, "-c"],
                          input=big.encode(), capture_output=True, env=env, preexec_fn=full_disk, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().startswith("echo: a long message")
    [line] = done.stderr.decode().splitlines()
    assert line.startswith(f"stateless-chat: cannot write the conversation log {path}: ")
    assert line.endswith("; the chat goes on without logging")
    assert integrity(path) == ("ok", "ok")
    with LogStore.open(path) as store:
        cid = store.latest()
        assert cid is not None
        assert [t.reply for t in store.turns(cid)] == ["echo: first, kept"]
    # and the log goes on once there is room: the failed turn was never logged, the next one is
    again = run_process("--base-url", server.url, "-c", "third",
                        env={"XDG_DATA_HOME": str(tmp_path / "data")})
    assert again.returncode == 0
    with LogStore.open(path) as store:
        assert [t.reply for t in store.turns(cid)] == ["echo: first, kept", "echo: third"]


def test_a_write_failing_mid_chat_turns_logging_off_and_keeps_the_turn(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, log, warnings = logged(server, tmp_path)
    session.send("one")
    real = LogStore.write

    def full(self: LogStore, *args: Any, **kwargs: Any) -> None:
        from stateless_chat.store.logopen import failure as _failure

        raise _failure(self.path, "write", sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(LogStore, "write", full)
    run = run_repl(session, ["two\r", "three\r"])
    monkeypatch.setattr(LogStore, "write", real)
    assert len(session.ledger.turns) == 3 and "echo: three" in run.output  # no turn lost
    assert not log.logging
    [line] = warnings  # once: logging is off after it
    path = tmp_path / "logs.db"
    assert line.startswith(f"cannot write the conversation log {path}: database or disk is full")
    assert line.endswith("(free some disk space); the chat goes on without logging")
    with LogStore.open(tmp_path / "logs.db") as store:
        assert [t.reply for t in store.turns(log.cid or "")] == ["echo: one"]


# ---- continue ---------------------------------------------------------------------------------


def test_continue_brings_back_history_summary_pins_and_evicted_originals(server: FakeServer,
                                                                        tmp_path: Path) -> None:
    session, log, _ = logged(server, tmp_path, policy="summarize", budget=700, reply_reserve=100,
                             system="You are terse.")
    run_repl(session, ["my name is Ada Lovelace\r", "/pin 1\r"]
             + [words(n, "lakes") + "\r" for n in range(2, 12)])
    before = session.conversation
    assert before.summary is not None and before.evicted and before.pinned_count
    again = make_session(server)
    resumed = attach_journal(again, tmp_path / "logs.db")
    restored = resumed.resume(None)
    assert restored.cid == log.cid == resumed.cid
    again.load(*journal.loadable(restored))
    assert again.conversation == before
    assert again.ledger == session.ledger and again.settings.policy == "summarize"
    assert again.settings.budget == 700
    run_repl(again, ["What is my name?\r"])
    assert server.requests[-1]["messages"][-1]["content"] == "What is my name?"
    with LogStore.open(tmp_path / "logs.db") as store:  # the same conversation goes on in the log
        assert [t.turn for t in store.turns(log.cid or "")][-1] == before.next_turn


def test_one_shot_continue_and_cid(server: FakeServer) -> None:
    assert run_cli("--base-url", server.url, "my name is Grace Hopper").returncode == 0
    assert run_cli("--base-url", server.url, "an unrelated chat").returncode == 0
    from stateless_chat.config import default_data_dir

    with LogStore.open(default_data_dir(os.environ) / DEFAULT_NAME) as store:
        first, second = [r.id for r in store.conversations()][::-1]
    done = run_cli("--base-url", server.url, "-c", stdin=b"more")
    assert done.returncode == 0
    assert [m["content"] for m in server.requests[-1]["messages"]] == [
        "an unrelated chat", "echo: an unrelated chat", "more"]
    done = run_cli("--base-url", server.url, "--cid", first[:12], stdin=b"What is my name?")
    assert done.stdout == b"Your name is Grace Hopper.\n"
    done = run_cli("--base-url", server.url, "--cid", "zzzz", "hi")
    assert done.returncode == 1 and b"no conversation 'zzzz'" in done.stderr
    done = run_cli("--base-url", server.url, "-c", "--no-log", "hi")
    assert done.returncode == 2 and b"turned off" in done.stderr
    done = run_cli("--dry-run", "-c", "next")
    assert done.returncode == 0
    sent = [m["content"] for m in json.loads(done.stdout)["messages"]]
    assert sent[-2:] == ["Your name is Grace Hopper.", "next"]


def test_continue_with_an_empty_log_is_one_line(server: FakeServer) -> None:
    done = run_cli("--base-url", server.url, "-c", "hi")
    assert done.returncode == 1 and done.stderr.decode().count("\n") == 1
    assert b"nothing to continue" in done.stderr


def test_a_first_version_log_is_migrated_and_continued(server: FakeServer, tmp_path: Path) -> None:
    path = log_file(tmp_path)
    path.parent.mkdir(parents=True)
    cid = build_v1(path)
    listed = run_cli("logs", "list")
    assert listed.stdout.decode().startswith(f"{cid}  ")
    assert "old-model  3 turns  440 tokens  -  -  old question 1" in listed.stdout.decode()
    done = run_cli("--base-url", server.url, "-c", "and now?")
    assert done.returncode == 0, done.stderr
    sent = [m["content"] for m in server.requests[-1]["messages"]]
    assert sent[:2] == ["old question 1", "old answer 1"] and sent[-1] == "and now?"
    with LogStore.open(path) as store:
        assert [t.turn for t in store.turns(cid)] == [1, 2, 3, 4]
    assert integrity(path) == ("ok", "ok")


# ---- stateless-chat logs -------------------------------------------------------------------


def test_logs_list_show_search_and_path_are_plain_and_sanitized(server: FakeServer, tmp_path: Path) -> None:
    assert run_cli("--base-url", server.url, "--budget", "300", "--max-tokens", "40",
                   f"the launch code is 7491 {ESCAPES}").returncode == 0
    for n in range(6):
        assert run_cli("--base-url", server.url, "--budget", "300", "--max-tokens", "40", "-c",
                       words(n, "coasts")).returncode == 0
    path = log_file(tmp_path)
    assert run_cli("logs", "path").stdout.decode() == f"{path}\n"
    listed = run_cli("logs", "list").stdout.decode()
    [line] = listed.splitlines()
    cid = line.split()[0]
    when = r"\d{4}-\d\d-\d\d \d\d:\d\d"
    # The escapes are gone from the first line, and so is any leftover of them.
    assert re.fullmatch(rf"{cid}  {when}  gpt-4o-mini  7 turns  [\d,]+ tokens  \$[\d.]+  [\d.]+ s  "
                        "the launch code is 7491", line)
    shown = run_cli("logs", "show", cid[:10]).stdout.decode()
    assert shown.startswith(f"conversation {cid} · started ")
    assert "#1 user (turn 1, evicted in turn " in shown and "    the launch code is 7491" in shown
    assert "#14 assistant (turn 7)\n" in shown
    assert "events:" in shown and re.search(r"\n    turn \d+: evicted #1-#2 \(turn 1, ", shown)
    searched = run_cli("logs", "search", "launch", "code").stdout.decode()
    assert searched.splitlines()[0].startswith(f"{cid}  #1  user  turn 1:  the [launch] [code] is 7491")
    for output in (listed, shown, searched):
        assert "\x1b" not in output and "\x07" not in output and "\x9b" not in output
    nothing = run_cli("logs", "search", "zebra")
    assert nothing.returncode == 0 and nothing.stdout == b""
    assert b"no logged message matches" in nothing.stderr
    bad = run_cli("logs", "show", "nope")
    assert bad.returncode == 1 and bad.stderr.decode().count("\n") == 1


def test_logs_before_any_chat_and_a_prompt_that_is_logs(server: FakeServer, tmp_path: Path) -> None:
    empty = run_cli("logs", "list")
    assert empty.returncode == 0 and empty.stdout == b"" and b"no conversation logged yet" in empty.stderr
    assert not log_file(tmp_path).exists()  # reading does not create the log
    sent = run_cli("--base-url", server.url, "--", "logs")
    assert sent.returncode == 0 and sent.stdout == b"echo: logs\n"
    assert run_cli("--base-url", server.url, "chat").stdout == b"echo: chat\n"  # no subcommand of that name
    assert [r["messages"][-1]["content"] for r in server.requests] == ["logs", "chat"]
    helped = run_cli("--help").stdout.decode()
    assert "Usage: stateless-chat [OPTIONS]" in helped and "stateless-chat -- logs" in helped


# ---- recall ----------------------------------------------------------------------------------


def recall_chat(server: FakeServer, tmp_path: Path, **settings: Any) -> tuple[Session, Journal]:
    values: dict[str, Any] = {"budget": 600, "reply_reserve": 100, "recall": "auto"}
    values.update(settings)
    session, log, _ = logged(server, tmp_path, **values)
    return session, log


def test_auto_recall_brings_an_evicted_fact_back_at_turn_16(server: FakeServer, tmp_path: Path) -> None:
    """The issue's end-to-end case: a fact in turn 1, evicted by drop-oldest, asked at turn 16."""
    session, _ = recall_chat(server, tmp_path)
    keys = ["Please note: the launch code is 7491.\r"] + [words(n, "weather") + "\r" for n in range(2, 16)]
    run = run_repl(session, [*keys, "What was the launch code?\r", "/history\r", "/tokens\r"])
    first = session.conversation.find(1)
    final = server.requests[-1]["messages"]
    assert final[-1]["content"] == "What was the launch code?"
    assert any("7491" in (m["content"] or "") for m in final[:-1])  # the final request carries the fact
    assert not any("7491" in (m["content"] or "") for m in server.requests[-2]["messages"])  # it was evicted
    tokens = sum(e.tokens for e in session.conversation.all_entries() if e.turn == 1)
    assert f'· recalled turn 1 ({tokens} tokens): "launch code"' in run.output
    # right before the new message, after the history the previous request sent
    assert [m["content"] for m in final[-3:-1]] == ["Please note: the launch code is 7491.",
                                                   "echo: Please note: the launch code is 7491."]
    assert first.turn == 1 and session.conversation.is_live(1)  # it stays live, where it was sent
    assert re.search(r"\b1\b.*user.*sent.*Please note", run.output)  # /history shows it again


def test_recall_stays_within_its_budget_and_off_means_off(server: FakeServer, tmp_path: Path) -> None:
    session, _ = recall_chat(server, tmp_path, recall_budget=5)
    run_repl(session, ["the launch code is 7491\r"] + [words(n, "weather") + "\r" for n in range(2, 14)]
             + ["What was the launch code?\r"])
    assert not any("7491" in (m["content"] or "") for m in server.requests[-1]["messages"])
    session.reconfigure(recall="off", recall_budget=None)
    session.send("the launch code, once more?")
    assert not any("7491" in (m["content"] or "") for m in server.requests[-1]["messages"])


def test_a_recalled_turn_is_one_copy_and_leaves_again_as_before(server: FakeServer, tmp_path: Path) -> None:
    session, _ = recall_chat(server, tmp_path)
    events: list[Any] = []
    session.hooks = replace(session.hooks, on_event=events.append)
    session.send("the launch code is 7491")
    for n in range(2, 16):
        session.send(words(n, "weather"))
    assert not session.conversation.is_live(1)
    session.send("What was the launch code?")
    session.send("The launch code again, please?")  # already live: not recalled a second time
    recalls = [e for e in events if isinstance(e, Recalled)]
    assert [e.turn for e in recalls] == [1]
    for request in server.requests[-2:]:
        assert sum("7491" in (m["content"] or "") for m in request["messages"]) == 2  # question and echo
    for n in range(16, 40):
        session.send(words(n, "weather"))
        if not session.conversation.is_live(1):
            break
    entry = session.conversation.find(1)
    assert entry.eviction is not None and entry.eviction.how == "dropped"  # evicted again, as any turn
    ids = [e.id for e in session.conversation.all_entries()]
    assert len(ids) == len(set(ids))  # one copy


def test_recall_command_lists_matches_and_brings_a_turn_back(server: FakeServer, tmp_path: Path) -> None:
    session, _ = recall_chat(server, tmp_path, recall="off")
    run_repl(session, ["the launch code is 7491\r", "the cat is called Mog\r"]
             + [words(n, "weather") + "\r" for n in range(3, 16)])
    assert not session.conversation.is_live(1) and not session.conversation.is_live(3)
    run = run_repl(session, ["/recall launch code\r", "/recall cat\r", "/recall zebra\r", "/recall 3\r",
                             "/history\r", "/tokens\r", "/recall 3\r", "/recall\r"], width=200)
    out = run.output
    assert "turn 1 · #1-#2 · " in out and "evicted: the launch code is 7491" in out
    assert "turn 2 · #3-#4 · " in out and "no evicted turn matches 'zebra'" in out
    assert "recalled turn 2 (#3-#4, " in out
    assert re.search(r"\b3\b.*user.*recalled.*the cat is called Mog", out)
    recalled = sum(e.tokens for e in session.conversation.recalled)
    assert re.search(rf"│ recalled\s+│\s+{recalled} │", out)  # /tokens has the part
    assert "error: message #3 is still sent; only evicted messages can be recalled" in out
    assert "error: usage: /recall QUERY | N" in out
    session.send("what is the cat called?")
    sent = server.requests[-1]["messages"]
    assert [m["content"] for m in sent[-3:]] == ["the cat is called Mog", "echo: the cat is called Mog",
                                                "what is the cat called?"]


def test_recall_works_without_a_log_on_disk(server: FakeServer, tmp_path: Path) -> None:
    session = make_session(server, budget=600, reply_reserve=100, recall="auto")
    attach_journal(session, None)
    run = run_repl(session, ["the launch code is 7491\r"] + [words(n, "weather") + "\r" for n in range(2, 16)]
                   + ["What was the launch code?\r"])
    assert "recalled turn 1" in run.output
    assert any("7491" in (m["content"] or "") for m in server.requests[-1]["messages"][:-1])
    assert list(tmp_path.glob("**/*.db")) == []


def test_a_recalled_turn_survives_save_and_continue(server: FakeServer, tmp_path: Path) -> None:
    session, log = recall_chat(server, tmp_path, recall="off")
    run_repl(session, ["the launch code is 7491\r"] + [words(n, "weather") + "\r" for n in range(2, 14)]
             + ["/recall 1\r", f"/save {tmp_path / 'c.json'}\r"])
    assert session.conversation.recalled
    loaded = persist.load(tmp_path / "c.json").conversation
    assert [e.id for e in loaded.history[-2:]] == [1, 2] and 1 not in [e.id for e in loaded.evicted]


# ---- /save and /load ------------------------------------------------------------------------


def test_save_refuses_a_file_holding_another_conversation_unless_forced(server: FakeServer,
                                                                       tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    session, _, _ = logged(server, tmp_path)
    run_repl(session, ["first chat\r", f"/save {path}\r", "more of it\r", f"/save {path}\r", "/undo\r",
                       "/retry\r", f"/save {path}\r"])
    assert [e.content for e in persist.load(path).conversation.history][-1] == "echo: first chat"
    other, _, _ = logged(server, tmp_path / "b")
    run = run_repl(other, ["second chat\r", f"/save {path}\r"], width=400)
    [line] = [line for line in run.output.splitlines() if line.startswith("error:")]
    assert line == (f"error: {path} holds a different conversation (its first message: 'first chat'): not "
                    f"saved (/save {path} --force replaces it)")
    assert persist.load(path).conversation.history[0].content == "first chat"
    run_repl(other, [f"/save {path} --force\r"])
    assert persist.load(path).conversation.history[0].content == "second chat"
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    run = run_repl(other, [f"/save {notes}\r"], width=400)
    assert f"error: {notes} exists and is not a stateless-chat conversation" in run.output
    assert notes.read_text() == "my notes"


def test_load_over_an_unsaved_conversation_says_it_is_still_in_the_log(server: FakeServer,
                                                                      tmp_path: Path) -> None:
    saved = tmp_path / "saved.json"
    first, _, _ = logged(server, tmp_path / "one")
    run_repl(first, ["a saved chat\r", f"/save {saved}\r"])
    session, log, _ = logged(server, tmp_path)
    run_repl(session, ["an unsaved chat\r"])
    cid = log.cid
    assert cid is not None
    run = run_repl(session, [f"/load {saved}\r"], width=400)
    assert ("the conversation you left was not saved, and it is still in the log: "
            f"stateless-chat --cid {cid} continues it") in run.output
    run_repl(session, ["go on\r"])  # the loaded conversation is a new one in the log
    forked = log.cid
    assert forked is not None and forked != cid
    run = run_repl(session, [f"/load {saved}\r"], width=400)
    assert f"--cid {forked} continues it" in run.output
    with LogStore.open(tmp_path / "logs.db") as store:
        assert [t.reply for t in store.turns(cid)] == ["echo: an unsaved chat"]
        assert [m["content"] for m in store.messages(forked)] == [
            "a saved chat", "echo: a saved chat", "go on", "echo: go on"]
    run = run_repl(session, [f"/load {saved}\r"])  # nothing new since it was loaded: nothing to say
    assert "was not saved" not in run.output
    quiet = make_session(server)
    attach_journal(quiet, None)
    run = run_repl(quiet, ["not kept anywhere\r", f"/load {saved}\r"], width=400)
    assert "the conversation you left was not saved (and logging is off): it is gone" in run.output


def test_observers_see_each_completed_turn_once_and_failed_turns_never(server: FakeServer) -> None:
    seen: list[TurnRecord] = []
    session = make_session(server, on_turn=[seen.append])
    session.send("one")
    server.fail_next(status=400)
    with pytest.raises(ServerError):
        session.send("two")
    session.send("three")
    assert [r.turn for r in seen] == [1, 2]
    assert [r.requests[-1]["messages"][-1]["content"] for r in seen] == ["one", "three"]
    assert all(isinstance(r.stats, TurnStats) and r.reply.done for r in seen)


# ---- in a real terminal ----------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_the_chat_continues_in_a_real_terminal_and_a_damaged_log_is_one_line(server: FakeServer,
                                                                             tmp_path: Path) -> None:
    import pexpect

    from tests.support import ask, prompt_ready, spawn

    def leave(child: pexpect.spawn) -> None:
        prompt_ready(child)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0

    child = spawn(server, tmp_path, "-s", "You are terse.")
    ask(child, "Please remember my name is Byte Dai", "echo: Please remember")
    ask(child, "/pin 1", "pinned #1")
    leave(child)
    with LogStore.open(log_file(tmp_path)) as store:
        cid = store.latest()
    child = spawn(server, tmp_path, "-c")
    assert f"continuing {cid}" in child.before
    ask(child, "What is my name?", "Your name is Byte Dai.")
    ask(child, "/history", "📌")
    leave(child)
    assert server.requests[-1]["messages"][0] == {"role": "system", "content": "You are terse."}
    with LogStore.open(log_file(tmp_path)) as store:
        assert [t.turn for t in store.turns(cid or "")] == [1, 2]

    log_file(tmp_path).unlink()
    for sidecar in log_file(tmp_path).parent.glob("logs.db-*"):
        sidecar.unlink()
    log_file(tmp_path).write_bytes(b"garbage " * 1000)
    child = spawn(server, tmp_path)
    shown = " ".join(re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", child.before).split())
    assert shown.count("cannot open the conversation log") == 1  # one line (wrapped at the terminal's width)
    assert re.search(r"· cannot open the conversation log \S+: .*; the chat goes on without logging", shown)
    ask(child, "still here?", "echo: still here?")
    leave(child)
    assert log_file(tmp_path).read_bytes() == b"garbage " * 1000


def test_tool_servers_configured_are_neither_logged_nor_a_failure(server: FakeServer, tmp_path: Path) -> None:
    """The [mcp.servers] tables hold commands and environments (their keys): never in the log."""
    env = {"TIME_TOKEN": "mcp-secret-0123456789"}
    servers = {"servers": {"time": {"command": "no-such-mcp-server", "env": env}}}
    session, log, warnings = logged(server, tmp_path, mcp=servers)
    session.send("hello")
    assert warnings == [] and log.logging
    with LogStore.open(tmp_path / "logs.db") as store:
        restored = store.restore(log.cid or "")
    assert restored is not None and "mcp" not in restored.settings and restored.settings["model"]
    for name in os.listdir(tmp_path):
        if name.startswith("logs.db"):
            assert b"mcp-secret" not in (tmp_path / name).read_bytes()


def test_a_tool_loop_turn_logs_every_step_and_its_tool_lines(server: FakeServer, tmp_path: Path) -> None:
    from stateless_chat.tools.servers import ToolServers
    from stateless_chat.tools.specs import ServerConfig
    from tests.support import SERVER, calling

    servers = ToolServers({"calc": ServerConfig("calc", sys.executable, (SERVER, "--only", "add"))},
                          log_dir=tmp_path / "mcp-logs")
    assert servers.start() == []
    try:
        server.replier = calling((("add", '{"a": 2, "b": 3}'),), (("add", '{"a": 5, "b": 1}'),))
        session, log, warnings = logged(server, tmp_path)
        session.tools = servers
        session.hooks = replace(session.hooks, approve=lambda call, spec: True)
        session.send("add two and three, then one")
    finally:
        servers.stop()
    assert warnings == []
    with LogStore.open(tmp_path / "logs.db") as store:
        [turn] = store.turns(log.cid or "")
        messages = store.messages(log.cid or "")
        bodies = store.bodies(log.cid or "", 1)
    assert [json.loads(b) for b in bodies] == server.requests and turn.steps == 3  # three requests, in order
    assert turn.reply.startswith("The tools said: ")
    calls = [line for line in turn.events if line.startswith("→ ")]
    answers = [line for line in turn.events if line.startswith("← ")]
    assert len(calls) == 2 and len(answers) == 2 and '{"a": 2, "b": 3}' in calls[0]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert messages[1]["tool_calls"] and messages[2]["tool_call_id"] == messages[1]["tool_calls"][0]["id"]


def test_one_shot_continue_with_save_never_replaces_another_conversation(server: FakeServer,
                                                                        tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    assert run_cli("--base-url", server.url, "--save", str(other), "kept in a file").returncode == 0
    assert run_cli("--base-url", server.url, "logged only").returncode == 0
    before = other.read_bytes()
    done = run_cli("--base-url", server.url, "-c", "--save", str(other), "more")
    assert done.returncode == 2 and f"{other} holds a different conversation".encode() in done.stderr
    assert other.read_bytes() == before and server.requests[-1]["messages"][-1]["content"] == "logged only"
    mine = tmp_path / "mine.json"
    assert run_cli("--base-url", server.url, "-c", "--save", str(mine), "more").returncode == 0
    assert run_cli("--base-url", server.url, "-c", "--save", str(mine), "again").returncode == 0
    saved = persist.load(mine).conversation.history
    assert [e.content for e in saved][::2] == ["logged only", "more", "again"]


def test_recall_auto_flag_in_one_shot_continuation(server: FakeServer) -> None:
    """--recall auto on the command line: each one-shot -c run is one more turn of the logged chat."""
    flags = ("--base-url", server.url, "--budget", "600", "--max-tokens", "100")
    assert run_cli(*flags, "Please note: the launch code is 7491.").returncode == 0
    for n in range(2, 16):
        assert run_cli(*flags, "-c", words(n, "weather")).returncode == 0
    assert not any("7491" in m["content"] for m in server.requests[-1]["messages"])
    done = run_cli(*flags, "-c", "-v", "--recall", "auto", "What was the launch code?")
    assert done.returncode == 0
    assert re.search(r'recalled turn 1 \(\d+ tokens\): "launch code"', done.stderr.decode())
    assert any("7491" in m["content"] for m in server.requests[-1]["messages"][:-1])
    bad = run_cli(*flags, "--recall", "sometimes", "hi")
    assert bad.returncode == 2 and b"--recall must be one of off, auto" in bad.stderr
