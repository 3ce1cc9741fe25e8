"""Files and messages that look like secrets: keys, password stores, environment files, tokens.

``/file`` sends a file's whole text to the server with every request until it is evicted. It
still adds such a file (the user may mean it), but says first what it looks like, so that
``/etc/shadow`` or an ``id_rsa`` typed by mistake is not sent without a word. A message that
carries a key is said of likewise once it is in the conversation log (``secret_in_text``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from pathlib import Path

# Names (matched case-insensitively against the file's name) and why each looks secret.
_NAMES: tuple[tuple[str, str], ...] = (
    (".env", "an environment file (API keys, passwords)"),
    (".env.*", "an environment file (API keys, passwords)"),
    ("*.env", "an environment file (API keys, passwords)"),
    ("id_rsa", "an SSH private key"),
    ("id_dsa", "an SSH private key"),
    ("id_ecdsa", "an SSH private key"),
    ("id_ed25519", "an SSH private key"),
    ("*.pem", "a certificate or private key"),
    ("*.key", "a private key"),
    ("*.p12", "a key store"),
    ("*.pfx", "a key store"),
    ("*.keystore", "a key store"),
    ("*.jks", "a key store"),
    (".netrc", "a password file"),
    (".pgpass", "a password file"),
    (".htpasswd", "a password file"),
    ("credentials", "a credentials file"),
    ("credentials.json", "a credentials file"),
    (".git-credentials", "a credentials file"),
    ("shadow", "a password file"),
    ("gshadow", "a password file"),
    ("master.passwd", "a password file"),
)
_PRIVATE_KEY = "PRIVATE KEY-----"


def secret_reason(path: Path, text: str) -> str | None:
    """Return what ``path`` (with contents ``text``) looks like if it looks like a secret, else None."""
    name = path.name.lower()
    for pattern, reason in _NAMES:
        if fnmatch.fnmatchcase(name, pattern):
            return reason
    if _PRIVATE_KEY in text[:100_000]:
        return "it holds a private key"
    return None


# Shapes of the tokens people paste by mistake, and what each is.
_TOKENS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\bsk-(?:proj-|ant-|or-v1-)?[A-Za-z0-9_\-]{20,}"), "an API key (sk-...)"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key"),
    (re.compile(r"\b(?:ghp|gho|ghs|ghu)_[A-Za-z0-9]{36}\b|\bgithub_pat_[A-Za-z0-9_]{40,}"), "a GitHub token"),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), "a Slack token"),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"), "a Google API key"),
)
_SCANNED = 200_000  # characters of a message looked at


def secret_in_text(text: str, known: Iterable[str | None] = ()) -> str | None:
    """Return what ``text`` (a message) carries if it looks like it carries a secret, else None:
    one of the ``known`` keys (those this run uses), or a token of a well-known shape."""
    head = text[:_SCANNED]
    if any(key and len(key) >= 8 and key in head for key in known):
        return "it holds an API key this chat uses"
    for pattern, what in _TOKENS:
        if pattern.search(head):
            return f"it holds what looks like {what}"
    return None


__all__ = ["secret_in_text", "secret_reason"]
