#!/usr/bin/env python3
"""Overhead of leakscope with Python frames on the shared Python churn workload, against the
bare interpreter and memray (default and --native), in one run (interleaved rounds, medians).

Usage: python3 bench/churn_py.py [--rounds N] [--n N] [--python PATH] [--leakscope BIN] [--markdown]

Runs ../shared/bench/churn.py (1,000,000 bytearrays of 600-2600 B by default: every one goes
to malloc, a planted leak of 100 x 1000 B) as
  bare                 python3 churn.py N
  leakscope            leakscope run --out D -- python3 churn.py N     (Python frames on)
  leakscope-native     leakscope run --no-python --out D -- ...         (native stacks only)
  memray               memray run -o F churn.py N                       (when installed)
  memray-native        memray run --native -o F churn.py N
Wall and CPU seconds (CPU = user+sys of the whole process tree, collector included) are
medians over the rounds; the ratio is to the bare wall time. After the timing rounds, the
leakscope recordings of the last round are reported and their busiest site printed, so the
figures come with the attribution they bought (Python lines with frames on, interpreter
internals without).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from timing import timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHURN_PY = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench", "churn.py"))


def busiest_site(leakscope, rec):
    """Where leakscope's report puts the churn: the site with the most allocations."""
    out = subprocess.run([leakscope, "report", "--format", "json", rec],
                         stdout=subprocess.PIPE, check=True).stdout
    sites = [s for p in json.loads(out)["processes"] for s in p["sites"]]
    if not sites:
        return "no sites"
    site = max(sites, key=lambda s: s["allocations"])
    python = [f for f in site["frames"] if f.get("python")]
    frames = " <- ".join(
        f"{f.get('function') or '?'} {os.path.basename(f.get('file') or '?')}:{f.get('line') or '?'}"
        for f in (python or site["frames"])[:3])
    return f"{site['allocations']:,} allocations at {frames}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=1_000_000, help="bytearrays churn.py makes")
    ap.add_argument("--python", default=sys.executable, help="interpreter to run (default: this one)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--script", default=CHURN_PY, help="the workload (default ../shared/bench/churn.py)")
    ap.add_argument("--leakscope", help="a built leakscope binary (its shim beside it); "
                    "default: build the release binaries here")
    args = ap.parse_args()
    if args.leakscope:
        leakscope = os.path.abspath(args.leakscope)
    else:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "leakscope", "-p", "leakscope-shim"],
                       cwd=ROOT, check=True)
        leakscope = os.path.join(ROOT, "target", "release", "leakscope")
    py, n, churn = args.python, str(args.n), os.path.abspath(args.script)
    has_memray = subprocess.run([py, "-c", "import memray"], stderr=subprocess.DEVNULL).returncode == 0
    with tempfile.TemporaryDirectory(prefix="leakscope-bench-py-") as tmp:
        runs = {
            "bare": lambda i: [py, churn, n],
            "leakscope": lambda i: [leakscope, "run", "--out", os.path.join(tmp, f"ls{i}"), "--",
                                    py, churn, n],
            "leakscope-native": lambda i: [leakscope, "run", "--no-python", "--out",
                                           os.path.join(tmp, f"ln{i}"), "--", py, churn, n],
        }
        if has_memray:
            runs["memray"] = lambda i: [py, "-m", "memray", "run", "-q", "-o",
                                        os.path.join(tmp, f"m{i}.bin"), churn, n]
            runs["memray-native"] = lambda i: [py, "-m", "memray", "run", "-q", "--native", "-o",
                                               os.path.join(tmp, f"mn{i}.bin"), churn, n]
        results = {k: [] for k in runs}
        for i in range(args.rounds):
            for name, cmd in runs.items():
                results[name].append(timed(cmd(i), tmp))
        bare = statistics.median(w for w, _ in results["bare"])
        rows = []
        for name, samples in results.items():
            wall = statistics.median(w for w, _ in samples)
            cpu = statistics.median(c for _, c in samples)
            rows.append((name, wall, cpu, wall / bare))
        version = subprocess.run([py, "-c", "import sys; print(sys.version.split()[0])"],
                                 stdout=subprocess.PIPE, text=True).stdout.strip()
        if args.markdown:
            print(f"| churn.py, {args.n:,} bytearrays, Python {version}, median of {args.rounds} | wall s | cpu s | ratio to bare |")
            print("|---|---|---|---|")
            for name, wall, cpu, ratio in rows:
                print(f"| {name} | {wall:.3f} | {cpu:.3f} | {ratio:.2f} |")
        else:
            for name, wall, cpu, ratio in rows:
                print(f"{name:17} wall {wall:7.3f} s  cpu {cpu:7.3f} s  x{ratio:5.2f}")
        last = args.rounds - 1
        print(f"busiest site, leakscope:        {busiest_site(leakscope, os.path.join(tmp, f'ls{last}'))}")
        print(f"busiest site, leakscope-native: {busiest_site(leakscope, os.path.join(tmp, f'ln{last}'))}")


if __name__ == "__main__":
    main()
