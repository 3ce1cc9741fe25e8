"""What a server's own count is, learned from the usage it reports: a fixed cost and a ratio.

A server whose tokenizer we do not have (DeepSeek's API, a Llama or Qwen behind a gateway) still
says, in every reply's ``usage``, how many prompt tokens the request had. Against our own count of
the same request (tiktoken's, ``tokens.TokenCounter``), those numbers lie close to a line:

    reported ≈ fixed + ratio × ours

``fixed`` is what the server's chat template adds to every request (its own text, a default
system prompt), ``ratio`` how its tokenizer compares with ours on this kind of text. ``Calibration``
keeps the recent (ours, reported) pairs of one endpoint and model and fits that line robustly
(Theil-Sen: the median of the pairwise slopes, then the intercept that covers the recent pairs), so
a reply whose count is odd moves it little and the last value alone never decides. The intercept is
placed at the upper edge of the recent residuals, not their middle: the budget and eviction run on
these counts, and a count a little high costs a few tokens of room while a count a little low
costs a refused request.

It also keeps how wrong it was: each reply's count as predicted *before* the reply came (``errors``,
signed, relative: positive is an overcount), which is what ``/tokens`` shows as its error so far.

``Template`` is what a server's chat template adds, learned from its tokenizer (``wire.servertokens``).
``Keeper`` is what keeps both between chats (``store.calibration.CalibrationStore``: a file in the
data folder). No I/O happens here.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

MAX_POINTS = 48  # the pairs a fit uses: the newest ones (a server may change its template)
MAX_ERRORS = 32
COVER = 0.9  # the intercept covers this share of the recent residuals (all of them while there are few)


@dataclass(frozen=True)
class Line:
    """``reported ≈ fixed + ratio × ours``."""

    fixed: float = 0.0
    ratio: float = 1.0

    def __call__(self, ours: float) -> float:
        return self.fixed + self.ratio * ours


def _quantile(values: list[float], share: float) -> float:
    """Return the ``share`` quantile of ``values`` (nearest rank from above; the maximum at 1.0)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(share * len(ordered) + 0.999999) - 1))
    return ordered[index]


def fit(points: Iterable[tuple[int, int]]) -> Line | None:
    """Return the line through ``points`` ((ours, reported) pairs), or None for no usable point.

    One point gives a fixed cost alone (the ratio 1: tokenizers of one language differ by a few
    percent, chat templates by tens of tokens, and a short first request says little of a ratio). From
    two on, the slope is the median of the pairwise slopes
    (pairs whose ``ours`` differ by less than 1% say nothing about a slope and are skipped; with
    none left, the ratio of the sums stands), and the intercept the ``COVER`` quantile of
    ``reported - ratio × ours``: a fit that covers its recent pairs rather than splits them.
    """
    pairs = [(x, y) for x, y in points if x > 0 and y > 0]
    if not pairs:
        return None
    if len(pairs) == 1:
        x, y = pairs[0]
        return Line(float(y - x), 1.0)
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(pairs) for x2, y2 in pairs[i + 1:]
              if abs(x2 - x1) >= 0.01 * max(x1, x2)]
    slopes = [s for s in slopes if s > 0]
    ratio = statistics.median(slopes) if slopes else sum(y for _, y in pairs) / sum(x for x, _ in pairs)
    residuals = [y - ratio * x for x, y in pairs]
    fixed = max(residuals) if len(pairs) < 10 else _quantile(residuals, COVER)
    return Line(fixed, ratio)


@dataclass(frozen=True)
class Calibration:
    """The recent (ours, reported) pairs of one endpoint and model, and the errors made before each."""

    points: tuple[tuple[int, int], ...] = ()
    errors: tuple[float, ...] = ()  # (predicted - reported) / reported, before the reply was seen

    @property
    def line(self) -> Line | None:
        return fit(self.points)

    @property
    def replies(self) -> int:
        return len(self.points)

    def predict(self, ours: int) -> int | None:
        """Return the server's count for a request we count ``ours``, or None before any reply."""
        line = self.line
        return None if line is None else round(line(ours))

    def observe(self, ours: int, reported: int, predicted: int | None = None) -> Calibration:
        """Return the calibration with one more reply: our count of its request, the server's, and
        (when the meter showed one) the count it predicted before the reply."""
        if ours <= 0 or reported <= 0:
            return self
        errors = self.errors
        if predicted is not None:
            errors = (*errors, (predicted - reported) / reported)[-MAX_ERRORS:]
        return replace(self, points=(*self.points, (ours, reported))[-MAX_POINTS:], errors=errors)

    def error_summary(self, last: int = 10) -> tuple[float, float] | None:
        """Return (mean absolute error, worst undercount) of the newest ``last`` predictions, as
        shares (0.004 is 0.4%; an undercount of 0 means none was low), or None before any."""
        recent = self.errors[-last:]
        if not recent:
            return None
        return statistics.fmean(abs(e) for e in recent), max(0.0, -min(recent))

    def to_json(self) -> dict[str, Any]:
        return {"points": [list(p) for p in self.points], "errors": [round(e, 6) for e in self.errors]}

    @staticmethod
    def from_json(data: object) -> Calibration:
        """Return the calibration in a stored entry; what is not a pair of positive whole numbers (or a
        finite error) is skipped."""
        if not isinstance(data, Mapping):
            return Calibration()
        points = []
        for item in data.get("points") or ():
            if (isinstance(item, list) and len(item) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in item)):
                points.append((item[0], item[1]))
        errors = [float(e) for e in data.get("errors") or ()
                  if isinstance(e, (int, float)) and not isinstance(e, bool) and abs(e) < 100]
        return Calibration(tuple(points[-MAX_POINTS:]), tuple(errors[-MAX_ERRORS:]))


@dataclass(frozen=True)
class Template:
    """The tokens a server's chat template adds beyond the messages' own text.

    A request costs ``request`` (the reply's opening, a BOS) plus ``headless`` more when no system
    message leads it (templates such as SmolLM2's and Qwen's then add a default system prompt),
    plus ``per_role[role]`` for each message (its role and the markers around it). ``prefix`` is the
    template text right before a message's content (ChatML's newline): the content is counted after
    it, as the tokenizer meets it, since a content that begins with spaces may merge with it.
    """

    request: int
    headless: int
    per_role: Mapping[str, int]
    prefix: str = ""

    def message(self, role: str) -> int:
        """Return what the template adds around one message of ``role`` (a tool result as a user's)."""
        return self.per_role.get(role, self.per_role.get("user", 0))

    def cost(self, roles: Sequence[str]) -> int:
        """Return what the template adds to a request whose messages have ``roles``."""
        head = 0 if roles and roles[0] == "system" else self.headless
        return self.request + head + sum(self.message(role) for role in roles)

    def to_json(self) -> dict[str, Any]:
        return {"request": self.request, "headless": self.headless, "per_role": dict(self.per_role),
                "prefix": self.prefix}

    @staticmethod
    def from_json(data: object) -> Template | None:
        """Return the template a stored entry holds, or None when it is not one."""
        if not isinstance(data, Mapping):
            return None
        numbers = [data.get("request"), data.get("headless")]
        roles = data.get("per_role")
        prefix = data.get("prefix", "")
        if not isinstance(roles, Mapping) or not isinstance(prefix, str):
            return None
        numbers += list(roles.values())
        if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 10_000 for n in numbers):
            return None
        per_role = {str(k): int(v) for k, v in roles.items()}
        return Template(int(data["request"]), int(data["headless"]), per_role, prefix)


def store_key(endpoint: str, model: str) -> str:
    """Return the key of an endpoint and model in the store (``127.0.0.1:8080/v1 model``)."""
    return f"{endpoint.rstrip('/')} {model}"


class Keeper(Protocol):
    """Where calibrations and templates are kept between chats (``store.calibration.CalibrationStore``)."""

    path: Path

    def get(self, key: str) -> Calibration: ...

    def put(self, key: str, calibration: Calibration) -> None: ...

    def template(self, key: str) -> Template | None: ...

    def put_template(self, key: str, template: Template) -> None: ...


__all__ = ["Calibration", "Keeper", "Line", "Template", "fit", "store_key"]
