"""MCP beyond tools, against the MCP project's reference server, ``server-everything`` (npm).

The server is installed by the test run (tests/everything.py: into pytest's cache, once; skipped
with the reason without Node.js and npm). The chat server is the fake one, scripted like a model
that calls the reference server's tools; nothing of the SDK or of the server is mocked.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.chat import asks
from stateless_chat.chat.session import Session
from stateless_chat.core.messages import ToolAnswered, ToolProgress
from stateless_chat.tools.servers import ServerAsk, ToolServers
from stateless_chat.tools.specs import ServerConfig
from stateless_chat.tools.toolbox import Toolbox
from tests.everything import everything
from tests.fakeserver import FakeServer, Scripted
from tests.support import make_session, run_cli, run_repl

SAMPLING_SYSTEM = "You are a helpful test server."  # the reference server's sampling request says so


@pytest.fixture(scope="module")
def command(request: pytest.FixtureRequest) -> list[str]:
    return everything(request.config)


@pytest.fixture(scope="module")
def servers(command: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolServers]:
    config = ServerConfig("ev", command[0], tuple(command[1:]))
    with ToolServers({"ev": config}, log_dir=tmp_path_factory.mktemp("logs"), startup_timeout=60) as started:
        assert started.start() == []
        yield started


def calling(*steps: tuple[str, str], sampled: str = "sampled: the model's answer"
            ) -> Callable[[dict[str, Any]], str | Scripted]:
    """A model that calls ``steps`` (one call per step), answers a sampling request with ``sampled``,
    then answers with the tool results."""

    def replier(body: dict[str, Any]) -> str | Scripted:
        messages = body["messages"]
        if messages[0]["role"] == "system" and messages[0]["content"] == SAMPLING_SYSTEM:
            return sampled
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        done = sum(1 for m in messages[last_user:] if m["role"] == "assistant")
        if "tools" in body and done < len(steps):
            return Scripted("", ((f"call_{done}", *steps[done]),))
        results = [m["content"] for m in messages[last_user:] if m["role"] == "tool"]
        return "The tools said: " + " | ".join(results)

    return replier


def tool_session(server: FakeServer, servers: ToolServers, **settings: Any) -> Session:
    session = make_session(server, **settings)
    session.tools = Toolbox(servers)
    session.hooks = replace(session.hooks, approve=lambda call, spec: True)
    return session


def write_config(tmp_path: Path, command: list[str]) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f"[mcp.servers.ev]\ncommand = {json.dumps(command[0])}\n"
                      f"args = {json.dumps(command[1:])}\n")
    return config


# ---- what the client declares --------------------------------------------------------------------


def test_the_client_declares_roots_sampling_and_elicitation_and_its_root_is_the_working_directory(
    servers: ToolServers,
) -> None:
    offered = {spec.name for spec in servers.tools()}
    # The reference server registers these only for a client that declares the capability.
    assert {"get-roots-list", "trigger-sampling-request", "trigger-elicitation-request"} <= offered
    roots = servers.call("get-roots-list", "{}").text
    assert f"URI: {Path.cwd().as_uri()}" in roots and "(1 total)" in roots


@pytest.mark.timeout(60)
def test_tools_that_require_task_support_are_not_offered(command: list[str]) -> None:
    import anyio
    from mcp.client.client import Client
    from mcp.client.stdio import StdioServerParameters

    async def listed() -> dict[str, str | None]:
        async def sample(context: Any, params: Any) -> Any:
            raise AssertionError

        params = StdioServerParameters(command=command[0], args=command[1:])
        async with Client(params, mode="legacy", cache=None, sampling_callback=sample) as client:
            await anyio.sleep(0.5)
            tools = (await client.list_tools()).tools
            return {t.name: t.execution.task_support if t.execution else None for t in tools}

    raw = anyio.run(listed)
    required = {name for name, support in raw.items() if support == "required"}
    assert required  # the reference server has some (simulate-research-query, ...)
    with ToolServers({"ev": ServerConfig("ev", command[0], tuple(command[1:]))},
                     log_dir=Path(__file__).parent / ".." / ".pytest_cache" / "task-logs") as ours:
        assert ours.start() == []
        assert not required & {spec.name for spec in ours.tools()}


def test_the_server_instructions_are_in_the_stable_block(servers: ToolServers) -> None:
    tools = servers.api_tools()
    descriptions = [t["function"]["description"] for t in tools]
    with_instructions = [d for d in descriptions if "[The ev server's instructions for all its tools: " in d]
    assert len(with_instructions) == 1 and "Everything Server" in with_instructions[0]
    assert with_instructions[0] == descriptions[0]  # the first of its tools, in the sorted array
    assert servers.api_tools() == tools  # the same bytes, request after request


# ---- notifications ----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_progress_reaches_the_turn_live_before_the_result(server: FakeServer, servers: ToolServers) -> None:
    session = tool_session(server, servers)
    events: list[Any] = []
    session.hooks = replace(session.hooks, on_event=events.append)
    servers.on_progress = events.append  # as the chat routes it to the turn's view (the terminal test)
    server.replier = calling(("trigger-long-running-operation", '{"duration": 1.5, "steps": 3}'))
    try:
        reply = session.send("run the long operation")
    finally:
        servers.on_progress = None
    assert "Long running operation completed" in reply.text
    progress = [e for e in events if isinstance(e, ToolProgress)]
    assert [(e.progress, e.total) for e in progress] == [(1, 3), (2, 3), (3, 3)]
    assert events.index(progress[-1]) < next(i for i, e in enumerate(events) if isinstance(e, ToolAnswered))
    assert progress[1].tool == "ev.trigger-long-running-operation"


def test_the_servers_log_messages_go_into_its_log_file(servers: ToolServers) -> None:
    log = servers.log_path("ev").read_text()
    assert "[log] info everything-server: Roots updated: 1 root(s) received from client" in log


# ---- sampling and elicitation ------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_sampling_is_one_more_request_approved_and_billed_with_the_turn(server: FakeServer,
                                                                         servers: ToolServers) -> None:
    session = tool_session(server, servers, reply_reserve=64)
    shown: list[str] = []

    def approve(line: str) -> bool:
        shown.append(line)
        return True

    servers.on_ask = lambda ask: asks.answer(ask, session, approve=approve, prompt=None, note=shown.append)
    server.replier = calling(("trigger-sampling-request", '{"prompt": "say hi", "maxTokens": 100}'))
    try:
        reply = session.send("sample something")
    finally:
        servers.on_ask = None
    [sampling] = [b for b in server.requests if b["messages"][0]["content"] == SAMPLING_SYSTEM]
    assert sampling["messages"][1] == {"role": "user",
                                       "content": "Resource trigger-sampling-request context: say hi"}
    assert sampling["max_tokens"] == 64 and "tools" not in sampling  # the reserve is less than the 100 asked
    assert shown == ["mcp server ev asks the model (at most 100 tokens): Resource trigger-sampling-request "
                     "context: say hi"]
    assert "LLM sampling result" in reply.text and "sampled: the model's answer" in reply.text
    stats = session.ledger.turns[-1]
    turn_requests = [b for b in server.requests if b is not sampling]
    assert stats.steps == len(turn_requests) == 2
    assert stats.summary_prompt_tokens > 0 and stats.summary_completion_tokens > 0  # billed with the turn


@pytest.mark.timeout(60)
def test_a_sampling_request_not_approved_is_refused(server: FakeServer, servers: ToolServers) -> None:
    session = tool_session(server, servers)
    servers.on_ask = lambda ask: asks.answer(ask, session, approve=lambda line: False, prompt=None,
                                             note=lambda line: None)
    server.replier = calling(("trigger-sampling-request", '{"prompt": "say hi"}'))
    try:
        reply = session.send("sample something")
    finally:
        servers.on_ask = None
    assert "sampling refused: the user did not approve it" in reply.text
    assert all(b["messages"][0]["content"] != SAMPLING_SYSTEM for b in server.requests)


@pytest.mark.timeout(60)
def test_elicitation_asks_the_user_field_by_field(server: FakeServer, servers: ToolServers) -> None:
    session = tool_session(server, servers, tool_timeout=2)
    answers = iter(["", "Ada Lovelace", "y", "", "not an email is fine here", "", "", "x", "7", "", "2",
                    "1,3", "", "", "Dogs", "y"])
    questions: list[str] = []
    notes: list[str] = []

    def prompt(question: str) -> str:
        questions.append(question)
        time.sleep(0.2)  # the user takes their time: not counted against tool_timeout
        return next(answers)

    servers.on_ask = lambda ask: asks.answer(ask, session, approve=lambda line: False, prompt=prompt,
                                             note=notes.append)
    server.replier = calling(("trigger-elicitation-request", "{}"))
    try:
        reply = session.send("ask me")
    finally:
        servers.on_ask = None
    assert notes[0] == "mcp server ev asks you: Please provide inputs for the following fields:"
    assert "required: type a value, /decline or /cancel" in notes and "expected a whole number" in notes
    assert questions[0].startswith("  String - Your full, legal name")
    result = json.loads(reply.text.split("Raw result: ", 1)[1])
    assert result["action"] == "accept"
    content = result["content"]
    assert content["name"] == "Ada Lovelace" and content["check"] is True and content["integer"] == 7
    assert content["firstLine"] == "It was a dark and stormy night."  # the default, on Enter
    assert content["untitledSingleSelectEnum"] == "Rachel"
    assert content["untitledMultipleSelectEnum"] == ["Guitar", "Violin"]
    assert content["legacyTitledEnum"] == "pet-2"  # chosen by its label
    assert "birthdate" not in content  # optional, left out


def test_one_shot_declines_elicitation_with_a_note(server: FakeServer, command: list[str],
                                                   tmp_path: Path) -> None:
    config = write_config(tmp_path, command)
    server.replier = calling(("trigger-elicitation-request", "{}"))
    done = run_cli("--config", str(config), "--base-url", server.url, "-y", "ask me")
    assert done.returncode == 0
    assert "User declined to provide the requested information" in done.stdout.decode()
    said = ("stateless-chat: mcp server ev asked for input (Please provide inputs for the following "
            "fields:): declined, as one-shot use has nobody to ask")
    assert said in done.stderr.decode().splitlines()


def test_one_shot_sends_sampling_only_with_yes(server: FakeServer, command: list[str],
                                               tmp_path: Path) -> None:
    config = write_config(tmp_path, command)
    server.replier = calling(("trigger-sampling-request", '{"prompt": "say hi"}'))
    done = run_cli("--config", str(config), "--base-url", server.url, "-y", "sample")
    assert "sampled: the model's answer" in done.stdout.decode()
    with config.open("a") as file:
        file.write('approve = "always"\n')  # the server's tools run without --yes; sampling does not
    server.replier = calling(("trigger-sampling-request", '{"prompt": "say hi"}'))
    refused = run_cli("--config", str(config), "--base-url", server.url, "sample")
    lines = refused.stderr.decode().splitlines()
    assert "stateless-chat: not sent: one-shot use sends a server's requests to the model only with " \
           "--yes" in lines
    assert "sampling refused: the user did not approve it" in refused.stdout.decode()


# ---- resources and prompts ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_resources_are_listed_and_attached_as_a_message(server: FakeServer, servers: ToolServers) -> None:
    session = tool_session(server, servers)
    run = run_repl(session, ["/resources\r", "/attach ev:demo://resource/dynamic/text/3\r", "what is it?\r"],
                   width=300)
    assert "ev:demo://resource/dynamic/text/{resourceId}  (template) Dynamic Text Resource" in run.output
    assert re.search(r"ev:demo://resource/static/document/\S+", run.output)
    assert "added ev:demo://resource/dynamic/text/3 as #1" in run.output
    sent = server.requests[-1]["messages"]
    assert sent[0]["content"].startswith("File: ev:demo://resource/dynamic/text/3\n\nResource 3: This is a "
                                         "plaintext resource")


@pytest.mark.timeout(60)
def test_the_model_reads_a_resource_a_result_links_to(server: FakeServer, servers: ToolServers) -> None:
    session = tool_session(server, servers)
    server.replier = calling(("get-resource-links", '{"count": 2}'),
                             ("read_resource", '{"server": "ev", "uri": "demo://resource/dynamic/text/2"}'))
    reply = session.send("follow the link")
    assert "[resource link: demo://resource/dynamic/text/2 (Text Resource 2, text/plain); the " \
           "read_resource tool reads it]" in reply.text
    assert "Resource 2: This is a plaintext resource" in reply.text
    assert "read_resource" in [t["function"]["name"] for t in server.requests[0]["tools"]]


@pytest.mark.timeout(60)
def test_prompts_are_listed_and_sent_as_a_message(server: FakeServer, servers: ToolServers) -> None:
    session = tool_session(server, servers)
    keys = ["/prompts\r", "/prompt ev.args-prompt city=Paris state=Texas\r", "/prompt ev.args-prompt Lyon\r",
            "/prompt ev.args-prompt\r", "/prompt ev.nope\r"]
    run = run_repl(session, keys, width=300)
    assert "ev.args-prompt city [state]  A prompt with two arguments" in run.output
    assert "ev.simple-prompt" in run.output
    users = [m["content"] for b in server.requests for m in b["messages"][-1:] if m["role"] == "user"]
    assert users == ["What's weather in Paris, Texas?", "What's weather in Lyon?"]
    assert "the prompt needs city" in run.output and "has no prompt 'nope'" in run.output


def test_an_image_result_goes_to_a_model_that_reads_images(server: FakeServer, servers: ToolServers) -> None:
    result = servers.call("get-tiny-image", "{}")
    assert "[image: " in result.text and "bytes, image/png]" in result.text and len(result.images) == 1
    session = tool_session(server, servers, model="gpt-4o")
    replier = calling(("get-tiny-image", "{}"))
    server.replier = lambda body: "seen" if body["messages"][-1]["role"] == "user" and \
        isinstance(body["messages"][-1]["content"], list) else replier(body)
    session.send("show me the logo")
    last = server.requests[-1]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "tool", "user"]
    text, image = last[-1]["content"]
    assert text["text"] == "[The images the tool calls above returned (ev.get-tiny-image: 1 image).]"
    assert image["image_url"]["url"].startswith("data:image/png;base64,iVBORw0KGgo")  # a PNG


# ---- in a real terminal ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_the_chat_shows_progress_and_asks_for_elicitation_in_a_terminal(
    server: FakeServer, command: list[str], tmp_path: Path
) -> None:
    import pexpect

    from tests.support import prompt_ready, terminal_env

    config = write_config(tmp_path, command)
    server.replier = calling(("trigger-long-running-operation", '{"duration": 3, "steps": 3}'),
                             ("trigger-elicitation-request", "{}"))
    arguments = ["-m", "stateless_chat", "--config", str(config), "--base-url", server.url, "-y"]
    child = pexpect.spawn(sys.executable, arguments, env=terminal_env(tmp_path), encoding="utf-8", timeout=30,
                          cwd=str(Path(__file__).parents[1]), dimensions=(30, 200))
    try:
        child.expect("/help for commands")
        prompt_ready(child)
        child.send("go\r")
        child.expect_exact("→ ev.trigger-long-running-operation")
        child.expect_exact("… ev.trigger-long-running-operation 2/3 (67%)")  # live, on the spinner's line
        child.expect_exact("mcp server ev asks you: Please provide inputs")
        child.expect_exact("String - Your full, legal name")
        child.send("/decline\r")
        child.expect_exact("User declined to provide the requested information")
        prompt_ready(child)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_server_asks_outside_a_call_are_refused() -> None:
    ask = ServerAsk("ev", "elicitation", None, "ev")
    assert asks.refusal(ask, "x").action == "decline"
