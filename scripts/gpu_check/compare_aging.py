"""The GPU check's judging of the ``torch-aging`` scenario (targets/torch_aging.py):
leakscope's aging analysis (docs/aging.md) on a slow planted PyTorch leak. Kept apart from
compare.py, which calls :func:`check` and, in its self-test, :func:`write_fake`; ``h`` is
compare.py itself (its row helpers and report readers). driver.py takes the scenario's
extra leakscope arguments from here (:data:`RUN_ARGS`, :func:`report_args`).

Checks: the block site of the ``# LEAK-AGING`` line grows significantly, as a drift, at
the planted rate (within 20%); the ``# CHURN-AGING`` line's block sites do not; the
``# HIDDEN-AGING`` line (churn that keeps one 64 KiB tensor a step) grows significantly,
and which of its series showed it (``basis``) is given for reading; the
``pytorch-caching`` pool of the device grows significantly; ``aging.machine`` has the GPU
with torch's total and a uuid; the process's GPU exhaustion estimate is headroom / slope;
the run's ``aging`` section has tests and the default alpha and q.
"""

import math
import os

import compare_torch

SCENARIO = "torch-aging"
DESCRIPTION = ("aging analysis: a PyTorch program keeping a 256 KiB tensor every 100 ms for 11 s "
               "beside a stationary churn of random-size tensors, and a second churning line that "
               "keeps one 64 KiB tensor of each batch (leakscope run --interval 200ms --warmup 2s), "
               "vs the planted rates, torch.cuda.mem_get_info() and NVML")

# `leakscope run` arguments of this scenario (series every 200 ms; start-up left out).
WARMUP_S = 2.0
# `--track gpu`, as the README advises for PyTorch servers: host tracking would add a
# million start-up sites from `import torch` and make the report take over a minute.
RUN_ARGS = ["--track", "gpu", "--interval", "200ms", "--warmup", "%gs" % WARMUP_S]
SLOPE_TOLERANCE = 0.20     # the leak site's slope vs the planted rate, relative
USED_TOLERANCE = 0.05      # NVML used vs mem_get_info total - free, relative (INFO past it)
HOURS_TOLERANCE = 1e-6     # exhaustion hours vs headroom / slope, relative
ALPHA, Q = 0.01, 0.1       # leakscope's defaults


def report_args(figures):
    """`leakscope report` arguments. The report does not remember the run's --warmup (its
    default is 60 s, longer than this run), and under leakscope `import torch` takes longer
    than 2 s: the warm-up, counted from the process's start, is the run's 2 s or, when
    later, the process's age when the leak phase began (from the GPUCHECK line, rounded up
    to 0.1 s), so that the tests see the leak phase and not the flat start-up before it."""
    warmup = WARMUP_S
    start = (figures or {}).get("leak_start_s")
    if isinstance(start, (int, float)) and not isinstance(start, bool) and start > 0:
        warmup = max(warmup, math.ceil((float(start) + 0.05) * 10.0) / 10.0)
    return ["--warmup", "%.1fs" % warmup]


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v):
    return int(round(v)) if _num(v) else None


def _text(r, leakscope, reference):
    """Sets a row's displayed figures (the raw ones stay in results.json)."""
    r["leakscope_text"], r["reference_text"] = leakscope, reference
    return r


def _trend_text(t):
    if t is None:
        return "no trend (untested)"
    return "%s, %s, p %.3g" % ("significant" if t.get("significant") else "not significant",
                               t.get("shape"), t.get("p_value") if _num(t.get("p_value")) else float("nan"))


def _sites_at(blocks, file_name, line):
    """Block sites whose innermost Python frame is ``file_name``:``line``."""
    out = []
    for x in blocks:
        fl = compare_torch.headline(x)
        if fl and fl[1] == line and os.path.basename(fl[0] or "") == file_name:
            out.append(x)
    return out


def _where(site):
    fl = compare_torch.headline(site)
    return "%s:%s" % (os.path.basename(fl[0] or "?"), fl[1]) if fl else "(no Python frame)"


def check(s, h):
    f, p, rep = s.figures, s.proc, s.report or {}
    run = rep.get("aging") if isinstance(rep.get("aging"), dict) else None
    pa = ((p or {}).get("aging") or {}) if p else {}
    index = f.get("device", 0)
    lines = f.get("lines") or {}
    target = os.path.basename(f.get("file") or "torch_aging.py")
    blocks = compare_torch.block_sites(p)
    rows = []

    # 1. the planted leak's block site
    leak_sites = _sites_at(blocks, target, lines.get("LEAK-AGING"))
    leak = max(leak_sites, key=lambda x: int(x.get("outstanding_bytes") or 0)) if leak_sites else None
    t = (leak or {}).get("trend")
    note = "line %s; %d block sites at the line" % (lines.get("LEAK-AGING"), len(leak_sites))
    if leak:
        note += "; holds %s in %s blocks (the target kept %s in %s)" % (
            h.fmt_bytes(leak.get("outstanding_bytes")), leak.get("outstanding_count"),
            h.fmt_bytes(f.get("leak_bytes")), f.get("leak_count"))
    ok = t is not None and t.get("significant") is True and t.get("shape") == "drift"
    rows.append(h.row(s.name, "LEAK-AGING block site: trend significant, shape drift",
                      _trend_text(t) if leak else "no site", "significant, drift",
                      h.PASS if ok else h.FAIL, note, as_bytes=False, diff=""))
    slope = (t or {}).get("slope_bytes_per_hour")
    rate = f.get("leak_rate_bytes_per_hour")
    rel = (slope - rate) / rate if _num(slope) and _num(rate) and rate > 0 else None
    r = h.row(s.name, "LEAK-AGING block site: slope within %d%% of the planted rate (bytes/hour)"
              % round(SLOPE_TOLERANCE * 100), _int(slope), _int(rate),
              h.PASS if rel is not None and abs(rel) <= SLOPE_TOLERANCE else h.FAIL,
              "interval %s .. %s; planted: %s tensors over %s s" % (
                  h.fmt_bytes(_int((t or {}).get("ci_low"))), h.fmt_bytes(_int((t or {}).get("ci_high"))),
                  f.get("leak_count"), f.get("leak_elapsed_s")),
              diff="" if rel is None else "%+.1f%%" % (rel * 100))
    rows.append(r)

    # 2. the churn: no false verdict
    churn = _sites_at(blocks, target, lines.get("CHURN-AGING"))
    untested = [x for x in churn if x.get("trend") is None]
    flagged = [x for x in churn if (x.get("trend") or {}).get("significant")]
    parts = ["slope %s/h, %s" % (h.fmt_bytes(_int(x["trend"].get("slope_bytes_per_hour"))), _trend_text(x["trend"]))
             for x in churn if x.get("trend") is not None]
    note = "line %s; %s" % (lines.get("CHURN-AGING"), "; ".join(parts) or "no block site at the line")
    if untested:
        note += "; %d untested (null trend)" % len(untested)
    rows.append(h.row(s.name, "CHURN-AGING block sites: no significant trend",
                      "%d of %d significant" % (len(flagged), len(churn)), "0 of %d" % len(churn),
                      h.PASS if churn and not untested and not flagged else h.FAIL, note, as_bytes=False, diff=""))
    # 3. the leak hidden in churn: same line as the churn it frees
    hidden = _sites_at(blocks, target, lines.get("HIDDEN-AGING"))
    tested = [x for x in hidden if x.get("trend") is not None]
    grows = [x for x in tested if x["trend"].get("significant") is True
             and _num(x["trend"].get("slope_bytes_per_hour")) and x["trend"]["slope_bytes_per_hour"] > 0]
    shown = grows[0] if grows else (tested[0] if tested else None)
    ht = (shown or {}).get("trend")
    rows.append(h.row(s.name, "HIDDEN-AGING block site (a leak hidden in churn): trend significant",
                      _trend_text(ht) if shown else "no tested site", "significant",
                      h.PASS if grows else h.FAIL,
                      "line %s; %d block sites at the line; the target kept %s in %s tensors" % (
                          lines.get("HIDDEN-AGING"), len(hidden), h.fmt_bytes(f.get("hidden_bytes")),
                          f.get("hidden_count")), as_bytes=False, diff=""))
    rows.append(h.row(s.name, "HIDDEN-AGING: the series that showed it, its slope vs the planted rate (for reading)",
                      "%s, %s/h" % ((ht or {}).get("basis"), h.fmt_bytes(_int((ht or {}).get("slope_bytes_per_hour")))),
                      "%s/h" % h.fmt_bytes(_int(f.get("hidden_rate_bytes_per_hour"))), h.INFO,
                      "outlived bytes count a block once it is older than twice the longest any block of "
                      "the line lived, plus the 5 s reordering window: they grow over the phase's last seconds",
                      as_bytes=False, diff=""))

    sig = [x for q in rep.get("processes") or [] for x in q.get("sites") or []
           if (x.get("trend") or {}).get("significant")]
    rows.append(h.row(s.name, "sites with a significant trend / series significant in the run (for reading)",
                      len(sig) if p else None, (run or {}).get("significant"), h.INFO,
                      "; ".join("%s %s/%s at %s" % (x.get("memory"), x.get("pool"), x.get("space"), _where(x))
                                for x in sig[:6]) + (" ..." if len(sig) > 6 else ""),
                      as_bytes=False, diff=""))

    # 3. the caching allocator's segments
    pool = None
    for e in pa.get("pools") or []:
        if e.get("pool") == "pytorch-caching" and e.get("memory") == "device" and e.get("device") == index:
            pool = e
    pt = (pool or {}).get("trend")
    rows.append(h.row(s.name, "aging.pools pytorch-caching (device %s): trend significant" % index,
                      _trend_text(pt) if pool else "no pools entry", "significant",
                      h.PASS if pt is not None and pt.get("significant") is True else h.FAIL,
                      "slope %s/h; holds %s at exit, memory_reserved() %s" % (
                          h.fmt_bytes(_int((pt or {}).get("slope_bytes_per_hour"))),
                          h.fmt_bytes((pool or {}).get("outstanding_bytes")), h.fmt_bytes(f.get("reserved"))),
                      as_bytes=False, diff=""))
    rows.append(h.row(s.name, "aging.pools pytorch-caching: shape (for reading)", (pt or {}).get("shape"), None,
                      h.INFO, "segments grow in 2 MiB steps as the small pool fills", as_bytes=False, diff=""))

    # 4. the machine's GPU figures
    machine = (run or {}).get("machine") or {}
    gpu = None
    for g in machine.get("gpus") or []:
        if g.get("index") == index:
            gpu = g
    mgi = f.get("mem_get_info") or [None, None]
    free, total = (mgi + [None, None])[:2]
    nv = f.get("nvml") or {}
    # NVML's total is the whole framebuffer; cudaMemGetInfo's leaves out what the driver
    # reserves (480 MiB on an H100), so NVML's own figure is the reference.
    if nv.get("total") is not None:
        rows.append(h.eq_row(s.name, "aging.machine.gpus[%s].total == NVML's total (pynvml)" % index,
                             (gpu or {}).get("total"), nv.get("total"),
                             "%d GPUs in aging.machine" % len(machine.get("gpus") or [])))
    rows.append(h.eq_row(s.name, "aging.machine.gpus[%s].total vs torch.cuda.mem_get_info() total (for reading)"
                         % index, (gpu or {}).get("total"), total,
                         "the difference is memory the driver reserves", info=True))
    uuid = (gpu or {}).get("uuid")
    same = None
    if uuid and f.get("torch_uuid"):
        same = uuid.lower().replace("gpu-", "") == str(f["torch_uuid"]).lower().replace("gpu-", "")
    rows.append(h.row(s.name, "aging.machine.gpus[%s].uuid non-empty" % index, uuid, nv.get("uuid"),
                      h.PASS if isinstance(uuid, str) and uuid.strip() else h.FAIL,
                      "reference: pynvml's; torch's %s%s" % (
                          f.get("torch_uuid"), "" if same is None else (" (same)" if same else " (differs)")),
                      as_bytes=False, diff=""))
    used = (gpu or {}).get("used")
    ref = total - free if isinstance(total, int) and isinstance(free, int) else None
    close = isinstance(used, int) and ref and abs(used - ref) <= USED_TOLERANCE * ref
    rows.append(h.row(s.name, "aging.machine.gpus[%s].used vs mem_get_info() total - free (within %d%%, "
                      "else for reading)" % (index, round(USED_TOLERANCE * 100)), used, ref,
                      h.PASS if close else h.INFO,
                      "different moments (leakscope's last --interval reading, the target's end) and other "
                      "processes on the GPU; NVML free %s vs mem_get_info free %s" % (
                          h.fmt_bytes((gpu or {}).get("free")), h.fmt_bytes(free))))

    # 5. time to exhaustion of the GPU
    ex = [e for e in pa.get("exhaustion") or [] if e.get("memory") == "gpu" and e.get("index") == index]
    e = ex[0] if ex else {}
    hours, head, eslope = e.get("hours"), e.get("headroom_bytes"), e.get("slope_bytes_per_hour")
    want = head / eslope if _num(head) and _num(eslope) and eslope > 0 else None
    rel = abs(hours - want) / want if _num(hours) and want else None
    ok = rel is not None and rel <= HOURS_TOLERANCE and hours > 0
    r = h.row(s.name, "aging.exhaustion gpu %s: hours == headroom_bytes / slope_bytes_per_hour, finite > 0" % index,
              hours, want, h.PASS if ok else h.FAIL,
              "headroom %s, slope %s/h (significant %s), hours_low .. hours_high %s .. %s" % (
                  h.fmt_bytes(head), h.fmt_bytes(_int(eslope)), e.get("significant"),
                  *("%.4g" % v if _num(v) else v for v in (e.get("hours_low"), e.get("hours_high"))))
              if ex else "no gpu entry for index %s" % index,
              as_bytes=False, diff="" if rel is None else "%.1e relative" % rel)
    rows.append(_text(r, "n/a" if hours is None else "%.6g h" % hours, "n/a" if want is None else "%.6g h" % want))
    dev = None
    for d in pa.get("devices") or []:
        if d.get("device") == index:
            dev = d
    dslope = ((dev or {}).get("trend") or {}).get("slope_bytes_per_hour")
    # The headroom is NVML's free memory at the last reading taken while the process ran
    # (the very last one comes after it exited): at most the GPU's total, at most the last
    # reading's free (which has the process's memory back) and at least that less what the
    # process's own GPU memory peaked at plus the churn between readings.
    total_gpu = (gpu or {}).get("total")
    ok = (bool(ex) and gpu is not None and isinstance(head, int) and isinstance(total_gpu, int)
          and 0 < head <= total_gpu and head <= gpu.get("free", 0) and dev is not None and eslope == dslope)
    rows.append(h.row(s.name, "aging.exhaustion gpu %s: headroom within the GPU's free memory, slope == "
                      "aging.devices slope" % index, "%s, %s/h" % (h.fmt_bytes(head), h.fmt_bytes(_int(eslope))),
                      "<= %s, %s/h" % (h.fmt_bytes((gpu or {}).get("free")), h.fmt_bytes(_int(dslope))),
                      h.PASS if ok else h.FAIL,
                      "headroom read while the process ran; the last reading (after exit) has %s free; the "
                      "device's own GPU memory: %s at exit, %s" % (
                          h.fmt_bytes((gpu or {}).get("free")), h.fmt_bytes((dev or {}).get("outstanding_bytes")),
                          _trend_text((dev or {}).get("trend"))),
                      as_bytes=False, diff=""))

    # 5b. the whole run's GPU exhaustion (one process: the same slope as the process's)
    rex = [e for e in (run or {}).get("exhaustion") or [] if e.get("memory") == "gpu" and e.get("index") == index]
    re_ = rex[0] if rex else {}
    ok = bool(rex) and re_.get("slope_bytes_per_hour") == eslope and re_.get("hours") == hours
    rows.append(h.row(s.name, "aging.exhaustion (whole run) gpu %s: present, same slope and hours as the "
                      "process's (one process)" % index,
                      "%s/h, %s h" % (h.fmt_bytes(_int(re_.get("slope_bytes_per_hour"))), re_.get("hours")),
                      "%s/h, %s h" % (h.fmt_bytes(_int(eslope)), hours), h.PASS if ok else h.FAIL,
                      "run-level devices: %s" % [d.get("device") for d in (run or {}).get("devices") or []],
                      as_bytes=False, diff=""))

    # 6. the run's aging section
    tests = (run or {}).get("tests")
    ok = run is not None and isinstance(tests, int) and tests > 0 and run.get("alpha") == ALPHA and run.get("q") == Q
    rows.append(h.row(s.name, "aging: tests > 0, alpha == %g, q == %g" % (ALPHA, Q),
                      "tests %s, alpha %s, q %s" % (tests, (run or {}).get("alpha"), (run or {}).get("q"))
                      if run is not None else "no aging section",
                      "tests > 0, alpha %g, q %g" % (ALPHA, Q), h.PASS if ok else h.FAIL,
                      "", as_bytes=False, diff=""))
    rows.append(h.row(s.name, "tested window: warm-up / leak phase (process age, s) (for reading)",
                      "warm-up %s s, step %s s, %s points" % ((run or {}).get("warmup_s"), pa.get("step_s"),
                                                              pa.get("points")),
                      "leak %s .. %s s" % (f.get("leak_start_s"), f.get("leak_end_s")), h.INFO,
                      "`leakscope report --warmup` is the run's %gs or the leak's start if later" % WARMUP_S,
                      as_bytes=False, diff=""))
    return rows


def write_fake(h, root, broken=""):
    """Writes consistent made-up artifacts for the scenario; ``broken`` plants one
    inconsistency: ``torch-aging`` (the leak not significant), ``torch-aging-churn`` (the
    churn flagged), ``torch-aging-hidden`` (the hidden leak not significant),
    ``torch-aging-hours`` (exhaustion hours not headroom / slope)."""
    K, M, G = 1 << 10, 1 << 20, 1 << 30
    pid = 1000
    target = "/x/scripts/gpu_check/targets/torch_aging.py"
    lines = {"LEAK-AGING": 103, "CHURN-AGING": 105, "HIDDEN-AGING": 111}
    rate = 110 * 256 * K / 11.0 * 3600.0

    def frames(line):
        return [{"function": "at::ones", "file": None, "line": None, "module": "libtorch_cpu.so",
                 "address": "0x1", "inlined": False},
                {"function": "step", "file": target, "line": line, "module": None, "address": "0x20",
                 "inlined": False, "python": True}]

    def trend(slope, significant, shape, p=1e-9):
        return {"slope_bytes_per_hour": slope, "ci_low": slope * 0.9 if significant else -slope,
                "ci_high": slope * 1.1 if significant else slope * 2, "p_value": p,
                "significant": significant, "shape": shape}

    leak = h._fake_site("device", "pytorch-caching", 110 * 256 * K, 110, space="block", owned=False,
                        frames=frames(lines["LEAK-AGING"]))
    leak["trend"] = (trend(rate * 0.97, True, "drift") if broken != SCENARIO
                     else trend(rate * 0.97, False, "flat", p=0.03))
    churn = h._fake_site("device", "pytorch-caching", 24 * M, 12, space="block", owned=False,
                         frames=frames(lines["CHURN-AGING"]))
    churn["trend"] = (trend(3.0e7, True, "drift", p=1e-4) if broken == SCENARIO + "-churn"
                      else trend(1.0e6, False, "flat", p=0.4))
    hidden = h._fake_site("device", "pytorch-caching", 110 * 64 * K + 40 * M, 131, space="block",
                          owned=False, frames=frames(lines["HIDDEN-AGING"]))
    hidden["trend"] = (trend(2.0e9, True, "drift") if broken != SCENARIO + "-hidden"
                       else trend(2.0e9, False, "flat", p=0.2))
    hidden["trend"]["basis"] = "outlived" if broken != SCENARIO + "-hidden" else "outstanding"
    segments = h._fake_site("device", "pytorch-caching", 96 * M, 20)
    segments["trend"] = trend(rate * 1.05, True, "drift")
    sites = [segments, h._fake_site("device", "cublas", 64 * M, 3), leak, churn, hidden]
    report = h._fake_report(pid, sites)
    for x in report["processes"][0]["sites"]:
        x.setdefault("trend", trend(0.0, False, "flat", p=1.0))
    free, total = 79 * G, 80 * G
    dev_trend = trend(rate * 1.05, True, "drift")
    hours = free / dev_trend["slope_bytes_per_hour"] * (1.01 if broken == SCENARIO + "-hours" else 1.0)
    report["processes"][0]["aging"] = {
        "step_s": 0.2, "points": 55, "host": {"trend": trend(0.0, False, "flat", p=1.0)},
        "devices": [{"device": 0, "outstanding_bytes": 160 * M, "trend": dev_trend}],
        "pools": [{"pool": "malloc", "memory": "host", "device": None, "outstanding_bytes": 100,
                   "trend": trend(0.0, False, "flat", p=1.0)},
                  {"pool": "pytorch-caching", "memory": "device", "device": 0, "outstanding_bytes": 96 * M,
                   "trend": trend(rate * 1.05, True, "drift")},
                  {"pool": "cublas", "memory": "device", "device": 0, "outstanding_bytes": 64 * M,
                   "trend": trend(0.0, False, "flat", p=1.0)}],
        "uss": {"latest_bytes": 900 * M, "window_s": 60.0, "trend": None}, "rss": None,
        "exhaustion": [{"memory": "host_available", "headroom_bytes": 100 * G, "slope_bytes_per_hour": 1.0,
                        "significant": False, "hours": 100.0 * G, "hours_low": None, "hours_high": None},
                       {"memory": "gpu", "index": 0, "headroom_bytes": free,
                        "slope_bytes_per_hour": dev_trend["slope_bytes_per_hour"], "significant": True,
                        "hours": hours, "hours_low": hours / 1.1, "hours_high": hours / 0.9}]}
    report["aging"] = {
        "alpha": ALPHA, "q": Q, "warmup_s": 7.4, "tests": 60, "significant": 4,
        "host": {"trend": trend(0.0, False, "flat", p=1.0)},
        "devices": [{"device": 0, "outstanding_bytes": 160 * M, "trend": dev_trend}],
        "exhaustion": [{"memory": "gpu", "index": 0, "headroom_bytes": free,
                        "slope_bytes_per_hour": dev_trend["slope_bytes_per_hour"], "significant": True,
                        "hours": hours, "hours_low": hours / 1.1, "hours_high": hours / 0.9}],
        "machine": {"mem_total": 256 * G, "mem_available": 200 * G, "cgroup_limit": None, "cgroup_usage": 3 * G,
                    "gpus": [{"index": 0, "uuid": "GPU-5e3f0c1a-0000-1111-2222-333344445555", "total": total,
                              "used": total - free, "free": free}]}}
    figures = {"reserved": 96 * M, "allocated": 110 * 256 * K + 24 * M, "backend": "native", "device": 0,
               "leak_count": 110, "leak_bytes": 110 * 256 * K, "leak_elapsed_s": 11.0,
               "leak_rate_bytes_per_hour": rate, "leak_start_s": 7.31, "leak_end_s": 18.33, "step_s": 0.1,
               "mem_get_info": [free - 2 * M, total], "churn_live_bytes": 24 * M, "lines": lines, "file": target,
               "hidden_count": 110, "hidden_bytes": 110 * 64 * K, "hidden_rate_bytes_per_hour": 110 * 64 * K / 11.0 * 3600.0,
               "torch_uuid": "5e3f0c1a-0000-1111-2222-333344445555",
               "nvml": {"total": total, "used": total - free, "free": free,
                        "uuid": "GPU-5e3f0c1a-0000-1111-2222-333344445555"}}
    h._write_fake(root, SCENARIO, figures, report)
