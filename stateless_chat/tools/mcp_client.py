"""One MCP server over stdio, driven by the official ``mcp`` SDK on the tools' event loop.

``tools.ToolServers`` is the synchronous face of this module and imports it only when a
server starts: importing the SDK takes about half a second. Everything async here runs on
the one loop thread of a ``ToolServers``; ``Connection.kill`` alone may be called from any
thread (or a signal handler).

The child is not the server itself but ``launchers/mcp_server.py``, a few lines of Python that
fork the server and watch two things: the server's exit, and a lifeline, a FIFO whose only writer is
this process. Whichever comes first ends the launcher's whole process group (the SDK starts
it as a new session): the server, and anything the server started. The kernel closes the
lifeline when this process ends in any way, SIGKILL included, and ``kill()`` closes it on
purpose. The launcher also logs how the server ended, which is where the "has stopped: exited
with status 3" of a crashed server comes from.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

import anyio
import anyio.abc
import mcp.types as mcp_types
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters, get_default_environment
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from stateless_chat.core.messages import Image
from stateless_chat.launchers import MCP_SERVER
from stateless_chat.sanitize import strip_controls
from stateless_chat.tools import executables
from stateless_chat.tools.mcp_stdio import CUT_META, bounded_stdio
from stateless_chat.tools.specs import DEFAULT_MAX_RESULT_BYTES, ServerConfig, ToolResult, normalized
from stateless_chat.tools.toolcache import RememberedTool

# The SDK logs trouble with a server (a line on its stdout that is not JSON-RPC, ...) through
# `logging`; with no handler anywhere, Python would print those records on our terminal.
logging.getLogger("mcp").addHandler(logging.NullHandler())

CLIENT_INFO = mcp_types.Implementation(name="stateless-chat", version="0.1.0")
END_WAIT = 5.0  # for the connection to finish ending once a call has seen it close
LOG_ROTATE_BYTES = 1024 * 1024
LOG_TAIL_LINES = 3
INSTRUCTIONS_MAX = 4000
LIST_PAGES = 100  # a server whose tools/list never stops paginating cannot hang the start
MARK = "[stateless-chat] "  # how the launcher's own lines in the log begin
# What an answer the SDK could not read is called, by the name of the SDK's model for it.
_RESULT_NAMES = {"ListToolsResult": "tool list", "InitializeResult": "answer to initialize",
                 "ListPromptsResult": "prompt list", "ListResourcesResult": "resource list"}

class StartError(Exception):
    """The server could not be started or did not initialize; ``reason`` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(strip_controls(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _decoded_size(data: str) -> int:
    """Return how many bytes the base64 ``data`` holds (without decoding it)."""
    stripped = "".join(data.split()).rstrip("=")
    return len(stripped) * 3 // 4


def render_result(result: mcp_types.CallToolResult) -> ToolResult:
    """Return a tool result as text: text content as is, other content described in one line each.

    A result with no content but structured content (allowed since 2025-06-18) gives that as JSON.
    """
    parts: list[str] = []
    images: list[Image] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, (mcp_types.ImageContent, mcp_types.AudioContent)):
            parts.append(f"[{block.type}: {_decoded_size(block.data):,} bytes, {block.mime_type}]")
            if isinstance(block, mcp_types.ImageContent):
                images.append(Image(block.mime_type, "".join(block.data.split())))
        elif isinstance(block, mcp_types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, mcp_types.TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[resource {resource.uri}: {_decoded_size(resource.blob):,} bytes]")
        elif isinstance(block, mcp_types.ResourceLink):
            about = ", ".join(x for x in (block.name, block.mime_type) if x)
            about = f" ({about})" if about else ""
            parts.append(f"[resource link: {block.uri}{about}; the read_resource tool reads it]")
        else:  # a content type newer than this client
            parts.append(f"[{getattr(block, 'type', 'unknown')} content]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    cut = (result.meta or {}).get(CUT_META)
    if isinstance(cut, dict):  # first, where the token cap's cut at the end cannot take it away
        parts.insert(0, f"[cut: the server sent {cut.get('bytes', 0):,} bytes, over tool_result_max_bytes; "
                        f"{cut.get('dropped', 0):,} bytes of its text were not read]")
        images = []  # perhaps cut short: not an image any more
    return ToolResult("\n".join(parts), is_error=bool(result.is_error), images=tuple(images))


def _make_lifeline(directory: Path, name: str) -> tuple[str, int | None]:
    """Return the launcher's lifeline argument and the write end this process keeps (None: no FIFO).

    The FIFO is made and opened for writing here, before the launcher exists, so that the
    launcher's open never blocks and its read ends exactly when this end is closed. The
    descriptor is not inheritable: no other child of ours keeps the lifeline alive.
    """
    path = directory / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.lifeline"
    try:
        os.mkfifo(path, 0o600)
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        finally:
            os.close(reader)
    except OSError:  # a file system without FIFOs: the launcher watches its parent instead
        with contextlib.suppress(OSError):
            path.unlink()
        return f"pid:{os.getpid()}", None
    return str(path), writer


def _open_log(path: Path) -> TextIO:
    """Open the server's log for appending (mode 0600, the directory 0700); rotate it past 1 MiB."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8", errors="replace")


class Hooks(Protocol):
    """What a connection asks of the chat (``tools.ToolServers`` gives it; all called on the loop thread).

    ``ask`` answers a server's request that needs the user or the model (``sampling``,
    ``elicitation``): it returns the SDK's result or ``ErrorData``. ``logged`` gets each log line
    a server sends (after it is written to the server's log file); ``changed`` is told when a
    running server's tools changed (``notifications/tools/list_changed``, refetched).
    """

    roots: tuple[tuple[str, str], ...]  # (file URI, name): what the servers may work on

    async def ask(self, server: str, kind: str, params: Any) -> Any: ...

    def logged(self, server: str, line: str) -> None: ...

    def changed(self, server: str) -> None: ...


class Connection:
    """One server: its process (under ``launchers/mcp_server.py``), its SDK client and its tools.

    ``serve()`` runs for the connection's whole life on the loop thread. ``ready`` (a
    thread-safe future) is resolved once the tools are listed, or fails with ``StartError``.
    ``phase`` goes ``starting`` -> ``running`` -> ``ended``; ``failure`` says why it ended or
    never ran, and stays None when it was stopped on purpose.
    """

    def __init__(self, config: ServerConfig, log_path: Path,
                 max_bytes: int = DEFAULT_MAX_RESULT_BYTES, hooks: Hooks | None = None) -> None:
        self.config = config
        self.hooks = hooks
        self.capabilities: mcp_types.ServerCapabilities | None = None
        self.has_resources = False  # it declares resources and lists some (or templates of some)
        self.max_bytes = max_bytes
        self.name = config.name
        self.log_path = log_path
        self.phase: Literal["starting", "running", "ended"] = "starting"
        self.failure: str | None = None
        self.tools: tuple[RememberedTool, ...] = ()
        self.instructions: str | None = None
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._client: Client | None = None
        self._closing = False
        self._lifeline: list[int] = []  # 0 or 1 descriptors; list.pop makes kill() atomic
        self._lifeline_path: Path | None = None
        self._log: TextIO | None = None
        self._log_start = 0
        self._wake: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._output_ended = False
        self._ended: anyio.Event | None = None
        self._tasks: anyio.abc.TaskGroup | None = None  # for refetches a notification asks for

    # -- any thread ----------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """Record why the connection is failing (the first reason given stands)."""
        if self.failure is None:
            self.failure = reason

    def kill(self) -> None:
        """Cut the lifeline: the launcher ends the server's whole process group now. Idempotent.

        Safe from any thread and from a signal handler: no lock, one atomic ``list.pop``.
        """
        try:
            fd = self._lifeline.pop()
        except IndexError:
            return
        with contextlib.suppress(OSError):
            os.close(fd)

    def settle(self, _: object = None) -> None:
        """Mark the connection ended if ``serve()`` is over or never ran (a done-callback of its future)."""
        self.phase = "ended"
        self._settle()

    def _settle(self) -> None:
        """Resolve ``ready``: done when running, else failed with the reason (once; any thread)."""
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if self.phase == "running":
                self.ready.set_result(None)
            else:
                self.ready.set_exception(StartError(self.failure or "stopped while starting"))

    def stopped_message(self) -> str:
        """Return the one line a call of this server's tools gets once the server has stopped."""
        return f"the mcp server {self.name} has stopped: {self.failure or 'it was stopped'}"

    # -- loop thread -----------------------------------------------------------------------------

    def close(self) -> None:
        """Ask ``serve()`` to end the connection the MCP way: stdin closed, then the group killed."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()

    def abort(self) -> None:
        """End ``serve()`` now, whatever it is waiting for; the transport still stops the server the
        MCP way (an anyio cancellation, which its shielded teardown survives, unlike a task's)."""
        self._closing = True
        if self._scope is not None:
            self._scope.cancel()

    def _on_error(self, error: BaseException) -> None:
        """Fail a start at once when the handshake or the listing failed (the teardown takes seconds);
        not when the server's output ended: how it ended is known once it is stopped (the log)."""
        if self.phase == "starting" and isinstance(error, Exception) and not self._output_ended:
            self.fail(self._failure_reason(error))
            self._settle()

    def _on_output_end(self) -> None:
        self._output_ended = True
        if self._wake is not None:
            self._wake.set()

    def _parameters(self) -> StdioServerParameters:
        """Return how the SDK starts the server: through the launcher where there is ``fork``."""
        config = self.config
        env = get_default_environment() | dict(config.env)
        search = env.get("PATH", os.defpath)
        command = executables.find(config.command, search)
        if command is None:
            if os.sep in config.command and Path(config.command).exists():
                raise StartError(f"cannot run {config.command}: it is not an executable file")
            looked = executables.where_looked(config.command, search)
            raise StartError(f"command not found: {config.command} ({looked}; "
                             "give its full path as the command)")
        if os.name != "posix" or not hasattr(os, "fork") or not sys.executable:
            return StdioServerParameters(command=command, args=list(config.args), env=dict(config.env))
        lifeline, writer = _make_lifeline(self.log_path.parent, self.name)
        if writer is not None:
            self._lifeline.append(writer)
            self._lifeline_path = Path(lifeline)
        keep_lc_ctype = "1" if "LC_CTYPE" in env else "0"
        return StdioServerParameters(
            command=sys.executable,
            args=["-I", "-S", str(MCP_SERVER), lifeline, keep_lc_ctype, command, *config.args],
            env=dict(config.env),
        )

    async def serve(self) -> None:
        """Start the server, initialize, list its tools, then hold the connection until it ends.

        It ends when ``close()`` is called, when the server's output ends (it exited or
        crashed: ``failure`` then says how, from the launcher's line in the log), or when this
        task is cancelled. Whatever happens, the lifeline is cut on the way out.
        """
        self._wake = anyio.Event()
        self._ended = anyio.Event()
        if self._closing:  # stopped before it began
            self._wake.set()
        with anyio.CancelScope() as self._scope:
            await self._serve()

    async def _serve(self) -> None:
        assert self._wake is not None and self._ended is not None
        try:
            try:
                self._log = _open_log(self.log_path)
            except OSError as error:
                raise StartError(f"cannot open its log {self.log_path}: {error.strerror or error}") from None
            self._log.write(
                f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} stateless-chat (pid {os.getpid()}) starts "
                f"{self.config.command} ({len(self.config.args)} arguments)\n"
            )
            self._log.flush()
            self._log_start = os.fstat(self._log.fileno()).st_size
            params = self._parameters()
            command = [params.command, *params.args]
            env = get_default_environment() | (params.env or {})
            transport = bounded_stdio(command, env, self._log, self.max_bytes, self._on_output_end,
                                      self._on_error)
            client = Client(transport, mode="legacy", cache=None, client_info=CLIENT_INFO,
                            sampling_callback=self._sample, elicitation_callback=self._elicit,
                            list_roots_callback=self._roots, logging_callback=self._logged,
                            message_handler=self._notified)
            async with client, anyio.create_task_group() as self._tasks:
                try:
                    self.capabilities = client.server_capabilities
                    self.instructions = _instructions(client.instructions)
                    self.tools = await _list_tools(client)
                    self.has_resources = await _has_resources(client)
                except Exception as error:
                    self._on_error(error)
                    raise
                self._client = client
                self.phase = "running"
                self._settle()
                await self._wake.wait()
                self._client = None
                self._tasks.cancel_scope.cancel()
            if not self._closing:
                self.fail(self._ended_reason())
        except StartError as error:
            self.fail(error.reason)
        except Exception as error:
            self.fail(self._failure_reason(error))
        finally:
            self._client = None
            self.kill()
            self._cleanup()
            self.phase = "ended"
            self._settle()
            self._ended.set()

    # -- what the server asks of the client (loop thread) --------------------------------------

    async def _sample(self, context: Any, params: mcp_types.CreateMessageRequestParams) -> Any:
        if self.hooks is None:
            return mcp_types.ErrorData(code=mcp_types.INVALID_REQUEST, message="sampling is not available")
        return await self.hooks.ask(self.name, "sampling", params)

    async def _elicit(self, context: Any, params: Any) -> Any:
        if self.hooks is None:
            return mcp_types.ElicitResult(action="decline")
        return await self.hooks.ask(self.name, "elicitation", params)

    async def _roots(self, context: Any) -> mcp_types.ListRootsResult:
        roots = self.hooks.roots if self.hooks is not None else ()
        return mcp_types.ListRootsResult(roots=[mcp_types.Root(uri=uri, name=name)  # type: ignore[arg-type]
                                                for uri, name in roots])

    async def _logged(self, params: mcp_types.LoggingMessageNotificationParams) -> None:
        """Write a log message of the server into its log file (where its stderr goes too)."""
        data = params.data if isinstance(params.data, str) else json.dumps(params.data, ensure_ascii=False)
        line = _one_line(f"{params.level}{f' {params.logger}' if params.logger else ''}: {data}", 2000)
        if self._log is not None:
            with contextlib.suppress(OSError, ValueError):
                self._log.write(f"[log] {line}\n")
                self._log.flush()
        if self.hooks is not None:
            self.hooks.logged(self.name, line)

    async def _notified(self, message: Any) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification) and self._tasks is not None:
            self._tasks.start_soon(self._refetch_tools)

    async def _refetch_tools(self) -> None:
        """Refetch the tools after ``list_changed``; tell the hooks when they differ."""
        client = self._client
        if client is None:
            return
        try:
            tools = await _list_tools(client)
        except Exception as error:  # the old list stays; the log says why
            await self._logged(mcp_types.LoggingMessageNotificationParams(
                level="error", logger="stateless-chat", data=f"refetching the tools failed: {error}"))
            return
        if tools != self.tools:
            self.tools = tools
            if self.hooks is not None:
                self.hooks.changed(self.name)

    def _cleanup(self) -> None:
        if self._lifeline_path is not None:
            with contextlib.suppress(OSError):
                self._lifeline_path.unlink()
        if self._log is not None:
            with contextlib.suppress(OSError, ValueError):
                self._log.close()

    def _failure_reason(self, error: Exception) -> str:
        """Return why the connection failed, from ``error`` and the server's log."""
        while isinstance(getattr(error, "exceptions", None), tuple) and len(error.exceptions) == 1:  # type: ignore[attr-defined]
            error = error.exceptions[0]  # type: ignore[attr-defined]
        if isinstance(error, MCPError) and error.code == mcp_types.CONNECTION_CLOSED:
            return self._ended_reason()
        if isinstance(error, MCPError):
            return _one_line(f"the server answered with an error: {error.message}")
        if isinstance(error, ValidationError):
            what = _RESULT_NAMES.get(error.title, error.title)
            first = error.errors()[0] if error.errors() else None
            where = ".".join(str(part) for part in first["loc"]) + ": " + first["msg"] if first else ""
            return _one_line(f"it sent a malformed {what} ({error.error_count()} problems; {where})")
        if isinstance(error, OSError):
            return _one_line(f"cannot run {self.config.command}: {error.strerror or error}")
        return _one_line(f"{type(error).__name__}: {error}") + f" (log: {self.log_path})"

    def _ended_reason(self) -> str:
        """Return how the server ended, as the launcher logged it, with the last lines it wrote."""
        how, tail = _read_log(self.log_path, self._log_start)
        reason = how or "it closed its connection"
        return reason + (f": {tail}" if tail else "") + f" (log: {self.log_path})"

    async def call(self, tool: str, arguments: dict[str, Any],
                   on_progress: Callable[[float, float | None, str | None], None] | None = None
                   ) -> ToolResult:
        """Call ``tool`` and return its result; every failure is an error result, never an exception.

        No timeout here: the caller's (which pauses while the user answers the server) cancels
        this task, and the SDK then sends the server a cancellation. ``on_progress`` gets the
        server's progress notifications for this call (a progress token is sent with it).
        """
        client = self._client
        if client is None:
            return ToolResult(self.stopped_message(), is_error=True)

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            if on_progress is not None:
                on_progress(progress, total, message)

        try:
            result = await client.call_tool(tool, arguments, progress_callback=progress)
        except MCPError as error:
            if error.code == mcp_types.CONNECTION_CLOSED:
                if self._ended is not None:
                    with anyio.move_on_after(END_WAIT):
                        await self._ended.wait()
                if not self._closing:
                    self.fail("it closed its connection")
                return ToolResult(self.stopped_message(), is_error=True)
            return ToolResult(_one_line(f"{self.name}.{tool} failed: {error.message}", 2000), is_error=True)
        except Exception as error:  # e.g. a result that does not match the tool's output schema
            return ToolResult(_one_line(f"{self.name}.{tool} failed: {error}", 2000), is_error=True)
        return render_result(result)

    async def request(self, method: str, *args: Any) -> Any:
        """Return the result of the client's ``method`` (``list_resources``, ``read_resource``,
        ``list_prompts``, ``get_prompt``, ...); raises ``MCPError`` as the SDK does."""
        client = self._client
        if client is None:
            raise MCPError(mcp_types.CONNECTION_CLOSED, self.stopped_message())
        return await getattr(client, method)(*args)


async def _has_resources(client: Client) -> bool:
    """Return whether the server lists any resource or resource template (many declare the capability
    and have none: the read_resource tool is offered only for a server that has some)."""
    if client.server_capabilities.resources is None:
        return False
    try:
        if (await client.list_resources()).resources:
            return True
        return bool((await client.list_resource_templates()).resource_templates)
    except Exception:  # a server that cannot list them offers none
        return False


def _instructions(text: str | None) -> str | None:
    """Return a server's instructions as offered to the model: controls stripped, at most 4,000
    characters (they go into every request)."""
    if not text or not text.strip():
        return None
    cleaned = strip_controls(text).strip()
    return cleaned if len(cleaned) <= INSTRUCTIONS_MAX else cleaned[: INSTRUCTIONS_MAX - 3] + "..."


async def _list_tools(client: Client) -> tuple[RememberedTool, ...]:
    """Return every tool the server lists, following its pages; a repeated name counts once."""
    tools: dict[str, RememberedTool] = {}
    cursor: str | None = None
    for _ in range(LIST_PAGES):
        page = await client.list_tools(cursor=cursor)
        for tool in page.tools:
            if tool.execution is not None and tool.execution.task_support == "required":
                continue  # callable only as a task, which this client does not support
            if tool.name not in tools:
                schema = _function_parameters(tool.input_schema)
                tools[tool.name] = RememberedTool(tool.name, tool.description or "", schema)
        cursor = page.next_cursor
        if not cursor:
            break
    return tuple(tools.values())


def _function_parameters(schema: dict[str, Any]) -> dict[str, Any]:
    """Return a tool's input schema as the ``parameters`` of a function: keys sorted, and an
    object schema always has ``properties`` (some APIs refuse one without, as for a tool with
    no arguments)."""
    schema = dict(schema)
    if schema.get("type", "object") == "object":
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
    result: dict[str, Any] = normalized(schema)
    return result


def _read_log(path: Path, start: int) -> tuple[str, str]:
    """Return the launcher's last line and the last other lines of the log written since ``start``.

    Control characters are stripped: a server may write anything to its stderr.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(start, f.tell() - 16384))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return "", ""
    how = ""
    lines: list[str] = []
    for line in strip_controls(text).splitlines():
        line = line.strip()
        if line.startswith(MARK):
            how = line[len(MARK) :]
        elif line and not re.fullmatch(r"-+ .* starts .*", line):
            lines.append(line[:200])
    return how, " | ".join(lines[-LOG_TAIL_LINES:])
