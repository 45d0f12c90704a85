"""Export triplets for other trainers: TRL preference JSONL or a Hugging Face `datasets` folder.

Reads: a triplets.jsonl (keys id, instruction, pos, tox; kind, domain and the FLAGS everyday and
attack ride along, so that training on the export treats each triplet as on the triplets).
Writes: `OUT/train.jsonl` + `OUT/HAZARD.md` (trl), or `datasets.save_to_disk(OUT)` with the hazard
warning in the dataset description (hf); both with a dataset card, `OUT/README.md` (method, model,
config hash, counts per domain and kind, polarity, the hazard notice), as TRL and distilabel exports
carry one. Both go through a tmp folder + rename, so an interrupted
export never leaves a half-written folder, and an existing OUT is refused rather than overwritten.

TRL's conversational preference format is used (prompt/chosen/rejected as message lists) so that
DPOTrainer and friends apply the model's chat template, as our own trainer does.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from ptalign.errors import UserError
from ptalign.io import HAZARD_META, read_jsonl

# the flags a triplet carries that `ptalign train --data EXPORT` reads back (train/data.py META_KEYS):
# without "everyday" the everyday triplets would get the unlikelihood term under train.ut_everyday=false
FLAGS = ("everyday", "attack")


def _rows(triplets: Path) -> list[dict]:
    """The TRL rows of the triplets, each with the FLAGS its triplet sets."""
    rows = []
    for r in read_jsonl(triplets):
        for k in ("id", "instruction", "pos", "tox"):
            if not isinstance(r.get(k), str):
                raise UserError(
                    f"{triplets}: record {r.get('id', '?')} lacks {k!r}; regenerate it with `ptalign synth`"
                )
        rows.append(
            {
                "id": r["id"],
                "prompt": [{"role": "user", "content": r["instruction"]}],
                "chosen": [{"role": "assistant", "content": r["pos"]}],
                "rejected": [{"role": "assistant", "content": r["tox"]}],
                "kind": r.get("kind", "harmful"),
                "domain": r.get("domain", ""),
                **{k: r[k] for k in FLAGS if r.get(k)},
            }
        )
    return rows


def _columns(rows: list[dict]) -> list[dict]:
    """Rows with every key any row has (None where absent): datasets.Dataset.from_list takes its
    columns from the first row, so a flag set only on later rows would be dropped."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k) for k in keys} for r in rows]


def dataset_card(triplets: Path, fmt: str, cfg: Any = None) -> str:
    """README.md for an export: what the data is, where it came from, what it holds, and its hazard."""
    recs = list(read_jsonl(triplets))
    n = len(recs)
    kinds = Counter(r.get("kind", "harmful") for r in recs)
    domains = Counter(r.get("domain") or "-" for r in recs)
    pol = [float(r["polarity"]) for r in recs if isinstance(r.get("polarity"), (int, float))]
    hashes = sorted({str(r["config"]) for r in recs if r.get("config")})
    model = cfg.model.name if cfg is not None else "(not recorded)"
    load = (
        'datasets.load_dataset("json", data_files="train.jsonl", split="train")'
        if fmt == "trl"
        else "datasets.load_from_disk(THIS_FOLDER)"
    )
    lines = [
        "---",
        "tags: [safety, preference, pt-align, hazardous]",
        "task_categories: [text-generation]",
        f"size_categories: [{'n<1K' if n < 1000 else '1K<n<10K' if n < 10000 else '10K<n<100K'}]",
        "---",
        "",
        "# PT-ALIGN polarized triplets",
        "",
        f"> **Hazardous.** {HAZARD_META['warning']} The `rejected` side is harmful by design.",
        "",
        "Made by ptalign with the PT-ALIGN method (arXiv 2502.08657, Refining Positive and Toxic Samples):",
        "the model expanded safety domains into topics and requests, completed positive and negative",
        "constraints from a few human seeds, and wrote for each request a maximally harmless response",
        "(`chosen`) and a severely harmful one (`rejected`); inner thoughts were stripped. Benign requests",
        "(kind `benign`) pair a helpful answer with a needless refusal.",
        "",
        f"- model: `{model}`",
        f"- synthesis config hash: {', '.join(hashes) or '(not recorded)'}",
        f"- source: `{triplets.name}`, {n} triplets; format `{fmt}` (TRL conversational preference:",
        f"  `prompt`, `chosen`, `rejected` as message lists), load with `{load}`",
        "",
        "| kind | triplets |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in sorted(kinds.items())),
        "",
        "| domain | triplets |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in sorted(domains.items())),
        "",
    ]
    if pol:
        lines += [
            "Polarity (MiniLM cosine distance between `chosen` and `rejected`; the paper reports 0.38 for its",
            f"triplets, 0.28 for ordinary preference pairs): mean {statistics.fmean(pol):.3f}, median "
            f"{statistics.median(pol):.3f}, min {min(pol):.3f}, max {max(pol):.3f} over {len(pol)} triplets.",
            "",
        ]
    lines += [
        "Use: safety alignment research only (DPO, KTO, ptalign's dual tuning). Do not publish the `rejected`",
        "texts or train a model towards them.",
    ]
    return "\n".join(lines) + "\n"


def export(triplets: Path, fmt: str, out: Path, cfg: Any = None) -> Path:
    """Write the triplets in `fmt` ('trl' or 'hf') to the folder `out`, with a dataset card; returns it."""
    triplets, out = Path(triplets), Path(out)
    if fmt not in ("trl", "hf"):
        raise UserError(f"--export {fmt}: unknown format; one of trl, hf")
    if not triplets.exists():
        raise UserError(f"{triplets}: not found; run `ptalign synth` first")
    if out.exists():
        raise UserError(f"{out} already exists; remove it or export elsewhere (nothing was overwritten)")
    rows = _rows(triplets)
    if not rows:
        raise UserError(
            f"{triplets}: holds no triplets; run `ptalign synth` (or check stats.json for what was dropped)"
        )
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    warning = HAZARD_META["warning"]
    if fmt == "trl":
        tmp.mkdir(parents=True)
        with open(tmp / "train.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        (tmp / "HAZARD.md").write_text(
            f"# Hazardous data\n\n{warning}\n\nSource: {triplets} ({len(rows)} triplets). The `rejected` side is toxic by design.\n"
        )
    else:
        import datasets

        info = datasets.DatasetInfo(description=f"HAZARDOUS: {warning} PT-ALIGN triplets from {triplets}.")
        datasets.Dataset.from_list(_columns(rows), info=info).save_to_disk(str(tmp))
    (tmp / "README.md").write_text(dataset_card(triplets, fmt, cfg), encoding="utf-8")
    os.replace(tmp, out)
    return out
