"""Helpers shared by the GPU-check target programs (the small programs run with and without
leakscope). This file owns the target side of the GPUCHECK contract:

  * ``emit(scenario, figures)`` prints the one ``GPUCHECK {json}`` line compare.py reads, with
    the process's NVML reading taken just before;
  * ``keep(*objs)`` leaks a Python reference to each object, so what the program holds at the
    end is still held at exit (leakscope reports what is outstanding at exit; without this,
    interpreter teardown could free tensors after the figures were printed);
  * ``step(name, seconds)`` a per-step watchdog (faulthandler: dumps every thread's stack to
    stderr and exits 1 if the step hangs, also inside C code such as NCCL);
  * ``torch_snapshot_pools(torch)`` PyTorch's reserved bytes per pool from memory_snapshot().

Everything printed to stdout apart from the GPUCHECK line must be the same with and without
leakscope; a line that legitimately differs between runs carries ``[varies]``.
"""

import ctypes
import faulthandler
import json
import os
import sys
from contextlib import contextmanager

_kept = []


def keep(*objs):
    """Hold these objects until the process is gone: one extra reference each is leaked."""
    inc = ctypes.pythonapi.Py_IncRef
    inc.argtypes = [ctypes.py_object]
    inc.restype = None
    for o in objs:
        inc(o)
        _kept.append(o)


@contextmanager
def step(name, seconds):
    """Runs a block under a watchdog: if it takes more than ``seconds``, every thread's
    Python stack goes to stderr and the process exits with status 1 (faulthandler's
    _exit(1)), so it cannot hang."""
    sys.stderr.write("gpucheck: step %s (limit %d s)\n" % (name, seconds))
    sys.stderr.flush()
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def nvml_process_used(pid=None):
    """The GPU memory NVML reports for this process on device 0.

    {"used_bytes": int or None, "how": "...", "processes": [[pid, used], ...]}. Matched by pid;
    if the pid is not listed (another pid namespace) and NVML lists exactly one process, that
    one is taken and ``how`` says so.
    """
    pid = os.getpid() if pid is None else pid
    try:
        import pynvml
    except ImportError as e:
        return {"used_bytes": None, "how": "pynvml missing: %s" % e, "processes": []}
    try:
        pynvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - any NVML failure is a missing reading
        return {"used_bytes": None, "how": "nvmlInit failed: %s" % e, "processes": []}
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        listed = [[int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory)] for p in procs]
        for p_pid, used in listed:
            if p_pid == pid:
                return {"used_bytes": used, "how": "NVML, pid %d" % pid, "processes": listed}
        if len(listed) == 1:
            return {"used_bytes": listed[0][1], "how": "NVML, the only process listed (pid %d, ours %d)"
                    % (listed[0][0], pid), "processes": listed}
        return {"used_bytes": None, "how": "pid %d not among NVML's %d processes" % (pid, len(listed)),
                "processes": listed}
    except Exception as e:  # noqa: BLE001
        return {"used_bytes": None, "how": "NVML query failed: %s" % e, "processes": []}
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def emit(scenario, figures, nvml=None):
    """Prints the GPUCHECK line (last thing a target does before it returns)."""
    record = {"scenario": scenario, "pid": os.getpid(), "figures": figures,
              "nvml": nvml if nvml is not None else nvml_process_used()}
    sys.stdout.write("GPUCHECK " + json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.flush()


def torch_figures(torch, device=0):
    """The caching allocator's device-wide figures."""
    return {
        "reserved": int(torch.cuda.memory_reserved(device)),
        "allocated": int(torch.cuda.memory_allocated(device)),
        "backend": torch.cuda.get_allocator_backend(),
    }


def torch_snapshot_pools(torch, device=0):
    """{"a,b": reserved bytes} per segment_pool_id from torch.cuda.memory_snapshot();
    (0, 0) is the default pool, anything else a private pool (CUDA graph or MemPool)."""
    out = {}
    for seg in torch.cuda.memory_snapshot():
        if seg.get("device", device) != device:
            continue
        pool = seg.get("segment_pool_id")
        key = ",".join(str(int(x)) for x in pool) if pool is not None else "unknown"
        out[key] = out.get(key, 0) + int(seg["total_size"])
    return out


def say(line):
    """A stable stdout line (must be identical with and without leakscope)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
