"""Slash commands of the context slots: the instruction files, the skills and the documents.

Registered in ``commands.REGISTRY`` like every other command (``commands`` imports this module
last); each finds the chat's ``Workspace`` with ``workspace.of`` and returns a ``Result``.
"""

from __future__ import annotations

from stateless_chat import workspace
from stateless_chat.commands import Lines, Result, _no_args, command
from stateless_chat.errors import CommandError
from stateless_chat.instructions import user_file
from stateless_chat.session import Session


def _workspace(session: Session) -> workspace.Workspace:
    found = workspace.of(session)
    if found is None:
        raise CommandError("this chat reads no instruction files, skills or documents")
    return found


@command("instructions", "/instructions", "show the instruction files (AGENTS.md) sent after the system "
         "prompt")
def _instructions(session: Session, arg: str) -> Result:
    _no_args(arg, "/instructions")
    space = _workspace(session)
    entry = session.conversation.instructions
    if entry is None:
        where = "instructions = false" if not session.settings.instructions else \
            f"{space.cwd} (or a parent up to the repository root) and {user_file(space.env)}"
        return Lines((f"no instruction files: AGENTS.md is looked for in {where}",))
    lines = [f"instructions: {entry.tokens:,} tokens in every request, right after the system prompt"]
    lines += [f"  {f.shown(space.home)} ({f.scope}, {space.tokens(f.text):,} tokens)"
              for f in space.instructions.files]
    if space.instructions_cut is not None:
        lines.append(f"  cut from {space.instructions_cut:,} tokens to instructions_max_tokens")
    return Lines((*lines, "", *entry.content.splitlines()))


@command("reload", "/reload", "read the instruction files and the skills again (the next request sends what "
         "changed)")
def _reload(session: Session, arg: str) -> Result:
    _no_args(arg, "/reload")
    return Lines(tuple(_workspace(session).reload()))
