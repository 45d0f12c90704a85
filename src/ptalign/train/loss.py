"""The PT-ALIGN objective as small pure functions on tensors (no config, no model state).

    L = MLE(pos) + lam * UT(tox),   UT(token) = -log(1 - p(token))          (arXiv 2502.08657, eq. 4)

Normalisation (the same in every code path: packed or two-sequence, chunked or full logits): each
term is a per-token mean over its own tokens in the micro-batch,

    MLE = sum over positive target tokens of -log p  /  number of positive target tokens
    UT  = sum over *masked* toxic tokens of -log(1-p) /  number of masked toxic tokens

(0 when the micro-batch has no such token). Beyond the paper, `reference_kl` gives an optional
retain term (train.kl_benign, off by default): KL(base || tuned) over the vocabulary, averaged over
the positive tokens of benign triplets; `reroute_loss` and `retain_loss` reroute intermediate hidden
states (train.reroute, off by default: RMU's terms on circuit breakers' schedule). With
gradient accumulation or several processes the micro-batch losses are averaged, as transformers'
Trainer and DDP do.

All functions take per-token log-probabilities of the target tokens, so the loss never sees which
tokens came from which row: each target carries its own mask, and nothing is shared across the
batch (public unlikelihood code has leaked negatives from other samples through a batch-wide
candidate set; here a token is only ever penalised for being its own sample's toxic token).
"""

from __future__ import annotations

import functools
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
    compiled: bool = False,
) -> torch.Tensor:
    """log p(target) from final hidden states, `chunk` rows at a time.  hidden (N, H), targets (N,) -> (N,).

    Only a (chunk, V) logits block exists at any time, which makes peak memory independent of N·V.
    A frozen bias-free linear head (LoRA's usual case) goes through `frozen_head_logprobs` (with
    compiled=True, its per-chunk work through torch.compile); any other head recomputes each chunk
    in backward (activation checkpointing) so that its weight gets its gradient. Values equal
    token_logprobs(head(hidden), targets) either way.
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
        return frozen_head_logprobs(hidden, w, targets, chunk, compiled)
    out = []
    for s in range(0, hidden.shape[0], chunk):
        h, t = hidden[s : s + chunk], targets[s : s + chunk]
        if torch.is_grad_enabled():
            out.append(checkpoint(_chunk_logprobs, head, h, t, use_reentrant=False))
        else:
            out.append(_chunk_logprobs(head, h, t))
    return torch.cat(out)


def _head_chunk(
    h: torch.Tensor, weight: torch.Tensor, t: torch.Tensor, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk of `frozen_head_logprobs`: (log p (c,) fp32, d log p / d h (c, H) or None), eager.

    log-softmax and softmax in place on one (c, V) buffer: z - max, exp, sum (logsumexp would
    allocate its own copies and exponentiate a second time for the softmax).
    """
    t = t[:, None]
    z = (h @ weight.T).float()  # (c, V) logits; bf16 matmul under autocast
    z.sub_(z.amax(dim=-1, keepdim=True))
    zt = z.gather(-1, t)
    total = z.exp_().sum(dim=-1, keepdim=True)
    logp = (zt - total.log()).squeeze(-1)
    if not need_grad:
        return logp, None
    g = z.mul_(-1.0 / total).scatter_add_(-1, t, torch.ones_like(zt))  # onehot(target) - softmax
    return logp, g.to(weight.dtype) @ weight  # as autocast would cast it


def _head_chunk_fusable(
    h: torch.Tensor, weight: torch.Tensor, t: torch.Tensor, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`_head_chunk` written out of place for torch.compile, which fuses the (c, V) elementwise
    work into a reduction and one pass that writes the softmax gradient in the head's dtype: about
    a fifth of the eager path's memory traffic over the logits block (the head's cost on a GPU)."""
    z = (h @ weight.T).float()
    zmax = z.amax(dim=-1, keepdim=True)
    e = torch.exp(z - zmax)
    total = e.sum(dim=-1, keepdim=True)
    logp = (z.gather(-1, t[:, None]) - zmax - total.log()).squeeze(-1)
    if not need_grad:
        return logp, None
    onehot = torch.arange(z.shape[-1], device=z.device)[None, :] == t[:, None]
    g = onehot.to(z.dtype) - e / total
    return logp, g.to(weight.dtype) @ weight


@functools.cache
def _compiled_head_chunk() -> Callable[..., Any]:
    # dynamic: the last chunk is shorter, and N changes with every batch
    return torch.compile(_head_chunk_fusable, dynamic=True)


class _FrozenHeadLogprobs(torch.autograd.Function):
    # Hand-written because neither torch nor Liger offers it: Liger's fused linear cross-entropy
    # folds in one fixed loss, while MLE + λ·UT needs per-token log-probs with their own gradient.
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        chunk: int,
        compiled: bool,
    ) -> torch.Tensor:
        need = ctx.needs_input_grad[0]
        step = _compiled_head_chunk() if compiled else _head_chunk
        logp = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        dlogp_dh = torch.empty_like(hidden) if need else None
        for s in range(0, hidden.shape[0], chunk):
            lp, d = step(hidden[s : s + chunk], weight, targets[s : s + chunk], need)
            logp[s : s + chunk] = lp
            if need:
                dlogp_dh[s : s + chunk] = d
        ctx.save_for_backward(dlogp_dh)
        return logp

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None, None]:
        (dlogp_dh,) = ctx.saved_tensors
        return grad.to(dlogp_dh.dtype)[:, None] * dlogp_dh, None, None, None, None


def frozen_head_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk: int = 1024,
    compiled: bool = False,
) -> torch.Tensor:
    """log p(target) through a frozen linear head (weight (V, H), no bias).  (N, H), (N,) -> (N,) fp32.

    Each log p_i depends on hidden row i alone, so its gradient is (∂L/∂log p_i) · d_i with
    d_i = (onehot(t_i) − softmax_i) · W, whatever loss comes after. d (N × H, the size of `hidden`)
    is computed in the forward, chunk by chunk, and backward only scales its rows. Against the
    checkpointed path this drops the recomputed (chunk × V) logits matmul and the logsumexp backward
    passes. It gives no gradient to `weight`: for a trained head use the checkpointed path.
    compiled=True runs each chunk through torch.compile (train.compile); the values are the same.
    """
    return _FrozenHeadLogprobs.apply(hidden, weight, targets, chunk, compiled)


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
    """MLE + λ·UT (paper eq. 4; λ = 0.4). lam = 0 returns MLE alone and skips UT's graph. Training is
    positive-only SFT only when train.lam_benign is None or 0 as well: at its default 2.0 the benign
    triplets' toxic tokens keep their UT term (ptalign_terms)."""
    return mle if lam == 0 else mle + lam * ul


def reference_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Sum over rows of KL(p_ref || p) = Σ_v p_ref(v) · (log p_ref(v) − log p(v)).  (K, V) each -> scalar.

    The retain term (train.kl_benign): on the positive tokens of benign triplets the tuned model's
    whole next-token distribution is pulled towards the base model's (the adapter switched off), not
    just the one sampled token MLE sees. A sum, so chunks add up; the caller divides by the rows.
    """
    ref = torch.log_softmax(ref_logits.float(), dim=-1)
    return (ref.exp() * (ref - torch.log_softmax(logits.float(), dim=-1))).sum()


def _chunk_kl(
    head: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor, ref_h: torch.Tensor
) -> torch.Tensor:
    with torch.no_grad():
        ref_logits = head(ref_h)
    return reference_kl(head(h), ref_logits)


def reference_kl_chunked(
    hidden: torch.Tensor,
    ref_hidden: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    chunk: int = 1024,
) -> torch.Tensor:
    """Mean KL(p_ref || p) over rows from final hidden states, `chunk` rows at a time.  (K, H) each -> scalar.

    Like `token_logprobs_chunked`: only (chunk, V) logits blocks exist, recomputed in backward
    (activation checkpointing). 0 (with a graph) when K = 0.
    """
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0
    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, hidden.shape[0], chunk):
        h, r = hidden[s : s + chunk], ref_hidden[s : s + chunk]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_kl, head, h, r, use_reentrant=False)
        else:
            total = total + _chunk_kl(head, h, r)
    return total / hidden.shape[0]


def reroute_loss(hidden: torch.Tensor, ref_hidden: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Mean of ||h − |h_base|·u||² / |h_base|² over rows and layers.  (K, L, H), (K, L, H), (L, H) -> scalar.

    Beyond the paper (train.reroute): the hidden states of a harmful triplet's toxic tokens are sent
    to a fixed random unit direction u per layer, scaled to the base state's norm, so that what trips
    the model is the harmful content being written, not the request's form. This is RMU's forget term
    (Li et al. 2024, arXiv 2403.03218) with its steering coefficient set per row to |h_base|, and
    relative so that it reads the same at every layer. Circuit breakers' ReLU(cos(h, h_base))
    (arXiv 2406.04313) was tried first and has no gradient here: SmolLM2's residual stream carries
    two dimensions of ~100 at every position, so the cosine stayed at 0.99999 over 23 steps at weight
    10. 0 if K = 0; about 2 where h = h_base (u is nearly orthogonal to any state).
    """
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0
    scale = ref_hidden.float().norm(dim=-1, keepdim=True)  # (K, L, 1)
    target = scale * direction.float()
    return ((hidden.float() - target).pow(2).sum(-1) / scale.squeeze(-1).pow(2).clamp(min=1e-12)).mean()


def retain_loss(hidden: torch.Tensor, ref_hidden: torch.Tensor) -> torch.Tensor:
    """Mean of ||h − h_base||² / |h_base|² over rows and layers.  (K, L, H) each -> scalar; 0 if K = 0.

    RMU's retain term beside `reroute_loss`, relative like it: on benign helpful tokens the hidden
    states stay where the base model's are.
    """
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0
    ref = ref_hidden.float()
    return ((hidden.float() - ref).pow(2).sum(-1) / ref.pow(2).sum(-1).clamp(min=1e-12)).mean()


def reroute_direction(n_layers: int, hidden_size: int, seed: int = 0) -> torch.Tensor:
    """One random unit vector per rerouted layer, (L, H), the same for a given seed on any device."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n_layers, hidden_size, generator=g)  # RMU draws u uniform in [0, 1), then normalises
    return u / u.norm(dim=-1, keepdim=True)


def reroute_weights(step: int, max_steps: int, retain: float = 1.0) -> tuple[float, float]:
    """(c_rr, c_retain) at `step` of `max_steps`: circuit breakers' schedule (arXiv 2406.04313),
    rerouting fading from 1 to 1/2 while retaining grows from 0 to 1/2 (c_rr = 1 − t/2T, c_retain = t/2T),
    the retain weight times `retain` (train.reroute_retain)."""
    t = min(max(step, 0), max_steps) / (2 * max(max_steps, 1))
    return 1.0 - t, retain * t


def weighted_unlikelihood_loss(
    logp: torch.Tensor, mask: torch.Tensor, lam: torch.Tensor, eps: float = UL_EPS
) -> torch.Tensor:
    """Sum of lam_j · -log(1 - p_j) over the masked tokens / number of masked tokens.  (N,) each -> scalar.

    A per-token λ with the same normaliser as `unlikelihood_loss`, so that a constant lam_j = λ gives
    exactly λ · unlikelihood_loss (the paper's term) and mixing kinds changes only their weights.
    """
    return _weighted_ul(log1mexp(logp, eps) * mask.float(), mask, lam)


def _weighted_ul(masked: torch.Tensor, mask: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """`weighted_unlikelihood_loss` from masked = log1mexp(logp) · mask, so that a caller that also
    logs the unweighted term computes log1mexp once (the same operations, so the same bits)."""
    return -(masked * lam.float()).sum() / mask.float().sum().clamp(min=1.0)


def ptalign_terms(
    logp: torch.Tensor,
    is_pos: torch.Tensor,
    ul_mask: torch.Tensor,
    lam: float,
    lam_benign: float | None = None,
    is_benign: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, MLE, UT) as tensors, on logp's device: nothing here waits for the accelerator.

    logp (N,) fp32; is_pos, ul_mask (N,) bool (ul_mask: the toxic tokens that get UT). With lam_benign and
    is_benign (N,) bool given, the toxic tokens of benign triplets (a needless refusal of a safe
    request) get lam_benign instead of lam: L = MLE + Σ λ_j·UT_j / #masked. UT is the unweighted mean
    for logging; where lam_benign differs from lam it is detached (the loss holds the weighted term).
    """
    mle = mle_loss(logp, is_pos)
    if lam_benign is None or is_benign is None or lam_benign == lam:
        ul = unlikelihood_loss(logp, ul_mask)
        return dual_loss(mle, ul, lam), mle, ul
    # one log1mexp for both: the weighted term trains, the plain mean (UT as logged) is read from a
    # detached copy, as unlikelihood_loss computes it
    masked = log1mexp(logp) * ul_mask.float()
    ul = -masked.detach().sum() / ul_mask.float().sum().clamp(min=1.0)
    lam_tok = torch.where(is_benign, lam_benign, lam)
    return mle + _weighted_ul(masked, ul_mask, lam_tok), mle, ul


def ptalign_loss(
    logp: torch.Tensor,
    is_pos: torch.Tensor,
    is_tox: torch.Tensor,
    ul_mask: torch.Tensor,
    lam: float,
    lam_benign: float | None = None,
    is_benign: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective and its logged parts as Python numbers (`ptalign_terms` plus the metrics).

    Returns (loss, metrics) with metrics train/mle_loss, train/ul_loss, train/loss,
    train/pos_logprob (mean log p over positive tokens), train/tox_logprob (over the toxic tokens
    fed), train/tox_masked_frac (share of the toxic tokens fed that get UT) and the counts n_pos,
    n_tox, n_ul. The toxic tokens fed stop at each triplet's last UT (or recovery) token
    (collate.encode_all, mask.needed_tox), so both toxic figures leave out the unread tail; the
    share over all toxic tokens is encode_all's data statistic tox_masked_frac.
    Reading them waits for the accelerator: the trainer sums `step_stats` on the device instead.
    """
    loss, mle, ul = ptalign_terms(logp, is_pos, ul_mask, lam, lam_benign, is_benign)
    s = step_stats(logp, is_pos, is_tox, ul_mask, loss, mle, ul).tolist()
    n_pos, n_tox, n_ul = int(s[5]), int(s[7]), int(s[8])
    metrics = {
        "train/mle_loss": s[0],
        "train/ul_loss": s[1],
        "train/loss": s[2],
        "train/pos_logprob": s[4] / n_pos if n_pos else math.nan,
        "train/tox_logprob": s[6] / n_tox if n_tox else math.nan,
        "train/tox_masked_frac": n_ul / n_tox if n_tox else 0.0,
        "n_pos": n_pos,
        "n_tox": n_tox,
        "n_ul": n_ul,
    }
    return loss, metrics


# the sums `step_stats` returns, in order; means over micro-batches divide by "micro_batches",
# log-prob means by their token counts
STAT_KEYS = (
    "train/mle_loss",
    "train/ul_loss",
    "train/loss",
    "micro_batches",
    "pos_logprob_sum",
    "n_pos",
    "tox_logprob_sum",
    "n_tox",
    "n_ul",
)


@torch.no_grad()
def step_stats(
    logp: torch.Tensor,
    is_pos: torch.Tensor,
    is_tox: torch.Tensor,
    ul_mask: torch.Tensor,
    loss: torch.Tensor,
    mle: torch.Tensor,
    ul: torch.Tensor,
) -> torch.Tensor:
    """One micro-batch's sums for logging (STAT_KEYS), (9,) float64 on logp's device.

    A tensor rather than floats so that the training step never waits for the GPU to log (masked
    sums, not boolean indexing, which would synchronise too). float32 where float64 is missing (MPS).
    """
    dt = torch.float32 if logp.device.type == "mps" else torch.float64
    lp = logp.detach().to(dt)
    zero = lp.new_zeros(())
    return torch.stack(
        [
            mle.detach().to(dt),
            ul.detach().to(dt),
            loss.detach().to(dt),
            lp.new_ones(()),
            torch.where(is_pos, lp, zero).sum(),
            is_pos.sum().to(dt),
            torch.where(is_tox, lp, zero).sum(),
            is_tox.sum().to(dt),
            ul_mask.sum().to(dt),
        ]
    )
