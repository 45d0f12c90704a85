"""Run configuration: one dataclass per stage (sections.py), YAML files and `--set a.b=value`
overrides (load.py).

Precedence is defaults < YAML < --set. Unknown keys, wrong types and out-of-range values raise
`ConfigError` with one line naming the key, the value and what is allowed; the CLI prints it and
exits 2. The resolved config is written to `run_dir/config.yaml` so every artifact traces back to it.
"""

from ptalign.config.load import load_config, parse_override, save_config
from ptalign.config.sections import (
    ATTACK_NAMES,
    BACKEND_KINDS,
    DATA_PRESETS,
    DEFAULT_DOMAINS,
    EVAL_NAMES,
    HARM_ONLY_JUDGES,
    JUDGE_NAMES,
    RENAMED,
    TRAIN_METHODS,
    BackendConfig,
    BackendKind,
    ConfigError,
    EvalConfig,
    EvalEngine,
    EvalName,
    JudgeName,
    ModelConfig,
    PosSelect,
    ProtectiveGoals,
    ReportConfig,
    RunConfig,
    SynthConfig,
    ToxicFrom,
    TrainConfig,
    TrainMethod,
)

__all__ = [
    "ATTACK_NAMES",
    "BACKEND_KINDS",
    "DATA_PRESETS",
    "DEFAULT_DOMAINS",
    "EVAL_NAMES",
    "HARM_ONLY_JUDGES",
    "JUDGE_NAMES",
    "RENAMED",
    "TRAIN_METHODS",
    "BackendConfig",
    "BackendKind",
    "ConfigError",
    "EvalConfig",
    "EvalEngine",
    "EvalName",
    "JudgeName",
    "ModelConfig",
    "PosSelect",
    "ProtectiveGoals",
    "ReportConfig",
    "RunConfig",
    "SynthConfig",
    "ToxicFrom",
    "TrainConfig",
    "TrainMethod",
    "load_config",
    "parse_override",
    "save_config",
]
