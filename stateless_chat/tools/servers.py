"""Tools over MCP: the servers of ``[mcp.servers.NAME]``, their tools, and calls to them.

An MCP server is a child process that speaks the Model Context Protocol on its stdin and
stdout. ``ToolServers`` starts the configured servers, lists their tools, offers them to the
model as the request's ``tools`` array (``api_tools``) and runs the calls the model makes
(``call``). Everything here is synchronous and thread-safe; the official ``mcp`` SDK is async,
so its event loop runs in one background thread (see ``mcp_client``, which is imported only
when a server starts: importing the SDK costs half a second that a chat without tools never
pays).

Children never outlive the chat. Each runs in its own process group under a small launcher
that ends the whole group when the server exits, when ``stop()`` cuts its lifeline, or when
this process ends in any way at all, SIGKILL included (see ``launchers/mcp_server.py``). ``stop()``
is registered with ``atexit``, is idempotent and may be called from a signal handler. A child's
stderr goes to ``LOG_DIR/NAME.log`` (mode 0600), never to the terminal, and its environment is
the SDK's short safe list (``PATH``, ``HOME``, ``USER``, ...) plus the server's own ``env``:
``OPENAI_API_KEY`` and the rest of ours never reach it.

A tool call never raises for what the server or the model did: an unknown tool, arguments that
are not a JSON object, an error result, a timeout, a crashed server all come back as a
``ToolResult`` with ``is_error`` set, whose text is meant for the model and the user alike.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import copy
import difflib
import hashlib
import json
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Literal

from stateless_chat.errors import ConfigError
from stateless_chat.validate import Invalid, shown, type_name

if TYPE_CHECKING:
    from stateless_chat.tools.mcp_client import Connection

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
STOP_GRACE = 2.0  # for the servers to end on their own (stdin closed) before their groups are killed
CALL_GRACE = 5.0  # past the SDK's own timeout, before a call is given up from this side
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


def _suggestion(key: str, choices: Iterable[str]) -> str:
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
                f"{where}: unknown key {_key_path(path, str(key))!r}{_suggestion(str(key), allowed)}"
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
    """

    text: str
    is_error: bool = False


@dataclass(frozen=True)
class ServerStatus:
    """One server for ``/tools``: its state, how many tools it offers and where its log is.

    ``state`` is ``running``, ``starting``, ``stopped``, ``disabled`` or ``failed: <why>``.
    """

    name: str
    state: str
    tools: int
    log: Path


def _sanitized(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "_"


def offered_names(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Return the function name to offer for each ``(server, tool)``, all different.

    A tool keeps its name unless another server has a tool of the same name; then each of them
    is ``{server}_{tool}``. Characters the API refuses become ``_`` and names are cut to 64;
    should two names still coincide, each gets a short hash of its server and tool, so the
    result depends only on the pairs given.
    """
    pairs = list(pairs)
    servers_of: dict[str, set[str]] = {}
    for server, tool in pairs:
        servers_of.setdefault(tool, set()).add(server)
    offered = {
        (server, tool): _sanitized(tool if len(servers_of[tool]) == 1 else f"{server}_{tool}")
        for server, tool in pairs
    }
    counts = Counter(offered.values())
    for key, name in offered.items():
        if counts[name] > 1:
            digest = hashlib.sha256(f"{key[0]}\x00{key[1]}".encode()).hexdigest()[:8]
            offered[key] = f"{name[:55]}_{digest}"
    return offered


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


# ---- the servers ---------------------------------------------------------------------------


class _Server:
    """The mutable record of one configured server (guarded by ``ToolServers._lock``)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.enabled = config.enabled
        self.connection: Connection | None = None
        self.serving: concurrent.futures.Future[None] | None = None

    def running(self) -> bool:
        return self.connection is not None and self.connection.phase == "running"


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Run ``loop`` until it is stopped, then end what is left on it and close it."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=THREAD_JOIN))
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class ToolServers:
    """The configured MCP servers of one chat: start them, offer their tools, call them, stop them.

    Nothing starts until ``start()``. Every method is synchronous and may be called from any
    thread; the SDK's event loop runs in one daemon thread that ``start()`` creates. Use it as a
    context manager, or call ``stop()``, which is also registered with ``atexit``.
    """

    def __init__(
        self,
        configs: Mapping[str, ServerConfig],
        *,
        log_dir: Path,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    ) -> None:
        for key, config in configs.items():
            if key != config.name:
                raise ValueError(f"server {config.name!r} is filed under another name, {key!r}")
        self.log_dir = Path(log_dir)
        self.startup_timeout = startup_timeout
        self._servers = {name: _Server(config) for name, config in configs.items()}
        self._lock = threading.RLock()
        # The loop and its thread, in a list so that stop() takes them atomically (list.pop),
        # without a lock: it may run in a signal handler that interrupted this very object.
        self._runtime: list[tuple[asyncio.AbstractEventLoop, threading.Thread]] = []
        self._last_offered: dict[str, ToolSpec] = {}

    def __enter__(self) -> ToolServers:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_path(self, server: str) -> Path:
        """Return where the stderr of ``server`` is logged."""
        return self.log_dir / f"{server}.log"

    def _named(self, server: str) -> _Server:
        found = self._servers.get(server)
        if found is None:
            known = ", ".join(self._servers) or "none configured"
            suggestion = _suggestion(server, self._servers)
            raise ConfigError(f"unknown mcp server {server!r}{suggestion}; servers: {known}")
        return found

    def _loop(self) -> asyncio.AbstractEventLoop:
        if not self._runtime:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=_run_loop, args=(loop,), name="stateless-chat-mcp", daemon=True)
            thread.start()
            self._runtime.append((loop, thread))
            atexit.register(self.stop)
        return self._runtime[0][0]

    # -- starting ----------------------------------------------------------------------------

    def start(self, names: Iterable[str] | None = None) -> list[str]:
        """Start the enabled servers (or the ``names`` given) that are not running; return the problems.

        Each server is started, initialized and asked for its tools, all at once; this returns
        when every one has answered or failed, or ``startup_timeout`` has passed. A server that
        failed is marked ``failed: <why>`` and the others work; a server that failed before is
        started again. The result has one line per problem, e.g. ``mcp server time failed to
        start: command not found: mcp-server-time`` or ``mcp server x did not answer within 30 s``.
        An unknown name raises ``ConfigError``. Ctrl-C stops the servers still starting.
        """
        from stateless_chat.tools.mcp_client import Connection

        with self._lock:
            if names is None:
                wanted = [server for server in self._servers.values() if server.enabled]
            else:
                wanted = [self._named(name) for name in dict.fromkeys(names)]
            loop = self._loop()
            starting: list[tuple[str, Connection, concurrent.futures.Future[None]]] = []
            for server in wanted:
                if server.connection is not None and server.connection.phase != "ended":
                    continue
                connection = Connection(server.config, self.log_path(server.config.name))
                serving = asyncio.run_coroutine_threadsafe(connection.serve(), loop)
                serving.add_done_callback(connection.settle)
                server.connection, server.serving = connection, serving
                starting.append((server.config.name, connection, serving))
        try:
            _, late = concurrent.futures.wait(
                [connection.ready for _, connection, _ in starting], timeout=self.startup_timeout
            )
        except BaseException:  # Ctrl-C: what is still starting is stopped
            for _, connection, serving in starting:
                if not connection.ready.done():
                    serving.cancel()
                    connection.kill()
            raise
        problems: list[str] = []
        for name, connection, serving in starting:
            if connection.ready in late:
                connection.fail(f"did not answer within {self.startup_timeout:g} s")
                serving.cancel()
                connection.kill()
                problems.append(
                    f"mcp server {name} did not answer within {self.startup_timeout:g} s "
                    f"(log: {connection.log_path})"
                )
            elif connection.ready.exception() is not None:
                problems.append(f"mcp server {name} failed to start: {connection.failure}")
        return problems

    # -- tools -------------------------------------------------------------------------------

    def _current(self) -> list[ToolSpec]:
        """Return the tools of the running, enabled servers, sorted by offered name."""
        with self._lock:
            listed = [
                (server.config, tool)
                for server in self._servers.values()
                if server.enabled and server.running() and server.connection is not None
                for tool in server.connection.tools
            ]
            names = offered_names((config.name, tool.name) for config, tool in listed)
            specs = [
                ToolSpec(
                    server=config.name,
                    name=tool.name,
                    offered=names[config.name, tool.name],
                    description=tool.description,
                    input_schema=tool.input_schema,
                    approve=config.approval(tool.name),
                )
                for config, tool in listed
            ]
            return sorted(specs, key=lambda spec: spec.offered)

    def tools(self) -> tuple[ToolSpec, ...]:
        """Return the tools of the running, enabled servers, sorted by offered name.

        These are remembered as what the model was offered last, so that a call of one whose
        server has stopped since is answered with why, not with "no such tool".
        """
        with self._lock:
            specs = self._current()
            self._last_offered.update({spec.offered: spec for spec in specs})
            return tuple(specs)

    def api_tools(self) -> list[dict[str, Any]]:
        """Return the request's ``tools`` array: byte for byte the same while the tools are the same."""
        return [spec.to_api() for spec in self.tools()]

    def lookup(self, offered: str) -> ToolSpec | None:
        """Return the tool the model calls ``offered`` (for its call line and approval), or None."""
        for spec in self._current():
            if spec.offered == offered:
                return spec
        return None

    # -- calls -------------------------------------------------------------------------------

    def call(self, offered: str, arguments: str, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> ToolResult:
        """Call the tool the model named ``offered`` with its JSON ``arguments``; return its result.

        Never raises for what the model or the server did: an unknown tool, arguments that are
        not a JSON object, an error result, no answer within ``timeout`` seconds (the call is
        then cancelled on the server) and a server that has stopped all come back as an error
        result. A KeyboardInterrupt while waiting cancels the call and is raised at once.
        """
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        with self._lock:
            current = self._current()
            spec = next((tool for tool in current if tool.offered == offered), None)
            previous = self._last_offered.get(offered)
            self._last_offered.update({tool.offered: tool for tool in current})
            if spec is None and previous is not None:
                # Offered under another name before (a clash that has gone since): the same tool.
                key = (previous.server, previous.name)
                spec = next((tool for tool in current if (tool.server, tool.name) == key), None)
            if spec is None:
                return ToolResult(self._missing(offered, previous, current), is_error=True)
            server = self._servers[spec.server]
            connection = server.connection
            runtime = self._runtime[0] if self._runtime else None
        arguments_or_why = parse_arguments(arguments)
        if isinstance(arguments_or_why, str):
            return ToolResult(f"cannot call {spec.display}: {arguments_or_why}", is_error=True)
        if connection is None or runtime is None:
            return ToolResult(f"the mcp server {spec.server} is not running", is_error=True)
        try:
            future = asyncio.run_coroutine_threadsafe(
                connection.call(spec.name, arguments_or_why, timeout), runtime[0]
            )
        except RuntimeError:  # stop() closed the loop meanwhile
            return ToolResult(f"the mcp server {spec.server} is not running", is_error=True)
        try:
            return future.result(timeout + CALL_GRACE)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return ToolResult(
                f"{spec.display} did not answer within {timeout:g} s; the call was cancelled", True
            )
        except concurrent.futures.CancelledError:
            return ToolResult(f"the call of {spec.display} was cancelled: the mcp servers are stopping", True)
        except Exception as error:  # a bug in the SDK or here: the chat goes on, the model is told
            return ToolResult(f"the call of {spec.display} failed: {type(error).__name__}: {error}", True)
        except BaseException:  # KeyboardInterrupt: the call is cancelled, control returns now
            future.cancel()
            raise

    def _missing(self, offered: str, previous: ToolSpec | None, current: list[ToolSpec]) -> str:
        """Return why there is no tool ``offered`` now: its server's state, or that no server has it."""
        if previous is not None:
            server = self._servers[previous.server]
            connection = server.connection
            if not server.enabled:
                return f"the mcp server {previous.server} is disabled (/tools on {previous.server})"
            if connection is not None and connection.failure is not None:
                return connection.stopped_message()
            return f"the mcp server {previous.server} is not running"
        available = ", ".join(spec.offered for spec in current) or "none"
        return f"there is no tool named {offered!r}; the tools are: {available}"

    # -- switches and state ------------------------------------------------------------------

    def set_enabled(self, on: bool, server: str | None = None) -> list[str]:
        """Turn the tools of ``server`` (or of every server) on or off; return the servers changed.

        A server turned off keeps running, its tools are just not offered; one turned on that is
        not running needs ``start()``. An unknown name raises ``ConfigError``.
        """
        with self._lock:
            targets = list(self._servers.values()) if server is None else [self._named(server)]
            changed = [target.config.name for target in targets if target.enabled != on]
            for target in targets:
                target.enabled = on
            return changed

    def status(self) -> list[ServerStatus]:
        """Return every configured server's state, tool count and log file, in configuration order."""
        with self._lock:
            result = []
            for name, server in self._servers.items():
                connection = server.connection
                tools = len(connection.tools) if connection is not None and server.running() else 0
                if not server.enabled:
                    state = "disabled"
                elif connection is None:
                    state = "stopped"
                elif connection.failure is not None:
                    state = f"failed: {connection.failure}"
                elif connection.phase == "ended":
                    state = "stopped"
                else:
                    state = connection.phase
                result.append(ServerStatus(name, state, tools, self.log_path(name)))
            return result

    # -- stopping ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every server and its whole process group, then the event loop. Idempotent.

        Each server's stdin is closed first (the MCP way to ask it to end); what has not ended
        after ``STOP_GRACE`` seconds is killed with its group by cutting its lifeline. Takes no
        lock, so it is safe in a signal handler and from ``atexit``.
        """
        try:
            loop, thread = self._runtime.pop()
        except IndexError:
            return
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        pending: list[tuple[Connection, concurrent.futures.Future[None]]] = []
        for server in list(self._servers.values()):
            connection, serving = server.connection, server.serving
            if connection is not None and serving is not None and not serving.done():
                pending.append((connection, serving))
        for connection, serving in pending:
            try:
                loop.call_soon_threadsafe(connection.close)
            except RuntimeError:  # the loop is closed already
                serving.cancel()
        futures = [serving for _, serving in pending]
        concurrent.futures.wait(futures, timeout=STOP_GRACE)
        for connection, _ in pending:
            connection.kill()
        concurrent.futures.wait(futures, timeout=STOP_GRACE)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(THREAD_JOIN)
