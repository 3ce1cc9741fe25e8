"""The package stays mypy-strict and ruff-clean: both run here, as part of the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_mypy_strict_on_the_package() -> None:
    done = run("mypy")  # strict = true and packages = ["stateless_chat"] in pyproject.toml
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_on_package_tests_and_bench() -> None:
    done = run("ruff", "check", "stateless_chat", "tests", "bench")
    assert done.returncode == 0, done.stdout + done.stderr
