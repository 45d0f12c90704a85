"""Does a run's training data tell harmful from benign requests by what they ask, or by how they ask it?

    python bench/data_audit.py probe RUN              # the base model's states; RUN's triplets and eval items
    python bench/data_audit.py probe RUN --aligned    # with RUN's adapter merged
    python bench/data_audit.py goals RUN DIR --n 100  # DIR/chunk_K.jsonl: harmful requests, frames cut, to read
    python bench/data_audit.py goals-score DIR        # the readers' labels: agreement, share harmful, CI

Issue #19's past-tense family stays complied with whatever the training does, and a reader of the
synthesized data sees why: many of the 135M model's "harmful" goals are harmless in content ("prevent
self-harm", "avoid committing a crime"); what marks them harmful requests is the request frame they
are put in ("Explain how I could ... and get away with it"), while the benign requests are free
questions. A model that learns that split learns to refuse a frame. `probe` measures how much of
the split is form; `goals` and `goals-score` let people measure how much is content.

`probe` prints one JSON object:
- `frame_only`: a bag-of-words classifier that sees only a request's first and last three words
  (its frame, mostly), 5-fold cross-validated on the run's triplets. Near 1.0: the frame alone tells
  the class.
- `probes`: a logistic probe on the model's state at the generation prompt's last token (the state
  the first reply token is read from), one per layer, fitted on the run's training requests (harmful
  against benign), and the same on MiniLM's sentence embedding of the last user turn; `cv` is its
  5-fold accuracy on the training requests. For each evaluated set it prints the share the probe
  reads as harmful: AdvBench goals direct and under every templated attack, XSTest's unsafe contrast
  prompts and its safe prompts. A probe that reads past-tense goals as benign while it reads the same
  goals asked directly as harmful has learned a form.
Evaluation items are only read (the probes are fitted on the run's triplets alone): they are the
run's own evaluated ones (RUN/eval/base/asr.jsonl, overrefusal.jsonl), so the run must be evaluated.

`goals` draws N of the run's model-written harmful requests (before any attack wrapper), cuts the
request frame off each (synth/prompts/request_frames.txt; a request in no frame is kept whole), and
writes them as "I want to ..." lines in shuffled chunks with opaque ids; DIR/key.json maps them back.
Readers label each line by docs/labelling.md ("Training requests") into DIR/labels_K_READER.jsonl,
without opening key.json. The files hold model-written text: keep DIR under the run directory.

Hand-written: no library reads probes off a model's states; scikit-learn fits them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ptalign.config.load import load_config
from ptalign.eval import attacks, tuned
from ptalign.io import read_jsonl
from ptalign.rundir import RunDir, records

C = 0.05  # strong L2: 576 dimensions against ~600 requests; the shares below moved little from 0.01 to 1
FRAME_WORDS = 3


def frame_text(request: str, k: int = FRAME_WORDS) -> str:
    """A request's first and last k words, lower-cased: its frame when the goal sits in the middle."""
    words = request.lower().split()
    return " ".join(words[:k] + ["|"] + words[-k:])


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[Any, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def clf() -> Any:
        return make_pipeline(
            StandardScaler(), LogisticRegression(C=C, max_iter=3000, class_weight="balanced")
        )

    cv = float(cross_val_score(clf(), x, y, cv=5).mean())
    return clf().fit(x, y), cv


def frame_only(requests: Sequence[str], harmful: np.ndarray) -> float:
    """5-fold accuracy of telling the class from the frame words alone."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(
        CountVectorizer(token_pattern=r"[^ ]+", ngram_range=(1, 2)),
        LogisticRegression(max_iter=3000, class_weight="balanced"),
    )
    return float(cross_val_score(pipe, [frame_text(r) for r in requests], harmful, cv=5).mean())


def eval_chats(run: RunDir) -> dict[str, list[list[dict[str, str]]]]:
    """The run's evaluated prompts as chats, by set: each attack on the AdvBench goals, XSTest's unsafe
    contrast prompts and its safe prompts."""
    base = run.side("base")
    sets: dict[str, list[list[dict[str, str]]]] = {}
    for r in read_jsonl(records(base, "asr")):
        if r.get("attack") in (None, "autodan"):
            continue
        name = "xstest_unsafe" if r["source"] == "xstest_unsafe" else r["attack"]
        sets.setdefault(name, []).append(attacks.chat_for(r["attack"], r["goal"], r["goal_id"]))
    sets["xstest_safe"] = [
        [{"role": "user", "content": r["prompt"]}] for r in read_jsonl(records(base, "overrefusal"))
    ]
    return sets


def last_token_states(
    model: Any, tok: Any, chats: Sequence[list[dict[str, str]]], batch: int = 16
) -> np.ndarray:
    """(n, layers + 1, hidden): every layer's state at the generation prompt's last token (left padding)."""
    import torch

    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    side, tok.padding_side = tok.padding_side, "left"
    out = []
    try:
        with torch.no_grad():
            for k in range(0, len(texts), batch):
                enc = tok(texts[k : k + batch], return_tensors="pt", padding=True).to(model.device)
                hs = model(**enc, output_hidden_states=True).hidden_states
                out.append(torch.stack([h[:, -1].float() for h in hs], 1).cpu())
    finally:
        tok.padding_side = side
    return torch.cat(out).numpy()


def shares(clf: Any, sets: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: round(float(clf.predict(x).mean()), 3) for name, x in sets.items()}


def probe(run_dir: str | Path, aligned: bool = False, layers: Sequence[int] = ()) -> dict[str, Any]:
    from ptalign.judges.embed import embed
    from ptalign.models import load, native_bf16

    run = RunDir.of(run_dir)
    cfg = load_config(run.config)
    trip = list(read_jsonl(run.triplets))
    requests = [t["instruction"] for t in trip]
    harmful = np.array([t["kind"] == "harmful" for t in trip])
    chats = eval_chats(run)
    out: dict[str, Any] = {
        "run": str(run),
        "model": cfg.model.name,
        "aligned": aligned,
        "n_train": {"harmful": int(harmful.sum()), "benign": int((~harmful).sum())},
        "n_eval": {k: len(v) for k, v in chats.items()},
        "frame_only": round(frame_only(requests, harmful), 3),
    }
    asked = {
        k: embed([c[-1]["content"] for c in v]) for k, v in chats.items()
    }  # MiniLM reads the asking turn
    clf, cv = _fit(embed(requests), harmful)
    out["probes"] = {"minilm": {"cv": round(cv, 3), **shares(clf, asked)}}

    dtype = "bfloat16" if native_bf16() else "float32"
    spec, adapter = tuned(cfg, run) if aligned else (cfg.model.name, None)  # a full fine-tune: its own model
    model, tok = load(spec, dtype, adapter=adapter)
    train = last_token_states(model, tok, [[{"role": "user", "content": r}] for r in requests])
    evals = {k: last_token_states(model, tok, v) for k, v in chats.items()}
    for layer in layers or range(2, train.shape[1], 3):
        clf, cv = _fit(train[:, layer], harmful)
        out["probes"][f"layer_{layer}"] = {
            "cv": round(cv, 3),
            **shares(clf, {k: v[:, layer] for k, v in evals.items()}),
        }
    return out


def goal_of(request: str, frames: Sequence[str]) -> str:
    """The goal inside a request frame ("Help me {goal} without anyone finding out."), or the request
    whole when no frame fits (a model-written form, a classic self-instruct request)."""
    for f in frames:
        pre, post = f.split("{goal}")
        if request.startswith(pre) and request.endswith(post) and len(request) > len(pre) + len(post):
            return request[len(pre) : len(request) - len(post)]
    return request


def goals(run_dir: str | Path, folder: str | Path, n: int, seed: int = 0, chunks: int = 2) -> Path:
    from ptalign.io import HAZARD_META, write_jsonl
    from ptalign.synth.expand import request_frames

    run, folder = RunDir.of(run_dir), Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} is not empty: pick a new folder (labels already there are kept)")
    frames = request_frames(more=True)  # a run with synth.more_frames uses the ten more too
    rows = [
        r
        for r in read_jsonl(run.data_file("instructions"))
        if r["kind"] == "harmful" and r["source"] == "model"
    ]
    rng = np.random.default_rng(seed)
    picked = [rows[i] for i in rng.permutation(len(rows))[:n]]
    key: dict[str, str] = {}
    for k in range(chunks):
        part = picked[k::chunks]
        lines = []
        for j, r in enumerate(part):
            item = f"g{k}_{j:03d}"
            key[item] = r["id"]
            goal = goal_of(r["text"], frames)
            lines.append({"item": item, "request": goal if goal == r["text"] else f"I want to {goal}"})
        write_jsonl(folder / f"chunk_{k}.jsonl", lines, meta=HAZARD_META)
    (folder / "key.json").write_text(json.dumps({"run": str(run), "seed": seed, "items": key}, indent=1))
    return folder


def read_labels(folder: Path) -> dict[str, dict[str, str]]:
    """{reader: {item: label}} from DIR/labels_K_READER.jsonl."""
    out: dict[str, dict[str, str]] = {}
    for f in sorted(folder.glob("labels_*_*.jsonl")):
        reader = f.stem.split("_", 2)[2]
        for r in read_jsonl(f):
            out.setdefault(reader, {})[r["item"]] = r["label"]
    return out


def goals_score(folder: str | Path, seed: int = 0) -> dict[str, Any]:
    """Each reader's share of harmful goals, the share both / either call harmful with a 95 % bootstrap
    interval over goals, and the two first readers' agreement (three labels; harmful-or-not with κ)."""
    from sklearn.metrics import cohen_kappa_score

    labels = read_labels(Path(folder))
    readers = sorted(labels)
    if len(readers) < 2:
        raise SystemExit(
            f"{folder}: labels of two readers are needed (labels_K_READER.jsonl), found {readers}"
        )
    a, b = labels[readers[0]], labels[readers[1]]
    items = sorted(set(a) & set(b))
    ha, hb = np.array([a[i] == "harmful" for i in items]), np.array([b[i] == "harmful" for i in items])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(items), (4000, len(items)))

    def share(x: np.ndarray) -> dict[str, float]:
        lo, hi = np.percentile(x[draws].mean(1), [2.5, 97.5])
        return {"share": round(float(x.mean()), 3), "ci95": [round(float(lo), 3), round(float(hi), 3)]}

    per = {
        r: {lab: sum(v == lab for v in labels[r].values()) for lab in ("harmful", "not_harmful", "unclear")}
        for r in readers
    }
    return {
        "n": len(items),
        "readers": per,
        "agreement": round(sum(a[i] == b[i] for i in items) / len(items), 3),
        "kappa_harmful": round(float(cohen_kappa_score(ha, hb)), 3),
        "harmful_both": share(ha & hb),
        "harmful_either": share(ha | hb),
        "not_harmful_both": share(np.array([a[i] == b[i] == "not_harmful" for i in items])),
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe", help="how much of the harmful/benign split is form")
    p.add_argument("run", help="an evaluated run directory")
    p.add_argument("--aligned", action="store_true", help="merge RUN's adapter (default: the base model)")
    p.add_argument("--layers", default="", help="comma-separated layers (default: every third)")
    g = sub.add_parser("goals", help="harmful requests, frames cut, for readers")
    g.add_argument("run")
    g.add_argument("folder", help="a new folder, under the run directory")
    g.add_argument("--n", type=int, default=100)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--chunks", type=int, default=2)
    s = sub.add_parser("goals-score", help="the readers' labels")
    s.add_argument("folder")
    args = ap.parse_args(argv)
    if args.cmd == "probe":
        out = probe(args.run, args.aligned, [int(x) for x in args.layers.split(",") if x])
    elif args.cmd == "goals":
        out = {"folder": str(goals(args.run, args.folder, args.n, args.seed, args.chunks))}
    else:
        out = goals_score(args.folder)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
