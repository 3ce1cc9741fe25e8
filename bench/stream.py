"""Streaming render: a long reply, one word per chunk, through ``render.ReplyStream`` to a null terminal.

The chunks arrive on a simulated clock (``WORDS_PER_SECOND``), so the renderer's
refresh throttle fires as often as it would for a real stream; feeding them all in
the same instant would hide the cost of redrawing. CPU time is measured, for three
shapes of reply: paragraphs, one paragraph with no break, and one long code block
(the last two never finish a block until the end).

The renders run in a child process. Rich keeps a style's escape codes on the style,
made for the colour system of the first console that draws it, and hands equal styles
out of process-wide caches: drawn here, on a null terminal whose colours are whatever
the environment says, the code block's styles would reach every later console of the
caller (a test's truecolor console would draw the block in 16 colours).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from bench.common import ROOT, clean_env

WORDS_PER_SECOND = 50.0
SHAPES = ("paragraphs", "one paragraph", "code block")


@dataclass
class StreamRow:
    """CPU seconds to render ``words`` chunks of reply shaped as ``shape``."""

    shape: str
    words: int
    cpu: float


def chunks(shape: str, words: int) -> list[str]:
    """Return the reply as chunks of one word each (one line each for code)."""
    if shape == "code block":
        return ["```python\n", *(f"x{i} = {i}\n" for i in range(words - 2)), "```\n"]
    every = 50 if shape == "paragraphs" else 0
    return [f"word{i}" + ("\n\n" if every and i % every == every - 1 else " ") for i in range(words)]


class _Clock:
    """A stand-in for the ``time`` module inside ``render``: ``monotonic`` advances per chunk."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@contextmanager
def simulated_clock() -> Iterator[_Clock]:
    """Make ``render`` see a clock that the caller advances, restoring the real one afterwards."""
    from stateless_chat.ui import render

    clock = _Clock()
    real = render.__dict__["time"]
    setattr(render, "time", clock)  # noqa: B010  (render reads time.monotonic through its module global)
    try:
        yield clock
    finally:
        setattr(render, "time", real)  # noqa: B010


def render_cpu(shape: str, words: int) -> float:
    """Return the CPU seconds ``ReplyStream`` takes for the reply, on a null 100x40 terminal."""
    from rich.console import Console

    from stateless_chat.ui.render import ReplyStream

    parts = chunks(shape, words)
    with open(os.devnull, "w", encoding="utf-8") as null, simulated_clock() as clock:
        console = Console(file=null, force_terminal=True, width=100, height=40)
        start = time.process_time()
        with ReplyStream(console) as stream:
            for part in parts:
                clock.now += 1 / WORDS_PER_SECOND
                stream.feed(part)
        return time.process_time() - start


def run(sizes: tuple[int, ...] = (1_000, 2_500, 5_000)) -> list[StreamRow]:
    """Return a row per shape and size, measured in a fresh child process (see the module's notes)."""
    done = subprocess.run([sys.executable, "-m", "bench.stream", *map(str, sizes)], env=clean_env(),
                          capture_output=True, timeout=600, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"stream child failed: {done.stderr.decode('utf-8', 'replace')[-800:]}")
    cpus: list[float] = json.loads(done.stdout)
    cases = [(shape, n) for shape in SHAPES for n in sizes]
    return [StreamRow(shape, n, cpu) for (shape, n), cpu in zip(cases, cpus, strict=True)]


if __name__ == "__main__":  # the child: the CPU seconds of each shape and size given, as JSON
    given = tuple(int(arg) for arg in sys.argv[1:])
    print(json.dumps([render_cpu(shape, n) for shape in SHAPES for n in given]))
