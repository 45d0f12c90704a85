"""Classifier-free guidance inside vLLM's sampler: each guided chat and its negative twin run as two
requests of one engine step, and a logits processor draws the chat's token from
`scale · (cond − uncond) + uncond` (log-probabilities) and makes both requests emit it.

Why by hand: vLLM offers no guidance (nor does llama.cpp or an OpenAI-compatible server), and
transformers' `generate(guidance_scale=…)` (llm/guided.py) wrote synth.goal_guidance's goal lists at
23–25 tokens/s on 2 cores where vLLM writes the plain ones at 380–430 (docs/experiments.md, "Guided
goals with a tenth of everyday requests, and the preset, on a third CPU"). A logits processor sees the
whole batch's logits before sampling, so it can read both rows of a pair, sample the guided token itself
(temperature, then top-p, as transformers' warpers do after its guidance processor) and leave each row
one finite logit: vLLM's own sampler then picks that token for both, and the twin's KV cache follows
the chat's tokens as guidance requires.

The two rows must be at the same position at every step. They are when both prompts are prefilled in
the same step and never preempted: chunked prefill is off on a CPU (vllm_backend.py), the chats' shared
prefix is put in the prefix cache first, and `pair_batches` sends at most as many pairs as fit one
step's token budget and the KV cache. A pair found out of step is an error, never a silent
unguided token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ptalign.llm.base import Chat, Generation, Params

KEY = "ptalign_cfg"  # SamplingParams.extra_args key carrying a row's {"pair", "role", "scale", ...}
COND, UNCOND = 0, 1


def guided_logprobs(cond: torch.Tensor, uncond: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """scale · (log p_cond − log p_uncond) + log p_uncond, row by row.  (P, V), (P, V), (P,) -> (P, V).

    The formula of transformers' classifier-free guidance processor (Sanchez et al. 2023)."""
    lc, lu = torch.log_softmax(cond.float(), -1), torch.log_softmax(uncond.float(), -1)
    return scale[:, None] * (lc - lu) + lu


TOPK = 64  # candidates a draw looks at before it falls back to sorting the whole vocabulary


def top_p_keep(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Which of `probs` (sorted, descending) top-p keeps: a token stays while the mass before it is
    below top_p, so the top token always stays (transformers' TopPLogitsWarper).  (K,) -> (K,) bool."""
    return probs.cumsum(-1) - probs < top_p


def draw(scores: torch.Tensor, temperature: list[float], top_p: list[float], seeds: list[int],
         steps: list[int]) -> list[int]:  # fmt: skip
    """One token per row of guided scores (P, V): argmax where greedy, else temperature → top-p → a
    draw by one uniform from a generator seeded with (seed, step), so a pair's tokens depend on
    neither the batch nor its row. Top-p is read from the TOPK best tokens, and from the whole sorted
    row only where those hold less than top_p of the mass."""
    out = scores.argmax(-1).tolist()
    hot = [k for k, t in enumerate(temperature) if t > 0.0]
    if not hot:
        return out
    temps = torch.tensor([temperature[k] for k in hot], dtype=scores.dtype, device=scores.device)
    s = scores[hot] / temps[:, None]
    s = s - torch.logsumexp(s, -1, keepdim=True)
    top, idx = s.topk(min(TOPK, s.shape[-1]), -1)
    probs = top.exp()
    for j, k in enumerate(hot):
        p, ids = probs[j], idx[j]
        if float(p.sum()) < top_p[k]:  # a flat row: the kept set reaches past the candidates
            p, ids = s[j].exp().sort(descending=True)
        p = torch.where(top_p_keep(p, top_p[k]), p, torch.zeros_like(p))
        g = torch.Generator().manual_seed((seeds[k] * 1_000_003 + steps[k]) % (2**63))
        u = float(torch.rand((), generator=g)) * float(p.sum())
        i = min(
            int(torch.searchsorted(p.cumsum(-1), torch.tensor(u, dtype=p.dtype, device=p.device))), len(p) - 1
        )
        out[k] = int(ids[i])
    return out


def processor_class() -> type:
    """The LogitsProcessor subclass, built where vLLM is importable (the module imports without it)."""
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

    class GuidancePairs(LogitsProcessor):
        """Rows carrying extra_args[KEY] are paired by "pair"; every other row is left as it is."""

        def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
            self.rows: dict[int, tuple[dict[str, Any], list[int]]] = {}  # batch index -> (spec, output ids)

        def is_argmax_invariant(self) -> bool:
            return False

        def update_state(self, batch_update: BatchUpdate | None) -> None:
            if batch_update is None:
                return
            for i in batch_update.removed:
                self.rows.pop(i, None)
            for i, params, _prompt, out in batch_update.added:
                spec = ((params.extra_args or {}) if params is not None else {}).get(KEY)
                if spec is None:
                    self.rows.pop(i, None)
                else:
                    self.rows[i] = (spec, out)  # `out` is the request's live output-token list
            for a, b, kind in batch_update.moved:
                ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
                if ra is not None:
                    self.rows[b] = ra
                if kind == MoveDirectionality.SWAP and rb is not None:
                    self.rows[a] = rb

        def apply(self, logits: torch.Tensor) -> torch.Tensor:
            if not self.rows:
                return logits
            pairs: dict[str, list[Any]] = {}
            for i, (spec, out) in self.rows.items():
                pairs.setdefault(spec["pair"], [None, None])[spec["role"]] = (i, spec, out)
            ci, ui, specs = [], [], []
            for key, (c, u) in pairs.items():
                if c is None or u is None or len(c[2]) != len(u[2]):
                    raise RuntimeError(
                        f"guided pair {key} is out of step in vLLM's batch (its two prompts did not start "
                        "together): a ptalign bug; run synth.goal_guidance on backend.kind=transformers"
                    )
                ci.append(c[0])
                ui.append(u[0])
                specs.append((c[1], len(c[2])))
            scale = torch.tensor([s["scale"] for s, _ in specs], dtype=torch.float32, device=logits.device)
            toks = draw(
                guided_logprobs(logits[ci], logits[ui], scale),
                [s["temperature"] for s, _ in specs],
                [s["top_p"] for s, _ in specs],
                [s["seed"] for s, _ in specs],
                [step for _, step in specs],
            )
            rows = torch.tensor(ci + ui, device=logits.device)
            logits[rows] = float("-inf")
            logits[rows, torch.tensor(toks + toks, device=logits.device)] = 0.0
            return logits

    return GuidancePairs


def uncached(ids: list[int], ref: list[int], block: int) -> int:
    """Tokens of prompt `ids` a step must prefill once `ref` is in vLLM's prefix cache (whole blocks
    only, and the last token always runs)."""
    common = 0
    for a, b in zip(ids, ref, strict=False):
        if a != b:
            break
        common += 1
    return len(ids) - min(common // block * block, len(ids) - 1)


def pair_batches(
    new: list[int], kv: list[int], budget: int, max_seqs: int, kv_capacity: int
) -> list[tuple[int, int]]:
    """[start, end) ranges of pairs that start together: pair k's two prompts prefill `new[k]` tokens
    between them and hold `kv[k]` tokens of KV cache at their longest; a range keeps within one engine
    step's token budget and sequence limit, and within the KV cache, so no row waits or is preempted."""
    out, start, used, held = [], 0, 0, 0
    for k, (n, m) in enumerate(zip(new, kv, strict=True)):
        if n > budget or m > kv_capacity:
            raise ValueError(f"a guided pair needs {n} prompt tokens in one step (budget {budget}) and "
                             f"{m} of KV cache ({kv_capacity}); shorten its prompts")  # fmt: skip
        if k > start and (used + n > budget or 2 * (k - start + 1) > max_seqs or held + m > kv_capacity):
            out.append((start, k))
            start, used, held = k, 0, 0
        used, held = used + n, held + m
    if start < len(new):
        out.append((start, len(new)))
    return out


class GuidedView:
    """A running VLLMBackend under guidance away from `negative(chat)`: the same engine, so no second
    model is loaded; closing the view leaves the engine to its owner."""

    name = "vllm"

    def __init__(self, engine: Any, scale: float, negative: Callable[[Chat], Chat], tag: str):
        self.engine, self.scale, self.negative = engine, scale, negative
        # another engine's guided calls are other calls (llm/guided.py's ids say transformers)
        self.model_id = f"{engine.model_id}+cfg{scale:g}:{tag}"
        self.preferred_batch = engine.preferred_batch

    def generate(self, chats: list[Chat], params: Params) -> list[Generation]:
        return self.engine.generate_guided(chats, [self.negative(c) for c in chats], params, self.scale)

    def close(self) -> None:
        pass
