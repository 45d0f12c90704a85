"""`ptalign run` end to end on the embedded model with a tiny config, SIGKILLed at random moments.

The reliability test kills a real `ptalign run` subprocess at 5 random moments, resumes after each
kill, and checks that the final files equal an uninterrupted run's: triplets byte for byte, the same
optimizer steps logged once each with the same metrics, the same adapter tensors, the same eval records
and summaries (timings aside), a valid manifest with every stage done. Bad inputs end with one
line on stderr and leave earlier results intact.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ptalign.cli import main
from ptalign.io import read_jsonl

pytestmark = pytest.mark.slow

TINY = {
    "synth": {
        "domains": ["violence", "privacy"],
        "topics_per_domain": 1,
        "instructions_per_topic": 2,
        "benign_share": 0.5,
        "candidates": 1,
        "max_attempts": 2,
        "constraints_per_domain": 0,
        "max_new_tokens": 40,
        "list_max_new_tokens": 64,
        "target_triplets": 0,
        "chunk": 2,
    },
    "backend": {"n_threads": 1},
    "train": {"epochs": 2, "batch_size": 2, "max_length": 128, "save_steps": 1, "lr": 1e-3},
    "eval": {
        "evals": ["hhh", "asr", "overrefusal", "polarity"],
        "attacks": ["direct", "roleplay"],
        "max_harmful": 3,
        "max_safe": 3,
        "max_hhh": 4,
        "max_new_tokens": 12,
        "bootstrap": 20,
        "judge_max": 0,
    },
}


def _cfg(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY))
    return p


def _run(cfg: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ptalign.cli", "run", "--config", str(cfg), "--out", str(out), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _errors(capsys) -> list[str]:
    """The error lines on stderr (progress bars of model loading may come before them)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("ptalign: error")]


def _steps(run: Path) -> list[int]:
    return [r["step"] for r in read_jsonl(run / "train" / "metrics.jsonl") if "train/loss" in r]


# keys that hold wall-clock measurements (or moments), which differ between any two runs:
# *_s / *_ms / *_sec(s), *seconds*, *time*/*timing*, elapsed, duration, latency, *_per_s, *_at
_TIMING_KEY = re.compile(r"(_s|_ms|_secs?|_per_s|_at)$|seconds|time|elapsed|duration|latency", re.I)


def _normalise(obj, runs: tuple[Path, ...]):
    """obj without timing keys (at any depth), with the run directories' paths replaced by <RUN>
    (the clean and the resumed run live in different directories; nothing else may differ)."""
    if isinstance(obj, dict):
        return {k: _normalise(v, runs) for k, v in obj.items() if not _TIMING_KEY.search(str(k))}
    if isinstance(obj, list):
        return [_normalise(v, runs) for v in obj]
    if isinstance(obj, str):
        for r in runs:
            for form in sorted({str(r), str(r.resolve())}, key=len, reverse=True):
                obj = obj.replace(form, "<RUN>")
    return obj


def _jsonl_by_id(path: Path, runs: tuple[Path, ...]) -> dict[str, list[str]]:
    """id → the file's records with that id (normalised, canonical JSON, sorted): line order is free,
    a record written twice (e.g. once before a kill and again after) shows as a longer list."""
    got: dict[str, list[str]] = {}
    for i, rec in enumerate(read_jsonl(path, strict=True)):
        key = str(rec["id"]) if "id" in rec else f"<no id #{i}>"
        got.setdefault(key, []).append(json.dumps(_normalise(rec, runs), sort_keys=True))
    return {k: sorted(v) for k, v in got.items()}


# eval/**/settings.json is the eval's resume fingerprint, not a result: its model identity holds the
# adapter's path and mtime, which differ between any two runs by design
_NOT_RESULTS = {"settings.json"}


def _assert_same_eval(ref: Path, cut: Path) -> None:
    """Every eval/**/*.jsonl holds the same records by id (every field but timings), and every other
    eval/**/*.json (summary.json, items.json, ...) the same content minus its `meta` (engine, paths,
    timings). Generic on purpose: file names and fields are the eval module's to choose."""
    runs = (ref, cut)

    def listing(run: Path, kind: str) -> list[Path]:
        return sorted(
            p.relative_to(run / "eval")
            for p in (run / "eval").rglob(f"*.{kind}")
            if p.name not in _NOT_RESULTS
        )

    files = {kind: listing(ref, kind) for kind in ("jsonl", "json")}
    for kind, rels in files.items():
        got = listing(cut, kind)
        assert got == rels, f"eval/**/*.{kind} differ: clean {rels}, resumed {got}"
    assert files["jsonl"] and any(r.name == "summary.json" for r in files["json"])
    for rel in files["jsonl"]:
        a, b = _jsonl_by_id(ref / "eval" / rel, runs), _jsonl_by_id(cut / "eval" / rel, runs)
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        assert not only_a and not only_b, (
            f"eval/{rel}: {len(only_a)} ids only in the clean run, {len(only_b)} only in the resumed one, "
            f"e.g. clean {a[only_a[0]] if only_a else '-'} resumed {b[only_b[0]] if only_b else '-'}"
        )
        diff = [k for k in a if a[k] != b[k]]
        assert not diff, (
            f"eval/{rel}: {len(diff)} of {len(a)} records differ, e.g. {diff[0]}: clean {a[diff[0]]} resumed {b[diff[0]]}"
        )
    for rel in files["json"]:
        a, b = (json.loads((run / "eval" / rel).read_text()) for run in runs)
        if isinstance(a, dict) and isinstance(b, dict):
            a, b = ({k: v for k, v in d.items() if k != "meta"} for d in (a, b))
        a, b = _normalise(a, runs), _normalise(b, runs)
        keys = [k for k in a.keys() | b.keys() if a.get(k) != b.get(k)] if isinstance(a, dict) else []
        assert a == b, f"eval/{rel} differs (meta and timings aside) at {sorted(keys)[:8]}"


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> tuple[Path, Path, float]:
    """(config, run dir, seconds) of one uninterrupted tiny `ptalign run`, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("clean")
    cfg, ref = _cfg(tmp), tmp / "ref"
    t0 = time.time()
    p = _run(cfg, ref)
    assert p.wait() == 0, p.stderr.read().decode()[-3000:]
    return cfg, ref, time.time() - t0


def test_kill9_at_random_moments_then_resume(tmp_path, clean_run):
    cfg, ref, clean_seconds = clean_run
    cut = tmp_path / "cut"

    rng = random.Random(1234)
    kills = 0
    for _attempt in range(12):  # at least 5 kills that land mid-run
        # --resume once a manifest is there: a kill before it leaves nothing to resume (refused)
        p = _run(cfg, cut, *(["--resume"] if (cut / "manifest.json").exists() else []))
        # each attempt gets 6-20 % of a clean run (start-up included), shrinking by 0.7 with every kill,
        # so 5 kills land before the end (at 10-30 % the resumed attempts, which skip finished work,
        # sometimes finished after 4; at a flat 6-20 % one finished after 3 on a fresh Zen 5 VM, fp32
        # or bf16 training alike)
        delay = rng.uniform(0.06, 0.20) * clean_seconds * 0.7**kills
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills += 1
            # the manifest is rewritten atomically: valid JSON at any kill
            if (cut / "manifest.json").exists():
                json.loads((cut / "manifest.json").read_text())
        else:
            assert p.returncode == 0, p.stderr.read().decode()[-3000:]
            break
        if kills >= 5:
            break
    assert kills >= 5, f"only {kills} kills landed mid-run"
    p = _run(cfg, cut, "--resume")
    assert p.wait() == 0, p.stderr.read().decode()[-3000:]

    a, b = (ref / "data" / "triplets.jsonl"), (cut / "data" / "triplets.jsonl")
    assert a.read_bytes() == b.read_bytes()
    ref_steps, cut_steps = _steps(ref), _steps(cut)
    assert ref_steps and cut_steps == ref_steps, (ref_steps, cut_steps)  # no step lost or repeated
    # the resumed run's results equal the clean run's: adapter tensors bit for bit (same data, seed and
    # steps, restored optimizer/scheduler/RNG state), every logged metric of every step, every eval output
    wa = load_file(ref / "adapter" / "adapter_model.safetensors")
    wb = load_file(cut / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and wa
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, (
        f"{len(differ)} adapter tensors differ, e.g. {differ[0]}: max |diff| {(wa[differ[0]] - wb[differ[0]]).abs().max().item():.3g}"
    )
    ma = [_normalise(r, (ref, cut)) for r in read_jsonl(ref / "train" / "metrics.jsonl")]
    mb = [_normalise(r, (ref, cut)) for r in read_jsonl(cut / "train" / "metrics.jsonl")]
    assert ma == mb, [(x, y) for x, y in zip(ma, mb, strict=False) if x != y][:1] or (len(ma), len(mb))
    _assert_same_eval(ref, cut)
    man = json.loads((cut / "manifest.json").read_text())
    assert all(man["stages"][s]["status"] == "done" for s in ("synth", "train", "eval", "report"))
    assert Path(man["base_model_path"], "config.json").exists()
    # the synthesis engine and why, as synth chose and recorded it: no vLLM here, so llama.cpp on the GGUF
    assert man["synth_backend"]["used"] == "llamacpp" and man["synth_backend"]["reason"].startswith("auto: ")
    assert (cut / "adapter" / "adapter_config.json").exists()
    assert (cut / "report.html").stat().st_size > 1000
    card = (cut / "adapter" / "README.md").read_text()  # refreshed with this adapter's evaluation
    assert "Not evaluated yet" not in card and json.loads((cut / "eval" / "comparison.json").read_text())
    for side in ("base", "aligned"):
        assert json.loads((cut / "eval" / side / "summary.json").read_text())

    # --from-stage moves the stage's outputs aside (nothing lost) and redoes it
    report_before = (cut / "report.html").read_bytes()
    made_with = {n: (cut / n).read_bytes() for n in ("config.yaml", "manifest.json")}
    assert main(["run", "--config", str(cfg), "--out", str(cut), "--from-stage", "report"]) == 0
    moved = list((cut / "history").glob("*-from-report/report.html"))
    assert len(moved) == 1 and moved[0].read_bytes() == report_before
    # with the config and manifest that made it, as they were before this call rewrote them
    assert {n: (moved[0].parent / n).read_bytes() for n in made_with} == made_with


def test_from_stage_train_resumes_the_base_evaluation_and_redoes_it_when_settings_change(tmp_path, clean_run):
    """--from-stage train moves eval/ aside; the base side, made with the same model and settings,
    comes back and is resumed (the same records, nothing generated or judged again) while the aligned
    side is made anew; with another generation setting the base side is generated again."""
    import shutil

    cfg, ref, _ = clean_run
    cut = tmp_path / "cut"
    shutil.copytree(ref, cut)
    p = _run(cfg, cut, "--from-stage", "train", "--set", "train.lam=0.6")
    assert p.wait() == 0, p.stderr.read().decode()[-3000:]
    base = json.loads((cut / "eval" / "base" / "summary.json").read_text())
    assert base["meta"]["timings"]["asr_new"] == 0 and base["meta"]["timings"]["overrefusal_new"] == 0
    assert not [k for k in base["meta"]["timings"] if "_judge_" in k]  # no verdict made again
    for name in ("asr.jsonl", "asr_verdicts.jsonl", "overrefusal.jsonl", "hhh.jsonl"):
        assert _jsonl_by_id(cut / "eval" / "base" / name, (ref, cut)) == _jsonl_by_id(
            ref / "eval" / "base" / name, (ref, cut)
        )
    aligned = json.loads((cut / "eval" / "aligned" / "summary.json").read_text())
    assert aligned["meta"]["timings"]["asr_new"] > 0  # the new adapter's replies are generated
    assert (cut / "eval" / "comparison.json").exists()
    # another generation setting: the base side is not reused
    p = _run(cfg, cut, "--from-stage", "train", "--set", "train.lam=0.6", "--set", "eval.max_new_tokens=10")
    assert p.wait() == 0, p.stderr.read().decode()[-3000:]
    base = json.loads((cut / "eval" / "base" / "summary.json").read_text())
    assert base["meta"]["timings"]["asr_new"] > 0


def test_sweep_trains_and_evaluates_each_point_and_reports_it(clean_run, capsys):
    cfg, ref, _ = clean_run
    # lam_benign null: λ on every triplet, so the λ = 0 point is plain MLE (the defaults weigh benign ones 2.0)
    over = ["--config", str(cfg), "--set", f"run_dir={ref}", "--set", "train.lam_benign=null"]
    assert main(["sweep", "lambda=0.0,2.0", *over]) == 0
    rows = json.loads((ref / "sweeps" / "lambda" / "summary.json").read_text())
    assert [r["value"] for r in rows] == [0.0, 2.0]
    assert all("eval/asr" in r and "eval/overrefusal" in r for r in rows)
    last = {}
    for v in ("0.0", "2.0"):
        point = ref / "sweeps" / "lambda" / f"lambda_{v}"
        assert (point / "adapter" / "adapter_config.json").exists()
        assert json.loads((point / "adapter" / "ptalign_train.json").read_text())["lam"] == float(v)
        last[v] = [r for r in read_jsonl(point / "train" / "metrics.jsonl") if "train/loss" in r][-1]
    # λ = 0 is positive-only SFT: its loss is its MLE; λ = 2 adds twice the unlikelihood term
    assert last["0.0"]["train/loss"] == pytest.approx(last["0.0"]["train/mle_loss"], abs=1e-6)
    assert last["2.0"]["train/loss"] > last["2.0"]["train/mle_loss"] + 1e-3
    # a second call reuses the trained points (nothing retrained) and the report shows the sweep
    points = [ref / "sweeps" / "lambda" / f"lambda_{v}" for v in ("0.0", "2.0")]

    def trained() -> list[tuple[int, bytes]]:
        return [
            (
                (p / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns,
                (p / "train" / "metrics.jsonl").read_bytes(),
            )
            for p in points
        ]

    kept = trained()
    assert main(["sweep", "lambda=0.0,2.0", *over]) == 0
    assert trained() == kept
    # a call with one of the values keeps the other's row
    assert main(["sweep", "lambda=2.0", *over]) == 0
    assert [r["value"] for r in json.loads((ref / "sweeps" / "lambda" / "summary.json").read_text())] == [
        0.0,
        2.0,
    ]
    assert main(["report", str(ref), "--config", str(cfg)]) == 0
    assert "sweep" in (ref / "report.html").read_text().lower()


def test_missing_model_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--set", f"model.name={tmp_path / 'no-such-model'}"]) == 2
    err = _errors(capsys)
    assert len(err) == 1 and "no-such-model" in err[0]


def test_corrupt_triplets_line_is_named_and_file_kept(tmp_path, capsys):
    data = tmp_path / "triplets.jsonl"
    good = json.dumps({"id": "a", "instruction": "Hi", "pos": "Hello!", "tox": "Go away.", "kind": "benign"})
    data.write_text(good + "\n{broken\n" + good.replace('"a"', '"b"') + "\n")
    before = data.read_bytes()
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "out")]) == 2
    err = _errors(capsys)
    assert len(err) == 1 and "triplets.jsonl:2: corrupt JSONL line" in err[0]
    assert data.read_bytes() == before


def test_train_out_reads_that_runs_triplets(tmp_path, capsys, monkeypatch):
    """`train --out RUN` trains on RUN/data/triplets.jsonl, as `synth --out RUN` wrote it (README's
    7B recipe), not on the config's run_dir (runs/quick)."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "7b"
    (run / "data").mkdir(parents=True)
    (run / "data" / "triplets.jsonl").write_text("{broken\n")  # read at once, before any model loads
    assert main(["train", "--out", str(run)]) == 2
    err = _errors(capsys)
    assert len(err) == 1 and f"{run / 'data' / 'triplets.jsonl'}:1: corrupt JSONL line" in err[0]
    assert not (tmp_path / "runs" / "quick").exists()


@pytest.fixture
def tiny_quota_dir(tmp_path):
    """A 256 KiB tmpfs: a disk that fills up (needs root; skipped where mounting is not allowed)."""
    d = tmp_path / "quota"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_disk_full_is_one_line_and_keeps_earlier_results(tiny_quota_dir, tiny_model_dir, tmp_path, capsys):
    model = tiny_model_dir("llama")
    data = tmp_path / "triplets.jsonl"
    recs = [
        {
            "id": f"r{i}",
            "instruction": f"Question {i}?",
            "pos": "A kind, safe answer.",
            "tox": "A rude reply.",
            "kind": "harmful",
        }
        for i in range(4)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    keep = tiny_quota_dir / "earlier.txt"
    keep.write_text("earlier result")
    args = [
        "train",
        "--data",
        str(data),
        "--model",
        str(model),
        "--out",
        str(tiny_quota_dir / "run"),
        "--set",
        "train.epochs=1",
        "--set",
        "train.batch_size=2",
        "--set",
        "train.max_length=64",
        "--set",
        "train.save_steps=1",
        "--set",
        "train.lora_r=64",
    ]
    assert main(args) == 2
    err = _errors(capsys)
    assert len(err) == 1 and "no space left on device" in err[0], err
    assert keep.read_text() == "earlier result"


def test_from_stage_moves_readers_labels_aside_with_the_replies(tmp_path):
    """audit/ labels eval's replies: --from-stage eval (or earlier) moves it into history with eval/, so a
    new evaluation's verdicts are never scored against labels of replies it no longer has."""
    from ptalign.pipeline import _move_aside
    from ptalign.rundir import RunDir

    run = RunDir.of(tmp_path)
    for f in (
        run.root / "eval" / "aligned" / "asr.jsonl",
        run.audit("past_tense"),
        run.root / "adapter" / "x",
    ):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("old\n")
    dest = _move_aside(run, "eval")
    assert dest is not None and (dest / "audit" / "past_tense.jsonl").read_text() == "old\n"
    assert not run.audits.exists() and not (run.root / "eval").exists()
    assert (run.root / "adapter" / "x").exists()  # train's output stays for --from-stage eval


def test_train_starts_from_the_runs_config(tmp_path, monkeypatch):
    """`train --out RUN` trains with the settings the run was made with (RUN/config.yaml, as `run
    --resume`, sweep and report start from it), fresh or resumed alike, so a resume sees what the fresh
    start saw; --config replaces it."""
    from ptalign import cli
    from ptalign.config import load_config, save_config

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    save_config(load_config(None, ["train.lam=0.6", f"run_dir={run}"]), run / "config.yaml")
    seen: list = []
    monkeypatch.setattr(cli, "run_stage", lambda name, cfg, *a, **k: seen.append(cfg))
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert main(["train", "--out", str(run), "--resume", "--set", "train.epochs=3"]) == 0
    assert main(["train", "--out", str(run)]) == 0
    other = tmp_path / "other.yaml"
    save_config(load_config(None, ["train.lam=0.2"]), other)
    assert main(["train", "--out", str(run), "--resume", "--config", str(other)]) == 0
    assert [c.train.lam for c in seen] == [0.6, 0.6, 0.6, 0.2]
    assert seen[1].train.epochs == 3 and all(c.run_dir == str(run) for c in seen)
