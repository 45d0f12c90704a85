"""Judges of replies, one layer below synthesis and evaluation, so both use one implementation each.

Reads: the judges' own data (labelled replies, prompt templates) beside this file. Writes: nothing.

| name | what | needs |
|---|---|---|
| keyword | first-person refusal phrases in the opening (GCG/AutoDAN-style) | nothing |
| xstest | XSTest's refusal prefixes | nothing |
| minilm | classifiers on MiniLM embeddings, trained on replies we labelled (the embedded default) | nothing |
| minilm_smol | minilm's classifiers plus a probe on SmolLM2-135M's hidden states | nothing |
| harmbench | the HarmBench classifier's yes/no question | an LLM backend |
| llamaguard | Llama Guard 3's safe/unsafe conversation format | an LLM backend |
| strongreject | the StrongREJECT rubric (refusal, convincingness, specificity) | an LLM backend |

Synthesis gates with `keyword`; the evaluation's primary judge defaults to `minilm_smol`, which no
stage ever filtered with (config: synth.gate_judge, eval.judge). `bench/judges.py` measures each against
human labels it never saw.
"""

from __future__ import annotations

from collections.abc import Callable

from ptalign.judges.base import COMPLIANCE, NON_ANSWER, REFUSAL, VERDICTS, Judge, Judgement, Verdict
from ptalign.llm.base import Backend

BackendFactory = Callable[[], Backend]


def _keyword(_: BackendFactory | None) -> Judge:
    from ptalign.judges.keyword import KeywordJudge

    return KeywordJudge()


def _xstest(_: BackendFactory | None) -> Judge:
    from ptalign.judges.keyword import XSTestJudge

    return XSTestJudge()


def _minilm(_: BackendFactory | None) -> Judge:
    from ptalign.judges.minilm import MiniLMJudge

    return MiniLMJudge()


def _minilm_smol(_: BackendFactory | None) -> Judge:
    from ptalign.judges.smol import SmolJudge

    return SmolJudge()


def _llm(name: str) -> Callable[[BackendFactory | None], Judge]:
    def build(backend: BackendFactory | None) -> Judge:
        from ptalign.errors import UserError
        from ptalign.judges import llm

        if backend is None:
            raise UserError(f"judge {name} needs an LLM: set eval.judge_model to a model or server")
        return llm.LLM_JUDGES[name](backend)

    return build


# name → builder(backend factory or None) -> Judge; the config's judge fields are checked against it
JUDGES: dict[str, Callable[[BackendFactory | None], Judge]] = {
    "keyword": _keyword,
    "xstest": _xstest,
    "minilm": _minilm,
    "minilm_smol": _minilm_smol,
    "harmbench": _llm("harmbench"),
    "llamaguard": _llm("llamaguard"),
    "strongreject": _llm("strongreject"),
}
LLM_JUDGES = ("harmbench", "llamaguard", "strongreject")  # the ones that need a backend


def make_judge(name: str, backend: BackendFactory | None = None) -> Judge:
    """The judge registered as `name`; LLM judges call `backend()` lazily, on first use."""
    if name not in JUDGES:
        from ptalign.errors import UserError

        raise UserError(f"judge {name!r}: unknown; one of {', '.join(JUDGES)}")
    return JUDGES[name](backend)


__all__ = [
    "COMPLIANCE",
    "JUDGES",
    "LLM_JUDGES",
    "NON_ANSWER",
    "REFUSAL",
    "VERDICTS",
    "Judge",
    "Judgement",
    "Verdict",
    "make_judge",
]
