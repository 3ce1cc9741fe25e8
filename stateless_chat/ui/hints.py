"""Hints that work where the user is: ``/budget N`` in the chat, ``--budget N`` on the command line
(and ``/tools off``, ``--no-tools``).

The core says what would help in words of its own (``errors.raise_budget``); the chat and the
command line finish the sentence with their own way to do it, and take the advice back when it
cannot work: a budget is capped at the context window, so asking for more than that is no way out.
"""

from __future__ import annotations

from stateless_chat.errors import OFFER_FEWER_TOOLS, BudgetError, raise_budget


def budget_hint(error: BudgetError, window: int, *, chat: bool) -> str:
    """Return the message of ``error`` with its advice to raise the budget made an action that works:
    how to do it (``/budget N`` in the chat, ``--budget N`` on the command line), or, when ``N`` is
    more than the context ``window``, no such advice but the reason."""
    text = str(error)
    if OFFER_FEWER_TOOLS in text:
        how = "/tools off, or /tools off SERVER" if chat else "--no-tools"
        text = text.replace(OFFER_FEWER_TOOLS, f"{OFFER_FEWER_TOOLS} ({how})")
    needed = error.needed
    phrase = raise_budget(needed) if needed is not None else ""
    if needed is None or phrase not in text:
        return text
    if needed <= window:
        how = f"/budget {needed}" if chat else f"--budget {needed}"
        return text.replace(phrase, f"{phrase} ({how})")
    limit = f"the context window is {window:,} tokens, and the budget cannot go above it"
    if f" or {phrase}" in text:
        return text.replace(f" or {phrase}", "") + f" ({limit})"
    return text.replace(phrase, f"make what must be sent smaller ({limit})")


__all__ = ["budget_hint"]
