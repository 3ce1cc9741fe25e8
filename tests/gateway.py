"""The LiteLLM proxy as a child process on 127.0.0.1, for tests/test_gateway.py and bench/gateway.py.

``Gateway(config_yaml)`` writes the config into a private temporary directory, starts
``litellm --config ... --host 127.0.0.1 --port PORT`` (through a small launcher, see below) in
its own process group, waits until ``GET /v1/models`` answers with the gateway's own key, and
``stop()`` ends the whole group. The gateway's master key is made fresh for each start
(``LITELLM_MASTER_KEY``; the config must say ``master_key: os.environ/LITELLM_MASTER_KEY``)
and is what a client sends as its API key.

The child's environment is cleaned: no ``LITELLM_*``, database or Redis settings of the caller
leak in, ``HOST``/``PORT`` cannot move it, and ``LITELLM_LOCAL_MODEL_COST_MAP=True`` keeps it
from fetching its price table from the network at start (it would retry for ~8 s, offline).
It runs in the temporary directory, so no ``.env`` file of the caller is read.

Stdlib only, like ``tests/fakeserver.py``; ``litellm`` is imported by the child alone.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from stateless_chat.wire.local import _free_port

STOP_TIMEOUT = 10.0
REASON = (
    "the gateway extra is not installed (pip install -e '.[gateway]': the LiteLLM proxy, "
    "see docs/gateway.md)"
)

# Runs the proxy's CLI in this process, as the ``litellm`` console script does, after starting a
# thread that ends the whole process group when stdin reaches end-of-file: the parent holds the
# other end of that pipe and never writes to it, so however the parent ends (even SIGKILL, which
# runs no cleanup), the gateway does not outlive it. The same trick as stateless_chat/local.py.
_LAUNCHER = """\
import os, signal, sys, threading

def _end_with_the_parent():
    try:
        while os.read(0, 4096):
            pass
    finally:
        if os.getpgrp() == os.getpid():
            os.killpg(0, signal.SIGKILL)
        os._exit(1)

threading.Thread(target=_end_with_the_parent, daemon=True).start()
sys.argv[0] = "litellm"
from litellm.proxy.proxy_cli import run_server
run_server()
"""

_DROPPED_PREFIXES = ("LITELLM_", "DATABASE_", "REDIS_", "PROXY_")
_DROPPED = {"HOST", "PORT", "CONFIG_FILE_PATH", "WORKER_CONFIG", "STORE_MODEL_IN_DB", "DATABASE_URL"}

# Requests to the child never go through an HTTP proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def litellm_available() -> bool:
    """Return True when the LiteLLM proxy can be started here (``litellm`` is importable)."""
    try:
        return importlib.util.find_spec("litellm") is not None
    except (ImportError, ValueError):
        return False


def model_names(config_yaml: str) -> set[str]:
    """Return the ``model_name`` values of a proxy config (a line-level read, enough for our configs)."""
    return set(re.findall(r"^\s*-?\s*model_name:\s*([^\s#]+)", config_yaml, re.MULTILINE))


class GatewayError(RuntimeError):
    """The proxy did not start (its log is kept, and named) or is not running; the message ends
    with the tail of its log."""


class Gateway:
    """The LiteLLM proxy serving ``config_yaml`` on 127.0.0.1; a context manager."""

    def __init__(self, config_yaml: str, *, startup_timeout: float = 180, env: dict[str, str] | None = None,
                 python: str = sys.executable) -> None:
        self.config_yaml = config_yaml
        self.startup_timeout = startup_timeout
        self.extra_env = dict(env or {})
        self.python = python
        self.key = ""
        self.port = 0
        self.url = ""
        self.startup_seconds = 0.0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path | None:
        return self._dir / "litellm.log" if self._dir is not None else None

    def log_tail(self, lines: int = 15) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        text = path.read_text(errors="replace")
        return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in _DROPPED and not k.upper().startswith(_DROPPED_PREFIXES)}
        env.update(
            LITELLM_MASTER_KEY=self.key,
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def start(self) -> str:
        """Start the proxy, wait until it lists the config's model names, and return its base URL."""
        if self._proc is not None:
            return self.url
        self._dir = Path(tempfile.mkdtemp(prefix="stateless-chat-gateway-"))
        config = self._dir / "config.yaml"
        config.write_text(self.config_yaml, encoding="utf-8")
        self.key = "sk-" + secrets.token_hex(24)
        self.port = _free_port()  # the local server's: a loopback port that was free a moment ago
        self.url = f"http://127.0.0.1:{self.port}/v1"
        started = time.monotonic()
        with open(self._dir / "litellm.log", "wb") as log:
            self._proc = subprocess.Popen(
                [self.python, "-c", _LAUNCHER, "--config", str(config), "--host", "127.0.0.1",
                 "--port", str(self.port)],
                stdin=subprocess.PIPE,  # never written: the child's sign that this process is alive
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self._dir,
                start_new_session=True,
            )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop(keep_log=True)
            raise
        self.startup_seconds = time.monotonic() - started
        return self.url

    def _wait_ready(self, started: float) -> None:
        wanted = model_names(self.config_yaml)
        deadline = started + self.startup_timeout
        proc = self._proc
        assert proc is not None
        while True:
            code = proc.poll()
            if code is not None:
                raise GatewayError(f"the LiteLLM proxy exited with status {code} while starting "
                                   f"(log: {self.log_path}):\n{self.log_tail()}")
            listed = self.models()
            if listed is not None and wanted <= listed:
                return
            if time.monotonic() > deadline:
                raise GatewayError(f"the LiteLLM proxy did not answer within {self.startup_timeout:g}s "
                                   f"(log: {self.log_path}):\n{self.log_tail()}")
            time.sleep(0.25)

    def models(self) -> set[str] | None:
        """Return the model ids ``GET /v1/models`` lists with this gateway's key (None: no answer)."""
        headers = {"Authorization": f"Bearer {self.key}"}
        request = urllib.request.Request(f"{self.url}/models", headers=headers)
        try:
            with _opener.open(request, timeout=2) as response:
                body = json.loads(response.read().decode("utf-8"))
        except (OSError, ValueError):
            return None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            return None
        return {str(m.get("id")) for m in data if isinstance(m, dict)}

    def check(self) -> None:
        """Raise ``GatewayError`` unless the proxy is running."""
        if self._proc is None or self._proc.poll() is not None:
            raise GatewayError(f"the LiteLLM proxy is not running:\n{self.log_tail()}")

    def stop(self, *, keep_log: bool = False) -> None:
        """End the proxy's process group (SIGTERM, SIGKILL after ``STOP_TIMEOUT``); idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever the leader left in its group goes too
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        if self._dir is not None and not keep_log:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
