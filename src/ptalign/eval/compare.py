"""Base vs aligned: per-metric values, deltas and bootstrap 95 % confidence intervals.

Reads: `<base>/summary.json`, `<base>/items.json`, the same for aligned. Writes: the comparison JSON
(`RUN_DIR/eval/comparison.json`) via `write`.

Each metric is a mean over items (a goal × attack, a prompt, an HHH example), so its uncertainty comes
from resampling items. When both sides scored the same items the bootstrap is paired (the delta is
resampled per item, which removes between-item variance from the delta's interval); otherwise the
two sides are resampled independently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ptalign.io import DataError, atomic_write_json


def _ci(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_mean_ci(values: list[float], n_boot: int, seed: int = 0) -> tuple[float, float] | None:
    if not values or n_boot <= 0:
        return None
    rng = np.random.default_rng(seed)
    a = np.asarray(values, dtype=float)
    return _ci(a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1))


def delta_ci(base: dict[str, float], aligned: dict[str, float], n_boot: int, seed: int = 0) -> dict[str, Any]:
    """Δ = mean(aligned) − mean(base) with a 95 % bootstrap interval (paired on shared item ids)."""
    rng = np.random.default_rng(seed)
    shared = sorted(set(base) & set(aligned))
    paired = bool(shared) and len(shared) == len(base) == len(aligned)
    if paired:
        d = np.asarray([aligned[k] - base[k] for k in shared])
        delta = float(d.mean())
        ci = _ci(d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)) if n_boot > 0 else None
    else:
        a, b = np.asarray(list(aligned.values())), np.asarray(list(base.values()))
        delta = float(a.mean() - b.mean())
        ci = None
        if n_boot > 0:
            sa = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
            sb = b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1)
            ci = _ci(sa - sb)
    return {
        "delta": delta,
        "delta_ci": list(ci) if ci else None,
        "paired": paired,
        "n": len(shared) if paired else None,
    }


def load_side(d: Path) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    s, i = d / "summary.json", d / "items.json"
    if not s.exists():
        raise DataError(f"{s}: missing; run `ptalign eval` for that model first")
    summary = json.loads(s.read_text())
    items = json.loads(i.read_text()) if i.exists() else {}
    return summary, items


def compare(
    base: tuple[dict, dict], aligned: tuple[dict, dict], n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Rows keyed by metric: base, aligned, delta, CIs (metrics without items get values and delta only)."""
    (bs, bi), (as_, ai) = base, aligned
    rows: dict[str, Any] = {}
    keys = [k for k in bs if k.startswith("eval/")] + [
        k for k in as_ if k.startswith("eval/") and k not in bs
    ]
    for k in keys:
        bv, av = bs.get(k), as_.get(k)
        row: dict[str, Any] = {
            "base": bv,
            "aligned": av,
            "delta": (av - bv) if isinstance(av, (int, float)) and isinstance(bv, (int, float)) else None,
        }
        if bi.get(k) and ai.get(k):
            row.update(delta_ci(bi[k], ai[k], n_boot, seed))
            row["base_ci"] = bootstrap_mean_ci(list(bi[k].values()), n_boot, seed)
            row["aligned_ci"] = bootstrap_mean_ci(list(ai[k].values()), n_boot, seed)
        rows[k] = row
    return {"rows": rows, "base": bs.get("meta", {}), "aligned": as_.get("meta", {}), "bootstrap": n_boot}


def compare_dirs(base_dir: Path, aligned_dir: Path, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    return compare(load_side(base_dir), load_side(aligned_dir), n_boot, seed)


def write(path: Path, comparison: dict[str, Any]) -> Path:
    atomic_write_json(path, comparison)
    return path


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


HEADLINE = (
    "eval/asr",
    "eval/asr_autodan",
    "eval/overrefusal",
    "eval/hhh_harmless",
    "eval/hhh_helpful",
    "eval/hhh_honest",
    "eval/hhh_other",
    "eval/mtbench_score",
    "eval/harm_score",
)


def table(comparison: dict[str, Any], skip_counts: bool = True) -> str:
    """Plain-text table: metric | base | aligned | Δ [95 % CI]."""
    rows = comparison["rows"]
    keys = [k for k in HEADLINE if k in rows] + [k for k in rows if k not in HEADLINE]
    if skip_counts:
        keys = [k for k in keys if not k.endswith(("_n", "_parsed"))]
    lines = [f"{'metric':34} {'base':>8} {'aligned':>8} {'delta':>8}  95% CI"]
    for k in keys:
        r = rows[k]
        ci = r.get("delta_ci")
        cis = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
        d = r.get("delta")
        lines.append(
            f"{k:34} {_fmt(r['base']):>8} {_fmt(r['aligned']):>8} {('-' if d is None else f'{d:+.3f}'):>8}  {cis}"
        )
    return "\n".join(lines)


def summary_table(summary: dict[str, Any]) -> str:
    """Plain-text table of one model's metrics."""
    keys = [k for k in HEADLINE if k in summary] + [
        k for k in summary if k.startswith("eval/") and k not in HEADLINE
    ]
    return "\n".join(f"{k:34} {_fmt(summary[k]):>8}" for k in keys if not k.endswith(("_n", "_parsed")))
