"""The stdio transport of an MCP server, with every message it sends read within a byte cap.

The SDK's own stdio transport joins a line's chunks by repeated concatenation (quadratic in
the line) and parses it whole, so a 50 MB tool result costs minutes and gigabytes. Here each
line is read chunk by chunk: a line up to ``cap`` bytes is parsed as it is; a longer one
goes through ``jsoncut.JsonCutter``, which keeps its strings to ``cap`` bytes in all while
it streams past, and the cut is marked in the result's ``_meta`` (``CUT_META``: the line's
size and the bytes dropped) for ``mcp_client.render_result`` to say in its note. Memory is
bounded by the cap, time is one scan of the line.

A line that is not a JSON-RPC message is reported at once: when it names the id of a request
we sent, that request gets an error response saying what was wrong (instead of waiting for
its timeout), else it goes to the log. Stopping follows the MCP way: stdin closed, a grace
period, then the launcher's process group is killed (``Connection.kill`` cuts its lifeline).
"""

from __future__ import annotations

import contextlib
import json

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import anyio.abc
import mcp_types as types
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from stateless_chat.tools.jsoncut import JsonCutter

if TYPE_CHECKING:
    from mcp.shared._stream_protocols import ReadStream, WriteStream

CUT_META = "io.github.stateless-chat/cut"  # {"bytes": the line's size, "dropped": string bytes not read}
READ_CHUNK = 1024 * 1024
PIPE_SIZE = 1024 * 1024
STDIN_GRACE = 2.0  # for the server to exit once its stdin is closed
FLUSH_GRACE = 0.5  # for what was already sent to be written before stdin closes


def _error_response(request_id: int | str, message: str) -> SessionMessage:
    error = types.ErrorData(code=types.INTERNAL_ERROR, message=message)
    return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error))


def _describe(error: Exception) -> str:
    if isinstance(error, ValidationError):
        errors = error.errors()
        if not errors:
            return "invalid"
        where = ".".join(str(part) for part in errors[0]["loc"])
        return errors[0]["msg"] + (f" at {where}" if where else "")
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def message_from_line(line: bytes) -> SessionMessage | Exception | None:
    """Return the JSON-RPC message of one whole line (None for a blank line).

    A line that is JSON with the ``id`` of a response but not a valid message becomes an error
    response for that id ("sent a malformed answer: ..."), so the request fails at once; other
    bad lines come back as the exception, for the session to log.
    """
    if not line.strip():
        return None
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as error:
        try:
            data = json.loads(line)
        except ValueError:
            return error
        return _answer_for_malformed(data, f"the server sent a malformed answer: {_describe(error)}") or error


def _answer_for_malformed(data: Any, message: str) -> SessionMessage | None:
    """Return an error response for the request a malformed message answers, if it says which."""
    if not isinstance(data, dict) or ("result" not in data and "error" not in data):
        return None
    request_id = data.get("id")
    if isinstance(request_id, (int, str)) and not isinstance(request_id, bool):
        return _error_response(request_id, message)
    return None


def message_from_cut(cutter: JsonCutter, cap: int) -> SessionMessage | Exception:
    """Return the message of a line longer than ``cap``: its strings cut, the cut marked in ``_meta``."""
    cut = cutter.finish()
    what = f"a message of {cut.total:,} bytes, over the cap of {cap:,} (tool_result_max_bytes)"
    if cut.text is None:
        if cut.id is not None:
            return _error_response(cut.id, f"the server sent {what}, which could not be cut to size")
        return ValueError(f"dropped {what}, which could not be cut to size")
    try:
        data = json.loads(cut.text)
    except ValueError as error:
        not_json = f"the server sent {what} that is not JSON"
        return _answer_for_malformed({"id": cut.id, "error": None}, not_json) or error
    if isinstance(data, dict) and isinstance(data.get("result"), dict):
        meta = data["result"].setdefault("_meta", {})
        if isinstance(meta, dict):
            meta[CUT_META] = {"bytes": cut.total, "dropped": cut.dropped}
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_python(data, by_name=False))
    except ValueError as error:
        malformed = f"the server sent {what}; cut, it is malformed: {_describe(error)}"
        return _answer_for_malformed(data, malformed) or error


class LineReader:
    """Splits the server's output into lines and makes each a message, within ``cap`` bytes per line."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._parts: list[bytes] = []
        self._size = 0
        self._cutter: JsonCutter | None = None

    def feed(self, chunk: bytes) -> list[SessionMessage | Exception]:
        """Take the next bytes; return the messages of the lines they complete."""
        messages: list[SessionMessage | Exception] = []
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            self._add(chunk[start:] if newline < 0 else chunk[start:newline])
            if newline < 0:
                return messages
            message = self._end_line()
            if message is not None:
                messages.append(message)
            start = newline + 1

    def _add(self, piece: bytes) -> None:
        if not piece:
            return
        if self._cutter is None and self._size + len(piece) > self.cap:
            self._cutter = JsonCutter(self.cap)
            for part in self._parts:
                self._cutter.feed(part)
            self._parts, self._size = [], 0
        if self._cutter is not None:
            self._cutter.feed(piece)
        else:
            self._parts.append(piece)
            self._size += len(piece)

    def _end_line(self) -> SessionMessage | Exception | None:
        cutter, self._cutter = self._cutter, None
        if cutter is not None:
            return message_from_cut(cutter, self.cap)
        line = b"".join(self._parts)
        self._parts, self._size = [], 0
        return message_from_line(line)

    def end(self) -> list[SessionMessage | Exception]:
        """Return the message of a last line that had no newline, if any."""
        if self._cutter is None and not self._parts:
            return []
        message = self._end_line()
        return [] if message is None else [message]


def _widen_pipe(process: anyio.abc.Process) -> None:
    """Give the server's stdout pipe 1 MiB (Linux; 64 KiB by default): a big result then takes a
    few dozen wake-ups of this process instead of hundreds. Best effort: nothing public exposes it."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    transport = getattr(getattr(process, "_process", None), "_transport", None)
    try:
        pipe = transport.get_pipe_transport(1).get_extra_info("pipe")  # type: ignore[union-attr]
        if set_size is not None and fcntl is not None:
            fcntl.fcntl(pipe.fileno(), set_size, PIPE_SIZE)
    except Exception:  # another platform, another event loop: the default pipe works, a little slower
        pass


@asynccontextmanager
async def bounded_stdio(
    command: list[str], env: dict[str, str], errlog: TextIO, cap: int, on_end: Callable[[], None],
    on_error: Callable[[BaseException], None] = lambda error: None, cwd: str | None = None,
) -> AsyncIterator[tuple[ReadStream[SessionMessage | Exception], WriteStream[SessionMessage]]]:
    """Start ``command`` (in a new session) and yield the streams the SDK's ``Client`` speaks over.

    ``on_end`` is called once the server's output ends (it exited or crashed); ``on_error`` with
    what ends the connection from the client's side (a handshake that failed, a cancellation),
    before the server is stopped, which takes a while. Its stderr goes to ``errlog``. On the way
    out stdin is closed and the server given ``STDIN_GRACE`` seconds.
    """
    process = await anyio.open_process(command, env=env, stderr=errlog, cwd=cwd, start_new_session=True)
    _widen_pipe(process)
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    written = anyio.Event()

    async def read() -> None:
        stdout = process.stdout
        assert stdout is not None
        lines = LineReader(cap)
        async with read_writer:
            try:
                while True:
                    for message in lines.feed(await stdout.receive(READ_CHUNK)):
                        await read_writer.send(message)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                pass
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                for message in lines.end():
                    await read_writer.send(message)
            on_end()

    async def write() -> None:
        stdin = process.stdin
        assert stdin is not None
        try:
            async with write_reader:
                async for message in write_reader:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await stdin.send((data + "\n").encode())
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await read_writer.aclose()  # the session sees the connection end, not a request hanging
        finally:
            written.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(read)
        tasks.start_soon(write)
        try:
            yield read_stream, write_stream
        except BaseException as error:
            on_error(error)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await _stop(process, write_stream, written)
                for stream in (read_stream, write_stream, read_writer, write_reader):
                    await stream.aclose()
            tasks.cancel_scope.cancel()


async def _exited(process: anyio.abc.Process, timeout: float) -> bool:
    """Return whether ``process`` exited within ``timeout`` seconds (polled: ``wait()`` would also wait
    for the end of its pipes, which a child it left behind may hold)."""
    with anyio.move_on_after(timeout):
        while process.returncode is None:
            await anyio.sleep(0.01)
    return process.returncode is not None


async def _stop(process: anyio.abc.Process, write_stream: Any, written: anyio.Event) -> None:
    """End the server the MCP way: what was sent is flushed, stdin closed, then a grace period."""
    write_stream.close()
    with anyio.move_on_after(FLUSH_GRACE):
        await written.wait()
    with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        assert process.stdin is not None
        await process.stdin.aclose()
    if not await _exited(process, STDIN_GRACE):
        with contextlib.suppress(OSError):  # the whole group: started as a new session, it is the pid's
            os.killpg(process.pid, signal.SIGKILL)
        await _exited(process, STDIN_GRACE)
    with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        assert process.stdout is not None
        await process.stdout.aclose()
    # asyncio's transport of the child stays open while anything holds its pipes, and complains when
    # collected after the loop has closed; nothing public closes it (the SDK's transport does the same).
    transport = getattr(getattr(process, "_process", None), "_transport", None)
    close = getattr(transport, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()
