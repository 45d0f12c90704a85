"""A thin transformers `Trainer` subclass: `compute_loss` turns a collated batch into per-target
log-probs and hands them to `loss.ptalign_terms` (the objective) and `loss.step_stats` (the logged
sums, kept on the device); `log` averages the recorded metrics.

Precision, LoRA, devices and DDP/FSDP/DeepSpeed stay with TrainingArguments, peft and accelerate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from ptalign.train.collate import LengthBucketSampler, block_mask
from ptalign.train.latent_adversary import (
    adversary_objective,
    adversary_positions,
    fgm_delta,
    lat_layer,
    perturbed,
)
from ptalign.train.loss import (
    STAT_KEYS,
    ptalign_terms,
    reference_kl_chunked,
    reroute_direction,
    reroute_loss,
    reroute_weights,
    retain_loss,
    step_stats,
    token_logprobs,
    token_logprobs_chunked,
)
from ptalign.train.refusal_feature import REFRESH, RefusalFeature, draw_rows, harmful_rows

LOSS_CHUNK = 1024  # target tokens per logits block in the chunked loss: 1024 × V fp32 ≈ 200 MB at V = 49k


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP / DeepSpeed wrappers (a PeftModel stays one: its adapter can be disabled)."""
    while hasattr(model, "module"):  # DDP, DeepSpeed engine
        model = model.module
    return model


def _base(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside DDP / PEFT wrappers (for its decoder and output head)."""
    model = _unwrap(model)
    if hasattr(model, "get_base_model"):  # PeftModel
        model = model.get_base_model()
    return model


def additive_mask(block: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(R, T, T) bool (True = may attend) → (R, 1, T, T) additive float mask in the model's dtype.

    transformers uses a 4-D mask as given (eager adds it to the scores; SDPA takes it as attn_mask);
    a large negative rather than -inf keeps a fully masked row finite.
    """
    m = torch.zeros(block.shape, dtype=dtype, device=block.device)
    m.masked_fill_(~block, torch.finfo(dtype).min)
    return m[:, None]


class _Capture:
    """Forward hook that keeps a module's hidden states: the decoder's last (the input of the output
    head) or one decoder layer's output."""

    def __init__(self) -> None:
        self.hidden: torch.Tensor | None = None

    def __call__(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):  # a decoder layer (transformers >= 5)
            self.hidden = output
        else:
            self.hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state


def _forward_kwargs(base: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    if "segments" in batch:  # packed rows: block mask
        am = block_mask(batch["segments"])
        if getattr(base.config, "_attn_implementation", "eager") == "sdpa":
            am = am[:, None]  # SDPA takes a bool mask as is, whatever dtype autocast gives the queries
        else:
            am = additive_mask(am, next(base.parameters()).dtype)
    else:
        am = batch["attention_mask"]
    return dict(
        input_ids=batch["input_ids"], attention_mask=am, position_ids=batch["position_ids"], use_cache=False
    )


def decoder_hidden(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The decoder's last hidden states (R, T, H), through `model` (so DDP/FSDP hooks fire), with the
    logits of one position only: the output head is applied later, in chunks."""
    base = _base(model)
    cap = _Capture()
    handle = base.get_decoder().register_forward_hook(cap)
    try:
        model(**_forward_kwargs(base, batch), logits_to_keep=1)
    finally:
        handle.remove()
    return cap.hidden


def target_logprobs(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    chunked: bool = True,
    chunk: int = LOSS_CHUNK,
    compiled: bool = False,
) -> torch.Tensor:
    """log p of every target token of a collated batch.  Returns (N,) fp32, N = len(batch['tgt_ids']).

    chunked=True takes the decoder's hidden states (`decoder_hidden`), gathers the target positions
    and applies the output head in chunks: no (R, T, V) tensor exists. chunked=False is the reference
    path: full logits, then gather. compiled=True sends the frozen head's chunks through torch.compile
    (train.compile).
    """
    rows, cols, tgt = batch["tgt_row"], batch["tgt_col"], batch["tgt_ids"]
    if not chunked:
        logits = model(**_forward_kwargs(_base(model), batch)).logits  # (R, T, V)
        return token_logprobs(logits[rows, cols], tgt)
    hidden = decoder_hidden(model, batch)[rows, cols]  # (N, H)
    return token_logprobs_chunked(hidden, _base(model).get_output_embeddings(), tgt, chunk, compiled)


def logprobs_and_benign_kl(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    chunk: int = LOSS_CHUNK,
    compiled: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(`target_logprobs`, mean KL(base || tuned) over the positive tokens of benign triplets).

    The base model is the same weights with the LoRA adapter switched off (peft's `disable_adapter`),
    so no second copy is loaded; it runs without gradients and only on the rows that hold such tokens.
    """
    rows, cols, tgt = batch["tgt_row"], batch["tgt_col"], batch["tgt_ids"]
    head = _base(model).get_output_embeddings()
    hidden = decoder_hidden(model, batch)[rows, cols]  # (N, H)
    logp = token_logprobs_chunked(hidden, head, tgt, chunk, compiled)
    keep = batch["is_pos"] & batch["is_benign"]
    if not bool(keep.any()):
        return logp, reference_kl_chunked(hidden[:0], hidden[:0], head, chunk)
    need = torch.unique(rows[keep])  # sorted rows holding a benign positive token
    sub = {
        k: batch[k][need] for k in ("input_ids", "segments", "attention_mask", "position_ids") if k in batch
    }
    peft = _unwrap(model)
    with torch.no_grad(), peft.disable_adapter():
        ref = decoder_hidden(peft, sub)
    ref_h = ref[torch.searchsorted(need, rows[keep]), cols[keep]]
    return logp, reference_kl_chunked(hidden[keep], ref_h, head, chunk)


def reroute_layers(n_layers: int) -> tuple[int, int]:
    """The decoder layers (0-based) whose outputs train.reroute moves: about a third and two thirds
    deep, as circuit breakers' layers 10 and 20 of Llama-3-8B's 32 (9 and 19 for SmolLM2's 30)."""
    return max(n_layers // 3 - 1, 0), max(2 * n_layers // 3 - 1, 0)


class _Stop(Exception):
    """Raised by a forward hook to end a forward pass once the layers it needs have run."""


def _layer_outputs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], layers: tuple[int, ...], stop: bool = False
) -> Any:
    """(the decoder's last hidden states (R, T, H), the outputs of `layers` stacked (R, T, L, H)).

    stop=True ends the pass after the deepest of `layers` (the last hidden states are then None): the
    layers above it, the final norm and the head would be computed for nothing.
    """
    base = _base(model)
    blocks = base.get_decoder().layers
    caps = [_Capture() for _ in layers]
    handles = [blocks[i].register_forward_hook(c) for i, c in zip(layers, caps, strict=True)]
    last = _Capture()
    if stop:

        def _halt(*_: Any) -> None:
            raise _Stop

        handles.append(blocks[max(layers)].register_forward_hook(_halt))  # runs after its capture
    else:
        handles.append(base.get_decoder().register_forward_hook(last))
    try:
        model(**_forward_kwargs(base, batch), logits_to_keep=1)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return last.hidden, torch.stack([c.hidden for c in caps], dim=2)


def logprobs_and_reroute(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    layers: tuple[int, ...],
    chunk: int = LOSS_CHUNK,
    compiled: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(`target_logprobs`, rerouting loss on harmful toxic tokens, retain loss on benign positive ones).

    The toxic tokens rerouted are those UT trains down (`ul_mask`) of harmful triplets, each layer's
    towards `reroute_direction`; the base's hidden states come from the adapter switched off (no
    second copy), without gradients.
    """
    rows, cols, tgt = batch["tgt_row"], batch["tgt_col"], batch["tgt_ids"]
    head = _base(model).get_output_embeddings()
    last, mids = _layer_outputs(model, batch, layers)
    logp = token_logprobs_chunked(last[rows, cols], head, tgt, chunk, compiled)
    bad = batch["ul_mask"] & ~batch["is_benign"]
    good = batch["is_pos"] & batch["is_benign"]
    peft = _unwrap(model)  # not through DDP: this pass has no gradients to synchronise
    with torch.no_grad(), peft.disable_adapter():
        _, ref = _layer_outputs(peft, batch, layers, stop=True)
    h, r = mids[rows, cols], ref[rows, cols]  # (N, L, H)
    u = reroute_direction(len(layers), h.shape[-1]).to(h.device)
    return logp, reroute_loss(h[bad], r[bad], u), retain_loss(h[good], r[good])


class DualTrainer(Trainer):
    """Trainer whose loss is MLE(pos) + lam·UT(tox) from `loss.py` (+ kl_benign · KL to the base on
    benign positives, or + reroute · circuit breakers' rerouting and retain terms, the retain one times
    reroute_retain, when asked; with refat, a share of the harmful rows trained with the refusal feature
    ablated; with lat, harmful prompts trained under a latent adversary's perturbation); logs train/*
    averages."""

    def __init__(
        self,
        *args: Any,
        lam: float = 0.4,
        lam_benign: float | None = None,
        kl_benign: float = 0.0,
        reroute: float = 0.0,
        reroute_retain: float = 1.0,
        refat: float = 0.0,
        refusal_feature: RefusalFeature | None = None,
        lat: float = 0.0,
        chunked: bool = True,
        compiled_head: bool = False,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        if refat > 0 and refusal_feature is None:
            raise ValueError("refat > 0 needs a refusal_feature")
        self.lam = lam
        self.lam_benign = lam_benign
        self.kl_benign = kl_benign
        self._kl: torch.Tensor | None = None  # summed KL term since the last log (kl_benign > 0)
        self.reroute = reroute
        self.reroute_retain = reroute_retain
        self._rr: torch.Tensor | None = None  # summed (rerouting, retain) since the last log (reroute > 0)
        self.refat = refat
        self.feature = refusal_feature
        self._feature_at: int | None = None  # the refresh period (step // REFRESH) of the direction
        self._micro = (-1, 0)  # (optimizer step, micro-batches seen in it): keys refat's draws
        self._ablated: torch.Tensor | None = None  # rows ablated since the last log (refat > 0)
        self.lat = lat
        self._lat_rise: torch.Tensor | None = None  # summed rise of the adversary's objective (lat > 0)
        self.chunked = chunked
        self.compiled_head = compiled_head
        self._acc: torch.Tensor | None = None  # STAT_KEYS sums since the last log, on the device
        self._tokens: torch.Tensor | int = 0  # prompt + pos + tox tokens trained on, on the device

    @property
    def tokens_seen(self) -> int:
        return int(self._tokens)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        ds = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and hasattr(ds, "examples"):
            bs = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthBucketSampler([e.n_tokens for e in ds.examples], bs)
        return super()._get_train_sampler(train_dataset)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        rr = None
        if self.reroute > 0:
            layers = reroute_layers(_base(model).config.num_hidden_layers)
            logp, *terms = logprobs_and_reroute(model, inputs, layers, compiled=self.compiled_head)
            rr, kl = torch.stack(terms), None
        elif self.kl_benign > 0:
            logp, kl = logprobs_and_benign_kl(model, inputs, compiled=self.compiled_head)
        elif self.refat > 0:
            logp, kl = self._logprobs_ablated(model, inputs), None
        elif self.lat > 0:
            logp, kl = self._logprobs_adversarial(model, inputs), None
        else:
            logp, kl = target_logprobs(model, inputs, self.chunked, compiled=self.compiled_head), None
        is_pos, is_tox, ul_mask = inputs["is_pos"], inputs["is_tox"], inputs["ul_mask"]
        loss, mle, ul = ptalign_terms(
            logp, is_pos, ul_mask, self.lam, self.lam_benign, inputs.get("is_benign")
        )
        # summed on the device and read at logging time only: a .item() per micro-batch would make
        # the host wait for the forward before it can queue the backward
        stats = step_stats(logp, is_pos, is_tox, ul_mask, loss, mle, ul)
        if kl is not None:
            loss = loss + self.kl_benign * kl
            self._kl = kl.detach() if self._kl is None else self._kl + kl.detach()
        if rr is not None:
            c_rr, c_retain = reroute_weights(
                self.state.global_step, self.state.max_steps, self.reroute_retain
            )
            loss = loss + self.reroute * (c_rr * rr[0] + c_retain * rr[1])
            self._rr = rr.detach() if self._rr is None else self._rr + rr.detach()
        self._acc = stats if self._acc is None else self._acc + stats
        self._tokens = self._tokens + inputs["n_tokens"]
        return (loss, {"logp": logp}) if return_outputs else loss

    def _logprobs_ablated(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """`target_logprobs` with the refusal feature projected out of a drawn share of the harmful rows;
        the direction is recomputed every REFRESH optimizer steps from the model as it then is."""
        assert self.feature is not None
        decoder = _base(model).get_decoder()
        step = self.state.global_step
        if self._feature_at != step // REFRESH:
            self.feature.refresh(decoder, _unwrap(model))
            self._feature_at = step // REFRESH
        micro = self._micro[1] + 1 if self._micro[0] == step else 0
        self._micro = (step, micro)
        rows = draw_rows(harmful_rows(inputs), self.refat, self.args.seed, step, micro)
        n = rows.sum()
        self._ablated = n if self._ablated is None else self._ablated + n
        with self.feature.ablated(decoder, rows):
            return target_logprobs(model, inputs, self.chunked, compiled=self.compiled_head)

    def _logprobs_adversarial(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """`target_logprobs` with harmful prompts' states perturbed a third deep by one ascent step of
        the adversary's objective (latent_adversary.py); the pass that finds the step is not through
        DDP: its gradient is the perturbation's only."""
        base = _base(model)
        layer = base.get_decoder().layers[lat_layer(base.config.num_hidden_layers)]
        harmful = ~inputs["is_benign"]
        where = adversary_positions(inputs, harmful_rows(inputs))
        if not bool(where.any()):
            return target_logprobs(model, inputs, self.chunked, compiled=self.compiled_head)
        R, T = where.shape
        zero = torch.zeros(R, T, base.config.hidden_size, device=where.device, requires_grad=True)
        with torch.enable_grad(), perturbed(layer, zero, where) as clean:
            logp = target_logprobs(_unwrap(model), inputs, self.chunked, compiled=self.compiled_head)
            before = adversary_objective(logp, inputs["is_pos"], inputs["is_tox"], harmful)
            (grad,) = torch.autograd.grad(before, zero)
        delta = fgm_delta(grad, clean["norm"], self.lat)
        with perturbed(layer, delta, where):
            logp = target_logprobs(model, inputs, self.chunked, compiled=self.compiled_head)
        rise = (
            adversary_objective(logp.detach(), inputs["is_pos"], inputs["is_tox"], harmful) - before.detach()
        )
        self._lat_rise = rise if self._lat_rise is None else self._lat_rise + rise
        return logp

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._acc is not None:
            acc = self._acc
            local_n = max(float(acc[STAT_KEYS.index("micro_batches")]), 1.0)
            if self.args.world_size > 1:  # average over processes, not just rank 0's shard
                acc = self.accelerator.reduce(acc.to(self.args.device), reduction="sum")
            s = dict(zip(STAT_KEYS, acc.double().cpu().tolist(), strict=True))
            n = s["micro_batches"]
            logs.update({k: round(s[k] / n, 6) for k in ("train/mle_loss", "train/ul_loss", "train/loss")})
            logs["train/pos_logprob"] = round(s["pos_logprob_sum"] / max(s["n_pos"], 1), 6)
            logs["train/tox_logprob"] = round(s["tox_logprob_sum"] / max(s["n_tox"], 1), 6)
            logs["train/tox_masked_frac"] = round(s["n_ul"] / max(s["n_tox"], 1), 6)
            if self._kl is not None:  # logged apart from train/loss (MLE + λ·UT); this process's mean
                logs["train/kl_benign"] = round(float(self._kl) / local_n, 6)
                self._kl = None
            if self._rr is not None:  # likewise apart from train/loss
                logs["train/reroute"] = round(float(self._rr[0]) / local_n, 6)
                logs["train/retain"] = round(float(self._rr[1]) / local_n, 6)
                self._rr = None
            if self._ablated is not None:  # harmful rows trained with the refusal feature ablated
                logs["train/refat_rows"] = round(float(self._ablated) / local_n, 6)
                self._ablated = None
            if (
                self._lat_rise is not None
            ):  # how far the adversary's step moved its objective, per micro-batch
                logs["train/lat_rise"] = round(float(self._lat_rise) / local_n, 6)
                self._lat_rise = None
            self._acc = None
        super().log(logs, *args, **kwargs)


class MetricsJsonl(TrainerCallback):
    """Appends each training log as one JSON line (train/* keys, step, epoch, lr) on the main process.

    On resume, lines past the checkpoint's step are dropped first, so an interrupted and resumed run
    leaves the same step sequence as an uninterrupted one.
    """

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        self.resume_step = resume_step

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= self.resume_step:
                        keep.append(line)
                except json.JSONDecodeError:  # a torn last line from a kill
                    pass
            self.path.write_text("".join(k + "\n" for k in keep))

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if not state.is_world_process_zero or not logs or "train/loss" not in logs:
            return
        rec = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "lr": logs.get("learning_rate"),
        }
        rec.update({k: v for k, v in logs.items() if k.startswith("train/")})
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
