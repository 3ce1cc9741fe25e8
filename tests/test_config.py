"""Settings: precedence, file discovery, validation and derived values."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from stateless_chat.config import (
    DEFAULT_BASE_URL,
    Settings,
    context_window_for,
    default_config_path,
    default_data_dir,
    input_history_path,
    load_settings,
)
from stateless_chat.errors import ConfigError, UsageError

REPO = Path(__file__).resolve().parent.parent
SECRET = "sk-test-0123456789abcdefSECRET"


@pytest.fixture
def xdg(tmp_path: Path) -> dict[str, str]:
    """An environment whose config and data dirs live under tmp_path (never the real home)."""
    return {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }


def write_default_config(env: dict[str, str], text: str) -> Path:
    path = default_config_path(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write(tmp_path: Path, text: str, name: str = "custom.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- precedence -----------------------------------------------------------------------------


def test_no_file_no_env_no_flags_gives_defaults(xdg: dict[str, str]) -> None:
    assert load_settings(None, xdg, {}) == Settings()


@pytest.mark.parametrize(
    ("name", "variable", "values"),
    [
        ("model", "STATELESS_CHAT_MODEL", ("file-model", "env-model", "flag-model")),
        ("base_url", "OPENAI_BASE_URL", ("http://file.test/v1", "http://env.test/v1", "http://flag.test/v1")),
        ("api_key", "OPENAI_API_KEY", ("file-key", "env-key", "flag-key")),
    ],
)
def test_precedence_default_file_env_flag(
    xdg: dict[str, str], name: str, variable: str, values: tuple[str, str, str]
) -> None:
    from_file, from_env, from_flag = values
    default = getattr(Settings(), name)
    assert getattr(load_settings(None, xdg, {}), name) == default

    write_default_config(xdg, f'{name} = "{from_file}"\n')
    assert getattr(load_settings(None, xdg, {}), name) == from_file

    env = {**xdg, variable: from_env}
    assert getattr(load_settings(None, env, {}), name) == from_env

    assert getattr(load_settings(None, env, {name: from_flag}), name) == from_flag
    # A flag that was not given (None) leaves the lower layers alone.
    assert getattr(load_settings(None, env, {name: None}), name) == from_env


def test_file_values_survive_unrelated_env_and_flags(xdg: dict[str, str]) -> None:
    write_default_config(xdg, 'model = "m1"\nbudget = 5000\npolicy = "summarize"\n')
    settings = load_settings(None, {**xdg, "OPENAI_API_KEY": "k"}, {"temperature": 0.5})
    assert (settings.model, settings.budget, settings.policy) == ("m1", 5000, "summarize")
    assert settings.api_key == "k"
    assert settings.temperature == 0.5


def test_empty_environment_variables_are_ignored(xdg: dict[str, str]) -> None:
    write_default_config(xdg, 'model = "from-file"\n')
    settings = load_settings(None, {**xdg, "STATELESS_CHAT_MODEL": "", "OPENAI_BASE_URL": ""}, {})
    assert settings.model == "from-file"
    assert settings.base_url is None


def test_env_budget_and_policy_are_coerced(xdg: dict[str, str]) -> None:
    env = {**xdg, "STATELESS_CHAT_BUDGET": "5000", "STATELESS_CHAT_POLICY": "none"}
    settings = load_settings(None, env, {})
    assert settings.budget == 5000
    assert settings.policy == "none"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STATELESS_CHAT_BUDGET", "lots"),
        ("STATELESS_CHAT_BUDGET", "0"),
        ("STATELESS_CHAT_POLICY", "drop-newest"),
        ("OPENAI_BASE_URL", "localhost:8080"),
    ],
)
def test_bad_env_value_names_the_variable(xdg: dict[str, str], variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(None, {**xdg, variable: value}, {})


# --- file discovery -------------------------------------------------------------------------


def test_default_path_follows_xdg_config_home(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "HOME": str(tmp_path / "home")}
    assert default_config_path(env) == tmp_path / "cfg" / "stateless-chat" / "config.toml"
    write_default_config(env, 'model = "discovered"\n')
    assert load_settings(None, env, {}).model == "discovered"


def test_default_path_falls_back_to_home(tmp_path: Path) -> None:
    expected = tmp_path / ".config" / "stateless-chat" / "config.toml"
    assert default_config_path({"HOME": str(tmp_path)}) == expected
    # A relative XDG path is invalid per the XDG spec and ignored.
    assert default_config_path({"HOME": str(tmp_path), "XDG_CONFIG_HOME": "rel/cfg"}) == expected


def test_default_data_dir(tmp_path: Path) -> None:
    assert default_data_dir({"XDG_DATA_HOME": str(tmp_path / "d")}) == tmp_path / "d" / "stateless-chat"
    assert default_data_dir({"HOME": str(tmp_path)}) == tmp_path / ".local" / "share" / "stateless-chat"


def test_input_history_path(xdg: dict[str, str], tmp_path: Path) -> None:
    assert input_history_path(Settings(), xdg) == tmp_path / "data" / "stateless-chat" / "input_history"
    chosen = tmp_path / "hist"
    assert input_history_path(Settings(history_file=str(chosen)), xdg) == chosen


def test_explicit_path_is_used_instead_of_default(xdg: dict[str, str], tmp_path: Path) -> None:
    write_default_config(xdg, 'model = "default-file"\n')
    explicit = write(tmp_path, 'model = "explicit-file"\n')
    assert load_settings(explicit, xdg, {}).model == "explicit-file"


def test_explicit_missing_path_is_an_error(xdg: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_settings(missing, xdg, {})


def test_explicit_directory_is_an_error(xdg: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a file"):
        load_settings(tmp_path, xdg, {})


# --- file validation ------------------------------------------------------------------------


def test_malformed_toml_names_file_and_line(xdg: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path, 'model = "ok"\nbudget = 100\npolicy = = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, xdg, {})
    message = str(caught.value)
    assert str(path) in message
    assert "line 3" in message
    assert "\n" not in message


def test_unknown_key_names_key_and_suggests(xdg: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path, 'modle = "gpt-4o"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, xdg, {})
    message = str(caught.value)
    assert str(path) in message
    assert "'modle'" in message
    assert "did you mean 'model'?" in message


def test_unknown_key_without_close_match_has_no_suggestion(xdg: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path, "zzzzzz = 1\n")
    with pytest.raises(ConfigError, match="'zzzzzz'") as caught:
        load_settings(path, xdg, {})
    assert "did you mean" not in str(caught.value)


def test_table_is_an_unknown_key(xdg: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path, '[openai]\nmodel = "x"\n')
    with pytest.raises(ConfigError, match="unknown key 'openai'"):
        load_settings(path, xdg, {})


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ('temperature = "hot"', "temperature", "number"),
        ("budget = true", "budget", "positive integer"),
        ("budget = 1.5", "budget", "positive integer"),
        ("stream = 1", "stream", "boolean"),
        ("model = 5", "model", "string"),
        ('base_urls = "http://a.test/v1"', "base_urls", "array"),
        ('base_urls = ["http://a.test/v1", 3]', "base_urls", "array"),
        ("timeout = false", "timeout", "number"),
        ("max_retries = -1", "max_retries", "non-negative integer"),
        ('pin_system = "yes"', "pin_system", "boolean"),
    ],
)
def test_wrong_type_names_file_key_and_type(
    xdg: dict[str, str], tmp_path: Path, line: str, key: str, expected: str
) -> None:
    path = write(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, xdg, {})
    message = str(caught.value)
    assert str(path) in message
    assert repr(key) in message
    assert expected in message


def test_ints_are_accepted_for_floats(xdg: dict[str, str], tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "temperature = 1\ntimeout = 30\n"), xdg, {})
    assert settings.temperature == 1.0 and isinstance(settings.temperature, float)
    assert settings.timeout == 30.0 and isinstance(settings.timeout, float)


@pytest.mark.parametrize("key", ["budget", "context_window", "max_tokens"])
@pytest.mark.parametrize("value", ["0", "-5"])
def test_counts_must_be_positive(xdg: dict[str, str], tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}' must be a positive integer"):
        load_settings(write(tmp_path, f"{key} = {value}\n"), xdg, {})


def test_bad_policy_in_file(xdg: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="drop-oldest, summarize, none"):
        load_settings(write(tmp_path, 'policy = "drop_oldest"\n'), xdg, {})


@pytest.mark.parametrize("policy", ["drop-oldest", "summarize", "none"])
def test_every_policy_is_accepted(xdg: dict[str, str], tmp_path: Path, policy: str) -> None:
    assert load_settings(write(tmp_path, f'policy = "{policy}"\n'), xdg, {}).policy == policy


def test_base_url_and_base_urls_together_is_an_error(xdg: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path, 'base_url = "http://a.test/v1"\nbase_urls = ["http://b.test/v1"]\n')
    with pytest.raises(ConfigError, match="not both"):
        load_settings(path, xdg, {})


def test_non_utf8_file_is_a_config_error(xdg: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'system = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_settings(path, xdg, {})


# --- flags ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        ({"budget": 0}, "--budget"),
        ({"max_tokens": -3}, "--max-tokens"),
        ({"policy": "oldest"}, "--policy"),
        ({"temperature": 3.5}, "--temperature"),
        ({"base_url": ["ftp://x.test"]}, "--base-url"),
        ({"base_url": ["http://a.test/v1", "nope"]}, "--base-url"),
        ({"stream": "no"}, "--no-stream"),
    ],
)
def test_bad_flag_value_names_the_flag(xdg: dict[str, str], flags: dict[str, object], flag: str) -> None:
    with pytest.raises(UsageError, match=re.escape(flag)) as caught:
        load_settings(None, xdg, flags)
    assert "\n" not in str(caught.value)


def test_flags_override_file(xdg: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path, 'policy = "none"\nstream = true\nbudget = 9000\n')
    settings = load_settings(path, xdg, {"policy": "summarize", "stream": False, "budget": 2000})
    assert (settings.policy, settings.stream, settings.budget) == ("summarize", False, 2000)


# --- secrets --------------------------------------------------------------------------------


def test_repr_and_str_hide_the_api_key() -> None:
    settings = Settings(api_key=SECRET)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert settings.api_key == SECRET


def test_errors_never_contain_the_api_key(xdg: dict[str, str], tmp_path: Path) -> None:
    env = {**xdg, "OPENAI_API_KEY": SECRET}
    with pytest.raises(UsageError) as from_flag:
        load_settings(None, env, {"budget": -1})
    with pytest.raises(ConfigError) as from_file:
        load_settings(write(tmp_path, f'api_key = "{SECRET}"\npolicy = "x"\n'), env, {})
    with pytest.raises(ConfigError) as from_replace:
        Settings(api_key=SECRET).replace(timeout=0)
    with pytest.raises(ConfigError) as wrong_key_type:
        Settings(api_key=[SECRET])  # type: ignore[arg-type]
    for caught in (from_flag, from_file, from_replace, wrong_key_type):
        assert SECRET not in str(caught.value)


# --- derived values -------------------------------------------------------------------------


def test_endpoints_default() -> None:
    settings = Settings()
    assert settings.endpoints == (DEFAULT_BASE_URL,)
    assert settings.uses_default_endpoint


def test_endpoints_single_and_failover() -> None:
    local = Settings(base_url="http://127.0.0.1:8080/v1")
    assert local.endpoints == ("http://127.0.0.1:8080/v1",)
    assert not local.uses_default_endpoint
    failover = Settings(base_urls=("http://127.0.0.1:1/v1", DEFAULT_BASE_URL))
    assert failover.endpoints == ("http://127.0.0.1:1/v1", DEFAULT_BASE_URL)
    assert not failover.uses_default_endpoint
    assert Settings(base_url="https://api.openai.com/v1/").uses_default_endpoint


def test_base_urls_from_file_become_a_tuple(xdg: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path, 'base_urls = ["http://a.test/v1", "http://b.test/v1"]\n')
    settings = load_settings(path, xdg, {})
    assert settings.base_urls == ("http://a.test/v1", "http://b.test/v1")
    assert settings.endpoints == settings.base_urls


def test_repeated_base_url_flag_sets_failover_list(xdg: dict[str, str]) -> None:
    several = load_settings(None, xdg, {"base_url": ["http://a.test/v1", "http://b.test/v1"]})
    assert several.endpoints == ("http://a.test/v1", "http://b.test/v1")
    one = load_settings(None, xdg, {"base_url": ["http://a.test/v1"]})
    assert (one.base_url, one.base_urls) == ("http://a.test/v1", ())
    none_given = load_settings(None, xdg, {"base_url": []})
    assert none_given.endpoints == (DEFAULT_BASE_URL,)


def test_higher_layer_endpoint_replaces_lower_failover_list(xdg: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path, 'base_urls = ["http://a.test/v1", "http://b.test/v1"]\n')
    from_env = load_settings(path, {**xdg, "OPENAI_BASE_URL": "http://env.test/v1"}, {})
    assert from_env.endpoints == ("http://env.test/v1",)
    from_flag = load_settings(path, xdg, {"base_url": "http://flag.test/v1"})
    assert from_flag.endpoints == ("http://flag.test/v1",)


def test_budget_defaults_to_32000_within_a_large_window() -> None:
    settings = Settings(model="gpt-4o-mini")
    assert settings.effective_context_window == 128000
    assert settings.effective_budget == 32000


def test_budget_is_capped_by_the_context_window() -> None:
    small = Settings(model="gpt-4")
    assert small.effective_context_window == 8192
    assert small.effective_budget == 8192
    assert Settings(model="gpt-4", budget=100000).effective_budget == 8192
    assert Settings(model="gpt-4", budget=4000).effective_budget == 4000


def test_explicit_budget_and_context_window() -> None:
    assert Settings(budget=5000).effective_budget == 5000
    assert Settings(budget=50000).effective_budget == 50000
    custom = Settings(model="my-local-model", context_window=4096)
    assert custom.effective_context_window == 4096
    assert custom.effective_budget == 4096
    assert Settings(model="my-local-model").effective_budget == 8192


def test_reply_reserve_is_max_tokens_when_set() -> None:
    assert Settings().effective_reply_reserve == 1024
    assert Settings(max_tokens=300).effective_reply_reserve == 300
    assert Settings(reply_reserve=700).effective_reply_reserve == 700


def test_reserve_that_fills_the_budget_is_rejected() -> None:
    with pytest.raises(ConfigError, match="max_tokens"):
        Settings(model="gpt-4", max_tokens=8192)
    with pytest.raises(ConfigError, match="reply_reserve"):
        Settings(context_window=1000, reply_reserve=1000)
    with pytest.raises(ConfigError, match="budget"):
        Settings(budget=1000)  # the default reply reserve is 1024
    assert Settings(budget=1025).effective_budget == 1025


def test_reserve_check_applies_to_loaded_settings(xdg: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path, "budget = 2000\n")
    with pytest.raises(ConfigError, match="max_tokens"):
        load_settings(path, xdg, {"max_tokens": 2000})


def test_replace_is_validated() -> None:
    settings = Settings()
    assert settings.replace(model="gpt-4").model == "gpt-4"
    assert settings.model == "gpt-4o-mini"
    with pytest.raises(ConfigError, match="policy"):
        settings.replace(policy="bogus")
    with pytest.raises(ConfigError, match="did you mean 'budget'"):
        settings.replace(budgett=10)
    assert settings.replace(temperature=1).temperature == 1.0


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("gpt-4o", 128000),
        ("gpt-4o-mini", 128000),
        ("gpt-4o-2024-08-06", 128000),
        ("gpt-4.1", 1047576),
        ("gpt-4.1-mini", 1047576),
        ("gpt-4-turbo", 128000),
        ("gpt-4-turbo-2024-04-09", 128000),
        ("gpt-4", 8192),
        ("gpt-4-0613", 8192),
        ("gpt-3.5-turbo", 16385),
        ("o1", 200000),
        ("o3-mini", 200000),
        ("o4-mini", 200000),
        ("gpt-5", 400000),
        ("gpt-5-mini", 400000),
        ("deepseek-chat", 128000),
        ("deepseek-reasoner", 128000),
        ("llama3", 8192),
        ("llama3:8b", 8192),
        ("llama3.1:8b", 131072),
        ("openai/gpt-4o", 128000),
        ("GPT-4O", 128000),
        ("totally-unknown", 8192),
        ("gpt-4x", 8192),
        ("o10", 8192),
    ],
)
def test_context_window_table(model: str, window: int) -> None:
    assert context_window_for(model) == window


# --- the example config ---------------------------------------------------------------------


def example_keys() -> set[str]:
    text = (REPO / "config.example.toml").read_text(encoding="utf-8")
    return set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, flags=re.MULTILINE))


def test_example_config_loads(xdg: dict[str, str]) -> None:
    settings = load_settings(REPO / "config.example.toml", xdg, {})
    assert isinstance(settings, Settings)


def test_example_config_sets_some_real_keys() -> None:
    text = (REPO / "config.example.toml").read_text(encoding="utf-8")
    live = re.findall(r"^([a-z_]+)\s*=", text, flags=re.MULTILINE)
    assert len(live) >= 3


def test_example_config_documents_every_setting() -> None:
    fields = {f.name for f in dataclasses.fields(Settings) if not f.metadata.get("internal")}
    keys = example_keys()
    assert fields - keys == set()
    assert keys - fields == set()


def test_example_config_comments_every_setting() -> None:
    lines = (REPO / "config.example.toml").read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"^#?\s*([a-z_]+)\s*=", line)
        if match is None:
            continue
        above = lines[index - 1] if index else ""
        # Each key is preceded by a comment line (a description or the key's commented-out form).
        assert above.startswith("#"), f"{match.group(1)} has no comment above it"


def test_example_commented_values_are_valid_too(xdg: dict[str, str], tmp_path: Path) -> None:
    """Uncommenting any single example line must still give a valid config."""
    text = (REPO / "config.example.toml").read_text(encoding="utf-8")
    commented = re.findall(r"^# ?([a-z_]+ = .+)$", text, flags=re.MULTILINE)
    assert commented, "the example shows no commented-out settings"
    live = [line for line in text.splitlines() if re.match(r"^[a-z_]+\s*=", line)]
    live_keys = {line.split("=")[0].strip() for line in live}
    for line in commented:
        key = line.split("=")[0].strip()
        if key in live_keys:
            continue
        path = write(tmp_path, "\n".join([*live, line]) + "\n", name=f"{key}.toml")
        load_settings(path, xdg, {})


# --- hostile values: always a one-line ConfigError, never a traceback ------------------------


def test_integer_too_long_to_convert_is_a_config_error(xdg: dict[str, str], tmp_path: Path) -> None:
    """Python refuses to convert integers of over 4,300 digits; tomllib lets that ValueError out."""
    path = write(tmp_path, "budget = 1" + "0" * 5000 + "\n")
    with pytest.raises(ConfigError, match=re.escape(str(path))) as from_file:
        load_settings(path, xdg, {})
    with pytest.raises(ConfigError, match="STATELESS_CHAT_BUDGET") as from_env:
        load_settings(None, {**xdg, "STATELESS_CHAT_BUDGET": "1" + "0" * 5000}, {})
    for caught in (from_file, from_env):
        assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


def test_a_config_path_that_cannot_be_looked_at_is_a_config_error(xdg: dict[str, str]) -> None:
    too_long = Path("a" * 5000)  # stat fails with ENAMETOOLONG, which Path.is_file does not swallow
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(too_long, xdg, {})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(None, {**xdg, "XDG_CONFIG_HOME": "/" + "a" * 5000}, {})


def test_a_path_with_a_newline_is_shown_on_one_line(xdg: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "two\nlines.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(missing, xdg, {})
    assert "\n" not in str(caught.value) and "two\\nlines.toml" in str(caught.value)


@pytest.mark.parametrize("key", ["history_file", "local_model"])
@pytest.mark.parametrize("value", ["~no-such-user-for-stateless-chat/file", "a\\u0000b"])
def test_a_path_setting_that_cannot_be_used_names_the_key(
    xdg: dict[str, str], tmp_path: Path, key: str, value: str
) -> None:
    path = write(tmp_path, f'{key} = "{value}"\n')
    with pytest.raises(ConfigError, match=f"'{key}' must be a file path") as caught:
        load_settings(path, xdg, {})
    assert "\n" not in str(caught.value)
    assert input_history_path(Settings(history_file="~/h"), {}) == Path.home() / "h"


def test_a_timeout_the_clock_cannot_hold_is_refused(xdg: dict[str, str], tmp_path: Path) -> None:
    """httpx fails every request with OverflowError past ~1e10 s: '1e99, for never' is refused up front."""
    with pytest.raises(ConfigError, match="'timeout' must be a positive number of seconds"):
        load_settings(write(tmp_path, "timeout = 1e99\n"), xdg, {})
    assert load_settings(write(tmp_path, "timeout = 86400\n"), xdg, {}).timeout == 86400.0


@pytest.mark.parametrize(
    "text",
    ["budget = 1" + "0" * 5000, 'history_file = "~no-such-user-for-stateless-chat/h"', "timeout = 1e9"],
    ids=["long-int", "unknown-user", "huge-timeout"],
)
def test_config_errors_through_the_cli_are_one_line_with_exit_2(tmp_path: Path, text: str) -> None:
    from tests.support import run_cli

    path = write(tmp_path, text)
    done = run_cli("--config", str(path), "--base-url", "http://127.0.0.1:9/v1", "hi")
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.decode().splitlines()) == 1 and str(path) in done.stderr.decode()
