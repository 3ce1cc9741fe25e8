"""The session's token counter: each message counted once, the best way its endpoint allows.

``Meter`` is what a ``Session`` is given as its ``counter`` (``Counting`` is what the session asks of
one; ``tokens.TokenCounter`` is one too). It counts in one of four ways, and ``how()`` says which:

1. **server**: the endpoint has a tokenizer of its own (``wire.servertokens``; the bundled model's always
   does). Each text is counted by it, once (cached by text), and the chat template's own tokens, per
   request and per message, come from one probe of it. Exact.
2. **exact**: an OpenAI model, counted with its own tiktoken encoding (``core.tokens``).
3. **calibrated**: any other model whose server has reported usage: our tiktoken count scaled by the
   line ``core.calibration`` fits to the (ours, reported) pairs of this endpoint and model, each message
   ``ratio × ours`` and each request ``fixed + ratio × 3`` (the reply priming): the meter, the budget
   and eviction all see the server's count, within the error ``/tokens`` shows.
4. **estimate**: a model not yet checked against its server: our count as it is, marked ``≈``.

Held messages are never counted again: our own count of each is kept (by message), so when the fit
moves (its ratio by more than ``RESCALE``) the held counts are rescaled from those, a lookup each,
not a tokenization. The server's counts are cached by text in the same way. After each reply
``observe`` (a ``Session.on_turn`` hook that ``attach`` installs) learns from its usage; ``count_usage``
fills in, for the turn's commit, the usage a server did not send when the count is exact
(llama-cpp-python sends none with a stream).

A server tokenizer that stops answering (a local server being restarted) is not waited for: texts are
estimated meanwhile (``≈``) and counted again once it answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from stateless_chat.core.calibration import Calibration, Keeper, Line, Template
from stateless_chat.core.messages import Message, ToolCall, Usage, content_parts
from stateless_chat.core.tokens import (
    IMAGE_TOKENS,
    PER_NAME,
    REPLY_PRIMING,
    TOOL_CALL_OVERHEAD,
    TokenCounter,
    estimate_tokens,
    tools_size,
)

if TYPE_CHECKING:
    from stateless_chat.chat.session import Session
    from stateless_chat.chat.values import TurnRecord

Mode = Literal["server", "exact", "calibrated", "estimate"]
RESCALE = 0.005  # held counts are rescaled when the fitted ratio moves by more than this share
MAX_CACHED = 50_000  # texts (and messages) whose counts are kept; the oldest go first
RETRY_AFTER = 30.0  # seconds a tokenizer that failed is not asked again
MAX_CHECKS = 32


class TextTokenizer(Protocol):
    """A server's tokenizer (``servertokens.ServerTokenizer``)."""

    @property
    def name(self) -> str: ...

    def count(self, text: str) -> int: ...

    def template(self) -> Template: ...


def message_from_api(data: Mapping[str, Any]) -> Message:
    """Return the ``Message`` a request body's message object holds (``Message.to_api`` reversed)."""
    calls = []
    for item in data.get("tool_calls") or ():
        function = item.get("function") or {}
        calls.append(ToolCall(str(item.get("id", "")), str(function.get("name", "")),
                              str(function.get("arguments", ""))))
    text, images = content_parts(data.get("content"))
    return Message(data.get("role", "user"), text, name=data.get("name"), tool_calls=tuple(calls),
                   tool_call_id=data.get("tool_call_id"), images=images)


def _remember(cache: dict[Any, int], key: Any, value: int) -> int:
    cache[key] = value
    if len(cache) > MAX_CACHED:
        del cache[next(iter(cache))]  # dicts keep insertion order: the oldest goes
    return value


class Meter:
    """Counts messages for one endpoint and model (see the module docstring).

    ``find_tokenizer`` is asked once, on first use (or ``warm``), for the endpoint's tokenizer (it may
    probe the network; None: there is none); ``store`` holds the calibrations (None: nothing is kept),
    and the template learned for ``template_key`` (a model file: learning it takes requests that the
    next start need not make again).
    """

    def __init__(self, base: TokenCounter, *, key: str, store: Keeper | None = None,
                 find_tokenizer: Callable[[], TextTokenizer | None] | None = None,
                 template_key: str | None = None) -> None:
        self.base = base
        self.model = base.model
        self.encoding_name = base.encoding_name
        self.key = key
        self.store = store
        self.calibration = store.get(key) if store is not None else Calibration()
        self._find = find_tokenizer
        self.template_key = template_key
        self._lock = threading.Lock()
        self._resolved = find_tokenizer is None
        self.tokenizer: TextTokenizer | None = None
        self.template: Template | None = None
        self.problem = ""  # why the server's tokenizer is not used, when it was looked for and failed
        self._texts: dict[str, int] = {}  # the server's count of each text
        self._raw: dict[Message, int] = {}  # our own count of each message
        self._raw_sum = 0  # bytes/4 estimates and the server's counts of the texts it counted:
        self._server_sum = 0  # their ratio scales the estimate of a text it could not count
        self._down_until = 0.0
        self.estimated_texts = 0  # texts the server did not count since the held counts were last redone
        self.checks: tuple[int, ...] = ()  # exact counts: reported - ours, for the newest replies
        self.checked = 0  # replies whose reported count was compared with ours
        self.counted_turn: int | None = None  # the turn whose usage is ours (the server sent none)
        self.store_problem = ""
        line = self.calibration.line
        self._applied: Line | None = line  # the line the held counts were made with

    # ---- how counts are made ------------------------------------------------------------

    def warm(self) -> None:
        """Find the server's tokenizer (once) and load our encoding; safe in a background thread."""
        self._resolve()
        self.base.warm()

    def resolve(self) -> None:
        """Find the server's tokenizer now (once; it may take requests, see ``learns_template``)."""
        self._resolve()

    @property
    def learns_template(self) -> bool:
        """Return whether resolving will learn a chat template from a model's server (small requests that
        take a few seconds on a slow machine) rather than find it kept from an earlier start."""
        return not self._resolved and self.template_key is not None and self._known_template() is None

    def _resolve(self) -> None:
        if self._resolved:
            return
        with self._lock:
            if self._resolved:
                return
            try:
                tokenizer = self._find() if self._find is not None else None
                if tokenizer is not None:
                    self.template = self._known_template() or tokenizer.template()
                    self.tokenizer = tokenizer
                    self._keep_template()
            except Exception as error:  # a probe that fails leaves the other ways: never a crash
                self.problem = f"the server's tokenizer could not be used ({error})"
                self.template = self.tokenizer = None
            self._resolved = True

    def _known_template(self) -> Template | None:
        if self.store is None or self.template_key is None:
            return None
        return self.store.template(self.template_key)

    def _keep_template(self) -> None:
        if self.store is None or self.template_key is None or self.template is None:
            return
        if self.store.template(self.template_key) != self.template:
            try:
                self.store.put_template(self.template_key, self.template)
            except OSError as error:
                self.store_problem = f"{self.store.path} could not be written ({error.strerror or error})"

    @property
    def mode(self) -> Mode:
        """Return how counts are made now (looks for the server's tokenizer on first use)."""
        self._resolve()
        if self.template is not None:
            return "server"
        if self.base.exact:
            return "exact"
        if self._applied is not None:
            return "calibrated"
        return "estimate"

    @property
    def exact(self) -> bool:
        return self.mode in ("server", "exact") and not self.estimated_texts

    @property
    def label(self) -> str:
        """Return ``""`` for exact counts and ``"≈"`` for estimates and calibrated ones."""
        return "" if self.exact else "≈"

    def how(self) -> str:
        """Return how counts are made, and how well they held against the server's, for ``/tokens``."""
        mode = self.mode
        if mode == "server":
            assert self.template is not None and self.tokenizer is not None
            template = self.template
            said = (f"exact: counted with the server's tokenizer ({self.tokenizer.name}); its chat template "
                    f"adds {template.request} a request ({template.request + template.headless} without a "
                    f"system prompt) and {template.message('user')} a message")
            if self.estimated_texts:
                said += f"; {self.estimated_texts} text(s) estimated while it did not answer"
            return said + self._checked()
        if mode == "exact":
            return f"exact: {self.encoding_name}, {self.model}'s own encoding" + self._checked()
        base = f"{self.encoding_name}" + ("" if self.base.known else f" ({self.base.note})")
        if mode == "calibrated":
            line = self._applied
            assert line is not None
            replies = self.calibration.replies
            said = (f"calibrated from {replies} repl{'y' if replies == 1 else 'ies'}: the server's count ≈ "
                    f"{line.fixed:+.0f} + {line.ratio:.3f} × ours ({base})")
            errors = self.calibration.error_summary()
            if errors is not None:
                mean, under = errors
                n = len(self.calibration.errors[-10:])
                said += (f"; error on the last {n}: {mean:.1%} on average, "
                         + (f"worst undercount {under:.1%}" if under else "never low"))
            return said
        extra = f"; {self.problem}" if self.problem else ""
        return f"estimate, not yet checked: {base}; the server's first reported usage calibrates it{extra}"

    def _checked(self) -> str:
        if not self.checks:
            return ""
        off = [c for c in self.checks if c]
        which = f"{len(self.checks)} replies" if self.checked == len(self.checks) else \
            f"the last {len(self.checks)} of {self.checked} replies"
        if not off:
            return f"; matched the server's count on all {which}"
        return (f"; the server's count differed on {len(off)} of {which} "
                f"(by {min(off):+,} to {max(off):+,})")

    # ---- counting --------------------------------------------------------------------------

    def _raw_count(self, message: Message) -> int:
        hit = self._raw.get(message)
        return hit if hit is not None else _remember(self._raw, message, self.base.count_message(message))

    def _text(self, text: str) -> int:
        """Return the server's count of ``text``: cached, asked, or (while it does not answer) estimated."""
        if not text:
            return 0
        hit = self._texts.get(text)
        if hit is not None:
            return hit
        tokenizer = self.tokenizer
        if tokenizer is not None and time.monotonic() >= self._down_until:
            try:
                count = tokenizer.count(text)
            except Exception:  # refused, timed out: estimated now, counted when it answers again
                self._down_until = time.monotonic() + RETRY_AFTER
            else:
                self._raw_sum += estimate_tokens(text)
                self._server_sum += count
                return _remember(self._texts, text, count)
        self.estimated_texts += 1
        ratio = self._server_sum / self._raw_sum if self._raw_sum else 1.0
        return max(1, round(ratio * estimate_tokens(text)))

    def _content(self, text: str) -> int:
        """Return the server's count of a message's content where it stands: after the template's
        ``prefix``, which a content that begins with spaces may merge with."""
        assert self.template is not None
        prefix = self.template.prefix
        if not prefix or not text:
            return self._text(text)
        return self._text(prefix + text) - self._text(prefix)

    def _server_message(self, message: Message) -> int:
        assert self.template is not None
        total = self.template.message(message.role) + self._content(message.text) \
            + IMAGE_TOKENS * len(message.images)
        if message.name is not None:
            total += PER_NAME + self._text(message.name)
        for call in message.tool_calls:
            total += TOOL_CALL_OVERHEAD + self._text(call.name) + self._text(call.arguments)
        return total

    def count_message(self, message: Message) -> int:
        """Return what ``message`` adds to a request (see the module docstring for how)."""
        mode = self.mode
        if mode == "server":
            return self._server_message(message)
        raw = self._raw_count(message)
        if mode == "calibrated":
            assert self._applied is not None
            return round(self._applied.ratio * raw)
        return raw

    def count_text(self, text: str) -> int:
        """Return the tokens of ``text`` alone (the server's count, else ours, scaled when calibrated)."""
        mode = self.mode
        if mode == "server":
            return self._text(text)
        raw = self.base.count_text(text)
        return round(self._applied.ratio * raw) if mode == "calibrated" and self._applied else raw

    def count_tools(self, tools: Sequence[Mapping[str, Any]]) -> int:
        """Return what the ``tools`` array adds: the cookbook's formula over the server's counts, or ours
        scaled (no template says how it renders tools: this part is always an estimate)."""
        if not tools:
            return 0
        mode = self.mode
        if mode == "server":
            return tools_size(tools, self._text)
        raw = self.base.count_tools(tools)
        return round(self._applied.ratio * raw) if mode == "calibrated" and self._applied else raw

    def request_tokens(self, leading_system: bool = True) -> int:
        """Return what a request adds beyond its messages: the template's own tokens (more when no
        system message leads), the calibrated fixed cost, or the reply priming."""
        mode = self.mode
        if mode == "server":
            assert self.template is not None
            return self.template.request + (0 if leading_system else self.template.headless)
        if mode == "calibrated":
            assert self._applied is not None
            return round(self._applied.fixed + self._applied.ratio * REPLY_PRIMING)
        return REPLY_PRIMING

    def raw_request(self, body: Mapping[str, Any]) -> int:
        """Return our own count (tiktoken's, uncalibrated) of the request ``body``."""
        messages = [message_from_api(m) for m in body.get("messages") or () if isinstance(m, Mapping)]
        tools = body.get("tools") or ()
        return sum(self._raw_count(m) for m in messages) + REPLY_PRIMING + self.base.count_tools(tools)

    def for_model(self, model: str, encoding: str | None = None,
                  default_encoding: str = "o200k_base") -> Meter:
        """Return a meter for ``model`` on the same endpoint: the same tokenizer (it is the server's),
        the calibration kept for that model."""
        key = self.key.rsplit(" ", 1)[0] + f" {model}" if " " in self.key else model
        meter = Meter(self.base.for_model(model, encoding, default_encoding), key=key, store=self.store,
                      template_key=self.template_key)
        meter.tokenizer, meter.template, meter.problem, meter._resolved = (
            self.tokenizer, self.template, self.problem, self._resolved)
        meter._find = self._find
        meter._texts = self._texts
        return meter

    # ---- after each reply ------------------------------------------------------------------

    def count_usage(self, prompt_tokens: int, text: str, calls: Sequence[ToolCall],
                    turn: int) -> Usage | None:
        """Return the usage of a reply the server sent none for, counted exactly: ``prompt_tokens``
        (the request's exact count) and the reply's tokens; None unless counts are exact by the
        server's tokenizer."""
        if self.mode != "server" or self.estimated_texts:
            return None
        completion = self._text(text) + sum(self._text(c.name) + self._text(c.arguments) for c in calls)
        self.counted_turn = turn
        return Usage(prompt_tokens, completion, None)

    def observe(self, session: Session, record: TurnRecord) -> None:
        """Learn from a completed turn: check exact counts against the server's, add the pair (our count,
        the server's) to the calibration and keep it, and rescale the held counts when the fit moved.
        Also counts again, once the server's tokenizer answers, the texts estimated while it did not."""
        if not session.exact:  # counts are byte bounds (a one-shot run without -u): nothing to learn from
            return
        usage = record.reply.usage
        mode = self.mode
        if mode == "server" and self.estimated_texts and time.monotonic() >= self._down_until:
            self.estimated_texts = 0
            session.conversation = session.conversation.recounted(session.measure)
        if record.turn == self.counted_turn or usage is None or usage.prompt_tokens is None:
            return
        reported = usage.prompt_tokens
        predicted = record.stats.estimated_prompt_tokens
        if mode in ("server", "exact"):
            self.checks = (*self.checks, reported - predicted)[-MAX_CHECKS:]
            self.checked += 1
            if not self.base.loaded:
                return  # our own count would load the encoding for nothing the meter uses
        ours = self.raw_request(record.requests[-1])
        before = predicted if mode == "calibrated" else None  # an estimate's error is not the calibration's
        self.calibration = self.calibration.observe(ours, reported, before)
        self._keep()
        if mode in ("calibrated", "estimate"):
            self._follow(session, ours)

    def _keep(self) -> None:
        if self.store is None:
            return
        try:
            self.store.put(self.key, self.calibration)
        except OSError as error:
            self.store_problem = f"{self.store.path} could not be written ({error.strerror or error})"

    def _follow(self, session: Session, ours: int) -> None:
        """Use the new fit: rescale the held counts when its ratio moved more than ``RESCALE``, else
        keep their ratio and move only the fixed cost (so that a request of ``ours`` is predicted as
        the fit predicts it)."""
        line = self.calibration.line
        if line is None:
            return
        applied = self._applied
        if applied is None or abs(line.ratio / applied.ratio - 1) > RESCALE:
            self._applied = line
            if session.exact:
                session.conversation = session.conversation.recounted(session.measure)
        else:
            self._applied = Line(line.fixed + (line.ratio - applied.ratio) * ours, applied.ratio)


def attach(session: Session, meter: Meter | None = None) -> None:
    """Let every completed turn of ``session`` teach its meter (``Meter.observe``), whatever meter the
    session holds by then (``/model`` makes a new one). With ``meter``, make it the session's counter
    first and count the held history with it (a session built without one: tests, the benchmarks)."""
    if meter is not None:
        session.count_with(meter)

    def observe(record: TurnRecord) -> None:
        counter = session.counter
        if isinstance(counter, Meter):
            counter.observe(session, record)

    session.on_turn = (*session.on_turn, observe)


__all__ = ["Meter", "TextTokenizer", "attach", "message_from_api"]
