"""Two-process DDP on CPU (gloo) through torchrun, the launcher `accelerate launch` uses on GPUs.

(`accelerate launch` on CPU hands multi-process jobs to mpirun; torchrun needs nothing extra.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


def test_two_process_ddp_on_cpu(tiny_llama, tmp_path, make_records) -> None:
    data = tmp_path / "triplets.jsonl"
    write_jsonl(data, make_records(12), meta=HAZARD_META)
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        "-m", "ptalign.cli", "train", "--data", str(data), "--model", str(tiny_llama), "--out", str(out),
        "--set", "train.epochs=2", "--set", "train.batch_size=2", "--set", "train.max_length=96", "--set", "train.lr=5e-3",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-3000:]
    summary = json.loads((out / "train" / "summary.json").read_text())
    # 12 triplets shared by 2 processes at 2 per step: 3 steps per epoch (a single process would take 6)
    assert summary["steps"] == 6
    recs = list(read_jsonl(out / "train" / "metrics.jsonl"))
    assert [r["step"] for r in recs] == list(range(1, 7))  # one writer (rank 0), one line per step
    assert all(r["train/loss"] == r["train/loss"] for r in recs)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), out / "adapter")
    assert sum(p.abs().sum() for n, p in model.named_parameters() if "lora_B" in n) > 0
