"""Context economy, as billed: a scripted 200-turn conversation with 5 constraints planted in early turns.

Each policy runs the same script through a real ``Session`` and ``open_backend`` against
the fake server on loopback, with a budget of 2,000 tokens, twice: once against a server
that caches any shared prefix of whole messages (as DeepSeek and llama.cpp do, reported in
DeepSeek's dialect) and once by OpenAI's rules (nothing under 1,024 tokens, then in 128-token
steps). Tokens are the server's own counts (``prompt_tokens`` and its cached part, as it
reports them), summed over every request the client made, summary requests included. The
bill prices the prompt side only (completions are the same for every policy): input at 1,
cached input at 10% (an OpenAI-style price) or 2% (a DeepSeek-style price).
``none`` is the naive full resend, which the server's cache serves well: each of its
requests starts with the whole previous one. A constraint is kept when its marker is in
the last chat request. The last row is the chat's default now: drop-oldest with standing memory
(the constraints are kept as the user states them, no pins) and auto recall from the log.

The server's summarizer stands in for a model that follows the summary prompt (keep
every constraint the user stated): it copies each "CONSTRAINT" sentence of its input
and adds a one-line gist. What is measured is the client: that it folds, carries the
summary forward and keeps it in every request, and what each policy does to the cache.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import ROOT  # noqa: F401  (puts the checkout on sys.path)

BUDGET = 2_000
RESERVE = 200  # room held back for a reply: replies here are ~90 tokens
CONSTRAINTS = (
    "CONSTRAINT K1-AMBER: always answer in British English.",
    "CONSTRAINT K2-BASALT: the budget for the project is 4,000 euros.",
    "CONSTRAINT K3-CEDAR: never suggest anything that needs a car.",
    "CONSTRAINT K4-DELTA: the user is allergic to peanuts.",
    "CONSTRAINT K5-EMBER: keep every answer under one hundred words.",
)
MARKERS = tuple(re.search(r"K\d-[A-Z]+", c).group(0) for c in CONSTRAINTS)  # type: ignore[union-attr]
CONSTRAINT_TURNS = (1, 2, 3, 4, 5)
FILLER = ("we keep planning the trip and I would like to hear more ideas about places to visit, "
          "things to eat and how to get around the city on a modest budget next spring").split()
_CONSTRAINT_RE = re.compile(r"CONSTRAINT K\d-[A-Z]+:[^\n]*?\.")


CACHED_PRICES = (0.10, 0.02)  # cached input, relative to input at 1


@dataclass
class EconomyRow:
    """One policy's bill for the scripted conversation."""

    policy: str
    sent: int  # prompt tokens of every request, summaries included
    cached: int  # of them read from a cache that keeps any shared prefix of whole messages
    bills: tuple[float, ...]  # the prompt side's bill at each of CACHED_PRICES, in input-token units
    cached_openai: int  # read from a cache that follows OpenAI's rules (1,024 tokens, 128-token steps)
    bill_openai: float  # the bill at 10% with OpenAI's rules
    breaks: int  # chat requests that did not start with the whole previous one
    requests: int
    largest: int  # the largest single request, in prompt tokens
    over_budget: int  # chat requests whose prompt plus the reply reserve exceeded the budget
    kept: int  # constraints whose marker is in the final chat request


def user_text(turn: int) -> str:
    """Return the user message of ``turn`` (1-based): a constraint in the early turns, filler otherwise."""
    words = " ".join(FILLER[(turn + k) % len(FILLER)] for k in range(24))
    if turn in CONSTRAINT_TURNS:
        return f"Turn {turn}. {CONSTRAINTS[CONSTRAINT_TURNS.index(turn)]} Also, {words}."
    return f"Turn {turn}. {words}?"


def replier(body: dict[str, Any]) -> str:
    """Answer like a model would, from the request alone: a summary for summary requests, else ~70 words."""
    from tests.fakeserver import content_text, is_summary_request, summary_sources

    messages = body.get("messages") or []
    if is_summary_request(body):
        text = "\n".join(content_text(m.get("content")) for m in summary_sources(messages))
        kept = list(dict.fromkeys(m.group(0) for m in _CONSTRAINT_RE.finditer(text)))
        return "\n".join(["The user is planning a spring city trip on a modest budget.", *kept])
    last = content_text(messages[-1].get("content")) if messages else ""
    turn = re.match(r"Turn (\d+)", last)
    words = " ".join(FILLER[(k * 7) % len(FILLER)] for k in range(70))
    return f"Answer {turn.group(1) if turn else '?'}: {words}."


def run_policy(policy: str, turns: int, pin: bool, evict_to: float, dialect: str,
               default_now: bool = False) -> tuple[int, ...]:
    """Run the script once under ``policy`` against a server caching by ``dialect``'s rules; return
    (prompt tokens, cached, breaks, requests, largest, over budget, kept). Only ``default_now`` has
    standing memory and auto recall (from the conversation log, a real SQLite file), as a chat has
    them by default now; the other rows are the policies alone."""
    import tempfile
    from pathlib import Path

    from stateless_chat.chat.session import Session
    from stateless_chat.config import Settings
    from stateless_chat.store import journal
    from stateless_chat.wire.openai_backend import open_backend
    from tests.fakeserver import FakeServer, approx_tokens, is_summary_request

    with FakeServer(replier) as server, tempfile.TemporaryDirectory(prefix="bench-economy-") as directory:
        server.cache_dialect = dialect
        if dialect == "deepseek":
            server.cache_min, server.cache_step = 0, 1
        memory, recall = ("auto", "auto") if default_now else ("off", "off")
        settings = Settings(base_url=server.url, budget=BUDGET, reply_reserve=RESERVE, policy=policy,
                            max_retries=0, timeout=30.0, evict_to=evict_to, memory=memory, recall=recall)
        session = Session(settings, open_backend(settings.endpoints, "sk-bench", max_retries=0, timeout=30.0))
        log = journal.open_journal(Path(directory) / "log.db", settings, strict=True) if default_now else None
        if log is not None:  # as the app wires it: told of every turn, asked to recall
            session.on_turn, session.recall = (*session.on_turn, log), log.recall
        for turn in range(1, turns + 1):
            text = user_text(turn)
            session.send(text)
            if pin and turn in CONSTRAINT_TURNS:
                entry = next(e for e in session.conversation.history if e.content == text)
                session.pin(entry.id)
        assert session.backend is not None
        session.backend.close()
        if log is not None:
            log.close()
        requests = server.requests
        ledger = session.ledger  # the server's counts as it reported them, summary requests included
    sizes = [approx_tokens(r["messages"]) for r in requests]
    assert ledger.sent == sum(sizes), "every request is billed to a turn"
    over = sum(1 for t in ledger.turns if t.estimated_prompt_tokens + RESERVE > BUDGET)  # by our count
    final = next(r for r in reversed(requests) if not is_summary_request(r))
    final_text = "\n".join(str(m.get("content")) for m in final["messages"])
    kept = sum(marker in final_text for marker in MARKERS)
    return ledger.sent, ledger.cached, ledger.breaks, len(requests), max(sizes), over, kept


def bill(sent: int, cached: int, cached_price: float) -> float:
    """Return the prompt side's bill: uncached tokens at 1, cached ones at ``cached_price``."""
    return (sent - cached) + cached * cached_price


# (row, policy, pins, evict_to, the default now: standing memory and auto recall on)
POLICIES: tuple[tuple[str, str, bool, float, bool], ...] = (
    ("none (naive full resend)", "none", False, 1.0, False),
    ("drop-oldest, evict to fit (1.0)", "drop-oldest", False, 1.0, False),
    ("drop-oldest (0.5), the default before", "drop-oldest", False, 0.5, False),
    ("drop-oldest (0.5) + pins", "drop-oldest", True, 0.5, False),
    ("summarize (0.5)", "summarize", False, 0.5, False),
    ("summarize (0.5) + pins", "summarize", True, 0.5, False),
    ("the default now: drop-oldest (0.5) + standing memory + auto recall", "drop-oldest", False, 0.5, True),
)


def run(turns: int = 200,
        policies: Sequence[tuple[str, str, bool, float, bool]] = POLICIES) -> list[EconomyRow]:
    """Return one row per policy; the first, ``none``, is the naive full resend."""
    rows = []
    for name, policy, pin, evict_to, default_now in policies:
        exact = run_policy(policy, turns, pin, evict_to, "deepseek", default_now)
        sent, cached, breaks, requests, largest, over, kept = exact
        openai = run_policy(policy, turns, pin, evict_to, "openai", default_now)
        rows.append(EconomyRow(
            name, sent=sent, cached=cached, bills=tuple(bill(sent, cached, p) for p in CACHED_PRICES),
            cached_openai=openai[1], bill_openai=bill(openai[0], openai[1], CACHED_PRICES[0]), breaks=breaks,
            requests=requests, largest=largest, over_budget=over, kept=min(kept, openai[-1])))
    return rows
