#!/usr/bin/env bash
# tessera beside PyTorch at 1, 8 and 16 threads on a machine with many cores, from a
# prebuilt tessera binary: no Rust toolchain needed, only Python 3 with torch and timm.
# The programs run alternately (tessera, PyTorch, for each workload and thread count);
# the results go to bench/results/<hostname>-<date>/ with the machine's lscpu:
#
#   results.jsonl  one JSON line per figure, "impl" naming the program
#   table.md       table.py's table: medians, ratios, peak resident sets, efficiencies
#   lscpu.txt, torch-info.txt (torch_bench.py --info), versions.txt
#
#   TESSERA=path/to/tessera TORCH_BENCH=path/to/torch_bench.py PYTHON=path/to/python \
#     bench/many-cores.sh
#   bench/many-cores.sh path/to/tessera path/to/torch_bench.py     (the same, as arguments)
#
# Copy the whole bench/ folder: this script sources rounds.sh (the loop it shares with
# compare.sh) and calls torch_rss.py (PyTorch's side, with its peak resident set) and
# table.py beside it.
#
# Environment: TESSERA, TORCH_BENCH (or the two arguments), PYTHON (default python3),
# THREADS (default: those of 1, 8 and 16 that the machine has, and nproc itself),
# WORKLOADS (default W1,W4,W5,W3), SIZES (W1's sizes, default 256,1024,2048),
# ROUNDS (default 1), MIN_TIME (seconds per figure, default 1), STEPS (the minimum of
# timed steps, default 10; STEPS=1 MIN_TIME=0 makes a quick check of the script),
# OUT (the results folder), ISA (optional: scalar, avx2 or avx512, the widest
# instruction set both programs may use; see cap_isa in rounds.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tessera="${1:-${TESSERA:-}}"
torch_bench="${2:-${TORCH_BENCH:-}}"
python="${PYTHON:-python3}"
if [ -z "$tessera" ] || [ -z "$torch_bench" ]; then
  echo "usage: TESSERA=path/to/tessera TORCH_BENCH=path/to/torch_bench.py $0" >&2
  echo "   or: $0 path/to/tessera path/to/torch_bench.py" >&2
  exit 2
fi
[ -x "$tessera" ] || { echo "$tessera: not an executable tessera binary" >&2; exit 1; }
[ -f "$torch_bench" ] || { echo "$torch_bench: no such file" >&2; exit 1; }
"$python" -c 'import torch, timm' || {
  echo "$python cannot import torch and timm: give a Python that can as PYTHON=..." >&2
  exit 1
}

cores="$(nproc)"
if [ -n "${THREADS:-}" ]; then
  read -r -a threads <<< "$THREADS"
else
  threads=()
  for t in 1 8 16; do
    if [ "$t" -le "$cores" ]; then threads+=("$t"); fi
  done
  case " ${threads[*]} " in *" $cores "*) ;; *) threads+=("$cores") ;; esac
fi
workloads="${WORKLOADS:-W1,W4,W5,W3}"
sizes="${SIZES:-256,1024,2048}"
rounds="${ROUNDS:-1}"
min_time="${MIN_TIME:-1}"
steps="${STEPS:-10}"
out="${OUT:-$here/results/$(hostname)-$(date +%Y-%m-%d-%H%M)}"
mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"

. "$here/rounds.sh"
cap_isa "${ISA:-}"
lscpu > "$out/lscpu.txt" 2>&1 || echo "lscpu failed" >> "$out/lscpu.txt"
"$python" "$torch_bench" --info > "$out/torch-info.txt" 2>&1 || true
{
  echo "date: $(date -Is)"
  echo "host: $(hostname), nproc $cores, $(uname -srm)"
  echo "tessera: $("$tessera" --version 2>&1 || echo unknown) ($tessera)"
  echo "torch_bench: $torch_bench"
  echo "python: $("$python" --version 2>&1) ($python)"
  echo "threads: ${threads[*]}; workloads $workloads; W1 sizes $sizes"
  echo "rounds $rounds, min time $min_time s, at least $steps timed steps"
  echo "instruction set: ${ISA:-the widest each program finds}"
} > "$out/versions.txt"
cat "$out/versions.txt" >&2

TESSERA_BIN="$tessera" TORCH_PYTHON="$python" TORCH_BENCH_PY="$torch_bench" \
  ROUNDS_N="$rounds" MIN_TIME_S="$min_time" STEPS_N="$steps" W1_SIZES="$sizes" \
  alternate_rounds "$results" "$workloads" "${threads[@]}"
"$python" "$here/table.py" "$results" | tee "$out/table.md"
echo "results in $out" >&2
