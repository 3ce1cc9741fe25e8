"""Retries and failover: a ``ChatBackend`` over several endpoints.

Each request carries the whole conversation, so a failed request can simply be sent again,
to the same endpoint or another; each endpoint's backend shapes it in its own dialect.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from stateless_chat.core.messages import Event, FailedOver, Retrying
from stateless_chat.errors import (
    ConnectError,
    ConnectionRefused,
    RequestError,
    RequestTimeout,
    ServerError,
    Stalled,
    StreamBroke,
)
from stateless_chat.wire.backend import ChatBackend, Reply, ignore
from stateless_chat.wire.request import ChatRequest


class Failover:
    """A ``ChatBackend`` over several endpoints: retries with backoff, then the next endpoint.

    Each request carries the whole conversation, so a failed request can simply be sent
    again, to the same endpoint or another. Retryable: connection failures, timeouts,
    408/409/429/5xx, and a stream that breaks or stalls before its first token (nothing
    has been shown yet). A refused connection goes to the next endpoint at once. With
    ``retry_timeouts`` False (a single-slot local server still busy with the abandoned
    request), a timeout is reported at once instead of being sent again. The next request
    starts at the endpoint that last worked. ``health_check``, when given, is asked
    whenever an endpoint cannot be reached or a reply breaks off: if it raises (the local
    model's server died), that error is reported at once, since retrying cannot help.
    """

    def __init__(
        self,
        backends: Sequence[ChatBackend],
        *,
        max_retries: int = 2,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        health_check: Callable[[], None] | None = None,
        retry_timeouts: bool = True,
    ) -> None:
        if not backends:
            raise ValueError("at least one backend is needed")
        self.backends = tuple(backends)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep
        self._health_check = health_check
        self.retry_timeouts = retry_timeouts
        self.preferred = 0  # index of the backend that last worked; the next request starts there

    @property
    def name(self) -> str:
        return self.backends[self.preferred].name

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """Return the body the endpoint tried first would be sent for ``request``."""
        return self.backends[self.preferred].body(request)

    def send(self, request: ChatRequest, on_event: Callable[[Event], None] = ignore) -> Reply:
        order = [(self.preferred + i) % len(self.backends) for i in range(len(self.backends))]
        for position, index in enumerate(order):
            backend = self.backends[index]
            following = self.backends[order[position + 1]] if position + 1 < len(order) else None
            try:
                reply = self._with_retries(backend, request, on_event, more=following is not None)
            except (ConnectError, ServerError, StreamBroke, Stalled) as error:
                if following is None or not _can_fail_over(error):
                    raise
                on_event(FailedOver(backend.name, str(error), following.name))
                continue
            self.preferred = index
            return reply
        raise AssertionError("unreachable: the last backend returns or raises")

    def _with_retries(self, backend: ChatBackend, request: ChatRequest, on_event: Callable[[Event], None], *,
                      more: bool) -> Reply:
        attempt = 0
        while True:
            try:
                reply = backend.send(request, on_event)
                reply.on_failure = self._health_check
                try:
                    reply.prefetch()
                except BaseException:
                    # Hang up (Ctrl-C while the server reads a long prompt, an error): a server left
                    # holding the connection would go on generating the abandoned reply.
                    reply.close()
                    raise
                return reply
            except (ConnectError, StreamBroke, Stalled) as error:
                if self._health_check is not None:
                    self._health_check()
                failure: RequestError = error
            except ServerError as error:
                failure = error
            if not _is_retryable(failure, self.retry_timeouts) or attempt >= self.max_retries:
                raise failure
            if more and isinstance(failure, ConnectionRefused):
                raise failure
            attempt += 1
            delay = self._delay(attempt, failure.retry_after if isinstance(failure, ServerError) else None)
            on_event(Retrying(backend.name, attempt, self.max_retries, delay, str(failure)))
            self._sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Return the wait before retry ``attempt``: ``Retry-After`` when given (at most 60 s), else
        exponential backoff with jitter."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), 60.0)
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


def _is_retryable(error: RequestError, retry_timeouts: bool) -> bool:
    if isinstance(error, (RequestTimeout, Stalled)):
        return retry_timeouts
    if isinstance(error, (ConnectError, StreamBroke)):
        return True
    return isinstance(error, ServerError) and error.retryable


def _can_fail_over(error: RequestError) -> bool:
    """An endpoint that is down or overloaded can be replaced; a rejected request cannot."""
    return _is_retryable(error, True)
