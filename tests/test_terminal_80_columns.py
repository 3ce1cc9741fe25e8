"""The chat in a real 80-column terminal (pexpect), the default size of a new terminal window:
the toolbar and /history stay readable, a spinner shows while waiting, keys typed during a reply
are not drawn into it.

prompt_toolkit draws its bottom toolbar only once the terminal has said where the cursor is (a
cursor position request, which a real terminal answers); ``Terminal.expect`` answers them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fakeserver import FakeServer
from tests.support import Terminal


@pytest.mark.timeout(90)
def test_toolbar_and_history_are_readable_at_80_columns(server: FakeServer, tmp_path: Path) -> None:
    term = Terminal(server, tmp_path)
    term.expect("/help for commands")
    term.prompt()
    term.send("Please remember my name is Byte Dai, and that I like long first lines a lot\r")
    term.expect("echo: Please remember")
    term.expect(r"budget 32,000 \(\d+%\)")
    # The toolbar keeps the model, the messages and what its numbers are; what does not fit goes whole.
    toolbar = re.search(r" gpt-4o-mini │ 2 msgs │ prompt \d+ \+ reply 1,024 / budget 32,000 \(\d+%\)",
                        term.read())
    assert toolbar is not None  # (drawn with the prompt: the chat is ready for input)
    term.send("/history\r")
    term.expect("assistant")
    term.prompt()
    rows = [line for line in term.read().splitlines() if line.startswith(("│", "┃"))]
    assert rows and all(len(line) <= 80 for line in rows)
    # The standing memory first, as a part of its own, then the messages.
    assert re.search(r"┃ note ┃ tokens ┃ from ┃ text", rows[0])
    assert re.search(r"│ m1 +│ +\d+ │ #1 +│ Please remember my name is Byte Dai,.*… │", rows[1])
    rows = rows[2:]
    # Numbers, roles, token counts and states are whole; the first line gives way, with "…".
    assert re.search(r"┃ # ┃ role +┃ tokens ┃ pin ┃ state ┃ first line", rows[0])
    assert re.search(r"│ 1 │ user +│ +\d+ │ +│ sent +│ Please remember my name is Byte Dai,.*… │", rows[1])
    assert re.search(r"│ 2 │ assistant │ +\d+ │ +│ sent +│ echo: Please remember .*… │", rows[2])
    term.leave()


@pytest.mark.timeout(90)
def test_a_long_model_name_gives_way_to_the_numbers(server: FakeServer, tmp_path: Path) -> None:
    term = Terminal(server, tmp_path, "-m", "a-really-long-model-name-for-a-narrow-terminal-window")
    term.expect("/help for commands")
    term.prompt()
    term.send("hello\r")
    term.expect(r"budget 8,192 \(\d+%\)")
    shown = term.read()
    assert re.search(r" a-really-long[a-z-]*… │ prompt ≈\d+ \+ reply 1,024 / budget 8,192 \(\d+%\)", shown)
    term.leave()


@pytest.mark.timeout(90)
def test_a_spinner_shows_while_waiting_for_the_first_token_and_for_a_summary(
    server: FakeServer, tmp_path: Path
) -> None:
    term = Terminal(server, tmp_path)
    term.expect("/help for commands")
    for text in ("one", "two"):
        term.prompt()
        term.send(text + "\r")
        term.expect(f"echo: {text}")
    term.prompt()
    server.delay_next(1.5)
    term.send("three\r")
    term.expect(r"waiting for the reply \d+\.\d s")
    term.expect("echo: three")
    term.prompt()
    server.delay_next(1.5)
    term.send("/summarize\r")
    term.expect(r"summarizing \d+\.\d s")
    term.expect("/show")
    term.prompt()
    term.leave()


@pytest.mark.timeout(90)
def test_keys_typed_during_a_reply_are_not_drawn_into_it_and_wait_for_the_prompt(
    server: FakeServer, tmp_path: Path
) -> None:
    term = Terminal(server, tmp_path)
    term.expect("/help for commands")
    term.prompt()
    server.hang_stream_next(after_chunks=2, seconds=1.5)  # "echo: " comes, then a pause mid-reply
    term.send("second\r")
    term.expect("echo:")
    term.read()
    term.send("zzz")
    term.expect("second")  # the rest of the reply
    during = term.read()
    assert "zzz" not in during  # the terminal did not echo the keys into the reply
    term.prompt()
    term.expect("zzz")  # they are at the next prompt, typed ahead
    term.send("\r")
    term.expect("echo: zzz")
    term.prompt()
    term.leave()
    assert server.requests[-1]["messages"][-1]["content"] == "zzz"


@pytest.mark.timeout(90)
def test_the_chat_learns_the_servers_context_size_and_says_where_from(
    server: FakeServer, tmp_path: Path
) -> None:
    server.props = {"default_generation_settings": {"n_ctx": 4096}}  # llama.cpp's llama-server
    term = Terminal(server, tmp_path)
    term.expect("/help for commands")
    term.prompt()
    said = re.sub(r"\s+", " ", term.read())
    assert re.search(r"context window 4,096 tokens \(as the server says: n_ctx in http://127\.0\.0\.1:\d+/props\)",
                     said)
    term.send("/model\r")
    term.expect(r";\s+tokens:\s+exact")  # how the model's counts are made
    assert "context window 4,096 (as the server says: n_ctx in" in re.sub(r"\s+", " ", term.read())
    term.prompt()
    term.send("hello\r")
    term.expect(r"budget 4,096 \(\d+%\)")  # the budget follows it, down from 32,000
    term.leave()
