"""What an MCP server asks of the chat while one of its tools runs: the model (sampling) or the user
(elicitation). ``tools.ToolServers`` hands each ``ServerAsk`` to ``answer`` in the thread that
waits for the call, so the user can be asked there like for a tool call.

Sampling becomes one more stateless request to the chat endpoint: the server's messages (their
text; other content is named), its system prompt and temperature, at most the reply reserve or
the tokens it asks for, whichever is less (its stop sequences are not passed on). It is shown
and approved like a tool call (``approve``: in the chat the user is asked, one-shot use runs it
only with --yes or ``approve = "always"``), and what it costs is billed to the turn, like a
summary request. Elicitation asks the user for the fields of the server's form, one prompt
each (``prompt``; typed, with defaults and choices); one-shot use has nobody to ask, so it is
declined with a note. A URL elicitation shows the URL (never opened for the user) and asks
whether they went there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stateless_chat.chat.summarizer import Spent
from stateless_chat.core.messages import Message
from stateless_chat.errors import ChatError
from stateless_chat.sanitize import one_line
from stateless_chat.tools.servers import ServerAsk, refusal
from stateless_chat.wire.request import ChatRequest

if TYPE_CHECKING:
    from stateless_chat.chat.session import Session

SHOWN_CHARS = 300  # of a sampling request's messages, in the line that asks whether to run it


def _text(content: Any) -> str:
    """Return the text of a sampling message's content (a block or a list of blocks)."""
    blocks = content if isinstance(content, list) else [content]
    parts = []
    for block in blocks:
        kind = getattr(block, "type", "")
        parts.append(block.text if kind == "text" else f"[{kind or 'unknown'} content]")
    return "\n".join(parts)


def sampling_messages(params: Any) -> list[Message]:
    """Return the messages of a sampling request as chat messages (system prompt first)."""
    messages = [Message("system", params.system_prompt)] if params.system_prompt else []
    for message in params.messages:
        if message.role == "assistant":
            messages.append(Message("assistant", _text(message.content)))
        else:
            messages.append(Message("user", _text(message.content)))
    return messages


def describe_sampling(ask: ServerAsk) -> str:
    """Return the line that shows a sampling request before it is approved."""
    text = " | ".join(m.text for m in sampling_messages(ask.params) if m.role != "system")
    return one_line(f"mcp server {ask.server} asks the model (at most {ask.params.max_tokens:,} tokens): "
                    f"{text[:SHOWN_CHARS]}{'...' if len(text) > SHOWN_CHARS else ''}")


def sample(session: Session, ask: ServerAsk) -> Any:
    """Send the sampling request as one stateless request to the session's endpoint; return the SDK's
    ``CreateMessageResult`` (or ``ErrorData`` when the request fails). What it costs is billed to
    the turn under way, with its other extra requests."""
    import mcp.types as mcp_types

    params = ask.params
    if session.backend is None:
        return refusal(ask, "no endpoint")
    limit = max(1, min(params.max_tokens, session.reserve))
    temperature = params.temperature if params.temperature is not None else session.settings.temperature
    messages = sampling_messages(params)
    request = ChatRequest.of(session.settings.model, messages, limit, temperature=temperature)
    try:
        reply = session.backend.send(request).wait()
    except ChatError as error:
        return mcp_types.ErrorData(code=mcp_types.INTERNAL_ERROR, message=f"the request failed: {error}")
    usage = reply.usage
    counted = usage.prompt_tokens if usage and usage.prompt_tokens is not None else None
    if counted is None:
        counted = sum(session.measure(m) for m in messages) + session.framing()
    # Billed to the turn under way with its other extra requests (summaries): one more request it made.
    session.summaries.add(Spent(counted, (usage.cached_tokens if usage else None) or 0,
                                (usage.completion_tokens if usage else None) or 0))
    stop = "maxTokens" if reply.finish_reason == "length" else "endTurn"
    content = mcp_types.TextContent(type="text", text=reply.text or "")
    return mcp_types.CreateMessageResult(role="assistant", content=content, model=session.settings.model,
                                         stop_reason=stop)


# ---- elicitation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormField:
    """One field of an elicitation form: its name, how to ask for it, its type and choices."""

    name: str
    title: str
    description: str
    kind: str  # string, integer, number, boolean, or array (several of ``choices``)
    required: bool
    default: Any = None
    choices: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()


def form_fields(schema: Any) -> list[FormField]:
    """Return the fields of a form's ``requestedSchema`` (a flat object schema), in its order."""
    data = schema.model_dump(by_alias=True, exclude_none=True) if hasattr(schema, "model_dump") \
        else dict(schema)
    required = set(data.get("required") or ())
    fields = []
    for name, spec in (data.get("properties") or {}).items():
        spec = spec if isinstance(spec, dict) else {}
        kind = str(spec.get("type", "string"))
        listed = (spec.get("items") or {}) if kind == "array" else spec
        alternatives = [o for o in listed.get("oneOf") or listed.get("anyOf") or () if isinstance(o, dict)]
        options = listed.get("enum") or [o.get("const") for o in alternatives]
        labels = listed.get("enumNames") or [o.get("title") for o in alternatives]
        fields.append(FormField(name, str(spec.get("title") or name), str(spec.get("description") or ""),
                                kind, name in required, spec.get("default"), tuple(str(o) for o in options),
                                tuple(str(label) for label in labels if label)))
    return fields


def parse_value(field: FormField, text: str) -> Any:
    """Return the value ``text`` stands for in ``field``; raise ``ValueError`` saying what is expected."""
    text = text.strip()
    if field.choices:
        picked = [_choice(field, part) for part in (text.split(",") if field.kind == "array" else [text])]
        return picked if field.kind == "array" else picked[0]
    if field.kind == "boolean":
        if text.lower() in ("y", "yes", "true", "1"):
            return True
        if text.lower() in ("n", "no", "false", "0"):
            return False
        raise ValueError("yes or no")
    if field.kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError("a whole number") from None
    if field.kind == "number":
        try:
            return float(text)
        except ValueError:
            raise ValueError("a number") from None
    return text


def _choice(field: FormField, text: str) -> str:
    text = text.strip()
    for index, choice in enumerate(field.choices):
        label = field.labels[index] if index < len(field.labels) else ""
        if text in (choice, str(index + 1)) or (label and text.lower() == label.lower()):
            return choice
    raise ValueError("one of " + ", ".join(f"{i + 1}={c}" for i, c in enumerate(field.choices)))


def question(field: FormField) -> str:
    """Return the prompt for one field: its title, description, choices and default."""
    hint = ""
    if field.choices:
        shown = [f"{i + 1}={field.labels[i] if i < len(field.labels) else choice}"
                 for i, choice in enumerate(field.choices)]
        hint = f" [{' '.join(shown)}{', several with commas' if field.kind == 'array' else ''}]"
    elif field.kind == "boolean":
        hint = " [y/n]"
    shown_default = json.dumps(field.default, ensure_ascii=False)
    default = f" (Enter: {shown_default})" if field.default is not None else ""
    optional = "" if field.required or field.default is not None else " (Enter: leave out)"
    about = f" - {field.description}" if field.description else ""
    return f"  {one_line(f'{field.title}{about}{hint}{default}{optional}')}: "


def elicit(ask: ServerAsk, prompt: Callable[[str], str], note: Callable[[str], None]) -> Any:
    """Ask the user for what an elicitation wants, field by field; return the SDK's ``ElicitResult``.

    Every question can be answered with ``/decline`` or ``/cancel``; Ctrl-C cancels the turn.
    """
    import mcp.types as mcp_types

    params = ask.params
    note(one_line(f"mcp server {ask.server} asks you: {params.message}"))
    if getattr(params, "mode", "form") == "url":
        note(one_line(f"it asks you to open {params.url} (not opened for you)"))
        answer = prompt("did you? [y]es (accept) / [n]o (decline) / [c]ancel: ").strip().lower()
        return mcp_types.ElicitResult(action=_action(answer))
    content: dict[str, Any] = {}
    for field in form_fields(params.requested_schema):
        while True:
            text = prompt(question(field))
            if text.strip() in ("/decline", "/cancel"):
                return mcp_types.ElicitResult(action="decline" if text.strip() == "/decline" else "cancel")
            if not text.strip():
                if field.default is not None:
                    content[field.name] = field.default
                    break
                if not field.required:
                    break
                note("required: type a value, /decline or /cancel")
                continue
            try:
                content[field.name] = parse_value(field, text)
                break
            except ValueError as error:
                note(f"expected {error}")
    answer = prompt("send this to the server? [y]es / [n]o (decline) / [c]ancel: ").strip().lower()
    action = _action(answer)
    return mcp_types.ElicitResult(action=action, content=content if action == "accept" else None)


def _action(answer: str) -> Any:
    if answer in ("y", "yes"):
        return "accept"
    if answer in ("c", "cancel"):
        return "cancel"
    return "decline"


def answer(ask: ServerAsk, session: Session, *, approve: Callable[[str], bool],
           prompt: Callable[[str], str] | None, note: Callable[[str], None]) -> Any:
    """Answer ``ask``: sampling once ``approve`` says yes to its line, elicitation through ``prompt``
    (None: nobody can be asked, as in one-shot use: declined, and ``note`` says so)."""
    if ask.kind == "sampling":
        line = describe_sampling(ask)
        if not approve(line):
            return refusal(ask, "the user did not approve it")
        return sample(session, ask)
    if prompt is None:
        note(one_line(f"mcp server {ask.server} asked for input ({ask.params.message}): declined, as "
                      "one-shot use has nobody to ask"))
        return refusal(ask, "one-shot use")
    return elicit(ask, prompt, note)
