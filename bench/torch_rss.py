#!/usr/bin/env python3
"""Runs the PyTorch peer torch_bench.py with its own arguments and adds memory figures to
each JSON line it prints, measured the way `tessera bench` measures them.

    python bench/torch_rss.py PATH/TO/torch_bench.py [--sizes 256,1024] [ARGS...]

torch_bench.py is imported from the path given (not copied, not edited) and its `main`
runs with ARGS. Three of its functions are wrapped on the way:

* each workload function: before it starts, the peak resident set of the process is
  reset by writing "5" to /proc/self/clear_refs (Linux 4.0 and later);
* `time_steps`: the resident set (VmRSS of /proc/self/status) is read after the warm-up
  steps and after the timed steps, and so is the peak (VmHWM), and the three go into the
  figure's record as `rss_after_warmup_mib`, `rss_end_mib` and `peak_rss_mib`, with
  `peak_rss_scope`: "workload" (since the workload began: its setup, warm-up and every
  figure it measured so far) or "process" (since the process started, where the reset
  failed; `resource.getrusage`'s ru_maxrss off Linux);
* with --sizes (which torch_bench.py does not have), W1 runs on those sizes: the tuple
  of sizes in its code is swapped for them, the rest of its code unchanged;
* on several threads, where $TESSERA_BIN names a tessera binary (compare.sh sets it),
  each figure also gets `cores_delivered`, the cores' worth of arithmetic that many
  threads got right after it, from the probe that `tessera bench` runs after its own
  figures, so that table.py can leave out rounds the host disturbed on either side.

W7 measures in processes of its own (spawned ranks), whose records get no memory
figures. The torch_bench.py records are otherwise printed as they are.
"""
import importlib.util
import os
import resource
import sys

_scope = None


def _status_mib(key):
    """A kB value of /proc/self/status (VmRSS, VmHWM) in MiB, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_mib():
    peak = _status_mib("VmHWM")
    if peak is None:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # KiB on Linux, bytes on macOS.
        peak = maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return peak


def _reset_peak():
    """Resets the peak resident set; its scope: "workload", or "process" on failure."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "workload"
    except OSError:
        return "process"


def _wrap_workload(fn):
    def workload(args):
        global _scope
        _scope = _reset_peak()
        return fn(args)
    return workload


def _wrap_time_steps(time_steps):
    def timed(step, *a, warmup=3, **kw):
        calls = [0]
        after_warmup = [None]

        def counted():
            if calls[0] == warmup:
                after_warmup[0] = _status_mib("VmRSS")
            calls[0] += 1
            return step()

        stats = time_steps(counted, *a, warmup=warmup, **kw)
        stats["peak_rss_mib"] = _peak_mib()
        stats["peak_rss_scope"] = _scope or "process"
        stats["rss_after_warmup_mib"] = after_warmup[0]
        stats["rss_end_mib"] = _status_mib("VmRSS")
        cores = _cores_delivered()
        if cores is not None:
            stats["cores_delivered"] = cores
        return stats
    return timed


def _cores_delivered():
    """With several torch threads and $TESSERA_BIN set (compare.sh sets it): the cores'
    worth of arithmetic that many threads get right now, as `tessera bench` records it
    after its own figures (`cores_delivered`), from a one-step `tessera bench W1` run
    right after the figure; else None."""
    import json
    import subprocess
    import torch

    threads, binary = torch.get_num_threads(), os.environ.get("TESSERA_BIN")
    if threads < 2 or not binary:
        return None
    probe = [binary, "bench", "W1", "--sizes", "64", "--threads", str(threads), "--json",
             "--min-time", "0", "--steps", "1", "--max-steps", "1"]
    try:
        out = subprocess.run(probe, capture_output=True, text=True, timeout=60).stdout
        return json.loads(out.splitlines()[0]).get("cores_delivered")
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def _w1_on_sizes(w1, sizes):
    """Gives `w1` the W1 sizes `sizes` in place of the tuple of sizes in its code."""
    default = (128, 256, 512, 1024, 2048)
    consts = w1.__code__.co_consts
    if default not in consts:
        sys.exit(f"torch_rss.py: --sizes: W1 of torch_bench.py has no sizes {default}")
    swapped = tuple(tuple(sizes) if c == default else c for c in consts)
    w1.__code__ = w1.__code__.replace(co_consts=swapped)


def main():
    if len(sys.argv) < 2 or not sys.argv[1].endswith(".py"):
        sys.exit("usage: torch_rss.py PATH/TO/torch_bench.py [--sizes N,N,...] [ARGS...]")
    path, rest = os.path.abspath(sys.argv[1]), sys.argv[2:]
    sizes = None
    if "--sizes" in rest:
        i = rest.index("--sizes")
        sizes = [int(n) for n in rest[i + 1].split(",")]
        del rest[i:i + 2]
    # Importable by name, so that W7's spawned ranks find its functions.
    sys.path.insert(0, os.path.dirname(path))
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[name] = bench
    spec.loader.exec_module(bench)
    if sizes:
        _w1_on_sizes(bench.w1, sizes)
    bench.time_steps = _wrap_time_steps(bench.time_steps)
    for k, fn in list(bench.WORKLOADS.items()):
        bench.WORKLOADS[k] = _wrap_workload(fn)
    sys.argv = [path] + rest
    bench.main()


if __name__ == "__main__":
    main()
