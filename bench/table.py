#!/usr/bin/env python3
"""Markdown table of the median over rounds of each figure, tessera beside PyTorch.

Reads the JSON lines written by compare.sh (one object per figure and round, with an
"impl" key). Rounds where another process used more than 0.3 CPU per wall second are
left out, as WORKLOADS.md asks.
"""
import json
import statistics
import sys
from collections import defaultdict

rows = defaultdict(lambda: defaultdict(list))
dropped = 0
with open(sys.argv[1]) as f:
    for line in f:
        r = json.loads(line)
        others = r.get("others_cpu_per_wall")
        if others is not None and others > 0.3:
            dropped += 1
            continue
        key = (r["workload"], r.get("variant", ""), r["threads"], r["figure"])
        rows[key][r["impl"]].append(r["median"])

print("| workload | variant | threads | figure | tessera | PyTorch | ratio |")
print("|---|---|---:|---|---:|---:|---:|")
for (w, v, t, fig), impls in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][2])):
    a = statistics.median(impls["tessera"]) if impls.get("tessera") else None
    b = statistics.median(impls["torch"]) if impls.get("torch") else None
    ratio = f"{a / b:.2f}" if a and b else "-"
    fa = f"{a:.1f}" if a else "-"
    fb = f"{b:.1f}" if b else "-"
    print(f"| {w} | {v} | {t} | {fig} | {fa} | {fb} | {ratio} |")
if dropped:
    print(f"\n{dropped} figure(s) left out: another process used > 0.3 CPU per wall second.")
