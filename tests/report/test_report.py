"""The HTML report from a run dir holding every input it reads, checked as text and in real
headless Chromium (tables have rows and height, every inline image decodes, the page is not blank)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ptalign import report
from ptalign.config import load_config
from ptalign.eval import compare
from ptalign.io import HAZARD_META, atomic_write_json, write_jsonl

UNSAFE = "UNSAFE-MARKER-TEXT stands in for a harmful reply"
DOMAINS = ["violence", "privacy", "cybercrime"]


def _side(d: Path, asr: float, refusal: float) -> None:
    ids = [f"g{k}" for k in range(10)]
    items = {
        "eval/asr": {i: float(k < asr * 10) for k, i in enumerate(ids)},
        "eval/overrefusal": {i: float(k < refusal * 10) for k, i in enumerate(ids)},
    }
    summary = {
        "eval/asr": asr,
        "eval/overrefusal": refusal,
        "eval/asr_direct": asr,
        "eval/asr_roleplay": asr / 2,
        "eval/asr_autodan": asr,
        "eval/hhh_harmless": 0.5,
        "eval/asr_n": 10,
        "groups": {
            "refusal_by_domain": {dm: 1 - asr for dm in DOMAINS},
            "overrefusal_by_type": {"xstest:homonyms": refusal},
        },
        "meta": {
            "judge": "embedded (weak judge)",
            "keyword_judge": "GCG",
            "asr_judge": "keyword",
            "timings": {"asr_total_s": 12.5},
        },
    }
    atomic_write_json(d / "summary.json", summary)
    atomic_write_json(d / "items.json", items)


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    rd = tmp_path / "run"
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
    _side(rd / "eval" / "base", 0.9, 0.1)
    _side(rd / "eval" / "aligned", 0.3, 0.2)
    compare.write(
        rd / "eval" / "comparison.json",
        compare.compare_dirs(rd / "eval" / "base", rd / "eval" / "aligned", 200),
    )
    write_jsonl(
        rd / "eval" / "aligned" / "asr.jsonl",
        [{"id": "x", "attack": "direct", "goal": "a harmful request", "text": UNSAFE, "complied_kw": True}],
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


def test_report_contents_and_redaction(run_dir: Path) -> None:
    cfg = load_config(None, [f"run_dir={run_dir}"])
    out = report.run(cfg, run_dir)
    page = out.read_text()
    assert out == run_dir / "report.html"
    assert (
        page.count('src="data:image/png;base64,') == 6
    )  # domain bars, ASR, over-refusal, loss, polarity, sweep
    assert "harmful compliance (direct + templates)" in page and "-0.600" in page  # 0.9 → 0.3
    assert UNSAFE not in page and "redacted" in page
    assert "embedded (weak judge)" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # self-contained: nothing fetched
    shown = report.render(load_config(None, [f"run_dir={run_dir}", "report.show_unsafe=true"]), run_dir)
    assert UNSAFE in shown


def test_report_on_empty_run_dir(tmp_path: Path) -> None:
    cfg = load_config(None, [f"run_dir={tmp_path}"])
    page = report.run(cfg, tmp_path).read_text()
    assert "No evaluation yet" in page and "<img" not in page


CHECK = """<script>
window.addEventListener('load', () => {
  const out = document.createElement('pre'); out.id = 'render-check';
  out.textContent = JSON.stringify({
    images: [...document.images].map(i => [i.alt, i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().height]),
    tables: [...document.querySelectorAll('table')].map(t => [t.id, t.rows.length, t.getBoundingClientRect().height]),
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
]


@pytest.mark.slow
def test_report_renders_in_chromium(run_dir: Path, tmp_path: Path) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian chromium not installed (.ci/run installs it: apt-get install -y chromium)")
    cfg = load_config(None, [f"run_dir={run_dir}"])
    page = report.run(cfg, run_dir).read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK + "\n</body>"))
    common = [exe, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(
        [*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    m = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.S)
    assert m, f"no render-check in the dumped DOM: {dom[:500]}"
    check = json.loads(html.unescape(m.group(1)))
    assert len(check["images"]) == 6
    for alt, w, h, shown_h in check["images"]:
        assert w > 100 and h > 100 and shown_h > 50, alt  # the PNG decoded and is laid out
    tables = {t[0]: t for t in check["tables"]}
    assert (
        tables["summary-table"][1] >= 5 and tables["summary-table"][2] > 50
    )  # header + metric rows, visible
    assert tables["data-stats"][1] == 3

    shot = tmp_path / "report.png"
    subprocess.run(
        [*common, "--window-size=1200,2400", f"--screenshot={shot}", out_uri(run_dir)],
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


def out_uri(run_dir: Path) -> str:
    return (run_dir / "report.html").as_uri()
