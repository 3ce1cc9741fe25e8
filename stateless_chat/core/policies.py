"""The registry of eviction policies: the one list of their names.

Config validation, ``/policy`` and its completion, ``--help`` and the docs all read
``POLICIES``. A new policy is a class with a ``name`` and a ``fit(candidate) -> Fit``
method (``context.Policy``), registered here with one line of help and how to build it
from what a session can give it (``PolicyTools``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stateless_chat.core.context import DropOldest, KeepAll, Policy
from stateless_chat.core.messages import Message
from stateless_chat.core.summary import Summarize, SummaryWriter
from stateless_chat.errors import ConfigError


@dataclass(frozen=True)
class PolicyTools:
    """What a session gives a policy to build it: its counter and the summary writer (if any)."""

    counter: Callable[[Message], int]
    writer: SummaryWriter | None = None


@dataclass(frozen=True)
class PolicyInfo:
    """A registered policy: its name, one line of help, and how to build it."""

    name: str
    help: str
    make: Callable[[PolicyTools], Policy]


POLICIES: dict[str, PolicyInfo] = {
    info.name: info
    for info in (
        PolicyInfo("drop-oldest", "drop the oldest unpinned turns until the request fits",
                   lambda tools: DropOldest()),
        PolicyInfo("summarize", "fold the oldest turns into a running summary (one extra request)",
                   lambda tools: Summarize(tools.writer, tools.counter)),
        PolicyInfo("none", "evict nothing; warn when a request is over budget", lambda tools: KeepAll()),
    )
}
POLICY_NAMES: tuple[str, ...] = tuple(POLICIES)


def make_policy(name: str, tools: PolicyTools) -> Policy:
    """Return the policy called ``name``; ``ConfigError`` naming the choices for an unknown one."""
    info = POLICIES.get(name)
    if info is None:
        raise ConfigError(f"unknown context policy {name!r}: choose one of {', '.join(POLICY_NAMES)}")
    return info.make(tools)
