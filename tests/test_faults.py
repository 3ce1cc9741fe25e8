"""Network faults against the real fake server: retries, failover, cut and malformed streams, timeouts.

Every test asserts the answer and that the conversation is intact and not duplicated:
a failed turn leaves it exactly as it was, a recovered turn adds exactly one exchange.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from stateless_chat import cli
from stateless_chat.chat.session import Session
from stateless_chat.chat.turn import Hooks
from stateless_chat.config import Settings
from stateless_chat.core.messages import ContextRetry, Event, FailedOver, Retrying
from stateless_chat.errors import ConnectError, ServerError, StreamError
from stateless_chat.wire.failover import Failover
from stateless_chat.wire.openai_backend import open_backend
from tests.fakeserver import FakeServer
from tests.support import CTRL_D, ROOT, run_cli, run_process, standing_block


class Recorder:
    """Collects transport events and the waits the transport asked for (without waiting)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def open_session(endpoints: list[str], record: Recorder, **settings: Any) -> Session:
    """Return a session over ``endpoints`` whose transport reports to ``record`` and never really sleeps."""
    values: dict[str, Any] = {"max_retries": 0, "timeout": 10.0}
    values.update(settings)
    if len(endpoints) == 1:
        values["base_url"] = endpoints[0]
    else:
        values["base_urls"] = tuple(endpoints)
    config = Settings(**values)
    transport = open_backend(config.endpoints, config.api_key, timeout=config.timeout,
                          max_retries=config.max_retries, sleep=record.sleep, backoff_base=0.2)
    return Session(config, transport, hooks=Hooks(on_event=record.events.append))


def turns(session: Session) -> list[tuple[str, str]]:
    return [(e.role, e.content) for e in session.conversation.history]


def dead_url() -> str:
    """Return a loopback URL on which nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def second() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


# ---- retries -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
def test_n_failures_then_success_retries_with_backoff(server: FakeServer, status: int) -> None:
    record = Recorder()
    session = open_session([server.url], record, max_retries=3)
    session.send("My name is Ada.")
    server.fail_next(3, status=status)
    reply = session.send("what is my name?")
    assert reply.text == "Your name is Ada."
    retries = record.of(Retrying)
    assert [r.attempt for r in retries] == [1, 2, 3]
    assert all(r.max_retries == 3 and str(status) in r.reason for r in retries)
    # Exponential backoff with jitter: attempt n waits between base*2^(n-1)/2 and base*2^(n-1).
    for n, delay in enumerate(record.sleeps, start=1):
        ceiling = 0.2 * 2 ** (n - 1)
        assert ceiling / 2 <= delay <= ceiling
    assert [r.delay for r in retries] == record.sleeps
    # The same self-contained body went out four times; the history holds the turn once.
    assert server.requests[1:] == [server.requests[1]] * 4
    assert turns(session) == [("user", "My name is Ada."), ("assistant", "echo: My name is Ada."),
                              ("user", "what is my name?"), ("assistant", "Your name is Ada.")]


def test_retries_run_out_and_the_conversation_is_unchanged(server: FakeServer) -> None:
    record = Recorder()
    session = open_session([server.url], record, max_retries=2)
    session.send("first")
    before = session.conversation
    server.fail_next(3, status=503)
    with pytest.raises(ServerError, match="503"):
        session.send("second")
    assert len(record.of(Retrying)) == 2 and len(server.requests) == 4
    assert session.conversation is before
    assert session.send("second").text == "echo: second"
    assert turns(session)[-2:] == [("user", "second"), ("assistant", "echo: second")]
    assert len(session.conversation.history) == 4


def test_429_retry_after_is_honoured(server: FakeServer) -> None:
    record = Recorder()
    session = open_session([server.url], record, max_retries=2)
    server.fail_next(1, status=429, retry_after=0.75)
    server.fail_next(1, status=503, retry_after="0")
    assert session.send("hello").text == "echo: hello"
    assert record.sleeps == [0.75, 0.0]
    assert [r.delay for r in record.of(Retrying)] == [0.75, 0.0]
    assert "429" in record.of(Retrying)[0].reason
    assert len(server.requests) == 3
    assert turns(session) == [("user", "hello"), ("assistant", "echo: hello")]


def test_retry_after_really_waits_with_the_default_sleep(server: FakeServer) -> None:
    session = Session(Settings(base_url=server.url, max_retries=1),
                      open_backend([server.url], None, max_retries=1))
    server.fail_next(1, status=429, retry_after=0.5)
    started = time.monotonic()
    assert session.send("hi").text == "echo: hi"
    assert time.monotonic() - started >= 0.5


@pytest.mark.parametrize("value", ["nan", "-inf", "soon"])
def test_unusable_retry_after_falls_back_to_backoff(server: FakeServer, tmp_path: Path, value: str) -> None:
    config = write_config(tmp_path, max_retries=1)
    server.fail_next(1, status=503, retry_after=value)
    done = run_cli("--config", str(config), "--base-url", server.url, "-v", "hello")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"echo: hello\n"
    [line] = done.stderr.decode().splitlines()
    delay = float(line.split(" in ")[1].split(" s:")[0])
    assert 0.2 <= delay <= 0.5  # the default backoff's first wait (base 0.5 s, jittered), not NaN or 0


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_no_retry_on_client_errors(server: FakeServer, status: int) -> None:
    record = Recorder()
    session = open_session([server.url], record, max_retries=3)
    server.fail_next(1, status=status)
    with pytest.raises(ServerError) as raised:
        session.send("hello")
    assert raised.value.status == status and str(status) in str(raised.value)
    assert len(server.requests) == 1 and record.events == [] and record.sleeps == []
    assert session.conversation.history == ()
    assert session.send("hello").text == "echo: hello"
    assert turns(session) == [("user", "hello"), ("assistant", "echo: hello")]


def test_no_failover_on_client_errors(server: FakeServer, second: FakeServer) -> None:
    record = Recorder()
    session = open_session([server.url, second.url], record, max_retries=1)
    server.fail_next(1, status=400)
    with pytest.raises(ServerError, match="400"):
        session.send("hello")
    assert second.requests == [] and record.events == []


def test_401_says_what_to_do(server: FakeServer) -> None:
    session = open_session([server.url], Recorder())
    server.fail_next(1, status=401)
    with pytest.raises(ServerError, match="OPENAI_API_KEY"):
        session.send("hello")


# ---- failover ---------------------------------------------------------------------------


def test_connection_refused_fails_over_at_once(server: FakeServer) -> None:
    record = Recorder()
    down = dead_url()
    session = open_session([down, server.url], record, max_retries=3)
    reply = session.send("My name is Bo.")
    assert reply.text == "echo: My name is Bo." and reply.endpoint == server.url
    # Refusal is final for that endpoint: no retries against it, straight to the next.
    assert record.of(Retrying) == []
    [over] = record.of(FailedOver)
    assert over.endpoint == down.split("/")[2] and over.next_endpoint == server.url.split("/")[2]
    assert "refused" in over.reason
    assert session.send("what is my name?").text == "Your name is Bo."
    assert len(record.of(FailedOver)) == 1  # the second turn started at the endpoint that worked
    assert len(server.requests) == 2 and len(session.conversation.history) == 4


def test_failover_after_retries_on_server_errors(server: FakeServer, second: FakeServer) -> None:
    record = Recorder()
    session = open_session([server.url, second.url], record, max_retries=1)
    server.fail_next(2, status=502)
    assert session.send("hi").text == "echo: hi"
    assert len(server.requests) == 2 and len(second.requests) == 1
    assert second.requests[0] == server.requests[0]  # the same payload
    assert [type(e) for e in record.events] == [Retrying, FailedOver]
    assert "502" in record.of(FailedOver)[0].reason


def test_endpoint_killed_between_turns(server: FakeServer, second: FakeServer) -> None:
    record = Recorder()
    session = open_session([server.url, second.url], record, max_retries=1)
    assert session.send("My name is Cy.").text == "echo: My name is Cy."
    assert len(server.requests) == 1 and second.requests == []
    server.stop()
    assert session.send("what is my name?").text == "Your name is Cy."
    # The other endpoint got the full context, so it could answer a stateless question.
    assert second.requests[0]["messages"] == [
        {"role": "system", "content": standing_block("My name is Cy.")},  # the memory slot, as it was
        {"role": "user", "content": "My name is Cy."},
        {"role": "assistant", "content": "echo: My name is Cy."},
        {"role": "user", "content": "what is my name?"},
    ]
    assert len(record.of(FailedOver)) == 1
    events_before = len(record.events)
    assert session.send("and now?").text == "echo: and now?"
    assert len(record.events) == events_before  # started at the endpoint that last worked
    assert len(second.requests) == 2 and len(server.requests) == 1
    assert [role for role, _ in turns(session)] == ["user", "assistant"] * 3


def test_all_endpoints_down_is_one_clear_error() -> None:
    record = Recorder()
    first, other = dead_url(), dead_url()
    session = open_session([first, other], record, max_retries=2)
    with pytest.raises(ConnectError, match="could not connect to 127.0.0.1:.*server running"):
        session.send("hi")
    assert len(record.of(FailedOver)) == 1
    assert session.conversation.history == ()


# ---- broken replies ------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_stream_cut_mid_reply_stores_nothing_and_sending_again_works(framing: Any) -> None:
    with FakeServer(stream_framing=framing) as fake:
        fake.replier = lambda body: "one two three four five six seven"
        session = open_session([fake.url], Recorder(), max_retries=3)
        session.send("first")
        before = session.conversation
        fake.cut_stream_next(after_chunks=4)
        shown: list[str] = []
        with pytest.raises(StreamError, match="broke off|ended before") as raised:
            session.send("second", shown.append)
        assert "".join(shown) == "one two three "  # part of the reply was shown ...
        assert session.conversation is before  # ... and none of it was stored
        assert "could not connect" not in str(raised.value)
        assert len(fake.requests) == 2  # a cut after the first delta is not retried silently
        assert session.send("second").text == "one two three four five six seven"
        assert [c for _, c in turns(session)] == ["first", "one two three four five six seven",
                                                   "second", "one two three four five six seven"]


@pytest.mark.parametrize("stream", [True, False])
def test_malformed_reply_is_a_clear_error(server: FakeServer, stream: bool) -> None:
    session = open_session([server.url], Recorder(), stream=stream, max_retries=2)
    session.send("first")
    before = session.conversation
    server.malformed_next()
    with pytest.raises(StreamError, match="not valid JSON.*OpenAI-compatible"):
        session.send("second")
    assert session.conversation is before and len(server.requests) == 2
    assert session.send("second").text == "echo: second"
    assert len(session.conversation.history) == 4


@pytest.mark.parametrize("numbers", [True, False])
def test_llama_server_context_refusal_cuts_history_and_resends(server: FakeServer, numbers: bool) -> None:
    session = open_session([server.url], Recorder(), budget=4000, reply_reserve=64)
    events: list[Event] = []
    session.hooks = replace(session.hooks, on_event=events.append)
    for i in range(6):
        session.send(f"message {i}: " + "lorem ipsum " * 40)
    ours = session.plan("again", summarize=False).fit.total - 64
    # What llama.cpp's llama-server answers (older versions: this message, no numbers).
    error: dict[str, Any] = {"code": 400, "type": "exceed_context_size_error",
                             "message": "the request exceeds the available context size, try increasing it"}
    if numbers:
        limit = ours // 2
        error.update(n_prompt_tokens=ours, n_ctx=limit,
                     message=f"request ({ours} tokens) exceeds the available context size ({limit} tokens)")
    server.fail_next(1, status=400, body={"error": error})
    assert session.send("again").text == "echo: again"
    [retry] = [e for e in events if isinstance(e, ContextRetry)]
    assert (retry.reported_limit, retry.reported_tokens) == ((ours // 2, ours) if numbers else (None, None))
    refused, resent = server.requests[-2:]
    assert len(resent["messages"]) < len(refused["messages"]) and resent["messages"][-1]["content"] == "again"
    assert [c for _, c in turns(session)][-2:] == ["again", "echo: again"]


def test_cut_non_streamed_reply_is_retried(server: FakeServer) -> None:
    record = Recorder()
    session = open_session([server.url], record, stream=False, max_retries=1)
    server.cut_stream_next()
    assert session.send("hi").text == "echo: hi"
    [retry] = record.of(Retrying)
    assert "broke" in retry.reason and "could not connect" not in retry.reason
    assert turns(session) == [("user", "hi"), ("assistant", "echo: hi")]


def test_timeout_is_a_connect_error(server: FakeServer) -> None:
    session = open_session([server.url], Recorder(), timeout=0.3)
    server.delay_next(3)
    started = time.monotonic()
    with pytest.raises(ConnectError, match=r"did not answer within 0\.3 s .*timeout"):
        session.send("hi")
    assert time.monotonic() - started < 2.5
    assert session.conversation.history == ()
    assert session.send("hi").text == "echo: hi"


def test_ctrl_c_mid_stream_keeps_the_conversation(server: FakeServer) -> None:
    session = open_session([server.url], Recorder())
    session.send("first")
    before = session.conversation

    def interrupt(delta: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        session.send("second", interrupt)
    assert session.conversation is before
    assert session.send("second").text == "echo: second"
    assert len(session.conversation.history) == 4


# ---- what the user sees -----------------------------------------------------------------------


def write_config(tmp_path: Path, **values: Any) -> Path:
    lines = []
    for key, value in values.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_one_shot_verbose_prints_one_stderr_line_per_retry(server: FakeServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, max_retries=3)
    server.fail_next(2, status=503, retry_after=0)
    done = run_cli("--config", str(config), "--base-url", server.url, "-v", "hello")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"echo: hello\n"
    lines = done.stderr.decode().splitlines()
    retry_lines = [line for line in lines if "retry" in line]
    assert len(retry_lines) == 2
    assert retry_lines[0].startswith("stateless-chat: retry 1/3 on 127.0.0.1") and "503" in retry_lines[0]
    assert retry_lines[1].startswith("stateless-chat: retry 2/3")
    quiet = run_cli("--config", str(config), "--base-url", server.url, "hello")
    assert quiet.stderr == b""


def test_one_shot_failover_line_and_answer(server: FakeServer, tmp_path: Path) -> None:
    done = run_cli("--base-url", dead_url(), "--base-url", server.url, "-v", "hello")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"echo: hello\n"
    [line] = done.stderr.decode().splitlines()
    assert "refused" in line and f"sending the same request to {server.url.split('/')[2]}" in line


def test_one_shot_timeout_is_one_line(server: FakeServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, timeout=0.5, max_retries=0)
    server.delay_next(3)
    done = run_cli("--config", str(config), "--base-url", server.url, "hello")
    assert done.returncode == 1 and done.stdout == b""
    [line] = done.stderr.decode().splitlines()
    assert line.startswith("stateless-chat: 127.0.0.1:") and "did not answer within 0.5 s" in line


def test_a_base_url_that_cannot_be_encoded_is_not_blamed_on_a_reply() -> None:
    done = run_cli("--base-url", "http://a..b/v1", "hello")  # an empty DNS label: refused before any I/O
    assert done.returncode == 2
    [line] = done.stderr.decode().splitlines()
    assert line.startswith("stateless-chat: --base-url must be an http:// or https:// URL with a valid host")
    assert "JSON" not in line and "reply" not in line


@pytest.mark.parametrize("fault", ["cut", "malformed", "401"])
def test_one_shot_errors_are_one_line_without_traceback_unless_debug(server: FakeServer, fault: str) -> None:
    def arm() -> None:
        if fault == "cut":
            server.cut_stream_next(after_chunks=2)
        elif fault == "malformed":
            server.malformed_next()
        else:
            server.fail_next(1, status=401)

    arm()
    done = run_cli("--base-url", server.url, "hello")
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stateless-chat: ")
    assert "Traceback" not in done.stderr.decode()
    if fault == "cut":  # one fault is enough to show that --debug brings the traceback back
        arm()
        debug = run_process("--base-url", server.url, "--debug", "hello")
        assert debug.returncode != 0 and b"Traceback" in debug.stderr and b"StreamBroke" in debug.stderr


def run_cli_repl(settings: Settings, transport: Failover, keys: list[str],
                 capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Run ``cli.run_repl`` (the real wiring, the app assembled as a run assembles it, with
    ``transport`` as its backend) with ``keys`` typed through a pipe; return stdout."""
    from stateless_chat import app

    monkeypatch.setattr(app, "open_backend", lambda settings, local_server, voice: transport)
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        for key in keys:
            pipe.send_text(key)
        pipe.send_text(CTRL_D)
        options = cli.Options()
        assert cli.run_repl(settings, options, {}, frozenset()) == 0
    return capsys.readouterr().out


def test_repl_prints_one_status_line_per_retry_and_failover(
    server: FakeServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # so that a status line is one physical line
    down = dead_url()
    settings = Settings(base_urls=(down, server.url), max_retries=2)
    sleeps: list[float] = []
    transport = open_backend(settings.endpoints, None, max_retries=2, sleep=sleeps.append)
    server.fail_next(2, status=500, retry_after=0)
    output = run_cli_repl(settings, transport, ["hello\r", "again\r"], capsys, monkeypatch)
    lines = output.splitlines()
    status = [line for line in lines if line.startswith("· ")]
    assert len(status) == 3
    assert "refused" in status[0] and status[0].endswith(f"sending the same request to {server.url[7:-3]}")
    retry_lines = [line for line in lines if line.startswith("· retry")]
    assert [line[:11] for line in retry_lines] == ["· retry 1/2", "· retry 2/2"]
    assert sleeps == [0.0, 0.0]
    assert "echo: hello" in output and "echo: again" in output


def test_repl_cut_stream_shows_one_error_and_send_again_works(
    server: FakeServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    settings = Settings(base_url=server.url, max_retries=0)
    transport = open_backend(settings.endpoints, None, max_retries=0)
    server.cut_stream_next(after_chunks=2)
    output = run_cli_repl(settings, transport, ["hello there friend\r", "hello there friend\r"], capsys,
                          monkeypatch)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broke off" in errors[0] and "unchanged" in errors[0]
    assert "echo: hello there friend" in output
    # The partial reply was shown but not stored: the resend carried only the user message.
    assert server.requests[1]["messages"] == [{"role": "user", "content": "hello there friend"}]


# ---- pipes and signals ----------------------------------------------------------------------


ENTRY = [sys.executable, "-m", "stateless_chat"]


def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` from the checkout with stdin empty and stdout/stderr piped."""
    environment = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    environment["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=environment, cwd=ROOT)


def test_closed_pipe_ends_quietly(server: FakeServer) -> None:
    server.replier = lambda body: ("x" * 1000 + " ") * 2000  # 2 MB: far more than a pipe buffer
    chat = spawn(ENTRY + ["--base-url", server.url, "q"])
    assert chat.stdout is not None and chat.stderr is not None
    head = subprocess.run(["head", "-c", "10"], stdin=chat.stdout, capture_output=True, timeout=20)
    chat.stdout.close()
    error = chat.stderr.read()
    code = chat.wait(timeout=20)
    assert head.stdout == b"x" * 10
    assert error == b""
    assert code == -signal.SIGPIPE  # killed by SIGPIPE, like any Unix filter; not exit 1


def test_sigterm_ends_cleanly(server: FakeServer) -> None:
    server.delay_next(20)
    chat = spawn(ENTRY + ["--base-url", server.url, "q"])
    deadline = time.monotonic() + 15
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.requests, "the request never arrived"
    chat.send_signal(signal.SIGTERM)
    out, error = chat.communicate(timeout=10)
    assert chat.returncode == 128 + signal.SIGTERM
    assert error == b"" and out == b""
    server.stop()



# ---- an endpoint whose health we can ask (the local model's server) -------------------------


def _health_session(server: FakeServer, alive: list[bool], sleeps: list[float]) -> Session:
    def check() -> None:
        if not alive[0]:
            raise ConnectError("local model server was killed by signal 9 unexpectedly: boom (log: /tmp/x)")

    settings = Settings(base_url=server.url, max_retries=3, timeout=5.0)
    transport = open_backend(settings.endpoints, None, max_retries=3, timeout=5.0, sleep=sleeps.append,
                          health_check=check)
    return Session(settings, transport)


def test_a_dead_local_server_is_reported_at_once_instead_of_retried(server: FakeServer) -> None:
    alive, sleeps = [True], []
    session = _health_session(server, alive, sleeps)
    session.send("first")
    before = session.conversation
    alive[0] = False
    server.stop()
    with pytest.raises(ConnectError, match="killed by signal 9 unexpectedly: boom"):
        session.send("second")
    assert sleeps == [] and session.conversation == before


def test_a_healthy_check_changes_nothing_about_retries(server: FakeServer) -> None:
    alive, sleeps = [True], []
    session = _health_session(server, alive, sleeps)
    server.stop()
    with pytest.raises(ConnectError, match="could not connect"):
        session.send("hello")
    assert len(sleeps) == 3


def test_a_reply_cut_by_a_dying_local_server_names_the_crash(server: FakeServer) -> None:
    alive, sleeps = [True], []
    session = _health_session(server, alive, sleeps)
    server.cut_stream_next(after_chunks=2)
    alive[0] = False
    with pytest.raises(ConnectError, match="unexpectedly: boom"):
        session.send("hello")
    assert session.conversation.history == ()
