"""Accounting: what each turn cost, and session totals derived from those records.

The ledger stores nothing but per-turn records; every total is a sum over them, so a
total can never disagree with the turns it is made of (after a /load, say).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stateless_chat.core.messages import Event


@dataclass(frozen=True)
class TurnStats:
    """What one turn cost: our estimate and what the server reported.

    ``summary_prompt_tokens`` and ``summary_completion_tokens`` are what the summary requests
    made since the previous turn cost (the server's counts; our count of a prompt it did not
    report), including any made for a turn that then failed or by ``/summarize``.
    """

    turn: int
    estimated_prompt_tokens: int
    reported_prompt_tokens: int | None
    reported_completion_tokens: int | None
    baseline_prompt_tokens: int  # what the request would have cost with no eviction (our count)
    evictions: int = 0
    events: tuple[Event, ...] = field(default=(), compare=False)
    summary_prompt_tokens: int = 0  # and the tool loop's earlier steps: every request but the last
    summary_completion_tokens: int = 0
    summary_cached_tokens: int = 0  # the part of summary_prompt_tokens the server read from its cache
    finish_reason: str | None = None
    reported_cached_tokens: int | None = None  # the part of the reported prompt read from the server's cache
    predicted_cached_tokens: int = 0  # the prefix it shared with the previous request (our count)
    cache_break: str | None = None  # why it did not start with the whole previous request
    steps: int = 1  # requests the turn made (more than one in a tool loop; summaries not counted)

    @property
    def sent(self) -> int:
        """Return the prompt tokens this turn was billed, its summary requests included: the
        server's count, else ours."""
        reported = self.reported_prompt_tokens
        return (self.estimated_prompt_tokens if reported is None else reported) + self.summary_prompt_tokens

    @property
    def baseline_sent(self) -> int:
        """Return the no-eviction cost in ``sent``'s units (our count scaled by the server's ratio).

        With no eviction this equals ``sent`` even when the server's tokenizer is not ours.
        """
        reported = self.reported_prompt_tokens
        if reported is None or self.estimated_prompt_tokens <= 0:
            return self.baseline_prompt_tokens
        return round(self.baseline_prompt_tokens * reported / self.estimated_prompt_tokens)

    @property
    def completion(self) -> int:
        """Return the completion tokens billed for this turn, its summary requests included."""
        return (self.reported_completion_tokens or 0) + self.summary_completion_tokens

    @property
    def cached(self) -> int:
        """Return the prompt tokens read from the server's cache, summary requests included: as
        reported, else as predicted (scaled to the server's count, like ``baseline_sent``)."""
        return self.chat_cached + self.summary_cached_tokens

    @property
    def chat_cached(self) -> int:
        """Return the chat request's prompt tokens read from the cache: reported, else predicted."""
        if self.reported_cached_tokens is not None:
            return self.reported_cached_tokens
        reported = self.reported_prompt_tokens
        if reported is None or self.estimated_prompt_tokens <= 0:
            return self.predicted_cached_tokens
        return min(reported, round(self.predicted_cached_tokens * reported / self.estimated_prompt_tokens))


@dataclass(frozen=True)
class Ledger:
    """Session-wide token accounting: the real bill of resending and the no-eviction baseline.

    ``sent`` sums each turn's prompt tokens as the server reported them (our estimate for a
    turn it did not report), summary requests included: what resending the history really
    cost. ``completion`` sums the reported completion tokens, summaries included.
    ``estimated`` sums our own counts of the chat requests. ``baseline`` is what the same
    turns would have cost with nothing ever evicted or summarized, in ``sent``'s units.
    """

    turns: tuple[TurnStats, ...] = ()

    def add(self, stats: TurnStats) -> Ledger:
        """Return the ledger with one more turn recorded."""
        return Ledger(self.turns + (stats,))

    @property
    def sent(self) -> int:
        return sum(t.sent for t in self.turns)

    @property
    def estimated(self) -> int:
        return sum(t.estimated_prompt_tokens for t in self.turns)

    @property
    def baseline(self) -> int:
        return sum(t.baseline_sent for t in self.turns)

    @property
    def completion(self) -> int:
        return sum(t.completion for t in self.turns)

    @property
    def cached(self) -> int:
        return sum(t.cached for t in self.turns)

    @property
    def cache_reported(self) -> bool:
        """Return whether the server reported cached tokens for every turn (else some are predicted)."""
        return all(t.reported_cached_tokens is not None for t in self.turns)

    @property
    def breaks(self) -> int:
        return sum(1 for t in self.turns if t.cache_break)
