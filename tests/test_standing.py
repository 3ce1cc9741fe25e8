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


@pytest.mark.parametrize(("sentence", "rule"), [
    # the user's setup and what it is held to
    ("We're stuck on Python 3.8 at work, so nothing newer than that.", "fact about the user"),
    ("We're stuck with Java 8.", "fact about the user"),
    ("We're using Debian on every server.", "fact about the user"),
    ("We're running Kubernetes 1.27 in production.", "fact about the user"),
    ("I'm not allowed to install software on my work laptop.", "fact about the user"),
    ("At work we use Jira for everything.", "fact about the user"),
    ("In our team we deploy twice a week.", "fact about the user"),
    # a lasting limit
    ("I can't read small text well.", "fact about the user"),
    ("I cannot drive.", "fact about the user"),
    # the rules of a house, a shop, a site
    ("We don't allow third-party cookies on our site.", "fact about the user"),
    ("We only accept card payments.", "fact about the user"),
    ("My landlord doesn't allow pets.", "fact about their world"),
    ("My kids don't eat vegetables.", "fact about their world"),
    ("Our office requires badges.", "fact about their world"),
    # wishes, and how to refer to the user
    ('I\'d appreciate it if you never used the word "simply".', "asked of the assistant"),
    ("I'd appreciate it if you didn't use emoji.", "asked of the assistant"),
    ("I like it when you keep answers short.", "asked of the assistant"),
    ('Please use "they" for me.', "what to call the user"),
    ("Use my first name when you write to me.", "what to call the user"),
])
def test_the_second_pass_rules_keep(sentence: str, rule: str) -> None:
    found = verdict(sentence)
    assert found.standing and found.rule == rule


@pytest.mark.parametrize("sentence", [
    "I'm stuck on this bug.", "I'm stuck on the last step.", "We're stuck in traffic.",
    "I'm using the code you gave me.", "I'm running late.", "I'm running a marathon on Sunday.",
    "I can't see the image.", "I can't hear you.", "I can't open it.", "I can't remember.",
    "I can't understand why it fails.", "I can't access the site right now.",
    "My code doesn't work.", "My laptop won't start.", "My phone doesn't charge.", "My boss doesn't like it.",
    "Her landlord doesn't allow pets.", "Does my landlord allow pets?",
    "At work we used Jira until last year.", "At work I had a meeting.",
    "I'd appreciate it if you could explain this.",
    "I'd appreciate it if you looked at my code.", "Write a poem for me.", "Please use a table for this.",
    "Stop asking.", "We ban that word in this essay.",
])
def test_the_second_pass_rules_refuse(sentence: str) -> None:
    assert not verdict(sentence).standing


@pytest.mark.parametrize(("sentence", "rule"), [
    # a rule without a verb: "X only", "<answers, prices, code ...> in / as / with / without X"
    ("Metric units only, please.", "terse rule"),
    ("Vegetarian recipes only.", "terse rule"),
    ("Prices in pounds sterling, please.", "terse rule"),
    ("Code without comments, please.", "terse rule"),
    # "keep X <how>": a manner, whatever the word for it
    ("Please keep the humour to a minimum.", "manner"),
    ("Whatever you suggest, keep it vegetarian-friendly.", "manner"),
    ("Keep suggestions within walking distance of Shoreditch, that's where I live.", "manner"),
    ("Keep the tone neutral.", "manner"),
    # "X, never Y": one kind over another
    ("Answer me in plain text, never Markdown.", "preference"),
    # what others call the user
    ("Everyone calls me Jo, and so should you.", "what to call the user"),
    ("My friends call me Bea.", "what to call the user"),
    # what the user's organisation, people and things do as a rule
    ("My company blocks YouTube.", "fact about their world"),
    ("Our team writes everything in Go.", "fact about their world"),
    ("Our company pays for lunch.", "fact about their world"),
    ("Our office is closed on Fridays.", "fact about their world"),
    ("My gym is closed on Sundays.", "fact about their world"),
    ("Our Wi-Fi is really unreliable out here, so prefer offline solutions.", "fact about their world"),
    ("Production at my job runs on Ubuntu 20.04.", "fact about their world"),
    ("The house we rent has a gas stove.", "fact about their world"),
    ("English isn't my first language, so simple words help.", "fact about their world"),
    ("I'm on a low-sodium diet.", "fact about the user"),
    ("I'm on insulin.", "fact about the user"),
])
def test_the_third_pass_rules_keep(sentence: str, rule: str) -> None:
    found = verdict(sentence)
    assert found.standing and found.rule == rule


@pytest.mark.parametrize("sentence", [
    # a verbless clause with a subject, a verb or a one-off word is not a terse rule
    "One question only.", "Prices in Tokyo are crazy.", "This one only.", "Answers in this thread, please.",
    # keep without a manner, or about what is on the table
    "Keep the change.", "Keep it up!", "Keep this explanation brief.", "Keep it brief in your next reply.",
    "Keep them short this time.",
    # what is on the table: "the X you gave / you're drafting"
    "I prefer the Django option you gave.", "I prefer the option you gave.", "I prefer the second one.",
    "Don't use Markdown in the email you're drafting.", "Don't use tables in the report you're writing.",
    # others calling, writing; a state of the moment
    "My brother calls me every day.", "Everyone calls me back eventually.", "She writes that she's fine.",
    "My brother wrote me a letter.", "Our build is failing again.", "Our shop is closed today.",
    "My gym is closed.", "I'm on a diet today.", "Our Wi-Fi is down out here.",
    "Thanks, never mind.", "Her company blocks YouTube.",
])
def test_the_third_pass_rules_refuse(sentence: str) -> None:
    assert not verdict(sentence).standing


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
    """Each sentence of these rounds is classified as labelled."""
    missed = [s for s, _ in positives if not standing(s)]
    kept = [s for s, _ in negatives if standing(s)]
    assert kept == []
    assert missed == []


def test_the_fifth_round_the_second_pass_was_fixed_for() -> None:
    """The fifth round's misses (0.963 / 0.867 as first measured) were fixed by general rules."""
    missed = [s for s, _ in standing_set.FIFTH_STANDING if not standing(s)]
    kept = [s for s, _ in standing_set.FIFTH_NOT_STANDING if standing(s)]
    assert missed == [] and kept == []


def test_the_sixth_round_the_third_pass_was_fixed_for() -> None:
    """The sixth round (0.900 / 0.545 as first measured) was fixed in issue 20's third pass by general
    rules: terse rules, "keep X <how>", "X, never Y", what others call the user, what the user's
    organisation does as a rule, what recurs, the thing on the table ("the option you gave")."""
    missed = [s for s, _ in standing_set.SIXTH_STANDING if not standing(s)]
    kept = [s for s, _ in standing_set.SIXTH_NOT_STANDING if standing(s)]
    assert missed == [] and kept == []


def test_the_seventh_round_the_fourth_pass_was_fixed_for() -> None:
    """The seventh round (0.917 / 0.595 as first measured) was fixed in issue 20's fourth pass by general
    rules: conditions ("unless I ask", "when in doubt"), terse rules ("no emojis, ever", "only open-source
    tools", "answers under 80 words"), a trait in one word ("I'm teetotal"), the user's things named with
    "the" ("the work laptop"), limits at their place ("port 22 is blocked at my office"), a rule for any
    case ("sources for any health claims"), and others' things and preferences ("my friend's laptop")."""
    missed = [s for s, _ in standing_set.SEVENTH_STANDING if not standing(s)]
    kept = [s for s, _ in standing_set.SEVENTH_NOT_STANDING if standing(s)]
    assert missed == [] and kept == []


def test_the_eighth_round_the_fifth_pass_was_fixed_for() -> None:
    """The eighth round (written blind: 0.848 / 0.622 first, 0.909 / 0.667 after the fourth pass) was
    fixed in the fifth pass by general rules: a frame for every time ("when you write dates, use ..."),
    "whatever you suggest has to ...", defaults and conventions ("default to ...", "use 24-hour time"),
    a trait after modifiers or before "and", "'s" read as "is", "and" before a subject of its own, a fact
    given as the reason for a question, and look-alikes ("the never type", "how to always", "of those
    three, I like ...")."""
    missed = [s for s, _ in standing_set.EIGHTH_STANDING if not standing(s)]
    kept = [s for s, _ in standing_set.EIGHTH_NOT_STANDING if standing(s)]
    assert missed == [] and kept == []


def test_the_ninth_round_the_sixth_pass_was_fixed_for() -> None:
    """The ninth round (written blind: 0.972 / 0.778 first, 0.974 / 0.844 after the fifth pass) was fixed
    in the sixth pass by general rules: "'s" before a participle or a state ("our game's built in ...",
    "my shop's open ..."), day ranges recur ("tues to sat"), contractions typed without the apostrophe
    ("i dont drink"), more verbs of how the user lives ("we bank with", "we grow"), an imperative with a
    condition of the user's ("unless I start joking"), a fact followed by ", so <question>", and the
    preferences of the user's people's people ("my daughter's teacher prefers ...")."""
    missed = [s for s, _ in standing_set.NINTH_STANDING if not standing(s)]
    kept = [s for s, _ in standing_set.NINTH_NOT_STANDING if standing(s)]
    assert missed == [] and kept == []


def test_the_tenth_round_the_seventh_pass_was_fixed_for() -> None:
    """The tenth round (written blind: 0.974 / 0.740 first, 0.975 / 0.780 after the sixth pass) was fixed
    in the seventh pass: "me and my wife" read as "we", a thing of the user's held to a version ("still
    stuck on Kubernetes 1.27"), "the laptop at home", "python on the server is 3.8", any verb of a thing
    of the user's before what recurs or a quantity ("our band rehearses every thursday", "our restaurant
    seats 40"), "we're closed on Mondays", "the piano I've got at home is ...", "ignore my typos", a
    terse rule with its "every time", "so" without a comma, "tabs, not spaces, in any code", and more
    of the user's people ("my supervisor prefers ...")."""
    missed = [s for s, _ in standing_set.TENTH_STANDING if not standing(s)]
    kept = [s for s, _ in standing_set.TENTH_NOT_STANDING if standing(s)]
    assert missed == [] and kept == []


def test_the_eleventh_round_the_eighth_pass_was_fixed_for() -> None:
    """The eleventh round (written blind: 0.923 / 0.720 first, 0.900 / 0.720 after the seventh pass) was
    fixed in the eighth pass: a project of months ("I'm writing my master's thesis"), what the user's
    place lacks ("there's no dishwasher in our flat"), a rule with its lasting reason ("..., I get lost
    otherwise"), "when I type X I want ...", the user's level ("I'm roughly B1 in Spanish"), a relative
    clause about the user's people inside a question ("my son, who's autistic"), "the kids are 4 and 9",
    "I should mention ...", "budget-wise", "be blunt about my writing", and facts of the user's friends,
    colleagues and neighbours refused as theirs."""
    missed = [s for s, _ in standing_set.ELEVENTH_STANDING if not standing(s)]
    kept = [s for s, _ in standing_set.ELEVENTH_NOT_STANDING if standing(s)]
    assert missed == [] and kept == []


def test_the_last_round_as_measured() -> None:
    """The twelfth round was written blind and committed before the eighth pass changed any rule; it was
    measured once before and once after that pass, 0.927 / 0.760 both times (the pass, written for the
    eleventh round only, did not carry over): what new sentences get (docs/benchmarks.md quotes it).
    It must not get worse."""
    positives = [s for s, _ in standing_set.TWELFTH_STANDING]
    negatives = [s for s, _ in standing_set.TWELFTH_NOT_STANDING]
    precision, recall = _score(positives, negatives)
    assert precision >= 0.926 and recall >= 0.759


@pytest.mark.parametrize("sentence", [
    "I guess I should mention I'm a complete beginner at Python.",
    "Me and my partner are both vegetarian.",
    "Whenever you correct my Spanish, put the fixed sentence in bold.",
    "I'm writing my master's thesis in sociology.",
    "There's no dishwasher in our flat.",
    "Please use short numbered steps, I get lost otherwise.",
    "I freelance as a brand designer.",
    "Budget-wise we've got about 600 a month for groceries.",
    "When I type 'tl;dr' I want a one-line summary, nothing else.",
    "Use British spelling in anything you draft for me.",
    "Be blunt about my writing.",
    "I'm roughly B1 in Spanish.",
    "What's a quick lunch for my son, who's autistic and only eats beige food?",
    "The kids are 4, 9 and 13.",
])
def test_the_eighth_pass_rules_keep(sentence: str) -> None:
    assert standing(sentence) == [sentence]


@pytest.mark.parametrize(("sentence", "kept"), [
    ("Since I'm vegan, what could I make for dinner tonight?", "I'm vegan"),
    ("Anyway, given that I'm on an M2 MacBook, what's the easiest way to install this?",
     "I'm on an M2 MacBook"),
    ("I'm red-green colorblind, so how would I tell these two wires apart?", "I'm red-green colorblind"),
    ("Python on the server is 3.8 and can't be upgraded, so how do I write this without a match statement?",
     "Python on the server is 3.8 and can't be upgraded"),
    # the rest stands too, or cannot be cut out: the whole sentence
    ("We're stuck on Python 3.8 at work, so nothing newer than that.",
     "We're stuck on Python 3.8 at work, so nothing newer than that."),
    ("I'm saving for a house deposit so groceries have to stay under $80 a week.",
     "I'm saving for a house deposit so groceries have to stay under $80 a week."),
])
def test_a_fact_given_as_the_reason_for_a_question_is_kept_without_it(sentence: str, kept: str) -> None:
    """The note is resent with every request: the question of the moment it came with is not."""
    assert standing(sentence) == [kept]
    assert kept in sentence  # the user's own words, as typed


@pytest.mark.parametrize("sentence", [
    "My friend is type 2 diabetic and wants a dessert recipe.",
    "My colleague uses Postgres 16 at her company and loves it.",
    "My partner hates emojis in texts.",
    "I'm writing an email to my landlord.",
    "There's no milk in the fridge.",
    "I guess it's fine.",
    "When I get home I want to sleep.",
    "What's a quick lunch for my son, who was ill last week?",
    "The kids are asleep right now.",
])
def test_the_eighth_pass_rules_refuse_their_look_alikes(sentence: str) -> None:
    assert standing(sentence) == []


@pytest.mark.parametrize("sentence", [
    "me and my wife have two kids, 4 and 7",
    "The laptop at home only has 8 GB of RAM.",
    "our band rehearses every thursday night",
    "Our restaurant seats 40 and we're closed on Mondays.",
    "Ignore my typos, just work out what I meant.",
    "Sources in APA 7th, every time.",
    "Tabs, not spaces, in any code you write for me.",
    "I'm saving for a house deposit so groceries have to stay under $80 a week.",
])
def test_the_seventh_pass_rules_keep(sentence: str) -> None:
    assert standing(sentence) == [sentence]


@pytest.mark.parametrize("sentence", [
    "My supervisor prefers Harvard referencing.",
    "My brother calls me every day.",
    "Our office is so cold today.",
    "Ignore the last message.",
    "The laptop at the shop has 8 GB.",
    "We're closed today.",
])
def test_the_seventh_pass_rules_refuse_their_look_alikes(sentence: str) -> None:
    assert standing(sentence) == []


@pytest.mark.parametrize("sentence", [
    "my shop's open tues to sat, closed sun and mon",
    "Our game's built in Godot 4 with C#, not GDScript.",
    "Keep a formal tone with me unless I start joking around.",
    "We bank with Monzo.",
    "We grow wheat on about 300 acres.",
    "i dont drink alcohol",
    "im vegan",
])
def test_the_sixth_pass_rules_keep(sentence: str) -> None:
    assert standing(sentence) == [sentence]


@pytest.mark.parametrize("sentence", [
    "My daughter's teacher prefers homework to be handwritten.",
    "The shop's open till 6 today.",
    "I'm tired, so how long will this take?",
    "Keep going unless I'm wrong.",
    "We grew tomatoes last summer.",
    "dont worry about it",
    "I'll be there tues to sat.",
])
def test_the_sixth_pass_rules_refuse_their_look_alikes(sentence: str) -> None:
    assert standing(sentence) == []


@pytest.mark.parametrize("sentence", [
    "When you write dates, use YYYY-MM-DD.",
    "whenever i paste a stack trace just tell me the likely cause first",
    "Whatever you suggest has to work fully offline.",
    "Please default to Python 3.12 syntax.",
    "Use 24-hour time, thanks.",
    "Never echo my API keys back in full.",
    "Stop recommending Docker, we can't use it here.",
    "I'm type 1 diabetic.",
    "I'm Muslim and don't drink alcohol.",
    "My laptop's a 2019 ThinkPad.",
    "I'm on a fixed income.",
    "our prod database is MySQL 5.7 and we're not allowed to upgrade it",
])
def test_the_fifth_pass_rules_keep(sentence: str) -> None:
    assert standing(sentence) == [sentence]


@pytest.mark.parametrize("sentence", [
    "Whenever I run it, it crashes.",
    "When I get home I'll call you.",
    "Use the same format as before.",
    "Explain how the never type works in TypeScript.",
    "Show me how to always run a script at startup.",
    "Of those three names, I like Bramble best.",
    "I'm so tired and hungry.",
    "I'm in a meeting.",
    "Since I was a kid, what has changed in schools?",
    "Because I'm tired, can you keep this one short?",
    "I sent it back in March.",
    "Stop here.",
])
def test_the_fifth_pass_rules_refuse_their_look_alikes(sentence: str) -> None:
    assert standing(sentence) == []


@pytest.mark.parametrize("sentence", [
    "Code in Rust unless I ask for something else.",
    "When in doubt, ask me first.",
    "No emojis, ever.",
    "Celsius, always.",
    "Only open-source tools, please.",
    "Answers under 80 words, please.",
    "No small talk, just answers.",
    "Keep the tone warm but professional.",
    "Give me sources for any health claims.",
    "Add tests for every function you write.",
    "I'm teetotal.",
    "We're Canadian.",
    "The work laptop has only 16 GB of memory.",
    "The kids' bedtime is 7:30.",
    "Port 22 is blocked at my office.",
])
def test_the_fourth_pass_rules_keep(sentence: str) -> None:
    assert standing(sentence) == [sentence]


@pytest.mark.parametrize("sentence", [
    "No worries, ever so kind of you.",
    "No problem.",
    "Only if you have time.",
    "Thanks, always.",
    "Keep the tone of this email warm but professional.",
    "List all the files in the folder.",
    "I'm tired.",
    "I'm confused.",
    "I'm back.",
    "I'm stuck.",
    "I'm exhausted.",
    "The recipe says to rest the dough.",
    "The laptop has 16 GB of memory.",
    "Port 22 is blocked.",
    "My friend's laptop has 8 GB and it's fine.",
    "My sister prefers everything in metric.",
    "He claims it always works.",
])
def test_the_fourth_pass_rules_refuse_their_look_alikes(sentence: str) -> None:
    assert standing(sentence) == []


def test_the_whole_set_meets_the_goal() -> None:
    positives = [s for items in standing_set.ALL_STANDING for s, _ in items]
    negatives = [s for items in standing_set.ALL_NOT_STANDING for s, _ in items]
    assert len(positives) + len(negatives) >= 150
    precision, recall = _score(positives, negatives)
    assert precision >= 0.9 and recall >= 0.9


def test_a_rules_first_words_never_rule_out_a_match() -> None:
    """A rule anchored at a clause's start names the words it can begin with, to skip (and not compile)
    its regex otherwise: on every clause of the labelled set and every tail of one (rules are asked
    about what follows "remember that", "I'd like you to" ...), the answer is the regex's own."""
    from stateless_chat.core import standing as module

    gated = [v for v in vars(module).values() if isinstance(v, module._Lazy) and v.first is not None]
    assert len(gated) >= 20
    texts = [s for _, positives, negatives in standing_set.ROUNDS for s, _ in (*positives, *negatives)]
    clauses: set[str] = set()
    for text in texts:
        for clause in module._clauses(module._normal(text)):
            words = clause.split()
            clauses.update(" ".join(words[i:]) for i in range(len(words)))
    for rule in gated:
        wrong = [c for c in clauses if bool(rule.search(c)) != bool(rule.compiled().search(c))]
        assert wrong == [], rule.source[:60]
