"""End to end behind a real gateway: the LiteLLM proxy on 127.0.0.1 in front of two replicas.

The proxy is real (``tests/gateway.py`` starts it as a child process, in its own process group,
and ends it however the test ends) and so is stateless-chat's side: a ``Session`` with the real
``openai`` client, streaming, exactly as the chat sends. The config is the documented block
of docs/gateway.md, with its two ``api_base`` URLs pointed at the replicas here.

The replicas are two ``tests/fakeserver.py`` servers, not two llama.cpp servers with the bundled
model, because the assertions are about what each replica received: the fake server records
every request body and header, and llama.cpp's server shows neither; and a fake answers from the
request alone ("Your name is Byte Dai." only when the whole history was resent), which the 135M
model does not reliably do (tried: it forgets the name whichever replica answers). The time
goes to starting the proxy, 10-25 s on 2 cores (importing its server is ~11 s of CPU); the
chat itself takes under a second. ``bench/gateway.py`` runs the same proxy in front of real
llama.cpp replicas, where what matters is the cache.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.chat.session import Session
from stateless_chat.chat.turn import Hooks
from stateless_chat.config import Settings
from stateless_chat.core.messages import Event, FailedOver, Retrying
from stateless_chat.wire.openai_backend import open_backend
from tests.fakeserver import FakeServer
from tests.gateway import REASON, Gateway, litellm_available

pytestmark = [
    pytest.mark.gateway,
    pytest.mark.skipif(not litellm_available(), reason=REASON),
    pytest.mark.timeout(300),
]

ROOT = Path(__file__).resolve().parents[1]
DOC_REPLICAS = ("http://127.0.0.1:8081/v1", "http://127.0.0.1:8082/v1")
STICKY_LINE = '# optional_pre_call_checks: ["deployment_affinity"]'
MAX_TURNS_BEFORE_KILL = 20  # random routing: both replicas have answered by then (P(not) = 2**-19)


def documented_config() -> str:
    """Return the YAML block of the gateway page, docs/gateway.md (there is exactly one)."""
    text = (ROOT / "docs" / "gateway.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 1, "the page should hold one YAML block, the gateway's config"
    config: str = blocks[0]
    for url in DOC_REPLICAS:
        assert config.count(url) == 1, f"{url} is not one replica's api_base in the config of docs/gateway.md"
    return config


def config_for(replicas: tuple[FakeServer, FakeServer], *, sticky: bool) -> str:
    config = documented_config()
    for url, replica in zip(DOC_REPLICAS, replicas, strict=True):
        config = config.replace(url, replica.url)
    if sticky:
        assert config.count(STICKY_LINE) == 1
        config = config.replace(STICKY_LINE, STICKY_LINE.removeprefix("# "))
    return config


@pytest.fixture
def replicas() -> Iterator[tuple[FakeServer, FakeServer]]:
    first, second = FakeServer(models=("smollm",)), FakeServer(models=("smollm",))
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


class Chat:
    """A stateless-chat session through the gateway that notes which replica answered each turn."""

    def __init__(self, gateway: Gateway, replicas: tuple[FakeServer, FakeServer]) -> None:
        self.gateway = gateway
        self.replicas = replicas
        self.events: list[Event] = []
        # Memory off: the test compares whole message lists, turn by turn, across replicas.
        settings = Settings(base_url=gateway.url, api_key=gateway.key, model="smollm", system="Be brief.",
                            memory="off", max_retries=2, timeout=30.0)
        backend = open_backend(settings.endpoints, settings.api_key, timeout=settings.timeout,
                               max_retries=settings.max_retries, backoff_base=0.2)
        self.session = Session(settings, backend, hooks=Hooks(on_event=self.events.append))
        self.turns: list[Turn] = []

    def say(self, text: str) -> str:
        before = [len(r.requests) for r in self.replicas]
        reply = self.session.send(text)
        grew = [r for r, n in zip(self.replicas, before, strict=True) if len(r.requests) > n]
        assert len(grew) == 1, "each turn is one request, answered by one replica"
        replica = grew[0]
        self.turns.append(Turn(replica, dict(reply.body), replica.requests[-1], reply.text))
        return reply.text

    def served_by(self, replica: FakeServer) -> list[int]:
        return [i for i, turn in enumerate(self.turns) if turn.replica is replica]

    def kill_the_last_replica_and_go_on(self) -> tuple[FakeServer, FakeServer]:
        """Kill the replica that answered the last turn (where a sticky gateway sends the next one),
        then chat on: the other replica answers from the whole history. Returns (killed, survivor)."""
        victim = self.turns[-1].replica
        survivor = next(r for r in self.replicas if r is not victim)
        killed_after = len(self.turns)
        victim.stop()  # its port now refuses connections, as after the process died
        assert self.say("What is my name?") == "Your name is Byte Dai."
        assert self.say("Say it once more: what is my name?") == "Your name is Byte Dai."
        assert self.say("Thanks.") == "echo: Thanks."
        assert [t.replica for t in self.turns[killed_after:]] == [survivor] * 3
        return victim, survivor

    def check_every_turn_carried_the_whole_history(self) -> None:
        """Each turn's replica received exactly what stateless-chat sent: the system prompt and every
        earlier turn, whichever replica had answered it; streamed; and never the gateway's key."""
        history = [("system", "Be brief.")]
        for turn in self.turns:
            user = turn.sent["messages"][-1]
            history.append((user["role"], user["content"]))
            assert roles_and_texts(turn.sent["messages"]) == history
            assert roles_and_texts(turn.received["messages"]) == history
            assert turn.received["stream"] is True
            history.append(("assistant", turn.reply))
        for replica in self.replicas:
            for headers in replica.request_headers:
                assert self.gateway.key not in " ".join(headers.values())
                assert headers.get("authorization") == "Bearer none"  # the replica's own key, from the config

    def retries(self) -> list[Event]:
        """stateless-chat's own retry and failover events (none, when the gateway handled it)."""
        return [e for e in self.events if isinstance(e, Retrying | FailedOver)]

    def close(self) -> None:
        if self.session.backend is not None:
            self.session.backend.close()


@dataclass(frozen=True)
class Turn:
    replica: FakeServer
    sent: dict[str, Any]  # the body stateless-chat sent
    received: dict[str, Any]  # the body the replica received
    reply: str


def roles_and_texts(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


def check_cached_tokens_pass_through(gateway: Gateway, replica: FakeServer) -> None:
    """The replica's cache report (``usage.prompt_tokens_details.cached_tokens``) reaches the client
    through the gateway, streamed (as stateless-chat asks for usage) and not."""
    import openai

    replica.usage_override = {"prompt_tokens": 1500, "completion_tokens": 7, "total_tokens": 1507,
                              "prompt_tokens_details": {"cached_tokens": 1280}}
    client = openai.OpenAI(base_url=gateway.url, api_key=gateway.key, max_retries=0, timeout=30)
    try:
        messages: Any = [{"role": "user", "content": "hi"}]
        whole = client.chat.completions.create(model="smollm", messages=messages)
        assert whole.usage is not None and whole.usage.prompt_tokens_details is not None
        assert whole.usage.prompt_tokens_details.cached_tokens == 1280
        usage = [chunk.usage for chunk in client.chat.completions.create(
            model="smollm", messages=messages, stream=True, stream_options={"include_usage": True})
            if chunk.usage is not None]
        assert len(usage) == 1 and usage[0].prompt_tokens_details is not None
        assert (usage[0].prompt_tokens, usage[0].prompt_tokens_details.cached_tokens) == (1500, 1280)
    finally:
        client.close()
        replica.usage_override = None


def test_turns_land_on_either_replica_and_a_killed_one_loses_nothing(
    replicas: tuple[FakeServer, FakeServer],
) -> None:
    """The documented config: random routing, so turns land on both replicas, each with the whole
    history; the replica that answered last is killed; the other answers with everything, and its
    cached-token counts reach the client."""
    with Gateway(config_for(replicas, sticky=False)) as gateway:
        chat = Chat(gateway, replicas)
        try:
            chat.say("My name is Byte Dai.")
            while not all(chat.served_by(r) for r in replicas):
                assert len(chat.turns) < MAX_TURNS_BEFORE_KILL
                chat.say(f"Turn {len(chat.turns) + 1}: tell me about the weather.")
            victim, survivor = chat.kill_the_last_replica_and_go_on()
            check_cached_tokens_pass_through(gateway, survivor)
            gateway.check()
        finally:
            chat.close()
    assert gateway.pid is None  # stopped with the with-block
    chat.check_every_turn_carried_the_whole_history()
    # Replies the survivor never saw being made reached it in the history it received after the kill.
    assert chat.turns[-1].replica is survivor
    after_kill = chat.turns[-1].received["messages"]
    for index in chat.served_by(victim):
        assert {"role": "assistant", "content": chat.turns[index].reply} in after_kill
    # The gateway moved the retry to the survivor itself (allowed_fails: 0): stateless-chat never retried.
    assert chat.retries() == []


def test_sticky_routing_keeps_one_replica_until_it_dies(replicas: tuple[FakeServer, FakeServer]) -> None:
    """The documented config with its sticky line uncommented (deployment_affinity): every turn goes to
    the replica that answered the first; killed, the other takes over with the whole history."""
    with Gateway(config_for(replicas, sticky=True)) as gateway:
        chat = Chat(gateway, replicas)
        try:
            chat.say("My name is Byte Dai.")
            for turn in range(2, 7):
                chat.say(f"Turn {turn}: go on.")
            pinned = chat.turns[0].replica
            assert [t.replica for t in chat.turns] == [pinned] * 6
            victim, survivor = chat.kill_the_last_replica_and_go_on()
            gateway.check()
        finally:
            chat.close()
    assert victim is pinned and survivor.requests and len(survivor.requests) == 3
    chat.check_every_turn_carried_the_whole_history()
    assert chat.retries() == []
