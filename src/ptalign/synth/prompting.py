"""Prompt templates → chats, and generations → items: list parsing, inner-thought stripping, seeds.

Reads: the template files in `prompts/` beside this module.
Writes: nothing.

Pair prompts put the three in-context examples as earlier chat turns (the embedded model ignores
constraints given only as a system prompt) and the varying part (rules + request) last, so the long
shared prefix stays byte-identical across calls and llama.cpp reuses its KV cache.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from functools import cache

from ptalign.io import stable_id
from ptalign.llm.base import Chat
from ptalign.seeds import Seeds
from ptalign.synth.gates import clean_item

# Generation ends at these: the model starting a new turn or a new example by itself.
PAIR_STOP = ("\nRequest:", "\nRules:", "<|im_end|>", "<|im_start|>", "\nUser:")
LIST_STOP = ("<|im_end|>", "<|im_start|>", "\n\n\n")

_NUMBERED = re.compile(r"^\s*\d+[.)]\s+\S")
_RESPONSE = re.compile(r"\bresponse\s*:\s*", re.I)
_THOUGHTS = re.compile(r"^\s*inner\s+thoughts?\s*:\s*", re.I)
_TAIL_MARKERS = re.compile(r"\n\s*(inner\s+thoughts?|request|rules|response)\s*:", re.I)


@cache
def template(name: str) -> str:
    return (
        importlib.resources.files(__package__).joinpath("prompts", f"{name}.txt").read_text(encoding="utf-8")
    )


def render(name: str, **fields: object) -> str:
    return template(name).format(**fields).strip()


def call_seed(*parts: object) -> int:
    """A per-call sampling seed from the item and attempt: stable across runs, distinct across calls."""
    return int(stable_id(*parts)[:8], 16) % (2**31 - 1)


def numbered(items: list[str]) -> str:
    return "\n".join(f"{i + 1}. {t}" for i, t in enumerate(items))


def parse_list(text: str) -> list[str]:
    """A numbered or bulleted list → cleaned items, in order. When the reply holds a numbered list,
    only its numbered lines count (small models wrap lists in chatter: "Here are 5 topics:"); headers
    ending in ':' are dropped, and the list ends where the model starts repeating itself."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    numbered_lines = [ln for ln in lines if _NUMBERED.match(ln)]
    if len(numbered_lines) >= 2:
        lines = numbered_lines
    out: list[str] = []
    for line in lines:
        item = clean_item(line)
        if not item or item.endswith(":"):
            continue
        if item in out:  # degenerate repetition: nothing after it is new
            break
        out.append(item)
    return out


# ---------------------------------------------------------------------------------------------
# Pair prompts


def _rules(rules: list[str]) -> str:
    return "\n".join(f"- {r}" for r in rules)


def pos_chat(seeds: Seeds, instruction: str, rules: list[str]) -> Chat:
    """Safe side: the 3 examples (inner thoughts + refusal) as earlier turns, then the request."""
    chat: Chat = []
    for i, ex in enumerate(seeds.examples):
        ex_rules = [seeds.pos_constraints[i % len(seeds.pos_constraints)], seeds.pos_constraints[-1]]
        chat.append(
            {
                "role": "user",
                "content": render("pair_user", rules=_rules(ex_rules), instruction=ex.instruction),
            }
        )
        chat.append(
            {
                "role": "assistant",
                "content": render("pair_pos_assistant", thoughts=ex.thoughts, response=ex.pos),
            }
        )
    chat.append(
        {"role": "user", "content": render("pair_user", rules=_rules(rules), instruction=instruction)}
    )
    return chat


def tox_chat(seeds: Seeds, instruction: str, rules: list[str]) -> Chat:
    """Toxic side: the same 3 requests answered toxically (negative constraints as the rules)."""
    chat: Chat = []
    for i, ex in enumerate(seeds.examples):
        ex_rules = [seeds.neg_constraints[i % len(seeds.neg_constraints)], seeds.neg_constraints[-1]]
        chat.append(
            {
                "role": "user",
                "content": render("pair_user", rules=_rules(ex_rules), instruction=ex.instruction),
            }
        )
        chat.append({"role": "assistant", "content": render("pair_tox_assistant", response=ex.tox)})
    chat.append(
        {"role": "user", "content": render("pair_user", rules=_rules(rules), instruction=instruction)}
    )
    return chat


@cache
def attack_wrappers() -> list[tuple[str, str]]:
    """(family, template) pairs: self-written jailbreak wrappers for `synth.attack_share`. They are
    not the evaluation's attack templates (a test checks that no long phrase is shared)."""
    rows = [ln.split("\t", 1) for ln in template("attack_wrappers").splitlines() if ln.strip()]
    return [(fam.strip(), tpl.strip()) for fam, tpl in rows]


def wrap_attack(key: str, instruction: str, share: float) -> tuple[str, str] | None:
    """(family, wrapped request) for a stable `share` of requests (chosen by the key's hash), else None."""
    if share <= 0 or int(stable_id("attack", key)[:8], 16) / 16**8 >= share:
        return None
    fams = attack_wrappers()
    fam, tpl = fams[int(stable_id("attack-family", key)[:8], 16) % len(fams)]
    return fam, tpl.format(instruction=instruction)


def plain_chat(instruction: str) -> Chat:
    """The model's own unprompted answer (the helpful side of a benign request)."""
    return [{"role": "user", "content": instruction}]


@dataclass
class Parsed:
    response: str
    thoughts: str
    error: str | None  # None = usable; else why the format failed
    plain: bool = False  # no format markers at all: the whole text was taken as the response


def trim_to_sentence(text: str) -> str:
    """Cut a length-truncated answer after its last full sentence (when that keeps most of it)."""
    t = text.rstrip()
    ends = [m.end() for m in re.finditer(r"[.!?](\s|$)", t)]
    if ends and ends[-1] >= 0.5 * len(t):
        return t[: ends[-1]].rstrip()
    return t


def ends_sentence(text: str) -> bool:
    return bool(re.search(r"[.!?]['\")]?\s*$", text))


def first_sentences(text: str, k: int) -> str:
    """The first k sentences: a small model's answer drifts after its opening (the refusal and its
    reason come first; later sentences ramble and sometimes start complying)."""
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return " ".join(parts[:k]).strip()


def parse_response(text: str, truncated: bool = False) -> Parsed:
    """Split "Inner thoughts: ... Response: ..." → (response, thoughts); the thoughts are dropped from
    the training data. Output without any markers is taken whole (the model skipped the format);
    thoughts without a response (e.g. cut off by max_new_tokens) is a format failure."""
    raw = text.strip()
    m = _RESPONSE.search(raw)
    plain = False
    if m:
        thoughts = _THOUGHTS.sub("", raw[: m.start()]).strip()
        resp = raw[m.end() :]
    elif _THOUGHTS.match(raw):
        return Parsed("", _THOUGHTS.sub("", raw).strip(), "format_no_response")
    else:
        thoughts, resp, plain = "", raw, True
    tail = _TAIL_MARKERS.search(resp)
    if tail:
        resp = resp[: tail.start()]
    resp = resp.strip().strip('"').strip()
    if truncated:
        resp = trim_to_sentence(resp)
    if not resp:
        return Parsed("", thoughts, "empty", plain)
    if truncated and not ends_sentence(resp):  # cut mid-sentence: a fragment teaches nothing
        return Parsed(resp, thoughts, "truncated", plain)
    return Parsed(resp, thoughts, None, plain)
