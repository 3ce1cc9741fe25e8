"""One-shot use: piped stdin, argument + stdin, plain output, exit codes.

``run_cli`` runs the command in this process through Typer's ``CliRunner`` (stdin given as
bytes, stdout and stderr captured), which is what most of these tests need and costs no
interpreter start. ``run_process`` runs ``python -m stateless_chat`` as a real child, for what
only a process shows: exit statuses set by ``os._exit``, signals, ``--debug`` tracebacks,
argv that is not UTF-8.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stateless_chat import __version__
from tests.fakeserver import FakeServer
from tests.support import ROOT, run_cli


def test_piped_stdin_is_the_question(server: FakeServer) -> None:
    done = run_cli("--base-url", server.url, stdin=b"what is 2+2?\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"echo: what is 2+2?\n"  # the reply already ends its line: no blank line added
    assert server.requests[0]["messages"] == [{"role": "user", "content": "what is 2+2?\n"}]
    assert b"\x1b" not in done.stdout


def test_argument_then_blank_line_then_stdin(server: FakeServer) -> None:
    done = run_cli("--base-url", server.url, "summarize", stdin=b"line 1\nline 2\n")
    assert done.returncode == 0, done.stderr
    assert server.requests[0]["messages"][-1]["content"] == "summarize\n\nline 1\nline 2\n"
    assert done.stdout.decode().startswith("echo: summarize\n\nline 1")


def test_piped_output_is_the_markdown_as_sent(server: FakeServer) -> None:
    server.replier = lambda body: "# Title\n\n**bold** and `code`"
    done = run_cli("--base-url", server.url, "q")  # NO_COLOR in a terminal: test_pty
    assert done.returncode == 0
    assert done.stdout == b"# Title\n\n**bold** and `code`\n"


@pytest.mark.parametrize("flags", [[], ["--no-stream"]])
def test_plain_output_ends_with_exactly_one_newline(server: FakeServer, flags: list[str]) -> None:
    shown = {"Hello": b"Hello\n", "Hello\n": b"Hello\n", "Hello\n\x1b[0m": b"Hello\n",
             "Hello\x1b[0m\n\x1b]0;t\x07": b"Hello\n", "Hello \x1b[1m": b"Hello \n"}
    for reply, expected in shown.items():
        server.replier = lambda body, reply=reply: reply  # type: ignore[misc]
        done = run_cli("--base-url", server.url, *flags, "hi")
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected, reply


def test_system_prompt_model_and_sampling_flags_reach_the_request(server: FakeServer) -> None:
    done = run_cli("--base-url", server.url, "-m", "my-model", "-s", "be brief", "--temperature", "0.5",
                   "--max-tokens", "50", "--no-stream", "hi")
    assert done.returncode == 0, done.stderr
    body = server.requests[0]
    assert body["model"] == "my-model" and body["temperature"] == 0.5 and body["max_tokens"] == 50
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert not body.get("stream")
    assert done.stdout == b"echo: hi\n"


def test_streamed_request_asks_for_usage(server: FakeServer) -> None:
    done = run_cli("--base-url", server.url, "-u", "hi")
    body = server.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert b"usage: prompt" in done.stderr and b"reported" in done.stderr


def test_closed_stdin_is_no_input(server: FakeServer) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    environment["PYTHONPATH"] = str(ROOT)

    def closed_stdin(*args: str) -> subprocess.CompletedProcess[bytes]:
        # `<&-` starts Python with file descriptor 0 closed: sys.stdin is None.
        script = 'exec "$0" -m stateless_chat "$@" <&-'
        return subprocess.run(["sh", "-c", script, sys.executable, "--base-url", server.url, *args],
                              capture_output=True, timeout=30, env=environment, cwd=ROOT)

    done = closed_stdin("hi")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"echo: hi\n" and done.stderr == b""
    nothing = closed_stdin()
    assert nothing.returncode == 2 and nothing.stderr.decode().startswith("stateless-chat: nothing to send")
    assert len(server.requests) == 1


def test_empty_prompt_is_bad_usage(server: FakeServer) -> None:
    done = run_cli("--base-url", server.url, stdin=b"   \n")
    assert done.returncode == 2
    assert len(done.stderr.decode().strip().splitlines()) == 1
    assert server.requests == []


def test_server_error_is_one_line_and_exit_1(server: FakeServer) -> None:
    server.fail_next(n=5, status=500)
    done = run_cli("--base-url", server.url, "hi")
    assert done.returncode == 1
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "500" in lines[0] and "Traceback" not in lines[0]


def test_missing_key_with_default_endpoint() -> None:
    # An explicit base URL: with the [local] extra installed, no key and no URL means the local model.
    done = run_cli("--base-url", "https://api.openai.com/v1", "hi")
    assert done.returncode == 2
    message = done.stderr.decode().strip()
    assert len(message.splitlines()) == 1
    assert "OPENAI_API_KEY" in message and "api_key" in message


def test_custom_base_url_needs_no_key(server: FakeServer) -> None:
    done = run_cli("--base-url", server.url, "hi")
    assert done.returncode == 0
    assert server.request_headers[0]["authorization"].startswith("Bearer ")


def test_key_from_environment_is_sent_and_never_printed(server: FakeServer) -> None:
    server.fail_next(status=400, body={"error": {"message": "bad key sk-secret-123456789"}})
    done = run_cli("--base-url", server.url, "hi", env={"OPENAI_API_KEY": "sk-secret-123456789"})
    assert server.request_headers[0]["authorization"] == "Bearer sk-secret-123456789"
    assert b"sk-secret-123456789" not in done.stderr + done.stdout
    assert done.returncode == 1


def test_malformed_config_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('model = "x"\nbudget = = 3\n')
    done = run_cli("--config", str(config), "hi")
    assert done.returncode == 2
    message = done.stderr.decode()
    assert str(config) in message and "line 2" in message and "Traceback" not in message


def test_unknown_config_key_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('modle = "x"\n')
    done = run_cli("--config", str(config), "hi")
    assert done.returncode == 2 and b"modle" in done.stderr and b"model" in done.stderr


def test_dry_run_prints_the_body_and_sends_nothing(server: FakeServer) -> None:
    done = run_cli("--base-url", server.url, "--dry-run", "-s", "sys", "hello",
                   env={"OPENAI_API_KEY": "sk-dry-run-secret"})
    assert done.returncode == 0, done.stderr
    body: dict[str, Any] = json.loads(done.stdout)
    assert body["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}]
    assert server.requests == []
    assert b"sk-dry-run-secret" not in done.stdout


def test_module_and_console_script_agree_on_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.decode() == f"stateless-chat {__version__}\n"
    script = Path(sys.executable).with_name("stateless-chat")
    if not script.exists():
        pytest.skip("the package is not installed in this interpreter's environment")
    installed = subprocess.run([str(script), "--version"], capture_output=True, timeout=30, cwd=ROOT)
    assert installed.returncode == 0 and installed.stdout == done.stdout


def test_a_base_url_that_cannot_be_parsed_is_one_line_and_exit_2() -> None:
    done = run_cli("--base-url", "http://[::1", "hi")
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "--base-url" in lines[0] and "Traceback" not in lines[0]


def test_dry_run_json_escapes_c1_controls_and_still_parses(tmp_path: Path) -> None:
    done = run_cli("--base-url", "http://127.0.0.1:9/v1", "--dry-run", "csi \x9b2J del \x7f here")
    assert done.returncode == 0, done.stderr
    assert b"\xc2\x9b" not in done.stdout and b"\x7f" not in done.stdout
    body = json.loads(done.stdout)
    assert body["messages"][-1]["content"] == "csi \x9b2J del \x7f here"
