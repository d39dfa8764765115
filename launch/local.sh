#!/usr/bin/env bash
# One process on this machine, using all its devices (CPU, one or more GPUs, or a TPU VM host).
#
#   launch/local.sh [--dry-run] CONFIG WORKDIR [--config.key=value ...]
#   launch/local.sh experiments/pretrain/tiny.py runs/tiny --config.train_steps=50
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) break ;;
  esac
done
parse_pretrain_args "$@"
cd "$REPO_ROOT"
run "$PYTHON" -m bert.pretrain "${PRETRAIN_ARGS[@]}"
