"""Learned limits last, and limits a pipeline sets hold.

A server that refuses prompts over its context (the fake server's ``context_limit``): the first
one-shot run relearns the budget from the refusal, the next ones of a ``-c`` chain start within
it (``limits.json``, per endpoint and model), and ``--dry-run`` and ``/tokens`` say where it came
from. A server whose whole context is smaller than the reply reserve gets an error that says
what to set. ``--max-prompt-tokens`` and ``--max-cost`` refuse a turn over them (exit 2, one line).
"""

from __future__ import annotations

import json
import os
import stat

from stateless_chat.store import limits
from tests.fakeserver import FakeServer
from tests.support import make_session, run_cli, run_repl

WORDS = "rivers mountains valleys forests meadows " * 30


def test_a_limit_learned_from_a_refusal_is_kept_and_used_by_later_runs(server: FakeServer) -> None:
    server.context_limit = 900
    flags = ("--base-url", server.url, "--max-tokens", "100", "-v")
    runs = [run_cli(*flags, f"first {WORDS}")]
    runs += [run_cli(*flags, "-c", f"turn {n} {WORDS}") for n in range(2, 5)]
    assert all(run.returncode == 0 for run in runs)
    said = "".join(run.stderr.decode() for run in runs)
    assert "context too long (server: " in said, said  # learned from a refusal
    path = limits.path_for(os.environ)
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    [kept] = limits.load(path).values()
    assert kept.endpoint == server.url and kept.model == "gpt-4o-mini" and kept.limit == 900
    assert 0 < kept.budget < 900

    requests = len(server.requests)
    later = run_cli(*flags, "-c", f"turn 5 {WORDS}")
    assert later.returncode == 0
    assert len(server.requests) == requests + 1  # within the learned budget: no refusal, no second try
    assert "context too long" not in later.stderr.decode()

    dry = run_cli("--base-url", server.url, "--max-tokens", "100", "--dry-run", "-c", "next")
    assert dry.returncode == 0
    assert (f"budget {kept.cap:,} tokens: learned from {server.url}'s refusal on {kept.learned} (it said "
            f"its context is 900 tokens), kept in {path}") in dry.stderr.decode()

    session = make_session(server, max_tokens=100)
    from stateless_chat.app import use_learned_limit

    use_learned_limit(session, lambda line: None)
    assert session.budget == kept.cap
    run = run_repl(session, ["/tokens\r"], width=300)
    assert f"budget {kept.cap:,}: learned from {server.url}'s refusal" in run.output


def test_the_kept_limit_is_per_endpoint_and_model_and_the_smaller_wins(tmp_path: os.PathLike[str]) -> None:
    from pathlib import Path

    path = Path(tmp_path) / "limits.json"
    limits.remember(path, limits.Learned("http://a/v1", "m", 800, 1000, "2025-01-30"))
    limits.remember(path, limits.Learned("http://a/v1", "m", 900, 1000, "2025-01-31"))  # larger: kept as was
    limits.remember(path, limits.Learned("http://b/v1", "m", 300, None, "2025-01-31"))
    assert limits.find(path, "http://a/v1/", "m") == limits.Learned("http://a/v1", "m", 800, 1000,
                                                                 "2025-01-30")
    assert limits.find(path, "http://b/v1", "m") is not None and limits.find(path, "http://a/v1", "n") is None
    path.write_text("{not json")
    assert limits.load(path) == {}  # a damaged file forgets, and the limit is learned again


def test_a_context_smaller_than_the_reply_reserve_says_what_to_set(server: FakeServer) -> None:
    server.context_exceeded_next(limit=600, requested=1_040)  # a prompt and a reply of 1,024 do not fit 600
    done = run_cli("--base-url", server.url, "hello")
    assert done.returncode == 1
    [line] = done.stderr.decode().splitlines()
    assert "the server's whole context is 600 tokens, no more than the 1,024 held for the reply" in line
    assert "--max-tokens 150" in line and "reply_reserve = 150" in line
    assert run_cli("--base-url", server.url, "--max-tokens", "150", "hello").returncode == 0


def test_max_prompt_tokens_and_max_cost_refuse_a_turn_over_them(server: FakeServer) -> None:
    ok = run_cli("--base-url", server.url, "--max-prompt-tokens", "500", "--max-cost", "0.01", "hello")
    assert ok.returncode == 0 and ok.stdout == b"echo: hello\n"
    sent = len(server.requests)
    big = run_cli("--base-url", server.url, "--max-prompt-tokens", "50", WORDS)
    assert big.returncode == 2 and len(server.requests) == sent
    [line] = big.stderr.decode().splitlines()
    assert "prompt tokens, more than --max-prompt-tokens 50: nothing was sent" in line
    dear = run_cli("--base-url", server.url, "-m", "gpt-4o", "--max-cost", "0.0001", WORDS)
    assert dear.returncode == 2 and len(server.requests) == sent
    assert "more than --max-cost 0.0001: nothing was sent" in dear.stderr.decode()
    assert "a reply of up to 1,024" in dear.stderr.decode()
    unknown = run_cli("--base-url", server.url, "-m", "my-local-model", "--max-cost", "1", "hi")
    assert unknown.returncode == 2 and b"no price is known for my-local-model" in unknown.stderr
    chained = run_cli("--base-url", server.url, "-c", "--max-prompt-tokens", "10", "more")
    assert chained.returncode == 2 and len(server.requests) == sent
    assert json.loads(run_cli("logs", "list", "--json").stdout)[0]["turns"] == 1  # nothing logged either
