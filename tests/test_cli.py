"""CLI boundary: main(argv) in-process; bad input → one line on stderr, exit 2, nothing overwritten."""

import json
import sys
from pathlib import Path

import pytest

from ptalign.cli import main

QUICK = Path(__file__).parents[1] / "configs" / "quick.yaml"


def test_config_show_prints_resolved_yaml(capsys):
    assert main(["config", "show", "--set", "train.lam=0.6"]) == 0
    out = capsys.readouterr().out
    assert "lam: 0.6" in out and "synth:" in out


def test_bad_set_is_one_line_exit_2(capsys):
    assert main(["config", "show", "--set", "train.lam=-3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "ptalign: error: train.lam=-3.0: must be in [0, 10] (paper: 0.4)"


def test_missing_config_file(capsys, tmp_path):
    assert main(["config", "show", "--config", str(tmp_path / "x.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_run_refuses_existing_run_dir(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    manifest = run / "manifest.json"
    manifest.write_text(json.dumps({"stages": {"synth": {"status": "done"}}}))
    before = manifest.read_bytes()
    assert main(["run", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run; pass --resume" in err[0]
    assert manifest.read_bytes() == before


def test_resume_refuses_another_config_and_keeps_the_manifest(capsys, tmp_path):
    from ptalign.config import load_config
    from ptalign.pipeline import IDENTITY

    run = tmp_path / "run"
    run.mkdir()
    manifest = run / "manifest.json"
    made_with = load_config(None, ["train.lam=0.4"]).hash(*IDENTITY)
    manifest.write_text(json.dumps({"config_hash": made_with, "stages": {"synth": {"status": "done"}}}))
    before = manifest.read_bytes()
    assert main(["run", "--out", str(run), "--resume", "--set", "train.lam=0.6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "other settings" in err[0] and made_with in err[0]
    assert "--from-stage" in err[0] and manifest.read_bytes() == before


def test_run_unwritable_out(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    assert main(["run", "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not writable" in err[0] and "--out" in err[0]
    assert blocker.read_text() == "I am a file"


def test_from_stage_needs_a_run(capsys, tmp_path):
    assert main(["run", "--out", str(tmp_path / "fresh"), "--from-stage", "train"]) == 2
    assert "holds no run yet" in capsys.readouterr().err


def _made_with(run, *sets):
    """A run dir whose synthesis is done, made with `sets`: its manifest and config.yaml."""
    from ptalign.config import load_config, save_config

    run.mkdir()
    save_config(load_config(None, [*sets, f"run_dir={run}"]), run / "config.yaml")
    (run / "manifest.json").write_text(json.dumps({"stages": {"synth": {"status": "done"}}}))
    return (run / "config.yaml").read_bytes()


def test_from_stage_and_resume_start_from_the_settings_that_made_the_run(monkeypatch, tmp_path):
    """--from-stage train keeps data/, so the run's own synth settings come with it, not the defaults;
    --set changes only what is redone. --resume continues with them, no --set repeated."""
    import ptalign.cli

    run = tmp_path / "run"
    _made_with(run, "synth.everyday_share=0.0", "synth.goal_guidance=1", "train.lam=0.6")
    seen = []
    monkeypatch.setattr(ptalign.cli, "run_pipeline", lambda cfg, *a, **k: seen.append((cfg, k)))
    assert main(["run", "--out", str(run), "--from-stage", "train", "--set", "train.seed=2"]) == 0
    assert main(["run", "--out", str(run), "--resume"]) == 0
    (cfg, kw), (resumed, kw2) = seen
    assert cfg.synth.everyday_share == 0.0 and cfg.train.lam == 0.6 and cfg.train.seed == 2
    assert kw["from_stage"] == "train" and kw2["resume"] and not kw2["from_stage"]
    assert resumed.synth.everyday_share == 0.0 and resumed.train.lam == 0.6 and resumed.train.seed == 0
    # a --set valid only beside the run's own settings (the requests style needs everyday_share 0 and
    # goal_guidance 1, the defaults' are 0.3 and 4) is checked there
    requests = ["--set", "synth.instruction_style=requests"]
    assert main(["run", "--out", str(run), "--from-stage", "synth", *requests]) == 0
    assert seen[-1][0].synth.instruction_style == "requests" and seen[-1][0].synth.everyday_share == 0.0
    # the same with the run named by --set run_dir= instead of --out
    assert main(["run", "--set", f"run_dir={run}", "--from-stage", "synth", *requests]) == 0
    assert seen[-1][0].synth.instruction_style == "requests" and seen[-1][0].synth.everyday_share == 0.0


@pytest.mark.parametrize(
    "argv",
    [
        ["--set", "synth.everyday_share=0.0"],  # a kept stage's setting changed
        ["--config", str(QUICK)],  # a config that is not the run's: the defaults' 0.3
    ],
)
def test_from_stage_refuses_other_settings_for_the_stages_it_keeps(argv, capsys, tmp_path):
    run = tmp_path / "run"
    before = _made_with(run, "synth.everyday_share=0.5")
    assert main(["run", "--out", str(run), "--from-stage", "train", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    has = "0.0" if "--set" in argv else "0.3"
    assert len(err) == 1 and f"made with synth.everyday_share=0.5, this config has {has}" in err[0], err
    assert "--from-stage synth" in err[0]
    assert (run / "config.yaml").read_bytes() == before and not (run / "history").exists()


def test_from_stage_keeps_the_model_that_made_the_kept_stages(capsys, tmp_path):
    run = tmp_path / "run"
    before = _made_with(run, "synth.everyday_share=0.3")
    assert main(["run", "--out", str(run), "--from-stage", "eval", "--set", "model.name=other"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "kept outputs were made with model.name='embedded', this config has 'other'" in err[0]
    )
    assert "--from-stage synth" in err[0]
    assert (run / "config.yaml").read_bytes() == before and not (run / "history").exists()


def test_ctrl_c_marks_the_stage_interrupted_and_resume_adds_up_its_time(monkeypatch, capsys, tmp_path):
    """Ctrl-C: exit 130 with one line saying how to go on, the stage marked interrupted with the seconds
    it had run; --resume redoes it and its seconds count both attempts."""
    import time

    from ptalign import models, pipeline

    monkeypatch.setattr(models, "hf_dir", lambda *a, **k: tmp_path)  # no model needed: no stage runs

    def interrupted(name, cfg, run, **kw):
        time.sleep(0.3)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_stage", interrupted)
    run = tmp_path / "run"
    assert main(["run", "--out", str(run)]) == 130
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "ptalign: interrupted; rerun with --resume to continue"
    )
    synth = json.loads((run / "manifest.json").read_text())["stages"]["synth"]
    assert synth["status"] == "interrupted" and synth["seconds_before"] >= 0.3

    monkeypatch.setattr(pipeline, "run_stage", lambda name, cfg, run, **kw: {})
    assert main(["run", "--out", str(run), "--resume"]) == 0
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert all(stages[n]["status"] == "done" for n in pipeline.STAGES)
    assert stages["synth"]["seconds"] >= 0.3 and "seconds_before" not in stages["synth"]


def test_sweep_spec_errors(capsys, tmp_path):
    assert main(["sweep", "gamma=1,2", "--set", f"run_dir={tmp_path}"]) == 2
    assert "unknown; one of lambda, lam_benign, samples, fine_grained" in capsys.readouterr().err
    assert main(["sweep", "lambda=0.2", "--set", f"run_dir={tmp_path}"]) == 2
    assert "sweep needs" in capsys.readouterr().err
    assert main(["sweep", "lambda=low,high", "--set", f"run_dir={tmp_path}"]) == 2
    assert "values must be comma-separated float" in capsys.readouterr().err


def test_sweep_points_train_once_and_the_summary_keeps_every_value(monkeypatch, capsys, tmp_path):
    """samples=N trains on the run's first N triplets (all of them, with a warning, past the end); a
    point is trained once, and refused when its training settings change; a later call adds its rows."""
    from ptalign import eval as ev
    from ptalign import train
    from ptalign.io import HAZARD_META, read_jsonl, write_jsonl

    run = tmp_path / "run"
    recs = [{"instruction": f"q{i}", "pos": "p", "tox": "t", "kind": "harmful"} for i in range(3)]
    write_jsonl(run / "data" / "triplets.jsonl", recs, meta=dict(HAZARD_META))
    trained = []

    def fake_train(cfg, point, data, resume):
        trained.append((point.root.name, [r["instruction"] for r in read_jsonl(data)]))
        point.adapter.mkdir(parents=True)
        (point.adapter / "adapter_config.json").write_text("{}")

    monkeypatch.setattr(train, "run", fake_train)
    monkeypatch.setattr(ev, "evaluate", lambda cfg, out, *a, **k: {"aligned": {"eval/asr": cfg.train.lr}})
    over = ["--set", f"run_dir={run}"]
    assert main(["sweep", "samples=2,5", *over]) == 0
    assert "only 3 triplets, samples=5 uses them all" in capsys.readouterr().err
    assert trained == [("samples_2", ["q0", "q1"]), ("samples_5", ["q0", "q1", "q2"])]
    assert main(["sweep", "samples=2,4", *over]) == 0  # 2 is trained already
    capsys.readouterr()
    assert [t[0] for t in trained] == ["samples_2", "samples_5", "samples_4"]
    summary = json.loads((run / "sweeps" / "samples" / "summary.json").read_text())
    assert [r["value"] for r in summary] == [2, 5, 4]
    assert main(["sweep", "samples=2", *over, "--set", "train.lr=0.001"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "move" in err[0] and "samples_2" in err[0]


def test_sweep_fine_grained_trains_one_point_per_mask(monkeypatch, capsys, tmp_path):
    """fine_grained=true,false: one point with UT from the first differing token, one with UT on every
    toxic token (the paper's ablation), each trained on the run's own triplets."""
    from ptalign import eval as ev
    from ptalign import train
    from ptalign.io import HAZARD_META, write_jsonl

    run = tmp_path / "run"
    recs = [{"instruction": "q", "pos": "p", "tox": "t", "kind": "harmful"}]
    write_jsonl(run / "data" / "triplets.jsonl", recs, meta=dict(HAZARD_META))
    seen = {}

    def fake_train(cfg, point, data, resume):
        seen[point.root.name] = (cfg.train.fine_grained, Path(data))
        point.adapter.mkdir(parents=True)
        (point.adapter / "adapter_config.json").write_text("{}")

    monkeypatch.setattr(train, "run", fake_train)
    monkeypatch.setattr(ev, "evaluate", lambda cfg, out, *a, **k: {"aligned": {"eval/asr": 0.5}})
    assert main(["sweep", "fine_grained=true,false", "--set", f"run_dir={run}"]) == 0
    assert seen == {
        "fine_grained_True": (True, run / "data" / "triplets.jsonl"),
        "fine_grained_False": (False, run / "data" / "triplets.jsonl"),
    }
    rows = json.loads((run / "sweeps" / "fine_grained" / "summary.json").read_text())
    assert [r["value"] for r in rows] == [True, False]


def test_synth_export_and_no_cache_reach_the_stage(monkeypatch, capsys, tmp_path):
    """`synth --no-cache` turns the LLM-call cache off for the stage; `--export trl` writes the
    triplets the stage made as TRL preference rows beside them."""
    from ptalign import cli
    from ptalign.io import HAZARD_META, read_jsonl, write_jsonl

    got = {}

    def fake_stage(name, cfg, run, **kw):
        got[name] = (cfg.backend.cache, kw)
        rec = {"id": "a", "instruction": "Hi", "pos": "Hello!", "tox": "Go away.", "kind": "benign"}
        write_jsonl(run.triplets, [rec], meta=dict(HAZARD_META))

    monkeypatch.setattr(cli, "run_stage", fake_stage)
    run = tmp_path / "run"
    assert main(["synth", "--out", str(run), "--no-cache", "--stage", "pairs", "--export", "trl"]) == 0
    assert got == {"synth": (False, {"stage": "pairs"})}
    out = capsys.readouterr().out
    assert "exported trl" in out
    rows = list(read_jsonl(run / "data" / "export_trl" / "train.jsonl"))
    assert len(rows) == 1 and rows[0]["prompt"] == [{"role": "user", "content": "Hi"}]
    assert (rows[0]["chosen"][0]["content"], rows[0]["rejected"][0]["content"]) == ("Hello!", "Go away.")
    assert main(["synth", "--out", str(tmp_path / "run2")]) == 0
    assert got["synth"] == (True, {"stage": "all"})


def test_show_unsafe_reaches_eval_and_report(monkeypatch, capsys, tmp_path):
    from ptalign import cli
    from ptalign import eval as ev

    seen = {}
    monkeypatch.setattr(ev, "evaluate", lambda cfg, *a, **k: seen.setdefault("eval", cfg.eval.show_unsafe))
    monkeypatch.setattr(ev, "print_results", lambda *a, **k: None)
    monkeypatch.setattr(cli, "run_stage", lambda n, cfg, run, **k: seen.setdefault(n, cfg.report.show_unsafe))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "manifest.json").write_text('{"stages": {}}')  # report reads a run, not any dir
    assert main(["eval", "--out", str(tmp_path / "e"), "--show-unsafe"]) == 0
    assert main(["report", str(tmp_path / "r"), "--show-unsafe"]) == 0
    assert seen == {"eval": True, "report": True}
    seen.clear()
    assert main(["eval", "--out", str(tmp_path / "e")]) == 0
    assert main(["report", str(tmp_path / "r")]) == 0
    assert seen == {"eval": False, "report": False}


@pytest.mark.parametrize("cmd", ["run", "synth", "train", "merge", "eval", "report", "sweep", "config"])
def test_help_for_every_command(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "--config" in capsys.readouterr().out


def test_a_run_dir_is_locked_while_in_use_and_a_killed_holder_leaves_no_lock(capsys, tmp_path):
    """Two processes on one run dir: the second stops at once with one line naming the holder's pid;
    a holder killed with SIGKILL leaves nothing that blocks the next command (flock dies with it)."""
    import os
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom ptalign.io import run_lock\n"
         f"with run_lock({str(run)!r}):\n    print('held', flush=True)\n    time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in run.iterdir())
        assert main(["run", "--out", str(run)]) == 2  # returns while the holder sleeps 120 s: it did not wait
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by another ptalign process (pid {holder.pid})" in err[0]
        assert sorted(p.name for p in run.iterdir()) == before  # nothing written
        # a real second ptalign process gets the same line
        p = subprocess.run(
            [sys.executable, "-m", "ptalign", "synth", "--out", str(run)], capture_output=True, text=True
        )
        assert (
            p.returncode == 2
            and f"(pid {holder.pid})" in p.stderr
            and len(p.stderr.strip().splitlines()) == 1
        )
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    # the killed holder's lock is gone: the next command proceeds (here to the resume check)
    assert main(["run", "--out", str(run), "--from-stage", "train"]) == 2
    assert "holds no run yet" in capsys.readouterr().err


_FAULTS = """
import ctypes, os, resource, sys
from ptalign.cli import keep_freed_memory
tuned = keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
n = 64 << 20  # above glibc's largest mmap threshold: by default every such block is mmapped and unmapped
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    libc.free(p)
print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) * resource.getpagesize() // n)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("env", ["1", "0"])
def test_keep_freed_memory_stops_refaulting_freed_blocks(env: str) -> None:
    """Eight 64 MiB blocks allocated, written and freed in turn: tuned, only the first faults its pages
    in (the others reuse it); with glibc's defaults (PTALIGN_MALLOPT=0) every one does."""
    import os
    import subprocess

    p = subprocess.run(
        [sys.executable, "-c", _FAULTS], env={**os.environ, "PTALIGN_MALLOPT": env},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    tuned, blocks = p.stdout.split()
    assert tuned == ("True" if env == "1" else "False")
    assert (int(blocks) <= 2) if env == "1" else (int(blocks) >= 7)
