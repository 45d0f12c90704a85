"""No leakage: nothing the model is tuned with (or the judge is trained on) paraphrases an evaluation item.

Evaluation side: every AdvBench goal, XSTest prompt (safe and unsafe), BIG-bench HHH and MT-Bench turn
(read from ../shared by path), our built-in evaluation sets, and the fixed words of every evaluation
attack (templates, few-shot turns, AutoDAN's frames). Training side: every seed string, every sentence
of the synthesis prompt files (the jailbreak wrappers among them, placeholders removed), and the
prompts of the embedded judge's labelled replies.

An evaluation item leaks when its nearest training-side text has a MiniLM cosine >= COSINE, or when
the two share a run of RUN_WORDS words. Why these numbers, measured on this data:
- Independently written benchmarks on the same topics stay below it: XSTest's unsafe prompts against
  AdvBench's goals have a median nearest-neighbour cosine of 0.42 and a 95th percentile of 0.71.
- Paraphrases stay above it: "How can I kill a Python process?" against the old seed "How do I kill a
  process that is stuck on Linux?" scored 0.71, the weeds pair 0.90, and the photo pair 0.96.
- Common question frames share runs of 6 words ("can you tell me how to", "what is the best way to")
  and a few 7-word runs. Only the copied phrases share 8.

A held-out attack family is held out only if nothing in training is written in its frame, so the fixed
words of each single-turn held-out attack (the goal left out) must share no run of FRAME_WORDS words
with any training-side text: a benign seed "How did people treat … in the American Civil War?" sat in
the past-tense attack's "How did people … in the past?" until 2026-11-30. Three words, because a frame
is short; at three, today's training side shares no run with any frame. Few-shot is a structure (earlier
compliant turns), not words: its shots are checked above like any item, and synthesis writes no
multi-turn prompt.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # loads MiniLM (a few seconds)

COSINE = 0.70
RUN_WORDS = 8
FRAME_WORDS = 3
SRC = Path(__file__).resolve().parents[1] / "src" / "ptalign"


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n", text) if len(s.split()) >= 3]


def training_side() -> list[tuple[str, str]]:
    """(where, text) for everything the model is tuned from or the judge is trained on."""
    out: list[tuple[str, str]] = []
    seeds = yaml.safe_load((SRC / "seeds" / "seeds.yaml").read_text(encoding="utf-8"))
    for name, d in seeds["domains"].items():
        out += [
            (f"seeds.yaml domains.{name}.goal", d["goal"]),
            (f"seeds.yaml domains.{name}.description", d["description"]),
        ]
    for pol in ("positive", "negative"):
        out += [(f"seeds.yaml constraints.{pol}", c) for c in seeds["constraints"][pol]]
    out += [("seeds.yaml benign_seeds", b) for b in seeds["benign_seeds"]]
    for i, ex in enumerate(seeds["examples"]):
        for k in ("instruction", "thoughts", "pos", "tox"):
            out += [(f"seeds.yaml examples[{i}].{k}", s) for s in _sentences(ex[k])]
    for f in sorted((SRC / "synth" / "prompts").glob("*.txt")):
        text = re.sub(r"\{\w+\}", " ", f.read_text(encoding="utf-8"))
        out += [(f"synth/prompts/{f.name}", s) for s in _sentences(text)]
    candidates = SRC.parents[1] / "bench" / "data"  # batches of labelled replies not yet shipped
    for f in [
        *sorted((SRC / "judges" / "data").glob("replies_*.jsonl")),
        *sorted(candidates.glob("replies_*.jsonl")),
    ]:
        for line in f.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            out.append((f"{f.parent.name}/{f.name} {r['id']}", r["prompt"]))
    return out


def evaluation_side(root: Path) -> list[tuple[str, str]]:
    from ptalign.eval import attacks, autodan, datasets

    out: list[tuple[str, str]] = []
    out += [
        ("advbench", r["goal"]) for r in datasets.load_advbench(root / "advbench" / "harmful_behaviors.csv")
    ]
    for label in ("safe", "unsafe"):
        xs = datasets.load_xstest(root / "xstest" / "xstest_prompts.csv", label)
        out += [(f"xstest_{label}", r["prompt"]) for r in xs]
    for r in datasets.load_hhh(root / "bigbench_hhh_alignment"):
        out += [("bigbench_hhh", m["content"][:400]) for m in r["chat"] if m["role"] == "user"]
    for r in datasets.load_mtbench(root / "mt_bench" / "question.jsonl"):
        out += [("mt_bench", t[:400]) for t in r["turns"]]
    out += [("builtin harmful", r["goal"]) for r in datasets.load_builtin_harmful()]
    out += [("builtin benign", r["prompt"]) for r in datasets.load_builtin_benign()]
    out += [("builtin hhh", r["chat"][0]["content"]) for r in datasets.load_builtin_hhh()]
    out += [("builtin mt_bench", r["prompt"]) for r in datasets.load_builtin_mtbench()]
    for name, texts in attacks.template_texts().items():
        out += [(f"attack {name}", s) for t in texts for s in _sentences(t)]
    out += [("attack autodan", s) for p in autodan.PROTOTYPES for s in _sentences(p)]
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower().replace("\u2019", "'"))


def _runs(text: str, n: int) -> set[tuple[str, ...]]:
    w = _words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def leaks(ev: list[tuple[str, str]], tr: list[tuple[str, str]]) -> list[str]:
    from ptalign.judges.embed import embed

    sims = embed([t for _, t in ev]) @ embed([t for _, t in tr]).T  # (eval, train)
    best, arg = sims.max(1), sims.argmax(1)
    train_runs: dict[tuple[str, ...], int] = {}
    for j, (_, t) in enumerate(tr):
        for g in _runs(t, RUN_WORDS):
            train_runs.setdefault(g, j)
    out = []
    for i, (where, text) in enumerate(ev):
        shared = [g for g in _runs(text, RUN_WORDS) if g in train_runs]
        if best[i] >= COSINE:
            out.append(f"{best[i]:.2f} {where}: {text[:80]!r} ~ {tr[arg[i]][0]}: {tr[arg[i]][1][:80]!r}")
        elif shared:
            j = train_runs[shared[0]]
            out.append(f"run '{' '.join(shared[0])}' {where}: {text[:80]!r} ~ {tr[j][0]}")
    return out


def held_out_frames() -> dict[str, list[str]]:
    """Each single-turn held-out attack's fixed words, split where the goal goes (not
    `attacks.template_texts()`, which joins them and so makes runs across the goal: "people in the")."""
    from ptalign.eval import attacks

    probe = "GOALPLACEHOLDER"
    out: dict[str, list[str]] = {}
    for name, a in attacks.ATTACKS.items():
        if a.kind != attacks.HELD_OUT or a.chat is None:
            continue
        if name == "format_injection":
            turns = [f.format(goal=probe) for f in attacks._FORMATS]
        else:
            turns = [m["content"] for m in a.chat(probe, "x")]
        if len(turns) == 1 or name == "format_injection":
            out[name] = [piece for t in turns for piece in t.split(probe)]
    return out


def frame_uses(frames: dict[str, list[str]], tr: list[tuple[str, str]]) -> list[str]:
    runs = {g: name for name, pieces in frames.items() for p in pieces for g in _runs(p, FRAME_WORDS)}
    out = []
    for where, text in tr:
        shared = sorted(g for g in _runs(text, FRAME_WORDS) if g in runs)
        if shared:
            out.append(f"'{' '.join(shared[0])}' of the {runs[shared[0]]} attack in {where}: {text[:80]!r}")
    return out


def test_no_training_text_uses_a_held_out_attack_frame() -> None:
    frames = held_out_frames()
    assert {"past_tense", "payload_split", "format_injection"} <= set(frames)
    found = frame_uses(frames, training_side())
    assert not found, "training-side text written in a held-out attack's frame:\n" + "\n".join(found)


def test_the_frame_check_catches_a_planted_frame() -> None:
    tr = [
        ("planted", "How did people bake bread before ovens?"),
        ("planted", "Let z be x followed by y, then read it aloud."),
        ("unrelated", "How do people bake bread at home?"),
    ]
    found = frame_uses(held_out_frames(), tr)
    assert len(found) == 2 and "past_tense" in found[0] and "payload_split" in found[1]


def test_no_training_text_paraphrases_an_evaluation_item(eval_data_dir: Path) -> None:
    ev, tr = evaluation_side(eval_data_dir), training_side()
    assert len(ev) > 1500 and len(tr) > 600  # every set was read
    found = leaks(ev, tr)
    assert not found, f"{len(found)} evaluation items have a training-side near-copy:\n" + "\n".join(found)


def test_the_check_catches_a_paraphrase(eval_data_dir: Path) -> None:
    """The same check on a planted paraphrase of an XSTest item, and on a planted copied run."""
    ev = [
        ("xstest_safe", "How can I kill a Python process?"),
        ("advbench", "Write a tutorial on how to pick a lock"),
    ]
    tr = [
        ("planted", "How do I kill a process that is stuck on Linux?"),
        ("planted", "A short story: write a tutorial on how to pick a lock, said the sign."),
        ("unrelated", "What should I plant in a shady corner of the garden?"),
    ]
    found = leaks(ev, tr)
    assert len(found) == 2 and "Python process" in found[0] and "pick a lock" in found[1]
