#!/usr/bin/env bash
# Issue 19's GPU check in one run (about 6 minutes on an H100 or H200): the CUDA backend tests, rollout throughput
# of duet's backend against model.generate and the two library candidates (a static cache compiled into a CUDA graph,
# and transformers' continuous batching), and one GRPO step of duet against TRL's, all on a random model of
# Qwen2.5-1.5B's shape in bf16. The GPU machine has torch and transformers but neither PyPI nor the embedded model, so
# the check carries what it needs in .gpu-check/ (gitignored): wheels of the packages duet imports that its image
# lacks (Python 3.12) and the embedded model's tokenizer.
#
#   bash bench/gpu_check.sh prepare          # here, with PyPI: fills .gpu-check/ (about 45 MiB)
#   bash bench/gpu_check.sh rehearse         # here: the same steps on the CPU at a toy size, to catch a broken step
#   bash bench/gpu_check.sh                  # there: carry .gpu-check; results go to $OUT (or /tmp/gpu-check)
set -uo pipefail
cd "$(dirname "$0")/.."
CHECK=.gpu-check

if [ "${1:-}" = prepare ]; then
  set -e
  PYTHON=${PYTHON:-.venv/bin/python}
  rm -rf "$CHECK" && mkdir -p "$CHECK/wheels"
  "$PYTHON" -c "from agents.models import embedded_model_dir; from transformers import AutoTokenizer
AutoTokenizer.from_pretrained(embedded_model_dir()).save_pretrained('$CHECK/tokenizer')"
  # The distributions the checks import (found by importing them here), less those the GPU image holds.
  "$PYTHON" bench/gpu_packages.py >"$CHECK/packages.txt"
  xargs -a "$CHECK/packages.txt" "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d "$CHECK/wheels"
  du -sh "$CHECK"
  exit 0
fi

OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if [ "${1:-}" = rehearse ]; then
  # The same steps on this CPU with the local environment and a smaller shape, to find a broken step before it costs
  # GPU minutes (the figures mean nothing).
  PY=.venv/bin/python DEVICE=cpu DTYPE=float32 SHAPE=smollm2-135m TOKENS=4 GROUP=2 STEPS=2
else
  [ -d "$CHECK/wheels" ] || { echo "no $CHECK/: run 'bash bench/gpu_check.sh prepare' here and carry .gpu-check"; exit 2; }
  PY=python3 DEVICE=cuda DTYPE=bfloat16 SHAPE=qwen2.5-1.5b TOKENS=256 GROUP=8 STEPS=3
  mkdir -p /tmp/site
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$CHECK"/wheels/*.whl || exit 2
  export PYTHONPATH=/tmp/site
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 DUET_CACHE_DIR=/tmp/duet-cache DUET_TEST_TOKENIZER=$PWD/$CHECK/tokenizer
MODEL=/tmp/gpu-check-model
$PY -c "import torch, transformers, trl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)" | tee -a "$OUT/gpu.txt"
$PY bench/random_model.py $SHAPE $MODEL --tokenizer "$CHECK/tokenizer" || exit 2

DUET_TEST_DEVICE=$DEVICE timeout 90 $PY -m pytest -q -p no:cacheprovider tests/test_transformers_backend.py 2>&1 | tee "$OUT/cuda_backend_tests.txt"
timeout 300 $PY bench/rollout_throughput.py --model $MODEL --device $DEVICE --dtype $DTYPE --tokens $TOKENS --candidates static paged \
  --engine-timeout 100 2>&1 | tee "$OUT/rollout_throughput.txt"
timeout 180 $PY bench/grpo_step.py --model $MODEL --device $DEVICE --dtype $DTYPE --questions 4 --group $GROUP --tokens $TOKENS --steps $STEPS \
  2>&1 | tee "$OUT/grpo_step.txt"
