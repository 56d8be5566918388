"""GPU-check target: a slow PyTorch leak for leakscope's aging analysis (docs/aging.md).

    python3 torch_aging.py

Paced by the wall clock, one step every 100 ms: a 1 s warm-up of churn alone, then 11 s in
which every step keeps one float32 tensor of 256 KiB on cuda:0 in a list (the leak, the
``# LEAK-AGING`` line) and the churn goes on: each step allocates several tensors of random
sizes (64 KiB to 4 MiB, the ``# CHURN-AGING`` line) and drops those of three steps before,
synchronizing, so the churn's level is stationary and its memory really freed. A third
line (``# HIDDEN-AGING``) churns the same way, 8 tensors a step, and leaks from the same
line: in the leak phase the first tensor of each step's batch, always 64 KiB, is kept (a
leak hidden in churn, which leakscope finds from the blocks that outlive every block the
line frees).

The GPUCHECK line carries the truth the checks need: the planted rate (leaked bytes over
the leak phase's measured seconds, per hour), the leaked tensors' count and bytes,
mem_get_info() (free, total) and memory_allocated() at the end, the device index, the two
marked lines, and the process's age (seconds since it started, from /proc) when the leak
phase began and ended: `leakscope report` tests growth after a warm-up counted from the
process's start, and the driver sets it from ``leak_start_s`` (under leakscope, import torch
can take longer than the run's --warmup).
"""

import os
import random
import re
import time

import common

KiB = 1 << 10
MiB = 1 << 20
STEP_S = 0.1          # one step every 100 ms
WARMUP_STEPS = 10     # 1 s of churn alone
LEAK_STEPS = 110      # 11 s of leak and churn
LEAK_ELEMS = 256 * KiB // 4       # float32: 256 KiB per tensor
CHURN_PER_STEP = 4
CHURN_KEEP_STEPS = 3  # a churn tensor lives three steps (300 ms), then is dropped
CHURN_MIN, CHURN_MAX = 64 * KiB, 4 * MiB
HIDDEN_PER_STEP = 8
HIDDEN_LEAK_BYTES = 64 * KiB  # the first tensor of each batch, kept in the leak phase


def marker_lines():
    """{"LEAK-AGING": line, "CHURN-AGING": line, "HIDDEN-AGING": line} from this file's
    source."""
    out = {}
    with open(__file__) as f:
        for i, line in enumerate(f, 1):
            m = re.search(r"\S.*#\s((?:LEAK|CHURN|HIDDEN)-AGING)\s*$", line)
            if m:
                out[m.group(1)] = i
    return out


def process_age_s():
    """Seconds since this process started (/proc/uptime less /proc/self/stat's starttime,
    10 ms resolution), or None."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start = int(fields[19]) / float(os.sysconf("SC_CLK_TCK"))  # field 22, starttime
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
        return round(up - start, 3)
    except (OSError, ValueError, IndexError):
        return None


def nvml_gpu(index):
    """NVML's own (total, used, free, uuid) of GPU ``index`` (for reading beside leakscope's
    machine figures), or None."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - pynvml missing or NVML unusable: no figure
        return None
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        m = pynvml.nvmlDeviceGetMemoryInfo(h)
        uuid = pynvml.nvmlDeviceGetUUID(h)
        uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
        return {"total": int(m.total), "used": int(m.used), "free": int(m.free), "uuid": uuid}
    except Exception:  # noqa: BLE001
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def main():
    with common.step("import torch", 120):
        import torch
    with common.step("cuda init", 60):
        torch.cuda.init()
        torch.cuda.set_device(0)
        dev = torch.device("cuda", 0)
        index = torch.cuda.current_device()
    rng = random.Random(20261124)  # the same sizes bare and under leakscope
    leaked = []
    churn = []  # one list of tensors per step, the last CHURN_KEEP_STEPS steps
    hidden_leaked = []
    hidden = []  # the hidden line's batches, as churn's
    marks = {}  # "start" / "end": (monotonic time, process age) of the leak phase

    def step(k):
        if k == WARMUP_STEPS:
            marks["start"] = (time.monotonic(), process_age_s())
        if k >= WARMUP_STEPS:
            leaked.append(torch.ones(LEAK_ELEMS, dtype=torch.float32, device=dev))  # LEAK-AGING
        sizes = [rng.randint(CHURN_MIN, CHURN_MAX) for _ in range(CHURN_PER_STEP)]
        fresh = [torch.empty(n, dtype=torch.uint8, device=dev) for n in sizes]  # CHURN-AGING
        for t in fresh:
            t.fill_(1)
        churn.append(fresh)
        if len(churn) > CHURN_KEEP_STEPS:
            del churn[0]
        sizes = [HIDDEN_LEAK_BYTES] + [rng.randint(CHURN_MIN, CHURN_MAX) for _ in range(HIDDEN_PER_STEP - 1)]
        batch = [torch.empty(n, dtype=torch.uint8, device=dev) for n in sizes]  # HIDDEN-AGING
        for t in batch:
            t.fill_(2)
        if k >= WARMUP_STEPS:
            hidden_leaked.append(batch[0])
        hidden.append(batch)
        if len(hidden) > CHURN_KEEP_STEPS:
            del hidden[0]
        torch.cuda.synchronize()

    with common.step("warm-up and leak phase", 150):
        # One step at t0 + k * STEP_S (at once when running late); the phase ends one step
        # after the last one.
        steps = WARMUP_STEPS + LEAK_STEPS
        t0 = time.monotonic()
        for k in range(steps):
            wait = t0 + k * STEP_S - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            step(k)
        wait = t0 + steps * STEP_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        marks["end"] = (time.monotonic(), process_age_s())
    torch.cuda.synchronize()
    # What is held stays held until exit: the leak, and the churn's last steps (so the
    # churn's site holds bytes at exit and ranks among the report's sites).
    common.keep(leaked, churn, hidden_leaked, hidden)
    (t_start, leak_start_s), (t_end, leak_end_s) = marks["start"], marks["end"]

    elapsed = t_end - t_start
    leak_bytes = sum(t.numel() * t.element_size() for t in leaked)
    free, total = torch.cuda.mem_get_info(index)
    try:
        torch_uuid = str(torch.cuda.get_device_properties(index).uuid)
    except Exception:  # noqa: BLE001 - older torch: no uuid
        torch_uuid = None
    figures = common.torch_figures(torch, index)
    figures.update({
        "device": int(index),
        "leak_count": len(leaked),
        "leak_bytes": int(leak_bytes),
        "leak_elapsed_s": round(elapsed, 4),
        "leak_rate_bytes_per_hour": leak_bytes / elapsed * 3600.0,
        "leak_start_s": leak_start_s,
        "leak_end_s": leak_end_s,
        "step_s": STEP_S,
        "mem_get_info": [int(free), int(total)],
        "churn_live_bytes": sum(t.numel() for group in churn for t in group),
        "hidden_count": len(hidden_leaked),
        "hidden_bytes": len(hidden_leaked) * HIDDEN_LEAK_BYTES,
        "hidden_rate_bytes_per_hour": len(hidden_leaked) * HIDDEN_LEAK_BYTES / elapsed * 3600.0,
        "lines": marker_lines(),
        "file": __file__,
        "torch_uuid": torch_uuid,
        "nvml": nvml_gpu(index),
    })
    common.say("leak: %d tensors of %d bytes, %d bytes" % (len(leaked), LEAK_ELEMS * 4, leak_bytes))
    common.say("churn: %d steps of %d tensors" % (WARMUP_STEPS + LEAK_STEPS, CHURN_PER_STEP))
    common.say("leak phase %.2f s, %.0f bytes/hour [varies]" % (elapsed, figures["leak_rate_bytes_per_hour"]))
    common.say("process age at the leak's start %s s, end %s s [varies]" % (leak_start_s, leak_end_s))
    common.emit("torch-aging", figures)


if __name__ == "__main__":
    main()
