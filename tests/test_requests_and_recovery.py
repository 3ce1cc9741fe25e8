"""Requests and recovering from their failures, as a user meets them: the reply reserve and what the
server accepts for it, budget errors and their hints, context overflow and the context size
learned, retry after a failure or Ctrl-C, stalled streams, dry run, quiet, help and hints; each
through the layer where it was met: the chat (pipe input), one-shot use (in-process CLI, or a real
process where only a process shows it), all against the real fake server. The real terminal at 80
columns is in ``test_terminal_80_columns.py``; the real
llama.cpp server in ``test_local.py`` and ``test_local_cli.py``."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.chat.session import Session
from stateless_chat.config import Settings
from stateless_chat.errors import RequestTimeout
from stateless_chat.wire.local import bundled_model_path, local_available
from stateless_chat.wire.openai_backend import open_backend
from stateless_chat.wire.serverinfo import learn_context
from tests.fakeserver import FakeServer, Scripted, approx_tokens, is_summary_request
from tests.support import make_session, run_cli, run_process, run_repl


@contextmanager
def ctrl_c_when(ready: Callable[[], bool]) -> Iterator[None]:
    """Press Ctrl-C (a real SIGINT to this process) as soon as ``ready()`` holds."""

    def press() -> None:
        deadline = time.monotonic() + 10
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # the reply is on its way: let the client start reading it
        os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=press)
    presser.start()
    try:
        yield
    finally:
        presser.join()


def contents(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"]]


# ---- 1. a reply never runs past the reserve ---------------------------------------------------


def test_the_reply_reserve_is_sent_as_max_tokens_and_reserve_changes_it(server: FakeServer) -> None:
    session = make_session(server)
    run = run_repl(session, ["hello\r", "/reserve 300\r", "again\r", "/reserve\r"])
    assert [body["max_tokens"] for body in server.requests] == [1024, 300]
    assert "300 tokens held for the reply" in run.output
    done = run_cli("--base-url", server.url, "hi")
    assert done.returncode == 0 and server.requests[-1]["max_tokens"] == 1024
    done = run_cli("--base-url", server.url, "--max-tokens", "77", "hi")
    assert server.requests[-1]["max_tokens"] == 77


def test_a_model_that_refuses_max_tokens_gets_max_completion_tokens(server: FakeServer) -> None:
    # What OpenAI answers for its reasoning models.
    server.fail_next(status=400, body={"error": {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                   "Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}})
    session = make_session(server)
    run = run_repl(session, ["hello\r", "again\r"])
    assert "error" not in run.output and "echo: again" in run.output
    refused, resent, later = server.requests
    assert refused["max_tokens"] == 1024 and "max_tokens" not in resent
    assert resent["max_completion_tokens"] == 1024 and later["max_completion_tokens"] == 1024


def test_a_stream_that_sends_keep_alives_but_no_token_ends_with_one_line(
    server: FakeServer, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("timeout = 1\n")
    server.hang_stream_next(after_chunks=2, seconds=20, keepalive=0.2)  # never idle, never a token
    done = run_cli("--config", str(config), "--base-url", server.url, "hi")
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "sent no token for 1 s" in lines[0], lines
    assert len(server.requests) == 1


def test_a_request_that_timed_out_is_not_sent_again_to_the_local_server(server: FakeServer) -> None:
    # cli.run opens the local model's backend with retry_timeouts=False: its one slot is still busy.
    config = Settings(base_url=server.url, timeout=0.5, max_retries=2)
    backend = open_backend(config.endpoints, None, timeout=config.timeout, max_retries=2,
                           backoff_base=0.01, retry_timeouts=False)
    session = Session(config, backend)
    server.delay_next(3)
    with pytest.raises(RequestTimeout, match="did not answer within 0.5 s"):
        session.send("hi")
    assert len(server.requests) == 1


# ---- 2. /retry after a failed or cancelled turn sends that message ---------------------------


def test_retry_after_a_failed_turn_resends_that_message_and_keeps_the_exchange_before(
    server: FakeServer,
) -> None:
    session = make_session(server)
    run_repl(session, ["first\r"])
    server.fail_next(status=500)
    run = run_repl(session, ["second\r", "/retry\r"])
    assert "/retry sends the message again" in run.output
    assert "resending your unanswered message" in run.output
    assert contents(server.requests[-1]) == ["first", "echo: first", "second"]
    assert [m.content for m in session.conversation.messages()] == ["first", "echo: first", "second",
                                                                     "echo: second"]
    run_repl(session, ["/retry\r"])  # answered: /retry means the last message again, as before
    assert contents(server.requests[-1]) == ["first", "echo: first", "second"]
    assert len(session.conversation.history) == 4


def test_retry_after_ctrl_c_resends_the_cancelled_message(server: FakeServer) -> None:
    session = make_session(server)
    run_repl(session, ["first\r"])
    server.hang_stream_next(after_chunks=2, seconds=10)
    with ctrl_c_when(lambda: len(server.requests) == 2):
        run = run_repl(session, ["second\r"])
    assert "cancelled; the conversation is unchanged (/retry sends the message again)" in run.output
    run = run_repl(session, ["/retry\r"])
    assert contents(server.requests[-1]) == ["first", "echo: first", "second"]
    assert [m.content for m in session.conversation.messages()][-2:] == ["second", "echo: second"]
    assert session.conversation.messages()[1].content == "echo: first"  # the earlier reply is untouched


def test_a_failed_retry_can_be_retried_and_replaces_the_last_exchange_once(server: FakeServer) -> None:
    session = make_session(server)
    run_repl(session, ["first\r", "second\r"])
    server.fail_next(status=503)
    run = run_repl(session, ["/retry\r", "/retry\r"])
    assert run.output.count("resending") == 2
    assert [m.content for m in session.conversation.messages()] == ["first", "echo: first", "second",
                                                                     "echo: second"]
    assert contents(server.requests[-1]) == ["first", "echo: first", "second"]


def test_a_budget_error_says_how_in_the_chat_and_is_not_retried_blindly(server: FakeServer) -> None:
    session = make_session(server, budget=2000)
    long = "word " * 2000
    run = run_repl(session, [long + "\r", "/budget 12000\r", "/retry\r"], width=300)
    error = next(line for line in run.output.splitlines() if line.startswith("error:"))
    assert "(/budget " in error and "--budget" not in error and "send again" not in error
    assert "/retry sends it once there is room" in error
    needed = int(error.split("(/budget ")[1].split(")")[0])
    assert needed <= 12000
    assert contents(server.requests[-1]) == [long]  # /retry sent it once the budget had room


def test_a_budget_error_offers_no_budget_beyond_the_context_window(server: FakeServer) -> None:
    session = make_session(server, model="gpt-4")  # an 8,192-token window
    run = run_repl(session, ["word " * 9000 + "\r"], width=300)
    error = next(line for line in run.output.splitlines() if line.startswith("error:"))
    assert "/budget" not in error and "raise the budget" not in error
    assert "the context window is 8,192 tokens" in error and server.requests == []


def test_one_shot_budget_hint_names_the_flag(server: FakeServer) -> None:
    done = run_cli("--base-url", server.url, "--budget", "1500", stdin=b"word " * 1000)
    assert done.returncode == 1
    line = done.stderr.decode().strip()
    assert "(--budget " in line and "/budget" not in line and "retry" not in line


# ---- small budgets and the reserve in the chat -----------------------------------------------


def test_a_small_budget_is_set_in_the_chat_by_lowering_the_reserve_first(server: FakeServer) -> None:
    session = make_session(server)
    run = run_repl(session, ["/budget 600\r", "/reserve 100\r", "/budget 600\r", "hello\r", "/reserve 700\r"],
                   width=300)
    lines = [line for line in run.output.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and "/reserve" in lines[0]
    assert session.settings.budget == 600 and session.reserve == 100
    assert server.requests[-1]["max_tokens"] == 100
    assert any(line.startswith("error: a reserve of 700") for line in lines)


# ---- 4. a context overflow while streaming recovers as without streaming ------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_a_context_overflow_recovers_with_or_without_streaming(server: FakeServer, stream: bool) -> None:
    """llama-cpp-python answers a streamed request over its context with 200 and an empty stream; the
    same request unstreamed gets a 400 that names the limit. Both end in the same recovery."""
    session = make_session(server, budget=32000, stream=stream, model="local-model")
    for i in range(6):
        session.send(f"message {i}: " + "lorem ipsum dolor " * 60)
    server.context_limit = approx_tokens([{"content": m.content} for m in session.conversation.messages()])
    server.overflow_stream_empty = True
    run = run_repl(session, ["again\r"], width=200)
    assert "context too long" in run.output and "resent" in run.output, run.output
    assert "echo: again" in run.output and "error" not in run.output
    assert session.conversation.history[-1].content == "echo: again"
    assert session.learned_budget is not None
    done = run_cli("--base-url", server.url, *([] if stream else ["--no-stream"]), "-v", "hi " * 10)
    assert done.returncode == 0  # a one-shot that fits is not affected


def test_a_stream_that_ends_empty_for_another_reason_is_reported_as_such(server: FakeServer) -> None:
    session = make_session(server)
    server.cut_stream_next(after_chunks=0)  # the connection breaks before anything
    run = run_repl(session, ["hello\r"])
    assert "error:" in run.output and "context" not in run.output
    assert len(server.requests) == 1  # a broken connection is no question for the server


# ---- 4b. learning the server's context size ---------------------------------------------------


def test_the_context_size_is_learned_where_the_server_says_it(server: FakeServer) -> None:
    assert learn_context(server.url, None) is None  # says nothing
    server.props = {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 1}
    found = learn_context(server.url, None)
    assert found is not None and found.tokens == 4096 and found.source == f"n_ctx in {server.url[:-3]}/props"
    server.model_info = {"max_model_len": 16384}  # vLLM: the listing wins
    found = learn_context(server.url, None)
    assert found is not None and found.tokens == 16384 and "max_model_len in" in found.source
    server.model_info = {"meta": {"n_ctx_train": 2048}}
    server.props = None
    found = learn_context(server.url, None)
    assert found is not None and found.tokens == 2048 and "n_ctx_train" in found.source
    assert learn_context("http://127.0.0.1:9/v1", None, timeout=1) is None  # nothing listens


def test_with_a_base_url_and_no_model_a_one_shot_conversation_fits_the_server(
    server: FakeServer, tmp_path: Path
) -> None:
    server.props = {"default_generation_settings": {"n_ctx": 2048}}
    path = tmp_path / "chat.json"
    done = run_cli("--base-url", server.url, "--save", str(path), "hi")
    assert done.returncode == 0 and "/props" in server.gets
    saved = json.loads(path.read_text())
    assert saved["settings"]["context_window"] == 2048
    server.clear()
    done = run_cli("--base-url", server.url, "-m", "my-model", "--save", str(tmp_path / "b.json"), "hi")
    assert server.gets.count("/props") == 1  # a model given: its own settings stand, nothing asked
    plain = run_cli("--base-url", server.url, "hi")  # a plain one-shot asks nothing: it starts fast
    assert plain.returncode == 0 and server.gets.count("/props") == 1


# ---- 5. nothing spins in piped output ---------------------------------------------------------


def test_no_spinner_in_piped_output_or_a_chat_that_is_not_a_terminal(server: FakeServer) -> None:
    server.delay_next(0.5)
    done = run_process("--base-url", server.url, "hi")
    assert done.returncode == 0 and done.stdout == b"echo: hi\n" and done.stderr == b""
    server.delay_next(0.5)
    run = run_repl(make_session(server), ["hello\r"])
    assert "waiting" not in run.output and "⠋" not in run.output


# ---- one-shot use, help and hints --------------------------------------------------------------


def test_dry_run_names_the_endpoint_and_model_the_real_run_would_use(server: FakeServer) -> None:
    done = run_cli("--base-url", server.url, "--dry-run", "hi")
    assert done.returncode == 0 and json.loads(done.stdout)["model"] == "gpt-4o-mini"
    assert f"{server.url}/chat/completions" in done.stderr.decode() and server.requests == []
    if not local_available():
        pytest.skip("the local extra is not installed: the rest is about the local model")
    path = bundled_model_path()
    assert path is not None
    done = run_cli("--dry-run", "hi")  # no key, no base URL: the real run would use the local model
    assert done.returncode == 0
    body = json.loads(done.stdout)
    assert body["model"] == path.stem
    err = done.stderr.decode()
    assert "local model's llama.cpp server" in err and path.name in err and "nothing was sent" in err


def test_quiet_leaves_only_the_answer_and_errors(server: FakeServer) -> None:
    server.replier = lambda body: Scripted("cut", finish_reason="length")
    loud = run_cli("--base-url", server.url, "-v", "hi")
    assert b"reply cut" in loud.stderr
    quiet = run_cli("--base-url", server.url, "-q", "-v", "-u", "hi")
    assert quiet.returncode == 0 and quiet.stdout == b"cut\n" and quiet.stderr == b""
    server.fail_next(status=500, n=5)
    failed = run_cli("--base-url", server.url, "-q", "hi")
    assert failed.returncode == 1 and b"500" in failed.stderr  # errors still show


def test_file_warns_of_secret_looking_files_and_a_second_copy(server: FakeServer, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("OPENAI_API_KEY=sk-not-a-real-key\n")
    key = tmp_path / "deploy.txt"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("plain notes\n")
    session = make_session(server)
    run = run_repl(session, [f"/file {env}\r", f"/file {key}\r", f"/file {notes}\r", f"/file {notes}\r"],
                   width=300)
    lines = run.output.splitlines()
    assert any("warning:" in line and ".env" in line and "environment file" in line for line in lines)
    assert any("warning:" in line and "private key" in line and "/drop 2" in line for line in lines)
    assert sum("warning:" in line for line in lines) == 2  # plain notes are not a secret
    assert any("already added as #3" in line and "/drop 3" in line for line in lines)


def test_help_shows_names_defaults_and_examples() -> None:
    done = run_cli("--help")
    text = done.stdout.decode()
    assert done.returncode == 0 and "<" not in text and "list[str]" not in text
    assert "--base-url URL" in text and "--budget N" in text and "Default:" in text
    assert "Examples:" in text and 'stateless-chat "What is a monad?"' in text and "-q, --quiet" in text


def test_a_base_url_without_v1_is_told_to_add_it(server: FakeServer) -> None:
    done = run_cli("--base-url", server.url[: -len("/v1")], "hi")
    assert done.returncode == 1
    line = done.stderr.decode().strip()
    assert "404" in line and "does the base URL need /v1 at its end?" in line


def test_export_closes_a_fence_left_open_and_never_creates_directories(
    server: FakeServer, tmp_path: Path
) -> None:
    server.replier = lambda body: "Here:\n```python\nprint('never closed')"
    session = make_session(server)
    path = tmp_path / "t.md"
    missing = tmp_path / "no" / "such" / "dir" / "t.md"
    run = run_repl(session, ["show me\r", f"/export {path}\r", "after\r", f"/export {missing}\r"], width=200)
    text = path.read_text()
    assert text.count("```") % 2 == 0  # every fence closed: the rest of the transcript is not code
    assert "error:" in run.output and not missing.parent.exists()


def test_the_no_usage_note_comes_after_the_reply_once(server: FakeServer) -> None:
    server.omit_usage = True
    run = run_repl(make_session(server), ["hello\r", "again\r"], width=300)
    out = run.output
    assert out.count("reported no usage") == 1
    assert out.index("echo: hello") < out.index("reported no usage") < out.index("echo: again")
    assert "--no-stream gets it" in out


def test_events_and_history_name_messages_by_the_numbers_commands_take(server: FakeServer) -> None:
    session = make_session(server)
    run = run_repl(session, ["one\r", "two\r", "three\r", "/summarize\r", "/history\r", "/drop 5\r"],
                   width=200)
    summary = session.conversation.summary
    assert summary is not None
    assert f"into the summary #{summary.id} " in run.output  # the event's number ...
    assert re.search(rf"│ +{summary.id} │ summary +│", run.output)  # ... is the one /history shows
    assert "dropped #5-#6" in run.output and "turn 3" not in run.output


def test_a_resent_request_that_fails_reports_its_own_error(server: FakeServer) -> None:
    """The resend after a context-length refusal (and the question after an empty stream) is made while
    that refusal is being handled: its own failure must be what is reported, not the refusal again."""
    from stateless_chat.errors import ContextLengthError, ServerError

    session = make_session(server)
    for i in range(3):
        session.send(f"message {i}: " + "lorem ipsum " * 30)
    server.context_exceeded_next(limit=4096, requested=5000)
    server.fail_next(status=500)
    with pytest.raises(ServerError, match="500") as info:
        session.send("again")
    assert not isinstance(info.value, ContextLengthError)
    assert len(server.requests) == 5  # the refused request and its resend


def test_after_a_refused_max_tokens_summary_requests_send_max_completion_tokens(server: FakeServer) -> None:
    """The summary request goes through the endpoint's dialect like every request (issue 19): once the
    server refused ``max_tokens``, ``/summarize`` and the summarize policy send the limit as
    ``max_completion_tokens``, and nothing falls back to dropping."""
    refusal = {"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                                    "Use 'max_completion_tokens' instead.",
                         "type": "invalid_request_error", "param": "max_tokens",
                         "code": "unsupported_parameter"}}
    server.fail_next(status=400, body=refusal)
    session = make_session(server, budget=400, reply_reserve=40, policy="summarize")
    run = run_repl(session, [f"Message {i}: tell me about subject {i} in a few words, please.\r"
                             for i in range(3)] + ["/summarize\r"])
    assert "error" not in run.output and "dropped" not in run.output
    summaries = [body for body in server.requests if is_summary_request(body)]
    assert summaries, "/summarize made no summary request"
    for i in range(12):  # then the policy folds by itself, within the small budget
        session.send(f"Message {i + 3}: tell me about subject {i + 3} in a few words, please.")
    summaries = [body for body in server.requests if is_summary_request(body)]
    assert len(summaries) >= 2
    assert all("max_tokens" not in body and body["max_completion_tokens"] > 0 for body in summaries)
    assert all("max_tokens" not in body for body in server.requests[1:])
    assert session.conversation.summary is not None
