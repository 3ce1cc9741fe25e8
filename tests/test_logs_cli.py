"""`stateless-chat logs` and the log's privacy: list, show, search, export with --json, usage, cost and
time, filters, the exact body of a turn, deleting conversations; modes tightened, links refused,
keys masked, secret-looking messages said of, a full disk, damaged rows, deep JSON, and a turn
cancelled after its tools ran.

The command line runs in this process (CliRunner) or as a real child, the chats through the fake
server and the real openai client, the log in a real SQLite file at the default path.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.config import default_data_dir
from stateless_chat.errors import ServerError
from stateless_chat.store.logcodec import dumps
from stateless_chat.store.logstore import DEFAULT_NAME, LogStore
from stateless_chat.ui import logview
from tests.fakeserver import FakeServer
from tests.support import ROOT, attach_journal, integrity, make_session, run_cli

KEY = "sk-proj-the-key-of-this-run-0123456789abcdef"


def log_path() -> Path:
    return default_data_dir(os.environ) / DEFAULT_NAME


def chats(server: FakeServer, *prompts: str, flags: tuple[str, ...] = ()) -> None:
    for index, prompt in enumerate(prompts):
        cont = ("-c",) if index else ()
        done = run_cli("--base-url", server.url, *flags, *cont, prompt)
        assert done.returncode == 0, done.stderr


# ---- querying ---------------------------------------------------------------------------------


def test_list_and_show_give_usage_cost_and_time_and_json_gives_whole_records(server: FakeServer) -> None:
    chats(server, "first question", "second question", flags=("-m", "gpt-4o"))
    chats(server, "another chat about rockets")
    listed = run_cli("logs", "list").stdout.decode().splitlines()
    assert len(listed) == 2
    money = r"\$\d+\.\d+"
    assert re.fullmatch(rf"\w{{13}}  \S+ \S+  gpt-4o-mini  1 turn  \d+ tokens  {money}  [\d.]+ s  "
                        "another chat about rockets", listed[0]), listed[0]
    assert re.fullmatch(rf"\w{{13}}  \S+ \S+  gpt-4o  2 turns  \d+ tokens  {money}  [\d.]+ s  first question",
                        listed[1]), listed[1]
    records = json.loads(run_cli("logs", "list", "--json").stdout)
    first = records[1]
    assert first["turns"] == 2 and first["model"] == "gpt-4o" and first["seconds"] > 0
    usage = first["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    price = (usage["prompt_tokens"] * 2.5 + usage["completion_tokens"] * 10) / 1e6  # gpt-4o's, $ per million
    assert first["cost_usd"] == pytest.approx(price)

    shown = json.loads(run_cli("logs", "show", first["id"], "--json").stdout)
    assert shown["conversation"] == first
    assert sum(t["prompt_tokens"] for t in shown["turns"]) == usage["prompt_tokens"]
    assert [m["content"] for m in shown["messages"]] == [
        "first question", "echo: first question", "second question", "echo: second question"]
    assert [t["turn"] for t in shown["turns"]] == [1, 2] and all(t["cost_usd"] > 0 for t in shown["turns"])
    assert shown["turns"][1]["stats"]["estimated_prompt_tokens"] > 0
    text = run_cli("logs", "show", first["id"][:8]).stdout.decode()
    assert re.search(rf"\n    turn 2 · gpt-4o · prompt \d+, completion \d+ · {money} · [\d.]+ s\n", text)


def test_a_turns_exact_body_is_printed_byte_for_byte(server: FakeServer) -> None:
    chats(server, "one", "two ünïcödé ☕", "three")
    [row] = json.loads(run_cli("logs", "list", "--json").stdout)
    for turn in (1, 2, 3):
        done = run_cli("logs", "show", row["id"], "--request", str(turn))
        assert done.stdout.decode() == dumps(server.requests[turn - 1]) + "\n"
        assert json.loads(done.stdout) == server.requests[turn - 1]
    missing = run_cli("logs", "show", row["id"], "--request", "9")
    assert missing.returncode == 2 and b"has no turn 9 logged (turns 1 to 3)" in missing.stderr
    bad = run_cli("logs", "show", row["id"], "--request", "1", "--step", "2")
    assert bad.returncode == 2 and b"--step takes 1 to 1" in bad.stderr


def test_filters_limit_since_model_and_words(server: FakeServer) -> None:
    chats(server, "about paris", flags=("-m", "gpt-4o"))
    chats(server, "about rome")
    chats(server, "about oslo", flags=("-m", "deepseek-chat"))
    def ids(*args: str) -> list[str]:
        return [r["first_line"] for r in json.loads(run_cli("logs", "list", "--json", *args).stdout or b"[]")]
    assert ids() == ["about oslo", "about rome", "about paris"]
    assert ids("-n", "2") == ["about oslo", "about rome"]
    assert ids("-m", "gpt-4o") == ["about rome", "about paris"]  # gpt-4o-mini holds gpt-4o
    assert ids("-m", "DeepSeek") == ["about oslo"]
    assert ids("-q", "rome") == ["about rome"]
    assert ids("-q", "about", "-m", "deepseek") == ["about oslo"]
    assert ids("--since", "1h") == ["about oslo", "about rome", "about paris"]
    assert ids("--since", "2999-01-01") == []
    none = run_cli("logs", "list", "-q", "zebra")
    assert none.returncode == 0 and none.stdout == b"" and b"no logged conversation matches" in none.stderr
    bad = run_cli("logs", "list", "--since", "last tuesday")
    assert bad.returncode == 2 and bad.stderr.count(b"\n") == 1 and b"is not a date" in bad.stderr
    found = json.loads(run_cli("logs", "search", "rome", "--json").stdout)
    assert [(h["role"], h["turn"]) for h in found] == [("user", 1), ("assistant", 1)]


def test_export_as_markdown_and_as_a_file_load_continues(server: FakeServer, tmp_path: Path) -> None:
    chats(server, "my name is Ada", "and I like maps")
    [row] = json.loads(run_cli("logs", "list", "--json").stdout)
    markdown = run_cli("logs", "export", row["id"]).stdout.decode()
    assert markdown.startswith("# stateless-chat transcript") and "### #3 User\n\nand I like maps" in markdown
    saved = tmp_path / "exported.json"
    done = run_cli("logs", "export", row["id"], "--format", "json", "-o", str(saved))
    assert done.returncode == 0 and stat.S_IMODE(saved.stat().st_mode) == 0o600
    again = run_cli("--base-url", server.url, "--load", str(saved), "What is my name?")
    assert again.stdout == b"Your name is Ada.\n"
    assert run_cli("logs", "export", row["id"], "--format", "pdf").returncode == 2


# ---- privacy ----------------------------------------------------------------------------------


def test_modes_are_tightened_whatever_existed_and_each_is_said(server: FakeServer) -> None:
    chats(server, "hello")
    path = log_path()
    path.chmod(0o644)
    path.parent.chmod(0o755)
    done = run_cli("--base-url", server.url, "-c", "again")
    assert done.returncode == 0
    lines = done.stderr.decode().splitlines()
    assert lines == [
        f"stateless-chat: the folder of the conversation log {path.parent} was mode 0755: made 0700 (it "
        "holds your conversations)",
        f"stateless-chat: {path} was mode 0644: made 0600 (it holds your conversations)"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert run_cli("--base-url", server.url, "-c", "once more").stderr == b""  # said once: now it holds


@pytest.mark.parametrize("which", ["", "-wal"])
def test_a_symbolic_link_at_the_log_is_refused_in_one_line(server: FakeServer, tmp_path: Path,
                                                           which: str) -> None:
    chats(server, "hello")
    path = log_path()
    target = tmp_path / "elsewhere.db"
    if which:
        target.write_bytes(b"")
    else:
        path.rename(target)
    path.with_name(path.name + which).symlink_to(target)
    before = target.read_bytes()
    done = run_cli("--base-url", server.url, "still answered")
    assert done.returncode == 0 and done.stdout == b"echo: still answered\n"
    [line] = done.stderr.decode().splitlines()
    assert line == (f"stateless-chat: cannot open the conversation log {path}: {path}{which} is a symbolic "
                    f"link (to {target}), and the log is never written through one: move it away, or set "
                    "log_db to the file it points to; the chat goes on without logging")
    assert target.read_bytes() == before
    assert run_cli("logs", "list").returncode == 1


def test_every_key_the_run_knows_is_masked_in_what_logs_prints(server: FakeServer, tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": KEY}
    done = run_cli("--base-url", server.url, f"my key is {KEY}, keep it", env=env)
    assert done.returncode == 0
    warning = done.stderr.decode()
    assert "looks like it carries a secret (it holds an API key this chat uses)" in warning
    assert f"conversation log {log_path()}" in warning and "stateless-chat logs rm " in warning
    outputs = [run_cli(*args, env=env).stdout.decode() for args in (
        ("logs", "list"), ("logs", "list", "--json"), ("logs", "show", "1"), ("logs", "show", "1", "--json"),
        ("logs", "show", "1", "--request", "1"), ("logs", "search", "key"), ("logs", "export", "1"),
        ("logs", "export", "1", "--format", "json"))]
    for output in outputs:
        assert output and KEY not in output and "***" in output, output
    exported = tmp_path / "x.md"
    run_cli("logs", "export", "1", "-o", str(exported), env=env)
    assert KEY not in exported.read_text()


def test_rm_deletes_a_conversation_whole_and_gives_the_space_back(server: FakeServer) -> None:
    secret = "the vault combination is 31-41-59 " * 200
    chats(server, secret, "more about it")
    chats(server, "a chat to keep")
    path = log_path()
    [gone, kept] = [r["id"] for r in json.loads(run_cli("logs", "list", "--json").stdout)][::-1]
    assert run_cli("logs", "search", "vault").stdout
    done = run_cli("logs", "rm", gone[:9])
    assert done.returncode == 0
    [line] = done.stdout.decode().splitlines()
    assert re.fullmatch(rf"deleted 1 conversation\(s\) \({gone}\); the log went from [\d.]+ MB to "
                        r"[\d.]+ MB", line)
    assert [r["id"] for r in json.loads(run_cli("logs", "list", "--json").stdout)] == [kept]
    assert run_cli("logs", "search", "vault").stdout == b""
    db = sqlite3.connect(path)
    for table in ("texts", "entries", "turns", "requests", "events", "conversations"):
        column = "id" if table == "conversations" else "cid"
        left = db.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", (gone,)).fetchone()
        assert left == (0,), table
    db.close()
    assert integrity(path) == ("ok", "ok")
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert b"vault combination" not in raw and b"31-41-59" not in raw  # overwritten, not just unlinked
    again = run_cli("logs", "rm", gone)
    assert again.returncode == 1 and f"no conversation '{gone}'".encode() in again.stderr


def test_rm_before_a_date(server: FakeServer) -> None:
    chats(server, "old chat")
    chats(server, "newer chat")
    db = sqlite3.connect(log_path())
    db.execute("UPDATE conversations SET active = '2020-01-01T00:00:00.000000+00:00' WHERE id = "
               "(SELECT id FROM conversations ORDER BY id LIMIT 1)")
    db.commit()
    db.close()
    assert run_cli("logs", "rm", "--before", "2021-01-01").returncode == 0
    assert [r["first_line"] for r in json.loads(run_cli("logs", "list", "--json").stdout)] == ["newer chat"]
    nothing = run_cli("logs", "rm", "--before", "2021-01-01")
    assert nothing.returncode == 0 and b"nothing deleted" in nothing.stderr
    assert run_cli("logs", "rm").returncode == 2


def test_logs_reads_a_log_on_a_full_disk(server: FakeServer) -> None:
    chats(server, "kept before the disk filled")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["PYTHONPATH"] = str(ROOT)

    def full_disk() -> None:  # no file may grow now: even root gets EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    for args in (("logs", "list"), ("logs", "search", "before"), ("logs", "show", "1")):
        done = subprocess.run([sys.executable, "-m", "stateless_chat", *args], capture_output=True, env=env,
                              preexec_fn=full_disk, timeout=60, cwd=ROOT)
        assert done.returncode == 0 and b"the disk filled" in done.stdout, done.stderr
        [note] = done.stderr.decode().splitlines()
        assert "cannot be opened as usual: disk I/O error" in note
        assert "it is read as it stands on disk" in note


def test_damaged_rows_and_deep_json_are_one_line_each_and_the_rest_reads(server: FakeServer) -> None:
    chats(server, "one", "two", "three")
    db = sqlite3.connect(log_path())
    db.execute("UPDATE turns SET usage = '{\"prompt_tokens\": ' WHERE turn = 1")
    db.execute("UPDATE turns SET events = ? WHERE turn = 2", ("[" * 100_000 + "]" * 100_000,))
    db.execute("UPDATE texts SET raw = ? WHERE content = 'echo: two'", ("[" * 100_000 + "]" * 100_000,))
    db.execute("UPDATE conversations SET ledger = '[{\"turn\": \"x\"}]'")
    db.commit()
    db.close()
    shown = run_cli("logs", "show", "1")
    assert shown.returncode == 0
    text = shown.stdout.decode()
    assert "turn 1: damaged in the log (usage: it is not valid JSON)" in text
    assert "turn 2: damaged in the log (events: its JSON is nested too deeply)" in text
    assert "#4 assistant (turn 2): damaged in the log: its JSON is nested too deeply" in text
    assert "    three" in text and "echo: three" in text
    assert json.loads(run_cli("logs", "show", "1", "--json").stdout)["turns"][2]["problem"] is None
    done = run_cli("--base-url", server.url, "-c", "go on")
    assert done.returncode == 0
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "2 damaged row(s) of conversation" in lines[0]
    assert [m["content"] for m in server.requests[-1]["messages"]] == [
        "one", "echo: one", "two", "three", "echo: three", "go on"]


# ---- a turn cancelled after its tools ran -------------------------------------------------------


@pytest.fixture
def tools(tmp_path: Path) -> Any:
    from stateless_chat.tools.servers import ServerConfig, ToolServers
    from tests.support import SERVER

    servers = ToolServers({"calc": ServerConfig("calc", sys.executable, (SERVER, "--only", "add"))},
                          log_dir=tmp_path / "mcp-logs")
    assert servers.start() == []
    yield servers
    servers.stop()


@pytest.mark.parametrize("how", ["cancelled", "failed"])
def test_a_turn_cancelled_after_its_tools_ran_is_logged_with_the_calls(server: FakeServer, tools: Any,
                                                                      tmp_path: Path, how: str) -> None:
    from tests.support import calling

    server.replier = calling((("add", '{"a": 2, "b": 3}'),), (("add", '{"a": 5, "b": 1}'),))
    session = make_session(server)
    log = attach_journal(session, tmp_path / "logs.db")
    session.tools = tools
    session.send("hello first")
    approvals = 0

    def approve(call: Any, spec: Any) -> bool:
        nonlocal approvals
        approvals += 1
        if how == "cancelled" and approvals == 2:
            raise KeyboardInterrupt  # Ctrl-C at the second approval: the first call already ran
        if how == "failed" and approvals == 1:
            server.fail_next(status=400)  # the request after the first call fails
        return True

    session.hooks = replace(session.hooks, approve=approve)
    before = session.conversation
    with pytest.raises(KeyboardInterrupt if how == "cancelled" else ServerError):
        session.send("add two and three, then one")
    assert session.conversation == before  # the turn left nothing in the conversation
    with LogStore.open(tmp_path / "logs.db") as store:
        [event] = store.events(log.cid or "")
        assert event.kind == "cancelled" and event.turn == 2
        reason = "cancelled" if how == "cancelled" else "failed"
        detail = event.detail
        assert detail["message"] == "add two and three, then one"
        assert detail["calls"][0]["tool"].endswith("add")
        assert detail["calls"][0]["arguments"] == '{"a": 2, "b": 3}'
        assert detail["calls"][0]["ran"] is True
        assert (reason == "cancelled") == (detail["reason"] == "cancelled")
        assert event.what.startswith("turn 2 ") and "after its tools ran" in event.what
        assert [t.turn for t in store.turns(log.cid or "")] == [1]
        shown = logview.show_lines(store, log.cid or "")
    ran = r"    turn 2 (cancelled|.*) after its tools ran: calc\.add \{\"a\": 2, \"b\": 3\}.*"
    assert any(re.fullmatch(ran, line) for line in shown), shown


# ---- logs replay ------------------------------------------------------------------------------


def test_replay_with_the_logged_settings_gives_back_the_logged_run(server: FakeServer) -> None:
    """Replayed with the policy, budget and low-water mark it ran with, a conversation's requests, evictions
    and cache predictions come out as they were logged: the replay is the chat's own context and cache
    models, offline. Other settings then answer the what-if."""
    session = make_session(server, budget=700, max_tokens=100, model="gpt-4o")  # one chat: one cache model
    attach_journal(session, log_path())
    for n in range(1, 21):
        session.send(f"turn {n} about rivers and mountains " * 6)
    calls = len(server.requests)
    [row] = json.loads(run_cli("logs", "list", "--json").stdout)
    shown = json.loads(run_cli("logs", "show", row["id"], "--json").stdout)
    logged = shown["turns"]
    same = json.loads(run_cli("logs", "replay", row["id"], "--policy", "drop-oldest", "--budget", "700",
                              "--evict-to", "0.5", "--json").stdout)
    assert len(server.requests) == calls  # no model was called
    def stat(name: str) -> list[Any]:
        return [t["stats"][name] for t in logged]

    assert [t["prompt_tokens"] for t in same["turns"]] == stat("estimated_prompt_tokens")
    assert [t["cached_tokens"] for t in same["turns"]] == stat("predicted_cached_tokens")
    assert [bool(t["evicted"]) for t in same["turns"]] == [t["stats"]["evictions"] > 0 for t in logged]
    assert any(t["evicted"] for t in same["turns"])

    def dollars(prompt: int, cached: int, completion: int) -> float:  # gpt-4o's price, $ per million
        return ((prompt - cached) * 2.5 + cached * 1.25 + completion * 10) / 1e6

    completions = [t["completion_tokens"] for t in logged]
    assert same["paid"] == pytest.approx(sum(  # the server's counts where it gave them, else ours
        dollars(t["prompt_tokens"], t["cached_tokens"] or t["stats"]["predicted_cached_tokens"],
                t["completion_tokens"]) for t in logged))
    assert same["cost"] == pytest.approx(sum(
        dollars(t["prompt_tokens"], t["cached_tokens"], c) for t, c in zip(same["turns"], completions,
                                                                         strict=True)))

    naive = json.loads(run_cli("logs", "replay", row["id"], "--policy", "none", "--budget", "700",
                               "--json").stdout)
    assert not any(t["evicted"] for t in naive["turns"]) and naive["sent"] > same["sent"]
    assert any(t["over_budget"] for t in naive["turns"])
    to_fit = json.loads(run_cli("logs", "replay", row["id"], "--budget", "700", "--evict-to", "1.0",
                                "--json").stdout)
    assert to_fit["breaks"] > same["breaks"]  # evicting to fit breaks the cache on most turns
    folded = run_cli("logs", "replay", row["id"], "--policy", "summarize", "--budget", "700",
                     "--prices", "deepseek-chat")
    text = folded.stdout.decode()
    assert folded.returncode == 0 and "prices of deepseek-chat" in text and "bill: $" in text
    assert re.search(r"  #\d+-#\d+  ", text) and "answered with a stand-in" in text
    assert len(server.requests) == calls
    unpriced = run_cli("logs", "replay", row["id"], "--prices", "no-such-model")
    assert unpriced.returncode == 0 and b"note: no price for no-such-model" in unpriced.stdout
    bad = run_cli("logs", "replay", row["id"], "--policy", "sometimes")
    assert bad.returncode == 2 and bad.stderr.count(b"\n") == 1


def test_replay_sends_a_tool_loop_again_step_by_step(server: FakeServer, tools: Any) -> None:
    """A turn that ran a tool loop is replayed step by step with its logged replies and tool results: with
    the settings it ran with, as many requests a turn as were logged, carrying the logged messages; with
    a smaller budget, turns are evicted inside the loop. No model is called and no tool runs."""
    from stateless_chat.store.replay import lines, replay
    from tests.support import calling

    looping = calling((("add", '{"a": 2, "b": 3}'),), (("add", '{"a": 5, "b": 1}'),))

    def replier(body: dict[str, Any]) -> Any:
        asked = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        return looping(body) if asked.startswith("add") else f"echo: {asked}"

    server.replier = replier
    session = make_session(server, budget=700, max_tokens=100, model="gpt-4o", evict_to=0.5)
    session.tools = tools
    session.hooks = replace(session.hooks, approve=lambda call, spec: True)
    log = attach_journal(session, log_path())
    prompts = [f"turn {n} about rivers and mountains " * 6 for n in range(1, 9)]
    prompts[3] = prompts[6] = "add two and three, then five and one"
    for prompt in prompts:
        session.send(prompt)
    calls = len(server.requests)
    cid = log.cid or ""
    with LogStore.open(log_path()) as store:
        logged = {t.turn: [json.loads(b) for b in store.bodies(cid, t.turn)] for t in store.turns(cid)}
        assert [len(bodies) for bodies in logged.values()] == [1, 1, 1, 3, 1, 1, 3, 1]
        settings = session.settings
        same = replay(store, cid, settings, policy="drop-oldest", budget=700, evict_to=0.5)
        smaller = replay(store, cid, settings, policy="drop-oldest", budget=600, evict_to=1.0)
    assert len(server.requests) == calls  # no model was called

    for turn in same.turns:  # the same context model: the very messages that were sent, step by step
        assert [list(step.messages) for step in turn.steps] == [b["messages"] for b in logged[turn.turn]]
        assert turn.logged_steps == len(turn.steps)
    looped = same.turns[3]
    assert [step.messages[-1]["role"] for step in looped.steps] == ["user", "tool", "tool"]
    assert looped.steps[2].messages[-1]["content"] == "6"  # the logged result: the tool did not run again
    assert same.requests == same.logged_requests == 12
    assert any(step.evicted for t in same.turns for step in t.steps)
    shown = json.loads(run_cli("logs", "show", cid, "--json").stdout)
    stats = [t["stats"] for t in shown["turns"]]
    assert [t.prompt_tokens for t in same.turns] == [s["estimated_prompt_tokens"] for s in stats]
    assert [bool(t.evicted) for t in same.turns] == [s["evictions"] > 0 for s in stats]
    assert [t.cache_break is not None for t in same.turns] == [s["cache_break"] is not None for s in stats]
    # the turn's bill is summed over its steps: the earlier steps are sent besides the last request
    for t, s in zip(same.turns, stats, strict=True):
        assert t.summary_prompt_tokens == sum(step.prompt_tokens for step in t.steps[:-1])
        assert t.logged_summary_prompt_tokens == s["summary_prompt_tokens"]
    assert same.sent == sum(step.prompt_tokens for t in same.turns for step in t.steps)

    # A smaller budget, evicting only to fit: each step of a loop evicts again (the loop's own messages
    # are never evicted within it), and every step's request fits.
    assert [len(t.steps) for t in smaller.turns] == [len(b) for b in logged.values()]
    inside = [step for t in smaller.turns for step in t.steps[1:] if step.evicted]
    assert inside and not any(step.over_budget for t in smaller.turns for step in t.steps)
    for step in inside:
        assert [m["role"] for m in step.messages[1 - 2 * step.step:]] == ["user"] + ["assistant", "tool"] * (
            step.step - 1)
    assert smaller.cost is not None and smaller.paid == same.paid  # what was paid is the log's
    text = lines(smaller)
    step_line = (r"      step [23]: prompt [\d,]+, cached [\d,]+, \d+ messages, evicted #\d+(-#\d+)?, "
                 r"summarized -, cache break .+")
    assert any(re.fullmatch(step_line, line) for line in text), text

    printed = run_cli("logs", "replay", cid, "--policy", "drop-oldest", "--budget", "600",
                      "--evict-to", "1.0")
    assert printed.returncode == 0
    out = printed.stdout.decode().splitlines()
    assert out[0].startswith(f"replay of {cid} (8 turns, 12 requests against 12 logged)")
    assert [line.split(":")[0].strip() for line in out if line.startswith("      step")] == [
        "step 1", "step 2", "step 3"] * 2
    assert "note: 2 turn(s) ran a tool loop: each step sent again with its logged reply and tool results" \
        " (no tool was run)" in out
    as_json = json.loads(run_cli("logs", "replay", cid, "--policy", "drop-oldest", "--budget", "600",
                                 "--evict-to", "1.0", "--json").stdout)
    assert [len(t["steps"]) for t in as_json["turns"]] == [1, 1, 1, 3, 1, 1, 3, 1]
    assert as_json["requests"] == as_json["logged_requests"] == 12
    assert len(server.requests) == calls


def test_a_logged_turn_is_answered_with_its_own_steps_results_and_tools() -> None:
    """What a replayed turn is answered with comes from its logged messages after its question, up to
    another exchange of the same turn (one /retry replaced): the steps' messages and calls, the results
    in order, the reply's own calls (a loop stopped at its step limit), the first request's tools."""
    from stateless_chat.store.replay import logged_turn

    def call(ident: str, args: str) -> dict[str, Any]:
        return {"id": ident, "type": "function", "function": {"name": "add", "arguments": args}}

    tools = [{"type": "function", "function": {"name": "add", "parameters": {}}}]
    messages = [
        {"id": 1, "role": "user", "kind": "turn", "content": "add"},
        {"id": 2, "role": "assistant", "content": "Let me check.", "tokens": 9,
         "tool_calls": [call("c0", '{"a": 2, "b": 3}')]},
        {"id": 3, "role": "tool", "tool_call_id": "c0", "content": "5"},
        {"id": 4, "role": "user", "kind": "turn", "content": [
            {"type": "text", "text": "[The images the tool calls above returned (calc.add: 1 image)]"}]},
        {"id": 5, "role": "assistant", "content": None, "tokens": 7, "tool_calls": [call("c1", "{}")]},
        {"id": 6, "role": "tool", "tool_call_id": "c1", "content": "6"},
        {"id": 7, "role": "assistant", "content": "", "tokens": 4, "tool_calls": [call("c2", "{}")]},
        {"id": 8, "role": "tool", "tool_call_id": "c2", "content": "not run: the tool step limit"},
        {"id": 9, "role": "user", "kind": "turn", "content": "add, again"},  # a /retry of the turn
        {"id": 10, "role": "assistant", "content": "echo"},
    ]
    loop = logged_turn(messages, 1, [{"model": "m", "tools": tools}, {"model": "m", "tools": []}])
    assert [(s.text, [c.id for c in s.tool_calls]) for s in loop.steps] == [("Let me check.", ["c0"]),
                                                                            ("", ["c1"])]
    assert loop.steps[0].tool_calls[0].arguments == '{"a": 2, "b": 3}'
    assert [c.id for c in loop.final_calls] == ["c2"] and loop.step_completion == 16
    assert loop.results == ("5", "6", "not run: the tool step limit") and loop.images
    assert loop.offered == tuple(tools)
    retried = logged_turn(messages, 9, [])
    assert retried.steps == () and retried.final_calls == () and retried.offered == () and not retried.images
