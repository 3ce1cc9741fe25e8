"""Standing memory: the detector on the labelled set, its speed, and a scripted 200-turn chat.

The detector (``stateless_chat.standing``) is measured on ``bench/standing_set.py``, round by round,
in the order the rounds were written: precision and recall as the rules are now, beside the figure
each round got when it was first measured (before any rule was changed for it; the development
third was the one the rules were written on). The fifth round was never used to change a rule.

Speed is CPU time per message (best of several passes): the user messages of the scripted chat,
and the set's sentences one by one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.common import ROOT  # noqa: F401  (puts the checkout on sys.path)

# Each round's figures when it was first measured, as the commits of issue 20 record them:
# (precision, recall), before any rule was changed for that round.
FIRST_MEASURED: dict[str, tuple[float, float]] = {
    "first round, development two thirds": (0.987, 0.963),
    "first round, held-out third": (1.000, 0.950),
    "second round": (0.962, 0.833),
    "third round": (0.920, 0.767),
    "fourth round": (0.968, 0.750),
    "fifth round": (0.963, 0.867),
}


@dataclass(frozen=True)
class SetRow:
    """The detector on one round of the labelled set."""

    name: str
    standing: int
    not_standing: int
    precision: float
    recall: float
    first: tuple[float, float] | None


def score(positives: Sequence[str], negatives: Sequence[str]) -> tuple[float, float]:
    """Return (precision, recall) of the detector: a sentence counts as kept when ``standing`` keeps it."""
    from stateless_chat.standing import standing

    found = sum(1 for s in positives if standing(s))
    false = sum(1 for s in negatives if standing(s))
    return (found / (found + false) if found + false else 0.0), (found / len(positives) if positives else 0.0)


def set_rows() -> list[SetRow]:
    """Return one row per round of the labelled set, then one for all of it."""
    from bench.standing_set import ROUNDS

    rows = []
    everything: tuple[list[str], list[str]] = ([], [])
    for name, standing, not_standing in ROUNDS:
        positives, negatives = [s for s, _ in standing], [s for s, _ in not_standing]
        everything[0].extend(positives)
        everything[1].extend(negatives)
        rows.append(SetRow(name, len(positives), len(negatives), *score(positives, negatives),
                           FIRST_MEASURED.get(name)))
    rows.append(SetRow("all", len(everything[0]), len(everything[1]), *score(*everything), None))
    return rows


def speed(texts: Sequence[str], passes: int = 5) -> float:
    """Return the detector's CPU seconds per text of ``texts`` (the best of ``passes`` passes)."""
    from stateless_chat.standing import standing

    best = float("inf")
    for _ in range(passes):
        started = time.process_time()
        for text in texts:
            standing(text)
        best = min(best, (time.process_time() - started) / max(1, len(texts)))
    return best
