"""Slash commands of the context slots: the instruction files, the skills and the documents.

Registered in ``commands.REGISTRY`` like every other command (``commands`` imports this module
last); each finds the chat's ``Workspace`` with ``workspace.of`` and returns a ``Result``.
"""

from __future__ import annotations

from stateless_chat import skills, workspace
from stateless_chat.commands import Lines, Result, _no_args, command, first_line
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


def _skill_names(session: Session) -> list[str]:
    found = workspace.of(session)
    return ["off", *found.catalog.names] if found is not None else []


@command("skills", "/skills", "list the skills found, what the index and each one's instructions cost")
def _skills(session: Session, arg: str) -> Result:
    _no_args(arg, "/skills")
    space = _workspace(session)
    problems = list(space.catalog.problems)
    if not session.settings.skills:
        return Lines(("skills are off (skills = false in the config file)",))
    if not space.catalog.skills:
        folders = ", ".join(str(root) for root in skills.roots(space.cwd, space.env))
        return Lines((f"no skills: a skill is a folder with a SKILL.md, in {folders}", *problems))
    index = session.conversation.skill_index
    assert index is not None
    how = "the model's use_skill tool or /skill NAME" if space.tool_offered else "/skill NAME"
    lines = [f"the skills index: {index.tokens:,} tokens in every request; a skill's instructions only once "
             f"it is used ({how})"]
    for skill in space.catalog.skills:
        state = "on" if skill.name in space.active else "off"
        lines.append(f"  {skill.name} · {state} · index line {space.tokens(skill.index_line()):,} tokens, "
                     f"instructions {space.tokens(skill.message()):,} tokens · {skill.folder}")
        lines.append(f"    {first_line(skill.description, 100)}")
    return Lines((*lines, *problems))


@command("skill", "/skill NAME | off NAME", "turn a skill on: its instructions go in every request until "
         "/skill off NAME", choices=_skill_names)
def _skill(session: Session, arg: str) -> Result:
    space = _workspace(session)
    words = arg.split()
    if len(words) == 1 and words[0] != "off":
        return Lines((space.use(words[0]),))
    if len(words) == 2 and words[0] == "off":
        return Lines((space.stop(words[1]),))
    raise CommandError("usage: /skill NAME | off NAME (/skills lists them)")
