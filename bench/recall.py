"""Recall: facts evicted long ago, asked for 200 turns later, with and without auto recall.

A scripted conversation runs through a real ``Session`` and ``open_backend`` against the fake
server, with the conversation log attached (``journal.open_journal``, a real SQLite file): 10 facts
stated in turns 1-10 (not pinned), 190 turns of filler, all under drop-oldest at a budget of
2,000 tokens, then 10 questions, each needing one fact. A fact counts as present when its
marker is in the request its question sent. Once with drop-oldest alone, once with
``recall = "auto"`` (within the default recall budget, a tenth of the budget); recall's cost is
the tokens it added, per request (the ``Recalled`` events).

Then the index alone: the time of one recall search (``LogStore.recall`` over the evicted
messages, as auto recall makes before each request) in a log of 200 and of 20,000 messages,
median over the 10 questions, each asked several times.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import median

BUDGET = 2_000
RESERVE = 200  # room held back for a reply, as in the economy bench
FACTS = (
    ("the launch code for the rocket is 7491", "7491", "What was the launch code for the rocket?"),
    ("my sister Imogen lives in Tromsø", "Tromsø", "Where does my sister Imogen live?"),
    ("the wifi password at the cabin is heron-42", "heron-42", "What is the wifi password at the cabin?"),
    ("the dentist appointment is on Thursday at 9:40", "9:40", "When is my dentist appointment?"),
    ("our server rack sits in aisle 17 of the Frankfurt datacenter", "aisle 17",
     "Which aisle of the datacenter is our server rack in?"),
    ("the cat's vet is Dr. Okonkwo", "Okonkwo", "Who is the cat's vet?"),
    ("the bicycle lock combination is 3-1-8-5", "3-1-8-5", "What is the bicycle lock combination?"),
    ("the manuscript deadline is the 14th of March", "14th of March", "When is the manuscript deadline?"),
    ("Priya prefers oolong tea without sugar", "oolong", "Which tea does Priya prefer?"),
    ("the spare key is under the blue flowerpot", "blue flowerpot", "Where is the spare key hidden?"),
)
FILLER = ("we keep planning the trip and I would like to hear more ideas about places to visit, "
          "things to eat and how to get around the city on a modest budget next spring").split()
SEARCH_SIZES = (200, 20_000)
SEARCH_REPEAT = 5


@dataclass
class RecallRun:
    """One run of the script: which facts each question's request carried, and what recall added."""

    label: str
    present: tuple[bool, ...]  # per question
    extra_questions: tuple[int, ...]  # tokens recall added to each question's request
    extra_all: int  # tokens recall added over every request of the run
    requests: int
    recalling_fillers: int  # filler turns that recalled something (recall's false alarms)
    largest: int  # the largest request by our count, with the reply reserve: at most the budget


@dataclass
class SearchRow:
    """Recall in a log of ``messages`` messages (median seconds): the index search alone, and all that
    auto recall does before a request (bringing the index up to date, the search, choosing turns)."""

    messages: int
    evicted: int
    search: float
    per_request: float
    found: int  # questions whose fact was the best hit


def user_text(turn: int) -> str:
    """Return the user message of ``turn`` (1-based): a fact in turns 1-10, filler after."""
    words = " ".join(FILLER[(turn + k) % len(FILLER)] for k in range(24))
    if turn <= len(FACTS):
        return f"Please keep this in mind: {FACTS[turn - 1][0]}. Also, {words}."
    return f"{words}?"


def replier(body: dict[str, Any]) -> str:
    """Answer from the request alone: a question with the fact it needs in the request, else ~70 words."""
    from tests.fakeserver import content_text

    messages = body.get("messages") or []
    last = content_text(messages[-1].get("content")) if messages else ""
    for fact, marker, question in FACTS:
        if last == question:
            seen = any(marker in content_text(m.get("content")) for m in messages[:-1])
            return f"You told me: {fact}." if seen else "I do not know: that is no longer in what you sent."
    return "Sure: " + " ".join(FILLER[(k * 7) % len(FILLER)] for k in range(70)) + "."


def run_script(recall: str, turns: int, log: Path) -> RecallRun:
    """Run the script once (``recall`` "off" or "auto") with the log at ``log``."""
    from stateless_chat.chat.session import Session
    from stateless_chat.chat.turn import Hooks
    from stateless_chat.config import Settings
    from stateless_chat.core.messages import Event, Recalled
    from stateless_chat.store import journal
    from stateless_chat.wire.openai_backend import open_backend
    from tests.fakeserver import FakeServer

    with FakeServer(replier) as server:
        # Standing memory off: this part measures recall alone (part 9 measures them together).
        settings = Settings(base_url=server.url, budget=BUDGET, reply_reserve=RESERVE, max_retries=0,
                            timeout=30.0, recall=recall, memory="off")
        events: list[Event] = []
        session = Session(settings, open_backend(settings.endpoints, "sk-bench", max_retries=0, timeout=30.0),
                          hooks=Hooks(on_event=events.append))
        warnings: list[str] = []
        attached = journal.open_journal(log, settings, warn=warnings.append, strict=True)
        session.on_turn = (*session.on_turn, attached)
        session.recall = attached.recall
        added: list[int] = []
        for turn in range(1, turns + len(FACTS) + 1):
            told = len(events)
            if turn <= turns:
                session.send(user_text(turn))
            else:
                session.send(FACTS[turn - turns - 1][2])
            added.append(sum(e.tokens for e in events[told:] if isinstance(e, Recalled)))
        attached.close()
        assert not warnings, warnings
        requests = server.requests
        largest = max(t.estimated_prompt_tokens for t in session.ledger.turns) + RESERVE
    questions = requests[-len(FACTS):]
    present = tuple(any(marker in str(m.get("content")) for m in body["messages"][:-1])
                    for body, (_, marker, _) in zip(questions, FACTS, strict=True))
    return RecallRun(
        label="auto recall" if recall == "auto" else "drop-oldest alone",
        present=present,
        extra_questions=tuple(added[-len(FACTS):]),
        extra_all=sum(added),
        requests=len(requests),
        recalling_fillers=sum(1 for tokens in added[len(FACTS):turns] if tokens),
        largest=largest,
    )


def search_time(messages: int, directory: Path) -> SearchRow:
    """Return recall's times in a log of ``messages`` messages: the 10 facts, then filler, every
    message evicted but the newest 20, logged through the journal as a chat would."""
    from dataclasses import replace

    from stateless_chat.chat.session import Session
    from stateless_chat.config import Settings
    from stateless_chat.core.history import Conversation
    from stateless_chat.core.messages import Entry, Eviction, Message
    from stateless_chat.store import journal

    settings = Settings(base_url="http://127.0.0.1:9/v1", recall="auto", budget=BUDGET, reply_reserve=RESERVE)
    session = Session(settings, None, exact=False)
    entries = []
    for number in range(1, messages + 1):
        turn = (number + 1) // 2
        user = number % 2 == 1
        text = user_text(turn) if user else replier({"messages": [{"content": ""}]})
        message = Message("user" if user else "assistant", text)
        entries.append(Entry(number, message, session.measure(message), turn))
    live = messages - 20
    gone = tuple(replace(e, eviction=Eviction("dropped", e.turn + 10)) for e in entries[:live])
    session.conversation = Conversation(history=tuple(entries[live:]), evicted=gone, next_id=messages + 1,
                                        next_turn=entries[-1].turn + 1)
    attached = journal.open_journal(directory / f"search-{messages}.db", session.settings, strict=True)
    conversation = session.conversation
    attached.recall("warm up", conversation, BUDGET)  # the first call logs every message
    store, cid = attached._index(conversation)
    among = {e.id for e in gone}
    searches: list[float] = []
    requests: list[float] = []
    found = 0
    for index, (_, _, question) in enumerate(FACTS):
        for repeat in range(SEARCH_REPEAT):
            started = time.perf_counter()
            hits = store.recall(cid, question, among=among)
            searches.append(time.perf_counter() - started)
            started = time.perf_counter()
            attached.recall(question, conversation, BUDGET)
            requests.append(time.perf_counter() - started)
            if repeat == 0 and hits and hits[0].turn == index + 1:
                found += 1
    attached.close()
    return SearchRow(messages, len(among), median(searches), median(requests), found)


def run(turns: int = 200, sizes: Sequence[int] = SEARCH_SIZES) -> tuple[list[RecallRun], list[SearchRow]]:
    """Return the two scripted runs (drop-oldest alone, auto recall) and the search times."""
    with tempfile.TemporaryDirectory(prefix="bench-recall-") as directory:
        folder = Path(directory)
        runs = [run_script("off", turns, folder / "off.db"), run_script("auto", turns, folder / "auto.db")]
        rows = [search_time(size, folder) for size in sizes]
    return runs, rows
