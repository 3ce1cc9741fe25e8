"""The interactive loop: prompt_toolkit for input, Rich for output, the session for turns."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output
from prompt_toolkit.styles import Style

from stateless_chat.chat.turn import Hooks
from stateless_chat.core.history import Conversation
from stateless_chat.core.messages import Event, ToolAnswered, ToolCall, ToolCalled, ToolProgress, describe
from stateless_chat.core.tokens import PER_MESSAGE, byte_lower_bound
from stateless_chat.errors import BudgetError, ChatError, ConnectError, ServerError, StreamError, redact
from stateless_chat.sanitize import LONE_SURROGATE, one_line
from stateless_chat.ui import (
    context_commands,  # noqa: F401 - registers the context slots' commands
    inputhistory,
    mcpcommands,  # noqa: F401  (registers /resources, /attach, /prompts, /prompt)
    memorycommands,  # noqa: F401  (registers /memory, /remember, /forget, /preview)
)
from stateless_chat.ui.commands import REGISTRY, Exit, Prefill, Result, Send, dispatch, is_command
from stateless_chat.ui.hints import budget_hint
from stateless_chat.ui.render import Renderer, ReplyStream, Waiting, bar
from stateless_chat.ui.toolbar import Part, fit
from stateless_chat.ui.typeahead import held_keys

if TYPE_CHECKING:
    from stateless_chat.app import App
    from stateless_chat.tools.specs import ToolSpec

TOOLBAR_STYLE = Style.from_dict(
    {
        "bottom-toolbar": "noreverse bg:#222222 #cccccc",
        "ok": "#5fd75f",
        "warn": "#ffd75f",
        "over": "#ff5f5f bold",
    }
)

# Commands that wait on the server: a spinner shows while they do.
WAITS = {"summarize": "summarizing"}


class SlashCompleter(Completer):
    """Completes command names after ``/`` and, where a command has them, its arguments."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/") or text.startswith("//") or "\n" in text:
            return
        name, space, arg = text[1:].partition(" ")
        if not space:
            for candidate in sorted(REGISTRY):
                if candidate.startswith(name.lower()):
                    meta = REGISTRY[candidate].help
                    yield Completion(candidate, start_position=-len(name), display_meta=meta)
            return
        command = REGISTRY.get(name.lower())
        if command is None:
            return
        if command.paths:
            word = arg.rpartition(" ")[2] if arg.startswith("--") else arg
            yield from self.paths.get_completions(Document(word, len(word)), complete_event)
            return
        if command.arg_choices is None:
            return
        for choice in command.arg_choices(self.app):
            if choice.startswith(arg):
                yield Completion(choice, start_position=-len(arg))


class SharedFileHistory(FileHistory):
    """A ``FileHistory`` whose entries stay whole when several chats share the file (``inputhistory``)."""

    def load_history_strings(self) -> Iterable[str]:
        return inputhistory.read_entries(self.filename)

    def store_string(self, string: str) -> None:
        inputhistory.append_entry(self.filename, string)


def secure_file_history(path: Path, on_note: Callable[[str], None] = lambda note: None) -> History:
    """Return the input history kept at ``path`` (0600, a regular file only: ``inputhistory.prepare``);
    an in-memory one, and ``on_note`` told why, when it cannot be used."""
    note = inputhistory.prepare(path)
    if note is not None:
        on_note(note)
        return InMemoryHistory()
    return SharedFileHistory(str(path))


class _TurnView:
    """What one turn shows: a spinner with the seconds waited until a reply's first token; each
    request's reply streamed as it comes; the events that come once a reply has begun (a cut reply,
    usage notes) after it; and a tool call ends the reply before it, so its line, and the question
    whether to run it, stand on their own (the spinner comes back once the call has answered)."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self.stream: ReplyStream | None = None
        self.waiting: Waiting | None = None
        self.held: list[Event] = []
        self.begun = False
        self.lock = threading.Lock()  # progress comes from the tools' thread

    def open(self) -> None:
        """Wait for a reply: the spinner shows until its first token (on a terminal only)."""
        if self.waiting is None and self.stream is None:
            self.waiting = Waiting(self.renderer.console, "waiting for the reply").start()

    def _stop_waiting(self) -> None:
        with self.lock:
            waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.stop()

    def progress(self, event: ToolProgress) -> None:
        """Show a running call's progress live, on one transient line (the spinner's)."""
        with self.lock:
            if self.waiting is None:
                self.waiting = Waiting(self.renderer.console, describe(event)).start()
            else:
                self.waiting.label = describe(event)

    def feed(self, delta: str) -> None:
        if self.stream is None:
            self._stop_waiting()  # one live view at a time: the reply's takes the spinner's place
            self.stream = self.renderer.reply()
            self.stream.__enter__()
        self.begun = True
        self.stream.feed(delta)

    def event(self, event: Event) -> None:
        if isinstance(event, ToolCalled):
            self.close()
            self.renderer.event(event)
        elif isinstance(event, ToolProgress):
            self.progress(event)
        elif isinstance(event, ToolAnswered):
            self._stop_waiting()
            self.renderer.event(event)
            self.open()  # the next request of the loop goes now
        elif self.begun:
            self.held.append(event)
        else:
            self.renderer.event(event)

    def close(self) -> None:
        """End the reply on screen (if one is showing), then print the events held for after it."""
        self._stop_waiting()
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.__exit__(None, None, None)
        held, self.held = self.held, []
        self.begun = False
        for event in held:
            self.renderer.event(event)


class Repl:
    """Reads lines, runs slash commands, and sends everything else as a turn."""

    def __init__(
        self,
        app: App,
        renderer: Renderer,
        *,
        input: Input | None = None,
        output: Output | None = None,
        history_path: Path | None = None,
        debug: bool = False,
    ) -> None:
        self.app = app
        self.session = app.session
        self.debug = debug
        self.always: set[str] = set()  # tools the user approved for the whole session ("a")
        self.tool_calls = 0  # in the turn under way, for the toolbar
        # Told after each command that ran (its line), and after a change a turn makes past its own
        # record: the conversation log keeps every change (the app wires it).
        self.after_change: Callable[[str], None] = lambda what: None
        self.notices: Callable[[], list[str]] = list  # lines that came up meanwhile, shown before the prompt
        self.view: _TurnView | None = None  # the turn under way
        self.renderer = renderer
        self._draft_tokens: tuple[str, int] = ("", 0)
        history = secure_file_history(history_path, self.renderer.note) if history_path else InMemoryHistory()
        self.prompt: PromptSession[str] = PromptSession(
            message=[("bold", "> ")],
            history=history,
            completer=SlashCompleter(app),
            complete_while_typing=True,
            bottom_toolbar=self.toolbar,
            key_bindings=self._bindings(),
            style=TOOLBAR_STYLE,
            input=input,
            output=output,
        )
        # Asks whether to run a tool call; no input history of its own, the same toolbar.
        self.asker: PromptSession[str] = PromptSession(bottom_toolbar=self.toolbar, style=TOOLBAR_STYLE,
                                                       input=input, output=output)

    @staticmethod
    def _bindings() -> KeyBindings:
        bindings = KeyBindings()

        @bindings.add("escape", "enter")
        def _newline(event: KeyPressEvent) -> None:
            event.current_buffer.insert_text("\n")

        return bindings

    # ---- toolbar ------------------------------------------------------------------

    def _draft_size(self, draft: str) -> tuple[int, bool]:
        """Return the tokens ``draft`` adds to the next request, and whether that is only a lower bound.

        A draft too big to send by its byte lower bound (``Session.plan`` refuses it uncounted) is
        shown at that bound: counting megabytes again on every keystroke would stall typing.
        """
        if not draft.strip():
            return 0, False
        at_least = byte_lower_bound(draft)
        session = self.session
        if session.too_big_alone(at_least):
            return at_least, True
        if self._draft_tokens[0] != draft:
            self._draft_tokens = (draft, session.measure_text(draft))
        return self._draft_tokens[1], False

    def toolbar(self) -> StyleAndTextTuples:
        """Return the bottom toolbar: model, messages, next request's tokens against the budget,
        fitted to the terminal's width (``toolbar.fit``: the tokens and the model stay longest)."""
        session = self.session
        draft = self.prompt.default_buffer.text
        if is_command(draft):
            draft = ""
        conversation = session.conversation
        draft_size, bound = self._draft_size(draft)
        prompt_tokens = session.next_request_tokens() + draft_size
        needed = prompt_tokens + session.reserve
        budget = session.budget
        share = needed / budget if budget else 1.0
        style = "class:ok" if share < 0.8 else "class:warn" if share <= 1.0 else "class:over"
        label = "≥" if bound else session.counter.label
        meter = bar(share, 12)
        filled = len(meter.rstrip("░"))
        parts = [
            Part((("", session.settings.model),), rank=1, shrinks=True),
            Part((("", f"{len(conversation.history)} msgs"),), rank=3),
            # What the next request takes: its prompt, what is held for the reply, against the budget.
            Part(((style, f"prompt {label}{prompt_tokens:,} + reply {session.reserve:,} / budget {budget:,} "
                          f"({share:.0%})"),), rank=0,
                 compact=((style, f"{label}{prompt_tokens:,}+{session.reserve:,}/{budget:,} {share:.0%}"),)),
            Part(((style, meter[:filled]), ("", meter[filled:])), rank=7, before=" "),
            Part((("", f"{len(conversation.evicted)} evicted"),), rank=4),
            Part((("", f"{conversation.pinned_count} pinned"),), rank=6),
            *([Part((("", f"{len(conversation.memory.notes)} standing"),), rank=4)]
              if conversation.memory.notes else []),  # the notes every request carries (/memory)
            Part((("", f"cache ~{session.cache_prediction().share:.0%}"),), rank=5),
            Part((("", f"sent {session.ledger.sent:,} so far"),), rank=8),
        ]
        if session.settings.policy != "none":  # how far off the next eviction is (/preview: what it takes)
            left = budget - needed - (0 if draft_size else PER_MESSAGE)
            parts.append(Part((("", f"evicts in ~{left:,}" if left > 0 else "sending evicts"),), rank=5))
        if self.tool_calls:  # a tool loop under way: how many calls this turn has made
            parts.append(Part((("class:warn", f"tool calls {self.tool_calls}"),), rank=2))
        return list(fit(parts, self._columns()))

    def _columns(self) -> int:
        """Return the terminal's width (80 when it cannot be told)."""
        try:
            return max(1, self.prompt.app.output.get_size().columns - 1)  # the last cell may wrap
        except Exception:  # no output yet, a closed terminal
            return 79

    # ---- loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Run until /exit, /quit or Ctrl-D; return the exit code."""
        warm = threading.Thread(target=self.session.counter.warm, daemon=True)
        warm.start()
        prefill: Prefill | None = None
        while True:
            for notice in self.notices():  # e.g. a tool server started in the background failed
                self.renderer.note(notice)
            try:
                line = self.prompt.prompt(default=prefill.text if prefill else "")
            except KeyboardInterrupt:
                prefill = None
                continue  # Ctrl-C at the prompt clears the line
            except EOFError:
                return 0
            editing, prefill = prefill, None
            # prompt_toolkit decodes input with surrogateescape: each invalid byte becomes a lone
            # surrogate, which no request could carry.
            if LONE_SURROGATE.search(line):
                line = LONE_SURROGATE.sub("\ufffd", line)
                self.renderer.note("the line is not valid UTF-8: its invalid bytes are replaced with \ufffd")
            if not line.strip():
                continue
            base, pin = None, False
            if line.lstrip().startswith("/"):  # a command, or //text: a message that begins with /
                try:
                    result = self.command(line)
                except ChatError as error:
                    self.renderer.error(str(error))
                    continue
                except KeyboardInterrupt:  # handlers change the session only once they have succeeded
                    self.renderer.note(f"cancelled {line.split()[0]}; nothing changed")
                    continue
                except Exception as error:  # a bug: say so in one line and keep the conversation
                    self.bug(error)
                    continue
                self.after_change(line)
                if isinstance(result, Exit):
                    return 0
                try:
                    self.renderer.result(result)
                except KeyboardInterrupt:  # a long table: stop printing it, keep the chat
                    self.renderer.note("output cut short")
                if isinstance(result, Prefill):
                    prefill = result
                    if result.note:
                        self.renderer.note(result.note)
                    continue
                if not isinstance(result, Send):
                    continue
                if result.note:
                    self.renderer.note(result.note)
                line, base, pin = result.text, result.base, result.pin
            if base is None and editing is not None and self.session.conversation is editing.before:
                base, pin = editing.base, editing.pin
            if self.turn(line, base, pin=pin) and pin:
                self.after_change("pin the message sent again")

    def command(self, line: str) -> Result:
        """Run the slash command in ``line``; one that waits on the server shows a spinner meanwhile."""
        name = line.split()[0][1:].lower() if line.split() else ""
        if name not in WAITS:
            return dispatch(self.app, line)
        with held_keys(), Waiting(self.renderer.console, WAITS[name]):
            return dispatch(self.app, line)

    def turn(self, text: str, base: Conversation | None = None, *, pin: bool = False) -> bool:
        """Send ``text`` and stream the reply; return whether a reply was recorded.

        With ``base`` (``/retry``, ``/edit``) the message is sent from that conversation, and
        with ``pin`` it is pinned once answered (it replaces a pinned turn); on error or Ctrl-C
        the conversation is what it was before, either way, and ``/retry`` sends the message again.
        A spinner shows until the first token; keys typed meanwhile are not echoed into the reply.
        """
        view = self.view = _TurnView(self.renderer)
        self.tool_calls = 0

        def on_event(event: Event) -> None:
            if isinstance(event, ToolCalled):
                self.tool_calls += 1
            view.event(event)

        hooks = Hooks(on_event=on_event, on_delta=view.feed, approve=self.approve)
        before = self.session.snapshot()
        try:
            with held_keys(), self.renderer.holding(view.event):
                view.open()
                self.session.send(text, hooks=hooks, base=base, pin=pin)
                view.close()
            return True
        # Each line below comes after what was shown of the reply: the view is closed first, so the
        # unfinished part is printed once, above the line, not after it.
        except KeyboardInterrupt:
            # Ctrl-C may land after the reply was kept, while it is still being drawn: the turn is
            # cancelled all the same, reply and costs together, as the line below says.
            self.session.cancel(text, before, base=base, pin=pin)
            view.close()
            self.renderer.note("cancelled; the conversation is unchanged (/retry sends the message again)")
        except ChatError as error:
            view.close()
            self.renderer.error(f"{self.advice(error)} ({unchanged(error)})")
        except Exception as error:  # a bug: the conversation must survive it
            view.close()
            self.bug(error)
        finally:
            view.close()
        return False

    def advice(self, error: ChatError) -> str:
        """Return the message of ``error`` with hints that work in the chat."""
        if isinstance(error, BudgetError):
            return budget_hint(error, self.session.settings.effective_context_window, chat=True)
        return str(error)

    def approve(self, call: ToolCall, spec: ToolSpec) -> bool:
        """Ask whether to run ``call`` (y / n / a = always for this tool this session); Ctrl-C cancels
        the turn."""
        if spec.offered in self.always:
            return True
        while True:
            # Named as the call line names it (``Renderer.event``): escapes stripped, not shown as ^[.
            name = one_line(redact(spec.display))
            answer = self.asker.prompt(f"run {name}? [y]es / [n]o / [a]lways for this tool: ")
            answer = answer.strip().lower()
            if answer in ("y", "yes", "a", "always"):
                if answer[0] == "a":
                    self.always.add(spec.offered)
                return True
            if answer in ("n", "no"):
                return False

    def progress(self, event: ToolProgress) -> None:
        """Show a running tool call's progress (from the tools' thread) on the turn's live line."""
        view = self.view
        if view is not None:
            view.progress(event)

    def ask_text(self, question: str) -> str:
        """Ask the user ``question`` (a server's elicitation, during a tool call); Ctrl-C cancels the turn."""
        if self.view is not None:
            self.view._stop_waiting()
        return self.asker.prompt(question)

    def confirm(self, line: str) -> bool:
        """Show ``line`` (what a server asks the model, during a tool call) and ask whether to send it."""
        self.renderer.note(line)
        while True:
            answer = self.ask_text("send it? [y]es / [n]o: ").strip().lower()
            if answer in ("y", "yes", "n", "no"):
                return answer.startswith("y")

    def bug(self, error: Exception) -> None:
        """Report an unexpected exception (a bug) in one line, the traceback with ``debug``."""
        if self.debug:  # the renderer masks every key and URL password the run was given
            self.renderer.note("".join(traceback.format_exception(error)))
        self.renderer.error(f"internal error (a bug in stateless-chat): {type(error).__name__}: {error}; "
                            "the conversation is unchanged (--debug shows the traceback)")


def unchanged(error: ChatError) -> str:
    """Return what a failed turn left behind, and whether sending it again may work."""
    if isinstance(error, BudgetError):
        return "nothing was sent; /retry sends it once there is room"
    if isinstance(error, (ConnectError, StreamError)) or (isinstance(error, ServerError) and error.retryable):
        return "the conversation is unchanged; /retry sends the message again"
    return "the conversation is unchanged"
