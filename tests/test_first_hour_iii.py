"""The first hour III (issue 24): what a new user and an adversary met, each through the layer where
it was met: the chat through prompt_toolkit's pipe input, a real terminal of 80 columns (pexpect),
one-shot runs as real processes, all against the real fake server on loopback; and the README,
which now points at the pages of ``docs/``."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from stateless_chat import journal
from stateless_chat.toolbox import RecallTool, Toolbox
from stateless_chat.tools import ServerConfig, ToolServers
from tests.conftest import make_session, run_repl
from tests.fakeserver import FakeServer
from tests.test_pty_80 import Terminal
from tests.test_tool_loop import SERVER

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
    journal.attach(session, tmp_path / "logs.db")
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
        log = journal.attach(session, None)
        session.toolbox = Toolbox(tools, [RecallTool(log)])
        out = run_repl(session, ["/tools\r"], width=200).output
    lines = [line for line in out.splitlines() if line.strip()]
    calc = next(i for i, line in enumerate(lines) if line.startswith("calc: running, 2 tool(s)"))
    builtin = next(i for i, line in enumerate(lines) if line.startswith("builtin: built in"))
    assert calc < builtin
    assert [line.split()[0] for line in lines[calc + 1:calc + 3]] == ["add", "fail"]
    assert lines[builtin] == "builtin: built in, run by stateless-chat itself, 1 tool(s)"
    assert lines[builtin + 1].split()[0] == "recall_history"
