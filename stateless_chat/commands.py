"""Slash commands: a registry of handlers that read or change the session and return data.

Handlers never print. Each returns a ``Result`` value (text lines, a history table,
a token breakdown, a request body, ...) that ``render.py`` turns into terminal
output, so the same handler serves the REPL and the tests. A bad argument raises
``CommandError`` before anything changes.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stateless_chat.errors import ChatError, CommandError
from stateless_chat.messages import Entry
from stateless_chat.session import Session
from stateless_chat.tokens import REPLY_PRIMING

# ---- results ------------------------------------------------------------------


@dataclass(frozen=True)
class Lines:
    """Plain text lines for the user."""

    lines: tuple[str, ...]


@dataclass(frozen=True)
class HistoryRow:
    id: int
    role: str
    tokens: int
    pinned: bool
    state: str  # "sent", "evicted", "summarized", "summary", "system"
    first_line: str
    kind: str = "turn"


@dataclass(frozen=True)
class HistoryView:
    rows: tuple[HistoryRow, ...]
    label: str  # "" for exact counts, "≈" for estimates
    hidden_evicted: int = 0


@dataclass(frozen=True)
class MessageView:
    id: int
    role: str
    tokens: int
    state: str
    content: str


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


@dataclass(frozen=True)
class RawView:
    body: dict[str, Any]


@dataclass(frozen=True)
class StatsView:
    rows: tuple[tuple[int, int, int, int], ...]  # (turn, prompt tokens sent, baseline, evictions)
    sent_total: int
    baseline_total: int


@dataclass(frozen=True)
class Send:
    """Send ``text`` as a user message (``/retry``, ``/edit``, ``//text``)."""

    text: str
    note: str = ""


@dataclass(frozen=True)
class Exit:
    """Leave the REPL."""


Result = Lines | HistoryView | MessageView | TokensView | RawView | StatsView | Send | Exit
Handler = Callable[[Session, str], Result]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    handler: Handler
    arg_choices: Callable[[Session], Sequence[str]] | None = field(default=None)


REGISTRY: dict[str, Command] = {}


def command(
    name: str, usage: str, help: str, *, choices: Callable[[Session], Sequence[str]] | None = None
) -> Callable[[Handler], Handler]:
    """Register ``handler`` as ``/name``; ``usage`` shows its arguments, ``help`` one line of help."""

    def register(handler: Handler) -> Handler:
        REGISTRY[name] = Command(name, usage, help, handler, choices)
        return handler

    return register


# ---- parsing ----------------------------------------------------------------------


def is_command(line: str) -> bool:
    """Return whether ``line`` is a slash command (``//text`` is a message starting with ``/``)."""
    stripped = line.lstrip()
    return stripped.startswith("/") and not stripped.startswith("//")


def dispatch(session: Session, line: str) -> Result:
    """Run the slash command in ``line`` and return its result.

    Raises ``CommandError`` for an unknown command (with a suggestion) or a bad argument;
    ``ChatError`` from the handler propagates unchanged. Nothing changes on error.
    """
    stripped = line.strip()
    if stripped.startswith("//"):
        return Send(stripped[1:])
    name, _, arg = stripped[1:].partition(" ")
    name = name.lower()
    found = REGISTRY.get(name)
    if found is None:
        close = difflib.get_close_matches(name, list(REGISTRY), n=1, cutoff=0.6)
        hint = f"; did you mean /{close[0]}?" if close else "; /help lists commands"
        raise CommandError(f"unknown command /{name}{hint}")
    try:
        return found.handler(session, arg.strip())
    except ChatError:
        raise
    except (ValueError, OSError) as error:
        raise CommandError(f"/{name}: {error}") from error


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


def _state(session: Session, entry: Entry) -> str:
    conversation = session.conversation
    if entry.role == "system" and entry.kind != "summary":
        return "system"
    if entry.kind == "summary":
        return "summary"
    if conversation.is_live(entry.id):
        return "sent"
    return "summarized" if conversation.summary is not None else "evicted"


def history_rows(session: Session, *, include_evicted: bool) -> tuple[list[HistoryRow], int]:
    rows = []
    hidden = 0
    for entry in session.conversation.all_entries():
        state = _state(session, entry)
        if state in ("evicted", "summarized") and not include_evicted:
            hidden += 1
            continue
        rows.append(
            HistoryRow(entry.id, entry.role, entry.tokens, entry.pinned, state, first_line(entry.content),
                       entry.kind)
        )
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
    lines = [f"{c.usage:<24} {c.help}" for c in sorted(REGISTRY.values(), key=lambda c: c.name)]
    lines += [
        "",
        "Enter sends; Esc-Enter (Alt-Enter) inserts a newline; Ctrl-C cancels a reply or clears the line;",
        "Ctrl-D leaves. Start a message with // to send text that begins with /.",
    ]
    return Lines(tuple(lines))


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
    return HistoryView(tuple(rows), session.counter.label, hidden)


@command("show", "/show N", "show message N in full")
def _show(session: Session, arg: str) -> Result:
    entry = session.conversation.find(parse_id(session, arg, usage="/show N"))
    return MessageView(entry.id, entry.role, entry.tokens, _state(session, entry), entry.content)


@command("pin", "/pin N", "never evict message N (its whole turn stays)")
def _pin(session: Session, arg: str) -> Result:
    number = parse_id(session, arg, usage="/pin N")
    session.conversation = session.conversation.set_pinned(number, True)
    return Lines((f"pinned #{number}: it is sent with every request and never evicted",))


@command("unpin", "/unpin N", "let message N be evicted again")
def _unpin(session: Session, arg: str) -> Result:
    number = parse_id(session, arg, usage="/unpin N")
    session.conversation = session.conversation.set_pinned(number, False)
    return Lines((f"unpinned #{number}",))


def tokens_view(session: Session) -> TokensView:
    conversation = session.conversation
    system = conversation.system.tokens if conversation.system else 0
    summary = conversation.summary.tokens if conversation.summary else 0
    pins = sum(e.tokens for e in conversation.entries if e.pinned)
    turns = sum(e.tokens for e in conversation.entries if not e.pinned)
    parts = (
        ("system", system),
        ("pinned", pins),
        ("summary", summary),
        ("turns", turns),
        ("reply priming", REPLY_PRIMING),
        ("reply reserve", session.reserve),
    )
    total = sum(size for _, size in parts)
    return TokensView(parts, total, session.budget, session.counter.label, session.totals.sent,
                      session.totals.baseline, len(session.totals.turns))


@command("tokens", "/tokens", "break down the next request's tokens against the budget")
def _tokens(session: Session, arg: str) -> Result:
    return tokens_view(session)


@command("raw", "/raw [TEXT]", "the exact JSON body the next request sends (with TEXT as its message)")
def _raw(session: Session, arg: str) -> Result:
    return RawView(session.preview_body(arg or None))
