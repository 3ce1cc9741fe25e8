"""Why a streamed reply ended before its first token: the same request asked once without streaming.

llama-cpp-python's server (the one the ``[local]`` extra bundles) answers a streamed request
with ``200`` and an event stream before it looks at the prompt. A prompt longer than its context
then ends that stream with no event at all, which looks like a broken connection, while the
same request without streaming is refused with a ``400`` that names the limit and the count.
``Session`` asks that way once, so that it can cut the history and resend exactly as it does
when the refusal comes straight away.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stateless_chat.errors import ContextLengthError, RequestError

if TYPE_CHECKING:
    from stateless_chat.backend import ChatBackend

# Streamed-only fields, left out of the question: it is answered in one piece.
_STREAM_ONLY = ("stream", "stream_options")


def probe_body(body: Mapping[str, Any], limit_key: str = "max_tokens") -> dict[str, Any]:
    """Return ``body`` asked without streaming for a one-token reply: the server reads the whole
    prompt (and refuses it if it is too long) but writes next to nothing."""
    probe = {key: value for key, value in body.items() if key not in _STREAM_ONLY}
    probe[limit_key] = 1
    return probe


def context_error_behind(
    backend: ChatBackend, body: Mapping[str, Any], limit_key: str = "max_tokens"
) -> ContextLengthError | None:
    """Return the server's context-length refusal of ``body`` asked without streaming, or None when
    it accepts it (or fails some other way): then the stream's own error is the one to report."""
    try:
        backend.send(probe_body(body, limit_key)).wait()
    except ContextLengthError as error:
        return error
    except RequestError:
        return None
    return None


__all__ = ["context_error_behind", "probe_body"]
