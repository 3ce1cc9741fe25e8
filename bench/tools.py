"""Tools: what a 50 MB tool result costs, and what configured servers cost a chat that never calls them.

Big results: a minimal stdio MCP server (``python -m bench.tools serve KIND MB``, no SDK, the
answer built before it is asked) sends one 50 MB result per call, words or one repeated letter;
a fresh measuring process starts it through ``ToolServers``, calls it once to warm up, then
times one call and the cut to ``tool_result_max_tokens`` (wall and CPU time of this process,
its peak RSS before and after). The server's own work is not in the figures: its answer is a
ready-made line.

Free until used: one-shot "hello" against the fake chat server on loopback, with three MCP
servers configured (their tool lists remembered from an earlier run) and with ``--no-tools``,
interleaved; wall and CPU time of the whole process, median of the runs.
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT, clean_env, median

BIG_MB = 50
SERVER = str(Path(__file__).resolve())
TEST_SERVER = str(ROOT / "tests" / "mcp_server.py")


# ---- the big-result server ---------------------------------------------------------------


def serve(kind: str, megabytes: float) -> None:
    """Answer initialize, tools/list and every tools/call (with the ready-made big result) on stdio."""
    size = int(megabytes * 1_000_000)
    unit = "a" if kind == "letter" else "lorem ipsum dolor sit amet, consectetur\n"
    text = (unit * (size // len(unit) + 1))[:size]
    # As a Node server writes it: the result first, "jsonrpc" and "id" after it.
    body = json.dumps({"result": {"content": [{"type": "text", "text": text}]}}).encode()[:-1]
    tool = {"name": "big", "description": "a big result", "inputSchema": {"type": "object", "properties": {}}}
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        request = json.loads(line)
        if "id" not in request:
            continue
        ident = json.dumps(request["id"]).encode()
        method = request.get("method")
        if method == "initialize":
            result = {"protocolVersion": request["params"]["protocolVersion"], "capabilities": {"tools": {}},
                      "serverInfo": {"name": "big", "version": "1"}}
            out.write(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}).encode() + b"\n")
        elif method == "tools/list":
            answer = {"jsonrpc": "2.0", "id": request["id"], "result": {"tools": [tool]}}
            out.write(json.dumps(answer).encode() + b"\n")
        elif method == "tools/call":
            out.write(body + b', "jsonrpc": "2.0", "id": ' + ident + b"}\n")
        else:
            out.write(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {}}).encode() + b"\n")
        out.flush()


@dataclass(frozen=True)
class BigRow:
    """One big result: its kind and size, the call's wall and CPU seconds, peak RSS (MB) before and after."""

    kind: str
    megabytes: float
    wall: float
    cpu: float
    rss_before: float
    rss_after: float
    kept: int  # characters of the result the model gets


def measure_big(kind: str, megabytes: float) -> BigRow:
    """Measure one call of the big-result server, in this process (run it in a fresh one)."""
    from stateless_chat.core.messages import Message
    from stateless_chat.core.tokens import TokenCounter
    from stateless_chat.tools.servers import ToolServers
    from stateless_chat.tools.specs import ServerConfig
    from stateless_chat.tools.toolcap import cap_result

    config = ServerConfig("big", sys.executable, ("-m", "bench.tools", "serve", kind, str(megabytes)),
                          env={"PYTHONPATH": str(ROOT)})
    counter = TokenCounter("gpt-4o")
    counter.warm()
    with tempfile.TemporaryDirectory() as logs, ToolServers({"big": config}, log_dir=Path(logs)) as servers:
        assert servers.start() == []
        servers.call("big", "{}")  # warm: the first call's imports and buffers are not the result's cost
        before = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.perf_counter()
        result = servers.call("big", "{}")
        text, _ = cap_result(result.text, 2000, counter.count_message, counter)
        wall = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_SELF)
    assert counter.count_message(Message("tool", text)) <= 2000 and "[cut: the server sent" in result.text
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return BigRow(kind, megabytes, wall, cpu, before.ru_maxrss / 1024, after.ru_maxrss / 1024, len(text))


def run_big(megabytes: float = BIG_MB, repeat: int = 3) -> list[BigRow]:
    """Return the median row of ``repeat`` fresh processes for each kind of big result."""
    rows = []
    for kind in ("words", "letter"):
        runs = []
        for _ in range(repeat):
            argv = [sys.executable, "-m", "bench.tools", "big", kind, str(megabytes)]
            done = subprocess.run(argv, cwd=ROOT, env=clean_env(), capture_output=True, check=True,
                                  timeout=300)
            runs.append(BigRow(**json.loads(done.stdout)))
        runs.sort(key=lambda row: row.wall)
        rows.append(runs[len(runs) // 2])
    return rows


# ---- free until used -------------------------------------------------------------------


@dataclass(frozen=True)
class IdleRow:
    """One-shot "hello": how it was run, median wall and CPU seconds."""

    name: str
    wall: float
    cpu: float


def _config(directory: Path, servers: int) -> Path:
    config = directory / "config.toml"
    tables = [f'[mcp.servers.s{n}]\ncommand = {json.dumps(sys.executable)}\n'
              f'args = [{json.dumps(TEST_SERVER)}, "--only", "add,env,hang"]\n' for n in range(servers)]
    config.write_text("\n".join(tables))
    return config


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, timeout=120)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or done.stdout.decode().strip() != "echo: hello":
        raise RuntimeError(f"one-shot run failed: {done.stderr.decode()[-500:]}")
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def run_idle(url: str, runs: int = 10, servers: int = 3) -> list[IdleRow]:
    """Return one-shot "hello" with ``servers`` configured (lists remembered) and with --no-tools."""
    with tempfile.TemporaryDirectory() as home:
        env = clean_env(HOME=home, XDG_DATA_HOME=f"{home}/data", XDG_CONFIG_HOME=f"{home}/config",
                        XDG_STATE_HOME=f"{home}/state", OPENAI_API_KEY="sk-bench")
        config = _config(Path(home), servers)
        base = [sys.executable, "-m", "stateless_chat", "--config", str(config), "--base-url", url]
        _timed([*base, "hello"], env)  # the first run starts the servers and remembers their tool lists
        contenders = {f"{servers} servers configured (not called)": [*base, "hello"],
                      "--no-tools": [*base, "--no-tools", "hello"]}
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
        for _ in range(runs):
            for name in random.sample(list(contenders), len(contenders)):
                times[name].append(_timed(contenders[name], env))
    return [IdleRow(name, median([w for w, _ in got]), median([c for _, c in got]))
            for name, got in times.items()]


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], float(sys.argv[3]))
    elif sys.argv[1] == "big":
        print(json.dumps(measure_big(sys.argv[2], float(sys.argv[3])).__dict__))
