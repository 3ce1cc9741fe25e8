"""Local latency: what eviction does to the bundled model's speed, through its KV cache.

llama-cpp-python's server keeps the KV cache of the prompt it last evaluated and reuses the
prefix a new request shares with it (its log says ``N prefix-match hit, remaining M prompt
tokens to eval``). A conversation that outgrows its budget under drop-oldest at
``evict_to = 1.0`` changes the start of every request, so each turn evaluates the whole
window again; at the default 0.5 most turns only evaluate what was appended. This runs the
same scripted conversation both ways against the real bundled model (SmolLM2-135M), one
fresh server each, and records every turn's wall time and the tokens the server evaluated.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT  # noqa: F401  (puts the checkout on sys.path)

BUDGET = 2_000
MAX_TOKENS = 8  # short replies: the time measured is the prompt's, which is what eviction changes
_EVAL = re.compile(r"(\d+) prefix-match hit, remaining (\d+) prompt tokens to eval")


@dataclass
class LatencyRow:
    """One policy's run: per-turn wall seconds and evaluated tokens, and when it first evicted."""

    label: str
    evict_to: float
    seconds: list[float]
    evaluated: list[int]
    first_eviction: int | None  # the index of the first turn that evicted

    def mean_after_first_eviction(self) -> float:
        start = self.first_eviction if self.first_eviction is not None else len(self.seconds)
        after = self.seconds[start:]
        return sum(after) / len(after) if after else 0.0

    def evaluated_after_first_eviction(self) -> float:
        start = self.first_eviction if self.first_eviction is not None else len(self.evaluated)
        after = self.evaluated[start:]
        return sum(after) / len(after) if after else 0.0


def user_text(turn: int) -> str:
    """Return the scripted message of ``turn``: about 60 tokens of a planning conversation."""
    places = ("the old harbour", "the botanical garden", "the market hall", "the castle hill",
              "the river walk")
    return (f"Turn {turn}. We are planning a day in the city. Tell me one thing about {places[turn % 5]}, "
            f"how long to stay there, what it costs, and whether it suits a rainy afternoon in spring. "
            f"Keep it short; this is question {turn} of many.")


def _evaluated(log: Path, offset: int) -> tuple[int, int]:
    """Return the prompt tokens the server evaluated since ``offset`` in its log, and the new offset."""
    text = log.read_text(encoding="utf-8", errors="replace")
    found = _EVAL.findall(text[offset:])
    return (int(found[-1][1]) if found else 0), len(text)


def run_one(label: str, evict_to: float, turns: int) -> LatencyRow:
    """Run ``turns`` turns at ``evict_to`` against a fresh bundled-model server."""
    from stateless_chat.chat.session import Session
    from stateless_chat.config import Settings
    from stateless_chat.wire.local import LocalServer, bundled_model_path
    from stateless_chat.wire.openai_backend import open_backend

    model = bundled_model_path()
    assert model is not None, "the bundled model needs the [local] extra"
    with LocalServer(model) as server:
        assert server.log_path is not None
        settings = Settings(base_url=server.base_url, model=server.model, budget=BUDGET,
                            max_tokens=MAX_TOKENS, context_window=server.n_ctx, stream=False, temperature=0.0,
                            evict_to=evict_to, system="You are a concise travel assistant.", timeout=120.0)
        session = Session(settings, open_backend(settings.endpoints, None, timeout=120.0, max_retries=0))
        seconds: list[float] = []
        evaluated: list[int] = []
        first: int | None = None
        offset = 0
        for turn in range(1, turns + 1):
            started = time.perf_counter()
            session.send(user_text(turn))
            seconds.append(time.perf_counter() - started)
            tokens, offset = _evaluated(server.log_path, offset)
            evaluated.append(tokens)
            if first is None and session.ledger.turns[-1].evictions:
                first = turn - 1
        assert session.backend is not None
        session.backend.close()
    return LatencyRow(label, evict_to, seconds, evaluated, first)


def run(turns: int = 40) -> list[LatencyRow]:
    """Return the evict-to-fit run and the default run, in that order."""
    return [run_one("drop-oldest, evict to fit (1.0)", 1.0, turns),
            run_one("drop-oldest (0.5, the default)", 0.5, turns)]


def available() -> bool:
    """Return whether the bundled model and its server are installed (the [local] extra)."""
    from stateless_chat.wire.local import local_available

    return local_available()
