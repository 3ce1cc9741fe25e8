"""Finding the program an MCP server's ``command`` names.

A command given by name (``mcp-server-time``) is looked up on ``PATH``, and then beside the Python
running stateless-chat: a server installed with ``pip`` into the same virtual environment lands in
its ``bin`` folder, which is on ``PATH`` only while the environment is activated, and the quick
start runs ``.venv/bin/stateless-chat`` without activating it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def beside_interpreter() -> Path | None:
    """Return the folder of the running interpreter as it was started (a venv's ``bin``, not the
    system Python a venv's ``python`` links to); None when Python cannot say."""
    return Path(sys.executable).parent if sys.executable else None


def find(command: str, path: str) -> str | None:
    """Return the executable ``command`` names: a command with a slash as given (if executable),
    else the first match on ``path`` (a ``PATH`` value), else one beside the running interpreter."""
    found = shutil.which(command, path=path)
    if found is not None or os.sep in command:
        return found
    folder = beside_interpreter()
    return None if folder is None else shutil.which(command, path=str(folder))


def where_looked(command: str, path: str) -> str:
    """Return where ``find`` looked for ``command``, for the line that says it was not found."""
    if os.sep in command:
        return f"{command} is not there"
    folder = beside_interpreter()
    places = ["on PATH" if path else "on PATH (empty)"]
    if folder is not None:
        places.append(f"in {folder}, beside the Python running stateless-chat")
    return "looked " + " and ".join(places)
