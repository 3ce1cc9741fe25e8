"""The values a turn takes and returns: its state, its setup, its hooks, its plan, its outcome.

A turn (``chat.turn.run_turn``) is a function over these: a ``TurnState`` and a ``TurnSetup``
in, a ``TurnOutcome`` out (the next state, the final reply, and the ``TurnRecord`` the log
stores as it is). ``Hooks`` say where one call's output goes; ``Told`` keeps what a turn told.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from stateless_chat.chat.summarizer import Summaries
from stateless_chat.core.cache import Prediction, Sent
from stateless_chat.core.context import Fit
from stateless_chat.core.history import Conversation
from stateless_chat.core.ledger import Ledger, TurnStats
from stateless_chat.core.messages import Entry, Event, ToolCall
from stateless_chat.core.sizing import Sizer
from stateless_chat.wire.backend import ChatBackend, Reply, ignore
from stateless_chat.wire.request import ChatRequest

if TYPE_CHECKING:
    from stateless_chat.config import Settings
    from stateless_chat.tools.specs import ToolResult, ToolSpec


class Toolbox(Protocol):
    """The tools a turn offers the model (``tools.toolbox.Toolbox`` is the one the app builds)."""

    def api_tools(self) -> list[dict[str, Any]]: ...

    def lookup(self, offered: str) -> ToolSpec | None: ...

    def call(self, offered: str, arguments: str, *, timeout: float = ...) -> ToolResult: ...


# Before a turn's first request: given the new message, the conversation and the budget, return the
# conversation with evicted turns brought back into its recalled slot, and a ``Recalled`` event each.
Recaller = Callable[[str, Conversation, int], tuple[Conversation, Sequence[Event]]]


def _nothing(delta: str) -> None:
    pass


def _refuse(call: ToolCall, spec: ToolSpec) -> bool:
    return False


def _no_failure(record: FailedTurn) -> None:
    pass


@dataclass(frozen=True)
class Hooks:
    """Where one call's output goes: its events, the reply's text as it streams, and the question
    whether a tool call may run (refused unless someone says yes)."""

    on_event: Callable[[Event], None] = ignore
    on_delta: Callable[[str], None] = _nothing
    approve: Callable[[ToolCall, ToolSpec], bool] = _refuse
    on_failed: Callable[[FailedTurn], None] = _no_failure  # a turn that failed after its tools ran


@dataclass(frozen=True)
class TurnState:
    """What a turn may change, taken together, so that a cancelled turn puts all of it back at once.

    ``sizer`` measures the conversation (it becomes exact when byte bounds stop fitting);
    ``last_sent`` is what the last request sent, for the cache prediction; ``said`` the notes
    said once per session; ``learned_budget`` the budget a refused-then-answered request taught,
    ``refused_budget`` the largest a context-length refusal allows.
    """

    conversation: Conversation
    ledger: Ledger
    sizer: Sizer
    last_sent: Sent | None = None
    said: frozenset[str] = frozenset()
    learned_budget: int | None = None
    refused_budget: int | None = None

    def made_exact(self) -> TurnState:
        """Return this state counted exactly (the history measured again when it was not)."""
        if self.sizer.exact:
            return self
        sizer = self.sizer.made_exact()
        return replace(self, sizer=sizer, conversation=self.conversation.recounted(sizer))

    def budget(self, settings: Settings) -> int:
        """Return the budget of the next request: the configured one, or less once a server taught it."""
        budget = settings.effective_budget
        return min(budget, self.learned_budget) if self.learned_budget else budget

    def context_limit(self, settings: Settings) -> int:
        """Return the most tokens one request may hold: the context window, or less once the server
        said so (a context-length refusal)."""
        known = [b for b in (self.learned_budget, self.refused_budget) if b]
        return min([settings.effective_context_window, *known])


@dataclass(frozen=True)
class TurnSetup:
    """What a turn runs with and does not change: the settings, where requests go, the tools
    offered, how evicted turns are recalled, the clock (for the cache's lifetime), and the summaries
    written so far with what they cost until a turn completes, and how documents are retrieved for the
    message (its retrieved slot, like ``recall``'s recalled one)."""

    settings: Settings
    backend: ChatBackend | None
    tools: Toolbox | None = None
    recall: Recaller | None = None
    clock: Callable[[], float] = time.time
    summaries: Summaries = field(default_factory=Summaries)
    retrieve: Recaller | None = None  # fills the retrieved slot with documents for the message

    @property
    def endpoint(self) -> str:
        """Return the endpoint the next request goes to first (``host:port``)."""
        return self.backend.name if self.backend is not None else ""

    def tools_offered(self) -> tuple[dict[str, Any], ...]:
        """Return the request's ``tools`` array: the enabled tools, identical from step to step."""
        return tuple(self.tools.api_tools()) if self.tools is not None else ()


@dataclass(frozen=True)
class Plan:
    """The next request, fitted to the budget: this turn's new entries, what fitting did, the
    request, and how much of it repeats the previous request (the server's cached prefix, predicted)."""

    pending: tuple[Entry, ...]
    fit: Fit
    request: ChatRequest
    budget: int
    cache: Prediction
    endpoint: str  # where the request was to go first (the prediction assumed it)
    base: Conversation  # the conversation it sends, with any recalled turns in their slot


@dataclass(frozen=True)
class StepCost:
    """One request of a turn by the client's own count: its prompt tokens, what of them the cache model
    predicts the server reads again, and why the cache broke before it (None: it did not)."""

    prompt: int
    cached: int
    cache_break: str | None = None


@dataclass(frozen=True)
class TurnRecord:
    """One completed turn, as the log stores it.

    ``requests`` are the exact bodies of the chat requests the turn sent and got a reply to,
    in order (its tool steps, then the final one, which ``reply`` answers); ``events`` are the
    events it emitted; ``conversation`` and ``ledger`` are the conversation and the accounting
    after the turn; ``model`` the model it was sent to; ``settings`` those it ran with;
    ``seconds`` the time from its start to the end of its reply; ``costs`` each request's own count,
    in the order of ``requests``.
    """

    turn: int
    requests: tuple[Mapping[str, Any], ...]
    reply: Reply
    stats: TurnStats
    events: tuple[Event, ...]
    conversation: Conversation
    model: str
    retrieved: tuple[Entry, ...] = ()  # the documents its requests carried (the retrieved slot)
    ledger: Ledger | None = None
    settings: Settings | None = None
    seconds: float = 0.0
    costs: tuple[StepCost, ...] = ()


@dataclass(frozen=True)
class FailedTurn:
    """A turn that failed or was cancelled after its tools ran (their side effects happened), as the
    log is told of it; the conversation stays as it was.

    ``requests`` are the bodies answered; ``pending`` its message, the calls and the results that
    came back; ``reason`` is ``cancelled`` or the error's one line.
    """

    turn: int
    requests: tuple[Mapping[str, Any], ...]
    pending: tuple[Entry, ...]
    events: tuple[Event, ...]
    reason: str
    model: str


@dataclass(frozen=True)
class TurnOutcome:
    """What a completed turn returns: the state after it, its final reply, and its record."""

    state: TurnState
    reply: Reply
    record: TurnRecord


class Told:
    """Where a turn's events go: each to the hooks' ``on_event`` as it happens, and kept in order for
    the turn's record. Call it with an event; ``once`` says a note at most once per session (``said``
    carries the keys from turn to turn)."""

    def __init__(self, on_event: Callable[[Event], None], said: frozenset[str] = frozenset()) -> None:
        self.on_event = on_event
        self.events: list[Event] = []
        self.said = set(said)

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.on_event(event)

    def once(self, key: str, event: Event) -> None:
        if key not in self.said:
            self.said.add(key)
            self(event)


__all__ = ["FailedTurn", "Hooks", "Plan", "Recaller", "StepCost", "Told", "Toolbox", "TurnOutcome",
           "TurnRecord", "TurnSetup", "TurnState"]
