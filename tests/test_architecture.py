"""The layers stay one way down, with no circles, and the heavy libraries stay where they belong.

Every import counts: at the top of a module, inside a function (imported lazily), and under
``TYPE_CHECKING``. A layer may import its own modules and any layer below it, never one above.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "stateless_chat"

# Lowest first. A module's layer is its subpackage, or its own name for a top-level module.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"launchers"}),  # programs run as children by path: the standard library only
    frozenset({"__init__", "errors", "sanitize", "sensitive", "validate"}),  # the base: pure helpers
    frozenset({"core"}),  # the conversation model, slots, policies, counting, accounting
    frozenset({"wire"}),  # the request value, dialects, backends, replies
    frozenset({"tools"}),  # MCP servers and built-in tools
    frozenset({"config"}),  # settings: what a run is configured to do
    frozenset({"chat"}),  # the turn and the session
    frozenset({"store"}),  # save files and the conversation log
    frozenset({"workspace"}),  # instruction files, skills and documents: what fills the context slots
    frozenset({"app"}),  # the composition root
    frozenset({"ui"}),  # the terminal
    frozenset({"cli", "__main__"}),  # the command line
)
TERMINAL = {"rich", "prompt_toolkit", "typer", "click"}
TERMINAL_LAYERS = {"ui", "cli", "__main__"}


def module_name(path: Path) -> str:
    """Return ``path`` as a dotted module name under the package (``core.history``)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts)


def layer_of(module: str) -> int:
    """Return the index in ``LAYERS`` of the layer ``module`` (dotted, under the package) belongs to."""
    top = module.split(".")[0]
    for index, layer in enumerate(LAYERS):
        if top in layer:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imports(path: Path) -> tuple[set[str], set[str]]:
    """Return the package modules ``path`` imports (dotted, under the package) and the other roots it
    imports (``rich``, ``openai`` ...), counting every import statement wherever it stands."""
    tree = ast.parse(path.read_text(), filename=str(path))
    ours: set[str] = set()
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("stateless_chat."):
                    ours.add(alias.name.removeprefix("stateless_chat."))
                else:
                    roots.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            assert node.level == 0, f"{path}: a relative import ({node.module}); import absolutely"
            if node.module == "stateless_chat":
                ours.update(alias.name for alias in node.names if alias.name != "__version__")
            elif node.module.startswith("stateless_chat."):
                module = node.module.removeprefix("stateless_chat.")
                is_package = (PACKAGE / module.replace(".", "/")).is_dir()
                ours.update(f"{module}.{a.name}" for a in node.names) if is_package else ours.add(module)
            else:
                roots.add(node.module.split(".")[0])
    return ours, roots


def graph() -> dict[str, set[str]]:
    """Return every package module with the package modules it imports."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(path)[0] if m in modules} for name, path in modules.items()}


def test_every_module_is_in_a_layer_and_no_import_runs_up() -> None:
    edges = graph()
    assert len(edges) >= 40
    up = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a))
    assert up == []


def test_no_import_circles() -> None:
    edges = graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                circles.append(path[path.index(target):] + [target])
            elif target not in state:
                walk(target)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node)
    assert circles == []


def test_only_the_terminal_layers_import_terminal_libraries() -> None:
    leaks = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        found = imports(path)[1] & TERMINAL
        if found and name.split(".")[0] not in TERMINAL_LAYERS:
            leaks[name] = sorted(found)
    assert leaks == {}


def test_only_the_openai_backend_imports_openai_and_only_tokens_imports_tiktoken() -> None:
    for path in PACKAGE.rglob("*.py"):
        name, roots = module_name(path), imports(path)[1]
        if name != "wire.openai_backend":
            assert "openai" not in roots, name
        if name != "core.tokens":
            assert "tiktoken" not in roots, name


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    leaky = tmp_path / "leaky.py"
    leaky.write_text("from typing import TYPE_CHECKING\n"
                     "if TYPE_CHECKING:\n    from stateless_chat.ui import repl\n"
                     "def f():\n    from rich.text import Text\n    import stateless_chat.chat.turn\n"
                     "    return Text\n")
    ours, roots = imports(leaky)
    assert "rich" in roots and ours == {"ui.repl", "chat.turn"}
    assert layer_of("ui.repl") > layer_of("chat.turn") > layer_of("core.history")


def test_no_test_file_imports_another_and_none_is_named_for_an_issue() -> None:
    """What tests share lives in ``tests/support.py`` and the fakes; a test file is named for what it
    tests, not for when it was written."""
    tests = Path(__file__).resolve().parent
    for path in sorted(tests.glob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.split(".")[-1].startswith(("test_", "conftest")), (
                    f"{path.name} imports {name}: move what it needs into tests/support.py")
        stem = path.stem
        assert not any(word in stem for word in ("first_hour", "_ii", "_iii", "issue")), (
            f"{path.name} is named for its history, not its subject")
