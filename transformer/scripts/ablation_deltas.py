"""Each row of a `tessera transformer ablate` table against its base, beside the paper's.

    python3 transformer/scripts/ablation_deltas.py runs/ablate/table.json

Prints a Markdown table: for each row, the change of PPL (dev) and BLEU (dev) from the
base model, mean over seeds ± its standard error (sqrt(s_row^2/n_row + s_base^2/n_base)),
and the same change in the paper's Table 3 (newstest2013, 100K steps). Standard library
only.
"""
import json
import math
import sys

# Table 3 of "Attention Is All You Need": (PPL dev, BLEU dev).
PAPER = {
    "base": (4.92, 25.8),
    "A1": (5.29, 24.9), "A2": (5.00, 25.5), "A3": (4.91, 25.8), "A4": (5.01, 25.4),
    "B1": (5.16, 25.1), "B2": (5.01, 25.4),
    "C1": (6.11, 23.7), "C2": (5.19, 25.3), "C3": (4.88, 25.5), "C4": (5.75, 24.5),
    "C5": (4.66, 26.0), "C6": (5.12, 25.4), "C7": (4.75, 26.2),
    "D1": (5.77, 24.6), "D2": (4.95, 25.5), "D3": (4.67, 25.3), "D4": (5.47, 25.7),
    "E": (4.92, 25.7), "big": (4.33, 26.4),
}


def main(path):
    table = json.load(open(path))
    runs = {}
    for r in table["runs"]:
        ppl = math.exp(r["dev_loss"])
        runs.setdefault(r["row"], []).append((ppl, r["bleu"]))
    if "base" not in runs:
        sys.exit("the table has no base row to compare with")

    def stats(values):
        n = len(values)
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        return mean, var, n

    base = [stats([v[k] for v in runs["base"]]) for k in (0, 1)]
    print("| row | ΔPPL here | ΔPPL paper | ΔBLEU here | ΔBLEU paper | seeds |")
    print("|---|---:|---:|---:|---:|---:|")
    for s in table["rows"]:
        row = s["row"]
        if row == "base":
            continue
        cells = []
        for k in (0, 1):
            mean, var, n = stats([v[k] for v in runs[row]])
            bmean, bvar, bn = base[k]
            se = math.sqrt(var / n + bvar / bn)
            here = f"{mean - bmean:+.2f} ± {se:.2f}"
            paper = PAPER.get(row)
            there = f"{paper[k] - PAPER['base'][k]:+.2f}" if paper else "-"
            cells += [here, there]
        print(f"| {row} | {' | '.join(cells)} | {len(runs[row])} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/ablate/table.json")
