"""The session against the fake server: usage reconciliation, the budget, the three policies,
summary failures, context-length refusals and incremental counting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from stateless_chat.chat.session import Session
from stateless_chat.config import Settings
from stateless_chat.core.messages import (
    ContextRetry,
    Event,
    Evicted,
    Message,
    Notice,
    OverBudget,
    Summarized,
    SummaryFailed,
    UsageMissing,
)
from stateless_chat.core.summary import SUMMARY_HEADER, SUMMARY_PROMPT, summary_cap
from stateless_chat.errors import ChatError, ConfigError, ContextLengthError, ServerError
from tests.fakeserver import (
    FakeServer,
    approx_completion_tokens,
    approx_tokens,
    default_replier,
    is_summary_request,
)
from tests.support import make_session, run_repl

SYSTEM = "You are a careful assistant."


def recording(session: Session) -> list[Event]:
    events: list[Event] = []
    session.hooks = replace(session.hooks, on_event=events.append)
    return events


def chat_requests(server: FakeServer) -> list[dict[str, Any]]:
    return [body for body in server.requests if not is_summary_request(body)]


def our_size(session: Session, body: dict[str, Any]) -> int:
    """Return the prompt tokens of ``body`` by the session's own counter, from the recorded JSON."""
    messages = [Message(m["role"], m["content"]) for m in body["messages"]]
    return session.counter.count_request(messages)


def filler(i: int) -> str:
    return f"Message {i}: please tell me a little about subject number {i}, in a few words."


def assert_well_formed(body: dict[str, Any], system: str | None = SYSTEM) -> None:
    """The request opens with the system prompt (always pinned), then no orphan assistant reply."""
    messages = body["messages"]
    rest = messages
    if system is not None:
        assert messages[0] == {"role": "system", "content": system}
        rest = messages[1:]
    rest = [m for m in rest if not (m["role"] == "system" and m["content"].startswith(SUMMARY_HEADER))]
    assert rest[0]["role"] == "user" and rest[-1]["role"] == "user"
    roles = [m["role"] for m in rest]
    assert all(a != b for a, b in zip(roles, roles[1:], strict=False)), roles


# ---- reconciliation -------------------------------------------------------------------


def test_turn_stats_keep_estimated_and_reported_tokens(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM)
    replies = [session.send(text).text for text in ("hello there", "second message", "third one")]

    bodies = server.requests
    assert len(bodies) == 3 and len(session.ledger.turns) == 3
    for body, stats, reply in zip(bodies, session.ledger.turns, replies, strict=True):
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert stats.estimated_prompt_tokens == our_size(session, body)
        assert stats.reported_prompt_tokens == approx_tokens(body["messages"])
        assert stats.reported_completion_tokens == approx_completion_tokens(reply)
        assert stats.baseline_prompt_tokens == stats.estimated_prompt_tokens  # nothing evicted
    totals = session.ledger
    assert totals.sent == sum(approx_tokens(b["messages"]) for b in bodies)
    assert totals.estimated == sum(our_size(session, b) for b in bodies)
    assert totals.completion == sum(approx_completion_tokens(r) for r in replies)
    # With no eviction the no-eviction baseline is exactly what was billed.
    assert totals.baseline == totals.sent


def test_non_streamed_replies_are_reconciled_too(server: FakeServer) -> None:
    session = make_session(server, stream=False)
    session.send("hello")
    body = server.requests[0]
    assert "stream" not in body and "stream_options" not in body
    assert session.ledger.turns[0].reported_prompt_tokens == approx_tokens(body["messages"])


def test_missing_usage_is_said_once_per_session(server: FakeServer) -> None:
    server.omit_usage = True
    session = make_session(server)
    events = recording(session)
    for text in ("one", "two", "three"):
        session.send(text)
    assert events.count(UsageMissing()) == 1
    assert all(t.reported_prompt_tokens is None and t.reported_completion_tokens is None
               for t in session.ledger.turns)
    assert session.ledger.sent == session.ledger.estimated == sum(
        our_size(session, b) for b in server.requests)


def test_baseline_is_the_cost_with_no_eviction(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM, budget=300, reply_reserve=64)
    everything: list[Message] = [Message("system", SYSTEM)]
    for i in range(12):
        text = filler(i)
        everything.append(Message("user", text))
        reply = session.send(text)
        stats = session.ledger.turns[-1]
        assert stats.baseline_prompt_tokens == session.counter.count_request(everything)
        everything.append(Message("assistant", reply.text))
    totals = session.ledger
    assert any(t.evictions for t in totals.turns)
    assert totals.baseline > totals.sent
    expected = sum(
        round(t.baseline_prompt_tokens * (t.reported_prompt_tokens or 0) / t.estimated_prompt_tokens)
        for t in totals.turns
    )
    assert totals.baseline == expected


def test_totals_include_the_summary_requests(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM, budget=500, reply_reserve=64, policy="summarize")
    for i in range(25):
        session.send(filler(i))
    summaries = [b for b in server.requests if is_summary_request(b)]
    assert len(summaries) >= 2
    totals = session.ledger
    # The real bill of resending is every request the server was sent, summaries included.
    assert totals.sent == sum(approx_tokens(b["messages"]) for b in server.requests)
    assert totals.sent == sum(t.sent for t in totals.turns)
    replies = [e.content for e in session.conversation.all_entries() if e.role == "assistant"]
    assert totals.completion == sum(approx_completion_tokens(r) for r in replies) + sum(
        approx_completion_tokens(default_replier(b)) for b in summaries)
    assert totals.baseline > totals.sent  # summarizing still saved tokens


def test_a_summary_made_for_a_failed_turn_is_billed_once_with_the_turn_that_succeeds(
    server: FakeServer,
) -> None:
    session = make_session(server, system=SYSTEM, budget=300, reply_reserve=64, policy="summarize")
    i = 0
    while not session.plan(filler(i), summarize=False).fit.evicted_count:  # the next turn has to fold
        session.send(filler(i))
        i += 1
    before, totals = session.conversation, (session.ledger.sent, session.ledger.completion)
    server.clear()
    server.delay_next(0)  # the summary request succeeds ...
    server.cut_stream_next(after_chunks=1)  # ... and the chat request's stream breaks
    with pytest.raises(ChatError):
        session.send(filler(i))
    summary, chat = server.requests
    assert is_summary_request(summary) and not is_summary_request(chat)
    assert session.conversation == before and (session.ledger.sent, session.ledger.completion) == totals

    session.send(filler(i))
    assert not is_summary_request(server.requests[-1]) and len(server.requests) == 3  # made once
    stats = session.ledger.turns[-1]
    assert stats.sent == approx_tokens(server.requests[-1]["messages"]) + approx_tokens(summary["messages"])
    assert session.ledger.sent == totals[0] + stats.sent


# ---- budget and policies -----------------------------------------------------------------


@pytest.mark.parametrize("policy", ["drop-oldest", "summarize"])
def test_every_request_fits_the_budget(server: FakeServer, policy: str) -> None:
    session = make_session(server, system=SYSTEM, budget=350, reply_reserve=64, policy=policy)
    for i in range(15):
        session.send(filler(i))
    bodies = chat_requests(server)
    assert len(bodies) == 15
    for body in bodies:
        assert our_size(session, body) + session.reserve <= 350
        assert_well_formed(body)
    for index, body in enumerate(server.requests):
        if is_summary_request(body):
            assert_summary_request_is_aligned_or_within(session, server.requests[index - 1], body, 350)
    assert session.conversation.evicted  # the budget really was tight


def assert_summary_request_is_aligned_or_within(session: Session, previous: dict[str, Any],
                                                body: dict[str, Any], budget: int) -> None:
    """A summary request either resends the last chat request's messages as they were (the server reads
    them from its cache) and asks at the end, within the context window; or, when that would not fit
    the window, is a transcript request of its own within the budget."""
    messages = body["messages"]
    size = our_size(session, body) + body["max_tokens"]
    if messages[0]["role"] == "system" and messages[0]["content"] == SUMMARY_PROMPT:
        assert size <= budget
        return
    assert messages[:len(previous["messages"])] == previous["messages"]
    assert messages[-1]["role"] == "user" and messages[-1]["content"].startswith(SUMMARY_PROMPT)
    assert size <= session.context_limit


def test_a_turn_too_long_for_a_summary_request_is_dropped_instead(server: FakeServer) -> None:
    # The context window leaves no room for a request aligned with the cache: summary requests are
    # transcripts within the budget, and a turn too long for one is dropped.
    session = make_session(server, system=SYSTEM, budget=600, reply_reserve=64, policy="summarize",
                           context_window=650)
    events = recording(session)
    facts = " ".join(f"fact {i} is {i * 7}." for i in range(60))  # about 420 tokens, and so is its echo
    for i in range(12):
        session.send(facts if i == 3 else filler(i))
    summaries = [b for b in server.requests if is_summary_request(b)]
    assert summaries
    for body in summaries:
        assert our_size(session, body) + body["max_tokens"] <= 600
        assert facts not in body["messages"][1]["content"]
    assert any(isinstance(e, Notice) and "too long to summarize" in e.text for e in events)
    assert {e.content for e in session.conversation.evicted} >= {facts, "echo: " + facts}


def test_drop_oldest_evicts_whole_turns_oldest_first(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM, budget=300, reply_reserve=64)
    events = recording(session)
    for i in range(10):
        session.send(filler(i))
    evicted = [e for e in events if isinstance(e, Evicted)]
    assert evicted
    turns = [e.turn for e in evicted]
    assert turns == list(range(1, len(turns) + 1))
    for event in evicted:
        assert len(event.ids) == 2 and event.total_after <= event.budget == 300
    # Evicted originals are kept (not sent) so the user can still look at them.
    assert [e.turn for e in session.conversation.evicted] == [t for t in turns for _ in range(2)]
    sent = {m["content"] for m in server.requests[-1]["messages"]}
    assert not sent & {e.content for e in session.conversation.evicted}


def test_summary_is_a_separate_stateless_call_and_is_carried_on(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM, budget=400, reply_reserve=64, policy="summarize")
    events = recording(session)
    sent: list[str] = []
    while not any(isinstance(e, Summarized) for e in events):
        sent.append(filler(len(sent)))
        session.send(sent[-1])
        assert len(sent) < 30
    summarized = next(e for e in events if isinstance(e, Summarized))
    index = next(i for i, b in enumerate(server.requests) if is_summary_request(b))
    summary_body = server.requests[index]

    # The summary request resends the conversation as the last chat request sent it (the server reads
    # it from its cache), then asks for the summary of the folded messages; it is not streamed.
    previous = server.requests[index - 1]
    assert_summary_request_is_aligned_or_within(session, previous, summary_body, 400)
    messages = summary_body["messages"]
    assert messages[-1]["content"].startswith(SUMMARY_PROMPT) and "stream" not in summary_body
    assert 32 <= summary_body["max_tokens"] <= 400 // 4
    folded = [e for e in session.conversation.evicted if e.id in summarized.ids]
    assert [e.id for e in folded] == sorted(summarized.ids) and len(folded) % 2 == 0
    assert all(e.eviction is not None and e.eviction.how == "folded" for e in folded)
    for position, entry in enumerate(folded, start=1):
        assert messages[position] == entry.message.to_api()  # in place, verbatim: the cached prefix
    assert f"conversation messages 1-{len(folded)} above" in messages[-1]["content"]
    assert messages[1]["content"] == sent[0]

    # The chat request that follows carries the summary right after the system prompt.
    summary_text = default_replier(summary_body)
    chat = server.requests[index + 1]
    carried = chat["messages"][1]
    assert carried["role"] == "system" and carried["content"].startswith(SUMMARY_HEADER)
    # The summary as the server wrote it, or cut to its cap (ending in "…") when it ran long.
    kept = carried["content"][len(SUMMARY_HEADER):]
    assert kept == summary_text or (kept.endswith("…") and summary_text.startswith(kept[:-1]))
    summary_text = kept
    summary_message = Message("system", SUMMARY_HEADER + summary_text)
    assert summarized.tokens_after == session.counter.count_message(summary_message)
    # ... and so does every later request until the next fold.
    while len([b for b in server.requests if is_summary_request(b)]) < 2:
        before = len(server.requests)
        sent.append(filler(len(sent)))
        session.send(sent[-1])
        if len(server.requests) == before + 1:
            assert server.requests[-1]["messages"][1]["content"] == SUMMARY_HEADER + summary_text
        assert len(sent) < 40

    # The next fold sends the earlier summary where it stands, and asks to merge it in.
    second = [b for b in server.requests if is_summary_request(b)][1]
    assert second["messages"][1]["content"] == SUMMARY_HEADER + summary_text
    assert "the earlier summary" in second["messages"][-1]["content"]


def test_a_summary_as_long_as_its_request_allows_is_kept_whole(server: FakeServer) -> None:
    def replier(body: dict[str, Any]) -> str:
        if is_summary_request(body):  # a model that writes until its max_tokens: one token a word
            return " ".join(["note"] * body["max_tokens"])
        return default_replier(body)

    server.replier = replier
    session = make_session(server, system=SYSTEM, budget=1000, reply_reserve=64, policy="summarize")
    for i in range(30):
        session.send(filler(i))
    summaries = [b for b in server.requests if is_summary_request(b)]
    assert summaries and summaries[-1]["max_tokens"] > 32
    summary = session.conversation.summary
    assert summary is not None and summary.tokens <= summary_cap(1000)
    assert summary.content == SUMMARY_HEADER + replier(summaries[-1])  # not cut short with "…"


def test_summary_failure_falls_back_to_dropping_and_the_turn_succeeds(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM, budget=300, reply_reserve=64, policy="summarize")
    events = recording(session)
    i = 0
    while not session.plan(filler(i), summarize=False).fit.evicted_count:  # the next turn has to fold
        session.send(filler(i))
        i += 1
    before = len(server.requests)
    server.fail_next(status=500)  # consumed by the summary request
    reply = session.send(filler(i))

    summary_body, chat = server.requests[before:]
    assert is_summary_request(summary_body) and not is_summary_request(chat)
    assert reply.text == "echo: " + filler(i)
    failed = [e for e in events if isinstance(e, SummaryFailed)]
    assert len(failed) == 1 and "500" in failed[0].reason
    after = events[events.index(failed[0]) + 1:]
    assert after and isinstance(after[0], Evicted)
    assert session.conversation.summary is None
    assert all(not m["content"].startswith(SUMMARY_HEADER) for m in chat["messages"])
    assert our_size(session, chat) + session.reserve <= 300
    assert session.conversation.messages()[-1] == Message("assistant", reply.text)


def test_summarize_now_folds_no_more_than_one_summary_request_can_carry(server: FakeServer) -> None:
    # A window too small for a request aligned with the cache: the transcript request within the budget.
    session = make_session(server, system=SYSTEM, budget=600, reply_reserve=64, policy="none",
                           context_window=700)
    for i in range(30):
        session.send(filler(i))
    run = run_repl(session, ["/summarize\r"])

    body = server.requests[-1]
    assert is_summary_request(body) and len(server.requests) == 31
    assert our_size(session, body) + body["max_tokens"] <= 600
    summary = session.conversation.summary
    assert summary is not None and summary.tokens <= summary_cap(600)
    folded = sorted({e.turn for e in session.conversation.evicted})
    assert folded == list(range(1, len(folded) + 1)) and 1 < len(folded) < 29  # the oldest turns, not all
    assert "· summarized #1-#" in run.output
    assert [e.turn for e in session.conversation.history][::2] == list(range(folded[-1] + 1, 31))


def test_summarize_now_refuses_a_turn_too_long_for_one_summary_request(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM, budget=600, reply_reserve=64, policy="none",
                           context_window=700)
    for text in (" ".join(f"fact {i} is {i * 7}." for i in range(60)), "two", "three"):
        session.send(text)
    before = session.conversation
    run = run_repl(session, ["/summarize\r"])
    assert "error: the oldest turn is too long to summarize within the budget" in run.output
    assert len(server.requests) == 3 and session.conversation is before


def test_policy_none_warns_and_sends_everything(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM, budget=200, reply_reserve=64, policy="none")
    events = recording(session)
    for i in range(6):
        session.send(filler(i))
    over = [e for e in events if isinstance(e, OverBudget)]
    assert over and all(e.budget == 200 and e.total > 200 for e in over)
    assert session.conversation.evicted == ()
    last = server.requests[-1]["messages"]
    assert len(last) == 1 + 2 * 5 + 1
    assert over[-1].total == our_size(session, server.requests[-1]) + session.reserve


def test_pinned_turn_and_system_prompt_are_never_evicted(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM, budget=300, reply_reserve=64)
    session.send("Constraint: always answer in French.")
    session.conversation = session.conversation.set_pinned(1, True)
    for i in range(12):
        session.send(filler(i))
    for body in server.requests:
        assert body["messages"][0] == {"role": "system", "content": SYSTEM}
        assert body["messages"][1] == {"role": "user", "content": "Constraint: always answer in French."}
    assert session.conversation.evicted


def test_the_summary_cannot_be_pinned_and_says_why(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM, policy="summarize")
    for text in ("one", "two", "three"):
        session.send(text)
    session.summarize_now()
    summary = session.conversation.summary
    assert summary is not None
    before = session.conversation
    run = run_repl(session, [f"/pin {summary.id}\r", f"/unpin {summary.id}\r"])
    assert run.output.count("error: the summary is always sent; it cannot be pinned") == 2
    assert "no longer sent" not in run.output and session.conversation is before


def test_pin_system_false_is_refused() -> None:
    with pytest.raises(ConfigError, match="always pinned"):
        Settings(pin_system=False)


# ---- context_length_exceeded ---------------------------------------------------------------


def assert_consistent(session: Session, server: FakeServer) -> None:
    """The held conversation is exactly the last request plus its reply, with unique ids."""
    last = server.requests[-1]["messages"]
    held = [m.to_api() for m in session.conversation.messages()]
    assert held[:-1] == last and held[-1]["role"] == "assistant"
    ids = [e.id for e in session.conversation.all_entries()]
    assert len(ids) == len(set(ids))


def test_sticky_context_limit_evicts_by_the_servers_numbers_and_retries_once(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM, budget=4000, reply_reserve=64)
    events = recording(session)
    server.context_limit = 250
    for i in range(10):
        session.send(filler(i))
        assert_consistent(session, server)

    retries = [e for e in events if isinstance(e, ContextRetry)]
    assert len(retries) == 1
    retry = retries[0]
    refused = next(b for b in server.requests if approx_tokens(b["messages"]) > 250)
    at = server.requests.index(refused)
    assert retry.reported_limit == 250 and retry.reported_tokens == approx_tokens(refused["messages"])
    # Our count of the refused request, scaled by the server's ratio, sets the new budget.
    ours = our_size(session, refused)
    ratio = retry.reported_tokens / ours
    assert retry.new_budget == min(int((250 - 64) / ratio * 0.95) + 64, 3999)
    assert session.learned_budget == retry.new_budget == session.budget
    retried = server.requests[at + 1]
    assert retried["messages"][-1] == refused["messages"][-1]  # the same new message, once
    assert approx_tokens(retried["messages"]) <= 250
    assert len(retried["messages"]) < len(refused["messages"])
    # Every later request fits the learned budget, so the server never refuses again.
    for body in server.requests[at + 1:]:
        assert approx_tokens(body["messages"]) <= 250
        assert our_size(session, body) + 64 <= retry.new_budget
        assert_well_formed(body)
    assert len(server.requests) == 11
    eviction = events[events.index(retry) + 1]
    assert isinstance(eviction, Evicted) and eviction.budget == retry.new_budget


def test_one_off_context_refusal_uses_the_reported_numbers(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM, budget=4000, reply_reserve=64)
    events = recording(session)
    for i in range(6):
        session.send(filler(i))
    before = session.conversation
    ours = session.plan(filler(6), summarize=False).fit.total - 64
    server.context_exceeded_next(limit=300, requested=2 * ours)  # "your tokenizer undercounts by half"
    reply = session.send(filler(6))

    assert reply.text == "echo: " + filler(6)
    retry = next(e for e in events if isinstance(e, ContextRetry))
    assert retry == ContextRetry(300, 2 * ours, int((300 - 64) / 2 * 0.95) + 64)
    refused, retried = server.requests[-2:]
    assert refused["messages"] == [m.to_api() for m in before.messages()] + [
        {"role": "user", "content": filler(6)}]
    assert our_size(session, retried) + 64 <= retry.new_budget
    assert_consistent(session, server)
    evicted_turns = {e.turn for e in session.conversation.evicted}
    assert evicted_turns and evicted_turns == set(range(1, min(evicted_turns) + len(evicted_turns)))


def test_a_second_refusal_is_not_retried_and_changes_nothing(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM, budget=4000, reply_reserve=64)
    for i in range(4):
        session.send(filler(i))
    before = session.conversation
    server.context_exceeded_next(limit=300, requested=400)
    server.context_exceeded_next(limit=300, requested=350)
    with pytest.raises(ContextLengthError):
        session.send("again")
    assert len(server.requests) == 4 + 2
    assert session.conversation == before
    assert session.learned_budget is None and session.budget == 4000  # nothing learned from a failed turn


def test_a_retry_that_fails_otherwise_learns_no_budget(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM, budget=4000, reply_reserve=64)
    for i in range(4):
        session.send(filler(i))
    before = session.conversation
    server.context_exceeded_next(limit=300, requested=400)
    server.cut_stream_next(after_chunks=1)  # the retry's stream breaks
    with pytest.raises(ChatError):
        session.send("again")
    assert len(server.requests) == 4 + 2
    assert session.conversation == before and session.learned_budget is None
    server.context_exceeded_next(limit=300, requested=400)
    reply = session.send("again")  # refused again, and this time the smaller request is answered
    assert reply.text == "echo: again" and session.learned_budget is not None


def test_the_summary_request_of_a_resend_obeys_the_smaller_budget(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM, budget=4000, reply_reserve=64, policy="summarize")
    events = recording(session)
    for i in range(30):
        session.send(filler(i))
    assert not any(is_summary_request(b) for b in server.requests)
    ours = session.plan(filler(30), summarize=False).fit.total - 64
    server.context_exceeded_next(limit=ours - 300, requested=ours)  # our count is right; the window is not
    session.send(filler(30))

    retry = next(e for e in events if isinstance(e, ContextRetry))
    summaries = [b for b in server.requests if is_summary_request(b)]
    assert len(summaries) == 1 and any(isinstance(e, Summarized) for e in events)
    # Past the refusal, no request may be larger than the budget it implied, summary requests too.
    assert our_size(session, summaries[0]) + summaries[0]["max_tokens"] <= retry.new_budget
    assert our_size(session, server.requests[-1]) + 64 <= retry.new_budget


def test_policy_none_does_not_evict_on_refusal(server: FakeServer) -> None:
    session = make_session(server, system=SYSTEM, budget=4000, reply_reserve=64, policy="none")
    session.send("first")
    before = session.conversation
    server.context_exceeded_next(limit=100, requested=150)
    with pytest.raises(ContextLengthError):
        session.send("second")
    assert len(server.requests) == 2 and session.conversation == before


# ---- incremental counting -----------------------------------------------------------------


def counting(session: Session) -> list[int]:
    """Wrap the session's counter so every ``count_message`` call is tallied; return the tally."""
    calls = [0]
    original: Callable[[Message], int] = session.counter.count_message

    def count_message(message: Message) -> int:
        calls[0] += 1
        return original(message)

    session.counter.count_message = count_message  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("policy,budget", [("none", 200_000), ("drop-oldest", 400)])
def test_a_turns_counting_work_does_not_grow_with_history(
    server: FakeServer, policy: str, budget: int
) -> None:
    session = make_session(server, model="gpt-4o", system=SYSTEM, budget=budget, reply_reserve=64,
                           policy=policy)
    calls = counting(session)
    per_turn = []
    for i in range(40):
        start = calls[0]
        session.send(filler(i))
        per_turn.append(calls[0] - start)
    assert len(server.requests[-1]["messages"]) > (40 if policy == "none" else 5)
    assert per_turn == [2] * 40  # the new message and its reply, each counted once


def test_a_server_that_rejects_stream_options_gets_the_request_again_without(server: FakeServer) -> None:
    session = make_session(server)
    events = recording(session)
    message = "Unrecognized request argument supplied: stream_options"
    server.fail_next(status=400, body={"error": {"message": message, "type": "invalid_request_error"}})
    reply = session.send("hello")
    assert reply.text == "echo: hello"
    first, second = server.requests
    assert first["stream_options"] == {"include_usage": True} and "stream_options" not in second
    assert first["messages"] == second["messages"] and second["stream"] is True
    assert any(isinstance(e, Notice) and "stream_options" in e.text for e in events)
    session.send("again")
    assert "stream_options" not in server.requests[-1]
    assert "stream_options" not in session.preview_body("next")  # /raw shows what is really sent


def test_other_bad_requests_are_not_resent(server: FakeServer) -> None:
    session = make_session(server)
    server.fail_next(status=400, body={"error": {"message": "model not supported"}})
    with pytest.raises(ServerError):
        session.send("hello")
    assert len(server.requests) == 1 and "stream_options" in session.preview_body("next")
