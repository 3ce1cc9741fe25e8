"""The tools a session offers: the MCP servers' and the built-in ones, behind one interface.

A built-in tool is a plain function behind the same interface as an MCP server's tool: a
``ToolSpec`` to offer and a call that returns a ``ToolResult``. Built in are ``recall_history``
(``RecallTool``): the model searches the turns that were evicted to fit the budget; and, where
skills were found, ``use_skill`` (``SkillTool``): the model loads a skill's instructions.
Built-ins are approved like any other tool, and offered only where tools are
(with MCP servers configured), so that a chat without tools never sends a ``tools`` array.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from stateless_chat.core.evicted import Evicted
from stateless_chat.core.messages import Entry
from stateless_chat.tools.servers import ToolServers
from stateless_chat.tools.specs import ToolResult, ToolSpec

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
    calls; no server tool is offered under a built-in's name (``tools.offered_names`` reserves them)."""

    def __init__(self, servers: ToolServers | None, builtins: Sequence[Builtin] = ()) -> None:
        self.servers = servers
        self.builtins = {builtin.spec.offered: builtin for builtin in builtins}
        self.reader = ReadResourceTool(servers) if servers is not None else None
        if servers is not None:
            servers.reserved = frozenset([*self.builtins, READ_RESOURCE])

    def _builtins(self) -> dict[str, Builtin]:
        """Return the built-in tools offered now: read_resource only while a server offers resources."""
        found = dict(self.builtins)
        if self.reader is not None and self.reader.offered():
            found[READ_RESOURCE] = self.reader
        return found

    def tools(self) -> tuple[ToolSpec, ...]:
        """Return every tool offered, sorted by the name the model calls."""
        found = [b.spec for b in self._builtins().values()]
        found += self.servers.tools() if self.servers is not None else ()
        return tuple(sorted(found, key=lambda spec: spec.offered))

    def api_tools(self) -> list[dict[str, Any]]:
        """Return the request's ``tools`` array: the same for the same tools, step after step."""
        return [spec.to_api() for spec in self.tools()]

    def lookup(self, offered: str) -> ToolSpec | None:
        return next((spec for spec in self.tools() if spec.offered == offered), None)

    def call(self, offered: str, arguments: str, *, timeout: float = 60.0) -> ToolResult:
        """Run the tool the model calls ``offered``: a built-in here, else on its server."""
        builtin = self._builtins().get(offered)
        if builtin is not None:
            return builtin.call(arguments)
        if self.servers is None:
            return ToolResult(f"there is no tool {offered!r}", is_error=True)
        return self.servers.call(offered, arguments, timeout=timeout)


READ_RESOURCE = "read_resource"


class ReadResourceTool:
    """``read_resource(server, uri)``: a resource of an MCP server (one a result links to), as text.

    Offered while an enabled server declares resources; its ``server`` argument is an enum of
    those servers, so the tools array changes only when that set does.
    """

    def __init__(self, servers: ToolServers) -> None:
        self.servers = servers

    def offered(self) -> bool:
        return bool(self.servers.with_resources())

    @property
    def spec(self) -> ToolSpec:
        names = self.servers.with_resources()
        schema = {"type": "object", "required": ["server", "uri"], "properties": {
            "server": {"type": "string", "enum": names, "description": "the MCP server the resource is on"},
            "uri": {"type": "string", "description": "the resource's URI, as a result or a listing gave it"}}}
        return ToolSpec(BUILTIN, READ_RESOURCE, READ_RESOURCE,
                        "Read a resource of an MCP server (for example one a tool result links to) and "
                        "return its contents.", schema)

    def call(self, arguments: str) -> ToolResult:
        from stateless_chat.errors import ChatError
        from stateless_chat.tools.specs import parse_arguments, resource_text

        parsed = parse_arguments(arguments)
        if isinstance(parsed, str):
            return ToolResult(f"cannot call read_resource: {parsed}", is_error=True)
        server, uri = parsed.get("server"), parsed.get("uri")
        if server not in self.servers.with_resources() or not isinstance(uri, str) or not uri:
            known = ", ".join(self.servers.with_resources())
            return ToolResult(f"read_resource needs server (one of: {known}) and uri", is_error=True)
        try:
            return ToolResult(resource_text(self.servers.ask_server(server, "read_resource", uri)))
        except ChatError as error:
            return ToolResult(str(error), is_error=True)


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
        from stateless_chat.tools.specs import parse_arguments

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
        wanted = {i for match in matches[:RECALL_RESULTS] for i in match.ids}
        entries = self.evicted()  # of entries held by reference, only the matches are read
        found = entries.read(wanted) if isinstance(entries, Evicted) \
            else [e for e in entries if e.id in wanted]
        evicted = {e.id: e for e in found}
        blocks = []
        for match in matches[:RECALL_RESULTS]:
            lines = [f"turn {match.turn} ({match.state}):"]
            lines += [f"{evicted[i].role}: {evicted[i].content}" for i in match.ids if i in evicted]
            blocks.append("\n".join(lines))
        return ToolResult("\n\n".join(blocks))


class SkillTool:
    """``use_skill(name, file?)``: the instructions of a skill the index lists, or a file from its
    folder (a built-in tool, approved like any other)."""

    spec = ToolSpec(
        BUILTIN, "use_skill", "use_skill",
        "Load the instructions of one of the skills your context lists under 'Skills:', when the task "
        "needs it. With file, read a file from that skill's folder that its instructions name.",
        {"type": "object",
         "properties": {"name": {"type": "string", "description": "the skill's name, as listed"},
                        "file": {"type": "string", "description": "a file in the skill's folder (optional)"}},
         "required": ["name"]},
    )

    def __init__(self, load: Callable[[str, str | None], str]) -> None:
        """``load(name, file)`` returns the skill's instructions (``file`` None) or that file's text,
        raising ``ChatError`` with what to tell the model when it cannot
        (``context.workspace.Workspace.load_skill``)."""
        self.load = load

    def call(self, arguments: str) -> ToolResult:
        from stateless_chat.errors import ChatError
        from stateless_chat.tools.specs import parse_arguments

        parsed = parse_arguments(arguments)
        name = parsed.get("name") if isinstance(parsed, dict) else None
        wanted = parsed.get("file") if isinstance(parsed, dict) else None
        if not isinstance(name, str) or not name.strip():
            return ToolResult("use_skill needs the name of a skill from the skills index", is_error=True)
        file = wanted.strip() if isinstance(wanted, str) and wanted.strip() else None
        try:
            return ToolResult(self.load(name.strip(), file))
        except ChatError as error:
            return ToolResult(str(error), is_error=True)
