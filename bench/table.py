#!/usr/bin/env python3
"""Markdown table of tessera beside PyTorch from the JSON lines of compare.sh.

Each figure was measured once per round for each program, the two runs back to back.
The table gives the median over rounds of each program's figure and the median over
rounds of the per-round ratio tessera / PyTorch (pairing runs made seconds apart cancels
most of the drift of a shared machine). Runs where another process used more than
0.3 CPU per wall second are left out, as WORKLOADS.md asks. Where compare.sh also ran
a BASE binary (an earlier build), its figures and its ratio to PyTorch get two more
columns, from the same rounds.
"""
import json
import statistics
import sys
from collections import defaultdict

runs = defaultdict(lambda: {"tessera": [], "torch": [], "base": []})
dropped = 0
with open(sys.argv[1]) as f:
    for line in f:
        r = json.loads(line)
        variant = r.get("variant", "")
        others = r.get("others_cpu_per_wall")
        ok = others is None or others <= 0.3
        if r["workload"] == "W7" and "ranks" in r:
            # The two programs name their data-parallel runs differently; they pair by
            # ranks. The PyTorch peer counts its other ranks as other processes, so the
            # disturbance check cannot apply to its runs of several ranks.
            variant = f"ranks={r['ranks']}"
            ok = ok or (r["impl"] == "torch" and r["ranks"] > 1)
            if "scaling_efficiency" in r:
                key = ("W7", f"scaling efficiency ranks={r['ranks']}", r["threads"], "ratio")
                runs[key][r["impl"]].append(r["scaling_efficiency"] if ok else None)
        key = (r["workload"], variant, r["threads"], r["figure"])
        dropped += not ok
        runs[key][r["impl"]].append(r["median"] if ok else None)

with_base = any(impls["base"] for impls in runs.values())


def median(xs):
    xs = [x for x in xs if x]
    return f"{statistics.median(xs):.{2 if max(xs) < 10 else 1}f}" if xs else "-"


def ratio(xs, ys):
    pairs = [(x, y) for x, y in zip(xs, ys) if x and y]
    return f"{statistics.median(x / y for x, y in pairs):.2f}" if pairs else "-"


head = "| workload | variant | threads | figure | tessera | PyTorch | tessera / PyTorch |"
rule = "|---|---|---:|---|---:|---:|---:|"
if with_base:
    head += " base | base / PyTorch |"
    rule += "---:|---:|"
print(head)
print(rule)
for (w, v, t, fig), impls in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][2])):
    row = f"| {w} | {v} | {t} | {fig} | {median(impls['tessera'])} | {median(impls['torch'])}"
    row += f" | {ratio(impls['tessera'], impls['torch'])} |"
    if with_base:
        row += f" {median(impls['base'])} | {ratio(impls['base'], impls['torch'])} |"
    print(row)
if dropped:
    print(f"\n{dropped} run(s) left out: another process used > 0.3 CPU per wall second.")
