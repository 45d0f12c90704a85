"""io: append-per-record JSONL survives a torn last line; corrupt lines elsewhere are named."""

import json

import pytest

from ptalign.io import (
    HAZARD_META,
    DataError,
    JsonlWriter,
    read_jsonl,
    read_meta,
    redact,
    stable_id,
    write_jsonl,
)


def test_stable_id_depends_only_on_inputs():
    assert stable_id("a", 1, {"k": [1, 2]}) == stable_id("a", 1, {"k": [1, 2]})
    assert stable_id("a", 1) != stable_id("a", 2)


def test_writer_skips_done_ids_and_keeps_meta(tmp_path):
    p = tmp_path / "t.jsonl"
    with JsonlWriter(p, meta=HAZARD_META) as w:
        assert w.write({"id": "a", "x": 1})
        assert not w.write({"id": "a", "x": 2})
    with JsonlWriter(p, meta=HAZARD_META) as w:  # reopened: meta not written twice, id remembered
        assert w.done == {"a"}
        w.write({"id": "b", "x": 3})
    assert [r["id"] for r in read_jsonl(p)] == ["a", "b"]
    assert read_meta(p)["hazardous"] is True
    assert sum(1 for line in p.read_text().splitlines() if '"_meta"' in line) == 1


def test_torn_last_line_is_repaired_on_reopen(tmp_path):
    p = tmp_path / "t.jsonl"
    with JsonlWriter(p) as w:
        w.write({"id": "a"})
    with open(p, "a") as f:
        f.write('{"id": "b", "x"')  # a kill -9 mid-write
    assert [r["id"] for r in read_jsonl(p)] == ["a"]
    with JsonlWriter(p) as w:
        w.write({"id": "b"})
    assert [json.loads(x)["id"] for x in p.read_text().splitlines()] == ["a", "b"]


def test_corrupt_middle_line_is_named(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"id": "a"}\nnot json\n{"id": "c"}\n')
    with pytest.raises(DataError, match=r"t.jsonl:2: corrupt JSONL line"):
        list(read_jsonl(p))


def test_write_jsonl_atomic_and_redact(tmp_path):
    p = tmp_path / "w.jsonl"
    assert write_jsonl(p, [{"id": 1}, {"id": 2}], meta={"k": "v"}) == 2
    assert [r["id"] for r in read_jsonl(p)] == [1, 2]
    assert not list(tmp_path.glob(".*tmp*"))
    assert "harmful" not in redact("some harmful words")
    assert redact("shown", show=True) == "shown"
