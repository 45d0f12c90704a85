"""`ptalign` command line: parse, load the config, call one stage.

    ptalign run      [--config F] [--out DIR] [--resume] [--from-stage S]   synth → train → eval → report
    ptalign synth    [--stage topics|instructions|constraints|pairs|all] [--export trl|hf]
    ptalign train    [--data triplets.jsonl] [--model M] [--out RUN] [--resume]
    ptalign merge    --adapter DIR --out DIR [--model M]
    ptalign eval     [--model M] [--adapter A] [--baseline M] [--out DIR] [--show-unsafe]
    ptalign report   RUN_DIR
    ptalign sweep    lambda=0.2,0.4,0.8 | lam_benign=0.4,2 | samples=50,100,200 | fine_grained=true,false
    ptalign config show

Every command takes --config FILE and --set section.key=value (repeatable). Bad input ends with one
line on stderr naming the problem and the fix, exit code 2. Each command checks its input before it
changes or moves anything a run already holds (at most it has created the run directory and its lock
file), so a refused command leaves earlier results as they were.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ptalign.config import ConfigError, RunConfig, load_config
from ptalign.errors import UserError, user_message
from ptalign.io import DataError
from ptalign.pipeline import STAGES, SWEEP_FORMS, run_pipeline, run_stage
from ptalign.rundir import RunDir


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML config (e.g. configs/quick.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lam=0.6 (repeatable)",
    )
    p.add_argument("--no-cache", action="store_true", help="bypass the LLM-call cache")


def build_parser() -> argparse.ArgumentParser:
    from ptalign import __version__

    ap = argparse.ArgumentParser(prog="ptalign", description="PT-ALIGN dual safety self-alignment")
    ap.add_argument("--version", action="version", version=f"ptalign {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("run", help="the whole method end to end: synth → train → eval → report")
    _common(p)
    p.add_argument("--out", "-o", help="run directory (default: run_dir from the config)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument(
        "--from-stage",
        choices=list(STAGES),
        help="rerun from this stage on (earlier outputs kept, and the run's config.yaml with them: "
        "--set only what the rerun stages change)",
    )

    p = sub.add_parser("synth", help="generate topics, instructions, constraints and polarized triplets")
    _common(p)
    p.add_argument("--out", "-o", help="run directory")
    p.add_argument(
        "--stage", default="all", choices=["topics", "instructions", "constraints", "pairs", "all"]
    )
    p.add_argument(
        "--export",
        choices=["trl", "hf"],
        help="also export triplets (TRL prompt/chosen/rejected or HF datasets)",
    )

    p = sub.add_parser("train", help="fine-grained dual tuning (MLE on pos + λ·masked UT on tox)")
    _common(p)
    p.add_argument(
        "--data",
        help="triplets.jsonl (default: RUN_DIR/data/triplets.jsonl), TRL preference data (prompt/chosen/rejected), "
        "a datasets.save_to_disk folder, or any file with --set train.columns=...",
    )
    p.add_argument("--model", help="base model spec (overrides model.name)")
    p.add_argument(
        "--out", "-o", help="run directory: adapter and logs, triplets from its data/ without --data"
    )
    p.add_argument("--resume", action="store_true", help="resume from the last checkpoint in --out")

    p = sub.add_parser("merge", help="merge a LoRA adapter into its base model (HF safetensors dir)")
    _common(p)
    p.add_argument("--adapter", required=True)
    p.add_argument("--out", "-o", required=True)
    p.add_argument("--model", help="base model spec (default: the adapter's base / model.name)")

    p = sub.add_parser("eval", help="evaluate a model (+ adapter), optionally against a baseline")
    _common(p)
    p.add_argument("--model", help="model spec (default: model.name)")
    p.add_argument("--adapter", help="PEFT adapter dir to apply on --model")
    p.add_argument("--baseline", help="model spec to compare against (deltas with bootstrap CIs)")
    p.add_argument("--out", "-o", help="output directory (default: RUN_DIR/eval)")
    p.add_argument("--show-unsafe", action="store_true", help="print harmful generations unredacted")

    p = sub.add_parser("report", help="write RUN_DIR/report.html")
    _common(p)
    p.add_argument("run_dir")
    p.add_argument("--show-unsafe", action="store_true")

    p = sub.add_parser(
        "sweep",
        help="paper experiments: λ sweep, benign-λ sweep, sample-count scaling, fine_grained ablation",
    )
    _common(p)
    p.add_argument("spec", help=SWEEP_FORMS)
    p.add_argument("--out", "-o", help="sweep directory (default: RUN_DIR/sweeps/<name>)")

    p = sub.add_parser("config", help="show the resolved config")
    p.add_argument("action", choices=["show"])
    _common(p)
    return ap


def _load(args: argparse.Namespace, **top) -> RunConfig:
    overrides = list(args.overrides)
    if getattr(args, "no_cache", False):
        overrides.append("backend.cache=false")
    return load_config(args.config, overrides, **top)


def _run_dir_only(args: argparse.Namespace) -> str:
    """The run directory the defaults and a `--set run_dir=` give, without checking the other `--set`s
    (those are checked once, on the run's own config)."""
    keep = [o for o in args.overrides if o.split("=", 1)[0].strip() == "run_dir"]
    return load_config(None, keep).run_dir


def _default_to_run_config(args: argparse.Namespace, run_dir: str | Path) -> str | None:
    """Without --config, a command on an existing run starts from the run's own config.yaml; returns
    that run's directory when it did. The caller works on that directory, not on the `run_dir:` the
    file names: a run copied or moved elsewhere names its old place there."""
    if args.config:
        return None
    saved = RunDir.of(run_dir).config
    args.config = str(saved) if saved.is_file() else None
    return str(run_dir) if args.config else None


def _check_model(flag: str, spec: str) -> None:
    """A model spec that names nothing stops before the lock and before any model is loaded."""
    from ptalign import models
    from ptalign.errors import ModelLoadError

    try:
        models.resolve(spec)
    except ModelLoadError as e:
        raise UserError(f"{flag}: {e}") from None


def _check_adapter(adapter: str) -> None:
    """--adapter must be a PEFT adapter directory: found out before the base model has loaded."""
    from ptalign import models
    from ptalign.errors import ModelLoadError

    try:
        models.check_adapter(adapter, "--adapter")
    except ModelLoadError as e:
        raise UserError(str(e)) from None


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "config":
        cfg = _load(args)
        print(cfg.to_yaml(), end="")
        return 0

    if args.cmd == "run":
        run_dir = args.out
        if args.from_stage or args.resume:
            # what is kept or resumed was made with the run's own settings, not today's defaults (and a
            # --set may be valid only beside them: checked once, on the settings it lands on)
            run_dir = _default_to_run_config(args, args.out or _run_dir_only(args)) or args.out
        cfg = _load(args, run_dir=run_dir)
        with RunDir.of(cfg.run_dir).lock() as run:
            run_pipeline(cfg, run, resume=args.resume, from_stage=args.from_stage)
        return 0

    if args.cmd == "synth":
        cfg = _load(args, run_dir=args.out)
        with RunDir.of(cfg.run_dir).lock() as run:
            run_stage("synth", cfg, run, stage=args.stage)
            if args.export:
                from ptalign.synth.export import export

                out = export(run.triplets, args.export, run.export(args.export), cfg)
                print(f"exported {args.export} → {out}")
        return 0

    if args.cmd == "train":
        over = [f"model.name={args.model}"] if args.model else []
        args.overrides = over + list(args.overrides)
        # a run's own config.yaml where it has one (its triplets and checkpoints were made with it), as
        # for `run --resume`, sweep and report; --out names the run, as for synth and run
        run_dir = _default_to_run_config(args, args.out or _run_dir_only(args)) or args.out
        cfg = _load(args, run_dir=run_dir)
        with RunDir.of(cfg.run_dir).lock() as run:
            data = Path(args.data) if args.data else None
            run_stage("train", cfg, run, data=data, resume=args.resume)
        return 0

    if args.cmd == "merge":
        from ptalign.train import merge

        cfg = _load(args)
        out = merge(Path(args.adapter), Path(args.out), args.model or None, cfg)
        print(f"merged model → {out}")
        return 0

    if args.cmd == "eval":
        from ptalign import eval as ev

        if args.show_unsafe:
            args.overrides = list(args.overrides) + ["eval.show_unsafe=true"]
        cfg = _load(args)
        run = RunDir.of(cfg.run_dir)
        out = Path(args.out) if args.out else run.eval
        model = args.model or cfg.model.name
        # bad paths, an adapter or model that is not there stop before the lock creates --out and
        # before a model loads (minutes for the base side that --baseline evaluates first)
        ev.datasets.check_paths(cfg.eval)
        if args.adapter:
            _check_adapter(args.adapter)
        if cfg.backend.kind != "openai":  # there the spec may be a served model's name, not a path
            _check_model("--model" if args.model else "model.name", model)
            if args.baseline:
                _check_model("--baseline", args.baseline)
        with RunDir.of(args.out if args.out else run).lock():  # the run's lock when inside it
            res = ev.evaluate(cfg, out, model, args.adapter, args.baseline, run=run)
            ev.print_results(cfg, out, res)
        return 0

    if args.cmd == "report":
        if args.show_unsafe:
            args.overrides = list(args.overrides) + ["report.show_unsafe=true"]
        if not RunDir.of(args.run_dir).is_run():
            raise UserError(
                f"report: {args.run_dir} holds no run (no manifest.json, config.yaml, data/, adapter/ or "
                "eval/); pass the directory `ptalign run --out` wrote"
            )
        _default_to_run_config(args, args.run_dir)  # the report names the run's model and settings
        cfg = _load(args, run_dir=args.run_dir)
        path = run_stage("report", cfg, RunDir.of(args.run_dir))
        print(f"report → {path}")
        return 0

    if args.cmd == "sweep":
        from ptalign.pipeline import check_sweep, run_sweep

        # each point is the run with one value changed
        run_dir = _default_to_run_config(args, _run_dir_only(args))
        cfg = _load(args, run_dir=run_dir)
        check_sweep(cfg, args.spec)  # a bad spec or a run without triplets stops before the lock
        with RunDir.of(cfg.run_dir).lock():  # its points read the run's triplets and base evaluation
            run_sweep(cfg, args.spec, Path(args.out) if args.out else None)
        return 0

    raise UserError(f"unknown command {args.cmd!r}; see ptalign --help")


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse, as tcmalloc does; True where it took.

    Why: glibc hands every block above its mmap threshold (at most 32 MiB) back to the kernel when it
    is freed and trims the heap's top, while PyTorch on a CPU frees and reallocates activations and
    gradients of many MiB every step, so each step faults their pages in again (20.8 M minor page
    faults in one quick-preset run). Preloading tcmalloc is the usual cure (torch.backends.xeon.run_cpu)
    but needs a system library and a re-exec; these two mallopt calls do the same from inside (docs/results.md:
    "Training step on CPU"). The price: the process's resident memory stays at its high-water mark.
    PTALIGN_MALLOPT=0 keeps glibc's defaults.
    """
    if os.environ.get("PTALIGN_MALLOPT", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- glibc only: other libcs tune (or ignore) otherwise
    except (OSError, AttributeError):
        return False
    return libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1


def main(argv: list[str] | None = None) -> int:
    """The `ptalign` command; argv None = this process is the command (then the allocator is tuned)."""
    if argv is None:
        keep_freed_memory()
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ConfigError, DataError, UserError) as e:
        print(f"ptalign: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ptalign: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    except Exception as e:  # the CLI boundary: one line for known user-fixable failures, trace otherwise
        msg = user_message(e)
        if msg is None or os.environ.get("PTALIGN_DEBUG"):
            raise
        print(f"ptalign: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
