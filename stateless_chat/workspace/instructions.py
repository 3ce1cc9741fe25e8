"""Instruction files: the user's own ``AGENTS.md`` and the project's, composed into one message.

Two files are read, in this order: ``$XDG_CONFIG_HOME/stateless-chat/AGENTS.md`` (the user's,
for every chat) and ``AGENTS.md`` in the working directory or, inside a git repository, the
nearest parent that has one, up to the repository's root (the project's, more specific, so
it comes last). Their texts are composed into one system message that the conversation model
keeps in its instructions slot, right after the system prompt. They are read once per chat, so
that every request starts with the same prefix (the server's cache); ``/reload`` reads them
again. The composed text is capped at ``instructions_max_tokens``: a longer one is cut there,
with a note in the text and one line for the user. A file that cannot be read (binary, not
UTF-8, over 1 MB) is left out with one line. Only the standard library and the core are used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from stateless_chat.config import default_config_path
from stateless_chat.errors import CommandError
from stateless_chat.workspace.textfiles import read_text_file

FILE_NAME = "AGENTS.md"
HEADER = "Instructions from AGENTS.md files (the user's, then the project's):"
CUT_NOTE = "\n[cut: the instructions are {:,} tokens; the first {:,} characters of {:,} are sent]"

Measure = Callable[[str], int]


@dataclass(frozen=True)
class InstructionFile:
    """One instruction file as read: where it is, whose it is (``user`` or ``project``), its text."""

    path: Path
    scope: str
    text: str

    def shown(self, home: Path | None = None) -> str:
        """Return the path as the user is shown it (under the home directory as ``~/...``)."""
        return shown_path(self.path, home)


@dataclass(frozen=True)
class Instructions:
    """The instruction files read for this chat, and one line for each that could not be."""

    files: tuple[InstructionFile, ...] = ()
    problems: tuple[str, ...] = ()

    def text(self, home: Path | None = None) -> str | None:
        """Return the one message the files compose (None when there is none): a header line, then
        each file's text under its path, the user's first."""
        if not self.files:
            return None
        parts = [HEADER]
        parts += [f"File: {f.shown(home)}\n\n{f.text.strip()}" for f in self.files]
        return "\n\n".join(parts)

    def same_texts(self, other: Instructions) -> bool:
        return [(f.path, f.text) for f in self.files] == [(f.path, f.text) for f in other.files]


def shown_path(path: Path, home: Path | None = None) -> str:
    """Return ``path`` shortened to ``~/...`` when it is under ``home``."""
    if home is not None:
        try:
            return "~/" + str(path.relative_to(home))
        except ValueError:
            pass
    return str(path)


def user_file(env: Mapping[str, str]) -> Path:
    """Return where the user's own instruction file is: beside the config file."""
    return default_config_path(env).parent / FILE_NAME


def project_file(cwd: Path) -> Path | None:
    """Return the project's instruction file: ``AGENTS.md`` in ``cwd``, else in the nearest parent
    that has one up to the git repository's root (a directory holding ``.git``); outside a
    repository only ``cwd`` is looked at."""
    chain = [cwd, *cwd.parents]
    root = next((index for index, folder in enumerate(chain) if (folder / ".git").exists()), 0)
    for folder in chain[:root + 1]:
        candidate = folder / FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def read(cwd: Path | None, env: Mapping[str, str]) -> Instructions:
    """Return the instruction files found for a chat started in ``cwd`` (None: no working directory):
    the user's, then the project's (the same file once), each read with ``/file``'s rules."""
    found: list[tuple[Path, str]] = []
    mine = user_file(env)
    if mine.is_file():
        found.append((mine, "user"))
    project = project_file(cwd) if cwd is not None else None
    if project is not None and not any(_same(project, path) for path, _ in found):
        found.append((project, "project"))
    files: list[InstructionFile] = []
    problems: list[str] = []
    for path, scope in found:
        try:
            files.append(InstructionFile(path, scope, read_text_file(path)))
        except (CommandError, OSError) as error:
            problems.append(f"instructions: {path} left out: {_reason(error)}")
    return Instructions(tuple(files), tuple(problems))


def capped(text: str, cap: int, measure: Measure) -> tuple[str, int]:
    """Return ``text`` cut to ``cap`` tokens by ``measure`` (with a note saying how much was cut), and
    its size before."""
    size = measure(text)
    if size <= cap:
        return text, size
    low, high = 0, len(text)
    while low < high:  # the longest prefix that fits the cap with its note
        middle = (low + high + 1) // 2
        if measure(text[:middle] + CUT_NOTE.format(size, middle, len(text))) <= cap:
            low = middle
        else:
            high = middle - 1
    return text[:low] + CUT_NOTE.format(size, low, len(text)), size


def _same(one: Path, other: Path) -> bool:
    try:
        return one.resolve() == other.resolve()
    except (OSError, RuntimeError):
        return one == other


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error)


__all__ = ["FILE_NAME", "InstructionFile", "Instructions", "capped", "project_file", "read", "user_file"]
