"""render.ReplyStream: a streamed reply shows as the whole reply would, in linear time, shown once.

Output is rendered to a ``Console`` on a ``StringIO`` and compared as text. What a terminal
would show of Live's redrawing is worked out by ``Screen``, a tiny terminal (enough of xterm
for what Rich writes, a typed "^C" included). Costs are measured by counting work (characters
handed to Markdown or to the syntax highlighter, characters touched by string operations,
copies made by Rich's line cropping) on a simulated clock, never by timing.
"""

from __future__ import annotations

import io
import random
import re
from collections.abc import Iterable, Iterator

import pytest
from markdown_it import MarkdownIt
from rich.console import Console
from rich.markdown import Markdown
from rich.segment import Segment
from rich.syntax import Syntax
from rich.text import Text

from stateless_chat.sanitize import ControlStripper
from stateless_chat.ui import render
from stateless_chat.ui.render import ReplyStream


class Screen:
    """A tiny terminal: rows of (character, SGR) cells, a cursor, xterm's pending wrap at the last column.

    Rows that scroll off the top stay in ``rows`` (the scrollback) but the cursor cannot go back
    up to them, as on a real terminal.
    """

    _TOKEN = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|(.)", re.S)

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.rows: list[list[tuple[str, str]]] = [[]]
        self.row = self.col = 0
        self.pending_wrap = False
        self.sgr = ""

    def write(self, data: str) -> Screen:
        for match in self._TOKEN.finditer(data):
            params, final, char = match.groups()
            if final == "m":
                self.sgr = "" if params in ("", "0") else self.sgr + params + ";"
            elif final == "K":
                line = self.rows[self.row]
                if params == "2":
                    line.clear()
                else:
                    del line[self.col:]
            elif final == "A":
                top = max(0, len(self.rows) - self.height)
                self.row = max(top, self.row - int(params or 1))
                self.pending_wrap = False
            elif final is not None or char is None:
                continue  # modes (cursor shown or hidden), OSC: nothing to draw
            elif char == "\r":
                self.col, self.pending_wrap = 0, False
            elif char == "\n":
                self._next_row()
            else:
                if self.pending_wrap:
                    self._next_row()
                line = self.rows[self.row]
                line.extend([(" ", "")] * (self.col + 1 - len(line)))
                line[self.col] = (char, self.sgr)
                if self.col == self.width - 1:
                    self.pending_wrap = True
                else:
                    self.col += 1
        return self

    def _next_row(self) -> None:
        self.row += 1
        self.col, self.pending_wrap = 0, False
        if self.row == len(self.rows):
            self.rows.append([])

    def lines(self) -> list[str]:
        """The text of every row, scrollback included, without trailing spaces or empty last rows."""
        text = ["".join(char for char, _ in row).rstrip() for row in self.rows]
        while text and not text[-1]:
            text.pop()
        return text

    def styled(self) -> list[list[tuple[str, str]]]:
        """Every row's cells, without trailing unstyled blanks or empty last rows."""
        rows = []
        for row in self.rows:
            cells = list(row)
            while cells and cells[-1] == (" ", ""):
                cells.pop()
            rows.append(cells)
        while rows and not rows[-1]:
            rows.pop()
        return rows


class Clock:
    """Stands in for the ``time`` module inside ``render``; the test advances it."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(render, "time", fake)
    return fake


def console(terminal: bool, width: int = 60, height: int = 12) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=width, height=height,
                   color_system="truecolor" if terminal else None, highlight=False), buffer


def stream(chunks: list[str], terminal: bool = False, clock: Clock | None = None, step: float = 0.02,
           width: int = 60, height: int = 12, markdown: bool = True) -> str:
    """Feed ``chunks`` (``step`` seconds apart on ``clock``) and return everything the console got."""
    out, buffer = console(terminal, width, height)
    with ReplyStream(out, markdown=markdown) as reply:
        for chunk in chunks:
            if clock is not None:
                clock.now += step
            reply.feed(chunk)
    return buffer.getvalue()


def whole(text: str, terminal: bool = False, width: int = 60, height: int = 12) -> str:
    """What printing the whole reply at once as Markdown gives."""
    out, buffer = console(terminal, width, height)
    out.print(Markdown(text))
    return buffer.getvalue()


def cut(text: str, rnd: random.Random, most: int = 30) -> list[str]:
    cuts = sorted(rnd.sample(range(1, len(text)), min(len(text) - 1, rnd.randint(1, most))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


REPLIES = [
    "# Title\n\nSome *text* here\nmore text.\n\nA second paragraph.\n\nA third, `code` in it.",
    "Intro:\n\n- one\n- two\n\n- three, the list is loose now\n\nAfter the list.\n\n1. first\n2. second\n\n"
    "3. third\n\nThe end.\n",
    "Code:\n\n```python\ndef f(x):\n\n    return x  # [bold]\n```\n\nDone, and `[red]` too.\n",
    "## Heading\nText right after.\n\n---\n\nAfter a rule.\n\n> quoted\n> more\n\n> a second quote\n\n"
    "### Small",
    "- item\n\n  its second paragraph\n- next\n\n      indented code\n\n      more code\n\nend\n\n\n",
    "\n\nleading blank lines\n\n\n\nand many between\n\n   \n\nlast\n\n",
    "~~~\nraw ``` text\n\n~~~\n| a | b |\n|---|---|\n| 1 | 2 |\n\nText\n```js\nlet x = 1\n```\n"
    "after fence\n\nz",
    "```\ncode\n~~~\n\nstill code\n```python\n\nmore\n````\n\nstill\n```\n\nafter\n\n"
    "````md\n```\n\n````\nend",
]


# 3. Blank lines between blocks


@pytest.mark.parametrize("reply", REPLIES)
def test_streamed_markdown_prints_as_the_whole_reply_would(reply: str) -> None:
    rnd = random.Random(reply)
    expected = whole(reply)
    assert stream([reply]) == expected
    assert stream(list(reply)) == expected
    for _ in range(20):
        assert stream(cut(reply, rnd)) == expected


def plain(output: str) -> list[str]:
    return [line.rstrip() for line in output.splitlines()]


def test_paragraphs_keep_the_blank_line_between_them() -> None:
    assert plain(stream(["One.\n\nTwo", ".\n\n", "Three.\n"])) == ["One.", "", "Two.", "", "Three."]


@pytest.mark.parametrize("reply", REPLIES)
def test_streamed_markdown_in_a_terminal_ends_as_the_whole_reply(reply: str, clock: Clock) -> None:
    """Live's frames are drawn and cleared; the screen ends as printing the whole reply leaves it,
    colours included."""
    rnd = random.Random(reply)
    expected = Screen(60, 12).write(whole(reply, terminal=True)).styled()
    for chunks in (list(reply), cut(reply, rnd), cut(reply, rnd, 5)):
        shown = Screen(60, 12).write(stream(chunks, terminal=True, clock=clock))
        assert shown.styled() == expected


@pytest.mark.parametrize("reply", REPLIES)
def test_plain_text_streams_as_the_whole_text_prints(reply: str) -> None:
    out, buffer = console(False)
    out.print(Text(reply.strip("\n")))
    for chunks in ([reply], list(reply), cut(reply, random.Random(reply))):
        assert stream(chunks, markdown=False) == buffer.getvalue()


# 4. Ctrl-C


def interrupted(chunks: list[str], clock: Clock, width: int = 40, height: int = 10) -> str:
    """Stream ``chunks``, then press Ctrl-C: the terminal echoes "^C" where the cursor is, and the
    KeyboardInterrupt leaves the ``with`` block."""
    out, buffer = console(True, width, height)
    with pytest.raises(KeyboardInterrupt), ReplyStream(out) as reply:
        for chunk in chunks:
            clock.now += 0.2
            reply.feed(chunk)
        buffer.write("^C")
        raise KeyboardInterrupt
    return buffer.getvalue()


def test_ctrl_c_leaves_the_partial_line_shown_once(clock: Clock) -> None:
    chunks = ["First paragraph.\n\n", "second ", "para still ", "arriving"]
    lines = Screen(40, 10).write(interrupted(chunks, clock)).lines()
    assert lines.count("second para still arriving") == 1
    assert lines == ["First paragraph.", "", "second para still arriving"]


def test_ctrl_c_in_a_long_paragraph_and_a_code_block_shows_each_line_once(clock: Clock) -> None:
    words = [f"w{i} " for i in range(300)]
    code = ["```python\n", *(f"x{i} = {i}\n" for i in range(40)), "x40 ="]
    for chunks in (words, code, ["intro\n\n", *words[:30], "\n\n", *code]):
        reply = "".join(chunks)
        expected = Screen(40, 10).write(whole(reply, terminal=True, width=40, height=10)).lines()
        shown = Screen(40, 10).write(interrupted(chunks, clock)).lines()
        assert shown == expected


def test_ctrl_c_while_a_finished_block_is_rendered_still_shows_it_once(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C lands where the time goes: most likely while Rich renders what is being printed."""
    real = Markdown.__rich_console__
    armed = [False]

    def interrupting(self: Markdown, console: Console, options: object) -> object:
        if armed[0] and "Second" in self.markup:
            armed[0] = False
            raise KeyboardInterrupt
        return real(self, console, options)  # type: ignore[arg-type]

    monkeypatch.setattr(Markdown, "__rich_console__", interrupting)
    for terminal in (False, True):
        out, buffer = console(terminal, 40, 10)
        with pytest.raises(KeyboardInterrupt), ReplyStream(out) as reply:
            for chunk in ["First.\n\nSecond ", "block.\n\n", "Third"]:
                clock.now += 0.2
                armed[0] = chunk == "Third"  # the chunk that finishes "Second block."
                reply.feed(chunk)
        lines = Screen(40, 10).write(buffer.getvalue()).lines()
        assert lines == ["First.", "", "Second block.", "", "Third"]


def test_a_live_view_never_outgrows_the_screen(clock: Clock) -> None:
    """A frame taller than the terminal scrolls its top away, where clearing it cannot reach; the
    live view shows the newest rows of a long list (its items wrap), not its first ones and an ellipsis."""
    chunks = [("- " if i % 7 == 0 else "") + f"word{i} " + ("\n" if i % 7 == 6 else "") for i in range(400)]
    out, buffer = console(True, 40, 8)
    with ReplyStream(out) as reply:
        for chunk in chunks:
            clock.now += 0.05
            reply.feed(chunk)
        frame = Screen(40, 8).write(buffer.getvalue()).lines()
    assert len(frame) <= 8 and "word399" in frame[-1] and not any("..." in line for line in frame)
    assert Screen(40, 8).write(buffer.getvalue()).lines() == Screen(40, 8).write(
        whole("".join(chunks), True, 40, 8)).lines()


# 1. Linear at any size


class Counted(str):
    """A str that adds up the characters its operations touch (the copies ``+`` makes, the
    stretch ``find`` searches, the slices taken); what they return stays counted."""

    touched = 0

    def _count(self, size: int) -> None:
        Counted.touched += size

    def __add__(self, other: str) -> Counted:
        self._count(len(self) + len(other))
        return Counted(str.__add__(self, other))

    def __radd__(self, other: str) -> Counted:
        self._count(len(self) + len(other))
        return Counted(str.__add__(other, self))

    def __getitem__(self, key: int | slice) -> Counted:  # type: ignore[override]
        part = str.__getitem__(self, key)
        self._count(len(part))
        return Counted(part)

    def find(self, sub: str, start: int | None = None, end: int | None = None) -> int:  # type: ignore[override]
        found = str.find(self, sub, start, end)
        low, high, _ = slice(start, end).indices(len(self))
        self._count((found + len(sub) if found >= 0 else high) - low)
        return found

    def rfind(self, sub: str, start: int | None = None, end: int | None = None) -> int:  # type: ignore[override]
        found = str.rfind(self, sub, start, end)
        low, high, _ = slice(start, end).indices(len(self))
        self._count(high - (found if found >= 0 else low))
        return found


class CountedStripper(ControlStripper):
    """Hands the stream counted text, and counts what it is handed itself (held-back text included)."""

    handled = 0

    def feed(self, chunk: str) -> str:
        CountedStripper.handled += len(self._pending) + len(chunk)
        return Counted(super().feed(chunk))


class Parsed:
    """Counts the characters handed to markdown-it (every Markdown, Rich's or not, is parsed by it)."""

    handed = 0


@pytest.fixture
def counters(monkeypatch: pytest.MonkeyPatch) -> None:
    Counted.touched = CountedStripper.handled = Parsed.handed = 0
    monkeypatch.setattr(render, "ControlStripper", CountedStripper)
    parse = MarkdownIt.parse

    def counting(self: MarkdownIt, src: str, *args: object, **kwargs: object) -> object:
        Parsed.handed += len(src)
        return parse(self, src, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(MarkdownIt, "parse", counting)


def one_paragraph(words: int) -> list[str]:
    return [f"word{i} " for i in range(words)]


@pytest.mark.usefixtures("counters")
def test_one_huge_paragraph_costs_linear_work(clock: Clock) -> None:
    """A reply that never finishes a block: every chunk used to copy the whole tail (``+=``) and
    search it again for a newline, so a 50 MB paragraph never finished rendering."""
    chunks = one_paragraph(20_000)
    size = sum(map(len, chunks))
    width, height = 40, 10
    out, _ = console(True, width, height)
    with ReplyStream(out) as reply:
        for chunk in chunks:
            clock.now += 0.005
            reply.feed(chunk)
        streamed = Parsed.handed
    refreshes = round(clock.now / render.REFRESH_SECONDS)
    assert Counted.touched <= 3 * size
    assert CountedStripper.handled <= size
    assert streamed <= (refreshes + 1) * width * height  # a screenful a refresh, however long the tail
    assert size <= Parsed.handed - streamed <= size + 10  # and the whole paragraph once, at the end


@pytest.fixture
def crop_copies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count what ``Segment.split_and_crop_lines`` copies: it partitions a segment at each newline
    it holds, copying the rest every time."""
    copies = [0]
    original = Segment.split_and_crop_lines.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Segment], /, segments: Iterable[Segment], *args: object, **kw: object) -> object:
        segments = list(segments)
        for segment in segments:
            copies[0] += len(segment.text) * segment.text.count("\n")
        return original(cls, segments, *args, **kw)

    monkeypatch.setattr(Segment, "split_and_crop_lines", classmethod(counting))
    yield copies


@pytest.mark.parametrize("terminal", [False, True])
def test_printing_a_huge_paragraph_is_linear(terminal: bool, clock: Clock, crop_copies: list[int]) -> None:
    chunks = one_paragraph(20_000)
    size = sum(map(len, chunks))
    out, buffer = console(terminal, 40, 10)
    with ReplyStream(out) as reply:
        for chunk in chunks:
            reply.feed(chunk)  # the clock stands still: no refresh, only the final print
        crop_copies[0] = 0
    assert crop_copies[0] <= size
    assert buffer.getvalue().count("word19999") == 1


# 2. A long code block


@pytest.fixture
def highlighted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the characters given to the syntax highlighter."""
    count = [0]
    original = Syntax.highlight

    def counting(self: Syntax, code: str, *args: object, **kwargs: object) -> Text:
        count[0] += len(code)
        return original(self, code, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Syntax, "highlight", counting)
    return count


def code_block(lines: int, close: bool = True) -> list[str]:
    return ["```python\n", *(f"x{i} = {i}\n" for i in range(lines)), *(["```\n"] if close else [])]


def test_a_long_code_block_is_not_highlighted_on_every_refresh(clock: Clock, highlighted: list[int]) -> None:
    """Each refresh used to highlight a screenful of the block again (~5 ms a refresh)."""
    chunks = code_block(1_000)
    size = sum(map(len, chunks))
    out, _ = console(True, 100, 40)
    with ReplyStream(out) as reply:
        for chunk in chunks:
            clock.now += 1 / 50
            reply.feed(chunk)
        streaming = highlighted[0]
    assert streaming <= 2 * size  # at most about once a line while streaming (it used to be ~20 times)
    assert highlighted[0] - streaming >= size - 20  # then the whole block, properly, at the end


def background(cell: tuple[str, str]) -> str:
    found = re.search(r"48;2;\d+;\d+;\d+", cell[1])
    return found.group() if found else ""


@pytest.mark.parametrize("partial", ["", "x_last = [1,"])
def test_the_live_code_view_is_laid_out_as_the_finished_block(clock: Clock, partial: str) -> None:
    """While a code block streams, its last lines show as the finished block lays them out (padding,
    wrapping, tabs, the theme's background), only not highlighted yet; finished, it is highlighted."""
    width, height = 50, 12
    lines = [f"value_{i} = compute({i}, 'text')  # note {i}\n" for i in range(60)]
    lines[-4] = "def long_line():  " + "return 1 + " * 8 + "2\n"  # wraps
    lines[-2] = "\tindented = True\n"
    chunks = ["Some code:\n", "```python\n", *lines, partial]
    out, buffer = console(True, width, height)
    with ReplyStream(out) as reply:
        for chunk in chunks:
            clock.now += 0.3  # a refresh every chunk
            reply.feed(chunk)
        live = Screen(width, height).write(buffer.getvalue()).styled()
    finished = Screen(width, 10_000).write(whole("".join(chunks) + "\n```", True, width, 10_000)).styled()
    shown = live[-(height - 2):]

    def text(rows: list[list[tuple[str, str]]]) -> list[str]:
        return ["".join(char for char, _ in row) for row in rows]

    assert text(shown) == text(finished[-len(shown):])
    assert text(shown)[-1].strip() == ""  # the bottom padding row
    assert text(shown)[-2].startswith(" x_last" if partial else " value_59")
    assert {background(cell) for row in shown for cell in row} == {background(finished[-1][0])} != {""}
    colours = {cell[1] for row in finished[-len(shown):] for cell in row}
    assert len(colours) > 2  # the finished block is highlighted
    printed = Screen(width, height).write(buffer.getvalue()).styled()
    assert printed == Screen(width, height).write(whole("".join(chunks), True, width, height)).styled()


def test_the_live_code_view_at_the_start_shows_the_text_before_it(clock: Clock) -> None:
    chunks = ["Here is the code:\n", "```python\n", "a = 1\n", "b = 2\n"]
    out, buffer = console(True, 40, 20)
    with ReplyStream(out) as reply:
        for chunk in chunks:
            clock.now += 0.3
            reply.feed(chunk)
        live = Screen(40, 20).write(buffer.getvalue()).lines()
    assert live == Screen(40, 20).write(whole("".join(chunks) + "```\n", True, 40, 20)).lines()


# What stays as it was


def test_markup_and_controls_in_a_reply_stay_inert(clock: Clock) -> None:
    reply = ["[bold]not bold[/bold] \x1b]52;c;aGk=\x07ok\x1b[", "2J done\n\n",
             "```\n[red]x[/red]\x1b[31m\n```"]
    for terminal in (False, True):
        output = stream(reply, terminal=terminal, clock=clock)
        text = "\n".join(Screen(60, 12).write(output).lines())
        assert "[bold]not bold[/bold]" in text and "[red]x[/red]" in text
        assert "ok done" in text and "52;" not in text and "2J" not in text
        assert "\x1b]52" not in output and "\x1b[2J" not in output


def test_a_console_that_is_not_a_terminal_gets_no_live_view() -> None:
    output = stream(["a paragraph ", "that goes on\n\n", "and ", "another"])
    assert plain(output) == ["a paragraph that goes on", "", "and another"] and "\x1b" not in output
