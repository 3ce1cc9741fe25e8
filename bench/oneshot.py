"""One-shot latency: process start to answer printed, for stateless-chat, ``llm`` and a bare openai call.

Each contender answers the same question from the same fake server on loopback; the
runs are interleaved (a shuffled order each round) so a slow moment of the machine
hits every contender alike. Wall time is the goal's measure; the children's CPU time
is reported too, being steadier on a busy machine.
"""

from __future__ import annotations

import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import ROOT, clean_env, median

LLM_VENV = ROOT / "bench" / ".venv-llm"
LLM_MODEL_ID = "bench-fake"
QUESTION = "q"
EXPECTED = "echo: q"  # the fake server's default reply to "q"

FLOOR_CODE = """\
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="sk-bench", max_retries=0)
stream = client.chat.completions.create(
    model="fake-model", messages=[{"role": "user", "content": "q"}], stream=True)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        sys.stdout.write(chunk.choices[0].delta.content)
        sys.stdout.flush()
sys.stdout.write("\\n")
"""


@dataclass
class Contender:
    """A command line to time, and its measurements (seconds)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


@dataclass
class OneShotResult:
    """Median wall and CPU seconds per contender, the floor's name, and the import-time offenders."""

    runs: int
    rows: list[tuple[str, float, float, float]]  # name, median wall, min wall, median cpu
    offenders: list[tuple[str, float]]  # module, cumulative import ms (top level of our process)
    skipped: list[str]


def ours_argv(url: str) -> list[str]:
    """Return the installed console script if it sits next to this Python, else ``python -m``."""
    script = Path(sys.executable).parent / "stateless-chat"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "stateless_chat"]
    return [*head, "--base-url", url, QUESTION]


def ensure_llm(install: bool) -> Path | None:
    """Return the ``llm`` executable of the bench venv, creating the venv on first use if allowed."""
    exe = LLM_VENV / "bin" / "llm"
    if exe.exists():
        return exe
    if not install:
        return None
    print("bench: installing llm into bench/.venv-llm (first run only)…", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(LLM_VENV)], check=True)
    subprocess.run([str(LLM_VENV / "bin" / "pip"), "install", "-q", "llm"], check=True)
    return exe if exe.exists() else None


def llm_user_dir(url: str) -> Path:
    """Return a fresh llm user dir whose ``extra-openai-models.yaml`` points ``bench-fake`` at ``url``."""
    directory = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    (directory / "extra-openai-models.yaml").write_text(
        f'- model_id: {LLM_MODEL_ID}\n  model_name: fake-model\n  api_base: "{url}"\n', encoding="utf-8"
    )
    return directory


def _run_once(contender: Contender) -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(contender.argv, env=contender.env, capture_output=True, timeout=60)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0 or EXPECTED not in out:
        raise RuntimeError(
            f"{contender.name} failed (exit {done.returncode}): {out[:200]!r} {done.stderr[-500:]!r}"
        )
    contender.wall.append(wall)
    contender.cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


def import_offenders(url: str, top: int = 8) -> list[tuple[str, float]]:
    """Return the top-level imports of a one-shot run with the largest cumulative ``-X importtime``."""
    argv = ours_argv(url)
    if argv[0] != sys.executable:
        argv = [sys.executable, "-m", "stateless_chat", *argv[1:]]
    argv = [argv[0], "-X", "importtime", *argv[1:]]
    done = subprocess.run(argv, env=clean_env(OPENAI_API_KEY="sk-bench"), capture_output=True, timeout=60)
    totals: dict[str, float] = {}
    for line in done.stderr.decode("utf-8", "replace").splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(2)) == 1:  # depth 0: imported by our code, not by a dependency
            totals[match.group(3)] = totals.get(match.group(3), 0.0) + int(match.group(1)) / 1000
    return sorted(totals.items(), key=lambda item: -item[1])[:top]


def run(url: str, runs: int = 10, with_llm: bool = True, install_llm: bool = True) -> OneShotResult:
    """Time every contender ``runs`` times (after one untimed warm-up each) against ``url``."""
    key = {"OPENAI_API_KEY": "sk-bench"}
    contenders = [
        Contender("stateless-chat", ours_argv(url), clean_env(**key)),
        Contender("floor: python -c (import openai, same call)", [sys.executable, "-c", FLOOR_CODE, url],
                  clean_env(**key)),
    ]
    skipped: list[str] = []
    exe = ensure_llm(install_llm) if with_llm else None
    if exe is not None:
        user_dir = llm_user_dir(url)
        contenders.append(Contender("llm (simonw)", [str(exe), "-m", LLM_MODEL_ID, QUESTION],
                                    clean_env(LLM_USER_PATH=str(user_dir), **key)))
    else:
        skipped.append("llm")
    for contender in contenders:
        _run_once(contender)  # warm-up: writes bytecode caches, fills the page cache
        contender.wall.clear()
        contender.cpu.clear()
    shuffle = random.Random(7)
    for _ in range(runs):
        order = list(contenders)
        shuffle.shuffle(order)
        for contender in order:
            _run_once(contender)
    rows = [(c.name, median(c.wall), min(c.wall), median(c.cpu)) for c in contenders]
    return OneShotResult(runs, rows, import_offenders(url), skipped)
