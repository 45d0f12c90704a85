"""The adapter's model card: the data line counts triplets without an unlikelihood term by reason."""

from __future__ import annotations

from ptalign.train.card import render_card


def test_no_ul_is_reported_by_reason() -> None:
    stats = {"triplets": 10, "tox_lost": 1, "no_ul": 6, "no_ul_prefix": 2, "no_ul_everyday": 3}
    card = render_card({"train": {"lam": 0.4}, "data_stats": stats})
    assert (
        "no unlikelihood term 6 (toxic = positive or a prefix of it 2, lost to truncation 1, "
        "everyday triplets under train.ut_everyday=false 3)" in card
    )
    assert "(toxic = prefix of positive) 6" not in card  # the old label, which hid the other reasons


def test_no_ul_names_only_the_reasons_that_apply() -> None:
    stats = {"triplets": 10, "tox_lost": 0, "no_ul": 2, "no_ul_prefix": 2, "no_ul_everyday": 0}
    card = render_card({"train": {"lam": 0.4}, "data_stats": stats})
    assert "no unlikelihood term 2 (toxic = positive or a prefix of it 2)\n" in card


def test_no_ul_of_an_older_summary_names_every_possible_reason() -> None:
    old = {"triplets": 10, "tox_lost": 0, "no_ul": 4, "everyday": 3}
    card = render_card({"train": {"lam": 0.4, "ut_everyday": False}, "data_stats": old})
    assert "no unlikelihood term 4 (toxic = prefix of positive, lost to truncation, or an everyday" in card
    card = render_card({"train": {"lam": 0.4, "ut_everyday": True}, "data_stats": old})
    assert "no unlikelihood term 4 (toxic = prefix of positive, lost to truncation)\n" in card


def test_a_full_fine_tune_is_not_carded_as_a_lora_adapter(tmp_path) -> None:
    """train.lora_r=0 saves the whole model: its card is loaded by transformers, not peft."""
    from ptalign.train.card import write_card

    info = {"base_model": "embedded", "train": {"lora_r": 0, "lr": 1e-5, "epochs": 1}, "steps": 3}
    text = write_card(tmp_path, info, None).read_text()
    assert "library_name: transformers" in text and "lora" not in text.lower().split("---")[1]
    assert "- Weights: full fine-tuning" in text
    info["train"]["lora_r"] = 16
    text = write_card(tmp_path, info, None).read_text()
    assert "library_name: peft" in text and "- Adapter: LoRA r=16" in text


def test_training_again_over_a_full_fine_tune_is_refused(tmp_path) -> None:
    """A second `ptalign train` into a run whose adapter/ holds a full fine-tune's model would replace
    it silently; it is refused as over an adapter."""
    import pytest

    from ptalign.errors import UserError
    from ptalign.rundir import RunDir
    from ptalign.train.setup import check_fresh

    run = RunDir(tmp_path)
    assert check_fresh(run, resume=False) is None
    run.adapter.mkdir()
    (run.adapter / "config.json").write_text("{}")
    for resume in (False, True):  # --resume without a checkpoint would start over on it
        with pytest.raises(UserError, match="already exists and no checkpoint is left to resume from"):
            check_fresh(run, resume=resume)


def test_merging_a_full_fine_tune_says_there_is_nothing_to_merge(tmp_path) -> None:
    import pytest

    from ptalign.config import load_config
    from ptalign.errors import UserError
    from ptalign.train.merge import merge

    full = tmp_path / "adapter"
    full.mkdir()
    (full / "config.json").write_text("{}")
    with pytest.raises(UserError, match="already holds a whole model .* nothing to merge"):
        merge(full, tmp_path / "out", None, load_config(None, []))
    assert not (tmp_path / "out").exists()
