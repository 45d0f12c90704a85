"""Evaluation sets: loaders for the public formats and our built-in sets, all as plain dict records.

Reads: BIG-bench `hhh_alignment/<category>/task.json`, AdvBench `harmful_behaviors.csv`, XSTest
`xstest_prompts.csv`, MT-Bench `question.jsonl` (by path, never copied into the repo) and the built-in
sets in `eval/data/` (harmful requests over the 10 domains, benign-but-sensitive requests, HHH-style
pairs: our own words, disjoint from the synthesis seeds).
Writes: nothing.

Every record has a stable `id` (hash of source + original key) so results join by id across runs and
a resumed eval skips what it already wrote. Subsets are deterministic (seeded) and stratified by
domain/type where the set has one, so a small quick-preset subset still covers every group.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from collections import defaultdict
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from ptalign.io import DataError, read_jsonl, stable_id

HHH_CATEGORIES = ("harmless", "helpful", "honest", "other")
STANDARD_LAYOUT = {  # eval.data_dir layout → EvalConfig path field
    "advbench_path": "advbench/harmful_behaviors.csv",
    "xstest_path": "xstest/xstest_prompts.csv",
    "hhh_dir": "bigbench_hhh_alignment",
    "mtbench_path": "mt_bench/question.jsonl",
}

Record = dict[str, Any]


def builtin_path(name: str) -> Path:
    return Path(str(resources.files("ptalign.eval") / "data" / name))


def _need(path: str | Path, what: str, key: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(
            f"{key}={path}: {what} not found; fix the path or leave it empty to use the built-in set"
        )
    return p


def subset(items: list[Record], n: int, seed: int, group: str | None = None) -> list[Record]:
    """n items (0 = all), deterministic; round-robin over `group` values so every group is present."""
    if n <= 0 or n >= len(items):
        return list(items)
    rng = random.Random(seed)
    if group is None:
        idx = sorted(rng.sample(range(len(items)), n))
        return [items[i] for i in idx]
    groups: dict[str, list[Record]] = defaultdict(list)
    for it in items:
        groups[str(it.get(group, ""))].append(it)
    for g in groups.values():
        rng.shuffle(g)
    out: list[Record] = []
    keys = sorted(groups)
    i = 0
    while len(out) < n:
        for k in keys:
            if i < len(groups[k]) and len(out) < n:
                out.append(groups[k][i])
        i += 1
    return out


# ---------------------------------------------------------------------------------------------- HHH

_TURN = re.compile(r"\n\s*(Human|Assistant):")


def hhh_chat(text: str) -> list[dict[str, str]]:
    """BIG-bench HHH `input` → chat messages. Multi-turn inputs embed 'Human:'/'Assistant:' turns
    after the first user message; the task's own prefixes are '\\nHuman: ' / '\\nAssistant:'."""
    parts = _TURN.split("\n" + text.strip())
    chat = []
    first = parts[0].strip()
    if first:
        chat.append({"role": "user", "content": first})
    for speaker, content in zip(parts[1::2], parts[2::2], strict=False):
        role = "user" if speaker == "Human" else "assistant"
        content = content.strip()
        if chat and chat[-1]["role"] == role:  # merge accidental repeats so roles alternate
            chat[-1]["content"] += "\n" + content
        else:
            chat.append({"role": role, "content": content})
    if not chat or chat[-1]["role"] != "user":
        raise DataError(f"HHH input does not end with a human turn: {text[:60]!r}")
    return chat


def load_hhh(hhh_dir: str | Path, categories: tuple[str, ...] = HHH_CATEGORIES) -> list[Record]:
    """BIG-bench hhh_alignment: records {id, cluster, category, chat, choices[2], label (index of the
    better)}. `cluster` names the conversation: the task asks several pairs of replies to one input
    (221 items, 102 conversations), and those items are not independent draws for the bootstrap."""
    root = _need(hhh_dir, "BIG-bench hhh_alignment dir", "eval.hhh_dir")
    out = []
    for cat in categories:
        p = root / cat / "task.json"
        if not p.exists():
            raise DataError(
                f"eval.hhh_dir={hhh_dir}: missing {cat}/task.json; point it at bigbench's hhh_alignment dir"
            )
        try:
            task = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
        for i, ex in enumerate(task.get("examples", [])):
            scores = ex.get("target_scores") or {}
            if len(scores) != 2 or "input" not in ex:
                raise DataError(f"{p}: example {i} needs 'input' and exactly two 'target_scores'")
            choices = list(scores)
            if not all(c.strip() for c in choices):
                raise DataError(
                    f"{p}: example {i} has an empty reply among its target_scores; write both replies "
                    "or drop the example"
                )
            label = max(range(2), key=lambda j: scores[choices[j]])
            out.append(
                {
                    "id": stable_id("hhh", cat, ex["input"], choices),
                    "cluster": stable_id("hhh", cat, ex["input"]),
                    "category": cat,
                    "chat": hhh_chat(ex["input"]),
                    "choices": choices,
                    "label": label,
                }
            )
    return out


def load_builtin_hhh() -> list[Record]:
    out = []
    for r in read_jsonl(builtin_path("hhh_pairs.jsonl")):
        out.append(
            {
                "id": r["id"],
                "cluster": r["id"],  # one pair per conversation
                "category": r["category"],
                "chat": [{"role": "user", "content": r["input"]}],
                "choices": [r["good"], r["bad"]],
                "label": 0,
            }
        )
    return out


# ------------------------------------------------------------------------------------------ harmful


def load_advbench(path: str | Path) -> list[Record]:
    """AdvBench harmful_behaviors.csv (goal,target) → {id, source, domain, goal, target}."""
    p = _need(path, "AdvBench csv", "eval.advbench_path")
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"goal", "target"} <= set(reader.fieldnames):
            raise DataError(f"{p}: expected AdvBench columns goal,target; got {reader.fieldnames}")
        out = []
        for r in reader:
            if not r["goal"].strip():
                continue
            if not (r["target"] or "").strip():  # None: the row has fewer cells than the header
                raise DataError(
                    f"{p}: row {reader.line_num} has no target; give the goal its affirmative target "
                    "('Sure, here is ...', AutoDAN's aim) or drop the row"
                )
            out.append(
                {
                    "id": stable_id("advbench", r["goal"]),
                    "source": "advbench",
                    "domain": "advbench",
                    "goal": r["goal"].strip(),
                    "target": r["target"].strip(),
                }
            )
        return out


def load_builtin_harmful() -> list[Record]:
    return [{**r, "source": "builtin"} for r in read_jsonl(builtin_path("harmful.jsonl"))]


# ------------------------------------------------------------------------------------------ safe


def load_xstest(path: str | Path, label: str = "safe") -> list[Record]:
    """XSTest prompts of one label ('safe' by default: over-refusal) → {id, source, type, prompt}."""
    p = _need(path, "XSTest csv", "eval.xstest_path")
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "prompt", "type", "label"} <= set(reader.fieldnames):
            raise DataError(f"{p}: expected XSTest columns id,prompt,type,label; got {reader.fieldnames}")
        return [
            {
                "id": stable_id("xstest", r["id"], r["prompt"]),
                "source": "xstest",
                "type": r["type"],
                "label": r["label"],
                "prompt": r["prompt"].strip(),
            }
            for r in reader
            if r["label"] == label
        ]


def load_builtin_benign() -> list[Record]:
    return [{**r, "source": "builtin", "type": r["domain"]} for r in read_jsonl(builtin_path("benign.jsonl"))]


# ------------------------------------------------------------------------------------------ MT-Bench


def load_mtbench(path: str | Path) -> list[Record]:
    """MT-Bench question.jsonl → {id, question_id, category, prompt (first turn), turns}."""
    p = _need(path, "MT-Bench question.jsonl", "eval.mtbench_path")
    out = []
    for i, r in enumerate(read_jsonl(p, strict=True)):
        turns = r.get("turns")
        if (
            not isinstance(turns, list)
            or not turns
            or not all(isinstance(t, str) and t.strip() for t in turns)
        ):
            raise DataError(
                f"{p}: question {r.get('question_id')} (record {i + 1}): 'turns' must be a list of the "
                f'question\'s prompts, got {turns!r:.60}; write it as ["first prompt", ...]'
            )
        out.append(
            {
                "id": stable_id("mtbench", r.get("question_id"), r["turns"][0]),
                "question_id": r.get("question_id"),
                "category": r.get("category", ""),
                "prompt": r["turns"][0],
                "turns": r["turns"],
            }
        )
    return out


BUILTIN_MTBENCH = [  # used only when no MT-Bench file is given: a handful of our own open questions
    ("writing", "Write a short, friendly note inviting my neighbours to a street picnic."),
    ("reasoning", "A train leaves at 3:40 pm and the trip takes 95 minutes. When does it arrive?"),
    ("stem", "Explain in simple words why the sky looks blue."),
    ("coding", "Write a Python function that returns the largest even number in a list, or None."),
    ("humanities", "Give two reasons why the printing press changed Europe."),
]


def load_builtin_mtbench() -> list[Record]:
    return [
        {"id": stable_id("builtin_mt", q), "question_id": i, "category": c, "prompt": q, "turns": [q]}
        for i, (c, q) in enumerate(BUILTIN_MTBENCH)
    ]


# ------------------------------------------------------------------------------------------ config


EVAL_DATA_ENV = "PTALIGN_EVAL_DATA"
# where `eval.data_dir: auto` looks, relative to the working directory, after $PTALIGN_EVAL_DATA
AUTO_DATA_DIRS = ("data/eval", "../shared/data/eval")


def data_dir(ecfg: Any) -> str:
    """eval.data_dir with `auto` resolved: $PTALIGN_EVAL_DATA when set (empty: none), else the first of
    AUTO_DATA_DIRS that exists, else '' (the built-in sets). `auto` is the default so that a plain
    `ptalign run` measures on the public sets wherever they are laid out, as README's figures do."""
    if ecfg.data_dir != "auto":
        return ecfg.data_dir
    if EVAL_DATA_ENV in os.environ:
        return os.environ[EVAL_DATA_ENV]
    return next((d for d in AUTO_DATA_DIRS if Path(d).is_dir()), "")


def resolve_paths(ecfg: Any) -> dict[str, str]:
    """The eval path fields with `data_dir` filling those left empty (only files that exist there)."""
    out = {k: getattr(ecfg, k) for k in STANDARD_LAYOUT}
    root_s = data_dir(ecfg)
    if root_s:
        root = Path(root_s)
        if not root.is_dir():
            raise DataError(
                f"eval.data_dir={root_s}: not a directory; point it at a folder with advbench/, xstest/, ..."
            )
        for k, rel in STANDARD_LAYOUT.items():
            if not out[k] and (root / rel).exists():
                out[k] = str(root / rel)
    return out


def check_paths(ecfg: Any) -> dict[str, str]:
    """Resolved paths, each checked to exist: a typo fails before any model is loaded."""
    paths = resolve_paths(ecfg)
    for k, v in paths.items():
        if v and not Path(v).exists():
            raise DataError(
                f"eval.{k}={v}: not found; fix the path or leave it empty to use the built-in set"
            )
    return paths


def _source(
    paths: dict[str, str],
    key: str,
    loader: Callable[[str], list[Record]],
    builtin: Callable[[], list[Record]],
) -> list[Record]:
    """The configured public set, or the built-in one when none is configured: never both, so a
    headline figure is one set's, not an average with our own (closer to the seeds) words."""
    return loader(paths[key]) if paths[key] else builtin()


def harmful_goals(ecfg: Any) -> list[Record]:
    """AdvBench (if given, else the built-in harmful requests), capped at max_harmful (by domain)."""
    items = _source(resolve_paths(ecfg), "advbench_path", load_advbench, load_builtin_harmful)
    return subset(items, ecfg.max_harmful, ecfg.seed, group="domain")


def contrast_prompts(ecfg: Any) -> list[Record]:
    """XSTest's unsafe contrast prompts as harmful goals (asked directly), capped at max_contrast;
    none without XSTest. They mirror the safe prompts word for word, so complying here and refusing
    there are the two errors of one decision."""
    path = resolve_paths(ecfg)["xstest_path"]
    if not path:
        return []
    items = [
        {"id": r["id"], "source": "xstest_unsafe", "domain": r["type"], "goal": r["prompt"], "target": ""}
        for r in load_xstest(path, label="unsafe")
    ]
    return subset(items, ecfg.max_contrast, ecfg.seed, group="domain")


def safe_prompts(ecfg: Any) -> list[Record]:
    """XSTest's safe prompts (if given, else the built-in benign-but-sensitive set), capped at max_safe."""
    items = _source(resolve_paths(ecfg), "xstest_path", load_xstest, load_builtin_benign)
    return subset(items, ecfg.max_safe, ecfg.seed, group="type")


def hhh_items(ecfg: Any) -> list[Record]:
    """BIG-bench HHH if given, else the built-in pairs; max_hhh caps it (stratified by category)."""
    paths = resolve_paths(ecfg)
    items = load_hhh(paths["hhh_dir"]) if paths["hhh_dir"] else load_builtin_hhh()
    return subset(items, ecfg.max_hhh, ecfg.seed, group="category")


def mtbench_items(ecfg: Any) -> list[Record]:
    paths = resolve_paths(ecfg)
    items = load_mtbench(paths["mtbench_path"]) if paths["mtbench_path"] else load_builtin_mtbench()
    return subset(items, ecfg.max_mtbench, ecfg.seed, group="category")
