"""The tools a session offers: the MCP servers' and the built-in ones, behind one interface.

A built-in tool is a plain function behind the same interface as an MCP server's tool: a
``ToolSpec`` to offer and a call that returns a ``ToolResult``. The one built in is
``recall_history`` (``RecallTool``): the model searches the turns that were evicted to
fit the budget. Built-ins are approved like any other tool, and offered only where tools are
(with MCP servers configured), so that a chat without tools never sends a ``tools`` array.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from stateless_chat.core.messages import Entry
from stateless_chat.tools.servers import ToolResult, ToolServers, ToolSpec

BUILTIN = "builtin"  # the server name built-in tools are shown under (``builtin.recall_history``)


class Builtin(Protocol):
    """A tool that runs in this process."""

    @property
    def spec(self) -> ToolSpec: ...

    def call(self, arguments: str) -> ToolResult:
        """Return the result for the model's JSON ``arguments``; never raises for what the model sent."""
        ...


class Toolbox:
    """The MCP servers' tools and the built-in ones, offered together, sorted by the name the model
    calls; a server tool that takes a built-in's name is offered under ``{server}_{name}``."""

    def __init__(self, servers: ToolServers | None, builtins: Sequence[Builtin] = ()) -> None:
        self.servers = servers
        self.builtins = {builtin.spec.offered: builtin for builtin in builtins}

    def _catalog(self) -> list[tuple[ToolSpec, str | None]]:
        """Return each tool as offered here, with the name its server offers it under (None for a
        built-in), sorted by the name offered here."""
        found: list[tuple[ToolSpec, str | None]] = [(b.spec, None) for b in self.builtins.values()]
        for spec in self.servers.tools() if self.servers is not None else ():
            ours = spec
            if spec.offered in self.builtins:
                ours = ToolSpec(spec.server, spec.name, f"{spec.server}_{spec.name}"[:64], spec.description,
                                spec.input_schema, spec.approve)
            found.append((ours, spec.offered))
        return sorted(found, key=lambda pair: pair[0].offered)

    def tools(self) -> tuple[ToolSpec, ...]:
        """Return every tool offered, sorted by the name the model calls."""
        return tuple(spec for spec, _ in self._catalog())

    def api_tools(self) -> list[dict[str, Any]]:
        """Return the request's ``tools`` array: the same for the same tools, step after step."""
        return [spec.to_api() for spec in self.tools()]

    def lookup(self, offered: str) -> ToolSpec | None:
        return next((spec for spec in self.tools() if spec.offered == offered), None)

    def call(self, offered: str, arguments: str, *, timeout: float = 60.0) -> ToolResult:
        """Run the tool the model calls ``offered``: a built-in here, else on its server."""
        builtin = self.builtins.get(offered)
        if builtin is not None:
            return builtin.call(arguments)
        if self.servers is None:
            return ToolResult(f"there is no tool {offered!r}", is_error=True)
        theirs = next((name for spec, name in self._catalog() if spec.offered == offered and name), offered)
        return self.servers.call(theirs, arguments, timeout=timeout)


RECALL_RESULTS = 3  # turns one recall_history call returns, best first


class Found(Protocol):
    """An evicted turn a search found (``store.journal.RecallMatch`` is one)."""

    @property
    def turn(self) -> int: ...

    @property
    def ids(self) -> tuple[int, ...]: ...

    @property
    def state(self) -> str: ...


class RecallTool:
    """``recall_history(query)``: the evicted turns of this conversation that match ``query``,
    verbatim, best first (the same search as ``/recall``)."""

    spec = ToolSpec(
        BUILTIN, "recall_history", "recall_history",
        "Search the earlier turns of this conversation that are no longer in your context (they were "
        "evicted to fit the token budget) and return the best matches verbatim. Use it when the user "
        "refers to something said earlier that you cannot see.",
        {"type": "object", "properties": {"query": {"type": "string", "description": "words to search for"}},
         "required": ["query"]},
    )

    def __init__(self, matches: Callable[[str], Sequence[Found]],
                 evicted: Callable[[], Sequence[Entry]]) -> None:
        """``matches(query)`` searches the evicted turns, best first (raising ``ChatError`` when it cannot);
        ``evicted()`` returns the evicted entries, whose text the result quotes."""
        self.matches = matches
        self.evicted = evicted

    def call(self, arguments: str) -> ToolResult:
        from stateless_chat.errors import ChatError
        from stateless_chat.tools.servers import parse_arguments

        parsed = parse_arguments(arguments)
        query = parsed.get("query") if isinstance(parsed, dict) else None
        if not isinstance(query, str) or not query.strip():
            return ToolResult("recall_history needs a query: the words to search for", is_error=True)
        try:
            matches = self.matches(query)
        except ChatError as error:
            return ToolResult(f"the search failed: {error}", is_error=True)
        if not matches:
            return ToolResult("no earlier turn that is no longer in the context matches that query")
        evicted = {e.id: e for e in self.evicted()}
        blocks = []
        for match in matches[:RECALL_RESULTS]:
            lines = [f"turn {match.turn} ({match.state}):"]
            lines += [f"{evicted[i].role}: {evicted[i].content}" for i in match.ids if i in evicted]
            blocks.append("\n".join(lines))
        return ToolResult("\n\n".join(blocks))
