"""Every slash command through the real REPL path (prompt_toolkit pipe input): what it prints,
what it does to the session, and what the next request carries."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from stateless_chat.chat.session import Session
from stateless_chat.core.messages import Message
from stateless_chat.ui.repl import SlashCompleter
from tests.fakeserver import FakeServer, is_summary_request
from tests.support import ReplRun, app_for, make_session, standing_block
from tests.support import run_repl as run_repl_narrow


def run_repl(session: Session, keys: list[str]) -> ReplRun:
    """Run the REPL wide enough that no printed line (they hold temporary paths) wraps."""
    return run_repl_narrow(session, keys, width=1000)


def contents(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"]]


def chatted(server: FakeServer, *lines: str, **settings: Any) -> Session:
    """Return a session that has sent ``lines`` (one exchange each) through the REPL."""
    session = make_session(server, **settings)
    run_repl(session, [line + "\r" for line in lines])
    assert len(server.requests) == len(lines)
    return session


def ids(session: Session) -> list[int]:
    return [e.id for e in session.conversation.history]


# ---- editing the history -------------------------------------------------------------


def test_drop_range_removes_messages_from_the_next_request(server: FakeServer) -> None:
    session = chatted(server, "one", "two")
    run = run_repl(session, ["/drop 1-2\r", "three\r"])
    assert "dropped #1-#2" in run.output
    assert ids(session) == [3, 4, 5, 6]
    assert contents(server.requests[-1]) == ["two", "echo: two", "three"]
    assert all(e.id not in (1, 2) for e in session.conversation.history)
    assert [(e.id, session.conversation.state(e)) for e in session.conversation.evicted] == [
        (1, "removed"), (2, "removed")]


@pytest.mark.parametrize("arg", ["5-3", "0", "9", "x", ""])
def test_drop_bad_argument_is_one_line_and_changes_nothing(server: FakeServer, arg: str) -> None:
    session = chatted(server, "one", "two")
    before = session.conversation
    run = run_repl(session, [f"/drop {arg}\r"])
    errors = [line for line in run.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(run.output.strip().splitlines()) == 1
    assert session.conversation is before


def test_trim_keeps_the_last_k_turns_and_pinned_ones(server: FakeServer) -> None:
    session = chatted(server, "one", "two", "three", "four")
    run = run_repl(session, ["/pin 3\r", "/trim 1\r", "five\r"])
    assert "removed 2 turn(s)" in run.output
    assert contents(server.requests[-1]) == ["two", "echo: two", "four", "echo: four", "five"]
    run = run_repl(session, ["/trim many\r"])
    assert "error: usage: /trim K" in run.output


def test_clear_keeps_system_and_pins_only(server: FakeServer) -> None:
    session = chatted(server, "my name is Ada", "two", system="be brief")
    run = run_repl(session, ["/pin 1\r", "/clear\r", "what is my name?\r"])
    assert "cleared 2 message(s)" in run.output
    # The pinned turn stays in its place; what it said stands in the memory slot too.
    assert contents(server.requests[-1]) == ["be brief", standing_block("my name is Ada"), "my name is Ada",
                                             "echo: my name is Ada", "what is my name?"]
    assert "Your name is Ada." in run.output
    assert session.conversation.summary is None
    # What /clear took out is kept, marked removed (and no longer sent).
    evicted = session.conversation.evicted
    assert [e.id for e in evicted] == [3, 4]
    assert {e.eviction.how for e in evicted if e.eviction} == {"removed"}


def test_undo_removes_the_last_exchange(server: FakeServer) -> None:
    session = chatted(server, "one", "two")
    run = run_repl(session, ["/undo\r", "again\r"])
    assert "removed #3-#4" in run.output
    assert contents(server.requests[-1]) == ["one", "echo: one", "again"]
    fresh = make_session(server)
    run = run_repl(fresh, ["/undo\r"])
    assert "error: no exchange" in run.output and fresh.conversation.history == ()


def test_retry_resends_the_last_message_and_replaces_its_reply(server: FakeServer) -> None:
    replies = iter(["first answer", "second answer", "better answer"])
    server.replier = lambda body: next(replies)
    session = chatted(server, "one", "two")
    run = run_repl(session, ["/retry\r"])
    assert "better answer" in run.output
    assert server.requests[-1]["messages"] == server.requests[-2]["messages"]
    assert [m.content for m in session.conversation.messages()] == ["one", "first answer", "two",
                                                                      "better answer"]


def test_retry_and_edit_keep_the_pin_of_the_message_they_replace(server: FakeServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDITOR", f"{sys.executable} -c pass")  # an editor that changes nothing
    session = chatted(server, "one", "two")
    run_repl(session, ["/pin 3\r", "/retry\r"])
    assert [(e.content, e.pinned) for e in session.conversation.history if e.role == "user"] == [
        ("one", False), ("two", True)]
    run_repl(session, ["/edit\r"])
    assert [(e.content, e.pinned) for e in session.conversation.history if e.role == "user"] == [
        ("one", False), ("two", True)]
    assert len(server.requests) == 4


def test_failed_retry_changes_nothing(server: FakeServer) -> None:
    session = chatted(server, "one", "two")
    before = session.conversation
    server.fail_next(status=500)
    run = run_repl(session, ["/retry\r"])
    assert "error:" in run.output and "500" in run.output
    assert session.conversation is before


def test_edit_with_editor_resends_the_edited_message(server: FakeServer, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "editor.py"
    script.write_text("import sys\np = sys.argv[1]\ntext = open(p).read()\n"
                      "open(p, 'w').write(text.replace('Ada', 'Grace') + '\\n')\n")
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    session = chatted(server, "one", "my name is Ada")
    run = run_repl(session, ["/edit\r"])
    assert "echo: my name is Grace" in run.output
    assert contents(server.requests[-1]) == ["one", "echo: one", "my name is Grace"]
    assert [m.content for m in session.conversation.messages()][-2:] == ["my name is Grace",
                                                                        "echo: my name is Grace"]


def test_edit_with_failing_editor_changes_nothing(server: FakeServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDITOR", "false")
    session = chatted(server, "one")
    before = session.conversation
    run = run_repl(session, ["/edit\r"])
    assert "error: the editor exited with status 1" in run.output
    assert session.conversation is before and len(server.requests) == 1


def test_edit_without_editor_prefills_the_prompt(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDITOR", raising=False)
    session = chatted(server, "one", "two")
    run = run_repl(session, ["/edit\r", " more\r"])
    assert "editing #3" in run.output
    assert contents(server.requests[-1]) == ["one", "echo: one", "two more"]
    assert [m.content for m in session.conversation.messages()] == ["one", "echo: one", "two more",
                                                                      "echo: two more"]


def test_double_slash_sends_a_message_that_begins_with_a_slash(server: FakeServer) -> None:
    session = make_session(server)
    run = run_repl(session, ["//etc/hosts is a file\r"])
    assert contents(server.requests[-1]) == ["/etc/hosts is a file"]
    assert "echo: /etc/hosts is a file" in run.output and "error" not in run.output


def test_edit_in_the_prompt_of_a_message_that_begins_with_a_slash(server: FakeServer,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDITOR", raising=False)
    session = chatted(server, "one", "//etc/hosts is what")
    run = run_repl(session, ["/edit\r", " now\r"])
    assert "error" not in run.output
    assert contents(server.requests[-1]) == ["one", "echo: one", "/etc/hosts is what now"]
    assert [m.content for m in session.conversation.messages()] == [
        "one", "echo: one", "/etc/hosts is what now", "echo: /etc/hosts is what now"]


# ---- files --------------------------------------------------------------------------


def test_file_enters_the_history_as_its_own_turn(server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("the launch code is 1234\n")
    session = make_session(server)
    run = run_repl(session, [f"/file {path}\r", "what is in it?\r"])
    assert f"added {path} as #1" in run.output
    entry = session.conversation.history[0]
    assert entry.kind == "file" and entry.source == str(path) and not entry.pinned
    assert contents(server.requests[0]) == [f"File: {path}\n\nthe launch code is 1234\n", "what is in it?"]
    assert entry.tokens == session.measure(entry.message)


def test_pinned_file_survives_eviction(server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "spec.md"
    path.write_text("spec " * 20)
    session = make_session(server, budget=400, reply_reserve=100)
    run_repl(session, [f"/file {path} --pin\r"] + [f"message number {i} " * 8 + "\r" for i in range(8)])
    assert session.conversation.evicted, "the budget should have forced evictions"
    assert all(contents(body)[0].startswith(f"File: {path}") for body in server.requests)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"abc\x00def", "looks binary"),
        (b"caf\xe9\n", "is not UTF-8"),
        (b"x" * 1_000_001, "files over 1,000,000 bytes are refused"),
    ],
)
def test_file_refuses_binary_non_utf8_and_huge_files(server: FakeServer, tmp_path: Path, data: bytes,
                                                     message: str) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    session = make_session(server)
    before = session.conversation
    run = run_repl(session, [f"/file {path}\r"])
    assert message in run.output and len(run.output.strip().splitlines()) == 1
    assert session.conversation is before


def test_file_over_the_budget_or_missing_is_refused(server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("word " * 2000)
    session = make_session(server, budget=1000, reply_reserve=100)
    run = run_repl(session, [f"/file {path}\r", f"/file {tmp_path / 'nope.txt'}\r", "/file\r"])
    assert "cannot fit the budget of 1,000: not added" in run.output
    assert "no such file" in run.output and "usage: /file PATH [--pin]" in run.output
    assert session.conversation.history == ()


def test_files_lists_what_was_added_and_whether_it_is_sent(server: FakeServer, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha " * 30)
    (tmp_path / "b.txt").write_text("beta")
    session = make_session(server, budget=300, reply_reserve=100)
    keys = [f"/file {tmp_path / 'a.txt'}\r", f"/file {tmp_path / 'b.txt'} --pin\r"]
    keys += [f"filler {i} " * 10 + "\r" for i in range(4)] + ["/files\r"]
    run = run_repl(session, keys)
    tail = run.output.splitlines()[-2:]
    assert tail[0].startswith(f"#1 {tmp_path / 'a.txt'}") and tail[0].endswith("evicted: no longer sent")
    assert tail[1].startswith(f"#2 {tmp_path / 'b.txt'}") and tail[1].endswith("sent, pinned")
    assert "no files added" in run_repl(make_session(server), ["/files\r"]).output


# ---- settings -----------------------------------------------------------------------


def test_system_shows_sets_and_clears(server: FakeServer) -> None:
    session = make_session(server, system="old rules")
    run = run_repl(session, ["/system\r", "/system be terse\r", "hi\r"])
    assert "old rules" in run.output and "system prompt set" in run.output
    assert server.requests[-1]["messages"][0] == {"role": "system", "content": "be terse"}
    assert session.settings.system == "be terse"
    run_repl(session, ["/system --clear\r", "again\r"])
    assert server.requests[-1]["messages"][0]["role"] == "user" and session.conversation.system is None


def test_model_switches_the_request_and_the_token_counter(server: FakeServer) -> None:
    session = chatted(server, "hello there", model="gpt-4o")
    assert session.counter.encoding_name == "o200k_base"
    run = run_repl(session, ["/model\r", "/model gpt-4\r", "next\r"])
    assert "model gpt-4o:" in run.output and "model gpt-4: context window 8,192" in run.output
    assert server.requests[-1]["model"] == "gpt-4"
    assert session.counter.encoding_name == "cl100k_base" and session.budget == 8192
    assert all(e.tokens == session.counter.count_message(e.message) for e in session.conversation.history)
    run = run_repl(session, ["/model two words\r"])
    assert "error: usage: /model" in run.output and session.settings.model == "gpt-4"


def test_budget_shows_and_sets_and_refuses_nonsense(server: FakeServer) -> None:
    session = make_session(server)
    run = run_repl(session, ["/budget 5000\r", "/budget abc\r", "/budget 500\r", "/budget\r"])
    assert session.settings.budget == 5000 and session.budget == 5000
    lines = run.output.splitlines()
    assert lines[0].startswith("budget 5,000 tokens per request")
    assert lines[1].startswith("error: usage: /budget")
    assert lines[2].startswith("error:") and "/reserve" in lines[2]  # 1,024 reserve > 500
    assert lines[3].startswith("budget 5,000 tokens")


def test_policy_sets_names_and_completes(server: FakeServer) -> None:
    session = make_session(server)
    run = run_repl(session, ["/policy none\r", "/policy summ\r"])
    assert session.settings.policy == "none"
    assert "did you mean summarize?" in run.output
    completer = SlashCompleter(app_for(session))
    found = [c.text for c in completer.get_completions(Document("/policy s"), CompleteEvent())]
    assert found == ["summarize"]


def test_summarize_folds_old_turns_now(server: FakeServer) -> None:
    session = chatted(server, "my name is Ada", "two", "three")
    run = run_repl(session, ["/summarize\r", "what is my name?\r"])
    assert "summarized #1-#4 (" in run.output
    assert is_summary_request(server.requests[3])
    summary = session.conversation.summary
    assert summary is not None and "my name is Ada" in summary.content
    sent = server.requests[-1]["messages"]
    assert sent[0]["content"] == standing_block("my name is Ada")  # the memory slot, then the summary
    assert sent[1]["role"] == "system" and sent[1]["content"] == summary.content
    assert contents(server.requests[-1])[2:] == ["three", "echo: three", "what is my name?"]
    assert "Your name is Ada." in run.output
    assert [e.id for e in session.conversation.evicted] == [1, 2, 3, 4]


def test_summarize_with_nothing_to_fold_is_an_error(server: FakeServer) -> None:
    session = chatted(server, "one")
    run = run_repl(session, ["/summarize\r"])
    assert "error: nothing to summarize" in run.output and len(server.requests) == 1


# ---- save, load, export, stats -----------------------------------------------------------


def test_save_then_load_restores_the_conversation(server: FakeServer, tmp_path: Path) -> None:
    session = chatted(server, "my name is Ada", "two", system="sys")
    run_repl(session, ["/pin 1\r"])
    path = tmp_path / "chat.json"
    run = run_repl(session, [f"/save {path}\r"])
    assert f"saved 4 message(s) and 0 evicted to {path}" in run.output
    assert os.stat(path).st_mode & 0o777 == 0o600
    other = make_session(server)
    run = run_repl(other, [f"/load {path}\r", "what is my name?\r"])
    assert other.conversation.history[:4] == session.conversation.history
    assert contents(server.requests[-1])[:6] == ["sys", standing_block("my name is Ada"), "my name is Ada",
                                                 "echo: my name is Ada", "two", "echo: two"]
    assert "Your name is Ada." in run.output


def test_save_without_a_name_goes_to_the_data_dir(server: FakeServer) -> None:
    session = chatted(server, "one")
    run = run_repl(session, ["/save\r"])
    saved = list((Path(os.environ["XDG_DATA_HOME"]) / "stateless-chat" / "conversations").glob("*.json"))
    assert len(saved) == 1 and f"to {saved[0]}" in run.output


def test_load_of_a_bad_file_changes_nothing(server: FakeServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    session = chatted(server, "one")
    before = session.conversation
    run = run_repl(session, [f"/load {bad}\r", f"/load {tmp_path / 'missing.json'}\r"])
    lines = run.output.strip().splitlines()
    assert len(lines) == 2 and "not valid JSON" in lines[0] and "no such conversation file" in lines[1]
    assert session.conversation is before


def test_export_writes_a_markdown_transcript(server: FakeServer, tmp_path: Path) -> None:
    session = chatted(server, "hello", "second question", system="be kind")
    path = tmp_path / "chat.md"
    run = run_repl(session, [f"/export {path}\r"])
    assert f"wrote the transcript to {path}" in run.output
    text = path.read_text()
    assert text.startswith("# stateless-chat transcript")
    assert "## System prompt\n\nbe kind" in text
    assert "### #3 User\n\nsecond question" in text and "### #4 Assistant\n\necho: second question" in text
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_stats_charts_each_turn_and_marks_evictions(server: FakeServer) -> None:
    session = make_session(server, budget=200, reply_reserve=50)
    run = run_repl(session, [f"question {i} " * 6 + "\r" for i in range(6)] + ["/stats\r"])
    turns = session.ledger.turns
    assert any(t.evictions for t in turns)
    chart = run.output[run.output.index("prompt tokens sent per turn"):]
    assert chart.count("✂") == sum(1 for t in turns if t.evictions) + 1  # plus the legend
    for t in turns:
        assert f"{t.reported_prompt_tokens:,}" in chart
    ledger = session.ledger
    assert f"total sent {ledger.sent:,} (≈{ledger.cached:,} cached) vs {ledger.baseline:,}" in chart
    assert session.ledger.sent < session.ledger.baseline
    assert "no turns yet" in run_repl(make_session(server), ["/stats\r"]).output


# ---- help and completion ------------------------------------------------------------------


def test_every_command_has_help(server: FakeServer) -> None:
    from stateless_chat.ui.commands import REGISTRY

    run = run_repl(make_session(server), ["/help\r", "/help drop\r"])
    for name, command in REGISTRY.items():
        assert command.help and command.usage.startswith(f"/{name}")
        assert command.usage in run.output
    assert "remove message N (or N to M)" in run.output


def test_completion_of_message_numbers_and_paths(server: FakeServer, tmp_path: Path) -> None:
    session = chatted(server, "one", "two")
    completer = SlashCompleter(app_for(session))

    def complete(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]

    assert complete("/pin ") == ["4", "3", "2", "1"]
    assert complete("/drop 3") == ["3"]
    (tmp_path / "notes.txt").write_text("x")
    assert complete(f"/file {tmp_path}/no") == ["tes.txt"]
    assert complete(f"/load {tmp_path}/no") == ["tes.txt"]


def test_raw_shows_controls_in_a_reply_as_json_escapes(server: FakeServer) -> None:
    server.replier = lambda body: "a \x9b2J b \x1b]0;title\x07 c \x7f d"
    session = chatted(server, "one")
    run = run_repl(session, ["/raw\r"])
    assert not any(c in run.output for c in ("\x1b", "\x07", "\x9b", "\x7f")), repr(run.output)
    shown = run.output[run.output.index("{"):run.output.rindex("}") + 1]  # the body, then its size
    assert json.loads(shown)["messages"][-1]["content"] == session.conversation.history[-1].content
    size = run.output[run.output.rindex("}") + 1:]
    assert f"prompt {session.next_request_tokens():,} tokens" in size and "counted: exact: o200k_base" in size


def history_calls(server: FakeServer, tmp_path: Path, count: int) -> int:
    """Return how many Python function calls ``/history all`` makes over ``count`` loaded messages."""
    import sys

    from stateless_chat.ui.commands import HistoryView, dispatch

    messages = [{"id": i, "role": "user" if i % 2 else "assistant", "content": f"m{i}", "turn": (i + 1) // 2}
                for i in range(1, count + 1)]
    path = tmp_path / f"long-{count}.json"
    path.write_text(json.dumps({"format": "stateless-chat/conversation", "version": 1, "messages": messages,
                                "next_id": count + 1, "next_turn": count // 2 + 1}))
    session = make_session(server)
    dispatch(app_for(session), f"/load {path}")
    calls = 0

    def profile(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        calls += event == "call"

    sys.setprofile(profile)
    try:
        view = dispatch(app_for(session), "/history all")
    finally:
        sys.setprofile(None)
    assert isinstance(view, HistoryView) and len(view.rows) == count
    return calls


def test_history_of_a_long_conversation_takes_linear_work(server: FakeServer, tmp_path: Path) -> None:
    # Counted in function calls, not seconds: twice the messages, about twice the work (it was
    # quadratic: each message scanned the live list).
    small, large = history_calls(server, tmp_path, 2_000), history_calls(server, tmp_path, 4_000)
    assert large < 2.2 * small


def test_stats_rows_use_the_servers_units_for_the_baseline_too(server: FakeServer) -> None:
    from stateless_chat.ui.commands import StatsView, dispatch

    session = make_session(server)  # nothing is ever evicted: each row's baseline is what was sent
    run_repl(session, ["one two three\r", "four five six seven\r", "eight\r"])
    view = dispatch(app_for(session), "/stats")
    assert isinstance(view, StatsView)
    assert all(row.sent == row.baseline for row in view.rows)
    assert [t.estimated_prompt_tokens for t in session.ledger.turns] != [row.sent for row in view.rows]
    assert view.sent_total == view.baseline_total == sum(row.sent for row in view.rows)


def test_tokens_breaks_the_next_request_down_against_the_budget(server: FakeServer) -> None:
    session = make_session(server, model="gpt-4o", system="Be brief.", budget=2000, reply_reserve=100)
    run = run_repl(session, ["remember: tea, not coffee\r", "/pin 1\r", "second question\r", "/tokens\r"])
    table = run.output[run.output.index("next request"):]
    conversation = session.conversation
    system = conversation.system.tokens if conversation.system else 0
    pinned = sum(e.tokens for e in conversation.history if e.pinned)
    turns = sum(e.tokens for e in conversation.history if not e.pinned)
    assert pinned and turns and system
    framing = session.measure(Message("user", ""))  # what a message adds besides its text: 3, and "user"
    assert framing == 4
    total = system + pinned + turns + framing + 3 + 100
    for name, size in (("system", system), ("pinned", pinned), ("turns", turns), ("reply reserve", 100),
                       ("new message framing", framing), ("reply priming", 3)):
        assert any(name in line and f" {size:,} " in line for line in table.splitlines()), name
    assert f"{total:,} / 2,000" in table
    assert f"room for the next message's text: {2000 - total:,} tokens" in table
    sent = session.ledger.sent
    assert f"{sent:,} prompt tokens sent" in table and "with nothing evicted" in table
    # what /tokens calls the request is what the next request really carries, less the new text
    run_repl(session, ["x\r"])
    request = server.requests[-1]
    estimated = session.ledger.turns[-1].estimated_prompt_tokens
    assert estimated == total - 100 + session.measure_text("x") - framing
    assert len(request["messages"]) == 6


def test_show_prints_one_message_in_full_live_or_evicted(server: FakeServer) -> None:
    long_text = "first line\n" + "\n".join(f"line {i} of a long message" for i in range(30))
    session = make_session(server, budget=1000, reply_reserve=20)
    run = run_repl(session, [long_text.replace("\n", "\x1b\r") + "\r", "/show 1\r"])
    shown = run.output[run.output.index("#1 user"):]
    assert "line 29 of a long message" in shown and "sent" in shown.splitlines()[0]
    run_repl(session, ["another question that evicts the first turn " * 60 + "\r"])
    assert not session.conversation.is_live(1)
    run = run_repl(session, ["/show 1\r", "/show 0\r", "/show 99\r", "/show x\r"])
    assert "#1 user" in run.output and "evicted" in run.output and "line 29" in run.output
    assert run.output.count("error:") == 3  # no system prompt; no #99; not a number


def test_unpin_lets_a_pinned_turn_be_evicted_again(server: FakeServer) -> None:
    session = make_session(server, budget=100, reply_reserve=20)
    run_repl(session, ["keep this constraint\r", "/pin 1\r"])
    assert session.conversation.find(1).pinned
    run = run_repl(session, ["/unpin 1\r", "/unpin 42\r"])
    assert "unpinned #1" in run.output and "error: no message #42" in run.output
    assert not session.conversation.find(1).pinned
    run_repl(session, ["a second message long enough to need the room " * 7 + "\r"])
    assert not session.conversation.is_live(1)
    assert "keep this constraint" not in contents(server.requests[-1])
