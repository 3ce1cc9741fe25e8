"""Hostile input and output: broken stdin, huge pastes, arbitrary typed text, terminal attacks, key leaks."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from stateless_chat.chat.session import Session
from stateless_chat.errors import BudgetError, ChatError, ServerError
from stateless_chat.sanitize import ControlStripper, strip_controls
from stateless_chat.ui.commands import REGISTRY, dispatch
from stateless_chat.ui.render import ReplyStream
from stateless_chat.ui.repl import secure_file_history
from tests.fakeserver import FakeServer, default_replier
from tests.support import app_for, make_session, repl_for, run_cli

KEY = "sk-test-" + "S3cr3tK3y" * 3

# ---- hostile model output ------------------------------------------------------------------

# Spaces inside sequences make the fake server (which streams word by word) split them across chunks.
HOSTILE_REPLY = (
    "visible-1 \x1b[2J\x1b[H after-clear \x1b]52;c;ZXZpbCBjbGlw Ym9hcmQ= \x07 after-osc52 "
    "\x1b]0;pwned window title\x1b\\ after-title \x07after-bel \x9b2J after-c1-csi "
    "\x9d0;c1 hidden osc\x9c after-c1-osc \x1b[2 q after-split-csi \x1b[?1049h after-alt-screen "
    "\x1bP1$r hidden dcs\x1b\\ after-dcs \x1b[31mred\x1b[0m [bold]not bold[/bold] "
    "\x90c1 hidden dcs\x9c after-c1-dcs \x1b7\x1b8\x1bc after-reset\r\nsecond line \x1b[5"
)
VISIBLE = ["visible-1", "after-clear", "after-osc52", "after-title", "after-bel", "after-c1-csi",
           "after-c1-osc", "after-split-csi", "after-alt-screen", "after-dcs", "red",
           "[bold]not bold[/bold]", "after-c1-dcs", "after-reset", "second line"]
HIDDEN = ["ZXZpbC", "Ym9hcmQ", "pwned", "hidden"]
# What Rich itself writes to a terminal for its live view: hide/show cursor, erase line, cursor up.
RICH_OWN = re.compile(r"\x1b\[\?25[lh]|\x1b\[2K|\x1b\[\d*A")


def assert_safe(output: str) -> None:
    """Fail if anything but Rich's own cursor handling could act on the terminal."""
    rest = RICH_OWN.sub("", output)
    for bad in ("\x1b", "\x07", "\x9b", "\x9c", "\x9d", "\x90"):
        assert bad not in rest, f"{bad!r} reached the output: {rest!r}"
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", rest)
    for word in HIDDEN:
        assert word not in output


def test_strip_controls_keeps_text_and_removes_every_sequence() -> None:
    clean = strip_controls(HOSTILE_REPLY)
    assert_safe(clean)
    for word in VISIBLE:
        assert word in clean
    assert "\r" not in clean and "after-reset\nsecond line" in clean


def test_stream_split_at_every_point_is_as_safe_as_the_whole() -> None:
    whole = strip_controls(HOSTILE_REPLY)
    one_by_one = ControlStripper()
    out = "".join(one_by_one.feed(char) for char in HOSTILE_REPLY) + one_by_one.flush()
    assert out == whole
    for cut in range(len(HOSTILE_REPLY) + 1):
        stripper = ControlStripper()
        halves = stripper.feed(HOSTILE_REPLY[:cut]) + stripper.feed(HOSTILE_REPLY[cut:]) + stripper.flush()
        assert halves == whole, cut


@given(st.lists(st.text(alphabet=st.sampled_from("ab \x1b[]\\;?0123P_^X\x07\x9b\x9c\x9d\x90\r\n\tm"),
                        max_size=12), max_size=8))
def test_any_chunking_of_any_text_leaves_no_control(chunks: list[str]) -> None:
    stripper = ControlStripper()
    out = "".join(stripper.feed(chunk) for chunk in chunks) + stripper.flush()
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", out)
    assert out == strip_controls("".join(chunks))  # however it was chunked, the same text shows


def reply_stream_output(chunks: list[str]) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=300, force_terminal=True, color_system="truecolor", highlight=False)
    with ReplyStream(console, markdown=False) as stream:
        for chunk in chunks:
            stream.feed(chunk)
    return buffer.getvalue()


def test_reply_stream_fed_one_character_at_a_time_is_safe() -> None:
    output = reply_stream_output(list(HOSTILE_REPLY))
    rest = RICH_OWN.sub("", output)
    rest = re.sub(r"\x1b\[[0-9;]*m", "", rest)  # colour: Rich's own styling is allowed here
    assert_safe(rest)
    assert "[bold]not bold[/bold]" in output


def run_terminal_repl(session: Session, keys: str) -> str:
    """Run the real Repl with a Rich console that believes it writes to a terminal; return the bytes."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=300, force_terminal=True, color_system=None, highlight=False)
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        pipe.send_text(keys + "\x04")
        assert repl_for(session, console, input=pipe, output=DummyOutput()).run() == 0
    return buffer.getvalue()


def test_hostile_reply_through_the_repl(server: FakeServer) -> None:
    server.replier = lambda body: HOSTILE_REPLY
    session = make_session(server)
    output = run_terminal_repl(session, "hi\r/show 2\r/history\r")
    assert_safe(output)
    for word in VISIBLE:
        assert word in output
    assert "[bold]not bold[/bold]" in output  # literal, not Rich markup
    assert session.conversation.history[1].content == HOSTILE_REPLY  # stored as sent; only display is cleaned


def test_hostile_error_message_through_the_repl(server: FakeServer) -> None:
    server.fail_next(1, status=400, body="proxy says \x1b]52;c;ZXZpbA==\x07 no [red]way[/red]\x1b[2J")
    output = run_terminal_repl(make_session(server), "hi\r")
    assert_safe(output)
    assert "[red]way[/red]" in output


@pytest.mark.parametrize("status", [400, 503])
def test_hostile_error_body_in_one_shot_stderr(server: FakeServer, status: int) -> None:
    hostile = "proxy says \x1b]52;c;ZXZpbA==\x07 no\r\x1b[2J [red]way[/red]\x9b1A"
    server.fail_next(3, status=status, body=hostile)
    done = run_cli("--base-url", server.url, "-v", "hi")
    assert done.returncode == 1
    error = done.stderr.decode()
    assert_safe(error)
    assert "proxy says" in error and "[red]way[/red]" in error
    assert len(error.splitlines()) == (1 if status == 400 else 3)  # two retry lines, then the error


@pytest.mark.parametrize("flags", [[], ["--no-stream"]])
def test_hostile_reply_in_one_shot_plain_output(server: FakeServer, flags: list[str]) -> None:
    server.replier = lambda body: HOSTILE_REPLY
    done = run_cli("--base-url", server.url, *flags, "hi")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert_safe(out)
    for word in VISIBLE:
        assert word in out
    assert b"\x1b" not in done.stdout and b"\x07" not in done.stdout and b"\xc2\x9b" not in done.stdout


# Sequences ended by ST (ESC \\) rather than BEL, with no BEL or C1 ST anywhere after them.
ST_ENDED = "Hello \x1b]0;title\x1b\\ world, \x1bP1$r\x1b\\the answer is 42."


def test_text_after_a_sequence_ended_by_st_is_shown(server: FakeServer) -> None:
    server.replier = lambda body: ST_ENDED
    done = run_cli("--base-url", server.url, "hi")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"Hello  world, the answer is 42.\n"
    output = run_terminal_repl(make_session(server), "hi\r")
    assert_safe(output)
    assert "world, the answer is 42." in output and "title" not in output


# Thousands of string-sequence starts that never end: each one once made the stripper scan to the end.
UNENDING = "\x1b]" * 30_000 + "\x9d" * 30_000 + "\x1bP" * 30_000 + "\x07 the end"


def test_unending_sequences_are_stripped_in_linear_time(server: FakeServer) -> None:
    server.fail_next(1, status=400, body={"error": {"message": "bad request " + UNENDING}})
    started = time.monotonic()
    done = run_cli("--base-url", server.url, "hi")
    assert done.returncode == 1
    assert done.stderr.decode() == f"stateless-chat: {server.url[7:-3]} answered 400: bad request the end\n"
    server.replier = lambda body: UNENDING
    output = run_terminal_repl(make_session(server), "hi\r/show 2\r")
    assert output.count("the end") == 2  # the streamed reply and /show
    assert time.monotonic() - started < 10  # was minutes


# ---- hostile input -------------------------------------------------------------------------


def test_invalid_utf8_on_stdin_is_replaced_with_one_line(server: FakeServer) -> None:
    done = run_cli("--base-url", server.url, stdin=b"caf\xe9 \xff\xfe ok \xf0\x9f\x98\x80\n")
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.decode().splitlines()
    assert "not valid UTF-8" in line and "replaced 3" in line
    assert server.requests[0]["messages"][-1]["content"] == "caf\ufffd \ufffd\ufffd ok \U0001f600\n"


def test_nul_bytes_on_stdin_are_dropped_with_one_line(server: FakeServer) -> None:
    done = run_cli("--base-url", server.url, "look:", stdin=b"a\x00b\x00\x00c\n")
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.decode().splitlines()
    assert "dropped 3 NUL" in line
    assert server.requests[0]["messages"][-1]["content"] == "look:\n\nabc\n"


def paste(size: int) -> bytes:
    words = b"lorem ipsum dolor sit amet, consectetur adipiscing elit; 12345 fooBar\n"
    return (words * (size // len(words) + 1))[:size]


@pytest.mark.parametrize("policy", ["drop-oldest", "summarize"])
def test_five_megabyte_paste_is_refused_before_anything_is_sent(server: FakeServer, policy: str) -> None:
    done = run_cli("--base-url", server.url, "--policy", policy, stdin=paste(5_000_000) + b"\xff\x00")
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert "Traceback" not in done.stderr.decode()
    # One line for the repaired bytes each, then the refusal.
    assert len(lines) == 3 and "budget" in lines[-1] and "tokens" in lines[-1]
    assert server.requests == []


def test_message_over_budget_in_a_session_sends_nothing(server: FakeServer) -> None:
    session = make_session(server, budget=2000, policy="summarize")
    session.send("first")
    before = session.conversation
    with pytest.raises(BudgetError, match="budget"):
        session.send(paste(20_000).decode())
    assert len(server.requests) == 1 and session.conversation is before


EXCLUDED = {"save", "export", "edit"}  # write files or start an editor: tested on their own
NAMES = sorted(set(REGISTRY) - EXCLUDED)


@pytest.fixture
def chat_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run inside an empty directory, with no editor, so arbitrary commands touch nothing else."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDITOR", raising=False)
    monkeypatch.delenv("VISUAL", raising=False)
    return tmp_path


def command_lines() -> st.SearchStrategy[str]:
    named = st.builds(lambda name, gap, arg: f"/{name}{gap}{arg}", st.sampled_from(NAMES),
                      st.sampled_from([" ", "  ", "\t", ""]), st.text(max_size=30))
    raw = st.text(max_size=30).map(lambda text: "/" + text)
    return st.one_of(named, raw).filter(
        lambda line: line[1:].strip().partition(" ")[0].lower() not in EXCLUDED
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(command_lines(), min_size=1, max_size=4))
def test_command_parser_raises_only_chat_errors(server: FakeServer, chat_dir: Path, lines: list[str]) -> None:
    session = make_session(server)
    session.send("My name is Ed.")
    session.send("second")
    for line in lines:
        try:
            dispatch(app_for(session), line)
        except ChatError as error:
            assert str(error) and "\n" not in str(error).strip()
        ids = [e.id for e in session.conversation.all_entries()]
        assert len(ids) == len(set(ids))  # nothing duplicated, whatever the command did


def typed_lines() -> st.SearchStrategy[str]:
    commands = command_lines()
    messages = st.text(max_size=40)
    return st.one_of(commands, messages).filter(
        lambda line: line.strip().lstrip("/").partition(" ")[0].lower() not in EXCLUDED
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(typed_lines(), min_size=1, max_size=3))
def test_no_exception_escapes_the_repl(server: FakeServer, chat_dir: Path, lines: list[str]) -> None:
    session = make_session(server)
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, force_terminal=False, color_system=None, highlight=False)
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        # Enter ends each line; then Ctrl-C twice leaves any mode a control key entered, Ctrl-D leaves.
        pipe.send_text("".join(line + "\r" for line in lines) + "\x03\x03\x04")
        code = repl_for(session, console, input=pipe, output=DummyOutput()).run()
    assert code == 0
    assert "Traceback" not in buffer.getvalue()
    roles = [e.role for e in session.conversation.history]
    assert roles == ["user", "assistant"] * (len(roles) // 2)


# ---- the API key never leaks -------------------------------------------------------------------


ECHO = f"Invalid header Authorization: Bearer {KEY}; your key {KEY} was rejected"


@pytest.mark.parametrize("body", [{"error": {"message": ECHO}}, ECHO])
def test_error_that_echoes_the_key_is_redacted(server: FakeServer, body: Any) -> None:
    server.fail_next(1, status=400, body=body)
    done = run_cli("--base-url", server.url, "hi", env={"OPENAI_API_KEY": KEY})
    assert server.request_headers[0]["authorization"] == f"Bearer {KEY}"  # the key really was in use
    assert done.returncode == 1
    error = done.stderr.decode()
    assert KEY not in error and "S3cr3t" not in error and "***" in error


def test_key_from_the_flag_is_redacted_in_retry_and_failover_lines(server: FakeServer) -> None:
    other = FakeServer()
    try:
        server.fail_next(3, status=503, retry_after=0, body={"error": {"message": ECHO}})
        done = run_cli("--base-url", server.url, "--base-url", other.url, "-v", "--api-key", KEY, "hi")
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"echo: hi\n"
        error = done.stderr.decode()
        assert "retry" in error and "sending the same request" in error
        assert "S3cr3t" not in error
    finally:
        other.stop()


@pytest.mark.parametrize("placeholder", ["local", "1", " "])
def test_a_placeholder_key_does_not_mangle_messages(tmp_path: Path, placeholder: str) -> None:
    # Servers that need no key are often given one like "EMPTY", "ollama" or "x".
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "config.toml"
    config.write_text("max_retries = 0\n")
    done = run_cli("--config", str(config), "--base-url", f"http://localhost:{port}/v1", "hi",
                   env={"OPENAI_API_KEY": placeholder})
    assert done.returncode == 1
    [line] = done.stderr.decode().splitlines()
    assert f"could not connect to localhost:{port}: " in line and "***" not in line, line
    assert "Connection refused (is the server running?)" in line


def test_some_other_bearer_token_is_redacted_too(server: FakeServer) -> None:
    session = make_session(server, api_key=KEY)
    server.fail_next(1, status=403, body="denied: Authorization: Bearer abcdef0123456789ghij")
    with pytest.raises(ServerError) as raised:
        session.send("hi")
    assert "abcdef0123456789ghij" not in str(raised.value) and "Bearer ***" in str(raised.value)


def test_dry_run_never_shows_the_key() -> None:
    for args, env in ((["--api-key", KEY], {}), ([], {"OPENAI_API_KEY": KEY})):
        done = run_cli("--dry-run", *args, "hello", env=env)
        assert done.returncode == 0, done.stderr
        assert "S3cr3t" not in (done.stdout + done.stderr).decode()
        assert json.loads(done.stdout)["messages"] == [{"role": "user", "content": "hello"}]


def test_repl_raw_errors_save_and_export_never_show_the_key(server: FakeServer, chat_dir: Path) -> None:
    session = make_session(server, api_key=KEY)
    assert KEY not in repr(session.settings)
    server.fail_next(1, status=400, body={"error": {"message": ECHO}})
    output = run_terminal_repl(session, "hi\rhello\r/raw next\r/save chat.json\r/export chat.md\r")
    assert "rejected" in output and "echo: hello" in output  # the error was shown, the chat went on
    assert "S3cr3t" not in output
    for name in ("chat.json", "chat.md"):
        path = chat_dir / name
        assert path.exists(), output
        assert "S3cr3t" not in path.read_text()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ---- private files ------------------------------------------------------------------------------


def test_input_history_is_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "state" / "input-history"
    old = os.umask(0)
    try:
        history = secure_file_history(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    history.store_string("my password is hunter2")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "hunter2" in path.read_text()


def test_existing_input_history_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "input-history"
    path.write_text("")
    path.chmod(0o644)
    secure_file_history(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_one_shot_save_file_is_private_and_keyless(server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    done = run_cli("--base-url", server.url, "--api-key", KEY, "--save", str(path), "hi")
    assert done.returncode == 0, done.stderr
    assert server.request_headers[0]["authorization"] == f"Bearer {KEY}"
    assert "echo: hi" in path.read_text() and "S3cr3t" not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_huge_single_run_paste_is_refused_without_counting_it(server: FakeServer) -> None:
    from stateless_chat.errors import BudgetError

    session = make_session(server, model="gpt-4o")
    calls = []
    original = session.counter.count_message
    session.counter.count_message = lambda m: calls.append(m) or original(m)  # type: ignore[method-assign]
    with pytest.raises(BudgetError, match="at least"):
        session.send("x" * 5_000_000)
    assert calls == [] and server.requests == []


@pytest.mark.parametrize("stream", [True, False])
def test_a_reply_with_half_a_surrogate_pair_does_not_poison_the_conversation(
    server: FakeServer, stream: bool
) -> None:
    server.replier = lambda body: "broken \udcff pair and a whole \U0001f600"
    session = make_session(server, stream=stream)
    reply = session.send("first")
    assert reply.text == "broken \ufffd pair and a whole \U0001f600"
    server.replier = default_replier
    session.send("second")  # the stored reply encodes: the next request goes out
    assert server.requests[-1]["messages"][1]["content"] == reply.text
