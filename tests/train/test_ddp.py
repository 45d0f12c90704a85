"""Two-process DDP on CPU (gloo) through torchrun, the launcher `accelerate launch` uses on GPUs.

(`accelerate launch` on CPU hands multi-process jobs to mpirun; torchrun needs nothing extra.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM

from ptalign.io import HAZARD_META, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(data: Path, model: Path, out: Path, nproc: int, *sets: str) -> None:
    """`ptalign train` in a subprocess: under torchrun with nproc processes (gloo, CPU), or plain when nproc == 1."""
    launcher = [
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(free_port()),
    ]
    cmd = [
        sys.executable, *(launcher if nproc > 1 else []),
        "-m", "ptalign.cli", "train", "--data", str(data), "--model", str(model), "--out", str(out),
        "--set", "train.epochs=2", "--set", "train.max_length=96", "--set", "train.lr=5e-3",
    ]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-3000:]


def test_two_process_ddp_on_cpu(tiny_llama, tmp_path, make_records) -> None:
    data = tmp_path / "triplets.jsonl"
    write_jsonl(data, make_records(12), meta=HAZARD_META)
    out = tmp_path / "ddp"
    # defaults otherwise: length grouping (train.lora_dropout already defaults to 0)
    _train(data, tiny_llama, out, 2, "train.batch_size=2")
    summary = json.loads((out / "train" / "summary.json").read_text())
    # 12 triplets shared by 2 processes at 2 per step: 3 steps per epoch (a single process would take 6)
    assert summary["steps"] == 6
    recs = list(read_jsonl(out / "train" / "metrics.jsonl"))
    assert [r["step"] for r in recs] == list(range(1, 7))  # one writer (rank 0), one line per step
    assert all(r["train/loss"] == r["train/loss"] for r in recs)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), out / "adapter")
    assert sum(p.abs().sum() for n, p in model.named_parameters() if "lora_B" in n) > 0


def _grad_norms(out: Path) -> list[tuple[int, float]]:
    """(step, grad_norm) from the last checkpoint's trainer_state.json (metrics.jsonl keeps train/* only)."""
    ckpts = sorted(
        (out / "train" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])
    )
    state = json.loads((ckpts[-1] / "trainer_state.json").read_text())
    return [(h["step"], h["grad_norm"]) for h in state["log_history"] if "grad_norm" in h]


def test_ddp_matches_one_process_with_grad_accum(tiny_llama, tmp_path, make_records) -> None:
    """2 processes × batch 2 gives the same per-step losses, gradients and final LoRA weights as
    1 process × batch 2 × gradient accumulation 2, on the same data.

    What makes the two runs the same computation (and why not 1 process × batch 4):
    - The loss is a per-token mean over each *micro-batch* (loss.py), and both DDP (gradient all-reduce
      mean) and the Trainer (loss / grad_accum) average micro-batch losses. One batch of 4 would pool
      the tokens of all 4 triplets into one mean: a different objective, not a rounding difference.
    - Data order: with train.group_by_length the LengthBucketSampler cuts batches of
      per-device batch × grad_accum (2 under DDP, 4 here), so the step's triplets would differ.
      Plain random sampling draws one seeded permutation; accelerate hands consecutive batches of 2
      to rank 0, rank 1, which is exactly the order of the two accumulated micro-batches.
    - Dropout: each process would draw its own LoRA dropout masks, so train.lora_dropout=0.
    Measured bit-identical on this CPU (torch 2.13, gloo); the tolerances below leave room only for
    float summation order ((g0 + g1) / 2 across ranks vs g0 / 2 + g1 / 2) elsewhere. For scale: batch 4
    instead of 2 × 2 moves the step losses by ~2e-4 relative and the grad norms by ~3 %; length grouping
    or dropout left on move the weights by ~2e-2.
    """
    from safetensors.torch import load_file

    data = tmp_path / "triplets.jsonl"
    write_jsonl(data, make_records(12), meta=HAZARD_META)
    same = ("train.batch_size=2", "train.lora_dropout=0", "train.group_by_length=false")
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    _train(data, tiny_llama, ddp, 2, *same)
    _train(data, tiny_llama, one, 1, *same, "train.grad_accum=2")

    for out in (ddp, one):
        assert json.loads((out / "train" / "summary.json").read_text())["steps"] == 6
    m_ddp = list(read_jsonl(ddp / "train" / "metrics.jsonl"))
    m_one = list(read_jsonl(one / "train" / "metrics.jsonl"))
    assert [r["step"] for r in m_ddp] == [r["step"] for r in m_one] == list(range(1, 7))
    keys = sorted(k for k in m_one[0] if k.startswith("train/") or k in ("lr", "epoch"))
    assert keys == sorted(k for k in m_ddp[0] if k.startswith("train/") or k in ("lr", "epoch"))
    for a, b in zip(m_ddp, m_one, strict=True):
        for k in keys:
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), (a["step"], k, a[k], b[k])
    # the loss moved: the runs really trained (equal constants would prove nothing)
    assert m_one[0]["train/loss"] != m_one[-1]["train/loss"]

    # gradients: the clipped-to global norm the Trainer logs each step (Adam's updates barely depend
    # on the gradient's scale, so equal weights alone would not catch a sum instead of a mean)
    g_ddp, g_one = _grad_norms(ddp), _grad_norms(one)
    assert [s for s, _ in g_ddp] == [s for s, _ in g_one] == list(range(1, 7))
    for (s, a), (_, b) in zip(g_ddp, g_one, strict=True):
        assert b == pytest.approx(a, rel=1e-5), (s, a, b)

    w_ddp = load_file(ddp / "adapter" / "adapter_model.safetensors")
    w_one = load_file(one / "adapter" / "adapter_model.safetensors")
    assert w_ddp.keys() == w_one.keys() and any("lora_B" in k for k in w_one)
    diff = {k: (w_ddp[k] - w_one[k]).abs().max().item() for k in w_one}
    worst = max(diff, key=diff.get)
    assert diff[worst] < 1e-5, f"LoRA weights differ: {worst} max |diff| {diff[worst]:.3g}"
    assert max(w_one[k].abs().max().item() for k in w_one if "lora_B" in k) > 1e-3  # B left its zero init
