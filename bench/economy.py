"""Context economy: a scripted 200-turn conversation with 5 constraints planted in early turns.

Each policy runs the same script through a real ``Session`` and ``open_backend`` against
the fake server on loopback, with a budget of 2,000 tokens. Tokens are the server's
own count (``prompt_tokens`` it reports), summed over every request the client made,
summary requests included; the baseline is the same script with policy ``none``.
A constraint is kept when its marker is in the last chat request.

The server's summarizer stands in for a model that follows the summary prompt (keep
every constraint the user stated): it copies each "CONSTRAINT" sentence of its input
and adds a one-line gist. What is measured is the client: that it folds, carries the
summary forward and keeps it in every request.
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


@dataclass
class EconomyRow:
    """One policy's bill for the scripted conversation."""

    policy: str
    sent: int  # prompt tokens of every request, summaries included
    requests: int
    largest: int  # the largest single request, in prompt tokens
    kept: int  # constraints whose marker is in the final chat request


def user_text(turn: int) -> str:
    """Return the user message of ``turn`` (1-based): a constraint in the early turns, filler otherwise."""
    words = " ".join(FILLER[(turn + k) % len(FILLER)] for k in range(24))
    if turn in CONSTRAINT_TURNS:
        return f"Turn {turn}. {CONSTRAINTS[CONSTRAINT_TURNS.index(turn)]} Also, {words}."
    return f"Turn {turn}. {words}?"


def replier(body: dict[str, Any]) -> str:
    """Answer like a model would, from the request alone: a summary for summary requests, else ~70 words."""
    from tests.fakeserver import content_text, is_summary_request

    messages = body.get("messages") or []
    if is_summary_request(body):
        text = "\n".join(content_text(m.get("content")) for m in messages[1:])
        kept = list(dict.fromkeys(m.group(0) for m in _CONSTRAINT_RE.finditer(text)))
        return "\n".join(["The user is planning a spring city trip on a modest budget.", *kept])
    last = content_text(messages[-1].get("content")) if messages else ""
    turn = re.match(r"Turn (\d+)", last)
    words = " ".join(FILLER[(k * 7) % len(FILLER)] for k in range(70))
    return f"Answer {turn.group(1) if turn else '?'}: {words}."


def run_policy(policy: str, turns: int, pin: bool) -> EconomyRow:
    """Run the script under ``policy`` (pinning the constraint messages if ``pin``) and return its bill."""
    from stateless_chat.config import Settings
    from stateless_chat.session import Session
    from stateless_chat.transport import open_backend
    from tests.fakeserver import FakeServer, approx_tokens, is_summary_request

    with FakeServer(replier) as server:
        settings = Settings(base_url=server.url, budget=BUDGET, reply_reserve=RESERVE, policy=policy,
                            max_retries=0, timeout=30.0)
        session = Session(settings, open_backend(settings.endpoints, "sk-bench", max_retries=0, timeout=30.0))
        for turn in range(1, turns + 1):
            text = user_text(turn)
            session.send(text)
            if pin and turn in CONSTRAINT_TURNS:
                entry = next(e for e in session.conversation.history if e.content == text)
                session.conversation = session.conversation.set_pinned(entry.id, True)
        assert session.backend is not None
        session.backend.close()
        requests = server.requests
    sizes = [approx_tokens(r["messages"]) for r in requests]
    final = next(r for r in reversed(requests) if not is_summary_request(r))
    final_text = "\n".join(str(m.get("content")) for m in final["messages"])
    kept = sum(marker in final_text for marker in MARKERS)
    return EconomyRow(policy + (" + pins" if pin else ""), sum(sizes), len(requests), max(sizes), kept)


def run(turns: int = 200, policies: Sequence[tuple[str, bool]] = (
        ("none", False), ("drop-oldest", False), ("drop-oldest", True), ("summarize", False),
        ("summarize", True))) -> list[EconomyRow]:
    """Return one row per (policy, pinned) pair; the ``none`` row is the no-eviction baseline."""
    return [run_policy(policy, turns, pin) for policy, pin in policies]
