"""Save files: lossless round trip, mode 0600, no secrets, clear refusals; --load / --save / --dry-run."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.chat.session import Session
from stateless_chat.store import persist
from tests.fakeserver import FakeServer
from tests.support import make_session, run_cli, run_repl, standing_block, state


def busy_session(server: FakeServer, tmp_path: Path) -> Session:
    """Return a session with a system prompt, a pin, a file, evictions and a summary."""
    path = tmp_path / "notes.txt"
    path.write_text("remember: the port is 8080\n")
    session = make_session(server, system="be brief", budget=260, reply_reserve=40, policy="summarize",
                           api_key="sk-never-saved-123")
    keys = ["my name is Ada\r", "/pin 1\r", f"/file {path}\r"]
    keys += [f"filler message {i} " * 5 + "\r" for i in range(6)]
    run_repl(session, keys)
    conversation = session.conversation
    assert conversation.summary is not None and conversation.evicted and conversation.system is not None
    assert any(e.kind == "file" for e in conversation.all_entries())
    return session


def test_round_trip_is_lossless_and_private(server: FakeServer, tmp_path: Path) -> None:
    session = busy_session(server, tmp_path)
    path = tmp_path / "saved" / "chat.json"
    persist.save(path, *state(session))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert "sk-never-saved-123" not in text and "api_key" not in text

    fresh = make_session(server)
    fresh.load(*persist.loadable(persist.load(path)))
    assert fresh.conversation == session.conversation
    assert fresh.settings.model == session.settings.model and fresh.settings.policy == "summarize"
    assert fresh.budget == session.budget and fresh.settings.system == "be brief"
    assert fresh.ledger.sent == session.ledger.sent and fresh.ledger.baseline == session.ledger.baseline
    assert [(t.turn, t.estimated_prompt_tokens, t.reported_prompt_tokens, t.evictions)
            for t in fresh.ledger.turns] == [(t.turn, t.estimated_prompt_tokens, t.reported_prompt_tokens,
                                              t.evictions) for t in session.ledger.turns]
    assert fresh.settings.api_key is None
    # The resumed conversation sends exactly what the original would have.
    assert fresh.preview_body("next") == session.preview_body("next")


def test_save_file_format(server: FakeServer, tmp_path: Path) -> None:
    session = busy_session(server, tmp_path)
    data = persist.to_data(*state(session))
    assert data["format"] == persist.FORMAT and data["version"] == persist.FORMAT_VERSION
    file_entry = next(e for e in data["evicted"] + data["messages"] if e["kind"] == "file")
    assert file_entry["source"] == str(tmp_path / "notes.txt") and file_entry["role"] == "user"
    pinned = [e for e in data["messages"] if e["pinned"]]
    assert [e["id"] for e in pinned] == [1]
    assert data["summary"]["kind"] == "summary"
    assert [e["id"] for e in data["evicted"]] == [e.id for e in session.conversation.evicted]
    assert {"id", "role", "content", "turn", "pinned", "kind", "source", "tokens"} <= set(data["messages"][0])


def test_overwriting_keeps_mode_0600(server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    persist.save(path, *state(make_session(server)))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text())["format"] == persist.FORMAT
    assert [p.name for p in tmp_path.iterdir()] == ["chat.json"]  # no temporary left behind


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "not a stateless-chat conversation file"),
        ('{"format": "stateless-chat/conversation"}', "no format version"),
        ('{"format": "stateless-chat/conversation", "version": 99}', "newer"),
        ('{"format": "stateless-chat/conversation", "version": 1, "messages": [{"id": 1}]}', "role"),
        ("{", "not valid JSON"),
    ],
)
def test_bad_files_are_refused_with_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(persist.SaveFileError) as caught:
        persist.load(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


# ---- the command line -------------------------------------------------------------------


def saved_file(server: FakeServer, tmp_path: Path, **settings: Any) -> Path:
    session = make_session(server, **settings)
    run_repl(session, ["my name is Ada\r", "second\r"])
    path = tmp_path / "chat.json"
    persist.save(path, *state(session))
    server.clear()
    return path


def test_load_then_a_piped_prompt_continues_the_conversation(server: FakeServer, tmp_path: Path) -> None:
    path = saved_file(server, tmp_path, system="sys")
    done = run_cli("--base-url", server.url, "--load", str(path), stdin=b"what is my name?")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"Your name is Ada.\n"
    assert [m["content"] for m in server.requests[0]["messages"]] == [
        "sys", standing_block("my name is Ada"), "my name is Ada", "echo: my name is Ada", "second",
        "echo: second", "what is my name?"]
    # --load alone never writes the file
    assert json.loads(path.read_text())["messages"][-1]["content"] == "echo: second"


def test_flags_override_the_saved_settings(server: FakeServer, tmp_path: Path) -> None:
    path = saved_file(server, tmp_path, model="gpt-4o", system="sys")
    done = run_cli("--base-url", server.url, "--load", str(path), "hi")
    assert server.requests[0]["model"] == "gpt-4o"
    done = run_cli("--base-url", server.url, "--load", str(path), "-m", "gpt-4", "-s", "new", "hi")
    assert done.returncode == 0, done.stderr
    assert server.requests[1]["model"] == "gpt-4" and server.requests[1]["messages"][0]["content"] == "new"


def test_save_creates_then_appends_exchanges(server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "new" / "log.json"
    first = run_cli("--base-url", server.url, "--save", str(path), "my name is Ada")
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second = run_cli("--base-url", server.url, "--save", str(path), "what is my name?")
    assert second.stdout == b"Your name is Ada.\n"
    data = json.loads(path.read_text())
    assert [m["content"] for m in data["messages"]] == [
        "my name is Ada", "echo: my name is Ada", "what is my name?", "Your name is Ada."]
    assert [m["id"] for m in data["messages"]] == [1, 2, 3, 4]
    assert len(data["totals"]["turns"]) == 2


def test_dry_run_with_load_prints_the_resumed_body_and_sends_nothing(server: FakeServer,
                                                                     tmp_path: Path) -> None:
    path = saved_file(server, tmp_path)
    done = run_cli("--base-url", server.url, "--dry-run", "--load", str(path), "third")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert [m["content"] for m in body["messages"]] == [
        standing_block("my name is Ada"), "my name is Ada", "echo: my name is Ada", "second", "echo: second",
        "third"]
    assert server.requests == []


def test_load_of_a_missing_file_is_one_line_exit_2(server: FakeServer, tmp_path: Path) -> None:
    done = run_cli("--base-url", server.url, "--load", str(tmp_path / "none.json"), "hi")
    assert done.returncode == 2
    assert done.stderr.decode().strip().count("\n") == 0 and b"no such conversation file" in done.stderr
    assert server.requests == []


CONTROLS = ("\x1b", "\x07", "\x9b", "\x9c", "\x9d")


def hostile_file(server: FakeServer, tmp_path: Path, edit: Any) -> Path:
    """Return a save file of a real two-turn conversation, changed by ``edit(data)``."""
    session = make_session(server)
    run_repl(session, ["one\r", "two\r"])
    path = tmp_path / "hostile.json"
    persist.save(path, *state(session))
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def test_a_loaded_file_cannot_write_controls_to_the_terminal(server: FakeServer, tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["settings"]["model"] = "gpt\x1b]52;c;ZXZpbA==\x07-evil"
        data["messages"][0].update(kind="file", source="notes\x1b[2J\x9b1A.txt", content="File: x\n\nhi")

    path = hostile_file(server, tmp_path, edit)
    session = make_session(server)
    run = run_repl(session, [f"/load {path}\r", "/files\r", "/model\r", "/history\r"])
    assert not any(c in run.output for c in CONTROLS), repr(run.output)
    assert "notes" in run.output and ".txt" in run.output and "gpt" in run.output
    assert session.conversation.history[0].source == "notes\x1b[2J\x9b1A.txt"  # kept; only display is cleaned


@pytest.mark.parametrize(
    "edit",
    [
        lambda data: data["totals"]["turns"][0].update(reported_prompt_tokens="12"),
        lambda data: data["totals"]["turns"][0].update(evictions=[1]),
        lambda data: data["totals"].update(sent=float("inf")),  # json writes Infinity
        lambda data: data["totals"].update(baseline="12"),
        lambda data: data["totals"].update(turns="abc"),
        lambda data: data.update(totals=[]),
    ],
    ids=["reported-text", "evictions-list", "sent-infinity", "baseline-text", "turns-text", "totals-list"],
)
def test_a_file_with_malformed_totals_is_refused_with_one_line(server: FakeServer, tmp_path: Path,
                                                               edit: Any) -> None:
    path = hostile_file(server, tmp_path, edit)
    session = make_session(server)
    run_repl(session, ["hello\r"])
    before = session.conversation
    run = run_repl(session, [f"/load {path}\r", "/stats\r"])
    lines = run.output.strip().splitlines()
    assert lines[0].startswith(f"error: {path}: ") and "totals" in lines[0]
    assert session.conversation is before and len(session.ledger.turns) == 1


@pytest.mark.parametrize("umask", [0o000, 0o277])
def test_save_and_export_are_0600_whatever_the_umask(server: FakeServer, tmp_path: Path, umask: int) -> None:
    session = make_session(server)
    old = os.umask(umask)
    try:
        persist.save(tmp_path / "chat.json", *state(session))
        persist.export(tmp_path / "chat.md", *state(session), session.budget)
    finally:
        os.umask(old)
    for name in ("chat.json", "chat.md"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.json", "chat.md"]


def test_a_failed_save_leaves_the_old_file_and_no_temporary(server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    path.write_text("old")
    session = make_session(server)
    run_repl(session, ["one\r"])
    session.conversation = session.conversation.append(
        session.conversation.new_entry("user", "\ud800", session.measure))  # a lone surrogate: not UTF-8
    with pytest.raises(UnicodeEncodeError):
        persist.save(path, *state(session))
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["chat.json"]


def test_a_file_with_a_lone_surrogate_is_refused(server: FakeServer, tmp_path: Path) -> None:
    # JSON can escape half a surrogate pair; no request could carry it, so every turn would fail.
    path = hostile_file(server, tmp_path, lambda data: data["messages"][0].update(content="bad \udcff"))
    assert "\\udcff" in path.read_text()
    session = make_session(server)
    before = session.conversation
    run = run_repl(session, [f"/load {path}\r"], width=1000)
    lines = run.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and "not valid Unicode" in lines[0]
    assert session.conversation is before
