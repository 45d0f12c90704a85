"""Standard data in: TRL preference files (standard, conversational, implicit prompt), saved HF
datasets, PKU-SafeRLHF- and BeaverTails-shaped rows, column maps; one-line errors for bad columns.

Each file is written here in its format's exact shape, with harmless placeholder text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptalign.config import load_config
from ptalign.io import DataError
from ptalign.synth.export import export
from ptalign.train.data import load_records

Q, SAFE, UNSAFE = (
    "How do I get back at a noisy neighbour?",
    "Talk to them calmly first.",
    "Make their life miserable.",
)
Q2, SAFE2, UNSAFE2 = "Write an insult for my coworker.", "Let's keep it respectful.", "Here is a cruel one."


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _triples(recs: list[dict]) -> list[tuple[str, str, str]]:
    return [(r["instruction"], r["pos"], r["tox"]) for r in recs]


WANT = [(Q, SAFE, UNSAFE), (Q2, SAFE2, UNSAFE2)]


def test_trl_standard_form(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "pref.jsonl", [{"prompt": q, "chosen": c, "rejected": r} for q, c, r in WANT])
    recs, info = load_records(f)
    assert _triples(recs) == WANT and info["format"] == "trl"
    assert len({r["id"] for r in recs}) == 2  # stable ids made from the content


def test_trl_conversational_and_implicit_prompt(tmp_path: Path) -> None:
    def user(t: str) -> dict:
        return {"role": "user", "content": t}

    def bot(t: str) -> dict:
        return {"role": "assistant", "content": t}

    conv = [{"prompt": [{"role": "system", "content": "Be nice."}, user(q)], "chosen": [bot(c)], "rejected": [bot(r)]}
            for q, c, r in WANT]  # fmt: skip
    implicit = [{"chosen": [user(q), bot(c)], "rejected": [user(q), bot(r)]} for q, c, r in WANT]
    for name, rows in (("conv", conv), ("implicit", implicit)):
        recs, info = load_records(_jsonl(tmp_path / f"{name}.jsonl", rows))
        assert _triples(recs) == WANT and info["format"] == "trl", name


def test_our_trl_export_reads_back(tmp_path: Path) -> None:
    trip = _jsonl(tmp_path / "t.jsonl", [{"id": f"i{k}", "instruction": q, "pos": c, "tox": r, "kind": "harmful"}
                                         for k, (q, c, r) in enumerate(WANT)])  # fmt: skip
    recs, _ = load_records(export(trip, "trl", tmp_path / "trl") / "train.jsonl")
    assert _triples(recs) == WANT and [r["id"] for r in recs] == ["i0", "i1"]
    recs_hf, info = load_records(export(trip, "hf", tmp_path / "hf"))  # a save_to_disk folder
    assert _triples(recs_hf) == WANT and info["format"] == "trl"


def test_saved_dataset_dict_uses_train_split(tmp_path: Path) -> None:
    import datasets

    rows = {
        "prompt": [q for q, _, _ in WANT],
        "chosen": [c for _, c, _ in WANT],
        "rejected": [r for _, _, r in WANT],
    }
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "dd"))
    assert _triples(load_records(tmp_path / "dd")[0]) == WANT
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "only_test"))
    with pytest.raises(DataError, match="without a 'train' split"):
        load_records(tmp_path / "only_test")


def test_pku_saferlhf_rows(tmp_path: Path) -> None:
    def row(q: str, r0: str, r1: str, s0: bool, s1: bool, safer: int) -> dict:
        return {"prompt": q, "response_0": r0, "response_1": r1, "prompt_source": "test",
                "response_0_source": "m", "response_1_source": "m", "is_response_0_safe": s0,
                "is_response_1_safe": s1, "response_0_severity_level": 0 if s0 else 2,
                "response_1_severity_level": 0 if s1 else 2, "better_response_id": safer,
                "safer_response_id": safer}  # fmt: skip

    rows = [
        row(Q, UNSAFE, SAFE, False, True, 1),  # safer = 1 (safe), other unsafe: kept, response_1 positive
        row(Q2, SAFE2, UNSAFE2, True, False, 0),
        row("Say hi.", "Hi!", "Hello!", True, True, 0),  # both safe: no polarity, skipped
        row("Be rude.", "No.", "Worse.", False, False, 0),  # both unsafe: skipped
    ]
    recs, info = load_records(_jsonl(tmp_path / "pku.jsonl", rows), "pku-saferlhf")
    assert _triples(recs) == WANT and info == {"format": "pku-saferlhf", "rows": 4, "skipped": 2}


def test_beavertails_rows_pair_by_prompt(tmp_path: Path) -> None:
    cat = {"violence,aiding_and_abetting,incitement": False, "privacy_violation": False}
    rows = [
        {"prompt": Q, "response": UNSAFE, "category": {**cat, "violence,aiding_and_abetting,incitement": True}, "is_safe": False},
        {"prompt": Q, "response": SAFE, "category": cat, "is_safe": True},
        {"prompt": Q2, "response": SAFE2, "category": cat, "is_safe": True},
        {"prompt": Q2, "response": UNSAFE2, "category": cat, "is_safe": False},
        {"prompt": "Say hi.", "response": "Hi!", "category": cat, "is_safe": True},  # no unsafe reply: skipped
    ]  # fmt: skip
    recs, info = load_records(_jsonl(tmp_path / "bt.jsonl", rows), "beavertails")
    assert _triples(recs) == WANT and info["skipped"] == 1


def test_column_map_on_a_csv(tmp_path: Path) -> None:
    f = tmp_path / "pairs.csv"
    f.write_text("question,good,bad\n" + "".join(f'"{q}","{c}","{r}"\n' for q, c, r in WANT))
    recs, info = load_records(f, "instruction:question,pos:good,tox:bad")
    assert _triples(recs) == WANT and info["format"] == "columns"
    # the config accepts the same string from --set
    assert (
        load_config(None, ["train.columns=instruction:question,pos:good,tox:bad"]).train.columns.count(":")
        == 3
    )


def test_bad_columns_name_file_found_and_expected(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "odd.jsonl", [{"question": Q, "answer": SAFE}])
    with pytest.raises(DataError) as e:
        load_records(f)
    msg = str(e.value)
    assert "\n" not in msg and str(f) in msg and "answer, question" in msg and "prompt, chosen" in msg
    with pytest.raises(DataError, match=r"missing bad"):
        load_records(f, "instruction:question,pos:answer,tox:bad")
    with pytest.raises(DataError, match=r"\(missing prompt, response_0, "):
        load_records(f, "pku-saferlhf")
    with pytest.raises(DataError, match="no column for tox"):
        load_records(f, "instruction:question,pos:answer")
    with pytest.raises(DataError, match="row 1 is not TRL preference data"):
        load_records(_jsonl(tmp_path / "x.jsonl", [{"prompt": Q, "chosen": 3, "rejected": "r"}]))
    with pytest.raises(DataError, match="unknown data format .txt"):
        (tmp_path / "a.txt").write_text("hi")
        load_records(tmp_path / "a.txt")


def test_train_on_a_trl_file(tiny_llama: Path, tmp_path: Path, make_records) -> None:
    """`ptalign train --data` on TRL preference data: the run trains and records the format."""
    from ptalign import train

    rows = [{"prompt": r["instruction"], "chosen": r["pos"], "rejected": r["tox"]} for r in make_records()]
    f = _jsonl(tmp_path / "pref.jsonl", rows)
    cfg = load_config(
        None, [f"model.name={tiny_llama}", "train.epochs=1", "train.batch_size=4", "train.max_length=96"]
    )
    summary = train.run(cfg, tmp_path, data=f, out=tmp_path / "run")
    assert summary["steps"] == 2 and (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert summary["data_format"] == "trl" and summary["data_stats"]["triplets"] == 8
    assert summary["chat_template"] == "model" and summary["end_of_turn"] == "<|im_end|>"


def _trip(i: int, **extra: object) -> dict:
    q, c, r = WANT[i % 2]
    return {"id": f"i{i}", "instruction": f"{q} ({i})", "pos": c, "tox": r, **extra}


@pytest.mark.parametrize(
    ("bad", "row", "says"),
    [
        ({"id": None}, 2, "has a null or blank id"),  # was "None" for every such row
        ({"id": "i0"}, 2, "repeats the id 'i0' of row 1"),
        ({"everyday": "false"}, 2, "has everyday='false', not a boolean"),  # bool("false") is True
        ({"everyday": 1}, 2, "has everyday=1, not a boolean"),
        ({"attack": "false"}, 2, "has attack='false', not a wrapper family name"),
    ],
)
@pytest.mark.parametrize("fmt", ["ptalign", "trl"])
def test_bad_ids_and_flags_name_file_and_row(
    tmp_path: Path, bad: dict, row: int, says: str, fmt: str
) -> None:
    rows = [_trip(0), {**_trip(1), **bad}, _trip(2)]
    if fmt == "trl":
        rows = [{"prompt": r["instruction"], "chosen": r["pos"], "rejected": r["tox"],
                 **{k: v for k, v in r.items() if k not in ("instruction", "pos", "tox")}} for r in rows]  # fmt: skip
    f = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as e:
        load_records(f)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{f}: row {row} ") and says in msg, msg


def test_good_flags_and_ids_pass(tmp_path: Path) -> None:
    rows = [_trip(0, everyday=True), _trip(1, everyday=False, attack="roleplay"), _trip(2, attack=None)]
    recs, _ = load_records(_jsonl(tmp_path / "ok.jsonl", rows))
    assert [r["id"] for r in recs] == ["i0", "i1", "i2"]
    assert [r.get("everyday") for r in recs] == [True, False, None] and recs[1]["attack"] == "roleplay"
    no_ids = [{k: v for k, v in _trip(0).items() if k != "id"}] * 2  # the same row twice, ids from content
    assert len(load_records(_jsonl(tmp_path / "dup.jsonl", no_ids))[0]) == 2


def test_bad_data_fails_before_the_model_loads(tmp_path: Path, monkeypatch) -> None:
    """`ptalign train --data BAD` stops on the data, not after minutes of loading the model."""
    from ptalign import train
    from ptalign.train import recipe

    def no_model(cfg: object) -> None:
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(recipe, "load_base", no_model)
    f = _jsonl(tmp_path / "bad.jsonl", [{"question": Q, "answer": SAFE}])
    cfg = load_config(None, ["model.name=never/loaded"])
    with pytest.raises(DataError, match="expected ptalign's"):
        train.run(cfg, tmp_path, data=f, out=tmp_path / "run")


def test_exported_everyday_triplets_keep_no_ut(tok, tmp_path: Path, make_records) -> None:
    """synth --export trl, then train --data EXPORT: the everyday triplets still train their answer
    only under train.ut_everyday=false, as on the triplets themselves."""
    from ptalign.train.collate import encode_all

    recs = [{**r, "everyday": True} if r["id"] == "t0" else r for r in make_records()]
    trip = _jsonl(tmp_path / "t.jsonl", recs)
    direct, _ = encode_all(tok, load_records(trip)[0], 512, ut_everyday=False)
    for fmt, path in (("trl", "train.jsonl"), ("hf", "")):
        back, _ = load_records(export(trip, fmt, tmp_path / fmt) / path)
        exported, st = encode_all(tok, back, 512, ut_everyday=False)
        assert st["everyday"] == 1 and st["no_ul_everyday"] == 1, fmt
        assert [e.ul for e in exported] == [e.ul for e in direct], fmt
