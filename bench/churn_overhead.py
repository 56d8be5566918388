#!/usr/bin/env python3
"""Overhead of leakscope on the shared malloc-churn workload, against the bare program and
heaptrack, in one run (interleaved rounds, medians).

Usage: python3 bench/churn_overhead.py [--rounds N] [--events N] [--markdown]

Builds ../shared/bench/churn.c (gcc -O2 -g) and the release leakscope, then times
  bare        ./churn N
  heaptrack   heaptrack ./churn N           (skipped when heaptrack is not installed)
  leakscope   leakscope run --out D -- ./churn N   (recording + the end-of-run report)
Wall and CPU seconds (CPU = user+sys of the whole process tree) are medians over the rounds;
"added ns/event" divides the added wall time by the number of allocation events (2 per pair).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from timing import timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHURN_C = os.path.join(ROOT, "..", "shared", "bench", "churn.c")


def build(tmp):
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "leakscope", "-p", "leakscope-shim"],
                   cwd=ROOT, check=True)
    exe = os.path.join(tmp, "churn")
    subprocess.run(["gcc", "-O2", "-g", CHURN_C, "-o", exe], check=True)
    return exe, os.path.join(ROOT, "target", "release", "leakscope")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--events", type=int, default=2_000_000, help="malloc/free pairs")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="leakscope-bench-") as tmp:
        churn, leakscope = build(tmp)
        n = str(args.events)
        runs = {"bare": lambda i: [churn, n]}
        if shutil.which("heaptrack"):
            runs["heaptrack"] = lambda i: ["heaptrack", "-o", os.path.join(tmp, f"ht{i}"), churn, n]
        runs["leakscope"] = lambda i: [leakscope, "run", "--out", os.path.join(tmp, f"ls{i}"), "--", churn, n]
        results = {k: [] for k in runs}
        for i in range(args.rounds):
            for name, cmd in runs.items():
                results[name].append(timed(cmd(i), tmp))
        events = 2 * args.events
        bare = statistics.median(w for w, _ in results["bare"])
        rows = []
        for name, samples in results.items():
            wall = statistics.median(w for w, _ in samples)
            cpu = statistics.median(c for _, c in samples)
            added = (wall - bare) / events * 1e9
            rows.append((name, wall, cpu, wall / bare, added))
        if args.markdown:
            print(f"| run ({args.events:,} pairs, median of {args.rounds}) | wall s | cpu s | ratio to bare | added ns/event |")
            print("|---|---|---|---|---|")
            for name, wall, cpu, ratio, added in rows:
                print(f"| {name} | {wall:.3f} | {cpu:.3f} | {ratio:.1f} | {added:.0f} |")
        else:
            for name, wall, cpu, ratio, added in rows:
                print(f"{name:10} wall {wall:7.3f} s  cpu {cpu:7.3f} s  x{ratio:5.1f}  +{added:6.0f} ns/event")
        ht = dict((r[0], r) for r in rows)
        if "heaptrack" in ht:
            share = (ht["leakscope"][1] - bare) / max(ht["heaptrack"][1] - bare, 1e-9)
            print(f"leakscope's added wall time is {share:.2f} x heaptrack's")


if __name__ == "__main__":
    main()
