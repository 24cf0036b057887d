#!/usr/bin/env bash
# kill -9 at random moments of training runs, then check that the last checkpoint loads
# and that --resume continues from it. Usage:
#   cli/scripts/kill9.sh [TRIES_PER_MODEL] [TESSERA_BINARY]
# Prints one line per try and a summary; exits non-zero if any try failed.
set -uo pipefail
tries=${1:-10}
bin=${2:-target/release/tessera}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
RANDOM=7
small_rnn=(rnn train --hidden 64 --steps 100000 --eval-every 50 --save-every 7 --sample 0 --threads 1)
small_tr=(transformer train --d-model 32 --heads 2 --d-ff 64 --layers 1 --max-tokens 512
    --steps 100000 --eval-every 50 --save-every 7 --threads 1)
small_vit=(vit train --dim 16 --depth 1 --heads 2 --patch 8 --batch 64 --epochs 100
    --save-every 7 --threads 1)
ok=0 failed=0
for model in rnn transformer vit; do
    case $model in
        rnn) cmd=("${small_rnn[@]}") ;;
        transformer) cmd=("${small_tr[@]}") ;;
        vit) cmd=("${small_vit[@]}") ;;
    esac
    out="$work/$model"
    for ((i = 1; i <= tries; i++)); do
        # A fresh run (or, after the first try, a resumed one) killed after 0.3 to 3 s.
        if [[ $i == 1 ]]; then flags=(--overwrite); else flags=(--resume); fi
        "$bin" "${cmd[@]}" "${flags[@]}" --quiet --out "$out" >/dev/null 2>"$work/err" &
        pid=$!
        delay=$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.3 + 2.7 * r / 32767 }')
        sleep "$delay"
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        step=$("$bin" inspect --json "$out/checkpoint.safetensors" 2>>"$work/err" |
            python3 -c 'import json,sys; m=json.load(sys.stdin)["metadata"]; print(json.loads(m["train_state"])["step"])' 2>>"$work/err")
        if [[ -z "$step" ]]; then
            echo "$model try $i: killed after ${delay}s: the checkpoint does not load: $(tail -1 "$work/err")"
            failed=$((failed + 1))
            continue
        fi
        # The resumed run must start from that step and take 3 more.
        case $model in
            vit) budget=(--max-steps $((step + 3))) ;;
            *) budget=(--steps $((step + 3))) ;;
        esac
        if line=$("$bin" "${cmd[@]}" --resume "${budget[@]}" --quiet --out "$out" 2>&1 | tail -1) &&
            [[ $line == *"at step $((step + 3))"* ]]; then
            echo "$model try $i: killed after ${delay}s at checkpoint step $step: resumed to $((step + 3))"
            ok=$((ok + 1))
        else
            echo "$model try $i: killed after ${delay}s at checkpoint step $step: resume failed: $line"
            failed=$((failed + 1))
        fi
    done
done
echo "kill -9: $((ok + failed)) tries, $ok resumed, $failed failed"
[[ $failed == 0 ]]
