"""The PT-ALIGN objective as small pure functions on tensors (no config, no model state).

    L = MLE(pos) + lam * UT(tox),   UT(token) = -log(1 - p(token))          (arXiv 2502.08657, eq. 4)

Normalisation (the same in every code path: packed or two-sequence, chunked or full logits): each
term is a per-token mean over its own tokens in the micro-batch,

    MLE = sum over positive target tokens of -log p  /  number of positive target tokens
    UT  = sum over *masked* toxic tokens of -log(1-p) /  number of masked toxic tokens

(0 when the micro-batch has no such token). With gradient accumulation or several processes the
micro-batch losses are averaged, as transformers' Trainer and DDP do.

All functions take per-token log-probabilities of the target tokens, so the loss never sees which
tokens came from which row: each target carries its own mask, and nothing is shared across the
batch (public unlikelihood code has leaked negatives from other samples through a batch-wide
candidate set; here a token is only ever penalised for being its own sample's toxic token).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

UL_EPS = 1e-6  # floor on 1 - p: UT <= -log(1e-6) ≈ 13.8 and its gradient p/(1-p+eps) stays finite


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) in fp32.  logits (N, V), targets (N,) -> (N,)."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _chunk_logprobs(
    head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    return token_logprobs(head(hidden), targets)


def token_logprobs_chunked(
    hidden: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    chunk: int = 1024,
) -> torch.Tensor:
    """log p(target) from final hidden states, `chunk` rows at a time.  hidden (N, H), targets (N,) -> (N,).

    Only a (chunk, V) logits block exists at any time, which makes peak memory independent of N·V.
    A frozen bias-free linear head (LoRA's usual case) goes through `frozen_head_logprobs`; any other
    head recomputes each chunk in backward (activation checkpointing) so that its weight gets its
    gradient. Values equal token_logprobs(head(hidden), targets) either way.
    """
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    w = getattr(head, "weight", None)
    if (
        isinstance(head, torch.nn.Linear)
        and head.bias is None
        and not w.requires_grad
        and type(w.data) is torch.Tensor  # not a DTensor shard (FSDP2)
        and w.shape[1] == hidden.shape[1]  # not a ZeRO-3 / FSDP placeholder
    ):
        return frozen_head_logprobs(hidden, w, targets, chunk)
    out = []
    for s in range(0, hidden.shape[0], chunk):
        h, t = hidden[s : s + chunk], targets[s : s + chunk]
        if torch.is_grad_enabled():
            out.append(checkpoint(_chunk_logprobs, head, h, t, use_reentrant=False))
        else:
            out.append(_chunk_logprobs(head, h, t))
    return torch.cat(out)


class _FrozenHeadLogprobs(torch.autograd.Function):
    # Hand-written because neither torch nor Liger offers it: Liger's fused linear cross-entropy
    # folds in one fixed loss, while MLE + λ·UT needs per-token log-probs with their own gradient.
    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int
    ) -> torch.Tensor:
        need = ctx.needs_input_grad[0]
        logp = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        dlogp_dh = torch.empty_like(hidden) if need else None
        for s in range(0, hidden.shape[0], chunk):
            t = targets[s : s + chunk, None]
            z = (hidden[s : s + chunk] @ weight.T).float()  # (c, V) logits; bf16 matmul under autocast
            # log-softmax and softmax in place, one (c, V) buffer: z - max, exp, sum (logsumexp
            # would allocate its own copies and exponentiate a second time for the softmax)
            z.sub_(z.amax(dim=-1, keepdim=True))
            zt = z.gather(-1, t)
            total = z.exp_().sum(dim=-1, keepdim=True)
            logp[s : s + chunk] = (zt - total.log()).squeeze(-1)
            if need:  # d log p / d logits = onehot(target) - softmax
                g = z.mul_(-1.0 / total).scatter_add_(-1, t, torch.ones_like(zt))
                dlogp_dh[s : s + chunk] = g.to(weight.dtype) @ weight  # as autocast would cast it
        ctx.save_for_backward(dlogp_dh)
        return logp

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (dlogp_dh,) = ctx.saved_tensors
        return grad.to(dlogp_dh.dtype)[:, None] * dlogp_dh, None, None, None


def frozen_head_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 1024
) -> torch.Tensor:
    """log p(target) through a frozen linear head (weight (V, H), no bias).  (N, H), (N,) -> (N,) fp32.

    Each log p_i depends on hidden row i alone, so its gradient is (∂L/∂log p_i) · d_i with
    d_i = (onehot(t_i) − softmax_i) · W, whatever loss comes after. d (N × H, the size of `hidden`)
    is computed in the forward, chunk by chunk, and backward only scales its rows. Against the
    checkpointed path this drops the recomputed (chunk × V) logits matmul and the logsumexp backward
    passes. It gives no gradient to `weight`: for a trained head use the checkpointed path.
    """
    return _FrozenHeadLogprobs.apply(hidden, weight, targets, chunk)


def log1mexp(logp: torch.Tensor, eps: float = UL_EPS) -> torch.Tensor:
    """log(1 - p + eps) from logp = log p, accurate for p near 0 and near 1.  (N,) -> (N,).

    The usual two-branch log1mexp: for p > 1/2, -expm1(logp) is 1 - p without the cancellation of
    1 - exp(logp); for p <= 1/2, log1p keeps the tiny values. eps keeps the log and its gradient
    finite when p rounds to 1; both branches are finite, so torch.where passes no NaN gradient.
    """
    logp = logp.float().clamp(max=0.0)
    near_one = torch.log(-torch.expm1(logp) + eps)
    small = torch.log1p(eps - torch.exp(logp))
    return torch.where(logp > -math.log(2.0), near_one, small)


def mle_loss(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of -log p over the masked (positive) tokens.  logp (N,), mask (N,) bool -> scalar; 0 if none."""
    m = mask.float()
    return -(logp.float() * m).sum() / m.sum().clamp(min=1.0)


def unlikelihood_loss(logp: torch.Tensor, mask: torch.Tensor, eps: float = UL_EPS) -> torch.Tensor:
    """Mean of -log(1 - p) over the masked (toxic, past the first mismatch) tokens.  (N,), (N,) bool -> scalar; 0 if none."""
    m = mask.float()
    return -(log1mexp(logp, eps) * m).sum() / m.sum().clamp(min=1.0)


def dual_loss(mle: torch.Tensor, ul: torch.Tensor, lam: float) -> torch.Tensor:
    """MLE + λ·UT (paper eq. 4; λ = 0.4). lam = 0 is positive-only SFT and skips UT's graph."""
    return mle if lam == 0 else mle + lam * ul


def weighted_unlikelihood_loss(
    logp: torch.Tensor, mask: torch.Tensor, lam: torch.Tensor, eps: float = UL_EPS
) -> torch.Tensor:
    """Sum of lam_j · -log(1 - p_j) over the masked tokens / number of masked tokens.  (N,) each -> scalar.

    A per-token λ with the same normaliser as `unlikelihood_loss`, so that a constant lam_j = λ gives
    exactly λ · unlikelihood_loss (the paper's term) and mixing kinds changes only their weights.
    """
    m = mask.float()
    return -(log1mexp(logp, eps) * m * lam.float()).sum() / m.sum().clamp(min=1.0)


def ptalign_loss(
    logp: torch.Tensor,
    is_pos: torch.Tensor,
    is_tox: torch.Tensor,
    ul_mask: torch.Tensor,
    lam: float,
    lam_benign: float | None = None,
    is_benign: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective and its logged parts from per-target log-probs.

    logp (N,) fp32; is_pos, is_tox, ul_mask (N,) bool with ul_mask ⊆ is_tox. With lam_benign and
    is_benign (N,) bool given, the toxic tokens of benign triplets (a needless refusal of a safe
    request) get lam_benign instead of lam: L = MLE + Σ λ_j·UT_j / #masked. Returns (loss, metrics)
    with metrics train/mle_loss, train/ul_loss, train/loss, train/pos_logprob (mean log p over
    positive tokens), train/tox_logprob (over all toxic tokens), train/tox_masked_frac (share of
    toxic tokens that get UT), plus the counts the trainer needs to average them over steps.
    """
    mle = mle_loss(logp, is_pos)
    ul = unlikelihood_loss(logp, ul_mask)
    if lam_benign is None or is_benign is None or lam_benign == lam:
        loss = dual_loss(mle, ul, lam)
    else:
        lam_tok = torch.where(is_benign, lam_benign, lam)
        loss = mle + weighted_unlikelihood_loss(logp, ul_mask, lam_tok)
    with torch.no_grad():
        n_pos, n_tox, n_ul = (int(x.sum()) for x in (is_pos, is_tox, ul_mask))
        lp = logp.detach().float()
        metrics = {
            "train/mle_loss": float(mle),
            "train/ul_loss": float(ul),
            "train/loss": float(loss),
            "train/pos_logprob": float(lp[is_pos].mean()) if n_pos else math.nan,
            "train/tox_logprob": float(lp[is_tox].mean()) if n_tox else math.nan,
            "train/tox_masked_frac": n_ul / n_tox if n_tox else 0.0,
            "n_pos": n_pos,
            "n_tox": n_tox,
            "n_ul": n_ul,
        }
    return loss, metrics
