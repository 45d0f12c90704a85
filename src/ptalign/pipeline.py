"""`ptalign run` and `ptalign sweep`: chain the stages in one run directory, resumably.

Reads:  the config; each stage reads what the previous one wrote (paths: ptalign.rundir).
Writes: RUN_DIR/config.yaml, RUN_DIR/manifest.json (resolved config, package versions, data hashes,
        per-stage status and timings, base_model_path, the engine synth used), and through the stages
        RUN_DIR/data/, RUN_DIR/adapter/, RUN_DIR/train/, RUN_DIR/eval/, RUN_DIR/report.html.

The stages are the registry STAGES: name → the module whose `run(cfg, run)` does it, the stages it
needs and the outputs it writes. `ptalign run`, the single-stage commands and --from-stage look
them up there; --from-stage S starts only where every stage S needs is done and its output is there.

Resume works at two levels: the manifest marks finished stages (skipped on --resume), and every stage
skips the records or optimizer steps it already wrote (append-per-record files, the LLM-call cache,
trainer checkpoints). --from-stage moves the outputs of that stage and later ones to
RUN_DIR/history/<time>/ before rerunning them, so nothing written earlier is lost; from train or
eval, a copy of the base model's evaluation comes back when its settings still hold (`_reuse_base_eval`).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptalign.config import ConfigError, RunConfig, load_config, save_config
from ptalign.config.load import parse_bool
from ptalign.errors import UserError
from ptalign.io import atomic_write_json, file_sha256, read_jsonl
from ptalign.rundir import RunDir, check_state, read_state, save_state, side_summary


@dataclass(frozen=True)
class Stage:
    module: str  # its `run(cfg, run, **options)` does the stage
    needs: tuple[str, ...]  # stages whose outputs it reads
    outputs: tuple[str, ...]  # RunDir attributes it writes (moved aside by --from-stage)
    made: str  # the RunDir attribute of the file a finished stage leaves (checked before it is kept)
    options: dict[str, Any] = field(default_factory=dict)  # what `ptalign run` passes beside (cfg, run)

    def fn(self) -> Callable[..., Any]:
        return importlib.import_module(self.module).run  # imported when run: each stage is heavy


IDENTITY = ("model", "synth", "train", "eval")  # the config sections a run's results depend on
STAGES: dict[str, Stage] = {
    "synth": Stage("ptalign.synth", (), ("data",), "triplets"),
    "train": Stage(
        "ptalign.train", ("synth",), ("adapter", "train"), "trained", {"resume": True, "keep_finished": True}
    ),
    # eval reads the triplets too (the polarity metric); audit/ holds readers' labels on eval's replies
    # (bench/audit.py): they go aside with the replies
    "eval": Stage("ptalign.eval", ("synth", "train"), ("eval", "audits"), "comparison"),
    "report": Stage("ptalign.report", ("eval",), ("report",), "report"),
}
PACKAGES = [
    "ptalign",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "trl",
    "llama_cpp_python",
    "sentence-transformers",
    "datasets",
    "vllm",
]


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write_test{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"run dir {run_dir} is not writable ({e.strerror}); choose another --out") from None


def stage(name: str) -> Stage:
    if name not in STAGES:
        raise UserError(f"unknown stage {name!r}; one of {', '.join(STAGES)}")
    return STAGES[name]


def run_stage(name: str, cfg: RunConfig, run: RunDir, **options: Any) -> Any:
    """One stage by name, as `ptalign run` calls it; `options` add to (or replace) the registry's."""
    st = stage(name)
    return st.fn()(cfg, run, **{**st.options, **options})


def _data_hashes(run: RunDir) -> dict[str, str]:
    out = {}
    if run.data.is_dir():
        for p in sorted(run.data.glob("*.jsonl")):
            out[f"data/{p.name}"] = file_sha256(p)
    return out


class Manifest:
    """RUN_DIR/manifest.json, rewritten atomically after every change."""

    def __init__(self, run: RunDir, cfg: RunConfig):
        self.path = run.manifest
        self.d: dict[str, Any] = read_state(self.path) or {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "stages": {},
        }
        self.d["config"] = cfg.to_dict()
        self.d["config_hash"] = cfg.hash(*IDENTITY)
        self.d["packages"] = _versions()
        self.d.setdefault("stages", {})
        self.save()

    def save(self) -> None:
        save_state(self.path, self.d)

    def done(self, stage: str) -> bool:
        return self.d["stages"].get(stage, {}).get("status") == "done"

    def start(self, stage: str) -> float:
        s = self.d["stages"].setdefault(stage, {})
        s.update(status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.save()
        return time.time()

    def finish(self, stage: str, t0: float, result: Any, run: RunDir) -> None:
        s = self.d["stages"][stage]
        # Seconds add up across resumed attempts so the figure is the stage's real cost.
        s["seconds"] = round(s.get("seconds_before", 0.0) + time.time() - t0, 1)
        s.pop("seconds_before", None)
        s.update(status="done", ended=time.strftime("%Y-%m-%dT%H:%M:%S"))
        if isinstance(result, dict):
            s["result"] = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}
        self.d["data_hashes"] = _data_hashes(run)
        self.d["total_seconds"] = round(sum(v.get("seconds", 0) for v in self.d["stages"].values()), 1)
        self.save()

    def interrupted(self, stage: str, t0: float) -> None:
        s = self.d["stages"][stage]
        s["seconds_before"] = round(s.get("seconds_before", 0.0) + time.time() - t0, 1)
        s["status"] = "interrupted"
        self.save()

    def reset_from(self, stage: str) -> None:
        for name in _from(stage):
            self.d["stages"].pop(name, None)
        self.save()


def _from(name: str) -> list[str]:
    """The stage and every one after it, in registry order."""
    stage(name)  # an unknown name stops here, with the list of stages
    names = list(STAGES)
    return names[names.index(name) :]


def _needed(name: str) -> list[str]:
    """The stages `name` needs, directly or through another, in registry order."""
    found: set[str] = set()
    todo = list(stage(name).needs)
    while todo:
        n = todo.pop()
        if n not in found:
            found.add(n)
            todo.extend(STAGES[n].needs)
    return [n for n in STAGES if n in found]


def _check_needed(run: RunDir, from_stage: str) -> None:
    """--from-stage S keeps the stages S needs and reads their outputs: each must be done and its output
    there before anything is moved aside, or S would fail later on an unrelated line (or the loop would
    silently redo an interrupted stage, with the settings --from-stage keeps)."""
    stages = (read_state(run.manifest) or {}).get("stages", {})
    for name in _needed(from_stage):
        if stages.get(name, {}).get("status") != "done":
            raise UserError(
                f"--from-stage {from_stage}: stage {name} is not done in {run}; "
                f"use --resume or --from-stage {name}"
            )
        made: Path = getattr(run, STAGES[name].made)
        if not made.exists():
            raise UserError(
                f"--from-stage {from_stage}: stage {name} is marked done in {run} but {made} is missing; "
                f"redo it with --from-stage {name}"
            )


def _move_aside(run: RunDir, from_stage: str) -> Path | None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = run.history / f"{stamp}-from-{from_stage}"
    moved = False
    for name in _from(from_stage):
        for attr in STAGES[name].outputs:
            src: Path = getattr(run, attr)
            if src.exists():
                rel = src.relative_to(run.root)
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(src), str(dest / rel))
                moved = True
    if not moved:
        return None
    for kept in (run.config, run.manifest):  # the settings and timings that made what moved
        if kept.is_file():
            shutil.copy2(kept, dest / kept.name)
    return dest


def _reuse_base_eval(cfg: RunConfig, run: RunDir, from_stage: str, moved: Path | None) -> bool:
    """--from-stage train or eval moved eval/ aside, base side included, though the base model's
    evaluation reads nothing those stages write. Where the moved base side was made with this config's
    model and generation settings, a copy goes back and the eval stage resumes it, instead of scoring,
    generating and judging it again (minutes on 2 cores). --from-stage synth changes the triplets the
    polarity metric reads: its base side is made anew."""
    if moved is None or from_stage not in ("train", "eval"):
        return False
    from ptalign.eval import resumable

    old = moved / run.side("base").relative_to(run.root)
    if not old.is_dir() or not resumable(old, cfg.model.name, None, cfg):
        return False
    shutil.copytree(old, run.side("base"))
    print(
        f"[ptalign] eval: the base model's evaluation resumes from {old} (same model and settings)",
        file=sys.stderr,
    )
    return True


def _first_difference(saved: RunConfig, cfg: RunConfig, sections: list[str]) -> tuple[str, Any, Any] | None:
    """(section.key, saved value, cfg's value) of the first setting that differs, or None."""
    for name in sections:
        old, new = (dataclasses.asdict(getattr(c, name)) for c in (saved, cfg))
        for key, value in new.items():
            if old.get(key) != value:
                return f"{name}.{key}", old.get(key), value
    return None


def _check_resume(cfg: RunConfig, run: RunDir) -> None:
    """--resume continues only the config the run was made with (the manifest's config_hash). The
    refusal names the first setting that differs from the run's config.yaml: a hash alone leaves the
    user to diff two configs by hand."""
    made = (read_state(run.manifest) or {}).get("config_hash")
    if made is None or made == cfg.hash(*IDENTITY):
        return
    fix = (
        "resume with the same --config/--set, use --from-stage to redo a stage with new settings, "
        "or pick another --out"
    )
    diff = _first_difference(load_config(run.config), cfg, list(IDENTITY)) if run.config.is_file() else None
    if diff:
        key, old, new = diff
        raise UserError(f"--resume: {run} was made with {key}={old!r}, this config has {new!r}; {fix}")
    check_state(run.manifest, {"config_hash": cfg.hash(*IDENTITY)}, f"--resume: {run}", fix)


def _check_kept(cfg: RunConfig, run: RunDir, from_stage: str) -> None:
    """--from-stage keeps the earlier stages' outputs, so it keeps the settings that made them too: a
    config that differs there would be saved beside data it did not make (runs/ev2's config.yaml once
    said synth.everyday_share 0.0 over data made with 0.3)."""
    if not run.config.is_file():
        return
    stage(from_stage)  # an unknown name: one line naming the stages
    saved, names = load_config(run.config), list(STAGES)
    kept = names[: names.index(from_stage)]
    # the model made every kept stage's outputs (the synth data's identity hashes it), so it is kept too
    for name in ["model", *kept] if kept else []:
        if name not in IDENTITY:
            continue
        diff = _first_difference(saved, cfg, [name])
        if diff:
            key, old, new = diff
            redo, what = (name, f"{name} outputs") if name in STAGES else (names[0], "kept outputs")
            raise UserError(
                f"--from-stage {from_stage}: {run}'s {what} were made with {key}={old!r}, "
                f"this config has {new!r}; start from the run's own settings (no --config; --set only "
                f"what you redo) or redo {redo} with --from-stage {redo}"
            )


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (`kill`, a scheduler's stop) ends a stage as Ctrl-C does: marked interrupted with its
    seconds, so --resume goes on, instead of dying with the stage still marked running. Only the main
    thread may set a handler; elsewhere SIGTERM keeps its default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def run_pipeline(
    cfg: RunConfig,
    run_dir: RunDir | Path,
    resume: bool = False,
    from_stage: str | None = None,
) -> dict[str, Any]:
    """synth → train → eval → report in run_dir; returns the manifest."""
    run = RunDir.of(run_dir)
    cfg = dataclasses.replace(cfg, run_dir=str(run))  # the saved config names the dir it is in
    existing = run.manifest.exists()
    if existing and not resume and not from_stage:
        raise UserError(
            f"{run} already holds a run; pass --resume to continue it, --from-stage STAGE to redo "
            "from a stage, or choose another --out"
        )
    if not existing and from_stage:
        raise UserError(f"--from-stage: {run} holds no run yet; run without --from-stage first")
    if not existing and resume:
        if not run.is_run():  # a fresh full run here would be a surprise: a typo'd --out, most often
            raise UserError(f"nothing to resume in {run} (no run's files); drop --resume to start a run")
        # the single-stage commands write no manifest: `ptalign synth` / `train` then `run --resume`
        # (README, "Scaling up") goes on from their files, each stage skipping what they wrote
        resume = False
    _check_writable(run.root)
    if resume and not from_stage:
        _check_resume(cfg, run)
    if from_stage:
        _check_kept(cfg, run, from_stage)
        _check_needed(run, from_stage)

    from ptalign import models

    base_dir = models.hf_dir(cfg.model.name, cfg.model.cache_dir or None)

    moved = _move_aside(run, from_stage) if from_stage else None  # before config.yaml is rewritten
    save_config(cfg, run.config)
    man = Manifest(run, cfg)
    man.d["base_model"] = cfg.model.name
    man.d["base_model_path"] = str(base_dir)
    if from_stage:
        man.reset_from(from_stage)
        if moved:
            man.d.setdefault("history", []).append(str(moved.relative_to(run.root)))
        _reuse_base_eval(cfg, run, from_stage, moved)
    man.save()

    with _sigterm_as_interrupt(), _judge_prefetch(cfg, man):
        for name in STAGES:
            if man.done(name):
                print(f"[ptalign] {name}: done earlier, skipped", file=sys.stderr)
                continue
            print(f"[ptalign] {name}: running", file=sys.stderr)
            t0 = man.start(name)
            try:
                result = run_stage(name, cfg, run)
            except BaseException:
                man.interrupted(name, t0)
                raise
            man.finish(name, t0, result, run)
            if name == "synth" and isinstance(result, dict) and result.get("synth/engine"):
                # the engine synthesis chose (synth.choose_engine) and ran on, as it recorded it
                man.d["synth_backend"] = {
                    "used": result["synth/engine"],
                    "reason": result.get("synth/engine_reason", ""),
                }
                man.save()
            print(f"[ptalign] {name}: done in {man.d['stages'][name]['seconds']} s", file=sys.stderr)
    if man.done("eval"):  # the adapter's card gets its evaluation (also when a resumed run skipped eval)
        from ptalign.train.card import refresh_card

        refresh_card(run.root)
    return man.d


@contextmanager
def _judge_prefetch(cfg: RunConfig, man: Manifest) -> Iterator[None]:
    """While the stages run, the evaluation's judge reads its labelled replies on an idle core
    (judges/prefetch.py): vLLM's compilation at synthesis' start leaves one free, so only a run that
    synthesises starts the worker."""
    from ptalign.judges import prefetch

    judges = [cfg.eval.judge, *cfg.eval.judges_extra]
    if not man.done("synth") and not man.done("eval") and prefetch.start(judges):
        print("[ptalign] judge: reading its labelled replies on an idle core meanwhile", file=sys.stderr)
    try:
        yield
    finally:
        prefetch.stop()


# ------------------------------------------------------------------------------------------
# Sweeps: the paper's experiments (λ, sample count, fine-grained ablation) reuse the run's
# synthesized data and base evaluation; each point trains and evaluates its own adapter.


def _samples(s: str) -> int:
    """A sample count: the run's first N triplets (N = 0 would train on an empty file, -5 on all but 5)."""
    n = int(s)
    if n < 1:
        raise ConfigError(f"samples={n}: must be >= 1 (how many of the run's triplets to train on)")
    return n


def _bool(s: str) -> bool:
    """true/false as the config reads them: a typo ('ture') stops instead of sweeping False twice."""
    return parse_bool("fine_grained", s)


SWEEPS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "lambda": ("train.lam", float),
    "lam": ("train.lam", float),
    "lam_benign": ("train.lam_benign", float),
    "fine_grained": ("train.fine_grained", _bool),
    "samples": ("samples", _samples),
}
SWEEP_FORMS = "lambda=0.2,0.4 | lam_benign=0.4,2 | samples=50,100 | fine_grained=true,false"


def parse_sweep(spec: str) -> tuple[str, str, list[Any]]:
    """(name, config key or 'samples', values) of a sweep spec; one line naming the problem otherwise."""
    if "=" not in spec:
        raise UserError(f"sweep {spec!r}: must look like {SWEEP_FORMS}")
    name, raw = spec.split("=", 1)
    name = name.strip()
    if name not in SWEEPS:
        raise UserError(f"sweep {name!r}: unknown; one of lambda, lam_benign, samples, fine_grained")
    key, conv = SWEEPS[name]
    try:
        values = [conv(v) for v in raw.split(",") if v.strip()]
    except ConfigError as e:  # a ValueError too: the value's own line is the more useful one
        raise UserError(f"sweep {spec!r}: {e}") from None
    except ValueError:
        kind = {float: "float", _samples: "int"}.get(conv, "values")
        raise UserError(f"sweep {spec!r}: values must be comma-separated {kind}") from None
    if not values:
        raise UserError(f"sweep {spec!r}: give at least one value")
    return ("lambda" if name == "lam" else name), key, values


def check_sweep(cfg: RunConfig, spec: str) -> tuple[str, str, list[Any]]:
    """parse_sweep plus what stops a sweep before it writes anything: the run's triplets, and every
    value checked as its point's config would be (train.lam=-1 stops here, not after earlier points
    trained for minutes)."""
    name, key, values = parse_sweep(spec)
    run = RunDir.of(cfg.run_dir)
    if not run.triplets.exists():
        raise UserError(
            f"sweep needs {run.triplets}; run `ptalign run --out {run}` (or `ptalign synth`) first"
        )
    if key != "samples":
        for v in values:
            try:
                load_config_from(cfg, [f"{key}={v}"])
            except ConfigError as e:
                raise UserError(f"sweep {spec!r}: {e}") from None
    return name, key, values


def run_sweep(cfg: RunConfig, spec: str, out: Path | None = None) -> list[dict[str, Any]]:
    """Train + evaluate one adapter per value on the run's triplets; write sweeps/<name>/summary.json."""
    from ptalign import eval as ev
    from ptalign import train
    from ptalign.train.card import refresh_card

    name, key, values = check_sweep(cfg, spec)
    run = RunDir.of(cfg.run_dir)
    triplets = run.triplets
    base = run.side("base")
    if side_summary(base).exists() and not ev.resumable(base, cfg.model.name, None, cfg):
        raise UserError(
            f"sweep: {base} was evaluated with another model or other evaluation settings than this config, "
            f"so no point could be compared with it; run the sweep with the run's own config (no --config) "
            f"or redo it with `ptalign run --out {run} --from-stage eval`"
        )
    if side_summary(base).exists():
        # summarised again from its stored replies and verdicts (nothing is generated: the settings
        # match), so every point meets a base read by the same rules as itself, also on a run that an
        # older ptalign evaluated (HHH's clusters, MT-Bench's grades, the judges' versions)
        ev.evaluate_model(cfg, base, cfg.model.name, None, "base", run_dir=run.root)
    sweep_dir = Path(out) if out else run.sweeps / name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    records = [r for r in read_jsonl(triplets)]
    summary = sweep_dir / "summary.json"
    # one row per value: a later call with other values adds rows and replaces those it redoes
    rows = {r["value"]: r for r in json.loads(summary.read_text())} if summary.exists() else {}
    for v in values:
        point = RunDir(sweep_dir / f"{name}_{v}")
        point.root.mkdir(parents=True, exist_ok=True)
        over = [] if key == "samples" else [f"{key}={v}"]
        pcfg = load_config_from(cfg, over, run_dir=str(point))
        data = triplets
        if key == "samples":
            if v > len(records):
                print(
                    f"[ptalign] sweep: only {len(records)} triplets, samples={v} uses them all",
                    file=sys.stderr,
                )
            from ptalign.io import HAZARD_META, write_jsonl

            data = point.root / "triplets.jsonl"
            if not data.exists():
                write_jsonl(data, records[:v], meta=dict(HAZARD_META))
        # trained once per point: the state names the training config, so a changed one is refused
        state = check_state(
            point.train_state,
            {"train": pcfg.hash("model", "train"), "data": str(data)},
            str(point.train),
            f"move {point} away or pass another --out",
        )
        if not point.has_trained() or not state.get("done"):
            train.run(pcfg, point, data=data, resume=True)
            save_state(point.train_state, {**state, "done": True})
        model, adapter = ev.tuned(pcfg, point)
        res = ev.evaluate(pcfg, point.eval, model, adapter, base_eval=run.side("base"), run=point)
        refresh_card(point.root)
        got = res["aligned"]
        rows[v] = {"name": name, "value": v, **{k: x for k, x in got.items() if isinstance(x, (int, float))}}
        atomic_write_json(summary, list(rows.values()))
    return list(rows.values())


def load_config_from(cfg: RunConfig, overrides: list[str], **top: Any) -> RunConfig:
    """A copy of cfg with overrides applied (through the same validation as the CLI)."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(cfg.to_yaml())
        tmp = f.name
    try:
        return load_config(tmp, overrides, **top)
    finally:
        os.unlink(tmp)
