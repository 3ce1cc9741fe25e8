"""Standing memory: the detector on the labelled set, its speed, and a scripted 200-turn chat.

The detector (``stateless_chat.standing``) is measured on ``bench/standing_set.py``, round by round,
in the order the rounds were written: precision and recall as the rules are now, beside the figure
each round got when it was first measured (before any rule was changed for it; the development
third was the one the rules were written on). The fifth round's misses were fixed in issue 20's second
pass; the sixth round was written before that pass changed any rule and measured once after it; its
misses and false keeps were fixed in the third pass; the seventh round was written before the third
pass changed any rule, measured once after it, and never used to change a rule: its first figure is
what unseen sentences get.

Speed is CPU time per message (best of several passes): the user messages of the scripted chat,
and the set's sentences one by one.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    "sixth round": (0.900, 0.545),
    "seventh round": (0.917, 0.595),
    "eighth round": (0.848, 0.622),
    "ninth round": (0.972, 0.778),
    "tenth round": (0.974, 0.740),
    "eleventh round": (0.923, 0.720),
    "twelfth round": (0.927, 0.760),
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
    from stateless_chat.core.standing import standing

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
    from stateless_chat.core.standing import standing

    best = float("inf")
    for _ in range(passes):
        started = time.process_time()
        for text in texts:
            standing(text)
        best = min(best, (time.process_time() - started) / max(1, len(texts)))
    return best


# ---- the scripted chat ------------------------------------------------------------------------
#
# 200 turns through a real Session, the real openai client and the fake server on loopback, with the
# conversation log in a real SQLite file: twelve requirements and facts stated in everyday words inside
# longer messages (turns 2-97), filler turns that each carry a look-alike trap (a question with the
# same words, a one-off, a retraction, the past, someone else's rule, a hypothetical, a reaction),
# and, in turns 189-200, twelve requests that each need one of the twelve and share no word of it
# that matters. Written once, before it was first run; not changed after.

BUDGET_CHAT = 4_000
RESERVE_CHAT = 300
LONG = 20  # a filler turn is "long out of the window" this many turns after it was evicted
WINDOW_AT = (100, 150, 185)  # the turns after which the history is looked at: how much of it is recent

# (turn, what the user says, a marker of the standing sentence, the turn that needs it, what it asks)
STATEMENTS: tuple[tuple[int, str, str, int, str], ...] = (
    (2, "ok so before we dive in, quick thing: please always give temperatures in Celsius, I never think "
        "in Fahrenheit. Anyway, there are a few trips to plan this year and I'd like your help with them.",
     "Celsius", 189,
     "I'm flying to Oslo in early March. How warm will it be and what jacket should I bring?"),
    (9, "By the way, my wife's name is Ana, in case she comes up. Now, about the kitchen shelves we talked "
        "about: what wood holds up best in a humid room?",
     "Ana", 190, "Can you write a short, sweet anniversary note for my wife?"),
    (17, "I work the early shift at a bakery in Porto, so I'm usually up at 4am. Which houseplants survive "
         "a dark flat with only a north-facing window?",
     "bakery in Porto", 191, "Suggest a weekly workout plan that fits around my job."),
    (25, "From now on, can you keep code examples in TypeScript? That's what the team writes everything in. "
         "Also, what's a good way to structure a small command-line tool?",
     "TypeScript", 192, "Show me how to debounce a function that handles search input."),
    (33, "For context, our service runs on Kubernetes in eu-west-1. Separately, what are sensible "
         "alerting thresholds for a queue that usually drains in seconds?",
     "eu-west-1", 193, "Where should we host the new database so latency stays low for the service?"),
    (41, "Also, I'm allergic to shellfish, so please keep that in mind for recipes. What can I do with a "
         "big bag of lentils?",
     "shellfish", 194, "Plan a three-course dinner for six friends this Saturday."),
    (52, "We don't own a car, so never suggest anything that needs one. What's a good weekend routine for "
         "getting more sleep?",
     "own a car", 195, "How can we get to the hiking trails outside the city this weekend?"),
    (60, "I'd rather you didn't use bullet points, they're hard to read on my phone. How do noise-cancelling "
         "headphones actually work?",
     "bullet points", 196, "What are the pros and cons of renting versus buying a flat?"),
    (71, "My daughter is seven and completely obsessed with dinosaurs. What's the difference between a "
         "crocodile and an alligator?",
     "obsessed with dinosaurs", 197, "Any ideas for my daughter's birthday party?"),
    (80, "Keep every answer under 150 words unless I ask for more detail. How do tides work?",
     "150 words", 198, "Explain how a mortgage works."),
    (88, "We're stuck on Python 3.8 at work, so nothing newer than that. How do I read a CSV file with "
         "messy quoting?",
     "Python 3.8", 199, "Which syntax can I use for pattern matching in our scripts?"),
    (97, "Please address me as Dr. Patel in anything formal you write for me. What's a polite way to "
         "decline a meeting?",
     "Dr. Patel", 200, "Write a formal email declining an invitation to speak at a conference."),
)

TRAPS = (
    "Is it always this windy on the coast?", "Do you prefer short or long answers?",
    "Should I always salt pasta water?", "Why do people say never to wake a sleeping baby?",
    "Can you always tell when bread is done by tapping it?", "Does every sourdough need a starter?",
    "How do I stop my cat from scratching the sofa?", "Just for this answer, use a numbered list.",
    "This time, keep it really short.", "For now, skip the history part.",
    "Answer this one in Spanish, please.", "Make the next reply a bit funnier.",
    "Give me the short version today.", "In this case, a table would help.",
    "Never mind the garden question.", "Forget what I said about the bus.", "Scratch that last idea.",
    "I used to live near the sea.", "Last summer we always ate outside.",
    "When I was a student I never cooked.", "My grandfather was a carpenter.",
    "We visited Lisbon two years ago.", "I once tried to bake bread and failed.",
    "Back then I preferred trains.", "People always say the first pancake is a throwaway.",
    "Cats never come when called.", "My neighbour says you should always water plants at night.",
    "The guidebook says to never swim after eating.", "Most chefs prefer carbon steel knives.",
    "It never snows here in April.", "If I moved to Bergen, would I need a car?",
    "Suppose we had a bigger kitchen, what would change?", "What if I always worked from home?",
    "Thanks, that's really useful.", "I love that idea!", "I prefer the second recipe.",
    "I'm tired today.", "I have a question about compost.", "Let me think about it.",
    "I'm reading about fermentation right now.",
)
TOPICS = (
    "Tell me more about how sourdough starters work, what flour they need, how often they are fed, and "
    "why some bakers keep them in the fridge between bakes.",
    "Walk me through how a heat pump moves warmth from cold outside air into a house, and why it gets "
    "less efficient as the weather turns colder.",
    "Explain how the old Roman aqueducts kept a steady slope over long distances without modern survey "
    "tools, and how they dealt with valleys.",
    "How do bees decide where to build a new hive, and what happens to the old queen when a colony "
    "swarms in late spring?",
    "What is the difference between baking soda and baking powder, and when would a recipe call for "
    "both of them at once?",
    "Describe how a bicycle derailleur shifts the chain between sprockets, and what usually goes wrong "
    "when it starts skipping.",
    "How does compound interest work over twenty or thirty years, and why do small fees matter so much "
    "for long-term savings?",
    "Explain how glaciers carve valleys, and how geologists tell a glacial valley from one cut by a "
    "river.",
    "What makes a good cup of pour-over coffee, from grind size to water temperature and the speed of "
    "the pour?",
    "How do noise levels in open offices affect concentration, and what simple changes help the most?",
    "Tell me how tomatoes are grown in greenhouses in the north, with artificial light and careful "
    "control of humidity.",
    "How did medieval cathedrals get built over generations, and who paid the masons while it went on?",
)


def chat_text(turn: int) -> str:
    """Return what the user says in ``turn`` (1-based) of the scripted chat."""
    for said, text, _, need, ask in STATEMENTS:
        if turn == said:
            return text
        if turn == need:
            return ask
    trap = TRAPS[turn % len(TRAPS)]
    topic = TOPICS[(turn * 7) % len(TOPICS)]
    return f"{trap} {topic} Part {turn} of my reading list, so take your time."


def chat_replier(body: dict[str, Any]) -> str:
    """Answer like a model would, from the request alone: about sixty words."""
    words = ("that is a good question and here is a short answer with the main points laid out in order "
             "so that it is easy to follow and to come back to later when you need it again").split()
    return "Sure. " + " ".join(words[(k * 5) % len(words)] for k in range(60)) + "."


@dataclass(frozen=True)
class ChatRun:
    """One run of the scripted chat under one configuration."""

    label: str
    met: tuple[bool, ...]  # per request that needs a statement: was it in that request?
    filler_turns: int
    filler_noted: int  # filler turns with a sentence kept as a note: sent with every request from then on
    filler_recalled: int  # filler turns auto recall brought back LONG turns or more after they were evicted
    filler_resent: int  # filler turns sent LONG turns or more after their eviction either way (the goal)
    false_notes: tuple[str, ...]  # notes from filler turns
    notes: int
    windows: tuple[tuple[int, int], ...]  # at each of WINDOW_AT: (turns of the history never recalled, all)
    largest: int  # the largest request, prompt and reply reserve, by our count
    sent: int  # prompt tokens over the run, as the server counted them
    cached: int


def run_chat(label: str, *, memory: str, recall: str, directory: Path, turns: int = 200) -> ChatRun:
    """Run the scripted chat once with ``memory`` and ``recall`` (the log in ``directory``)."""
    from stateless_chat.chat.session import Session
    from stateless_chat.chat.turn import Hooks
    from stateless_chat.config import Settings
    from stateless_chat.core.messages import Event, Recalled
    from stateless_chat.store import journal
    from stateless_chat.wire.openai_backend import open_backend
    from tests.fakeserver import FakeServer

    needs = {need: marker for _, _, marker, need, _ in STATEMENTS}
    said = {turn for turn, *_ in STATEMENTS}
    fillers = [t for t in range(1, turns + 1) if t not in needs and t not in said]
    with FakeServer(chat_replier) as server:
        server.cache_dialect, server.cache_min, server.cache_step = "deepseek", 0, 1
        settings = Settings(base_url=server.url, budget=BUDGET_CHAT, reply_reserve=RESERVE_CHAT,
                            max_retries=0, timeout=30.0, memory=memory, recall=recall)
        events: list[Event] = []
        session = Session(settings, open_backend(settings.endpoints, "sk-bench", max_retries=0, timeout=30.0),
                          hooks=Hooks(on_event=events.append))
        log = journal.open_journal(directory / f"{label}.db", settings, strict=True)
        session.on_turn, session.recall = (*session.on_turn, log), log.recall  # as the app wires it
        met: list[bool] = []
        recalled: set[int] = set()
        ever: set[int] = set()  # every turn auto recall brought back, however soon
        windows: list[tuple[int, int]] = []
        for turn in range(1, turns + 1):
            evicted_at = {e.turn: e.eviction.turn for e in session.conversation.evicted if e.eviction}
            told = len(events)
            session.send(chat_text(turn))
            ever |= {event.turn for event in events[told:] if isinstance(event, Recalled)}
            if turn in WINDOW_AT:
                live = {e.turn for e in session.conversation.history}
                windows.append((len(live - ever), len(live)))
            for event in events[told:]:
                if isinstance(event, Recalled) and event.turn in evicted_at and \
                        turn - evicted_at[event.turn] >= LONG and event.turn in fillers:
                    recalled.add(event.turn)
            if turn in needs:
                body = server.requests[-1]
                met.append(any(needs[turn] in str(m.get("content")) for m in body["messages"][:-1]))
        log.close()
        notes = session.conversation.memory.notes
        false_notes = tuple(n.text for n in notes if n.turn in fillers)
        noted = {n.turn for n in notes if n.turn in fillers}
        largest = max(t.estimated_prompt_tokens for t in session.ledger.turns) + RESERVE_CHAT
        assert session.backend is not None
        session.backend.close()
        return ChatRun(label, tuple(met), len(fillers), len(noted), len(recalled), len(noted | recalled),
                       false_notes, len(notes), tuple(windows), largest, session.ledger.sent,
                       session.ledger.cached)


CHAT_RUNS = (
    ("before: drop-oldest alone (memory off, recall off)", "off", "off"),
    ("recall auto alone (memory off)", "off", "auto"),
    ("the default now: memory auto + recall auto", "auto", "auto"),
)


def run_chats(turns: int = 200) -> list[ChatRun]:
    """Return one run of the scripted chat per configuration of ``CHAT_RUNS``."""
    with tempfile.TemporaryDirectory(prefix="bench-standing-") as directory:
        return [run_chat(label, memory=memory, recall=recall, directory=Path(directory), turns=turns)
                for label, memory, recall in CHAT_RUNS]
