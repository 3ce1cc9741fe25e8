"""What a chat brings in besides the conversation: instruction files, skills and documents.

A ``Workspace`` keeps the session's context slots filled: it reads the instruction files
(``instructions``) into the instructions slot once per chat, finds the skills (``skills``) and
keeps their index in its slot and the skills turned on in theirs; ``/reload`` reads both again.
Its ``retrieve`` is the session's retriever: before each turn it fills the retrieved slot from
the chat's documents (``documents.Library``, opened when the first document is added).
The session knows nothing of it: ``attach`` makes it one of the session's ``on_turn`` (told of
each completed turn) and its ``retrieve``; the app keeps it (``App.workspace``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from stateless_chat.chat.session import Session
from stateless_chat.chat.values import TurnRecord
from stateless_chat.core.history import Conversation
from stateless_chat.core.messages import Event, Message
from stateless_chat.core.tokens import REPLY_PRIMING
from stateless_chat.errors import CommandError
from stateless_chat.workspace import instructions, skills

if TYPE_CHECKING:
    from stateless_chat.workspace.docstore import Hit
    from stateless_chat.workspace.documents import Library


def _nowhere(line: str) -> None:
    pass


class Workspace:
    """One chat's instruction files, skills and documents, kept in ``session``'s conversation slots.
    ``cwd`` is where the chat started, ``env`` its environment; ``say`` shows one line to the user."""

    def __init__(self, session: Session, *, cwd: Path | None, env: Mapping[str, str],
                 say: Callable[[str], None] = _nowhere) -> None:
        self.session = session
        self.cwd = cwd
        self.env = env
        self.say = say
        self.home = Path(env["HOME"]) if env.get("HOME") else None
        self.instructions = instructions.Instructions()
        self.instructions_cut: int | None = None  # the size of instructions cut to the cap
        self.catalog = skills.Catalog()
        self.active: list[str] = []  # the skills turned on, in that order
        self.tool_offered = False  # whether the model has the use_skill tool
        self.library: Library | None = None  # the documents, once one is added
        self.sent: tuple[tuple[Hit, int], ...] = ()  # the chunks the last answered request carried
        self.sent_similar: dict[int, float] = {}  # their similarity to its message, with embeddings
        self.docs_line: str | None = None  # what indexing the configured documents did, for start-up

    # ---- measuring ---------------------------------------------------------------------------

    def tokens(self, text: str) -> int:
        """Return the exact size of ``text`` sent as a system message (what lines show)."""
        return self.session.counter.count_message(Message("system", text))

    # ---- instructions ------------------------------------------------------------------------

    def read_instructions(self) -> list[str]:
        """Read the instruction files (unless ``instructions = false``) into the instructions slot;
        return the lines to show: each file read with its size, each one left out, a cut."""
        settings = self.session.settings
        found = instructions.read(self.cwd, self.env) if settings.instructions \
            else instructions.Instructions()
        self.instructions = found
        lines = list(found.problems)
        text = found.text(self.home)
        self.instructions_cut = None
        if text is not None:
            session = self.session
            cap = settings.instructions_max_tokens
            if session.measure(Message("system", text)) > cap:  # a byte bound until counting is exact
                text, size = instructions.capped(text, cap, self.tokens)
                if size > cap:
                    self.instructions_cut = size
                    lines.append(f"instructions: {size:,} tokens, cut to {cap:,} (instructions_max_tokens)")
        source = ", ".join(str(f.path) for f in found.files) or None
        self.session.conversation = self.session.conversation.with_instructions(text, self.session.measure,
                                                                                source=source)
        return lines

    def started(self) -> list[str]:
        """Return the start-up lines: the instruction files read and their sizes, the skills found,
        the documents indexed."""
        return [line for line in (self.instructions_line(), self.skills_line(), self.docs_line) if line]

    def instructions_line(self) -> str | None:
        """Return the line naming the instruction files read and their sizes (None: none)."""
        if not self.instructions.files:
            return None
        parts = [f"{f.shown(self.home)} ({self.tokens(f.text):,} tokens)" for f in self.instructions.files]
        return "instructions: " + ", ".join(parts)

    def reload(self) -> list[str]:
        """Read the instruction files and the skills again; return what changed, one line each."""
        return self.reload_instructions() + self.reload_skills()

    def reload_instructions(self) -> list[str]:
        """Read the instruction files again; return what changed, one line each."""
        before = self.instructions
        entry = self.session.conversation.instructions
        was = self.tokens(entry.content) if entry is not None else 0
        lines = self.read_instructions()
        after = self.session.conversation.instructions
        if self.instructions.same_texts(before):
            lines.append("instructions unchanged" if self.instructions.files else "no instruction files")
        else:
            now = self.tokens(after.content) if after is not None else 0
            names = ", ".join(f.shown(self.home) for f in self.instructions.files) or "none"
            lines.append(f"instructions changed: {names} ({now:,} tokens, was {was:,}); the next request "
                         "sends them, so the server's cache is read only up to them")
        return lines

    # ---- skills -----------------------------------------------------------------------------

    def find_skills(self) -> list[str]:
        """Look for the skills (unless ``skills = false``) and put their index in its slot; return one
        line for each skill folder skipped."""
        if not self.session.settings.skills:
            self.catalog = skills.Catalog()
        else:
            self.catalog = skills.find(skills.roots(self.cwd, self.env))
        self.active = [name for name in self.active if self.catalog.get(name) is not None]
        self._fill_skills()
        return list(self.catalog.problems)

    def offer_tool(self, offered: bool) -> None:
        """Say whether the model has the ``use_skill`` tool (``/skills`` says how a skill is loaded)."""
        self.tool_offered = offered

    def _fill_skills(self) -> None:
        session = self.session
        index = skills.index_text(self.catalog.skills)
        bodies = []
        for name in self.active:
            skill = self.catalog.get(name)
            if skill is not None:
                bodies.append((name, skill.message()))
        session.conversation = session.conversation.with_skill_index(index, session.measure) \
            .with_skills(bodies, session.measure)

    def skills_line(self) -> str | None:
        """Return the line naming the skills found and what their index costs (None: none)."""
        entry = self.session.conversation.skill_index
        if entry is None:
            return None
        names = ", ".join(self.catalog.names)
        return f"skills: {names} (the index: {self.tokens(entry.content):,} tokens; a skill's instructions " \
               "only once it is used)"

    def reload_skills(self) -> list[str]:
        """Look for the skills again; return what changed, one line each."""
        before = {s.name: s for s in self.catalog.skills}
        lines = self.find_skills()
        after = {s.name: s for s in self.catalog.skills}
        added, gone = sorted(set(after) - set(before)), sorted(set(before) - set(after))
        changed = sorted(name for name in set(after) & set(before) if after[name] != before[name])
        for what, names in (("new", added), ("gone", gone), ("changed", changed)):
            if names:
                lines.append(f"skills {what}: {', '.join(names)}")
        if not (added or gone or changed):
            lines.append("skills unchanged" if after else "no skills")
        return lines

    def use(self, name: str) -> str:
        """Turn the skill ``name`` on: its instructions are in every request from the next one on, until
        ``stop``; return the line saying so. CommandError for a skill there is none of, or one too
        big for the budget."""
        skill = self._skill(name)
        if name in self.active:
            return f"the skill {name} is already on"
        session = self.session
        size = session.measure(Message("system", skill.message()))
        if session.too_big_alone(session.conversation.tokens + size):
            raise CommandError(f"the skill {name} is {size:,} tokens: it cannot fit the budget of "
                               f"{session.budget:,} with what every request already carries")
        self.active.append(name)
        self._fill_skills()
        return (f"skill {name} on ({size:,} tokens in every request until /skill off {name}; the next "
                "request breaks the server's cache once, at the skills)")

    def stop(self, name: str) -> str:
        """Turn the skill ``name`` off; return the line saying so."""
        if name not in self.active:
            self._skill(name)
            raise CommandError(f"the skill {name} is not on (/skills lists them)")
        self.active.remove(name)
        self._fill_skills()
        return f"skill {name} off: its instructions are no longer sent"

    def skill(self, name: str) -> skills.Skill:
        """Return the skill ``name``; CommandError naming the skills there are when there is none."""
        return self._skill(name)

    def load_skill(self, name: str, file: str | None = None) -> str:
        """Return what the ``use_skill`` tool answers: the skill's instructions with the files beside
        them, or the text of one of those files; CommandError with what to tell the model."""
        skill = self._skill(name)
        if file is not None:
            return skills.read_beside(skill, file)
        if name in self.active:
            return f"the skill {name} is already on: its instructions are in your context"
        beside = skills.files_beside(skill)
        listed = f"\n\nFiles in its folder (use_skill with file reads one): {', '.join(beside)}" \
            if beside else ""
        return skill.message() + listed

    def _skill(self, name: str) -> skills.Skill:
        skill = self.catalog.get(name)
        if skill is None:
            known = ", ".join(self.catalog.names) or "none found"
            raise CommandError(f"no skill {name!r} (skills: {known}; /skills lists them)")
        return skill

    # ---- documents ---------------------------------------------------------------------------

    def shown(self, path: str) -> str:
        """Return a document's path as it is shown: relative to the working directory when under it,
        else under the home directory as ``~/...``, else as it is."""
        if self.cwd is not None:
            relative = os.path.relpath(path, self.cwd)
            if not relative.startswith(".."):
                return relative
        return instructions.shown_path(Path(path), self.home)

    def documents(self) -> Library:
        """Return the chat's documents, opening the index on first use."""
        if self.library is None:
            from stateless_chat.config import docs_db_path
            from stateless_chat.workspace import documents

            settings = self.session.settings
            store = documents.open_store(docs_db_path(settings, self.env), self.say)
            self.library = documents.Library(store, self.tokens, self.shown)
            model = settings.embedding_model
            if model:
                self.library.use_embeddings(self._embedder(model), model)
        return self.library

    def _embedder(self, model: str) -> Callable[[Sequence[str]], list[list[float]]]:
        """Return what embeds texts with ``model`` at the chat's first endpoint (``/v1/embeddings``)."""
        from stateless_chat.wire.openai_backend import OpenAIBackend

        settings = self.session.settings
        endpoint = settings.endpoints[0]
        backend = OpenAIBackend(endpoint, settings.key_for(endpoint), timeout=settings.timeout,
                                max_reply_bytes=settings.max_reply_bytes)
        return lambda texts: backend.embed(model, texts)

    def add(self, paths: Sequence[str]) -> list[str]:
        """Add documents (files, folders, globs) to this chat; return what was indexed and refused."""
        from stateless_chat.workspace import documents

        library = self.documents()
        done = library.add(paths)
        notes, library.notes = library.notes, []
        return notes + documents.added_lines(done, ", ".join(paths))

    def retrieve(self, text: str, conversation: Conversation,
                 budget: int) -> tuple[Conversation, list[Event]]:
        """Return ``conversation`` with the documents' best chunks for ``text`` in its retrieved slot,
        within ``docs_budget`` and what the budget leaves beside what cannot be evicted (the session's
        retriever)."""
        library = self.library
        if library is None or not library.sources:
            return conversation, []
        session = self.session
        fixed = sum(e.tokens for e in conversation.head) + REPLY_PRIMING + session.reserve
        fixed += sum(e.tokens for e in conversation.history if e.pinned)
        fixed += sum(e.tokens for e in conversation.recalled)
        fixed += session.measure(Message("user", text))
        room = min(session.settings.docs_room(budget), budget - fixed)
        return library.retrieve(text, conversation, budget, room=max(0, room), measure=session.measure)

    # ---- the session's observer ----------------------------------------------------------------

    def __call__(self, record: TurnRecord) -> None:
        """Told of each completed turn: keep what its requests carried of the documents (/sources)."""
        library = self.library
        self.sent = library.last if library is not None and record.retrieved else ()
        self.sent_similar = library.last_similar if library is not None and record.retrieved else {}


def attach(session: Session, *, cwd: Path | None, env: Mapping[str, str],
           say: Callable[[str], None] = _nowhere) -> Workspace:
    """Attach a workspace to ``session`` and read the instruction files into its conversation; what
    went wrong (a file left out, instructions cut) is ``say``-ed, one line each. ``started`` returns
    the line naming what was read (the chat shows it; one-shot use only with ``-v``)."""
    workspace = Workspace(session, cwd=cwd, env=env, say=say)
    session.on_turn = (*session.on_turn, workspace)
    session.retrieve = workspace.retrieve
    for line in workspace.read_instructions() + workspace.find_skills():
        say(line)
    if session.settings.docs:
        *refused, workspace.docs_line = workspace.add(session.settings.docs)
        for line in refused:
            say(line)
    return workspace


__all__ = ["Workspace", "attach"]
