"""An in-memory backend that answers from a script: the test double of the backend seam.

Like httpx's ``MockTransport``, it sits where a real endpoint would and lets the turn's logic be
exercised without a socket: each request is answered by ``answer(request)`` (a text, a
``Scripted`` reply with tool calls, or an exception to raise, as a real backend raises a
``RequestError``). It shapes bodies with a ``Dialect`` like any endpoint, records every
body it was sent, and can refuse parameters the way a server does, so that adapting to a
dialect is testable too. It reports usage as a server would, counting a body's characters
with ``count`` (by default a token per four characters).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stateless_chat.core.messages import Event, ToolCall, Usage
from stateless_chat.errors import ParameterRejected
from stateless_chat.wire.backend import Chunk, Reply, ToolCallDelta, ignore
from stateless_chat.wire.request import ChatRequest, Dialect


@dataclass(frozen=True)
class Scripted:
    """A scripted reply: its text, the tool calls it asks for, and how it finished."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None


Answer = str | Scripted | BaseException


def _quarter(body: Mapping[str, Any]) -> int:
    return max(1, len(json.dumps(body.get("messages", []), ensure_ascii=False)) // 4)


@dataclass
class ScriptedBackend:
    """A ``ChatBackend`` that answers each request with ``answer(request)``.

    ``refuses`` names parameters its "server" refuses (``max_tokens``, ``stream_options``), each
    answered with the ``ParameterRejected`` a real server's 400 becomes; ``bodies`` records every
    body sent, refused ones included, in order.
    """

    answer: Callable[[ChatRequest], Answer]
    name: str = "scripted"
    refuses: frozenset[str] = frozenset()
    count: Callable[[Mapping[str, Any]], int] = _quarter
    report_usage: bool = True
    dialect: Dialect = field(default_factory=Dialect)
    bodies: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def replying(*answers: Answer) -> ScriptedBackend:
        """Return a backend that gives ``answers`` in order, one a request (the last one thereafter)."""
        queue = list(answers)

        def next_answer(request: ChatRequest) -> Answer:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        return ScriptedBackend(next_answer)

    def body(self, request: ChatRequest) -> dict[str, Any]:
        return self.dialect.body(request)

    def send(self, request: ChatRequest, on_event: Callable[[Event], None] = ignore) -> Reply:
        body = self.dialect.body(request)
        self.bodies.append(body)
        refused = next((key for key in body if key in self.refuses), None)
        if refused is not None:
            error = ParameterRejected(f"{self.name} does not accept {refused}", refused)
            note = self.dialect.adapt(error, body)
            if note is None:
                raise error
            return self.send(request, on_event)
        answer = self.answer(request)
        if isinstance(answer, BaseException):
            raise answer
        scripted = Scripted(answer) if isinstance(answer, str) else answer
        return Reply(body, f"scripted://{self.name}", self._chunks(body, scripted), name=self.name)

    def _chunks(self, body: Mapping[str, Any], scripted: Scripted) -> Iterator[Chunk]:
        words = scripted.text.split(" ")
        for index, word in enumerate(words):
            yield Chunk(text=word if index == 0 else " " + word)
        calls = tuple(ToolCallDelta(index, call.id, call.name, call.arguments)
                      for index, call in enumerate(scripted.tool_calls))
        finish = scripted.finish_reason or ("tool_calls" if calls else "stop")
        completion = max(1, len(scripted.text) // 4)
        usage = Usage(self.count(body), completion, 0) if self.report_usage else None
        yield Chunk(tool_calls=calls, finish_reason=finish, usage=usage)

    def close(self) -> None:
        pass


def requests_of(backend: ScriptedBackend) -> Sequence[dict[str, Any]]:
    """Return the bodies ``backend`` answered (those refused over a parameter left out)."""
    return [body for body in backend.bodies if not any(key in body for key in backend.refuses)]


__all__ = ["Answer", "Scripted", "ScriptedBackend", "requests_of"]
