"""What makes an evicted message a reason for auto recall to bring its turn back.

Recall looks for the content words of a new message that the request does not already carry; a
logged message that shares some of them is a candidate. Two kinds of candidate are no reason:

- a copy: it matches only through sentences of the new message it holds word for word (a question
  asked again, a phrase the user repeats). It says nothing the new message does not; what
  answered it, or a message holding the words in other sentences, still counts;
- a passing word: it shares one word and that word does not name anything ("idea", "today",
  "bread"). One shared common word is what any two messages on everyday topics have; a reference
  to something said earlier names it ("Priya", "heron-42", "my wife") or uses two of its words
  ("the cabin's wifi password"), unless the message says it asks about what was said before
  ("what did we decide about kubernetes?", "remember the bread?"): then one word is enough.

Only the standard library is used: this is core.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

_WORDS = re.compile(r"[^\W_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")
_OWN = frozenset({"my", "our"})
# Words that say a message asks about what was said before: then one shared word is a reason.
_BACK = re.compile(r"\b(?:remember|recall|earlier|previously|before|last\s+time"
                   r"|you\s+(?:said|told|mentioned|suggested|recommended|wrote|gave)"
                   r"|i\s+(?:said|told\s+you|mentioned|asked|wrote)"
                   r"|we\s+(?:said|discussed|talked|decided|agreed|chose|picked)"
                   r"|did\s+(?:i|we|you)|what\s+(?:was|were)|which\s+(?:was|were))\b",
                   re.IGNORECASE)
# The fewest words a sentence has for a message holding it word for word to count as its copy.
COPY_WORDS = 3
# The fewest shared words that make a reason when none of them is a name or a number.
SHARED_WORDS = 2


def sentences(text: str) -> list[tuple[str, ...]]:
    """Return the sentences of ``text``, each as its words in lower case (empty ones left out)."""
    return [words for part in _SENTENCE_END.split(text) if (words := tuple(_WORDS.findall(part.lower())))]


def names(text: str) -> set[str]:
    """Return the words of ``text`` that name something, in lower case: those written with a capital
    letter other than a sentence's first word ("Ana", "Priya", "AWS"), those holding a digit, and
    what the user calls theirs ("my wife", "our service": the word after "my" or "our")."""
    found: set[str] = set()
    for part in _SENTENCE_END.split(text):
        previous = ""
        for position, word in enumerate(_WORDS.findall(part)):
            if any(c.isdigit() for c in word) or (position > 0 and word[0].isupper()) or previous in _OWN:
                found.add(word.lower())
            previous = word.lower()
    return found


def no_reason(text: str, terms: Collection[str]) -> Callable[[str], bool]:
    """Return a test of a logged message's text: True when it is no reason to recall its turn for
    ``text``, whose words recall looks for are ``terms`` (a copy or a passing word, as above)."""
    wanted = set(terms)
    said = sentences(text)
    named = names(text) & wanted
    needed = 1 if _BACK.search(text) else SHARED_WORDS

    def test(body: str) -> bool:
        found = _WORDS.findall(body.lower())
        spaced = f" {' '.join(found)} "
        own = {word for words in said  # the words of the sentences it does not hold word for word
               if len(words) < COPY_WORDS or f" {' '.join(words)} " not in spaced for word in words}
        shared = wanted & own & set(found)
        return len(shared) < needed and not shared & named

    return test


__all__ = ["COPY_WORDS", "SHARED_WORDS", "names", "no_reason", "sentences"]
