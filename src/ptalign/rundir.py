"""The run directory: the files are the contract between the stages, and this module owns every path.

    RUN_DIR/
      config.yaml  manifest.json  report.html  .ptalign.lock
      cache/llm_calls.sqlite                      LLM-call cache (synth; eval's generations and judge)
      data/        topics, instructions, constraints, triplets, rejected (.jsonl), stats.json,
                   .synth_state.json, export_<fmt>/                                          ← synth
      adapter/     PEFT LoRA adapter + card (a full fine-tune: the whole model + card)      ← train
      train/       metrics.jsonl, summary.json, checkpoints/, tb/, identity.json, state.json (sweeps)
      eval/        base/ and aligned/ (<eval>.jsonl, <eval>_verdicts.jsonl, summary.json, items.json,
                   settings.json), polarity.json, comparison.json                            ← eval
      history/     outputs moved aside by --from-stage, with the config.yaml and manifest.json that made them
      sweeps/      <name>/summary.json and one run-like directory per point     ← ptalign sweep

A stage takes `(cfg, run)` and reads and writes only through a RunDir. What makes a directory's
contents valid is one rule for every stage (`check_state`): a JSON state file records the identity the
outputs were made under, and a rerun with another identity is refused with one line, never mixed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptalign.errors import UserError
from ptalign.io import atomic_write_json, run_lock

SIDES = ("base", "aligned")  # eval/base: the model as given; eval/aligned: with the trained adapter
DATA_FILES = ("topics", "instructions", "constraints", "triplets", "rejected")


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def of(cls, where: RunDir | str | Path) -> RunDir:
        return where if isinstance(where, RunDir) else cls(Path(where))

    def __str__(self) -> str:
        return str(self.root)

    # --- the run as a whole ---------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def history(self) -> Path:
        return self.root / "history"

    @property
    def sweeps(self) -> Path:
        return self.root / "sweeps"

    @property
    def llm_cache(self) -> Path:
        return self.root / "cache" / "llm_calls.sqlite"

    def is_run(self) -> bool:
        """Whether a run (or one of its stages' commands) has written here: a command that reads a run
        refuses any other directory rather than writing into it as if it were one."""
        return any(p.exists() for p in (self.manifest, self.config, self.data, self.adapter, self.eval))

    @contextmanager
    def lock(self) -> Iterator[RunDir]:
        """Exclusive for a command's life (io.run_lock: one line naming the holder's pid)."""
        with run_lock(self.root):
            yield self

    # --- synth ----------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        return self.root / "data"

    def data_file(self, name: str) -> Path:
        """data/<name>.jsonl for one of DATA_FILES."""
        if name not in DATA_FILES:
            raise ValueError(f"unknown data file {name!r}; one of {', '.join(DATA_FILES)}")
        return self.data / f"{name}.jsonl"

    @property
    def triplets(self) -> Path:
        return self.data_file("triplets")

    @property
    def stats(self) -> Path:
        return self.data / "stats.json"

    @property
    def constraints_md(self) -> Path:
        """The constraints as a readable page, for the human who checks them."""
        return self.data / "constraints.md"

    @property
    def synth_state(self) -> Path:
        return self.data / ".synth_state.json"

    def export(self, fmt: str) -> Path:
        return self.data / f"export_{fmt}"

    # --- train ----------------------------------------------------------------------------
    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def adapter_config(self) -> Path:
        """PEFT's config of the adapter: every adapter directory has one, so a directory without it is not one."""
        return self.adapter / "adapter_config.json"

    def has_adapter(self) -> bool:
        return self.adapter_config.exists()

    def full_model(self) -> bool:
        """Whether `adapter` holds a full fine-tune's model (train.lora_r=0: config.json, no adapter)."""
        return not self.has_adapter() and (self.adapter / "config.json").exists()

    @property
    def trained(self) -> Path:
        """The file a finished training leaves: the full model's config.json after a full fine-tune,
        else the adapter's config (the one to look for before anything is trained)."""
        return self.adapter / "config.json" if self.full_model() else self.adapter_config

    def has_trained(self) -> bool:
        """An adapter or a full fine-tune's model: what evaluation compares with the base."""
        return self.trained.exists()

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def checkpoints(self) -> Path:
        return self.train / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.train / "metrics.jsonl"

    @property
    def train_summary(self) -> Path:
        return self.train / "summary.json"

    @property
    def train_state(self) -> Path:  # a sweep point's: which training it holds and whether it finished
        return self.train / "state.json"

    @property
    def train_identity(self) -> Path:  # what the checkpoints were trained with (train.setup)
        return self.train / "identity.json"

    @property
    def tensorboard(self) -> Path:
        return self.train / "tb"

    # --- eval -----------------------------------------------------------------------------
    @property
    def eval(self) -> Path:
        return self.root / "eval"

    def side(self, name: str) -> Path:
        """eval/base or eval/aligned."""
        if name not in SIDES:
            raise ValueError(f"unknown eval side {name!r}; one of {', '.join(SIDES)}")
        return self.eval / name

    def summary(self, side: str) -> Path:
        return side_summary(self.side(side))

    @property
    def comparison(self) -> Path:
        return self.eval / "comparison.json"

    @property
    def polarity(self) -> Path:
        return self.eval / "polarity.json"

    @property
    def audits(self) -> Path:
        """Readers' labels on the run's replies (bench/audit.py), one file per attack; moved aside with
        eval/ by --from-stage, since they name replies a new evaluation no longer has."""
        return self.root / "audit"

    def audit(self, attack: str) -> Path:
        return self.audits / f"{attack}.jsonl"


# The files of one evaluated model's directory (eval/base, eval/aligned, or `ptalign eval --out`'s).
def records(side_dir: Path, eval_name: str) -> Path:
    """Every generation of one eval, one record per line (hazard header)."""
    return Path(side_dir) / f"{eval_name}.jsonl"


def verdicts(side_dir: Path, eval_name: str) -> Path:
    """Every judge's verdict on those generations."""
    return Path(side_dir) / f"{eval_name}_verdicts.jsonl"


def side_summary(side_dir: Path) -> Path:
    return Path(side_dir) / "summary.json"


def side_items(side_dir: Path) -> Path:
    return Path(side_dir) / "items.json"


def side_state(side_dir: Path) -> Path:
    return Path(side_dir) / "settings.json"


def read_state(path: Path) -> dict[str, Any] | None:
    """A state file's content, or None when there is none yet."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path} is corrupt; move it away to start that stage afresh") from None


def check_state(
    path: Path,
    identity: dict[str, Any],
    what: str,
    fix: str,
    absent: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """The one rule behind resuming: outputs made under another identity are refused, never mixed.

    Returns the state (identity plus whatever the stage keeps, e.g. synth's finished sub-stages);
    writes a new one when there is none. `what` names the outputs, `fix` says what to do instead.
    `absent(key)`, where a state holds nothing but its identity: the value a key missing on either
    side stands for (a setting added since, at its neutral value), and the keys of both are compared."""
    state = read_state(path)
    if state is None:
        state = dict(identity)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, state)
        return state
    if absent is None:
        diff = [k for k in identity if state.get(k) != identity[k]]
    else:
        keys = list(identity) + [k for k in state if k not in identity]
        state = {k: state.get(k, absent(k)) for k in keys}
        identity = {k: identity.get(k, absent(k)) for k in keys}
        diff = [k for k in keys if state[k] != identity[k]]
    if diff:
        got = ", ".join(f"{k}={state.get(k)!r} (now {identity[k]!r})" for k in diff)
        raise UserError(f"{what} holds results made with other settings ({got}); {fix}")
    return state


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write_json(path, state)
