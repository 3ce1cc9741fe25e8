"""The server's prefix cache: cached tokens in every dialect, the predicted cache and what breaks it,
eviction with hysteresis, and the bill."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stateless_chat.chat.session import Session
from stateless_chat.core.billing import Price, bill, price_for
from stateless_chat.core.context import Candidate, DropOldest
from stateless_chat.core.messages import CacheBreak, Entry, Event, Message, Usage
from stateless_chat.core.summary import Summarize
from stateless_chat.wire.backend import parse_usage
from tests.fakeserver import FakeServer, approx_tokens
from tests.support import make_session, piped_repl, run_cli, run_repl, text_of

# ---- cached tokens, every dialect ----------------------------------------------------------


@pytest.mark.parametrize(("usage", "timings", "expected"), [
    ({"prompt_tokens": 2006, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1920}},
     None, Usage(2006, 300, 1920)),
    ({"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 64,
      "prompt_cache_miss_tokens": 36}, None, Usage(100, 5, 64)),
    ({"prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36, "completion_tokens": 5}, None,
     Usage(100, 5, 64)),
    # Anthropic's own shape: the cache is outside input_tokens, so the prompt is the sum.
    ({"input_tokens": 21, "output_tokens": 9, "cache_read_input_tokens": 188086,
      "cache_creation_input_tokens": 20}, None, Usage(188127, 9, 188086)),
    # A gateway that put them next to an OpenAI prompt_tokens that already includes them.
    ({"prompt_tokens": 2000, "completion_tokens": 9, "cache_read_input_tokens": 1500}, None,
     Usage(2000, 9, 1500)),
    (None, {"cache_n": 1968, "prompt_n": 139, "predicted_n": 12}, Usage(2107, 12, 1968)),
    ({"prompt_tokens": 2107, "completion_tokens": 12}, {"cache_n": 1968, "prompt_n": 139},
     Usage(2107, 12, 1968)),
    ({"prompt_tokens": 10, "completion_tokens": 1}, None, Usage(10, 1, None)),
])
def test_cached_tokens_are_read_in_every_dialect_and_never_billed_twice(
    usage: Any, timings: Any, expected: Usage
) -> None:
    parsed, note = parse_usage(usage, timings)
    assert parsed == expected and note == ""
    assert parsed.uncached_tokens == expected.prompt_tokens - (expected.cached_tokens or 0)  # type: ignore


def test_hostile_cached_counts_are_ignored_with_a_note() -> None:
    parsed, note = parse_usage({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": "lots"}})
    assert parsed == Usage(10, None, None) and "cached_tokens" in note
    parsed, _ = parse_usage({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}})
    assert parsed == Usage(10, None, 10)  # never more cached than the prompt


CACHE_MIN = 128  # the fake server's OpenAI rules, scaled down to the small budgets of these tests


def cached_server(server: FakeServer, dialect: str) -> FakeServer:
    server.cache_dialect = dialect
    server.cache_min, server.cache_step = (CACHE_MIN, 16) if dialect == "openai" else (0, 1)
    return server


@pytest.mark.parametrize("dialect", ["openai", "deepseek", "anthropic", "llama"])
def test_each_turn_keeps_what_the_server_read_from_its_cache(server: FakeServer, dialect: str) -> None:
    cached_server(server, dialect)
    session = make_session(server, system="You are a careful assistant. " * 8)
    for i in range(4):
        session.send(f"question {i}: " + "tell me about the river " * 6)
    turns = session.ledger.turns
    assert turns[0].reported_cached_tokens == 0  # a cold first request
    for turn, previous in zip(turns[1:], server.requests, strict=False):
        whole = approx_tokens(previous["messages"]) - 3  # the last request, all of it, without the priming
        cached = turn.reported_cached_tokens
        if dialect == "openai":  # nothing under the minimum, then in steps
            whole = 0 if whole < CACHE_MIN else whole - (whole - CACHE_MIN) % 16
        assert cached == whole
        assert turn.predicted_cached_tokens > 0 and turn.cache_break is None
    assert session.ledger.cached == sum(t.reported_cached_tokens or 0 for t in turns)
    assert session.ledger.sent == sum(t.reported_prompt_tokens or 0 for t in turns)  # cached counted once


def test_usage_line_stats_tokens_and_toolbar_show_the_cache(server: FakeServer) -> None:
    cached_server(server, "openai")
    session = make_session(server, model="gpt-4o", system="You are a careful assistant. " * 8)
    run = run_repl(session, [f"question {i}: " + "tell me about the river " * 6 + "\r" for i in range(3)]
                   + ["/stats\r", "/tokens\r"], width=160)
    last = session.ledger.turns[-1]
    assert last.reported_cached_tokens
    assert f"{last.reported_cached_tokens:,}" in run.output  # /stats, per turn
    assert "of them cached" in run.output and "cache: ~" in run.output  # /tokens
    assert "cost $" in run.output and "resending everything with the cache" in run.output
    with piped_repl(session) as (repl, _):
        assert f"cache ~{session.cache_prediction().share:.0%}" in text_of(repl.toolbar())
    assert session.cache_prediction().share > 0.5


def test_one_shot_usage_line_says_how_much_was_cached(server: FakeServer) -> None:
    cached_server(server, "deepseek")
    long = "context " * 80
    first = run_cli("--base-url", server.url, "-m", "deepseek-chat", "-s", long, "-u", "hi")
    assert first.returncode == 0
    second = run_cli("--base-url", server.url, "-m", "deepseek-chat", "-s", long, "-u", "hi")
    line = second.stderr.decode().strip()
    cached = server.cached_prefix(server.requests[-1]["messages"])
    assert cached > 0 and f"reported ({cached:,} cached)" in line
    assert "; cost $" in line  # deepseek-chat has a built-in price


# ---- the predicted cache and its breaks -----------------------------------------------------


def recorded(session: Session) -> list[Event]:
    events: list[Event] = []
    session.hooks = replace(session.hooks, on_event=events.append)
    return events


def breaks(events: list[Event]) -> list[str]:
    return [e.cause for e in events if isinstance(e, CacheBreak)]


def chatted(server: FakeServer, turns: int = 3, **settings: Any) -> tuple[Session, list[Event]]:
    session = make_session(server, **settings)
    events = recorded(session)
    for i in range(turns):
        session.send(f"message {i} " * 5)
    assert breaks(events) == []  # appending never breaks the prefix
    return session, events


def test_appending_keeps_the_whole_previous_request_as_the_prefix(server: FakeServer) -> None:
    session, events = chatted(server, 5)
    prediction = session.cache_prediction()
    assert prediction.cause is None and prediction.shared == prediction.previous > 0


def test_break_by_eviction_names_the_turn(server: FakeServer) -> None:
    session, events = chatted(server, 2, budget=220, reply_reserve=40, evict_to=1.0)
    for i in range(6):
        session.send(f"longer message {i} " * 6)
    causes = breaks(events)
    assert causes and all("was evicted" in cause for cause in causes)
    assert "turn 1 was evicted" in causes[0]
    assert [t.cache_break for t in session.ledger.turns if t.cache_break] == causes


def test_break_by_a_rewritten_summary(server: FakeServer) -> None:
    session, events = chatted(server, 4, budget=300, reply_reserve=40, policy="summarize", evict_to=1.0)
    for i in range(12):
        session.send(f"longer message {i} " * 6)
    causes = breaks(events)
    assert any("folded into the summary" in c for c in causes)  # the first summary
    assert any(c == "the summary was rewritten" for c in causes)  # every later one


def test_break_by_a_changed_system_prompt(server: FakeServer) -> None:
    session, events = chatted(server, system="be brief")
    run_repl(session, ["/system be very brief\r", "next\r"])
    assert session.ledger.turns[-1].cache_break == "the system prompt changed"


def test_pin_and_unpin_do_not_move_anything_so_the_cache_holds(server: FakeServer) -> None:
    session, events = chatted(server)
    run_repl(session, ["/pin 1\r", "/unpin 1\r", "/pin 3\r", "next\r"])
    assert session.ledger.turns[-1].cache_break is None


@pytest.mark.parametrize(("command", "cause"), [("/drop 3", "#3 was removed"), ("/clear", "#1 was removed"),
                                                ("/trim 1", "#1 was removed")])
def test_break_by_a_command_that_removes_history(server: FakeServer, command: str, cause: str) -> None:
    session, events = chatted(server)
    run = run_repl(session, [command + "\r", "next\r"])
    assert cause in (session.ledger.turns[-1].cache_break or "")
    assert f"cache break: {cause}" in run.output


def test_break_by_a_switched_model(server: FakeServer) -> None:
    session, events = chatted(server)
    run_repl(session, ["/model gpt-4o\r", "next\r"])
    assert session.ledger.turns[-1].cache_break == "model switched from gpt-4o-mini to gpt-4o"


def test_break_by_failover_to_another_endpoint(server: FakeServer) -> None:
    with FakeServer() as other:
        session = make_session(server, base_urls=(server.url, other.url))
        events = recorded(session)
        session.send("one")
        session.send("two")
        server.fail_next(5, status=503)  # the first endpoint gives up: the request goes to the other
        session.send("three")
    [cause] = breaks(events)
    assert cause == f"failed over to 127.0.0.1:{other.port}"
    assert session.ledger.turns[-1].predicted_cached_tokens == 0


def test_break_by_idling_past_the_cache_lifetime(server: FakeServer) -> None:
    now = [1000.0]
    session = make_session(server, cache_lifetime=300.0)
    session.clock = lambda: now[0]
    events = recorded(session)
    session.send("one")
    now[0] += 200
    session.send("two")
    assert breaks(events) == []
    now[0] += 400
    assert session.cache_prediction().share == 0.0
    session.send("three")
    assert breaks(events) == ["idle 7 min, past the cache lifetime of 5 min"]


def test_stats_compares_predicted_with_reported(server: FakeServer) -> None:
    cached_server(server, "openai")  # the server caches in steps: what it reports differs from our guess
    session = make_session(server, system="You are a careful assistant. " * 8)
    run = run_repl(session, [f"question {i}: " + "tell me about the river " * 6 + "\r" for i in range(3)]
                   + ["/stats\r"], width=160)
    last = session.ledger.turns[-1]
    assert last.reported_cached_tokens != last.predicted_cached_tokens
    assert f"{last.reported_cached_tokens:,} (predicted {last.predicted_cached_tokens:,})" in run.output


# ---- eviction with hysteresis -----------------------------------------------------------------


def counter(message: Message) -> int:
    return 3 + len(message.text) // 4


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[tuple[int, int]], set[int], int, int, float]:
    turns = draw(st.lists(st.tuples(st.integers(1, 120), st.integers(1, 120)), min_size=2, max_size=40))
    pins = draw(st.sets(st.integers(0, len(turns) - 1), max_size=2))
    budget = draw(st.integers(400, 1500))
    reserve = draw(st.integers(0, 100))
    evict_to = draw(st.sampled_from([0.3, 0.5, 0.75, 1.0]))
    return turns, pins, budget, reserve, evict_to


class Writer:
    def capacity(self, candidate: Candidate) -> int | None:
        return None

    def write(self, candidate: Candidate, folded: Any) -> str:
        return "s" * 40


@settings(max_examples=200, deadline=None)
@given(conversations(), st.sampled_from(["drop-oldest", "summarize"]))
def test_under_hysteresis_every_request_fits_and_between_evictions_each_starts_with_the_last(
    case: tuple[list[tuple[int, int]], set[int], int, int, float], policy_name: str
) -> None:
    turns, pins, budget, reserve, evict_to = case
    policy = DropOldest() if policy_name == "drop-oldest" else Summarize(Writer(), counter)
    history: tuple[Entry, ...] = ()
    summary: Entry | None = None
    previous: tuple[Entry, ...] | None = None
    next_id = 1
    for number, (ask, answer) in enumerate(turns, start=1):
        question = Entry(next_id, Message("user", "q" * (ask * 4)), ask, number, pinned=number - 1 in pins)
        candidate = Candidate(None, summary, history, (question,), budget=budget, reserve=reserve,
                              next_id=next_id + 2, low_water=int(evict_to * budget))
        if question.tokens + 3 + reserve > budget:
            return
        try:
            fit = policy.fit(candidate)
        except Exception as error:  # only pins and the new message can make it impossible
            assert "budget" in str(error)
            return
        sent = fit.kept
        assert fit.total <= budget
        if not fit.dropped and not fit.folded and previous is not None:
            assert sent[:len(previous)] == previous  # no eviction: the whole last request is the prefix
        if fit.dropped and policy_name == "drop-oldest":  # once it evicts, it goes down to the mark
            assert fit.total <= candidate.target or not fit.request.evictable_turns()
        reply = Entry(next_id + 1, Message("assistant", "a" * (answer * 4)), answer, number)
        history = fit.request.history + (question, reply)
        summary = fit.request.summary
        previous = (*sent, reply)  # what the server holds: the request and the reply it wrote
        next_id += 3


def test_the_low_water_mark_leaves_room_for_several_turns(server: FakeServer) -> None:
    session = make_session(server, budget=400, reply_reserve=40)  # evict_to 0.5 by default
    events = recorded(session)
    for i in range(20):
        session.send(f"message number {i} " * 4)
    broke = [i for i, t in enumerate(session.ledger.turns) if t.cache_break]
    assert broke and all(b - a >= 3 for a, b in zip(broke, broke[1:], strict=False))
    fitting = make_session(server, budget=400, reply_reserve=40, evict_to=1.0)
    for i in range(20):
        fitting.send(f"message number {i} " * 4)
    assert fitting.ledger.breaks > 2 * session.ledger.breaks  # evicting to fit breaks it nearly every turn
    assert len(breaks(events)) == session.ledger.breaks


def test_evict_to_is_a_setting_a_flag_and_a_command(server: FakeServer) -> None:
    session = make_session(server, budget=1000, reply_reserve=100)
    run = run_repl(session, ["/evict-to\r", "/evict-to 0.25\r", "/evict-to 2\r", "/evict-to x\r"])
    assert "down to 0.5 of it (500 tokens)" in run.output and "down to 0.25 of it (250 tokens)" in run.output
    assert run.output.count("error:") == 2 and session.settings.evict_to == 0.25
    done = run_cli("--base-url", server.url, "--evict-to", "0", "hi")
    assert done.returncode == 2 and "--evict-to must be" in done.stderr.decode()


# ---- the bill ------------------------------------------------------------------------------


def test_prices_come_from_the_table_or_the_config_and_are_never_made_up() -> None:
    assert price_for("gpt-4o-mini-2024-07-18") == Price(0.15, 0.075, 0.60)
    assert price_for("openai/gpt-4o") == Price(2.50, 1.25, 10.00)
    assert price_for("llama3.1:8b") is None
    assert price_for("llama3.1:8b", {"llama3.1": Price(0.1, 0.01, 0.2)}) == Price(0.1, 0.01, 0.2)
    assert price_for("gpt-4o", {"gpt-4o": Price(1, 1, 1)}) == Price(1, 1, 1)  # the config overrides


def test_the_bill_prices_cached_tokens_cheaper_and_compares_with_the_naive_resend() -> None:
    from stateless_chat.core.billing import TurnTokens

    price = Price(1.0, 0.1, 4.0)
    turns = [TurnTokens(1000, 0, 10, 1000), TurnTokens(1100, 1000, 10, 1100)]
    result = bill(turns, price)
    assert result.cost == pytest.approx((1000 + 100 + 100 + 80) / 1e6)
    assert result.naive_cost == pytest.approx((1000 + 100 + 100 + 80) / 1e6)
    assert bill(turns, None).cost is None


def test_no_price_means_no_cost_shown(server: FakeServer) -> None:
    session = make_session(server, model="my-local-model")
    run = run_repl(session, ["hello\r", "/stats\r", "/tokens\r"], width=160)
    assert "$" not in run.output


def test_a_configured_price_is_used(server: FakeServer, tmp_path: Any) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[prices."my-local-model"]\ninput = 1000000\ncached_input = 0\noutput = 0\n')
    done = run_cli("--config", str(config), "--base-url", server.url, "-m", "my-local-model", "-u", "hi")
    prompt = server.requests[-1]
    assert done.returncode == 0
    assert f"cost ${approx_tokens(prompt['messages']):,.2f}" in done.stderr.decode()
