"""What-if, offline: a logged conversation's turns run again under another policy, budget and
low-water mark, through the same context model and prefix-cache model as a chat, with the logged
replies and no model call.

Each logged turn is sent again through a real ``Session`` whose backend answers every request
with that turn's logged reply (``Replies``): the session fits the history to the budget,
evicts or folds, predicts what the server's cache holds, and keeps its ledger, exactly as in a
chat. What comes out, per turn: the request it would have sent, what it would have evicted or
folded, where the cache would have broken; and the bill, against what was paid for the same turns.

What it cannot know is said with the result: a summary request is answered with a stand-in (the
first words of each message it folds), so a summary's size is an estimate; a tool loop's steps
are not replayed (its final reply is); pins are those the conversation ended with; and the cache
is the client's prediction (whole messages of the previous request), not a server's report.
Only the core is used.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stateless_chat.chat.session import Session
from stateless_chat.chat.values import Hooks
from stateless_chat.config import Settings
from stateless_chat.core.billing import Price, TurnTokens, bill, price_for
from stateless_chat.core.messages import CacheBreak, Event, Evicted, Summarized
from stateless_chat.core.summary import SUMMARY_PROMPT
from stateless_chat.errors import UsageError
from stateless_chat.store.logstore import LogStore
from stateless_chat.wire.request import ChatRequest
from stateless_chat.wire.scripted import ScriptedBackend

STAND_IN_WORDS = 12  # the words of each folded message a stand-in summary keeps
_SUMMARY_MARK = SUMMARY_PROMPT.split("\n", 1)[0]


@dataclass(frozen=True)
class ReplayTurn:
    """One turn sent again: its prompt and cached tokens (ours, predicted) against the logged ones."""

    turn: int
    prompt_tokens: int
    cached_tokens: int
    logged_prompt_tokens: int | None
    logged_cached_tokens: int | None
    completion_tokens: int
    evicted: tuple[int, ...] = ()
    summarized: tuple[int, ...] = ()
    summary_prompt_tokens: int = 0
    cache_break: str | None = None
    over_budget: bool = False


@dataclass
class ReplayResult:
    """The replayed conversation: its turns, the bill (None without a price) and what was paid."""

    cid: str
    policy: str
    budget: int
    evict_to: float
    price_model: str
    turns: list[ReplayTurn] = field(default_factory=list)
    cost: float | None = None
    paid: float | None = None
    naive_cost: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(t.prompt_tokens + t.summary_prompt_tokens for t in self.turns)

    @property
    def cached(self) -> int:
        return sum(t.cached_tokens for t in self.turns)

    @property
    def logged_sent(self) -> int:
        return sum(t.logged_prompt_tokens or 0 for t in self.turns)

    @property
    def logged_cached(self) -> int:
        return sum(t.logged_cached_tokens or 0 for t in self.turns)

    @property
    def breaks(self) -> int:
        return sum(1 for t in self.turns if t.cache_break)


class Replies:
    """What a replayed request is answered with (a ``ScriptedBackend``'s answer): the turn's logged
    reply (``answer``), or for a summary request a stand-in made of the first words of each message
    it folds. Nothing leaves the process."""

    def __init__(self) -> None:
        self.answer = ""
        self.summaries = 0

    def __call__(self, request: ChatRequest) -> str:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        marked = [i for i, m in enumerate(messages) if str(m.get("content") or "").startswith(_SUMMARY_MARK)]
        if not marked:
            return self.answer
        self.summaries += 1  # the summary prompt closes a request aligned with the cache, or opens its own
        at = marked[-1]
        folded = messages[:at] if at == len(messages) - 1 else [
            {"role": "user", "content": line} for m in messages[at + 1:]
            for line in str(m.get("content") or "").splitlines()]
        return stand_in_summary(folded)


def replay_backend(replies: Replies) -> ScriptedBackend:
    """Return the backend a replay sends through: it answers from ``replies`` and reports no usage (the
    replay's counts are the client's own)."""
    return ScriptedBackend(replies, name="replay", report_usage=False)


def stand_in_summary(messages: Sequence[Mapping[str, Any]]) -> str:
    """Return a stand-in for the summary a model would write of ``messages``: the first words of each
    user and assistant message (what a summary's size is estimated from)."""
    lines = []
    for message in messages:
        content = message.get("content")
        if message.get("role") in ("user", "assistant") and isinstance(content, str) and content.strip():
            lines.append(" ".join(content.split()[:STAND_IN_WORDS]))
    return "\n".join(lines) or "(nothing to summarize)"


def replay(store: LogStore, cid: str, settings: Settings, *, policy: str, budget: int, evict_to: float,
           prices_model: str | None = None) -> ReplayResult:
    """Return conversation ``cid`` replayed with ``policy``, ``budget`` and ``evict_to`` (the rest of
    the settings as it was left), billed at ``prices_model``'s price (default: its own model's)."""
    restored = store.restore(cid)
    if restored is None:
        raise UsageError(f"conversation {cid} has nothing logged to replay")
    saved = restored.settings
    changes: dict[str, Any] = {k: saved[k] for k in ("model", "system", "temperature", "max_tokens",
                                                     "reply_reserve", "encoding", "default_encoding")
                               if k in saved}
    changes.update(policy=policy, budget=budget, evict_to=evict_to, context_window=max(budget, 1),
                   recall="off", stream=False, base_url="http://replay.invalid/v1", base_urls=(), mcp={})
    run = settings.replace(**changes)  # ConfigError (one line) for a policy, budget or share it refuses
    model = prices_model or run.model
    price = price_for(model, settings.prices)
    result = ReplayResult(cid, policy, budget, evict_to, model)
    replies = Replies()
    events: list[Event] = []
    session = Session(run, replay_backend(replies), hooks=Hooks(on_event=events.append))
    messages = store.messages(cid)
    pinned = {m["id"] for m in messages if m.get("pinned")}
    by_turn: dict[int, list[Mapping[str, Any]]] = {}
    for message in messages:
        if message.get("id") and message.get("kind") != "summary" and "problem" not in message:
            by_turn.setdefault(int(message.get("turn") or 0), []).append(message)
    paid: list[TurnTokens] = []
    stepped = 0
    for logged in store.turns(cid):
        sent = by_turn.get(logged.turn, [])
        question = next((m for m in sent if m.get("role") == "user" and m.get("kind") == "turn"), None)
        if question is None or not str(question.get("content") or "").strip():
            result.notes.append(f"turn {logged.turn} has no message to send again: left out")
            continue
        stepped += logged.steps > 1
        for added in (m for m in sent if m.get("kind") == "file"):
            entry = session.conversation.new_entry(
                "user", str(added.get("content") or ""), session.measure, kind="file",
                source=added.get("source"), pinned=added["id"] in pinned)
            session.conversation = session.conversation.append(entry)
        replies.answer = logged.reply
        events.clear()
        session.send(str(question["content"]))
        if question["id"] in pinned:
            session.conversation = session.conversation.pin_last_question()
        stats = session.ledger.turns[-1]
        completion = logged.completion_tokens if logged.completion_tokens is not None else \
            session.measure_text(logged.reply)
        result.turns.append(ReplayTurn(
            turn=logged.turn, prompt_tokens=stats.estimated_prompt_tokens,
            cached_tokens=stats.predicted_cached_tokens,
            logged_prompt_tokens=logged.prompt_tokens if logged.prompt_tokens is not None else (
                logged.stats.estimated_prompt_tokens if logged.stats else None),
            logged_cached_tokens=logged.cached_tokens if logged.cached_tokens is not None else (
                logged.stats.predicted_cached_tokens if logged.stats else None),
            completion_tokens=completion,
            evicted=tuple(i for e in events if isinstance(e, Evicted) for i in e.ids),
            summarized=tuple(i for e in events if isinstance(e, Summarized) for i in e.ids),
            summary_prompt_tokens=stats.summary_prompt_tokens,
            cache_break=next((e.cause for e in events if isinstance(e, CacheBreak)), None),
            over_budget=stats.estimated_prompt_tokens + session.reserve > budget,
        ))
        logged_prompt = result.turns[-1].logged_prompt_tokens or 0
        summary = logged.stats.summary_prompt_tokens if logged.stats else 0
        paid.append(TurnTokens(logged_prompt + summary, result.turns[-1].logged_cached_tokens or 0,
                               completion, logged_prompt))
    if stepped:
        result.notes.append(f"{stepped} turn(s) ran a tool loop: their steps are not replayed, their final "
                            "reply is")
    if replies.summaries:
        result.notes.append(f"{replies.summaries} summary request(s) answered with a stand-in (the first "
                            f"{STAND_IN_WORDS} words of each message): the summaries' size is an estimate")
    _bill(result, session, paid, price)
    return result


def _bill(result: ReplayResult, session: Session, paid: Sequence[TurnTokens], price: Price | None) -> None:
    """Set the replay's bill, a naive full resend's, and what was paid, at ``price``."""
    replayed = [TurnTokens(t.sent, t.cached, turn.completion_tokens, t.baseline_sent)
                for t, turn in zip(session.ledger.turns, result.turns, strict=True)]
    ours = bill(replayed, price)
    result.cost, result.naive_cost = ours.cost, ours.naive_cost
    result.paid = bill(paid, price).cost
    if price is None:
        result.notes.append(f"no price for {result.price_model}: give --prices MODEL (a model with a price, "
                            "built in or in [prices])")


def _lines(result: ReplayResult) -> Iterator[str]:
    from stateless_chat.core.billing import dollars
    from stateless_chat.core.messages import span

    yield (f"replay of {result.cid} ({len(result.turns)} turns) · policy {result.policy} · budget "
           f"{result.budget:,} · evict to {result.evict_to:g} · prices of {result.price_model}; no model was "
           "called")
    yield "turn  prompt (replay / logged)  cached (replay / logged)  evicted  summarized  cache break"
    for t in result.turns:
        logged = "-" if t.logged_prompt_tokens is None else f"{t.logged_prompt_tokens:,}"
        cached = "-" if t.logged_cached_tokens is None else f"{t.logged_cached_tokens:,}"
        over = " (over budget)" if t.over_budget else ""
        yield (f"{t.turn:>4}  {t.prompt_tokens:,} / {logged}{over}  {t.cached_tokens:,} / {cached}  "
               f"{span(t.evicted) if t.evicted else '-'}  {span(t.summarized) if t.summarized else '-'}  "
               f"{t.cache_break or '-'}")
    yield (f"total: prompt {result.sent:,} ({result.cached:,} cached) against {result.logged_sent:,} "
           f"({result.logged_cached:,} cached) logged; {result.breaks} cache break(s)")
    if result.cost is not None and result.paid is not None:
        ratio = f" ({result.cost / result.paid:.2f}×)" if result.paid else ""
        naive = "" if result.naive_cost is None else f"; a naive full resend {dollars(result.naive_cost)}"
        yield f"bill: {dollars(result.cost)}{ratio} against {dollars(result.paid)} paid{naive}"
    for note in result.notes:
        yield f"note: {note}"


def lines(result: ReplayResult) -> list[str]:
    """Return the replay as lines: a heading, one line per turn, the totals, the bill, the notes."""
    return list(_lines(result))


def record(result: ReplayResult) -> dict[str, Any]:
    """Return the replay as a JSON-ready record."""
    from dataclasses import asdict

    data = asdict(result)
    data.update(sent=result.sent, cached=result.cached, logged_sent=result.logged_sent,
                logged_cached=result.logged_cached, breaks=result.breaks)
    return data


__all__ = ["Replies", "ReplayResult", "ReplayTurn", "lines", "record", "replay", "replay_backend"]
