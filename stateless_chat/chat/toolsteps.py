"""A tool step of a turn: the assistant message that asks for calls, and each call shown, approved,
run and answered.

Every call gets a ``tool`` result, in the calls' order, whatever happens to it: the tool's
result (cut to ``tool_result_max_tokens`` with a note), the refusal of a user who did not
approve it, or the error the tool reported. The results join the turn's pending messages and
are never evicted within the turn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

from stateless_chat.chat.values import Hooks, Toolbox
from stateless_chat.core.history import Conversation
from stateless_chat.core.messages import Entry, Event, Image, ToolAnswered, ToolCall, ToolCalled
from stateless_chat.core.models import reads_images
from stateless_chat.core.sizing import Sizer
from stateless_chat.tools.toolcap import Codec, cap_result
from stateless_chat.wire.backend import Reply

if TYPE_CHECKING:
    from stateless_chat.config import Settings


def step_entry(base: Conversation, reply: Reply, calls: Sequence[ToolCall], measure: Sizer, *, turn: int,
               id: int) -> Entry:
    """Return the assistant message of a tool step: its text (if any) and its calls."""
    return base.new_entry("assistant", reply.text or None, measure, turn=turn, tool_calls=calls,
                          finish_reason=reply.finish_reason, id=id)


def capped_result(text: str, cap: int, measure: Sizer) -> tuple[str, int]:
    """Return a tool result cut to ``cap`` tokens (with a note saying how much was cut), and its size
    before (``tools.toolcap.cap_result``: tokenized once, over a prefix)."""
    return cap_result(text, cap, measure, _codec(measure))


def _codec(measure: Sizer) -> Codec | None:
    """Return what tokenizes for the cut: the counter (or the tiktoken counter a meter calibrates), when
    counting is exact; ``cap_result`` checks the cut with ``measure`` itself either way."""
    if not measure.exact:
        return None
    for candidate in (measure.counter, getattr(measure.counter, "base", None)):
        if callable(getattr(candidate, "encode", None)) and callable(getattr(candidate, "decode", None)):
            return cast(Codec, candidate)
    return None


def run_calls(base: Conversation, calls: Sequence[ToolCall], toolbox: Toolbox, settings: Settings,
              measure: Sizer, hooks: Hooks, on_event: Callable[[Event], None], *, turn: int,
              first_id: int) -> list[Entry]:
    """Show, approve and run each call; return their ``tool`` results, in the calls' order, numbered
    from ``first_id``."""
    results: list[Entry] = []
    shown_images: list[tuple[str, tuple[Image, ...]]] = []
    for call in calls:
        spec = toolbox.lookup(call.name)
        shown = spec.display if spec is not None else call.name
        on_event(ToolCalled(shown, call.arguments))
        refused = spec is not None and not (settings.approve == "always" or spec.approve == "always"
                                            or hooks.approve(call, spec))
        if refused:
            text, error = "the user did not approve this call", False
        else:
            result = toolbox.call(call.name, call.arguments, timeout=settings.tool_timeout)
            text, error = result.text, result.is_error
            if result.images:
                shown_images.append((shown, result.images))
        text, whole = capped_result(text, settings.tool_result_max_tokens, measure)
        entry = base.new_entry("tool", text, measure, turn=turn, tool_call_id=call.id,
                               id=first_id + len(results))
        results.append(entry)
        cut = whole if whole != entry.tokens else None
        on_event(ToolAnswered(shown, entry.tokens, cut, error, refused))
    if shown_images and sends_images(settings):
        results.append(images_entry(base, shown_images, measure, turn=turn, id=first_id + len(results)))
    return results


def sends_images(settings: Settings) -> bool:
    """Return whether images in tool results go to the model as images (``tool_images``: ``on``, or
    ``auto`` for a model known to read them)."""
    return settings.tool_images == "on" or (settings.tool_images == "auto" and reads_images(settings.model))


def images_entry(base: Conversation, shown: Sequence[tuple[str, tuple[Image, ...]]], measure: Sizer, *,
                 turn: int, id: int) -> Entry:
    """Return the user message that carries the images of a step's results, after its ``tool`` messages.

    A ``tool`` message holds text only (in the chat-completions API), so the images follow the
    step's results in one user message: a line naming whose they are, then one image part each.
    """
    named = "; ".join(f"{tool}: {len(images)} image{'s' if len(images) > 1 else ''}"
                      for tool, images in shown)
    text = f"[The images the tool calls above returned ({named}).]"
    return base.new_entry("user", text, measure, turn=turn, id=id,
                          images=[image for _, images in shown for image in images])


__all__ = ["capped_result", "run_calls", "step_entry"]
