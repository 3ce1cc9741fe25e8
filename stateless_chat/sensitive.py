"""Files that look like secrets: keys, password stores, environment files.

``/file`` sends a file's whole text to the server with every request until it is evicted. It
still adds such a file (the user may mean it), but says first what it looks like, so that
``/etc/shadow`` or an ``id_rsa`` typed by mistake is not sent without a word.
"""

from __future__ import annotations

import fnmatch
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


__all__ = ["secret_reason"]
