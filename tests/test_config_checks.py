"""Config checks between fields: a switch the chosen setting would ignore is refused in one line."""

from __future__ import annotations

import pytest

from ptalign.config import HARM_ONLY_JUDGES, ConfigError, load_config

REQUESTS = ["synth.instruction_style=requests", "synth.everyday_share=0", "synth.goal_guidance=1"]


@pytest.mark.parametrize(
    "switch",
    [
        "synth.request_forms=0.5",
        "synth.protective_goals=drop",
        "synth.refusal_names_goal=true",
        "synth.benign_goals=true",
    ],
)
def test_goal_switches_are_refused_under_requests(switch: str) -> None:
    key = switch.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}=.* instruction_style=goals; set .*{key}="):
        load_config(None, [*REQUESTS, switch])
    assert load_config(None, [switch])  # the goals style reads it


def test_requests_style_keeps_its_neutral_goal_switches() -> None:
    cfg = load_config(None, REQUESTS)
    assert cfg.synth.instruction_style == "requests" and cfg.synth.request_forms == 0.0


@pytest.mark.parametrize("judge", HARM_ONLY_JUDGES)
def test_a_judge_of_harm_cannot_measure_over_refusal(judge: str) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"^eval.judge='{judge}': must be a judge of refusal while eval.evals has overrefusal and helpful",
    ):
        load_config(None, [f"eval.judge={judge}"])
    with pytest.raises(ConfigError, match="has helpful "):
        load_config(None, [f"eval.judge={judge}", "eval.evals=hhh,asr,helpful"])
    cfg = load_config(None, [f"eval.judge={judge}", "eval.evals=hhh,asr,polarity"])
    assert cfg.eval.judge == judge
    cfg = load_config(None, [f"eval.judges_extra={judge}"])  # beside a refusal judge it may run
    assert cfg.eval.judges_extra == [judge]


def test_harm_only_judges_match_the_judges_own_word() -> None:
    from ptalign.judges import llm

    assert set(HARM_ONLY_JUDGES) == {n for n, c in llm.LLM_JUDGES.items() if not c.measures_refusal}
