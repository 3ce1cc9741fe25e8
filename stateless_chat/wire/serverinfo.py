"""The context size a server says it has: read where servers say it, before the chat begins.

With ``--base-url`` and no model named, nothing tells the client how long a request may be:
the model table knows names, not servers, and the default budget (32,000) is larger than many
local servers' context. Servers say it in different places:

- ``GET /v1/models``: vLLM lists ``max_model_len`` for each model; OpenRouter, LiteLLM and
  others ``context_length``; Groq ``context_window``; LM Studio ``max_context_length``; llama.cpp's
  ``llama-server`` puts ``n_ctx_train`` (the trained context) under ``meta``.
- ``GET /props`` (at the server's root, beside ``/v1``): llama.cpp's ``llama-server`` gives the
  context it runs with, ``default_generation_settings.n_ctx``.

The entry read is the one for the configured model, else the only model listed. The figure
comes back with where it was read, for the user to see. llama-cpp-python's server (the one the
``[local]`` extra bundles) says it nowhere: for it, the context-length recovery learns it from
the first refusal instead.

Plain ``urllib`` with no redirects (the API key must not follow one to another host), a short
timeout and a cap on what is read: this runs once, before the chat, and must never hang it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from stateless_chat.sanitize import public_url

TIMEOUT = 3.0
MAX_BYTES = 4_000_000  # a long model list (OpenRouter's is ~1 MB) fits; anything else is not a model list
# Keys of a /v1/models entry that hold the context size the model is served with, by server.
ENTRY_KEYS = ("max_model_len", "context_length", "context_window", "max_context_length", "n_ctx")


@dataclass(frozen=True)
class ContextSize:
    """A context size and where it was read (``"max_model_len in 127.0.0.1:8000/v1/models"``)."""

    tokens: int
    source: str


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is answered as the error it is


def _get_json(url: str, api_key: str | None, timeout: float) -> object:
    """Return the JSON at ``url``, or None when it cannot be fetched or read."""
    opener = urllib.request.build_opener(_NoRedirects())
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with opener.open(request, timeout=timeout) as response:
            data = response.read(MAX_BYTES + 1)
    except (OSError, ValueError, urllib.error.HTTPError):  # refused, 404, timeout, a bad URL
        return None
    if len(data) > MAX_BYTES:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def _positive(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def pick_entry(listing: object, model: str | None) -> Mapping[str, Any] | None:
    """Return the entry of ``model`` in a ``/v1/models`` listing, else the only entry, else None."""
    data = listing.get("data") if isinstance(listing, Mapping) else None
    if not isinstance(data, list):
        return None
    entries = [entry for entry in data if isinstance(entry, Mapping)]
    if model is not None:
        for entry in entries:
            if entry.get("id") == model:
                return entry
    return entries[0] if len(entries) == 1 else None


def from_entry(entry: Mapping[str, Any]) -> tuple[int, str] | None:
    """Return the context size a ``/v1/models`` entry gives and its key, else None."""
    for key in ENTRY_KEYS:
        tokens = _positive(entry.get(key))
        if tokens is not None:
            return tokens, key
    meta = entry.get("meta")
    if isinstance(meta, Mapping):
        tokens = _positive(meta.get("n_ctx"))
        if tokens is not None:
            return tokens, "meta.n_ctx"
    return None


def from_props(props: object) -> int | None:
    """Return the context size in llama.cpp's ``/props``, else None."""
    if not isinstance(props, Mapping):
        return None
    settings = props.get("default_generation_settings")
    if isinstance(settings, Mapping) and _positive(settings.get("n_ctx")) is not None:
        return _positive(settings.get("n_ctx"))
    return _positive(props.get("n_ctx"))


def root_of(base_url: str) -> str:
    """Return the server's root for ``base_url``: its path without a trailing ``/v1``."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def learn_context(
    base_url: str, model: str | None, api_key: str | None = None, *, timeout: float = TIMEOUT
) -> ContextSize | None:
    """Return the context size the server at ``base_url`` says it has for ``model`` (None: the only
    model it lists), and where it said it; None when it says nothing or cannot be asked."""
    base = base_url.rstrip("/")
    shown = public_url(base)
    listing = _get_json(f"{base}/models", api_key, timeout)
    if listing is None:
        return None  # not reachable, or not an OpenAI-compatible listing: nothing more to ask
    entry = pick_entry(listing, model)
    found = from_entry(entry) if entry is not None else None
    if found is not None:
        return ContextSize(found[0], f"{found[1]} in {shown}/models")
    root = root_of(base)
    n_ctx = from_props(_get_json(f"{root}/props", api_key, timeout))
    if n_ctx is not None:
        return ContextSize(n_ctx, f"n_ctx in {public_url(root)}/props")
    meta = entry.get("meta") if entry is not None else None
    trained = _positive(meta.get("n_ctx_train")) if isinstance(meta, Mapping) else None
    if trained is not None:
        return ContextSize(trained, f"meta.n_ctx_train in {shown}/models")
    return None


__all__ = ["ContextSize", "from_entry", "from_props", "learn_context", "pick_entry", "root_of"]
