"""`ptalign eval` and `ptalign report` called in-process on the embedded model (llama.cpp only, tiny)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptalign.cli import main


@pytest.mark.slow
def test_cli_eval_then_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], embedded_gguf: Path
) -> None:
    out = tmp_path / "run" / "eval"
    argv = [
        "eval",
        "--set",
        f"run_dir={tmp_path / 'run'}",
        "--set",
        "eval.evals=asr,overrefusal",
        "--set",
        "eval.attacks=direct",
        "--set",
        "eval.max_harmful=1",
        "--set",
        "eval.max_safe=1",
        "--set",
        "eval.max_new_tokens=6",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    s = json.loads((out / "base" / "summary.json").read_text())
    assert (
        s["eval/asr_n"] == 1 and s["eval/overrefusal_n"] == 1
    )  # 1 built-in goal, 1 benign prompt (no data_dir)
    printed = capsys.readouterr().out
    assert "eval/asr" in printed and "[redacted:" in printed  # harmful replies are never printed raw
    assert main(["report", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "report.html").stat().st_size > 1000


def test_cli_eval_bad_value_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--set", "eval.max_safe=-1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "ptalign: error: eval.max_safe=-1: must be >= 0 (0 = all)"
    assert (
        main(
            [
                "eval",
                "--set",
                f"eval.data_dir={tmp_path / 'none'}",
                "--set",
                f"run_dir={tmp_path}",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "not a directory" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                "--set",
                f"eval.xstest_path={tmp_path / 'x.csv'}",
                "--set",
                f"run_dir={tmp_path}",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "eval.xstest_path=" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # checked before anything is loaded or written
