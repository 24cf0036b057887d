#!/usr/bin/env python3
"""Markdown tables of tessera beside PyTorch from the JSON lines of compare.sh.

    python3 bench/table.py RESULTS.jsonl

Each figure was measured once per round for each program, the two runs back to back.
The first table gives the median over rounds of each program's figure and the median over
rounds of the per-round ratio tessera / PyTorch (pairing runs made seconds apart cancels
most of the drift of a shared machine). Runs where another process used more than
0.3 CPU per wall second are left out, as WORKLOADS.md asks, and so are runs on several
threads after which that many threads got less than 0.6 times as many cores'
arithmetic (`cores_delivered`: the host ran them on fewer physical cores; tessera
measures it after its own figures, torch_rss.py has it measured after PyTorch's).
Where compare.sh also ran a BASE binary (an earlier build), its figures and its ratio
to PyTorch get two more columns, from the same rounds.

The table also gives each program's peak resident set in MiB (`peak_rss_mib`: the
median over rounds of the process's peak since the workload began, read after the
figure's timed steps; for PyTorch, as bench/torch_rss.py adds it) and their ratio.
Memory does not depend on how busy the machine was, so no run is left out of these.

Where a program measured a figure at several thread counts, including 1, a second table
gives its parallel efficiency at each count T: the median figure at T threads over T
times the median figure at 1 thread (1.00: T threads do T times the work of one).
"""
import json
import statistics
import sys
from collections import defaultdict

IMPLS = ("tessera", "torch", "base")
runs = defaultdict(lambda: {i: [] for i in IMPLS})
rss = defaultdict(lambda: {i: [] for i in IMPLS})
# Below this many cores per thread (`cores_delivered` / threads) a run is left out: the
# bound `tessera bench` marks, `tessera_bench::SHORT_OF_CORES`.
SHORT_OF_CORES = 0.6
busy = 0
short = 0
with open(sys.argv[1]) as f:
    for line in f:
        r = json.loads(line)
        variant = r.get("variant", "")
        others = r.get("others_cpu_per_wall")
        quiet = others is None or others <= 0.3
        if r["workload"] == "W7" and "ranks" in r:
            # The two programs name their data-parallel runs differently; they pair by
            # ranks. The PyTorch peer counts its other ranks as other processes, so the
            # disturbance check cannot apply to its runs of several ranks.
            variant = f"ranks={r['ranks']}"
            quiet = quiet or (r["impl"] == "torch" and r["ranks"] > 1)
        cores = r.get("cores_delivered")
        whole = cores is None or cores >= SHORT_OF_CORES * r["threads"]
        ok = quiet and whole
        busy += not quiet
        short += quiet and not whole
        if r["workload"] == "W7" and "ranks" in r and "scaling_efficiency" in r:
            key = ("W7", f"scaling efficiency ranks={r['ranks']}", r["threads"], "ratio")
            runs[key][r["impl"]].append(r["scaling_efficiency"] if ok else None)
        key = (r["workload"], variant, r["threads"], r["figure"])
        runs[key][r["impl"]].append(r["median"] if ok else None)
        rss[key][r["impl"]].append(r.get("peak_rss_mib"))

with_base = any(impls["base"] for impls in runs.values())


def middle(xs):
    """The median of the values measured, or None."""
    xs = [x for x in xs if x]
    return statistics.median(xs) if xs else None


def fmt(x):
    return "-" if x is None else f"{x:.{2 if x < 10 else 1}f}"


def median(xs):
    return fmt(middle(xs))


def ratio(xs, ys):
    pairs = [(x, y) for x, y in zip(xs, ys) if x and y]
    return f"{statistics.median(x / y for x, y in pairs):.2f}" if pairs else "-"


def mib(xs):
    m = middle(xs)
    return "-" if m is None else f"{m:.0f}"


head = "| workload | variant | threads | figure | tessera | PyTorch | tessera / PyTorch |"
rule = "|---|---|---:|---|---:|---:|---:|"
if with_base:
    head += " base | base / PyTorch |"
    rule += "---:|---:|"
head += " peak MiB tessera | peak MiB PyTorch | MiB ratio |"
rule += "---:|---:|---:|"
print(head)
print(rule)
order = sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][2]))
for key, impls in order:
    w, v, t, fig = key
    row = f"| {w} | {v} | {t} | {fig} | {median(impls['tessera'])} | {median(impls['torch'])}"
    row += f" | {ratio(impls['tessera'], impls['torch'])} |"
    if with_base:
        row += f" {median(impls['base'])} | {ratio(impls['base'], impls['torch'])} |"
    m = rss[key]
    row += f" {mib(m['tessera'])} | {mib(m['torch'])} | {ratio(m['tessera'], m['torch'])} |"
    print(row)
if busy:
    print(f"\n{busy} run(s) left out: another process used > 0.3 CPU per wall second.")
if short:
    print(f"\n{short} run(s) left out: the threads got fewer cores than they are.")

# Parallel efficiency: figure at T threads over T times the figure at 1 thread, for each
# program. W7 is left out: its threads are per rank, and it has its own efficiency.
by_threads = defaultdict(dict)
for (w, v, t, fig), impls in runs.items():
    if w != "W7":
        by_threads[(w, v, fig)][t] = impls
shown = [i for i in IMPLS if i != "base" or with_base]
names = {"tessera": "tessera", "torch": "PyTorch", "base": "base"}
rows = []
for (w, v, fig), at in sorted(by_threads.items(), key=lambda kv: kv[0][0]):
    if 1 not in at or len(at) < 2:
        continue
    for t in sorted(at):
        if t == 1:
            continue
        cells = []
        for i in shown:
            one, many = middle(at[1][i]), middle(at[t][i])
            cells.append("-" if one is None or many is None else f"{many / (t * one):.2f}")
        rows.append(f"| {w} | {v} | {fig} | {t} | " + " | ".join(cells) + " |")
if rows:
    print("\nParallel efficiency: figure at T threads / (T x figure at 1 thread).\n")
    print("| workload | variant | figure | threads | " + " | ".join(names[i] for i in shown) + " |")
    print("|---|---|---|---:|" + "---:|" * len(shown))
    print("\n".join(rows))
