"""One MCP server over stdio, driven by the official ``mcp`` SDK on the tools' event loop.

``tools.ToolServers`` is the synchronous face of this module and imports it only when a
server starts: importing the SDK takes about half a second. Everything async here runs on
the one loop thread of a ``ToolServers``; ``Connection.kill`` alone may be called from any
thread (or a signal handler).

The child is not the server itself but ``launchers/mcp_server.py``, a few lines of Python that fork the
server and watch two things: the server's exit, and a lifeline, a FIFO whose only writer is
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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TextIO

import anyio
import mcp.types as mcp_types
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters, get_default_environment, stdio_client
from mcp.shared.exceptions import MCPError

from stateless_chat.launchers import MCP_SERVER
from stateless_chat.sanitize import strip_controls
from stateless_chat.tools import executables
from stateless_chat.tools.servers import ServerConfig, ToolResult, normalized

if TYPE_CHECKING:  # the SDK's own names for a transport's two streams (private modules: types only)
    from mcp.shared._stream_protocols import ReadStream, WriteStream
    from mcp.shared.message import SessionMessage

# The SDK logs trouble with a server (a line on its stdout that is not JSON-RPC, ...) through
# `logging`; with no handler anywhere, Python would print those records on our terminal.
logging.getLogger("mcp").addHandler(logging.NullHandler())

CLIENT_INFO = mcp_types.Implementation(name="stateless-chat", version="0.1.0")
END_WAIT = 5.0  # for the connection to finish ending once a call has seen it close
LOG_ROTATE_BYTES = 1024 * 1024
LOG_TAIL_LINES = 3
LIST_PAGES = 100  # a server whose tools/list never stops paginating cannot hang the start
MARK = "[stateless-chat] "  # how the launcher's own lines in the log begin

class StartError(Exception):
    """The server could not be started or did not initialize; ``reason`` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ListedTool:
    """A tool as its server listed it; the schema's keys are sorted."""

    name: str
    description: str
    input_schema: dict[str, Any]


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
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, (mcp_types.ImageContent, mcp_types.AudioContent)):
            parts.append(f"[{block.type}: {_decoded_size(block.data):,} bytes, {block.mime_type}]")
        elif isinstance(block, mcp_types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, mcp_types.TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[resource {resource.uri}: {_decoded_size(resource.blob):,} bytes]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource link: {block.uri}]")
        else:  # a content type newer than this client
            parts.append(f"[{getattr(block, 'type', 'unknown')} content]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return ToolResult("\n".join(parts), is_error=bool(result.is_error))


class _EndWatch:
    """The transport's read stream, calling ``on_end`` once the server's output has ended."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception], on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._on_end()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _EndWatch:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _EndWatch:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        await self.aclose()
        return None


@asynccontextmanager
async def _watched_stdio(
    params: StdioServerParameters, errlog: TextIO, on_end: Callable[[], None]
) -> AsyncIterator[tuple[ReadStream[SessionMessage | Exception], WriteStream[SessionMessage]]]:
    """The SDK's stdio transport, telling ``on_end`` when the server's stdout ends."""
    async with stdio_client(params, errlog=errlog) as (read, write):
        yield _EndWatch(read, on_end), write


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


class Connection:
    """One server: its process (under ``launchers/mcp_server.py``), its SDK client and its tools.

    ``serve()`` runs for the connection's whole life on the loop thread. ``ready`` (a
    thread-safe future) is resolved once the tools are listed, or fails with ``StartError``.
    ``phase`` goes ``starting`` -> ``running`` -> ``ended``; ``failure`` says why it ended or
    never ran, and stays None when it was stopped on purpose.
    """

    def __init__(self, config: ServerConfig, log_path: Path) -> None:
        self.config = config
        self.name = config.name
        self.log_path = log_path
        self.phase: Literal["starting", "running", "ended"] = "starting"
        self.failure: str | None = None
        self.tools: tuple[ListedTool, ...] = ()
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._client: Client | None = None
        self._closing = False
        self._lifeline: list[int] = []  # 0 or 1 descriptors; list.pop makes kill() atomic
        self._lifeline_path: Path | None = None
        self._log: TextIO | None = None
        self._log_start = 0
        self._wake: anyio.Event | None = None
        self._ended: anyio.Event | None = None

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

    def _on_output_end(self) -> None:
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
            transport = _watched_stdio(self._parameters(), self._log, self._on_output_end)
            async with Client(transport, mode="legacy", cache=None, client_info=CLIENT_INFO) as client:
                self.tools = await _list_tools(client)
                self._client = client
                self.phase = "running"
                self._settle()
                await self._wake.wait()
                self._client = None
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
        if isinstance(error, OSError):
            return _one_line(f"cannot run {self.config.command}: {error.strerror or error}")
        return _one_line(f"{type(error).__name__}: {error}") + f" (log: {self.log_path})"

    def _ended_reason(self) -> str:
        """Return how the server ended, as the launcher logged it, with the last lines it wrote."""
        how, tail = _read_log(self.log_path, self._log_start)
        reason = how or "it closed its connection"
        return reason + (f": {tail}" if tail else "") + f" (log: {self.log_path})"

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float) -> ToolResult:
        """Call ``tool`` and return its result; every failure is an error result, never an exception.

        The SDK's timeout sends the server a cancellation; so does cancelling this task.
        """
        client = self._client
        if client is None:
            return ToolResult(self.stopped_message(), is_error=True)
        try:
            result = await client.call_tool(tool, arguments, read_timeout_seconds=timeout)
        except MCPError as error:
            if error.code == mcp_types.REQUEST_TIMEOUT:
                return ToolResult(
                    f"{self.name}.{tool} did not answer within {timeout:g} s; the call was cancelled", True
                )
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


async def _list_tools(client: Client) -> tuple[ListedTool, ...]:
    """Return every tool the server lists, following its pages; a repeated name counts once."""
    tools: dict[str, ListedTool] = {}
    cursor: str | None = None
    for _ in range(LIST_PAGES):
        page = await client.list_tools(cursor=cursor)
        for tool in page.tools:
            if tool.name not in tools:
                schema = _function_parameters(tool.input_schema)
                tools[tool.name] = ListedTool(tool.name, tool.description or "", schema)
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
