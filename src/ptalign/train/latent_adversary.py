"""Latent adversarial training (train.lat, beyond the paper; Casper et al. 2024, "Defending against
unforeseen failure modes with latent adversarial training", arXiv 2403.05030; Sheshadri et al. 2024,
"Latent adversarial training improves robustness to persistent harmful behaviors", arXiv 2407.15549).

Why: an attack the training never showed (a request put in the past tense, say) moves the prompt's
hidden states to where the refusal no longer fires. LAT trains against the worst such move it can
find: an adversary perturbs the residual stream of the harmful prompts at one decoder layer, within a
small ball, to push the model towards the toxic response and away from the positive one; the model
is then trained on the usual objective with that perturbation in place. Unlike ReFAT (one fixed
direction removed, `refusal_feature.py`), the perturbation is found per token and per step.

Our choices where the papers leave room, each stated once:
  - one layer, a third deep (`lat_layer`: 10 of SmolLM2's 30; targeted LAT perturbs 4 of Llama-3-8B's
    32, the first at a quarter), at the prompt tokens of harmful triplets only: benign triplets and
    every response token are trained clean;
  - the ball's radius is relative: `radius` times each token's own hidden-state norm at that layer, so
    one setting means the same on models whose residual streams differ in scale;
  - one ascent step from zero along each token's normalised gradient (FGM; Miyato et al. 2017) rather
    than targeted LAT's 16 PGD steps: on 2 CPU cores each step costs about a forward and backward;
  - the adversary's objective is the mean log-probability of the toxic targets minus that of the
    positive ones on harmful rows (targeted LAT's "towards" and "away" terms).

On the quick preset (radius 0.05 and 0.02) it did not help past tense and raised non-answers to
harmful requests (docs/experiments.md, "Latent adversarial training"); it stays a switch, off by default.

A hand-written module: peft, TRL and transformers have no latent adversary; the perturbation itself
is `fgm_delta`, a pure function with a hand-computed test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def lat_layer(n_layers: int) -> int:
    """The decoder layer (0-based) whose output the adversary perturbs: a third deep."""
    return n_layers // 3


def adversary_positions(batch: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
    """(R, T) bool: the prompt tokens of `rows` (R,) bool. A row's first target is predicted from the
    prompt's last token in both layouts (collate.py), so its prompt is every column up to that one."""
    R, T = batch["input_ids"].shape
    first = torch.full((R,), T, dtype=torch.long, device=rows.device)
    first = first.scatter_reduce(0, batch["tgt_row"], batch["tgt_col"], reduce="amin")
    cols = torch.arange(T, device=rows.device)
    return (cols[None, :] <= first[:, None]) & rows[:, None]


def adversary_objective(
    logp: torch.Tensor, is_pos: torch.Tensor, is_tox: torch.Tensor, harmful: torch.Tensor
) -> torch.Tensor:
    """What the adversary raises: mean log p of harmful triplets' toxic targets minus that of their
    positive ones (each mean over its tokens; 0 where a kind is absent)."""
    tox, pos = is_tox & harmful, is_pos & harmful
    t = logp[tox].sum() / tox.sum().clamp_min(1)
    p = logp[pos].sum() / pos.sum().clamp_min(1)
    return t - p


def fgm_delta(grad: torch.Tensor, hidden_norm: torch.Tensor, radius: float) -> torch.Tensor:
    """One ascent step from zero to the ball's edge: each token's gradient (…, H) rescaled to length
    radius × that token's hidden-state norm (…, 1); a zero gradient gives a zero step."""
    g = grad.float()
    n = g.norm(dim=-1, keepdim=True)
    return torch.where(n > 0, g / n.clamp_min(1e-12), torch.zeros_like(g)) * (radius * hidden_norm)


@contextmanager
def perturbed(layer: torch.nn.Module, delta: torch.Tensor, where: torch.Tensor) -> Iterator[dict[str, Any]]:
    """Within the block, `layer`'s output gets `delta` (R, T, H) added where `where` (R, T) holds; the
    yielded dict's "norm" is then each token's clean output norm (R, T, 1), detached."""
    seen: dict[str, Any] = {}
    w = where[..., None]

    def hook(_m: Any, _a: Any, output: Any) -> Any:
        h = output if isinstance(output, torch.Tensor) else output[0]
        seen["norm"] = h.detach().float().norm(dim=-1, keepdim=True)
        out = h + (delta * w).to(h.dtype)
        return out if isinstance(output, torch.Tensor) else (out, *output[1:])

    handle = layer.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()
