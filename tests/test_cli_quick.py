"""The one-shot's short way in: a plain command line read without Typer (``cli.quick``) means what
Typer reads in it, and a one-shot answer imports only what it uses (no SDK, no Typer, no terminal UI)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from stateless_chat.cli import PROG, commandline, quick
from tests.fakeserver import FakeServer
from tests.support import ROOT

PLAIN = [
    [],
    ["hi"],
    [""],
    ["chat"],
    ["-c"],
    ["--base-url", "http://127.0.0.1:9/v1", "q"],
    ["q", "--base-url", "http://a/v1", "--base-url", "http://b/v1"],
    ["-m", "gpt-4o", "-s", "be brief", "-u", "hello world"],
    ["--model", "x", "--api-key", "sk-1", "--system", "s", "--policy", "summarize", "--recall", "off",
     "--memory", "manual", "--cid", "abc", "p"],
    ["--no-stream", "--usage", "--verbose", "--quiet", "--dry-run", "--continue", "--no-log", "--yes",
     "--no-tools", "--no-instructions", "--debug", "p"],
    ["-v", "-q", "-y", "logs"],
    ["--local", "p"],
    ["what is -m?"],
    ["caf\udcc3 bad bytes", "-m", "m\udcff"],
]

NOT_PLAIN = [
    ["logs"], ["logs", "list"], ["--help"], ["-h"], ["--version"], ["--", "logs"], ["-uv", "p"],
    ["--model=x", "p"], ["-mx", "p"], ["-m"], ["-m", "-x", "p"], ["a", "b"], ["-m", "a", "-m", "b"],
    ["-u", "-u"], ["--temperature", "0.5", "p"], ["--max-tokens", "5"], ["--config", "c.toml"],
    ["--save", "f.json", "p"], ["--docs", "d"], ["--nope"], ["-"], ["p", "--max-cost", "1"],
]


def typer_params(args: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Return the parameters Typer's command line passes to ``chat_command`` for ``args``."""
    seen: list[dict[str, Any]] = []

    def capture(**params: Any) -> int:
        seen.append(params)
        return 0

    monkeypatch.setattr(commandline, "chat_command", capture)
    result = CliRunner().invoke(commandline.app, args, prog_name=PROG, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("args", PLAIN, ids=repr)
def test_a_plain_command_line_means_what_typer_reads_in_it(args: list[str], monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    assert quick.parse(args, {}) == typer_params(args, monkeypatch)


@pytest.mark.parametrize("args", NOT_PLAIN, ids=repr)
def test_anything_else_is_left_to_typer(args: list[str]) -> None:
    assert quick.parse(args, {}) is None


def test_shell_completion_is_left_to_typer() -> None:
    assert quick.parse(["hi"], {"_STATELESS_CHAT_COMPLETE": "bash_complete"}) is None


def test_the_defaults_are_the_chat_commands() -> None:
    signature = inspect.signature(commandline.chat)
    defaults = {name: p.default for name, p in signature.parameters.items()}
    assert quick.DEFAULTS == {**defaults, "version": None}  # --version's eager callback returns None
    assert set(quick.DEFAULTS) == set(inspect.signature(commandline.chat_command).parameters)


PROBE = """\
import os, sys
sys.argv = ["stateless-chat", *sys.argv[1:]]
from stateless_chat import cli
real_exit = os._exit
def report(code):
    sys.stdout.flush()
    heavy = ("openai", "typer", "click", "pydantic", "prompt_toolkit", "rich", "mcp")
    loaded = sorted(name for name in heavy if name in sys.modules)
    sys.stderr.write("LOADED " + json.dumps(loaded) + "\\n")
    real_exit(code)
import json
os._exit = report
cli.main()
"""


def modules_of_a_run(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None
                     ) -> tuple[subprocess.CompletedProcess[bytes], list[str]]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    environment.update({"PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "sk-test", **(env or {})})
    done = subprocess.run([sys.executable, "-c", PROBE, *args], input=stdin, capture_output=True,
                          env=environment, cwd=ROOT, timeout=60)
    lines = [line for line in done.stderr.decode().splitlines() if line.startswith("LOADED ")]
    assert lines, done.stderr.decode()
    return done, json.loads(lines[-1].removeprefix("LOADED "))


def test_a_one_shot_imports_neither_the_sdk_nor_typer_nor_the_terminal_ui(server: FakeServer) -> None:
    done, loaded = modules_of_a_run("--base-url", server.url, "-u", "hello")
    assert done.returncode == 0 and done.stdout == b"echo: hello\n"
    assert b"usage: prompt" in done.stderr
    assert loaded == []
    piped, loaded = modules_of_a_run("--base-url", server.url, stdin=b"from stdin")
    assert piped.stdout == b"echo: from stdin\n" and loaded == []


def test_a_refusal_still_reads_as_the_sdk_path_says_it(server: FakeServer) -> None:
    server.fail_next(status=401)
    done, loaded = modules_of_a_run("--base-url", server.url, "hello")
    assert done.returncode != 0
    assert "rejected the API key (401)" in done.stderr.decode()
    assert "openai" in loaded  # its error, made by the SDK: the message the SDK path gives


def test_the_sdk_reads_settings_of_its_own_from_the_environment(server: FakeServer) -> None:
    """``OPENAI_CUSTOM_HEADERS`` and the like are the SDK's to read: the request goes through it."""
    done, loaded = modules_of_a_run("--base-url", server.url, "hello", env={"OPENAI_LOG": "info"})
    assert done.stdout == b"echo: hello\n" and "openai" in loaded
