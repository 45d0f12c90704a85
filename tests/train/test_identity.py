"""What a training's checkpoints were made with (train/setup.check_identity): a fresh start records it,
a resume under other settings or data is refused, and what changes only speed, or a setting added since
at its neutral value, is not a difference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptalign.config import load_config
from ptalign.errors import UserError
from ptalign.rundir import RunDir
from ptalign.train.setup import check_identity

CKPT = Path("checkpoint-2")  # check_identity only asks whether there is one


@pytest.fixture
def data(tmp_path: Path) -> Path:
    p = tmp_path / "triplets.jsonl"
    p.write_text('{"instruction": "q", "pos": "a", "tox": "b"}\n')
    return p


def _started(tmp_path: Path, data: Path, *sets: str) -> RunDir:
    run = RunDir(tmp_path / "run")
    check_identity(load_config(None, list(sets)), data, run, None)
    return run


def test_a_fresh_start_records_its_identity_beside_a_sweeps_state(tmp_path, data) -> None:
    run = RunDir(tmp_path / "run")
    run.train.mkdir(parents=True)
    run.train_state.write_text('{"train": "abc", "data": "x"}')  # a sweep point's own record
    check_identity(load_config(None, ["train.lam=0.6"]), data, run, None)
    assert json.loads(run.train_state.read_text()) == {"train": "abc", "data": "x"}
    ident = json.loads(run.train_identity.read_text())
    assert ident["train.lam"] == 0.6 and ident["model.name"] == "embedded"
    check_identity(load_config(None, ["train.lam=0.6"]), data, run, CKPT)  # the same: goes on


def test_other_settings_or_data_are_refused(tmp_path, data) -> None:
    run = _started(tmp_path, data, "train.lam=0.6")
    with pytest.raises(UserError, match=r"other settings \(train.lam=0.6 \(now 0.4\)\)"):
        check_identity(load_config(None, []), data, run, CKPT)
    data.write_text(data.read_text().replace('"a"', '"c"'))
    with pytest.raises(UserError, match=r"other settings \(data="):
        check_identity(load_config(None, ["train.lam=0.6"]), data, run, CKPT)


def test_speed_settings_and_neutral_new_settings_are_no_difference(tmp_path, data) -> None:
    run = _started(tmp_path, data)
    check_identity(
        load_config(None, ["train.gradient_checkpointing=true", "train.attn=eager"]), data, run, CKPT
    )
    ident = json.loads(run.train_identity.read_text())
    del ident["train.lat"]  # a checkpoint made before the setting existed
    run.train_identity.write_text(json.dumps(ident))
    check_identity(load_config(None, []), data, run, CKPT)  # lat at its neutral 0.0: the same training
    with pytest.raises(UserError, match=r"train.lat=0.0 \(now 0.05\)"):
        check_identity(load_config(None, ["train.lat=0.05"]), data, run, CKPT)


def test_a_setting_dropped_to_neutral_is_still_a_difference(tmp_path, data) -> None:
    # made with lat 0.05; resumed at lat 0.0, which a neutral-skipping identity would not even name
    run = _started(tmp_path, data, "train.lat=0.05")
    with pytest.raises(UserError, match=r"train.lat=0.05 \(now 0.0\)"):
        check_identity(load_config(None, []), data, run, CKPT)
