"""The package's layers, read from its imports: each module imports only from its own layer or below.

0  config, io, errors, models, rundir, seeds  3  synth, train, eval (stages; none imports another)
1  llm (engines)                               4  report (reads what the stages wrote)
2  judges                                      5  pipeline, then 6  cli
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ptalign"
LAYER = {"config": 0, "io": 0, "errors": 0, "models": 0, "seeds": 0, "rundir": 0, "llm": 1, "judges": 2,
         "synth": 3, "train": 3, "eval": 3, "report": 4, "pipeline": 5, "cli": 6, "__main__": 6}  # fmt: skip


def _imports(path: Path) -> list[str]:
    """Every ptalign module a file imports (top level or inside functions)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ptalign":
            out += [node.module] if node.module != "ptalign" else [f"ptalign.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "ptalign"]
    return out


def _unit(module: str) -> str:
    """ptalign.train.collate → train; ptalign.__version__ → the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_layer() -> None:
    units = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in SRC.rglob("*.py")}
    assert units - {"__init__"} == set(LAYER)


def test_no_import_reaches_up_or_across_the_stages() -> None:
    bad = []
    for path in SRC.rglob("*.py"):
        me = path.relative_to(SRC).parts[0].removesuffix(".py")
        if me == "__init__":
            continue
        for mod in _imports(path):
            them = _unit(mod)
            if them in ("__init__", "__version__", me):
                continue
            if LAYER[them] > LAYER[me] or (LAYER[them] == LAYER[me] == 3):
                bad.append(f"{path.relative_to(SRC)} imports {mod} (layer {LAYER[me]} → {LAYER[them]})")
    assert not bad, "\n".join(bad)


def test_the_reader_sees_every_import_form(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text(
        "import ptalign.llm.hf\nfrom ptalign import models, eval\n"
        "def g():\n    from ptalign.pipeline import run_pipeline\nimport numpy\n"
    )
    assert [_unit(m) for m in _imports(f)] == ["llm", "models", "eval", "pipeline"]
