# The measuring loop of compare.sh and many-cores.sh, sourced by both (bash).
#
# alternate_rounds RESULTS WORKLOADS THREADS...
#   For each of $ROUNDS_N rounds, each thread count and each workload (comma-separated),
#   runs $TESSERA_BIN, then $BASE_BIN where set, then PyTorch ($TORCH_PYTHON with
#   torch_rss.py around $TORCH_BENCH_PY), one after the other, appending their JSON lines
#   to RESULTS with "impl" naming the program. Each run times for $MIN_TIME_S seconds and
#   at least $STEPS_N steps (where set); W1 runs only the sizes $W1_SIZES (where set).
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
