"""Hostile servers, files, configs and signals: what an adversarial pass broke, one test (or more) per case.

Hostile servers are written for the purpose (``tests/hostileserver.py``, or the fake server's
fault switches) and driven through the real openai client; crafted files, configs, argv and
signals go through the real command. The sections follow the issue: crashes that lose the
conversation, security, liveness and limits, and the smaller list.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pexpect
import pytest
from rich.console import Console

from stateless_chat.config import DEFAULT_MAX_REPLY_BYTES, Settings, load_settings
from stateless_chat.errors import ChatError, ReplyTooLarge, StreamError
from stateless_chat.store import persist
from stateless_chat.ui.render import Renderer
from stateless_chat.ui.repl import SharedFileHistory, secure_file_history
from stateless_chat.wire.failover import Failover
from stateless_chat.wire.local import LocalServer
from stateless_chat.wire.openai_backend import OpenAIBackend
from tests import hostileserver as hs
from tests.fakellama import SERVING, fake_llama, fake_python, model_like, write
from tests.fakeserver import FakeServer
from tests.support import ROOT, make_session, prompt_ready, repl_for, run_cli, run_process, run_repl, state

KEY = "sk-test-" + "L3akyK3y" * 3
PASSWORD = "pw-" + "Hunter2Secret" * 2
# Every way a string can act on a terminal: OSC 52 (clipboard), OSC 0 (title), clear screen,
# C1 CSI and OSC, a DCS string, BEL. The words inside the strings must never show.
HOSTILE = ("A\x1b]52;c;Q0xJUEJPQVJE\x07B\x1b]0;PWNEDTITLE\x1b\\C\x1b[2J\x1b[HD\x9b2J"
           "E\x9d0;C1TITLE\x9cF\x1bPDCSBODY\x1b\\G\x07H")
PAYLOADS = ("Q0xJUEJPQVJE", "PWNEDTITLE", "C1TITLE", "DCSBODY")


def assert_clean(text: str, *, payloads: bool = True) -> None:
    """Fail if ``text`` holds anything that acts on a terminal (a carriage return aside: Rich's live view
    writes its own), or (with ``payloads``) text that should have gone with a stripped sequence."""
    found = re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", text)
    assert found is None, f"{found.group()!r} reached the terminal: {text!r}"
    for payload in PAYLOADS if payloads else ():
        assert payload not in text, text


def settings_file(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def second() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


# ==== 1-3: crashes that lose the conversation ==================================================


BAD_USAGE = ['{"prompt_tokens": "12", "completion_tokens": 7}',
             '{"prompt_tokens": 1e999, "completion_tokens": 7}',
             '{"prompt_tokens": 12.5, "completion_tokens": -3}',
             '{"prompt_tokens": true, "completion_tokens": [1]}',
             '"lots"']


@pytest.mark.parametrize("usage", BAD_USAGE, ids=["string", "1e999", "fraction-negative", "bool-list",
                                                  "text"])
@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "no-stream"])
def test_usage_that_is_not_a_whole_number_is_ignored_with_one_note(usage: str, streamed: bool) -> None:
    """Item 1: the reply is kept, the chat goes on, one note per session says the usage was ignored."""
    def respond(handler: BaseHTTPRequestHandler) -> None:
        if streamed:
            hs.stream(handler, hs.reply_stream("the answer", usage))
        else:
            hs.send(handler, 200, hs.completion("the answer", usage))

    with hs.Hostile(respond) as server:
        session = make_session(server, stream=streamed)
        run = run_repl(session, ["first\r", "second\r"])
    assert run.exit_code == 0
    assert "Traceback" not in run.output and "internal error" not in run.output
    assert run.output.count("the answer") == 2
    assert run.output.count(": ignored") == 1, run.output
    assert [e.role for e in session.conversation.history] == ["user", "assistant"] * 2
    stats = session.ledger.turns[-1]
    for value in (stats.reported_prompt_tokens, stats.reported_completion_tokens):
        assert value is None or (isinstance(value, int) and value >= 0)


def test_hostile_usage_round_trips_through_save_and_load(server: FakeServer, tmp_path: Path) -> None:
    """Item 3: what we write we read back, whatever usage the server reported."""
    path = tmp_path / "chat.json"
    for usage in ({"prompt_tokens": 12.5, "completion_tokens": 3},
                  {"prompt_tokens": float("inf"), "completion_tokens": "7"},
                  {"prompt_tokens": -1, "completion_tokens": 1e300}):
        server.usage_override = usage
        done = run_cli("--base-url", server.url, "--save", str(path), "-v", "hello", "--no-stream")
        assert done.returncode == 0, done.stderr
        assert b"ignored" in done.stderr
    saved = persist.load(path)
    assert len(saved.conversation.history) == 6 and len(saved.ledger.turns) == 3
    assert json.loads(path.read_text())["totals"]["turns"][0]["reported_prompt_tokens"] is None


def nested_conversation(depth: int) -> str:
    head = '{"format": "stateless-chat/conversation", "version": 2, "messages": '
    return head + "[" * depth + "]" * depth + "}"


def test_a_deeply_nested_file_is_one_line(server: FakeServer, tmp_path: Path) -> None:
    """Item 2: 3,000 levels of nesting in 6 KB: one line, for --load and /load."""
    path = tmp_path / "deep.json"
    path.write_text(nested_conversation(3000))
    done = run_cli("--base-url", server.url, "--load", str(path), "hi")
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [f"stateless-chat: {path}: nested too deeply to be a "
                                                 "conversation file"]
    session = make_session(server)
    run = run_repl(session, ["hello\r", f"/load {path}\r", "again\r"])
    assert "nested too deeply" in run.output and "Traceback" not in run.output
    assert len(session.conversation.history) == 4  # the chat went on


@pytest.mark.parametrize("where", ["/dev/zero", "fifo", "directory", "huge"])
def test_a_file_that_is_no_conversation_is_refused_before_it_is_read(server: FakeServer, tmp_path: Path,
                                                                     where: str) -> None:
    """Item 2: /load /dev/zero read until memory ran out; a fifo would block; 64 MB is the limit."""
    path = Path(where) if where.startswith("/") else tmp_path / where
    if where == "fifo":
        os.mkfifo(path)
    elif where == "directory":
        path.mkdir()
    elif where == "huge":
        with open(path, "wb") as file:
            file.truncate(persist.MAX_SAVE_BYTES + 1)  # sparse: no disk used
    session = make_session(server)
    run = run_repl(session, ["hello\r", f"/load {path}\r", "again\r"], width=400)
    [line] = [line for line in run.output.splitlines() if line.startswith("error:")]
    assert str(path) in line and ("not a regular file" in line or "too large" in line), line
    assert len(session.conversation.history) == 4
    done = run_cli("--base-url", server.url, "--load", str(path), "hi")
    assert done.returncode == 2 and len(done.stderr.decode().splitlines()) == 1


@pytest.mark.parametrize("text", ["a = " + "[" * 3000 + "]" * 3000,
                                  "a = " + "{b = " * 3000 + "1" + "}" * 3000,
                                  "# big\n" + "#" * (2 * 1024 * 1024)], ids=["arrays", "tables", "2 MB"])
def test_a_deeply_nested_or_huge_config_is_one_line(tmp_path: Path, text: str) -> None:
    """Item 2: a deeply nested config gave a traceback (tomllib recurses)."""
    path = settings_file(tmp_path, text)
    done = run_cli("--config", str(path), "--dry-run", "hi")
    assert done.returncode == 2
    [line] = done.stderr.decode().splitlines()
    assert line.startswith(f"stateless-chat: {path}")
    assert "nested too deeply" in line or "larger than" in line


# ==== 4: every string that reaches the terminal is sanitized =================================


def hostile_save_file(server: FakeServer, tmp_path: Path) -> Path:
    """Return a save file whose every free text (model, system, messages, file source) is ``HOSTILE``."""
    session = make_session(server)
    run_repl(session, ["hello\r"])
    path = tmp_path / "hostile.json"
    persist.save(path, *state(session))
    data = json.loads(path.read_text())
    data["settings"].update(model="gpt" + HOSTILE, system="sys" + HOSTILE)
    data["system"] = {"id": 0, "role": "system", "content": "sys" + HOSTILE, "turn": 0, "pinned": True,
                      "kind": "turn", "source": None, "tokens": 1}
    data["messages"][0].update(kind="file", source="notes" + HOSTILE, content="File: x\n\n" + HOSTILE)
    data["messages"][1].update(content="reply" + HOSTILE)
    path.write_text(json.dumps(data))
    return path


def test_the_start_up_banner_and_the_chat_show_no_control_from_a_loaded_file(server: FakeServer,
                                                                               tmp_path: Path) -> None:
    """Item 4: the banner printed the loaded model name raw (title, clear screen, OSC 52)."""
    path = hostile_save_file(server, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(PYTHONPATH=str(ROOT), TERM="xterm-256color", HOME=str(tmp_path / "home"),
               XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    args = ["-m", "stateless_chat", "--base-url", server.url, "--load", str(path)]
    child = pexpect.spawn(sys.executable, args, env=env, cwd=str(ROOT), encoding="utf-8", timeout=20,
                          dimensions=(40, 200))
    child.expect("/help for commands")
    banner = child.before + child.after
    prompt_ready(child)
    child.send("/history\r")
    child.expect("first line")
    prompt_ready(child)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    shown = banner + (child.before or "")
    assert "gptABCD" in banner  # the visible characters of the name remain
    for sequence in ("\x1b]", "\x9d", "\x9b", "\x1bP", "\x07", "\x1b[2J", "\x1b[H"):
        assert sequence not in shown, (sequence, shown)
    for payload in PAYLOADS:
        assert payload not in banner


def test_every_repl_view_of_a_hostile_file_is_clean(server: FakeServer, tmp_path: Path) -> None:
    """Item 4, the REPL's lines: commands' output, the reply views, events and notes, on a terminal."""
    path = hostile_save_file(server, tmp_path)
    session = make_session(server, max_retries=1)
    server.fail_next(1, status=503, retry_after=0, body="proxy says " + HOSTILE)  # a retry event line
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=True, color_system=None, highlight=False)
    keys = [f"/load {path}\r", "/model\r", "/system\r", "/history all\r", "/show 1\r", "/show 2\r",
            "/files\r", "/tokens\r", "next\r"]  # /raw: JSON-escaped (test_hostile_input.py); /stats: numbers
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        pipe.send_text("".join(keys) + "\x04")
        repl = repl_for(session, console, input=pipe, output=DummyOutput())
        assert repl.run() == 0
    output = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buffer.getvalue())  # Rich's own styling and cursor
    assert_clean(output)
    assert "retry 1/1" in output and "proxy says" in output and "echo: next" in output


def test_renderer_lines_are_sanitized_whatever_they_quote() -> None:
    """Item 4: events, notes and errors may quote a server, a file or argv."""
    from stateless_chat.core.messages import FailedOver, Notice, Retrying

    buffer = io.StringIO()
    renderer = Renderer(Console(file=buffer, width=300, force_terminal=True, color_system=None))
    renderer.event(Retrying(HOSTILE, 1, 2, 0.5, HOSTILE))
    renderer.event(FailedOver(HOSTILE, HOSTILE, HOSTILE))
    renderer.event(Notice(HOSTILE + "\udcff"))
    renderer.note(HOSTILE)
    renderer.error(HOSTILE)
    output = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buffer.getvalue())
    assert_clean(output)
    assert "\ufffd" in output and output.count("ABCDEFGH") == 8


@pytest.mark.parametrize("case", ["load-path", "save-path", "model-in-error", "local-model", "config-path"])
def test_one_shot_lines_are_sanitized(server: FakeServer, tmp_path: Path, case: str) -> None:
    """Item 4, stderr: errors quoting a path, a model name a server echoes, a file name."""
    hostile = str(tmp_path / f"x{HOSTILE}")
    args = {
        "load-path": ["--base-url", server.url, "--load", hostile + ".json", "hi"],
        "save-path": ["--base-url", server.url, "--save", hostile + "/dir/chat.json", "hi"],
        "model-in-error": ["--base-url", server.url, "-m", HOSTILE, "-v", "hi"],
        "local-model": ["--local-model", hostile + ".gguf", "hi"],
        "config-path": ["--config", hostile + ".toml", "hi"],
    }[case]
    if case == "model-in-error":
        server.fail_next(1, status=404, body={"error": {"message": f"The model `{HOSTILE}` does not exist"}})
    if case == "save-path":
        Path(hostile).write_text("a file where a directory should be")
    done = run_cli(*args)
    assert done.returncode != 0
    error = done.stderr.decode()
    assert len(error.splitlines()) == 1, error
    # A config path that is not printable is shown as its repr (escaped, so inert); the rest, stripped.
    assert_clean(error.replace("\n", " "), payloads=case != "config-path")
    assert "ABCDEFGH" in error or case == "config-path", error


@pytest.mark.parametrize("args", [["a", HOSTILE], [f"--bogus{HOSTILE}", "hi"], ["--budget", HOSTILE, "hi"],
                                  ["--policy", HOSTILE, "--dry-run", "hi"]],
                         ids=["extra-argument", "unknown-option", "bad-number", "bad-choice"])
def test_usage_errors_quote_the_command_line_inertly(args: list[str]) -> None:
    """Item 4, the command line: what Typer/click and our flag checks echo is escaped, never raw."""
    done = run_cli(*args)
    assert done.returncode == 2
    assert_clean(done.stderr.decode().replace("\n", " "), payloads=False)


# ==== 5: URL credentials ======================================================================


def test_url_credentials_never_show_and_are_sent_as_basic_auth(server: FakeServer, second: FakeServer,
                                                               tmp_path: Path) -> None:
    """Item 5: the password was printed in every retry, failover and error line and saved; the key
    given alongside was silently not sent. Now: Basic auth, said once; never shown or saved."""
    first = server.url.replace("http://", f"http://user:{PASSWORD}@")
    backup = second.url.replace("http://", f"http://user:{PASSWORD}@")
    server.fail_next(2, status=503, retry_after=0, body={"error": {"message": "overloaded"}})
    config = settings_file(tmp_path, f'max_retries = 1\nbase_urls = ["{first}", "{backup}"]\n')
    path = tmp_path / "chat.json"
    done = run_cli("--config", str(config), "-v", "--save", str(path), "hi", env={"OPENAI_API_KEY": KEY})
    assert done.returncode == 0, done.stderr
    error = done.stderr.decode()
    assert "retry 1/1" in error and "sending the same request" in error
    assert "HTTP Basic auth" in error  # the key is not sent there, and that is said
    basic = "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    assert second.request_headers[0]["authorization"] == basic
    for text in (error, done.stdout.decode(), path.read_text()):
        assert PASSWORD not in text and "Hunter2" not in text
    saved = json.loads(path.read_text())["settings"]
    assert saved["base_urls"] == [server.url, second.url]


def test_url_credentials_are_not_echoed_by_config_errors_or_hints(server: FakeServer) -> None:
    """Item 5: a bad URL is echoed without its password; so is the 404 hint that quotes the base URL."""
    done = run_cli("--base-url", f"http://user:{PASSWORD}@127.0.0.1:notaport/v1", "hi")
    assert done.returncode == 2 and b"127.0.0.1:notaport" in done.stderr and b"Hunter2" not in done.stderr
    root = server.url.removesuffix("/v1").replace("http://", f"http://user:{PASSWORD}@")
    done = run_cli("--base-url", root, "hi")
    assert done.returncode == 1 and b"does the base URL need /v1" in done.stderr
    assert b"Hunter2" not in done.stderr


def test_redact_masks_url_passwords_bearer_tokens_and_every_key_given() -> None:
    from stateless_chat.errors import keep_secret, redact

    keep_secret("sk-" + "kept" * 4)
    text = redact(f"at https://me:{PASSWORD}@host/v1 with Bearer abcdefghijk and sk-{'kept' * 4} and local")
    assert PASSWORD not in text and "abcdefghijk" not in text and "kept" not in text
    assert "https://me:***@host/v1" in text and "local" in text


# ==== 6: --debug tracebacks are redacted =======================================================


def test_debug_traceback_of_a_key_echoed_mid_stream_is_redacted() -> None:
    """Item 6: the one-line message was redacted, ``--debug``'s traceback printed the key in full."""
    echo = f"invalid api key {KEY} (Authorization: Bearer {KEY})\x1b]0;{PAYLOADS[1]}\x07"

    def respond(handler: BaseHTTPRequestHandler) -> None:
        hs.stream(handler, [hs.event(hs.delta("partial ")), hs.event({"error": {"message": echo}})])

    with hs.Hostile(respond) as server:
        plain = run_process("--base-url", server.url, "hi", env={"OPENAI_API_KEY": KEY})
        debug = run_process("--base-url", server.url, "--debug", "hi", env={"OPENAI_API_KEY": KEY})
    assert plain.returncode == debug.returncode == 1
    assert len(plain.stderr.decode().splitlines()) == 1
    trace = debug.stderr.decode()
    assert "Traceback" in trace and "APIError" in trace and "***" in trace
    assert "L3akyK3y" not in trace and PAYLOADS[1] not in trace and "\x1b" not in trace


def test_a_bug_traceback_in_the_repl_is_redacted(server: FakeServer) -> None:
    session = make_session(server, api_key=KEY)
    buffer = io.StringIO()
    from prompt_toolkit.output import DummyOutput

    repl = repl_for(session, Console(file=buffer, width=200), output=DummyOutput(), debug=True)
    try:
        raise ValueError(f"boom with {KEY}\x1b]0;{PAYLOADS[1]}\x07")
    except ValueError as error:
        repl.bug(error)
    assert "Traceback" in buffer.getvalue() and "L3akyK3y" not in buffer.getvalue()
    assert_clean(buffer.getvalue().replace("\n", " "))


# ==== 7: only regular files are written or chmod-ed ============================================


@pytest.fixture
def special(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A path that is not a regular file: a fifo, a directory, a symlink to a fifo, a character device."""
    kind = request.param
    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink-to-fifo":
        os.mkfifo(tmp_path / "target")
        path.symlink_to(tmp_path / "target")
    else:
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a null device of our own
        except (PermissionError, AttributeError):
            pytest.skip("making a device node needs root")
        path.chmod(0o666)
    return path


SPECIAL = ["fifo", "directory", "symlink-to-fifo", "device"]


@pytest.mark.parametrize("special", SPECIAL, indirect=True)
def test_save_and_export_refuse_what_is_not_a_regular_file(server: FakeServer, special: Path) -> None:
    """Item 7: as root, /save onto a device replaced the device with a regular file."""
    before = os.lstat(special)
    session = make_session(server)
    run = run_repl(session, ["hello\r", f"/save {special}\r", f"/export {special}\r"], width=400)
    errors = [line for line in run.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("not a regular file" in line for line in errors), run.output
    after = os.lstat(special)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)
    done = run_cli("--base-url", server.url, "--save", str(special), "hi")
    assert done.returncode != 0 and len(done.stderr.decode().splitlines()) == 1
    assert os.lstat(special).st_mode == before.st_mode


@pytest.mark.parametrize("special", SPECIAL, indirect=True)
def test_a_history_file_that_is_not_a_regular_file_is_left_alone(special: Path) -> None:
    """Item 7: ``history_file = "/dev/null"`` made the chat chmod the device to 0600."""
    target = special.resolve()
    before = os.stat(target) if not special.is_dir() else os.lstat(special)
    notes: list[str] = []
    history = secure_file_history(special, notes.append)
    assert not isinstance(history, SharedFileHistory)
    assert len(notes) == 1 and "not a regular file" in notes[0] and "memory" in notes[0]
    after = os.stat(target) if not special.is_dir() else os.lstat(special)
    assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode)


def test_the_repl_says_once_that_the_history_file_is_unusable(server: FakeServer, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    buffer = io.StringIO()
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        pipe.send_text("hi\r\x04")
        repl = repl_for(make_session(server), Console(file=buffer, width=200), input=pipe,
                        output=DummyOutput(), history_path=tmp_path / "fifo")
        assert repl.run() == 0
    assert buffer.getvalue().count("not a regular file") == 1 and "echo: hi" in buffer.getvalue()


# ==== 8: keys, the local child's environment, redirects ========================================


def test_the_local_server_child_gets_no_openai_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 8: OPENAI_API_KEY was passed into the llama.cpp child's environment."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://example.invalid/v1")
    monkeypatch.setenv("UNRELATED_SETTING", "kept")
    script = ("import os, sys\n"
              "print('ENV', sorted(k for k in os.environ if k.startswith('OPENAI')), "
              "os.environ.get('UNRELATED_SETTING'), flush=True)\n"
              "sys.exit(1)\n")
    model = write(tmp_path, model_like(ctx=4096).build())
    server = LocalServer(model, python=fake_python(tmp_path, script), startup_timeout=10)
    with pytest.raises(ChatError) as raised:
        server.start()
    assert "ENV [] kept" in str(raised.value)


def test_each_endpoint_is_sent_its_own_key_or_the_default(server: FakeServer, second: FakeServer,
                                                         tmp_path: Path) -> None:
    """Item 8: the one key was sent to every failover endpoint; a base_urls entry may carry its own."""
    third = FakeServer()
    try:
        for fake in (server, second):
            fake.fail_next(1, status=500)
        config = settings_file(tmp_path, "max_retries = 0\nbase_urls = [\n"
                               f'  {{ url = "{server.url}", api_key = "sk-first-endpoint-key" }},\n'
                               f'  {{ url = "{second.url}", api_key = "" }},\n'
                               f'  "{third.url}",\n]\n')
        done = run_cli("--config", str(config), "-v", "hi", env={"OPENAI_API_KEY": KEY})
        assert done.returncode == 0, done.stderr
        assert server.request_headers[0]["authorization"] == "Bearer sk-first-endpoint-key"
        assert second.request_headers[0]["authorization"] == "Bearer sk-no-key-needed"  # "" sends none
        assert third.request_headers[0]["authorization"] == f"Bearer {KEY}"  # no key of its own: the default
        assert b"first-endpoint" not in done.stderr
        settings = load_settings(config, {}, {})
        assert "first-endpoint" not in repr(settings)
        assert settings.key_for(server.url) == "sk-first-endpoint-key" and settings.key_for(third.url) is None
    finally:
        third.stop()


@pytest.mark.parametrize("table", ['{ url = "http://h/v1", key = "x" }', '{ api_key = "x" }',
                                   '{ url = "http://h/v1", api_key = "bad key" }', '{ url = 3 }'])
def test_a_malformed_endpoint_table_is_one_line_without_the_key(tmp_path: Path, table: str) -> None:
    config = settings_file(tmp_path, f"base_urls = [{table}]\n")
    done = run_cli("--config", str(config), "--dry-run", "hi")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert b"bad key" not in done.stderr


@pytest.mark.parametrize("status", [307, 308, 302])
def test_a_redirect_to_another_origin_is_refused(server: FakeServer, status: int) -> None:
    """Item 8: a 307/308 to another host silently sent it the whole conversation."""
    def respond(handler: BaseHTTPRequestHandler) -> None:
        hs.send(handler, status, b"", {"Location": f"{server.url}/chat/completions"})

    with hs.Hostile(respond) as hostile:
        done = run_cli("--base-url", hostile.url, "secret conversation")
        assert len(hostile.requests) == 1  # not retried either
    assert done.returncode == 1
    [line] = done.stderr.decode().splitlines()
    assert f"answered {status}, redirecting to {server.url}/chat/completions" in line
    assert "not followed" in line
    assert server.requests == []


def test_a_redirect_within_the_origin_is_followed() -> None:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        if handler.path == "/v1/chat/completions":
            hs.send(handler, 307, b"", {"Location": "/v2/chat/completions"})
        else:
            hs.send(handler, 200, hs.completion("moved but same origin"))

    with hs.Hostile(respond) as hostile:
        done = run_cli("--base-url", hostile.url, "--no-stream", "hi")
        assert len(hostile.requests) == 2 and hostile.requests[1]["messages"][0]["content"] == "hi"
    assert done.returncode == 0 and done.stdout == b"moved but same origin\n"


# ==== 9-11: liveness and limits ===============================================================


@pytest.mark.parametrize("after", [0, 1], ids=["after-headers", "after-role-chunk"])
def test_a_stream_that_breaks_before_its_first_token_is_retried_and_fails_over(
        server: FakeServer, second: FakeServer, after: int) -> None:
    """Item 9: a reset after the 200 headers, before any token, was neither retried nor failed over."""
    server.cut_stream_next(after_chunks=after)
    session = make_session(server, max_retries=1)
    assert session.send("hi").text == "echo: hi"
    assert len(server.requests) == 2

    server.cut_stream_next(after_chunks=after)
    backends = [OpenAIBackend(server.url, None, timeout=10), OpenAIBackend(second.url, None, timeout=10)]
    backend = Failover(backends, max_retries=0)
    session = make_session(server)
    session.backend = backend
    assert session.send("again").text == "echo: again"
    assert len(second.requests) == 1


def test_a_keep_alive_trickle_is_bounded_by_timeout_and_fails_over(server: FakeServer,
                                                                   tmp_path: Path) -> None:
    """Item 10: ``: keep-alive`` comments every fraction of a second hung a one-shot forever."""
    stop = threading.Event()

    def respond(handler: BaseHTTPRequestHandler) -> None:
        hs.stream_head(handler)
        handler.wfile.write(hs.event(hs.delta("")))  # a role chunk: no token
        while not stop.is_set():
            handler.wfile.write(b": keep-alive\n\n")
            handler.wfile.flush()
            stop.wait(0.1)

    with hs.Hostile(respond) as hostile:
        try:
            config = settings_file(tmp_path, "timeout = 1\nmax_retries = 0\n")
            alone = run_cli("--config", str(config), "--base-url", hostile.url, "hi")
            failover = run_cli("--config", str(config), "--base-url", hostile.url, "--base-url", server.url,
                               "-v", "hi")
        finally:
            stop.set()
    assert alone.returncode == 1
    assert alone.stderr.decode().splitlines() == [f"stateless-chat: 127.0.0.1:{hostile.port} sent no token "
                                                  "for 1 s (raise timeout in the config file if the model is "
                                                  "just slow)"]
    assert failover.returncode == 0 and failover.stdout == b"echo: hi\n"


def gzip_bomb(streamed: bool, size: int) -> bytes:
    """Return a gzip body that expands to ``size`` bytes of a reply (SSE events, or one JSON answer)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    parts = []
    if streamed:
        piece = hs.event(hs.delta("x" * 4000))
        parts += [compressor.compress(piece * 256) for _ in range(size // (len(piece) * 256))]
    else:
        parts.append(compressor.compress(b'{"choices": [{"message": {"content": "'))
        block = b"a" * (1024 * 1024)
        parts += [compressor.compress(block) for _ in range(size // len(block))]
        parts.append(compressor.compress(b'"}, "finish_reason": "stop"}]}'))
    return b"".join(parts) + compressor.flush()


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "no-stream"])
def test_a_decompression_bomb_is_cut_at_max_reply_bytes(server: FakeServer, streamed: bool) -> None:
    """Item 11: a 3 MB gzip body expanding to 3 GB took 3.1 GB of memory. Here 200 MB, capped at 1 MiB."""
    bomb = gzip_bomb(streamed, 200 * 1024 * 1024)
    assert len(bomb) < 1024 * 1024

    def respond(handler: BaseHTTPRequestHandler) -> None:
        kind = "text/event-stream" if streamed else "application/json"
        hs.send(handler, 200, bomb, {"Content-Encoding": "gzip"}, content_type=kind)

    with hs.Hostile(respond) as hostile:
        make_session(server, stream=streamed).send("warm up")  # imports and the encoding, before measuring
        session = make_session(hostile, stream=streamed, max_reply_bytes=1024 * 1024)
        tracemalloc.start()
        try:
            with pytest.raises(ReplyTooLarge) as raised:
                session.send("hi")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"peak {peak:,} bytes"
    assert "passed max_reply_bytes (1,048,576 bytes" in str(raised.value)
    assert session.conversation.history == ()  # nothing kept
    assert len(hostile.requests) == 1  # not retried


def test_an_oversized_reply_ends_with_one_line_in_one_shot(tmp_path: Path) -> None:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        hs.stream(handler, [hs.event(hs.delta("word " * 1000)) for _ in range(400)])

    config = settings_file(tmp_path, "max_reply_bytes = 100_000\n")
    with hs.Hostile(respond) as hostile:
        done = run_cli("--config", str(config), "--base-url", hostile.url, "hi")
    assert done.returncode == 1 and done.stdout.startswith(b"word word")
    [line] = done.stderr.decode().splitlines()
    assert "passed max_reply_bytes (100,000 bytes" in line
    assert Settings().max_reply_bytes == DEFAULT_MAX_REPLY_BYTES == 64 * 1024 * 1024


def test_an_encoding_that_was_not_asked_for_is_refused() -> None:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        hs.send(handler, 200, b"\x28\xb5\x2f\xfd whatever", {"Content-Encoding": "zstd"})

    with hs.Hostile(respond) as hostile:
        done = run_cli("--base-url", hostile.url, "--no-stream", "hi")
        assert hostile.headers[0]["accept-encoding"] == "gzip, deflate"
    assert done.returncode == 1
    assert b"content encoding zstd, which was not asked for" in done.stderr


def test_a_gzip_reply_of_normal_size_still_works() -> None:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        hs.send(handler, 200, gzip.compress(hs.completion("compressed answer")), {"Content-Encoding": "gzip"})

    with hs.Hostile(respond) as hostile:
        done = run_cli("--base-url", hostile.url, "--no-stream", "hi")
    assert done.returncode == 0 and done.stdout == b"compressed answer\n"


# ==== the smaller list =========================================================================


def test_two_save_runs_on_one_file_keep_both_exchanges(server: FakeServer, tmp_path: Path) -> None:
    """Two ``--save`` runs on the same file: the last writer won and an exchange disappeared. The second
    run now waits for the first (holding a lock from reading the file to writing it back)."""
    release = threading.Event()

    def held_answer(body: dict[str, Any]) -> str:
        release.wait(30)
        return f"answer to {body['messages'][-1]['content']}"

    server.replier = held_answer
    path = tmp_path / "shared.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("OPENAI_API_KEY", None)

    def start(question: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "stateless_chat", "--base-url", server.url, "--save",
                                 str(path), question], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, cwd=ROOT)

    first = start("first question")
    deadline = time.monotonic() + 20
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.requests, "the first run never asked"
    second = start("second question")
    # The second run either waits for the lock (says so) or, without one, sends its request too.
    assert second.stderr is not None
    waiting = second.stderr.readline()
    release.set()
    out_first, _ = first.communicate(timeout=30)
    out_second, rest = second.communicate(timeout=30)
    assert first.returncode == second.returncode == 0, rest
    assert b"waiting for another run saving to" in waiting
    contents = [m["content"] for m in json.loads(path.read_text())["messages"]]
    assert contents == ["first question", "answer to first question", "second question",
                        "answer to second question"]
    assert server.requests[1]["messages"][0]["content"] == "first question"  # the second saw the first
    # no lock or temporary left (data/ is the XDG data dir: the conversation log)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "data") == ["shared.json"]


HISTORY_WRITER = """\
import sys
from pathlib import Path
from stateless_chat.ui.repl import secure_file_history
history = secure_file_history(Path(sys.argv[1]))
mark = sys.argv[2]
for i in range(int(sys.argv[3])):
    history.store_string("\\n".join(f"{mark}{i}-" + mark * 2000 for _ in range(50)))
"""


def test_two_chats_sharing_the_input_history_never_splice_entries(tmp_path: Path) -> None:
    """Two chats appending to one input-history file spliced their entries together."""
    path = tmp_path / "input_history"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    writers = [subprocess.Popen([sys.executable, "-c", HISTORY_WRITER, str(path), mark, "40"], env=env)
               for mark in "ab"]
    for writer in writers:
        assert writer.wait(timeout=60) == 0
    entries = list(SharedFileHistory(str(path)).load_history_strings())
    assert len(entries) == 80
    for entry in entries:
        lines = entry.split("\n")
        mark, number = lines[0][0], lines[0].partition("-")[0]
        assert lines == [f"{number}-" + mark * 2000] * 50, "an entry was spliced with another"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "no-stream"])
def test_an_html_page_with_status_200_gets_the_hint(streamed: bool) -> None:
    page = b"<!doctype html><html><head><title>Welcome to nginx!</title></head><body>hi</body></html>"

    def respond(handler: BaseHTTPRequestHandler) -> None:
        hs.send(handler, 200, page, content_type="text/html; charset=utf-8")

    with hs.Hostile(respond) as hostile:
        done = run_cli("--base-url", hostile.url, *([] if streamed else ["--no-stream"]), "hi")
    assert done.returncode == 1
    [line] = done.stderr.decode().splitlines()
    assert line.endswith("is the base URL an OpenAI-compatible endpoint?"), line


def test_invalid_utf8_in_arguments_is_one_line(server: FakeServer) -> None:
    """Invalid UTF-8 in command-line arguments gave a raw UnicodeEncodeError."""
    argv = [sys.executable, "-m", "stateless_chat", "--base-url", server.url, "-m", b"model\xff",
            "-s", b"be \xe9l\xe9gant", b"caf\xe9 ?"]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, capture_output=True, timeout=30, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.decode().splitlines()
    assert line == ("stateless-chat: the command line is not valid UTF-8 (the prompt, --model, --system): "
                    "replaced 4 invalid byte(s) with \ufffd")
    body = server.requests[0]
    assert body["model"] == "model\ufffd" and body["messages"][-1]["content"] == "caf\ufffd ?"
    key = b"sk-\xff-key".decode("utf-8", "surrogateescape")
    bad_key = run_process("--base-url", server.url, "--api-key", key, "hi")
    assert bad_key.returncode == 2 and len(bad_key.stderr.decode().splitlines()) == 2
    assert b"visible ASCII" in bad_key.stderr


class _InterruptedStream:
    """A reply view that is interrupted (Ctrl-C) as it closes: after the reply was committed."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __enter__(self) -> _InterruptedStream:
        self.real.__enter__()
        return self

    def feed(self, delta: str) -> None:
        self.real.feed(delta)

    def __exit__(self, *exc: Any) -> None:
        self.real.__exit__(*exc)
        raise KeyboardInterrupt


def test_ctrl_c_just_after_a_commit_moves_reply_and_token_stats_together(server: FakeServer) -> None:
    """Ctrl-C landing just after a reply was committed rolled the reply back but kept its stats."""
    session = make_session(server)
    run_repl(session, ["hello\r"])
    before_history, before_turns = session.conversation.history, session.ledger.turns
    renderer = Renderer(Console(file=io.StringIO()))
    from prompt_toolkit.output import DummyOutput

    repl = repl_for(session, Console(file=io.StringIO()), output=DummyOutput())
    repl.renderer = renderer
    real_reply = renderer.reply
    renderer.reply = lambda: _InterruptedStream(real_reply())
    assert repl.turn("second") is False
    assert len(server.requests) == 2  # the reply did arrive and was committed, then rolled back
    assert session.conversation.history == before_history
    assert session.ledger.turns == before_turns


SAVE_INTERRUPTED = """\
import os, signal, sys
from pathlib import Path
from stateless_chat import cli
from stateless_chat.store import persist
cli.install_signal_handlers()
real_replace = os.replace
def replace(src, dst):
    os.kill(os.getpid(), signal.SIGHUP)  # the terminal closes while the new file is written
    real_replace(src, dst)
persist.os.replace = replace
try:
    persist.write_private(Path(sys.argv[1]), "new content")
except SystemExit as done:
    cli.exit_now(cli._exit_code(done.code))
"""


def test_sighup_mid_save_leaves_no_temporary_file(tmp_path: Path) -> None:
    """SIGHUP ran no cleanup: a temporary file was left mid-save."""
    path = tmp_path / "chat.json"
    path.write_text("old content")
    done = subprocess.run([sys.executable, "-c", SAVE_INTERRUPTED, str(path)], capture_output=True,
                          timeout=30, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 128 + signal.SIGHUP, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.json"]
    assert path.read_text() == "old content"


def test_sighup_stops_the_local_server_and_removes_its_log(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGHUP (the terminal closed) left the local server's log in the temporary directory."""
    monkeypatch.setenv("FAKE_PID_FILE", str(tmp_path / "pids"))
    fake_llama(tmp_path / "fake", monkeypatch, SERVING)
    model = write(tmp_path, model_like(ctx=4096).build())
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path / "fake"), str(ROOT)]), TMPDIR=str(temp),
               TERM="xterm", HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "data"))
    child = pexpect.spawn(sys.executable, ["-m", "stateless_chat", "--local-model", str(model)], env=env,
                          cwd=str(ROOT), encoding="utf-8", timeout=30, dimensions=(40, 200))
    child.expect("/help for commands")
    assert [p.name for p in temp.iterdir() if p.name.startswith("stateless-chat-llama-")], "no log to remove"
    child.kill(signal.SIGHUP)  # early on purpose: the prompt may be starting, the loop half-built
    child.expect(pexpect.EOF)
    child.close()
    assert (child.exitstatus, child.signalstatus) == (128 + signal.SIGHUP, None)
    assert "Traceback" not in (child.before or "")
    assert list(temp.iterdir()) == []


def test_a_stream_error_event_is_not_a_crash() -> None:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        hs.stream(handler, [hs.event({"error": {"message": "server exploded"}})])

    with hs.Hostile(respond) as hostile:
        session = make_session(hostile)
        with pytest.raises(StreamError):
            session.send("hi")
