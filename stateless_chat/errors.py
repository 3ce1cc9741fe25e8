"""The one exception tree of stateless-chat.

Every error a user can cause or meet is a ``ChatError``; the CLI catches it once,
prints ``str(error)`` as a single line on stderr and exits with ``exit_code``::

    ChatError                      base; exit_code 1
    ├── UsageError                 bad command-line use or input; exit 2
    │   ├── ConfigError            malformed config file, unknown key, wrong type; exit 2
    │   └── MissingKeyError        no API key for an endpoint that needs one; exit 2
    ├── CommandError               a slash command with a bad name or argument (REPL only)
    ├── BudgetError                pins alone, or one message, exceed the token budget
    ├── LogError                   the conversation log cannot be opened, read or written
    └── RequestError               a request to the chat API failed; exit 1
        ├── ConnectError           could not connect, or the connection broke before a reply began
        │   ├── ConnectionRefused  nothing listens at the endpoint (fail over at once)
        │   └── RequestTimeout     no answer within ``timeout``
        ├── ServerError            the server answered with an error status
        │   ├── ContextLengthError the server says the request is longer than its context
        │   ├── ParameterRejected  a 400 naming a request parameter it does not accept
        │   └── RedirectRefused    a redirect to another origin (not followed)
        └── StreamError            the reply ended early or could not be read
            ├── StreamBroke        the connection broke off mid-reply
            ├── Stalled            no token arrived within ``timeout``, whatever else did
            ├── MalformedReply     the reply is not the JSON or SSE of a chat completion
            └── ReplyTooLarge      the reply passed ``max_reply_bytes``

Errors from outside (the network, the SDK) are mapped to these by their type in
``transport``; any other exception is a bug and propagates (``--debug`` shows it).

Messages are written for the user: what happened and what to do. They never
contain an API key or a URL's password (``redact`` removes every secret this process
was given from any text that came from outside, tracebacks included).
"""

from __future__ import annotations

import re


class ChatError(Exception):
    """Base of every error stateless-chat reports to the user."""

    exit_code = 1


class UsageError(ChatError):
    """The command line, a flag value or the input cannot be used."""

    exit_code = 2


class ConfigError(UsageError):
    """The config file is malformed, has an unknown key or a value of the wrong type."""


class MissingKeyError(UsageError):
    """The endpoint needs an API key and none is configured."""


class CommandError(ChatError):
    """A slash command was unknown or got a bad argument; nothing was changed."""


class BudgetError(ChatError):
    """What must be sent (pins, system prompt, the new message) exceeds the budget.

    ``needed`` is the budget it would take, when raising the budget is a way out; the message then
    says so in the words of ``raise_budget``, which the chat and the command line complete with
    their own way to do it (``/budget N``, ``--budget N``), or take back when the context window
    is smaller than that.
    """

    def __init__(self, message: str, needed: int | None = None) -> None:
        super().__init__(message)
        self.needed = needed


# The words a budget error uses when the tools array is what takes the room; the chat and the command
# line add their own way to do it (``/tools off``, ``--no-tools``).
OFFER_FEWER_TOOLS = "offer fewer tools"


def raise_budget(needed: int) -> str:
    """Return the words every budget error uses to say that the budget must be raised to ``needed``."""
    return f"raise the budget to {needed:,}"


class LogError(ChatError):
    """The conversation log database cannot be opened, read or written; the chat itself is unaffected."""


class RequestError(ChatError):
    """A request to the chat-completions API failed; the conversation is unchanged."""


class ConnectError(RequestError):
    """The endpoint could not be reached, or did not answer in time."""


class ConnectionRefused(ConnectError):
    """Nothing listens at the endpoint: another endpoint is tried at once, without retries."""


class RequestTimeout(ConnectError):
    """The endpoint did not answer within the timeout."""


class ServerError(RequestError):
    """The endpoint answered with an error status; ``retry_after`` is its ``Retry-After`` in seconds."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Return whether sending the same request again may work (408, 409, 429 and 5xx)."""
        return self.status is not None and (self.status in (408, 409, 429) or self.status >= 500)


class ParameterRejected(ServerError):
    """The server rejected the request over one parameter it does not support (``param``)."""

    def __init__(self, message: str, param: str, status: int | None = 400) -> None:
        super().__init__(message, status)
        self.param = param


class ContextLengthError(ServerError):
    """The server rejected the request as longer than its context window.

    ``limit`` and ``requested`` are the numbers the server reported, when it did.
    """

    def __init__(
        self, message: str, status: int | None = 400, limit: int | None = None, requested: int | None = None
    ) -> None:
        super().__init__(message, status)
        self.limit = limit
        self.requested = requested


class StreamError(RequestError):
    """The reply stream ended early or could not be parsed; the partial reply is discarded."""


class StreamBroke(StreamError):
    """The connection broke off mid-reply (before the first token it is retried like a connect error)."""


class Stalled(StreamError):
    """No token arrived within the timeout, though the connection stayed open (keep-alive bytes)."""


class MalformedReply(StreamError):
    """The reply is not the JSON or server-sent events of a chat completion."""


class ReplyTooLarge(StreamError):
    """The reply passed ``max_reply_bytes``: it was cut off there and is not kept."""


class RedirectRefused(ServerError):
    """The endpoint redirected the request to another origin, which would receive the conversation."""


# A shorter "key" is a placeholder for a server that needs none ("EMPTY", "ollama", "x"): masking
# it would mangle ordinary words of a message ("localhost", "[Errno 111]").
MIN_SECRET = 8
# Every secret this process was given (API keys, URL passwords): ``redact`` masks them all, wherever
# the text came from, so no error path has to know which key belongs to which endpoint.
_SECRETS: set[str] = set()
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^\s/:@]*:)[^\s/@]+@")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}")


def keep_secret(secret: str | None) -> None:
    """Remember ``secret`` (an API key, a URL's password): ``redact`` masks it from now on."""
    if secret and len(secret.strip()) >= MIN_SECRET:
        _SECRETS.add(secret)


def redact(text: str, secret: str | None = None) -> str:
    """Return ``text`` with ``secret``, every secret given to ``keep_secret``, any bearer token and
    the password of any ``scheme://user:password@`` URL masked as ``***``."""
    secrets = set(_SECRETS)
    if secret and len(secret.strip()) >= MIN_SECRET:
        secrets.add(secret)
    for known in sorted(secrets, key=len, reverse=True):  # a key that contains another goes first
        text = text.replace(known, "***")
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _BEARER.sub(r"\1***", text)
