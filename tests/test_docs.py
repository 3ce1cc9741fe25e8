"""The README is a front page and the reference is in ``docs/`` (issue 24, item 15): every page is
linked and every link resolves, the quick start's commands are the ones CI runs, ``--help`` and the
chat's hints point at the page that fits, and what a page documents is what the program does."""

from __future__ import annotations

import json
import re
from pathlib import Path

from stateless_chat.store import persist
from tests.fakeserver import FakeServer
from tests.support import CTRL_D, make_session, run_process, run_repl

ROOT = Path(__file__).resolve().parents[1]


DOC_PAGES = ("commands.md", "settings.md", "context-and-memory.md", "token-counts.md", "log.md",
             "tools.md", "instructions.md", "local-model.md", "gateway.md", "faults.md", "architecture.md",
             "benchmarks.md", "tests.md")


def test_the_readme_links_every_docs_page_and_every_link_resolves() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 150
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert sorted(DOC_PAGES) == pages
    for page in pages:
        assert f"(docs/{page})" in readme, page
    for source in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", source.read_text(encoding="utf-8")):
            assert (source.parent / target).resolve().is_file(), (source.name, target)


def test_the_readmes_commands_are_the_ones_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.DOTALL)
    chat = "python3 -m venv .venv && .venv/bin/pip install -e '.[local]' && .venv/bin/stateless-chat"
    tests = ("python3 -m venv .venv && .venv/bin/pip install -e '.[test,local,gateway]' && "
             ".venv/bin/python -m pytest")
    assert blocks[:2] == [chat, tests]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 -m venv .venv" in ci and "-e '.[test,local,gateway]'" in ci
    assert "\n.venv/bin/python -m pytest\n" in ci


def test_help_points_at_the_docs() -> None:
    helped = run_process("--help").stdout.decode()
    assert f"Documentation, a page per subject, in {ROOT / 'docs'}/" in helped
    assert "commands.md" in helped and "settings.md" in helped
    # Help text is wrapped, at a space or after a hyphen of the path (a clone in /work/my-clone):
    # compared with every space taken out.
    logs = "".join(run_process("logs", "--help").stdout.decode().split())
    assert "Documentation:" + "".join(str(ROOT / "docs" / "log.md").split()) in logs


def test_no_tools_hint_names_the_tools_page(server: FakeServer) -> None:
    out = run_repl(make_session(server), ["/tools\r", CTRL_D], width=200).output
    assert f"({ROOT / 'docs' / 'tools.md'})" in out


def test_the_documented_save_file_has_the_keys_save_writes(server: FakeServer, tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    example = json.loads(re.search(r"```json\n(.*?)```", doc, re.DOTALL).group(1))  # type: ignore[union-attr]
    session = make_session(server)
    run_repl(session, ["hello\r", f"/save {tmp_path / 'x.json'}\r"])
    written = json.loads((tmp_path / "x.json").read_text())
    assert set(example) == set(written) and persist.load(tmp_path / "x.json").conversation.live
