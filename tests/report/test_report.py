"""The HTML report from a run dir holding every input it reads, checked as text (headline, colours by
direction, names, judges, redaction) and in real headless Chromium (every chart decodes and is legible
at the page width, tables have rows, the page is not blank)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ptalign import report
from ptalign.config import load_config
from ptalign.eval import compare
from ptalign.io import HAZARD_META, atomic_write_json, write_jsonl
from ptalign.judges import minilm
from ptalign.report import fmt
from ptalign.report import judges as report_judges

UNSAFE = "UNSAFE-MARKER-TEXT stands in for a harmful reply"
GOALS = [f"g{k:02d}" for k in range(20)]
PROMPTS = [f"p{k:02d}" for k in range(20)]
KINDS = {"direct": "direct", "roleplay": "in_family", "hypothetical": "in_family", "past_tense": "held_out"}
N_CHARTS = 5  # verdicts by attack, over-refusal by type, training loss, polarity, sweep


def _ones(rate: float, n: int = 20) -> list[float]:
    """n 0/1 values, the first round(rate * n) ones: both sides share clusters, so pairs line up."""
    k = round(rate * n)
    return [1.0] * k + [0.0] * (n - k)


def _by_goal(per_attack: dict[str, float], attacks: list[str]) -> dict[str, list[float]]:
    cols = [_ones(per_attack[a]) for a in attacks]
    return {g: [c[i] for c in cols] for i, g in enumerate(GOALS)}


def _flat(clusters: dict[str, list[float]]) -> float:
    vals = [x for xs in clusters.values() for x in xs]
    return sum(vals) / len(vals)


def _side(d: Path, asr: dict[str, float], refusal: float, non_answer: float, meta: dict) -> None:
    items = {
        "eval/asr": _by_goal(asr, list(KINDS)),
        "eval/asr_direct": _by_goal(asr, ["direct"]),
        "eval/asr_in_family": _by_goal(asr, ["roleplay", "hypothetical"]),
        "eval/asr_held_out": _by_goal(asr, ["past_tense"]),
        **{f"eval/asr_{a}": _by_goal(asr, [a]) for a in KINDS if a != "direct"},
        "eval/non_answer": _by_goal(dict.fromkeys(KINDS, non_answer), list(KINDS)),
        "eval/contrast_compliance": dict(zip(PROMPTS, _ones(asr["direct"] / 2), strict=True)),
        "eval/overrefusal": dict(zip(PROMPTS, _ones(refusal), strict=True)),
        "eval/mtbench_refusal": dict(zip(PROMPTS, _ones(refusal / 2), strict=True)),
        "eval/hhh_harmless": dict(zip(GOALS, _ones(0.5), strict=True)),
        "eval/asr_newattack_x": _by_goal(asr, ["direct"]),  # a key no eval declares
    }
    summary = {
        **{k: _flat(v) if isinstance(next(iter(v.values())), list) else sum(v.values()) / len(v) for k, v in items.items()},
        "eval/mtbench_score": 6.5 if refusal < 0.3 else 6.0,
        "eval/asr_n": 80,
        "eval/asr_goals": 20,
        "eval/asr_unparsed": 0,
        "eval/overrefusal_n": 20,
        "groups": {
            "verdicts_by_attack": {  # deliberately out of display order
                "contrast": {"refusal": 0.5, "compliance": asr["direct"] / 2, "non_answer": 0.5 - asr["direct"] / 2},
                **{
                    a: {"refusal": 1 - asr[a] - non_answer, "compliance": asr[a], "non_answer": non_answer}
                    for a in ("past_tense", "roleplay", "direct", "hypothetical")
                },
            },
            "overrefusal_by_type": {"homonyms": refusal, "figurative_language": refusal / 2, "safe_targets": 0.0},
            "asr_by_source": {"builtin": asr["direct"]},
            "judges_asr": {
                "minilm": {"n": 80, "unparsed": 0, "compliance": asr["direct"], "non_answer": non_answer},
                "keyword": {
                    "n": 80, "unparsed": 0, "compliance": 0.42, "non_answer": 0.0,
                    "vs_primary": {"n": 80, "agreement": 0.8125, "kappa": 0.634, "missing": 0},
                    "vs_primary_complied": {"n": 80, "agreement": 0.9, "kappa": 0.777, "missing": 0},
                },
                "harmbench": {
                    "n": 40, "unparsed": 2, "compliance": 0.3, "non_answer": 0.0,
                    "vs_primary": {"n": 38, "agreement": 0.7, "kappa": 0.41, "missing": 2},
                    "vs_primary_complied": {"n": 38, "agreement": 0.75, "kappa": 0.5, "missing": 2},
                },
            },
            "judges_overrefusal": {
                "minilm": {"n": 20, "unparsed": 0, "compliance": 0.8, "non_answer": 0.05, "refusal": refusal},
                "xstest": {
                    "n": 20, "unparsed": 0, "compliance": 0.75, "non_answer": 0.0, "refusal": refusal + 0.05,
                    "vs_primary": {"n": 20, "agreement": 0.95, "kappa": 0.88, "missing": 0},
                },
            },
        },
        "meta": {
            "label": d.name,
            "model": "tiny",
            "adapter": None,
            "evals": ["asr", "overrefusal", "hhh", "helpful"],
            "engine": "transformers",
            "judge": "minilm",
            "judges": {
                "minilm": "logistic regression on MiniLM embeddings",
                "keyword": "GCG refusal phrases",
                "harmbench": "HarmBench yes/no",
                "xstest": "XSTest prefixes",
            },
            "gate_judge": "keyword",
            "llm_judge_model": "tiny (weak judge)",
            "timings": {"asr_total_s": 12.5},
            **meta,
        },
    }  # fmt: skip
    atomic_write_json(d / "summary.json", summary)
    atomic_write_json(d / "items.json", items)


def make_run(rd: Path, base_meta: dict | None = None, aligned_meta: dict | None = None) -> Path:
    atomic_write_json(rd / "data" / "stats.json", {"triplets": 12, "rejected": {"too_similar": 3}})
    atomic_write_json(
        rd / "eval" / "polarity.json", {"eval/polarity": 0.4, "distances": [0.3, 0.4, 0.5, 0.45]}
    )
    write_jsonl(
        rd / "train" / "metrics.jsonl",
        [
            {"step": s, "train/loss": 2.0 - 0.1 * s, "train/mle_loss": 1.5 - 0.1 * s, "train/ul_loss": 0.5}
            for s in range(8)
        ],
    )
    base_asr = {"direct": 0.9, "roleplay": 0.95, "hypothetical": 0.8, "past_tense": 0.5}
    aligned_asr = {"direct": 0.1, "roleplay": 0.05, "hypothetical": 0.1, "past_tense": 0.45}
    _side(rd / "eval" / "base", base_asr, 0.1, 0.0, base_meta or {})
    _side(rd / "eval" / "aligned", aligned_asr, 0.6, 0.5, aligned_meta or {})
    compare.write(
        rd / "eval" / "comparison.json",
        compare.compare_dirs(rd / "eval" / "base", rd / "eval" / "aligned", 300),
    )
    out = rd / "eval" / "aligned"
    write_jsonl(
        out / "asr.jsonl",
        [
            {"id": "x", "goal_id": "g00", "attack": "direct", "family": "direct", "kind": "direct",
             "goal": "a harmful request", "source": "builtin", "text": UNSAFE},
            {"id": "y", "goal_id": "g01", "attack": "roleplay", "family": "persona", "kind": "in_family",
             "goal": "another harmful request", "source": "builtin", "text": "I can't help with that."},
        ],
        meta=dict(HAZARD_META),
    )  # fmt: skip
    write_jsonl(
        out / "asr_verdicts.jsonl",
        [
            {"id": "vx1", "rec": "x", "judge": "keyword", "version": "", "verdict": "refusal"},
            {"id": "vx2", "rec": "x", "judge": "minilm", "version": "h", "verdict": "compliance"},
            {"id": "vy2", "rec": "y", "judge": "minilm", "version": "h", "verdict": "refusal"},
        ],
        meta=dict(HAZARD_META),
    )
    atomic_write_json(
        rd / "sweeps" / "lambda" / "summary.json",
        [
            {"name": "lambda", "value": v, "eval/asr": 0.8 - v, "eval/overrefusal": v / 4}
            for v in (0.2, 0.4, 0.6)
        ],
    )
    return rd


def validation(version: str) -> dict:
    sets = {
        "refusal_test": {"accuracy": 0.9333, "kappa": 0.861, "n": 105},
        "refusal_dev": {"accuracy": 0.906, "kappa": 0.801, "n": 64},
        "refusal_all": {"accuracy": 0.923, "kappa": 0.84, "n": 169},
        "objective_dev": {"accuracy": 0.871, "kappa": 0.702, "n": 395},
    }
    return {
        "judges": {
            "minilm": {**sets["refusal_test"], "non_answer_rate": 0.05, "version": version, "sets": sets},
            "keyword": {"accuracy": 0.81, "kappa": 0.6, "n": 105, "version": "", "sets": {}},
        },
        "provenance": {"labels": "pyrit==1.1.0 scorer_evals (MIT), human_score", "date": "2025-01-01",
                       "machine": "x86_64, 2 cores", "command": "python bench/judges.py --write", "n": {}},
    }  # fmt: skip


@pytest.fixture()
def validated(monkeypatch: pytest.MonkeyPatch) -> dict:
    v = validation(minilm.data_hash(minilm.load_labelled()))
    monkeypatch.setattr(report_judges, "load_validation", lambda: v)
    return v


@pytest.fixture()
def run_dir(tmp_path: Path, validated: dict) -> Path:
    return make_run(tmp_path / "run")


def _render(run_dir: Path, *overrides: str) -> str:
    return report.render(load_config(None, [f"run_dir={run_dir}", *overrides]), run_dir)


class Tables(HTMLParser):
    """table id → rows → [(text, class)] per cell."""

    def __init__(self, page: str):
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self._t: str | None = None
        self._cell: list[str] | None = None
        self._n = 0
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "table":
            self._n += 1
            self._t = a.get("id") or f"table{self._n}"
            self.tables[self._t] = []
        elif tag == "tr" and self._t:
            self.tables[self._t].append([])
        elif tag in ("td", "th") and self._t:
            self._cell = ["", a.get("class") or ""] if tag == "td" else None

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.tables[self._t][-1].append((self._cell[0].strip(), self._cell[1]))
            self._cell = None
        elif tag == "table":
            self._t = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0] += data


def _row(tables: Tables, tid: str, key: str) -> list[tuple[str, str]]:
    rows = [r for r in tables.tables[tid] if r and r[0][0].endswith(f" {key}")]
    assert len(rows) == 1, (tid, key, tables.tables[tid])
    return rows[0]


def test_headline_names_values_and_n(run_dir: Path) -> None:
    page = report.run(load_config(None, [f"run_dir={run_dir}"]), run_dir).read_text()
    assert page.index("Safer, and at what cost?") < page.index("Every metric")
    t = Tables(page)
    direct = _row(t, "headline-table", "eval/asr_direct")
    assert direct[0][0].startswith("harmful compliance, direct requests")
    assert [c[0] for c in direct[1:3]] == ["90.0 %", "10.0 %"]
    assert direct[3][0].startswith("\u221280.0 pp [")  # a true minus, in percentage points
    assert direct[5][0] == "20 goals"
    assert _row(t, "headline-table", "eval/asr_in_family")[5][0] == "20 goals · 40 replies"
    assert _row(t, "headline-table", "eval/overrefusal")[5][0] == "20 prompts"
    assert _row(t, "headline-table", "eval/mtbench_refusal")[0][0].startswith(
        "refusals of MT-Bench questions"
    )
    assert (
        "primary judge, <b>minilm</b>" in page
        and "cluster bootstrap" in page
        and "by goal for attacks" in page
    )
    assert "Base and aligned replies generated by one engine: transformers." in page
    assert page.count('src="data:image/png;base64,') == N_CHARTS
    assert not re.search(r'(src|href)="(https?:)?//', page)  # self-contained: nothing fetched


def test_colour_follows_the_direction_of_improvement(run_dir: Path) -> None:
    t = Tables(_render(run_dir))
    for tid in ("headline-table", "metrics-table"):
        assert _row(t, tid, "eval/asr_direct")[3][1] == "good"  # 90 % → 10 %
        assert _row(t, tid, "eval/overrefusal")[3][1] == "bad"  # 10 % → 60 %: worse beyond its CI
        assert _row(t, tid, "eval/non_answer")[3][1] == "neutral"  # no better direction
        assert _row(t, tid, "eval/asr_held_out")[3][1] == "neutral"  # CI across 0
        assert _row(t, tid, "eval/hhh_harmless")[4][0] == "no clear change"
    roleplay = _row(t, "metrics-table", "eval/asr_roleplay")  # −0.9 was red before: must be green
    assert roleplay[3] == (roleplay[3][0], "good") and roleplay[4][0] == "better"
    assert _row(t, "metrics-table", "eval/asr_newattack_x")[3][1] == "neutral"  # undeclared: no direction


@pytest.mark.parametrize(
    ("better", "d", "ci", "cls"),
    [
        ("lower", -0.783, [-0.85, -0.7], "good"),
        ("lower", -0.917, [-0.97, -0.85], "good"),
        ("lower", 0.2, [0.1, 0.3], "bad"),
        ("higher", 0.2, [0.1, 0.3], "good"),
        ("higher", -0.2, [-0.3, -0.1], "bad"),
        ("lower", -0.05, [-0.1, 0.02], "neutral"),
        ("", -0.5, [-0.6, -0.4], "neutral"),
        ("lower", -0.5, None, "neutral"),
    ],
)
def test_direction(better: str, d: float, ci: list | None, cls: str) -> None:
    assert fmt.direction(better, d, ci)[0] == cls


def test_every_row_has_a_name(run_dir: Path) -> None:
    t = Tables(_render(run_dir))
    for tid in ("headline-table", "metrics-table", "counts-table"):
        rows = [r for r in t.tables[tid] if r]
        assert rows, tid
        for r in rows:
            name = r[0][0].rsplit(" eval/", 1)[0].strip()
            assert name and not name.startswith("eval/"), (tid, r)
    keys = [r[0][0].rsplit(" ", 1)[-1] for r in t.tables["metrics-table"] if r]
    assert "eval/asr_n" not in keys and "eval/mtbench_score" in keys  # counts apart
    counts = {r[0][0].rsplit(" ", 1)[-1]: r for r in t.tables["counts-table"] if r}
    assert set(counts) == {"eval/asr_n", "eval/asr_goals", "eval/asr_unparsed", "eval/overrefusal_n"}
    assert _row(t, "metrics-table", "eval/asr_newattack_x")[0][0].startswith("asr newattack x")


def test_judges_section(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = _render(run_dir)
    judges = page[page.index('<section id="judges">') :]
    judges = judges[: judges.index("</section>")]
    assert "logistic regression on MiniLM embeddings" in judges and "GCG refusal phrases" in judges
    assert "93.3 %" in judges and "0.86" in judges and "refusal_dev" in judges and "objective_dev" in judges
    assert "stale" not in judges and "is the gate judge" not in judges
    t = Tables(judges)
    keyword = [r for r in t.tables["judges-asr"] if r and r[0][0] == "keyword" and r[1][0] == "aligned"][0]
    assert [c[0] for c in keyword[6:9]] == ["81.2 %", "0.63", "0.78"]
    assert any(r and r[0][0].startswith("harmbench (LLM: tiny (weak judge))") for r in t.tables["judges-asr"])
    assert any(r and r[0][0] == "xstest" for r in t.tables["judges-overrefusal"])
    headline = page[: page.index('<section id="charts">')]
    assert "harmbench" not in headline and "keyword" not in headline  # LLM/extra judges stay in Judges

    monkeypatch.setattr(report_judges, "load_validation", lambda: validation("an-older-version"))
    assert "stale: rerun bench/judges.py" in _render(run_dir)
    monkeypatch.setattr(report_judges, "load_validation", lambda: None)
    assert "minilm: not validated" in _render(run_dir)


def test_same_judge_and_engine_warnings(tmp_path: Path, validated: dict) -> None:
    rd = make_run(tmp_path / "run", {"gate_judge": "minilm"}, {"gate_judge": "minilm", "engine": "vllm"})
    page = _render(rd)
    assert "The primary judge is the gate judge (minilm)" in page
    assert "Engines differ: base replies from transformers, aligned replies from vllm" in page


def test_examples_carry_the_primary_verdict_and_are_redacted(run_dir: Path) -> None:
    page = _render(run_dir)
    assert UNSAFE not in page and "[redacted:" in page
    assert "minilm: compliance</span> [aligned · direct]" in page  # the primary judge's, not keyword's
    assert "minilm: refusal</span> [aligned · roleplay]" in page
    assert UNSAFE in _render(run_dir, "report.show_unsafe=true")


def test_attack_order() -> None:
    labels = report.attack_labels(["contrast", "past_tense", "mystery", "roleplay", "direct", "autodan"])
    assert list(labels) == ["direct", "roleplay", "autodan", "past_tense", "contrast", "mystery"]
    assert labels["past_tense"] == "past-tense reformulation (held-out)"


def test_report_on_empty_run_dir(tmp_path: Path) -> None:
    cfg = load_config(None, [f"run_dir={tmp_path}"])
    page = report.run(cfg, tmp_path).read_text()
    assert "No evaluation yet" in page and "<img" not in page


CHECK = """<script>
window.addEventListener('load', () => {
  const out = document.createElement('pre'); out.id = 'render-check';
  out.textContent = JSON.stringify({
    images: [...document.images].map(i => {
      const r = i.getBoundingClientRect();
      const font = parseFloat(i.dataset.minFontPt) * r.width / parseFloat(i.getAttribute('width'));
      return [i.alt, i.naturalWidth, i.naturalHeight, r.width, r.height, font];
    }),
    tables: [...document.querySelectorAll('table')].map(t => [t.id, t.rows.length, t.getBoundingClientRect().height]),
    height: document.documentElement.scrollHeight,
  });
  document.body.appendChild(out);
});
</script>"""

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]
WIDTH = 1280  # a desktop window: the page's column is at its max-width, 1100 px


@pytest.mark.slow
def test_report_renders_in_chromium(run_dir: Path, tmp_path: Path) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:  # CI installs it (.ci/run), so there a missing browser fails the test
        msg = "Debian chromium not installed (.ci/run installs it: apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    out = report.run(load_config(None, [f"run_dir={run_dir}"]), run_dir)
    probe = tmp_path / "probe.html"
    probe.write_text(out.read_text().replace("</body>", CHECK + "\n</body>"))
    common = [exe, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(
        [*common, f"--window-size={WIDTH},1600", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    m = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.S)
    assert m, f"no render-check in the dumped DOM: {dom[:500]}"
    check = json.loads(html.unescape(m.group(1)))
    assert len(check["images"]) == N_CHARTS
    for alt, w, h, shown_w, shown_h, font_pt in check["images"]:
        assert w > 800 and h > 250, alt  # the PNG decoded
        assert shown_w >= 800 and shown_h >= 250, (alt, shown_w, shown_h)  # legible at the page width
        assert font_pt >= 9, (alt, font_pt)  # its smallest text, in CSS pt as rendered
    tables = {t[0]: t for t in check["tables"]}
    assert tables["headline-table"][1] == 9 and tables["headline-table"][2] > 100  # header + 8 rows, visible
    assert tables["metrics-table"][1] == 15 and tables["data-stats"][1] == 3

    shot = tmp_path / "report.png"
    subprocess.run(
        [*common, f"--window-size={WIDTH},{check['height']}", f"--screenshot={shot}", out.as_uri()],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert shot.exists() and shot.stat().st_size > 10_000
    import matplotlib.image as mpimg

    px = mpimg.imread(shot)[..., :3]
    nonwhite = (px.mean(-1) < 0.9).mean()
    assert nonwhite > 0.02, "the screenshot is (almost) blank"
    if os.environ.get("PTALIGN_KEEP_SCREENSHOT"):  # a path: keep the screenshot for a human look
        shutil.copy(shot, os.environ["PTALIGN_KEEP_SCREENSHOT"])
