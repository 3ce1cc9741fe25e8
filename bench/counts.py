"""Token counts: how far the meter is from the server's own count, turn by turn.

Two 40-turn conversations, each at a budget equal to the context window, so that the last requests
before every eviction are as close to the limit as the counts allow:

- against the bundled model (SmolLM2-135M through llama-cpp-python's server, on a context of
  ``LOCAL_CONTEXT`` tokens): counted with the server's own tokenizer and its chat template's costs
  (``meter``, mode ``server``), not streamed, so that every reply reports the server's count;
- against the test server (``tests/fakeserver.py``) made to count its own way: cl100k_base where
  the client counts an unknown model with o200k_base, a ChatML template and a default system prompt
  (``FakeTokenizer``), the context checked like vLLM's (the prompt and ``max_tokens`` together);
  the meter calibrates from the usage each streamed reply reports.

Per turn: the meter's count of the request it sent (``estimated_prompt_tokens``) against the prompt
tokens the server reported, the error as a share of the server's count (negative: an undercount);
how many requests the server refused; and the counting work of the turn: texts tokenized (by tiktoken
or by the server) and held counts rescaled (a dictionary lookup each, no tokenizing). The
conversation is a mix of prose, code, lists, numbers, JSON and German and Chinese text.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import ROOT  # noqa: F401  (puts the checkout on sys.path)

LOCAL_CONTEXT = 2_048
FAKE_CONTEXT = 2_048
RESERVE = 256
LOCAL_REPLY = 24

_TOPICS = ("the old harbour", "a sourdough starter", "the train timetable", "a broken bicycle chain",
           "the quarterly budget", "a chess opening", "the garden in April", "a Python decorator")
_STYLES: tuple[Callable[[int, str], str], ...] = (
    lambda n, t: f"Turn {n}. Tell me, in two or three sentences, one useful thing about {t}.",
    lambda n, t: (f"Here is some code about {t}:\n```python\ndef step_{n}(items: list[int]) -> int:\n"
                  f"    return sum(x * {n} for x in items if x % 2 == 0)\n```\n"
                  "What does it return for [1, 2, 3, 4]?"),
    lambda n, t: f"List three facts about {t}:\n- first: {n * 3} items\n- second: {n * 7}%\n- third: ok?",
    lambda n, t: f'{{"turn": {n}, "topic": "{t}", "values": [{n}, {n * 2}, {n * 3}], "ok": true}} explain',
    lambda n, t: f"Kannst du mir bitte in zwei Sätzen etwas über {t} erzählen? Das ist Frage {n}.",
    lambda n, t: f"请用两句话介绍一下{t}。这是第{n}个问题，谢谢！",
    lambda n, t: f"Numbers for {t}: {n * 1234.5:.2f}, {n ** 3}, 0x{n * 255:04x}, {n / 7:.6f}; sum them.",
    lambda n, t: ("  An indented question about " + t + f", turn {n}:\n\n    with a quoted block\n"
                  "> and a reply quote\n\nWhat do you think?"),
)


ENGLISH = (0, 1, 2, 3, 6, 7)  # the styles of a conversation in one language: prose, code, lists, JSON...
EVERY = tuple(range(len(_STYLES)))  # ... and German and Chinese turns among them


def user_text(turn: int, styles: tuple[int, ...] = EVERY) -> str:
    """Return the scripted message of ``turn`` in one of ``styles``."""
    return _STYLES[styles[turn % len(styles)]](turn, _TOPICS[turn % len(_TOPICS)])


def reply_text(turn: int, mixed: bool = True) -> str:
    """Return the fake server's reply to ``turn``: a few sentences of varied length and kind (some of
    them German and Chinese when ``mixed``)."""
    topic = _TOPICS[(turn * 3) % len(_TOPICS)]
    words = ("The answer depends on " + topic + ". ") * (1 + turn % 4)
    if turn % 3 == 0:
        return words + "\n\n```\nresult = " + str(turn * 17) + "\n```"
    if not mixed:
        return words + f" For example: {turn * 3} of {turn * 11}, roughly {turn / 3:.1f}%."
    if turn % 3 == 1:
        return words + " Zum Beispiel: " + "Ä" * (turn % 5) + " ok."
    return words + " 好的。" * (1 + turn % 3)


@dataclass
class CountRun:
    """One conversation: per turn the meter's count and the server's, and the counting work."""

    label: str
    how: str = ""
    ours: list[int] = field(default_factory=list)
    reported: list[int] = field(default_factory=list)
    tokenized: list[int] = field(default_factory=list)  # texts tokenized in the turn
    rescaled: list[int] = field(default_factory=list)  # held counts rescaled in the turn
    refused: int = 0
    evictions: int = 0
    largest: int = 0  # the largest request, reply reserve included, by the server's count
    window: int = 0

    @property
    def errors(self) -> list[float]:
        """Return each turn's (ours - reported) / reported."""
        return [(o - r) / r for o, r in zip(self.ours, self.reported, strict=True) if r]

    def after(self, replies: int) -> list[float]:
        """Return the errors of the turns that came after ``replies`` replies."""
        return self.errors[replies:]


def _instrument(meter: Any) -> Callable[[], int]:
    """Count the texts ``meter`` tokenizes (its encoding's and its server's), and return the reader."""
    calls = [0]
    base = meter.base
    original = base.count_text

    def count_text(text: str) -> int:
        calls[0] += 1
        return int(original(text))

    base.count_text = count_text
    tokenizer = meter.tokenizer
    if tokenizer is not None:
        server_count = tokenizer.count

        def counted(text: str) -> int:
            calls[0] += 1
            return int(server_count(text))

        tokenizer.count = counted
    return lambda: calls[0]


def _converse(run: CountRun, session: Any, meter: Any, turns: int, styles: tuple[int, ...]) -> CountRun:
    from stateless_chat.chat.values import Hooks
    from stateless_chat.core.messages import ContextRetry

    retries: list[object] = []
    def on_event(event: object) -> None:
        if isinstance(event, ContextRetry):
            retries.append(event)

    session.hooks = Hooks(on_event=on_event)
    tokenized = _instrument(meter)
    before = tokenized()
    for turn in range(1, turns + 1):
        held = {e.id: e.tokens for e in session.conversation.all_entries()}
        session.send(user_text(turn, styles))
        stats = session.ledger.turns[-1]
        run.ours.append(stats.estimated_prompt_tokens)
        run.reported.append(stats.reported_prompt_tokens or 0)
        now = tokenized()
        run.tokenized.append(now - before)
        before = now
        # a rescale recounts the held entries from their kept counts: seen as held entries whose count moved
        run.rescaled.append(sum(1 for e in session.conversation.all_entries()
                                if e.id in held and held[e.id] != e.tokens))
        run.evictions += stats.evictions
        run.largest = max(run.largest, (stats.reported_prompt_tokens or 0) + session.reserve)
    run.refused = len(retries)
    run.how = meter.how()
    return run


def run_fake(turns: int = 40, mixed: bool = False) -> CountRun:
    """Return the run against the test server that counts its own way (calibrated); ``mixed``: with
    German and Chinese turns among the English ones."""
    from stateless_chat.app import meter_for
    from stateless_chat.chat.meter import attach
    from stateless_chat.chat.session import Session
    from stateless_chat.config import Settings
    from stateless_chat.wire.openai_backend import open_backend
    from tests.fakeserver import FakeServer, FakeTokenizer

    with FakeServer(lambda body: reply_text(len(body.get("messages") or []) // 2, mixed)) as server, \
            tempfile.TemporaryDirectory() as data:
        server.tokenizer = FakeTokenizer("cl100k_base", default_system="You are a helpful assistant.")
        server.context_limit = FAKE_CONTEXT
        server.context_counts_reply = True
        settings = Settings(base_url=server.url, model="qwen2.5-7b-instruct", context_window=FAKE_CONTEXT,
                            budget=FAKE_CONTEXT, reply_reserve=RESERVE, max_retries=0, timeout=30.0)
        session = Session(settings, open_backend(settings.endpoints, None, timeout=30.0, max_retries=0))
        meter = meter_for(settings, data_dir=Path(data))
        attach(session, meter)
        label = "test server (cl100k_base, ChatML): " + ("English, German, Chinese" if mixed else "English")
        run = _converse(CountRun(label), session, meter, turns, EVERY if mixed else ENGLISH)
        run.window = FAKE_CONTEXT
        assert session.backend is not None
        session.backend.close()
    return run


def run_local(turns: int = 40) -> CountRun:
    """Return the run against the bundled model (counted with its server's tokenizer)."""
    from stateless_chat.app import meter_for
    from stateless_chat.chat.meter import attach
    from stateless_chat.chat.session import Session
    from stateless_chat.config import Settings
    from stateless_chat.wire.local import LocalServer, bundled_model_path
    from stateless_chat.wire.openai_backend import open_backend

    model = bundled_model_path()
    assert model is not None, "the bundled model needs the [local] extra"
    with LocalServer(model, n_ctx=LOCAL_CONTEXT) as server, tempfile.TemporaryDirectory() as data:
        settings = Settings(base_url=server.base_url, model=model.stem, context_window=LOCAL_CONTEXT,
                            budget=LOCAL_CONTEXT, max_tokens=LOCAL_REPLY, stream=False, temperature=0.0,
                            max_retries=0, timeout=300.0)
        session = Session(settings, open_backend(settings.endpoints, None, timeout=300.0, max_retries=0))
        meter = meter_for(settings, data_dir=Path(data), local_model=model, timeout=300.0)
        meter.warm()
        attach(session, meter)
        run = _converse(CountRun("bundled model: its server's tokenizer"), session, meter, turns, EVERY)
        run.window = LOCAL_CONTEXT
        assert session.backend is not None
        session.backend.close()
    return run


def summary(run: CountRun) -> dict[str, float]:
    """Return the figures docs/token-counts.md and docs/benchmarks.md quote for ``run``."""
    errors = run.errors
    late = run.after(3)
    return {
        "mean_abs": statistics.fmean(abs(e) for e in errors) if errors else 0.0,
        "max_abs_after_3": max((abs(e) for e in late), default=0.0),
        "worst_under_after_3": max((-e for e in late), default=0.0),
        "first": errors[0] if errors else 0.0,
    }


def available() -> bool:
    """Return whether the bundled model and its server are installed (the [local] extra)."""
    from stateless_chat.wire.local import local_available

    return local_available()
