"""Tools over MCP: real server processes (tests/mcp_server.py, mcp-server-time), the real SDK.

Nothing of the SDK is mocked. The servers are child processes started through the launcher;
the tests check what the model would be offered, what calls return, and that no child (nor
anything a child started) outlives the chat, however the chat ends.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stateless_chat.errors import ConfigError
from stateless_chat.launchers import MCP_SERVER
from stateless_chat.tools.servers import ToolServers
from stateless_chat.tools.specs import OFFERED_NAME, SERVER_NAME, ServerConfig, offered_names, parse_servers

SERVER = str(Path(__file__).with_name("mcp_server.py"))


def test_server(name: str, *args: str, **options: Any) -> ServerConfig:
    """Return the config of tests/mcp_server.py under ``name``."""
    return ServerConfig(name, sys.executable, (SERVER, *args), **options)


test_server.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def alive(pid: int) -> bool:
    """Return True while ``pid`` is a live process (a zombie is dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def wait_dead(pids: list[int], timeout: float = 5.0) -> list[int]:
    """Wait until every pid is dead; return those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid in pids if alive(pid)]
        if not left:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


def process_ids(servers: ToolServers, offered: str = "pids") -> list[int]:
    """Return the pids of a test server, of its launcher, and of a sleep it starts in its group."""
    ids = json.loads(servers.call(offered, "").text)
    assert ids["pgid"] == ids["ppid"]  # the launcher leads the group the server runs in
    sleeper = int(servers.call(offered.replace("pids", "spawn_sleeper"), "").text)
    return [ids["pid"], ids["ppid"], sleeper]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToolServers]:
    """Two test servers started with OPENAI_API_KEY in our environment: "one" (every tool, an env
    of its own) and "two" (only add and env, so those two names clash)."""
    configs = {
        "one": test_server("one", env={"GREETING": "hello from the config"}),
        "two": test_server("two", "--only", "add,env", approve="always"),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", "sk-test-must-not-leak-0123456789")
        patch.setenv("SOME_OTHER_SECRET", "nor-this")
        tool_servers = ToolServers(configs, log_dir=tmp_path_factory.mktemp("logs"), startup_timeout=20)
        with tool_servers:
            assert tool_servers.start() == []
            yield tool_servers


# ---- configuration ------------------------------------------------------------------------


def test_parse_servers_reads_the_documented_table() -> None:
    raw = {
        "servers": {
            "time": {
                "command": "mcp-server-time",
                "args": ["--local-timezone", "UTC"],
                "env": {"TZ": "UTC"},
                "enabled": True,
                "approve": "ask",
                "tools": {"get_current_time": {"approve": "always"}},
            },
            "off": {"command": "/bin/true", "enabled": False},
        }
    }
    servers = parse_servers(raw, "config.toml")
    assert list(servers) == ["time", "off"]
    time_server = servers["time"]
    assert time_server.args == ("--local-timezone", "UTC")
    assert dict(time_server.env) == {"TZ": "UTC"}
    assert time_server.approval("get_current_time") == "always"
    assert time_server.approval("convert_time") == "ask"
    assert servers["off"].enabled is False and servers["off"].args == ()
    assert parse_servers({}, "config.toml") == {}
    assert "UTC" not in repr(ServerConfig("x", "cmd", env={"TOKEN": "UTC-secret"}))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([], "config.toml: 'mcp' must be a table, got an array"),
        ({"server": {}}, "config.toml: unknown key 'mcp.server' (did you mean 'servers'?)"),
        ({"servers": []}, "config.toml: 'mcp.servers' must be a table, got an array"),
        ({"servers": {"t": "x"}}, "config.toml: 'mcp.servers.t' must be a table, got a string"),
        (
            {"servers": {"t": {"comand": "x"}}},
            "config.toml: unknown key 'mcp.servers.t.comand' (did you mean 'command'?)",
        ),
        (
            {"servers": {"t": {"args": []}}},
            "config.toml: 'mcp.servers.t' has no 'command' (the server's executable)",
        ),
        (
            {"servers": {"t": {"command": ""}}},
            "config.toml: 'mcp.servers.t.command' must be a non-empty string (the server's executable), "
            "got ''",
        ),
        (
            {"servers": {"t": {"command": "x", "args": "-v"}}},
            "config.toml: 'mcp.servers.t.args' must be an array of strings, got '-v'",
        ),
        (
            {"servers": {"t": {"command": "x", "args": ["-p", 8080]}}},
            "config.toml: 'mcp.servers.t.args' must be an array of strings, got ['-p', 8080]",
        ),
        (
            {"servers": {"t": {"command": "x", "enabled": "yes"}}},
            "config.toml: 'mcp.servers.t.enabled' must be a boolean (true or false), got 'yes'",
        ),
        (
            {"servers": {"t": {"command": "x", "approve": "never"}}},
            "config.toml: 'mcp.servers.t.approve' must be \"ask\" or \"always\", got 'never'",
        ),
        (
            {"servers": {"t": {"command": "x", "tools": {"a": {"aprove": "always"}}}}},
            "config.toml: unknown key 'mcp.servers.t.tools.a.aprove' (did you mean 'approve'?)",
        ),
        (
            {"servers": {"t": {"command": "x", "tools": {"a": {"approve": 1}}}}},
            "config.toml: 'mcp.servers.t.tools.a.approve' must be \"ask\" or \"always\", got 1",
        ),
        (
            {"servers": {"my server": {"command": "x"}}},
            "config.toml: 'mcp.servers.\"my server\"': a server name must be 1 to 32 letters, digits, "
            "'-' or '_', starting with a letter or digit",
        ),
    ],
)
def test_parse_servers_names_the_file_and_the_key(raw: object, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_servers(raw, "config.toml")
    assert str(caught.value) == expected


def test_a_bad_env_value_is_named_but_never_shown() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_servers({"servers": {"t": {"command": "x", "env": {"TOKEN": 12345678}}}}, "c.toml")
    assert str(caught.value) == "c.toml: 'mcp.servers.t.env' must be a table of strings, got a table"
    with pytest.raises(ConfigError, match="mcp server t: command must be a non-empty string"):
        ServerConfig("t", " ")


def test_offered_names_prefix_clashes_and_fit_the_api() -> None:
    names = offered_names(
        [("one", "add"), ("two", "add"), ("one", "fail"), ("one", "dotted.name"), ("one", "x" * 80),
         ("a", "b_c"), ("a_b", "c"), ("a", "c"), ("a_b", "b_c")]
    )  # fmt: skip
    assert names["one", "add"] == "one_add" and names["two", "add"] == "two_add"
    assert names["one", "fail"] == "fail"
    assert names["one", "dotted.name"] == "dotted_name"
    assert names["one", "x" * 80] == "x" * 64
    assert len(set(names.values())) == len(names)  # "a_b_c" twice became two hashed names
    assert all(OFFERED_NAME.fullmatch(name) for name in names.values())
    assert offered_names(reversed(list(names))) == names


@settings(max_examples=300, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.from_regex(SERVER_NAME, fullmatch=True), st.text(max_size=80)), max_size=12),
    reserved=st.lists(st.sampled_from(["recall_history", "add", "a_add", "x" * 64, "_"]), max_size=3),
)
def test_offered_names_are_valid_unique_and_free_of_reserved_names_by_construction(
    pairs: list[tuple[str, str]], reserved: list[str]
) -> None:
    names = offered_names(pairs, reserved)
    assert set(names) == set(pairs)
    assert all(OFFERED_NAME.fullmatch(name) for name in names.values())
    assert len(set(names.values())) == len(names) and not set(names.values()) & set(reserved)
    assert offered_names(reversed(pairs), reserved) == names


def test_a_tool_named_like_a_builtin_cannot_clash_with_another_of_its_server() -> None:
    names = offered_names([("srv", "recall history"), ("srv", "srv_recall_history"), ("srv", "ok")],
                          ["recall_history"])
    assert names["srv", "ok"] == "ok"
    assert len(set(names.values())) == 3 and "recall_history" not in names.values()
    assert all(OFFERED_NAME.fullmatch(name) for name in names.values())


# ---- tools and calls --------------------------------------------------------------------------


def test_start_lists_the_tools_with_their_schemas(servers: ToolServers) -> None:
    offered = [spec.offered for spec in servers.tools()]
    assert offered == sorted(offered)
    assert set(offered) == {
        "one_add", "two_add", "one_env", "two_env", "fail", "crash", "hang", "huge", "image",
        "dotted_name", "cancelled", "pids", "spawn_sleeper", "text", "shout", "grow",
    }  # fmt: skip
    add = servers.lookup("one_add")
    assert add is not None and add.name == "add" and add.display == "one.add"
    assert add.description == "Add two integers."
    assert add.input_schema["properties"]["a"]["type"] == "integer"
    assert add.input_schema["required"] == ["a", "b"]
    assert add.approve == "ask" and servers.lookup("two_add").approve == "always"  # type: ignore[union-attr]
    states = [(s.name, s.state, s.tools) for s in servers.status()]
    assert states == [("one", "running", 14), ("two", "running", 2)]


def test_api_tools_are_sorted_and_the_same_bytes_every_time(servers: ToolServers) -> None:
    first = servers.api_tools()
    assert json.dumps(first) == json.dumps(servers.api_tools())
    assert [tool["function"]["name"] for tool in first] == sorted(tool["function"]["name"] for tool in first)
    add = next(tool for tool in first if tool["function"]["name"] == "one_add")
    assert add["type"] == "function" and add["function"]["description"] == "Add two integers."
    parameters = add["function"]["parameters"]
    assert list(parameters) == sorted(parameters) and parameters["type"] == "object"
    parameters["properties"].clear()  # the caller's copy: the next request is not changed by it
    assert json.dumps(first) != json.dumps(servers.api_tools())


def test_calls_answer(servers: ToolServers) -> None:
    assert servers.call("one_add", '{"a": 2, "b": 40}').text == "42"
    assert servers.call("two_add", '{"a": 1, "b": 1}').text == "2"
    assert servers.call("dotted_name", "").text == "dotted"
    result = servers.call("fail", "{}")
    assert result.is_error and result.text == "this tool always fails"
    image = servers.call("image", '{"size": 12345}')
    assert image.text == "[image: 12,345 bytes, image/png]" and not image.is_error


def test_a_huge_result_comes_back_whole(servers: ToolServers) -> None:
    result = servers.call("huge", '{"n": 300000}')
    assert not result.is_error and len(result.text) == 300000 and result.text.startswith("0123456789")


@pytest.mark.parametrize(
    ("offered", "arguments", "expected"),
    [
        ("one_add", "[1, 2]", "cannot call one.add: the arguments must be a JSON object, got an array"),
        ("one_add", '{"a": 1', "cannot call one.add: the arguments are not valid JSON"),
        ("no_such_tool", "{}", "there is no tool named 'no_such_tool'; the tools are: cancelled, crash, "),
        ("one_add", '{"a": "x"}', "Error executing tool add: 2 validation errors"),  # the server's own
    ],
)
def test_what_cannot_be_called_is_an_error_result(
    servers: ToolServers, offered: str, arguments: str, expected: str
) -> None:
    result = servers.call(offered, arguments)
    assert result.is_error and result.text.startswith(expected), result.text


def test_the_child_sees_its_env_and_none_of_ours(servers: ToolServers) -> None:
    assert servers.call("one_env", '{"name": "OPENAI_API_KEY"}').text == "<unset>"
    assert servers.call("two_env", '{"name": "SOME_OTHER_SECRET"}').text == "<unset>"
    assert servers.call("one_env", '{"name": "GREETING"}').text == "hello from the config"
    assert servers.call("two_env", '{"name": "GREETING"}').text == "<unset>"
    assert servers.call("one_env", '{"name": "PATH"}').text == os.environ["PATH"]


def test_calls_from_many_threads_at_once(servers: ToolServers) -> None:
    results: dict[int, str] = {}

    def add(n: int) -> None:
        results[n] = servers.call("one_add" if n % 2 else "two_add", json.dumps({"a": n, "b": 1000})).text

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {n: str(n + 1000) for n in range(8)}


def test_logs_are_private_files(servers: ToolServers) -> None:
    for status in servers.status():
        assert stat.S_IMODE(status.log.stat().st_mode) == 0o600
        assert "test server ready" in status.log.read_text()  # the child's stderr
    assert stat.S_IMODE(servers.log_dir.stat().st_mode) == 0o700


@pytest.mark.timeout(20)
def test_a_call_past_its_timeout_is_cancelled_and_the_server_goes_on(servers: ToolServers) -> None:
    before = int(servers.call("cancelled", "").text)
    started = time.monotonic()
    result = servers.call("hang", '{"seconds": 30}', timeout=0.5)
    assert time.monotonic() - started < 2
    assert result.is_error and result.text == "one.hang did not answer within 0.5 s; the call was cancelled"
    assert servers.call("one_add", '{"a": 1, "b": 2}').text == "3"
    deadline = time.monotonic() + 3
    while int(servers.call("cancelled", "").text) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert int(servers.call("cancelled", "").text) == before + 1  # the server stopped the tool


@pytest.mark.timeout(20)
def test_ctrl_c_while_waiting_returns_at_once_and_cancels_the_call(servers: ToolServers) -> None:
    before = int(servers.call("cancelled", "").text)
    main = threading.get_ident()
    timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
    started = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        servers.call("hang", '{"seconds": 30}', timeout=60)
    assert time.monotonic() - started < 2
    deadline = time.monotonic() + 3
    while int(servers.call("cancelled", "").text) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert int(servers.call("cancelled", "").text) == before + 1
    assert servers.call("one_add", '{"a": 1, "b": 2}').text == "3"


def test_turning_a_server_off_and_on(servers: ToolServers) -> None:
    try:
        assert servers.set_enabled(False, "two") == ["two"]
        assert servers.set_enabled(False, "two") == []
        offered = {spec.offered for spec in servers.tools()}
        assert "add" in offered and "one_add" not in offered and "two_add" not in offered
        assert servers.call("add", '{"a": 1, "b": 2}').text == "3"
        assert servers.call("one_add", '{"a": 1, "b": 2}').text == "3"  # the name it had before
        disabled = servers.call("two_env", '{"name": "X"}')
        assert disabled.is_error and disabled.text == "the mcp server two is disabled (/tools on two)"
        assert [s.state for s in servers.status()] == ["running", "disabled"]
        unknown = r"unknown mcp server 'tow' \(did you mean 'two'\?\); servers: one, two"
        with pytest.raises(ConfigError, match=unknown):
            servers.set_enabled(True, "tow")
    finally:
        assert servers.set_enabled(True) == ["two"]
    assert "two_add" in {spec.offered for spec in servers.tools()}


def test_nothing_of_a_server_reaches_our_terminal(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # --noise: a line on stdout that is not JSON-RPC (the SDK logs it as an error) and more on stderr
    with ToolServers({"noisy": test_server("noisy", "--noise")}, log_dir=tmp_path) as servers:
        assert servers.start() == []
        assert servers.call("add", '{"a": 1, "b": 2}').text == "3"
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    assert "noise on stderr" in (tmp_path / "noisy.log").read_text()


# ---- failures -------------------------------------------------------------------------------------


def test_a_bad_command_is_one_problem_line(tmp_path: Path) -> None:
    early = "import sys; print('no config', file=sys.stderr); sys.exit(2)"
    configs = {
        "missing": ServerConfig("missing", "no-such-binary"),
        "early": ServerConfig("early", sys.executable, ("-c", early)),
    }
    with ToolServers(configs, log_dir=tmp_path) as servers:
        problems = servers.start()
        exited = f"exited with status 2: no config (log: {tmp_path / 'early.log'})"
        missing = (f"command not found: no-such-binary (looked on PATH and in {Path(sys.executable).parent}, "
                   "beside the Python running stateless-chat; give its full path as the command)")
        assert problems == [
            f"mcp server missing failed to start: {missing}",
            f"mcp server early failed to start: {exited}",
        ]
        states = [s.state for s in servers.status()]
        assert states == [f"failed: {missing}", f"failed: {exited}"]
        assert servers.tools() == () and servers.api_tools() == []


@pytest.mark.timeout(60)
def test_a_result_over_the_byte_cap_is_cut_as_it_is_read_and_says_so(tmp_path: Path) -> None:
    configs = {"big": test_server("big", "--only", "text,add")}
    with ToolServers(configs, log_dir=tmp_path, max_result_bytes=64 * 1024, startup_timeout=20) as servers:
        assert servers.start() == []
        for kind in ("words", "letter"):
            result = servers.call("text", json.dumps({"megabytes": 20, "kind": kind}))
            note, _, body = result.text.partition("\n")
            assert not result.is_error
            assert re.fullmatch(r"\[cut: the server sent 20,[05]00,\d{3} bytes, over tool_result_max_bytes; "
                                r"(19,9|20,4)\d\d,\d{3} bytes of its text were not read\]", note), note
            assert 60_000 < len(body.encode()) <= 64 * 1024
            assert body.startswith("lorem" if kind == "words" else "aaa")
        assert servers.call("add", '{"a": 1, "b": 2}').text == "3"  # the connection goes on


@pytest.mark.timeout(60)
def test_a_malformed_tool_list_is_reported_as_such_at_once(tmp_path: Path) -> None:
    configs = {"bad": test_server("bad", "--malformed-list")}
    with ToolServers(configs, log_dir=tmp_path, startup_timeout=40) as servers:
        started = time.monotonic()
        [problem] = servers.start()
        assert time.monotonic() - started < 30  # not the start-up timeout
        assert problem.startswith("mcp server bad failed to start: it sent a malformed tool list (2 problems")


@pytest.mark.timeout(20)
def test_a_server_that_hangs_before_its_handshake_is_stopped_at_the_startup_timeout(tmp_path: Path) -> None:
    configs = {"stuck": test_server("stuck", "--hang-start")}
    with ToolServers(configs, log_dir=tmp_path, startup_timeout=1.5) as servers:
        log = tmp_path / "stuck.log"
        assert servers.start() == [f"mcp server stuck did not answer within 1.5 s (log: {log})"]


@pytest.mark.timeout(20)
def test_a_server_that_never_answers_is_stopped(tmp_path: Path) -> None:
    script = "import os, sys, time; print(os.getpid(), file=sys.stderr, flush=True); time.sleep(60)"
    configs = {"mute": ServerConfig("mute", sys.executable, ("-c", script))}
    with ToolServers(configs, log_dir=tmp_path, startup_timeout=1) as servers:
        started = time.monotonic()
        problems = servers.start()
        assert time.monotonic() - started < 3
        assert problems == [f"mcp server mute did not answer within 1 s (log: {tmp_path / 'mute.log'})"]
        assert servers.status()[0].state == "failed: did not answer within 1 s"
        pid = int(re.findall(r"^(\d+)$", (tmp_path / "mute.log").read_text(), re.MULTILINE)[-1])
        assert wait_dead([pid]) == []


@pytest.mark.timeout(30)
def test_a_crash_is_an_error_result_and_the_other_server_goes_on(tmp_path: Path) -> None:
    configs = {"one": test_server("one"), "two": test_server("two", "--only", "add")}
    with ToolServers(configs, log_dir=tmp_path) as servers:
        assert servers.start() == []
        pids = process_ids(servers)
        crash = servers.call("crash", "")
        log = tmp_path / "one.log"
        stopped = (
            f"the mcp server one has stopped: exited with status 3: test server ready | crash: the test "
            f"server is going down (log: {log})"
        )
        assert crash.is_error and crash.text == stopped
        assert servers.status()[0].state == stopped.replace("the mcp server one has stopped: ", "failed: ")
        assert wait_dead(pids) == []  # the launcher ended the group with the server: the sleep too
        assert servers.call("two_add", '{"a": 1, "b": 2}').text == "3"  # the name the model saw
        again = servers.call("fail", "")
        assert again.is_error and again.text == stopped
        assert [spec.offered for spec in servers.tools()] == ["add"]
        assert servers.start() == []  # a failed server starts again
        assert servers.call("one_add", '{"a": 2, "b": 2}').text == "4"


@pytest.mark.timeout(30)
def test_stop_leaves_no_process_and_a_restart_offers_the_same_bytes(tmp_path: Path) -> None:
    configs = {"one": test_server("one"), "two": test_server("two", "--only", "add,pids,spawn_sleeper")}
    servers = ToolServers(configs, log_dir=tmp_path)
    assert servers.start() == []
    before = json.dumps(servers.api_tools())
    pids = process_ids(servers, "one_pids") + process_ids(servers, "two_pids")
    started = time.monotonic()
    servers.stop()
    assert time.monotonic() - started < 3
    assert wait_dead(pids, timeout=1) == []
    servers.stop()  # idempotent
    assert [s.state for s in servers.status()] == ["stopped", "stopped"]
    result = servers.call("one_add", '{"a": 1, "b": 2}')
    assert result.is_error and result.text == "the mcp server one is not running"
    assert servers.start() == []
    try:
        assert json.dumps(servers.api_tools()) == before
    finally:
        servers.stop()


# A chat that starts a server, reports the pids of the server, its launcher and a sleep the server
# started, then waits in a tool call until it is ended (or, for "exit", returns without stop()).
_CHAT = textwrap.dedent(
    """
    import json, signal, sys
    from pathlib import Path
    from stateless_chat.tools.servers import ServerConfig, ToolServers

    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a terminal, even under nohup
    if sys.argv[3] == "SIGTERM-handled":  # as the CLI does: stop in the handler, then exit
        signal.signal(signal.SIGTERM, lambda *_: (servers.stop(), sys.exit(143)))
    servers = ToolServers(
        {"one": ServerConfig("one", sys.executable, (sys.argv[1],))}, log_dir=Path(sys.argv[2])
    )
    assert servers.start() == []
    ids = json.loads(servers.call("pids", "").text)
    print(json.dumps([ids["pid"], ids["ppid"], int(servers.call("spawn_sleeper", "").text)]), flush=True)
    if sys.argv[3] != "exit":
        servers.call("hang", '{"seconds": 60}', timeout=120)
    """
)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ending", ["exit", "SIGTERM", "SIGTERM-handled", "SIGHUP", "SIGKILL"])
def test_no_child_outlives_the_chat(tmp_path: Path, ending: str) -> None:
    chat = subprocess.Popen(
        [sys.executable, "-c", _CHAT, SERVER, str(tmp_path), ending],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert chat.stdout is not None
        pids = json.loads(chat.stdout.readline())
        assert all(alive(pid) for pid in pids)
        expected = 0
        if ending != "exit":
            sent = getattr(signal, ending.split("-")[0])
            chat.send_signal(sent)
            expected = 143 if ending == "SIGTERM-handled" else -sent
        assert chat.wait(10) == expected  # a handler that stops the servers did not hang
        assert wait_dead(pids) == []
    finally:
        chat.kill()
        chat.wait()


def test_the_launcher_passes_the_environment_through_untouched() -> None:
    env = {"PATH": os.environ["PATH"], "ONLY": "this"}
    command = [sys.executable, "-I", "-S", str(MCP_SERVER), f"pid:{os.getpid()}", "0", "env"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=10,
                          start_new_session=True)
    assert sorted(done.stdout.splitlines()) == ["ONLY=this", f"PATH={env['PATH']}"]  # no LC_CTYPE of Python's
    assert done.stderr == "[stateless-chat] exited with status 0\n"
    assert done.returncode == -signal.SIGKILL  # it ended its own process group


# ---- a third-party server ---------------------------------------------------------------------


def _time_server() -> str | None:
    beside = Path(sys.executable).with_name("mcp-server-time")
    return str(beside) if beside.is_file() else shutil.which("mcp-server-time")


@pytest.mark.timeout(30)
@pytest.mark.skipif(_time_server() is None, reason="mcp-server-time is not installed (the test extra has it)")
def test_mcp_server_time_tells_the_time(tmp_path: Path) -> None:
    command = _time_server()
    assert command is not None
    time_server = {
        "command": command,
        "args": ["--local-timezone", "UTC"],
        "tools": {"get_current_time": {"approve": "always"}},
    }
    raw = {"servers": {"time": time_server}}
    with ToolServers(parse_servers(raw, "config.toml"), log_dir=tmp_path) as servers:
        assert servers.start() == []
        spec = servers.lookup("get_current_time")
        assert spec is not None and spec.display == "time.get_current_time" and spec.approve == "always"
        assert "timezone" in spec.input_schema["properties"]
        result = servers.call("get_current_time", '{"timezone": "UTC"}')
        assert not result.is_error
        assert str(datetime.datetime.now(datetime.timezone.utc).year) in result.text
        assert json.loads(result.text)["timezone"] == "UTC"


# ---- free until used ----------------------------------------------------------------------------


def log_starts(log: Path) -> int:
    """Return how many times a server was started, by the lines its log has for it."""
    return log.read_text().count(" starts ") if log.exists() else 0


@pytest.mark.timeout(60)
def test_a_remembered_list_is_offered_without_starting_and_the_first_call_starts_it(tmp_path: Path) -> None:
    from stateless_chat.tools.toolcache import ToolCache

    configs = {"calc": test_server("calc", "--only", "add,pids", env={"TOKEN": "secret-value-123"})}
    with ToolServers(configs, log_dir=tmp_path / "logs", cache=ToolCache(tmp_path)) as first:
        assert first.unknown() == ["calc"] and first.start() == []
        offered = first.api_tools()
    cache_file = tmp_path / "mcp-tools.json"
    assert stat.S_IMODE(cache_file.stat().st_mode) == 0o600
    assert "secret-value-123" not in cache_file.read_text()  # the environment is only hashed
    log = tmp_path / "logs" / "calc.log"
    assert log_starts(log) == 1
    with ToolServers(configs, log_dir=tmp_path / "logs", cache=ToolCache(tmp_path)) as second:
        assert second.unknown() == [] and second.api_tools() == offered  # the same bytes, no server
        states = [(s.state, s.tools) for s in second.status()]
        assert states == [("not started (starts on its first call)", 2)]
        assert log_starts(log) == 1
        assert second.call("add", '{"a": 2, "b": 3}').text == "5"  # started by its first call
        assert log_starts(log) == 2 and second.status()[0].state == "running"
        assert second.take_notices() == []  # the list is the one remembered
    with ToolServers({"calc": test_server("calc", "--only", "add,pids")}, log_dir=tmp_path / "logs",
                     cache=ToolCache(tmp_path)) as other:
        assert other.unknown() == ["calc"]  # another environment: another server as far as the cache goes


@pytest.mark.timeout(60)
def test_a_list_that_differs_from_the_remembered_one_is_used_and_named(tmp_path: Path) -> None:
    from stateless_chat.tools.toolcache import Remembered, RememberedTool, ToolCache, server_key

    config = test_server("calc", "--only", "add,env")
    ghost = RememberedTool("ghost", "a tool the server no longer has", {"type": "object", "properties": {}})
    add = RememberedTool("add", "old text", {"type": "object", "properties": {}})
    ToolCache(tmp_path).put(server_key(config.command, config.args, config.env), Remembered((add, ghost)))
    told: list[str] = []
    with ToolServers({"calc": config}, log_dir=tmp_path / "logs", cache=ToolCache(tmp_path)) as servers:
        servers.on_notice = told.append
        assert sorted(spec.offered for spec in servers.tools()) == ["add", "ghost"]
        result = servers.call("ghost", "{}")
        assert result.is_error and "no longer has a tool 'ghost'" in result.text
        assert told == ["mcp server calc lists other tools than remembered (1 added (env), 1 removed "
                        "(ghost), 1 changed (add)): they are offered from now on, which changes the tools "
                        "array (a cache break)"]
        assert sorted(spec.offered for spec in servers.tools()) == ["add", "env"]
    with ToolServers({"calc": config}, log_dir=tmp_path / "logs", cache=ToolCache(tmp_path)) as again:
        assert sorted(spec.offered for spec in again.tools()) == ["add", "env"]  # remembered anew


@pytest.mark.timeout(60)
def test_starting_in_the_background_returns_at_once_and_problems_become_notices(tmp_path: Path) -> None:
    configs = {"calc": test_server("calc", "--only", "add"), "ghost": ServerConfig("ghost", "no-such-binary")}
    with ToolServers(configs, log_dir=tmp_path) as servers:
        started = time.monotonic()
        servers.start_background()
        assert time.monotonic() - started < 0.5
        deadline = time.monotonic() + 30
        while servers.status()[0].state != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert servers.call("add", '{"a": 1, "b": 1}').text == "2"
        notices: list[str] = []
        while not notices and time.monotonic() < deadline:  # said once the whole start is over
            notices = servers.take_notices()
            time.sleep(0.05)
        [notice] = notices
        beside = Path(sys.executable).parent
        looked = f"looked on PATH and in {beside}, beside the Python running stateless-chat"
        assert notice == ("mcp server ghost failed to start: command not found: "
                          f"no-such-binary ({looked}; give its full path as the command) "
                          "(the chat goes on without its tools)")


@pytest.mark.timeout(60)
def test_a_list_changed_notification_refetches_the_tools_and_names_the_change(tmp_path: Path) -> None:
    from stateless_chat.tools.toolcache import ToolCache

    configs = {"calc": test_server("calc", "--only", "add,grow,shout")}
    logged: list[str] = []
    with ToolServers(configs, log_dir=tmp_path / "logs", cache=ToolCache(tmp_path)) as servers:
        servers.on_log = logged.append
        assert servers.start() == []
        assert servers.call("shout", '{"text": "hello log"}').text == "logged"
        assert servers.call("grow", '{"name": "fresh"}').text == "added fresh"
        deadline = time.monotonic() + 10
        while "fresh" not in [spec.name for spec in servers.tools()] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert servers.call("fresh", "{}").text == "fresh"
        assert servers.take_notices() == ["mcp server calc changed its tools (1 added (fresh)): they are "
                                          "offered from now on, which changes the tools array (a cache "
                                          "break)"]
        assert logged == ["mcp server calc logs info: hello log"]
        assert "[log] info: hello log" in servers.log_path("calc").read_text()
    with ToolServers(configs, log_dir=tmp_path / "logs", cache=ToolCache(tmp_path)) as again:
        assert "fresh" in [spec.name for spec in again.tools()]  # the new list is remembered
