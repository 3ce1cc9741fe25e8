"""Slash commands: a registry of handlers that read or change the session and return data.

Handlers never print. Each returns a ``Result`` value (text lines, a history table,
a token breakdown, a request body, ...) that ``render.py`` turns into terminal
output, so the same handler serves the REPL and the tests. A bad argument raises
``CommandError`` before anything changes.
"""

from __future__ import annotations

import difflib
import importlib
import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stateless_chat.app import App
from stateless_chat.chat.meter import message_from_api
from stateless_chat.chat.session import Session
from stateless_chat.core.billing import dollars
from stateless_chat.core.history import Conversation
from stateless_chat.core.ledger import Ledger
from stateless_chat.core.messages import SLOT_KINDS, Entry, Event, Message, ToolCall, describe, span
from stateless_chat.core.models import family_of
from stateless_chat.core.policies import POLICIES
from stateless_chat.core.preview import Preview, preview
from stateless_chat.core.tokens import REPLY_PRIMING
from stateless_chat.errors import ChatError, CommandError
from stateless_chat.sensitive import secret_reason
from stateless_chat.store import persist
from stateless_chat.workspace.textfiles import MAX_FILE_BYTES, read_text_file  # noqa: F401 - /file's rules

# ---- results ------------------------------------------------------------------


@dataclass(frozen=True)
class Lines:
    """Plain text lines for the user, after the events the command caused (shown as events are)."""

    lines: tuple[str, ...]
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class HistoryRow:
    id: int
    role: str
    tokens: int
    pinned: bool
    state: str  # "sent", "evicted", "summarized", "removed", "summary", "system"
    first_line: str
    kind: str = "turn"
    cut: bool = False  # a reply that stopped at the length limit


@dataclass(frozen=True)
class MemoryRow:
    """One standing note as /history shows it, in the slot of its own before the messages."""

    label: str  # m1, m2 ...
    tokens: int
    source: int | None
    text: str


@dataclass(frozen=True)
class HistoryView:
    rows: tuple[HistoryRow, ...]
    label: str  # "" for exact counts, "≈" for estimates
    hidden_evicted: int = 0
    memory: tuple[MemoryRow, ...] = ()  # the standing notes, sent right after the system prompt
    memory_sent: bool = True


@dataclass(frozen=True)
class HelpView:
    """The list of commands: each one's usage beside what it does, then notes on the keys. Shown as
    two columns, so that a description too long for the terminal wraps within its own column."""

    rows: tuple[tuple[str, str], ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class MessageView:
    id: int
    role: str
    tokens: int
    state: str
    content: str
    calls: tuple[str, ...] = ()  # the tool calls an assistant message asks for, one line each
    cut: bool = False


@dataclass(frozen=True)
class TokensView:
    """The next request, part by part, against the budget; plus session totals."""

    parts: tuple[tuple[str, int], ...]
    total: int
    budget: int
    label: str
    sent_total: int
    baseline_total: int
    turns: int
    cache_share: float = 0.0  # of the next request, predicted to repeat the last one
    cache_cause: str | None = None  # why it will not start with the whole last request
    cached_total: int = 0  # prompt tokens of the session read from the server's cache
    cached_predicted: bool = False  # some of cached_total is our prediction (the server did not say)
    cost: str = ""  # the session's bill, when the model has a price
    comparison: str = ""  # the session's total against resending everything (``baseline_words``)
    eviction: str = ""  # what the next eviction will take, and when (eviction_line)
    counting: str = ""  # how the counts are made (exact, calibrated, an estimate) and how well they held
    budget_source: str = ""  # where a budget below the configured one came from (a learned limit)


@dataclass(frozen=True)
class RawView:
    body: dict[str, Any]
    size: str = ""  # the request's tokens against the budget, and how they were counted


@dataclass(frozen=True)
class StatRow:
    """One turn of /stats: prompt tokens sent and cached, the no-eviction baseline, what evicted."""

    turn: int
    sent: int
    baseline: int
    evictions: int
    cached: int  # summary requests included: as the server said, else as we predicted
    reported_cached: int | None  # what the server said of the chat request (None: it did not say)
    predicted: int  # the prefix we predicted the server could reuse
    cache_break: str | None


@dataclass(frozen=True)
class StatsView:
    rows: tuple[StatRow, ...]
    sent_total: int
    baseline_total: int
    cached_total: int = 0
    cost: str = ""
    cached_predicted: bool = False  # some of cached_total is our prediction (the server did not say)
    comparison: str = ""  # the total against resending everything (``baseline_words``)


@dataclass(frozen=True)
class Send:
    """Send ``text`` as a user message (``/retry``, ``/edit``, ``//text``).

    ``base``, when set, is the conversation the message is sent from (the last exchange
    removed, for ``/retry`` and ``/edit``): the caller puts it in place just before
    sending and puts the old conversation back if the turn fails, so a failed retry
    changes nothing.
    """

    text: str
    note: str = ""
    base: Conversation | None = None
    pin: bool = False  # the turn it replaces was pinned: pin the new message once it is answered


@dataclass(frozen=True)
class Prefill:
    """Put ``text`` in the next prompt for the user to edit (``/edit`` without ``$EDITOR``).

    When the user sends it and the conversation is still ``before``, it is sent from
    ``base`` (the last exchange removed), like ``Send.base``.
    """

    text: str
    before: Conversation
    base: Conversation
    note: str = ""
    pin: bool = False


@dataclass(frozen=True)
class Exit:
    """Leave the REPL."""


Result = (Lines | HelpView | HistoryView | MessageView | TokensView | RawView | StatsView | Send | Prefill
          | Exit)
Handler = Callable[[Session, str], Result]
# A handler that needs more of the chat than its session: the log (/save, /load, /recall QUERY).
AppHandler = Callable[[App, str], Result]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    handler: Handler | None
    arg_choices: Callable[[App], Sequence[str]] | None = field(default=None)  # completion, in the chat
    paths: bool = False  # the argument is a file path (the REPL completes it)
    app_handler: AppHandler | None = None

    def run(self, app: App, arg: str) -> Result:
        """Return the result of this command for ``arg`` in ``app``'s chat."""
        if self.app_handler is not None:
            return self.app_handler(app, arg)
        assert self.handler is not None
        return self.handler(app.session, arg)


# Modules of their own whose commands register themselves when imported. Each imports this module,
# so this one cannot import them in turn; the registry imports them the first time it is read instead,
# so that every command is there whatever was imported first (the REPL, a test, a tool).
COMMAND_MODULES = ("stateless_chat.ui.context_commands", "stateless_chat.ui.mcpcommands",
                   "stateless_chat.ui.memorycommands")


class Registry(MutableMapping[str, Command]):
    """The commands by name; reading it loads ``COMMAND_MODULES`` first (registering does not)."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in COMMAND_MODULES:
                importlib.import_module(module)

    def __getitem__(self, name: str) -> Command:
        self._load()
        return self._commands[name]

    def __setitem__(self, name: str, found: Command) -> None:
        self._commands[name] = found

    def __delitem__(self, name: str) -> None:
        del self._commands[name]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(self._commands)

    def __len__(self) -> int:
        self._load()
        return len(self._commands)


REGISTRY = Registry()


def command(
    name: str,
    usage: str,
    help: str,
    *,
    choices: Callable[[Session], Sequence[str]] | None = None,
    paths: bool = False,
) -> Callable[[Handler], Handler]:
    """Register ``handler`` as ``/name``; ``usage`` shows its arguments, ``help`` one line of help."""

    def register(handler: Handler) -> Handler:
        of_app = None if choices is None else (lambda app: choices(app.session))
        REGISTRY[name] = Command(name, usage, help, handler, of_app, paths)
        return handler

    return register


def app_command(
    name: str,
    usage: str,
    help: str,
    *,
    choices: Callable[[App], Sequence[str]] | None = None,
    paths: bool = False,
) -> Callable[[AppHandler], AppHandler]:
    """Register ``handler`` as ``/name`` like ``command``, for a handler given the whole chat (``App``)."""

    def register(handler: AppHandler) -> AppHandler:
        REGISTRY[name] = Command(name, usage, help, None, choices, paths, app_handler=handler)
        return handler

    return register


def live_ids(session: Session) -> list[str]:
    """Return the numbers of the live messages, newest first (completion choices)."""
    return [str(e.id) for e in reversed(session.conversation.live)]


def evicted_ids(session: Session) -> list[str]:
    """Return the numbers of the evicted messages, newest first (completion choices)."""
    return [str(number) for number in reversed(session.conversation.evicted.ids())]


def all_ids(session: Session) -> list[str]:
    """Return the number of every message /history all shows, newest first (completion choices)."""
    return [str(e.id) for e in reversed(session.conversation.all_entries()) if e.id > 0]


# ---- parsing ----------------------------------------------------------------------


def is_command(line: str) -> bool:
    """Return whether ``line`` is a slash command (``//text`` is a message starting with ``/``)."""
    stripped = line.lstrip()
    return stripped.startswith("/") and not stripped.startswith("//")


def as_typed(text: str) -> str:
    """Return the prompt line that sends ``text`` as a message: a leading ``/`` is doubled, so the
    line is not taken for a command (``dispatch`` turns ``//text`` back into ``/text``)."""
    return "/" + text.lstrip() if text.lstrip().startswith("/") else text


def dispatch(app: App, line: str) -> Result:
    """Run the slash command in ``line`` and return its result.

    Raises ``CommandError`` for an unknown command (with a suggestion) or a bad argument;
    a ``ChatError`` from the handler propagates with its message folded onto one line.
    Nothing changes on error.
    """
    stripped = line.strip()
    if stripped.startswith("//"):
        return Send(stripped[1:])
    words = stripped[1:].split(maxsplit=1)  # any whitespace (tab, newline) ends the name
    name = words[0].lower() if words else ""
    arg = words[1] if len(words) > 1 else ""
    found = REGISTRY.get(name)
    if found is None:
        close = difflib.get_close_matches(name, list(REGISTRY), n=1, cutoff=0.6)
        hint = f"; did you mean /{close[0]}?" if close else "; /help lists commands"
        raise CommandError(f"unknown command /{name}{hint}")
    try:
        return found.run(app, arg.strip())
    except ChatError as error:
        # Errors are shown as one line, but they may quote a multi-line argument.
        if "\n" in str(error) or "\r" in str(error):
            raise type(error)(" ".join(str(error).split())) from error
        raise
    except (ValueError, OSError) as error:
        raise CommandError(" ".join(f"/{name}: {error}".split())) from error


def parse_id(session: Session, text: str, *, usage: str) -> int:
    """Return the message number in ``text``; CommandError when it is not one /history shows."""
    value = text.strip().lstrip("#")
    if not value.isdigit():
        raise CommandError(f"usage: {usage} (N is a number from /history)")
    number = int(value)
    session.conversation.find(number)
    return number


def parse_range(session: Session, text: str, *, usage: str) -> list[int]:
    """Return the message numbers in ``N`` or ``N-M``; every one must exist."""
    first, sep, last = text.strip().partition("-")
    if not sep:
        return [parse_id(session, first, usage=usage)]
    low, high = parse_id(session, first, usage=usage), parse_id(session, last, usage=usage)
    if low > high:
        raise CommandError(f"usage: {usage}: the range {low}-{high} runs backwards")
    return list(range(low, high + 1))


def split_args(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as error:
        raise CommandError(f"cannot read the arguments: {error}") from error


# ---- views ------------------------------------------------------------------------


def first_line(text: str, width: int = 60) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def call_line(call: ToolCall) -> str:
    """Return one tool call as /history and /show show it: ``→ name {arguments}``."""
    return f"→ {call.name} {call.arguments}"


def summary_line(entry: Entry) -> str:
    """Return the first line /history shows for ``entry``: its text, else its tool calls."""
    message = entry.message
    if message.role == "tool":
        return first_line("← " + message.text)
    if not message.text and message.tool_calls:
        return first_line(", ".join(call_line(call) for call in message.tool_calls))
    return first_line(message.text)


def slot_line(entry: Entry) -> str:
    """Return the first line /history shows for an entry of a context slot: what it holds."""
    if entry.kind == "instructions":
        return first_line(f"AGENTS.md: {entry.source}")
    if entry.kind == "skills":
        names = [line[2:].partition(":")[0] for line in entry.content.splitlines() if line.startswith("- ")]
        return first_line(f"{len(names)} skill(s): {', '.join(names)}")
    if entry.kind == "skill":
        return first_line(f"skill {entry.source}")
    return first_line(entry.source or entry.content)


def listed_entries(conversation: Conversation, *, include_evicted: bool) -> list[Entry]:
    """Return the entries ``/history`` lists, in the order the next request sends them: the system
    prompt and the context slots (instructions, skills), the summary, the history, the recalled
    entries (sent right before the new message, whatever their numbers), then the retrieved
    documents. With ``include_evicted`` the evicted originals are listed too, each among the history
    by its number (the place it had there). The standing-memory block has no message number
    (``/memory`` lists its notes, and /history shows them in a table of their own), so it is not a
    row."""
    head = [e for e in conversation.head if e.kind != "memory"]
    history = sorted(conversation.history + conversation.evicted, key=lambda e: e.id) if include_evicted \
        else list(conversation.history)
    return head + history + list(conversation.recalled) + list(conversation.retrieved)


def history_rows(session: Session, *, include_evicted: bool) -> tuple[list[HistoryRow], int]:
    """Return the rows of ``/history`` (see ``listed_entries``) and how many evicted ones it leaves out."""
    conversation = session.conversation
    rows = [HistoryRow(entry.id, entry.role, entry.tokens, entry.pinned or entry.kind in SLOT_KINDS,
                       conversation.state(entry), slot_line(entry) if entry.kind in SLOT_KINDS
                       else summary_line(entry), entry.kind, entry.cut)
            for entry in listed_entries(conversation, include_evicted=include_evicted)]
    hidden = 0 if include_evicted else len(conversation.evicted)
    return rows, hidden


# ---- the commands --------------------------------------------------------------------


@command("help", "/help [command]", "list commands, or show one command's help")
def _help(session: Session, arg: str) -> Result:
    if arg:
        name = arg.lstrip("/").lower()
        found = REGISTRY.get(name)
        if found is None:
            raise CommandError(f"no command /{name}; /help lists commands")
        return Lines((found.usage, f"  {found.help}"))
    from stateless_chat.ui.docs import page

    rows = tuple((c.usage, c.help) for c in sorted(REGISTRY.values(), key=lambda c: c.name))
    return HelpView(rows, (
        "",
        "Enter sends; Esc-Enter (Alt-Enter) inserts a newline; Ctrl-C cancels a reply or clears the line; "
        "Ctrl-D leaves. Start a message with // to send text that begins with /.",
        f"Every command in full: {page('commands.md')}",
    ))


@command("exit", "/exit", "leave the chat")
def _exit(session: Session, arg: str) -> Result:
    return Exit()


@command("quit", "/quit", "leave the chat")
def _quit(session: Session, arg: str) -> Result:
    return Exit()


@command("history", "/history [all]", "list the messages the next request sends (all: with evicted ones)",
         choices=lambda session: ["all"])
def _history(session: Session, arg: str) -> Result:
    if arg not in ("", "all"):
        raise CommandError("usage: /history [all]")
    rows, hidden = history_rows(session, include_evicted=arg == "all")
    conversation = session.conversation
    notes = tuple(MemoryRow(n.label, n.tokens, n.source, first_line(n.text))
                  for n in conversation.memory.notes)
    sent = conversation.memory_block is not None
    return HistoryView(tuple(rows), session.counter.label, hidden, notes, sent)


@command("show", "/show N", "show message N in full", choices=all_ids)
def _show(session: Session, arg: str) -> Result:
    entry = session.conversation.find(parse_id(session, arg, usage="/show N"))
    return MessageView(entry.id, entry.role, entry.tokens, session.conversation.state(entry), entry.content,
                       tuple(call_line(call) for call in entry.message.tool_calls), entry.cut)


@command("pin", "/pin N", "never evict message N (its whole turn stays)", choices=live_ids)
def _pin(session: Session, arg: str) -> Result:
    number = parse_id(session, arg, usage="/pin N")
    session.pin(number)
    return Lines((f"pinned #{number}: it is sent with every request and never evicted",))


@command("unpin", "/unpin N", "let message N be evicted again", choices=live_ids)
def _unpin(session: Session, arg: str) -> Result:
    number = parse_id(session, arg, usage="/unpin N")
    session.pin(number, False)
    return Lines((f"unpinned #{number}",))


def next_eviction(session: Session) -> Preview:
    """Return what the next eviction of ``session``'s conversation would take (``preview``)."""
    budget = session.budget
    candidate = session.conversation.candidate(budget=budget, reserve=session.reserve,
                                               tools=session.tools_tokens(session.tools_offered()),
                                               low_water=session.low_water(budget))
    return preview(candidate, session.settings.policy)


def eviction_line(found: Preview) -> str:
    """Return the next eviction in one line (``/tokens``)."""
    if not found.evicts:
        return "next eviction: none (policy none sends a request over the budget whole, with a warning)"
    if found.stuck is not None:
        return f"next eviction: nothing can go ({found.stuck})"
    how = "fold" if found.policy == "summarize" else "drop"
    turns = f"turn {found.turns[0].turn}" if len(found.turns) == 1 else \
        f"turns {found.turns[0].turn}-{found.turns[-1].turn}"
    return (f"next eviction: in ~{max(found.room, 0):,} tokens, {found.policy} will {how} {turns} "
            f"({len(found.turns)} turn(s), ~{found.tokens:,} tokens); /preview lists them")


def tokens_view(session: Session, text: str = "") -> TokensView:
    """Return the next request part by part; with ``text``, the request that message would send (with
    what recall and the documents would bring for it; fitted later, as ``/raw TEXT`` is)."""
    conversation = session.conversation
    framing = session.framing()
    # what any next message adds besides its text
    message = ("new message framing", session.measure(Message("user", "")))
    if text:
        plan = session.plan(text, summarize=False)
        conversation = plan.base
        message = ("this message", sum(e.tokens for e in plan.pending))
    system = conversation.system.tokens if conversation.system else 0
    memory = conversation.memory_block.tokens if conversation.memory_block else 0
    summary = conversation.summary.tokens if conversation.summary else 0
    pins = sum(e.tokens for e in conversation.history if e.pinned)
    turns = sum(e.tokens for e in conversation.history if not e.pinned)
    recalled = sum(e.tokens for e in conversation.recalled)
    slots = conversation.slot_entries()
    # The context slots show only when they hold something: a chat without them reads as before.
    context = tuple((name, size) for name, size in (
        ("instructions", sum(e.tokens for e in slots if e.kind == "instructions")),
        ("skills index", sum(e.tokens for e in slots if e.kind == "skills")),
        ("active skills", sum(e.tokens for e in slots if e.kind == "skill")),
    ) if size)
    retrieved = sum(e.tokens for e in conversation.retrieved)
    parts = (
        ("system", system),
        *context,
        ("standing memory", memory),
        ("pinned", pins),
        ("summary", summary),
        ("turns", turns),
        ("recalled", recalled),
        *((("documents", retrieved),) if retrieved else ()),
        ("tools", session.tools_tokens(session.tools_offered())),
        message,
        ("reply priming" if framing == REPLY_PRIMING else "request framing (the chat template's)", framing),
        ("reply reserve", session.reserve),
    )
    total = sum(size for _, size in parts)
    ledger = session.ledger
    cache = session.cache_prediction()
    return TokensView(parts, total, session.budget, session.counter.label, ledger.sent, ledger.baseline,
                      len(ledger.turns), cache.share, cache.cause, ledger.cached, not ledger.cache_reported,
                      bill_line(session), baseline_words(ledger), eviction_line(next_eviction(session)),
                      session.counter.how(), learned_source(session))


def learned_source(session: Session) -> str:
    """Return where the session's budget came from when a learned limit holds it below the configured one."""
    learned = session.learned_budget
    if learned is None or learned > session.settings.effective_budget:
        return ""
    return session.learned_source or "learned from the server's refusal in this chat"


def request_size_line(session: Session, body: Mapping[str, Any]) -> str:
    """Return the prompt tokens of the request ``body`` against the budget, counted as the session counts
    (its counter: the server's tokenizer, a calibration, an estimate), and how."""
    messages = [message_from_api(m) for m in body.get("messages") or () if isinstance(m, Mapping)]
    leading = bool(messages) and messages[0].role == "system"
    framing = session.counter.request_tokens(leading) if session.exact else REPLY_PRIMING
    tools = session.tools_tokens(body.get("tools") or ())
    prompt = sum(session.measure(m) for m in messages) + framing + tools
    return (f"prompt {session.counter.label}{prompt:,} tokens + {session.reserve:,} held for the reply, "
            f"budget {session.budget:,}; counted: {session.counter.how()}")


def baseline_words(ledger: Ledger) -> str:
    """Return how the tokens sent compare with resending everything, never evicting: the share saved,
    or why there is none to show. The no-eviction figure is our count scaled to the server's, so with
    a server that counts differently (a chat template's own text, a tool loop's requests) it can come
    out below what was sent: that is said as such, never as a negative saving."""
    if not any(t.evictions for t in ledger.turns):
        return "with nothing evicted: every request resent the whole conversation"
    sent, baseline = ledger.sent, ledger.baseline
    if baseline > sent:
        return (f"vs {baseline:,} with no eviction ({1 - sent / baseline:.0%} fewer, "
                f"{baseline - sent:,} saved)")
    return (f"vs ≈{baseline:,} with no eviction by our count: no saving to show, as the server counts "
            f"{sent - baseline:,} more tokens than our estimate")


def bill_line(session: Session) -> str:
    """Return the session's cost against a naive full resend with caching ("" without a price)."""
    bill = session.bill()
    if bill.cost is None or bill.naive_cost is None:
        return ""
    return (f"cost {dollars(bill.cost)} at {session.settings.model}'s price; resending everything with "
            f"the cache would have cost {dollars(bill.naive_cost)}")


@command("tokens", "/tokens [TEXT]", "break down the next request's tokens against the budget (with TEXT "
         "as its message: with the documents it retrieves)")
def _tokens(session: Session, arg: str) -> Result:
    return tokens_view(session, arg)


@command("raw", "/raw [TEXT]", "the exact JSON body the next request sends (with TEXT as its message)")
def _raw(session: Session, arg: str) -> Result:
    body = session.preview_body(arg or None)
    return RawView(body, request_size_line(session, body))


# ---- editing the history -------------------------------------------------------------


def _no_args(arg: str, usage: str) -> None:
    if arg:
        raise CommandError(f"usage: {usage} (it takes no arguments)")


@command("drop", "/drop N[-M]", "remove message N (or N to M) for good, with the rest of its turn",
         choices=live_ids)
def _drop(session: Session, arg: str) -> Result:
    ids = parse_range(session, arg, usage="/drop N[-M]")
    gone = session.drop(ids)
    freed = sum(e.tokens for e in gone)
    return Lines((f"dropped {span([e.id for e in gone])} ({freed:,} tokens): no longer sent "
                  "(/history all shows them as removed)",))


@command("trim", "/trim K", "keep only the last K turns (pinned turns stay)")
def _trim(session: Session, arg: str) -> Result:
    if not arg.isdigit():
        raise CommandError("usage: /trim K (K is how many of the newest turns to keep, 0 or more)")
    gone = session.trim(int(arg))
    conversation = session.conversation
    if not gone:
        pinned = len({e.turn for e in conversation.history if e.pinned})
        return Lines((f"nothing to trim: {conversation.turn_count} turn(s) live, {pinned} of them pinned",))
    return Lines((f"removed {len({e.turn for e in gone})} turn(s) ({span([e.id for e in gone])}); "
                  f"{conversation.turn_count} turn(s) left",))


@command("clear", "/clear", "remove the history and summary; keep the system prompt and pinned turns")
def _clear(session: Session, arg: str) -> Result:
    _no_args(arg, "/clear")
    gone = session.clear()
    kept = len(session.conversation.history)
    return Lines((f"cleared {len(gone)} message(s) and the summary (/history all still lists them); "
                  f"kept the system prompt and {kept} pinned-turn message(s)",))


def _last_question(session: Session, usage: str) -> tuple[Entry, Conversation, bool]:
    """Return the user message of the newest turn, the conversation without that turn, and whether
    the turn is pinned."""
    conversation = session.conversation
    question = conversation.last_question()
    if question is None:
        raise CommandError(f"{usage}: the newest turn has no typed user message (a /file?); /undo removes it")
    base, turn = conversation.without_last_turn(session.measure)
    return question, base, any(e.pinned for e in turn)


@command("undo", "/undo", "remove the last exchange (your message and its reply)")
def _undo(session: Session, arg: str) -> Result:
    _no_args(arg, "/undo")
    turn = session.undo()
    return Lines((f"removed {span([e.id for e in turn])} (turn {turn[0].turn})",))


@command("retry", "/retry", "send the last message again (the one that failed, if the last turn failed)")
def _retry(session: Session, arg: str) -> Result:
    _no_args(arg, "/retry")
    unanswered = session.unanswered
    if unanswered is not None:
        # The turn that failed or was cancelled: its message goes again, the exchanges before it stay.
        quoted = first_line(unanswered.text, 40)
        if unanswered.base is None:
            return Send(unanswered.text, note=f"resending your unanswered message: {quoted}")
        if session.conversation is unanswered.after:  # a failed /retry or /edit, nothing changed since
            return Send(unanswered.text, note=f"resending: {quoted}", base=unanswered.base,
                        pin=unanswered.pin)
    question, base, pin = _last_question(session, "/retry")
    return Send(question.content, note=f"resending #{question.id}", base=base, pin=pin)


def run_editor(editor: str, text: str) -> str:
    """Return ``text`` as edited by the ``editor`` command (run on a private temporary file).

    Raises ``CommandError`` when the editor cannot be started or exits with an error.
    """
    handle, name = tempfile.mkstemp(prefix="stateless-chat-", suffix=".md")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        try:
            done = subprocess.run([*shlex.split(editor), name], check=False)
        except (OSError, ValueError) as error:
            raise CommandError(f"cannot run the editor {editor!r}: {error}") from error
        if done.returncode != 0:
            raise CommandError(f"the editor exited with status {done.returncode}; nothing sent")
        with open(name, encoding="utf-8", errors="replace") as file:
            return file.read()
    finally:
        os.unlink(name)


@command("edit", "/edit", "edit your last message ($EDITOR, else in the prompt) and send it again")
def _edit(session: Session, arg: str) -> Result:
    _no_args(arg, "/edit")
    question, base, pin = _last_question(session, "/edit")
    editor = os.environ.get("EDITOR", "").strip()
    if not editor:
        return Prefill(as_typed(question.content), session.conversation, base,
                       note=f"editing #{question.id}: Enter sends it in place of the last exchange", pin=pin)
    edited = run_editor(editor, question.content).rstrip("\n")
    if not edited.strip():
        raise CommandError("the edited message is empty; nothing sent")
    return Send(edited, note=f"sending the edited #{question.id}", base=base, pin=pin)


# ---- files --------------------------------------------------------------------------

def file_message(shown: str, text: str) -> str:
    """Return the user message that carries a file: its path as a header, then its text."""
    return f"File: {shown}\n\n{text}"


@command("file", "/file PATH [--pin]", "add a text file to the history as a message (--pin: never evict)",
         paths=True)
def _file(session: Session, arg: str) -> Result:
    words = split_args(arg)
    pin = "--pin" in words
    names = [w for w in words if w != "--pin"]
    if len(names) != 1 or any(n.startswith("--") for n in names):
        raise CommandError("usage: /file PATH [--pin]")
    shown = names[0]
    path = persist.expand(shown)
    text = read_text_file(path)
    conversation = session.conversation
    entry = conversation.new_entry("user", file_message(shown, text), session.measure, kind="file",
                                   pinned=pin, source=str(path))
    if session.too_big_alone(entry.tokens):
        raise CommandError(
            f"{shown} is {entry.tokens:,} tokens; with {session.reserve:,} held for the reply it cannot fit "
            f"the budget of {session.budget:,}: not added"
        )
    session.add_entry(entry)
    how = "pinned: sent with every request" if pin else "sent until evicted"
    lines = [f"added {shown} as #{entry.id} ({entry.tokens:,} tokens, {how})"]
    reason = secret_reason(path, text)
    if reason is not None:
        lines.append(f"warning: {shown} looks like a secret ({reason}); it goes to the server with every "
                     f"request: /drop {entry.id} takes it out before you send")
    for earlier in conversation.files():
        if earlier.source is not None and _same_file(earlier.source, path):
            state = conversation.state(earlier)
            still = "still sent" if state == "sent" else f"{state}, no longer sent"
            lines.append(f"note: {shown} was already added as #{earlier.id} ({still}); this is a second copy"
                         + (f" (/drop {earlier.id} removes the first)" if state == "sent" else ""))
    return Lines(tuple(lines))


def _same_file(source: str, path: Path) -> bool:
    try:
        return Path(source).resolve() == path.resolve()
    except (OSError, RuntimeError):
        return source == str(path)


@command("files", "/files", "list the files added with /file and whether each is still sent")
def _files(session: Session, arg: str) -> Result:
    _no_args(arg, "/files")
    conversation = session.conversation
    files = conversation.files()
    if not files:
        return Lines(("no files added; /file PATH adds one",))
    lines = []
    for entry in files:
        state = conversation.state(entry)
        if state == "sent":
            state = "sent, pinned" if entry.pinned else "sent"
        else:
            state += ": no longer sent"
        lines.append(f"#{entry.id} {entry.source} · {entry.tokens:,} tokens · {state}")
    return Lines(tuple(lines))


# ---- settings -----------------------------------------------------------------------


@command("system", "/system [TEXT | --clear]", "show the system prompt, or set (--clear: remove) it",
         choices=lambda session: ["--clear"])
def _system(session: Session, arg: str) -> Result:
    system = session.conversation.system
    if not arg:
        if system is None:
            return Lines(("no system prompt; /system TEXT sets one",))
        return MessageView(0, "system", system.tokens, "system", system.content)
    if arg == "--clear":
        session.reconfigure(system=None)
        return Lines(("system prompt removed",))
    size = session.measure(Message("system", arg))
    if session.too_big_alone(size):
        raise CommandError(f"that system prompt is {size:,} tokens; it cannot fit the budget of "
                           f"{session.budget:,} with {session.reserve:,} held for the reply")
    session.reconfigure(system=arg)
    return Lines((f"system prompt set ({size:,} tokens; sent with every request)",))


def context_source(session: Session) -> str:
    """Return where the context window's figure came from: the server, the settings, or the table."""
    settings = session.settings
    if session.context_source:
        return session.context_source
    if settings.context_window is not None:
        return "the context_window setting"
    if family_of(settings.model) is None:
        return "assumed: the model is not in the table of known models"
    return "the table of known models"


def _model_line(session: Session) -> str:
    settings = session.settings
    return (f"model {settings.model}: context window {settings.effective_context_window:,} "
            f"({context_source(session)}), budget {session.budget:,}; tokens: {session.counter.how()}")


@command("model", "/model [NAME]", "show the model, or switch to NAME (token counts follow it)")
def _model(session: Session, arg: str) -> Result:
    if not arg:
        return Lines((_model_line(session),))
    if len(arg.split()) != 1:
        raise CommandError("usage: /model [NAME] (a model name has no spaces)")
    session.reconfigure(model=arg)
    return Lines((_model_line(session), f"history recounted: {session.conversation.tokens:,} tokens"))


def _tokens_arg(arg: str, usage: str) -> int:
    value = arg.replace(",", "").replace("_", "")
    if not value.isdigit() or int(value) == 0:
        raise CommandError(f"usage: {usage} (N is a positive number of tokens)")
    return int(value)


@command("budget", "/budget [N]", "show the token budget of one request, or set it to N")
def _budget(session: Session, arg: str) -> Result:
    if arg:
        value = _tokens_arg(arg, "/budget [N]")
        reserve = session.reserve
        if value <= reserve:
            smaller = max(1, value // 4)
            raise CommandError(f"a budget of {value:,} leaves no room for the prompt with {reserve:,} held "
                               f"for the reply: lower that first (/reserve {smaller}), then /budget {value}")
        session.reconfigure(budget=value)
    settings = session.settings
    capped = ""
    if settings.budget is not None and settings.budget > settings.effective_context_window:
        capped = f" (capped at the context window of {settings.model})"
    needed = session.next_request_tokens() + session.reserve
    return Lines((f"budget {session.budget:,} tokens per request{capped}, {session.reserve:,} held for "
                  f"the reply; the history now needs {needed:,}",))


@command("reserve", "/reserve [N]", "show the tokens held for the reply (sent as max_tokens), or set them")
def _reserve(session: Session, arg: str) -> Result:
    if arg:
        value = _tokens_arg(arg, "/reserve [N]")
        budget = session.budget
        if value >= budget:
            raise CommandError(f"a reserve of {value:,} leaves no room for the prompt in the budget of "
                               f"{budget:,}: raise the budget first (/budget N) or hold less")
        # max_tokens, when it was set, is what the reserve is; else reply_reserve is.
        key = "max_tokens" if session.settings.max_tokens is not None else "reply_reserve"
        session.reconfigure(**{key: value})
    needed = session.next_request_tokens() + session.reserve
    return Lines((f"{session.reserve:,} tokens held for the reply (a reply stops there: sent as max_tokens); "
                  f"budget {session.budget:,}, the history now needs {needed:,}",))


@command("policy", "/policy [NAME]", "show or set the eviction policy: " + ", ".join(POLICIES),
         choices=lambda session: list(POLICIES))
def _policy(session: Session, arg: str) -> Result:
    if arg:
        if arg not in POLICIES:
            close = difflib.get_close_matches(arg, list(POLICIES), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise CommandError(f"unknown policy {arg!r}: choose one of {', '.join(POLICIES)}{hint}")
        session.reconfigure(policy=arg)
    return Lines((f"policy {session.settings.policy}",))


@command("evict-to", "/evict-to [F]", "show or set how far eviction goes once over budget (e.g. 0.5)")
def _evict_to(session: Session, arg: str) -> Result:
    if arg:
        try:
            value = float(arg)
        except ValueError:
            raise CommandError("usage: /evict-to [F] (F: a share of the budget, in (0, 1])") from None
        session.reconfigure(evict_to=value)
    fraction = session.settings.evict_to
    return Lines((f"once a request is over the budget of {session.budget:,}, history is evicted down to "
                  f"{fraction:g} of it ({session.low_water(session.budget):,} tokens)",))


@command("tools", "/tools [on|off [SERVER]]", "list the MCP servers and their tools with what each costs, "
         "or turn tools on or off", choices=lambda session: ["on", "off"])
def _tools(session: Session, arg: str) -> Result:
    from stateless_chat.tools.toolbox import BUILTIN, Toolbox

    toolbox = session.tools
    servers = toolbox.servers if isinstance(toolbox, Toolbox) else None
    if not isinstance(toolbox, Toolbox) or servers is None:
        from stateless_chat.ui.docs import page

        return Lines((f"no tools: add [mcp.servers.NAME] tables to the config file ({page('tools.md')}), "
                      "and leave out --no-tools",))
    words = arg.split()
    lines: list[str] = []
    if words:
        if words[0] not in ("on", "off") or len(words) > 2:
            raise CommandError("usage: /tools [on|off [SERVER]]")
        try:
            changed = servers.set_enabled(words[0] == "on", words[1] if len(words) == 2 else None)
        except ChatError as error:
            raise CommandError(str(error)) from None
        lines.append(f"tools {words[0]} for {', '.join(changed) or 'no server'}")
    stalled = servers.stalled()  # a server that failed or was never seen starts again on /tools
    lines += servers.start(stalled) if stalled else []
    offered = toolbox.tools()

    def listed(server: str) -> list[str]:  # each tool under the server it comes from
        return [f"  {spec.offered} ({spec.display}) · {session.tools_tokens([spec.to_api()]):,} tokens · "
                f"approve: {spec.approve}" for spec in offered if spec.server == server]

    named: set[str] = set()
    for status in servers.status():
        named.add(status.name)
        lines.append(f"{status.name}: {status.state}, {status.tools} tool(s); its log: {status.log}")
        lines += listed(status.name)
    for server in sorted({spec.server for spec in offered} - named):  # the built-in ones
        label = "built in, run by stateless-chat itself" if server == BUILTIN else "no server listed"
        lines.append(f"{server}: {label}, {sum(1 for s in offered if s.server == server)} tool(s)")
        lines += listed(server)
    total = session.tools_tokens(session.tools_offered())
    lines.append(f"the tools array adds {total:,} tokens to every request" if offered else "no tools offered")
    return Lines(tuple(lines))


@command("summarize", "/summarize", "fold the older turns into the running summary now (one request)")
def _summarize(session: Session, arg: str) -> Result:
    _no_args(arg, "/summarize")
    event = session.summarize_now()
    summary = session.conversation.summary
    assert summary is not None
    return Lines((f"/show {summary.id} shows the summary; /history all shows the folded originals",),
                 (event,))


# ---- saving --------------------------------------------------------------------------


def _one_path(arg: str, usage: str, *, required: bool) -> Path | None:
    words = split_args(arg)
    if len(words) > 1 or (required and not words):
        raise CommandError(f"usage: {usage}")
    return persist.expand(words[0]) if words else None


@app_command("save", "/save [FILE] [--force]",
             "save the conversation as JSON (--force: over a file holding another conversation)", paths=True,
             choices=lambda app: ["--force"])
def _save(app: App, arg: str) -> Result:
    session = app.session
    words = split_args(arg)
    force = "--force" in words
    words = [w for w in words if w != "--force"]
    if len(words) > 1 or any(w.startswith("--") for w in words):
        raise CommandError("usage: /save [FILE] [--force]")
    path = persist.expand(words[0]) if words else persist.default_save_path(os.environ)
    conversation = session.conversation
    refusal = None if force else persist.overwrite_refusal(path, conversation)
    if refusal is not None:
        raise CommandError(f"{refusal}: not saved (/save {shlex.quote(words[0])} --force replaces it)")
    persist.save(path, conversation, session.ledger, session.settings)
    if app.log is not None:
        app.log.saved = conversation
    return Lines((f"saved {len(conversation.live)} message(s) and {len(conversation.evicted)} evicted "
                  f"to {path}",))


def _left_behind(app: App) -> str:
    """Return what becomes of the conversation /load replaces: a line when it was never saved."""
    attached = app.log
    conversation = app.session.conversation
    empty = not any(e.id for e in conversation.all_entries())
    if attached is None or attached.saved is conversation or empty:
        return ""
    if attached.logging and attached.cid is not None:
        return (f"the conversation you left was not saved, and it is still in the log: "
                f"stateless-chat --cid {attached.cid} continues it")
    return "the conversation you left was not saved (and logging is off): it is gone"


@app_command("load", "/load FILE", "replace this conversation with a saved one", paths=True)
def _load(app: App, arg: str) -> Result:
    session = app.session
    path = _one_path(arg, "/load FILE", required=True)
    assert path is not None
    saved = persist.load(path)
    left = _left_behind(app)
    loaded = persist.loadable(saved)
    noted = session.load(*loaded)
    source = persist.context_source(loaded[2], (), f"the save file {path}")
    if source is not None:
        session.context_source = source
    session.unanswered = None  # a message that failed in the conversation this one replaces
    attached = app.log
    if attached is not None:
        attached.forked()  # the loaded conversation is logged as a new one
        attached.saved = session.conversation
    conversation = session.conversation
    lines = (f"loaded {path}: {len(conversation.live)} message(s), {len(conversation.evicted)} "
             f"evicted; {_model_line(session)}", *(describe(event) for event in noted))
    return Lines(lines + ((left,) if left else ()))


# ---- recall ----------------------------------------------------------------------------


@app_command("recall", "/recall QUERY | N",
             "list the evicted turns that match QUERY, best first; N: bring message N's turn back",
             choices=lambda app: evicted_ids(app.session))
def _recall(app: App, arg: str) -> Result:
    session = app.session
    if not arg:
        raise CommandError("usage: /recall QUERY | N (QUERY: words to look for among the evicted turns; "
                           "N: a message number from /history all)")
    number = arg.lstrip("#")
    if number.isdigit():
        back = session.recall_turn(int(number))
        tokens = sum(e.tokens for e in back)
        return Lines((f"recalled turn {back[0].turn} ({span([e.id for e in back])}, {tokens:,} tokens): sent "
                      "right before your next message, then kept in the history until evicted again",))
    attached = app.log
    if attached is None:
        raise CommandError("/recall QUERY searches the conversation log, which this chat does not have")
    found = attached.matches(arg, session.conversation)
    if not found:
        return Lines((f"no evicted turn matches {arg!r} (/history all lists the evicted messages)",))
    lines = [f"turn {m.turn} · {span(m.ids)} · {m.tokens:,} tokens · {m.state}: "
             f"{first_line(m.first_line, 70)}" for m in found]
    return Lines((*lines, "/recall N brings a turn back (N: one of its message numbers)"))


@command("export", "/export FILE.md", "write a readable Markdown transcript", paths=True)
def _export(session: Session, arg: str) -> Result:
    path = _one_path(arg, "/export FILE.md", required=True)
    assert path is not None
    persist.export(path, session.conversation, session.ledger, session.settings, session.budget)
    return Lines((f"wrote the transcript to {path}",))


@command("stats", "/stats", "chart prompt tokens sent per turn against the no-eviction baseline")
def _stats(session: Session, arg: str) -> Result:
    _no_args(arg, "/stats")
    ledger = session.ledger
    if not ledger.turns:
        return Lines(("no turns yet: /stats charts the prompt tokens of each turn once you chat",))
    rows = tuple(StatRow(t.turn, t.sent, t.baseline_sent, t.evictions, t.cached, t.reported_cached_tokens,
                         t.predicted_cached_tokens, t.cache_break) for t in ledger.turns)
    return StatsView(rows, ledger.sent, ledger.baseline, ledger.cached, bill_line(session),
                     not ledger.cache_reported, baseline_words(ledger))


