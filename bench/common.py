"""Helpers shared by the benchmarks: the repository root on ``sys.path``, statistics, machine facts."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # so ``stateless_chat`` and ``tests.fakeserver`` import from the checkout
    sys.path.insert(0, str(ROOT))


def median(values: Sequence[float]) -> float:
    """Return the median of ``values`` (0.0 for none): the statistic every table reports."""
    return statistics.median(values) if values else 0.0


def machine() -> str:
    """Return a one-line description of this machine: cores, CPU model, OS and Python version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def clean_env(**extra: str) -> dict[str, str]:
    """Return the environment for measured child processes.

    Bytecode writing is allowed (``PYTHONDONTWRITEBYTECODE`` removed), as in a normal
    install, so no contender pays for compiling its sources on every run; keys and
    endpoints of the caller never leak in.
    """
    drop = ("PYTHONDONTWRITEBYTECODE", "OPENAI_API_KEY", "OPENAI_BASE_URL", "NO_COLOR", "LLM_USER_PATH")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("STATELESS_CHAT_")}
    env.update(extra)
    return env


def ms(seconds: float) -> str:
    """Return ``seconds`` as milliseconds for a table cell (two significant decimals under 1 ms)."""
    value = seconds * 1000
    return f"{value:.3f}" if value < 1 else f"{value:,.1f}"
