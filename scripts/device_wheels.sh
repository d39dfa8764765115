#!/usr/bin/env bash
# Download, here, the wheels that scripts/device_bench.sh installs on a GPU machine that cannot
# reach a package registry (docs/PERFORMANCE.md, "On a GPU").
#
#   scripts/device_wheels.sh [PYTHON_VERSION]     # default 3.12, the GPU machine's Python
#
# That machine already has JAX (with CUDA), flax, optax, absl, numpy, PyTorch and a recent
# transformers. Missing are ml_collections (our configs) and the HF Flax peer's stack:
# transformers 4.57 (the last with FlaxBertForPreTraining) with the tokenizers and
# huggingface_hub releases it accepts. Versions come from our requirement files, so the peers
# are the ones of the CPU tables. The wheels land in .wheels-device/ (ignored by git, ~15 MB);
# copy that folder to the GPU host with the repository.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY_VERSION="${1:-3.12}"
DEST="${REPO_ROOT}/.wheels-device"

pin() {  # pin FILE NAME -> NAME==VERSION as FILE pins it
  local line
  line="$(grep -iE "^$2==" "${REPO_ROOT}/$1")" || { echo "device_wheels.sh: $1 pins no $2" >&2; exit 1; }
  echo "${line}"
}

packages=(
  "$(pin requirements.txt ml_collections)"
  "$(pin requirements-bench.txt transformers)"
  "$(pin requirements-bench.txt tokenizers)"
  "$(pin requirements-bench.txt huggingface_hub)"
)

platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "${tag}")
done

rm -rf "${DEST}"
mkdir -p "${DEST}"
python3 -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
  --python-version "${PY_VERSION}" "${platforms[@]}" --dest "${DEST}" "${packages[@]}"
ls -l "${DEST}"
du -sh "${DEST}"
