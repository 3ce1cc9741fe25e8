"""Slash commands of what the conversation keeps: the standing memory (``/memory``, ``/remember``,
``/forget``) and what the next eviction will take (``/preview``).

Registered in ``commands.REGISTRY`` like every other command when this module is imported, which
the registry does the first time it is read (so ``/memory`` is there whatever was imported first);
each parses its argument, changes the conversation through its pure methods, and returns lines to
show. Nothing changes when one raises ``CommandError``.
"""

from __future__ import annotations

from stateless_chat.chat.session import Session
from stateless_chat.config import MEMORY_MODES
from stateless_chat.core.memory import Note
from stateless_chat.core.messages import Remembered, describe, span
from stateless_chat.core.preview import Preview
from stateless_chat.errors import CommandError
from stateless_chat.ui.commands import Lines, Result, command, first_line, next_eviction


def note_line(note: Note) -> str:
    """Return one note as ``/memory`` lists it: its name, size, where it came from, and its text."""
    where = f"from #{note.source} (turn {note.turn})" if note.source is not None else "by /remember"
    return f"{note.label} · {note.tokens:,} tokens · {where}: {first_line(note.text, 90)}"


def memory_lines(session: Session) -> tuple[str, ...]:
    """Return what ``/memory`` shows: the slot's size against ``memory_budget``, then each note."""
    conversation = session.conversation
    memory = conversation.memory
    mode = session.settings.memory
    if not memory.notes:
        how = {"auto": 'sentences such as "always answer in French" or "I\'m vegetarian" are kept as you '
                       "say them; /remember TEXT adds one",
               "manual": "memory manual: /remember TEXT adds one",
               "off": "memory off: nothing is kept (/memory auto turns it on)"}[mode]
        return (f"no standing notes: {how}",)
    block = conversation.memory_block
    size = block.tokens if block is not None else memory.size(session.measure)
    sent = ("sent with every request, right after the system prompt" if block is not None
            else "kept but not sent: memory is off (/memory auto sends them)")
    head = (f"standing memory: {len(memory.notes)} note(s), {size:,} of {session.memory_room:,} tokens "
            f"(memory_budget), {sent}; memory {mode}")
    return (head, *(note_line(note) for note in memory.notes),
            "/forget ID removes a note; /remember TEXT adds one")


@command("memory", "/memory [auto|manual|off]",
         "list the standing notes sent with every request, or set how they are kept (auto: as you say them)",
         choices=lambda session: list(MEMORY_MODES))
def _memory(session: Session, arg: str) -> Result:
    if arg:
        mode = arg.strip().lower()
        if mode not in MEMORY_MODES:
            raise CommandError(f"usage: /memory [{'|'.join(MEMORY_MODES)}]")
        session.reconfigure(memory=mode)
    return Lines(memory_lines(session))


@command("remember", "/remember TEXT",
         "keep TEXT in the standing memory: sent with every request, never evicted")
def _remember(session: Session, arg: str) -> Result:
    if session.settings.memory == "off":
        raise CommandError("memory is off: /memory manual (or auto) turns it on, then /remember TEXT")
    conversation, note = session.conversation.remember_text(arg, session.measure, room=session.memory_room)
    session.conversation = conversation
    return Lines((describe(Remembered(note.id, note.text, note.tokens)),))


@command("forget", "/forget ID", "remove a note (m1, m2 ...) from the standing memory",
         choices=lambda session: [n.label for n in reversed(session.conversation.memory.notes)])
def _forget(session: Session, arg: str) -> Result:
    if not arg:
        raise CommandError("usage: /forget ID (ID: a note's name from /memory, e.g. m3)")
    conversation, note = session.conversation.forget(arg, session.measure)
    session.conversation = conversation
    kept = (f"; message #{note.source}, where you said it, is unchanged" if note.source is not None else "")
    return Lines((f'forgot {note.label}: "{first_line(note.text, 90)}" is no longer sent{kept}',))


# ---- the next eviction ---------------------------------------------------------------------


def preview_lines(session: Session, found: Preview) -> tuple[str, ...]:
    """Return what ``/preview`` shows: when the next eviction comes, and each turn it would take."""
    if not found.evicts:
        return (f"policy none never evicts: past the budget of {found.budget:,} a request is sent whole, "
                "with a warning (/policy drop-oldest or summarize evicts)",)
    if found.room > 0:
        when = (f"the next eviction comes when a request passes the budget of {found.budget:,} tokens: in "
                f"about {found.room:,} tokens of new messages and replies")
    else:
        when = f"the next message passes the budget of {found.budget:,} tokens: sending it evicts"
    if found.stuck is not None:
        return (when, f"nothing can go then: {found.stuck}; /unpin N, /forget ID or a bigger /budget "
                      "makes room")
    how = ("fold into the running summary (one extra request)" if found.policy == "summarize"
           else "drop")
    lines = [when, f"{found.policy} will {how}, oldest first, down to about {found.after:,} tokens "
                   f"(evict_to {session.settings.evict_to:g}):"]
    kept = {note.source: note.label for note in session.conversation.memory.notes if note.source is not None}
    for turn in found.turns:
        notes = [kept[i] for i in turn.ids if i in kept]
        also = f" (its standing sentence stays: {', '.join(notes)})" if notes else ""
        lines.append(f"  turn {turn.turn} · {span(turn.ids)} · {turn.tokens:,} tokens: "
                     f"{turn.first_line}{also}")
    lines.append("the system prompt, the standing memory and pinned turns stay; /pin N keeps a turn, "
                 "/remember TEXT keeps a sentence")
    return tuple(lines)


@command("preview", "/preview", "what the next eviction will drop or fold, and how far off it is")
def _preview(session: Session, arg: str) -> Result:
    if arg:
        raise CommandError("usage: /preview (it takes no arguments)")
    return Lines(preview_lines(session, next_eviction(session)))
