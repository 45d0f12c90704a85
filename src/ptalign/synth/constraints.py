"""Constraint synthesis (PT-ALIGN §3.1): per domain, the seed constraints plus model-completed ones, a
positive (what a maximally harmless answer does) and a negative (what a severely harmful one does).

Reads: the seeds. Writes: `RUN_DIR/data/constraints.jsonl`, `constraints.md` (for the human who checks
them), rejected items with their reason in `rejected.jsonl`. Resumes like every synthesis stage (call
cache + ids on disk).
"""

from __future__ import annotations

import math
import re

from ptalign.io import atomic_write_text, stable_id
from ptalign.llm.base import GenParams
from ptalign.synth.common import Ctx, Lookahead
from ptalign.synth.dedup import RougeDeduper
from ptalign.synth.lists import PER_CALL, list_call, list_items
from ptalign.synth.prompting import numbered, render


def constraint_reason(text: str) -> str | None:
    words = text.split()
    if len(words) < 3:
        return "too_short"
    if len(words) > 30:
        return "too_long"
    if not text[0].isalpha():
        return "junk_prefix"
    if re.match(r"(i'm sorry|i am sorry|sorry|i cannot|i can't|as an ai)", text, re.I):
        return "generator_refused"
    return None


def run_constraints(ctx: Ctx) -> None:
    """Per domain, the seed constraints plus up to constraints_per_domain generated ones per polarity."""
    s, seeds = ctx.s, ctx.seeds
    bases = {"pos": seeds.pos_constraints, "neg": seeds.neg_constraints}

    def plan(unit: tuple[str, str], rnd: int) -> tuple[list[dict], GenParams]:
        domain, pol = unit
        prompt = render(
            f"constraints_{pol}",
            description=seeds.domain(domain).description,
            examples=numbered(bases[pol]),
            n=PER_CALL,
        )
        return list_call(ctx, prompt, ("con", domain, pol, rnd))

    units = [(domain, pol) for domain in s.domains for pol in bases]
    ahead = Lookahead(ctx, units, plan, "constraints")
    lines = ["# Constraints per domain (seeds + model-generated)", ""]
    for domain in s.domains:
        d = seeds.domain(domain)
        lines += [f"## {domain}: {d.description}", ""]
        for pol, base in bases.items():
            dd = RougeDeduper(s.rouge_threshold)
            kept = []
            for c in base:
                dd.add(c)
                kept.append(c)
                ctx.record("constraints", {"id": stable_id("con", domain, pol, c), "parent": domain, "domain": domain,
                                           "polarity": pol, "text": c, "source": "seed"})  # fmt: skip
            got = 0
            for rnd in range(s.max_attempts + math.ceil(s.constraints_per_domain / PER_CALL)):
                if got >= s.constraints_per_domain:
                    break
                for j, c in enumerate(list_items(ahead.get(units.index((domain, pol)), rnd))):
                    if got >= s.constraints_per_domain:
                        break
                    reason = constraint_reason(c) or (None if dd.add(c) else "rouge_dup")
                    if reason:
                        ctx.reject("constraints", reason, c, domain, (domain, pol, rnd, j))
                        continue
                    kept.append(c)
                    got += 1
                    ctx.record("constraints", {"id": stable_id("con", domain, pol, c), "parent": domain,
                                               "domain": domain, "polarity": pol, "text": c, "source": "model"})  # fmt: skip
            lines.append("Positive (a safe answer):" if pol == "pos" else "Negative (a toxic answer):")
            lines += [f"- {c}" for c in kept] + [""]
    atomic_write_text(ctx.run.constraints_md, "\n".join(lines))
