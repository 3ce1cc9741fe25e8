"""Limits a pipeline sets on one turn: ``--max-prompt-tokens N`` and ``--max-cost USD``.

Before a one-shot turn is sent, its request is planned as the real one would be (fitted to the
budget, counted exactly, no summary request made) and refused when its estimate passes a limit:
the prompt tokens, or the cost of that prompt and of a reply as long as the reserve (the most the
reply may take) at the model's price. The cached share is the client's prediction (none in a new
process), so the cost is an upper bound. A model without a price cannot be checked against
``--max-cost``: that is a refusal too, never a guess. Only the core is used.
"""

from __future__ import annotations

from stateless_chat.chat.session import Session
from stateless_chat.core.billing import dollars, price_for


def refusal(session: Session, text: str, *, max_prompt_tokens: int | None = None,
            max_cost: float | None = None) -> str | None:
    """Return why the turn sending ``text`` must not go (one line), or None when it stays within the
    limits (or none is set)."""
    if max_prompt_tokens is None and max_cost is None:
        return None
    session.make_exact()  # an estimate by byte bounds could refuse what fits
    plan = session.plan(text, summarize=False)
    prompt = plan.fit.total - session.reserve
    if max_prompt_tokens is not None and prompt > max_prompt_tokens:
        return (f"this turn's request is estimated at {prompt:,} prompt tokens, more than "
                f"--max-prompt-tokens {max_prompt_tokens:,}: nothing was sent")
    if max_cost is None:
        return None
    model = session.settings.model
    price = price_for(model, session.settings.prices)
    if price is None:
        return (f"no price is known for {model}, so --max-cost cannot be checked: nothing was sent (give its "
                f'price as [prices."{model}"] in the config file)')
    cached = min(plan.cache.shared, prompt)
    estimate = price.cost(prompt - cached, cached, session.reserve)
    if estimate > max_cost:
        return (f"this turn is estimated to cost up to {dollars(estimate)} ({prompt:,} prompt tokens, "
                f"{cached:,} of them cached, and a reply of up to {session.reserve:,}), more than --max-cost "
                f"{max_cost:g}: nothing was sent")
    return None


__all__ = ["refusal"]
