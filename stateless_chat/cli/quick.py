"""A plain one-shot command line read without Typer: importing and running Typer costs ~0.1 s
(it builds a pydantic adapter for each parameter), a fifth of a one-shot answer.

``parse`` reads the common shapes only: a prompt, the text options and the switches below,
each given once, values that do not start with ``-``. Anything else (``--help``, ``--version``,
``logs``, ``--``, ``--opt=value``, ``-uv``, a number or a path option, a repeated option, an
unknown one) returns None and goes to Typer (``cli.commandline``), which says what is wrong.
What it returns is what Typer passes to ``commandline.chat`` for the same words
(``tests/test_cli_quick.py`` holds them to that).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stateless_chat.cli import SUBCOMMANDS

# Option -> parameter of ``cli.chat_command``: those taking one text value, and the switches.
TEXT = {"--model": "model", "-m": "model", "--api-key": "api_key", "--system": "system", "-s": "system",
        "--policy": "policy", "--recall": "recall", "--memory": "memory", "--cid": "cid"}
REPEATED = {"--base-url": "base_url"}  # given more than once, each value is kept
SWITCHES = {"--no-stream": "no_stream", "--usage": "usage", "-u": "usage", "--verbose": "verbose",
            "-v": "verbose", "--quiet": "quiet", "-q": "quiet", "--dry-run": "dry_run",
            "--continue": "continue_", "-c": "continue_", "--no-log": "no_log", "--local": "local",
            "--yes": "yes", "-y": "yes", "--no-tools": "no_tools", "--no-instructions": "no_instructions",
            "--debug": "debug"}
# Every parameter of ``cli.chat_command`` with the value it has when its option is not given.
DEFAULTS: dict[str, Any] = {
    "prompt": None, "model": None, "base_url": None, "api_key": None, "system": None, "config": None,
    "no_stream": False, "temperature": None, "max_tokens": None, "budget": None, "policy": None,
    "evict_to": None, "usage": False, "verbose": False, "quiet": False, "dry_run": False, "load": None,
    "continue_": False, "cid": None, "no_log": False, "recall": None, "memory": None, "save": None,
    "local": False, "local_model": None, "yes": False, "no_tools": False, "no_instructions": False,
    "docs": None, "max_prompt_tokens": None, "max_cost": None, "debug": False,
    "version": None,  # what Typer passes for it: the return of its eager callback
}
COMPLETION = "_STATELESS_CHAT_COMPLETE"  # click's shell-completion request: Typer's to answer


def parse(args: Sequence[str], environ: Mapping[str, str]) -> dict[str, Any] | None:
    """Return ``cli.chat_command``'s parameters for ``args`` (the command line after the program's
    name), or None when it is not a plain one-shot (or chat) command line: Typer's to read."""
    if COMPLETION in environ or (args and args[0] in SUBCOMMANDS):
        return None
    params = dict(DEFAULTS)
    given: set[str] = set()
    position = 0
    while position < len(args):
        word = args[position]
        if word in SWITCHES:
            name = SWITCHES[word]
            value: Any = True
        elif word in TEXT or word in REPEATED:
            if position + 1 >= len(args) or args[position + 1].startswith("-"):
                return None
            position += 1
            name = TEXT.get(word) or REPEATED[word]
            value = args[position]
            if name in REPEATED.values():
                value = [*(params[name] or ()), value]
                given.discard(name)
        elif word.startswith("-"):
            return None
        else:
            name, value = "prompt", word
        if name in given:
            return None
        given.add(name)
        params[name] = value
        position += 1
    return params
