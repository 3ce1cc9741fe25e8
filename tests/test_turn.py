"""The turn as a function over values, tested with the in-memory scripted backend (no socket).

``run_turn(state, text, setup=..., hooks=...)`` takes values and returns values: these tests hold
the state they pass in and compare it afterwards, and read what was sent from the backend's
record. The real-server tests of the same seam are in test_session.py and test_requests_and_recovery.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from stateless_chat.chat.session import Session
from stateless_chat.chat.turn import Hooks, TurnSetup, TurnState, run_turn
from stateless_chat.config import Settings
from stateless_chat.core.history import Conversation
from stateless_chat.core.ledger import Ledger
from stateless_chat.core.messages import (
    Event,
    Message,
    Notice,
    Summarized,
    ToolAnswered,
    ToolCall,
    ToolCalled,
)
from stateless_chat.core.sizing import Sizer
from stateless_chat.core.tokens import TokenCounter
from stateless_chat.errors import ConnectError, UsageError
from stateless_chat.tools.specs import ToolResult, ToolSpec
from stateless_chat.wire.request import ChatRequest
from stateless_chat.wire.scripted import Scripted, ScriptedBackend, requests_of

SETTINGS = Settings(base_url="http://127.0.0.1:9/v1", system="Be brief.", budget=2000, reply_reserve=100)


def fresh_state(settings: Settings = SETTINGS) -> TurnState:
    sizer = Sizer(TokenCounter(settings.model, settings.encoding, settings.default_encoding))
    return TurnState(Conversation.start(settings.system, sizer), Ledger(), sizer)


def texts(request: ChatRequest) -> list[str | None]:
    return [m.content for m in request.messages]


def test_a_turn_returns_new_values_and_leaves_the_state_it_was_given() -> None:
    backend = ScriptedBackend(lambda request: f"you said {len(request.messages)} things")
    before = fresh_state()
    outcome = run_turn(before, "hello", setup=TurnSetup(SETTINGS, backend))
    assert before.conversation.history == () and before.ledger.turns == ()  # a value: untouched
    after = outcome.state
    assert [(e.role, e.content) for e in after.conversation.history] == [("user", "hello"),
                                                                          ("assistant", "you said 2 things")]
    assert outcome.reply.text == "you said 2 things" and after.ledger.turns[0].turn == 1
    record = outcome.record
    assert record.requests == (backend.bodies[0],) and record.conversation == after.conversation
    assert backend.bodies[0]["messages"] == [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "hello"}]
    assert backend.bodies[0]["max_tokens"] == 100 and backend.bodies[0]["stream"] is True


def test_the_next_turn_resends_everything_from_the_state_it_is_given() -> None:
    backend = ScriptedBackend(lambda request: "ok")
    setup = TurnSetup(SETTINGS, backend)
    first = run_turn(fresh_state(), "one", setup=setup).state
    second = run_turn(first, "two", setup=setup).state
    assert [m["content"] for m in backend.bodies[1]["messages"]] == ["Be brief.", "one", "ok", "two"]
    # The same state sent again is the same request: nothing was kept anywhere else.
    run_turn(first, "two", setup=setup)
    assert backend.bodies[2] == backend.bodies[1]
    assert len(second.conversation.history) == 4


def test_a_failed_turn_raises_and_the_session_keeps_what_it_had() -> None:
    backend = ScriptedBackend.replying("fine", ConnectError("127.0.0.1:9 refused the connection"))
    session = Session(SETTINGS, backend)
    session.send("first")
    before = session.state
    with pytest.raises(ConnectError):
        session.send("second")
    assert session.state is before
    assert session.unanswered is not None and session.unanswered.text == "second"
    with pytest.raises(UsageError):
        run_turn(before, "   ", setup=TurnSetup(SETTINGS, backend))


def test_events_go_to_the_hooks_of_the_call_and_into_the_record() -> None:
    backend = ScriptedBackend(lambda request: Scripted("a long answer", finish_reason="length"))
    seen: list[Event] = []
    deltas: list[str] = []
    outcome = run_turn(fresh_state(), "hi", setup=TurnSetup(SETTINGS, backend),
                       hooks=Hooks(on_event=seen.append, on_delta=deltas.append))
    assert "".join(deltas) == "a long answer"
    assert seen and tuple(seen) == outcome.record.events
    assert outcome.state.conversation.history[-1].cut


class Adder:
    """A toolbox of one tool, ``add``, run in this process."""

    spec = ToolSpec("calc", "add", "add", "Add two numbers.", {"type": "object"})

    def __init__(self) -> None:
        self.calls: list[str] = []

    def api_tools(self) -> list[dict[str, Any]]:
        return [{"type": "function", "function": {"name": "add", "description": "Add two numbers.",
                                                  "parameters": {"type": "object"}}}]

    def lookup(self, offered: str) -> ToolSpec | None:
        return self.spec if offered == "add" else None

    def call(self, offered: str, arguments: str, *, timeout: float = 60.0) -> ToolResult:
        self.calls.append(arguments)
        return ToolResult("5")


def test_a_tool_step_is_one_more_request_with_the_calls_and_results_pending() -> None:
    call = ToolCall("c1", "add", '{"a": 2, "b": 3}')

    def answer(request: ChatRequest) -> Scripted:
        return Scripted("It is 5.") if request.messages[-1].role == "tool" else Scripted("", (call,))

    backend = ScriptedBackend(answer)
    tools = Adder()
    asked: list[str] = []
    seen: list[Event] = []

    def approve(tool_call: ToolCall, spec: ToolSpec) -> bool:
        asked.append(spec.display)
        return True

    outcome = run_turn(fresh_state(), "add 2 and 3", setup=TurnSetup(SETTINGS, backend, tools=tools),
                       hooks=Hooks(on_event=seen.append, approve=approve))
    assert tools.calls == ['{"a": 2, "b": 3}'] and asked == ["calc.add"]
    assert len(outcome.record.requests) == 2 and outcome.record.requests[0]["tools"] == tools.api_tools()
    second = backend.bodies[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "tool"]
    assert second[-1] == {"role": "tool", "tool_call_id": "c1", "content": "5"}
    assert [type(e) for e in seen if isinstance(e, (ToolCalled, ToolAnswered))] == [ToolCalled, ToolAnswered]
    assert outcome.state.ledger.turns[0].steps == 2
    assert [e.role for e in outcome.state.conversation.history] == ["user", "assistant", "tool", "assistant"]


def test_a_refused_parameter_is_learned_by_the_endpoint_and_every_request_follows_it() -> None:
    """One builder and a dialect per endpoint: after the server refuses ``max_tokens``, the turn, the
    summary request and the preview all send ``max_completion_tokens`` (issue 19's bug, in memory)."""
    def answer(request: ChatRequest) -> str:
        asks_summary = any("SUMMARIZE-CONVERSATION" in (text or "") for text in texts(request))
        return "Summary: earlier turns." if asks_summary else "an answer of a few words"

    backend = ScriptedBackend(answer, refuses=frozenset({"max_tokens"}))
    settings = Settings(base_url="http://127.0.0.1:9/v1", budget=300, reply_reserve=40, policy="summarize")
    seen: list[Event] = []
    session = Session(settings, backend, hooks=Hooks(on_event=seen.append))
    for i in range(12):
        session.send(f"Message {i}: tell me about subject {i} in a few words, please.")
    assert any(isinstance(e, Summarized) for e in seen), "the policy never folded"
    sent = requests_of(backend)
    summaries = [b for b in sent if any("SUMMARIZE" in (m.get("content") or "") for m in b["messages"])]
    assert summaries and all(b["max_completion_tokens"] > 0 for b in summaries)
    assert all("max_tokens" not in b for b in sent)
    assert "max_completion_tokens" in session.preview_body("next")
    assert not any(isinstance(e, Notice) and "dropped" in e.text for e in seen)


def test_the_scripted_backend_reports_usage_and_records_refusals() -> None:
    backend = ScriptedBackend(lambda request: "ok", refuses=frozenset({"stream_options"}))
    request = ChatRequest.of("m", [Message("user", "hello there")], 10, stream=True)
    reply = backend.send(request).wait()
    assert reply.text == "ok" and reply.usage is not None and reply.usage.prompt_tokens is not None
    first, second = backend.bodies
    assert "stream_options" in first and "stream_options" not in second
    assert requests_of(backend) == [second]
