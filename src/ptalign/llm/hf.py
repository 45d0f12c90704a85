"""transformers backend: batched `generate` on any HF causal LM (and the only one that applies an adapter).

Chats are sorted by prompt length and batched `batch_size` at a time with left padding, so each batch
pads little. Sampling is seeded per batch from the call's seed (or its chats' seeds) and the batch's
prompts, so the same call gives the same texts; `generate` draws one noise stream per batch, so a
sampled text also depends on its batch mates (llama.cpp and vLLM sample each chat from its own seed). Stop strings end generation inside `generate` (transformers' `stop_strings`)
and the text is cut before the first stop string.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from ptalign import models
from ptalign.llm.base import Chat, Generation, GenParams, Params, per_chat


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """Text before the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class TransformersBackend:
    name = "transformers"

    def __init__(
        self,
        spec: str,
        dtype: str = "float32",
        batch_size: int = 8,
        adapter: str | Path | None = None,
        cache_dir: str | Path | None = None,
        model: Any = None,
        tokenizer: Any = None,
        model_id: str | None = None,
    ):
        """Loads `spec` (+ merged adapter) through ptalign.models, or wraps a given model/tokenizer."""
        if model is None:
            model, tokenizer = models.load(spec, dtype=dtype, cache_dir=cache_dir, adapter=adapter)
        self.model = model.eval()
        self.tok = models.ensure_chat_template(tokenizer)
        # a base model under the fallback template writes the next "User:" turn itself
        self.extra_stop = models.FALLBACK_STOP if models.template_source(self.tok) == "fallback" else ()
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.tok.padding_side = "left"  # decoder-only: new tokens follow the last real token
        self.batch_size = batch_size
        self.preferred_batch = batch_size
        self.model_id = model_id or models.model_identity(spec, adapter)
        if self.extra_stop:  # the fallback template is part of what the calls mean (call-cache identity)
            self.model_id += "+fallback-template"
        gc = self.model.generation_config
        eos = gc.eos_token_id if gc.eos_token_id is not None else self.tok.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos]) - {None}

    def prompt_ids(self, chat: Chat) -> list[int]:
        ids = self.tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # newer transformers return a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)

    def generate(self, chats: list[Chat], params: Params) -> list[Generation]:
        plist = per_chat(params, len(chats))
        prompts = [self.prompt_ids(c) for c in chats]
        # chats whose settings differ only in seed share batches; the batch seed derives from all of them
        groups: dict[GenParams, list[int]] = {}
        for i, p in enumerate(plist):
            groups.setdefault(p.unseeded(), []).append(i)
        out: list[Generation | None] = [None] * len(chats)
        for shared, members in groups.items():
            order = sorted(members, key=lambda i: len(prompts[i]))
            for s in range(0, len(order), self.batch_size):
                idx = order[s : s + self.batch_size]
                seeds = [plist[i].seed for i in idx]
                extra = self.batch_extra([chats[i] for i in idx])
                gens = self.generate_ids([prompts[i] for i in idx], shared, seeds, **extra)
                for i, g in zip(idx, gens, strict=True):
                    out[i] = g
        return [g for g in out if g is not None]

    def batch_extra(self, chats: list[Chat]) -> dict[str, Any]:
        """More `generate` arguments for one batch of chats (none here; guided.py adds a negative prompt)."""
        return {}

    def generate_ids(
        self, prompts: list[list[int]], params: GenParams, seeds: list[int] | None = None, **extra: Any
    ) -> list[Generation]:
        """One padded `generate` call for a batch of tokenized prompts (`seeds`: per prompt, else params.seed;
        `extra`: more `generate` arguments)."""
        batch = self.tok.pad({"input_ids": prompts}, return_tensors="pt", padding=True)
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        kw: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tok.pad_token_id,
        }
        if params.temperature > 0:
            # temperature/top_p are the whole sampling spec (no model-default top_k), as in the other backends
            kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        stops = tuple(params.stop) + self.extra_stop
        if stops:
            kw.update(stop_strings=list(stops), tokenizer=self.tok)
        seeds = seeds or [params.seed] * len(prompts)
        key = seeds[0] if len(set(seeds)) == 1 else seeds  # one shared seed: the same key as ever
        seed = int.from_bytes(hashlib.sha256(repr((key, prompts)).encode()).digest()[:4], "little")
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            seqs = self.model.generate(**batch, **kw, **extra)
        new = seqs[:, batch["input_ids"].shape[1] :]
        gens = []
        for row, mask in zip(new.tolist(), batch["attention_mask"], strict=True):
            n, hit_eos = len(row), False
            for j, t in enumerate(row):
                if t in self._eos or t == self.tok.pad_token_id:  # a finished row is padded after its end
                    n, hit_eos = j, t in self._eos
                    break
            # after eos the row is padding; the eos itself counts as a generated token
            text = self.tok.decode(row[:n], skip_special_tokens=True)
            text, hit_stop = cut_at_stop(text, stops)
            completion = n + (1 if hit_eos else 0)
            gens.append(
                Generation(
                    text=text,
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=completion,
                    finish_reason="stop" if hit_eos or hit_stop else "length",
                )
            )
        return gens

    def close(self) -> None:
        self.model = None
