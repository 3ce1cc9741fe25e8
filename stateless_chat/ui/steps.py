"""One-shot output when tools are offered: stdout is the answer alone, each tool step its own lines
on stderr.

A reply streams before anyone knows whether it is the answer or a tool step (its calls come
at its end). Where stdout is not a terminal (a pipe, a file: what scripts read), each
request's text is held until its reply ends: a tool step's text then goes to stderr as one
line, and only the final answer reaches stdout. On a terminal the reply streams as it comes
(both streams are the same screen), and a step's text is ended with a newline so that its
call lines stand on their own. Either way every ``→ call`` and ``← result`` line goes to
stderr, through ``say`` (one line each, controls stripped by the caller).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Protocol

from stateless_chat.core.messages import Event, ToolAnswered, ToolCalled, describe


class Writer(Protocol):
    """Where one request's reply text goes: ``feed`` its deltas, then ``close`` (``abandon`` when the
    turn failed)."""

    def feed(self, delta: str) -> None: ...

    def close(self) -> None: ...

    def abandon(self) -> None: ...


class Steps:
    """Routes a one-shot turn's text and tool events: ``feed`` (the session's ``on_delta``), ``event``
    (its ``on_event``: returns whether the event was a step's), ``finish`` once the turn is done.

    ``open_writer`` gives the writer of one request's reply on stdout; ``say`` prints one line on
    stderr; ``hold`` says whether each reply's text waits for its end (stdout is not a terminal).
    """

    def __init__(self, open_writer: Callable[[], Writer], say: Callable[[str], None], *, hold: bool) -> None:
        self.open_writer = open_writer
        self.say = say
        self.hold = hold
        self._held = io.StringIO()
        self._writer: Writer | None = None

    def feed(self, delta: str) -> None:
        if self.hold:
            self._held.write(delta)
            return
        if self._writer is None:
            self._writer = self.open_writer()
        self._writer.feed(delta)

    def event(self, event: Event) -> bool:
        if isinstance(event, ToolCalled):
            self._end_step()
            self.say(describe(event))
            return True
        if isinstance(event, ToolAnswered):
            self.say(describe(event) if event.refused else f"← {event.tool}: {describe(event)[2:]}")
            return True
        return False

    def _end_step(self) -> None:
        """The reply so far was a tool step's: its text goes to stderr (held) or its line is ended."""
        if self.hold:
            text, self._held = self._held.getvalue(), io.StringIO()
            if text.strip():
                self.say(text)
        elif self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def abandon(self) -> None:
        """The turn failed: a reply still streaming is left as it is; nothing held is printed."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abandon()
        self._held = io.StringIO()

    def finish(self) -> None:
        """The turn is over: what is held is the answer, for stdout; the open writer is closed."""
        if self.hold:
            writer = self.open_writer()
            writer.feed(self._held.getvalue())
            self._held = io.StringIO()
            writer.close()
        elif self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
        else:  # nothing was streamed: an empty answer still ends its line
            self.open_writer().close()
