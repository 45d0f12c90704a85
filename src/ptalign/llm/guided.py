"""Classifier-free guidance for a local transformers model: each token is drawn from the chat's
next-token distribution pushed away from the same chat's "negative" twin.

Why (issue #19, docs/experiments.md "What the harmful training requests ask"): asked for harmful
goals, the 135M self-teacher writes protective or harmless ones ("prevent self-harm"); two readers
blind to the setting found 21 % of its goals harmful in content. Guided away from the same prompt asking for
harmless goals (scale 4), 65 % were. The guidance is the standard one for language models (Sanchez et
al. 2023, "Stay on topic with classifier-free guidance", arXiv 2306.17806): log-probabilities
`scale · (cond − uncond) + uncond`, which transformers' `generate` computes when given
`guidance_scale` and `negative_prompt_ids`. No serving engine we use offers it (vLLM, llama.cpp,
OpenAI-compatible servers): a run on vLLM gets it inside vLLM's sampler (llm/vllm_guided.py, ~7x
faster on 2 cores); every other run's guided calls run here, on the model's weights in transformers.

On the quick preset (runs/vcfg, 2026-12-04) the kept goals read 66 % harmful instead of 21 %, but the
tuned model's past-tense compliance read blind did not fall further than the preset's, and ~7 minutes
went to the guided lists on 2 cores: not adopted then (docs/experiments.md, "What the harmful training
requests ask"). Beside the everyday requests it is the preset since 2026-12-07: the tuned model refused
7 % of MT-Bench's questions read blind instead of 24 % (docs/results.md, "The preset from scratch").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ptalign.llm.base import Chat, Generation, Params
from ptalign.llm.hf import TransformersBackend
from ptalign.models import all_cores


class GuidedBackend(TransformersBackend):
    def __init__(self, spec: str, scale: float, negative: Callable[[Chat], Chat], tag: str, **kw: Any):
        """`negative(chat)` → the twin chat guided away from; `tag` names that transform in the call
        cache's model identity (a changed twin or scale is a different model as far as calls go)."""
        super().__init__(spec, **kw)
        self.scale, self.negative = scale, negative
        self.model_id += f"+cfg{scale:g}:{tag}"

    def generate(self, chats: list[Chat], params: Params) -> list[Generation]:
        with all_cores():  # beside a vLLM engine, which left torch one thread
            return super().generate(chats, params)

    def batch_extra(self, chats: list[Chat]) -> dict[str, Any]:
        neg = self.tok.pad(
            {"input_ids": [self.prompt_ids(self.negative(c)) for c in chats]},
            return_tensors="pt",
            padding=True,
        )
        return {
            "guidance_scale": self.scale,
            "negative_prompt_ids": neg["input_ids"].to(self.model.device),
            "negative_prompt_attention_mask": neg["attention_mask"].to(self.model.device),
        }
