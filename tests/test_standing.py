"""The standing-memory detector (``stateless_chat.standing``): both sides of each rule, whole messages,
and the labelled set of ``bench/standing_set.py`` (speed is measured in ``bench/``, never here)."""

from __future__ import annotations

import pytest

from bench import standing_set
from stateless_chat.core.standing import sentences, standing, verdict


@pytest.mark.parametrize("sentence", [
    "Please always give temperatures in Celsius.",
    "From now on, answer in British English.",
    "for the rest of this chat keep it short",
    "Stop adding disclaimers.",
    "Whenever you write SQL, use uppercase keywords.",
    "Could you always include the sources?",
    "I prefer metric units.",
    "Call me Sam.",
    "My wife's name is Ana.",
    "I work at a small bakery in Porto.",
    "Our service runs on Kubernetes in eu-west-1.",
    "I'm allergic to shellfish.",
    "I was born in 1990.",
    "Rule: no answers longer than three paragraphs.",
    "CONSTRAINT K2-BASALT: the budget for the project is 4,000 euros.",
    "FYI I'm in the Pacific time zone.",
])
def test_standing_sentences_are_kept(sentence: str) -> None:
    assert standing(sentence) == [sentence]


@pytest.mark.parametrize(("sentence", "why"), [
    ("Is it always colder before dawn?", "question"),
    ("Would you never use a global variable?", "question"),
    ("Just for this answer, use bullet points.", "one-off"),
    ("This time, keep it short.", "one-off"),
    ("Never mind the Celsius thing.", "retraction"),
    ("Actually, you don't have to keep answers short anymore.", "retraction"),
    ("I used to live in Paris.", "past"),
    ("My grandmother was a teacher.", "past"),
    ("If I were vegetarian, what would I eat?", "hypothetical"),
    ("My friend says you should never trust a cat.", "reported"),
    ("I think it's always better to ask.", "opinion"),
    ("Always look on the bright side of life!", "no rule"),
    ("It always rains in Bergen in autumn.", "no rule"),
    ("I prefer the second option.", "no rule"),
    ("I have a question about taxes.", "no rule"),
    ("My wife is at work right now.", "one-off"),
    ('What does "from now on" mean in legal contracts?', "question"),
])
def test_look_alikes_are_not_kept(sentence: str, why: str) -> None:
    found = verdict(sentence)
    assert not found.standing and found.rule == why
    assert standing(sentence) == []


def test_a_message_gives_its_standing_sentences_verbatim_and_in_order() -> None:
    text = ("Hi! Quick thing before we start: please always give temperatures in Celsius. "
            "What's the weather like in Oslo in March? My wife's name is Ana, by the way.\n"
            "- I'm vegetarian\n- Is it always this cold there?")
    assert standing(text) == [
        "Quick thing before we start: please always give temperatures in Celsius.",
        "My wife's name is Ana, by the way.",
        "I'm vegetarian",
    ]


def test_a_sentence_said_twice_is_kept_once() -> None:
    assert standing("I'm vegan. Really, I'm vegan.\nI'm vegan.") == ["I'm vegan.", "Really, I'm vegan."]


def test_code_quotes_and_abbreviations() -> None:
    text = ("Look at this:\n```python\n# always use tabs\nx = 1\n```\n> From now on, answer in French.\n"
            "    never run this as root\nPlease address me as Dr. Patel in formal letters.")
    assert sentences(text) == ["Look at this:", "Please address me as Dr. Patel in formal letters."]
    assert standing(text) == ["Please address me as Dr. Patel in formal letters."]


def test_a_paste_is_read_only_at_its_ends() -> None:
    pasted = " ".join(f"I work at company number {n}." for n in range(20))
    kept = standing(f"Always answer in French. {pasted} I live in Oslo.")
    assert kept[0] == "Always answer in French." and kept[-1] == "I live in Oslo."
    assert len(kept) == 6  # the first three and the last three sentences, nothing from the middle


def test_long_sentences_and_empty_text_are_not_kept() -> None:
    assert standing("") == [] and standing("   \n\n") == []
    long = "From now on " + " ".join(["please"] * 60) + " answer in French."
    assert verdict(long).rule == "too long"


def _score(positives: list[str], negatives: list[str]) -> tuple[float, float]:
    found = [bool(standing(s)) for s in positives]
    false = [bool(standing(s)) for s in negatives]
    kept = sum(found) + sum(false)
    return (sum(found) / kept if kept else 0.0), sum(found) / len(positives)


ROUNDS_FIXED = [
    ("development", standing_set.split(standing_set.STANDING, holdout=False),
     standing_set.split(standing_set.NOT_STANDING, holdout=False)),
    ("held out", standing_set.split(standing_set.STANDING, holdout=True),
     standing_set.split(standing_set.NOT_STANDING, holdout=True)),
    ("second", list(standing_set.FRESH_STANDING), list(standing_set.FRESH_NOT_STANDING)),
    ("third", list(standing_set.THIRD_STANDING), list(standing_set.THIRD_NOT_STANDING)),
    ("fourth", list(standing_set.FOURTH_STANDING), list(standing_set.FOURTH_NOT_STANDING)),
]


@pytest.mark.parametrize(("name", "positives", "negatives"), ROUNDS_FIXED, ids=[r[0] for r in ROUNDS_FIXED])
def test_the_labelled_rounds_the_rules_were_fixed_for(name: str, positives: list[standing_set.Item],
                                                     negatives: list[standing_set.Item]) -> None:
    """Each sentence of these rounds is classified as labelled, but for the one known miss of the third
    (a pronoun in quotation marks, which the rules never read: 'Please use "they" for me.')."""
    missed = [s for s, _ in positives if not standing(s)]
    kept = [s for s, _ in negatives if standing(s)]
    assert kept == []
    assert missed == (['Please use "they" for me.'] if name == "third" else [])


def test_the_last_round_as_first_measured() -> None:
    """The fifth round was written after the last fix and the rules were not changed after it: its
    figures are what new sentences get (docs/benchmarks.md quotes them); they must not get worse."""
    positives = [s for s, _ in standing_set.FIFTH_STANDING]
    negatives = [s for s, _ in standing_set.FIFTH_NOT_STANDING]
    precision, recall = _score(positives, negatives)
    assert precision >= 0.96 and recall >= 0.86


def test_the_whole_set_meets_the_goal() -> None:
    positives = [s for items in standing_set.ALL_STANDING for s, _ in items]
    negatives = [s for items in standing_set.ALL_NOT_STANDING for s, _ in items]
    assert len(positives) + len(negatives) >= 150
    precision, recall = _score(positives, negatives)
    assert precision >= 0.9 and recall >= 0.9
