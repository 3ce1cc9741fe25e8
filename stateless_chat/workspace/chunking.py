"""Documents split along their structure into chunks of a few hundred tokens, each with its line span
and the path of headings above it.

A document is read as blocks: a heading (Markdown ``#``, a Setext or reStructuredText underline,
an HTML ``<h1>``-``<h6>``), a fenced code block, or a run of lines up to a blank line; lines
indented after a blank line stay with the block above them (an rST literal block or directive
body, a list item's next paragraph, a function's body), so code is not cut in the middle when
it need not be. Blocks are gathered into chunks of about ``TARGET_CHARS`` characters (~300
tokens): a heading starts a new chunk once the one before it has ``MIN_CHARS``, and a block
longer than ``MAX_CHARS`` is split at its blank lines, then between lines. HTML is read as text
(``html.parser``; scripts and styles left out) with its headings kept, and each line of that
text keeps the line of the source it came from, so spans point into the file as it is. Only the
standard library is used; a character is about a quarter of a token, which is all chunking needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath

TARGET_CHARS = 1200
MIN_CHARS = 300
MAX_CHARS = 2000
MAX_HEADING = 200  # characters of a heading path kept

MARKDOWN = frozenset({".md", ".markdown", ".mdx", ".mkd"})
RST = frozenset({".rst", ".rest", ".txt", ".text"})  # plain .txt is read as rST: its underlines are headings
HTML = frozenset({".html", ".htm", ".xhtml"})

_ATX = re.compile(r" {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_UNDERLINE = re.compile(r"([=\-~^\"'`#*+.:_<>])\1{2,}\s*$")


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: its first and last line (1-based, inclusive), the headings above it
    (``A > B``) and its text (the lines as they are in the file, or the text of HTML)."""

    start: int
    end: int
    heading: str
    text: str


@dataclass
class _Block:
    start: int  # index into the lines
    end: int  # exclusive
    level: int = 0  # a heading's level (1 = the top), 0 for any other block
    title: str = ""


def kind_of(path: PurePath) -> str:
    """Return how to read the file at ``path``: ``markdown``, ``rst``, ``html`` or ``text``."""
    suffix = path.suffix.lower()
    if suffix in MARKDOWN:
        return "markdown"
    if suffix in RST:
        return "rst"
    if suffix in HTML:
        return "html"
    return "text"


def chunk(text: str, kind: str) -> list[Chunk]:
    """Return ``text`` (a document read as ``kind``) split into chunks, in order."""
    if kind == "html":
        lines, sources = html_lines(text)
        kind = "markdown"
    else:
        lines = text.splitlines()
        sources = list(range(1, len(lines) + 1))
    blocks = list(_blocks(lines, kind))
    return list(_gather(lines, sources, blocks))


# ---- blocks -----------------------------------------------------------------------------------


def _underline(lines: Sequence[str], index: int, kind: str) -> bool:
    """Return whether ``lines[index]`` underlines the title on the line before it."""
    if index == 0 or kind == "text":
        return False
    line, title = lines[index], lines[index - 1]
    match = _UNDERLINE.match(line)
    if match is None or not title.strip() or title[:1].isspace():
        return False
    if kind == "markdown" and match.group(1) not in "=-":
        return False
    return len(line.rstrip()) >= min(len(title.rstrip()), 3)


def _blocks(lines: Sequence[str], kind: str) -> Iterator[_Block]:
    """Yield the blocks of ``lines``: headings, fenced code, and paragraphs with their indented tail."""
    styles: list[tuple[str, bool]] = []  # rST heading styles (character, overlined), in order of first use
    index, count = 0, len(lines)
    while index < count:
        line = lines[index]
        if not line.strip():
            index += 1
            continue
        if kind == "markdown":
            atx = _ATX.match(line)
            if atx is not None:
                yield _Block(index, index + 1, len(atx.group(1)), atx.group(2))
                index += 1
                continue
            fence = _FENCE.match(line)
            if fence is not None:
                marker = fence.group(1)
                end = index + 1
                while end < count and not lines[end].lstrip().startswith(marker):
                    end += 1
                yield _Block(index, min(end + 1, count))
                index = end + 1
                continue
        if kind != "text" and index + 1 < count and _underline(lines, index + 1, kind):
            over = index > 0 and lines[index - 1].strip() == lines[index + 1].strip() \
                and _UNDERLINE.match(lines[index - 1]) is not None
            style = (lines[index + 1].strip()[0], over)
            if style not in styles:
                styles.append(style)
            level = styles.index(style) + 1 if kind == "rst" else (1 if style[0] == "=" else 2)
            yield _Block(index, index + 2, level, line.strip())
            index += 2
            continue
        if kind == "rst" and index + 2 < count and _UNDERLINE.match(line) \
                and _underline(lines, index + 2, kind) and lines[index + 2].strip() == line.strip():
            index += 1  # an overline: the title and its underline come next
            continue
        end = index + 1
        while end < count:
            if not lines[end].strip():
                after = end
                while after < count and not lines[after].strip():
                    after += 1
                if after < count and lines[after][:1].isspace():
                    end = after  # indented after a blank line: the same block goes on
                    continue
                break
            if kind == "markdown" and (_ATX.match(lines[end]) or _FENCE.match(lines[end])):
                break
            if kind != "text" and end + 1 < count and _underline(lines, end + 1, kind):
                break
            end += 1
        yield _Block(index, end)
        index = end


# ---- gathering blocks into chunks -----------------------------------------------------------


def _gather(lines: Sequence[str], sources: Sequence[int], blocks: Sequence[_Block]) -> Iterator[Chunk]:
    path: list[tuple[int, str]] = []  # the headings above, (level, title)
    parts: list[_Block] = []
    heading = ""
    size = 0

    def text_of(block: _Block) -> str:
        return "\n".join(lines[block.start:block.end]).rstrip()

    def flush() -> Iterator[Chunk]:
        nonlocal parts, size
        if parts:
            body = "\n\n".join(text_of(b) for b in parts).strip("\n")
            if body.strip():
                yield Chunk(sources[parts[0].start], sources[parts[-1].end - 1], heading, body)
        parts, size = [], 0

    for block in blocks:
        length = sum(len(line) + 1 for line in lines[block.start:block.end])
        if block.level:
            if size >= MIN_CHARS:
                yield from flush()
            while path and path[-1][0] >= block.level:
                path.pop()
            path.append((block.level, " ".join(block.title.split())))
            if not parts:
                heading = _heading(path)
            parts.append(block)
            size += length
            continue
        if parts and size + length > TARGET_CHARS:
            yield from flush()
        if not parts:
            heading = _heading(path)
        if length > MAX_CHARS:
            yield from flush()
            for start, end in _split(lines, block):
                text = "\n".join(lines[start:end]).strip("\n")
                yield Chunk(sources[start], sources[end - 1], heading, text)
            continue
        parts.append(block)
        size += length
    yield from flush()


def _heading(path: Sequence[tuple[int, str]]) -> str:
    text = " > ".join(title for _, title in path)
    return text if len(text) <= MAX_HEADING else "…" + text[-(MAX_HEADING - 1):]


def _split(lines: Sequence[str], block: _Block) -> Iterator[tuple[int, int]]:
    """Yield line ranges of a long block, each about ``TARGET_CHARS`` at most: cut at a blank line
    where there is one in the second half of a piece, else between lines."""
    start = block.start
    while start < block.end:
        size, end, blank = 0, start, None
        while end < block.end and (size == 0 or size + len(lines[end]) + 1 <= TARGET_CHARS):
            size += len(lines[end]) + 1
            if not lines[end].strip() and size > TARGET_CHARS // 2:
                blank = end
            end += 1
        if end < block.end and blank is not None:
            end = blank + 1
        yield start, end
        start = end


# ---- HTML -----------------------------------------------------------------------------------


class _Text(HTMLParser):
    """HTML as lines of text, each with the source line it starts on; headings as ``#`` lines, ``pre``
    as fenced blocks; scripts, styles and templates left out."""

    BLOCKS = frozenset({"p", "div", "section", "article", "header", "footer", "li", "ul", "ol", "table",
                        "tr", "br", "hr", "blockquote", "dd", "dt", "dl", "main", "nav", "aside", "figure",
                        "figcaption", "form", "details", "summary"})
    HIDDEN = frozenset({"script", "style", "template", "noscript", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[tuple[int, str]] = []
        self.current: list[str] = []
        self.start = 1
        self.hidden = 0
        self.pre = 0
        self.heading = 0

    def _break(self, blank: bool = False) -> None:
        text = "".join(self.current)
        self.current = []
        if self.pre:
            for offset, line in enumerate(text.split("\n")):
                self.lines.append((self.start + offset, line.rstrip()))
        elif text.strip():
            words = " ".join(text.split())
            self.lines.append((self.start, ("#" * self.heading + " " if self.heading else "") + words))
        if blank:
            self.lines.append((self.getpos()[0], ""))
        self.start = self.getpos()[0]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag in self.BLOCKS or re.fullmatch(r"h[1-6]", tag):
            self._break(blank=tag != "br")
            if tag[0] == "h" and tag[1:].isdigit():
                self.heading = int(tag[1])
        elif tag == "pre":
            self._break(blank=True)
            self.lines.append((self.getpos()[0], "```"))
            self.pre += 1
            self.start = self.getpos()[0]

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag == "pre" and self.pre:
            self._break()
            self.pre -= 1
            self.lines.append((self.getpos()[0], "```"))
            self.lines.append((self.getpos()[0], ""))
        elif tag in self.BLOCKS or re.fullmatch(r"h[1-6]", tag):
            self._break(blank=True)
            self.heading = 0

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if not self.current:
            self.start = self.getpos()[0] + (len(data) - len(data.lstrip("\n")) if not self.pre else 0)
        self.current.append(data)


def html_lines(text: str) -> tuple[list[str], list[int]]:
    """Return the text of an HTML document as lines, and the source line each one starts on."""
    parser = _Text()
    parser.feed(text)
    parser.close()
    parser._break()
    lines: list[str] = []
    sources: list[int] = []
    for source, line in parser.lines:
        if not line and lines and not lines[-1]:
            continue
        lines.append(line)
        sources.append(max(1, source))
    return lines, sources


__all__ = ["Chunk", "chunk", "html_lines", "kind_of"]
