"""Loading a RunConfig: defaults < YAML < `--set a.b=value` overrides, each value checked by type.

Dicts → dataclasses by hand: dataclasses have no validating loader, and pulling pydantic in for
six flat dataclasses is not worth a dependency.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ptalign.config.sections import RENAMED, ConfigError, RunConfig


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: must be a mapping of {tp.__name__} fields")
        return _build(tp, value, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):  # --set synth.domains=a,b,c
            value = [v.strip() for v in value.split(",") if v.strip()] if value else []
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value!r}: must be a list")
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        # the first member that takes the value: bool | str reads 'true' as True and keeps 'auto'
        for arg in args[:-1]:
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                pass
        return _coerce(key, value, args[-1])
    if origin is typing.Literal:  # a name from a registry: the __post_init__ check says which are allowed
        return value if isinstance(value, str) else _coerce(key, value, str)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}={value!r}: must be true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}: must be an integer")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: must be a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}: must be a number")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}={value!r}: must be a string")
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else k
        if key in RENAMED:
            raise ConfigError(RENAMED[key])
        if k not in names:
            raise ConfigError(f"{key}: unknown key; allowed: {', '.join(names)}")
        kwargs[k] = _coerce(key, v, hints[k])
    return cls(**kwargs)


def parse_bool(key: str, value: Any) -> bool:
    """`value` read as a config bool is (true/false, 1/0, yes/no), else a ConfigError naming `key`: for
    values that reach a bool field by another road than the loader (a sweep's fine_grained=true,false),
    so that a typo like 'ture' stops instead of reading as False."""
    return _coerce(key, value.strip() if isinstance(value, str) else value, bool)


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = d
    for p in parts[:-1]:
        if not isinstance(node.get(p, {}), dict):
            raise ConfigError(f"{dotted}: {p} is not a section")
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def parse_override(s: str) -> tuple[str, Any]:
    """`a.b=value` → ('a.b', value); the value is read as YAML so numbers, bools and lists work."""
    if "=" not in s:
        raise ConfigError(f"--set {s!r}: must look like section.key=value (e.g. train.lam=0.6)")
    key, raw = s.split("=", 1)
    key = key.strip()
    if key == "train.lambda":  # the paper's name
        key = "train.lam"
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, **top: Any) -> RunConfig:
    """Build a RunConfig from defaults, an optional YAML file, `--set` overrides and top-level kwargs."""
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--config {path}: file not found; pass a YAML file such as configs/quick.yaml")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {path}: top level must be a mapping of stage names")
        data = loaded
    own = copy.deepcopy(data)  # the file's values alone: to tell its errors from those of a --set
    for s in overrides or []:
        key, value = parse_override(s)
        _set_path(data, key, value)
    for k, v in top.items():
        if v is not None:
            data[k] = v
            own[k] = v
    try:
        return _build_config(data)
    except ConfigError as e:
        if path:
            _check_file(path, own, str(e))
        raise


def _build_config(data: dict[str, Any]) -> RunConfig:
    try:
        return _build(RunConfig, data)
    except TypeError as e:  # e.g. a section given as a scalar
        raise ConfigError(str(e)) from None


def _check_file(path: str | Path, own: dict[str, Any], merged: str) -> None:
    """Where the file's values alone give the same error as the merged config, the error names the
    file: a run's own config.yaml is read without the user naming it (--resume, --from-stage, report,
    sweep), and a key renamed since the run was made would otherwise read as if it came from a --set.
    Another error of the file alone (one a --set mends, or beside a --set's own error) blames nothing."""
    try:
        _build_config(own)
    except ConfigError as e:
        if str(e) == merged:
            raise ConfigError(f"{path}: {e}; edit that file") from None


def save_config(cfg: RunConfig, path: str | Path) -> None:
    from ptalign.io import atomic_write_text

    atomic_write_text(Path(path), cfg.to_yaml())
