"""Config: presets validate, precedence holds, each bad value gives its one-line message."""

from pathlib import Path

import pytest

from ptalign.config import ConfigError, RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_validates(preset):
    cfg = load_config(preset)
    assert isinstance(cfg, RunConfig)


def test_defaults_are_the_quick_preset():
    """`ptalign run` with no flags runs what README measured: configs/quick.yaml is the readable copy of
    the defaults, key for key, and gives the same config hash (what the manifest records)."""
    quick, defaults = load_config(ROOT / "configs" / "quick.yaml"), load_config(None)
    assert quick.to_dict() == defaults.to_dict()
    sections = ("model", "synth", "train", "eval")
    assert quick.hash(*sections) == defaults.hash(*sections)


def test_version_flag(capsys):
    from ptalign import __version__
    from ptalign.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"ptalign {__version__}"


def test_paper_preset_has_paper_settings():
    cfg = load_config(ROOT / "configs" / "paper.yaml")
    assert len(cfg.synth.domains) == 10
    assert cfg.synth.target_triplets == 16000
    assert cfg.train.lam == 0.4 and cfg.train.fine_grained and cfg.train.lora_r > 0
    # the switches beyond the paper are off there
    assert cfg.synth.toxic_from == "icl" and cfg.synth.pos_select == "first" and cfg.train.kl_benign == 0
    assert cfg.train.reroute == 0 and cfg.train.recovery == 0 and cfg.train.refat == 0
    assert cfg.train.lat == 0
    assert not (cfg.synth.benign_goals or cfg.synth.refusal_names_goal or cfg.synth.request_forms)
    assert cfg.synth.benign_pos_relevance == -1.0 and cfg.train.reroute_retain == 1.0
    assert cfg.synth.benign_pos_greedy is False and cfg.synth.goal_guidance == 1.0


def test_precedence_defaults_yaml_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lam: 0.6\n  epochs: 5\n")
    cfg = load_config(f, ["train.lam=0.8"])
    assert cfg.train.lam == 0.8  # --set beats YAML
    assert cfg.train.epochs == 5.0  # YAML beats default
    assert cfg.train.lora_r == 16  # default kept


def test_lambda_alias_and_list_override():
    cfg = load_config(None, ["train.lambda=0.2", "synth.domains=violence,privacy"])
    assert cfg.train.lam == 0.2
    assert cfg.synth.domains == ["violence", "privacy"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lam=-1", "train.lam=-1.0: must be in [0, 10]"),
        ("train.batch_size=0", "train.batch_size=0: must be >= 1"),
        ("synth.domains=[]", "synth.domains=[]: must be a non-empty list"),
        ("train.bogus=1", "train.bogus: unknown key; allowed: lam,"),
        ("nosuch.key=1", "nosuch: unknown key; allowed: run_dir,"),
        ("train.lr=fast", "train.lr='fast': must be a number"),
        ("train.fine_grained=maybe", "train.fine_grained='maybe': must be true or false"),
        ("backend.kind=gpu", "backend.kind='gpu': must be one of auto, llamacpp"),
        ("eval.evals=[hhh,bogus]", "eval.evals='bogus': must be a list drawn from"),
        ("eval.score_tokens=10", "eval.score_tokens=10: must be >= 64, or 0 for the device's"),
        ("synth.rouge_threshold=1.5", "synth.rouge_threshold=1.5: must be in (0, 1]"),
        ("train.bf16=maybe", "train.bf16='maybe': must be true, false or auto"),
        ("train.recovery=2", "train.recovery=2.0: must be in [0, 1] (0 = off)"),
        ("train.recovery=0.5 train.method=dpo", "train.recovery=0.5: must be 0 with train.method=dpo"),
        ("train.refat=-1", "train.refat=-1.0: must be in [0, 1] (0 = off)"),
        ("train.lat=3", "train.lat=3.0: must be in [0, 2] (0 = off)"),
        ("train.lat=0.1 train.refat=0.5", "train.lat=0.1: must be 0 with train.method=dpo, train.reroute"),
        ("train.ut_specific=-1", "train.ut_specific=-1.0: must be >= 0 (0 = off)"),
        ("train.lam_benign=11", "train.lam_benign=11.0: must be null (= train.lam) or a number in [0, 10]"),
        ("train.ut_benign_tokens=-1", "train.ut_benign_tokens=-1: must be >= 0 (0 = every token)"),
        ("train.epochs=.inf", "train.epochs=inf: must be a finite number > 0"),
        ("train.method=dpo train.lora_r=0", "train.lora_r=0: must be > 0 with train.method=dpo"),
        ("eval.dtype=fp16", "eval.dtype='fp16': must be auto, float32, bfloat16 or float16"),
        ("synth.relevance_min=2", "synth.relevance_min=2.0: must be"),
        (
            "train.ut_specific=2 train.fine_grained=false",
            "train.ut_specific=2.0: must be 0 with train.method=dpo or train.fine_grained=false",
        ),
        (
            "train.refat=0.5 train.reroute=1",
            "train.refat=0.5: must be 0 with train.method=dpo, train.reroute",
        ),
    ],
)
def test_bad_values_one_line(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, override.split())
    text = str(e.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_bool_or_auto_reads_booleans_and_keeps_auto(tmp_path):
    assert load_config(None, ["train.bf16=true"]).train.bf16 is True
    assert load_config(None, ["train.bf16=no"]).train.bf16 is False
    assert load_config(None, ["train.bf16=auto"]).train.bf16 == "auto"
    yml = tmp_path / "c.yaml"
    yml.write_text("train:\n  bf16: false\n")
    assert load_config(yml).train.bf16 is False


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("train: 3\n")
    with pytest.raises(ConfigError, match="train=3: must be a mapping"):
        load_config(scalar)


def test_an_error_in_a_file_names_the_file_and_one_in_a_set_does_not(tmp_path):
    """A run's own config.yaml is read without the user naming it (--resume, report, sweep): a key it
    holds that was renamed since must say which file to edit, not read as a --set of theirs."""
    f = tmp_path / "config.yaml"
    f.write_text("synth:\n  judge: keyword\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, ["train.lam=0.6"])
    assert str(e.value).startswith(f"{f}: synth.judge: renamed to synth.gate_judge (one of ")
    assert str(e.value).endswith("; edit that file") and "\n" not in str(e.value)
    f.write_text("train:\n  lam: 0.4\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, ["train.lam=-3"])
    assert str(e.value).startswith("train.lam=-3.0: must be in [0, 10]")
    f.write_text("train:\n  lam: 30\n")  # wrong alone, but a --set puts it right: taken
    assert load_config(f, ["train.lam=0.6"]).train.lam == 0.6
    with pytest.raises(ConfigError) as e:  # ... and beside a --set's own error the file is not blamed
        load_config(f, ["train.lam=0.6", "synth.target_triplets=-1"])
    assert str(e.value).startswith("synth.target_triplets=-1: must be >= 0")


def test_parse_bool_reads_what_the_loader_reads():
    from ptalign.config.load import parse_bool

    assert [parse_bool("k", v) for v in ("true", " False", "1", "no", True)] == [
        True,
        False,
        True,
        False,
        True,
    ]
    for bad in ("ture", "", "2", 2):
        with pytest.raises(ConfigError, match=r"^k=.*: must be true or false$"):
            parse_bool("k", bad)


def test_set_without_equals():
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(None, ["train.lam"])


def test_hash_tracks_sections():
    a = load_config(None, ["train.lam=0.4"])
    b = load_config(None, ["train.lam=0.6"])
    assert a.hash("synth") == b.hash("synth")
    assert a.hash("train") != b.hash("train")


def test_names_equal_the_registries_they_name() -> None:
    """config lists the judge and attack names (it sits below their registries); they must agree."""
    from ptalign.config import ATTACK_NAMES, JUDGE_NAMES
    from ptalign.eval.attacks import ATTACKS
    from ptalign.judges import JUDGES

    assert ATTACK_NAMES == tuple(ATTACKS)
    assert JUDGE_NAMES == tuple(JUDGES)
    assert RunConfig().eval.attacks == list(ATTACKS)


def test_literal_fields_equal_the_registries_and_refuse_other_names() -> None:
    """evals, engines and training methods: declared once as the config's Literal types, equal to the
    registries that implement them; the CLI's stage choices are the pipeline's registry."""
    from ptalign import cli, pipeline, synth, train
    from ptalign import eval as ev
    from ptalign.config import BACKEND_KINDS, EVAL_NAMES, TRAIN_METHODS
    from ptalign.llm import BUILDERS

    assert EVAL_NAMES == tuple(ev.EVALS) and RunConfig().eval.evals == list(ev.EVALS)
    assert set(BACKEND_KINDS) == {"auto", *BUILDERS}
    assert TRAIN_METHODS == tuple(train.RECIPES)
    actions = {
        a.dest: a
        for p in cli.build_parser()._subparsers._group_actions[0].choices.values()
        for a in p._actions
    }  # noqa: SLF001
    assert actions["from_stage"].choices == list(pipeline.STAGES)
    assert actions["stage"].choices == [*synth.STAGES, "all"]
    for key, bad in (
        ("backend.kind", "tgi"),
        ("train.method", "orpo"),
        ("eval.engine", "sglang"),
        ("eval.evals", "mmlu"),
    ):
        with pytest.raises(ConfigError, match=rf"^{key}.*must be .*(one of|drawn from)") as e:
            load_config(None, [f"{key}={bad}"])
        assert "\n" not in str(e.value)


def test_goal_guidance_is_a_scale_of_the_goal_lists_only() -> None:
    assert load_config(None, ["synth.goal_guidance=4"]).synth.goal_guidance == 4.0
    with pytest.raises(ConfigError, match=r"^synth.goal_guidance=0.5: must be >= 1 \(1 = off\)$"):
        load_config(None, ["synth.goal_guidance=0.5"])
    with pytest.raises(ConfigError, match=r"acts on the goal lists of instruction_style=goals; set "):
        load_config(
            None, ["synth.goal_guidance=2", "synth.instruction_style=requests", "synth.everyday_share=0"]
        )
    assert load_config(
        None, ["synth.goal_guidance=1", "synth.instruction_style=requests", "synth.everyday_share=0"]
    )


def test_judge_settings_and_renamed_keys_give_one_line_errors() -> None:
    with pytest.raises(ConfigError, match=r"synth.judge: renamed to synth.gate_judge"):
        load_config(None, ["synth.judge=keyword"])
    with pytest.raises(
        ConfigError, match=r"eval.judge='llm': must be one of .*harmbench with eval.judge_model"
    ):
        load_config(None, ["eval.judge=llm"])
    with pytest.raises(ConfigError, match=r"eval.attacks=.*includes direct"):
        load_config(None, ["eval.attacks=roleplay"])
    cfg = RunConfig()
    assert cfg.synth.gate_judge != cfg.eval.judge  # by default the evaluation judges with another judge
