"""The Typer command line: the chat's flags (``chat``, the default command), ``--help`` and ``--version``,
and the ``logs`` subcommands. ``cli.chat_command`` runs the chat; a plain one-shot command line
reaches it through ``cli.quick`` without importing this module (nor Typer)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from stateless_chat import __version__
from stateless_chat.cli import PROG, SUBCOMMANDS, chat_command, say
from stateless_chat.errors import ChatError, UsageError, redact
from stateless_chat.ui import docs

if TYPE_CHECKING:
    from stateless_chat.config import Settings
    from stateless_chat.store.logstore import LogStore


class _ChatFirst(TyperGroup):
    """The command line is the chat's unless its first argument names a subcommand (``logs``).

    So ``stateless-chat "a prompt"``, ``stateless-chat -m NAME`` and ``stateless-chat`` chat as
    ever, ``stateless-chat logs list`` reads the log, and ``stateless-chat -- logs`` sends "logs".
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or args[0] not in SUBCOMMANDS:
            args = ["chat", *args]
        return super().parse_args(ctx, args)


class _ChatContext(typer.Context):
    @property
    def command_path(self) -> str:
        """The chat is the program itself: its usage and errors say ``stateless-chat``, not ``... chat``."""
        return self.find_root().info_name or PROG


class _ChatCommand(TyperCommand):
    context_class = _ChatContext


app = typer.Typer(
    cls=_ChatFirst,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"{PROG} {__version__}")
        raise typer.Exit()


EXAMPLES = f"""\
\b
Examples:
  stateless-chat                                  the chat (the local model if no key or URL is set)
  stateless-chat "What is a monad?"               answer once and exit
  git diff | stateless-chat "review this" -m gpt-4o
  stateless-chat --base-url http://127.0.0.1:8080/v1 "hi"    a server of your own, no key needed
  stateless-chat --dry-run -s "be brief" "hi"     print the request, send nothing
  echo "and then?" | stateless-chat -c            one more turn of the last conversation
  stateless-chat logs list                        the conversation log (logs --help)
  stateless-chat -- logs                          send the prompt "logs"

\b
Settings also come from the config file (~/.config/stateless-chat/config.toml) and from
OPENAI_API_KEY, OPENAI_BASE_URL, STATELESS_CHAT_MODEL, STATELESS_CHAT_BUDGET and
STATELESS_CHAT_POLICY; flags win. In the chat, /help lists the commands.

\b
Documentation, a page per subject, in {docs.folder()}
  commands.md              these flags, one-shot use, the chat's keys and commands
  settings.md              every setting: config key, environment variable, flag, default
  context-and-memory.md    the budget, eviction, the server's cache, the bill, standing memory
  token-counts.md, log.md, tools.md, instructions.md, local-model.md, gateway.md, faults.md"""


@app.command("chat", cls=_ChatCommand,
             help="Chat with any OpenAI-compatible API, resending the whole history each turn. "
                  "With PROMPT (or text piped on stdin, which is appended to it), answer once and exit. "
                  "Every turn is logged (stateless-chat logs --help).",
             epilog=EXAMPLES)
def chat(
    prompt: Annotated[
        str | None, typer.Argument(metavar="PROMPT", hidden=True)  # described in the command's help
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", metavar="NAME", help="Model name. Default: gpt-4o-mini.")
    ] = None,
    base_url: Annotated[
        list[str] | None,
        typer.Option("--base-url", metavar="URL",
                     help="API base URL, e.g. http://127.0.0.1:8080/v1; give it more than once for failover. "
                          "Default: https://api.openai.com/v1."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", metavar="KEY",
                     help="API key. Visible to other users via ps: prefer OPENAI_API_KEY."),
    ] = None,
    system: Annotated[
        str | None, typer.Option("--system", "-s", metavar="TEXT", help="System prompt (always sent).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", metavar="FILE",
                     help="Config file (TOML). Default: ~/.config/stateless-chat/config.toml if it exists."),
    ] = None,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="Wait for the whole reply.")] = False,
    temperature: Annotated[
        float | None,
        typer.Option("--temperature", metavar="T",
                     help="Sampling temperature, 0 to 2. Default: the server's."),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", metavar="N",
                     help="Reply length limit, held back in the budget. Default: 1024 (reply_reserve)."),
    ] = None,
    budget: Annotated[
        int | None,
        typer.Option("--budget", metavar="N",
                     help="Token budget of one request, reply included. Default: the context window, "
                          "at most 32000."),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option("--policy", metavar="NAME",
                     help="Eviction policy: drop-oldest (default), summarize or none."),
    ] = None,
    evict_to: Annotated[
        float | None,
        typer.Option("--evict-to", metavar="SHARE",
                     help="Once over budget, evict down to this share of it. Default: 0.5."),
    ] = None,
    usage: Annotated[
        bool, typer.Option("--usage", "-u", help="One-shot: print usage to stderr (not with -q).")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="One-shot: events and the local model's start to stderr.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only the answer and errors: no notes; wins over -u and -v.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the request JSON and where it would go; send nothing.")
    ] = False,
    load: Annotated[
        Path | None,
        typer.Option("--load", metavar="FILE", help="Resume a conversation saved with /save or --save."),
    ] = None,
    continue_: Annotated[
        bool, typer.Option("--continue", "-c", help="Continue the most recent conversation in the log.")
    ] = False,
    cid: Annotated[
        str | None,
        typer.Option("--cid", metavar="ID",
                     help="Continue the logged conversation with this id (or its start)."),
    ] = None,
    no_log: Annotated[bool, typer.Option("--no-log", help="Do not log this chat.")] = False,
    recall: Annotated[
        str | None,
        typer.Option("--recall", metavar="MODE",
                     help="auto (default): bring back evicted turns relevant to each new message; "
                          "off: never."),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option("--memory", metavar="MODE",
                     help="auto (default): keep what you say must hold (\"always ...\", \"I'm "
                          "vegetarian\") in every request; manual: only /remember; off: none."),
    ] = None,
    save: Annotated[
        Path | None,
        typer.Option("--save", metavar="FILE",
                     help="One-shot: continue this conversation file and save the exchange to it."),
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Chat with the bundled local model (the [local] extra).")
    ] = False,
    local_model: Annotated[
        Path | None,
        typer.Option("--local-model", metavar="FILE",
                     help="Chat with this GGUF via a local llama.cpp server."),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Run the tools the model calls without asking.")
    ] = False,
    no_tools: Annotated[
        bool, typer.Option("--no-tools", help="Offer no tools (MCP servers) in this run.")
    ] = False,
    no_instructions: Annotated[
        bool, typer.Option("--no-instructions", help="Do not read the instruction files (AGENTS.md).")
    ] = False,
    docs: Annotated[
        list[Path] | None,
        typer.Option("--docs", metavar="PATH",
                     help="Retrieve from these documents (a file, folder or glob; repeatable): the best "
                          "chunks for each message are sent with it."),
    ] = None,
    max_prompt_tokens: Annotated[int | None, typer.Option(
        "--max-prompt-tokens", metavar="N", min=1,
        help="One-shot: refuse (exit 2) a turn whose request is estimated at more than N prompt tokens.")
    ] = None,
    max_cost: Annotated[float | None, typer.Option(
        "--max-cost", metavar="USD", min=0.0,
        help="One-shot: refuse (exit 2) a turn estimated to cost more than USD (its prompt, and a reply as "
             "long as the reserve, at the model's price).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    code = chat_command(**locals())
    raise typer.Exit(code)


# ---- stateless-chat logs ------------------------------------------------------------------

logs_app = typer.Typer(
    help="Read the conversation log (every turn and change of every chat, in SQLite): list, show, search, "
    "export, rm, replay, path. Output is plain text (or --json); every key this run knows is masked. "
    f"Documentation: {docs.page('log.md')}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(logs_app, name="logs")


@logs_app.callback()
def logs_options(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="Config file (TOML): its log_db.")] = None,
) -> None:
    ctx.obj = config


def _log_settings(ctx: typer.Context) -> Settings:
    """Return this run's settings (the config file, the environment): every key they hold is masked in
    all that ``logs`` prints from here on (``config.load_settings`` keeps them for ``redact``)."""
    from stateless_chat.config import load_settings

    return load_settings(ctx.obj, os.environ, {})


def _log_path(ctx: typer.Context) -> Path:
    from stateless_chat.config import log_db_path

    return log_db_path(_log_settings(ctx), os.environ)


def _read_log(ctx: typer.Context, read: Callable[[LogStore, Settings], list[str] | object], *, empty: str,
              write: bool = False) -> None:
    """Open the log (read-only unless ``write``) and print what ``read(store, settings)`` returns: lines,
    one each (``empty`` on stderr when none), or a JSON document; every key the run knows is masked in
    it. Every error is one line on stderr and the exit status."""
    import json

    from stateless_chat.config import log_db_path
    from stateless_chat.store.logstore import LogStore

    try:
        settings = _log_settings(ctx)
        path = log_db_path(settings, os.environ)
        if not path.exists():
            say(f"no conversation logged yet (the log would be {path})")
            return
        with LogStore.open(path, read_only=not write) as store:
            for note in store.notes:
                say(note)
            found = read(store, settings)
    except ChatError as error:
        say(str(error))
        raise typer.Exit(error.exit_code) from None
    if not isinstance(found, list) or any(not isinstance(line, str) for line in found):
        print(redact(json.dumps(found, indent=2, ensure_ascii=False, default=str)))
        return
    if not found:
        say(empty)
    for line in found:
        print(redact(line))


def _since(text: str | None) -> Any:
    from stateless_chat.ui.logview import parse_when

    return None if text is None else parse_when(text)


JSON_HELP = "Print JSON records instead of lines."


@logs_app.command("list", help="Recent conversations, the most recently active first: id, when, model, "
                  "turns, tokens reported, cost, time waited, first line.")
def logs_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many.")] = 20,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="WHEN", help="Active since: a date (2025-01-30) or a time ago (12h, 7d).")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", metavar="NAME", help="With a turn sent to a model whose name holds NAME.")] = None,
    query: Annotated[str | None, typer.Option(
        "--query", "-q", metavar="WORDS", help="With a message matching WORDS (as logs search).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    from stateless_chat.store.logstore import Filters
    from stateless_chat.ui import logview

    def read(store: LogStore, settings: Settings) -> object:
        rows = store.conversations(limit, filters=Filters(since=_since(since), model=model, words=query))
        if as_json:
            return logview.list_records(rows, settings.prices)
        return logview.list_lines(rows, settings.prices)

    _read_log(ctx, read, empty="no conversation logged yet" if not (since or model or query)
              else "no logged conversation matches")


@logs_app.command("show", help="The transcript of conversation ID (or the start of it): every message, "
                  "evicted ones marked, each turn's usage, cost and time, and every event (the turns', "
                  "the changes made between turns, cancelled turns).")
def logs_show(
    ctx: typer.Context,
    cid: Annotated[str, typer.Argument(metavar="ID")],
    request: Annotated[int | None, typer.Option("--request", metavar="N",
                                                help="Print the exact JSON body turn N sent.")] = None,
    step: Annotated[int | None, typer.Option("--step", metavar="K",
                                             help="With --request: the Kth request of a tool loop.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    from stateless_chat.ui import logview

    def read(store: LogStore, settings: Settings) -> object:
        found = store.find(cid)
        if request is not None:
            return [logview.request_text(store, found, request, step)]
        if step is not None:
            raise UsageError("--step goes with --request N")
        if as_json:
            return logview.show_record(store, found, settings.prices)
        return logview.show_lines(store, found, settings.prices)

    _read_log(ctx, read, empty="nothing logged")


@logs_app.command("search", help="Full-text search of every logged message: conversation id, message number, "
                  "role, turn and the match. Every word must match; \"a phrase\" and prefix* work.")
def logs_search(
    ctx: typer.Context,
    query: Annotated[list[str], typer.Argument(metavar="QUERY...")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many hits.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    from stateless_chat.ui import logview

    text = " ".join(query)

    def read(store: LogStore, settings: Settings) -> object:
        hits = store.search(text, limit=limit)
        return logview.search_records(hits) if as_json else logview.search_lines(hits)

    _read_log(ctx, read, empty=f"no logged message matches {' '.join(text.split())!r}")


@logs_app.command("export", help="Conversation ID as it was left: a Markdown transcript, or (--format json) "
                  "a conversation file that --load continues.")
def logs_export(
    ctx: typer.Context,
    cid: Annotated[str, typer.Argument(metavar="ID")],
    form: Annotated[str, typer.Option("--format", metavar="md|json", help="md (default) or json.")] = "md",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE", help="Write it to FILE (mode 0600) instead of stdout.")] = None,
) -> None:
    from stateless_chat.store import persist
    from stateless_chat.ui import logview

    if form not in ("md", "json"):
        say(f"--format must be md or json, not {form!r}")
        raise typer.Exit(2)

    def read(store: LogStore, settings: Settings) -> object:
        found = store.find(cid)
        text = redact(logview.export_text(store, found, form))
        if output is None:
            return text.rstrip("\n").split("\n")
        persist.write_private(persist.expand(output), text, make_parents=False)
        return []

    _read_log(ctx, read, empty=f"wrote {output}")


@logs_app.command("rm", help="Delete conversations from the log, whole (messages, turns, requests, index), "
                  "and give the space back: by ID (or its start), or all last active before a date.")
def logs_rm(
    ctx: typer.Context,
    cids: Annotated[list[str] | None, typer.Argument(metavar="[ID]...")] = None,
    before: Annotated[str | None, typer.Option("--before", metavar="WHEN",
                                               help="Every conversation last active before WHEN: a date "
                                                    "(2025-01-30) or a time ago (30d).")] = None,
) -> None:
    if not cids and before is None:
        say("give the conversations to delete: logs rm ID... or logs rm --before DATE")
        raise typer.Exit(2)

    def read(store: LogStore, settings: Settings) -> object:
        found = [store.find(cid) for cid in cids or ()]
        if before is not None:
            found += store.older_than(_since(before))
        found = list(dict.fromkeys(found))
        if not found:
            return []
        size = _log_size(store.path)
        deleted = store.delete(found)
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        return [f"deleted {deleted} conversation(s) ({shown}); the log went from {size / 1e6:,.1f} MB to "
                f"{_log_size(store.path) / 1e6:,.1f} MB"]

    _read_log(ctx, read, empty="no conversation is that old: nothing deleted", write=True)


@logs_app.command("replay", help="What-if, offline: conversation ID's turns sent again with another policy, "
                  "budget and low-water mark, through the context and cache models, with the logged replies "
                  "and no model call: each request, what it evicts or folds, cache breaks, and the bill "
                  "against what was paid.")
def logs_replay(
    ctx: typer.Context,
    cid: Annotated[str, typer.Argument(metavar="ID")],
    policy: Annotated[str, typer.Option("--policy", metavar="NAME",
                                        help="drop-oldest, summarize or none.")] = "drop-oldest",
    budget: Annotated[int, typer.Option("--budget", metavar="N", min=1, help="Token budget of one request.")]
    = 32_000,
    evict_to: Annotated[float, typer.Option("--evict-to", metavar="SHARE",
                                            help="Once over budget, evict down to this share of it.")] = 0.5,
    prices: Annotated[str | None, typer.Option("--prices", metavar="MODEL",
                                               help="Bill at MODEL's price (default: the logged model's).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    from stateless_chat.store import replay

    def read(store: LogStore, settings: Settings) -> object:
        result = replay.replay(store, store.find(cid), settings, policy=policy, budget=budget,
                               evict_to=evict_to, prices_model=prices)
        return replay.record(result) if as_json else replay.lines(result)

    _read_log(ctx, read, empty="nothing to replay")


def _log_size(path: Path) -> int:
    """Return the bytes the log and its sidecars take."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


@logs_app.command("path", help="Where the log is (log_db in the config file moves it).")
def logs_path(ctx: typer.Context) -> None:
    try:
        print(_log_path(ctx))
    except ChatError as error:
        say(str(error))
        raise typer.Exit(error.exit_code) from None

