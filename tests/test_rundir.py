"""The run directory owns every path and the one resume rule; the stage registry names real modules."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from ptalign.errors import UserError
from ptalign.pipeline import STAGES
from ptalign.rundir import DATA_FILES, SIDES, RunDir, check_state, read_state, save_state


def test_paths_are_inside_the_run(tmp_path: Path) -> None:
    run = RunDir.of(tmp_path / "r")
    assert RunDir.of(run) is run and str(run) == str(tmp_path / "r")
    paths = [run.config, run.manifest, run.report, run.history, run.sweeps, run.llm_cache, run.data,
             run.triplets, run.stats, run.synth_state, run.constraints_md, run.export("trl"), run.adapter,
             run.train, run.checkpoints, run.metrics, run.train_summary, run.train_state, run.tensorboard,
             run.eval, run.comparison, run.polarity, *(run.side(s) for s in SIDES),
             *(run.summary(s) for s in SIDES), *(run.data_file(n) for n in DATA_FILES)]  # fmt: skip
    assert all(p.is_relative_to(run.root) for p in paths)
    assert run.triplets == run.data_file("triplets")
    assert len(set(paths)) == len(paths) - 1  # no two names for one file but that shorthand
    with pytest.raises(ValueError, match="unknown data file"):
        run.data_file("triplet")
    with pytest.raises(ValueError, match="unknown eval side"):
        run.side("tuned")


def test_check_state_creates_accepts_and_refuses_in_one_line(tmp_path: Path) -> None:
    p = tmp_path / "d" / "state.json"
    assert read_state(p) is None
    assert check_state(p, {"config": "abc"}, "d", "use another --out") == {"config": "abc"}
    save_state(p, {"config": "abc", "done": ["topics"]})
    assert check_state(p, {"config": "abc"}, "d", "use another --out")["done"] == ["topics"]
    with pytest.raises(UserError) as e:
        check_state(p, {"config": "xyz"}, "d", "use another --out")
    msg = str(e.value)
    assert "\n" not in msg and "other settings" in msg and "'abc'" in msg and "'xyz'" in msg
    assert msg.endswith("use another --out")
    assert read_state(p)["config"] == "abc"  # the refused identity wrote nothing
    p.write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        read_state(p)


def test_registry_names_modules_with_run_and_outputs_the_run_dir_owns(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert list(STAGES) == ["synth", "train", "eval", "report"]
    for name, st in STAGES.items():
        fn = importlib.import_module(st.module).run
        assert list(inspect.signature(fn).parameters)[:2] == ["cfg", "run"], name
        assert all(isinstance(getattr(run, o), Path) for o in st.outputs), name
        # what --from-stage checks a kept stage left: inside one of its outputs
        made = getattr(run, st.made)
        assert isinstance(made, Path) and any(made.is_relative_to(getattr(run, o)) for o in st.outputs), name
        assert all(n in STAGES and list(STAGES).index(n) < list(STAGES).index(name) for n in st.needs)


def test_is_run_tells_a_run_from_any_directory(tmp_path: Path) -> None:
    """`ptalign report` refuses a directory no stage wrote into rather than writing report.html there."""
    run = RunDir(tmp_path / "r")
    assert not run.is_run()
    run.root.mkdir()
    (run.root / "notes.txt").write_text("mine")
    assert not run.is_run()
    run.triplets.parent.mkdir()  # `ptalign synth --out` alone writes no manifest: data/ makes it a run
    assert run.is_run()
    assert run.has_adapter() is False and run.adapter_config == run.adapter / "adapter_config.json"


def test_a_full_fine_tune_counts_as_trained(tmp_path: Path) -> None:
    """train.lora_r=0 saves the whole model in RUN_DIR/adapter: evaluation, --from-stage and a second
    training must see it as trained, as they see an adapter."""
    run = RunDir(tmp_path / "r")
    assert not run.has_trained() and run.trained == run.adapter_config
    run.adapter.mkdir(parents=True)
    (run.adapter / "config.json").write_text("{}")
    assert run.full_model() and run.has_trained() and not run.has_adapter()
    assert run.trained == run.adapter / "config.json"
    (run.adapter / "adapter_config.json").write_text("{}")  # an adapter dir may hold a config.json too
    assert not run.full_model() and run.has_adapter() and run.trained == run.adapter_config
