#!/usr/bin/env bash
# The GPU rows of docs/PERFORMANCE.md in one command, within a time budget (BUDGET_S).
#
#   scripts/device_wheels.sh               # first, on a machine with a package registry
#   OUT=DIR BUDGET_S=540 scripts/device_bench.sh
#
# Runs, most important first, each as one `python -m benchmarks.step` (bf16, our step against the
# peers where noted), and stops starting new ones when BUDGET_S seconds are spent:
#   1. BERT-large, seq 128, batch 128   (the MFU target; vs PyTorch and HF Flax)
#   2. BERT-base,  seq 128, batch 256   (vs PyTorch and HF Flax)
#   3. BERT-large, seq 512, batch 32    (and without attention dropout: the cuDNN fused path)
#   4. BERT-base,  seq 512, batch 64
# Each run's JSON is rewritten after every worker (benchmarks.step), so a run cut short keeps what
# it measured. Everything goes to $OUT (default results/device): one JSON per run, log.txt,
# env.txt (GPU, driver and package versions).
#
# SMOKE=1 runs the same sequence with the tiny model and a few small steps, on whatever backend
# is present, in float32: a check of this script itself, on a CPU. PYTHON picks the interpreter (python3).
set -uo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO_ROOT}"
OUT="${OUT:-results/device}"
PYTHON="${PYTHON:-python3}"
DEADLINE=$((SECONDS + ${BUDGET_S:-540}))
mkdir -p "${OUT}"
export PYTHONUNBUFFERED=1

if [[ -d .wheels-device ]] && [[ -z "${SMOKE:-}" ]]; then
  # --target keeps the machine's own packages untouched; PYTHONPATH puts these first.
  "${PYTHON}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/bert-jax-site .wheels-device/*.whl || exit 1
  export PYTHONPATH="/tmp/bert-jax-site${PYTHONPATH:+:${PYTHONPATH}}"
fi

{
  date -u
  nvidia-smi 2>&1 || echo "no nvidia-smi"
  "${PYTHON}" - <<'EOF'
from importlib import metadata
import jax
print("jax backend:", jax.default_backend(), jax.devices())
for name in ("jax", "jaxlib", "flax", "optax", "ml_collections", "numpy", "torch", "transformers",
             "tokenizers", "huggingface_hub"):
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name}: not installed")
EOF
} >"${OUT}/env.txt" 2>&1
cat "${OUT}/env.txt"

bench() {  # bench NAME ARGS...: one benchmarks.step run, within what is left of the budget
  local name="$1" left=$((DEADLINE - SECONDS))
  shift
  if ((left < 60)); then
    echo "== ${name}: skipped, ${left} s of the budget left" | tee -a "${OUT}/log.txt"
    return
  fi
  echo "== ${name} (${left} s left): $*" | tee -a "${OUT}/log.txt"
  timeout "${left}" "${PYTHON}" -m benchmarks.step "$@" --output "${OUT}/${name}.json" 2>&1 \
    | tee -a "${OUT}/log.txt"
  echo "== ${name}: exit ${PIPESTATUS[0]}" | tee -a "${OUT}/log.txt"
}

if [[ -n "${SMOKE:-}" ]]; then  # float32: bf16 matmuls crawl on most CPUs
  dtype=float32
  large=experiments/pretrain/tiny.py base=experiments/pretrain/tiny.py
  short=(--seq_len 32 --steps 2 --warmup_steps 0) long=(--seq_len 64 --steps 2 --warmup_steps 0)
  b_large=(--batch_size 2) b_base=(--batch_size 4) b_large_long=(--batch_size 2) b_base_long=(--batch_size 2)
else
  dtype=bfloat16
  large=experiments/pretrain/large.py base=experiments/pretrain/base.py
  short=(--seq_len 128 --steps 30 --warmup_steps 3) long=(--seq_len 512 --steps 20 --warmup_steps 3)
  b_large=(--batch_size 128) b_base=(--batch_size 256) b_large_long=(--batch_size 32) b_base_long=(--batch_size 64)
fi

bench large_seq128 --config "${large}" --dtype "${dtype}" "${short[@]}" "${b_large[@]}" --vs torch,hf_flax
bench base_seq128 --config "${base}" --dtype "${dtype}" "${short[@]}" "${b_base[@]}" --vs torch,hf_flax
bench large_seq512 --config "${large}" --dtype "${dtype}" "${long[@]}" "${b_large_long[@]}" \
  --ablations no_attention_dropout
bench base_seq512 --config "${base}" --dtype "${dtype}" "${long[@]}" "${b_base_long[@]}"
ls -l "${OUT}"
