"""List prompts, shared by the expansion stages (topics, instructions, constraints): the model is asked
for a short numbered list, and what comes back is parsed into items."""

from __future__ import annotations

from ptalign.llm.base import Generation, GenParams
from ptalign.synth.common import Ctx, params
from ptalign.synth.prompting import LIST_STOP, call_seed, parse_list

PER_CALL = 5  # items asked for per list prompt: short lists stay on format with a small model


def list_call(
    ctx: Ctx, prompt: str, seed_key: tuple, demo: list[dict] | None = None
) -> tuple[list[dict], GenParams]:
    """The chat and params of one list prompt: a function of the prompt and its seed key only."""
    chat = [*(demo or []), {"role": "user", "content": prompt}]
    p = params(
        ctx,
        ctx.s.list_max_new_tokens,
        LIST_STOP,
        call_seed(ctx.s.seed, *seed_key),
        temperature=max(ctx.s.temperature, 0.7),
    )
    return chat, p


def list_items(g: Generation) -> list[str]:
    items = parse_list(g.text)
    if g.finish_reason == "length" and items:
        items = items[:-1]  # the last line was cut off mid-item
    return items


def ask_list(ctx: Ctx, prompt: str, seed_key: tuple, desc: str, demo: list[dict] | None = None) -> list[str]:
    chat, p = list_call(ctx, prompt, seed_key, demo)
    return list_items(ctx.gen([chat], p, desc=desc)[0])
