"""One request value, and the dialect that turns it into the JSON body an endpoint accepts.

Every chat request the program sends (a turn's, a tool step's, the summary's, the overflow
probe's) is a ``ChatRequest``: a frozen value the core's numbers produce, with no knowledge
of any server. What a server accepts is the ``Dialect`` of its endpoint: the name of the
reply's length limit (``max_tokens``, or ``max_completion_tokens`` for OpenAI's reasoning
models) and whether a streamed request may ask for usage (``stream_options``, which servers
older than it refuse over the whole request). Each backend owns the dialect of its endpoint
and adapts it when its server refuses a parameter, so a request built anywhere goes out in
the form that endpoint was last seen to accept; ``Dialect.body`` is the one place a body is
built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from stateless_chat.core.messages import Message
from stateless_chat.errors import ParameterRejected


@dataclass(frozen=True)
class ChatRequest:
    """What one chat-completions request asks, before any endpoint's dialect shapes it.

    ``max_reply`` is the reply's length limit (the budget's reply reserve for a turn);
    ``tools`` the request's ``tools`` array, identical from step to step ([] offers none).
    """

    model: str
    messages: tuple[Message, ...]
    max_reply: int
    tools: tuple[Mapping[str, Any], ...] = ()
    temperature: float | None = None
    stream: bool = False

    @staticmethod
    def of(model: str, messages: Sequence[Message], max_reply: int, *,
           tools: Sequence[Mapping[str, Any]] = (), temperature: float | None = None,
           stream: bool = False) -> ChatRequest:
        """Return the request for ``messages`` (any sequence) with the given parameters."""
        return ChatRequest(model, tuple(messages), max_reply, tuple(tools), temperature, stream)

    def probe(self) -> ChatRequest:
        """Return this request asked without streaming for a one-token reply: the server reads the
        whole prompt (and refuses it if it is too long) but writes next to nothing."""
        return replace(self, stream=False, max_reply=1)


@dataclass
class Dialect:
    """What one endpoint's server accepts, as learned from its refusals (it starts optimistic).

    ``limit_key`` names the reply's length limit; ``usage_on_stream`` says whether a streamed
    request asks for usage in its last event. Adapting never goes back: a server that refused a
    parameter once is not sent it again in this run.
    """

    limit_key: str = "max_tokens"
    usage_on_stream: bool = True

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """Return the exact JSON body of ``request`` for this endpoint: what ``/raw`` shows, what the
        server receives and what the log stores."""
        body: dict[str, Any] = {"model": request.model, "messages": [m.to_api() for m in request.messages]}
        if request.tools:
            body["tools"] = list(request.tools)
        if request.temperature is not None:
            body["temperature"] = request.temperature
        # The reply may use what the budget holds back for it, and no more: a local model that
        # never stops would otherwise write until its context is full.
        body[self.limit_key] = request.max_reply
        if request.stream:
            body["stream"] = True
            if self.usage_on_stream:
                body["stream_options"] = {"include_usage": True}
        return body

    def adapt(self, refused: ParameterRejected, body: Mapping[str, Any]) -> str | None:
        """Learn from the server's refusal of one parameter of ``body``; return a note for the user
        ("" when there is nothing to tell), or None when the refusal is not one a resend can mend."""
        if refused.param == "stream_options" and "stream_options" in body:
            # Servers that predate stream_options reject the whole request over it (400).
            self.usage_on_stream = False
            return "the server does not accept stream_options: usage will not be reported"
        if refused.param == "max_tokens" and "max_tokens" in body:
            # OpenAI's reasoning models take the same limit only as max_completion_tokens.
            self.limit_key = "max_completion_tokens"
            return ""
        return None


__all__ = ["ChatRequest", "Dialect"]
