# Shared by the launchers (sourced, not run): dry-run printing and the Python to use.
#
# Every command a launcher runs goes through `run`, so `--dry-run` prints exactly what would
# run, shell-quoted, one command per line, ready to paste.

DRY_RUN=0
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The interpreter: $PYTHON, else the repo's venv, else python3.
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

# Words -> one shell line: safe words bare, the rest in single quotes (as Python's shlex.quote).
quote() {
  local out="" arg squote="'"
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      out+="$arg "
    else
      out+="'${arg//$squote/$squote\\$squote$squote}' "
    fi
  done
  printf '%s\n' "${out% }"
}

run() {
  if [[ "$DRY_RUN" == 1 ]]; then quote "$@"; else "$@"; fi
}

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

# CONFIG WORKDIR [--config.key=value ...] -> PRETRAIN_ARGS, checked before anything starts.
parse_pretrain_args() {
  [[ $# -ge 2 ]] || die "expected CONFIG WORKDIR [--config.key=value ...] (see --help)"
  local config="$1" workdir="$2"
  shift 2
  [[ -f "$REPO_ROOT/${config%%:*}" || -f "${config%%:*}" ]] || die "config file ${config%%:*} not found"
  local arg
  for arg in "$@"; do
    [[ "$arg" == --config.* ]] || die "overrides must look like --config.key=value, got $arg"
  done
  PRETRAIN_ARGS=(--config "$config" --workdir "$workdir" "$@")
}
