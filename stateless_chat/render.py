"""Rich views of replies, events and command results.

Model output is untrusted: it is stripped of terminal control sequences
(``sanitize``) and always wrapped in ``Text`` or ``Markdown``, never passed as a
markup string, so ``[bold]`` in a reply prints literally.
"""

from __future__ import annotations

import re
import time
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from stateless_chat.commands import (
    Exit,
    HistoryView,
    Lines,
    MessageView,
    Prefill,
    RawView,
    Result,
    Send,
    StatsView,
    TokensView,
)
from stateless_chat.messages import Event, describe
from stateless_chat.sanitize import ControlStripper, safe_json, strip_controls

_FENCE = re.compile(r"^\s*(```|~~~)", re.M)
REFRESH_SECONDS = 0.1


def bar(fraction: float, width: int = 20) -> str:
    """Return a text bar ``width`` cells wide, filled to ``fraction`` (clamped to 0..1)."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


class ReplyStream:
    """Shows a streamed reply as Markdown while it arrives, in time linear in its length.

    Finished blocks are printed once and frozen; only the unfinished tail is redrawn,
    at most every ``REFRESH_SECONDS``.
    """

    def __init__(self, console: Console, markdown: bool = True) -> None:
        self.console = console
        self.markdown = markdown
        self._stripper = ControlStripper()
        self._tail = ""
        self._live: Live | None = None
        self._last_refresh = 0.0
        self._scanned = 0  # the tail before this index is whole lines already classified
        self._fence_at: int | None = None  # where the open code fence's line starts in the tail

    def __enter__(self) -> ReplyStream:
        if self.console.is_terminal:
            self._live = Live(console=self.console, auto_refresh=False, transient=True)
            self._live.__enter__()
        return self

    def feed(self, delta: str) -> None:
        safe = self._stripper.feed(delta)
        if not safe:
            return
        self._tail += safe
        done = self._scan()
        if done:
            self._print(self._tail[:done])
            self._tail = self._tail[done:]
            self._scanned -= done
            if self._fence_at is not None:
                self._fence_at -= done
        now = time.monotonic()
        if self._live is not None and now - self._last_refresh >= REFRESH_SECONDS:
            self._last_refresh = now
            self._live.update(self._view(self._visible()), refresh=True)

    def _scan(self) -> int:
        """Classify the whole lines that arrived since the last call; return the length of the
        tail's prefix made of finished blocks (0 when none finished).

        Only new lines are looked at, so a block of any length costs linear time in total.
        """
        tail = self._tail
        done = 0
        start = self._scanned
        while (end := tail.find("\n", start)) >= 0:
            line = tail[start:end + 1]
            if _FENCE.match(line):
                self._fence_at = start if self._fence_at is None else None
            elif self._fence_at is None and not line.strip():
                done = end + 1
            start = end + 1
        self._scanned = start
        return done

    def _visible(self) -> str:
        """Return the end of the unfinished tail that fits on the screen, reopening its code fence.

        Live shows no more than a screenful anyway; rendering only that keeps each refresh
        at the screen's size, however long the unfinished block grows.
        """
        tail = self._tail
        width, height = self.console.size
        rows = max(1, height - 2)
        floor = max(0, len(tail) - max(1, width) * rows)
        begin = len(tail)
        for _ in range(rows):
            newline = tail.rfind("\n", floor, max(floor, begin - 1))
            if newline < 0:
                begin = floor
                break
            begin = newline + 1
        view = tail[begin:]
        if self._fence_at is not None and self._fence_at < begin:
            opener_end = tail.find("\n", self._fence_at)
            view = tail[self._fence_at:opener_end + 1] + view
        return view

    def _view(self, text: str) -> Markdown | Text:
        return Markdown(text) if self.markdown else Text(text)

    def _print(self, text: str) -> None:
        if text.strip():
            self.console.print(self._view(text.strip("\n")))

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._tail += self._stripper.flush()
        if self._live is not None:
            self._live.update(Text(""), refresh=True)
            self._live.__exit__(kind, error, trace)
        self._print(self._tail)
        self._tail = ""


class Renderer:
    """Prints events, errors, replies and command results to a Rich console."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def event(self, event: Event) -> None:
        self.console.print(Text("· " + describe(event), style="yellow"))

    def note(self, text: str) -> None:
        self.console.print(Text(text, style="dim"))

    def error(self, message: str) -> None:
        self.console.print(Text("error: " + strip_controls(message), style="bold red"))

    def reply(self) -> ReplyStream:
        return ReplyStream(self.console)

    def result(self, result: Result) -> None:
        if isinstance(result, Lines):
            for line in result.lines:  # they may quote a loaded file's paths and settings
                self.console.print(Text(strip_controls(line)))
        elif isinstance(result, HistoryView):
            self.console.print(history_table(result))
        elif isinstance(result, MessageView):
            title = f"#{result.id} {result.role} · {result.tokens:,} tokens · {result.state}"
            self.console.print(Text(title, style="bold"))
            self.console.print(Text(strip_controls(result.content)))
        elif isinstance(result, TokensView):
            self.console.print(tokens_table(result))
        elif isinstance(result, RawView):
            self.console.print(Text(safe_json(result.body)))
        elif isinstance(result, StatsView):
            self.console.print(stats_view(result))
        elif isinstance(result, (Send, Prefill, Exit)):
            pass  # the REPL acts on these; their notes are printed there


def history_table(view: HistoryView) -> Table:
    table = Table(title="history", title_justify="left", expand=False)
    table.add_column("#", justify="right")
    table.add_column("role")
    table.add_column(f"tokens{view.label}", justify="right")
    table.add_column("pin")
    table.add_column("state")
    table.add_column("first line", overflow="ellipsis", no_wrap=True, max_width=60)
    for row in view.rows:
        number = "S" if row.kind == "summary" else str(row.id)
        role = row.role if row.kind != "file" else "file"
        table.add_row(
            Text(number),
            Text(role),
            Text(f"{row.tokens:,}"),
            Text("📌" if row.pinned or row.state == "system" else ""),
            Text(row.state, style="dim" if row.state in ("evicted", "summarized") else ""),
            Text(strip_controls(row.first_line)),
        )
    if view.hidden_evicted:
        table.caption = f"{view.hidden_evicted} evicted message(s) hidden: /history all shows them"
    return table


def tokens_table(view: TokensView) -> Group:
    table = Table(title=f"next request{' (estimate)' if view.label else ''}", title_justify="left")
    table.add_column("part")
    table.add_column("tokens", justify="right")
    for name, size in view.parts:
        table.add_row(Text(name), Text(f"{size:,}"))
    share = view.total / view.budget if view.budget else 1.0
    table.add_row(Text("total", style="bold"), Text(f"{view.label}{view.total:,} / {view.budget:,}"))
    room = max(0, view.budget - view.total)
    summary = Text(f"{bar(share)} {share:.0%} of budget; room for the next message's text: {room:,} tokens"
                   + ("" if room else " (sending will evict)"))
    saved = view.baseline_total - view.sent_total
    totals = Text(
        f"session: {view.turns} turn(s), {view.sent_total:,} prompt tokens sent; "
        f"no-eviction baseline {view.baseline_total:,} (saved {saved:,})"
    )
    return Group(table, summary, totals)


def stats_view(view: StatsView) -> Group:
    peak = max([row[2] for row in view.rows] + [1])
    table = Table(title="prompt tokens sent per turn", title_justify="left")
    table.add_column("turn", justify="right")
    table.add_column("sent", justify="right")
    table.add_column("", no_wrap=True)
    table.add_column("baseline", justify="right")
    for turn, sent, baseline, evictions in view.rows:
        mark = " ✂" if evictions else ""
        table.add_row(Text(str(turn)), Text(f"{sent:,}"), Text(bar(sent / peak, 30) + mark),
                      Text(f"{baseline:,}"))
    saved = 1 - view.sent_total / view.baseline_total if view.baseline_total else 0.0
    footer = Text(
        f"total sent {view.sent_total:,} vs {view.baseline_total:,} with no eviction ({saved:.0%} saved); "
        "✂ marks turns that evicted or summarized"
    )
    return Group(table, footer)
