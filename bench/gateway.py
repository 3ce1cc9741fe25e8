"""Behind a gateway: what sticky routing is worth to the servers' prompt cache.

One LiteLLM proxy (``tests/gateway.py``) serves two model groups of two replicas each: ``spread``,
LiteLLM's default routing (a replica picked at random for every request), and ``sticky``, the
same with ``deployment_affinity`` (the API key stays on the replica that served it first;
docs/gateway.md). The same conversation goes through each group in turn, the way
stateless-chat sends it: the system prompt and every earlier turn, then the new message. The four
replicas are real llama.cpp servers with the bundled SmolLM2-135M (``LocalServer``), started fresh
for the run, so every cache starts cold and neither group warms the other's.

Per turn the bench keeps which replica answered (the proxy's ``x-litellm-model-api-base``
header), the prompt tokens the replica reports (``usage.prompt_tokens``) and the cached ones: the
prompt tokens it did not compute again, as the server reports them. That is
``usage.prompt_tokens_details.cached_tokens`` or llama.cpp's ``timings.cache_n`` when the reply
carries them (llama.cpp's own llama-server, vLLM, OpenAI); llama-cpp-python's server, which runs
the bundled model, puts neither in its replies and reports the same number in its log instead,
one line a request: ``Llama.generate: N prefix-match hit, remaining M prompt tokens to eval``
(no such line: nothing reused). Requests are not streamed (llama-cpp-python reports usage only
then) and use temperature 0, so both groups get the same replies.

stateless-chat's own ``Usage`` is not used: the raw replies are read, whatever the client makes
of them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import ROOT  # noqa: F401  (puts the checkout on sys.path)

GROUPS = ("spread", "sticky")
SYSTEM = "You are a helpful travel assistant. Answer in two or three sentences."
QUESTIONS = (
    "I am planning a week in Lisbon next April with my partner. We like walking, old neighbourhoods, "
    "small museums and long lunches, and we do not want to rent a car. Where should we stay?",
    "Which day trips from Lisbon can we do by train, and which one would you pick if we only had one "
    "free day and wanted to see both the sea and a palace?",
    "We are vegetarian, and one of us does not eat eggs. What should we look for on a Portuguese menu, "
    "and which dishes should we ask about before ordering?",
    "How do the trams and the funiculars work for visitors, and is a travel card worth it for a week "
    "if we mostly walk but take the tram up the hills?",
    "It might rain for two of the days. Which indoor places would you suggest, apart from the big "
    "museums that everybody visits?",
    "What is a sensible daily budget for the two of us for food and transport, if we eat one proper "
    "meal out each day and buy the rest at markets?",
    "Are there any festivals or local holidays in Lisbon in April that we should plan around, or "
    "that would be worth seeing?",
    "Please put all of this together into a short plan for the week, one line per day, keeping in "
    "mind the rainy days and the day trip.",
)
MAX_TOKENS = 64
QUICK_TURNS = 3
QUICK_MAX_TOKENS = 12
_PREFIX_HIT = re.compile(r"Llama\.generate: (\d+) prefix-match hit, remaining (\d+) prompt tokens to eval")
_FULL_HIT = "Llama.generate: full prompt already cached"


@dataclass(frozen=True)
class Turn:
    """One request through the gateway, as the answering replica reported it."""

    replica: int  # 1 or 2: the group's first or second replica in the proxy config
    prompt: int  # usage.prompt_tokens
    cached: int  # prompt tokens not computed again
    source: str  # where ``cached`` was read: "reply" or "server log"
    seconds: float  # wall time of the request


@dataclass
class GroupRun:
    """The conversation through one model group."""

    group: str
    turns: list[Turn] = field(default_factory=list)

    @property
    def prompt(self) -> int:
        return sum(t.prompt for t in self.turns)

    @property
    def cached(self) -> int:
        return sum(t.cached for t in self.turns)

    @property
    def computed(self) -> int:
        return self.prompt - self.cached

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.turns)


@dataclass
class GatewayResult:
    """Both groups' runs, or why the part was not run."""

    runs: list[GroupRun]
    skipped: str | None = None
    proxy_start: float = 0.0
    litellm_version: str = ""


def available() -> str | None:
    """Return None when the part can run, else the reason it cannot (for the results note)."""
    from stateless_chat.wire.local import local_available
    from tests.gateway import litellm_available

    checks = (("gateway", litellm_available()), ("local", local_available()))
    missing = [name for name, ok in checks if not ok]
    if missing:
        return ("needs the " + " and ".join(missing) + " extra" + ("s" if len(missing) > 1 else "")
                + f" (pip install -e '.[{','.join(missing)}]')")
    return None


def proxy_config(replicas: Mapping[str, Sequence[str]]) -> str:
    """Return the proxy config: each group over its replicas' base URLs; only ``sticky`` has affinity."""
    lines = ["model_list:"]
    for group, urls in replicas.items():
        for url in urls:
            lines += [f"  - model_name: {group}", "    litellm_params:", "      model: openai/smollm",
                      f"      api_base: {url}", "      api_key: none"]
    lines += [
        "router_settings:",
        "  num_retries: 2",
        "  allowed_fails: 0",
        '  optional_pre_call_checks: ["deployment_affinity"]',
        "  model_group_affinity_config:",
        "    spread: []  # no affinity for this group: LiteLLM's default routing",
        "general_settings:",
        "  master_key: os.environ/LITELLM_MASTER_KEY",
    ]
    return "\n".join(lines) + "\n"


def cached_in_reply(body: dict[str, Any]) -> int | None:
    """Return the cached prompt tokens a reply reports (OpenAI/vLLM or llama-server style), or None."""
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        return int(details["cached_tokens"])
    timings = body.get("timings")
    if isinstance(timings, dict) and isinstance(timings.get("cache_n"), int):
        return int(timings["cache_n"])
    return None


def cached_in_log(new_log: str, prompt: int) -> int:
    """Return what llama-cpp-python logged it reused for the one request whose log is ``new_log``."""
    hits = _PREFIX_HIT.findall(new_log)
    if hits:
        return int(hits[-1][0])
    if _FULL_HIT in new_log:
        return prompt
    return 0


class _LogReader:
    """The text a server's log gained since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size

    def new(self) -> str:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        return data.decode("utf-8", errors="replace")


def converse(client: Any, group: str, urls: Sequence[str], logs: dict[str, _LogReader], turns: int,
             max_tokens: int) -> GroupRun:
    """Run the conversation through ``group`` and return what each turn's replica reported."""
    run = GroupRun(group)
    messages: list[dict[str, str]] = [{"role": "system", "content": SYSTEM}]
    for question in QUESTIONS[:turns]:
        messages.append({"role": "user", "content": question})
        for reader in logs.values():
            reader.new()  # skip whatever the replicas logged in between
        started = time.monotonic()
        raw = client.chat.completions.with_raw_response.create(
            model=group, messages=messages, temperature=0, max_tokens=max_tokens, stream=False
        )
        seconds = time.monotonic() - started
        body = raw.http_response.json()
        url = raw.headers.get("x-litellm-model-api-base", "").rstrip("/")
        assert url in urls, f"the proxy answered from {url!r}, not one of {list(urls)}"
        prompt = int(body["usage"]["prompt_tokens"])
        from_reply = cached_in_reply(body)
        if from_reply is not None:
            cached, source = from_reply, "reply"
        else:
            cached, source = cached_in_log(logs[url].new(), prompt), "server log"
        run.turns.append(Turn(list(urls).index(url) + 1, prompt, cached, source, seconds))
        messages.append({"role": "assistant", "content": body["choices"][0]["message"]["content"] or ""})
    return run


def run(turns: int = len(QUESTIONS), *, quick: bool = False) -> GatewayResult:
    """Start four replicas and the proxy, run the conversation through both groups, stop everything."""
    reason = available()
    if reason is not None:
        return GatewayResult([], skipped=reason)
    import importlib.metadata

    import openai

    from stateless_chat.wire.local import LocalServer, bundled_model_path
    from tests.gateway import Gateway

    model = bundled_model_path()
    assert model is not None
    turns = min(turns, QUICK_TURNS) if quick else turns
    max_tokens = QUICK_MAX_TOKENS if quick else MAX_TOKENS
    servers = [LocalServer(model, n_ctx=4096) for _ in range(2 * len(GROUPS))]
    gateway: Gateway | None = None
    try:
        for server in servers:
            server.start()
        urls = {group: [s.base_url for s in servers[2 * i: 2 * i + 2]] for i, group in enumerate(GROUPS)}
        logs = {s.base_url: _LogReader(s.log_path) for s in servers if s.log_path is not None}
        gateway = Gateway(proxy_config(urls))
        gateway.start()
        client = openai.OpenAI(base_url=gateway.url, api_key=gateway.key, max_retries=0, timeout=300)
        try:
            runs = [converse(client, group, urls[group], logs, turns, max_tokens) for group in GROUPS]
        finally:
            client.close()
        return GatewayResult(runs, proxy_start=gateway.startup_seconds,
                             litellm_version=importlib.metadata.version("litellm"))
    finally:
        if gateway is not None:
            gateway.stop()
        for server in servers:
            server.stop()


def as_json(result: GatewayResult) -> str:
    """Return the result as JSON (for a look at the raw numbers)."""
    return json.dumps({"skipped": result.skipped, "runs": [
        {"group": r.group, "turns": [t.__dict__ for t in r.turns]} for r in result.runs]}, indent=1)
