"""Per-turn client overhead: count the new message, fit the request to the budget, build the payload,
and the whole client path of a turn, from Enter to the request on the wire.

A session holds ``n`` messages of history under a budget large enough to resend them
all (the worst case for the client: nothing evicted), and the steps of
``Session.plan`` are timed separately, with no network. ``send`` is the whole turn:
``Session.send`` against the fake server on loopback (plan, the body serialized once,
the openai SDK's request, the bytes written to the socket, then a one-word reply read
and committed), timed as the CPU of the client's own thread (``time.thread_time``), so
the server, which runs in another thread of the same process, is not counted, nor is
the wait for it. It bounds "Enter to the request on the wire" from above.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from bench.common import median

if TYPE_CHECKING:
    from stateless_chat.chat.session import Session
    from stateless_chat.core.messages import Role

WORDS = "the quick brown fox jumps over the lazy dog while the cat watches".split()


@dataclass
class TurnRow:
    """Median seconds of each step for a history of ``messages`` messages."""

    messages: int
    count: float
    fit: float
    payload: float
    plan: float
    serialize: float  # json.dumps of the body: what sending it costs at the least, for reference
    send: float = 0.0  # Session.send on loopback, client thread CPU: Enter to the reply committed


def history_session(n: int, *, exact: bool = False) -> Session:
    """Return a Session (no transport) holding ``n`` messages: alternating user/assistant turns."""
    from stateless_chat.chat.session import Session
    from stateless_chat.config import Settings

    huge = 100_000_000
    session = Session(Settings(base_url="http://127.0.0.1:9/v1", budget=huge, context_window=huge),
                      None, exact=exact)
    conversation = session.conversation
    built = []
    for i in range(n):
        role: Role = "user" if i % 2 == 0 else "assistant"
        text = f"message {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(12))
        entry = conversation.new_entry(role, text, session.measure, turn=i // 2 + 1)
        built.append(replace(entry, id=entry.id + i))
    session.conversation = conversation.append(*built)
    return session


def _time(step: Callable[[], object], repeat: int, clock: Callable[[], float] = time.perf_counter) -> float:
    samples = []
    for _ in range(repeat):
        start = clock()
        step()
        samples.append(clock() - start)
    return median(samples)


def measure_send(session: Session, url: str, text: str, repeat: int) -> float:
    """Return the median client-thread CPU seconds of ``session.send(text)`` to the server at ``url``;
    the session is put back after each turn, so every turn resends the same history."""
    from stateless_chat.wire.openai_backend import open_backend

    session.backend = open_backend([url], None, max_retries=0)
    start = session.snapshot()

    def send() -> object:
        session.rollback(start)
        return session.send(text)

    try:
        send()  # the first request pays for imports and the connection
        return _time(send, repeat, time.thread_time)
    finally:
        session.rollback(start)
        session.backend.close()
        session.backend = None


def measure(n: int, repeat: int, url: str | None = None) -> TurnRow:
    """Return the median time of each step of one turn over a history of ``n`` messages."""
    session = history_session(n)
    conversation = session.conversation
    text = "and the next question is this one"
    pending = conversation.new_entry("user", text, session.measure)
    policy, budget, reserve = session.policy(), session.budget, session.reserve
    fitted = policy.fit(conversation.candidate([pending], budget=budget, reserve=reserve))
    assert len(fitted.kept) == n + 1, "the bench budget must hold the whole history"
    body = session.body_of(session.plan(text, summarize=False).request)

    def count() -> object:
        return conversation.new_entry("user", text, session.measure)

    def fit() -> object:
        return policy.fit(conversation.candidate([pending], budget=budget, reserve=reserve))

    def payload() -> object:
        return session.body([e.message for e in fitted.kept])

    def plan() -> object:  # fitting and the body it sends, as a turn does before the network
        return session.body_of(session.plan(text, summarize=False).request)

    def serialize() -> object:
        return json.dumps(body)

    row = TurnRow(n, _time(count, repeat), _time(fit, repeat), _time(payload, repeat), _time(plan, repeat),
                  _time(serialize, repeat, time.thread_time))
    if url is not None:
        row.send = measure_send(session, url, text, repeat)
    return row


def run(sizes: Sequence[int] = (10, 100, 1_000, 10_000), repeat: int = 30) -> list[TurnRow]:
    """Return one row per history size; each step is the median of ``repeat`` runs. The whole turn
    (``send``) is measured against the project's fake server, started here on loopback."""
    from tests.fakeserver import FakeServer

    with FakeServer(lambda body: "ok") as server:
        return [measure(n, repeat, server.url) for n in sizes]
