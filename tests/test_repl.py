"""The stateless loop through the real REPL code path (prompt_toolkit pipe input)."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path

from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from stateless_chat.core.messages import Message
from stateless_chat.core.tokens import byte_lower_bound
from tests.fakeserver import FakeServer
from tests.support import (
    CTRL_D,
    ESC_ENTER,
    make_session,
    repl_for,
    run_repl,
    standing_block,
    toolbar_with_draft,
)


def test_each_request_resends_the_whole_history(server: FakeServer) -> None:
    session = make_session(server, system="You are terse.")
    lines = ["Please remember my name is Byte Dai\r", "What is my name?\r", "third message\r"]
    run = run_repl(session, lines)

    assert run.exit_code == 0
    bodies = server.requests
    assert len(bodies) == 3
    replies: list[str] = []
    users = ["Please remember my name is Byte Dai", "What is my name?", "third message"]
    for k, body in enumerate(bodies, start=1):
        messages = body["messages"]
        assert messages[0] == {"role": "system", "content": "You are terse."}
        # From the second request on, the standing memory (what the first message asked to remember)
        # comes right after the system prompt; the history is resent whole after it.
        memory = [{"role": "system", "content": standing_block("Please remember my name is Byte Dai")}]
        expected = memory if k > 1 else []
        for i in range(k):
            expected.append({"role": "user", "content": users[i]})
            if i < k - 1:
                expected.append({"role": "assistant", "content": replies[i]})
        assert messages[1:] == expected
        if k == 1:
            replies.append("echo: Please remember my name is Byte Dai")
        elif k == 2:
            replies.append("Your name is Byte Dai.")
    assert "Your name is Byte Dai." in run.output
    assert session.conversation.messages()[-1] == Message("assistant", "echo: third message")


def test_the_name_is_known_only_because_the_first_turn_was_resent(server: FakeServer) -> None:
    # A fresh session that never heard the name gets the stateless server's honest answer.
    run = run_repl(make_session(server), ["What is my name?\r"])
    assert "I don't know your name." in run.output


def test_server_error_leaves_the_conversation_unchanged(server: FakeServer) -> None:
    session = make_session(server)
    run_repl(session, ["first\r"])
    before = session.conversation
    server.fail_next(status=500)
    run = run_repl(session, ["second\r"])
    assert "error:" in run.output and "500" in run.output
    assert session.conversation == before
    run_repl(session, ["second\r"])  # the retry carries one copy of the message, not two
    assert [m["content"] for m in server.requests[-1]["messages"]] == ["first", "echo: first", "second"]


def test_ctrl_c_mid_stream_cancels_and_keeps_the_conversation(server: FakeServer) -> None:
    session = make_session(server)
    run_repl(session, ["first\r"])
    before = session.conversation
    server.hang_stream_next(after_chunks=2, seconds=10)
    timer = threading.Timer(0.7, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        run = run_repl(session, ["second\r"])
    finally:
        timer.cancel()
    assert "cancelled" in run.output
    assert session.conversation == before
    assert run.exit_code == 0


def test_escape_enter_inserts_a_newline(server: FakeServer) -> None:
    session = make_session(server)
    run_repl(session, ["line one" + ESC_ENTER + "line two\r"])
    assert server.requests[0]["messages"][-1]["content"] == "line one\nline two"


def test_exit_quit_and_help(server: FakeServer) -> None:
    session = make_session(server)
    run = run_repl(session, ["/help\r", "/quit\r", "never sent\r"])
    assert "/history" in run.output and "Esc-Enter" in run.output
    assert server.requests == []
    run = run_repl(session, ["/exit\r", "never sent\r"])
    assert server.requests == [] and run.exit_code == 0


def test_ctrl_d_leaves(server: FakeServer) -> None:
    run = run_repl(make_session(server), [CTRL_D])
    assert run.exit_code == 0 and server.requests == []


def test_toolbar_shows_model_messages_and_tokens(server: FakeServer) -> None:
    session = make_session(server, model="gpt-4o", budget=4000)
    run_repl(session, ["hello\r"])
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        repl = repl_for(session, Console(file=open(os.devnull, "w")), input=pipe, output=DummyOutput())
        text = "".join(part[1] for part in repl.toolbar())
    expected = session.next_request_tokens()
    assert "gpt-4o" in text and "2 msgs" in text
    assert f"prompt {expected:,} + reply 1,024 / budget 4,000" in text


def test_every_message_gets_its_own_number(server: FakeServer) -> None:
    session = make_session(server)
    run_repl(session, ["one\r", "two\r"])
    ids = [e.id for e in session.conversation.history]
    assert ids == [1, 2, 3, 4]
    assert [e.turn for e in session.conversation.history] == [1, 1, 2, 2]


def test_ctrl_c_during_a_command_cancels_it_and_the_chat_goes_on(server: FakeServer) -> None:
    session = make_session(server)
    run_repl(session, ["one\r", "two\r", "three\r"])
    before = session.conversation
    server.delay_next(10)  # the /summarize request hangs until Ctrl-C
    sent = len(server.requests)
    stop = threading.Event()

    def interrupt_once_it_is_sent() -> None:  # Ctrl-C while the request waits, however slow the machine
        while not stop.is_set() and len(server.requests) == sent:
            time.sleep(0.01)
        if not stop.wait(0.2):
            os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=interrupt_once_it_is_sent)
    watcher.start()
    try:
        run = run_repl(session, ["/summarize\r", "four\r"])
    finally:
        stop.set()
        watcher.join()
    assert "cancelled" in run.output and run.exit_code == 0
    assert server.requests[-1]["messages"][-1]["content"] == "four"
    assert session.conversation.messages()[:6] == before.messages()


def test_toolbar_counts_the_draft_but_never_one_too_big_to_send(server: FakeServer) -> None:
    session = make_session(server, model="gpt-4o")
    counted: list[int] = []
    original = session.counter.count_message
    spy = lambda m: counted.append(len(m.content)) or original(m)  # noqa: E731
    session.counter.count_message = spy  # type: ignore[method-assign]
    text, style = toolbar_with_draft(session, "a short question")
    assert f"prompt {session.next_request_tokens('a short question'):,} + " in text and style == "class:ok"
    huge = "x" * 5_000_000  # one run: counting it takes about a second, on every keystroke
    text, style = toolbar_with_draft(session, huge)
    assert max(counted) < 100 and style == "class:over"
    assert f"prompt ≥{session.next_request_tokens() + byte_lower_bound(huge):,} + " in text


def test_a_line_that_is_not_utf8_is_sent_with_replacement_characters(
    server: FakeServer, tmp_path: Path
) -> None:
    session = make_session(server)
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=False, color_system=None)
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        pipe.send_bytes(b"caf\xe9 au lait\r")  # a Latin-1 terminal: the prompt gets surrogate escapes
        pipe.send_text(f"/save {tmp_path / 'chat.json'}\r\x04")
        assert repl_for(session, console, input=pipe, output=DummyOutput()).run() == 0
    output = buffer.getvalue()
    assert "not valid UTF-8" in output and "error" not in output
    assert server.requests[-1]["messages"][-1]["content"] == "caf\ufffd au lait"
    assert "caf\ufffd au lait" in (tmp_path / "chat.json").read_text(encoding="utf-8")


class CtrlCWhilePrinting(io.StringIO):
    """A terminal where Ctrl-C arrives while the first history table is being printed."""

    def __init__(self) -> None:
        super().__init__()
        self.pressed = False

    def write(self, text: str) -> int:
        if "first line" in text and not self.pressed:
            self.pressed = True
            raise KeyboardInterrupt
        return super().write(text)


def test_ctrl_c_while_a_result_prints_cuts_the_output_not_the_chat(server: FakeServer) -> None:
    session = make_session(server)
    run_repl(session, ["one\r"])
    before = session.conversation
    terminal = CtrlCWhilePrinting()
    console = Console(file=terminal, width=100, force_terminal=False, color_system=None)
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        pipe.send_text("/history\rtwo\r\x04")
        assert repl_for(session, console, input=pipe, output=DummyOutput()).run() == 0
    assert terminal.pressed and "echo: two" in terminal.getvalue()
    assert session.conversation.messages()[:2] == before.messages()
