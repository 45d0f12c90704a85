"""Stored verdicts read back: only the version asked for counts, an unparsed verdict is in no
share's denominator, and replies to harmless prompts are read by judges of refusal only."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_helpers import tiny_cfg

from ptalign.eval import asr
from ptalign.eval.common import judge_names, read_verdicts
from ptalign.io import stable_id, write_jsonl
from ptalign.judges import COMPLIANCE, NON_ANSWER, REFUSAL


def _line(rec: str, judge: str, version: str, verdict: str | None) -> dict:
    return {"id": stable_id(rec, judge, version), "rec": rec, "judge": judge, "version": version,
            "verdict": verdict, "reason": "", "score": None, "categories": [], "raw": ""}  # fmt: skip


def test_a_judge_put_back_reads_its_own_verdicts(tmp_path: Path) -> None:
    """Version A, then B, then A again (its lines already stored, so not judged anew): A's verdicts."""
    lines = [_line(r, "minilm", "A", REFUSAL) for r in ("r1", "r2")]
    lines += [_line(r, "minilm", "B", COMPLIANCE) for r in ("r1", "r2")]
    lines += [_line("r1", "xstest", "", NON_ANSWER)]
    write_jsonl(tmp_path / "asr_verdicts.jsonl", lines)
    got = read_verdicts(tmp_path, "asr", {"minilm": "A", "xstest": ""})
    assert {r: v["verdict"] for r, v in got["minilm"].items()} == {"r1": REFUSAL, "r2": REFUSAL}
    assert got["xstest"]["r1"]["verdict"] == NON_ANSWER
    assert read_verdicts(tmp_path, "asr", {"minilm": "C"}) == {}  # a judge with no verdicts yet
    # no versions given (a summary from before they were recorded): each judge's last line per record
    last = read_verdicts(tmp_path, "asr")
    assert {r: v["verdict"] for r, v in last["minilm"].items()} == {"r1": COMPLIANCE, "r2": COMPLIANCE}


def test_readers_of_a_run_read_the_versions_its_summary_recorded(tmp_path: Path) -> None:
    """The report and bench/audit.py read a side's verdicts by the versions its summary.json names."""
    from ptalign.eval.common import stored_versions
    from ptalign.io import atomic_write_json

    assert stored_versions(tmp_path) is None  # no summary yet
    write_jsonl(
        tmp_path / "asr_verdicts.jsonl",
        [_line("r1", "minilm", "A", REFUSAL), _line("r1", "minilm", "B", COMPLIANCE)],
    )
    atomic_write_json(tmp_path / "summary.json", {"meta": {"judge_versions": {"minilm": "A"}}})
    assert stored_versions(tmp_path) == {"minilm": "A"}
    assert read_verdicts(tmp_path, "asr", stored_versions(tmp_path))["minilm"]["r1"]["verdict"] == REFUSAL


def test_verdict_shares_leave_unparsed_replies_out(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, "eval.attacks=direct,roleplay", "eval.judge=keyword", "eval.judges_extra=")
    items = asr.wanted(cfg.eval)
    assert [it["attack"] for it in items] == ["direct", "roleplay"] * 3
    write_jsonl(
        tmp_path / "asr.jsonl", [{**asr._fields(it, ""), "id": it["id"], "text": "Sure."} for it in items]
    )
    said = [COMPLIANCE, REFUSAL, None, REFUSAL, REFUSAL, NON_ANSWER]  # direct: C, None, R; role-play: R, R, N
    lines = [_line(it["id"], "keyword", "", v) for it, v in zip(items, said, strict=True)]
    lines += [_line(it["id"], "keyword", "retired", COMPLIANCE) for it in items]  # another version, later
    write_jsonl(tmp_path / "asr_verdicts.jsonl", lines)
    res = asr.summarize(tmp_path, cfg.eval)
    by_attack = res["groups"]["verdicts_by_attack"]
    assert by_attack["direct"] == {REFUSAL: 0.5, COMPLIANCE: 0.5, NON_ANSWER: 0.0}
    assert by_attack["roleplay"] == pytest.approx({REFUSAL: 2 / 3, COMPLIANCE: 0.0, NON_ANSWER: 1 / 3})
    assert res["metrics"]["eval/asr_direct"] == 0.5 and res["metrics"]["eval/asr_unparsed"] == 1


def test_harmless_prompts_are_judged_by_judges_of_refusal_only(tmp_path: Path) -> None:
    """HarmBench and Llama Guard judge harm ('safe' is no refusal): replies to harmless prompts skip them."""
    extra = "eval.judges_extra=harmbench,xstest,llamaguard,strongreject"
    ecfg = tiny_cfg(tmp_path, "eval.judge=keyword", extra).eval
    assert judge_names(ecfg) == ["keyword", "harmbench", "xstest", "llamaguard", "strongreject"]
    assert judge_names(ecfg, harmless=True) == ["keyword", "xstest", "strongreject"]
