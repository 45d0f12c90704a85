# Sourced by bench/gpu.sh and bench/gpu_train.sh on the GPU machine: installs the carried wheels
# (.whl/, from `bench/gpu.sh prepare`) into /tmp/site and puts them and src/ on PYTHONPATH. The image
# has torch, transformers, peft, accelerate, pyarrow, xxhash; it lacks trl, datasets, dill,
# multiprocess, liger-kernel, nltk, defusedxml and rouge-score. The carried transformers and peft are
# the versions tested here; where they do not import on the image, the image's own are used.
# $1: a folder for the import error, if any.
if [ -z "${PTALIGN_GPU_ENV:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
  if ! python3 -c "import transformers, peft, trl, datasets" 2>"${1:-/tmp}/import_err.txt"; then
    # the carried transformers needs newer hub/regex than the image has: fall back to the image's
    rm -rf /tmp/site/transformers /tmp/site/transformers-*
    python3 -c "import transformers, peft, trl, datasets" || exit 3
  fi
  export PTALIGN_GPU_ENV=1
fi
