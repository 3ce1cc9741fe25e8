"""The tool loop: each step one visible, budgeted, stateless request, against a real MCP server.

The chat server is the fake one, scripted like a model that calls tools: when the request
offers tools and its last message is the user's, it asks for the calls a test names; once the
results are in, it answers with them. The tools are served by tests/mcp_server.py, a real stdio
MCP server, through the real SDK.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.chat.session import Session
from stateless_chat.core.messages import ToolAnswered, ToolCalled, ToolStepsExhausted
from stateless_chat.tools.servers import ToolServers
from stateless_chat.tools.specs import ServerConfig, ToolSpec
from stateless_chat.tools.toolbox import RecallTool, Toolbox
from tests.fakeserver import FakeServer, Scripted, approx_tokens
from tests.support import (
    SERVER,
    attach_journal,
    calling,
    make_session,
    observer,
    run_cli,
    run_repl,
    write_config,
)

CTRL_C = "\x03"


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolServers]:
    configs = {"calc": ServerConfig("calc", sys.executable, (SERVER, "--only", "add,fail,hang,huge"))}
    servers = ToolServers(configs, log_dir=tmp_path_factory.mktemp("mcp-logs"))
    assert servers.start() == []
    yield servers
    servers.stop()


def tool_session(server: FakeServer, tools: ToolServers, approve: bool = True, **settings: Any) -> Session:
    session = make_session(server, **settings)
    session.tools = Toolbox(tools)
    session.hooks = replace(session.hooks, approve=lambda call, spec: approve)
    return session


def recorded(session: Session) -> list[Any]:
    events: list[Any] = []
    session.hooks = replace(session.hooks, on_event=events.append)
    return events


@pytest.mark.parametrize("stream", [True, False])
def test_a_turn_calls_tools_step_by_step_and_every_request_is_whole(
    server: FakeServer, tools: ToolServers, stream: bool
) -> None:
    first = (("add", '{"a": 2, "b": 3}'), ("add", '{"a": 10, "b": 20}'))
    server.replier = calling(first, (("add", '{"a": 1, "b": 1}'),))
    session = tool_session(server, tools, stream=stream)
    events = recorded(session)
    reply = session.send("add some numbers")
    assert reply.text == "The tools said: 5 | 30 | 2"
    bodies = server.requests
    assert len(bodies) == 3  # one request per step, each self-contained
    # The tools array is the same, byte for byte, at every step.
    assert len({json.dumps(b["tools"]) for b in bodies}) == 1
    # Each step resends everything before it; calls and results pair up by id.
    final = bodies[-1]["messages"]
    assert [m["role"] for m in final] == ["user", "assistant", "tool", "tool", "assistant", "tool"]
    assert final[1]["tool_calls"][0]["id"] == final[2]["tool_call_id"] == "call_0_0"
    assert final[1]["tool_calls"][1]["id"] == final[3]["tool_call_id"] == "call_0_1"
    assert final[4]["tool_calls"][0]["id"] == final[5]["tool_call_id"] == "call_1_0"
    assert bodies[1]["messages"] == final[:4]
    assert [e.tool for e in events if isinstance(e, ToolCalled)] == ["calc.add"] * 3
    assert all(e.tokens > 0 and not e.error for e in events if isinstance(e, ToolAnswered))
    # The turn is one turn: question, steps and answer share it, and are kept together.
    history = session.conversation.history
    assert {e.turn for e in history} == {1} and [e.role for e in history][-1] == "assistant"
    stats = session.ledger.turns[-1]
    assert stats.steps == 3 and stats.sent == sum(approx_tokens(b["messages"]) for b in bodies)
    # The tools never break the server's cache: step after step, turn after turn.
    session.send("again")
    assert all(t.cache_break is None for t in session.ledger.turns)


def test_the_next_turn_resends_the_tool_turn_verbatim(server: FakeServer, tools: ToolServers) -> None:
    server.replier = calling((("add", '{"a": 2, "b": 3}'),))
    session = tool_session(server, tools)
    session.send("first")
    turn_one = server.requests[-1]["messages"]
    server.replier = lambda body: "plain"
    session.send("second")
    assert server.requests[-1]["messages"][:len(turn_one)] == turn_one


def test_errors_and_timeouts_come_back_to_the_model_as_results(server: FakeServer,
                                                              tools: ToolServers) -> None:
    server.replier = calling((("fail", "{}"), ("hang", '{"seconds": 5}'), ("nope", "{}")))
    session = tool_session(server, tools, tool_timeout=0.5)
    events = recorded(session)
    reply = session.send("try the tools")
    results = [m["content"] for m in server.requests[-1]["messages"] if m["role"] == "tool"]
    assert "this tool always fails" in results[0]
    assert "did not answer within 0.5 s" in results[1]
    assert "nope" in results[2]
    assert reply.text.startswith("The tools said:")
    assert [e.error for e in events if isinstance(e, ToolAnswered)] == [True, True, True]


def test_a_large_result_is_cut_to_the_cap_with_a_note(server: FakeServer, tools: ToolServers) -> None:
    server.replier = calling((("huge", '{"n": 20000}'),))
    session = tool_session(server, tools, tool_result_max_tokens=200)
    events = recorded(session)
    session.send("get it all")
    [result] = [e for e in session.conversation.history if e.role == "tool"]
    assert result.tokens <= 200 and "[cut: the result was" in result.content
    [answered] = [e for e in events if isinstance(e, ToolAnswered)]
    assert answered.cut_from is not None and answered.cut_from > 4000 and answered.tokens == result.tokens


def test_the_step_limit_ends_the_turn_and_answers_every_call(server: FakeServer,
                                                             tools: ToolServers) -> None:
    server.replier = calling(*([(("add", '{"a": 1, "b": 1}'),)] * 5))
    session = tool_session(server, tools, max_tool_steps=2)
    events = recorded(session)
    session.send("loop forever")
    assert len(server.requests) == 3 and ToolStepsExhausted(2) in events
    history = session.conversation.history
    assert history[-1].role == "tool" and "step limit" in history[-1].content
    server.replier = lambda body: "fine"
    session.send("next")  # a valid request: every call has its result
    roles = [m["role"] for m in server.requests[-1]["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant", "tool", "user"]


def test_a_refused_call_tells_the_model(server: FakeServer, tools: ToolServers) -> None:
    server.replier = calling((("add", '{"a": 2, "b": 3}'),))
    session = tool_session(server, tools, approve=False)
    events = recorded(session)
    session.send("add")
    assert server.requests[-1]["messages"][2]["content"] == "the user did not approve this call"
    assert any(isinstance(e, ToolAnswered) and e.refused for e in events)


def test_tool_steps_are_budgeted_and_evict_history_not_the_turn(server: FakeServer,
                                                                tools: ToolServers) -> None:
    session = tool_session(server, tools, budget=900, reply_reserve=64)
    server.replier = lambda body: "filler reply " * 20
    for i in range(6):
        session.send(f"filler question {i} " * 10)
    server.replier = calling((("huge", '{"n": 900}'),), (("huge", '{"n": 900}'),))
    session.send("now use tools")
    for body in server.requests:
        messages = sum(session.measure(_message(m)) for m in body["messages"])
        ours = session.counter.count_request([]) + messages + session.tools_tokens(body.get("tools", []))
        assert ours + 64 <= 900
    final = server.requests[-1]["messages"]
    assert [m["role"] for m in final][-5:] == ["user", "assistant", "tool", "assistant", "tool"]
    assert session.conversation.evicted  # history made room for the steps


def _message(data: dict[str, Any]) -> Any:
    from stateless_chat.core.messages import Message, ToolCall

    calls = tuple(ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
                  for c in data.get("tool_calls", []))
    return Message(data["role"], data.get("content"), tool_calls=calls, tool_call_id=data.get("tool_call_id"))


# ---- through the REPL -----------------------------------------------------------------------


def repl_session(server: FakeServer, tools: ToolServers) -> Session:
    session = make_session(server)
    session.tools = Toolbox(tools)
    return session


def test_the_repl_asks_before_each_call_y_n_and_always(server: FakeServer, tools: ToolServers) -> None:
    server.replier = calling((("add", '{"a": 2, "b": 3}'), ("add", '{"a": 4, "b": 4}')))
    session = repl_session(server, tools)
    run = run_repl(session, ["sum\r", "y\r", "n\r", "again\r", "a\r", "x\r", "third\r"])
    output = run.output
    assert '→ calc.add {"a": 2, "b": 3}' in output and "← " in output
    first = [m["content"] for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert first == ["5", "the user did not approve this call"]
    second = [m["content"] for m in server.requests[3]["messages"] if m["role"] == "tool"][-2:]
    assert second == ["5", "8"]  # "a": always for calc.add, for this session: no more questions
    third = [m["content"] for m in server.requests[5]["messages"] if m["role"] == "tool"][-2:]
    assert third == ["5", "8"]
    # "x" is not an answer to the question: it was sent as the next message, not taken for one.
    assert any(m["content"] == "x" for m in server.requests[4]["messages"] if m["role"] == "user")


def test_ctrl_c_mid_loop_leaves_the_conversation_as_it_was(server: FakeServer,
                                                           tools: ToolServers) -> None:
    server.replier = calling((("add", '{"a": 2, "b": 3}'),), (("add", '{"a": 1, "b": 1}'),))
    session = repl_session(server, tools)
    run_repl(session, ["first\r", "y\r", "y\r"])
    before, ledger = session.conversation, session.ledger
    run = run_repl(session, ["second\r", "y\r", CTRL_C])  # cancelled at the second step's question
    assert "cancelled; the conversation is unchanged" in run.output
    assert session.conversation == before and session.ledger == ledger
    assert len(server.requests) == 5  # the first turn's three requests, the second's two steps


def test_tools_lists_servers_tools_and_costs_and_turns_them_off(server: FakeServer,
                                                                tools: ToolServers) -> None:
    session = repl_session(server, tools)
    keys = ["/tools\r", "/tools off\r", "/tokens\r", "/tools on calc\r", "/tools sideways\r"]
    run = run_repl(session, keys, width=200)
    assert "calc: running" in run.output and "add (calc.add) · " in run.output
    assert "the tools array adds" in run.output and "tools off for calc" in run.output
    assert "error: usage: /tools" in run.output
    server.replier = lambda body: "ok"
    session.send("hi")
    assert "tools" in server.requests[-1]  # on again


def test_the_tools_part_of_tokens(server: FakeServer, tools: ToolServers) -> None:
    session = repl_session(server, tools)
    run = run_repl(session, ["/tokens\r"], width=160)
    cost = session.tools_tokens(session.tools_offered())
    assert cost > 0 and "tools" in run.output and f"{cost:,}" in run.output


# ---- one-shot ---------------------------------------------------------------------------------


def test_one_shot_runs_no_tool_without_yes(server: FakeServer, tmp_path: Path) -> None:
    server.replier = calling((("add", '{"a": 2, "b": 3}'),))
    done = run_cli("--config", str(write_config(tmp_path)), "--base-url", server.url, "add")
    assert done.returncode == 0
    assert done.stdout.decode() == "The tools said: the user did not approve this call\n"  # the answer alone
    lines = done.stderr.decode().splitlines()
    assert lines[0] == "stateless-chat: Let me check."  # the step's text, on its own line
    assert lines[1] == 'stateless-chat: → calc.add {"a": 2, "b": 3}'
    assert "not run: one-shot use runs tools only with --yes" in lines[2]
    assert lines[3] == "stateless-chat: ← calc.add not run: the call was not approved"
    assert len(lines) == 4


def test_one_shot_with_yes_runs_them_and_prints_each_step_on_stderr(server: FakeServer,
                                                                    tmp_path: Path) -> None:
    server.replier = calling((("add", '{"a": 2, "b": 3}'), ("add", '{"a": 1, "b": 1}')),
                             (("add", '{"a": 5, "b": 5}'),))
    done = run_cli("--config", str(write_config(tmp_path)), "--base-url", server.url, "-y", "add")
    assert done.returncode == 0 and done.stdout.decode() == "The tools said: 5 | 2 | 10\n"
    assert done.stderr.decode().splitlines() == [
        "stateless-chat: Let me check.",
        'stateless-chat: → calc.add {"a": 2, "b": 3}', "stateless-chat: ← calc.add: 5 tokens",
        'stateless-chat: → calc.add {"a": 1, "b": 1}', "stateless-chat: ← calc.add: 5 tokens",
        'stateless-chat: → calc.add {"a": 5, "b": 5}', "stateless-chat: ← calc.add: 5 tokens",
    ]
    quiet = run_cli("--config", str(write_config(tmp_path)), "--base-url", server.url, "-y", "-q", "add")
    assert quiet.stderr == b"" and quiet.stdout.decode() == "The tools said: 5 | 2 | 10\n"
    no_tools = run_cli("--config", str(write_config(tmp_path)), "--base-url", server.url, "--no-tools", "x")
    assert no_tools.returncode == 0 and "tools" not in server.requests[-1]


def test_a_server_that_cannot_start_is_one_line_and_the_chat_goes_on(server: FakeServer,
                                                                     tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[mcp.servers.ghost]\ncommand = "no-such-mcp-server"\n')
    done = run_cli("--config", str(config), "--base-url", server.url, "hello")
    assert done.returncode == 0 and done.stdout.decode() == "echo: hello\n"
    [line] = done.stderr.decode().splitlines()
    assert "ghost" in line and "the chat goes on without its tools" in line


TIME_SERVER = shutil.which("mcp-server-time", path=str(Path(sys.executable).parent)) or shutil.which(
    "mcp-server-time")


@pytest.mark.skipif(TIME_SERVER is None, reason="mcp-server-time (in the test extra) is not installed")
def test_a_time_question_answered_through_mcp_server_time(server: FakeServer, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[mcp.servers.time]\ncommand = {json.dumps(TIME_SERVER)}\n'
                      'args = ["--local-timezone", "UTC"]\n')

    def answer(messages: list[dict[str, Any]]) -> str:
        result = json.loads(messages[-1]["content"])
        return f"It is {result['datetime']} in {result['timezone']}."

    server.replier = calling((("get_current_time", '{"timezone": "UTC"}'),), answer=answer)
    done = run_cli("--config", str(config), "--base-url", server.url, "-y", "What time is it in UTC?")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert f"It is {datetime.now(timezone.utc).year}-" in out and "in UTC." in out
    offered = [t["function"]["name"] for t in server.requests[0]["tools"]]
    assert "get_current_time" in offered


# ---- in a real terminal ----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_the_call_lines_and_the_toolbar_during_a_loop_in_a_real_terminal(server: FakeServer,
                                                                          tmp_path: Path) -> None:
    import pexpect

    from tests.support import prompt_ready, terminal_env

    server.replier = calling((("add", '{"a": 2, "b": 3}'),))
    config = write_config(tmp_path)
    arguments = ["-m", "stateless_chat", "--config", str(config), "--base-url", server.url]
    child = pexpect.spawn(sys.executable, arguments, env=terminal_env(tmp_path), encoding="utf-8", timeout=20,
                          cwd=str(Path(SERVER).parents[1]), dimensions=(30, 120))
    try:
        child.expect("/help for commands")
        prompt_ready(child)
        child.send("add two and three\r")
        child.expect_exact('→ calc.add {"a": 2, "b": 3}')
        child.expect_exact("\x1b[6n")  # where is the cursor? (prompt_toolkit draws its toolbar once told)
        child.send("\x1b[20;1R")
        child.expect_exact("run calc.add?")
        child.expect_exact("tool calls 1")  # the toolbar, drawn with the question
        child.send("y\r")
        child.expect_exact("The tools said: 5")
        prompt_ready(child)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert [m["role"] for m in server.requests[-1]["messages"]] == ["user", "assistant", "tool"]


# ---- recall as a tool ------------------------------------------------------------------------


def test_the_model_recalls_an_evicted_fact_with_the_recall_tool(server: FakeServer,
                                                                 tools: ToolServers) -> None:

    session = make_session(server, budget=500, reply_reserve=64)
    log = attach_journal(session, None)  # logging off: recall searches an index held in memory
    session.tools = Toolbox(tools, [RecallTool(lambda query: log.matches(query, session.conversation),
                                               lambda: session.conversation.evicted)])
    approved: list[str] = []
    session.hooks = replace(session.hooks, approve=lambda call, spec: approved.append(spec.display) is None)
    server.replier = lambda body: "noted"
    session.send("The launch code is 7491, remember it.")
    for i in range(8):
        session.send(f"some other topic number {i} " * 8)
    assert session.conversation.evicted and all("7491" not in m["content"]
                                                 for m in server.requests[-1]["messages"] if m["content"])
    server.replier = calling((("recall_history", '{"query": "launch code"}'),))
    reply = session.send("what was the launch code?")
    assert approved == ["builtin.recall_history"]  # approved like any other tool
    assert "7491" in reply.text and "turn 1" in reply.text
    offered = sorted(t["function"]["name"] for t in server.requests[-1]["tools"])
    assert offered == ["add", "fail", "hang", "huge", "recall_history"]


def test_a_server_tool_named_like_a_builtin_keeps_working(tools: ToolServers) -> None:
    class Fake:
        spec = ToolSpec("builtin", "add", "add", "clash", {"type": "object", "properties": {}})

        def call(self, arguments: str) -> Any:
            raise AssertionError("the server's add must be called")

    box = Toolbox(tools, [Fake()])  # type: ignore[list-item]
    assert "calc_add" in [spec.offered for spec in box.tools()]
    assert box.call("calc_add", '{"a": 1, "b": 2}').text == "3"


def test_the_toolbar_counts_the_tools_array_as_tokens_does(server: FakeServer, tools: ToolServers) -> None:
    from tests.support import toolbar_with_draft

    session = repl_session(server, tools)
    session.make_exact()
    cost = session.tools_tokens(session.tools_offered())
    assert cost > 50
    text, _ = toolbar_with_draft(session, "")
    expected = session.conversation.tokens + 3 + cost  # the reply priming, and the tools array
    assert f"prompt {expected:,} + reply" in text
    run = run_repl(session, ["/tokens\r"], width=160)
    share = re.search(r"\((\d+%)\)", text)
    assert share is not None and f" {share.group(1)} of budget" in run.output  # the share /tokens shows


def test_steps_on_a_terminal_stream_and_end_a_step_s_line() -> None:
    from stateless_chat.ui.steps import Steps

    written: list[str] = []
    said: list[str] = []

    class Line:
        def feed(self, delta: str) -> None:
            written.append(delta)

        def close(self) -> None:
            written.append("\n")

        def abandon(self) -> None:
            written.append("[abandoned]")

    steps = Steps(Line, said.append, hold=False)
    steps.feed("Let me ")
    steps.feed("check.")
    assert written == ["Let me ", "check."]  # streamed as it comes
    assert steps.event(ToolCalled("calc.add", "{}")) and steps.event(ToolAnswered("calc.add", 5))
    steps.feed("The answer.")
    steps.finish()
    assert "".join(written) == "Let me check.\nThe answer.\n"
    assert said == ["→ calc.add {}", "← calc.add: 5 tokens"]


def test_one_shot_starts_no_server_until_a_tool_is_called(server: FakeServer, tmp_path: Path) -> None:
    config = str(write_config(tmp_path, "add", "pids"))
    log = tmp_path / "data" / "stateless-chat" / "mcp-logs" / "calc.log"
    first = run_cli("--config", config, "--base-url", server.url, "hello")  # never seen: started to learn
    assert first.returncode == 0 and log.read_text().count(" starts ") == 1
    hello = run_cli("--config", config, "--base-url", server.url, "hello")
    assert hello.returncode == 0 and hello.stdout.decode() == "echo: hello\n" and hello.stderr == b""
    assert log.read_text().count(" starts ") == 1  # not started: its tools were remembered
    offered = sorted(t["function"]["name"] for t in server.requests[-1]["tools"])
    assert offered == ["add", "pids", "recall_history"]
    assert server.requests[-1]["tools"] == server.requests[0]["tools"]
    server.replier = calling((("add", '{"a": 2, "b": 3}'),))
    called = run_cli("--config", config, "--base-url", server.url, "-y", "add")
    assert called.stdout.decode() == "The tools said: 5\n"
    assert log.read_text().count(" starts ") == 2  # started by the call


@pytest.mark.timeout(90)
def test_the_chat_starts_remembered_servers_in_the_background_and_says_what_failed(server: FakeServer,
                                                                                  tmp_path: Path) -> None:
    import pexpect

    from stateless_chat.tools.toolcache import Remembered, RememberedTool, ToolCache, server_key
    from tests.support import prompt_ready, terminal_env

    config = write_config(tmp_path, "add")
    broken = ["-c", "import sys; sys.exit(3)"]
    with config.open("a") as file:
        file.write(f"[mcp.servers.broken]\ncommand = {json.dumps(sys.executable)}\n"
                   f"args = {json.dumps(broken)}\n")
    run_cli("--config", str(config), "--base-url", server.url, "hello")  # remembers calc's tools
    data = tmp_path / "data" / "stateless-chat"
    tool = RememberedTool("sleep", "a server that no longer starts", {"type": "object", "properties": {}})
    ToolCache(data).put(server_key(sys.executable, broken, {}), Remembered((tool,)))
    calc_log = data / "mcp-logs" / "calc.log"
    starts = calc_log.read_text().count(" starts ")
    server.replier = calling((("add", '{"a": 2, "b": 3}'),))
    arguments = ["-m", "stateless_chat", "--config", str(config), "--base-url", server.url]
    child = pexpect.spawn(sys.executable, arguments, env=terminal_env(tmp_path), encoding="utf-8", timeout=30,
                          cwd=str(Path(SERVER).parents[1]), dimensions=(30, 160))
    try:
        child.expect("/help for commands")
        prompt_ready(child)  # not held up by the servers, which start meanwhile
        child.send("add two and three\r")
        child.expect_exact("run calc.add?")
        child.send("y\r")
        child.expect_exact("The tools said: 5")
        child.expect_exact("mcp server broken failed to start: exited with status 3")
        child.expect_exact("(the chat goes on without its tools)")
        prompt_ready(child)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert calc_log.read_text().count(" starts ") == starts + 1


def test_a_list_that_changed_on_start_is_named_as_the_cache_break_it_causes(server: FakeServer,
                                                                            tmp_path: Path) -> None:
    from stateless_chat.core.messages import CacheBreak
    from stateless_chat.tools.toolcache import Remembered, RememberedTool, ToolCache, server_key

    config = ServerConfig("calc", sys.executable, (SERVER, "--only", "add,env"))
    ghost = RememberedTool("ghost", "gone since", {"type": "object", "properties": {}})
    add = RememberedTool("add", "Add two integers.", {"type": "object", "properties": {}})
    ToolCache(tmp_path).put(server_key(config.command, config.args, config.env), Remembered((add, ghost)))
    with ToolServers({"calc": config}, log_dir=tmp_path / "logs", cache=ToolCache(tmp_path)) as servers:
        session = tool_session(server, servers)
        events = recorded(session)
        server.replier = calling((("add", '{"a": 2, "b": 3}'),))
        session.send("add")
    [first, second] = server.requests
    assert sorted(t["function"]["name"] for t in first["tools"]) == ["add", "ghost"]
    assert sorted(t["function"]["name"] for t in second["tools"]) == ["add", "env"]
    [cache_break] = [e for e in events if isinstance(e, CacheBreak)]
    assert cache_break.cause == "the tools offered changed (added env; removed ghost; changed add)"


def test_one_shot_verbose_shows_a_server_s_log_messages(server: FakeServer, tmp_path: Path) -> None:
    server.replier = calling((("shout", '{"text": "hello from the server"}'),))
    config = str(write_config(tmp_path, "shout"))
    done = run_cli("--config", config, "--base-url", server.url, "-y", "-v", "x")
    assert done.stdout.decode() == "The tools said: logged\n"
    lines = done.stderr.decode().splitlines()
    assert "stateless-chat: mcp server calc logs info: hello from the server" in lines


# ---- images in results -------------------------------------------------------------------------


def image_turn(server: FakeServer, tmp_path: Path, log_to: Path | None = None,
               **settings: Any) -> tuple[Session, list[dict[str, Any]]]:
    """Run a turn whose one step calls the test server's image tool (logged into ``log_to`` when
    given); return the session and the messages of the request after the step."""
    configs = {"pics": ServerConfig("pics", sys.executable, (SERVER, "--only", "image"))}
    servers = ToolServers(configs, log_dir=tmp_path / "logs")
    try:
        assert servers.start() == []
        session = tool_session(server, servers, **settings)
        if log_to is not None:
            attach_journal(session, log_to)

        def replier(body: dict[str, Any]) -> str | Scripted:
            if not any(m["role"] == "tool" for m in body["messages"]):
                return Scripted("", (("call_0", "image", '{"size": 300}'),))
            return "seen"

        server.replier = replier
        session.send("show me")
    finally:
        servers.stop()
    return session, server.requests[-1]["messages"]


def test_an_image_result_goes_to_a_model_that_reads_images_as_an_image_part(server: FakeServer,
                                                                             tmp_path: Path) -> None:
    import base64

    from stateless_chat.store import persist

    session, messages = image_turn(server, tmp_path, model="gpt-4o")
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user"]
    assert messages[2]["content"] == "[image: 300 bytes, image/png]"  # the tool message: text only
    text, image = messages[3]["content"]
    said = "[The images the tool calls above returned (pics.image: 1 image).]"
    assert text == {"type": "text", "text": said}
    assert image["type"] == "image_url"
    assert image["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(b"\x89" * 300).decode()
    [kept] = [e for e in session.conversation.history if e.message.images]
    assert kept.tokens >= 765  # an image is counted as OpenAI prices a 1024x1024 one
    saved = tmp_path / "saved.json"
    persist.save(saved, session.conversation, session.ledger, session.settings)
    fresh = make_session(server, model="gpt-4o")
    fresh.load(*persist.loadable(persist.load(saved)))
    assert fresh.conversation.messages() == session.conversation.messages()  # saved and loaded whole
    from stateless_chat.ui.logview import _body  # what `stateless-chat logs show` prints of it

    assert [line.strip() for line in _body(kept.message.to_api())] == [said, "[image: image/png]"]


@pytest.mark.parametrize("settings", [{"model": "llama3"}, {"model": "gpt-4o", "tool_images": "off"}])
def test_an_image_result_is_only_described_otherwise(server: FakeServer, tmp_path: Path,
                                                     settings: dict[str, Any]) -> None:
    _, messages = image_turn(server, tmp_path, **settings)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[2]["content"] == "[image: 300 bytes, image/png]"


def test_an_image_result_is_logged_and_continued_whole_and_its_base64_is_not_indexed(server: FakeServer,
                                                                                    tmp_path: Path) -> None:
    import base64

    from stateless_chat.store.journal import Journal
    from stateless_chat.store.logstore import LogStore

    session, _ = image_turn(server, tmp_path, tmp_path / "logs.db", model="gpt-4o")
    log = observer(session, Journal)
    assert log is not None
    sent = server.requests[-1]
    encoded = base64.b64encode(b"\x89" * 300).decode()
    with LogStore.open(tmp_path / "logs.db") as store:
        restored = store.restore(log.cid or "")
        assert restored is not None
        assert restored.conversation.messages() == session.conversation.messages()  # images included
        [kept] = [e for e in restored.conversation.history if e.message.images]
        assert kept.message.images[0].data == encoded and kept.message.images[0].mime == "image/png"
        [turn] = store.turns(log.cid or "")
        assert json.loads(store.bodies(log.cid or "", turn.turn)[-1]) == sent  # the body as sent
    with sqlite3.connect(tmp_path / "logs.db") as db:  # the full-text index holds no base64
        indexed = [body for (body,) in db.execute("SELECT body FROM text_bodies")]
    assert indexed and not any(encoded[:40] in body for body in indexed)
    assert any(body.endswith("\n[image: image/png]") for body in indexed)
    with LogStore.open(tmp_path / "logs.db") as store:
        assert [hit.message_id for hit in store.search("images")] == [kept.id]
