"""Make untrusted text safe to show in a terminal.

A reply, a loaded file, a config value or a server's error may contain escape sequences
that clear the screen, move the cursor, retitle the window or write the clipboard
(OSC 52). ``strip_controls`` removes every such sequence and every control character
except newline and tab. ``ControlStripper`` does the same for a stream whose chunks
may split a sequence. ``for_terminal`` and ``one_line`` are what every line printed
outside a reply goes through.
"""

from __future__ import annotations

import re

# OSC, DCS, SOS, PM and APC strings: a start, a body, a terminator (BEL, ST = ESC \, or C1 ST).
_STRING_START = r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])"
# Any other ESC, or a new string start, aborts a string (as in a terminal). Keeping them out of
# the body also keeps every scan linear: a body never runs past the next sequence, so a reply
# made of thousands of unterminated starts costs no more than any other text.
_STRING_BODY = r"[^\x07\x1b\x90\x98\x9c-\x9f]*"
# CSI: ESC [ params intermediates final. Other ESC sequences: ESC, optional intermediates, one
# final byte. 8-bit C1 forms too.
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI
    rf"|{_STRING_START}{_STRING_BODY}(?:\x07|\x1b\\|\x9c)"  # OSC, DCS, SOS, PM, APC
    r"|\x1b[ -/]*[0-~]"  # two-byte and nF escapes
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# A sequence that has started but not ended yet: hold it back until more arrives.
_UNFINISHED = re.compile(
    rf"{_STRING_START}{_STRING_BODY}\x1b?\Z"  # a string awaiting its terminator (ESC: maybe ST's first half)
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*\Z"  # CSI awaiting its final byte
    r"|\x1b[ -/]*\Z"  # bare ESC
)

# Longest unfinished string sequence we hold back before giving up on it (and dropping it).
_MAX_PENDING = 4096


def strip_controls(text: str) -> str:
    """Return ``text`` without terminal escape sequences or control characters (``\\n``, ``\\t`` stay).

    A carriage return is kept only as part of ``\\r\\n`` (turned into ``\\n``), so a reply
    cannot overwrite what was already shown on its line. A sequence left unfinished at
    the end is dropped whole (as ``ControlStripper.flush`` does), not shown as debris.
    """
    unfinished = _UNFINISHED.search(text)
    if unfinished and len(text) - unfinished.start() <= _MAX_PENDING:
        text = text[: unfinished.start()]
    return _strip_finished(text)


def _strip_finished(text: str) -> str:
    """Return ``text`` without its complete sequences and control characters (nothing is held back)."""
    text = _SEQUENCE.sub("", text).replace("\r\n", "\n")
    return _CONTROL.sub("", text)


class ControlStripper:
    """Strip controls from a stream of chunks; a sequence split across chunks is still removed."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, chunk: str) -> str:
        """Return the safe text that can be shown now; an unfinished sequence is held back."""
        text = self._pending + chunk
        self._pending = ""
        match = _UNFINISHED.search(text)
        if match and len(text) - match.start() <= _MAX_PENDING:
            self._pending = text[match.start() :]
            text = text[: match.start()]
        elif text.endswith("\r"):
            self._pending, text = "\r", text[:-1]
        # Whatever is held back starts after ``text``, so ``text`` is stripped as it stands; stripping
        # it as an end would drop a sequence the next chunk interrupts, which the whole text keeps.
        return _strip_finished(text)

    def flush(self) -> str:
        """Return what was held back, stripped (an unfinished sequence at the end is dropped)."""
        text, self._pending = self._pending, ""
        return strip_controls(text)  # held back only when within _MAX_PENDING, so it is dropped whole


_JSON_UNESCAPED_CONTROL = re.compile(r"[\x7f-\x9f]")


def safe_json(body: object) -> str:
    """Return ``body`` as indented JSON that is safe to print and still parses to ``body``.

    ``json.dumps`` escapes C0 controls but leaves DEL and the C1 range (``\x9b`` is CSI)
    as they are; those are escaped here too (``\u009b``).
    """
    import json

    text = json.dumps(body, indent=2, ensure_ascii=False)
    return _JSON_UNESCAPED_CONTROL.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def whole_characters(text: str) -> str:
    """Return ``text`` with each lone UTF-16 surrogate replaced by U+FFFD.

    JSON may escape half a surrogate pair (``"\\udcff"``); such a string cannot be encoded
    as UTF-8, so a reply holding one would make every later request of the conversation fail.
    """
    return LONE_SURROGATE.sub("\ufffd", text)


def for_terminal(text: str) -> str:
    """Return ``text`` fit to print: no escape sequences or controls (newlines and tabs stay), and
    each lone surrogate (an argument or path that was not UTF-8) shown as U+FFFD, which any
    UTF-8 terminal can be sent."""
    return whole_characters(strip_controls(text))


def one_line(text: str) -> str:
    """Return ``text`` fit to print as one line: ``for_terminal``, with every run of whitespace one space."""
    return " ".join(for_terminal(text).split())


def public_url(url: str) -> str:
    """Return ``url`` without the ``user:password@`` it may carry, for anything shown or saved."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: drop whatever stands before an "@" in the authority
        return _USERINFO.sub(r"\1", url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


_USERINFO = re.compile(r"^(\s*[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#]*@")


def url_password(url: str) -> str | None:
    """Return the password ``url`` carries (``user:password@``), or None."""
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password or None
    except ValueError:
        return None
