"""Checking values read from a config file: the one ``Invalid`` error and how rejected values are shown.

``config`` (the settings) and ``tools`` (the ``[mcp.servers]`` tables) both validate TOML
values; a checker raises ``Invalid`` saying what would fit, and the caller turns that into a
one-line ``ConfigError`` that names where the value came from.
"""

from __future__ import annotations

SHOWN_CHARS = 60  # a rejected value is shown as its repr, cut to this many characters


class Invalid(Exception):
    """A value does not fit its setting; ``expected`` says what would (e.g. "a positive integer")."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def type_name(value: object) -> str:
    """Return how a message names the TOML type of ``value`` ("an integer", "a table", ...)."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    if isinstance(value, dict):
        return "a table"
    return names.get(type(value), type(value).__name__)


def shown(value: object) -> str:
    """Return a rejected value for a one-line message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."
