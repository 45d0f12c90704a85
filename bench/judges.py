"""Every judge against human labels it was never trained or tuned on; prints one JSON object.

    python bench/judges.py                       # keyword, xstest, minilm, minilm_smol on PyRIT 1.1.0's sets
    python bench/judges.py --judge-model embedded --judges harmbench,strongreject   # LLM judges too
    python bench/judges.py --cv                  # + 5-fold cross-validation of the embedded judges on our replies
    python bench/judges.py --errors              # + each judge's mistakes on the development sets
    python bench/judges.py --write               # + store the result for the report (judges/validation.json)
    python bench/judges.py --sets refusal_dev,objective_dev --errors   # developing: the test set unseen
    python bench/judges.py --sets refusal_dev,objective_dev --cv --extra bench/data/replies_g.jsonl
                                                 # a candidate batch of labelled replies, not yet shipped

The human labels are PyRIT's scorer evaluations (MIT, `pip download pyrit==1.1.0 --no-deps`), read
from the wheel at bench time and never copied into the project. A refusal or non-answer verdict reads
as PyRIT's "refusal" (their labels count an answer to another question as one); compliance as
"objective achieved". Sets, and what each may be used for:
- `refusal_test`: refusal_scorer/refusal.csv (105 replies). The test set: its rows are never read
  while developing a judge; the top-level figures of each judge are this set's (the embedded judge's
  target: accuracy >= 0.90 and kappa >= 0.80).
- `refusal_dev`: refusal_scorer/refusal_extra.csv (64 replies) and `objective_dev`: objective/*.csv
  (395 replies to harmful objectives; 1 = the objective was achieved). Development sets: `--errors`
  lists a judge's mistakes on them, to find what kinds of reply our labelled data lacks.
- `refusal_all`: the 169 refusal rows together, for comparison with earlier figures.
`non_answer_rate` is the share of non-answer verdicts. `nearest_train` is the highest MiniLM cosine
between a PyRIT objective and a prompt of our labelled replies (kept below the leakage test's 0.70).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from ptalign.judges import COMPLIANCE, JUDGES, LLM_JUDGES, NON_ANSWER, REFUSAL, make_judge
from ptalign.judges.agreement import agreement

PYRIT = "pyrit==1.1.0"
CACHE = Path(os.environ.get("PTALIGN_CACHE", Path.home() / ".cache" / "ptalign")) / "pyrit"


def pyrit_wheel(path: str | None) -> Path:
    """The PyRIT wheel: --pyrit-wheel, else the cache, else `pip download` into the cache."""
    if path:
        return Path(path)
    found = sorted(CACHE.glob("pyrit-1.1.0-*.whl"))
    if not found:
        CACHE.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", PYRIT, "--no-deps", "-q", "-d", str(CACHE)]
        subprocess.run(cmd, check=True)
        found = sorted(CACHE.glob("pyrit-1.1.0-*.whl"))
    if not found:
        sys.exit(f"bench/judges.py: no {PYRIT} wheel in {CACHE}; pass --pyrit-wheel PATH")
    return found[0]


def _rows(z: zipfile.ZipFile, name: str) -> list[dict[str, str]]:
    text = z.read(name).decode("utf-8")
    body = "\n".join(ln for ln in text.split("\n") if not ln.startswith("# "))  # '# dataset_version=…'
    return list(csv.DictReader(io.StringIO(body)))


POSITIVE = {  # set → the verdicts that read as its human label 1
    "refusal_test": {REFUSAL, NON_ANSWER},
    "refusal_dev": {REFUSAL, NON_ANSWER},
    "refusal_all": {REFUSAL, NON_ANSWER},
    "objective_dev": {COMPLIANCE},
}


def labelled_sets(wheel: Path) -> dict[str, list[dict]]:
    """set name → [{prompt, reply, human (0/1)}] from the wheel's scorer_evals."""
    base = "pyrit/datasets/scorer_evals/"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        files = {
            "refusal_test": [base + "refusal_scorer/refusal.csv"],
            "refusal_dev": [base + "refusal_scorer/refusal_extra.csv"],
            "objective_dev": sorted(
                n for n in names if n.startswith(base + "objective/") and n.endswith(".csv")
            ),
        }
        sets: dict[str, list[dict]] = {}
        for key, fs in files.items():
            sets[key] = [
                {"prompt": r["objective"], "reply": r["assistant_response"], "human": int(r["human_score"])}
                for n in fs
                for r in _rows(z, n)
                if r.get("human_score") in ("0", "1")
            ]
    sets["refusal_all"] = sets["refusal_test"] + sets["refusal_dev"]
    return sets


def score(rows: list[dict], positive: set[str], judge, errors: bool = False) -> dict:  # noqa: ANN001
    t0 = time.perf_counter()
    js = judge.judge([r["prompt"] for r in rows], [r["reply"] for r in rows])
    if errors:  # development sets only: what kinds of reply does the judge get wrong?
        for r, j in zip(rows, js, strict=True):
            if j.verdict is not None and int(j.verdict in positive) != r["human"]:
                print(
                    f"human={r['human']} judge={j.verdict} | {r['prompt'][:70]!r} -> {r['reply'][:160]!r}",
                    file=sys.stderr,
                )
    pred = [None if j.verdict is None else int(j.verdict in positive) for j in js]
    human = [r["human"] for r in rows]
    ag = agreement(pred, human)
    verdicts = [j.verdict for j in js]
    return {
        "accuracy": ag["agreement"],
        "kappa": ag["kappa"],
        "n": ag["n"],
        "unparsed": ag["missing"],
        "non_answer_rate": verdicts.count(NON_ANSWER) / len(verdicts) if verdicts else None,
        "false_positive": sum(p == 1 and h == 0 for p, h in zip(pred, human, strict=True)),
        "false_negative": sum(p == 0 and h == 1 for p, h in zip(pred, human, strict=True)),
        "seconds": round(time.perf_counter() - t0, 2),
    }


EXTRA: list[
    dict
] = []  # --extra: candidate labelled replies, added to the shipped ones for the embedded judges


def labelled() -> list[dict]:
    from ptalign.judges.minilm import load_labelled

    return load_labelled() + EXTRA


def _cv(x, y, make, folds: int) -> dict:  # noqa: ANN001 - features, labels, a model factory
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from ptalign.judges.base import COMPLIANCE, VERDICTS

    comp = VERDICTS.index(COMPLIANCE)
    pred = cross_val_predict(make(), x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=0))
    acc = sum(p == t for p, t in zip(pred, y, strict=True)) / len(y)
    binary = sum((p == comp) == (t == comp) for p, t in zip(pred, y, strict=True)) / len(y)
    return {"accuracy": round(float(acc), 4), "complied_accuracy": round(float(binary), 4)}


def cross_validate(folds: int, cs: list[float], weights: list[float]) -> dict:
    """Stratified k-fold accuracy of minilm on our own labelled replies (three verdicts, and compliance
    vs not), per regularisation C and scalar weight: how minilm.C and SCALAR_WEIGHT were chosen."""
    from ptalign.judges.base import VERDICTS
    from ptalign.judges.minilm import features, model
    from ptalign.judges.text import straighten

    recs = labelled()
    x = features([r["prompt"] for r in recs], [straighten(r["reply"]) for r in recs])
    y = [VERDICTS.index(r["label"]) for r in recs]
    grid = {f"C={c},weight={w}": _cv(x, y, lambda c=c, w=w: model(c, w), folds) for c in cs for w in weights}
    return {"n": len(recs), "folds": folds, "grid": grid}


def cross_validate_smol(folds: int, cs: list[float]) -> dict:
    """The same for minilm_smol, per C of its probe on the hidden states (smol.C_PROBE)."""
    from ptalign.judges import smol
    from ptalign.judges.base import VERDICTS
    from ptalign.judges.text import straighten

    recs = labelled()
    x = smol._cached_features([r["prompt"] for r in recs], [straighten(r["reply"]) for r in recs])
    y = [VERDICTS.index(r["label"]) for r in recs]
    return {
        "n": len(recs),
        "folds": folds,
        "grid": {f"C_probe={c}": _cv(x, y, lambda c=c: smol.model(c), folds) for c in cs},
    }


def nearest_train(sets: dict[str, list[dict]]) -> float | None:
    from ptalign.judges.embed import embed

    ours = sorted({r["prompt"] for r in labelled()})
    if not ours:
        return None
    theirs = sorted({r["prompt"] for rows in sets.values() for r in rows})
    return round(float((embed(theirs) @ embed(ours).T).max()), 3)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judges", default="keyword,xstest,minilm,minilm_smol")
    ap.add_argument(
        "--judge-model", default="", help="model spec or .gguf for LLM judges (backend.kind auto)"
    )
    ap.add_argument("--pyrit-wheel", default=None)
    ap.add_argument(
        "--sets",
        default="",
        help="score only these sets (comma-separated, e.g. refusal_dev,objective_dev while developing a "
        "judge: the test set's rows and figures stay unseen); default all",
    )
    ap.add_argument(
        "--cv", action="store_true", help="also cross-validate the embedded judges on our own replies"
    )
    ap.add_argument(
        "--errors", action="store_true", help="list each judge's mistakes on the dev sets (stderr)"
    )
    ap.add_argument(
        "--write", action="store_true", help="store the result in src/ptalign/judges/validation.json"
    )
    ap.add_argument(
        "--extra",
        default="",
        help="a JSONL file of labelled replies (docs/labelling.md) the embedded judges also train on: a "
        "candidate batch",
    )
    args = ap.parse_args(argv)
    if args.extra and args.write:
        sys.exit("bench/judges.py: --write stores the shipped judge's figures; drop --extra")
    if args.extra:
        EXTRA[:] = [
            json.loads(ln) for ln in Path(args.extra).read_text(encoding="utf-8").splitlines() if ln.strip()
        ]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    wheel = pyrit_wheel(args.pyrit_wheel)
    sets = labelled_sets(wheel)
    if args.sets and args.write:
        sys.exit("bench/judges.py: --write stores every set's figures; drop --sets")
    if args.sets:
        unknown = sorted(set(args.sets.split(",")) - set(sets))
        if unknown:
            sys.exit(f"bench/judges.py: --sets {','.join(unknown)}: unknown; from {', '.join(sets)}")
        sets = {k: v for k, v in sets.items() if k in args.sets.split(",")}
    backend = None
    if args.judge_model:
        from ptalign.config import load_config
        from ptalign.llm import make_backend

        cfg = load_config(overrides=[f"model.name={args.judge_model}", "backend.cache=false"])
        backend = make_backend(cfg)
    result: dict = {"judges": {}}
    for name in [j for j in args.judges.split(",") if j]:
        if name not in JUDGES:
            sys.exit(f"bench/judges.py: --judges {name}: unknown; one of {', '.join(JUDGES)}")
        if name in LLM_JUDGES and backend is None:
            sys.exit(f"bench/judges.py: judge {name} needs --judge-model")
        judge = make_judge(name, backend=(lambda: backend) if backend else None)
        if name == "minilm" and EXTRA:
            from ptalign.judges.minilm import MiniLMJudge, fit

            judge = MiniLMJudge(fit(labelled()))
        if name == "minilm_smol" and EXTRA:
            from ptalign.judges import smol

            judge = smol.SmolJudge(smol.fit(labelled()))
        per_set = {
            k: score(rows, POSITIVE[k], judge, args.errors and k.endswith("_dev")) for k, rows in sets.items()
        }
        result["judges"][name] = {
            **per_set.get("refusal_test", {}),
            "version": getattr(judge, "version", ""),
            "sets": per_set,
        }
    if args.cv:
        result["minilm_cv"] = cross_validate(5, [0.3, 1.0, 3.0], [1.0, 3.0, 10.0])
        result["minilm_smol_cv"] = cross_validate_smol(5, [0.0003, 0.001, 0.003, 0.01, 0.03])
    result["nearest_train"] = nearest_train(sets)
    result["provenance"] = {
        "labels": f"{PYRIT} scorer_evals (MIT), human_score",
        "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()[:16],
        "n": {k: len(v) for k, v in sets.items()},
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": "python bench/judges.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(json.dumps(result, indent=1))
    if args.write:
        path = Path(__file__).resolve().parents[1] / "src" / "ptalign" / "judges" / "validation.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
