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


def context_ids(tok: Any, chat: Chat) -> list[int]:
    """Token ids of a chat up to and including the assistant-turn opener."""
    ids = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # newer transformers return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def continuation_ids(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


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
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]) + len(seqs[i][1]))
    out: list[tuple[float, int] | None] = [None] * len(seqs)
    device = next(model.parameters()).device
    pad_id = 0
    i = 0
    while i < len(order):
        # grow the batch while its padded size stays within the token budget
        j = i + 1
        longest = len(seqs[order[i]][0]) + len(seqs[order[i]][1])
        while j < len(order):
            n = len(seqs[order[j]][0]) + len(seqs[order[j]][1])
            if max(longest, n) * (j - i + 1) > max_tokens:
                break
            longest = max(longest, n)
            j += 1
        idx = order[i:j]
        i = j
        T = longest
        B = len(idx)
        input_ids = torch.full((B, T), pad_id, dtype=torch.long)
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
