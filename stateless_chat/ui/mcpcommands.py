"""Slash commands for what MCP servers offer besides tools: resources and prompts.

``/resources`` lists the resources (and resource templates) of the servers that declare them;
``/attach SERVER:URI`` reads one and adds it to the history as a message, as ``/file`` adds a
file. ``/prompts`` lists the servers' prompts with their arguments; ``/prompt SERVER.NAME
[ARG=VALUE | VALUE]...`` gets one and sends its messages as the next user message. A server
that is not running starts for these (they are asked for by the user). Registered with
``commands.REGISTRY`` when imported, which the registry does the first time it is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stateless_chat.errors import CommandError
from stateless_chat.sanitize import one_line
from stateless_chat.tools.specs import resource_text
from stateless_chat.ui.commands import Lines, Result, Send, command, file_message, split_args

if TYPE_CHECKING:
    from stateless_chat.chat.session import Session
    from stateless_chat.tools.servers import ToolServers

ATTACH_MAX_CHARS = 1_000_000


def _servers(session: Session) -> ToolServers:
    from stateless_chat.tools.toolbox import Toolbox

    toolbox = session.tools
    servers = toolbox.servers if isinstance(toolbox, Toolbox) else None
    if servers is None:
        raise CommandError("no MCP servers: add [mcp.servers.NAME] tables to the config file, and leave out "
                           "--no-tools")
    return servers


def _describe(name: str, description: str | None, mime: str | None = None) -> str:
    about = f" - {description}" if description else ""
    return one_line(f"{name}{about}{f' ({mime})' if mime else ''}")[:300]


@command("resources", "/resources [SERVER]", "list the resources the MCP servers offer (/attach adds one)")
def _resources(session: Session, arg: str) -> Result:
    servers = _servers(session)
    names = split_args(arg)
    wanted = names or servers.capable("resources")
    lines = []
    for server in wanted:
        for resource in servers.list_all(server, "list_resources", "resources"):
            lines.append(f"{server}:{resource.uri}  " + _describe(resource.name, resource.description,
                                                                     resource.mime_type))
        for template in servers.list_all(server, "list_resource_templates", "resource_templates"):
            lines.append(f"{server}:{template.uri_template}  (template) "
                         + _describe(template.name, template.description, template.mime_type))
    if not lines:
        return Lines(("no resources: none of the MCP servers offers any",))
    return Lines((*lines, "/attach SERVER:URI adds one to the history as a message"))


@command("attach", "/attach SERVER:URI [--pin]", "add an MCP server's resource to the history as a message")
def _attach(session: Session, arg: str) -> Result:
    words = split_args(arg)
    pin = "--pin" in words
    names = [w for w in words if w != "--pin"]
    if len(names) != 1 or ":" not in names[0]:
        raise CommandError("usage: /attach SERVER:URI [--pin] (/resources lists them)")
    server, uri = names[0].split(":", 1)
    servers = _servers(session)
    text = resource_text(servers.ask_server(server, "read_resource", uri))
    if len(text) > ATTACH_MAX_CHARS:
        raise CommandError(f"{names[0]} is {len(text):,} characters; over {ATTACH_MAX_CHARS:,} are refused")
    conversation = session.conversation
    entry = conversation.new_entry("user", file_message(names[0], text), session.measure, kind="file",
                                   pinned=pin, source=names[0])
    if session.too_big_alone(entry.tokens):
        raise CommandError(f"{names[0]} is {entry.tokens:,} tokens; with {session.reserve:,} held for the "
                           f"reply it cannot fit the budget of {session.budget:,}: not added")
    session.conversation = conversation.append(entry)
    how = "pinned: sent with every request" if pin else "sent until evicted"
    return Lines((f"added {names[0]} as #{entry.id} ({entry.tokens:,} tokens, {how})",))


@command("prompts", "/prompts [SERVER]", "list the prompts the MCP servers offer (/prompt uses one)")
def _prompts(session: Session, arg: str) -> Result:
    servers = _servers(session)
    wanted = split_args(arg) or servers.capable("prompts")
    lines = []
    for server in wanted:
        for prompt in servers.list_all(server, "list_prompts", "prompts"):
            arguments = " ".join(a.name if a.required else f"[{a.name}]" for a in prompt.arguments or ())
            lines.append(one_line(f"{server}.{prompt.name} {arguments}").strip() + "  "
                         + _describe("", prompt.description).lstrip(" -"))
    if not lines:
        return Lines(("no prompts: none of the MCP servers offers any",))
    return Lines((*lines, "/prompt SERVER.NAME [ARG=VALUE | VALUE]... sends one as your next message"))


def prompt_arguments(declared: list[Any], words: list[str]) -> dict[str, str]:
    """Return the arguments of ``/prompt``: ``NAME=VALUE`` pairs, or values in the declared order."""
    names = [a.name for a in declared]
    given: dict[str, str] = {}
    position = 0
    for word in words:
        key, equals, value = word.partition("=")
        if equals and key in names:
            given[key] = value
            continue
        while position < len(names) and names[position] in given:
            position += 1
        if position >= len(names):
            raise CommandError(f"too many arguments: the prompt takes {', '.join(names) or 'none'}")
        given[names[position]] = word
    missing = [a.name for a in declared if a.required and a.name not in given]
    if missing:
        raise CommandError(f"the prompt needs {', '.join(missing)} (as NAME=VALUE, or in the order listed)")
    return given


def prompt_text(result: Any) -> str:
    """Return a prompt's messages as one user message: their text (a resource's text inlined, other
    content named); each message after the first says whose it is when the roles differ."""
    roles = {message.role for message in result.messages}
    parts = []
    for message in result.messages:
        content = message.content
        kind = getattr(content, "type", "")
        if kind == "text":
            text = content.text
        elif kind == "resource":
            text = getattr(content.resource, "text", None) or f"[resource {content.resource.uri}]"
        else:
            text = f"[{kind or 'unknown'} content]"
        parts.append(f"{message.role}: {text}" if len(roles) > 1 else text)
    return "\n\n".join(parts)


@command("prompt", "/prompt SERVER.NAME [ARG=VALUE | VALUE]...", "send an MCP server's prompt as a message")
def _prompt(session: Session, arg: str) -> Result:
    words = split_args(arg)
    if not words or "." not in words[0]:
        raise CommandError("usage: /prompt SERVER.NAME [ARG=VALUE | VALUE]... (/prompts lists them)")
    server, name = words[0].split(".", 1)
    servers = _servers(session)
    declared = next((p for p in servers.list_all(server, "list_prompts", "prompts") if p.name == name), None)
    if declared is None:
        raise CommandError(f"the mcp server {server} has no prompt {name!r} (/prompts lists them)")
    arguments = prompt_arguments(list(declared.arguments or ()), words[1:])
    text = prompt_text(servers.ask_server(server, "get_prompt", name, arguments))
    if not text.strip():
        raise CommandError(f"the prompt {words[0]} is empty: nothing to send")
    return Send(text, note=f"sending the prompt {words[0]} ({len(text):,} characters)")
