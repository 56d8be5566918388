"""Timing one command for the benchmarks in bench/: wall seconds and the CPU seconds (user
+ system) of its whole process tree, the tree's failure ending the benchmark with its
stderr."""
import resource
import subprocess
import sys
import time


def timed(cmd, cwd):
    """Runs ``cmd`` in ``cwd`` (output captured); returns (wall s, cpu s)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd[:3]))} failed ({p.returncode}): "
                 f"{p.stderr.decode(errors='replace')[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu
