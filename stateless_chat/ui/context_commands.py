"""Slash commands of the context slots: the instruction files, the skills and the documents.

Registered in ``commands.REGISTRY`` like every other command (the registry imports this module
the first time it is read); each is given the whole chat (``App``), reads its ``workspace`` and
returns a ``Result``.
"""

from __future__ import annotations

from stateless_chat.app import App
from stateless_chat.errors import CommandError
from stateless_chat.ui.commands import Lines, Result, _no_args, app_command, first_line, split_args
from stateless_chat.workspace import attach as workspace
from stateless_chat.workspace import skills
from stateless_chat.workspace.instructions import user_file


def _workspace(app: App) -> workspace.Workspace:
    found = app.workspace
    if found is None:
        raise CommandError("this chat reads no instruction files, skills or documents")
    return found


@app_command("instructions", "/instructions", "show the instruction files (AGENTS.md) sent after the system "
             "prompt")
def _instructions(app: App, arg: str) -> Result:
    session = app.session
    _no_args(arg, "/instructions")
    space = _workspace(app)
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


@app_command("reload", "/reload",
             "read the instruction files and the skills again (the next request sends what changed)")
def _reload(app: App, arg: str) -> Result:
    _no_args(arg, "/reload")
    return Lines(tuple(_workspace(app).reload()))


def _skill_names(app: App) -> list[str]:
    found = app.workspace
    return ["off", *found.catalog.names] if found is not None else []


@app_command("skills", "/skills", "list the skills found, what the index and each one's instructions cost")
def _skills(app: App, arg: str) -> Result:
    session = app.session
    _no_args(arg, "/skills")
    space = _workspace(app)
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


@app_command("skill", "/skill NAME | off NAME", "turn a skill on: its instructions go in every request until "
             "/skill off NAME", choices=_skill_names)
def _skill(app: App, arg: str) -> Result:
    space = _workspace(app)
    words = arg.split()
    if len(words) == 1 and words[0] != "off":
        return Lines((space.use(words[0]),))
    if len(words) == 2 and words[0] == "off":
        return Lines((space.stop(words[1]),))
    raise CommandError("usage: /skill NAME | off NAME (/skills lists them)")


# ---- documents ------------------------------------------------------------------------------


@app_command("add", "/add PATH...",
             "add documents (files, folders, globs): before each turn the best chunks for your message are "
             "sent with it", paths=True)
def _add(app: App, arg: str) -> Result:
    paths = split_args(arg)
    if not paths:
        raise CommandError("usage: /add PATH... (files, folders or globs: Markdown, reStructuredText, text, "
                           "code, HTML)")
    return Lines(tuple(_workspace(app).add(paths)))


@app_command("docs", "/docs [rm PATH]", "list the documents retrieved from (rm: stop retrieving from PATH)",
             choices=lambda app: ["rm"])
def _docs(app: App, arg: str) -> Result:
    session = app.session
    space = _workspace(app)
    library = space.library
    words = split_args(arg)
    if words and words[0] == "rm":
        if len(words) != 2:
            raise CommandError("usage: /docs rm PATH (as /docs lists it)")
        if library is None:
            raise CommandError("no documents added; /add PATH adds some")
        gone = library.remove(words[1])
        return Lines((f"no longer retrieved from: {words[1]} ({len(gone)} file(s); the index keeps them "
                      "for when they are added again)",))
    if words:
        raise CommandError("usage: /docs [rm PATH]")
    if library is None or not library.sources:
        return Lines(("no documents: /add PATH (or --docs PATH, or docs in the config file) adds some",))
    where = library.store.path or "memory"
    room = session.settings.docs_room(session.budget)
    lines = [f"documents (index: {where}); up to {room:,} tokens of them go with each message"]
    for row in library.listing():
        lines.append(f"  {row}")
    return Lines(tuple(lines))


@app_command("sources", "/sources", "the document chunks the last answered request carried")
def _sources(app: App, arg: str) -> Result:
    _no_args(arg, "/sources")
    space = _workspace(app)
    if not space.sent:
        return Lines(("the last request carried no documents",))
    total = sum(size for _, size in space.sent)
    lines = [f"the last request carried {len(space.sent)} chunk(s), {total:,} tokens, right before your "
             "message:"]
    library = space.documents()
    for hit, size in space.sent:
        heading = f" · {hit.heading}" if hit.heading else ""
        found = [f"bm25 {hit.score:.1f}"] if hit.score else []
        if hit.id in space.sent_similar:
            found.append(f"similar {space.sent_similar[hit.id]:.2f}")
        lines.append(f"  {library.source(hit)} · {size:,} tokens · {', '.join(found)}{heading}")
    return Lines(tuple(lines))
