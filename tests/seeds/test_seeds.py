"""The hand-written seeds: fewer than 50 annotations, exactly 3 examples, and examples that pass
the same gates the generated data must pass (so the model is shown what the gates want)."""

from ptalign.seeds import annotation_count, load_seeds
from ptalign.synth import gates


def _string_leaves(x: object) -> int:
    if isinstance(x, str):
        return 1
    if isinstance(x, dict):
        return sum(_string_leaves(v) for v in x.values())
    if isinstance(x, list):
        return sum(_string_leaves(v) for v in x)
    return 0


def test_fewer_than_50_human_annotations():
    """Counted two ways: annotation_count() by field, and every string in seeds.yaml, so a string
    added outside the counted fields cannot slip past the limit."""
    from importlib.resources import files

    import yaml

    s = load_seeds()
    # 10 domains x (description + seed goal) + 4 + 4 constraints + 8 benign + 3 examples x 4 fields
    assert annotation_count(s) == 48
    raw = yaml.safe_load(files("ptalign.seeds").joinpath("seeds.yaml").read_text())
    assert _string_leaves(raw) == annotation_count(s) < 50


def test_three_examples_with_thoughts_and_both_sides():
    s = load_seeds()
    assert len(s.examples) == 3
    for ex in s.examples:
        assert ex.instruction and ex.thoughts and ex.pos and ex.tox
        assert gates.pos_safe_reason(ex.pos) is None  # a refusal up front, no compliance
        assert gates.tox_reason(ex.tox) is None  # toxic side never reads as a refusal
        assert ex.pos.startswith("I'm sorry, but I can't help with that.")


def test_domains_cover_the_config_default():
    from ptalign.config import DEFAULT_DOMAINS

    s = load_seeds()
    assert set(DEFAULT_DOMAINS) == set(s.domains)
    assert all(d.description and d.seed for d in s.domains.values())
    # unknown domains still work (user-added): a description from the name, no seed
    assert s.domain("animal_cruelty").description == "animal cruelty"


def test_seeds_are_not_evaluation_data(eval_data_dir):
    """No seed text may come from the evaluation sets (AdvBench goals, XSTest prompts)."""
    import csv

    s = load_seeds()
    texts = {
        t.lower().strip()
        for t in [*s.benign, *(d.seed for d in s.domains.values()), *(e.instruction for e in s.examples)]
    }
    assert len(texts) >= 10  # benign requests, domain seeds and example instructions were all read
    sets = {
        "advbench/harmful_behaviors.csv": "goal",
        "xstest/xstest_prompts.csv": "prompt",
    }
    eval_texts: set[str] = set()
    for rel, column in sets.items():
        path = eval_data_dir / rel
        assert path.is_file(), f"{path} missing from the evaluation data"
        with open(path, encoding="utf-8", newline="") as f:
            rows = [r[column].lower().strip() for r in csv.DictReader(f)]
        assert len(rows) >= 200, f"{path}: only {len(rows)} {column!r} values read"
        eval_texts |= set(rows)
    assert not texts & eval_texts, sorted(texts & eval_texts)
