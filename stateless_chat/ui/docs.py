"""Where the documentation pages are, so that ``--help`` and hints can point at the one that fits.

The pages live in ``docs/`` beside the package in the source tree. An editable install (the quick
start's) runs from that tree, so the page is named by its full path, ready to open; an installed
wheel has no ``docs/``, and the page is named as it is in the source, ``docs/NAME``.
"""

from __future__ import annotations

from pathlib import Path

SOURCE_DOCS = Path(__file__).resolve().parents[2] / "docs"  # stateless_chat/ui/docs.py -> the source tree


def page(name: str) -> str:
    """Return where the documentation page ``name`` (e.g. ``"tools.md"``) can be read: its path when
    the source tree is here, else ``docs/NAME`` (of the source)."""
    found = SOURCE_DOCS / name
    return str(found) if found.is_file() else f"docs/{name}"


def folder() -> str:
    """Return where the documentation pages are: the ``docs/`` folder's path when the source tree is
    here, else ``docs/ in the source``."""
    return f"{SOURCE_DOCS}/" if SOURCE_DOCS.is_dir() else "docs/ in the source"
