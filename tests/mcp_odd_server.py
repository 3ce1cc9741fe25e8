"""A real stdio MCP server whose tools are odd on purpose, for ``test_what_the_chat_shows.py``.

Run as ``python tests/mcp_odd_server.py escape`` to serve one tool whose name holds an escape
sequence (``red\\x1b[31mALERT\\x1b[0m``; it answers ``"done"``), or ``python tests/mcp_odd_server.py
many N`` to serve ``N`` small tools (``tool_0`` ... ``tool_{N-1}``), more than a budget can offer.
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

ESCAPED_NAME = "red\x1b[31mALERT\x1b[0m"

server = MCPServer("stateless-chat-odd")


def done() -> str:
    """Answer done."""
    return "done"


def number(n: int) -> int:
    """Return n."""
    return n


def main() -> None:
    kind = sys.argv[1]
    if kind == "escape":
        server.add_tool(done, name=ESCAPED_NAME)
    else:
        for index in range(int(sys.argv[2])):
            server.add_tool(number, name=f"tool_{index}", description=f"Return n (tool number {index}).")
    server.run("stdio")


if __name__ == "__main__":
    main()
