"""Instruction files (AGENTS.md): found, composed into their slot right after the system prompt, shown,
counted, read again by /reload, capped, and turned off; in the chat (the REPL through a pipe) and one-shot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stateless_chat.chat.session import Session
from stateless_chat.workspace import attach as workspace
from stateless_chat.workspace import instructions
from tests.fakeserver import FakeServer
from tests.support import make_session, run_cli, run_repl


def user_agents(text: str) -> Path:
    """Write the user's own AGENTS.md (beside the config file, under the test's XDG_CONFIG_HOME)."""
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "stateless-chat" / "AGENTS.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def project(tmp_path: Path, text: str | None = "Use tabs, never spaces.\n") -> Path:
    """Return a git repository's folder with an AGENTS.md at its root (``text``) and a nested folder."""
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "src" / "deep").mkdir(parents=True)
    if text is not None:
        (root / "AGENTS.md").write_text(text, encoding="utf-8")
    return root


def attached(server: FakeServer, cwd: Path, lines: list[str] | None = None, **settings: object) -> Session:
    session = make_session(server, **settings)
    workspace.attach(session, cwd=cwd, env=os.environ, say=(lines.append if lines is not None else print))
    return session


def test_the_nearest_agents_md_up_to_the_repository_root(tmp_path: Path) -> None:
    root = project(tmp_path)
    assert instructions.project_file(root / "src" / "deep") == root / "AGENTS.md"
    (root / "src" / "AGENTS.md").write_text("nearer", encoding="utf-8")
    assert instructions.project_file(root / "src" / "deep") == root / "src" / "AGENTS.md"
    # outside a repository, only the working directory counts: a parent's file is someone else's
    outside = tmp_path / "plain" / "sub"
    outside.mkdir(parents=True)
    (tmp_path / "plain" / "AGENTS.md").write_text("not mine", encoding="utf-8")
    assert instructions.project_file(outside) is None
    assert instructions.project_file(tmp_path / "plain") == tmp_path / "plain" / "AGENTS.md"
    # above the repository's root nothing is read
    above = tmp_path / "AGENTS.md"
    above.write_text("above the root", encoding="utf-8")
    assert instructions.project_file(project(tmp_path / "other", None) / "src") is None


def test_both_files_are_composed_after_the_system_prompt_and_sent_every_turn(server: FakeServer,
                                                                               tmp_path: Path) -> None:
    mine = user_agents("Answer in British English.\n")
    root = project(tmp_path)
    session = attached(server, root / "src" / "deep", system="Be brief.")
    run = run_repl(session, ["first\r", "second\r", "/history\r", "/tokens\r", "/instructions\r"])
    for body in server.requests:
        messages = body["messages"]
        assert [m["role"] for m in messages[:2]] == ["system", "system"]
        assert messages[0]["content"] == "Be brief."
        text = messages[1]["content"]
        assert text.index("British English") < text.index("Use tabs")  # the user's, then the project's
        assert f"File: {mine}" in text and f"File: {root / 'AGENTS.md'}" in text
    assert server.requests[1]["messages"][:3] == server.requests[0]["messages"][:3]  # the same prefix
    entry = session.conversation.instructions
    assert entry is not None and entry.id < 0
    assert any("instructions" in line and f"{entry.tokens:,}" in line for line in run.output.splitlines())
    assert "AGENTS.md:" in run.output  # /history's row
    assert "Answer in British English." in run.output and "(user," in run.output and "(project," in run.output
    assert session.ledger.turns[-1].cache_break is None


def test_reload_reads_them_again_and_says_what_changed(server: FakeServer, tmp_path: Path) -> None:
    root = project(tmp_path)
    session = attached(server, root)
    run = run_repl(session, ["one\r", "/reload\r"])
    assert "instructions unchanged" in run.output
    (root / "AGENTS.md").write_text("Use spaces after all.\n", encoding="utf-8")
    run = run_repl(session, ["two\r", "/reload\r", "three\r"])
    assert "Use tabs" in server.requests[1]["messages"][0]["content"]  # read once per chat, not per turn
    assert "instructions changed" in run.output
    assert "Use spaces after all." in server.requests[2]["messages"][0]["content"]
    assert "cache break: the instructions changed" in run.output


def test_large_instructions_are_cut_to_the_cap_with_one_line(server: FakeServer, tmp_path: Path) -> None:
    root = project(tmp_path, "rule " * 2000)
    lines: list[str] = []
    session = attached(server, root, lines, instructions_max_tokens=100)
    entry = session.conversation.instructions
    assert entry is not None and entry.tokens <= 100 + 3
    assert "[cut: the instructions are" in entry.content
    assert len(lines) == 1 and "cut to 100 (instructions_max_tokens)" in lines[0]


def test_a_binary_file_is_left_out_with_one_line_and_the_other_is_read(server: FakeServer,
                                                                        tmp_path: Path) -> None:
    user_agents("Mine.\n")
    root = project(tmp_path, None)
    (root / "AGENTS.md").write_bytes(b"\x00\x01binary")
    lines: list[str] = []
    session = attached(server, root, lines)
    assert len(lines) == 1 and "left out" in lines[0] and "binary" in lines[0]
    entry = session.conversation.instructions
    assert entry is not None and "Mine." in entry.content


@pytest.mark.parametrize("off", ["flag", "config"])
def test_instructions_can_be_turned_off(server: FakeServer, tmp_path: Path, off: str) -> None:
    project(tmp_path)
    cwd = Path.cwd()
    os.chdir(tmp_path / "repo")
    try:
        if off == "flag":
            done = run_cli("--base-url", server.url, "--no-instructions", "hi")
        else:
            config = tmp_path / "config.toml"
            config.write_text("instructions = false\n", encoding="utf-8")
            done = run_cli("--base-url", server.url, "--config", str(config), "hi")
    finally:
        os.chdir(cwd)
    assert done.returncode == 0, done.stderr
    assert server.requests[0]["messages"] == [{"role": "user", "content": "hi"}]


def test_one_shot_sends_them_and_says_what_it_read_with_v(server: FakeServer, tmp_path: Path) -> None:
    root = project(tmp_path)
    cwd = Path.cwd()
    os.chdir(root)
    try:
        quiet = run_cli("--base-url", server.url, "hi")
        loud = run_cli("--base-url", server.url, "-v", "hi")
        dry = run_cli("--base-url", server.url, "--dry-run", "hi")
    finally:
        os.chdir(cwd)
    assert quiet.returncode == loud.returncode == dry.returncode == 0
    assert b"instructions" not in quiet.stderr
    assert b"instructions: " in loud.stderr and b"AGENTS.md (" in loud.stderr and b" tokens)" in loud.stderr
    for body in server.requests:
        assert body["messages"][0]["role"] == "system" and "Use tabs" in body["messages"][0]["content"]
    assert b"Use tabs" in dry.stdout
