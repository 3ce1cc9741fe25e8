"""Programs the chat runs as its children, by path (``python FILE ...``), never imported.

Each ends when the chat does, however the chat ends (SIGKILL included): it holds a lifeline
(a pipe or FIFO the chat keeps open) and kills its own process group when that closes. They
use the standard library only, so they start fast and run under ``python -I -S``.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
LLAMA_SERVER = HERE / "llama_server.py"
MCP_SERVER = HERE / "mcp_server.py"
