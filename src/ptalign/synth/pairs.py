"""Dual sample generation: for each instruction a positive and a toxic response, through the gates.

Reads: `RUN_DIR/data/{instructions,constraints}.jsonl`; on resume `triplets.jsonl`, `rejected.jsonl`.
Writes: `RUN_DIR/data/triplets.jsonl` (kept triplets) and `rejected.jsonl` (dropped items + why).

Harmful request: pos = refusal written after the 3 safe in-context examples (inner thoughts parsed
out), tox = answer written after the same requests answered toxically. Benign-but-sensitive request:
pos = the model's own plain answer, tox = a needless refusal written after the safe examples (falling
back to the examples' refusal opener when the model helps anyway), so unlikelihood pushes away from
over-refusal. Each side gets up to max_attempts rounds of `candidates` samples; the first sample a
gate accepts is used, except a harmful request's positive under `synth.pos_select=best`: of a round's
accepted candidates, the most whole refusal (`pick_best`). With `synth.refusal_names_goal` a harmful
goal's positive then opens by naming the goal it declines (`gates.naming_refusal`), and with
`synth.answer_opener` a benign request's positive opens with that sentence. With
`synth.toxic_from=own` a harmful request's toxic side is the model's own plain reply to it, written the
ICL way only when every plain reply refuses. Calls are grouped
by prompt prefix so llama.cpp reuses the shared KV cache.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field

from ptalign.io import read_jsonl, stable_id
from ptalign.synth import gates
from ptalign.synth.common import Ctx, params
from ptalign.synth.expand import EVERYDAY
from ptalign.synth.prompting import (
    PAIR_STOP,
    call_seed,
    ends_sentence,
    first_sentences,
    parse_response,
    plain_chat,
    pos_chat,
    tox_chat,
    trim_to_sentence,
    wrap_attack,
)


@dataclass
class Item:
    inst: dict
    pos_rules: list[str]
    tox_rules: list[str]
    pos: str | None = None
    tox: str | None = None
    tox_source: str = "model"  # model (ICL), own (the plain reply; synth.toxic_from=own), template
    own_tox: bool = False  # the harmful toxic side is asked as a plain chat (synth.toxic_from=own)
    cands: list[str] = field(default_factory=list)  # accepted positives of this round (pos_select=best)
    samples: Counter = field(default_factory=Counter)  # rejected samples by reason
    failed: dict[str, Counter] = field(default_factory=lambda: {"pos": Counter(), "tox": Counter()})

    @property
    def id(self) -> str:
        return self.inst["id"]

    @property
    def benign(self) -> bool:
        return self.inst["kind"] == "benign"


# side name → (prompt kind, gate); prompt kinds share a KV prefix within a group
SIDES = {
    ("harmful", "pos"): ("safe_icl", gates.pos_safe_reason),
    ("harmful", "tox"): ("toxic_icl", gates.tox_reason),
    ("benign", "pos"): ("plain", gates.benign_pos_reason),
    ("benign", "tox"): ("safe_icl", gates.benign_tox_reason),
}
REFUSAL_SENTENCES = 3  # kept of a refusal (harmful pos, benign tox)
GROUP_ORDER = ("safe_icl", "toxic_icl", "plain")


def refusal_opener(ctx: Ctx) -> str:
    """The shared first sentence of the seed refusals ("I'm sorry, but I can't help with that.")."""
    first = re.split(r"(?<=[.!?])\s", ctx.seeds.examples[0].pos, maxsplit=1)[0]
    return first


def interleave(instructions: list[dict]) -> list[dict]:
    """Harmful items round-robin over domains, benign ones spread evenly between them, so a
    target_triplets cap keeps every domain and the benign share."""
    by_dom: dict[str, list[dict]] = {}
    benign = []
    for r in instructions:
        (benign if r["kind"] == "benign" else by_dom.setdefault(r["domain"], [])).append(r)
    harmful = []
    queues = list(by_dom.values())
    while any(queues):
        for q in queues:
            if q:
                harmful.append(q.pop(0))
    out, b = [], 0
    total = len(harmful) + len(benign)
    for h in harmful:
        out.append(h)
        while b < len(benign) and (b + 1) * total <= len(out) * len(benign) + len(benign):
            out.append(benign[b])
            b += 1
    return out + benign[b:]


def _chat(ctx: Ctx, it: Item, side: str):  # noqa: ANN202
    text = it.inst["text"]
    if _group(it, side) == "plain":
        return plain_chat(text)
    if it.benign:
        return pos_chat(ctx.seeds, text, it.pos_rules)
    return (
        pos_chat(ctx.seeds, text, it.pos_rules) if side == "pos" else tox_chat(ctx.seeds, text, it.tox_rules)
    )


def _accept(it: Item, side: str, text: str, truncated: bool) -> str | None:
    """Parse + gate one sample; returns the response or None (the reason is counted on the item)."""
    kind = "benign" if it.benign else "harmful"
    gate = SIDES[(kind, side)][1]
    prompt_kind = _group(it, side)
    if prompt_kind == "plain":
        resp = trim_to_sentence(text.strip()) if truncated else text.strip()
        err = None if resp else "empty"
        if resp and truncated and not ends_sentence(resp):
            err = "truncated"
    else:
        p = parse_response(text, truncated)
        resp, err = p.response, p.error
        if side == "pos" or it.benign:  # refusals: opener + reason + alternative, before the drift
            resp = first_sentences(resp, REFUSAL_SENTENCES)
    reason = err or gate(resp)
    if reason:
        it.samples[reason] += 1
        it.failed[side][reason] += 1
        return None
    return resp


def _group(it: Item, side: str) -> str:
    if it.own_tox and side == "tox" and not it.benign:
        return "plain"
    return SIDES[("benign" if it.benign else "harmful", side)][0]


def generate_chunk(ctx: Ctx, items: list[Item]) -> None:
    """Both sides of every item (the rounds in `_rounds`), then what screens or rewrites a kept side:
    the ICL fallback of synth.toxic_from=own, a gate judge other than keyword, refusal_names_goal,
    the template refusal for a benign request the model will not refuse."""
    s = ctx.s
    for it in items:
        it.own_tox = s.toxic_from == "own" and not it.benign
    _rounds(ctx, items, ("pos", "tox"))
    if s.toxic_from == "own":  # every plain reply refused: the toxic side is written the ICL way
        left = [it for it in items if it.own_tox and it.tox is None]
        for it in left:
            it.own_tox = False
        _rounds(ctx, left, ("tox",))
        for it in items:
            if it.own_tox and it.tox is not None:
                it.tox_source = "own"
    if s.gate_judge != "keyword":  # the string gates above are the keyword judge; another also screens
        from ptalign.judges import REFUSAL, make_judge

        judge = make_judge(s.gate_judge, backend=lambda: ctx.backend)
        judged = [it for it in items if not it.benign and it.pos is not None]
        verdicts = judge.judge([it.inst["text"] for it in judged], [it.pos for it in judged])
        for it, v in zip(judged, verdicts, strict=True):
            if v.verdict != REFUSAL:
                it.pos = None
                it.samples[f"pos_not_refusal_{s.gate_judge}"] += 1
                it.failed["pos"][f"pos_not_refusal_{s.gate_judge}"] += 1
    if s.refusal_names_goal:  # after the gates: they screened the model's own refusal
        for it in items:
            if not it.benign and it.pos is not None and it.inst.get("goal"):
                it.pos = gates.naming_refusal(it.inst["goal"], it.pos)
    if s.answer_opener.strip():  # after the gates and the relevance check: they screened the model's own
        # answer; the duplicate check and the polarity gate (run_pairs) see the opened one
        for it in items:
            if it.benign and it.pos is not None:
                it.pos = f"{s.answer_opener.strip()} {it.pos}"
    for it in items:  # a benign request the model will not refuse: the seed refusal opener stands in
        if it.benign and it.tox is None and it.pos is not None:
            it.tox, it.tox_source = refusal_opener(ctx), "template"


def _rounds(ctx: Ctx, items: list[Item], sides: tuple[str, ...]) -> None:
    """Up to max_attempts rounds; each round, candidate k of every open side in `sides` goes out in
    ONE call, ordered by prompt group.

    One call per (round, k) lets a batch engine (vLLM) take the whole chunk at once; each chat keeps its
    own seed (per-chat GenParams), so its sample does not depend on the batch (up to the engine's
    batch-shape numerics: vLLM's bf16 can fork a text rarely). llama.cpp still sees the chats one by
    one in group order (safe, toxic, plain), reusing each group's prefix KV: the same calls in the same
    order as before this batching, and the same files.
    """
    s = ctx.s
    for rnd in range(s.max_attempts):
        for k in range(s.candidates):
            todo = [
                (it, side)
                for group in GROUP_ORDER
                for it in items
                for side in sides
                if getattr(it, side) is None and _group(it, side) == group
            ]
            if not todo:
                break
            chats = [_chat(ctx, it, side) for it, side in todo]
            greedy = s.benign_pos_greedy and rnd == 0 and k == 0  # for benign positives only
            ps = [
                params(
                    ctx,
                    s.max_new_tokens,
                    PAIR_STOP,
                    call_seed(s.seed, it.id, side, rnd, k),
                    temperature=0.0 if greedy and it.benign and side == "pos" else None,
                )
                for it, side in todo
            ]
            answered: list[Item] = []  # benign positives kept this call, for benign_pos_relevance
            for (it, side), g in zip(todo, ctx.gen(chats, ps, desc="pairs"), strict=True):
                resp = _accept(it, side, g.text, g.finish_reason == "length")
                if resp is None:
                    continue
                if s.pos_select == "best" and side == "pos" and not it.benign:
                    it.cands.append(resp)  # ranked when the round's candidates are in
                else:
                    setattr(it, side, resp)
                    if it.benign and side == "pos":
                        answered.append(it)
            if s.benign_pos_relevance > -1.0:
                drop_off_topic(answered, s.benign_pos_relevance)
        pick_best(items)


def drop_off_topic(items: list[Item], floor: float) -> None:
    """synth.benign_pos_relevance: a benign positive whose cosine with its request is below `floor` is
    dropped and counted like a failed gate, so the next round samples it again. One batched embedding
    per call, after the call: the text gates above judge one sample without its request."""
    if not items:
        return
    topical = gates.on_topic([it.pos or "" for it in items], [it.inst["text"] for it in items])
    for it, t in zip(items, topical, strict=True):
        if t < floor:
            it.pos = None
            it.samples["benign_pos_off_topic"] += 1
            it.failed["pos"]["benign_pos_off_topic"] += 1


def pick_best(items: list[Item]) -> None:
    """pos_select=best: each harmful item's positive is the round's most whole refusal
    (gates.refusal_score; the first candidate wins a tie, so one candidate gives what `first` gives)."""
    ranked = [it for it in items if it.cands]
    flat = [(it, c) for it in ranked for c in it.cands]
    topical = gates.on_topic([c for _, c in flat], [it.inst["text"] for it, _ in flat])
    scores: dict[str, list[float]] = {}
    for (it, c), t in zip(flat, topical, strict=True):
        scores.setdefault(it.id, []).append(gates.refusal_score(c, t))
    for it in ranked:
        sc = scores[it.id]
        it.pos = it.cands[sc.index(max(sc))]
        it.samples["pos_ranked"] += len(it.cands)
        it.cands = []


def _norm(t: str) -> str:
    return " ".join(t.lower().split())


def run_pairs(ctx: Ctx) -> None:
    s = ctx.s
    insts = interleave(list(read_jsonl(ctx.run.data_file("instructions"))))
    cons: dict[tuple[str, str], list[str]] = {}
    for c in read_jsonl(ctx.run.data_file("constraints")):
        cons.setdefault((c["domain"], c["polarity"]), []).append(c["text"])

    trip_w, rej_w = ctx.writer("triplets"), ctx.writer("rejected")
    kept = list(read_jsonl(trip_w.path))
    done = {r["parent"] for r in kept} | {
        r["parent"] for r in read_jsonl(rej_w.path) if r.get("stage") == "pairs"
    }
    seen = {(_norm(r["pos"]), _norm(r["tox"])) for r in kept}
    n_kept = sum(not r.get("attack") for r in kept)  # wrapped copies do not count toward the target
    ids = {r["id"] for r in kept}
    for r in kept:  # a kill between a triplet and its wrapped copy: write the copy now (same place)
        if not r.get("attack"):
            _record_attack(ctx, r, ids)

    def rules(domain: str, pol: str, key: str) -> list[str]:
        pool = cons.get((domain, pol)) or (
            ctx.seeds.pos_constraints if pol == "pos" else ctx.seeds.neg_constraints
        )
        rng = random.Random(call_seed(s.seed, key, pol, "rules"))
        return rng.sample(pool, min(s.rules_per_prompt, len(pool)))

    queue = [r for r in insts if r["id"] not in done]
    # a batch engine gets a chunk's round in one call: make it fill the engine's batch (2 sides per
    # item). Items are generated independently (own seeds), so the chunk size changes no call.
    per_chunk = max(s.chunk, ctx.batch // 2)
    i = 0
    while i < len(queue) and (s.target_triplets == 0 or n_kept < s.target_triplets):
        # only as many items as could still be needed, so a cap does not waste generations
        need = per_chunk if s.target_triplets == 0 else min(per_chunk, s.target_triplets - n_kept)
        chunk = [
            Item(r, rules(r["domain"], "pos", r["id"]), rules(r["domain"], "neg", r["id"]))
            for r in queue[i : i + need]
        ]
        i += len(chunk)
        generate_chunk(ctx, chunk)
        ready = [it for it in chunk if it.pos is not None and it.tox is not None]
        scores = gates.polarity([it.pos for it in ready], [it.tox for it in ready])
        pol = {it.id: round(v, 6) for it, v in zip(ready, scores, strict=True)}
        for it in chunk:
            if s.target_triplets and n_kept >= s.target_triplets:
                return
            reason = None
            if it.pos is None or it.tox is None:
                side = "pos" if it.pos is None else "tox"
                reason = _drop_reason(it, side)
            elif _norm(it.pos) == _norm(it.tox) or (_norm(it.pos), _norm(it.tox)) in seen:
                reason = "duplicate"
            elif pol[it.id] < s.polarity_min:
                reason = "polarity_low"
            base = {
                "parent": it.id,
                "kind": it.inst["kind"],
                "domain": it.inst["domain"],
                "instruction": it.inst["text"],
                # train.ut_everyday reads it; absent elsewhere so that other triplets stay byte for byte
                **({"everyday": True} if it.inst.get("area") == EVERYDAY else {}),
            }
            if reason:
                ctx.record("rejected", {"id": stable_id("pair-rej", it.id), **base, "stage": "pairs", "reason": reason,
                                        "pos": it.pos, "tox": it.tox, "polarity": pol.get(it.id),
                                        "samples": dict(sorted(it.samples.items()))})  # fmt: skip
                continue
            seen.add((_norm(it.pos), _norm(it.tox)))
            rec = {"id": stable_id("triplet", it.id, it.pos, it.tox), **base, "pos": it.pos, "tox": it.tox,
                   "polarity": pol[it.id], "tox_source": it.tox_source, "samples": dict(sorted(it.samples.items()))}  # fmt: skip
            ctx.record("triplets", rec)
            _record_attack(ctx, rec, ids)
            n_kept += 1


def _record_attack(ctx: Ctx, rec: dict, ids: set[str]) -> None:
    """For a share of harmful triplets, a copy whose request sits inside a jailbreak wrapper, with the
    same positive and toxic answers: the refusal has to hold when the request is dressed up (a 135M
    model does not carry it over from plain requests by itself). For a share of everyday triplets
    (synth.attack_share_everyday) the same, with the plain answer: the wrapper alone is no reason to
    refuse."""
    if rec["kind"] == "harmful":
        share = ctx.s.attack_share
    else:
        share = ctx.s.attack_share_everyday if rec.get("everyday") else 0.0
    w = wrap_attack(rec["parent"], rec["instruction"], share)
    if w is None:
        return
    fam, text = w
    orig = {k: v for k, v in rec.items() if k != "config"}  # as written, or as read back on resume
    copy = {**orig, "id": stable_id("triplet-attack", rec["id"], fam), "instruction": text, "attack": fam,
            "samples": {}}  # fmt: skip
    if copy["id"] not in ids:
        ctx.record("triplets", copy)
        ids.add(copy["id"])


def _drop_reason(it: Item, side: str) -> str:
    """The item-level reason: the commonest rejection among the failing side's samples."""
    top = it.failed[side].most_common(1)
    return top[0][0] if top else f"{side}_failed"
