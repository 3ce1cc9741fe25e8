"""Which sentences of a user message are standing: requirements meant to last, and facts about the user.

``standing(text)`` returns the user's own sentences, verbatim, that the conversation must keep
however long it grows: standing requirements ("from now on ...", "always ...", "please stop ...",
"I prefer ...") and facts the user states about themselves and their world ("my wife's name is
...", "I work at ...", "our service runs on ..."). No model and nothing downloaded: documented
rules over the words of each sentence, some microseconds a message (``bench/run.py --only
standing`` measures it, and its precision and recall on a labelled set, ``bench/standing_set.py``).

Precision matters as much as recall, so a sentence is first refused when it is
- a question ("is it always colder before dawn?"), unless it politely asks for a rule from now on
  ("could you always include the sources?"; "would you never ...?" asks for an opinion);
- a one-off request ("just for this answer ...", "this time ...", "for now ...", "the next reply",
  "your next answer"), about the moment ("today", "right now", "at the moment", "in ten minutes"),
  or about what is on the table ("in the email you're drafting", "the option you gave");
- a retraction ("never mind ...", "forget what I said ...", "you don't have to ... anymore");
- about the past ("I used to ...", "last year ...", "when I was ...", a verb in the past tense
  after I, we, my ... or our ...; "I was born in ..." is the one past that stands);
- a hypothetical ("if I were ...", "suppose ...", "imagine ...", "what if ...");
- reported speech ("my friend says you should never ...", "she writes that ...": "our team writes
  everything in Go" is not reported) or an opinion ("I think ...");
  words in quotation marks are a mention, never a use: they are read as one placeholder word.

Then it is standing when one of these holds:
- *labelled*: it opens with a label such as "Rule:", "Requirement:", "Constraint K1:", "Note:";
- *from now on*: a marker of time to come ("from now on", "going forward", "for the rest of the
  chat", "until further notice", "throughout", "by default");
- *always / never, addressed to the answers*: an imperative ("always use ...", "never mention
  ...", "don't ever ...", "stop adding ...", "no more ...", "make sure you always ...", "you
  should always ...") or a rule for every answer ("every reply should ...", "whenever you write
  SQL, ...", "format all dates as ..."), with a verb that shapes an answer (use, give, write,
  mention, assume ...), so that "always look on the bright side" is not one;
- *a rule for every one of a kind*: "every function must have a docstring", "all code should ...";
- *a prohibition, a manner, a choice of kind*: "please don't use the Oxford comma", "no tables please",
  "stick to plain English", "keep using ...", "be blunt with me", "use kilometres, not miles",
  "answer in plain text, never Markdown"; "keep X <how>": "keep the humour to a minimum", "keep it
  vegetarian-friendly", "keep suggestions within walking distance" (not "keep this one brief");
- *a rule without a verb*: "X only" ("metric units only"), or answers, prices, code ... "in / as /
  with / without X" ("prices in pounds sterling", "code without comments"), when the clause has no
  subject or verb of its own ("prices in Tokyo are crazy" is not one);
- *a preference*: "I prefer / I'd rather / I like / I hate / I don't like" something in general
  (not "I prefer the second option", "I like your idea", "I love this answer");
- *a wish addressed to the assistant*: "I'd like you to ...", "I'd appreciate it if you never used ..."
  (the past of a wish read as the verb it stands for);
- *what to call the user*: "call me Sam", "address me as ...", "my name is ...", 'use "they" for me',
  "everyone calls me Jo" (not "my brother calls me every day");
- *a fact about the user*: "I'm allergic / vegetarian / left-handed / 34 years old / based in ...",
  "I'm a nurse", "I work at / live in / teach / speak / drive / own ...", "I usually / never ...",
  "I have two cats" (not "a question", "a meeting"), "I can't eat ...", "I don't drink ...";
- *the user's setup and its limits*: "we're stuck on Python 3.8", "I'm limited to ...", "we're using /
  running X", "I'm not allowed to install ...", "we're on X" (not "stuck on this bug", "using the
  code you gave me", "running late"); a lasting inability, "I can't read small text" (not "I can't
  see the image", "I can't hear you"); house rules, "we don't allow ...", "we only accept ...";
  a setting first is read past: "at work we use Jira", "in our team we ...";
- *a fact about their world*: "my X / our X is, has, runs, uses, lives, works, allows, requires,
  blocks, writes, pays, follows, doesn't ..." (not when it is broken, busy, doing something right
  now, or points at what is on the table: "my boss doesn't like it"; what recurs is how things are:
  "our office is closed on Fridays"), "we use / run / deploy / sell / are a ...", "English isn't my
  first language", "the company I work for is ...", "the house we rent has ...", "production at my
  job runs on ..." (read as "my production runs on ...");
- *asked to keep*: "remember that ...", "keep in mind ...", "for context, ...", "FYI ...",
  followed by something about the user or an instruction.

A bare "stop asking." reacts to the reply at hand; a rule says what to stop ("stop adding disclaimers").

Contractions are spelled out first ("I've got" reads as "I have got"). Only typed messages are read
(not files), without fenced code, indented code or quoted ``>`` lines; in a long
message (a paste) only its first and last sentences are, since pasted text is someone else's words.
Pure functions of the text: nothing here knows of conversations.

Each regex is compiled the first time a rule needs it, and a rule anchored at the start of a clause
names the words it can begin with, so that a clause beginning otherwise costs a set lookup: the first
message of a run compiles only the rules its clauses could meet (a few ms, not all ~50 regexes).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

MAX_WORDS = 45  # a longer sentence is not a short statement to keep verbatim
MAX_SENTENCES = 12  # past this many, a message is taken for a paste: only its ends are read
ENDS_READ = 3  # sentences read at each end of a paste


def _words(text: str) -> str:
    """Return a regex group matching any of the phrases in ``text`` (``|``-separated, words separated by
    spaces, each word a regex fragment), as a trie: phrases that begin alike share their first words,
    so that a search tries a few words at each position, not every phrase (ten times faster here)."""
    trie: dict[str, dict] = {}  # type: ignore[type-arg]
    for item in text.split("|"):
        node = trie
        for word in item.split():
            node = node.setdefault(word, {})
        if node is not trie:
            node[""] = {}  # a phrase ends here

    def group(node: dict[str, dict]) -> str:  # type: ignore[type-arg]
        branches = []
        for word, child in node.items():
            if not word:
                continue
            if any(child.keys() - {""}):
                branches.append(f"{word}(?:\\s+{group(child)}){'?' if '' in child else ''}")
            else:
                branches.append(word)
        return "(?:" + "|".join(branches) + ")"

    return group(trie)


_HEAD = re.compile(r"[a-z]+")


@functools.lru_cache(maxsize=1024)
def _head(text: str) -> str:
    """Return the leading letters of ``text``: its first word up to a hyphen or an apostrophe ("double"
    of "double-check", "don" of "don't", "round" of "round's"), for a rule and for the text alike."""
    match = _HEAD.match(text)
    return match.group(0) if match else ""


class _Lazy:
    """A rule's regex, compiled the first time it is used: a message is asked about by a few rules
    before most are ruled out, and compiling all of them at import cost a one-shot run tens of ms.

    A rule anchored at the start of a clause may name the words it can begin with (``first``): then
    a clause that begins otherwise is ruled out by a set lookup, and the regex is neither searched
    nor, if no clause ever begins that way, compiled (most messages begin few of the ways)."""

    __slots__ = ("_compiled", "first", "source")

    def __init__(self, source: str, first: Iterable[str] | None = None) -> None:
        self.source = source
        self.first = None if first is None else frozenset(_head(word) for word in first)
        self._compiled: re.Pattern[str] | None = None

    def compiled(self) -> re.Pattern[str]:
        if self._compiled is None:
            self._compiled = re.compile(self.source)
        return self._compiled

    def _ruled_out(self, text: str) -> bool:
        return self.first is not None and _head(text) not in self.first

    def search(self, text: str) -> re.Match[str] | None:
        return None if self._ruled_out(text) else self.compiled().search(text)

    def fullmatch(self, text: str) -> re.Match[str] | None:
        return None if self._ruled_out(text) else self.compiled().fullmatch(text)

    def findall(self, text: str) -> list[Any]:
        return [] if self._ruled_out(text) else self.compiled().findall(text)

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        return iter(()) if self._ruled_out(text) else self.compiled().finditer(text)

    def sub(self, replacement: str | Callable[[re.Match[str]], str], text: str, count: int = 0) -> str:
        return text if self._ruled_out(text) else self.compiled().sub(replacement, text, count)


def _rx(pattern: str, first: str | Iterable[str] | None = None) -> _Lazy:
    """Return ``pattern``, compiled when first used: the text it searches is lower case already
    (``_normal``). ``first``: the words a match must begin with, when it is anchored (``^``) and
    every branch begins with one of them (a string: the words separated by spaces)."""
    return _Lazy(pattern, first.split() if isinstance(first, str) else first)


def _starts(text: str) -> set[str]:
    """Return the words the phrases of a ``_words`` list begin with ("takes?" gives take and takes)."""
    firsts = {item.split()[0] for item in text.split("|") if item.strip()}
    return {word.rstrip("?") for word in firsts} | {word.replace("?", "") for word in firsts}


_WORD = re.compile(r"[a-z0-9'-]+")


@functools.lru_cache(maxsize=256)
def _tokens(text: str) -> frozenset[str]:
    """Return the words of ``text`` (a sentence or clause is asked about by many rules in a row)."""
    return frozenset(_WORD.findall(text))


class _Gated:
    """A regex searched only when the text has one of the words a match must begin with: Python's
    regex engine tries a long alternation at every position of the text, a set lookup is one step."""

    def __init__(self, pattern: str, gate: Iterable[str]) -> None:
        self.pattern = _Lazy(pattern)
        self.gate = frozenset(gate)

    def search(self, text: str) -> re.Match[str] | None:
        if self.gate.isdisjoint(_tokens(text)):
            return None
        return self.pattern.search(text)


# ---- splitting ---------------------------------------------------------------------------

_FENCE = _Lazy(r"(?ms)^ {0,3}(```|~~~).*?(^ {0,3}\1[^\n]*$|\Z)")
_ABBREVIATIONS = ("dr", "mr", "mrs", "ms", "prof", "st", "vs", "etc", "e.g", "i.e", "no", "approx", "fig",
                  "jr", "sr", "mt", "inc", "ltd", "co", "ca")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+(?=\S)")
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d{1,2}[.)])\s+")


def sentences(text: str) -> list[str]:
    """Return the sentences of ``text`` as typed (outer spaces trimmed): one per line at least, split
    after ``.``, ``!``, ``?`` and ``…``, without fenced code, ``>`` quotes, indented code and bullet marks;
    only the first and last ``ENDS_READ`` of a message longer than ``MAX_SENTENCES`` (a paste)."""
    found: list[str] = []
    if "```" in text or "~~~" in text:
        text = _FENCE.sub("\n", text)
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(">") or line.startswith(("    ", "\t")):
            continue
        line = _BULLET.sub("", line).strip()
        start = 0
        for match in _SENTENCE_END.finditer(line):
            before = line[start:match.start()].rstrip("\"'”’)]")
            last = before.rsplit(None, 1)[-1].lower().rstrip(".") if before.split() else ""
            if before.endswith(".") and (last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())):
                continue  # "Dr. Patel", "e.g. this", "J. Smith": not the end of a sentence
            found.append(line[start:match.end()].strip())
            start = match.end()
        if line[start:].strip():
            found.append(line[start:].strip())
    if len(found) > MAX_SENTENCES:
        return found[:ENDS_READ] + found[-ENDS_READ:]
    return found


# ---- the word lists ----------------------------------------------------------------------

# Verbs that shape an answer: what "always" or "never" must govern to be a rule for the answers.
_ANSWER_VERB_LIST = """use | using | give | show | write | answer | reply | respond | include | add | put
    | keep | format | spell | cite | mention | assume | avoid | explain | start | begin | end | finish | list
    | say | call | address | suggest | suggesting | recommend | recommending | provide | convert | round
    | express | quote | translate | sign | structure | label | number | wrap | summarize | summarise
    | ask | check | double-check | stick | talk | speak | make | skip | leave | omit | default | prefer
    | switch | tell | refer | measure | show | link | reference | capitalize | capitalise | indent | comment
    | name | return | test | run | lead | open | close | respect | treat | consider | remind | warn
    | flag | mark | note | bold | highlight | print | log | sort | state | offer | go | stay | do | echo
    | mask | repeat | reveal | display | expose | redact | hide"""
_ANSWER_VERBS = _words(_ANSWER_VERB_LIST)
_ANSWER_VERB_SET = frozenset(item.strip() for item in _ANSWER_VERB_LIST.split("|")) | {"stop", "quit"}
_QUESTION_START = _rx(r"^(?:(?:is|are|was|were|do|does|did|can|could|would|will|should|shall|may|might|must"
                      r"|have|has|had|am)\s+(?:i|you|we|it|they|he|she|there|this|that|my|our|your|the|a|an"
                      r"|people|anyone|someone)\b|(?:what|why|how|where|who|whom|whose|which)\b"
                      r"|when\s+(?:is|are|was|were|do|does|did|can|could|would|will|should|shall|may"
                      r"|might)\b)",
                      first="is are was were do does did can could would will should shall may might must "
                            "have has had am what why how where who whom whose which when")
# "could you always include ...": a question that asks for a standing rule.
_POLITE_REQUEST = _rx(r"^(?:please\s+)?(?:can|could|would|will)\s+you\s+(?:please\s+)?",
                      first="please can could would will")
_HYPOTHETICAL = _rx(r"^(?:if|suppose|supposing|imagine|assuming|assume\s+that|pretend\s+that|what\s+if"
                    r"|let'?s\s+say|let\s+us\s+say|say\s+that|in\s+case|hypothetically)\b",
                    first="if suppose supposing imagine assuming assume pretend what let let's lets say in "
                          "hypothetically")
_RETRACTION_WORDS = """never mind | nevermind | forget what | forget about | forget that
    | forget the | forget my | forget it | scratch that | disregard | take back | take that back
    | takes? it back | cancel the | cancel that | cancel my | no need to | no longer need
    | not necessary anymore
    | you can stop | you may stop | feel free to stop | drop the rule | drop the requirement
    | drop that rule | undo that | that no longer applies | no longer applies | doesn't apply anymore
    | does not apply anymore"""
_RETRACTION = _Gated(r"\b(?:" + _words(_RETRACTION_WORDS) + r")\b"
    r"|\b(?:you\s+)?(?:don'?t|do\s+not)\s+(?:have|need)\s+to\b[^.!?]*\b(?:any\s?more|now|after\s+all)\b"
    r"|^(?:please\s+)?ignore\s+(?:the|my|what|that|your|all|those|these)\s+(?:\w+\s+){0,2}(?:rule|rules"
    r"|instruction|instructions|request|requests|requirement|requirements|preference"
    r"|preferences|said|earlier|previous|last|above)\b",
    _starts(_RETRACTION_WORDS) | {"you", "do", "ignore", "please"})
_ONE_OFF_WORDS = """just for this | only for this | for this one | for this answer | for this reply
    | for this response | for this question | for this message | for this time | this time | this once
    | just this once | only this once | this one | for now | right now | for the moment | at the moment
    | at the minute | for the next | in the next | the next answer | the next reply | the next response
    | the next one | the next snippet | the next message | the next question | next time only
    | the above
    | that last | this last | today | tonight | tomorrow | this morning | this afternoon | this evening
    | this week | this weekend | later today | instead | for a change | once more | one more time
    | in a minute | in a moment | in a bit | in an hour | as an exception"""
_ONE_OFF = _Gated(r"\b(?:" + _words(_ONE_OFF_WORDS) + r")\b"
    r"|\b(?:in|for|on|with)\s+(?:this|that|these|those)\s+(?!chat\b|conversation\b|thread\b|session\b"
    r"|project\b|repo\b|repository\b|codebase\b|team\b|company\b)[\w-]+|\bin\s+(?:a\s+few|\d+|two|three"
    r"|five|ten|fifteen|twenty|thirty)\s+(?:minutes?|hours?|seconds?)\b"
    r"|(?<!\bit\s)(?<!\bthem\s)\bhere\s*[.!]*$|\byour\s+next\s+(?:answer|reply|response|message|one|snippet"
    r"|paragraph|email|draft|version|example|attempt)\b|\b(?:in|for|on|with|to|from|of"
    r"|into)\s+the\s+(?:[\w-]+\s+){1,3}(?:(?:that|which)\s+)?(?:you|we)\s+(?:are\s+|were\s+"
    r"|just\s+)?(?:\w+ing|gave|wrote|made|sent|suggested|showed|proposed|drafted"
    r"|started|mentioned|posted|shared)\b",
    _starts(_ONE_OFF_WORDS) | {"in", "for", "on", "with", "here", "to", "from", "of", "into", "your"})
_PAST_WORDS = """used to | use to | when i was | when we were | back then | back when | back in the day
    | back in school | back in college | back in uni | back in high school | back in my | back in our
    | back in those | back in the old
    | last year | last month | last week | last summer | last winter | last spring | last autumn | last fall
    | last night | last time | yesterday | years ago | months ago | weeks ago | days ago | a while ago
    | long ago | in my previous | in my old | in my last | in my former | at my old | at my previous
    | at my last | at my former | my old | my former | my previous | my late | our old | our former
    | our previous | until recently | before this | as a kid | as a child | growing up | at school
    | in school | in college | at university | at uni"""
_PAST = _Gated(r"\b(?:" + _words(_PAST_WORDS) + r")\b"
    r"|\buntil\s+(?:19|20)\d\d\b|\bback\s+in\s+(?:(?:19|20)\d\d|the\s+(?:\d0|\d{4})s|january|february|march"
    r"|april|may|june|july|august|september|october|november|december|spring|summer|autumn|fall|winter)\b"
    r"|\b(?:should|could|would|might|must)(?:\s+not)?(?:\s+never)?\s+have\s+(?:been|had|done|gone|made|said"
    r"|seen"
    r"|known|taken|given|got|gotten|told|thought|written|brought|bought|\w+ed)\b",
    _starts(_PAST_WORDS) | {"until", "should", "could", "would", "might", "must"})
_PAST_VERBS = frozenset("""was were had did went took ate ran drove said told made got saw thought knew came
    wrote bought left grew spent met gave found felt kept began became taught sold built brought caught
    chose forgot heard held lost meant paid sat slept spoke stood understood won wore broke fell flew
    drank rode sang swam threw woke hated loved liked preferred wanted tried lived worked moved used
    studied stayed played owned wished hoped planned visited started finished decided asked
    always-was""".split())
_NOT_PAST_ED = frozenset("need needed feed seed speed bleed breed proceed succeed exceed embed shed shred "
                         "bed red wed indeed".split())
_REPORTED = _Gated(r"\b(?:he|she|they|it|who|someone|somebody|everyone|everybody|people)\s+claims?\b"
                   r"|\bclaims?\s+(?:that|to|it|he|she|they|there|you|we|i)\b|\b(?:says|said|say\s+that"
                   r"|tells\s+me|told\s+me|told\s+us|claimed|according\s+to|thinks|heard\s+that|read\s+that"
                   r"|swears)\b|\b(?:wrote|writes)\s+(?:that|x|me|to\s+me|back|somewhere|in\s+(?:his|her"
                   r"|their)"
                   r"|on\s+(?:his|her|their))\b|\b(?:wrote|writes)\s*[:.!]*$",
                   "says said say tells told claim claims claimed wrote writes according thinks heard read "
                   "swears".split())
# "of those three names, I like ...": a choice among what is on the table.
_OF_THOSE = _rx(r"^of\s+(?:those|these|the|them|all|your)\b", first="of")
# "since I'm vegan, what could I make tonight?": a fact about the user given as the reason for a
# question or a request of the moment; the fact stands, whatever the rest asks.
_REASON = _rx(r"^(?:since|as|because|given\s+that|seeing\s+(?:as|that)|considering)\s+(?=(?:i|we|my|our)\s)",
              first="since as because given seeing considering")
# The typed fact of a sentence that gives it as a reason: "(since) I'm vegan(, what could ...?)",
# "I'm colour-blind(, so how ...?)" (as typed: the case and the apostrophes of the sentence kept).
_TYPED_REASON = re.compile(r"^\s*(?:(?:anyway|ok|okay|so|also|and|btw|oh)\s*,?\s+)*"
                           r"(?:(?:since|as|because|given\s+that|seeing\s+(?:as|that)|considering)\s+)?"
                           r"([^,;]+?)(?:\s*[,;]|\s+(?:so|which\s+means|that\s+means|meaning)\s)",
                           re.IGNORECASE)
# "..., so how would I ...?", "..., which means ...": what follows from the clause before it.
_SO = _rx(r"^([^,;:]+?)(?:[,;]\s*(?:so|which\s+means|that\s+means|meaning)\s+\S|\s+(?:so|which\s+means"
          r"|that\s+means|meaning)\s+(?:please\s+)?(?=(?:i|we|you|my|our|the|how|what|which|where|when|why"
          r"|can|could|would|should|will|do|does|is|are|any|anything|it|there|keep|make|leave|don't|do|no"
          r"|never|always|only|nothing|everything|all|every|"
          + _ANSWER_VERBS + r")\b))")
_OPINION = _rx(r"^(?:i\s+(?:think|guess(?!\s+i\s+should\s+(?:mention|say|add|tell))|suppose|believe"
               r"|feel\s+like|bet|wonder|doubt|reckon)"
               r"|in\s+my\s+(?:opinion|view|experience)|imo|imho)\b", first="i in imo imho")
# Contractions of pronouns and of "not", spelled out so that each rule is written once ("i've got" is
# "i have got"); a possessive "'s" stays as it is.
_CONTRACTIONS = {
    **{f"{who}'m": f"{who} am" for who in ("i",)},
    **{f"{who}'{short}": f"{who} {full}" for who in ("i", "we", "you", "they")
       for short, full in (("ve", "have"), ("d", "would"), ("ll", "will"))},
    **{f"{who}'re": f"{who} are" for who in ("we", "you", "they")},
    **{f"{who}'s": f"{who} is" for who in ("it", "that", "what", "there", "here", "who", "where", "how")},
    "let's": "let us", "can't": "cannot", "won't": "will not", "shan't": "shall not",
    **{f"{verb}n't": f"{verb} not" for verb in ("do", "does", "did", "is", "are", "was", "were", "have",
                                                "has", "had", "should", "would", "could", "must", "need",
                                                "might")},
}
# The same typed without the apostrophe ("i dont drink", "im vegan"): only words that are nothing else.
_BARE = {"dont": "do not", "doesnt": "does not", "didnt": "did not", "cant": "cannot", "isnt": "is not",
         "arent": "are not", "wasnt": "was not", "werent": "were not", "havent": "have not",
         "hasnt": "has not", "shouldnt": "should not", "wouldnt": "would not", "couldnt": "could not",
         "im": "i am", "ive": "i have", "youre": "you are", "theyre": "they are", "weve": "we have",
         "thats": "that is", "whats": "what is"}
_BARE_CONTRACTION = _Lazy(r"(?<![\w'])(?:" + "|".join(_BARE) + r")(?![\w'])")
# "me and my wife have two kids", "my partner and I rent ...": the user and theirs, said as "we".
_US = _Lazy(r"^(?:(?:me|i)\s+and\s+my\s+[\w-]+|my\s+[\w-]+\s+and\s+(?:i|me))\s+(?=\w)")
# A word with an apostrophe, looked up in the table: one small regex, not an alternation of every
# contraction (compiling that cost a few ms at import).
_CONTRACTION = _Lazy(r"(?<![\w'])[a-z]+'[a-z]+(?![\w'])")
# "my laptop's a thinkpad", "my son's seven", "our game's built in godot": "'s" before an article, a number,
# a word of state or a participle is "is".
_IS_SHORT = _Lazy(r"\b(?<!let)([a-z]+)'s\s+(?=(?:a|an|not|very|really|still|always|never|only|just|called"
                  r"|open|closed|built|made|written|hosted|run|deployed|kept|stored|set|registered|insured"
                  r"|named|based|located|from|\d+|one|two|three|four|five|six|seven|eight|nine|ten"
                  r"|eleven|twelve)\b)")
_QUOTED = _Lazy(r"\"[^\"]{0,200}\"|“[^”]{0,200}”|«[^»]{0,200}»|'[^'\s][^']{0,200}[^'\s]'(?!\w)")
_LABEL = _rx(r"^(?:standing\s+)?(?:rule|rules|requirement|requirements|constraint|constraints|preference"
             r"|preferences|policy|instruction|instructions|note|nb|n\.b\.|important|reminder|fact)"
             r"\b[^:?]{0,24}:\s*\S",
             first="standing rule rules requirement requirements constraint constraints preference "
                   "preferences policy instruction instructions note nb n important reminder fact")
_LEAD = _rx(r"^(?:(?:oh|and|also|btw|so\s+yeah|by\s+the\s+way|ok|okay|so|well|hey|hi|plus"
            r"|one\s+more\s+thing|ah|right|actually|anyway|please|pls|plz|and\s+please|oh\s+and"
            r"|also,?\s+please"
            r"|one\s+last\s+thing|[a-z]+-wise)\b[,:!]?\s*)+")
_CONTEXT_WORDS = """remember that | please remember that | please remember | remember |
    keep in mind that | keep in mind | please keep in mind | bear in mind that | bear in mind | note that
    | please note that | please note | fyi | for your information | for context | for the record
    | just so you know | just so you are aware | quick note | a quick note | side note | as a reminder
    | reminder | don't forget that
    | do not forget that | good to know | please note that | heads up | i should mention | i should say
    | i should add | i should point out | i guess i should mention | i should probably mention
    | i should tell you | worth mentioning | worth knowing"""
_CONTEXT = _rx(r"^(?:" + _words(_CONTEXT_WORDS) + r")\b[,:]?\s*", first=_starts(_CONTEXT_WORDS))
_TRAILING_ALWAYS = _rx(r"(?:always|ever|at\s+all\s+times|every\s+time|each\s+time|in\s+general)"
                       r"(?:\s+please)?")
_FUTURE_WORDS = """from now on | from here on | from here onwards | from here on out
    | from this point on | from this point forward | from this point onwards | going forward | moving forward
    | henceforth | everywhere | in everything | in every case | for the rest of this | for the rest of the
    | for the rest of our | for the remainder of
    | for this whole | for the whole | for this entire | for the entire | for all future | in all future
    | in future answers | in future replies | in future responses | until further notice
    | until i say otherwise
    | unless i say otherwise | unless i tell you otherwise | until i tell you otherwise | throughout
    | unless i ask | unless i say | unless i tell you | unless i specify | unless i request | unless i mention
    | unless i want | unless asked | unless told | unless otherwise | unless i write | until i ask
    | when in doubt | if in doubt | whenever in doubt
    | at all times | by default | as a rule | as a general rule | whatever the topic | whatever the question
    | no matter what | regardless of the topic | every time you | each time you | whenever you
    | any time you | anytime you | everything you write | everything you say | all your answers
    | all of your answers | all your replies | all your responses | all your code"""
_FUTURE = _Gated(r"\b(?:" + _words(_FUTURE_WORDS) + r")\b", _starts(_FUTURE_WORDS))
_ALWAYS = _Gated(r"(?<!\bthe\s)(?<!\ba\s)(?<!\bhow\sto\s)\b(?:always|never|ever|any\s?more|no\s+more"
                 r"|no\s+longer|every\s+(?:single\s+)?time"
                 r"|each\s+time)\b(?!\s+(?:i|we)\b)", "always never ever anymore any no every each".split())
_OUTPUT_NOUNS = _words("""answers | answer | replies | reply | responses | response | messages | message
    | code | snippets | snippet | examples | example | dates | times | prices | numbers | figures | units
    | measurements | temperatures | amounts | distances | weights | recipes | explanations | lists
    | tables | charts | emails | commits | comments | variable names | names | headings | titles | links
    | citations | sources | suggestions | recommendations | outputs | output | text | texts | translations
    | summaries | currency | currencies | code blocks | functions | scripts | queries | sql | commands""")
# "all dates", "every answer", "all your replies": answers in general ("all the examples" is a few).
_QUANTIFIED = _rx(r"\b(?:all|every|each|any)\s+(?:of\s+)?(?:your\s+|my\s+)?(?:\w+\s+)?(?:"
                  + _OUTPUT_NOUNS + r")\b")
_YOUR_OUTPUT = _rx(r"\byour\s+(?:" + _OUTPUT_NOUNS + r")\b")
_OUTPUT_RULE = _rx(r"^(?:(?:all|every|each|any)\s+)?(?:your\s+|the\s+)?(?:\w+\s+)?(?:" + _OUTPUT_NOUNS
                   + r")\s+(?:should|must|need\s+to|have\s+to|shall|are\s+to|ought\s+to)\b")
_IMPERATIVE_ALWAYS = _rx(r"^(?:(?:please\s+)?(?:always|never)|(?:please\s+)?(?:don'?t"
                         r"|do\s+not)\s+(?:ever\s+)?"
                         r"|(?:please\s+)?(?:always|never)\s+ever)\s*(?:" + _ANSWER_VERBS + r")\b",
                         first="please always never don't dont do")
# A polite question asks for a rule with "always"; "would you never ...?" asks for an opinion.
# "can you always tell when bread is done?" asks about an ability, not for a rule.
_POLITE_ALWAYS = _rx(r"^always\s+(?:" + _ANSWER_VERBS
                     + r")\b(?!\s+(?:when|whether|if|how|what|why|which|who)\b)", first="always")
_DONT_EVER = _rx(r"^(?:please\s+)?(?:don'?t|do\s+not)\s+ever\b|^(?:please\s+)?never\s+ever\b",
                 first="please don't dont do never")
_ADDRESSED = _rx(r"^(?:you\s+(?:should|must|need\s+to|have\s+to|are\s+to|will|'ll|shall)"
                 r"|make\s+sure(?:\s+you|\s+to)?|be\s+sure\s+to|remember\s+to|i\s+(?:want|'d\s+like"
                 r"|would\s+like|need)\s+you\s+to"
                 r"|i'd\s+like\s+you\s+to|i\s+expect\s+you\s+to)\b", first="you make be remember i i'd")
# "stop adding disclaimers": a bare "stop asking." reacts to the reply in front of the user.
_STOP = _rx(r"^(?:please\s+)?(?:stop|quit|cut\s+out)\s+(?:\w+ing)\b(?=\s+\S)", first="please stop quit cut")
_NO_MORE = _rx(r"^(?:please\s+)?no\s+(?:more\s+\w|\w+s\s+please\b"
               r"|(?!kidding|way|worries|problem|thanks|thank)\w+ing\b)", first="please no")
_PROHIBITION = _rx(r"^(?:please\s+)?(?:don'?t|do\s+not|never)\s+(?:" + _ANSWER_VERBS + r"|bother)\b",
                   first="please don't dont do never")
_MANNER = _rx(r"^(?:please\s+|let\s+us\s+)?(?:stick\s+(?:to|with)|keep\s+(?:using|writing|answering"
              r"|replying|giving|it\s+(?:short|brief|simple|concise|formal|casual))|continue\s+(?:to|using)"
              r"|be\s+\w+\s+(?:with\s+me|about\s+my\s+\w+)|talk\s+to\s+me\s+(?:like|as)"
              r"|treat\s+me\s+(?:like|as)|speak\s+to\s+me\s+(?:like|as|in))\b|\bwith\s+me\s*[.!]?$"
              r"|^(?:please\s+)?keep\s+(?:it|things|everything|(?:the|your|all|any)\s+[\w-]+|(?!this\b"
              r"|its\b)[\w-]+s)\s+(?:\w+\s+)?(?:to\s+an?\s+(?:minimum|maximum)|to\s+the\s+point|within"
              r"|under|below|short|brief|simple|concise|light|plain|clean|neutral|friendly|polite"
              r"|professional|formal|casual|serious|factual|tight|warm|gentle|kind|direct|blunt|upbeat|calm"
              r"|relaxed|technical|objective|respectful"
              r"|low|basic|practical|realistic|positive|honest|[\w]+-(?:friendly|free|safe|only|level))\b")
# "X, not Y", "X rather than Y", "X instead of Y": a choice of one kind over another.
_CONTRAST = _Gated(r"(?:,\s*(?:and\s+)?(?:not|never)|\brather\s+than|\binstead\s+of)\s+"
                   r"(?!the\b|this\b|that\b|it\b|here\b|mind\b)\w", ("not", "never", "rather", "instead"))
# "I'd really like you to stop ...", "I want you to ...": what follows is an imperative to the assistant.
_ASK_YOU_TO = _rx(r"^(?:i|we)\s*(?:really\s+|'d\s+really\s+|would\s+really\s+)?(?:want|'d\s+like"
                  r"|would\s+like|need|'d\s+love|would\s+love|'d\s+really\s+like|would\s+really\s+like"
                  r"|would\s+appreciate\s+it\s+if|would\s+(?:prefer|like|love)\s+it\s+if|(?:prefer|like"
                  r"|love)\s+it\s+when)"
                  r"\s+(?:it\s+if\s+)?you\s+(?:to\s+|would\s+|could\s+)?", first="i i'd i've we we'd we've")
# "... if you never used ...": the past of a wish, read as the verb it stands for ("use").
_SUBJUNCTIVE = dict(pair.split(":") for pair in """gave:give wrote:write kept:keep told:tell said:say
    made:make left:leave began:begin spoke:speak stuck:stick led:lead went:go did:do put:put ran:run took:take
    sent:send""".split())
# "everyone calls me Jo (and so should you)": what to call the user, said of others.
_THEY_CALL_ME = _rx(r"^(?:everyone|everybody|people|most\s+people|friends|colleagues"
                    r"|(?:all\s+)?my\s+(?:friends|family|colleagues|coworkers|co-workers|team|students|kids"
                    r"|patients|clients))\s+calls?\s+me\s+(?!back\b|every\b|at\b|on\b|in\b|about\b|when\b"
                    r"|whenever\b|later\b|up\b|out\b|a\b|an\b"
                    r"|often\b|daily\b|sometimes\b|all\b|again\b|to\b|for\b|if\b|after\b|before\b)\S",
                    first="everyone everybody people most friends colleagues all my")
# A rule said without a verb: "metric units only", "prices in pounds sterling", "code without comments".
# Only when the clause has no subject or verb of its own ("prices are high in winter" is not one).
_VERBLESS = frozenset("""i we you he she it they this that these those there here is are was were am be been
    do does did have has had can could would should will may might must not what why how which who when
    where me one once question questions thing things time kidding joking if thanks thank sorry ok okay yes
    great cool nice lol haha pleasure problem worries way idea rush hurry luck clue doubt chance matter
    wonder offence offense biggie deal need""".split())
_TERSE_ONLY = _rx(r"^(?:[\w-]+\s+){0,3}[\w-]+\s+only$")
_TERSE_KIND = _rx(r"^(?:[\w-]+\s+)?(?:" + _OUTPUT_NOUNS + r")\s+(?:in|as|without|with|under|below|within"
                  r"|over|above|at\s+most|at\s+least|up\s+to|no\s+longer\s+than"
                  r"|shorter\s+than)\s+(?:[\w:-]+\s*){1,4}$")
# "no emojis", "no walls of text", "only open-source tools", "celsius always": a rule in a few words,
# without a verb (the clause has none of ``_VERBLESS``; "no worries", "only if ..." are not rules).
_TRAILING_MARK = _Lazy(r"\s+(?:always|ever|every\s+time|each\s+time|at\s+all\s+times)(?:\s+please)?$")
_TERSE_NO = _rx(r"^no\s+[\w-]+(?:\s+[\w-]+){0,3}(?:\s+(?:ever|always|at\s+all|please))?$", first="no")
_TERSE_ONLY_FIRST = _rx(r"^only\s+[\w-]+(?:\s+[\w-]+){0,3}$", first="only")
_TERSE_ALWAYS = _rx(r"^[\w-]+(?:\s+[\w-]+){0,2}\s+(?:always|ever|at\s+all\s+times)(?:\s+please)?$")
_MINE = frozenset(("my", "our"))
# "the work laptop", "the kids' bedtime", "the family car": the user's own, said with "the".
# "my friend's laptop has 8 gb", "my sister prefers metric": what belongs to or is wanted by someone
# else the user knows is not the user's world or rule ("my wife's name is ana" is: family names stay).
_OTHERS = _rx(r"^(?:my|our)\s+(?:friend|friends|neighbou?r|neighbou?rs|colleague|colleagues|co-?worker"
              r"|co-?workers|classmate|classmates|cousin|roommate|flatmate|boss|manager|teacher"
              r"|doctor)'s?\s|^(?:my|our)\s+(?:[\w']+\s+)?(?:sister|brother|mum|mom|mother|dad|father|wife"
              r"|husband|partner|boyfriend|girlfriend|son|daughter|kid|kids|friend|friends|boss|manager"
              r"|colleague|colleagues|co-?worker|neighbou?r|teacher|doctor|grandma|grandmother|grandpa"
              r"|grandfather|aunt|uncle|cousin|roommate|flatmate|team\s+lead|lead|supervisor|tutor"
              r"|professor|lecturer|advisor|adviser|client|clients|customer|customers|landlord|editor|coach"
              r"|therapist|dentist|lawyer|accountant)\s+(?:also\s+|always\s+|really\s+|still\s+)?(?:prefers"
              r"|insists|wants|likes\s+(?:everything|all|it|things|answers|code)|thinks|swears|hates"
              r"|dislikes|cannot\s+stand)\b|^(?:my|our)\s+(?:best\s+|old\s+|new\s+|close\s+)?(?:friend"
              r"|friends|neighbou?r|neighbou?rs|colleague"
              r"|colleagues|co-?worker|co-?workers|classmate|classmates|cousin|acquaintance)\s",
              first="my our")
_THE_VERBS = (r"(?:is|are|has|have|runs|uses|needs|can|cannot|does|do|only|starts|ends|blocks|allows|requires"
              r"|bans|forbids|filters|limits|restricts|closes|opens)\b")
_THE_MINE = _rx(r"^the\s+(?=(?:work|office|family|home|house|household|kids|kids'|children's|baby's|team)"
                r"\s+[\w'-]+\s+(?:[\w'-]+\s+)?" + _THE_VERBS
                + r"|[\w'-]+\s+at\s+(?:home|work|the\s+office)\s+(?:only\s+)?"
                + _THE_VERBS + ")", first="the")
# "python on the server is 3.8", "node on our build box is 18": what runs where the user works.
_VERSION_THERE = _rx(r"^(?:the\s+|our\s+|my\s+)?[\w.+#-]+(?:\s+[\w.+#-]+)?\s+(?:on|at|in)\s+(?:the|our"
                     r"|my)\s+(?:[\w-]+\s+)?(?:server|servers|cluster|box|machine|laptop|desktop|vps|host"
                     r"|prod|production"
                     r"|staging|office|site|work)\s+(?:is|are|runs|uses)\s+(?:still\s+|only\s+)?v?\d")
# "port 22 is blocked at my office", "youtube is banned on our network": a limit of the user's setup.
_BLOCKED_AT_MINE = _rx(r"^(?!(?:this|that|it|here|there)\b)[\w'.:-]+(?:\s+[\w'.:-]+){0,3}\s+(?:is"
                       r"|are)\s+(?:not\s+)?(?:blocked|banned|forbidden|disabled|restricted|firewalled"
                       r"|not\s+allowed|not\s+permitted|unavailable|not\s+available)\s+(?:at|on|in|by"
                       r"|from)\s+(?:my|our)\s+(?:[\w-]+\s+)?(?:office|work|workplace|job|company|network"
                       r"|school|university|employer|vpn|laptop|machine"
                       r"|computer|firewall|wifi|wi-fi|org|organi[sz]ation|team|server|servers)\b")
_AT_MINE = _rx(r"^(?:the\s+)?((?:[\w-]+\s+)?[\w-]+)\s+(?:at|in|for|of)\s+(?:my|our)\s+(?:job|work|company"
               r"|team|office|workplace|school|org|organi[sz]ation|house|home|flat"
               r"|building|lab|shop|firm)\s+(?=\w)")
# "every function must have a docstring": a rule for every one of a kind.
_EVERY_MUST = _rx(r"^(?:all|every|each)\s+(?:[\w-]+\s+){1,3}(?:should|must|need\s+to|needs\s+to|has\s+to"
                  r"|have\s+to|shall|ought\s+to)\b", first="all every each")
# "when you write dates, use ...", "whenever i paste a trace, tell me ...": a frame that holds every time,
# then what to do in it (not "whenever i run it, it crashes").
_EVERY_TIME_FRAME = _rx(r"^(?:when\s+you\s+(?:" + _ANSWER_VERBS + r")|(?:whenever|every\s+time|each\s+time"
                        r"|any\s*time)\s+(?:i|you|we)\s+[\w-]+)\b(?:\s+[\w'-]+){0,6}?\s*,?\s+"
                        r"(?:just\s+|please\s+|always\s+|only\s+)?(?:" + _ANSWER_VERBS + r")\b",
                        first="when whenever every each any anytime")
# "whatever you suggest has to work offline", "anything you write must ...": a rule for every answer.
_WHATEVER_YOU = _rx(r"^(?:whatever|anything|everything|all)\s+(?:that\s+)?you\s+(?:" + _ANSWER_VERBS
                    + r"|come\s+up\s+with|produce|generate|draft)\s+(?:\w+\s+)?(?:has\s+to|must|should"
                    r"|needs\s+to|need\s+to|have\s+to|ought\s+to|shall|is\s+to|needs|has)\b",
                    first="whatever anything everything all")
# "default to python 3.12", "use 24-hour time", "use tabs for indentation": a default or a convention.
_DEFAULT_TO = _rx(r"^(?:please\s+)?(?:default\s+to|by\s+default\s+use)\b", first="please default by")
_USE_CONVENTION = _rx(r"^(?:please\s+)?(?:use|write\s+in|stick\s+to)\s+(?!this\b|that\b|these\b|those\b"
                      r"|it\b|the\s+(?:same|one|last|first|above|previous"
                      r"|other)\b)(?:[\w-]+\s+){0,2}(?:time|format|formats|notation|spelling|units|syntax"
                      r"|style|conventions?|casing|case|indentation|tabs|spaces|quotes|encoding|timezone"
                      r"|time\s+zone|dates|english|grammar|punctuation)"
                      r"(?:\s+for\s+(?:[\w-]+\s*){1,2}|\s+(?:in|for)\s+(?:anything|everything|all)\b.*)?$",
                      first="please use write stick")
# "i'm writing my master's thesis", "we're renovating our house": a project of months, not the moment.
_MY_PROJECT = _rx(r"^(?:i\s+am|we\s+are)\s+(?:currently\s+|still\s+|slowly\s+)?(?:writing|doing|finishing"
                  r"|working\s+on|studying\s+for|training\s+for|building|renovating|restoring|learning"
                  r"|running|raising|planning)\s+(?:my|our)\s+(?:[\w'-]+\s+){0,2}(?:thesis|dissertation|phd"
                  r"|masters|master's|degree|book|novel|memoir|startup|business|company|house|home|flat"
                  r"|kitchen|garden|farm|boat|van|wedding|marathon|exams?"
                  r"|apprenticeship|residency)\b", first="i we")
# "there's no dishwasher in our flat", "there's only one bathroom at home": what the user's place lacks.
_ABSENT = _rx(r"^there\s+is\s+(?:no|only\s+one|just\s+one|not\s+a)\s+(?:[\w-]+\s+){1,2}(?:in|at|on)\s+(?:my"
              r"|our|the)\s+(?:[\w-]+\s+)?(?:flat|house|home|apartment|office|kitchen|place|building"
              r"|village"
              r"|town|area|street|garden|team|company|school|car|van|boat|network|server|servers|laptop)\b",
              first="there")
# "..., i get lost otherwise", "otherwise i cannot read it": a rule with its lasting reason.
_OTHERWISE = _rx(r"^(?:or\s+|otherwise\s+)?(?:i|we)\s+[\w'-]+(?:\s+[\w'-]+){0,4}\s+otherwise$"
                 r"|^otherwise\s+(?:i|we)\b", first="or otherwise i we")
# "when i type X i want a one-line summary": what a user's habit asks of the answers.
_WHEN_I = _rx(r"^when(?:ever)?\s+i\s+[\w-]+(?:\s+[\w'-]+){0,4}?\s*,?\s+(?:i\s+want|i\s+would\s+like"
              r"|give\s+me|just\s+give\s+me|reply\s+with|answer\s+with)\s+(?:a|an|the|only|just"
              r"|one)\b", first="when whenever")
# "i'm roughly b1 in spanish", "i'm fluent in german": the user's level in a skill.
_LEVEL = _rx(r"^(?:i\s+am|we\s+are)\s+(?:\w+ly\s+|about\s+|around\s+|at\s+|still\s+)?(?:a[12]|b[12]|c[12]"
             r"|fluent|conversational|intermediate|advanced|a\s+beginner|a\s+complete\s+beginner|beginner"
             r"|native|bilingual|proficient|rusty|self-taught|new|an\s+expert|expert|a\s+novice|novice"
             r"|decent|hopeless|terrible|okay"
             r"|ok|good|bad)\s+(?:in|at|with)\s+\w+", first="i we")
# "my son, who is autistic and ...": what a relative clause says of the user's people stands, whatever
# the sentence asks.
_WHO_IS = _Gated(r"\bmy\s+(?:[\w-]+\s+)?(?:son|daughter|kid|kids|child|children|wife|husband|partner|mum"
                 r"|mom|mother|dad|father|baby|toddler|boy|girl|twins|family)\s*,?\s+who\s+(?:is|are|has"
                 r"|have|cannot|can\s+not"
                 r"|does\s+not|do\s+not|only|will\s+not|won't|needs|need|hates|loves|lives)\b", ("who",))
# "the kids are 4 and 9", "the dog is deaf": the user's household named with "the".
_THE_HOUSEHOLD = _rx(r"^the\s+(?=(?:kids|children|twins|baby|toddler|dog|dogs|cat|cats|puppy"
                     r"|kitten)\s+(?:is|are|has"
                     r"|have|cannot|can't|does\s+not|do\s+not|only|will\s+not|won't)\b)", first="the")
# "ignore my typos", "don't mind my english": how to read what the user writes, from now on.
_MY_WRITING = _rx(r"^(?:please\s+)?(?:ignore|forgive|excuse|overlook|don'?t\s+mind|do\s+not\s+mind"
                  r"|don'?t\s+worry\s+about|do\s+not\s+worry\s+about"
                  r"|never\s+mind)\s+my\s+(?:\w+\s+)?(?:typos|spelling|grammar|english|mistakes"
                  r"|punctuation|capitali[sz]ation|formatting)\b",
                  first="please ignore forgive excuse overlook don't dont do never")
# "keep a formal tone unless I start joking": what holds until the user does something.
_UNLESS_I = _Gated(r"\bunless\s+(?:i|we)\s+(?!am\b|was\b|were\b|are\b|forget\b|have\s+been\b)[\w-]+",
                   ("unless",))
# "... for any health claims", "... for every function": what an imperative asks in every case to come.
_FOR_ANY = _Gated(r"\b(?:for|on|with|to|in|about)\s+(?:any|every|each|all)\s+(?!the\b|of\b|these\b|those\b"
                  r"|this\b|that\b|\d|two\b|three\b|four\b|five\b|six\b|ten\b)[\w-]+",
                  ("any", "every", "each", "all"))
_IMPERATIVE_START = _rx(r"^(?:please\s+)?(?:" + _ANSWER_VERBS + r")\b", first=_ANSWER_VERB_SET | {"please"})
# 'use "they" for me', "use my first name when you write to me": how to refer to the user.
_REFER_TO_ME = _rx(r"^(?:please\s+)?use\s+(?:\S+\s+){1,3}(?:for\s+me"
                   r"|when\s+(?:you\s+)?(?:refer(?:ring)?\s+to|talk(?:ing)?\s+(?:about|to)|address(?:ing)?"
                   r"|writ(?:e|ing)\s+to|speak(?:ing)?\s+(?:to|of))"
                   r"\s+me)\s*[.!]?$", first="please use")
_ADDRESS_ME = _rx(r"^(?:please\s+)?(?:call\s+me|address\s+me\s+as|refer\s+to\s+me\s+as|my\s+pronouns\s+are"
                  r"|i\s+go\s+by|my\s+name\s+is|my\s+name'?s|i'?m\s+called|i\s+am\s+called"
                  r"|you\s+can\s+call\s+me)"
                  r"\s+\S", first="please call address refer my i i'm im you")
_PREFERENCE = _rx(r"^(?:i|we)(?:\s+|(?='))(?:really\s+|strongly\s+|much\s+|generally\s+|usually\s+"
                  r"|also\s+)?(?:prefer|'d\s+prefer|would\s+prefer|'d\s+rather|would\s+rather|like|love"
                  r"|hate|dislike|detest|can'?t\s+stand|cannot\s+stand|enjoy|don'?t\s+like|do\s+not\s+like"
                  r"|don'?t\s+want|do\s+not\s+want|want|'d\s+like|would\s+like|am\s+a\s+fan\s+of"
                  r"|'m\s+a\s+fan\s+of|'m\s+not\s+a\s+fan\s+of|am\s+not\s+a\s+fan\s+of|am\s+(?:really\s+"
                  r"|not\s+)?into"
                  r"|am\s+(?:not\s+)?keen\s+on)\s+(.*)$", first="i i'd i've we we'd we've")
# What a preference may not be about: a choice among what is on the table, or a reaction to it.
_CHOICE = _rx(r"^(?:the\s+(?:[\w-]+\s+){0,2}(?:one|ones|option|options|version|idea|answer|suggestion|plan"
              r"|approach|draft|solution|variant|alternative)\b|the\s+(?:[\w-]+\s+){1,3}(?:(?:that"
              r"|which)\s+)?you\s+(?:just\s+)?(?:gave|wrote|made|sent|suggested|showed|proposed|drafted"
              r"|mentioned|shared|listed|picked)\b|this|that|these|those|it(?!\s+(?:when|if|whenever))"
              r"|the\s+(?:first|second|third|last|other|former|latter|above|previous|next|one|idea|answer"
              r"|option|version|suggestion|plan)|your|option|one\b|a\s+(?:recipe|table|list|summary|quick"
              r"|short|new|few|couple|look|word|break)|an\s+(?:example|answer|idea|explanation)|some|more"
              r"|to\s+(?:know|see|ask|try|talk|go|get|understand|learn|hear|read|find|make|do|have|check)"
              r"|not\s+to|help|you\s+to\s+(?!always"
              r"|never))\b")
# A preference that ends pointing at what is on the table ("not talk about that") is about the moment.
_POINTS_AT_NOW = _rx(r"\b(?:this|that|these|those|it|them|here|one|ones)\s*[.!]*$|\b(?:this|these|those)\b")
# "I want X" is a standing requirement only about the answers in general.
_WANT_GENERAL = _rx(r"^(?:you\s+to\s+(?:always|never)|all|every|each|my\s+(?:answers|replies|responses)"
                    r"|answers|replies|responses|it\s+when)\b")
_DURABLE_STATE = _rx(r"^(?:i'?m|i\s+am|we'?re|we\s+are)\s+(?:also\s+|still\s+|both\s+|all\s+|originally\s+"
                     r"|severely\s+"
                     r"|mildly\s+|very\s+|quite\s+|completely\s+|totally\s+|not\s+)?(?:" + _words("""allergic
    | vegetarian | vegan | pescatarian | pescetarian | diabetic | pregnant | left-handed | right-handed
    | colorblind | colourblind | color-blind | colour-blind | color blind | colour blind | deaf | blind
    | dyslexic | autistic | epileptic | lactose intolerant | gluten intolerant | intolerant | gluten-free
    | celiac | coeliac | married | single | divorced | widowed | retired | self-employed | unemployed
    | freelance | a freelancer | remote | based | located | from | living in | in the \\w+ time zone
    | in the \\w+ timezone | in the \\w+ \\w+ time zone | in the \\w+ \\w+ timezone | a native | native
    | fluent | bilingual | new to | learning | studying
    | working as | working at | working for | working in | working on | responsible for | in charge of
    | scared of | afraid of | terrified of | hard of hearing | visually impaired
    | hearing impaired | disabled | in a wheelchair | neurodivergent | dyspraxic | short-sighted | nearsighted
    | long-sighted | training for | saving for | saving up for | paying off | on a budget | on a tight budget
    | on a diet | on a [\\w-]+ diet
    | on a [\\w-]+ income | on a [\\w-]+ pension | on a pension | on a [\\w-]+ salary | on benefits
    | on disability | on a [\\w-]+ budget | on an? [\\w-]+ mac | on an? [\\w-]+ macbook
    | on an? [\\w-]+ laptop
    | on medication | on insulin | on dialysis | on blood thinners | on antidepressants
    | on a mac | on a macbook | on mac | on macos | on windows | on linux | on ubuntu | on fedora | on debian
    | on arch | on an iphone | on android | on a pc | on a chromebook | on python | on node | on java
    | \\d+ years old | \\d+ | in my \\d+s | in my teens | in my twenties | in my thirties | in my forties
    | in my fifties | in my sixties | in my seventies | in my eighties | in my nineties
    | (?:two|three|four|five|six|seven|eight|nine|ten|\\d+) \\w+ and
    | training to | studying to | learning to | the only | the lead | the owner | the founder | the maintainer
    | the admin | the manager | the head | in charge | a team of | a company | a startup | a nonprofit
    | a non-profit | a charity | a small | a family | a group""") + r")\b", first="i i'm im we we're were")
# "we're stuck on Python 3.8", "I'm limited to 2 GB", "we're using Debian everywhere": what the user's
# setup is held to or runs (not "I'm stuck on this bug", "I'm using the code you gave me", "running late").
_SETUP = _rx(r"^(?:i|we)\s+(?:am|are)\s+(?:also\s+|still\s+|currently\s+|only\s+|mostly\s+"
             r"|all\s+)?(?:(?:stuck|limited|restricted|tied|locked|pinned|standardi[sz]ed|committed"
             r"|confined)\s+(?:on|to|with|into)|(?:using|running|deploying\s+(?:on|to)|developing\s+(?:on"
             r"|in|for)|coding\s+in|writing\s+in|working\s+with|building\s+(?:on|with)|hosted\s+on"
             r"|hosting\s+on)(?!\s+(?:late|out|low|behind|short|into|around|away|errands|a\s+bit"
             r"|an?\s+(?:errand|marathon|race|test|experiment)))|not\s+allowed\s+to\s+(?:use|install|run"
             r"|access|share|upload|download|deploy|store|send))\s+(?!(?:this|that|it|these|those|them|here"
             r"|your|the\s+(?:code|script|answer|example|snippet|file|version\s+you|one|same|bug|problem"
             r"|error|issue|step|part|question|last|first|second|next"
             r"|tutorial|link|command|function)|a\s+(?:bug|problem|error|step|question|puzzle|level))\b)\S",
             first="i we")
# "I can't read small text well", "we aren't able to install anything": a lasting limit, not the moment
# ("I can't see the image", "I can't hear you", "I can't open it").
_CANNOT = _rx(r"^(?:i|we)\s+(?:also\s+|still\s+|really\s+|just\s+|simply\s+)?(?:cannot|can\s+not|(?:am"
              r"|are)\s+(?:not\s+able|unable|not\s+allowed|not\s+permitted)\s+to|struggle\s+to"
              r"|have\s+trouble)\s+(?:" + _words("""read | reading | see | seeing | hear | hearing | eat
    | eating | drink | drinking | have | use | using | drive | driving | walk | walking | run | swim | lift
    | type | typing | afford | install | installing | access | tolerate | digest | sit | sitting | climb
    | kneel | travel | fly | cook | speak | chew | swallow | touch | smell | taste""") + r")\b"
              r"(?!\s+(?:this|that|it|these|those|them|the|your|you|any\s+of|anything|a\s+thing|what|why|how"
              r"|where|when|if|whether|properly\s+(?:now|today)|now|today)\b)", first="i we")
# "I'm teetotal", "I'm Muslim", "we're Canadian": what the user is, said in one word; not a state
# of the moment ("I'm tired", "I'm confused", "I'm back"), nor anything ending in -ed or -ing.
_TRAIT = _rx(r"^(?:i\s+am|we\s+are)\s+(?:also\s+|not\s+|strictly\s+|fully\s+)?((?:(?!(?:in|at|on|with|by"
             r"|from|into|near|off|under|over|to|for|of|about|a|an|the|my|our|your|this|that|so|and|but|or"
             r"|just|very|really|too|quite|pretty|a\s+bit)\s)[\w-]+\s+){0,2})"
             r"([a-z][a-z-]+)(?:\s+too)?(?:\s+(?:and|so)\s+.+)?$", first="i we")
_MOMENT_STATES = frozenset("""tired sleepy exhausted knackered shattered hungry starving thirsty full cold hot
    warm sick ill unwell sore fine good great ok okay alright well bad awful terrible back home here there
    away out off in up down on done ready set free available busy late early sorry glad happy sad angry mad
    upset cross curious bored lost stuck confused sure unsure certain serious kidding joking listening game
    afraid scared worried nervous anxious stressed frustrated annoyed grateful thankful relieved surprised
    impressed amazed shocked sold convinced torn hooked new right wrong correct close near far behind ahead
    next last first alone together online offline around awake asleep lucky unlucky broke rich poor keen
    eager excited thrilled proud ashamed jealous sure fed stumped finished gone open closed safe ok-ish
    interested ready-ish hopeful doubtful confident quick slow""".split())
_ROLE = _rx(r"^(?:i'?m|i\s+am|we'?re|we\s+are)\s+(?:not\s+)?(?:\w+ly\s+|just\s+|only\s+|also\s+)?(?:an?)\s+"
            r"(?!bit\b|little\b|lot\b|fan\b|big\s+fan\b)(?:\w[\w-]*)", first="i i'm im we we're were")
_FIRST_PERSON_FACT = _rx(r"^(?:i|we)\s+(?:also\s+|currently\s+|still\s+|mostly\s+|mainly\s+|only\s+"
                         r"|usually\s+|always\s+|never\s+|often\s+|normally\s+|generally\s+|rarely\s+"
                         r"|sometimes\s+)?(?:"
                         + _words("""work | live | study | teach | run | own | drive | speak | use | code in
    | write in | develop | manage | lead | volunteer | commute | cycle | bike | walk | take | go to | belong
    | come from | rent | share | sell | host | deploy | ship | target | support | build | maintain
    | rely on | depend on | store | eat | drink | cook | play | practice | practise | train | coach
    | care for | look after | sleep | wake up | get up | can't eat | cannot eat | can't have | cannot have
    | can't drink | can't use | cannot use | can't stand | don't eat | do not eat | don't drink | do not drink
    | don't own | do not own | don't have | do not have | don't use | do not use | don't speak
    | don't drive | do not drive | do not allow | do not permit | do not accept | do not support
    | do not ship | do not sell | do not offer | do not serve | do not store | do not collect | do not share
    | do not track | do not keep | do not watch | do not trust | only allow | only accept | allow | forbid
    | ban | have no | have got | 've got | were born | was born | 're on | are on | bank with | shop at
    | grow | farm | raise | breed | brew | bake | publish | produce | design | repair | translate | import
    | export | keep bees | keep chickens | keep goats | homeschool | foster | freelance | consult
    | contract | moonlight | tutor | babysit | nanny
    | 're a | are a | 're an | are an | am a | 'm a | are based | 're based | are located | 're located""")
                         + r")\b", first="i we")
# "I always read on my phone", "we usually deploy on Fridays": a habit (a past verb is refused before).
_HABIT = _rx(r"^(?:i|we)\s+(?:always|usually|normally|generally|often|never|rarely|typically|mostly"
             r"|tend\s+to)\s+"
             r"(?!be\b|have\s+to\b)[a-z-]+", first="i we")
_HAVE = _rx(r"^(?:i|we)\s+(?:also\s+|still\s+|only\s+)?(?:have|'ve\s+got|have\s+got)\s+(?!to\b|been\b"
            r"|no\s+idea|an?\s+(?:question|problem|issue|meeting|bug|error|idea|doubt|call|headache|cold"
            r"|fever|flu|hangover|feeling|quick|follow-up|request|suggestion|thought|favou?r|minute|second"
            r"|moment|look|interview|appointment|date|go|try|question)|(?:some|a\s+few|few|two|more|many"
            r"|several)\s+(?:questions|problems|issues|meetings|bugs|errors|ideas|doubts|thoughts|minutes)"
            r"|(?:questions|problems|issues|meetings|bugs|errors|ideas|doubts|thoughts)\b)\S",
            first="i i'd i've we we'd we've")
_POSSESSIVE = _rx(r"^(?:my|our)\s+((?:[\w'’-]+\s+){0,4}?)(?:is|are|'s|'re|has|have|lives|live|works|work"
                  r"|runs|run|uses|use|targets|target|sits|speaks|speak|studies|study|teaches|owns|own"
                  r"|hosts|host|deploys|deploy|sells|sell|serves|serve|supports|support|relies|rely|depends"
                  r"|depend|includes|include|contains|contain|comes|come|goes|go|attends|attend|prefers"
                  r"|prefer|likes|like|loves|love|hates|hate|cannot|can\s+not|does\s+not|do\s+not"
                  r"|will\s+not|is\s+not|are\s+not|has\s+not|allows|allow|permits|permit|forbids|forbid"
                  r"|bans|ban|requires|require|accepts|accept|eats|eat|drinks|drink|drives|drive|plays|play"
                  r"|handles|handle|stores|store|keeps\s+(?!\w+ing)|needs\s+to|must|should|starts|start"
                  r"|opens|closes|consists|blocks|filters|writes|builds|makes|pays|offers|provides|charges"
                  r"|follows|follow|limits|restricts|restrict|enforces|enforce|mandates|mandate|grows|ends"
                  r"|begins|celebrates|celebrate|observes|observe|spans|covers|publishes"
                  r"|insists|insist)\b\s*(.*)$",
                  first="my our")
_TRANSIENT = _rx(r"^(?:" + _words("""down | broken | failing | crashing | not working | not responding | slow
    | work | compile | load | start | open | respond | connect | build | boot | print | save | sync | charge
    | show | make sense | answer | pick up | reply | understand | get it | turn on | fit | exist | matter
    | sick | ill | unwell | at work | at home | at school | away | out | busy | late | asleep | awake | here
    | there | online | offline | stuck | missing | gone | empty | full | done | ready | open | closed
    | being | getting | going | coming | trying | visiting | waiting | still | almost | nearly | about to
    | currently down | acting up | weird | wrong | off | on fire | up""") + r")\b"
    r"|^(?!(?:every|any|some|no)thing\b)\w+ing\b")
# "is getting married in June": doing something on a date to come is a plan, not the moment.
_DATE_AHEAD = _rx(r"^\w+ing\b.*\b(?:in|on|by|next|this\s+coming)\s+(?:january|february|march|april|may|june"
                  r"|july|august|september|october|november|december|spring|summer|autumn|fall|winter"
                  r"|monday|tuesday"
                  r"|wednesday|thursday|friday|saturday|sunday|week|month|year|(?:19|20)\d\d)\b")
# "is closed on Fridays", "is busy every morning": what recurs is how things are, not the moment.
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "mon", "tues", "tue",
         "wed", "thurs", "thur", "thu", "fri", "sat", "sun")
_DAY = r"(?:" + "|".join(_DAYS) + r")s?\.?"
_RECURRING = _Gated(r"\b" + _DAY + r"\s*(?:to|-|–|through|thru|till|until)\s*" + _DAY + r"(?!\w)"
                    r"|\b(?:on|at)\s+(?:mondays|tuesdays|wednesdays|thursdays|fridays|saturdays|sundays"
                    r"|weekends|weekdays|holidays|public\s+holidays)\b|\bevery\s+(?:day|morning|evening"
                    r"|night"
                    r"|week|weekend|month|year|monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b",
                    {"on", "at", "every", *_DAYS, *(day + "s" for day in _DAYS)})
# "is stuck on kubernetes 1.27", "is pinned to node 18": what a thing of the user's is held to.
_HELD_TO = _rx(r"^(?:still\s+|currently\s+|permanently\s+)?(?:stuck|limited|restricted|pinned|locked|tied"
               r"|capped)\s+(?:on|to|at|with)\s+(?!this\b"
               r"|that\b|it\b)\S")
# "our band rehearses every thursday", "our restaurant seats 40": any verb of a thing of the user's, when
# what follows is what recurs or a quantity (a list of verbs cannot name them all).
_MINE_HABIT = _rx(r"^(?:my|our)\s+(?:[\w'-]+\s+){1,2}?(?!is\b|was\b|has\b|does\b)[a-z]+s\b(?!\s+(?:me|us)\b)",
                  first="my our")
_QUANTITY = _rx(r"^(?:my|our)\s+(?:[\w'-]+\s+){1,2}?[a-z]+s\s+(?:about\s+|around\s+|up\s+to\s+|over\s+"
                r"|under\s+|only\s+|at\s+most\s+|at\s+least\s+)?[\d$£€]", first="my our")
# "we're closed on mondays", "i'm in the office tuesdays": the moment's words, made a rule by recurring.
_WE_ARE = _rx(r"^(?:i\s+am|we\s+are)\s+\S", first="i we")
# Where the user lives, not the moment: "out here", "around here" (not "stop here").
_HERE_I_LIVE = _rx(r"\b(?:out|around|over|up|down)\s+here\s*[.!]*$")
_SUBJECT_IS_MINE = _rx(r"^(?!(?:this|that|it|here|there|what|which|who|where|how"
                       r"|why)\b)[\w'’-]+(?:\s+[\w'’-]+){0,2}\s+(?:is"
                       r"|are)(?:\s+not)?\s+my\s+(?:\w+\s+)?(?:language|languages|tongue|home|hometown|city"
                       r"|country|job|work|role|title|field|day\s+off|days\s+off|timezone|time\s+zone|stack"
                       r"|editor|os|setup|hobby|passion|thing|main|first|native|only|favou?rite)\b")
_RELATIVE_MINE = _rx(r"^the\s+(?:\w+\s+){1,2}(?:i|we)\s+(?:work|works|study|run|build|maintain|use|own|live"
                     r"|have\s+got|have|keep|play|ride|fly|lead|manage|teach|volunteer|rent|share|drive"
                     r"|ride|attend|support|sell|host|coach|look\s+after|care\s+for|belong\s+to"
                     r"|go\s+to)\b[^.!?]*?\s(?:is|are|has|have|uses|runs|works|lives|sits"
                     r"|sells|builds|makes|needs|spans|covers)\b", first="the")
_SETTING = _rx(r"^(?:at|in|on)\s+(?:work|my\s+(?:job|work|company|team|office|house|home|flat|place)"
               r"|our\s+(?:company|team|office|shop|house|home|flat|place|org|organi[sz]ation|family)"
               r"|the\s+(?:office|company))\s+(?=i\b|we\b|my\b|our\b)", first="at in on")
_FIRST_PERSON = _rx(r"\b(?:i|i'm|i've|i'd|i'll|me|my|mine|myself|we|we're|we've|us|our|ours)\b")
_ADVERBS = frozenset("also always never once just really still usually often actually even only all both "
                     "first then".split())
# The verb of a clause in the present: past-tense words after it are not its verb ("runs on self-hosted").
_PRESENT = frozenset("""is are 's 're has have am 'm does do can will 'll lives live works work runs run uses
    use targets sits speaks studies teaches owns hosts deploys sells serves supports relies depends includes
    contains comes goes attends prefers likes loves hates eats drinks drives plays handles stores needs
    must should starts opens closes consists keeps gets makes""".split())
_SUBJECTS = frozenset(("i", "we", "my", "our"))
_DETERMINERS = frozenset("the a an this that these those your his her their".split())
_TOKEN = re.compile(r"[a-z0-9'’-]+")


@dataclass(frozen=True)
class Verdict:
    """Whether a sentence is standing, and the rule that said so (or why it is not): for the tests,
    the bench and ``/memory``."""

    standing: bool
    rule: str
    part: str | None = None  # the words of the sentence that stand, as typed, when not all of them do


def _normal(sentence: str) -> str:
    """Return ``sentence`` lower-cased with straight apostrophes, single spaces and no quoted words
    (a mention is not a use)."""
    text = sentence.replace("’", "'").replace("‘", "'")
    if any(mark in text for mark in "\"“«'"):
        text = _QUOTED.sub(" X ", text)  # a mention keeps its place in the sentence, not its words
    text = " ".join(text.lower().split())
    if not _BARE.keys().isdisjoint(_tokens(text)):
        text = _BARE_CONTRACTION.sub(lambda match: _BARE[match.group(0)], text)
    if "and" in _tokens(text):
        text = _US.sub("we ", text)
    if "'" not in text:
        return text
    text = _CONTRACTION.sub(lambda match: _CONTRACTIONS.get(match.group(0), match.group(0)), text)
    return _IS_SHORT.sub(r"\1 is ", text) if "'s " in text else text


def _clauses(text: str) -> list[str]:
    """Return the clauses of a normalized sentence: split at commas, semicolons, colons and dashes,
    each without the chat filler it may open with ("oh and", "btw", "please")."""
    # "warm but professional": a "but" before the clause's last word or two joins, it does not split;
    # "and" splits before a subject of its own ("... is mysql 5.7 and we are not allowed ...", not
    # "my partner and i are ...")
    parts = re.split(r"\s*(?:[,;:]|\s-\s|\s–\s|\s—\s|\sbut\s(?!(?:[\w-]+\s+)?[\w-]+\s*[.!]*$)"
                     r"|\sand\s(?=i\s(?!are\b|were\b|both\b|have\s+both\b)|(?:we|they|he|she)\s))\s*", text)
    clauses: list[str] = []
    for part in (_LEAD.sub("", p).strip(" .!?") for p in parts):
        if clauses and _TRAILING_ALWAYS.fullmatch(part):
            clauses[-1] = f"{clauses[-1]} {part}"  # "avoid paid tools, always": the rule's own clause
        elif part:
            clauses.append(part)
    return clauses


def _past_verb(word: str) -> bool:
    return word in _PAST_VERBS or (word.endswith("ed") and len(word) > 4 and "-" not in word
                                   and word not in _NOT_PAST_ED)


def _is_past(text: str) -> bool:
    """Return whether ``text`` talks about the past: a marker ("used to", "last year") or a past-tense
    verb as the verb of I or we (adverbs skipped), or among the three words after my ... or our ...
    (whose first word is the noun or its adjective: "my left ear" has no verb yet); "was born" stands,
    since a birth year is a fact of now."""
    if _PAST.search(text):
        return True
    if _SUBJECTS.isdisjoint(_tokens(text)):
        return False
    words = _TOKEN.findall(text)
    for index, word in enumerate(words):
        if word in ("i", "we"):
            if index and words[index - 1] in ("what", "whatever", "how"):
                continue  # "work out what i meant": the past of a relative clause, not of the sentence
            after = [w for w in words[index + 1:index + 4] if w not in _ADVERBS][:1]
        elif word in ("my", "our"):
            after = words[index + 2:index + 5]
        else:
            continue
        for verb in after:
            if verb in _PRESENT or verb in _DETERMINERS:
                break  # a present verb, or a noun phrase begins ("... put the fixed sentence"): no past
            if verb in ("was", "were") and words[index + 1:].count("born"):
                break
            if _past_verb(verb):
                return True
    return False


def _refusal(text: str, clauses: list[str]) -> str | None:
    """Return why a normalized sentence is not standing before any rule is asked (None: it may be)."""
    if _RETRACTION.search(text):
        return "retraction"
    head = clauses[0] if clauses else text
    if _HYPOTHETICAL.search(head) or _HYPOTHETICAL.search(text):
        return "hypothetical"
    if _OF_THOSE.search(head):
        return "choice"
    if _is_past(text):
        return "past"
    if _ONE_OFF.search(text):
        return "one-off"
    if _OPINION.search(head):
        return "opinion"
    if _REPORTED.search(text):
        return "reported"
    return None


def _question(text: str, clauses: list[str]) -> bool:
    """Return whether the sentence asks something (a question mark, or a question's word order)."""
    head = clauses[0] if clauses else text
    return text.rstrip().endswith("?") or bool(_QUESTION_START.search(head))


def _wished(rest: str) -> str:
    """Return what a wish asks of the assistant with its verb in the present: "(if you) never used the
    word" is "never use the word", "(if you) did not add" is "do not add"."""
    words = rest.split()
    for index, word in enumerate(words[:3]):
        if word in ("always", "never", "ever", "just", "only", "really", "please"):
            continue
        if word == "did" and words[index + 1:index + 2] == ["not"]:
            words[index] = "do"
        elif word in _SUBJUNCTIVE:
            words[index] = _SUBJUNCTIVE[word]
        elif word.endswith("ed"):
            stem = word[:-3] if len(word) > 4 and word[-3] == word[-4] else word[:-2]  # stopped, added
            words[index] = next((c for c in (word[:-1], word[:-2], stem) if c in _ANSWER_VERB_SET), word)
        break
    return " ".join(words)


def _requirement(clause: str, whole: str) -> str | None:
    """Return the rule that makes ``clause`` (of the sentence ``whole``) a standing requirement."""
    if _FUTURE.search(clause):
        return "from now on"
    if _ADDRESS_ME.search(clause) or _REFER_TO_ME.search(clause):
        return "what to call the user"
    if _IMPERATIVE_ALWAYS.search(clause) or _DONT_EVER.search(clause):
        return "always or never"
    if _STOP.search(clause) or _NO_MORE.search(clause):
        return "stop"
    if _ALWAYS.search(clause) and (_ADDRESSED.search(clause) or _OUTPUT_RULE.search(clause)):
        return "always or never"
    if (_OUTPUT_RULE.search(clause) and _QUANTIFIED.search(clause)) or _EVERY_MUST.search(clause):
        return "every answer"
    asked = _ASK_YOU_TO.search(clause)
    if asked is not None and clause[asked.end():] and asked.end() < len(clause):
        rest = _wished(clause[asked.end():])
        if _requirement(rest, whole) or (_ALWAYS.search(rest) and _IMPERATIVE_START.search(rest)):
            return "asked of the assistant"
    if _QUANTIFIED.search(clause) and (_IMPERATIVE_START.search(clause) or _ADDRESSED.search(clause)):
        return "every answer"
    if _ALWAYS.search(clause) and _IMPERATIVE_START.search(clause):
        return "always or never"
    if _PROHIBITION.search(clause):
        return "prohibition"
    if _MANNER.search(clause):
        return "manner"
    if _IMPERATIVE_START.search(clause) and _CONTRAST.search(whole):
        return "preference"  # "use kilometres, not miles": one kind over another, in general
    if _CONTRAST.search(whole) and _QUANTIFIED.search(whole) and _VERBLESS.isdisjoint(_tokens(clause)):
        return "preference"  # "tabs, not spaces, in any code you write": the same, for every answer
    if _IMPERATIVE_START.search(clause) and (_QUANTIFIED.search(whole) or (
            _ALWAYS.search(whole) and _YOUR_OUTPUT.search(whole))):
        return "every answer"  # "in every answer, put the summary first": the frame is its own clause
    if _THEY_CALL_ME.search(clause):
        return "what to call the user"
    if _IMPERATIVE_START.search(clause) and _FOR_ANY.search(clause):
        return "every answer"
    if _EVERY_TIME_FRAME.search(whole) or _WHATEVER_YOU.search(clause):
        return "every answer"
    if _DEFAULT_TO.search(clause) or _USE_CONVENTION.search(clause):
        return "a default or convention"
    if _MY_WRITING.search(clause):
        return "how to read the user"
    if _WHEN_I.search(whole):
        return "every answer"
    if _IMPERATIVE_START.search(clause) and any(_OTHERWISE.search(c) for c in _clauses(whole)):
        return "a rule with its reason"
    if _UNLESS_I.search(clause) and (_IMPERATIVE_START.search(clause) or _PROHIBITION.search(clause)):
        return "a rule with a condition"
    terse = _TRAILING_MARK.sub("", clause)  # "sources in apa 7th, every time": the rule without its marker
    if _VERBLESS.isdisjoint(_tokens(terse)) and len(terse.split()) <= 6 and (
            (clause.endswith(" only") and _TERSE_ONLY.search(clause)) or _TERSE_KIND.search(clause)
            or _TERSE_NO.search(clause) or _TERSE_ONLY_FIRST.search(clause) or _TERSE_ALWAYS.search(clause)):
        return "terse rule"  # "metric units only", "prices in pounds sterling": a rule without a verb
    return None


def _preference(clause: str) -> str | None:
    match = _PREFERENCE.search(clause)
    if match is None:
        return None
    verb = clause[:match.start(1)]
    what = match.group(1).strip()
    if re.search(r"\b(?:want|'d\s+like|would\s+like)\s*$", verb):
        return "preference" if _WANT_GENERAL.search(what) else None
    if not what or _CHOICE.search(what) or _POINTS_AT_NOW.search(what):
        return None
    return "preference"


def _fact(clause: str) -> str | None:
    """Return the rule that makes ``clause`` a fact about the user or their world (None: it is not)."""
    clause = _SETTING.sub("", clause)  # "at work we use Jira": the fact follows its setting
    if not _MINE.isdisjoint(_tokens(clause)):
        clause = _AT_MINE.sub(r"my \1 ", clause)  # "production at my job runs": "my production runs"
        if _BLOCKED_AT_MINE.search(clause):
            return "fact about the user"
    clause = _THE_MINE.sub("my ", clause)  # "the work laptop has 16 gb": "my work laptop has 16 gb"
    clause = _THE_HOUSEHOLD.sub("my ", clause)  # "the kids are 4 and 9": "my kids are 4 and 9"
    if _MY_PROJECT.search(clause) or _ABSENT.search(clause) or _LEVEL.search(clause):
        return "fact about the user"
    if _SETUP.search(clause) or _CANNOT.search(clause):
        return "fact about the user"
    if _DURABLE_STATE.search(clause) or _ROLE.search(clause):
        return "fact about the user"
    trait = _TRAIT.fullmatch(clause)
    if trait is not None and not any(word in _MOMENT_STATES or word.endswith(("ed", "ing"))
                                     for word in (*trait.group(1).split(), trait.group(2))):
        return "fact about the user"
    if _HAVE.search(clause) or _FIRST_PERSON_FACT.search(clause) or _HABIT.search(clause):
        return "fact about the user"
    if _OTHERS.search(clause):
        return None  # someone else's: "my friend is diabetic", "my sister prefers metric"
    possessive = _POSSESSIVE.search(clause)
    if possessive is not None and _HELD_TO.search(possessive.group(2)):
        return "fact about their world"
    if possessive is not None and (not _POINTS_AT_NOW.search(possessive.group(2))
                                   or _HERE_I_LIVE.search(possessive.group(2))) and (
            not _TRANSIENT.search(possessive.group(2)) or _DATE_AHEAD.search(possessive.group(2))
            or _RECURRING.search(possessive.group(2))):
        return "fact about their world"
    if _SUBJECT_IS_MINE.search(clause) or _RELATIVE_MINE.search(clause) or _VERSION_THERE.search(clause):
        return "fact about their world"
    if _MINE_HABIT.search(clause) and (_RECURRING.search(clause) or _QUANTITY.search(clause)):
        return "fact about their world"
    if _WE_ARE.search(clause) and _RECURRING.search(clause):
        return "fact about the user"
    return None


def _given_part(sentence: str, text: str, clauses: list[str]) -> str | None:
    """Return the fact of a sentence that gives it as the reason for a question or a request of the
    moment, as typed ("I'm vegan" of "Since I'm vegan, what could I make tonight?"), so that the note
    does not resend the question with every request; None when the rest of the sentence stands too
    ("we're stuck on Python 3.8, so nothing newer than that") or the fact cannot be cut out."""
    rest = " ".join(clauses[1:])
    if not rest or not (text.rstrip().endswith("?") or _refusal(rest, clauses[1:]) is not None):
        return None
    cut = _TYPED_REASON.match(sentence)
    if cut is None or not cut.group(1).strip():
        return None
    return cut.group(1).strip()


def verdict(sentence: str) -> Verdict:
    """Return whether one ``sentence`` is standing, and by which rule (or why not)."""
    text = _normal(sentence)
    if not text or len(text.split()) > MAX_WORDS:
        return Verdict(False, "too long" if text else "empty")
    labelled = _LABEL.search(text)
    if labelled is not None:
        text = text[labelled.end() - 1:]
    clauses = _clauses(text)
    if not clauses:
        return Verdict(False, "empty")
    reason = _REASON.search(clauses[0])
    so = _SO.search(text) if reason is None else None
    given = clauses[0][reason.end():] if reason is not None else _LEAD.sub("", so.group(1)) if so else None
    fact = _fact(given) if given is not None and _refusal(given, [given]) is None else None
    if fact is not None:  # the fact stands, whatever the question or the request of the moment after it
        return Verdict(True, fact, _given_part(sentence, text, clauses))
    refusal = _refusal(text, clauses)
    if refusal is not None:
        return Verdict(False, refusal)
    if _WHO_IS.search(text) and not _is_past(text):
        return Verdict(True, "fact about their world")
    if _question(text, clauses):
        # The request may follow a clause of time: "from now on, can you keep ...?"
        asking = next((c for c in clauses if _POLITE_REQUEST.search(c)), clauses[0])
        polite = _POLITE_REQUEST.search(asking)
        rest = asking[polite.end():] if polite else ""
        if polite and (_FUTURE.search(text) or _POLITE_ALWAYS.search(rest) or _STOP.search(rest)
                       or (_QUANTIFIED.search(rest) and _IMPERATIVE_START.search(rest))):
            return Verdict(True, "asked for from now on")
        return Verdict(False, "question")
    if labelled is not None:
        return Verdict(True, "labelled")
    for index, clause in enumerate(clauses):
        context = _CONTEXT.search(clause)
        if context is not None:
            rest = clause[context.end():] or " ".join(clauses[index + 1:index + 2])  # "FYI, I am ..."
            if rest and (_FIRST_PERSON.search(rest) or _IMPERATIVE_START.search(rest)
                         or _requirement(rest, text)):
                return Verdict(True, "asked to keep")
    for clause in clauses:
        clause = _CONTEXT.sub("", clause)
        rule = _requirement(clause, text) or _preference(clause) or _fact(clause)
        if rule is not None:
            return Verdict(True, rule)
    return Verdict(False, "no rule")


def standing(text: str) -> list[str]:
    """Return the sentences of the user message ``text`` that are standing, as typed, in order, each once
    (of a sentence that gives a fact as the reason for a question, the fact alone: ``Verdict.part``)."""
    found: dict[str, None] = {}
    for sentence in sentences(text):
        said = verdict(sentence)
        if said.standing:
            found.setdefault(said.part or sentence)
    return list(found)


def classify(items: Iterable[str]) -> list[Verdict]:
    """Return the verdict of each sentence in ``items`` (for the bench and the tests)."""
    return [verdict(item) for item in items]


__all__ = ["Verdict", "classify", "sentences", "standing", "verdict"]
