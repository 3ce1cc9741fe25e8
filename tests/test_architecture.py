"""The core stays free of terminal libraries: only render, repl and cli may import them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "stateless_chat"
EDGE = {"render.py", "repl.py", "cli.py", "__main__.py"}
TERMINAL = {"rich", "prompt_toolkit", "typer", "click"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_modules_import_no_terminal_library() -> None:
    core = [p for p in PACKAGE.glob("*.py") if p.name not in EDGE]
    assert len(core) >= 8
    leaks = {p.name: sorted(imported_roots(p) & TERMINAL) for p in core}
    assert {name: found for name, found in leaks.items() if found} == {}


def test_only_transport_imports_openai_and_only_tokens_imports_tiktoken() -> None:
    for path in PACKAGE.glob("*.py"):
        roots = imported_roots(path)
        if path.name != "transport.py":
            assert "openai" not in roots, path.name
        if path.name != "tokens.py":
            assert "tiktoken" not in roots, path.name


def test_the_check_sees_a_leak(tmp_path: Path) -> None:
    leaky = tmp_path / "leaky.py"
    leaky.write_text("def f():\n    from rich.text import Text\n    return Text\n")
    assert "rich" in imported_roots(leaky)
