"""A stand-in for the local model, written by the tests themselves: GGUF model files (a writer from
the format's specification) and a fake ``llama_cpp`` package and ``python`` executables that the real
launcher runs as the child server."""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

import pytest

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR_CODES = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?"}
SCALAR_CODES |= {U64: "Q", I64: "q", F64: "d"}


class GGUFWriter:
    """Builds GGUF header bytes: magic, version, tensor count, kv count, typed key/value pairs."""

    def __init__(self, version: int = 3, order: str = "<") -> None:
        self.version = version
        self.order = order
        self.count_code = "I" if version == 1 else "Q"
        self.kvs: list[bytes] = []

    def _count(self, n: int) -> bytes:
        return struct.pack(self.order + self.count_code, n)

    def _string(self, s: str) -> bytes:
        data = s.encode()
        return self._count(len(data)) + data

    def _value(self, vtype: int, value: Any) -> bytes:
        if vtype == STRING:
            return self._string(value)
        if vtype == ARRAY:
            etype, items = value
            body = b"".join(self._value(etype, item) for item in items)
            return struct.pack(self.order + "I", etype) + self._count(len(items)) + body
        return struct.pack(self.order + SCALAR_CODES[vtype], value)

    def add(self, key: str, vtype: int, value: Any) -> GGUFWriter:
        self.kvs.append(self._string(key) + struct.pack(self.order + "I", vtype) + self._value(vtype, value))
        return self

    def header_size(self) -> int:
        return 4 + 4 + 2 * len(self._count(0))

    def build(self, tensor_count: int = 0) -> bytes:
        head = b"GGUF" + struct.pack(self.order + "I", self.version)
        return head + self._count(tensor_count) + self._count(len(self.kvs)) + b"".join(self.kvs)


def model_like(version: int = 3, order: str = "<", ctx_type: int = U32, ctx: int = 4096) -> GGUFWriter:
    """A header shaped like a real model's: scalars and arrays of every kind before the context key."""
    w = GGUFWriter(version, order)
    w.add("general.architecture", STRING, "llama")
    w.add("general.name", STRING, "tiny test model ✓")
    w.add("general.languages", ARRAY, (STRING, ["en", "de", "fr"]))
    w.add("llama.block_count", U32, 2)
    w.add("llama.rope.freq_base", F32, 10000.0)
    w.add("llama.some_u8", U8, 7)
    w.add("llama.some_i8", I8, -7)
    w.add("llama.some_u16", U16, 65535)
    w.add("llama.some_i16", I16, -300)
    w.add("llama.some_i32", I32, -70000)
    w.add("llama.some_i64", I64, -(2**40))
    w.add("llama.some_f64", F64, 0.25)
    w.add("tokenizer.ggml.add_bos_token", BOOL, True)
    w.add("tokenizer.ggml.scores", ARRAY, (F32, [0.5, -1.0, 2.0, 3.5]))
    w.add("tokenizer.ggml.token_type", ARRAY, (I32, [1, 1, 3]))
    w.add("tokenizer.nested", ARRAY, (ARRAY, [(U16, [1, 2]), (U64, [3]), (STRING, ["x", "yz"])]))
    w.add("llama.context_length", ctx_type, ctx)
    w.add("tokenizer.chat_template", STRING, "{% for m in messages %}{{ m.content }}{% endfor %}")
    return w


def write(tmp_path: Path, data: bytes, name: str = "model.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


CRASHING = """\
import sys
for i in range(8):
    print(f"loading line {i}", flush=True)
print("error: unable to load model", file=sys.stderr, flush=True)
print("ARGS " + " ".join(a for a in sys.argv[1:] if "\\n" not in a), flush=True)
sys.exit(1)
"""

# The server module of a fake ``llama_cpp`` package (see ``fake_llama``), run by the real launcher. Like
# llama_cpp.server it lets PORT and HOST override its flags, a config file named by CONFIG_FILE replace
# them, and an API_KEY setting (any case) demand a bearer token; it lists the model under its alias.
SERVING = """\
import json, os, subprocess, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

args = sys.argv[1:]
def arg(name):
    return args[args.index(name) + 1] if name in args else None
if os.environ.get("CONFIG_FILE"):
    sys.exit(f"Config file {os.environ['CONFIG_FILE']} not found!")
key = next((v for k, v in os.environ.items() if k.lower() == "api_key"), None)
port = int(os.getenv("PORT", arg("--port")))
alias = arg("--model_alias") or arg("--model")
print("passthrough", os.environ.get("FAKE_PASSTHROUGH"), flush=True)
grandchild = subprocess.Popen(["sleep", "300"])
with open(os.environ["FAKE_PID_FILE"], "w") as f:
    f.write(f"{os.getpid()} {grandchild.pid}")
time.sleep(float(os.environ.get("FAKE_DELAY", "0")))

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        allowed = key is None or self.headers.get("Authorization") == f"Bearer {key}"
        body = json.dumps({"object": "list", "data": [{"id": alias, "object": "model"}]}).encode()
        self.send_response(404 if self.path != "/v1/models" else 200 if allowed else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        print("request", *a, flush=True)

HTTPServer((os.getenv("HOST", "127.0.0.1"), port), Handler).serve_forever()
"""

STUBBORN = """\
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("stuck loading", flush=True)
while True:
    time.sleep(1)
"""


def fake_python(tmp_path: Path, source: str) -> str:
    """Write an executable script that stands in for ``python`` (it gets ``-m llama_cpp.server ...``)."""
    script = tmp_path / "fake-python"
    script.write_text(f"#!{sys.executable}\n" + source)
    script.chmod(0o755)
    return str(script)


FAKE_LLAMA_CPP = {
    "llama_cpp/__init__.py": "",
    "llama_cpp/llama_cpp.py": (
        "class Params:\n    use_extra_bufts = True\ndef llama_model_default_params():\n    return Params()\n"
    ),
    "llama_cpp/server/__init__.py": "",
    "llama_cpp/server/settings.py": (
        "class Settings:\n    model_fields = dict.fromkeys(['host', 'port', 'api_key', 'model', 'n_ctx'])\n"
    ),
    "llama_cpp/server/__main__.py": (
        "import sys\nimport llama_cpp.llama_cpp as c\n"
        "print('fake server', __name__, sys.argv[1:], 'use_extra_bufts=%s' % "
        "c.llama_model_default_params().use_extra_bufts, flush=True)\n"
        "sys.exit(3)\n"
    ),
}


def fake_llama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, main: str | None = None) -> None:
    """Put a fake ``llama_cpp`` package first on the child's path; ``main`` replaces its server module."""
    files = dict(FAKE_LLAMA_CPP)
    if main is not None:
        files["llama_cpp/server/__main__.py"] = main
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
