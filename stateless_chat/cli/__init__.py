"""The ``stateless-chat`` command: parse flags, build the session, run the REPL or answer once.

This is the one place that catches ``ChatError``: it prints the message as one line
on stderr and exits with the error's code. Heavy imports (rich, prompt_toolkit,
openai, typer) happen only on the path that needs them, so one-shot use starts fast:
a plain one-shot command line (a prompt, the common flags) is read by ``cli.quick``
without Typer, which ``cli.commandline`` (the whole command line, ``--help``, ``logs``)
costs ~0.1 s to import and run.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from stateless_chat import __version__
from stateless_chat.app import Options
from stateless_chat.errors import BudgetError, ChatError, UsageError, keep_secret, redact
from stateless_chat.sanitize import LONE_SURROGATE, for_terminal, one_line
from stateless_chat.ui.hints import budget_hint

if TYPE_CHECKING:  # imported where used: a one-shot run must not pay for what it does not use
    from types import FrameType

    from stateless_chat.chat.session import Session
    from stateless_chat.chat.turn import Hooks
    from stateless_chat.config import Settings
    from stateless_chat.core.messages import Event, ToolCall
    from stateless_chat.tools.specs import ToolSpec

PROG = "stateless-chat"
SUBCOMMANDS = ("logs",)  # a first argument that names one of these runs it; anything else chats


def chat_command(*, prompt: str | None, model: str | None, base_url: list[str] | None, api_key: str | None,
                 system: str | None, config: Path | None, no_stream: bool, temperature: float | None,
                 max_tokens: int | None, budget: int | None, policy: str | None, evict_to: float | None,
                 usage: bool, verbose: bool, quiet: bool, dry_run: bool, load: Path | None, continue_: bool,
                 cid: str | None, no_log: bool, recall: str | None, memory: str | None, save: Path | None,
                 local: bool, local_model: Path | None, yes: bool, no_tools: bool, no_instructions: bool,
                 docs: list[Path] | None, max_prompt_tokens: int | None, max_cost: float | None, debug: bool,
                 version: bool | None = None) -> int:
    """Run the chat command with its parameters as the command line gave them (``commandline.chat``,
    or ``quick.parse`` for a plain one-shot): the REPL, a one-shot answer or a dry run; return the exit
    status. Every ``ChatError`` is one line on stderr (its traceback with ``--debug``) and its code."""
    flags: dict[str, Any] = {
        "model": model,
        "base_url": base_url or None,
        "api_key": api_key,
        "system": system,
        "stream": False if no_stream else None,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "budget": budget,
        "policy": policy,
        "evict_to": evict_to,
        "log": False if no_log else None,
        "recall": recall,
        "memory": memory,
        "approve": "always" if yes else None,
        "instructions": False if no_instructions else None,
        "docs": [str(path) for path in docs] if docs else None,
    }
    prompt = whole_arguments(flags, prompt)
    options = Options(prompt, config, usage, verbose, dry_run, debug, load, save,
                      local=local or local_model is not None, local_model=local_model, tools=not no_tools,
                      quiet=quiet, resume=continue_ or cid is not None, cid=cid,
                      max_prompt_tokens=max_prompt_tokens, max_cost=max_cost)
    keep_secret(api_key or os.environ.get("OPENAI_API_KEY"))  # redacted even before the settings load
    try:
        code = run(options, {k: v for k, v in flags.items() if v is not None})
    except ChatError as error:
        if debug:
            show_traceback(error)
        else:
            say(str(error))
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug: one line, the traceback with --debug
        if debug:
            show_traceback(error)
        else:
            say(f"internal error (a bug): {type(error).__name__}: {error} (--debug shows the traceback)")
        return 1
    return code


def say(text: str) -> None:
    """Print ``text`` to stderr as one line after the program's name: no controls, no secrets.

    Every line the command prints about what happened goes through here: it may quote a
    server, a file, the config or the command line.
    """
    print(f"{PROG}: {one_line(redact(text))}", file=sys.stderr)


def show_traceback(error: BaseException) -> None:
    """Print ``error``'s traceback (``--debug``) with every secret masked and every control stripped:
    a server's error it chains to may quote the key, or carry escape sequences."""
    import traceback

    print(for_terminal(redact("".join(traceback.format_exception(error)))), end="", file=sys.stderr)


def whole_arguments(flags: dict[str, Any], prompt: str | None) -> str | None:
    """Replace the invalid bytes of text arguments (which arrive as lone surrogates) with U+FFFD in
    ``flags`` and return the prompt likewise, saying so in one line: no request, header or terminal
    could carry them. File paths are left as they are (they name files as bytes)."""
    named: list[str] = []
    bad = 0

    def whole(name: str, value: str) -> str:
        nonlocal bad
        found = len(LONE_SURROGATE.findall(value))
        if found:
            bad += found
            if name not in named:
                named.append(name)
        return LONE_SURROGATE.sub("\ufffd", value)

    if prompt is not None:
        prompt = whole("the prompt", prompt)
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if key == "docs":  # file paths
            continue
        if isinstance(value, str):
            flags[key] = whole(flag, value)
        elif isinstance(value, list):
            flags[key] = [whole(flag, item) if isinstance(item, str) else item for item in value]
    if bad:
        say(f"the command line is not valid UTF-8 ({', '.join(named)}): "
            f"replaced {bad} invalid byte(s) with �")
    return prompt





def note(options: Options, text: str) -> None:
    """``say`` a note (not an error) on stderr, unless ``-q``."""
    if not options.quiet:
        say(text)


def read_stdin() -> str:
    """Return stdin decoded as UTF-8; invalid bytes become U+FFFD and NULs are dropped, with a note."""
    data = sys.stdin.buffer.read()
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - data.count("\ufffd".encode())
    nuls = text.count("\x00")
    if bad > 0:
        say(f"stdin is not valid UTF-8: replaced {bad} invalid byte sequence(s) with �")
    if nuls:
        say(f"dropped {nuls} NUL byte(s) from stdin")
        text = text.replace("\x00", "")
    return text


def compose(prompt: str | None, piped: str | None) -> str:
    """Return the one-shot user message: the argument, a blank line, then the stdin text."""
    parts = [p for p in (prompt, piped) if p is not None and p.strip()]
    if prompt is not None and piped is not None and piped.strip():
        return f"{prompt}\n\n{piped}"
    return parts[0] if parts else ""


def run(options: Options, flags: dict[str, Any]) -> int:
    """Read the settings, then print the dry run, answer once, or open the REPL; return the exit code."""
    from stateless_chat.config import load_settings

    given: set[str] = set()
    settings = load_settings(options.config, os.environ, flags, given)
    stdin = sys.stdin  # None when the process was started with standard input closed
    on_terminal = stdin is not None and stdin.isatty()
    interactive = options.prompt is None and on_terminal
    text = ""
    if not interactive:
        piped = None if stdin is None or on_terminal else read_stdin()
        text = compose(options.prompt, piped)
        if not text.strip() and not options.dry_run:
            raise UsageError("nothing to send: give a prompt argument or pipe text on stdin")

    if options.save is not None and interactive:
        raise UsageError("--save is for one-shot use; in the chat, /save FILE saves the conversation")
    if options.resume and options.load is not None:
        raise UsageError("give either --load FILE or -c/--cid (a conversation from the log), not both")
    if options.dry_run:
        return dry_run(settings, options, flags, text)
    if interactive:
        return run_repl(settings, options, flags, given)
    return run_once(settings, text, options, flags, given)


def dry_run(settings: Settings, options: Options, flags: dict[str, Any], text: str) -> int:
    """Print the body the real run would send (to stdout) and where it would go (to stderr)."""
    from stateless_chat.app import Voice, build_preview
    from stateless_chat.sanitize import safe_json
    from stateless_chat.ui.commands import request_size_line

    app, where = build_preview(settings, options, flags, Voice(note=lambda line: note(options, line)))
    with app:
        body = app.session.preview_body(text or None)
        print(safe_json(body))
        note(options, f"dry run: this request would go to {where} (model {app.session.settings.model}); "
                      "nothing was sent")
        note(options, request_size_line(app.session, body))
        if app.session.learned_source:
            note(options, f"budget {app.session.budget:,} tokens: {app.session.learned_source}")
    return 0


def run_once(settings: Settings, text: str, options: Options, flags: dict[str, Any],
             given: set[str] | frozenset[str]) -> int:
    """Answer ``text`` once: the reply to stdout (plain text unless stdout is a colour terminal)."""
    if options.save is None:
        return answer_once(settings, text, options, flags, given)
    from stateless_chat.store.filelock import exclusive
    from stateless_chat.store.persist import SaveFileError, expand

    path = expand(options.save)
    with contextlib.ExitStack() as held:
        try:  # held from reading the file to writing it back: another run continuing it waits its turn
            held.enter_context(exclusive(path, lambda: say(f"waiting for another run saving to {path}")))
        except OSError as error:
            raise SaveFileError(f"cannot lock {path} for saving: {error.strerror or error}") from None
        return answer_once(settings, text, options, flags, given)


def one_shot_hooks(options: Options) -> Hooks:
    """Return where a one-shot turn's output goes: events on stderr with ``-v`` (a cut answer even
    without), and tool calls refused without ``--yes``, said once."""
    from stateless_chat.chat.turn import Hooks
    from stateless_chat.core.messages import ReplyCut, describe

    def on_event(event: Event) -> None:
        if options.verbose or isinstance(event, ReplyCut):  # a cut answer is said even without -v
            note(options, describe(event))

    refused: list[str] = []

    def refuse(call: ToolCall, spec: ToolSpec) -> bool:
        if not refused:  # once: the model is told each time, the user once
            note(options, f"tool call {spec.display} not run: one-shot use runs tools only with --yes "
                          '(or approve = "always" in the config)')
        refused.append(spec.display)
        return False

    return Hooks(on_event=on_event, approve=refuse)


def answer_once(settings: Settings, text: str, options: Options, flags: dict[str, Any],
                given: set[str] | frozenset[str]) -> int:
    """``run_once`` with the ``--save`` file (if any) locked: assemble, answer, usage line, save."""
    from stateless_chat.app import Voice, build

    shown = options.verbose and not options.quiet
    voice = Voice(note=lambda line: note(options, line), warn=say,
                  unavailable=lambda line: note(options, line), progress=say if shown else None)
    with build(settings, options, flags, interactive=False, given=given, voice=voice,
               hooks=one_shot_hooks(options)) as app:
        session = app.session
        from stateless_chat.chat import turnguard

        over = turnguard.refusal(session, text, max_prompt_tokens=options.max_prompt_tokens,
                                 max_cost=options.max_cost)
        if over is not None:
            raise UsageError(over)
        servers = app.tools.servers if app.tools is not None else None
        if servers is not None:
            from stateless_chat.chat import asks

            def approve_sampling(line: str) -> bool:
                note(options, line)
                if settings.approve != "always":
                    note(options, "not sent: one-shot use sends a server's requests to the model only "
                                  "with --yes")
                return settings.approve == "always"

            servers.on_ask = lambda ask: asks.answer(ask, session, approve=approve_sampling, prompt=None,
                                                     note=lambda line: note(options, line))
        if shown and app.workspace is not None:
            for line in app.workspace.started():
                say(line)
        try:
            answer(session, text, lambda line: note(options, line))
        except BudgetError as error:  # its advice, in the words of the command line
            raise BudgetError(budget_hint(error, session.settings.effective_context_window, chat=False),
                              error.needed) from error
        if options.usage and not options.quiet:
            say(usage_line(session, local=app.local))
        if options.save is not None:
            from stateless_chat.store import persist

            persist.save(options.save, session.conversation, session.ledger, session.settings)
    return 0


def answer(session: Session, text: str, say: Callable[[str], None] = lambda line: None) -> None:
    """Send ``text`` and write the reply to stdout: Markdown on a colour terminal, else plain text.

    With tools offered, stdout gets the answer alone and each tool step is ``say``'s lines on stderr
    (``ui.steps.Steps``)."""
    fancy = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    if session.tools is None:
        writer = _reply_writer(fancy)
        try:
            session.send(text, writer.feed)
        except BaseException:
            writer.abandon()  # a failed turn writes nothing more: its one line is on stderr
            raise
        writer.close()
        return
    from dataclasses import replace

    from stateless_chat.ui.steps import Steps

    steps = Steps(lambda: _reply_writer(fancy), say, hold=not sys.stdout.isatty())
    shown = session.hooks.on_event

    def on_event(event: Event) -> None:
        if not steps.event(event):
            shown(event)

    try:
        session.send(text, hooks=replace(session.hooks, on_event=on_event, on_delta=steps.feed))
    except BaseException:
        steps.abandon()  # a failed turn writes nothing more: its one line is on stderr
        raise
    steps.finish()


class _PlainReply:
    """A reply as plain text on stdout, controls stripped, ending with a newline."""

    def __init__(self) -> None:
        from stateless_chat.sanitize import ControlStripper

        self.stripper = ControlStripper()
        self.ends_line = False  # whether what was written so far ends with a newline

    def write(self, shown: str) -> None:
        if shown:
            sys.stdout.write(shown)
            sys.stdout.flush()
            self.ends_line = shown.endswith("\n")

    def feed(self, delta: str) -> None:
        self.write(self.stripper.feed(delta))

    def close(self) -> None:
        self.write(self.stripper.flush())
        if not self.ends_line:
            self.write("\n")

    def abandon(self) -> None:
        pass


class _RichReply:
    """A reply as Markdown on a colour terminal (``ui.render.ReplyStream``)."""

    def __init__(self) -> None:
        from rich.console import Console

        from stateless_chat.ui.render import ReplyStream

        self.stream = ReplyStream(Console(highlight=False))
        self.stream.__enter__()

    def feed(self, delta: str) -> None:
        self.stream.feed(delta)

    def close(self) -> None:
        self.stream.__exit__(None, None, None)

    def abandon(self) -> None:
        self.close()


def _reply_writer(fancy: bool) -> _PlainReply | _RichReply:
    return _RichReply() if fancy else _PlainReply()


def usage_line(session: Session, *, local: bool = False) -> str:
    """Return the ``-u`` line: the last turn's prompt (ours and the server's, with what it read from its
    cache), the completion, and the cost when the model has a price; and, on a conversation's first
    turn only, why counts are missing or were counted here."""
    from stateless_chat.chat.meter import Meter
    from stateless_chat.ui.commands import bill_line

    stats = session.ledger.turns[-1]
    counter = session.counter
    counted = isinstance(counter, Meter) and counter.counted_turn == stats.turn  # the server sent none
    reported, completion = stats.reported_prompt_tokens, stats.reported_completion_tokens
    if counted:
        line = (f"usage: prompt {stats.estimated_prompt_tokens:,} counted exactly, not reported; completion "
                f"{completion or 0:,} counted")
    else:
        said = "not reported" if reported is None else f"{reported:,} reported"
        if reported is not None and stats.reported_cached_tokens is not None:
            said += f" ({stats.reported_cached_tokens:,} cached)"
        line = (f"usage: prompt {counter.label}{stats.estimated_prompt_tokens:,} estimated, {said}; "
                f"completion {'not reported' if completion is None else f'{completion:,}'}")
    if stats.steps > 1 or stats.summary_prompt_tokens:
        # A tool loop (or a summary) made more requests than the last: their figures are the turn's, as the
        # cost beside them is, and the last request's are said as such.
        more = (f"{stats.steps} requests (a tool loop)" if stats.steps > 1
                else "the turn's requests (a summary's too)")
        line = (f"usage: {more}: prompt {stats.sent:,}, {stats.cached:,} of it cached; completion "
                f"{stats.completion:,} in all; the last request: {line.removeprefix('usage: ')}")
    cost = bill_line(session)
    line = f"{line}; {cost}" if cost else line
    if len(session.ledger.turns) > 1:  # a continued conversation: its first line said why
        return line
    why = []
    if counted:
        why.append("the server sent no usage with the streamed reply, as llama-cpp-python never does: "
                   "counted with its own tokenizer")
    elif reported is None or completion is None:
        streamed = session.settings.stream
        why.append("the server sent no usage" + (" with the streamed reply, as llama-cpp-python never does: "
                                                  "--no-stream gets it" if streamed else ""))
    if local and counter.label:
        why.append("the local model's chat template adds text of its own, e.g. SmolLM2's default system "
                   "prompt, which the server counts and the estimate does not")
    return line + (f" ({'; '.join(why)})" if why else "")


def run_repl(settings: Settings, options: Options, flags: dict[str, Any],
             given: set[str] | frozenset[str]) -> int:
    """Open the interactive chat on the terminal."""
    gc.enable()  # main() paused it for start-up; a long session needs it
    from rich.console import Console

    from stateless_chat.app import Voice, build
    from stateless_chat.config import input_history_path
    from stateless_chat.ui.render import Renderer, Waiting
    from stateless_chat.ui.repl import Repl

    console = Console(highlight=False)
    renderer = Renderer(console)

    def waiting(what: str, work: Callable[[], Any]) -> None:
        if sys.stderr.isatty() and not options.quiet:
            with Waiting(Console(stderr=True, highlight=False), what):
                work()
        else:
            work()

    voice = Voice(note=lambda line: note(options, line), warn=renderer.warn, unavailable=renderer.note,
                  waiting=waiting, progress=None if options.quiet else say)
    from stateless_chat.chat.turn import Hooks

    with build(settings, options, flags, interactive=True, given=given, voice=voice,
               hooks=Hooks(on_event=renderer.event)) as app:
        session = app.session
        repl = Repl(app, renderer, history_path=input_history_path(session.settings, os.environ),
                    debug=options.debug)
        log = app.log
        if log is not None:  # every change a command makes is logged, not only turns
            repl.after_change = lambda what: log.edited(what, session.conversation, session.ledger,
                                                        session.settings)
        continued = f" · continuing {app.log.cid}" if options.resume and app.log is not None else ""
        # The model name may come from a loaded file or a config: no controls reach the terminal.
        console.print(
            one_line(f"stateless-chat {__version__} · {session.settings.model} · budget {session.budget:,} "
                     f"tokens{continued} · /help for commands, Ctrl-D to leave"),
            style="dim",
            markup=False,
        )
        source = session.context_source  # a loaded or continued conversation names its own
        if source and not options.quiet:
            window = session.settings.effective_context_window
            console.print(one_line(f"context window {window:,} tokens ({source})"), style="dim",
                          markup=False)
        if session.learned_source and not options.quiet:
            console.print(one_line(f"budget {session.budget:,} tokens: {session.learned_source}"),
                          style="dim", markup=False)
        servers = app.tools.servers if app.tools is not None else None
        if servers is not None:
            from stateless_chat.chat import asks

            repl.notices = servers.take_notices
            servers.on_progress = repl.progress
            servers.on_ask = lambda ask: asks.answer(ask, session, approve=repl.confirm, prompt=repl.ask_text,
                                                     note=renderer.note)
        if app.workspace is not None and not options.quiet:
            for line in app.workspace.started():
                console.print(one_line(line), style="dim", markup=False)
        return repl.run()


TERMINATE_GRACE_SECONDS = 3.0


def _terminate(signum: int, frame: FrameType | None) -> None:
    """End the run as ``SystemExit``: what the run opened (the local model's server, the MCP servers,
    the log) closes as the app's resources unwind; exit hard if unwinding gets stuck (the children
    then end on their own: each holds a lifeline pipe to this process)."""
    # Whatever the unwinding leaves half-built (an event loop caught mid-start) is torn down on the way
    # out; its complaints ("Exception ignored in ...") are no news to someone who ended the program.
    sys.unraisablehook = lambda unraisable: None
    watchdog = threading.Timer(TERMINATE_GRACE_SECONDS, os._exit, (128 + signum,))
    watchdog.daemon = True
    watchdog.start()
    if "prompt_toolkit" in sys.modules:
        from prompt_toolkit.application import get_app_or_none

        app = get_app_or_none()
        if app is not None and app.is_running and app.loop is not None:
            # Raised inside prompt_toolkit's event loop, SystemExit would be reported as an
            # unhandled error; asking the prompt to end with it unwinds the REPL cleanly.
            app.loop.call_soon_threadsafe(lambda: app.exit(exception=SystemExit(128 + signum)))
            return
    raise SystemExit(128 + signum)


def _exit_code(code: object) -> int:
    """Return the process status for ``SystemExit(code)``, printing a message code as Python does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(for_terminal(redact(str(code))), file=sys.stderr)
    return 1


def exit_now(code: int) -> NoReturn:
    """Run the atexit handlers (a local server's stop), flush, and end the process without teardown.

    Tearing down every module of openai and its ~100k pydantic objects costs ~0.1 s of a
    one-shot run and does nothing the operating system does not do anyway.
    """
    atexit._run_exitfuncs()
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def install_signal_handlers() -> None:
    """Quiet on a closed pipe; SIGTERM and SIGHUP (the terminal closed) end the run with its cleanup:
    the local server stopped and its log removed, a save in progress not left as a temporary file."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, _terminate)
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:  # nohup stays nohup
        signal.signal(signal.SIGHUP, _terminate)


def main() -> None:
    """Console-script entry point: quiet on a closed pipe, clean on SIGTERM, quick to start and end.

    The objects imported at start-up live until exit, so the cyclic collector is paused
    while they load (``run_repl`` resumes it for the long-lived REPL): ~0.07 s saved.
    """
    install_signal_handlers()
    gc.disable()
    try:
        from stateless_chat.cli import quick

        params = quick.parse(sys.argv[1:], os.environ)
        if params is not None:
            code = chat_command(**params)
        else:
            from stateless_chat.cli.commandline import app

            app(prog_name=PROG)
            code = 0
    except SystemExit as done:
        code = _exit_code(done.code)
    exit_now(code)


def __getattr__(name: str) -> Any:
    """``app`` and ``logs_app``, the Typer command line, imported on first use (``cli.commandline``)."""
    if name in ("app", "logs_app"):
        from stateless_chat.cli import commandline

        return getattr(commandline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
