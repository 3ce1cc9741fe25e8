"""What-if, offline: a logged conversation's turns run again under another policy, budget and
low-water mark, through the same context model and prefix-cache model as a chat, with the logged
replies and no model call.

Each logged turn is sent again through a real ``Session`` whose backend answers every request
with that turn's logged reply (``Replies``): the session fits the history to the budget,
evicts or folds, predicts what the server's cache holds, and keeps its ledger, exactly as in a
chat. What comes out, per turn: the request it would have sent, what it would have evicted or
folded, where the cache would have broken; and the bill, against what was paid for the same turns.

A turn that ran a tool loop is sent again step by step: each request is answered with the
assistant message logged for that step (its text and tool calls), each call with the result
logged for it (``LoggedTools``: nothing runs), and the tools offered are those its logged
requests offered. So a step's request is fitted to the budget like any other (what it evicts,
where the cache breaks), and the turn's bill is summed over its steps.

What it cannot know is said with the result: a summary request is answered with a stand-in (the
first words of each message it folds), so a summary's size is an estimate; images a tool gave
are not sent again; pins are those the conversation ended with; and the cache is the client's
prediction (whole messages of the previous request), not a server's report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stateless_chat.chat.session import Session
from stateless_chat.chat.values import Hooks, TurnRecord
from stateless_chat.config import Settings
from stateless_chat.core.billing import Price, TurnTokens, bill, price_for
from stateless_chat.core.messages import CacheBreak, Event, Evicted, Summarized, ToolCall
from stateless_chat.core.summary import SUMMARY_PROMPT
from stateless_chat.errors import UsageError
from stateless_chat.store.logstore import LogStore
from stateless_chat.tools.specs import ToolResult, ToolSpec
from stateless_chat.wire.request import ChatRequest
from stateless_chat.wire.scripted import Answer, Scripted, ScriptedBackend

STAND_IN_WORDS = 12  # the words of each folded message a stand-in summary keeps
_SUMMARY_MARK = SUMMARY_PROMPT.split("\n", 1)[0]
_IMAGES_MARK = "[The images the tool calls above returned"  # chat.toolsteps.images_entry


@dataclass(frozen=True)
class ReplayStep:
    """One request of a replayed turn (a tool loop sends one a step): its prompt and the cached tokens
    predicted, what fitting it evicted or folded, why the cache broke before it, and its messages."""

    step: int
    prompt_tokens: int
    cached_tokens: int
    evicted: tuple[int, ...] = ()
    summarized: tuple[int, ...] = ()
    cache_break: str | None = None
    over_budget: bool = False
    messages: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class ReplayTurn:
    """One turn sent again: its (last request's) prompt and cached tokens (ours, predicted) against the
    logged ones, and each of its requests (``steps``) against the number logged.

    ``summary_prompt_tokens`` and ``logged_summary_prompt_tokens`` are what the turn sent besides its
    last request (summaries and earlier tool steps), as the ledger counts them; ``step_cached_tokens``
    and ``logged_summary_cached_tokens`` what of those was read from the cache (predicted; logged).
    """

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
    steps: tuple[ReplayStep, ...] = ()
    logged_steps: int = 1
    step_cached_tokens: int = 0
    logged_summary_prompt_tokens: int = 0
    logged_summary_cached_tokens: int = 0


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
        return sum(t.cached_tokens + t.step_cached_tokens for t in self.turns)

    @property
    def logged_sent(self) -> int:
        return sum((t.logged_prompt_tokens or 0) + t.logged_summary_prompt_tokens for t in self.turns)

    @property
    def logged_cached(self) -> int:
        return sum((t.logged_cached_tokens or 0) + t.logged_summary_cached_tokens for t in self.turns)

    @property
    def requests(self) -> int:
        return sum(len(t.steps) for t in self.turns)

    @property
    def logged_requests(self) -> int:
        return sum(t.logged_steps for t in self.turns)

    @property
    def breaks(self) -> int:
        return sum(1 for t in self.turns for step in t.steps if step.cache_break)


class Replies:
    """What a replayed request is answered with (a ``ScriptedBackend``'s answer): the turn's logged
    steps in order (``script``: the assistant messages of its tool loop, each with its calls), then
    its logged reply (``answer``); a summary request with a stand-in made of the first words of each
    message it folds. ``on_request`` is told of each request but a summary's. Nothing leaves the
    process."""

    def __init__(self) -> None:
        self.answer = ""
        self.script: list[Scripted] = []
        self.summaries = 0
        self.on_request: Callable[[ChatRequest], None] = lambda request: None

    def __call__(self, request: ChatRequest) -> Answer:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        marked = [i for i, m in enumerate(messages) if str(m.get("content") or "").startswith(_SUMMARY_MARK)]
        if not marked:
            self.on_request(request)
            return self.script.pop(0) if self.script else self.answer
        self.summaries += 1  # the summary prompt closes a request aligned with the cache, or opens its own
        at = marked[-1]
        folded = messages[:at] if at == len(messages) - 1 else [
            {"role": "user", "content": line} for m in messages[at + 1:]
            for line in str(m.get("content") or "").splitlines()]
        return stand_in_summary(folded)


class LoggedTools:
    """The tools a replayed turn offers (``offered``: the array its logged requests offered) and what
    its calls give: each call, in order, the result logged for it (``results``). Nothing runs, and every
    call is approved (the logged result says if the user refused one)."""

    def __init__(self) -> None:
        self.offered: list[dict[str, Any]] = []
        self.results: list[str] = []

    def api_tools(self) -> list[dict[str, Any]]:
        return list(self.offered)

    def lookup(self, offered: str) -> ToolSpec | None:
        return ToolSpec("logged", offered, offered, "", {}, approve="always")

    def call(self, offered: str, arguments: str, *, timeout: float = 0.0) -> ToolResult:
        if not self.results:
            return ToolResult("(no result was logged for this call)", is_error=True)
        return ToolResult(self.results.pop(0))


@dataclass(frozen=True)
class LoggedTurn:
    """What a logged turn's requests are answered with: the assistant messages of its tool steps (each
    with its calls), the tool results, in order, and its tools array; and whether a tool gave images."""

    steps: tuple[Scripted, ...] = ()
    final_calls: tuple[ToolCall, ...] = ()  # the reply's own calls (a loop that reached its step limit)
    results: tuple[str, ...] = ()
    offered: tuple[dict[str, Any], ...] = ()
    step_completion: int = 0  # the steps' assistant messages, as logged (tokens)
    images: bool = False


def logged_turn(messages: Sequence[Mapping[str, Any]], question_id: int,
                params: Sequence[Mapping[str, Any]]) -> LoggedTurn:
    """Return what turn's requests are answered with, from its logged ``messages`` (in id order) after
    the question ``question_id``, and the ``params`` of its logged requests (the first one's tools)."""
    after: list[Mapping[str, Any]] = []
    for message in messages:
        if int(message.get("id") or 0) <= question_id:
            continue
        if message.get("role") == "user" and message.get("kind") == "turn" and not _images(message):
            break  # another exchange of the same turn (one /retry or /edit replaced)
        after.append(message)
    steps: list[Scripted] = []
    results: list[str] = []
    completion = 0
    images = False
    assistants = [m for m in after if m.get("role") == "assistant"]
    for message in assistants[:-1]:  # the last one is the turn's reply
        steps.append(Scripted(str(message.get("content") or ""), _calls(message)))
        completion += int(message.get("tokens") or 0)
    for message in after:
        if message.get("role") == "tool":
            results.append(_text(message.get("content")))
        elif message.get("role") == "user":
            images = True  # a tool's images, sent after its step's results
    tools = params[0].get("tools") if params else None
    offered = tuple(t for t in tools if isinstance(t, dict)) if isinstance(tools, list) else ()
    final = _calls(assistants[-1]) if assistants else ()
    return LoggedTurn(tuple(steps), final, tuple(results), offered, completion, images)


def _images(message: Mapping[str, Any]) -> bool:
    """Return whether ``message`` is the user message that carries a tool step's images."""
    content = message.get("content")
    return isinstance(content, list) or str(content or "").startswith(_IMAGES_MARK)


def _calls(message: Mapping[str, Any]) -> tuple[ToolCall, ...]:
    calls = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            calls.append(ToolCall(str(call.get("id") or ""), str(function.get("name") or ""),
                                  str(function.get("arguments") or "")))
    return tuple(calls)


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, Mapping))
    return str(content or "")


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
                                                     "reply_reserve", "encoding", "default_encoding",
                                                     "max_tool_steps", "tool_result_max_tokens")
                               if k in saved}
    changes.update(policy=policy, budget=budget, evict_to=evict_to, context_window=max(budget, 1),
                   recall="off", stream=False, base_url="http://replay.invalid/v1", base_urls=(), mcp={},
                   tool_images="off")
    run = settings.replace(**changes)  # ConfigError (one line) for a policy, budget or share it refuses
    model = prices_model or run.model
    price = price_for(model, settings.prices)
    result = ReplayResult(cid, policy, budget, evict_to, model)
    replies = Replies()
    tools = LoggedTools()
    events: list[Event] = []
    marks: list[int] = []  # where in ``events`` each request of the turn was sent
    records: list[TurnRecord] = []
    replies.on_request = lambda request: marks.append(len(events))
    session = Session(run, replay_backend(replies), tools=tools, hooks=Hooks(on_event=events.append),
                      on_turn=(records.append,))
    messages = store.messages(cid)
    params = store.request_params(cid)
    pinned = {m["id"] for m in messages if m.get("pinned")}
    by_turn: dict[int, list[Mapping[str, Any]]] = {}
    for message in messages:
        if message.get("id") and message.get("kind") != "summary" and "problem" not in message:
            by_turn.setdefault(int(message.get("turn") or 0), []).append(message)
    paid: list[TurnTokens] = []
    looped = imaged = 0
    for logged in store.turns(cid):
        sent = by_turn.get(logged.turn, [])
        question = next((m for m in sent if m.get("role") == "user" and m.get("kind") == "turn"), None)
        if question is None or not str(question.get("content") or "").strip():
            result.notes.append(f"turn {logged.turn} has no message to send again: left out")
            continue
        loop = logged_turn(sent, int(question["id"]), params.get(logged.turn, []))
        looped += logged.steps > 1
        imaged += loop.images
        for added in (m for m in sent if m.get("kind") == "file"):
            entry = session.conversation.new_entry(
                "user", str(added.get("content") or ""), session.measure, kind="file",
                source=added.get("source"), pinned=added["id"] in pinned)
            session.conversation = session.conversation.append(entry)
        replies.script = [*loop.steps, Scripted(logged.reply, loop.final_calls)] if loop.final_calls \
            else list(loop.steps)
        replies.answer = logged.reply
        tools.offered, tools.results = list(loop.offered), list(loop.results)
        events.clear()
        marks.clear()
        session.send(str(question["content"]))
        if question["id"] in pinned:
            session.conversation = session.conversation.pin_last_question()
        stats = session.ledger.turns[-1]
        steps = replay_steps(records[-1], events, marks, reserve=session.reserve, budget=budget)
        completion = logged.completion_tokens if logged.completion_tokens is not None else \
            session.measure_text(logged.reply)
        logged_stats = logged.stats
        result.turns.append(ReplayTurn(
            turn=logged.turn, prompt_tokens=stats.estimated_prompt_tokens,
            cached_tokens=stats.predicted_cached_tokens,
            logged_prompt_tokens=logged.prompt_tokens if logged.prompt_tokens is not None else (
                logged_stats.estimated_prompt_tokens if logged_stats else None),
            logged_cached_tokens=logged.cached_tokens if logged.cached_tokens is not None else (
                logged_stats.predicted_cached_tokens if logged_stats else None),
            completion_tokens=completion + loop.step_completion,
            evicted=tuple(i for e in events if isinstance(e, Evicted) for i in e.ids),
            summarized=tuple(i for e in events if isinstance(e, Summarized) for i in e.ids),
            summary_prompt_tokens=stats.summary_prompt_tokens,
            cache_break=next((e.cause for e in events if isinstance(e, CacheBreak)), None),
            over_budget=any(step.over_budget for step in steps),
            steps=steps, logged_steps=logged.steps,
            step_cached_tokens=sum(step.cached_tokens for step in steps[:-1]),
            logged_summary_prompt_tokens=logged_stats.summary_prompt_tokens if logged_stats else 0,
            logged_summary_cached_tokens=logged_stats.summary_cached_tokens if logged_stats else 0,
        ))
        turn = result.turns[-1]
        logged_completion = completion + (logged_stats.summary_completion_tokens if logged_stats else 0)
        paid.append(TurnTokens((turn.logged_prompt_tokens or 0) + turn.logged_summary_prompt_tokens,
                               (turn.logged_cached_tokens or 0) + turn.logged_summary_cached_tokens,
                               logged_completion, turn.logged_prompt_tokens or 0))
    if looped:
        result.notes.append(f"{looped} turn(s) ran a tool loop: each step sent again with its logged reply "
                            "and tool results (no tool was run)")
    if imaged:
        result.notes.append(f"{imaged} turn(s) had images from a tool: they are not sent again")
    if replies.summaries:
        result.notes.append(f"{replies.summaries} summary request(s) answered with a stand-in (the first "
                            f"{STAND_IN_WORDS} words of each message): the summaries' size is an estimate")
    _bill(result, session, paid, price)
    return result


def replay_steps(record: TurnRecord, events: Sequence[Event], marks: Sequence[int], *, reserve: int,
                 budget: int) -> tuple[ReplayStep, ...]:
    """Return each request of a replayed turn from its ``record`` (the bodies and their counts) and the
    ``events`` it told, ``marks`` saying where in them each request was sent: what fitting a request
    evicted or folded, and a cache break, are told before it is sent."""
    steps = []
    for index, (body, cost) in enumerate(zip(record.requests, record.costs, strict=False)):
        start = marks[index - 1] if 0 < index <= len(marks) else 0
        end = marks[index] if index < len(marks) else len(events)
        told = events[start:end]
        messages = body.get("messages")
        steps.append(ReplayStep(
            step=index + 1, prompt_tokens=cost.prompt, cached_tokens=cost.cached,
            evicted=tuple(i for e in told if isinstance(e, Evicted) for i in e.ids),
            summarized=tuple(i for e in told if isinstance(e, Summarized) for i in e.ids),
            cache_break=cost.cache_break, over_budget=cost.prompt + reserve > budget,
            messages=tuple(messages) if isinstance(messages, list) else ()))
    return tuple(steps)


def _bill(result: ReplayResult, session: Session, paid: Sequence[TurnTokens], price: Price | None) -> None:
    """Set the replay's bill, a naive full resend's, and what was paid, at ``price``."""
    replayed = [TurnTokens(t.sent, t.cached + turn.step_cached_tokens, turn.completion_tokens,
                           t.baseline_sent)
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

    yield (f"replay of {result.cid} ({len(result.turns)} turns, {result.requests} requests against "
           f"{result.logged_requests} logged) · policy {result.policy} · budget "
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
        if len(t.steps) > 1 or t.logged_steps > 1:
            for step in t.steps:
                over = " (over budget)" if step.over_budget else ""
                evicted = span(step.evicted) if step.evicted else "-"
                folded = span(step.summarized) if step.summarized else "-"
                yield (f"      step {step.step}: prompt {step.prompt_tokens:,}{over}, cached "
                       f"{step.cached_tokens:,}, {len(step.messages)} messages, evicted {evicted}, "
                       f"summarized {folded}, cache break {step.cache_break or '-'}")
            if len(t.steps) != t.logged_steps:
                yield f"      {len(t.steps)} request(s) against {t.logged_steps} logged"
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
    for turn in data["turns"]:
        for step in turn["steps"]:  # the bodies are in the log (logs show ID --request N): counted here
            step["messages"] = len(step["messages"])
    data.update(sent=result.sent, cached=result.cached, logged_sent=result.logged_sent,
                logged_cached=result.logged_cached, breaks=result.breaks, requests=result.requests,
                logged_requests=result.logged_requests)
    return data


__all__ = ["LoggedTools", "LoggedTurn", "Replies", "ReplayResult", "ReplayStep", "ReplayTurn", "lines",
           "logged_turn", "record", "replay", "replay_backend", "replay_steps"]
