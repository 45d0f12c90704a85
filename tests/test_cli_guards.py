"""The CLI's checks on a run before it changes anything: which directory a command works on, what
--from-stage and --resume need, and the sweep, eval and report commands' input. Each refusal is one
line on stderr, exit 2, with the run's files as they were."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ptalign.cli import main
from ptalign.io import HAZARD_META, run_lock, write_jsonl


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line on stderr (fails when there are more)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (the lock file aside) and its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".ptalign.lock"
    }


def _run_dir(run: Path, stages: dict[str, str], *sets: str, named: Path | None = None) -> None:
    """A run made with `sets`: config.yaml (naming `named` as its run_dir, default run), a manifest with
    the given stage statuses and the config hash, and each listed stage's output."""
    from ptalign.config import load_config, save_config
    from ptalign.pipeline import IDENTITY

    cfg = load_config(None, [*sets, f"run_dir={named or run}"])
    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    manifest = {"config_hash": cfg.hash(*IDENTITY), "stages": {k: {"status": v} for k, v in stages.items()}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    if "synth" in stages:
        recs = [
            {"id": f"t{i}", "instruction": f"q{i}", "pos": "p", "tox": "t", "kind": "harmful"}
            for i in range(3)
        ]
        write_jsonl(run / "data" / "triplets.jsonl", recs, meta=dict(HAZARD_META))
    if "train" in stages:
        (run / "adapter").mkdir()
        (run / "adapter" / "adapter_config.json").write_text("{}")
    if "eval" in stages:
        (run / "eval").mkdir()
        (run / "eval" / "comparison.json").write_text("{}")


@pytest.fixture
def no_stage_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """run_pipeline without models or stages: the names of the stages it would run."""
    from ptalign import models, pipeline

    ran: list[str] = []
    monkeypatch.setattr(models, "hf_dir", lambda *a, **k: tmp_path)
    monkeypatch.setattr(pipeline, "run_stage", lambda name, cfg, run, **kw: ran.append(name) or {})
    return ran


# --- 1. the directory whose config.yaml was read is the run ----------------------------------------


def test_resume_from_stage_and_sweep_work_on_the_run_whose_config_they_read(monkeypatch, tmp_path):
    """A run copied to runs/quick keeps `run_dir: <old place>` in its config.yaml: resuming it, redoing
    a stage or sweeping it works on runs/quick, never on the old place."""
    import ptalign.cli
    from ptalign import pipeline

    monkeypatch.chdir(tmp_path)
    old = tmp_path / "elsewhere" / "old"
    run = Path("runs/quick")
    _run_dir(run, {"synth": "done"}, "train.lam=0.6", named=old)
    seen = []
    monkeypatch.setattr(
        ptalign.cli, "run_pipeline", lambda cfg, run, **kw: seen.append((cfg.run_dir, run.root))
    )
    monkeypatch.setattr(
        pipeline, "run_sweep", lambda cfg, spec, out: seen.append((cfg.run_dir, cfg.train.lam))
    )
    assert main(["run", "--resume"]) == 0
    assert main(["run", "--from-stage", "train"]) == 0
    assert main(["sweep", "lambda=0.2"]) == 0
    assert seen == [(str(run), run), (str(run), run), (str(run), 0.6)]
    assert not old.exists()


# --- 2. --from-stage needs the stages before it done, their outputs there --------------------------


def test_from_stage_refuses_when_an_earlier_stage_is_not_done_and_moves_nothing(
    no_stage_runs, capsys, tmp_path
):
    run = tmp_path / "run"
    _run_dir(run, {"synth": "interrupted", "train": "done"})
    before = _snapshot(run)
    assert main(["run", "--out", str(run), "--from-stage", "train"]) == 2
    assert _err(capsys) == (
        f"ptalign: error: --from-stage train: stage synth is not done in {run}; "
        "use --resume or --from-stage synth"
    )
    assert _snapshot(run) == before and not (run / "history").exists() and not no_stage_runs


@pytest.mark.parametrize(
    ("from_stage", "missing", "stage"),
    [("train", "data/triplets.jsonl", "synth"), ("eval", "adapter/adapter_config.json", "train"),
     ("report", "eval/comparison.json", "eval")],
)  # fmt: skip
def test_from_stage_refuses_when_a_done_stage_lost_its_output(
    no_stage_runs, capsys, tmp_path, from_stage, missing, stage
):
    run = tmp_path / "run"
    _run_dir(run, {"synth": "done", "train": "done", "eval": "done", "report": "done"})
    (run / missing).unlink()
    before = _snapshot(run)
    assert main(["run", "--out", str(run), "--from-stage", from_stage]) == 2
    err = _err(capsys)
    assert (
        f"--from-stage {from_stage}: stage {stage} is marked done in {run} but {run / missing} is missing"
        in err
    )
    assert err.endswith(f"redo it with --from-stage {stage}")
    assert _snapshot(run) == before and not (run / "history").exists() and not no_stage_runs


def test_from_stage_runs_when_the_stages_before_it_are_done(no_stage_runs, tmp_path):
    run = tmp_path / "run"
    _run_dir(run, {"synth": "done", "train": "done", "eval": "done", "report": "done"})
    assert main(["run", "--out", str(run), "--from-stage", "eval"]) == 0
    assert no_stage_runs == ["eval", "report"]
    assert len(list((run / "history").glob("*-from-eval/eval/comparison.json"))) == 1


def test_eval_needs_synth_and_report_needs_eval() -> None:
    """eval reads data/triplets.jsonl (polarity), so --from-stage eval checks synth as well as train."""
    from ptalign.pipeline import STAGES, _needed

    assert "synth" in STAGES["eval"].needs and "eval" in STAGES["report"].needs
    assert _needed("train") == ["synth"]
    assert _needed("eval") == ["synth", "train"]
    assert _needed("report") == ["synth", "train", "eval"]


# --- 3. --resume where there is nothing to resume -------------------------------------------------


def test_resume_without_a_run_is_refused(no_stage_runs, capsys, tmp_path):
    out = tmp_path / "typo"
    assert main(["run", "--out", str(out), "--resume"]) == 2
    assert (
        _err(capsys)
        == f"ptalign: error: nothing to resume in {out} (no run's files); drop --resume to start a run"
    )
    assert not (out / "manifest.json").exists() and not no_stage_runs


def test_resume_goes_on_from_the_single_stage_commands_files(no_stage_runs, tmp_path):
    """`ptalign synth --out RUN` writes no manifest; `ptalign run --out RUN --resume` then goes on from
    its files (README, "Scaling up"), each stage skipping what is already there."""
    out = tmp_path / "staged"
    (out / "data").mkdir(parents=True)
    assert main(["run", "--out", str(out), "--resume"]) == 0
    assert no_stage_runs[0] == "synth"


# --- 4. an error in the run's own config.yaml names that file ------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["run", "--out", "{run}", "--resume"], ["run", "--out", "{run}", "--from-stage", "train"],
     ["report", "{run}"], ["sweep", "lambda=0.2", "--set", "run_dir={run}"]],
)  # fmt: skip
def test_an_error_in_the_runs_config_yaml_names_the_file(argv, no_stage_runs, capsys, tmp_path):
    run = tmp_path / "run"
    _run_dir(run, {"synth": "done"})
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("synth:\n", "synth:\n  judge: keyword\n", 1))
    before = _snapshot(run)
    assert main([a.format(run=run) for a in argv]) == 2
    err = _err(capsys)
    assert err.startswith(f"ptalign: error: {cfg}: synth.judge: renamed to synth.gate_judge"), err
    assert err.endswith("; edit that file")
    assert _snapshot(run) == before


def test_a_bad_set_on_a_good_run_config_is_not_blamed_on_the_file(no_stage_runs, capsys, tmp_path):
    run = tmp_path / "run"
    _run_dir(run, {"synth": "done"})
    assert main(["run", "--out", str(run), "--resume", "--set", "train.lam=-3"]) == 2
    assert _err(capsys).startswith("ptalign: error: train.lam=-3.0: must be in [0, 10]")


# --- 5. the --resume refusal names the setting ----------------------------------------------------


def test_resume_refusal_names_the_first_setting_that_differs(no_stage_runs, capsys, tmp_path):
    run = tmp_path / "run"
    _run_dir(run, {"synth": "done"}, "train.lam=0.4")
    before = _snapshot(run)
    assert main(["run", "--out", str(run), "--resume", "--set", "train.lam=0.6"]) == 2
    err = _err(capsys)
    assert f"--resume: {run} was made with train.lam=0.4, this config has 0.6;" in err, err
    assert "--from-stage" in err and _snapshot(run) == before and not no_stage_runs


# --- 6. sweep values are checked before any point is trained --------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [("fine_grained=true,ture", "fine_grained='ture': must be true or false"),
     ("samples=-5", "samples=-5: must be >= 1"), ("samples=10,0", "samples=0: must be >= 1"),
     ("lambda=0.2,-1", "train.lam=-1.0: must be in [0, 10]")],
)  # fmt: skip
def test_sweep_refuses_bad_values_before_training_anything(spec, message, monkeypatch, capsys, tmp_path):
    from ptalign import train

    run = tmp_path / "run"
    _run_dir(run, {"synth": "done"})
    trained = []
    monkeypatch.setattr(train, "run", lambda *a, **k: trained.append(a))
    before = _snapshot(run)
    assert main(["sweep", spec, "--set", f"run_dir={run}"]) == 2
    err = _err(capsys)
    assert err.startswith(f"ptalign: error: sweep {spec!r}: {message}"), err
    assert not trained and _snapshot(run) == before and not (run / "sweeps").exists()


# --- 7. a sweep holds the run's lock ----------------------------------------------------------------


def test_sweep_is_refused_while_another_process_holds_the_run(monkeypatch, capsys, tmp_path):
    from ptalign import pipeline

    run = tmp_path / "run"
    _run_dir(run, {"synth": "done"})
    swept = []
    monkeypatch.setattr(pipeline, "run_sweep", lambda *a, **k: swept.append(a))
    with run_lock(run):  # flock: a second open of the lock file conflicts, in this process too
        assert main(["sweep", "lambda=0.2", "--set", f"run_dir={run}"]) == 2
    assert f"is in use by another ptalign process (pid {os.getpid()})" in _err(capsys)
    assert not swept


# --- 8. eval checks its adapter and models before the lock and before loading ---------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--adapter", "{tmp}/no-adapter"], "--adapter {tmp}/no-adapter: no adapter_config.json there"),
     (["--model", "{tmp}/no-model"], "--model: model path {tmp}/no-model does not exist"),
     (["--baseline", "{tmp}/no-base"], "--baseline: model path {tmp}/no-base does not exist")],
)  # fmt: skip
def test_eval_checks_adapter_and_models_before_anything(flags, message, monkeypatch, capsys, tmp_path):
    from ptalign import eval as ev

    (tmp_path / "no-adapter").mkdir()
    called = []
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: called.append(a))
    monkeypatch.setattr(ev, "print_results", lambda *a, **k: None)
    out = tmp_path / "out"
    assert main(["eval", "--out", str(out), *(f.format(tmp=tmp_path) for f in flags)]) == 2
    assert _err(capsys).startswith("ptalign: error: " + message.format(tmp=tmp_path))
    assert not called and not out.exists()


def test_a_sweep_summarises_the_runs_base_side_again_before_its_points(monkeypatch, tmp_path):
    """A run evaluated by an older ptalign holds a base summary made by older rules: each point is
    compared with the base read again (from its stored replies) by the rules the point is read by."""
    from ptalign import eval as ev
    from ptalign import train
    from ptalign.io import HAZARD_META, atomic_write_json, write_jsonl

    run = tmp_path / "run"
    write_jsonl(run / "data" / "triplets.jsonl", [{"instruction": "q", "pos": "p", "tox": "t", "kind": "harmful"}],
                meta=dict(HAZARD_META))  # fmt: skip
    atomic_write_json(run / "eval" / "base" / "summary.json", {"meta": {}})
    calls = []

    def fake_train(cfg, point, data, resume):
        point.adapter.mkdir(parents=True)
        (point.adapter / "adapter_config.json").write_text("{}")

    monkeypatch.setattr(train, "run", fake_train)
    monkeypatch.setattr(ev, "resumable", lambda *a, **k: True)
    monkeypatch.setattr(ev, "evaluate_model", lambda cfg, out, *a, **k: calls.append(("base", Path(out))))
    monkeypatch.setattr(
        ev, "evaluate", lambda cfg, out, *a, **k: calls.append(("point", Path(out))) or {"aligned": {}}
    )
    assert main(["sweep", "lambda=0.2,0.4", "--set", f"run_dir={run}"]) == 0
    assert [c[0] for c in calls] == ["base", "point", "point"] and calls[0][1] == run / "eval" / "base"


def test_eval_on_a_server_takes_a_served_models_name(monkeypatch, tmp_path):
    """backend.kind=openai: --model names a model the server serves ('llama3:8b'), not a local path."""
    from ptalign import eval as ev

    called = []
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: called.append(a))
    monkeypatch.setattr(ev, "print_results", lambda *a, **k: None)
    argv = ["eval", "--out", str(tmp_path / "out"), "--model", "llama3:8b", "--set", "backend.kind=openai"]
    assert main(argv) == 0 and called


# --- 9. report refuses a directory that is not a run; sweep --help; SIGTERM --------------------------


def test_report_refuses_a_directory_that_holds_no_run(capsys, tmp_path):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert f"report: {empty} holds no run" in _err(capsys)
    assert list(empty.iterdir()) == []


def test_sweep_help_names_every_sweep(capsys):
    from ptalign.pipeline import SWEEPS

    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    out = capsys.readouterr().out
    assert all(f"{name}=" in out for name in SWEEPS if name != "lam")  # lam: the paper's alias of lambda


_TERMINATED = """
import sys, time
from pathlib import Path
from ptalign import models, pipeline
from ptalign.cli import main

models.hf_dir = lambda *a, **k: Path(sys.argv[1])
def stage(name, cfg, run, **kw):
    print("started", flush=True)
    time.sleep(60)
pipeline.run_stage = stage
sys.exit(main(["run", "--out", sys.argv[1]]))
"""


def test_sigterm_marks_the_stage_interrupted_like_ctrl_c(tmp_path):
    run = tmp_path / "run"
    p = subprocess.Popen(
        [sys.executable, "-c", _TERMINATED, str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout.readline().strip() == "started"
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert err.strip().splitlines()[-1] == "ptalign: interrupted; rerun with --resume to continue"
    synth = json.loads((run / "manifest.json").read_text())["stages"]["synth"]
    assert synth["status"] == "interrupted" and "seconds_before" in synth
