"""Refusal feature adversarial training (train.refat, beyond the paper; Yu et al. 2024, "Robust LLM
safeguarding via refusal feature adversarial training", arXiv 2409.20089).

Why: attacks that the training never showed (a request put in the past tense, say) tend to work by
keeping the *refusal feature* from lighting up: the difference between the mean residual state of
harmful and of harmless prompts (Arditi et al. 2024, arXiv 2406.11717). ReFAT simulates that attack
during training: on a share of the harmful rows it projects the feature out of every decoder
layer's output, at every position, and trains the usual objective all the same, so the model has to
refuse through something other than that one direction.

Our choices where the paper leaves room, each stated once:
  - one direction, as in Arditi et al.: the mean difference of the last prompt token's state (the
    generation prompt's last token) between harmful and harmless prompts, read at the layer two fifths
    deep (`feature_layer`: 12 of SmolLM2's 30), projected out of every decoder layer's output. One
    direction per layer, each projected out at its own layer (an unofficial ReFAT implementation's
    choice), took the embedded base model's log-probability of its benign positives from -1.1 to
    between -3.1 and -4.8 a token on the training triplets: 30 directions out of 576 dimensions break
    a small model. One direction read at layer 4 / 8 / 12 / 16 / 20 cost 0.62 / 0.36 / 0.09 / 0.38 /
    0.08 there;
  - the harmless prompts are the benign triplets' (sensitive but safe requests), so the direction
    separates harm rather than topic;
  - the direction is recomputed from the model being trained (adapter on, no dropout) every
    `REFRESH` optimizer steps, from a fixed sample of at most `SAMPLE` prompts of each kind: the base
    model barely refuses, so the feature worth ablating is the one the training grows;
  - which harmful rows are ablated is drawn per micro-batch from a generator seeded by train.seed
    and the optimizer step, so a run resumed from a checkpoint draws as an uninterrupted one (its
    direction is recomputed at its first step, which may fall between two refreshes).

On the quick preset it did not help the held-out families (docs/experiments.md, "Refusals trained without the
refusal feature"); it stays a switch, off by default.

A hand-written module: peft and transformers have no activation-ablation training; the projection
itself is `ablate`, a pure function with a hand-computed test.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

SAMPLE = 64  # prompts of each kind per direction estimate (ReFAT estimates from 32 of each)
REFRESH = 20  # optimizer steps between two estimates (ReFAT's unofficial code: 4, on a GPU)


def feature_layer(n_layers: int) -> int:
    """The decoder layer (0-based) whose output the direction is read at: two fifths deep."""
    return (2 * n_layers) // 5


def ablate(hidden: torch.Tensor, direction: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """hidden (R, T, H) with its component along the unit `direction` (H,) removed on `rows` (R,) bool."""
    d = direction.to(hidden.dtype)
    along = (hidden @ d)[..., None] * d  # (R, T, H)
    return hidden - rows.to(hidden.dtype)[:, None, None] * along


def mean_difference(harmful: torch.Tensor, benign: torch.Tensor) -> torch.Tensor:
    """The unit refusal direction (H,) from last-token states harmful (N, H) and benign (M, H)."""
    diff = harmful.float().mean(0) - benign.float().mean(0)
    return diff / diff.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def harmful_rows(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(R,) bool: rows holding a target of a harmful triplet (either layout: rows never mix triplets)."""
    rows = torch.zeros(batch["input_ids"].shape[0], dtype=torch.bool, device=batch["input_ids"].device)
    rows[batch["tgt_row"][~batch["is_benign"]]] = True
    return rows


def draw_rows(candidates: torch.Tensor, share: float, seed: int, step: int, micro: int) -> torch.Tensor:
    """The candidate rows ablated in this micro-batch: each with probability `share`, drawn from a
    generator keyed by (seed, optimizer step, micro-batch within the step)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + micro)
    return candidates & (torch.rand(candidates.shape[0], generator=g) < share).to(candidates.device)


class _Read(Exception):
    """Raised by the reading hook: the layers above the one read would be computed for nothing."""


@torch.no_grad()
def last_token_states(
    decoder: torch.nn.Module,
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    layer: int,
    batch: int = 16,
) -> torch.Tensor:
    """(N, H): decoder layer `layer`'s output at each prompt's last token (prompts left-padded)."""
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        width = max(len(p) for p in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
        mask = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
        for r, p in enumerate(chunk):
            ids[r, width - len(p) :] = torch.tensor(p, device=device)
            mask[r, width - len(p) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        states: list[torch.Tensor] = []

        def keep(_m: Any, _a: Any, output: Any, states: list[torch.Tensor] = states) -> None:
            h = output if isinstance(output, torch.Tensor) else output[0]
            states.append(h[:, -1].float())
            raise _Read

        handle = decoder.layers[layer].register_forward_hook(keep)
        try:
            model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=1)
        except _Read:
            pass
        finally:
            handle.remove()
        out.append(states[0])
    return torch.cat(out)


class RefusalFeature:
    """The refusal direction of the model being trained, and the hooks that project it out."""

    def __init__(self, harmful: Sequence[Sequence[int]], benign: Sequence[Sequence[int]], seed: int = 0):
        rng = random.Random(seed)
        self.harmful = rng.sample(list(harmful), min(SAMPLE, len(harmful)))
        self.benign = rng.sample(list(benign), min(SAMPLE, len(benign)))
        self.direction: torch.Tensor | None = None  # (H,), unit

    def refresh(self, decoder: torch.nn.Module, model: torch.nn.Module) -> torch.Tensor:
        """Recompute the direction from `model` in eval mode (no dropout); returns it."""
        layer = feature_layer(len(decoder.layers))
        was_training = model.training
        model.eval()
        try:
            h = last_token_states(decoder, model, self.harmful, layer)
            b = last_token_states(decoder, model, self.benign, layer)
        finally:
            model.train(was_training)
        self.direction = mean_difference(h, b)
        return self.direction

    @contextmanager
    def ablated(self, decoder: torch.nn.Module, rows: torch.Tensor) -> Iterator[None]:
        """Within the block, every decoder layer's output loses the direction on `rows`."""
        if self.direction is None or not bool(rows.any()):
            yield
            return
        d = self.direction.to(rows.device)

        def hook(_m: Any, _a: Any, output: Any) -> Any:
            if isinstance(output, torch.Tensor):  # a decoder layer (transformers >= 5)
                return ablate(output, d, rows)
            return (ablate(output[0], d, rows), *output[1:])

        handles = [layer.register_forward_hook(hook) for layer in decoder.layers]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
