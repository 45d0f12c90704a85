#!/usr/bin/env bash
# One prepared run for a lent GPU machine (see the device README): the training benchmark
# (bench/gpu_train.sh) and a short end-to-end run — train → eval (base and aligned) → report — of a
# random-init Qwen2.5-0.5B-shaped model (SmolLM2 tokenizer, so ~0.4 B parameters) on real triplets
# synthesized here on the CPU. Everything lands in $OUT (or /tmp/ptalign-gpu) as logs + JSON.
#
# Synthesis is not run there: random weights write nothing the quality gates keep, and neither the
# embedded GGUF (98 MB) nor MiniLM (88 MB) fits in the 64 MiB that travels. The safety figures of a
# random model mean nothing; the run measures speed and proves every stage runs on the GPU.
#
#   bench/gpu.sh prepare                 # here: wheels → .whl/, tokenizer → .bench_assets/
#   bench/gpu.sh gpu TRIPLETS.jsonl      # there (carry .whl, .bench_assets and the triplets file)
#   bench/gpu.sh cpu TRIPLETS.jsonl      # the same steps on this CPU with a tiny model (dry run)
#
# The device tool brings back at most 8 files, and this writes about 15: call it there as
#   R=$OUT; export OUT=/tmp/o; rm -rf /tmp/o; timeout 560 bash bench/gpu.sh gpu .gpu_data/triplets.jsonl; tar czf $R/all.tgz -C /tmp/o .
# with carry [.whl, .bench_assets, .gpu_data] (.gpu_data/triplets.jsonl: a copy of RUN/data/triplets.jsonl).
# (rm -rf: a lent machine can keep an earlier session's /tmp; the fourth lease's tarball held stale files.)
set -uo pipefail
cd "$(dirname "$0")/.."
mode="${1:-cpu}"
data="${2:-}"
out="${OUT:-/tmp/ptalign-gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

case "$mode" in
prepare)
  set -e
  bash bench/gpu_train.sh prepare
  # ptalign's own imports that the GPU image lacks (rouge-score is an sdist: build its wheel here)
  # plus transformers and peft at the versions tested here (the image's transformers is older)
  for pkg in nltk==3.10.4 defusedxml==0.7.1 \
    "transformers==$(python3 -c 'import transformers; print(transformers.__version__)')" \
    "peft==$(python3 -c 'import peft; print(peft.__version__)')"; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform any -d .whl "$pkg"
  done
  python3 -m pip wheel -q --no-deps -w .whl rouge-score==0.1.2
  du -sh .whl .bench_assets
  exit 0
  ;;
gpu)
  source bench/gpu_env.sh "$out"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
  shape=qwen2.5-0.5b; bs=32; eval_sets="--set eval.max_harmful=24 --set eval.max_safe=50 --set eval.max_hhh=0"
  ;;
cpu)
  export PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
  shape=tiny; bs=4; eval_sets="--set eval.max_harmful=2 --set eval.max_safe=2 --set eval.max_hhh=8"
  ;;
*)
  echo "usage: $0 prepare | gpu TRIPLETS.jsonl | cpu TRIPLETS.jsonl" >&2
  exit 2
  ;;
esac
[ -f "$data" ] || { echo "bench/gpu.sh: triplets file '$data' not found; pass RUN_DIR/data/triplets.jsonl" >&2; exit 2; }
python3 -c "import torch, transformers, peft, trl; print('versions', torch.__version__, transformers.__version__, peft.__version__, trl.__version__)" | tee "$out/versions.txt"

# 1. training benchmark (issue #4); 350 s: with 400 the fourth lease's end-to-end run did not fit in 560
if [ "$mode" = gpu ]; then
  OUT="$out" GPU_BENCH_BUDGET_S=350 timeout 380 bash bench/gpu_train.sh gpu > "$out/train_bench.log" 2>&1 || echo "train bench failed or cut (see train_bench.log)"
else
  OUT="$out" bash bench/gpu_train.sh cpu > "$out/train_bench.log" 2>&1 || echo "train bench failed (see train_bench.log)"
fi
grep -h '"ratio_vs\|tokens/s' "$out/train_bench.log" | head -20

# 2. end to end on a random-init model: train → eval base and aligned → report
tok=.bench_assets/tokenizer
[ -d "$tok" ] || python3 -c "from ptalign.models import hf_dir, load_tokenizer; load_tokenizer(hf_dir('embedded')).save_pretrained('$tok')"
model=/tmp/ptalign-rand-$shape
run=/tmp/ptalign-gpu-run
rm -rf "$model" "$run"
python3 bench/random_model.py --shape "$shape" --tokenizer "$tok" --out "$model" 2>&1 | tee "$out/e2e.log"
# the keyword judges: the default eval judge (minilm) needs MiniLM, which does not travel
common=(--config configs/quick.yaml --set "model.name=$model" --set backend.kind=transformers --set eval.evals=[hhh,asr,overrefusal,helpful]
  --set eval.judge=keyword --set "eval.judges_extra=[xstest]")
[ "$mode" = gpu ] && common+=(--set train.bf16=true --set eval.batch_size=64)
t0=$(date +%s)
timeout 90 python3 -m ptalign train "${common[@]}" --data "$data" --out "$run" --set train.epochs=1 --set "train.batch_size=$bs" >> "$out/e2e.log" 2>&1
t1=$(date +%s)
timeout 110 python3 -m ptalign eval "${common[@]}" $eval_sets --model "$model" --adapter "$run/adapter" --baseline "$model" --out "$run/eval" >> "$out/e2e.log" 2>&1
t2=$(date +%s)
python3 -m ptalign report "${common[@]}" "$run" >> "$out/e2e.log" 2>&1
t3=$(date +%s)
echo "{\"train_s\": $((t1 - t0)), \"eval_s\": $((t2 - t1)), \"report_s\": $((t3 - t2))}" | tee "$out/e2e_timing.json"
tail -n 25 "$out/e2e.log"
cp "$run/eval/comparison.json" "$out/e2e_comparison.json" 2>/dev/null
cp "$run/report.html" "$out/e2e_report.html" 2>/dev/null
ls "$run" "$run/eval" 2>/dev/null | head -30
