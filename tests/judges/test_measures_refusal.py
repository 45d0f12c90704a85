"""Which judges measure refusal: HarmBench and Llama Guard judge harm, so their 'no' / 'safe' (said of a
helpful answer to a harmless prompt too) is no refusal; every other judge reads refusals."""

from __future__ import annotations

import pytest

from ptalign.judges import JUDGES, LLM_JUDGES, Judge, llm


@pytest.mark.parametrize("name", list(JUDGES))
def test_every_judge_says_whether_it_measures_refusal(name: str) -> None:
    judge = llm.LLM_JUDGES[name](lambda: None) if name in LLM_JUDGES else JUDGES[name](None)
    assert isinstance(judge, Judge)
    assert judge.measures_refusal is (name not in ("harmbench", "llamaguard"))
