# The measuring loop of compare.sh and many-cores.sh, sourced by both (bash).
#
# alternate_rounds RESULTS WORKLOADS THREADS...
#   For each of $ROUNDS_N rounds, each thread count and each workload (comma-separated),
#   runs $TESSERA_BIN, then $BASE_BIN where set, then PyTorch ($TORCH_PYTHON with
#   torch_rss.py around $TORCH_BENCH_PY), one after the other, appending their JSON lines
#   to RESULTS with "impl" naming the program. Each run times for $MIN_TIME_S seconds and
#   at least $STEPS_N steps (where set); W1 runs only the sizes $W1_SIZES (where set).
#
# cap_isa ISA
#   Holds both programs to the instruction set ISA (scalar, avx2 or avx512; empty: no
#   cap): tessera through TESSERA_MAX_ISA, PyTorch through ATEN_CPU_CAPABILITY,
#   MKL_ENABLE_INSTRUCTIONS and ONEDNN_MAX_CPU_ISA. The gemm crate inside tessera (its
#   small products) has no such switch: a tessera built without its x86-v4 feature
#   stays off AVX-512 there too (tensor/README.md, "Instruction sets").
cap_isa() {
  case "${1:-}" in
    "") return 0 ;;
    scalar) export ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41 ;;
    avx2) export ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ;;
    avx512) export ATEN_CPU_CAPABILITY=avx512 MKL_ENABLE_INSTRUCTIONS=AVX512 ONEDNN_MAX_CPU_ISA=AVX512_CORE ;;
    *) echo "ISA=$1: expected scalar, avx2 or avx512" >&2; return 1 ;;
  esac
  export TESSERA_MAX_ISA="$1"
  echo "both programs held to $1" >&2
}

alternate_rounds() {
  local results="$1" workloads="$2"
  shift 2
  local bench_dir round t w
  bench_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  local common=(--min-time "$MIN_TIME_S")
  [ -z "${STEPS_N:-}" ] || common+=(--steps "$STEPS_N")
  local wl
  IFS=',' read -r -a wl <<< "$workloads"
  for round in $(seq 1 "$ROUNDS_N"); do
    for t in "$@"; do
      for w in "${wl[@]}"; do
        echo "round $round/$ROUNDS_N: $w, $t thread(s)" >&2
        local args=(--threads "$t" "${common[@]}")
        [ "$w" != W1 ] || [ -z "${W1_SIZES:-}" ] || args+=(--sizes "$W1_SIZES")
        "$TESSERA_BIN" bench "$w" --json "${args[@]}" | sed 's/^{/{"impl":"tessera",/' >> "$results"
        if [ -n "${BASE_BIN:-}" ]; then
          "$BASE_BIN" bench "$w" --json "${args[@]}" | sed 's/^{/{"impl":"base",/' >> "$results"
        fi
        "$TORCH_PYTHON" "$bench_dir/torch_rss.py" "$TORCH_BENCH_PY" --workload "$w" "${args[@]}" \
          | sed 's/^{/{"impl":"torch",/' >> "$results"
      done
    done
  done
}
