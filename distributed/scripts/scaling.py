#!/usr/bin/env python3
"""Expected scaling efficiency of data-parallel training on R hosts, from a measured
compute time per step and the ring all-reduce's cost.

    scaling.py NAME STEP_S PARAMS [NAME STEP_S PARAMS ...]

STEP_S is one host's compute time for one step of its own batch (forward, backward and
optimizer; the per-host batch stays the same as R grows, as with DDP), PARAMS the
number of f32 gradients. A ring all-reduce sends 2 (R - 1) / R times the gradient bytes
over each host's link; tessera does not yet overlap it with backward, so

    efficiency = STEP_S / (STEP_S + 2 (R - 1) / R * 4 PARAMS / link bandwidth)

with the link's bandwidth at LINK_EFFICIENCY (default 0.8) of its nominal rate. The
table is Markdown: a row per model and link, a column per number of hosts.
"""
import os
import sys

HOSTS = [4, 8, 16, 32, 64]
LINKS_GBIT = [10, 100]
link_eff = float(os.environ.get("LINK_EFFICIENCY", "0.8"))

args = sys.argv[1:]
if not args or len(args) % 3:
    sys.exit(__doc__)
print("| model | step (s) | gradients (MB) | link | "
      + " | ".join(f"{r} hosts" for r in HOSTS) + " |")
print("|---|---:|---:|---|" + "---:|" * len(HOSTS))
for i in range(0, len(args), 3):
    name, step, params = args[i], float(args[i + 1]), float(args[i + 2])
    grad_bytes = 4 * params
    for g in LINKS_GBIT:
        cells = []
        for r in HOSTS:
            t = 2 * (r - 1) / r * grad_bytes / (g * 1e9 / 8 * link_eff)
            cells.append(f"{step / (step + t):.2f}")
        print(f"| {name} | {step:.3g} | {grad_bytes / 1e6:.1f} | {g} Gb/s | " + " | ".join(cells) + " |")
