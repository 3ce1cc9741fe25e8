"""The chat's bottom toolbar, fitted to the terminal's width: the most important parts stay.

The toolbar is a row of parts, each with a ``rank`` (0 is the most important). When the row is
wider than the terminal, parts are taken in order of rank for as long as they fit, and shown in
their own order; a part that does not fit is left out whole, never cut in the middle, so that
no number is ever shown half. Only a part marked ``shrinks`` (the model name) may be shortened,
with "…", and the first-ranked part has a ``compact`` form for a terminal too narrow for it.

Fragments are ``(style, text)`` pairs, as prompt_toolkit takes them; this module itself imports
no terminal library.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

Fragment = tuple[str, str]
SEPARATOR = " │ "
MIN_SHRUNK = 8  # a shortened model name keeps at least this many cells


@dataclass(frozen=True)
class Part:
    """One piece of the toolbar: its fragments, how important it is, and what goes before it."""

    fragments: tuple[Fragment, ...]
    rank: int
    before: str = SEPARATOR  # put between it and the part shown before it
    shrinks: bool = False
    compact: tuple[Fragment, ...] = ()  # shown instead when the part does not fit even alone

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.fragments)


def cells(text: str) -> int:
    """Return how many terminal cells ``text`` takes (wide characters two, combining marks none)."""
    total = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        total += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return total


def _cut(text: str, room: int) -> str:
    """Return ``text`` cut to ``room`` cells, ending in "…" when anything was cut."""
    if cells(text) <= room:
        return text
    kept, used = [], 0
    for char in text:
        width = cells(char)
        if used + width > room - 1:
            break
        kept.append(char)
        used += width
    return "".join(kept) + "…"


def _width(parts: Sequence[Part]) -> int:
    """Return the width of ``parts`` shown in a row, with their separators and a space at each end."""
    return 2 + sum(cells(part.text) for part in parts) + sum(cells(part.before) for part in parts[1:])


def _shrunk(part: Part, room: int) -> Part:
    """Return ``part`` (one fragment) cut to ``room`` cells."""
    style, text = part.fragments[0]
    return Part(((style, _cut(text, room)),), part.rank, part.before, part.shrinks)


def fit(parts: Sequence[Part], columns: int) -> list[Fragment]:
    """Return the fragments of the toolbar that shows as much of ``parts`` as ``columns`` allow."""
    chosen: dict[int, Part] = {}
    for index in sorted(range(len(parts)), key=lambda i: (parts[i].rank, i)):
        part = parts[index]
        trial = {**chosen, index: part}
        width = _width([trial[i] for i in sorted(trial)])
        if not chosen and width > columns and part.compact:
            trial = {index: Part(part.compact, part.rank, part.before)}
        if not chosen or width <= columns:
            chosen = trial
        elif part.shrinks and len(part.fragments) == 1:  # kept, shortened, rather than left out
            room = cells(part.text) - (width - columns)
            if room >= MIN_SHRUNK:
                chosen = {**chosen, index: _shrunk(part, room)}
    shown = [chosen[i] for i in sorted(chosen)]
    fragments: list[Fragment] = [("", " ")]
    for position, part in enumerate(shown):
        if position:
            fragments.append(("", part.before))
        fragments.extend(part.fragments)
    fragments.append(("", " "))
    return fragments


__all__ = ["Fragment", "Part", "cells", "fit"]
