#!/usr/bin/env python3
"""The table of vit/scripts/finetune_experiment.sh: for each arm, the test accuracy after
the first epoch, half way and at the end, each with the wall time since the start of the
arm, for tessera and timm side by side (Markdown on stdout).

    python3 vit/scripts/finetune_table.py runs/finetune
"""
import json
import os
import sys

ARMS = [
    ("pretrain", "pre-training on Fashion-MNIST (its test set)"),
    ("scratch-28", "MNIST 28x28, from scratch"),
    ("finetune-28", "MNIST 28x28, fine-tuned"),
    ("probe-28", "MNIST 28x28, linear probe"),
    ("scratch-56", "MNIST 56x56, from scratch"),
    ("finetune-56", "MNIST 56x56, fine-tuned (positions resampled)"),
    ("scratch-1k", "MNIST 1,000 labels, from scratch"),
    ("finetune-1k", "MNIST 1,000 labels, fine-tuned"),
]


def lines(path):
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def cell(rows, i):
    if not rows:
        return "-"
    r = rows[min(i, len(rows) - 1)]
    return f"{100 * r['test_acc']:.2f}% ({r['elapsed_s']:.0f} s)"


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "runs/finetune"
    print("| arm | epochs | tessera: epoch 1 | half | end | timm: epoch 1 | half | end |")
    print("|---|---:|---|---|---|---|---|---|")
    for arm, what in ARMS:
        cells = []
        epochs = 0
        for system in ("tessera", "timm"):
            rows = lines(os.path.join(root, system, arm, "metrics.jsonl"))
            epochs = max(epochs, len(rows))
            half = max(len(rows) // 2 - 1, 0)
            cells += [cell(rows, 0), cell(rows, half), cell(rows, len(rows) - 1)]
        print(f"| {what} | {epochs} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
