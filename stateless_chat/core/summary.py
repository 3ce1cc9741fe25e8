"""The running summary: the ``summarize`` policy, folding turns, and the summary request.

``Summarize`` is a pure policy: it decides which turns to fold and calls its injected
``SummaryWriter`` once. The writer a chat uses (``chat.summarizer.Summarizer``) makes one
separate stateless request to the same endpoint with the prompt and instruction here (keep
names, constraints, decisions and open questions; the earlier summary is folded into the
next one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from stateless_chat.core.context import Candidate, DropOldest, Fit, drop_turns, entries_of
from stateless_chat.core.messages import Entry, Message, Notice, Summarized, SummaryFailed, span
from stateless_chat.errors import ChatError, RequestError

if TYPE_CHECKING:
    from collections.abc import Callable

SUMMARY_HEADER = "Summary of the earlier conversation:\n"
SUMMARY_MIN_MAX = 64  # a summary may always take at least this many tokens
ELLIPSIS = "…"
# The smallest reply a summary request asks for, even when its transcript leaves less room.
SUMMARY_MIN_REPLY = 32
# Tokens of slack in a summary request for what per-message counts cannot see exactly.
FOLD_SLACK = 16

SUMMARY_PROMPT = """SUMMARIZE-CONVERSATION
You compress the earlier part of a chat so that it can replace those messages.
Write a concise summary, in the conversation's language, that keeps:
- every name, number, identifier and fact the user gave;
- every constraint, preference or instruction the user said must hold;
- decisions made and their reasons;
- open questions and unfinished tasks.
The transcript may open with your earlier summary of even older turns (the text before the
first "user:" line): merge it in, dropping nothing it kept.
Write it as plain notes, addressed to the assistant who continues the chat.
Do not add anything that was not said."""


class SummaryWriter(Protocol):
    """Writes the running summary for the ``summarize`` policy."""

    def capacity(self, candidate: Candidate) -> int | None:
        """Return how many tokens of messages one summary request can carry (None: no limit)."""
        ...

    def write(self, candidate: Candidate, folded: Sequence[Entry]) -> str:
        """Return the new summary of ``candidate``'s summary and the ``folded`` history entries;
        raise ``ChatError`` on failure."""
        ...


class SummaryError(RequestError):
    """The summary request answered, but with nothing usable."""


def summary_message(text: str) -> Message:
    """Return the system message that carries the running summary ``text``."""
    return Message("system", SUMMARY_HEADER + text)


def summary_text(entry: Entry | None) -> str | None:
    """Return the summary text of a summary entry without its header (None without a summary)."""
    if entry is None:
        return None
    content = entry.content
    return content[len(SUMMARY_HEADER):] if content.startswith(SUMMARY_HEADER) else content


def summary_cap(budget: int) -> int:
    """Return the most tokens the running summary may take under ``budget``: a quarter of it, at
    least ``SUMMARY_MIN_MAX``. The summary request asks for no longer a reply."""
    return max(SUMMARY_MIN_MAX, budget // 4)


def transcript_line(message: Message) -> str:
    """Return ``message`` as one block of the summary request's transcript (tool calls and results
    included, so what a tool found is not lost when its turn is folded)."""
    lines = [f"{message.role}: {message.content}"] if message.content else []
    lines += [f"{message.role}: [called {call.name}({call.arguments})]" for call in message.tool_calls]
    return "\n".join(lines) or f"{message.role}:"


def _capped_summary(text: str, cap: int, counter: Callable[[Message], int]) -> Message:
    """Return the summary message for ``text``, cut (with an ellipsis) to at most ``cap`` tokens.

    The caller guarantees ``cap`` holds at least the header and the ellipsis.
    """
    text = text.strip()
    message = summary_message(text)
    if counter(message) <= cap:
        return message
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix whose message still fits the cap
        mid = (lo + hi + 1) // 2
        if counter(summary_message(text[:mid].rstrip() + ELLIPSIS)) <= cap:
            lo = mid
        else:
            hi = mid - 1
    return summary_message(text[:lo].rstrip() + ELLIPSIS)


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def turns_within(candidate: Candidate, turns: Sequence[int], limit: int | None) -> list[int]:
    """Return the longest prefix of ``turns`` whose messages take at most ``limit`` tokens, what one
    summary request can carry (all of ``turns`` when ``limit`` is None)."""
    if limit is None:
        return list(turns)
    sizes = candidate.turn_sizes()
    within: list[int] = []
    for turn in turns:
        limit -= sizes.get(turn, 0)
        if limit < 0:
            break
        within.append(turn)
    return within


@dataclass(frozen=True)
class Folded:
    """The result of folding turns into the summary: the request after it, and what it did."""

    request: Candidate
    folded: tuple[int, ...]
    event: Summarized


def fold(
    candidate: Candidate,
    turns: Sequence[int],
    writer: SummaryWriter,
    counter: Callable[[Message], int],
    *,
    cap: int,
) -> Folded:
    """Return ``candidate`` with the history of ``turns`` folded into the running summary.

    Calls ``writer.write`` once and raises what it raises. The new summary takes the old
    one's place (right after the system prompt), is cut to ``cap`` tokens (enough for the
    header and an ellipsis) and keeps the old summary's id, or takes ``candidate.next_id``.
    """
    old = candidate.summary
    folded = entries_of(candidate, turns)
    text = writer.write(candidate, folded)
    message = _capped_summary(text, cap, counter)
    new = Entry(id=old.id if old is not None else candidate.next_id, message=message,
                tokens=counter(message), turn=0, kind="summary")
    request = replace(candidate.without_turns(turns), summary=new)
    event = Summarized(
        ids=tuple(e.id for e in folded),
        summary_id=new.id,
        tokens_before=sum(e.tokens for e in folded) + (old.tokens if old is not None else 0),
        tokens_after=new.tokens,
    )
    return Folded(request, tuple(e.id for e in folded), event)


class Summarize:
    """Fold the oldest turns into the running summary when the request does not fit.

    Folds the shortest prefix of evictable turns whose removal leaves room for a summary
    of at most ``summary_cap(budget)`` tokens (less if the rest leaves less room); then it
    keeps folding down to the request's low-water mark (``candidate.target``, the rule
    drop-oldest follows too), so the next summary is several turns away and the turns
    between only append to a stable prefix, as long as the latest evictable turn stays verbatim.
    The folded messages never exceed what one summary request can carry
    (``writer.capacity``): when the prefix that must go is longer, its oldest turns are
    folded and the rest dropped. A summary longer than its cap is cut to it.

    The turns auto recall brought back for earlier requests (settled into the history, marked
    ``recalled``) go first, dropped rather than folded (they are in the log, and a folded one is in
    the summary already); folding starts only if that was not enough.

    Falls back to dropping (keeping the old summary) when the writer fails with a
    ``ChatError`` (emitting ``SummaryFailed``), when no room is left for any summary, or
    when the oldest evictable turn alone is more than one summary request can carry.
    Without a writer it simply drops. Any other exception is a bug and propagates.
    """

    name = "summarize"
    evicts = True

    def __init__(self, writer: SummaryWriter | None, counter: Callable[[Message], int]) -> None:
        self.writer = writer
        self.counter = counter

    def _drop_instead(self, candidate: Candidate, turns: Sequence[int], why: str) -> Fit:
        result = DropOldest().fit(candidate)
        if not turns:
            return result
        return replace(result, events=(Notice(f"{why}: dropped the oldest turns instead"), *result.events))

    def fit(self, candidate: Candidate) -> Fit:
        if candidate.fits:
            return Fit(candidate)
        # The turns auto recall brought back for earlier requests leave first, dropped, not folded:
        # they are in the log (and, folded once already, in the summary); this may be enough.
        left, dropped, told = drop_turns(candidate, recalled_only=True)
        if not dropped:
            return self._fit(candidate)
        if left.size <= left.target:
            return Fit(left, dropped=dropped, events=told)
        rest = self._fit(left)
        return replace(rest, dropped=dropped + rest.dropped, events=(*told, *rest.events))

    def _fit(self, candidate: Candidate) -> Fit:
        writer = self.writer
        budget = candidate.budget
        if candidate.fits:
            return Fit(candidate)
        if writer is None:
            return DropOldest().fit(candidate)
        turns = candidate.evictable_turns()
        rest = replace(candidate, summary=None)
        unmovable = rest.without_turns(turns)
        room = budget - unmovable.size
        if not turns or room < self.counter(summary_message(ELLIPSIS)):
            return self._drop_instead(candidate, turns, "no room left for a summary")
        cap = min(summary_cap(budget), room)
        target = candidate.target
        sizes = candidate.turn_sizes()
        size = rest.size
        chosen: list[int] = []
        # What still does not fit past what one summary request can carry is dropped below.
        for turn in turns_within(candidate, turns, writer.capacity(candidate)):
            # Once it fits, fold more only toward the target, and keep the latest turn verbatim.
            if size + cap <= budget and (size + cap <= target or turn == turns[-1]):
                break
            size -= sizes[turn]
            chosen.append(turn)
        if not chosen and size + cap > budget:
            return self._drop_instead(candidate, turns,
                                      "the oldest turn is too long to summarize within the budget")
        try:
            done = fold(candidate, chosen, writer, self.counter, cap=cap)
        except ChatError as error:  # the request must still go out: drop instead
            result = DropOldest().fit(candidate)
            return replace(result, events=(SummaryFailed(reason=_first_line(error)), *result.events))
        # Drops the turns past the fold limit; otherwise the choice of the prefix and the cap make
        # this fit already, and dropping is a safety net for a counter not monotone in the text length.
        fitted, dropped, events = drop_turns(done.request)
        return Fit(fitted, dropped=dropped, folded=done.folded, events=(done.event, *events))


def summary_instruction(candidate: Candidate, folded: Sequence[Entry]) -> str:
    """Return the last message of a cache-aligned summary request: which messages above to fold."""
    ids = {e.id for e in folded}
    positions = [index for index, entry in enumerate(candidate.history + candidate.recalled, start=1)
                 if entry.id in ids]
    earlier = "the earlier summary (the system message that begins with its heading) and " \
        if candidate.summary is not None else ""
    return (f"{SUMMARY_PROMPT}\n\nFold into one new summary {earlier}conversation messages "
            f"{span(positions, mark='')} above (numbered from 1, the first message after the system "
            "messages). Do not answer the conversation: write only the summary.")
