#!/usr/bin/env bash
# N processes on this machine joined into one JAX run through a coordinator on 127.0.0.1:
# the multi-host code path (per-host data shards, global arrays, process-0 logging, collective
# checkpoints) without a cluster. With --devices-per-process D each process runs on D fake CPU
# devices; without it, give each process its GPUs with --gpus-per-process.
#
#   launch/multiprocess.sh [--dry-run] [--processes N] [--devices-per-process D]
#                          [--gpus-per-process G] [--port P] CONFIG WORKDIR [--config.key=value ...]
#   launch/multiprocess.sh --processes 2 --devices-per-process 4 experiments/pretrain/tiny.py runs/mp
#
# Process 0 prints to the terminal; process i also logs to WORKDIR/logs/process_i.log. If one
# process fails the others are stopped.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
PROCESSES=2
DEVICES_PER_PROCESS=""
GPUS_PER_PROCESS=""
PORT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --processes) PROCESSES="$2"; shift 2 ;;
    --devices-per-process) DEVICES_PER_PROCESS="$2"; shift 2 ;;
    --gpus-per-process) GPUS_PER_PROCESS="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) break ;;
  esac
done
[[ "$PROCESSES" =~ ^[1-9][0-9]*$ ]] || die "--processes must be a positive integer, got $PROCESSES"
[[ -z "$DEVICES_PER_PROCESS" || "$DEVICES_PER_PROCESS" =~ ^[1-9][0-9]*$ ]] \
  || die "--devices-per-process must be a positive integer, got $DEVICES_PER_PROCESS"
[[ -z "$GPUS_PER_PROCESS" || "$GPUS_PER_PROCESS" =~ ^[1-9][0-9]*$ ]] \
  || die "--gpus-per-process must be a positive integer, got $GPUS_PER_PROCESS"
[[ -z "$DEVICES_PER_PROCESS" || -z "$GPUS_PER_PROCESS" ]] \
  || die "give --devices-per-process (fake CPU devices) or --gpus-per-process, not both"
parse_pretrain_args "$@"
WORKDIR="$2"
if [[ -z "$PORT" ]]; then  # a free port on loopback, chosen by the kernel
  PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
[[ "$PORT" =~ ^[0-9]+$ ]] || die "--port must be a number, got $PORT"

# The command of process $1, as words in COMMAND.
process_command() {
  local id="$1"
  COMMAND=()
  if [[ -n "$DEVICES_PER_PROCESS" ]]; then
    COMMAND+=(env JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS")
  fi
  COMMAND+=("$PYTHON" -m bert.pretrain "${PRETRAIN_ARGS[@]}"
            "--coordinator_address=127.0.0.1:$PORT" "--num_processes=$PROCESSES" "--process_id=$id")
  if [[ -n "$GPUS_PER_PROCESS" ]]; then
    local first=$((id * GPUS_PER_PROCESS)) ids="" g
    for ((g = first; g < first + GPUS_PER_PROCESS; g++)); do ids+="${ids:+,}$g"; done
    COMMAND+=("--local_device_ids=$ids")
  fi
}

cd "$REPO_ROOT"
if [[ "$DRY_RUN" == 1 ]]; then
  for ((id = 0; id < PROCESSES; id++)); do process_command "$id"; quote "${COMMAND[@]}"; done
  exit 0
fi

mkdir -p "$WORKDIR/logs"
PIDS=()
stop_all() { local pid; for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop_all INT TERM
for ((id = PROCESSES - 1; id >= 0; id--)); do
  process_command "$id"
  if [[ "$id" == 0 ]]; then
    "${COMMAND[@]}" > >(tee "$WORKDIR/logs/process_0.log") 2>&1 &
  else
    "${COMMAND[@]}" > "$WORKDIR/logs/process_$id.log" 2>&1 &
  fi
  PIDS+=("$!")
done
STATUS=0
for _ in "${PIDS[@]}"; do  # the first failure stops the rest instead of leaving them waiting
  if ! wait -n; then STATUS=1; stop_all; fi
done
[[ "$STATUS" == 0 ]] || echo "multiprocess.sh: a process failed; logs in $WORKDIR/logs" >&2
exit "$STATUS"
