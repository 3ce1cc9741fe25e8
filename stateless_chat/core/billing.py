"""Prices and the bill: what the tokens a session sent cost, and what a naive full resend would have.

Prices are dollars per million tokens: input (uncached prompt tokens), cached input
(prompt tokens the server read from its prefix cache) and output. A small built-in
table covers a few common OpenAI and DeepSeek models (as published in 2025; see
docs/context-and-memory.md); ``[prices."MODEL"]`` in the config file adds or overrides.
Without a price for the model, costs are not shown: never a made-up price.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stateless_chat.core.models import normalise
from stateless_chat.validate import Invalid


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens."""

    input: float
    cached_input: float
    output: float

    def cost(self, uncached: int, cached: int, output: int) -> float:
        """Return the dollars that many tokens cost."""
        return (uncached * self.input + cached * self.cached_input + output * self.output) / 1_000_000


# As published by OpenAI and DeepSeek in 2025 (standard tier); the config file overrides them.
BUILTIN_PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 1.25, 10.00),
    "gpt-4o-mini": Price(0.15, 0.075, 0.60),
    "gpt-4.1": Price(2.00, 0.50, 8.00),
    "gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.025, 0.40),
    "gpt-5": Price(1.25, 0.125, 10.00),
    "gpt-5-mini": Price(0.25, 0.025, 2.00),
    "gpt-5-nano": Price(0.05, 0.005, 0.40),
    "o3": Price(2.00, 0.50, 8.00),
    "o4-mini": Price(1.10, 0.275, 4.40),
    "deepseek-chat": Price(0.28, 0.028, 0.42),
    "deepseek-reasoner": Price(0.28, 0.028, 0.42),
}


def price_for(model: str, configured: Mapping[str, Price] = {}) -> Price | None:
    """Return the price of ``model``: the configured one for its exact name, else the longest
    configured or built-in name it starts with (``gpt-4o-mini-2024-07-18`` is ``gpt-4o-mini``), else
    None."""
    name = normalise(model)
    table = {normalise(k): v for k, v in BUILTIN_PRICES.items()}
    table.update({normalise(k): v for k, v in configured.items()})
    if name in table:
        return table[name]
    for key in sorted(table, key=len, reverse=True):
        if name.startswith(key) and name[len(key)] in "-:@_.":
            return table[key]
    return None


# The most a price may be, in $ per million tokens: a dollar a token. The dearest published price is a
# few hundred (o1-pro's output, $600), so anything past this is a typo; a price near the largest float
# would make every cost infinite.
MAX_PRICE = 1_000_000


def check_prices(value: object) -> dict[str, Price]:
    """Return the ``[prices."MODEL"]`` tables of a config file as prices; ``Invalid`` otherwise."""
    expected = 'a table of models, each {input = N, cached_input = N, output = N} in $ per million tokens'
    if not isinstance(value, Mapping):
        raise Invalid(expected)
    prices: dict[str, Price] = {}
    for model, table in value.items():
        if isinstance(table, Price):  # already checked (Settings checks its fields again)
            prices[str(model)] = table
            continue
        if not isinstance(table, Mapping) or set(table) - {"input", "cached_input", "output"} \
                or "input" not in table or "output" not in table:
            raise Invalid(expected)
        numbers = {key: table.get(key, table["input"]) for key in ("input", "cached_input", "output")}
        for key, number in numbers.items():
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise Invalid(expected)
            if not math.isfinite(number) or not 0 <= number <= MAX_PRICE:
                raise Invalid(f"{expected}, each from 0 to {MAX_PRICE:,} "
                              f"({str(model)!r} has {key} = {number!r})")
        prices[str(model)] = Price(float(numbers["input"]), float(numbers["cached_input"]),
                                   float(numbers["output"]))
    return prices


@dataclass(frozen=True)
class TurnTokens:
    """One turn's tokens as billed: prompt (cached included), cached, completion; and the naive
    full resend's prompt for the same turn."""

    prompt: int
    cached: int
    completion: int
    naive_prompt: int


@dataclass(frozen=True)
class Bill:
    """A session's cost, and a naive full resend's with the server's cache (None without a price)."""

    cost: float | None
    naive_cost: float | None


def bill(turns: Sequence[TurnTokens], price: Price | None) -> Bill:
    """Return what ``turns`` cost at ``price``, and what resending everything, never evicting, would
    have cost: there each request starts with the whole previous one, so all of it but the new
    part is read from the cache."""
    if price is None:
        return Bill(None, None)
    cost = sum(price.cost(t.prompt - t.cached, t.cached, t.completion) for t in turns)
    naive = 0.0
    previous = 0
    for t in turns:
        cached = min(previous, t.naive_prompt)
        naive += price.cost(t.naive_prompt - cached, cached, t.completion)
        previous = t.naive_prompt
    return Bill(cost, naive)


def dollars(amount: float) -> str:
    """Return ``amount`` for a one-line display: cents and below keep their digits."""
    if amount < 0.01:
        return f"${amount:.6f}"
    return f"${amount:,.4f}" if amount < 1 else f"${amount:,.2f}"
