"""What the chat shows, and shows safely: a reply cut by Ctrl-C, recalled turns in /history, /stats
and the usage line, /tools, logs show and search, load notes, help at 80 columns, prices and keys
for other servers, odd tool names; each through the layer where it was met: the chat through
prompt_toolkit's pipe input, a real terminal of 80 columns (pexpect), one-shot runs as real
processes, all against the real fake server on loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.tools.servers import ServerConfig, ToolServers
from stateless_chat.tools.toolbox import RecallTool, Toolbox
from tests.fakeserver import FakeServer, Scripted, approx_tokens
from tests.support import SERVER, Terminal, attach_journal, calling, make_session, run_process, run_repl

ROOT = Path(__file__).resolve().parents[1]
ODD_SERVER = str(Path(__file__).with_name("mcp_odd_server.py"))
PARTIAL = "First paragraph is done.\n\nSecond paragraph is done.\n\nThird paragraph keeps going on and on"


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


# ---- 1. Ctrl-C mid-reply: the partial reply, then the "cancelled" line -------------------------


def test_ctrl_c_mid_reply_prints_the_partial_reply_then_the_line(server: FakeServer) -> None:
    session = make_session(server)
    server.replier = lambda body: PARTIAL
    server.hang_stream_next(after_chunks=11, seconds=10)  # the role chunk, then up to "Third paragraph "

    def press() -> None:  # Ctrl-C (a real SIGINT) once the request is in and its first words have come
        deadline = time.monotonic() + 10
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=press)
    presser.start()
    try:
        run = run_repl(session, ["tell me\r"])
    finally:
        presser.join()
    out = run.output
    cancelled = out.index("cancelled; the conversation is unchanged")
    assert out.index("Second paragraph is done.") < out.index("Third paragraph") < cancelled
    assert "paragraph" not in out[cancelled:]  # nothing of the reply after the line
    assert out.count("Third paragraph") == 1


@pytest.mark.timeout(90)
def test_ctrl_c_mid_reply_at_80_columns_draws_the_line_after_the_reply(server: FakeServer,
                                                                       tmp_path: Path) -> None:
    server.replier = lambda body: PARTIAL
    term = Terminal(server, tmp_path)
    term.expect("/help for commands")
    term.prompt()
    server.hang_stream_next(after_chunks=11, seconds=15)
    term.send("tell me\r")
    term.expect("Second paragraph is done")
    time.sleep(0.5)  # the third paragraph's words have come (and may be drawn live)
    term.read()
    term.child.sendcontrol("c")
    term.expect("cancelled")
    term.prompt()
    shown = term.read()
    cancelled = shown.index("cancelled")
    assert "Third paragraph" in shown[:cancelled]  # printed for good when the reply ends, before the line
    assert "paragraph" not in shown[cancelled:]
    term.leave()


# ---- 2. /history lists what the request sends, in its order -----------------------------------


def history_ids(output: str) -> list[int]:
    """Return the message numbers of the last /history table in ``output``, top to bottom."""
    lines = output.splitlines()
    title = max(i for i, line in enumerate(lines) if line.strip() == "history")
    ids = []
    for line in lines[title + 1:]:
        if line.startswith("└"):
            break
        cells = line.split("│")
        if line.startswith("│") and cells[1].strip().isdigit():
            ids.append(int(cells[1]))
    return ids


def test_history_lists_recalled_turns_where_the_request_sends_them(server: FakeServer,
                                                                   tmp_path: Path) -> None:
    session = make_session(server, budget=600, reply_reserve=100, system="Be brief.")
    attach_journal(session, tmp_path / "logs.db")
    filler = [f"Turn {n} about rivers and mountains and valleys and forests. " * 4 + "\r" for n in range(8)]
    run_repl(session, ["the launch code is 7491\r", *filler])
    assert not session.conversation.is_live(1)
    run = run_repl(session, ["/recall 1\r", "/history\r", "/raw\r"], width=200)
    listed = history_ids(run.output)
    history = [e.id for e in session.conversation.history]
    assert listed == [0, *history, 1, 2]  # the recalled turn last, though its numbers are the lowest
    body = session.preview_body()  # what /raw prints: the body the next request sends
    by_id = {e.id: e.content for e in (session.conversation.system, *session.conversation.live) if e}
    assert [m["content"] for m in body["messages"]] == [by_id[i] for i in listed]
    every = history_ids(run_repl(session, ["/history all\r"], width=200).output)
    assert every[-2:] == [1, 2] and every[0] == 0 and 3 in every  # evicted ones among the history


# ---- 3. /stats and /tokens: predicted totals carry ≈, no negative saving -----------------------


def test_stats_marks_a_predicted_total_and_never_shows_a_negative_saving(server: FakeServer,
                                                                         tmp_path: Path) -> None:
    server.replier = calling((("add", '{"a": 2, "b": 3}'),))  # a tool loop: two requests a turn
    configs = {"calc": ServerConfig("calc", sys.executable, (SERVER, "--only", "add"))}
    with ToolServers(configs, log_dir=tmp_path) as tools:
        assert tools.start() == []
        session = make_session(server)
        session.tools = Toolbox(tools)
        run = run_repl(session, ["add two and three\r", "y\r", "and again\r", "y\r", "/stats\r", "/tokens\r"],
                       width=200)
    ledger = session.ledger
    assert not any(t.evictions for t in ledger.turns) and ledger.baseline != ledger.sent
    out = " ".join(run.output.split())
    assert f"total sent {ledger.sent:,} (≈{ledger.cached:,} cached) with nothing evicted: every request " \
           "resent the whole conversation" in out
    assert "of them cached) with nothing evicted" in out[out.index("session:"):]  # /tokens says the same
    assert "fewer" not in out and "saved" not in out and "(-" not in out


def test_stats_with_evictions_says_a_saving_or_why_there_is_none(server: FakeServer) -> None:
    session = make_session(server, budget=400, reply_reserve=50)
    run = run_repl(session, [f"message {n} " + "about the weather " * 12 + "\r" for n in range(6)]
                   + ["/stats\r"], width=200)
    ledger = session.ledger
    assert any(t.evictions for t in ledger.turns) and ledger.baseline > ledger.sent
    saved = 1 - ledger.sent / ledger.baseline
    assert f"vs {ledger.baseline:,} with no eviction ({saved:.0%} fewer, " in " ".join(run.output.split())


def test_a_baseline_below_what_was_sent_is_said_as_such_not_as_a_negative_saving() -> None:
    from stateless_chat.core.ledger import Ledger, TurnStats
    from stateless_chat.ui.commands import baseline_words

    # A tool loop's turn after an eviction: the server counts 40 tokens of its own on each of the two
    # requests (a chat template's text), so our baseline, scaled by the last request's ratio, falls short.
    evicting = TurnStats(1, estimated_prompt_tokens=300, reported_prompt_tokens=340,
                         reported_completion_tokens=10, baseline_prompt_tokens=302, evictions=1)
    looped = TurnStats(2, estimated_prompt_tokens=300, reported_prompt_tokens=340,
                       reported_completion_tokens=10, baseline_prompt_tokens=300 + 250,
                       summary_prompt_tokens=290, steps=2)
    ledger = Ledger((evicting, looped))
    assert ledger.sent > ledger.baseline
    assert baseline_words(ledger) == (f"vs ≈{ledger.baseline:,} with no eviction by our count: no saving to "
                                      f"show, as the server counts {ledger.sent - ledger.baseline:,} more "
                                      "tokens than our estimate")


# ---- 4. -u in a tool loop; -q wins -------------------------------------------------------------


def test_usage_line_of_a_tool_loop_covers_every_request(server: FakeServer, tmp_path: Path) -> None:
    server.replier = calling((("add", '{"a": 2, "b": 3}'),))
    config = config_file(tmp_path, f'[mcp.servers.calc]\ncommand = {json.dumps(sys.executable)}\n'
                                   f'args = [{json.dumps(SERVER)}, "--only", "add"]\n')
    done = run_process("--config", str(config), "--base-url", server.url, "-y", "-u", "--no-stream", "add")
    assert done.returncode == 0, done.stderr
    first, last = server.requests
    prompts = [approx_tokens(first["messages"]), approx_tokens(last["messages"])]  # the fake server's counts
    [line] = [x for x in done.stderr.decode().splitlines() if ": usage: " in x]
    assert line.startswith(f"stateless-chat: usage: 2 requests (a tool loop): prompt {sum(prompts):,}, ")
    assert "the last request: prompt " in line and f"{prompts[1]:,} reported" in line
    quiet = run_process("--config", str(config), "--base-url", server.url, "-y", "-u", "-q", "add")
    assert quiet.returncode == 0 and quiet.stderr == b""  # -q wins, as --help says
    helped = " ".join(run_process("--help").stdout.decode().split())
    assert "(not with -q)" in helped and "wins over -u and -v" in helped


# ---- 5. logs show marks an exchange replaced by /retry ----------------------------------------


def test_logs_show_marks_the_exchange_retry_replaced(server: FakeServer, tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "HOME": str(tmp_path / "home")}
    session = make_session(server)
    path = tmp_path / "data" / "stateless-chat" / "logs.db"
    log = attach_journal(session, path)
    run_repl(session, ["first question\r", "second question\r", "/retry\r"])
    assert log.cid is not None
    shown = run_process("logs", "show", log.cid, env=env).stdout.decode()
    replaced = "replaced by /retry, /edit or /undo: no longer in the conversation"
    assert re.search(rf"#3 user \(turn 2, {re.escape(replaced)}\)\n    second question", shown)
    assert re.search(rf"#4 assistant \(turn 2, {re.escape(replaced)}\)\n    echo: second question", shown)
    assert "#5 user (turn 3)\n    second question" in shown and "#1 user (turn 1)\n" in shown


# ---- 6. /load names the save file as the context window's source -------------------------------


def test_load_says_the_context_window_came_from_the_save_file(server: FakeServer, tmp_path: Path) -> None:
    saved = tmp_path / "chat.json"
    first = make_session(server, context_window=8192)
    run_repl(first, ["hello\r", f"/save {saved}\r"])
    session = make_session(server)
    assert session.settings.context_window is None
    out = " ".join(run_repl(session, [f"/load {saved}\r", "/model\r"], width=200).output.split())
    said = f"context window 8,192 (as saved in the save file {saved})"
    assert out.count(said) == 2 and "the context_window setting" not in out


# ---- 7. /help at 80 columns; /tools groups tools under their server ---------------------------


@pytest.mark.timeout(90)
def test_help_at_80_columns_wraps_each_description_in_its_column(server: FakeServer, tmp_path: Path) -> None:
    term = Terminal(server, tmp_path)
    term.expect("/help for commands")
    term.prompt()
    term.read()
    term.send("/help\r")
    term.expect("Every command in full")
    term.prompt()
    lines = term.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("/budget"))
    table = lines[start:next(i for i, line in enumerate(lines) if i > start and not line.strip())]
    column = table[0].index("show the token budget")
    assert all(len(line) <= 80 for line in table)
    wrapped = [line for line in table if not line.startswith("/")]
    assert wrapped  # some descriptions are longer than the room at 80 columns
    assert all(line[:column].strip() == "" and line[column] != " " for line in wrapped)
    term.leave()


def test_tools_lists_each_tool_under_its_own_server(server: FakeServer, tmp_path: Path) -> None:
    configs = {"calc": ServerConfig("calc", sys.executable, (SERVER, "--only", "add,fail"))}
    with ToolServers(configs, log_dir=tmp_path) as tools:
        session = make_session(server)
        log = attach_journal(session, None)
        recall = RecallTool(lambda query: log.matches(query, session.conversation),
                            lambda: session.conversation.evicted)
        session.tools = Toolbox(tools, [recall])
        out = run_repl(session, ["/tools\r"], width=200).output
    lines = [line for line in out.splitlines() if line.strip()]
    calc = next(i for i, line in enumerate(lines) if line.startswith("calc: running, 2 tool(s)"))
    builtin = next(i for i, line in enumerate(lines) if line.startswith("builtin: built in"))
    assert calc < builtin
    assert [line.split()[0] for line in lines[calc + 1:calc + 3]] == ["add", "fail"]
    assert lines[builtin] == "builtin: built in, run by stateless-chat itself, 1 tool(s)"
    assert lines[builtin + 1].split()[0] == "recall_history"


# ---- 8. an MCP server command beside the interpreter; where it looked --------------------------


def test_a_server_command_is_found_beside_the_interpreter_without_path(server: FakeServer,
                                                                       tmp_path: Path) -> None:
    beside = Path(sys.executable).parent
    if not (beside / "mcp-server-time").exists():
        pytest.skip("mcp-server-time (the test extra) is not installed beside this Python")
    config = config_file(tmp_path, '[mcp.servers.time]\ncommand = "mcp-server-time"\n'
                                   'args = ["--local-timezone", "UTC"]\n'
                                   '[mcp.servers.ghost]\ncommand = "no-such-mcp-server"\n')
    server.replier = calling((("get_current_time", '{"timezone": "UTC"}'),))
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != beside)
    done = run_process("--config", str(config), "--base-url", server.url, "-y", "what time is it?",
                       env={"PATH": path or "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert '"timezone": "UTC"' in done.stdout.decode()  # the tool ran: its result is the answer
    [line] = [x for x in done.stderr.decode().splitlines() if "ghost" in x]  # the others: the tool loop
    assert f"command not found: no-such-mcp-server (looked on PATH and in {beside}, beside the Python " \
           "running stateless-chat; give its full path as the command)" in line


# ---- 10. OpenAI's organization and project go to OpenAI only ----------------------------------


def test_openai_org_and_project_are_not_sent_to_another_server(server: FakeServer) -> None:
    ids = {"OPENAI_ORG_ID": "org-secret-identifier", "OPENAI_PROJECT_ID": "proj_secret_identifier"}
    done = run_process("--base-url", server.url, "hi", env=ids)
    assert done.returncode == 0, done.stderr
    [headers] = server.request_headers
    assert "openai-organization" not in headers and "openai-project" not in headers
    assert not any("secret_identifier" in v or "secret-identifier" in v for v in headers.values())


def test_openai_org_and_project_still_go_to_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    from stateless_chat.wire.openai_backend import OpenAIBackend, is_openai

    monkeypatch.setenv("OPENAI_ORG_ID", "org-mine")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_mine")
    headers = OpenAIBackend("https://api.openai.com/v1", "sk-test")._sdk().default_headers  # no request made
    assert headers["OpenAI-Organization"] == "org-mine" and headers["OpenAI-Project"] == "proj_mine"
    assert not is_openai("http://api.openai.com/v1") and not is_openai("https://api.openai.com.evil.example/v1")


# ---- 11. an absurd price is refused -----------------------------------------------------------


@pytest.mark.parametrize("price", ["1.7e308", "inf", "1e7"])
def test_a_price_that_is_not_finite_or_absurd_is_one_line(server: FakeServer, tmp_path: Path,
                                                          price: str) -> None:
    config = config_file(tmp_path, f'[prices."gpt-4o"]\ninput = {price}\noutput = 1.0\n')
    done = run_process("--config", str(config), "--base-url", server.url, "-m", "gpt-4o", "-u", "hi")
    assert done.returncode == 2 and server.requests == []
    [line] = done.stderr.decode().splitlines()
    assert "'prices' must be" in line and "from 0 to 1,000,000" in line and "'gpt-4o' has input = " in line
    fine = config_file(tmp_path, '[prices."gpt-4o"]\ninput = 600\noutput = 1.0\n')
    ok = run_process("--config", str(fine), "--base-url", server.url, "-m", "gpt-4o", "-u", "hi")
    assert ok.returncode == 0 and b"cost $" in ok.stderr and b"inf" not in ok.stderr


# ---- 12. too many tools: the hint names /tools off and --no-tools -----------------------------


@pytest.mark.timeout(180)
def test_too_many_tools_says_how_to_offer_fewer(server: FakeServer, tmp_path: Path) -> None:
    config = config_file(tmp_path, f'[mcp.servers.many]\ncommand = {json.dumps(sys.executable)}\n'
                                   f'args = [{json.dumps(ODD_SERVER)}, "many", "800"]\n')
    done = run_process("--config", str(config), "--base-url", server.url, "--budget", "4000", "hi",
                       timeout=60)
    assert done.returncode == 1 and server.requests == []
    [line] = done.stderr.decode().splitlines()
    assert "the request needs " in line and "tools " in line and "offer fewer tools (--no-tools)" in line
    configs = {"many": ServerConfig("many", sys.executable, (ODD_SERVER, "many", "800"))}
    with ToolServers(configs, log_dir=tmp_path) as tools:
        assert tools.start() == []
        session = make_session(server, budget=4000)
        session.tools = Toolbox(tools)
        out = " ".join(run_repl(session, ["hi\r", "/tools off\r", "hi\r"], width=200).output.split())
    assert "offer fewer tools (/tools off, or /tools off SERVER)" in out and "echo: hi" in out
    assert len(server.requests) == 1 and "tools" not in server.requests[0]


# ---- 13. escape sequences in a tool name; in logs search ---------------------------------------


@pytest.mark.timeout(60)
def test_a_tool_name_with_escapes_is_stripped_alike_on_the_call_line_and_the_question(
    server: FakeServer, tmp_path: Path
) -> None:
    config = config_file(tmp_path, f'[mcp.servers.odd]\ncommand = {json.dumps(sys.executable)}\n'
                                   f'args = [{json.dumps(ODD_SERVER)}, "escape"]\n')

    def replier(body: dict[str, Any]) -> str | Scripted:
        if "tools" in body and body["messages"][-1]["role"] == "user":
            [name] = [t["function"]["name"] for t in body["tools"] if "ALERT" in t["function"]["name"]]
            return Scripted("", (("call_1", name, "{}"),))
        return "finished"

    server.replier = replier
    term = Terminal(server, tmp_path, "--config", str(config))
    term.expect("/help for commands")
    term.prompt()
    term.read()
    term.send("go\r")
    term.expect("for this tool")
    shown = term.read()
    term.send("y\r")
    term.expect("finished")
    term.prompt()
    term.leave()
    assert "→ odd.redALERT {}" in shown and "run odd.redALERT?" in shown
    assert "^[" not in shown and "[31m" not in shown
    assert [m["content"] for m in server.requests[-1]["messages"] if m["role"] == "tool"] == ["done"]


def test_logs_search_prints_no_leftovers_of_escape_sequences(server: FakeServer, tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "HOME": str(tmp_path / "home")}
    done = run_process("--base-url", server.url, "status \x1b[31mALERT\x1b[0m raised at noon", env=env)
    assert done.returncode == 0, done.stderr
    found = run_process("logs", "search", "alert", env=env).stdout.decode()
    lines = found.splitlines()
    assert lines and all(line.endswith("status [ALERT] raised at noon") for line in lines)
    marked = run_process("logs", "search", "0m", env=env).stdout.decode()
    assert "0m" not in marked and "31m" not in found


# ---- 14. a planted symlink at the --save lock is refused ---------------------------------------


def test_save_refuses_a_symlink_where_its_lock_file_goes(server: FakeServer, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "planted"
    target.parent.mkdir()
    save = tmp_path / "chat.json"
    lock = tmp_path / ".chat.json.lock"
    lock.symlink_to(target)
    done = run_process("--base-url", server.url, "--save", str(save), "hi")
    assert done.returncode == 2 and server.requests == []
    [line] = done.stderr.decode().splitlines()
    assert f"cannot lock {save} for saving: {lock} is a symbolic link" in line
    assert not target.exists() and lock.is_symlink() and not save.exists()
    lock.unlink()
    assert run_process("--base-url", server.url, "--save", str(save), "hi").returncode == 0
    assert save.exists() and not lock.exists()
