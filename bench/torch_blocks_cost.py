#!/usr/bin/env python3
"""Cost of PyTorch block tracking per block event, without a GPU: the stand-in torch of
tests/scenarios/torch_stub (a Python caching allocator that fires PyTorch's GPU-trace
callbacks as the real one does) allocates and frees N tensors in a loop, under
`leakscope run --track gpu` with block tracking on (the default) and with
--no-torch-blocks, interleaved rounds, medians.

Usage: python3 bench/torch_blocks_cost.py [--rounds 5] [--events 200000]

The difference of the loop's own time (measured inside the program, so start-up and the
report are left out) divided by the block events (one allocation and one free callback per
tensor) is what each event costs: PyTorch's `fire_callbacks`, the ctypes call into the shim,
its native unwind and Python-frame walk, and the record. On the GPU the same per-event cost
is added to every caching-allocator malloc/free; bench/gpu_generate.py --shim-formats blocks
measures it in a generation loop.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUB = os.path.join(ROOT, "tests", "scenarios", "torch_stub")
LOOP = r"""
import sys, time
import torch
n = int(sys.argv[1])
torch.empty(1)                      # CUDA "initialization": the helper activates here
t = time.perf_counter()
for i in range(n):
    x = torch.empty(4096)
    del x
print("LOOP %.6f" % (time.perf_counter() - t))
"""


def loop_seconds(argv, env):
    p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True)
    for line in p.stdout.decode().splitlines():
        if line.startswith("LOOP "):
            return float(line.split()[1])
    raise RuntimeError("no LOOP line")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--events", type=int, default=200_000, help="tensors allocated and freed")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "leakscope", "-p", "leakscope-shim"],
                   cwd=ROOT, check=True)
    leakscope = os.path.join(ROOT, "target", "release", "leakscope")
    py = subprocess.run([sys.executable, "-c", "import sys; print(sys.executable)"],
                        stdout=subprocess.PIPE, check=True).stdout.decode().strip()
    env = dict(os.environ, PYTHONPATH=STUB)
    env.pop("LD_PRELOAD", None)
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "loop.py")
        with open(script, "w") as f:
            f.write(LOOP)
        times = {"bare": [], "blocks on": [], "blocks off": []}
        for r in range(args.rounds):
            for name, extra in (("bare", None), ("blocks on", []), ("blocks off", ["--no-torch-blocks"])):
                cmd = [py, script, str(args.events)]
                if extra is not None:
                    cmd = [leakscope, "run", "--track", "gpu", "--out", os.path.join(tmp, "rec%d%s" % (r, name[-2:]))] \
                        + extra + ["--"] + cmd
                times[name].append(loop_seconds(cmd, env))
    med = {k: statistics.median(v) for k, v in times.items()}
    events = 2 * args.events
    print("| variant | loop seconds (median of %d) | ns per block event |" % args.rounds)
    print("|---|---|---|")
    for k in ("bare", "blocks off", "blocks on"):
        print("| %s | %.3f | %.0f |" % (k, med[k], 1e9 * med[k] / events))
    print("\nblock tracking adds %.0f ns per block event (allocation or free callback)."
          % (1e9 * (med["blocks on"] - med["blocks off"]) / events))


if __name__ == "__main__":
    main()
