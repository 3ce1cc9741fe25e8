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
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from stateless_chat.core.messages import ToolProgress
from stateless_chat.errors import ConfigError
from stateless_chat.tools.specs import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_MAX_RESULT_BYTES,
    DEFAULT_STARTUP_TIMEOUT,
    LIST_PAGES,
    STOP_GRACE,
    THREAD_JOIN,
    ServerConfig,
    ServerStatus,
    ToolResult,
    ToolsError,
    ToolSpec,
    offered_names,
    one_line_text,
    parse_arguments,
    suggestion,
)
from stateless_chat.tools.toolcache import Remembered, RememberedTool, ToolCache, describe_change, server_key

if TYPE_CHECKING:
    from stateless_chat.tools.mcp_client import Connection

# ---- the servers ---------------------------------------------------------------------------


class _Server:
    """The mutable record of one configured server (guarded by ``ToolServers._lock``)."""

    def __init__(self, config: ServerConfig, remembered: Remembered | None) -> None:
        self.config = config
        self.enabled = config.enabled
        self.key = server_key(config.command, config.args, config.env)
        self.remembered = remembered  # its tools as it listed them when it last started (any run)
        self.connection: Connection | None = None
        self.serving: concurrent.futures.Future[None] | None = None

    def running(self) -> bool:
        return self.connection is not None and self.connection.phase == "running"

    def listed(self) -> tuple[RememberedTool, ...]:
        """Return the tools to offer: the live list of a running server, the remembered one of a
        server not started yet (or still starting), none of one that failed or stopped."""
        connection = self.connection
        if connection is not None and connection.phase == "running":
            return connection.tools
        if self.remembered is not None and (connection is None or connection.phase == "starting"):
            return self.remembered.tools
        return ()


@dataclass(frozen=True)
class ServerAsk:
    """A request a server makes while one of its tools runs: ``sampling`` (the model is asked:
    ``params`` is the SDK's ``CreateMessageRequestParams``) or ``elicitation`` (the user is asked:
    ``ElicitRequestFormParams`` or ``ElicitRequestURLParams``). ``tool`` is the call's
    ``server.tool``; ``answer`` gets the SDK's result (or ``ErrorData``)."""

    server: str
    kind: Literal["sampling", "elicitation"]
    params: Any
    tool: str
    answer: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future, compare=False)


def refusal(ask: ServerAsk, why: str) -> Any:
    """Return the answer that says no to ``ask``: an elicitation declined, a sampling error."""
    import mcp.types as mcp_types

    if ask.kind == "elicitation":
        return mcp_types.ElicitResult(action="decline")
    return mcp_types.ErrorData(code=mcp_types.INVALID_REQUEST, message=f"sampling refused: {why}")


class _Hooks:
    """What the connections ask of the chat (``mcp_client.Hooks``), on the loop thread."""

    def __init__(self, servers: ToolServers, roots: tuple[tuple[str, str], ...]) -> None:
        self.servers = servers
        self.roots = roots

    async def ask(self, server: str, kind: str, params: Any) -> Any:
        with self.servers._lock:
            waiting = self.servers._asking.get(server) or []
            asks = waiting[-1] if waiting else None
        ask = ServerAsk(server, "sampling" if kind == "sampling" else "elicitation", params, server)
        if asks is None:  # not during a call of this server's tools: nobody is there to answer
            return refusal(ask, "no tool call of this server is under way")
        asks.put(ask)
        return await asyncio.wrap_future(ask.answer)

    def logged(self, server: str, line: str) -> None:
        if self.servers.on_log is not None:
            self.servers.on_log(f"mcp server {server} logs {line}")

    def changed(self, server: str) -> None:
        record = self.servers._servers.get(server)
        if record is not None and record.connection is not None:
            self.servers._remember(record, record.connection, why="changed its tools")


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


def _abort(loop: asyncio.AbstractEventLoop, connection: Connection) -> None:
    """Stop a connection that is still starting: its process group killed now, its task ended."""
    connection.kill()
    with contextlib.suppress(RuntimeError):  # the loop is closed already
        loop.call_soon_threadsafe(connection.abort)


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
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        cache: ToolCache | None = None,
    ) -> None:
        for key, config in configs.items():
            if key != config.name:
                raise ValueError(f"server {config.name!r} is filed under another name, {key!r}")
        self.log_dir = Path(log_dir)
        self.startup_timeout = startup_timeout
        self.max_result_bytes = max_result_bytes
        self.cache = cache
        self._servers = {name: _Server(config, None) for name, config in configs.items()}
        if cache is not None:
            for server in self._servers.values():
                server.remembered = cache.get(server.key)
        # Lines for the user that came up away from a command (a list that changed, a start in the
        # background that failed): the caller shows them where it can (take_notices).
        self._notices: list[str] = []
        # Where a start made by a call (in the caller's thread) tells them at once, if set.
        self.on_notice: Callable[[str], None] | None = None
        # What the chat does with what servers send and ask (see ServerAsk, ToolProgress); the
        # progress and log ones are called on the event loop's thread.
        self.on_ask: Callable[[ServerAsk], Any] | None = None
        self.on_progress: Callable[[ToolProgress], None] | None = None
        self.on_log: Callable[[str], None] | None = None
        self._asking: dict[str, list[queue.Queue[ServerAsk | None]]] = {}  # the calls under way, by server
        self._hooks = _Hooks(self, ((Path.cwd().as_uri(), Path.cwd().name or "/"),))
        self._lock = threading.RLock()
        # The loop and its thread, in a list so that stop() takes them atomically (list.pop),
        # without a lock: it may run in a signal handler that interrupted this very object.
        self._runtime: list[tuple[asyncio.AbstractEventLoop, threading.Thread]] = []
        self._last_offered: dict[str, ToolSpec] = {}
        self.reserved: frozenset[str] = frozenset()  # names no server tool is offered under (built-ins')

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
            hint = suggestion(server, self._servers)
            raise ConfigError(f"unknown mcp server {server!r}{hint}; servers: {known}")
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
        when every one has answered or failed, or ``startup_timeout`` has passed (a server
        already starting, in the background, is waited for too). A server that failed is
        marked ``failed: <why>`` and the others work; a server that failed before is started
        again. The result has one line per problem, e.g. ``mcp server time failed to start:
        command not found: mcp-server-time`` or ``mcp server x did not answer within 30 s``.
        Each list a server gives is remembered (``cache``); one that differs from what was
        remembered is said in a notice (``take_notices``). An unknown name raises
        ``ConfigError``. Ctrl-C stops the servers still starting.
        """
        from stateless_chat.tools.mcp_client import Connection

        with self._lock:
            if names is None:
                wanted = [server for server in self._servers.values() if server.enabled]
            else:
                wanted = [self._named(name) for name in dict.fromkeys(names)]
            loop = self._loop()
            starting: list[tuple[_Server, Connection]] = []
            for server in wanted:
                connection = server.connection
                if connection is not None and connection.phase == "starting":
                    starting.append((server, connection))  # started elsewhere: waited for here too
                if connection is not None and connection.phase != "ended":
                    continue
                log = self.log_path(server.config.name)
                connection = Connection(server.config, log, self.max_result_bytes, self._hooks)
                serving = asyncio.run_coroutine_threadsafe(connection.serve(), loop)
                serving.add_done_callback(connection.settle)
                server.connection, server.serving = connection, serving
                starting.append((server, connection))
        try:
            _, late = concurrent.futures.wait(
                [connection.ready for _, connection in starting], timeout=self.startup_timeout
            )
        except BaseException:  # Ctrl-C: what is still starting is stopped
            for _, connection in starting:
                if not connection.ready.done():
                    _abort(loop, connection)
            raise
        problems: list[str] = []
        for server, connection in starting:
            name = server.config.name
            if connection.ready in late:
                connection.fail(f"did not answer within {self.startup_timeout:g} s")
                _abort(loop, connection)
                problems.append(
                    f"mcp server {name} did not answer within {self.startup_timeout:g} s "
                    f"(log: {connection.log_path})"
                )
            elif connection.ready.exception() is not None:
                problems.append(f"mcp server {name} failed to start: {connection.failure}")
            else:
                self._remember(server, connection)
        return problems

    def _remember(self, server: _Server, connection: Connection,
                  why: str = "lists other tools than remembered") -> None:
        """Remember what a server listed (on starting, or on ``list_changed``); say so when it is not what
        was offered."""
        listed = Remembered(connection.tools, connection.instructions, connection.has_resources)
        with self._lock:
            before, server.remembered = server.remembered, listed
            if before is not None and before != listed:
                self._notices.append(
                    f"mcp server {server.config.name} {why} ({describe_change(before, listed)}): they are "
                    "offered from now on, which changes the tools array (a cache break)")
        if self.cache is not None:
            self.cache.put(server.key, listed)

    def start_background(self) -> None:
        """Start the enabled servers without waiting for them (the chat's prompt is not held up); their
        problems become notices (``take_notices``)."""
        def start() -> None:
            problems = self.start()
            with self._lock:
                self._notices.extend(f"{line} (the chat goes on without its tools)" for line in problems)

        threading.Thread(target=start, name="stateless-chat-mcp-start", daemon=True).start()

    def _tell_notices(self) -> None:
        if self.on_notice is not None:
            for notice in self.take_notices():
                self.on_notice(notice)

    def add_notice(self, line: str) -> None:
        """Keep ``line`` for the user, to be shown where the chat can (``take_notices``)."""
        with self._lock:
            self._notices.append(line)

    def take_notices(self) -> list[str]:
        """Return the notices not yet shown (and forget them)."""
        with self._lock:
            notices, self._notices = self._notices, []
            return notices

    def unknown(self) -> list[str]:
        """Return the enabled servers whose tools are not known until they start (none remembered)."""
        with self._lock:
            return [name for name, server in self._servers.items()
                    if server.enabled and server.remembered is None and not server.running()]

    def with_resources(self) -> list[str]:
        """Return the enabled servers that offer resources (as they said when running, or last time),
        but not those that failed or stopped."""
        with self._lock:
            found = []
            for name, server in self._servers.items():
                connection = server.connection
                if not server.enabled or (connection is not None and connection.phase == "ended"):
                    continue
                if connection is not None and connection.phase == "running":
                    if connection.has_resources:
                        found.append(name)
                elif server.remembered is not None and server.remembered.resources:
                    found.append(name)
            return found

    def stalled(self) -> list[str]:
        """Return the enabled servers that are not running and would not start on a call: those never
        seen (``unknown``), and those that failed or stopped (their tools are not offered)."""
        with self._lock:
            return [name for name, server in self._servers.items() if server.enabled and not server.running()
                    and (server.remembered is None or server.connection is not None)]

    # -- tools -------------------------------------------------------------------------------

    def _current(self) -> list[ToolSpec]:
        """Return the tools of the enabled servers (live or remembered), sorted by offered name."""
        with self._lock:
            listed = [
                (server.config, tool)
                for server in self._servers.values()
                if server.enabled
                for tool in server.listed()
            ]
            names = offered_names(((config.name, tool.name) for config, tool in listed), self.reserved)
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
            specs.sort(key=lambda spec: spec.offered)
            return self._with_instructions(specs)

    def _with_instructions(self, specs: list[ToolSpec]) -> list[ToolSpec]:
        """Return ``specs`` with each server's instructions in the description of its first tool: the
        tools array is the request's stable block, sent unchanged with every request, where the
        model reads how a server's tools are meant to be used."""
        done: set[str] = set()
        result = []
        for spec in specs:
            server = self._servers[spec.server]
            connection = server.connection
            live = connection is not None and connection.phase == "running"
            instructions = (connection.instructions if live and connection is not None
                            else server.remembered.instructions if server.remembered is not None else None)
            if instructions and spec.server not in done:
                done.add(spec.server)
                description = (f"{spec.description}\n\n[The {spec.server} server's instructions for all its "
                               f"tools: {instructions}]").strip()
                spec = replace(spec, description=description)
            result.append(spec)
        return result

    def tools(self) -> tuple[ToolSpec, ...]:
        """Return the tools of the enabled servers, sorted by offered name: a running server's as it
        lists them, one not started yet as it listed them last time (``_Server.listed``).

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
        result. While the call runs, what its server asks of the user or the model (elicitation,
        sampling) is answered in this thread (``on_ask``); the time that takes is not counted
        against ``timeout``. A KeyboardInterrupt while waiting cancels the call and is raised.
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
        arguments_or_why = parse_arguments(arguments)
        if isinstance(arguments_or_why, str):
            return ToolResult(f"cannot call {spec.display}: {arguments_or_why}", is_error=True)
        if not server.running():  # free until used: a server starts on the first call of its tools
            problems = self.start([spec.server])
            self._tell_notices()
            if problems:
                return ToolResult(problems[0], is_error=True)
            if all(tool.name != spec.name for tool in server.listed()):
                return ToolResult(f"the mcp server {spec.server} no longer has a tool {spec.name!r} (its "
                                  "tools changed since they were remembered)", is_error=True)
        with self._lock:
            connection = server.connection
            runtime = self._runtime[0] if self._runtime else None
        if connection is None or runtime is None:
            return ToolResult(f"the mcp server {spec.server} is not running", is_error=True)

        def progress(done: float, total: float | None, message: str | None) -> None:
            if self.on_progress is not None:
                self.on_progress(ToolProgress(spec.display, done, total, message))

        asks: queue.Queue[ServerAsk | None] = queue.Queue()
        with self._lock:  # before the call goes: the server may ask at once
            self._asking.setdefault(spec.server, []).append(asks)
        try:
            try:
                future = asyncio.run_coroutine_threadsafe(
                    connection.call(spec.name, arguments_or_why, progress), runtime[0]
                )
            except RuntimeError:  # stop() closed the loop meanwhile
                return ToolResult(f"the mcp server {spec.server} is not running", is_error=True)
            future.add_done_callback(lambda _: asks.put(None))
            return self._wait(spec, future, asks, timeout)
        finally:
            with self._lock:
                self._asking[spec.server].remove(asks)
            while not asks.empty():  # asked just as the call ended: nobody will answer but us
                late = asks.get_nowait()
                if late is not None and not late.answer.done():
                    late.answer.set_result(refusal(late, "the tool call it belongs to has ended"))

    def _wait(self, spec: ToolSpec, future: concurrent.futures.Future[ToolResult],
              asks: queue.Queue[ServerAsk | None], timeout: float) -> ToolResult:
        """Wait for a call, answering what its server asks meanwhile; the user's time is not the tool's."""
        deadline = time.monotonic() + timeout
        try:
            while not future.done():
                try:
                    ask = asks.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    future.cancel()
                    return ToolResult(f"{spec.display} did not answer within {timeout:g} s; the call was "
                                      "cancelled", True)
                if ask is None:
                    continue
                asked = time.monotonic()
                try:
                    answer = self.on_ask(ask) if self.on_ask is not None else refusal(ask, "nobody to ask")
                except BaseException:
                    ask.answer.set_result(refusal(ask, "the user cancelled"))
                    raise
                ask.answer.set_result(answer)
                deadline += time.monotonic() - asked
            return future.result()
        except concurrent.futures.CancelledError:
            return ToolResult(f"the call of {spec.display} was cancelled: the mcp servers are stopping", True)
        except Exception as error:  # a bug in the SDK or here: the chat goes on, the model is told
            return ToolResult(f"the call of {spec.display} failed: {type(error).__name__}: {error}", True)
        except BaseException:  # KeyboardInterrupt: the call is cancelled, control returns now
            future.cancel()
            raise

    # -- resources and prompts -------------------------------------------------------------------

    def ask_server(self, server: str, method: str, *args: Any, timeout: float = DEFAULT_CALL_TIMEOUT) -> Any:
        """Return the result of the SDK client's ``method`` on ``server`` (started first if need be).

        For what the user asks for by command (``/resources``, ``/attach``, ``/prompts``,
        ``/prompt``). Anything that goes wrong raises ``ToolsError`` with one line.
        """
        record = self._named(server)
        if not record.running():
            problems = self.start([server])
            self._tell_notices()
            if problems:
                raise ToolsError(problems[0])
        with self._lock:
            connection = record.connection
            runtime = self._runtime[0] if self._runtime else None
        if connection is None or runtime is None or not record.running():
            raise ToolsError(f"the mcp server {server} is not running")
        future = asyncio.run_coroutine_threadsafe(connection.request(method, *args), runtime[0])
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ToolsError(f"the mcp server {server} did not answer within {timeout:g} s") from None
        except concurrent.futures.CancelledError:
            raise ToolsError(f"the mcp server {server} is stopping") from None
        except Exception as error:
            message = getattr(error, "message", None) or str(error) or type(error).__name__
            said = one_line_text(f"the mcp server {server} answered with an error: {message}")
            raise ToolsError(said) from None
        except BaseException:
            future.cancel()
            raise

    def capable(self, feature: str) -> list[str]:
        """Return the enabled servers that declare ``feature`` (``resources``, ``prompts``), starting those
        not running (what a server offers is known once it has started)."""
        names = [name for name, server in self._servers.items() if server.enabled]
        waiting = [name for name in names if not self._servers[name].running()]
        if waiting:
            for problem in self.start(waiting):
                self.add_notice(problem)
        found = []
        for name in names:
            connection = self._servers[name].connection
            capabilities = connection.capabilities if connection is not None else None
            if connection is not None and connection.phase == "running" and capabilities is not None \
                    and getattr(capabilities, feature, None) is not None:
                found.append(name)
        return found

    def list_all(self, server: str, method: str, field: str) -> list[Any]:
        """Return every item of a paginated list (``list_resources``/``resources``, ...), page by page."""
        items: list[Any] = []
        cursor: str | None = None
        for _ in range(LIST_PAGES):
            page = self.ask_server(server, method, cursor) if cursor else self.ask_server(server, method)
            items += getattr(page, field)
            cursor = page.next_cursor
            if not cursor:
                break
        return items

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
        """Return every configured server's state, tool count and log file, in configuration order.

        A server not started yet whose tools are remembered is ``not started (starts on its first
        call)``, with the remembered count."""
        with self._lock:
            result = []
            for name, server in self._servers.items():
                connection = server.connection
                tools = len(server.listed())
                if not server.enabled:
                    state = "disabled"
                elif connection is None:
                    state = "not started (starts on its first call)" if server.remembered else "stopped"
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
