"""The server's own tokenizer, where it has one: found with one probe per endpoint, then asked.

Servers that run open models tokenize on request, at their root (beside ``/v1``):

- llama.cpp's ``llama-server``: ``POST /tokenize`` ``{"content"}`` → ``{"tokens"}``, and
  ``POST /apply-template`` ``{"messages"}`` → ``{"prompt"}``: the chat template's text for a request.
- llama-cpp-python's server (the one the ``[local]`` extra bundles): ``POST /extras/tokenize``
  ``{"input"}`` → ``{"tokens"}``. It has no template endpoint: what its template adds is read from
  the ``usage`` of small chat completions (one token of reply each).
- vLLM: ``POST /tokenize`` ``{"model", "prompt"}`` → ``{"count", "tokens", "max_model_len"}``, and
  with ``"messages"`` instead of ``"prompt"``, the count of the whole templated request.

``probe`` asks an endpoint once which of them it speaks (two requests at most, each with a short
timeout) and returns a ``ServerTokenizer`` for it, or None. ``ServerTokenizer.count`` counts a text
(without the tokens a server adds at the start of a whole prompt); ``template`` learns, from a few
requests on tiny conversations, the tokens the chat template adds to a request and to each message
(``Template``), and checks the result on one more before it is trusted.

Plain ``urllib`` as in ``serverinfo``: no redirects (the key must not follow one elsewhere), a
bounded read, and no proxy for a server on loopback. Nothing here caches or retries: ``meter`` does.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from stateless_chat.core.calibration import Template
from stateless_chat.sanitize import public_url, url_password
from stateless_chat.wire.serverinfo import root_of

Dialect = Literal["llama.cpp", "llama-cpp-python", "vllm"]
TIMEOUT = 3.0
MAX_BYTES = 8_000_000  # the token ids of a long text; more is not a tokenizer's answer
PROBE_TEXT = "Hello, world"
# The content of every message of the template probes: short, and tokenized alike alone and in place.
PROBE_CONTENT = "ok"
SPACED_CONTENT = "  ok"  # leading spaces merge with a newline before them in most tokenizers
PREFIXES = ("\n", "", " ", "\n\n")  # what chat templates put right before a message's content
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class TokenizerError(Exception):
    """The server's tokenizer did not answer, or answered something that is not a count."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _opener(url: str) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [_NoRedirects()]
    if (urlsplit(url).hostname or "") in LOOPBACK:
        handlers.append(urllib.request.ProxyHandler({}))  # a proxy from the environment is for the world
    return urllib.request.build_opener(*handlers)


def _auth_headers(base_url: str, api_key: str | None) -> dict[str, str]:
    """Return the credential the chat requests to ``base_url`` carry: Basic auth for a URL with
    ``user:password@`` (it takes the key's place, as in ``transport``), else the bearer key."""
    parts = urlsplit(base_url)
    if parts.username is not None:
        pair = f"{parts.username}:{url_password(base_url) or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _post(url: str, payload: Mapping[str, Any], headers: Mapping[str, str], timeout: float) -> object:
    """Return the JSON the server answers to ``payload`` at ``url``; ``TokenizerError`` otherwise."""
    data = json.dumps(payload).encode()
    sent = {"Content-Type": "application/json", "Accept": "application/json", **headers}
    request = urllib.request.Request(url, data=data, method="POST", headers=sent)
    try:
        with _opener(url).open(request, timeout=timeout) as response:
            body = response.read(MAX_BYTES + 1)
    except (OSError, ValueError, urllib.error.HTTPError) as error:  # refused, 404, timeout, reset
        raise TokenizerError(f"{public_url(url)}: {error}") from None
    if len(body) > MAX_BYTES:
        raise TokenizerError(f"{public_url(url)}: the answer is too large")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TokenizerError(f"{public_url(url)}: the answer is not JSON") from None


def _count_in(answer: object) -> int:
    """Return the number of tokens in a tokenize answer: its ``count``, else the length of ``tokens``."""
    if isinstance(answer, Mapping):
        count = answer.get("count")
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            return count
        tokens = answer.get("tokens")
        if isinstance(tokens, list):
            return len(tokens)
    raise TokenizerError("the answer holds no tokens")


class ServerTokenizer:
    """One endpoint's tokenizer, spoken to in its ``dialect``."""

    def __init__(self, base_url: str, dialect: Dialect, model: str, api_key: str | None = None,
                 *, timeout: float = TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self._base = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))  # no user:password
        self.root = root_of(self._base)
        self.dialect: Dialect = dialect
        self.model = model
        self.timeout = timeout
        self._headers = _auth_headers(self.base_url, api_key)
        self._offset: int | None = None  # tokens the server adds to any text it tokenizes (a BOS)

    @property
    def name(self) -> str:
        """Return how ``/tokens`` names it: the dialect and where it answers."""
        path = {"llama.cpp": "/tokenize", "llama-cpp-python": "/extras/tokenize", "vllm": "/tokenize"}
        host = urlsplit(self._base).netloc
        return f"{self.dialect}'s {path[self.dialect]} at {host}"

    def _tokenize(self, text: str) -> int:
        if self.dialect == "llama-cpp-python":
            answer = _post(f"{self.root}/extras/tokenize", {"input": text, "model": self.model},
                           self._headers, self.timeout)
        elif self.dialect == "vllm":
            answer = _post(f"{self.root}/tokenize",
                           {"model": self.model, "prompt": text, "add_special_tokens": False},
                           self._headers, self.timeout)
        else:
            answer = _post(f"{self.root}/tokenize", {"content": text, "add_special": False}, self._headers,
                           self.timeout)
        return _count_in(answer)

    def count(self, text: str) -> int:
        """Return the tokens of ``text`` as the server counts it inside a prompt (a BOS the server's
        tokenize adds to every text is not counted). ``TokenizerError`` when it does not answer."""
        if self._offset is None:
            self._offset = self._tokenize("") if self.dialect == "llama-cpp-python" else 0
        if not text:
            return 0
        return max(0, self._tokenize(text) - self._offset)

    def prompt_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """Return the prompt tokens of a request carrying ``messages``, as the server counts them."""
        if self.dialect == "vllm":
            answer = _post(f"{self.root}/tokenize",
                           {"model": self.model, "messages": list(messages), "add_generation_prompt": True},
                           self._headers, self.timeout)
            return _count_in(answer)
        if self.dialect == "llama.cpp":
            rendered = _post(f"{self.root}/apply-template", {"messages": list(messages)}, self._headers,
                             self.timeout)
            prompt = rendered.get("prompt") if isinstance(rendered, Mapping) else None
            if not isinstance(prompt, str):
                raise TokenizerError("/apply-template answered no prompt")
            answer = _post(f"{self.root}/tokenize", {"content": prompt, "add_special": True,
                                                    "parse_special": True}, self._headers, self.timeout)
            return _count_in(answer)
        reply = _post(f"{self._base}/chat/completions",
                      {"model": self.model, "messages": list(messages), "max_tokens": 1, "temperature": 0,
                       "stream": False}, self._headers, max(self.timeout, 30.0))
        usage = reply.get("usage") if isinstance(reply, Mapping) else None
        prompt_tokens = usage.get("prompt_tokens") if isinstance(usage, Mapping) else None
        if not isinstance(prompt_tokens, int) or isinstance(prompt_tokens, bool) or prompt_tokens <= 0:
            raise TokenizerError("the chat completion reported no prompt tokens")
        return prompt_tokens

    def template(self) -> Template:
        """Return what the chat template adds, learned from tiny requests and checked on one more.

        With ``t`` the tokens of the probe content and ``P(roles)`` a request's prompt tokens:
        ``P(u,a) - P(u)`` is an assistant message, ``P(u,a,u) - P(u,a)`` a user one, ``P(s,s,u) -
        P(s,u)`` a system one (the summary follows the system prompt so), and ``P(s,u)`` and ``P(u)``
        give the request's own cost and what it adds when no system message leads. A content that
        begins with two spaces tells which text stands before contents (``PREFIXES``). Raises
        ``TokenizerError`` when the server does not answer, or when a request of six messages is not
        what those numbers predict (a template that is not this simple: then it is calibrated instead).
        """
        t = self.count(PROBE_CONTENT)

        def tokens(*roles: str, content: str = PROBE_CONTENT) -> int:
            return self.prompt_tokens([{"role": role, "content": content} for role in roles])

        u, ua, uau = tokens("user"), tokens("user", "assistant"), tokens("user", "assistant", "user")
        su, ssu = tokens("system", "user"), tokens("system", "system", "user")
        assistant = ua - u - t
        user = uau - ua - t
        system = ssu - su - t
        request = su - system - user - 2 * t
        headless = u - t - user - request
        in_place = tokens("user", content=SPACED_CONTENT) - u + t  # the spaced content where it stands
        prefix = next((p for p in PREFIXES if self.count(p + SPACED_CONTENT) - self.count(p) == in_place), "")
        roles_cost = {"system": system, "user": user, "assistant": assistant}
        template = Template(request, headless, roles_cost, prefix)
        if min(assistant, user, system, headless) < 0 or max(*roles_cost.values(), request, headless) > 500:
            raise TokenizerError(f"the template's costs make no sense ({template})")
        roles = ("system", "user", "assistant", "user", "assistant", "user")
        checked = tokens(*roles)
        if checked != template.cost(roles) + len(roles) * t:
            raise TokenizerError(f"the template is not a fixed cost per message: {checked} tokens where "
                                 f"{template.cost(roles) + len(roles) * t} were expected")
        return template


def probe(base_url: str, model: str, api_key: str | None = None, *,
          timeout: float = TIMEOUT) -> ServerTokenizer | None:
    """Return the tokenizer the endpoint at ``base_url`` serves, or None when it serves none.

    Asks ``/extras/tokenize`` (llama-cpp-python), then ``/tokenize`` with a body both llama.cpp and
    vLLM read, told apart by the answer (vLLM's has ``max_model_len``). Never raises.
    """
    for dialect in ("llama-cpp-python", "llama.cpp"):
        tokenizer = ServerTokenizer(base_url, dialect, model, api_key, timeout=timeout)
        try:
            if dialect == "llama-cpp-python":
                _count_in(_post(f"{tokenizer.root}/extras/tokenize", {"input": PROBE_TEXT, "model": model},
                                tokenizer._headers, timeout))
                return tokenizer
            answer = _post(f"{tokenizer.root}/tokenize",
                           {"content": PROBE_TEXT, "add_special": False, "model": model, "prompt": PROBE_TEXT,
                            "add_special_tokens": False}, tokenizer._headers, timeout)
            _count_in(answer)
        except TokenizerError:
            continue
        if isinstance(answer, Mapping) and "max_model_len" in answer:
            return ServerTokenizer(base_url, "vllm", model, api_key, timeout=timeout)
        return tokenizer
    return None


__all__ = ["Dialect", "ServerTokenizer", "Template", "TokenizerError", "probe"]
