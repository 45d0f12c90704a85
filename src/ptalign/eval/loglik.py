"""Batched log-likelihood of continuations given chat contexts, straight on the HF model.

Reads/Writes: nothing (pure scoring; HHH and the AutoDAN fitness call it).

Sequences are left-padded so every continuation ends at the last position; the model then only
projects the last `max continuation length + 1` hidden states onto the vocabulary (`logits_to_keep`),
which keeps the (B, T, V) logits tensor — 49 K-wide for SmolLM2 — from dominating time and memory.
Batches are formed from length-sorted items under a token budget so padding stays small.
"""

from __future__ import annotations

from typing import Any

import torch

from ptalign.llm.base import Chat
from ptalign.models import all_cores


def context_ids(tok: Any, chat: Chat) -> list[int]:
    """Token ids of a chat up to and including the assistant-turn opener."""
    ids = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # newer transformers return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


CPU_BUDGET, GPU_BUDGET = 512, 4096


def budget(model: Any, max_tokens: int = 0) -> int:
    """max_tokens, or where it is 0 the device's. On a CPU, batching buys nothing and padding costs:
    the 221 HHH items took 46-49 s at 512 padded tokens a pass and 68-77 s at 4096 (bf16, 2 Zen 5
    cores, 2026-12-02); a GPU wants wide batches."""
    if max_tokens:
        return max_tokens
    return CPU_BUDGET if next(model.parameters()).device.type == "cpu" else GPU_BUDGET


def continuation_ids(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


@all_cores()  # where torch was left one thread, HHH took 56-59 s instead of 38-40 on 2 cores
@torch.inference_mode()
def score(
    model: Any,
    pairs: list[tuple[list[int], list[int]]],
    max_tokens: int = 4096,
    max_len: int = 2048,
) -> list[tuple[float, int]]:
    """(sum of log p(continuation token | prefix), number of continuation tokens) per (ctx, cont) pair.

    Contexts longer than `max_len - len(cont)` are cut from the left (the reply itself is kept).
    `max_tokens` bounds B × T per forward pass.
    """
    seqs = []
    for ctx, cont in pairs:
        if not cont:
            raise ValueError("empty continuation: nothing to score")
        keep = max(1, max_len - len(cont))
        seqs.append((ctx[-keep:], cont))
    out: list[tuple[float, int] | None] = [None] * len(seqs)
    device = next(model.parameters()).device
    for idx in _budget_batches([len(c) + len(x) for c, x in seqs], max_tokens):
        longest = max(len(seqs[k][0]) + len(seqs[k][1]) for k in idx)
        T = longest
        B = len(idx)
        input_ids = torch.zeros((B, T), dtype=torch.long)  # pad id is irrelevant: masked out
        attn = torch.zeros((B, T), dtype=torch.long)
        cont_len = [len(seqs[k][1]) for k in idx]
        for b, k in enumerate(idx):
            full = seqs[k][0] + seqs[k][1]
            input_ids[b, T - len(full) :] = torch.tensor(full)
            attn[b, T - len(full) :] = 1
        pos = (attn.cumsum(-1) - 1).clamp(min=0)  # left padding: positions start at the first real token
        keep = max(cont_len) + 1
        logits = model(
            input_ids=input_ids.to(device),
            attention_mask=attn.to(device),
            position_ids=pos.to(device),
            logits_to_keep=keep,
        ).logits.float()  # (B, keep, V)
        logp = torch.log_softmax(logits[:, :-1], dim=-1)  # predictions for the last keep-1 tokens
        targets = input_ids[:, T - keep + 1 :].to(device)  # (B, keep-1)
        tok_lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, keep-1)
        for b, k in enumerate(idx):
            n = cont_len[b]
            out[k] = (float(tok_lp[b, -n:].sum()), n)
    return [o for o in out if o is not None]


def _cache_kw(model: Any) -> str:
    """transformers 5.x renames forward's `past_key_values` to `cache`; take whichever exists."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _budget_batches(sizes: list[int], max_tokens: int) -> list[list[int]]:
    """Indices sorted by size, cut into batches whose padded size (B × longest) stays within budget."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    out, cur, longest = [], [], 0
    for i in order:
        if cur and max(longest, sizes[i]) * (len(cur) + 1) > max_tokens:
            out.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, sizes[i])
    if cur:
        out.append(cur)
    return out


@all_cores()
@torch.inference_mode()
def score_shared(
    model: Any,
    groups: list[tuple[list[int], list[list[int]]]],
    max_tokens: int = 4096,
    max_len: int = 2048,
) -> list[list[tuple[float, int]]]:
    """Like `score` for several continuations of one context (HHH's replies to one conversation): the
    context runs once and its KV cache serves every continuation, instead of re-encoding it per reply.
    A context is cut to fit beside the longest of its continuations, so which replies share a group
    decides the cut above max_len (never for BIG-bench HHH's conversations).

    groups: (ctx ids, [cont ids, ...]); returns per group [(sum log p, n tokens), ...] per continuation.
    Contexts are left-padded (B, Tc); each continuation is right-padded (B, Tk) after them, attends to
    the cached context through the 2-D mask, and the cache is cropped back to Tc for the next one.
    """
    from transformers import DynamicCache

    device = next(model.parameters()).device
    prepared = []
    for ctx, conts in groups:
        if not conts or any(not c for c in conts):
            raise ValueError("empty continuation: nothing to score")
        keep = max(1, max_len - max(len(c) for c in conts))
        prepared.append((ctx[-keep:], conts))
    sizes = [len(c) + max(len(x) for x in conts) for c, conts in prepared]
    out: list[list[tuple[float, int]] | None] = [None] * len(prepared)
    for idx in _budget_batches(sizes, max_tokens):
        B = len(idx)
        Tc = max(len(prepared[k][0]) for k in idx)
        ctx_ids = torch.zeros((B, Tc), dtype=torch.long)
        ctx_mask = torch.zeros((B, Tc), dtype=torch.long)
        for b, k in enumerate(idx):
            c = prepared[k][0]
            ctx_ids[b, Tc - len(c) :] = torch.tensor(c)
            ctx_mask[b, Tc - len(c) :] = 1
        ctx_len = ctx_mask.sum(-1)  # (B,)
        cache = DynamicCache()
        first = (
            model(
                input_ids=ctx_ids.to(device),
                attention_mask=ctx_mask.to(device),
                position_ids=(ctx_mask.cumsum(-1) - 1).clamp(min=0).to(device),
                **{_cache_kw(model): cache},
                use_cache=True,
                logits_to_keep=1,
            )
            .logits[:, -1]
            .float()
        )  # (B, V): predicts each continuation's first token
        first_lp = torch.log_softmax(first, -1)
        res: list[list[tuple[float, int]]] = [[] for _ in idx]
        n_conts = max(len(prepared[k][1]) for k in idx)
        for j in range(n_conts):
            conts = [prepared[k][1][j] if j < len(prepared[k][1]) else [0] for k in idx]
            Tk = max(len(c) for c in conts)
            ids = torch.zeros((B, Tk), dtype=torch.long)
            mask = torch.zeros((B, Tk), dtype=torch.long)
            for b, c in enumerate(conts):
                ids[b, : len(c)] = torch.tensor(c)
                mask[b, : len(c)] = 1
            pos = ctx_len.unsqueeze(1) + torch.arange(Tk).unsqueeze(0)  # (B, Tk): continue after the context
            logits = model(
                input_ids=ids.to(device),
                attention_mask=torch.cat([ctx_mask, mask], 1).to(device),
                position_ids=pos.to(device),
                **{_cache_kw(model): cache},
                use_cache=True,
            ).logits.float()  # (B, Tk, V)
            lp = torch.log_softmax(logits[:, :-1], -1)  # predictions for tokens 1..Tk-1
            tok_lp = lp.gather(-1, ids[:, 1:].unsqueeze(-1).to(device)).squeeze(-1)  # (B, Tk-1)
            for b, c in enumerate(conts):
                if j < len(prepared[idx[b]][1]):
                    s = float(first_lp[b, c[0]]) + float(tok_lp[b, : len(c) - 1].sum())
                    res[b].append((s, len(c)))
            cache.crop(-Tk)  # back to the bare context for the next continuation
        for b, k in enumerate(idx):
            out[k] = res[b]
    return [o for o in out if o is not None]
