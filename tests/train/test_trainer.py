"""The trainer end to end on a tiny random-init Llama: outputs, ablations, guards, merge, DPO, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from ptalign.cli import main
from ptalign.config import ConfigError, load_config
from ptalign.errors import UserError
from ptalign.io import read_jsonl
from ptalign.train.collate import TripletCollator, encode_all
from ptalign.train.loss import ptalign_loss
from ptalign.train.trainer import target_logprobs

FAST = [
    "train.epochs=1",
    "train.batch_size=4",
    "train.lr=5e-3",
    "train.warmup_ratio=0",
    "train.max_length=96",
]


def _cfg(model_dir: Path, *extra: str):
    return load_config(None, [f"model.name={model_dir}", *FAST, *extra])


def test_one_run_writes_adapter_metrics_card_and_moves_only_adapter(
    tiny_llama, triplets_file, tmp_path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ptalign import train

    out = tmp_path / "run"
    summary = train.run(_cfg(tiny_llama, "train.lam_benign=2.0"), tmp_path, data=triplets_file, out=out)
    assert summary["steps"] == 2  # 8 triplets / batch 4, one epoch
    assert summary["lam_benign"] == 2.0
    adapter = out / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "tokenizer_config.json").is_file()
    card = (adapter / "README.md").read_text()
    assert "λ = 0.4" in card and "needless refusal) use λ = 2.0" in card and "Optimizer steps: 2" in card
    assert "everyday triplets" not in card  # train.ut_everyday false, but the fixture has none
    recs = list(read_jsonl(out / "train" / "metrics.jsonl"))
    assert [r["step"] for r in recs] == [1, 2]
    for k in (
        "train/mle_loss",
        "train/ul_loss",
        "train/loss",
        "train/pos_logprob",
        "train/tox_logprob",
        "train/tox_masked_frac",
        "epoch",
        "lr",
    ):
        assert k in recs[0] and recs[0][k] == recs[0][k], k  # present and not NaN
    assert 0 < recs[0]["train/tox_masked_frac"] < 1
    assert (out / "train" / "checkpoints").is_dir() and (out / "train" / "summary.json").is_file()
    # LoRA B starts at zero: trained B is non-zero; the base weights are untouched
    weights = load_file(adapter / "adapter_model.safetensors")
    assert any("lora_B" in k and w.abs().sum() > 0 for k, w in weights.items())
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ref = {k: v.clone() for k, v in base.state_dict().items()}
    peft = PeftModel.from_pretrained(base, adapter)
    for k, v in peft.get_base_model().state_dict().items():
        if "lora_" not in k:
            assert torch.equal(v, ref[k.replace(".base_layer", "")]), k


def test_ut_step_lowers_toxic_probability(tiny_llama, tok, make_records) -> None:
    """One AdamW step (the Trainer's optimizer) on λ·UT alone lowers the log-prob of the masked toxic tokens.

    A random-init model spreads p ≈ 1/V over the vocabulary, so UT's gradient p/(1-p) is tiny; AdamW
    normalises its size, which leaves the direction to be tested."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama),
        LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0),
    )
    ex, _ = encode_all(tok, make_records()[:3], 256)
    batch = TripletCollator(tok.pad_token_id)(ex)
    no_pos = torch.zeros_like(batch["is_pos"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    lp0 = target_logprobs(model, batch)
    loss, _ = ptalign_loss(lp0, no_pos, batch["is_tox"], batch["ul_mask"], lam=1.0)
    loss.backward()
    opt.step()
    with torch.no_grad():
        lp1 = target_logprobs(model, batch)
    m = batch["ul_mask"]
    assert float(lp1[m].mean()) < float(lp0.detach()[m].mean()) - 1e-3
    assert (lp1[m] < lp0.detach()[m]).float().mean() > 0.75  # most masked tokens went down, not just the mean


def test_ablations_lambda_zero_and_all_tokens(tiny_llama, tok, triplets_file, tmp_path, make_records) -> None:
    from ptalign import train

    sft = _cfg(tiny_llama, "train.lam=0", "train.lam_benign=0")  # the defaults weigh benign triplets 2.0
    s0 = train.run(sft, tmp_path, data=triplets_file, out=tmp_path / "sft")
    r0 = list(read_jsonl(tmp_path / "sft" / "train" / "metrics.jsonl"))
    assert all(abs(r["train/loss"] - r["train/mle_loss"]) < 1e-6 for r in r0) and s0["lam"] == 0
    train.run(
        # the default cuts benign masks to their first tokens: off here, as `fine` below is the paper's mask
        _cfg(tiny_llama, "train.fine_grained=false", "train.ut_benign_tokens=0"),
        tmp_path,
        data=triplets_file,
        out=tmp_path / "all",
    )
    st = json.loads((tmp_path / "all" / "train" / "summary.json").read_text())["data_stats"]
    # every toxic token gets UT except in the identical and prefix triplets
    fine = encode_all(tok, make_records(), 96)[1]
    assert st["tox_masked_frac"] > fine["tox_masked_frac"]
    assert st["no_ul"] == 2


def test_guards_missing_data_and_no_silent_overwrite(tiny_llama, triplets_file, tmp_path) -> None:
    from ptalign import train

    with pytest.raises(UserError, match="run `ptalign synth` first"):
        train.run(_cfg(tiny_llama), tmp_path, data=tmp_path / "nope.jsonl")
    out = tmp_path / "r"
    train.run(_cfg(tiny_llama), tmp_path, data=triplets_file, out=out)
    with pytest.raises(UserError, match="pass --resume"):
        train.run(_cfg(tiny_llama), tmp_path, data=triplets_file, out=out)
    logged = (out / "train" / "metrics.jsonl").read_bytes()
    again = train.run(_cfg(tiny_llama), tmp_path, data=triplets_file, out=out, resume=True)
    # finished: it resumes from the last checkpoint and trains no new step
    assert again["resumed_from_step"] == 2 and again["steps"] == 2
    assert (out / "train" / "metrics.jsonl").read_bytes() == logged
    # its checkpoints were made with λ 0.4 on these triplets: going on with others is refused, not mixed
    with pytest.raises(UserError, match=r"made with other settings \(train.lam=0.4 \(now 0.6\)\)"):
        train.run(_cfg(tiny_llama, "train.lam=0.6"), tmp_path, data=triplets_file, out=out, resume=True)
    other = tmp_path / "other.jsonl"
    other.write_text(triplets_file.read_text().replace("A", "B", 1))
    with pytest.raises(UserError, match=r"other settings \(data="):
        train.run(_cfg(tiny_llama), tmp_path, data=other, out=out, resume=True)
    assert (out / "train" / "metrics.jsonl").read_bytes() == logged
    # the pipeline keeps a finished training even where resuming would train on (more steps now: as a
    # run launched on another number of GPUs recounts them)
    weights = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    kept = train.run(
        _cfg(tiny_llama, "train.epochs=4"),
        tmp_path,
        data=triplets_file,
        out=out,
        resume=True,
        keep_finished=True,
    )
    assert kept["steps"] == 2 and (out / "train" / "metrics.jsonl").read_bytes() == logged
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == weights


def test_cli_train_then_merge_gives_same_outputs(tiny_llama, triplets_file, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "cli"
    args = ["train", "--data", str(triplets_file), "--model", str(tiny_llama), "--out", str(out)]
    for s in FAST:
        args += ["--set", s]
    assert main(args) == 0
    merged = tmp_path / "merged"
    assert main(["merge", "--adapter", str(out / "adapter"), "--out", str(merged)]) == 0
    assert main(["merge", "--adapter", str(out / "adapter"), "--out", str(merged)]) == 2  # never overwrites
    afile = tmp_path / "a.txt"
    afile.write_text("kept")
    assert (
        main(["merge", "--adapter", str(out / "adapter"), "--out", str(afile)]) == 2
    )  # one line, no traceback
    assert main(["merge", "--adapter", str(tmp_path), "--out", str(tmp_path / "m2")]) == 2  # not an adapter
    assert afile.read_text() == "kept" and not (tmp_path / "m2").exists()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    m = AutoModelForCausalLM.from_pretrained(merged).eval()
    p = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), out / "adapter").eval()
    with torch.no_grad():
        assert torch.allclose(m(ids).logits, p(ids).logits, atol=1e-4)


def test_dpo_baseline_trains_an_adapter(tiny_llama, triplets_file, tmp_path) -> None:
    from ptalign import train

    out = tmp_path / "dpo"
    s = train.run(_cfg(tiny_llama, "train.method=dpo"), tmp_path, data=triplets_file, out=out)
    assert s["method"] == "dpo" and s["steps"] == 2
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    recs = list(read_jsonl(out / "train" / "metrics.jsonl"))
    assert len(recs) == 2 and "train/loss" in recs[0] and "train/dpo_rewards_margins" in recs[0]


def test_bf16_skips_peft_input_casts_with_the_same_numbers(tiny_llama) -> None:
    """Under bf16 autocast, LoRA layers that skip peft's cast of their input to fp32 give the same loss
    and the same adapter gradients, bit for bit (the casts only copied activations)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ptalign.config import TrainConfig
    from ptalign.train import skip_adapter_input_casts, wrap_lora

    ids = torch.randint(5, 200, (2, 24), generator=torch.Generator().manual_seed(0))
    results = []
    for skip in (False, True):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16)
        tcfg = TrainConfig(lora_r=8, lora_dropout=0.0, bf16=skip)  # wrap_lora skips the casts under bf16
        model = wrap_lora(base, tcfg)
        for n, p in model.named_parameters():  # LoRA B starts at zero: give it values so grads reach A
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(len(n)))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        flags = {
            m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")
        }
        results.append((loss.detach(), grads, flags))
    (l0, g0, f0), (l1, g1, f1) = results
    assert f0 == {True} and f1 == {False}
    assert torch.equal(l0, l1)
    assert g0.keys() == g1.keys() and all(torch.equal(g0[n], g1[n]) for n in g0)
    assert next(iter(g0.values())).dtype == torch.float32  # adapters stay fp32 (master weights)
    assert skip_adapter_input_casts(model) == len(
        [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    )


def test_liger_needs_a_gpu_and_the_package(tiny_llama, triplets_file, tmp_path, monkeypatch) -> None:
    """train.liger=true asks transformers' Trainer for Liger's kernels; where they cannot run, one line
    says why before anything loads, and nothing is written."""
    import importlib.util

    from ptalign import train

    cfg = _cfg(tiny_llama, "train.liger=true")
    out = tmp_path / "liger"
    with pytest.raises(UserError, match=r"train.liger=true needs a CUDA GPU") as e:
        train.run(cfg, tmp_path, data=triplets_file, out=out)
    assert "\n" not in str(e.value) and not out.exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))  # an A100's
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "liger_kernel" else real(n, *a)
    )
    with pytest.raises(UserError, match="pip install liger-kernel"):
        train.check_liger(cfg.train)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n == "liger_kernel" else real(n, *a)
    )
    assert train.training_kwargs(cfg.train, out)["use_liger_kernel"] is True


def test_compiled_layers_give_the_eager_loss_and_gradients(tiny_llama, tok, make_records) -> None:
    """compile_layers changes how each decoder layer runs, not what it computes: the same packed
    batches (two lengths, one compiled graph) give the eager loss and LoRA gradients in fp32."""
    from transformers import AutoModelForCausalLM

    from ptalign.config import TrainConfig
    from ptalign.train import compile_layers, wrap_lora

    torch.manual_seed(0)
    model = wrap_lora(
        AutoModelForCausalLM.from_pretrained(tiny_llama), TrainConfig(lora_r=8, lora_dropout=0.0)
    )
    for n, p in model.named_parameters():  # LoRA B starts at zero: give it values so grads reach A
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(len(n)))
    examples, _ = encode_all(tok, make_records(), 96)
    collate = TripletCollator(tok.pad_token_id, packed=True)
    batches = [collate(examples[:3]), collate(examples[3:])]
    assert batches[0]["input_ids"].shape[1] != batches[1]["input_ids"].shape[1]

    def step(batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        lp = target_logprobs(model, batch)
        loss, _ = ptalign_loss(lp, batch["is_pos"], batch["is_tox"], batch["ul_mask"], 0.4)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    eager = [step(b) for b in batches]
    keys = set(model.state_dict())
    assert compile_layers(model) == 2
    for b, (l0, g0) in zip(batches, eager, strict=True):
        l1, g1 = step(b)
        assert torch.allclose(l0, l1, rtol=1e-5)
        assert all(torch.allclose(g0[n], g1[n], rtol=1e-4, atol=1e-7) for n in g0)
    assert set(model.state_dict()) == keys  # what peft saves and resumes is unchanged


def test_train_compile_with_checkpointing_runs_like_eager(tiny_llama, triplets_file, tmp_path) -> None:
    """train.compile=true (here with gradient checkpointing) through the Trainer: the first step logs
    the eager losses, and the adapter has the same safetensors keys. Later steps drift slightly:
    Adam turns last-digit gradient differences into lr-sized updates."""
    from ptalign import train

    runs = {}
    for comp in (False, True):
        out = tmp_path / f"compile_{comp}"
        extra = ["train.compile=true", "train.gradient_checkpointing=true"] if comp else []
        s = train.run(_cfg(tiny_llama, *extra), tmp_path, data=triplets_file, out=out)
        assert s["steps"] == 2
        runs[comp] = (
            list(read_jsonl(out / "train" / "metrics.jsonl")),
            load_file(out / "adapter" / "adapter_model.safetensors"),
        )
    (m0, w0), (m1, w1) = runs[False], runs[True]
    for k in ("train/mle_loss", "train/ul_loss", "train/tox_logprob"):
        assert m0[0][k] == pytest.approx(m1[0][k], rel=1e-5, abs=1e-6), k
        assert m0[1][k] == pytest.approx(m1[1][k], rel=1e-3, abs=1e-5), k
    assert w0.keys() == w1.keys() and any(w1[k].abs().sum() > 0 for k in w1 if "lora_B" in k)


def test_compile_layers_finds_the_decoder_layers(tiny_llama, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    from ptalign.train import compile_layers
    from ptalign.train.dpo import dpo_config

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert compile_layers(model) == model.config.num_hidden_layers
    with pytest.raises(UserError, match="found no decoder layers"):
        compile_layers(torch.nn.Linear(2, 2))
    cfg = _cfg(tiny_llama, "train.compile=true")  # trl is in the [test] extra: no skip
    assert dpo_config(cfg.train, tmp_path).torch_compile is True


def test_logged_metrics_average_the_micro_batches(tiny_llama, tok, make_records, tmp_path) -> None:
    """The trainer sums its metrics on the device and reads them at logging time: what it logs
    equals ptalign_loss's numbers, averaged per micro-batch (losses) or per token (log-probs)."""
    from transformers import AutoModelForCausalLM, TrainerCallback, TrainingArguments

    from ptalign.train.trainer import DualTrainer

    class Keep(TrainerCallback):
        logs: list[dict] = []

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            self.logs.append(dict(logs or {}))

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ex, _ = encode_all(tok, make_records(), 96)
    coll = TripletCollator(tok.pad_token_id)
    batches = [coll(ex[:3]), coll(ex[3:8])]
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    trainer = DualTrainer(model=model, args=args, lam=0.4, callbacks=[Keep()])
    with torch.no_grad():
        parts = []
        for b in batches:
            trainer.compute_loss(model, b)
            lp = target_logprobs(model, b)
            parts.append(ptalign_loss(lp, b["is_pos"], b["is_tox"], b["ul_mask"], 0.4)[1])
    trainer.log({"loss": 0.0})
    got = Keep.logs[-1]
    for k in ("train/mle_loss", "train/ul_loss", "train/loss"):
        assert got[k] == pytest.approx((parts[0][k] + parts[1][k]) / 2, abs=1e-5), k
    n_pos = parts[0]["n_pos"] + parts[1]["n_pos"]
    pos = (
        parts[0]["train/pos_logprob"] * parts[0]["n_pos"] + parts[1]["train/pos_logprob"] * parts[1]["n_pos"]
    ) / n_pos
    assert got["train/pos_logprob"] == pytest.approx(pos, abs=1e-5)
    n_tox = parts[0]["n_tox"] + parts[1]["n_tox"]
    assert got["train/tox_masked_frac"] == pytest.approx(
        (parts[0]["n_ul"] + parts[1]["n_ul"]) / n_tox, abs=1e-6
    )
    assert trainer.tokens_seen == int(batches[0]["n_tokens"]) + int(batches[1]["n_tokens"])
    trainer.log({"loss": 0.0})  # nothing recorded since: no train/* keys, and no error
    assert "train/loss" not in Keep.logs[-1]


def test_dpo_warns_about_ptalign_only_settings(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from ptalign.train import warn_unused

    with caplog.at_level(logging.WARNING):
        assert warn_unused(load_config(None, ["train.method=dpo"]).train) == []
        assert not caplog.records
        got = warn_unused(
            load_config(
                None,
                ["train.method=dpo", "train.lam=0.8", "train.fine_grained=false", "train.ut_benign_tokens=0"],
            ).train
        )
    assert got == ["lam", "fine_grained", "ut_benign_tokens"]
    (rec,) = caplog.records
    assert (
        "does not use train.lam, train.fine_grained, train.ut_benign_tokens" in rec.getMessage()
        and "\n" not in rec.getMessage()
    )


def _lora_and_batch(tiny_llama: Any, tok: Any, make_records: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """The tiny model under a fresh LoRA adapter (B = 0: it is still the base) and one collated batch."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama),
        LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0),
    )
    ex, _ = encode_all(tok, make_records(), 256)
    return model, TripletCollator(tok.pad_token_id)(ex)


def test_kl_benign_is_zero_at_the_base_and_pulls_benign_tokens_back(tiny_llama, tok, make_records) -> None:
    """The retain term: KL(base || tuned) on benign positive tokens, the base being the adapter off.

    With LoRA's B at zero the tuned model is the base: KL = 0 and the log-probs equal the plain path's.
    After a step that moved the adapter, the KL is positive, and a step on the KL alone lowers it."""
    from ptalign.train.trainer import logprobs_and_benign_kl

    model, batch = _lora_and_batch(tiny_llama, tok, make_records)
    assert bool((batch["is_pos"] & batch["is_benign"]).any()) and bool((~batch["is_benign"]).any())
    logp, kl = logprobs_and_benign_kl(model, batch)
    assert float(kl) == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(logp, target_logprobs(model, batch), atol=1e-6)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss, _ = ptalign_loss(logp, batch["is_pos"], batch["is_tox"], batch["ul_mask"], lam=0.4)
    loss.backward()
    opt.step()
    opt.zero_grad()
    _, kl1 = logprobs_and_benign_kl(model, batch)
    assert float(kl1) > 1e-4
    kl1.backward()
    opt.step()
    with torch.no_grad():
        _, kl2 = logprobs_and_benign_kl(model, batch)
    assert float(kl2) < float(kl1)


def test_kl_benign_run_logs_it_and_names_it_in_the_card(tiny_llama, triplets_file, tmp_path) -> None:
    from ptalign import train

    out = tmp_path / "kl"
    summary = train.run(_cfg(tiny_llama, "train.kl_benign=1.0"), tmp_path, data=triplets_file, out=out)
    assert summary["kl_benign"] == 1.0
    recs = list(read_jsonl(out / "train" / "metrics.jsonl"))
    assert recs[0]["train/kl_benign"] == pytest.approx(0.0, abs=1e-6)  # step 1: B = 0, tuned = base
    assert recs[1]["train/kl_benign"] > 0
    assert "KL(base ‖ tuned)" in (out / "adapter" / "README.md").read_text()
    with pytest.raises(ConfigError, match="train.kl_benign=1.0: must be 0 with a full fine-tune"):
        _cfg(tiny_llama, "train.kl_benign=1.0", "train.lora_r=0")


def test_reroute_is_zero_at_the_base_on_retain_and_moves_harmful_states(
    tiny_llama, tok, make_records
) -> None:
    """The rerouting terms (train.reroute): with LoRA's B at zero the tuned model is the base, so
    retain is 0, rerouting about 2 (a state is nearly orthogonal to the random direction), and the
    log-probs equal the plain path's. Steps on the rerouting term alone lower it and move benign states."""
    from ptalign.train.trainer import logprobs_and_reroute, reroute_layers

    model, batch = _lora_and_batch(tiny_llama, tok, make_records)
    assert bool((batch["ul_mask"] & ~batch["is_benign"]).any())
    layers = reroute_layers(model.config.num_hidden_layers)
    assert reroute_layers(30) == (9, 19) and reroute_layers(32) == (9, 20)
    logp, rr, keep = logprobs_and_reroute(model, batch, layers)
    assert 1.5 < float(rr) < 2.5
    assert float(keep) == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(logp, target_logprobs(model, batch), atol=1e-6)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        _, rr, _ = logprobs_and_reroute(model, batch, layers)
        rr.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        _, rr2, keep2 = logprobs_and_reroute(model, batch, layers)
    assert float(rr2) < float(rr) - 0.05 and float(keep2) > 0


def test_reroute_base_pass_stops_after_its_deepest_layer_with_the_same_states(
    tiny_llama, tok, make_records
) -> None:
    """The base's pass for train.reroute ends after the deepest layer it needs: the states it keeps
    are bit for bit the full pass's, and no layer above it (nor the head) runs."""
    from ptalign.train.trainer import _layer_outputs

    model, batch = _lora_and_batch(tiny_llama, tok, make_records)
    ran: list[int] = []
    blocks = model.get_base_model().get_decoder().layers
    handles = [b.register_forward_hook(lambda *_, i=i: ran.append(i)) for i, b in enumerate(blocks)]
    with torch.no_grad():
        last, full = _layer_outputs(model, batch, (0,))
        assert ran == [0, 1] and last is not None
        ran.clear()
        none, early = _layer_outputs(model, batch, (0,), stop=True)
    for h in handles:
        h.remove()
    assert ran == [0] and none is None
    assert torch.equal(early, full)


def test_reroute_run_logs_it_and_names_it_in_the_card(tiny_llama, triplets_file, tmp_path) -> None:
    from ptalign import train

    out = tmp_path / "rr"
    summary = train.run(_cfg(tiny_llama, "train.reroute=1.0"), tmp_path, data=triplets_file, out=out)
    assert summary["reroute"] == 1.0
    recs = list(read_jsonl(out / "train" / "metrics.jsonl"))
    assert recs[0]["train/retain"] == pytest.approx(0.0, abs=1e-6)  # step 1: tuned = base
    assert recs[-1]["train/reroute"] < recs[0]["train/reroute"]
    assert "representation rerouting (RMU's terms)" in (out / "adapter" / "README.md").read_text()
    with pytest.raises(ConfigError, match="train.reroute=1.0: must be 0 with a full fine-tune"):
        _cfg(tiny_llama, "train.reroute=1.0", "train.lora_r=0")
    with pytest.raises(ConfigError, match="one retain term at a time"):
        _cfg(tiny_llama, "train.reroute=1.0", "train.kl_benign=1.0")
    with pytest.raises(ConfigError, match="train.reroute_retain=4.0: must be 1 unless train.reroute > 0"):
        _cfg(tiny_llama, "train.reroute_retain=4.0")
    # the retain multiplier reaches the loss: same data and seed, other weights, and the card says so
    out50 = tmp_path / "rr50"
    cfg50 = _cfg(tiny_llama, "train.reroute=1.0", "train.reroute_retain=50")
    assert train.run(cfg50, tmp_path, data=triplets_file, out=out50)["reroute_retain"] == 50.0
    assert "retain term on benign helpful ones (× 50.0)" in (out50 / "adapter" / "README.md").read_text()
    weights = [load_file(o / "adapter" / "adapter_model.safetensors") for o in (out, out50)]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_recovery_run_trains_more_positive_tokens_and_names_it_in_the_card(
    tiny_llama, triplets_file, tmp_path
) -> None:
    from ptalign import train

    runs = {}
    for share in (0.0, 1.0):
        out = tmp_path / f"rec{share}"
        runs[share] = train.run(
            _cfg(tiny_llama, f"train.recovery={share}"), tmp_path, data=triplets_file, out=out
        )
    on = runs[1.0]
    assert (
        on["recovery"] == 1.0
        and on["data_stats"]["recovery"] >= 3
        and runs[0.0]["data_stats"]["recovery"] == 0
    )
    assert on["data_stats"]["tokens"] > runs[0.0]["data_stats"]["tokens"]
    assert "safety recovery" in (tmp_path / "rec1.0" / "adapter" / "README.md").read_text()
    assert "safety recovery" not in (tmp_path / "rec0.0" / "adapter" / "README.md").read_text()


def test_bf16_auto_follows_native_bf16(monkeypatch, tmp_path) -> None:
    from ptalign.config.sections import TrainConfig
    from ptalign.train import setup

    for native in (True, False):
        monkeypatch.setattr(setup, "native_bf16", lambda native=native: native)
        assert setup.bf16_on(TrainConfig(bf16="auto")) is native
        assert setup.training_kwargs(TrainConfig(bf16="auto"), tmp_path)["bf16"] is native
        assert setup.bf16_on(TrainConfig(bf16=True)) is True
        assert setup.bf16_on(TrainConfig(bf16=False)) is False


def test_batches_are_collated_in_workers_on_a_gpu_only(monkeypatch, tmp_path) -> None:
    import torch

    from ptalign.config.sections import TrainConfig
    from ptalign.train import setup

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))  # an A100's
    for gpu, workers in ((False, 0), (True, 2)):
        monkeypatch.setattr(torch.cuda, "is_available", lambda gpu=gpu: gpu)
        kw = setup.training_kwargs(TrainConfig(), tmp_path)
        assert kw["dataloader_num_workers"] == workers and kw.get("use_cpu", False) is not gpu


def test_training_with_collating_workers_is_the_same_training(
    tiny_llama, triplets_file, tmp_path, monkeypatch
) -> None:
    """What a GPU run does (two collating workers), here on the CPU: the same metrics line for line."""
    from ptalign import train
    from ptalign.train import recipe, setup

    used = []
    for workers in (0, 2):

        def kw(tcfg, run, workers=workers):
            used.append(workers)
            return {**setup.training_kwargs(tcfg, run), "dataloader_num_workers": workers}

        monkeypatch.setattr(recipe, "training_kwargs", kw)
        train.run(_cfg(tiny_llama), tmp_path, data=triplets_file, out=tmp_path / f"w{workers}")
    metrics = [(tmp_path / f"w{w}" / "train" / "metrics.jsonl").read_text() for w in (0, 2)]
    assert used == [0, 2] and metrics[0] and metrics[0] == metrics[1]


def test_train_attn_resolves_and_load_base_applies_it(tiny_llama, monkeypatch) -> None:
    from ptalign.config.sections import TrainConfig
    from ptalign.train import setup

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert setup.attn_implementation(TrainConfig(attn="auto")) == "eager"
    assert setup.attn_implementation(TrainConfig()) == "eager"  # the preset's default, auto, on a CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert setup.attn_implementation(TrainConfig(attn="auto")) == "sdpa"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for attn in ("auto", "sdpa", "eager"):
        model, _ = setup.load_base(_cfg(tiny_llama, f"train.attn={attn}"))
        assert model.config._attn_implementation == ("sdpa" if attn == "sdpa" else "eager")
    with pytest.raises(ConfigError, match="train.attn"):
        _cfg(tiny_llama, "train.attn=flash")


def test_card_names_the_everyday_triplets_trained_without_ut() -> None:
    from ptalign.train.card import render_card

    info = {"train": {"lam": 0.4, "ut_everyday": False}, "data_stats": {"everyday": 3}}
    assert "its 3 everyday triplets (plain tasks) train their helpful answer only" in render_card(info)
    assert "everyday" not in render_card({**info, "train": {"lam": 0.4, "ut_everyday": True}})
    assert "everyday" not in render_card({**info, "data_stats": {"everyday": 0}})
