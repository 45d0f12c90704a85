"""kill -9 in the middle of training, then --resume: same optimizer steps and weights as an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ptalign.cli import main
from ptalign.io import HAZARD_META, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow

SETS = ["train.epochs=1", "train.batch_size=2", "train.save_steps=2", "train.lr=5e-3", "train.max_length=96"]
STEPS = 8  # 16 triplets / batch 2


def _args(data: Path, model: Path, out: Path) -> list[str]:
    args = ["train", "--data", str(data), "--model", str(model), "--out", str(out)]
    for s in SETS:
        args += ["--set", s]
    return args


# Runs the real CLI in a child process that SIGKILLs itself while computing step 6, after the
# checkpoints of steps 2 and 4 are on disk: nothing gets to clean up, as with a `kill -9`.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from ptalign.train.trainer import DualTrainer
    step = DualTrainer.training_step
    def training_step(self, *a, **k):
        if self.state.global_step == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        return step(self, *a, **k)
    DualTrainer.training_step = training_step
    from ptalign.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_kill9_then_resume_matches_uninterrupted(tiny_llama, tmp_path, make_records) -> None:
    data = tmp_path / "triplets.jsonl"
    write_jsonl(data, make_records(16), meta=HAZARD_META)
    killed = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, *_args(data, tiny_llama, killed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    ckpts = sorted(p.name for p in (killed / "train" / "checkpoints").iterdir())
    assert ckpts == ["checkpoint-2", "checkpoint-4"]
    assert not (killed / "adapter").exists()
    assert [r["step"] for r in read_jsonl(killed / "train" / "metrics.jsonl")] == [1, 2, 3, 4, 5]

    assert main(_args(data, tiny_llama, killed) + ["--resume"]) == 0
    whole = tmp_path / "whole"
    assert main(_args(data, tiny_llama, whole)) == 0

    for d in (killed, whole):
        summary = json.loads((d / "train" / "summary.json").read_text())
        assert summary["steps"] == STEPS
        assert [r["step"] for r in read_jsonl(d / "train" / "metrics.jsonl")] == list(range(1, STEPS + 1))
    assert json.loads((killed / "train" / "summary.json").read_text())["resumed_from_step"] == 4
    a = load_file(killed / "adapter" / "adapter_model.safetensors")
    b = load_file(whole / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
