"""What the client knows about model names: each family's tokenizer and context window.

This is the one table of model names. ``tokens`` asks it which encoding counts a
model exactly; ``config`` asks it for a model's context window. A name matches a
family when it starts with the family's prefix (case-insensitive, after any
``provider/`` router prefix and an ``ft:`` fine-tune prefix) and the prefix is
followed by the end of the name or a separator, so ``gpt-4o-mini-2024-07-18`` and
``o3-mini`` match, ``gpt-4x`` and ``o10`` do not. The longest matching prefix wins
(``gpt-4o`` before ``gpt-4``).
"""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN_CONTEXT_WINDOW = 8192

O200K = "o200k_base"
CL100K = "cl100k_base"


@dataclass(frozen=True)
class Family:
    """A model family: its OpenAI encoding (None when its tokenizer is not one we ship) and context
    window. ``dotted`` says whether a ``.`` may follow the prefix (``gpt-5.1`` is gpt-5, but
    ``gpt-4.2`` is not gpt-4); ``images`` whether its models read image parts in a message."""

    prefix: str
    encoding: str | None
    context_window: int
    dotted: bool = True
    images: bool = False


_FAMILIES = (
    Family("gpt-5", O200K, 400000, images=True),
    Family("gpt-4.1", O200K, 1047576, images=True),
    Family("gpt-4.5", O200K, 128000, images=True),
    Family("gpt-4o", O200K, 128000, images=True),
    Family("chatgpt-4o", O200K, 128000, images=True),
    Family("o1", O200K, 200000, images=True),
    Family("o1-mini", O200K, 128000),
    Family("o1-preview", O200K, 128000),
    Family("o3", O200K, 200000, images=True),
    Family("o4", O200K, 200000, images=True),
    Family("gpt-4-turbo", CL100K, 128000, dotted=False, images=True),
    Family("gpt-4-1106-preview", CL100K, 128000, dotted=False),
    Family("gpt-4-0125-preview", CL100K, 128000, dotted=False),
    Family("gpt-4-32k", CL100K, 32768, dotted=False),
    Family("gpt-4", CL100K, 8192, dotted=False),
    Family("gpt-3.5-turbo", CL100K, 16385, dotted=False),
    Family("gpt-35-turbo", CL100K, 16385, dotted=False),
    Family("deepseek-chat", None, 128000),
    Family("deepseek-reasoner", None, 128000),
    Family("llama3", None, 8192),
    Family("llama3.1", None, 131072),
    Family("llama3.2", None, 131072),
    Family("llama3.3", None, 131072),
    Family("llama-3", None, 8192),
    Family("llama-3.1", None, 131072),
    Family("llama-3.2", None, 131072),
    Family("llama-3.3", None, 131072),
    Family("mistral", None, 32768),
    Family("mixtral", None, 32768),
    Family("qwen2.5", None, 32768),
    Family("gemma2", None, 8192),
)
_LONGEST_FIRST = sorted(_FAMILIES, key=lambda f: len(f.prefix), reverse=True)
_SEPARATORS = "-:@_"


def normalise(model: str) -> str:
    """Return ``model`` lower-cased, without a ``provider/`` router prefix or an ``ft:`` prefix."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    return name.removeprefix("ft:")


def family_of(model: str) -> Family | None:
    """Return the family ``model`` belongs to, or None for a model this table does not know."""
    name = normalise(model)
    for family in _LONGEST_FIRST:
        if not name.startswith(family.prefix):
            continue
        rest = name[len(family.prefix):]
        if not rest or rest[0] in _SEPARATORS or (family.dotted and rest[0] == "."):
            return family
    return None


def reads_images(model: str) -> bool:
    """Return whether ``model`` is known to read image parts (a model this table does not know: no)."""
    family = family_of(model)
    return family is not None and family.images


def context_window_for(model: str) -> int:
    """Return the context window of ``model`` in tokens; 8192 when the model is unknown, the
    conservative guess, so an unknown model is never sent too much."""
    family = family_of(model)
    return family.context_window if family is not None else UNKNOWN_CONTEXT_WINDOW


def encoding_for(model: str) -> str | None:
    """Return the encoding that counts ``model`` exactly, or None when its tokenizer is not an
    OpenAI one we ship."""
    family = family_of(model)
    return family.encoding if family is not None else None
