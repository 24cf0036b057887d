"""Validation loss against steps for a tessera run and a PyTorch run, as a Markdown table.

    python rnn/scripts/compare_runs.py runs/elman/metrics.jsonl torch-elman.jsonl

Rows are the steps both runs evaluated; the last row is the tessera run's last step
(the PyTorch run is expected to have evaluated it too).
"""
import json
import sys


def load(path):
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            out[int(r["step"])] = r
    return out


def main():
    ours, theirs = load(sys.argv[1]), load(sys.argv[2])
    every = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    steps = sorted(s for s in ours if s in theirs)
    last = steps[-1] if steps else None
    print("| step | tessera val (nats/char) | PyTorch val | difference |")
    print("|---:|---:|---:|---:|")
    for i, s in enumerate(steps):
        if i % every and s != last:
            continue
        a, b = ours[s]["val_loss"], theirs[s]["val_loss"]
        print(f"| {s} | {a:.4f} | {b:.4f} | {a - b:+.4f} |")
    if last is not None:
        print(f"\ntessera: {max(ours)} steps in {ours[max(ours)]['elapsed_s']:.0f} s; "
              f"PyTorch reached step {max(theirs)} in {theirs[max(theirs)]['elapsed_s']:.0f} s")


if __name__ == "__main__":
    main()
