"""The context window end to end: the real REPL over 20 turns with a small budget, its event
lines and toolbar, and the one-shot ``-u`` usage line through a real subprocess."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from prompt_toolkit.buffer import Buffer
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import StyleAndTextTuples

from stateless_chat.chat.session import Session
from stateless_chat.core.messages import Evicted, Message, Summarized, describe
from stateless_chat.core.summary import SUMMARY_HEADER
from stateless_chat.core.tokens import TokenCounter
from stateless_chat.ui.repl import Repl
from tests.fakeserver import FakeServer, approx_completion_tokens, approx_tokens, is_summary_request
from tests.support import CTRL_D, make_session, piped_repl, run_cli, run_repl, text_of

SYSTEM = "You are a careful assistant."
RESERVE = 64


def filler(i: int) -> str:
    return f"Message {i}: please tell me a little about subject number {i}, in a few words."


def chat_requests(server: FakeServer) -> list[dict[str, Any]]:
    return [body for body in server.requests if not is_summary_request(body)]


def our_size(session: Session, body: dict[str, Any]) -> int:
    return session.counter.count_request([Message(m["role"], m["content"]) for m in body["messages"]])


def assert_under_budget(session: Session, server: FakeServer, budget: int) -> None:
    """Every chat request, recounted from its recorded JSON, plus the reply reserve fits ``budget``."""
    bodies = chat_requests(server)
    assert bodies
    for body in bodies:
        assert our_size(session, body) + RESERVE <= budget, body["messages"]
        assert body["messages"][0] == {"role": "system", "content": SYSTEM}


def assert_events_printed_before_their_request(output: str, session: Session) -> int:
    """Every eviction or summary is one printed line, after the previous turn's reply and before
    the reply of the turn whose request it shaped. Returns how many such lines there were."""
    replies = {e.turn: e.content for e in session.conversation.all_entries() if e.role == "assistant"}
    shown = 0
    cursor = 0
    for stats in session.ledger.turns:
        for event in stats.events:
            if not isinstance(event, (Evicted, Summarized)):
                continue
            line = "· " + describe(event)
            at = output.find(line, cursor)
            assert at >= 0, f"{line!r} is missing or out of order"
            assert output.count(line) == 1
            cursor = at + len(line)
            shown += 1
        at = output.find(replies[stats.turn], cursor)
        assert at >= 0, f"the reply of turn {stats.turn} is missing or precedes its events"
        cursor = at + len(replies[stats.turn])
    return shown


def test_pinned_constraint_survives_twenty_turns_under_a_small_budget(server: FakeServer) -> None:
    budget = 400
    # Standing memory off: what is tested is the pin alone (tests/test_memory.py: the two together).
    session = make_session(server, system=SYSTEM, budget=budget, reply_reserve=RESERVE, memory="off")
    constraint = "My name is Byte Dai. Always answer in French."
    keys = [constraint + "\r", "/pin 1\r"] + [filler(i) + "\r" for i in range(2, 20)] + ["What is my name?\r"]
    run = run_repl(session, keys)

    assert run.exit_code == 0
    assert "pinned #1" in run.output
    bodies = chat_requests(server)
    assert len(bodies) == 20
    assert_under_budget(session, server, budget)
    # The pinned turn-1 constraint is in every request, the last one included, in its place.
    for body in bodies:
        assert body["messages"][1] == {"role": "user", "content": constraint}
    assert "Your name is Byte Dai." in run.output
    # The budget was small enough to force evictions, printed one line each.
    evicted_turns = sorted({e.turn for e in session.conversation.evicted})
    assert len(evicted_turns) >= 5 and 1 not in evicted_turns
    lines = re.findall(r"· evicted #\d+-#\d+ \(turn (\d+), 2 messages, [\d,]+ tokens\): ([\d,]+) / 400",
                       run.output)
    assert [int(turn) for turn, _ in lines] == evicted_turns
    assert all(int(total.replace(",", "")) <= budget for _, total in lines)
    assert assert_events_printed_before_their_request(run.output, session) == len(evicted_turns)


def test_an_unpinned_name_survives_in_the_summary(server: FakeServer) -> None:
    # The fake server's summary keeps the first 40 characters of each line, so a fact folded
    # in and out of nested summaries survives at most four folds; 700 tokens makes three.
    budget = 700
    session = make_session(server, system=SYSTEM, budget=budget, reply_reserve=RESERVE, policy="summarize",
                           evict_to=1.0,  # fold just enough each time: several folds, nested
                           memory="off")  # the summary alone keeps the name (not the memory slot)
    keys = ["My name is Byte Dai.\r"] + [filler(i) + "\r" for i in range(2, 20)] + ["What is my name?\r"]
    run = run_repl(session, keys)

    bodies = chat_requests(server)
    assert len(bodies) == 20
    assert_under_budget(session, server, budget)
    summaries = [b for b in server.requests if is_summary_request(b)]
    assert len(summaries) >= 2  # a summary of a summary, not just one fold
    last = bodies[-1]["messages"]
    assert {"role": "user", "content": "My name is Byte Dai."} not in last  # folded away ...
    assert last[1]["role"] == "system" and last[1]["content"].startswith(SUMMARY_HEADER)
    assert "Byte Dai" in last[1]["content"]  # ... but kept in the summary
    assert run.output.rstrip().endswith("Your name is Byte Dai.")
    shown = assert_events_printed_before_their_request(run.output, session)
    assert shown == len(summaries)
    assert re.search(r"· summarized #1-#\d+.* \([\d,]+ tokens\) into the summary #\d+ \([\d,]+ tokens\)",
                     run.output)


# ---- the toolbar ------------------------------------------------------------------------


def draft(repl: Repl, text: str) -> None:
    """Put ``text`` in the input line as if typed (a plain buffer: no app runs to complete it)."""
    repl.prompt.default_buffer = Buffer(document=Document(text))


def styled(parts: StyleAndTextTuples, needle: str) -> str:
    return next(part[0] for part in parts if needle in part[1])


def test_toolbar_shows_tokens_budget_bar_pins_evictions_and_sent(server: FakeServer) -> None:
    session = make_session(server, model="gpt-4o", system=SYSTEM, budget=400, reply_reserve=RESERVE)
    run_repl(session, ["Keep this.\r", "/pin 1\r"] + [filler(i) + "\r" for i in range(8)])
    with piped_repl(session) as (repl, _):
        parts = repl.toolbar()
        prompt = session.next_request_tokens()
        assert prompt == session.counter.count_request(session.conversation.messages())
        share = (prompt + RESERVE) / 400
        text = text_of(parts)
        assert "≈" not in text  # gpt-4o is counted exactly
        assert f"prompt {prompt:,} + reply {RESERVE} / budget 400 ({share:.0%})" in text
        assert "█" * round(min(share, 1.0) * 12) + "░" * (12 - round(min(share, 1.0) * 12)) in text
        assert "1 pinned" in text
        assert f"{len(session.conversation.evicted)} evicted" in text and session.conversation.evicted
        assert f"sent {session.ledger.sent:,} so far" in text and session.ledger.sent > 0
        expected = "class:ok" if share < 0.8 else "class:warn" if share <= 1.0 else "class:over"
        assert styled(parts, f"prompt {prompt:,} + ") == expected

        # The draft being typed counts; a slash command does not.
        typed = "a draft that is still being typed " * 40
        draft(repl, typed)
        with_draft = prompt + session.measure_text(typed)
        parts = repl.toolbar()
        assert f"prompt {with_draft:,} + reply {RESERVE} / budget 400" in text_of(parts)
        assert styled(parts, f"prompt {with_draft:,} + ") == "class:over"
        draft(repl, "/tokens")
        assert f"prompt {prompt:,} + reply {RESERVE} / budget 400" in text_of(repl.toolbar())


def test_toolbar_colours_follow_the_share_of_the_budget(server: FakeServer) -> None:
    session = make_session(server, budget=1000, reply_reserve=RESERVE, policy="none")
    with piped_repl(session) as (repl, _):
        assert styled(repl.toolbar(), "reply 64 / budget 1,000") == "class:ok"
        for words, style in ((800, "class:warn"), (1000, "class:over")):
            draft(repl, " ".join(["word"] * words))
            share = (session.next_request_tokens(repl.prompt.default_buffer.text) + RESERVE) / 1000
            assert (0.8 <= share <= 1.0) if style == "class:warn" else share > 1.0
            assert styled(repl.toolbar(), "reply 64 / budget 1,000") == style


def test_toolbar_labels_estimates_and_follows_typing(server: FakeServer) -> None:
    session = make_session(server, model="deepseek-chat", budget=4000, reply_reserve=RESERVE)
    seen: list[tuple[str, str]] = []
    with piped_repl(session) as (repl, pipe):
        draw = repl.toolbar

        def recorded() -> StyleAndTextTuples:
            parts = draw()
            seen.append((repl.prompt.default_buffer.text, text_of(parts)))
            return parts

        repl.prompt.bottom_toolbar = recorded
        typed = "hello world, how are you today"

        def type_then_send() -> None:
            pipe.send_text(typed)
            deadline = time.monotonic() + 10
            while not any(draft == typed for draft, _ in seen) and time.monotonic() < deadline:
                time.sleep(0.02)
            pipe.send_text("\r" + CTRL_D)

        typist = threading.Thread(target=type_then_send)
        typist.start()
        repl.run()
        typist.join()
    expected = TokenCounter("deepseek-chat").count_request([Message("user", typed)])
    drawn = [toolbar for draft, toolbar in seen if draft == typed]
    assert drawn, "the toolbar was never redrawn while the message was being typed"
    # an unknown model's count is an estimate
    assert f"prompt ≈{expected:,} + reply {RESERVE} / budget 4,000" in drawn[0]
    assert server.requests[0]["messages"] == [{"role": "user", "content": typed}]


# ---- one-shot -u ------------------------------------------------------------------------------


def usage_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode().splitlines() if "usage:" in line]
    assert len(lines) == 1, stderr
    return lines[0]


def test_usage_line_reports_estimated_and_reported_tokens(server: FakeServer) -> None:
    done = run_cli("--base-url", server.url, "-m", "gpt-4o", "-s", SYSTEM, "-u", "hello there")
    assert done.returncode == 0, done.stderr
    messages = server.requests[0]["messages"]
    estimated = TokenCounter("gpt-4o").count_request([Message(m["role"], m["content"]) for m in messages])
    reported = approx_tokens(messages)
    completion = approx_completion_tokens("echo: hello there")
    line = usage_line(done.stderr)
    assert line.startswith(f"stateless-chat: usage: prompt {estimated:,} estimated, {reported:,} reported; "
                           f"completion {completion:,}; cost $")  # gpt-4o has a built-in price


def test_usage_line_marks_estimates_and_missing_usage(server: FakeServer) -> None:
    server.omit_usage = True
    done = run_cli("--base-url", server.url, "-m", "llama-3-8b", "-u", "hi")
    assert done.returncode == 0, done.stderr
    estimated = TokenCounter("llama-3-8b").count_request([Message("user", "hi")])
    assert usage_line(done.stderr) == (
        f"stateless-chat: usage: prompt ≈{estimated:,} estimated, not reported; completion not reported "
        "(the server sent no usage with the streamed reply, as llama-cpp-python never does: "
        "--no-stream gets it)"
    )


def test_no_usage_line_without_the_flag(server: FakeServer) -> None:
    done = run_cli("--base-url", server.url, "hi")
    assert done.returncode == 0 and b"usage:" not in done.stderr
