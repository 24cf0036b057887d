#!/usr/bin/env python3
"""Samples the resident memory (VmRSS) of a command every half second while it runs and
says how much it grew after warm-up.

    cli/scripts/rss.py [--warmup 0.1] -- target/release/tessera rnn train ...

Warm-up is the first fraction of the run's duration (default 10%); the figure is the
largest RSS after warm-up against the RSS at its end. Prints one line of figures (MiB)
and exits with the command's status.
"""
import argparse
import subprocess
import sys
import time


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--every", type=float, default=0.5)
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    start = time.monotonic()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    samples = []
    while child.poll() is None:
        kib = rss_kib(child.pid)
        if kib is not None:
            samples.append((time.monotonic() - start, kib / 1024))
        time.sleep(a.every)
    total = time.monotonic() - start
    after = [m for t, m in samples if t >= a.warmup * total]
    if not after:
        print("too few samples", file=sys.stderr)
        return 1
    warm, peak, last = after[0], max(after), after[-1]
    growth = 100 * (peak - warm) / warm
    print(
        f"{total:.0f} s, {len(samples)} samples: RSS after warm-up {warm:.0f} MiB, "
        f"largest after it {peak:.0f} MiB (+{growth:.1f}%), last {last:.0f} MiB, "
        f"largest overall {max(m for _, m in samples):.0f} MiB"
    )
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
