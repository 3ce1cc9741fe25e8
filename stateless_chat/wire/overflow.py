"""Why a streamed reply ended before its first token: the same request asked once without streaming.

llama-cpp-python's server (the one the ``[local]`` extra bundles) answers a streamed request
with ``200`` and an event stream before it looks at the prompt. A prompt longer than its context
then ends that stream with no event at all, which looks like a broken connection, while the
same request without streaming is refused with a ``400`` that names the limit and the count.
The turn asks that way once, so that it can cut the history and resend exactly as it does
when the refusal comes straight away.
"""

from __future__ import annotations

from collections.abc import Callable

from stateless_chat.core.messages import Event
from stateless_chat.errors import ContextLengthError, RequestError
from stateless_chat.wire.backend import ChatBackend, ignore
from stateless_chat.wire.request import ChatRequest


def context_error_behind(backend: ChatBackend, request: ChatRequest,
                         on_event: Callable[[Event], None] = ignore) -> ContextLengthError | None:
    """Return the server's context-length refusal of ``request`` asked without streaming for one token
    (``ChatRequest.probe``), or None when it accepts it (or fails some other way): then the stream's own
    error is the one to report."""
    try:
        backend.send(request.probe(), on_event).wait()
    except ContextLengthError as error:
        return error
    except RequestError:
        return None
    return None


__all__ = ["context_error_behind"]
