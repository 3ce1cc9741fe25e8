"""What tools are, as values: server configs parsed from ``[mcp.servers.NAME]``, the tools a server
offers (``ToolSpec``), what a call returns (``ToolResult``), the names tools are offered under,
and the limits that hold for every server.

``servers`` (the running servers) and ``mcp_client`` (one connection through the SDK) both
read these; neither is imported here, so the two never import each other.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from stateless_chat.core.messages import Image
from stateless_chat.errors import CommandError, ConfigError
from stateless_chat.validate import Invalid, shown, type_name

Approval = Literal["ask", "always"]
APPROVALS: tuple[Approval, ...] = ("ask", "always")

SERVER_KEYS = ("command", "args", "env", "enabled", "approve", "tools")
TOOL_KEYS = ("approve",)
# A server's name is a bare TOML key, short enough that "{server}_{tool}" usually fits 64 characters.
SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# What the chat-completions API accepts as a function name.
OFFERED_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

DEFAULT_STARTUP_TIMEOUT = 30.0
DEFAULT_CALL_TIMEOUT = 60.0
DEFAULT_MAX_RESULT_BYTES = 1024 * 1024  # tool_result_max_bytes
LIST_PAGES = 100  # a list that never stops paginating cannot hang a command
STOP_GRACE = 2.0  # for the servers to end on their own (stdin closed) before their groups are killed
THREAD_JOIN = 2.0


# ---- configuration ------------------------------------------------------------------


def _command(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise Invalid("a non-empty string (the server's executable)")
    return value


def _args(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise Invalid("an array of strings")
    if not all(isinstance(item, str) and "\x00" not in item for item in value):
        raise Invalid("an array of strings")
    return tuple(value)


def _env(value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise Invalid("a table of strings")
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
            raise Invalid("a table of strings whose names are not empty and have no '='")
        if not isinstance(item, str) or "\x00" in item:
            raise Invalid("a table of strings")
    return MappingProxyType(dict(value))


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid("a boolean (true or false)")
    return value


def _approval(value: object) -> Approval:
    if value != "ask" and value != "always":
        raise Invalid('"ask" or "always"')
    return value


def _approvals(value: object) -> Mapping[str, Approval]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise Invalid('a table of tool names to "ask" or "always"')
    try:
        return MappingProxyType({key: _approval(item) for key, item in value.items()})
    except Invalid:
        raise Invalid('a table of tool names to "ask" or "always"') from None


_SERVER_CHECKS: dict[str, Callable[[object], Any]] = {
    "command": _command,
    "args": _args,
    "env": _env,
    "enabled": _bool,
    "approve": _approval,
    "approve_tools": _approvals,
}


@dataclass(frozen=True)
class ServerConfig:
    """One ``[mcp.servers.NAME]`` table: how to start the server and whether to ask before its calls.

    Construct it and it is valid, or ``ConfigError`` is raised. ``env`` is added to the SDK's safe
    default environment of the child; its values are kept out of ``repr`` (they are often tokens).
    ``approve`` applies to every tool of the server unless ``approve_tools`` names the tool.
    """

    name: str
    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    enabled: bool = True
    approve: Approval = "ask"
    approve_tools: Mapping[str, Approval] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not SERVER_NAME.fullmatch(self.name):
            raise ConfigError(f"mcp server name {shown(self.name)} {_NAME_RULE}")
        for key, check in _SERVER_CHECKS.items():
            value = getattr(self, key)
            try:
                checked = check(value)
            except Invalid as error:
                got = type_name(value) if key == "env" else shown(value)
                message = f"mcp server {self.name}: {key} must be {error.expected}, got {got}"
                raise ConfigError(message) from None
            if checked is not value:
                object.__setattr__(self, key, checked)

    def approval(self, tool: str) -> Approval:
        """Return whether a call of ``tool`` (its name on this server) needs the user's yes first."""
        return self.approve_tools.get(tool, self.approve)


_NAME_RULE = "must be 1 to 32 letters, digits, '-' or '_', starting with a letter or digit"


def _key_path(path: str, *keys: str) -> str:
    """Return the dotted TOML key ``path`` followed by ``keys``, quoting those that are not bare keys."""
    return ".".join([path, *(key if BARE_KEY.fullmatch(key) else json.dumps(key) for key in keys)])


def suggestion(key: str, choices: Iterable[str]) -> str:
    matches = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def _table(value: object, path: str, where: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Return ``value`` if it is a table (with only the ``allowed`` keys, if given), else raise."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {path!r} must be a table, got {type_name(value)}")
    if allowed is None:
        return value
    for key in value:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {_key_path(path, str(key))!r}{suggestion(str(key), allowed)}"
            )
    return value


def parse_servers(raw: object, where: str) -> dict[str, ServerConfig]:
    """Return the servers of the config file's ``mcp`` table, by name, in the file's order.

    ``raw`` is that table as TOML parsed it (``{"servers": {"time": {"command": ...}}}``);
    ``where`` names the file for messages. Anything wrong (an unknown key, with a did-you-mean;
    a wrong type; an empty command; a bad server name) raises ``ConfigError`` with one line
    that names ``where`` and the key. Values of ``env`` are never shown in a message.
    """
    mcp = _table(raw, "mcp", where, ("servers",))
    servers = _table(mcp.get("servers", {}), "mcp.servers", where)
    result: dict[str, ServerConfig] = {}
    for name, table in servers.items():
        path = _key_path("mcp", "servers", name)
        if not SERVER_NAME.fullmatch(name):
            raise ConfigError(f"{where}: {path!r}: a server name {_NAME_RULE}")
        table = _table(table, path, where, SERVER_KEYS)
        if "command" not in table:
            raise ConfigError(f"{where}: {path!r} has no 'command' (the server's executable)")
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key == "tools":
                values["approve_tools"] = _tool_approvals(value, path, where)
                continue
            try:
                values[key] = _SERVER_CHECKS[key](value)
            except Invalid as error:
                got = type_name(value) if key == "env" else shown(value)
                message = f"{where}: {_key_path(path, key)!r} must be {error.expected}, got {got}"
                raise ConfigError(message) from None
        result[name] = ServerConfig(name=name, **values)
    return result


def _tool_approvals(value: object, path: str, where: str) -> dict[str, Approval]:
    tools_path = _key_path(path, "tools")
    tools = _table(value, tools_path, where)
    approvals: dict[str, Approval] = {}
    for tool, table in tools.items():
        tool_path = _key_path(tools_path, tool)
        table = _table(table, tool_path, where, TOOL_KEYS)
        if "approve" in table:
            try:
                approvals[tool] = _approval(table["approve"])
            except Invalid as error:
                raise ConfigError(
                    f"{where}: {_key_path(tool_path, 'approve')!r} must be {error.expected}, "
                    f"got {shown(table['approve'])}"
                ) from None
    return approvals


# ---- tools and results ------------------------------------------------------------------


def normalized(value: Any) -> Any:
    """Return ``value`` (parsed JSON) with the keys of every object sorted, recursively.

    Servers list schemas with keys in whatever order their SDK builds them (it differs even
    between protocol versions of one SDK); sorted, the same tools always serialize to the
    same bytes, so a request's ``tools`` array does not change from turn to turn.
    """
    if isinstance(value, dict):
        return {key: normalized(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [normalized(item) for item in value]
    return value


@dataclass(frozen=True)
class ToolSpec:
    """A tool of a running server, as offered to the model.

    ``name`` is the tool's name on its server; ``offered`` is the function name the model sees
    and calls: the tool's name, or ``{server}_{name}`` when two enabled servers offer the same
    name, made to fit ``^[a-zA-Z0-9_-]{1,64}$``. ``input_schema`` has its keys sorted.
    """

    server: str
    name: str
    offered: str
    description: str
    input_schema: dict[str, Any] = field(hash=False)
    approve: Approval = "ask"

    def to_api(self) -> dict[str, Any]:
        """Return the tool as one entry of a chat-completions request's ``tools`` array (a fresh copy)."""
        return {
            "type": "function",
            "function": {
                "name": self.offered,
                "description": self.description,
                "parameters": copy.deepcopy(self.input_schema),
            },
        }

    @property
    def display(self) -> str:
        """Return ``server.tool``, how a call is shown to the user."""
        return f"{self.server}.{self.name}"


@dataclass(frozen=True)
class ToolResult:
    """What a tool call gave: its text for the model, and whether it is an error.

    ``text`` joins the result's text content (other content is described in one line, e.g.
    ``[image: 12,345 bytes, image/png]``), whole: cutting it to a token cap is the caller's job.
    ``is_error`` is the server's ``isError``, or the call could not be made or finished.
    ``images`` are the result's images, whole (none of a result cut to ``tool_result_max_bytes``).
    """

    text: str
    is_error: bool = False
    images: tuple[Image, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class ServerStatus:
    """One server for ``/tools``: its state, how many tools it offers and where its log is.

    ``state`` is ``running``, ``starting``, ``not started (...)``, ``stopped``, ``disabled`` or
    ``failed: <why>``.
    """

    name: str
    state: str
    tools: int
    log: Path


def _sanitized(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "_"


def offered_names(pairs: Iterable[tuple[str, str]], reserved: Iterable[str] = ()
                  ) -> dict[tuple[str, str], str]:
    """Return the function name to offer for each ``(server, tool)``: all different, none of
    ``reserved`` (the built-in tools' names), each valid for the API, whatever the names given.

    A tool keeps its name unless another server has a tool of the same name or it is reserved;
    then it is ``{server}_{tool}``. Characters the API refuses become ``_`` and names are cut to
    64. Every name still taken twice (or reserved) gets a short hash of its server and tool
    instead of its end, re-hashed until free; the pairs are visited in sorted order, so the
    result depends only on the pairs and the reserved names, never on their order.
    """
    pairs = sorted(set(pairs))
    reserved = set(reserved)
    servers_of: dict[str, set[str]] = {}
    for server, tool in pairs:
        servers_of.setdefault(tool, set()).add(server)
    first = {}
    for server, tool in pairs:
        alone = len(servers_of[tool]) == 1 and _sanitized(tool) not in reserved
        first[server, tool] = _sanitized(tool if alone else f"{server}_{tool}")
    counts = Counter(first.values())
    offered = {pair: name for pair, name in first.items() if counts[name] == 1 and name not in reserved}
    taken = reserved | set(offered.values())
    for pair in pairs:
        if pair in offered:
            continue
        attempt = 0
        while True:
            digest = hashlib.sha256(f"{pair[0]}\x00{pair[1]}\x00{attempt}".encode()).hexdigest()[:8]
            name = f"{first[pair][:55]}_{digest}"
            if name not in taken:
                break
            attempt += 1
        offered[pair] = name
        taken.add(name)
    return offered


class ToolsError(CommandError):
    """What a command asked of an MCP server could not be done; the message says why, in one line."""


def one_line_text(text: str) -> str:
    return " ".join(text.split())[:500]


def resource_text(result: Any) -> str:
    """Return a read resource's contents as text (binary contents named by their size and type)."""
    parts = []
    for contents in result.contents:
        text = getattr(contents, "text", None)
        if text is not None:
            parts.append(text)
        else:
            size = len("".join(str(getattr(contents, "blob", "")).split())) * 3 // 4
            parts.append(f"[binary contents: {size:,} bytes, {contents.mime_type or 'unknown type'}]")
    return "\n".join(parts)


def parse_arguments(arguments: str) -> dict[str, Any] | str:
    """Return the model's JSON arguments as a dict, or a message saying why they are not usable.

    An empty string stands for no arguments (some models send it for a tool without any).
    """
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError as error:
        return f"the arguments are not valid JSON ({error}); send a JSON object"
    if not isinstance(value, dict):
        return f"the arguments must be a JSON object, got {type_name(value)}"
    return value
