#!/usr/bin/env bash
# A Cloud TPU VM slice (one process per TPU host): optionally create it, copy this repo to every
# worker, install, and start the same pretraining command on all workers at once.
#
#   launch/tpu_vm_pod.sh [--dry-run] --name NAME --zone ZONE [--project PROJECT]
#                        [--accelerator-type v4-32] [--version tpu-ubuntu2204-base] [--create]
#                        [--skip-install] CONFIG WORKDIR [--config.key=value ...]
#   (installs the repo with TPU jax and gs:// support on every worker: pip install -e ".[tpu,gcs]")
#   launch/tpu_vm_pod.sh --name bert-v4 --zone us-central2-b --create \
#       experiments/pretrain/base.py gs://my-bucket/runs/base
#
# WORKDIR must be storage every worker sees (a gs:// bucket): orbax writes each checkpoint
# collectively from all hosts. Each worker reads only its own rows of every global batch.
# jax.distributed finds the other workers from the TPU metadata (--distributed=on).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
NAME="" ZONE="" PROJECT="" ACCELERATOR="v4-32" VERSION="tpu-ubuntu2204-base" CREATE=0 INSTALL=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --name) NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --accelerator-type) ACCELERATOR="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --create) CREATE=1; shift ;;
    --skip-install) INSTALL=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) break ;;
  esac
done
[[ -n "$NAME" ]] || die "--name (the TPU VM) is required"
[[ -n "$ZONE" ]] || die "--zone is required"
parse_pretrain_args "$@"
WORKDIR="$2"
if [[ "$WORKDIR" != gs://* ]]; then
  echo "tpu_vm_pod.sh: warning: WORKDIR $WORKDIR is not a gs:// bucket; every worker must see" \
       "the same checkpoints" >&2
fi

GCLOUD=(gcloud compute tpus tpu-vm)
WHERE=(--zone "$ZONE")
[[ -z "$PROJECT" ]] || WHERE+=(--project "$PROJECT")
REMOTE_DIR=bert-jax
ARCHIVE="/tmp/bert-jax-$NAME.tar.gz"

cd "$REPO_ROOT"
if [[ "$CREATE" == 1 ]]; then
  run "${GCLOUD[@]}" create "$NAME" "${WHERE[@]}" --accelerator-type "$ACCELERATOR" --version "$VERSION"
fi
# The committed tree (what `git archive` sees), so every worker runs the same code.
run git archive --format=tar.gz --prefix="$REMOTE_DIR/" -o "$ARCHIVE" HEAD
run "${GCLOUD[@]}" scp "$ARCHIVE" "$NAME:~/" "${WHERE[@]}" --worker=all
UNPACK="rm -rf $REMOTE_DIR && tar xzf $(basename "$ARCHIVE")"
if [[ "$INSTALL" == 1 ]]; then
  UNPACK+=" && cd $REMOTE_DIR && python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu,gcs]'"
fi
run "${GCLOUD[@]}" ssh "$NAME" "${WHERE[@]}" --worker=all --command "$UNPACK"
TRAIN="cd $REMOTE_DIR && .venv/bin/python -m bert.pretrain $(quote "${PRETRAIN_ARGS[@]}") --distributed=on"
run "${GCLOUD[@]}" ssh "$NAME" "${WHERE[@]}" --worker=all --command "$TRAIN"
