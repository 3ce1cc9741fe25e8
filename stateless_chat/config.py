"""Settings and where they come from.

Precedence, lowest first: the defaults in ``Settings``, the config file (TOML),
the environment, then command-line flags. Every layer is validated before it is
applied, so an error names where the bad value came from (the file and key, the
environment variable, or the flag). The API key never appears in ``repr`` of
``Settings`` nor in any error message.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from stateless_chat.core.billing import Price, check_prices
from stateless_chat.core.models import context_window_for
from stateless_chat.core.policies import POLICY_NAMES
from stateless_chat.errors import ConfigError, UsageError, keep_secret
from stateless_chat.sanitize import public_url, url_password
from stateless_chat.validate import Invalid, shown, type_name
from stateless_chat.wire import DEFAULT_MAX_REPLY_BYTES

if TYPE_CHECKING:
    from stateless_chat.tools.specs import ServerConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_BUDGET = 32000
MAX_TIMEOUT = 86400.0  # a day; httpx fails every request with OverflowError past ~1e10 seconds
MAX_CONFIG_BYTES = 1024 * 1024  # a config file is a few hundred bytes; /dev/zero-sized ones are refused
APP_NAME = "stateless-chat"


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("a string")
    return value


def _key(value: object) -> str:
    # Sent in an HTTP header: anything but visible ASCII would fail every request (or split the header).
    if not isinstance(value, str) or any(not "!" <= char <= "~" for char in value):
        raise Invalid("a string of visible ASCII characters (an API key)")
    return value


def _nonempty_str(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("a non-empty string")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid("a boolean (true or false)")
    return value


def _int(value: object, *, minimum: int, expected: str) -> int:
    # bool is a subclass of int; `true` is not a number of tokens.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise Invalid(expected)
    return value


def _positive_int(value: object) -> int:
    return _int(value, minimum=1, expected="a positive integer")


def _nonnegative_int(value: object) -> int:
    return _int(value, minimum=0, expected="a non-negative integer")


def _float(value: object, *, expected: str, low: float, high: float, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(expected)
    number = float(value)
    if not math.isfinite(number) or number > high or number < low or (low_open and number == low):
        raise Invalid(expected)
    return number


def _temperature(value: object) -> float:
    return _float(value, expected="a number from 0 to 2", low=0.0, high=2.0)


def _timeout(value: object) -> float:
    return _float(
        value, expected=f"a positive number of seconds, at most {MAX_TIMEOUT:g}", low=0.0, high=MAX_TIMEOUT,
        low_open=True,
    )


def _path(value: object) -> str:
    # Checked here so that the error names the key or flag; later uses expand "~" without a check.
    text = _nonempty_str(value)
    try:
        Path(text).expanduser()
    except RuntimeError:  # "~user" for an unknown user, or no home directory at all
        raise Invalid("a file path whose leading ~ names a known home directory") from None
    if "\x00" in text:
        raise Invalid("a file path without NUL characters")
    return text


def _evict_to(value: object) -> float:
    return _float(value, expected="a fraction of the budget above 0, at most 1 (e.g. 0.5)", low=0.0, high=1.0,
                  low_open=True)


def _cache_lifetime(value: object) -> float:
    return _float(value, expected="a positive number of seconds", low=0.0, high=MAX_TIMEOUT, low_open=True)


RECALL_MODES = ("off", "auto")
TOOL_IMAGES = ("auto", "on", "off")  # images in tool results as image parts: for models known to read them
MEMORY_MODES = ("auto", "manual", "off")  # memory.MODES: the config is checked without importing the core


def _tool_images(value: object) -> str:
    if value not in TOOL_IMAGES:
        raise Invalid("one of " + ", ".join(TOOL_IMAGES))
    assert isinstance(value, str)
    return value


def _recall(value: object) -> str:
    if value not in RECALL_MODES:
        raise Invalid("one of " + ", ".join(RECALL_MODES))
    assert isinstance(value, str)
    return value


def _paths(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise Invalid("an array of file or folder paths")
    try:
        return tuple(_path(item) for item in value)
    except Invalid:
        raise Invalid("an array of file or folder paths") from None


def _memory(value: object) -> str:
    if value not in MEMORY_MODES:
        raise Invalid("one of " + ", ".join(MEMORY_MODES))
    assert isinstance(value, str)
    return value


def _mcp(value: object) -> dict[str, ServerConfig]:
    """Return the ``[mcp.servers.NAME]`` tables as server configurations (already parsed ones kept)."""
    if isinstance(value, Mapping) and not value:
        return {}
    from stateless_chat.tools.specs import ServerConfig, parse_servers

    if isinstance(value, Mapping) and all(isinstance(v, ServerConfig) for v in value.values()):
        return dict(value)
    try:
        return parse_servers(value, "the mcp table")
    except ConfigError as error:
        raise Invalid(f"[mcp.servers.NAME] tables: {error}") from None


def _approve(value: object) -> str:
    if value not in ("ask", "always"):
        raise Invalid('"ask" or "always"')
    assert isinstance(value, str)
    return value


def _policy(value: object) -> str:
    if value not in POLICY_NAMES:
        raise Invalid("one of " + ", ".join(POLICY_NAMES))
    assert isinstance(value, str)
    return value


def _url(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("a URL string")
    try:
        parts = urlsplit(value.strip())
    except ValueError:  # e.g. an unclosed IPv6 bracket: http://[::1
        raise Invalid("an http:// or https:// URL") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Invalid("an http:// or https:// URL")
    try:
        port = parts.port
        (parts.hostname or "").encode("idna")
    except (ValueError, UnicodeError):  # a port that is not a number, an empty or overlong host label
        raise Invalid("an http:// or https:// URL with a valid host name and port") from None
    if port == 0:
        raise Invalid("an http:// or https:// URL with a valid host name and port")
    return value.strip()


_URLS_EXPECTED = 'an array of http:// or https:// URLs (or tables {url = "...", api_key = "..."})'


def _endpoint(item: object) -> tuple[str, str | None]:
    """Return the URL of one ``base_urls`` entry and its own API key (None: it has none of its own)."""
    if isinstance(item, Mapping):
        if "url" not in item or set(item) - {"url", "api_key"}:
            raise Invalid(_URLS_EXPECTED)
        key = item.get("api_key")
        try:
            return _url(item["url"]), None if key is None else _key(key)
        except Invalid as error:
            if "api_key" in error.expected:
                raise Invalid("an array whose api_key entries are visible ASCII strings") from None
            raise Invalid(_URLS_EXPECTED) from None
    try:
        return _url(item), None
    except Invalid:
        raise Invalid(_URLS_EXPECTED) from None


def _urls(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise Invalid("an array of URL strings")
    return tuple(_endpoint(item)[0] for item in value)


def _endpoint_keys(value: object) -> tuple[tuple[str, str], ...]:
    """Return the (url, key) pairs of the ``base_urls`` entries that carry their own key."""
    assert isinstance(value, (list, tuple))
    return tuple((url, key) for url, key in map(_endpoint, value) if key is not None)


def _byte_size(value: object) -> int:
    return _int(value, minimum=1024, expected="a whole number of bytes, at least 1024")


def _optional(check: Callable[[object], Any]) -> Callable[[object], Any]:
    def optional_check(value: object) -> Any:
        return None if value is None else check(value)

    return optional_check


# One checker per field: returns the value to store (ints widened to float,
# lists to tuples) or raises Invalid. TOML has no null, so only the defaults
# and `replace` ever pass None to an optional setting.
_CHECKS: dict[str, Callable[[object], Any]] = {
    "model": _nonempty_str,
    "base_url": _optional(_url),
    "base_urls": _urls,
    "api_key": _optional(_key),
    "system": _optional(_str),
    "stream": _bool,
    "temperature": _optional(_temperature),
    "max_tokens": _optional(_positive_int),
    "reply_reserve": _positive_int,
    "context_window": _optional(_positive_int),
    "budget": _optional(_positive_int),
    "policy": _policy,
    "encoding": _optional(_nonempty_str),
    "default_encoding": _nonempty_str,
    "pin_system": _bool,
    "max_retries": _nonnegative_int,
    "timeout": _timeout,
    "history_file": _optional(_path),
    "local_model": _optional(_path),
    "evict_to": _evict_to,
    "cache_lifetime": _cache_lifetime,
    "prices": check_prices,
    "mcp": _mcp,
    "approve": _approve,
    "max_tool_steps": _nonnegative_int,
    "tool_timeout": _timeout,
    "tool_result_max_tokens": _positive_int,
    "tool_result_max_bytes": _byte_size,
    "tool_startup_timeout": _timeout,
    "tool_images": _tool_images,
    "max_reply_bytes": _byte_size,
    "log": _bool,
    "log_db": _optional(_path),
    "recall": _recall,
    "recall_budget": _optional(_positive_int),
    "instructions": _bool,
    "instructions_max_tokens": _positive_int,
    "skills": _bool,
    "docs": _paths,
    "docs_budget": _optional(_positive_int),
    "docs_db": _optional(_path),
    "embedding_model": _optional(_nonempty_str),
    "memory": _memory,
    "memory_budget": _optional(_positive_int),
}

_SECRET_FIELDS = frozenset({"api_key"})


def _without_passwords(value: object) -> object:
    """Return ``value`` (a URL, or an array or table of them) with every URL's ``user:password@`` removed."""
    if isinstance(value, str):
        return public_url(value)
    if isinstance(value, (list, tuple)):
        return [_without_passwords(item) for item in value]
    if isinstance(value, Mapping):
        return {k: "***" if k == "api_key" else _without_passwords(v) for k, v in value.items()}
    return value


def _describe(name: str, value: object) -> str:
    """Return how to show a rejected value: its type for secrets, a URL without its password, else a
    short repr."""
    if name in _SECRET_FIELDS:
        return type_name(value)
    if name in ("base_url", "base_urls"):
        return shown(_without_passwords(value))
    return shown(value)


@dataclass(frozen=True)
class Settings:
    """Every setting of stateless-chat; construct it and it is valid, or ``ConfigError`` is raised."""

    model: str = "gpt-4o-mini"
    base_url: str | None = None
    base_urls: tuple[str, ...] = ()
    api_key: str | None = field(default=None, repr=False)
    system: str | None = None
    stream: bool = True
    temperature: float | None = None
    max_tokens: int | None = None
    reply_reserve: int = 1024
    context_window: int | None = None
    budget: int | None = None
    policy: str = "drop-oldest"
    encoding: str | None = None
    default_encoding: str = "o200k_base"
    pin_system: bool = True
    max_retries: int = 2
    timeout: float = 60.0
    history_file: str | None = None
    local_model: str | None = None
    evict_to: float = 0.5
    cache_lifetime: float = 300.0
    prices: Mapping[str, Price] = field(default_factory=dict)
    mcp: Mapping[str, ServerConfig] = field(default_factory=dict)
    approve: str = "ask"
    max_tool_steps: int = 10
    tool_timeout: float = 60.0
    tool_result_max_tokens: int = 2000
    tool_result_max_bytes: int = 1024 * 1024
    tool_startup_timeout: float = 30.0
    tool_images: str = "auto"
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    # The API keys of the base_urls entries that have their own ({url = ..., api_key = ...}), as
    # (url, key) pairs: not a key of its own in the config file, never shown or saved.
    endpoint_keys: tuple[tuple[str, str], ...] = field(default=(), repr=False, metadata={"internal": True})
    log: bool = True
    log_db: str | None = None
    recall: str = "auto"
    recall_budget: int | None = None
    instructions: bool = True  # read AGENTS.md files (instructions.py)
    instructions_max_tokens: int = 4000
    skills: bool = True  # offer the skills found in the skills folders (skills.py)
    docs: tuple[str, ...] = ()  # documents retrieved from in every chat (documents.py)
    docs_budget: int | None = None
    docs_db: str | None = None
    embedding_model: str | None = None
    memory: str = "auto"
    memory_budget: int | None = None

    def __post_init__(self) -> None:
        for name, check in _CHECKS.items():
            value = getattr(self, name)
            try:
                checked = check(value)
            except Invalid as error:
                raise ConfigError(
                    f"setting {name} must be {error.expected}, got {_describe(name, value)}"
                ) from None
            if checked is not value:
                object.__setattr__(self, name, checked)
        if not self.pin_system:
            raise ConfigError(
                "pin_system = false is not supported: the system prompt is always pinned (sent with "
                "every request, never evicted); remove the setting, or drop the system prompt instead"
            )
        if self.effective_reply_reserve >= self.effective_budget:
            source = "max_tokens" if self.max_tokens is not None else "reply_reserve"
            raise ConfigError(
                f"{source} ({self.effective_reply_reserve}) leaves no room for the prompt in a budget of "
                f"{self.effective_budget} tokens (context window of {self.model}: "
                f"{self.effective_context_window}); lower {source}, or raise budget or context_window"
            )

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Return the base URLs to try, in order: ``base_urls`` if set, else the one base URL."""
        if self.base_urls:
            return self.base_urls
        return (self.base_url or DEFAULT_BASE_URL,)

    @property
    def uses_default_endpoint(self) -> bool:
        """Return True when every endpoint is OpenAI's own (so an API key is certainly required)."""
        return all(urlsplit(url).hostname == "api.openai.com" for url in self.endpoints)

    def key_for(self, url: str) -> str | None:
        """Return the API key sent to endpoint ``url``: its own from ``base_urls`` when it has one
        (``""``: none), else ``api_key``, which goes to every endpoint without a key of its own."""
        own = dict(self.endpoint_keys)
        return own[url] if url in own else self.api_key

    @property
    def missing_key(self) -> bool:
        """Return True when every endpoint is OpenAI's own and none of them has a key to send."""
        return self.uses_default_endpoint and not any(self.key_for(url) for url in self.endpoints)

    @property
    def effective_context_window(self) -> int:
        """Return ``context_window`` if set, else the known window of ``model`` (8192 if unknown)."""
        return self.context_window if self.context_window is not None else context_window_for(self.model)

    @property
    def effective_reply_reserve(self) -> int:
        """Return the tokens kept free for the reply: ``max_tokens`` when set, else ``reply_reserve``."""
        return self.max_tokens if self.max_tokens is not None else self.reply_reserve

    @property
    def effective_budget(self) -> int:
        """Return the token budget of one request: the prompt plus the reply reserve.

        That is ``budget`` (default 32000) capped at the context window, since the
        server rejects more than that. The prompt may use this minus
        ``effective_reply_reserve``, which construction guarantees is at least 1.
        """
        wanted = self.budget if self.budget is not None else DEFAULT_BUDGET
        return min(wanted, self.effective_context_window)

    def recall_room(self, budget: int) -> int:
        """Return the most tokens auto recall may add to one request of ``budget`` tokens:
        ``recall_budget``, else a tenth of the budget."""
        return self.recall_budget if self.recall_budget is not None else budget // 10

    def docs_room(self, budget: int) -> int:
        """Return the most tokens retrieved documents may add to one request of ``budget`` tokens:
        ``docs_budget``, else a tenth of the budget."""
        return self.docs_budget if self.docs_budget is not None else budget // 10

    def memory_room(self, budget: int) -> int:
        """Return the most tokens the standing memory may take in a request of ``budget`` tokens:
        ``memory_budget``, else a tenth of the budget."""
        return self.memory_budget if self.memory_budget is not None else budget // 10

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied; raises ``ConfigError`` if the result is invalid."""
        unknown = sorted(set(changes) - set(_CHECKS))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]}{_suggestion(unknown[0], _CHECKS)}")
        return dataclasses.replace(self, **changes)


def _suggestion(key: str, choices: Mapping[str, object]) -> str:
    matches = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def _shown(path: Path) -> str:
    """Return ``path`` for a one-line message: as is, or as a repr if it holds a newline or other control."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def _xdg_dir(env: Mapping[str, str], variable: str, fallback: tuple[str, ...]) -> Path:
    # The XDG spec says a relative path in these variables is invalid and must be ignored.
    value = env.get(variable, "")
    if value and Path(value).is_absolute():
        return Path(value) / APP_NAME
    home = env.get("HOME") or str(Path.home())
    return Path(home).joinpath(*fallback, APP_NAME)


def default_config_path(env: Mapping[str, str]) -> Path:
    """Return ``$XDG_CONFIG_HOME/stateless-chat/config.toml``, else ``~/.config/stateless-chat/...``."""
    return _xdg_dir(env, "XDG_CONFIG_HOME", (".config",)) / "config.toml"


def default_data_dir(env: Mapping[str, str]) -> Path:
    """Return ``$XDG_DATA_HOME/stateless-chat``, else ``~/.local/share/stateless-chat``."""
    return _xdg_dir(env, "XDG_DATA_HOME", (".local", "share"))


def log_db_path(settings: Settings, env: Mapping[str, str]) -> Path:
    """Return where the conversation log lives: ``log_db`` (``~`` expanded) or ``logs.db`` in the data dir."""
    if settings.log_db is not None:
        return Path(settings.log_db).expanduser()
    return default_data_dir(env) / "logs.db"


def docs_db_path(settings: Settings, env: Mapping[str, str]) -> Path:
    """Return where the documents' index lives: ``docs_db`` (``~`` expanded), else ``docs.db`` in the
    data dir."""
    if settings.docs_db is not None:
        return Path(settings.docs_db).expanduser()
    return default_data_dir(env) / "docs.db"


def input_history_path(settings: Settings, env: Mapping[str, str]) -> Path:
    """Return where the REPL keeps its input history: ``history_file`` (``~`` expanded) or the data dir."""
    if settings.history_file is not None:
        return Path(settings.history_file).expanduser()
    return default_data_dir(env) / "input_history"


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def _cannot_read(path: Path, error: OSError) -> ConfigError:
    return ConfigError(f"cannot read config file {_shown(path)}: {error.strerror or error}")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise _cannot_read(path, error) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{_shown(path)}: larger than {MAX_CONFIG_BYTES:,} bytes: not a config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{_shown(path)}: config file is not valid UTF-8") from None
    try:
        return tomllib.loads(text)
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(f"{_shown(path)}: invalid TOML: nested too deeply") from None
    except ValueError as error:  # TOMLDecodeError, or int() refusing an integer of over 4,300 digits
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        position = _TOML_POSITION.search(message)
        if position is None:
            raise ConfigError(f"{_shown(path)}: invalid TOML: {message}") from None
        line, column = position.groups()
        reason = message[: position.start()]
        raise ConfigError(f"{_shown(path)}, line {line}, column {column}: invalid TOML: {reason}") from None


def _file_layer(path: Path) -> dict[str, object]:
    """Return the validated settings of the config file at ``path``."""
    raw = _read_toml(path)
    layer: dict[str, object] = {}
    for key, value in raw.items():
        check = _CHECKS.get(key)
        if check is None:
            raise ConfigError(f"{_shown(path)}: unknown key {key!r}{_suggestion(key, _CHECKS)}")
        try:
            layer[key] = check(value)
            if key == "base_urls":
                layer["endpoint_keys"] = _endpoint_keys(value)
        except Invalid as error:
            raise ConfigError(
                f"{_shown(path)}: {key!r} must be {error.expected}, got {_describe(key, value)}"
            ) from None
    if "base_url" in layer and "base_urls" in layer:
        raise ConfigError(f"{_shown(path)}: set either 'base_url' or 'base_urls', not both")
    return layer


# Environment variable -> (setting, parser of the string). Empty values are ignored,
# so `OPENAI_BASE_URL=` in a shell means "not set".
_ENV: dict[str, str] = {
    "OPENAI_API_KEY": "api_key",
    "OPENAI_BASE_URL": "base_url",
    "STATELESS_CHAT_MODEL": "model",
    "STATELESS_CHAT_BUDGET": "budget",
    "STATELESS_CHAT_POLICY": "policy",
}


def _env_layer(env: Mapping[str, str]) -> dict[str, object]:
    """Return the validated settings given by environment variables."""
    layer: dict[str, object] = {}
    for variable, name in _ENV.items():
        text = env.get(variable, "")
        if not text.strip():
            continue
        value: object = text
        if name == "budget" and re.fullmatch(r"\s*[0-9]{1,18}\s*", text):  # longer is no budget anyway
            value = int(text)
        try:
            layer[name] = _CHECKS[name](value)
        except Invalid as error:
            raise ConfigError(
                f"environment variable {variable} must be {error.expected}, got {_describe(name, text)}"
            ) from None
    return layer


def _flag_name(name: str) -> str:
    if name in ("stream", "log", "instructions"):
        return f"--no-{name}"
    return "--" + name.replace("_", "-")


def _flag_layer(flags: Mapping[str, object]) -> dict[str, object]:
    """Return the validated settings given as flags; a repeated ``--base-url`` becomes ``base_urls``."""
    layer: dict[str, object] = {}
    for name, value in flags.items():
        if value is None:
            continue
        check = _CHECKS.get(name)
        if check is None:
            raise UsageError(f"unknown option {_flag_name(name)}")
        if name == "base_url" and isinstance(value, (list, tuple)):
            if not value:
                continue
            if len(value) > 1:
                name, check = "base_urls", _CHECKS["base_urls"]
            else:
                value = value[0]
        try:
            layer[name] = check(value)
        except Invalid as error:
            flag = _flag_name("base_url" if name == "base_urls" else name)
            raise UsageError(f"{flag} must be {error.expected}, got {_describe(name, value)}") from None
    return layer


def _apply(settings: dict[str, Any], layer: Mapping[str, object]) -> None:
    # A later layer that names an endpoint replaces the earlier endpoint(s) of either form.
    if "base_url" in layer or "base_urls" in layer:
        settings.pop("base_url", None)
        settings.pop("base_urls", None)
        settings.pop("endpoint_keys", None)
    settings.update(layer)


def _config_file_exists(path: Path, *, required: bool) -> bool:
    """Return whether ``path`` is a regular file; a ``required`` one that is not is a ``ConfigError``.

    Any other failure to look (permission denied, a name too long) is a ``ConfigError`` too.
    """
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        if required:
            raise ConfigError(f"config file {_shown(path)} does not exist") from None
        return False
    except OSError as error:
        raise _cannot_read(path, error) from None
    if stat.S_ISREG(mode):
        return True
    if required:
        raise ConfigError(f"config file {_shown(path)} is not a file")
    return False


def load_settings(
    config_path: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, object],
    given: set[str] | None = None,
) -> Settings:
    """Return the settings from defaults < config file < environment < flags.

    ``config_path`` must exist when given; without it the default path is read if
    present. ``flags`` holds the flags the user gave, keyed by field name (None
    values are ignored). Raises ``ConfigError`` for a bad file or environment
    value, ``UsageError`` for a bad flag value. ``given``, when passed, receives the
    names of the settings that some layer set (the rest are defaults).
    """
    path = config_path if config_path is not None else default_config_path(env)
    merged: dict[str, Any] = {}
    if _config_file_exists(path, required=config_path is not None):
        _apply(merged, _file_layer(path))
    _apply(merged, _env_layer(env))
    _apply(merged, _flag_layer(flags))
    settings = Settings(**merged)
    if given is not None:
        given.update(merged)
    # From here on, no message, traceback or echo of this run shows these (``errors.redact``).
    for secret in (settings.api_key, *(key for _, key in settings.endpoint_keys),
                   *(url_password(url) for url in settings.endpoints)):
        keep_secret(secret)
    return settings
