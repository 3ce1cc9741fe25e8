"""Counts you can trust on any model: the server's tokenizer where it has one, calibrated where not.

Against the real test server (``tests/fakeserver.py``) made to count its own way (``FakeTokenizer``:
cl100k_base where the client counts an unknown model with o200k_base, a ChatML template with a default
system prompt), through the real openai client and a real ``Session``: the meter is checked against the
prompt tokens the server reports. Its tokenizer routes speak llama.cpp's, llama-cpp-python's and vLLM's
dialects. The calibration file is a real file in the test's data folder.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.app import meter_for
from stateless_chat.chat.meter import Meter, attach
from stateless_chat.chat.session import Session
from stateless_chat.chat.values import Hooks
from stateless_chat.core.calibration import Calibration, Line, Template, fit, store_key
from stateless_chat.core.messages import ContextRetry, Message
from stateless_chat.store.calibration import FILE_NAME, CalibrationStore
from stateless_chat.wire.servertokens import probe
from tests.fakeserver import FakeServer, FakeTokenizer, approx_tokens
from tests.support import make_session, run_repl

MODEL = "qwen2.5-7b-instruct"  # no OpenAI tokenizer: counted with o200k_base, as an estimate
DEFAULT_SYSTEM = "You are a helpful assistant."
TEXTS = ("Hello there!", "  two leading spaces, which merge with the template's newline",
         "Some code:\n```python\nx = [1, 2, 3]\n```", "Ünïcödé, emoji 🙂 and numbers 1234.5678",
         "A much longer message about the river and the mill. " * 12)


def counting_server(dialect: str | None = None, **options: Any) -> FakeServer:
    server = FakeServer()
    server.tokenizer = FakeTokenizer("cl100k_base", default_system=DEFAULT_SYSTEM, bos=options.pop("bos", 0))
    server.tokenizer_dialect = dialect
    for name, value in options.items():
        setattr(server, name, value)
    return server


def data_dir() -> Path:
    return Path(os.environ["XDG_DATA_HOME"]) / "stateless-chat"


def metered(server: FakeServer, **settings: Any) -> tuple[Session, Meter]:
    """A session against ``server`` counting with the meter the command line would give it."""
    session = make_session(server, model=settings.pop("model", MODEL), **settings)
    meter = meter_for(session.settings, data_dir=data_dir())
    attach(session, meter)
    return session, meter


def errors(session: Session) -> list[float]:
    return [(t.estimated_prompt_tokens - t.reported_prompt_tokens) / t.reported_prompt_tokens
            for t in session.ledger.turns if t.reported_prompt_tokens]


# ---- the fit ----------------------------------------------------------------------------------


def test_one_reply_gives_a_fixed_cost_and_more_give_the_line() -> None:
    assert fit([]) is None
    assert fit([(100, 130)]) == Line(30.0, 1.0)
    line = fit([(x, 20 + 1.1 * x) for x in (100, 300, 700, 1200)])
    assert line is not None and line.ratio == pytest.approx(1.1) and line.fixed == pytest.approx(20)


def test_one_odd_reply_moves_the_ratio_little_and_the_line_covers_the_recent_replies() -> None:
    points = [(x, round(15 + 1.05 * x)) for x in range(100, 2100, 100)]
    odd = [*points[:10], (1050, 5000), *points[10:]]
    line = fit(odd)
    assert line is not None and abs(line.ratio - 1.05) < 0.01  # the median of the slopes, not the last value
    few = [(100, 120), (220, 250), (400, 441)]
    line = fit(few)
    assert line is not None and all(line(x) >= y - 1e-9 for x, y in few)  # no undercount of what was seen


def test_the_error_so_far_is_what_was_predicted_before_each_reply() -> None:
    calibration = Calibration()
    for ours, reported, predicted in ((100, 120, 100), (200, 230, 220), (300, 340, 345)):
        calibration = calibration.observe(ours, reported, predicted)
    mean, under = calibration.error_summary() or (0.0, 0.0)
    assert calibration.replies == 3
    assert under == pytest.approx(20 / 120) and mean == pytest.approx((20 / 120 + 10 / 230 + 5 / 340) / 3)


def test_the_store_is_private_keeps_other_chats_keys_and_never_overwrites_what_it_cannot_read(
        tmp_path: Path) -> None:
    path = tmp_path / "data" / FILE_NAME
    one, other = CalibrationStore.open(path), CalibrationStore.open(path)
    one.put("a m", Calibration(((100, 120),)))
    other.put("b m", Calibration(((200, 260),)))  # another chat, opened before the first wrote
    other.put_template("model.gguf:9", Template(4, 21, {"user": 5}, "\n"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = CalibrationStore.open(path)
    assert again.get("a m").points == ((100, 120),) and again.get("b m").points == ((200, 260),)
    assert again.template("model.gguf:9") == Template(4, 21, {"user": 5}, "\n")
    path.write_text("{not json")
    broken = CalibrationStore.open(path)
    assert "not valid JSON" in broken.problem
    broken.put("a m", Calibration(((1, 2),)))
    assert path.read_text() == "{not json"  # left as it was: nothing in it is lost


# ---- the server's own tokenizer ------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["llama.cpp", "llama-cpp-python", "vllm"])
def test_the_servers_tokenizer_counts_every_request_exactly(dialect: str) -> None:
    with counting_server(dialect, bos=1, tokenize_bos=1 if dialect == "llama-cpp-python" else 0) as server:
        found = probe(server.url, MODEL)
        assert found is not None and found.dialect == dialect
        session, meter = metered(server, system=None)
        for text in TEXTS:
            session.send(text)
        session.reconfigure(system="Be brief.")  # a system prompt leads: no default one in the template
        session.send("and with a system prompt?")
        assert meter.mode == "server" and meter.label == ""
        counts = [(t.estimated_prompt_tokens, t.reported_prompt_tokens) for t in session.ledger.turns]
        assert all(ours == reported for ours, reported in counts), counts
        assert meter.template is not None and meter.template.prefix == "\n"
        assert f"matched the server's count on all {len(TEXTS) + 1} replies" in meter.how()


def test_the_tokenizer_is_looked_for_once_and_a_turn_tokenizes_only_its_new_messages() -> None:
    with counting_server("llama.cpp") as server:
        session, meter = metered(server)
        session.send("first")
        probes = [p for p in server.tokenize_calls]
        per_turn = []
        for turn in range(12):
            before = len(server.tokenize_calls)
            session.send(f"message {turn}: " + "words " * (turn * 5))
            per_turn.append(len(server.tokenize_calls) - before)
        assert probes[0] == "/extras/tokenize" and probes[1] == "/tokenize"  # the probe, then the template
        assert server.tokenize_calls.count("/extras/tokenize") == 1
        assert max(per_turn) <= 3, per_turn  # its message and the reply (a prefix once), never the history


def test_a_server_without_a_tokenizer_is_asked_once_and_then_calibrated(server: FakeServer) -> None:
    session, meter = metered(server)
    session.send("hello")
    session.send("again")
    assert server.tokenize_calls == ["/extras/tokenize", "/tokenize"]
    assert meter.mode == "calibrated" and meter.label == "≈"


def test_an_openai_model_is_counted_with_its_encoding_and_no_tokenizer_is_looked_for(
        server: FakeServer) -> None:
    session, meter = metered(server, model="gpt-4o")
    session.send("hello")
    assert server.tokenize_calls == [] and meter.mode == "exact"


def test_a_tokenizer_that_stops_answering_is_not_waited_for_and_counts_again_once_it_answers() -> None:
    with counting_server("llama.cpp") as server:
        session, meter = metered(server)
        session.send("first")
        server.tokenizer_dialect = None  # answers 404 now
        session.send("second, counted while the tokenizer is away")
        assert meter.label == "≈" and "estimated while it did not answer" in meter.how()
        server.tokenizer_dialect = "llama.cpp"
        meter._down_until = 0.0  # its 30 s are over
        session.send("third")  # counted by the tokenizer again; once answered, the estimates are redone
        assert meter.label == ""
        session.send("fourth")
        last = session.ledger.turns[-1]
        assert last.estimated_prompt_tokens == last.reported_prompt_tokens


# ---- calibrated ----------------------------------------------------------------------------------


ENGLISH = ("Tell me one useful thing about the old harbour, in two sentences.",
           "Here is code:\n```python\ndef f(x):\n    return x * 2\n```\nWhat does f(21) return?",
           "List three facts:\n- first: 12 items\n- second: 40%\n- third: ok?",
           '{"turn": 4, "values": [4, 8, 12], "ok": true} explain this JSON',
           "Numbers: 1234.50, 343, 0x03fc, 0.571429; sum them please.")


def test_after_three_replies_the_meter_is_within_two_percent_and_the_calibration_is_kept() -> None:
    def replier(body: dict[str, Any]) -> str:
        return "The answer depends on the tide. " * (len(body["messages"]) % 4 + 1)

    with counting_server(None, replier=replier) as server:
        session, meter = metered(server)
        for turn in range(15):
            session.send(ENGLISH[turn % len(ENGLISH)] + f" (turn {turn})")
        late = errors(session)[3:]
        assert max(abs(e) for e in late) < 0.02, late
        assert min(late) > -0.02  # never an undercount above 2% once calibrated
        assert meter.mode == "calibrated" and "calibrated from 15 replies" in meter.how()
        path = data_dir() / FILE_NAME
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        stored = json.loads(path.read_text())["entries"][store_key(server.url, MODEL)]
        assert len(stored["points"]) == 15
        # The next chat with this endpoint and model starts calibrated: its first count is already close.
        fresh, fresh_meter = metered(server)
        assert fresh_meter.mode == "calibrated"
        fresh.send(ENGLISH[0])
        assert abs(errors(fresh)[0]) < 0.02, errors(fresh)


def test_no_request_is_refused_at_a_budget_equal_to_the_context_window() -> None:
    window = 1024
    with counting_server(None, context_limit=window, context_counts_reply=True,
                         replier=lambda body: "Reply with some words in it. " * 4) as server:
        session, meter = metered(server, context_window=window, budget=window, reply_reserve=128)
        events: list[Any] = []
        session.hooks = Hooks(on_event=events.append)
        for turn in range(30):
            session.send(ENGLISH[turn % len(ENGLISH)] + f" (turn {turn})")
        assert not [e for e in events if isinstance(e, ContextRetry)]
        assert sum(t.evictions for t in session.ledger.turns) > 0  # it did reach the window, and evicted
        assert len(server.requests) == 30
        assert max(t.reported_prompt_tokens or 0 for t in session.ledger.turns) + 128 <= window


def test_held_counts_follow_the_calibration_without_tokenizing_the_history_again() -> None:
    with counting_server(None) as server:
        session, meter = metered(server)
        tokenized: list[str] = []
        original = meter.base.count_text
        meter.base.count_text = lambda text: tokenized.append(text) or original(text)  # type: ignore[method-assign]
        session.send("one " * 30)
        first = session.conversation.history[0].tokens
        session.send("two " * 30)
        assert session.conversation.history[0].tokens != first  # rescaled by the fit ...
        assert tokenized.count("one " * 30) == 1  # ... from its kept count


# ---- usage on streams, /tokens, /raw, -u, --dry-run ------------------------------------------------


def test_a_stream_without_usage_gets_the_exact_count_and_the_u_line_says_why_once(tmp_path: Path) -> None:
    from tests.support import run_cli

    with counting_server("llama-cpp-python", stream_usage=False) as server:
        saved = tmp_path / "chat.json"
        first = run_cli("--base-url", server.url, "-m", MODEL, "-u", "--save", str(saved), "hello there")
        assert first.returncode == 0, first.stderr
        line = [x for x in first.stderr.decode().splitlines() if "usage:" in x]
        body = server.requests[-1]
        exact = server.tokenizer.prompt_tokens(body["messages"]) if server.tokenizer else 0
        assert len(line) == 1
        assert line[0].startswith(f"stateless-chat: usage: prompt {exact:,} counted exactly")
        assert "counted with its own tokenizer" in line[0]
        second = run_cli("--base-url", server.url, "-m", MODEL, "-u", "--save", str(saved), "and again")
        line = [x for x in second.stderr.decode().splitlines() if "usage:" in x]
        assert len(line) == 1 and "(" not in line[0]  # the caveat was said on the conversation's first line
        saved_turns = json.loads(saved.read_text())
        assert "not reported" not in json.dumps(saved_turns)


def test_tokens_and_raw_say_how_the_count_was_made() -> None:
    with counting_server(None) as server:
        session, meter = metered(server)
        run = run_repl(session, ["hello\r", "again\r", "/tokens\r", "/raw next\r"], width=200)
        assert "counted: calibrated from 2 replies" in run.output
        assert "error on the last 1:" in run.output
        raw_size = run.output[run.output.rindex("}") + 1:]
        assert "prompt ≈" in raw_size and "counted: calibrated from 2 replies" in raw_size


def test_dry_run_sizes_the_request_from_the_kept_calibration_and_sends_nothing() -> None:
    from tests.support import run_cli

    with counting_server(None) as server:
        session, _ = metered(server)
        for text in ENGLISH:
            session.send(text)
        server.clear()
        asked = len(server.tokenize_calls)
        done = run_cli("--base-url", server.url, "-m", MODEL, "--dry-run", "What is a monad?")
        assert done.returncode == 0, done.stderr
        said = done.stderr.decode()
        assert "counted: calibrated from 5 replies" in said
        assert server.requests == [] and len(server.tokenize_calls) == asked and server.gets == []
        body = json.loads(done.stdout)
        predicted = int(said.split("prompt ≈", 1)[1].split(" ", 1)[0].replace(",", ""))
        actual = server.tokenizer.prompt_tokens(body["messages"]) if server.tokenizer else 0
        assert abs(predicted - actual) / actual < 0.05


def test_the_approximate_server_counts_as_before() -> None:
    with FakeServer() as server:
        session, meter = metered(server)
        session.send("hello")
        reported = session.ledger.turns[-1].reported_prompt_tokens
        assert reported == approx_tokens(server.requests[-1]["messages"])
        assert meter.count_message(Message("user", "")) > 0
