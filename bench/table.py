#!/usr/bin/env python3
"""Markdown table of tessera beside PyTorch from the JSON lines of compare.sh.

Each figure was measured once per round for each program, the two runs back to back.
The table gives the median over rounds of each program's figure and the median over
rounds of the per-round ratio tessera / PyTorch (pairing runs made seconds apart cancels
most of the drift of a shared machine). Runs where another process used more than
0.3 CPU per wall second are left out, as WORKLOADS.md asks.
"""
import json
import statistics
import sys
from collections import defaultdict

runs = defaultdict(lambda: {"tessera": [], "torch": []})
dropped = 0
with open(sys.argv[1]) as f:
    for line in f:
        r = json.loads(line)
        key = (r["workload"], r.get("variant", ""), r["threads"], r["figure"])
        others = r.get("others_cpu_per_wall")
        ok = others is None or others <= 0.3
        dropped += not ok
        runs[key][r["impl"]].append(r["median"] if ok else None)

print("| workload | variant | threads | figure | tessera | PyTorch | tessera / PyTorch |")
print("|---|---|---:|---|---:|---:|---:|")
for (w, v, t, fig), impls in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][2])):
    pairs = [(a, b) for a, b in zip(impls["tessera"], impls["torch"]) if a and b]
    a = [x for x in impls["tessera"] if x]
    b = [x for x in impls["torch"] if x]
    fa = f"{statistics.median(a):.1f}" if a else "-"
    fb = f"{statistics.median(b):.1f}" if b else "-"
    ratio = f"{statistics.median(x / y for x, y in pairs):.2f}" if pairs else "-"
    print(f"| {w} | {v} | {t} | {fig} | {fa} | {fb} | {ratio} |")
if dropped:
    print(f"\n{dropped} run(s) left out: another process used > 0.3 CPU per wall second.")
