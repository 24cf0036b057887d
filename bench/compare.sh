#!/usr/bin/env bash
# Runs tessera and PyTorch on the same workloads in one run, alternating A B A B so that
# drift on a shared machine hits both alike, and prints a Markdown table of medians and
# ratios (tessera / PyTorch), with each program's peak resident set and, where several
# thread counts were given, each program's parallel efficiency. PyTorch's side runs
# through bench/torch_rss.py, which adds the memory figures that tessera reports itself.
#
#   bench/compare.sh [WORKLOADS] [THREADS...]      e.g. bench/compare.sh W1,W1b 1 2
#
# W7 (bench/compare.sh W7 1: threads per rank) runs each program on 1 and 2 ranks and
# adds their scaling efficiency; tessera's side is built with --features mpi.
#
# Environment: ROUNDS (default 3), MIN_TIME (seconds per figure, default 1),
# VENV (PyTorch virtualenv, default ../venv-torch; INSTALL=1 creates it with torch and
# timm, about 2 GB of downloads, when it is missing),
# SHARED (default ../shared), OUT (JSON lines file, default bench/results/latest.jsonl),
# BASE (optional: another tessera binary, e.g. a release build of an earlier commit, run
# in the same rounds so that a change is measured against what it replaces),
# SIZES (optional: the W1 sizes, e.g. SIZES=256,1024),
# ISA (optional: scalar, avx2 or avx512, the widest instruction set both programs may
# use, e.g. ISA=avx2 for the figures of a machine without AVX-512; see cap_isa in
# rounds.sh). Every JSON line of tessera records the instruction set it ran at ("isa").
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
workloads="${1:-W1,W1b}"
shift || true
threads=("$@")
[ ${#threads[@]} -gt 0 ] || threads=(1 2)
rounds="${ROUNDS:-3}"
min_time="${MIN_TIME:-1}"
shared="${SHARED:-$root/../shared}"
venv="${VENV:-$root/../venv-torch}"
out="${OUT:-$root/bench/results/latest.jsonl}"

if [ ! -x "$venv/bin/python" ]; then
  if [ "${INSTALL:-0}" != 1 ]; then
    echo "no PyTorch virtualenv at $venv: give its path as VENV=..., or run again with" >&2
    echo "INSTALL=1 to create it there with torch and timm (about 2 GB of downloads)" >&2
    exit 1
  fi
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch timm
fi
# W7 (data-parallel, under mpirun) needs the command's feature mpi.
features=()
case ",$workloads," in *,W7,*) features=(--features mpi) ;; esac
cargo build --release --quiet -p tessera-cli "${features[@]}" --manifest-path "$root/Cargo.toml"
tessera="$root/target/release/tessera"
mkdir -p "$(dirname "$out")"
: > "$out"

. "$root/bench/rounds.sh"
cap_isa "${ISA:-}"
TESSERA_BIN="$tessera" BASE_BIN="${BASE:-}" TORCH_PYTHON="$venv/bin/python" \
  TORCH_BENCH_PY="$shared/bench/torch_bench.py" ROUNDS_N="$rounds" MIN_TIME_S="$min_time" \
  W1_SIZES="${SIZES:-}" alternate_rounds "$out" "$workloads" "${threads[@]}"
python3 "$root/bench/table.py" "$out"
