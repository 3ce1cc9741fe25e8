"""The MCP project's reference server, ``@modelcontextprotocol/server-everything`` (npm), for the tests.

It is installed by the test run itself into pytest's cache folder (``.pytest_cache``), once,
with ``npm install --prefix``, at the version pinned here; without Node.js and npm, or when the
install fails (no network to the npm registry), the tests that need it are skipped with the
reason.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

PACKAGE = "@modelcontextprotocol/server-everything"
VERSION = "2026.8.31"
ENTRY = Path("node_modules") / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"


def everything(config: pytest.Config) -> list[str]:
    """Return the command that runs the reference server over stdio, installing it first if need be;
    skip the calling test (with the reason) where it cannot be had."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are needed for the reference MCP server (server-everything)")
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider: a folder of its own then
    prefix = (Path(cache.mkdir(f"server-everything-{VERSION}")) if cache is not None
              else Path(tempfile.gettempdir()) / f"stateless-chat-tests-server-everything-{VERSION}")
    entry = prefix / ENTRY
    if not entry.exists():
        try:
            done = subprocess.run(
                [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error",
                 f"{PACKAGE}@{VERSION}"], capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm install {PACKAGE} took over 5 minutes")
        if done.returncode != 0 or not entry.exists():
            pytest.skip(f"npm install {PACKAGE}@{VERSION} failed: {done.stderr.strip()[-300:]}")
    return [node, str(entry), "stdio"]
