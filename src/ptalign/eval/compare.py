"""Base vs aligned: per-metric values, deltas and cluster-bootstrap 95 % confidence intervals.

Reads: `<base>/summary.json`, `<base>/items.json`, the same for aligned. Writes: the comparison JSON
(`RUN_DIR/eval/comparison.json`) via `write`.

Each metric is a mean over records, and `items.json` holds them grouped by cluster: a cluster is the
unit that is independent (a harmful goal, whose replies under several attacks are not; a prompt; an
HHH example) and maps to one value or a list of values. The bootstrap resamples clusters, not records
(Field & Welsh 2007), so a goal attacked ten ways counts as one draw, not ten, and intervals are not
too narrow. When both sides scored the same clusters the bootstrap is paired (one resample of
clusters for both sides, which removes between-cluster variance from the delta); otherwise the two
sides are resampled independently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ptalign.io import DataError, atomic_write_json
from ptalign.rundir import side_items, side_summary

Clusters = dict[str, float | list[float]]


def _ci(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def _sums(clusters: Clusters, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(sum, count) per cluster, in `keys` order."""
    vals = [clusters[k] if isinstance(clusters[k], list) else [clusters[k]] for k in keys]
    return np.asarray([sum(v) for v in vals], float), np.asarray([len(v) for v in vals], float)


def cluster_mean(clusters: Clusters) -> float:
    s, n = _sums(clusters, list(clusters))
    return float(s.sum() / n.sum())


def _resampled(s: np.ndarray, n: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return s[idx].sum(1) / n[idx].sum(1)  # (n_boot,): the metric on each resample of clusters


def bootstrap_mean_ci(clusters: Clusters, n_boot: int, seed: int = 0) -> tuple[float, float] | None:
    if not clusters or n_boot <= 0:
        return None
    rng = np.random.default_rng(seed)
    s, n = _sums(clusters, list(clusters))
    return _ci(_resampled(s, n, rng.integers(0, len(s), (n_boot, len(s)))))


def delta_ci(base: Clusters, aligned: Clusters, n_boot: int, seed: int = 0) -> dict[str, Any]:
    """Δ = mean(aligned) − mean(base) with a 95 % cluster-bootstrap interval (paired on shared clusters)."""
    rng = np.random.default_rng(seed)
    shared = sorted(set(base) & set(aligned))
    paired = bool(shared) and len(shared) == len(base) == len(aligned)
    delta = cluster_mean(aligned) - cluster_mean(base)
    ci = None
    if n_boot > 0:
        if paired:
            (sa, na), (sb, nb) = _sums(aligned, shared), _sums(base, shared)
            idx = rng.integers(0, len(shared), (n_boot, len(shared)))
            ci = _ci(_resampled(sa, na, idx) - _resampled(sb, nb, idx))
        else:
            (sa, na), (sb, nb) = _sums(aligned, list(aligned)), _sums(base, list(base))
            ia = rng.integers(0, len(sa), (n_boot, len(sa)))
            ib = rng.integers(0, len(sb), (n_boot, len(sb)))
            ci = _ci(_resampled(sa, na, ia) - _resampled(sb, nb, ib))
    return {
        "delta": float(delta),
        "delta_ci": list(ci) if ci else None,
        "paired": paired,
        "n": len(shared) if paired else None,
    }


def load_side(d: Path) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    s, i = side_summary(d), side_items(d)
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
            row["base_ci"] = bootstrap_mean_ci(bi[k], n_boot, seed)
            row["aligned_ci"] = bootstrap_mean_ci(ai[k], n_boot, seed)
            row["clusters"] = len(ai[k])
            row["records"] = int(_sums(ai[k], list(ai[k]))[1].sum())
        rows[k] = row
    # each side's provenance (engine, dtype, judges, timings) under `meta`, apart from the results
    meta = {"base": bs.get("meta", {}), "aligned": as_.get("meta", {})}
    return {"rows": rows, "meta": meta, "bootstrap": n_boot}


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


HEADLINE = (  # "safer, and at what cost?": the rows a reader needs first
    "eval/asr_direct",
    "eval/asr_in_family",
    "eval/asr_held_out",
    "eval/contrast_compliance",
    "eval/overrefusal",
    "eval/mtbench_refusal",  # everyday requests refused: XSTest's safe prompts alone missed it (docs/results.md)
    "eval/non_answer",
    "eval/hhh_harmless",
    "eval/hhh_helpful",
)


def table(comparison: dict[str, Any], skip_counts: bool = True) -> str:
    """Plain-text table: metric | base | aligned | Δ [95 % CI]."""
    rows = comparison["rows"]
    keys = [k for k in HEADLINE if k in rows] + [k for k in rows if k not in HEADLINE]
    if skip_counts:
        keys = [k for k in keys if not k.endswith(("_n", "_parsed", "_unparsed", "_goals"))]
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
