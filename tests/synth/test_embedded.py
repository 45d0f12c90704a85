"""Synthesis on the real embedded model (SmolLM2-135M via llama.cpp), small settings.

The uninterrupted reference run is also checked against what the gates promise. The kill test sends SIGKILL to a real `ptalign synth` subprocess twice (mid-instructions, then
mid-pairs), reruns it to the end and compares every data file byte for byte with an uninterrupted
run in another directory (stats.json: all but its timing block).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ptalign.io import read_jsonl
from ptalign.synth import gates

pytestmark = pytest.mark.slow

TINY = {
    "synth": {
        "domains": ["violence", "privacy"],
        "topics_per_domain": 1,
        "instructions_per_topic": 2,
        "benign_share": 0.5,
        "candidates": 1,
        "max_attempts": 2,
        "constraints_per_domain": 0,  # the seed constraints only: fewer calls
        "max_new_tokens": 40,
        "list_max_new_tokens": 64,
        "target_triplets": 0,
        "chunk": 2,
    },
    "backend": {"n_threads": 1},  # one thread: no spin barrier to stall on a shared CPU
}


def _write_cfg(path: Path) -> Path:
    path.write_text(yaml.safe_dump(TINY))
    return path


def _check_real_run(data: Path) -> None:
    """What the stages and gates promise, on the real model's output."""
    stats = json.loads((data / "stats.json").read_text())
    insts = list(read_jsonl(data / "instructions.jsonl"))
    trips = list(read_jsonl(data / "triplets.jsonl"))
    pair_rej = [r for r in read_jsonl(data / "rejected.jsonl") if r["stage"] == "pairs"]
    assert stats["synth/topics"] >= 2 and insts
    # every instruction ends as a triplet or a dropped item with a reason; the jailbreak-wrapped copies
    # (synth.attack_share, records with `attack`) repeat a triplet and are not items of their own
    plain = [t for t in trips if not t.get("attack")]
    assert len(plain) + len(pair_rej) == len(insts) == stats["synth/pairs_processed"]
    assert all(r["reason"] for r in pair_rej)
    for t in trips:
        if t["kind"] == "harmful":
            assert gates.pos_safe_reason(t["pos"]) is None and gates.tox_reason(t["tox"]) is None
        else:
            assert gates.benign_pos_reason(t["pos"]) is None and gates.refuses_early(t["tox"])
        assert "inner thought" not in t["pos"].lower()
        assert t["polarity"] >= 0.15
    assert stats["timing"]["synth/new_tokens"] > 0 and stats["timing"]["synth/tokens_per_s"] > 0


def _synth(cfg: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "ptalign.cli", "synth", "--config", str(cfg), "--out", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(p: subprocess.Popen, ready, timeout: float = 300) -> bool:
    """SIGKILL p as soon as ready() holds; False if p ended first."""
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < timeout:
        if ready():
            p.send_signal(signal.SIGKILL)
            p.wait()
            return True
        time.sleep(0.02)
    p.wait()
    return False


def _pairs_started(data: Path) -> bool:
    f = data / "rejected.jsonl"
    return (data / "triplets.jsonl").exists() or (f.exists() and b'"stage": "pairs"' in f.read_bytes())


def test_kill9_then_rerun_gives_the_same_files(tmp_path):
    cfg = _write_cfg(tmp_path / "tiny.yaml")
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert _synth(cfg, ref).wait() == 0

    data = cut / "data"
    killed = [
        _kill_when(_synth(cfg, cut), lambda: (data / "instructions.jsonl").exists()),
        _kill_when(_synth(cfg, cut), lambda: _pairs_started(data)),
    ]
    assert killed[0], "the run ended before it could be killed mid-instructions"
    assert killed[1], "the run ended before it could be killed mid-pairs"
    p = _synth(cfg, cut)
    assert p.wait() == 0, p.stderr.read().decode()[-2000:]

    _check_real_run(ref / "data")
    names = sorted(f.name for f in (ref / "data").iterdir())
    assert names == sorted(f.name for f in data.iterdir())
    for name in names:
        if name == "stats.json":
            a, b = (json.loads((d / "data" / name).read_text()) for d in (ref, cut))
            a.pop("timing"), b.pop("timing")
            assert a == b
        else:
            assert (ref / "data" / name).read_bytes() == (data / name).read_bytes(), name
