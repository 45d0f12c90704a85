"""Training data in: ptalign triplets, TRL preference data, saved HF datasets, mapped columns.

Reads `--data FILE_OR_DIR`: a JSONL/JSON/CSV/Parquet file or a `datasets.save_to_disk` folder (a
DatasetDict's `train` split). Each row becomes a ptalign record (id, instruction, pos, tox, and kind
and domain where present), recognised by its columns:
  - ptalign's own: `instruction`, `pos`, `tox`;
  - TRL preference data: `prompt`, `chosen`, `rejected` (chosen → positive, rejected → toxic), in the
    standard form (strings) or the conversational one (message lists; the prompt's last user turn is
    the instruction), and the implicit-prompt form (`chosen`/`rejected` conversations only);
  - `train.columns`: a preset for a known safety set, or `field:column` pairs naming the columns, e.g.
    `instruction:question,pos:safe_answer,tox:unsafe_answer`.
Presets (safer response positive, unsafe response toxic; rows without such a pair are counted, not
trained on):
  - `pku-saferlhf`: PKU-SafeRLHF rows (prompt, response_0/1, is_response_0/1_safe,
    safer_response_id) whose safer response is safe and whose other response is unsafe;
  - `beavertails`: BeaverTails rows (prompt, response, is_safe) grouped by prompt, the first safe
    and the first unsafe response of each prompt that has both.
Bad or missing columns stop with one line naming the file, the columns found and those expected;
so does a row with a null or repeated id or an everyday/attack flag that is not a boolean (meta_problem).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ptalign.config import DATA_PRESETS as PRESETS
from ptalign.io import DataError, read_jsonl, stable_id

FIELDS = ("instruction", "pos", "tox")


# the ptalign record keys that ride along with any input format (train.ut_everyday reads "everyday";
# "attack" names the jailbreak wrapper of synth.attack_share's copies); synth/export.py writes them all
META_KEYS = ("id", "kind", "domain", "everyday", "attack")

# strings that read as a yes/no rather than a wrapper family: a flag written as text, not a boolean
_BOOL_WORDS = {"true", "false", "yes", "no", "1", "0", "none", "null"}


def meta_problem(row: dict[str, Any]) -> str | None:
    """What is wrong with a row's id or flags, and the fix, or None. Why: bool("false") is True, so a
    flag written as text would silently give an everyday triplet the unlikelihood term, and a null id
    became "None" for every such row. An absent (or, in a table, null) flag is false; a row without
    an id gets one made from its content.

    Examples: {"id": None} -> "a null or blank id; ..."; {"everyday": "false"} -> "everyday='false',
    not a boolean; ..."; {"id": "a", "attack": "roleplay"} -> None (attack names the wrapper family).
    """
    if "id" in row:
        rid = row["id"]
        if rid is None or (isinstance(rid, str) and not rid.strip()):
            return "a null or blank id; give it a unique id or drop the id column to have ids made from the content"
        if isinstance(rid, bool) or not isinstance(rid, (str, int)):
            return f"id={rid!r}, not a string; give each row a unique string id"
    ev = row.get("everyday")
    if ev is not None and not isinstance(ev, bool):
        return f"everyday={ev!r}, not a boolean; write true or false (JSON booleans) or leave it out"
    at = row.get("attack")
    if (
        at is not None
        and not isinstance(at, bool)
        and (not isinstance(at, str) or at.strip().lower() in _BOOL_WORDS)
    ):
        return f"attack={at!r}, not a wrapper family name; write the family, true or false, or leave it out"
    return None


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a file or a saved dataset, as dicts (datasets reads every format but JSONL, which is
    read line by line so that ptalign's own files need no Arrow schema)."""
    if path.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as e:
            raise DataError(
                f"{path}: not a dataset saved with datasets.save_to_disk ({str(e).splitlines()[0][:120]}); "
                "pass a .jsonl/.json/.csv/.parquet file or such a folder"
            ) from None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise DataError(
                    f"{path}: a DatasetDict without a 'train' split (has {', '.join(ds)}); save the split to train on"
                )
            ds = ds["train"]
        return [dict(r) for r in ds]
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return list(read_jsonl(path))
    builders = {".json": "json", ".csv": "csv", ".parquet": "parquet"}
    if suffix not in builders:
        raise DataError(
            f"{path}: unknown data format {suffix or '(none)'}; use .jsonl, .json, .csv, .parquet or a saved dataset folder"
        )
    import datasets

    return [dict(r) for r in datasets.load_dataset(builders[suffix], data_files=str(path), split="train")]


def _text(value: Any, role: str) -> str | None:
    """A string, or the content of the last `role` message of a conversation."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        turns = [m for m in value if m.get("role") == role]
        if turns and isinstance(turns[-1].get("content"), str):
            return turns[-1]["content"]
    return None


def _from_trl(row: dict[str, Any]) -> dict[str, Any] | None:
    chosen, rejected = row.get("chosen"), row.get("rejected")
    prompt = row.get("prompt")
    if prompt is None and isinstance(chosen, list) and isinstance(rejected, list):  # implicit prompt
        prompt = chosen[:-1]
        chosen, rejected = chosen[-1:], rejected[-1:]
    rec = {
        "instruction": _text(prompt, "user"),
        "pos": _text(chosen, "assistant"),
        "tox": _text(rejected, "assistant"),
    }
    return rec if all(isinstance(v, str) for v in rec.values()) else None


def _pku(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    out, skipped = [], 0
    for r in rows:
        k = r.get("safer_response_id")
        if k not in (0, 1) or not r.get(f"is_response_{k}_safe") or r.get(f"is_response_{1 - k}_safe"):
            skipped += 1  # no safe-vs-unsafe pair in this row
            continue
        out.append({"instruction": r["prompt"], "pos": r[f"response_{k}"], "tox": r[f"response_{1 - k}"]})
    return out, skipped


def _beavertails(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    by_prompt: dict[str, dict[bool, str]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt"], {}).setdefault(bool(r["is_safe"]), r["response"])
    out = [{"instruction": p, "pos": d[True], "tox": d[False]} for p, d in by_prompt.items() if len(d) == 2]
    return out, len(rows) - 2 * len(out)


PRESET_COLUMNS: dict[str, tuple[tuple[str, ...], Callable[[list[dict[str, Any]]], tuple[list[dict[str, Any]], int]]]] = {
    "pku-saferlhf": (("prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe", "safer_response_id"), _pku),
    "beavertails": (("prompt", "response", "is_safe"), _beavertails),
}  # fmt: skip


def parse_columns(spec: str) -> dict[str, str]:
    """'instruction:q,pos:a,tox:b' → {'instruction': 'q', 'pos': 'a', 'tox': 'b'}."""
    mapping = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        field, _, col = part.partition(":")
        if field not in FIELDS or not col:
            raise DataError(
                f"train.columns={spec!r}: '{part}' is not field:column with field one of {', '.join(FIELDS)}; "
                f"or name a preset ({', '.join(PRESETS)})"
            )
        mapping[field] = col
    missing = [f for f in FIELDS if f not in mapping]
    if missing:
        raise DataError(
            f"train.columns={spec!r}: no column for {', '.join(missing)}; map all of {', '.join(FIELDS)}"
        )
    return mapping


def check_unique_ids(path: Path, recs: list[dict[str, Any]]) -> None:
    """Refuse two records with the same given id: ids join triplets to their stats and eval rows, and
    a repeated one would merge them silently. Ids made from the content are not checked (a repeated
    row is the same triplet twice)."""
    seen: dict[str, int] = {}
    for i, r in enumerate(recs):
        if r.get("id") is None:
            continue
        first = seen.setdefault(str(r["id"]), i)
        if first != i:
            raise DataError(
                f"{path}: row {i + 1} repeats the id {str(r['id'])!r} of row {first + 1}; give each row its "
                "own id or drop the id column to have ids made from the content"
            )


def load_records(path: str | Path, columns: str = "") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(ptalign records, info): info names the format found and counts rows not trained on."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"training data {path} not found; run `ptalign synth` first or pass --data FILE_OR_DIR"
        )
    rows = load_rows(path)
    if not rows:
        raise DataError(f"{path}: holds no rows; run `ptalign synth` first or pass another --data")
    found = sorted({k for r in rows[:50] for k in r})

    def need(cols: tuple[str, ...] | list[str], what: str) -> None:
        lacking = [c for c in cols if c not in found]
        if lacking:
            raise DataError(
                f"{path}: columns {', '.join(found)}; {what} expects {', '.join(cols)} (missing {', '.join(lacking)})"
            )

    if columns not in PRESET_COLUMNS:  # the presets build their records without these keys
        for i, r in enumerate(rows):
            problem = meta_problem(r)
            if problem:
                raise DataError(f"{path}: row {i + 1} has {problem}")
    skipped = 0
    if columns in PRESET_COLUMNS:
        cols, convert = PRESET_COLUMNS[columns]
        need(cols, f"train.columns={columns}")
        recs, skipped = convert(rows)
        fmt = columns
    elif columns:
        mapping = parse_columns(columns)
        need(list(mapping.values()), f"train.columns={columns}")
        recs = [
            {
                **{k: r.get(k) for k in META_KEYS if r.get(k)},
                **{f: r[c] for f, c in mapping.items()},
            }
            for r in rows
        ]
        fmt = "columns"
    elif set(FIELDS) <= set(found):
        recs, fmt = rows, "ptalign"
    elif {"chosen", "rejected"} <= set(found):
        recs = []
        for i, r in enumerate(rows):
            rec = _from_trl(r)
            if rec is None:
                raise DataError(
                    f"{path}: row {i + 1} is not TRL preference data (prompt/chosen/rejected as strings or "
                    "message lists with a user prompt and assistant replies); fix it or map columns with train.columns"
                )
            recs.append({**{k: r[k] for k in META_KEYS if r.get(k)}, **rec})
        fmt = "trl"
    else:
        raise DataError(
            f"{path}: columns {', '.join(found)}; expected ptalign's (instruction, pos, tox), TRL's (prompt, chosen, "
            f"rejected), or a map with --set train.columns=instruction:COL,pos:COL,tox:COL (presets: {', '.join(PRESETS)})"
        )
    for i, r in enumerate(recs):
        bad = [f for f in FIELDS if not isinstance(r.get(f), str)]
        if bad:
            raise DataError(
                f"{path}: row {i + 1} has no text for {', '.join(bad)} (format {fmt}); fix it or map other columns"
            )
    check_unique_ids(path, recs)
    for r in recs:
        r.setdefault("id", stable_id(r["instruction"], r["pos"], r["tox"]))
        r["id"] = str(r["id"])
    if not recs:
        raise DataError(
            f"{path}: no row has a safe and an unsafe response (format {fmt}, {skipped} rows skipped); nothing to train on"
        )
    return recs, {"format": fmt, "rows": len(rows), "skipped": skipped}
