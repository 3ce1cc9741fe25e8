"""Rich views of replies, events and command results.

Model output is untrusted: it is stripped of terminal control sequences
(``sanitize``) and always wrapped in ``Text`` or ``Markdown``, never passed as a
markup string, so ``[bold]`` in a reply prints literally.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType

from markdown_it import MarkdownIt
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, ConsoleRenderable, Group
from rich.live import Live
from rich.markdown import Markdown, UnknownElement
from rich.segment import Segment, Segments
from rich.style import Style
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from stateless_chat.core.messages import SLOT_KINDS, Event, Notice, ToolAnswered, ToolCalled, describe
from stateless_chat.errors import redact
from stateless_chat.sanitize import ControlStripper, for_terminal, safe_json
from stateless_chat.ui.commands import (
    Exit,
    HelpView,
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

_FENCE = re.compile(r"\s*(`{3,}|~{3,})(.*)", re.S)  # a code fence's line: its marker, then its info string
_NONSPACE = re.compile(r"\S")
REFRESH_SECONDS = 0.1
# An open code block is redrawn less often: Live redraws every row of its screenful each time, which
# is most of what streaming a long block costs once its lines are no longer highlighted on every refresh.
CODE_REFRESH_SECONDS = 0.25
CODE_THEME = "monokai"  # Rich's Markdown default, named so the live code view has the same colours
_HEAD = 256  # characters of a line kept to classify it (and, for a fence, to reopen it in the live view)
# After a blank line, a line that starts indented or with one of these may still belong to the block
# before it (a list's next item, a list item's next paragraph, indented code): the block is not cut there.
_CONTINUES = frozenset("-*+0123456789")

Row = list[Segment]
# What ReplyStream renders a Markdown piece after, by whether Rich would put a blank line after what
# was printed before it: a paragraph (it would), or a rule (it would not, nor at the very start), and
# the rows that stand-in takes (Rich draws a rule with an empty row under it).
_STAND_IN = {True: ("x\n\n", 1), False: ("---\n\n", 2)}


def bar(fraction: float, width: int = 20) -> str:
    """Return a text bar ``width`` cells wide, filled to ``fraction`` (clamped to 0..1)."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


class _Fence:
    """A code fence in the unfinished tail, and the live view's rows for its last lines."""

    def __init__(self, start: int, body: int, opener: str, marker: str) -> None:
        self.start = start  # offset in the reply where the opening line starts
        self.body = body  # offset of the first code line
        self.end: int | None = None  # offset where the closing line starts, once it has come
        self.opener = opener + "\n"  # the opening line (its first _HEAD characters)
        self.marker = marker  # its run of backticks or tildes
        self.width = 0  # the width ``rows`` were made for
        self.shown = body  # the code lines before this offset are in ``rows``
        self.rows: deque[Row] = deque()  # the last screenful of rows of those lines
        self.whole = True  # ``rows`` start at the first code line (so the top padding shows)


class _LiveTail:
    """The live view: whatever the stream's unfinished tail looks like when Rich draws it."""

    def __init__(self, stream: ReplyStream) -> None:
        self._stream = stream

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        new_line = Segment.line()
        for row in self._stream._live_rows(console, options):
            yield from row
            yield new_line
        # The cursor rests at the start of an empty last row, never at the end of a full one: the
        # "^C" a terminal echoes there then stays on that row (instead of wrapping to a new one that
        # Live does not know about), so clearing the view clears it and nothing is left behind twice.
        yield Segment("")


def _split_lines(segments: Iterable[Segment]) -> Iterator[Segment]:
    """Yield ``segments`` with each newline a segment of its own, in one pass.

    ``Console.print`` crops its output line by line, partitioning a segment at each newline it
    holds and copying the rest every time: quadratic in a long paragraph's size (Rich renders
    one as a single segment), but linear once no segment holds more than one newline.
    """
    new_line = Segment.line()
    for segment in segments:
        text = segment.text
        if segment.control or "\n" not in text:
            yield segment
            continue
        style = segment.style
        for index, line in enumerate(text.split("\n")):
            if index:
                yield new_line
            if line:
                yield Segment(line, style)


class ReplyStream:
    """Shows a streamed reply as Markdown while it arrives, in time linear in its length.

    Finished blocks are printed once and frozen; only the unfinished tail is redrawn, at most
    every ``REFRESH_SECONDS``, and only as much of it as fits on the screen. Each chunk is
    scanned once for block ends; the tail is kept in a ``StringIO`` (appending to a growing
    ``str`` copies it every time); printing avoids Rich's quadratic line cropping.
    """

    def __init__(self, console: Console, markdown: bool = True) -> None:
        self.console = console
        self.markdown = markdown
        self._stripper = ControlStripper()
        self._buffer = io.StringIO()  # the unfinished tail
        self._base = 0  # offset in the reply of the tail's first character
        self._size = 0  # the tail's length
        self._fresh = ""  # text added since the last scan
        # What the scan knows of the tail's last, unfinished line.
        self._line_at = 0  # offset in the reply where it starts
        self._head = ""  # its first _HEAD characters
        self._long = False  # it is longer than that
        self._blank = True  # nothing but whitespace so far
        self._cut: int | None = None  # a block may end here (after a blank line): the next line decides
        self._done = 0  # offset in the reply where the finished blocks end
        self._fence: _Fence | None = None  # the tail's last code fence (open while its ``end`` is None)
        self._gap = False  # Markdown puts a blank line after the last block printed (not after a rule)
        self._started = False  # plain text: something was printed
        self._held = 0  # plain text: newlines that ended the last piece printed, not shown yet
        self._code_style: tuple[Style, Style] | None = None
        self._preview: tuple[Markdown, MarkdownIt] | None = None
        self._unprinted = ""  # finished blocks whose printing was interrupted
        self._closed = False
        self._live: Live | None = None
        self._last_refresh = 0.0

    def __enter__(self) -> ReplyStream:
        if self.console.is_terminal:
            self._live = Live(console=self.console, auto_refresh=False, transient=True)
            self._live.__enter__()
        return self

    def feed(self, delta: str) -> None:
        safe = self._stripper.feed(delta)
        if not safe:
            return
        self._append(safe)
        done = self._scan()
        if done > 0:
            self._print_finished(self._take(done))
        now = time.monotonic()
        every = CODE_REFRESH_SECONDS if self._in_code() else REFRESH_SECONDS
        if self._live is not None and now - self._last_refresh >= every:
            self._last_refresh = now
            self._live.update(_LiveTail(self), refresh=True)

    def _print_finished(self, text: str) -> None:
        """Print finished blocks, taken out of the tail; if Ctrl-C interrupts that (most likely while
        Rich renders them, before anything is written), they are printed with the tail at the end."""
        state = (self._gap, self._started, self._held)
        try:
            self._print(text)
        except BaseException:
            self._unprinted = text
            self._gap, self._started, self._held = state
            raise

    def _in_code(self) -> bool:
        """Whether the tail ends inside an open code block (shown as such)."""
        return self.markdown and self._fence is not None and self._fence.end is None

    @property
    def _tail(self) -> str:
        """The unfinished tail, as one string."""
        return self._buffer.getvalue()

    def _append(self, text: str) -> None:
        self._buffer.write(text)
        self._size += len(text)
        self._fresh += text

    def _read(self, start: int, end: int) -> str:
        """Return the tail's characters from ``start`` to ``end``."""
        self._buffer.seek(start)
        text = self._buffer.read(end - start)
        self._buffer.seek(0, io.SEEK_END)
        return text

    def _take(self, count: int) -> str:
        """Remove the tail's first ``count`` characters and return them."""
        tail = self._buffer.getvalue()
        self._buffer = io.StringIO()
        self._buffer.write(tail[count:])
        self._base += count
        self._size -= count
        if self._fence is not None and self._fence.start < self._base:
            self._fence = None
        return tail[:count]

    def _scan(self) -> int:
        """Classify the text that arrived since the last call, line by line; return the length of the
        tail's prefix made of finished blocks (0 when none finished).

        Only the new text is looked at, however long the line or block it continues, so a reply
        of any shape costs linear time in total. A block ends at a blank line outside a code fence,
        unless the next line (its first character is enough) may continue it, as a list's next item
        does: Markdown renders a list cut there as two lists.
        """
        text, self._fresh = self._fresh, ""
        at = self._base + self._size - len(text)  # offset in the reply of text[0]
        start = 0
        while True:
            newline = text.find("\n", start)
            end = len(text) if newline < 0 else newline
            if end > start:
                self._extend_line(text, start, end)
            if newline < 0:
                break
            self._end_line(at + newline + 1)
            start = newline + 1
        return self._done - self._base

    def _extend_line(self, text: str, start: int, end: int) -> None:
        """Take ``text[start:end]``, more of the current line (no newline in it), into account."""
        room = _HEAD - len(self._head)
        if room > 0:
            self._head += text[start:min(end, start + room)]
        self._long = self._long or end - start > room
        if self._blank:
            found = _NONSPACE.search(text, start, end)
            if found is None:
                return
            self._blank = False
            if self._cut is not None:
                if not (self._head[0].isspace() or text[found.start()] in _CONTINUES):
                    self._done = self._cut
                self._cut = None

    def _end_line(self, next_at: int) -> None:
        """The current line ended; the next one starts at ``next_at``.

        A fence closes only at a line of its own marker's character, at least as long, and
        nothing else (CommonMark's rule): taking a ``~~~`` or a ```` ```python ```` line inside a
        code block for its end would cut the block at its next blank line.
        """
        fence = self._fence
        if fence is not None and fence.end is None:
            closing = self._head.strip()
            if not self._long and closing.startswith(fence.marker) and not closing.strip(fence.marker[0]):
                fence.end = self._line_at
        elif found := _FENCE.match(self._head):
            marker, info = found.groups()
            if not (marker[0] == "`" and "`" in info):  # else inline code at the line's start
                self._fence = _Fence(self._line_at, next_at, self._head, marker)
        elif self._blank:
            self._cut = next_at
        self._line_at = next_at
        self._head = ""
        self._long = False
        self._blank = True

    def _last_lines(self, start: int, end: int, rows: int, width: int) -> tuple[int, str]:
        """Return the last ``rows`` lines of the tail's ``start:end`` (no more of it than ``width``
        times ``rows`` characters) and the offset in the tail where they begin."""
        floor = max(start, end - max(1, width) * rows)
        text = self._read(floor, end)
        begin = len(text)
        for _ in range(rows):
            newline = text.rfind("\n", 0, max(0, begin - 1))
            if newline < 0:
                begin = 0
                break
            begin = newline + 1
        return floor + begin, text[begin:]

    def _visible(self) -> str:
        """Return the end of the unfinished tail that fits on the screen, reopening its code fence.

        Live shows no more than a screenful anyway; rendering only that keeps each refresh
        at the screen's size, however long the unfinished block grows.
        """
        width, height = self.console.size
        begin, view = self._last_lines(0, self._size, max(1, height - 2), width)
        fence = self._fence
        if self.markdown and fence is not None and fence.start - self._base < begin and (
            fence.end is None or fence.end - self._base >= begin
        ):
            view = fence.opener + view
        return view

    def _view(self, text: str, live: bool = False) -> Markdown | Text:
        """Return ``text`` ready to render after the pieces printed before it.

        Markdown comes after a stand-in for those pieces, rows that the caller drops (see
        ``_STAND_IN``): Rich puts a blank line before a block when the last element it closed
        wants one (the block before, or for a quote or a list, the paragraph inside it), so a
        piece rendered on its own would gain or lose that line.

        The live view's Markdown is parsed by one parser kept for the stream: Rich builds a new
        markdown-it parser for every ``Markdown`` (0.3 ms, as long as rendering a screenful).
        """
        if not self.markdown:
            return Text(text)
        text = _STAND_IN[self._gap][0] + text
        if not live:
            return Markdown(text, code_theme=CODE_THEME)
        if self._preview is None:
            parser = MarkdownIt().enable("strikethrough").enable("table")  # as Rich's Markdown configures it
            self._preview = (Markdown("", code_theme=CODE_THEME), parser)
        template, parser = self._preview
        markdown = copy.copy(template)
        markdown.markup = text
        markdown.parsed = parser.parse(text)
        return markdown

    def _rows(self, console: Console, options: ConsoleOptions, text: str) -> list[Row]:
        """Return the live view's rows for ``text``."""
        rows = console.render_lines(self._view(text, live=True), options, pad=False)
        return rows[_STAND_IN[self._gap][1]:] if self.markdown else rows

    def _live_rows(self, console: Console, options: ConsoleOptions) -> list[Row]:
        """Return the rows the live view shows: the end of the tail, at most a screenful less one row."""
        if self._closed or not self._size:
            return []
        limit = max(1, options.size.height - 1)
        width = max(1, options.max_width)
        options = options.update(height=None)
        fence = self._fence
        if fence is not None and self._in_code():
            rows = self._code_rows(console, options, fence, limit, width)
            if len(rows) < limit and fence.start > self._base:
                _, before = self._last_lines(0, fence.start - self._base, limit, width)
                if before.strip():
                    rows = [*self._rows(console, options, before), [], *rows]
            elif self._gap:
                rows = [[], *rows]
        else:
            rows = self._rows(console, options, self._visible())
        if not self.markdown:
            rows = [*([[]] * max(0, self._held - 1)), *rows]
        return rows[-limit:]

    def _code_rows(
        self, console: Console, options: ConsoleOptions, fence: _Fence, limit: int, width: int
    ) -> list[Row]:
        """Return the rows of the open code block's last lines: laid out as Rich's CodeBlock lays
        them out (padding, background, wrapping), but not highlighted.

        Highlighting a screenful of code on every refresh is what made a long code block slow
        (about 5 ms a refresh): Rich highlights and renders the whole screenful again each time.
        Here each line is made into rows once, when it is complete, and only a screenful of rows
        is kept; the block is highlighted when it is finished and printed whole.
        """
        if fence.width != width or fence.rows.maxlen != limit:
            fence.width = width
            fence.rows = deque(maxlen=limit)
            fence.shown = fence.body
            fence.whole = True
        background, style = self._code_styles(console)
        end = self._line_at  # the complete lines end here
        if end > fence.shown:
            start = fence.shown
            if end - start > width * limit:  # more came than fits on the screen: only its end matters
                start = end - width * limit
                fence.rows.clear()
                fence.whole = False
            code = self._read(start - self._base, end - self._base)
            if start > fence.shown:
                code = code[code.find("\n") + 1:] or code  # from a line's start, unless one line fills it all
            fence.shown = end
            for line in code[:-1].split("\n"):
                for row in self._code_line(console, options, line, width, style):
                    fence.whole = fence.whole and len(fence.rows) < limit
                    fence.rows.append(row)
        padding = [Segment(" " * width, background)]
        rows = [padding, *fence.rows] if fence.whole else list(fence.rows)
        tail_end = self._base + self._size
        if tail_end > end:  # the line still arriving
            line = self._read(max(end, tail_end - width * limit) - self._base, self._size)
            rows.extend(self._code_line(console, options, line, width, style))
        rows.append(padding)
        return rows

    def _code_styles(self, console: Console) -> tuple[Style, Style]:
        """Return the code block's background style and the style of its plain text."""
        if self._code_style is None:
            theme = Syntax.get_theme(CODE_THEME)
            text = Syntax("", "text", theme=theme).highlight("x").get_style_at_offset(console, 0)
            self._code_style = (theme.get_background_style(), text)
        return self._code_style

    @staticmethod
    def _code_line(
        console: Console, options: ConsoleOptions, line: str, width: int, style: Style
    ) -> list[Row]:
        """Return the rows of a code line in a code block ``width`` cells wide (a cell of padding a side)."""
        line = line.expandtabs(4)  # as Syntax does
        room = max(1, width - 2)
        size = cell_len(line)
        if size <= room:
            return [[Segment(f" {line}{' ' * (room - size)} ", style)]]
        rows = console.render_lines(Text(line, style=style), options.update(width=room), style=style)
        return [[Segment(" ", style), *row, Segment(" ", style)] for row in rows]

    def _print(self, text: str) -> None:
        """Print a finished piece of the reply; together the pieces show as the whole reply would."""
        if self.markdown:
            markdown = self._view(text)
            assert isinstance(markdown, Markdown)
            stand_in_rows = _STAND_IN[self._gap][1]
            # The element that closes last is the last top-level block (or the stand-in, if the piece
            # holds no block): whether Rich puts a blank line after it decides the next piece's start.
            last = next(token for token in reversed(markdown.parsed)
                        if token.level == 0 and token.nesting >= 0)
            self._gap = Markdown.elements.get(last.type, UnknownElement).new_line
            self._write(markdown, skip_rows=stand_in_rows)
            return
        # Plain text: the newlines between pieces are shown as the whole text would show them, and
        # those at its very start and end are not (as the whole reply, stripped, would print).
        core = text.strip("\n")
        if not core:
            self._held += len(text) if self._started else 0
            return
        lead = len(text) - len(text.lstrip("\n"))
        blank_lines = self._held + lead - 1 if self._started else 0
        self._started = True
        self._held = len(text) - len(text.rstrip("\n"))
        self._write(Text(core), blank_lines=blank_lines)

    def _write(self, renderable: Markdown | Text, blank_lines: int = 0, skip_rows: int = 0) -> None:
        """Print ``blank_lines`` empty lines and ``renderable`` without its first ``skip_rows`` rows,
        as ``Console.print`` would but in linear time."""
        console = self.console
        segments = _split_lines(console.render(renderable, console.options))
        for _ in range(skip_rows):
            for segment in segments:
                if segment.text == "\n" and not segment.control:
                    break
        shown = [*[Segment.line()] * max(0, blank_lines), *segments]
        if shown:
            console.print(Segments(shown))

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        rest = self._stripper.flush()
        if rest:
            self._append(rest)
        self._closed = True
        if self._live is not None:
            self._live.update(Text(""), refresh=True)
            self._live.__exit__(kind, error, trace)
        self._print(self._unprinted + self._take(self._size))


class Renderer:
    """Prints events, errors, replies and command results to a Rich console."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._held_by: Callable[[Event], None] | None = None  # a turn's view, while it shows a reply

    @contextlib.contextmanager
    def holding(self, view: Callable[[Event], None]) -> Iterator[None]:
        """While the block runs (a turn), ``warn`` goes to ``view``, which shows it after the reply."""
        self._held_by = view
        try:
            yield
        finally:
            self._held_by = None

    def warn(self, text: str) -> None:
        """Show a notice that may come at any moment (the log failed): after the reply when a turn is
        showing one, else now."""
        event = Notice(text)
        if self._held_by is not None:
            self._held_by(event)
        else:
            self.event(event)

    # Every line here may quote a server, a file or the command line: no controls, no secrets.
    def event(self, event: Event) -> None:
        if isinstance(event, (ToolCalled, ToolAnswered)):  # a step of the tool loop: its own lines
            self.console.print(Text(for_terminal(redact(describe(event))), style="cyan"))
            return
        self.console.print(Text("· " + for_terminal(redact(describe(event))), style="yellow"))

    def note(self, text: str) -> None:
        self.console.print(Text(for_terminal(redact(text)), style="dim"))

    def error(self, message: str) -> None:
        self.console.print(Text("error: " + for_terminal(redact(message)), style="bold red"))

    def reply(self) -> ReplyStream:
        return ReplyStream(self.console)

    def result(self, result: Result) -> None:
        if isinstance(result, Lines):
            for event in result.events:
                self.event(event)
            for line in result.lines:  # they may quote a loaded file's paths and settings
                self.console.print(Text(for_terminal(line)))
        elif isinstance(result, HelpView):
            self.console.print(help_table(result))
            for line in result.notes:
                self.console.print(Text(for_terminal(line)))
        elif isinstance(result, HistoryView):
            if result.memory:
                self.console.print(memory_table(result))
            self.console.print(history_table(result))
        elif isinstance(result, MessageView):
            cut = " · ✂ cut at the length limit" if result.cut else ""
            title = f"#{result.id} {result.role} · {result.tokens:,} tokens · {result.state}{cut}"
            self.console.print(Text(for_terminal(title), style="bold"))
            if result.content:
                self.console.print(Text(for_terminal(result.content)))
            for call in result.calls:
                self.console.print(Text(for_terminal(call)))
        elif isinstance(result, TokensView):
            self.console.print(tokens_table(result))
        elif isinstance(result, RawView):
            self.console.print(Text(safe_json(result.body)))
            if result.size:
                self.console.print(Text(for_terminal(result.size), style="dim"))
        elif isinstance(result, StatsView):
            self.console.print(stats_view(result))
        elif isinstance(result, (Send, Prefill, Exit)):
            pass  # the REPL acts on these; their notes are printed there


def help_table(view: HelpView) -> Table:
    """Return the commands as two columns: the usage, never wrapped, and what it does, wrapped within
    its column (at 80 columns a description would otherwise run back to the left edge)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for usage, what in view.rows:
        table.add_row(Text(for_terminal(usage)), Text(for_terminal(what)))
    return table


def memory_table(view: HistoryView) -> Table:
    """Return the standing notes as the slot of their own that /history shows before the messages."""
    how = "sent after the system prompt, never evicted" if view.memory_sent else "kept, not sent: memory off"
    table = Table(title=f"standing memory ({how})", title_justify="left", expand=False)
    table.add_column("note", no_wrap=True)
    table.add_column(f"tokens{view.label}", justify="right", no_wrap=True)
    table.add_column("from", no_wrap=True)
    table.add_column(Text("text", no_wrap=True, overflow="ellipsis"), max_width=70)
    for row in view.memory:
        source = f"#{row.source}" if row.source is not None else "/remember"
        table.add_row(Text(row.label), Text(f"{row.tokens:,}"), Text(source),
                      Text(for_terminal(row.text), no_wrap=True, overflow="ellipsis"))
    return table


def history_table(view: HistoryView) -> Table:
    table = Table(title="history", title_justify="left", expand=False)
    # Numbers, roles and states never shrink: only "first line" gives way to a narrow terminal (it is
    # the one column Rich may narrow, and its cells end in "…" instead of wrapping).
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("role", no_wrap=True)
    table.add_column(f"tokens{view.label}", justify="right", no_wrap=True)
    table.add_column("pin", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column(Text("first line", no_wrap=True, overflow="ellipsis"), max_width=60)
    for row in view.rows:
        role = row.kind if row.kind in ("file", "summary", *SLOT_KINDS) else row.role
        state = row.state + (" ✂" if row.cut else "")  # ✂: the reply was cut at the length limit
        table.add_row(
            Text(str(row.id) if row.id >= 0 else "·"),  # a context slot: no number to type
            Text(role),
            Text(f"{row.tokens:,}"),
            Text("📌" if row.pinned or row.state == "system" else ""),
            Text(state, style="dim" if row.state in ("evicted", "summarized", "removed") else ""),
            Text(for_terminal(row.first_line), no_wrap=True, overflow="ellipsis"),
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
    guess = "≈" if view.cached_predicted else ""
    totals = Text(
        f"session: {view.turns} turn(s), {view.sent_total:,} prompt tokens sent "
        f"({guess}{view.cached_total:,} of them cached) {view.comparison}"
    )
    why = f": {view.cache_cause}" if view.cache_cause else ""
    cache = Text(f"cache: ~{view.cache_share:.0%} of the next request repeats the last one{why}")
    eviction = [Text(for_terminal(view.eviction))] if view.eviction else []
    lines: list[ConsoleRenderable] = [table, summary, *eviction, cache, totals]
    if view.counting:
        lines.append(Text(for_terminal(f"counted: {view.counting}")))
    if view.budget_source:
        lines.append(Text(for_terminal(f"budget {view.budget:,}: {view.budget_source}")))
    return Group(*lines, *([Text(for_terminal(view.cost))] if view.cost else []))


def stats_view(view: StatsView) -> Group:
    peak = max([row.baseline for row in view.rows] + [1])
    table = Table(title="prompt tokens sent per turn", title_justify="left")
    table.add_column("turn", justify="right")
    table.add_column("sent", justify="right")
    table.add_column("cached", justify="right")
    table.add_column("", no_wrap=True)
    table.add_column("baseline", justify="right")
    for row in view.rows:
        mark = (" ✂" if row.evictions else "") + (" ⌁" if row.cache_break else "")
        reported = row.reported_cached
        cached = f"{row.cached:,}" if reported is not None else f"≈{row.cached:,}"
        if reported is not None and reported != row.predicted:
            cached += f" (predicted {row.predicted:,})"
        table.add_row(Text(str(row.turn)), Text(f"{row.sent:,}"), Text(cached),
                      Text(bar(row.sent / peak, 24) + mark), Text(f"{row.baseline:,}"))
    guess = "≈" if view.cached_predicted else ""  # the total holds predictions, as its turns do
    footer = Text(
        f"total sent {view.sent_total:,} ({guess}{view.cached_total:,} cached) {view.comparison}; "
        "✂ marks turns that evicted or summarized, ⌁ the cache breaks; ≈ cached counts are predicted "
        "(the server did not say)"
    )
    return Group(table, footer, *([Text(for_terminal(view.cost))] if view.cost else []))


SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Waiting:
    """A spinner and the seconds waited so far, on one transient line, while nothing else shows.

    Shown between Enter and the first token, during ``/summarize`` and while the local model
    starts. Only on a terminal: on anything else (a pipe, a file) it prints nothing at all.
    Lines printed to the console meanwhile (events, retries) appear above it. ``stop`` erases
    it; it must be stopped before another live view (the reply's) starts.
    """

    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.label = label
        self._live: Live | None = None
        self._started = 0.0

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        elapsed = time.monotonic() - self._started
        frame = SPINNER[int(elapsed * 10) % len(SPINNER)]
        yield Text(f"{frame} {self.label} {elapsed:.1f} s", style="dim", no_wrap=True, overflow="ellipsis")

    @property
    def shown(self) -> bool:
        return self._live is not None

    def start(self) -> Waiting:
        if self._live is None and self.console.is_terminal and not self.console.is_dumb_terminal:
            self._started = time.monotonic()
            self._live = Live(self, console=self.console, transient=True, refresh_per_second=10)
            self._live.start()
        return self

    def stop(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def __enter__(self) -> Waiting:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
