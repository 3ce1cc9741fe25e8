"""One exchange: send a request, stream its reply, and say why a stream ended before it began.

``exchange`` is what a turn does with each request: the backend sends it in its endpoint's
dialect, the reply's text goes to ``on_delta`` as it arrives, and the connection is closed
however the reading ends. A streamed reply that ends cleanly before its first token is asked
about once more without streaming (``overflow.context_error_behind``): llama-cpp-python
ends such a stream silently when the prompt is longer than its context, and answers the
same request unstreamed with the refusal that says so.
"""

from __future__ import annotations

from collections.abc import Callable

from stateless_chat.core.messages import Event
from stateless_chat.errors import StreamError
from stateless_chat.wire.backend import ChatBackend, Reply
from stateless_chat.wire.overflow import context_error_behind
from stateless_chat.wire.request import ChatRequest


def exchange(backend: ChatBackend, request: ChatRequest, on_delta: Callable[[str], None],
             on_event: Callable[[Event], None]) -> Reply:
    """Send ``request`` and stream its reply's text to ``on_delta``; return the reply, read whole.

    Raises the backend's ``RequestError``; a ``ContextLengthError`` when an empty stream turns out
    to be the server's refusal of a prompt longer than its context.
    """
    shown = False
    reply = backend.send(request, on_event)
    try:
        for delta in reply:
            shown = True
            on_delta(delta)
    except StreamError as error:
        # Only a stream that ended cleanly with nothing in it: a broken connection is no question
        # for the server, and a reply already shown is not asked for again.
        if shown or not request.stream or type(error) is not StreamError:
            raise
        behind = context_error_behind(backend, request, on_event)
        if behind is None:
            raise
        raise behind from error
    finally:
        reply.close()
    return reply


__all__ = ["exchange"]
