"""A real stdio MCP server for the tests of ``stateless_chat.tools.servers``, written with the mcp SDK.

Run as ``python tests/mcp_server.py [--only add,env] [--noise]``: ``--only`` keeps just the named
tools (so that two servers can be made to clash on some names and not others); ``--noise``
writes a line that is not JSON-RPC to stdout, and one to stderr, before serving; ``--hang-start``
never answers the handshake; ``--malformed-list`` answers ``tools/list`` with a list no client can
read. Its tools:

- ``shout(text)`` sends ``text`` as a log message; ``grow(name)`` adds a tool and sends
  ``tools/list_changed``;
- ``text(megabytes, kind)`` returns that much text (words, or one repeated letter), plain content only;
- ``add(a, b)`` answers ``a + b``; ``fail()`` returns an ``isError`` result; ``crash()`` ends the
  process with status 3 (after a line on stderr); ``hang(seconds)`` sleeps; ``huge(n)`` returns
  ``n`` characters; ``env(name)`` returns that environment variable (or ``<unset>``);
- ``image(size)`` returns an image of ``size`` bytes; ``dotted.name`` has a name no model API
  accepts; ``cancelled()`` counts the ``hang`` calls that were cancelled; ``pids()`` returns this
  process's id, its parent's and its group's; ``spawn_sleeper()`` starts a ``sleep`` child in the
  server's process group and returns its pid (nothing the server starts may outlive the chat).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, ImageContent, TextContent

server = MCPServer("stateless-chat-test")
_cancelled = 0
_sleepers: list[subprocess.Popen[bytes]] = []


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def fail() -> CallToolResult:
    """Return a result marked as an error."""
    return CallToolResult(content=[TextContent(type="text", text="this tool always fails")], is_error=True)


def crash() -> str:
    """End the server process at once, as a crash would."""
    print("crash: the test server is going down", file=sys.stderr, flush=True)
    os._exit(3)


async def hang(seconds: float) -> str:
    """Sleep for the given number of seconds, then answer."""
    global _cancelled
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        _cancelled += 1
        raise
    return f"slept {seconds} s"


def huge(n: int) -> str:
    """Return n characters."""
    return ("0123456789" * (n // 10 + 1))[:n]


def text(megabytes: float, kind: str = "words") -> CallToolResult:
    """Return a text of the given size in MB: words ("lorem ipsum ..." lines) or one repeated letter."""
    size = int(megabytes * 1_000_000)
    unit = "a" if kind == "letter" else "lorem ipsum dolor sit amet, consectetur\n"
    body = (unit * (size // len(unit) + 1))[:size]
    return CallToolResult(content=[TextContent(type="text", text=body)])


async def shout(text: str, ctx: Context) -> str:  # type: ignore[type-arg]
    """Send text as a log message (info), then answer."""
    await ctx.info(text)
    return "logged"


async def grow(name: str, ctx: Context) -> str:  # type: ignore[type-arg]
    """Add a tool of that name (it answers its name) and tell the client the list changed."""
    server.add_tool(lambda: name, name=name, description=f"a tool added at run time: {name}")
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


def env(name: str) -> str:
    """Return the value of an environment variable of this process, or <unset>."""
    value = os.environ.get(name)
    return "<unset>" if value is None else value


def image(size: int) -> ImageContent:
    """Return a PNG-typed image of size bytes."""
    data = base64.b64encode(b"\x89" * size).decode("ascii")
    return ImageContent(type="image", data=data, mime_type="image/png")


def dotted() -> str:
    """A tool whose name has a dot."""
    return "dotted"


def cancelled() -> int:
    """Return how many hang calls were cancelled."""
    return _cancelled


def pids() -> str:
    """Return this process's pid, parent pid and process group as JSON."""
    return json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgrp()})


def spawn_sleeper() -> int:
    """Start a long sleep in this server's process group and return its pid."""
    child = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    _sleepers.append(child)
    return child.pid


TOOLS: dict[str, Callable[..., Any]] = {
    "add": add,
    "fail": fail,
    "crash": crash,
    "hang": hang,
    "huge": huge,
    "text": text,
    "shout": shout,
    "grow": grow,
    "env": env,
    "image": image,
    "dotted.name": dotted,
    "cancelled": cancelled,
    "pids": pids,
    "spawn_sleeper": spawn_sleeper,
}


def rewrite_stdout(rewrite: Callable[[bytes], bytes]) -> None:
    """Pass every line this process writes to stdout through ``rewrite`` (to answer wrongly on purpose)."""
    real = os.dup(1)
    read, write = os.pipe()
    os.dup2(write, 1)
    os.close(write)

    def pump() -> None:
        with os.fdopen(read, "rb") as lines, os.fdopen(real, "wb", buffering=0) as out:
            for line in lines:
                out.write(rewrite(line))

    threading.Thread(target=pump, daemon=True).start()


def malformed_tools(line: bytes) -> bytes:
    """Return a tools/list answer with a tool that has no name and a schema that is a string."""
    if b'"tools":[' not in line.replace(b" ", b""):
        return line
    message = json.loads(line)
    message["result"]["tools"] = [{"description": "no name", "inputSchema": "not a schema"}]
    return json.dumps(message).encode() + b"\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="", help="comma-separated tool names to serve (default: all)")
    parser.add_argument("--noise", action="store_true", help="write a non-JSON-RPC line to stdout first")
    parser.add_argument("--hang-start", action="store_true", help="never answer the initialize request")
    parser.add_argument("--malformed-list", action="store_true", help="answer tools/list with a bad list")
    options = parser.parse_args()
    if options.hang_start:
        print("test server hangs before serving", file=sys.stderr, flush=True)
        time.sleep(3600)
    if options.malformed_list:
        rewrite_stdout(malformed_tools)
    if options.noise:
        print("noise on stdout", flush=True)
        print("noise on stderr", file=sys.stderr, flush=True)
    names = [name for name in options.only.split(",") if name] or list(TOOLS)
    for name in names:
        server.add_tool(TOOLS[name], name=name)
    print("test server ready", file=sys.stderr, flush=True)
    server.run("stdio")


if __name__ == "__main__":
    main()
