"""Export triplets for other trainers: TRL preference JSONL or a Hugging Face `datasets` folder.

Reads: a triplets.jsonl (keys id, instruction, pos, tox).
Writes: `OUT/train.jsonl` + `OUT/HAZARD.md` (trl), or `datasets.save_to_disk(OUT)` with the hazard
warning in the dataset description (hf). Both go through a tmp folder + rename, so an interrupted
export never leaves a half-written folder, and an existing OUT is refused rather than overwritten.

TRL's conversational preference format is used (prompt/chosen/rejected as message lists) so that
DPOTrainer and friends apply the model's chat template, as our own trainer does.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ptalign.errors import UserError
from ptalign.io import HAZARD_META, read_jsonl


def _rows(triplets: Path) -> list[dict]:
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
            }
        )
    return rows


def export(triplets: Path, fmt: str, out: Path) -> Path:
    """Write the triplets in `fmt` ('trl' or 'hf') to the folder `out`; returns it."""
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
        datasets.Dataset.from_list(rows, info=info).save_to_disk(str(tmp))
    os.replace(tmp, out)
    return out
