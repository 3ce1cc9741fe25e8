"""What a user or recall asks the log's full-text index: queries that are never FTS5 syntax.

``search_query`` makes what a user typed into a query where every word must match; ``recall_query``
one where any content word may, stop words and chat filler left out. No query a user types is an
FTS5 syntax error. Only the standard library is used: this is core.
"""

from __future__ import annotations

import re

from stateless_chat.errors import LogError
from stateless_chat.sanitize import whole_characters

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WORD = re.compile(r"[^\W_]+")  # a run of letters and digits, as the unicode61 tokenizer sees a token
_SEARCH_CHUNK = re.compile(r'"([^"]*)"(\*?)|(\S+)')
_MAX_QUERY_TERMS = 64
_STOP_WORDS = frozenset(
    """a about above after again against all also am an and any anything are aren as at be because been
    before being below between both but by can cannot could couldn d did didn do does doesn doing don
    done down during each earlier else ever few for from further get got had hadn has hasn have haven
    having he hello her here hers herself hey hi him himself his how i if in into is isn it its itself
    just know let ll m me mention mentioned more most my myself no nor not now o of off ok okay on once
    one only or other ought our ours ourselves out over own please re recall remember s said same say
    shall she should shouldn so some something such t tell than thank thanks that the their theirs them
    themselves then there these they thing things think this those through to told too under until up
    us ve very was wasn we were weren what when where which while who whom why will with won would
    wouldn y yes you your yours yourself yourselves""".split()
)



def _quoted(term: str) -> str:
    """Return ``term`` as an FTS5 string: whatever it holds, it is text to match, never syntax."""
    return '"' + term.replace('"', '""') + '"'


def search_query(text: str) -> str:
    """Return the FTS5 query for what a user typed: every word must match, in any order.

    ``"a phrase"`` matches those words in a row and a trailing ``*`` matches a prefix
    (``laun*``); nothing else is syntax (``OR``, ``NEAR(``, a lone ``"`` are words or
    nothing), so no query a user types is an FTS5 syntax error. Raises ``LogError``
    when nothing in ``text`` can be searched for.
    """
    parts: list[str] = []
    for match in _SEARCH_CHUNK.finditer(CONTROL.sub(" ", whole_characters(text))):
        phrase, phrase_star, word = match.groups()
        chunk, star = (phrase, phrase_star) if word is None else (word.rstrip("*"), "*" * word.endswith("*"))
        if _WORD.search(chunk):
            parts.append(_quoted(chunk) + star)
    if not parts:
        raise LogError("search needs a word to look for, e.g. stateless-chat logs search launch code")
    return " ".join(parts[:_MAX_QUERY_TERMS])


def recall_terms(text: str) -> list[str]:
    """Return the content words of ``text`` recall looks for: lower case, each once, in order, with
    stop words, chat filler ("what", "the", "remember") and lone letters and digits ("3.8" is "3" and
    "8" to the index, each found in any list or version) left out."""
    terms: dict[str, None] = {}
    for word in _WORD.findall(whole_characters(text)):
        word = word.lower()
        if word not in _STOP_WORDS and not (len(word) == 1 and word.isascii()):
            terms.setdefault(word)
    return list(terms)[:_MAX_QUERY_TERMS]


def recall_query(text: str) -> str | None:
    """Return an FTS5 query matching any content word of ``text``, or None when it has none.

    Words are OR-ed so that a message sharing only some of them still counts (bm25 ranks
    those sharing more and rarer words higher); stop words and chat filler ("what", "the",
    "remember") are left out, so "what is the" recalls nothing.
    """
    terms = recall_terms(text)
    if not terms:
        return None
    return " OR ".join(_quoted(term) for term in terms)


__all__ = ["CONTROL", "recall_query", "recall_terms", "search_query"]
