"""Skills (the Agent Skills format): found in three folders in order, their index in every request, a skill's
instructions only once it is used (/skill NAME until /skill off NAME, or the model's use_skill tool), the
cached prefix changing once; malformed SKILL.md files skipped with one line. Through the REPL and the tool
loop against the fake server; the token counts with the real o200k_base encoding."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.chat.session import Session
from stateless_chat.core.messages import Message
from stateless_chat.core.tokens import TokenCounter
from stateless_chat.tools.toolbox import SkillTool, Toolbox
from stateless_chat.workspace import attach as workspace
from stateless_chat.workspace import skills
from stateless_chat.workspace.attach import Workspace
from tests.fakeserver import FakeServer, Scripted
from tests.support import make_session, observer, run_repl

PDF_BODY = "# Working with PDFs\n\nUse pdftotext -layout FILE for text. See reference.md for forms.\n"


def write_skill(root: Path, name: str, description: str = "Extract text from PDF files.",
                body: str = PDF_BODY, *, front: str | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    head = front if front is not None else f"---\nname: {name}\ndescription: {description}\n---\n"
    (folder / "SKILL.md").write_text(head + body, encoding="utf-8")
    return folder


def config_skills() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "stateless-chat" / "skills"


def attached(server: FakeServer, cwd: Path, lines: list[str] | None = None, **settings: Any) -> Session:
    session = make_session(server, **settings)
    workspace.attach(session, cwd=cwd, env=os.environ, say=(lines.append if lines is not None else print))
    return session


def system_texts(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "system"]


# ---- SKILL.md ------------------------------------------------------------------------------


def test_front_matter_reads_the_yaml_a_skill_needs() -> None:
    fields, body = skills.front_matter(
        "---\nname: pdf\ndescription: >\n  Extract text\n  and tables.\nlicense: 'Apache-2.0'\n"
        "metadata:\n  author: someone\n  version: \"1.0\"\nallowed-tools: [Bash]\n---\nThe body.\n")
    assert fields == {"name": "pdf", "description": "Extract text and tables.", "license": "Apache-2.0",
                      "metadata": "", "allowed-tools": ""}
    assert body == "The body."
    fields, _ = skills.front_matter('---\nname: "x"\ndescription: it says: "hi" # not a comment\n'
                                    '  and more\n---\nb')
    assert fields["description"] == 'it says: "hi" and more'
    assert skills.front_matter("---\ndescription: |\n  line one\n  line two\n---\n")[0]["description"] == \
        "line one\nline two"


@pytest.mark.parametrize("front, why", [
    ("no front matter\n", "does not start with a front matter"),
    ("---\nname: pdf\ndescription: d\n", "not closed"),
    ("---\ndescription: d\n---\n", "no name"),
    ("---\nname: PDF_tools\ndescription: d\n---\n", "lower-case letters"),
    ("---\nname: other\ndescription: d\n---\n", "not its folder's name"),
    ("---\nname: pdf\n---\n", "no description"),
    ("---\nname: pdf\ndescription: 'unclosed\n---\n", "unclosed quote"),
    ("---\nname: pdf\njust words\n---\n", "is not 'key: value'"),
])
def test_a_malformed_skill_is_skipped_with_one_line(tmp_path: Path, front: str, why: str) -> None:
    write_skill(tmp_path, "pdf", front=front)
    write_skill(tmp_path, "sql", "Write SQL.")
    found = skills.find([tmp_path])
    assert found.names == ["sql"]
    assert len(found.problems) == 1 and why in found.problems[0] and "pdf/SKILL.md" in found.problems[0]


def test_an_empty_body_and_a_binary_skill_md_are_skipped(tmp_path: Path) -> None:
    write_skill(tmp_path, "empty", body="\n")
    (tmp_path / "blob").mkdir()
    (tmp_path / "blob" / "SKILL.md").write_bytes(b"---\x00\x01")
    found = skills.find([tmp_path])
    assert found.names == [] and len(found.problems) == 2
    assert any("no instructions" in p for p in found.problems) and any("binary" in p for p in found.problems)


def test_the_first_folder_wins_a_clash_of_names(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_skill(config_skills(), "pdf", "Mine.")
    write_skill(project / ".agents" / "skills", "pdf", "The project's.")
    write_skill(project / ".agents" / "skills", "sql", "Write SQL.")
    write_skill(Path(os.environ["HOME"]) / ".agents" / "skills", "git", "Shared with other agents.")
    found = skills.find(skills.roots(project, os.environ))
    assert found.names == ["git", "pdf", "sql"] and found.get("pdf").description == "Mine."  # type: ignore[union-attr]
    assert len(found.problems) == 1 and "comes first" in found.problems[0]


# ---- the index and the bodies in the requests ------------------------------------------------


def test_the_index_costs_the_names_and_descriptions_and_a_few_tokens(tmp_path: Path) -> None:
    counter = TokenCounter("gpt-4o")
    found = [write_skill(tmp_path, f"skill-{k}", f"Do task number {k} with care.") for k in range(5)]
    catalog = skills.find([tmp_path])
    for count in range(1, 6):
        chosen = catalog.skills[:count]
        text = skills.index_text(chosen)
        assert text is not None
        content = sum(counter.count_text(s.name) + counter.count_text(s.description) for s in chosen)
        framing = counter.count_message(Message("system", text)) - content
        # 6 tokens once (the message's 3 and the header), 2 a skill: at most 8 a skill, the first one
        assert framing <= 6 + 2 * count and framing / count <= 10, (count, framing)
    assert len(found) == 5


def test_the_index_goes_in_every_request_and_a_body_only_while_on(server: FakeServer, tmp_path: Path) -> None:
    write_skill(config_skills(), "pdf")
    write_skill(config_skills(), "sql", "Write SQL for PostgreSQL.", "Always qualify column names.\n")
    session = attached(server, tmp_path, system="Be brief.")
    run = run_repl(session, ["one\r", "two\r", "/skills\r", "/skill pdf\r", "three\r", "four\r", "/history\r",
                             "/skill off pdf\r", "five\r", "/skill nosuch\r", "/skill off sql\r", "/skill\r"])
    bodies = server.requests
    assert len(bodies) == 5
    for body in bodies:
        texts = system_texts(body)
        assert texts[0] == "Be brief."
        assert texts[1] == "Skills:\n- pdf: Extract text from PDF files.\n- sql: Write SQL for PostgreSQL."
    with_body = [any("pdftotext" in t for t in system_texts(b)) for b in bodies]
    assert with_body == [False, False, True, True, False]
    assert not any("qualify column" in json.dumps(b) for b in bodies)
    # the cached prefix changes once when the skill goes on, once when it goes off, never in between
    breaks = [t.cache_break for t in session.ledger.turns]
    assert breaks == [None, None, "skill pdf was turned on", None, "skill pdf was turned off"]
    assert run.output.count("cache break: skill pdf was turned on") == 1
    assert "skill pdf on (" in run.output and "skill pdf off" in run.output
    assert "the skills index:" in run.output and "pdf · off" in run.output
    assert "skill pdf" in run.output.split("history")[-1]  # /history lists the active skill's slot
    assert run.output.count("error:") == 3  # no skill nosuch; sql is not on; /skill alone


def test_skills_off_in_the_config_sends_no_index(server: FakeServer, tmp_path: Path) -> None:
    write_skill(config_skills(), "pdf")
    session = attached(server, tmp_path, skills=False)
    run = run_repl(session, ["one\r", "/skills\r"])
    assert server.requests[0]["messages"] == [{"role": "user", "content": "one"}]
    assert "skills are off" in run.output


def use_skill_replier(*calls: str) -> Any:
    """A model that calls use_skill with ``calls[k]`` (JSON arguments) at step k, then answers."""

    def replier(body: dict[str, Any]) -> str | Scripted:
        messages = body["messages"]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        done = sum(1 for m in messages[last_user:] if m["role"] == "assistant")
        if "tools" in body and done < len(calls):
            return Scripted("", ((f"call_{done}", "use_skill", calls[done]),))
        return "done: " + " | ".join(m["content"][:40] for m in messages[last_user:] if m["role"] == "tool")

    return replier


def test_the_model_loads_a_skill_and_its_files_with_use_skill(server: FakeServer, tmp_path: Path) -> None:
    folder = write_skill(config_skills(), "pdf")
    (folder / "reference.md").write_text("Forms: use pdftk FILE fill_form DATA.\n", encoding="utf-8")
    (folder / "scripts").mkdir()
    (folder / "scripts" / "fill.py").write_text("print('fill')\n", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("outside the skill\n", encoding="utf-8")
    (folder / "link.md").symlink_to(tmp_path / "secret.txt")
    session = attached(server, tmp_path)
    space = observer(session, Workspace)
    assert space is not None
    session.tools = Toolbox(None, [SkillTool(space.load_skill)])
    session.hooks = replace(session.hooks, approve=lambda call, spec: True)
    server.replier = use_skill_replier('{"name": "pdf"}', '{"name": "pdf", "file": "reference.md"}',
                                       '{"name": "pdf", "file": "../../secret.txt"}',
                                       '{"name": "pdf", "file": "link.md"}', '{"name": "nope"}')
    session.send("fill this form")
    final = server.requests[-1]["messages"]
    results = [m["content"] for m in final if m["role"] == "tool"]
    assert "pdftotext" in results[0] and "reference.md, scripts/fill.py" in results[0]
    assert results[1] == "Forms: use pdftk FILE fill_form DATA.\n"
    assert "not a file in the skill pdf's folder" in results[2] and "not a file" in results[3]
    assert "no skill 'nope'" in results[4]
    assert not any("outside the skill" in r for r in results)
    # no body in the first request; by the tool the body is appended, so the cached prefix never breaks
    assert "pdftotext" not in json.dumps(server.requests[0])
    assert all(t.cache_break is None for t in session.ledger.turns)
    assert server.requests[0]["tools"][0]["function"]["name"] == "use_skill"


def test_reload_finds_new_and_changed_skills(server: FakeServer, tmp_path: Path) -> None:
    write_skill(config_skills(), "pdf")
    session = attached(server, tmp_path)
    run_repl(session, ["/skill pdf\r", "one\r"])
    write_skill(config_skills(), "pdf", body="New instructions.\n")
    write_skill(config_skills(), "sql", "Write SQL.")
    run = run_repl(session, ["/reload\r", "two\r"])
    assert "skills new: sql" in run.output and "skills changed: pdf" in run.output
    assert any("New instructions." in t for t in system_texts(server.requests[-1]))
    assert "- sql: Write SQL." in system_texts(server.requests[-1])[0]


def test_one_shot_offers_use_skill_beside_the_mcp_tools(server: FakeServer, tmp_path: Path) -> None:
    from tests.support import run_cli, write_config

    write_skill(config_skills(), "pdf")
    server.replier = use_skill_replier('{"name": "pdf"}')
    config = str(write_config(tmp_path))
    done = run_cli("--config", config, "--base-url", server.url, "-y", "-v", "read a pdf")
    assert done.returncode == 0, done.stderr
    first, last = server.requests[0], server.requests[-1]
    assert [t["function"]["name"] for t in first["tools"]] == ["add", "recall_history", "use_skill"]
    assert system_texts(first) == ["Skills:\n- pdf: Extract text from PDF files."]
    assert "pdftotext" in last["messages"][-1]["content"]
    assert b"skills: pdf (the index: " in done.stderr
