#!/usr/bin/env python3
"""The judging half of the GPU check: reads what the scenario runs left behind and turns it
into one table row per check. Needs no GPU, no torch and no leakscope build.

This file owns:
  * the artifact layout the driver writes (one folder per scenario, see ``Scenario``);
  * parsing: the ``GPUCHECK {...}`` line each target prints, leakscope's JSON report
    (format_version 2, docs/gpu.md) cut out of the run's stderr, compute-sanitizer's leak
    report;
  * the checks of each scenario (``CHECKS``) and the markdown table;
  * a self-test on made-up artifacts (``--self-test``), so the logic can be checked here.

Usage:
  python3 compare.py --self-test                 # exits non-zero if the logic is broken
  python3 compare.py --evaluate ARTIFACTS_DIR    # re-judge saved artifacts (e.g. unpacked
                                                 # from gpu-check-artifacts.tar.gz); prints
                                                 # the table, exits 1 if a check fails

Artifact layout (written by driver.py, read here):
  ARTIFACTS/env.json                   versions and GPU (header of the table)
  ARTIFACTS/<scenario>/bare.{out,err,meta.json}       the target without leakscope
  ARTIFACTS/<scenario>/shim.{out,err,meta.json}       the target under `leakscope run`
  ARTIFACTS/<scenario>/report.json                    leakscope's JSON report (slimmed)
  ARTIFACTS/<scenario>/sanitizer.{out,err,log,meta.json}   planted-* only
  meta.json: {"rc": int|null, "wall_s": float, "timed_out": bool, "skipped": str|null,
              "argv": [...], "env": {...}}

Result words: PASS / FAIL (counted: the check script exits non-zero on any FAIL), INFO (a
figure reported for a person to read, never fails).
"""

import json
import os
import re
import sys
import tempfile

import compare_aging  # the torch-aging scenario's checks
import compare_torch  # the torch-blocks scenario's checks

GPUCHECK_PREFIX = "GPUCHECK "
# A line a target marks as differing from run to run (addresses, timings): left out of the
# stdout comparison. GPUCHECK lines are always left out.
VARIES_MARK = "[varies]"

PASS, FAIL, INFO = "PASS", "FAIL", "INFO"

# Scenario names, in the order of the table.
SCENARIOS = [
    "planted-shared", "planted-static",
    "caching", "expandable", "async", "pinned", "graph", "mempool", "cupy", "nccl",
    compare_torch.SCENARIO, compare_aging.SCENARIO,
]

PLANTED_FN = re.compile(r"\b(planted_[A-Za-z0-9_]+)")
# A planted function as a sanitizer backtrace frame names it ("Host Frame: planted_leak_cache
# in ..." or "Host Frame:planted_leak_cache [0x..]"), not the program ("... in planted_static").
SANITIZER_FRAME_FN = re.compile(r"Frame:\s*(planted_[A-Za-z0-9_]+)")


# ----------------------------------------------------------------------------------------
# small helpers

def fmt_bytes(n):
    """'3237352 (3.09 MiB)'; other values as they are."""
    if n is None:
        return "n/a"
    if isinstance(n, bool) or not isinstance(n, int):
        return str(n)
    sign = "-" if n < 0 else ""
    a = abs(n)
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if a >= size:
            return "%d (%s%.2f %s)" % (n, sign, a / size, unit)
    return "%d B" % n


def fmt_diff(a, b):
    if not isinstance(a, int) or not isinstance(b, int) or isinstance(a, bool) or isinstance(b, bool):
        return ""
    d = a - b
    return ("+" if d > 0 else "") + fmt_bytes(d) if d else "0"


def row(scenario, check, leakscope, reference, result, note="", as_bytes=True, diff=None):
    """One table row; figures are kept raw (for results.json) and formatted for the table."""
    if diff is None:
        diff = fmt_diff(leakscope, reference) if as_bytes else (
            "" if not (isinstance(leakscope, int) and isinstance(reference, int)) else str(leakscope - reference))
    fmt = fmt_bytes if as_bytes else (lambda v: "n/a" if v is None else str(v))
    return {
        "scenario": scenario, "check": check,
        "leakscope": leakscope, "reference": reference,
        "leakscope_text": fmt(leakscope), "reference_text": fmt(reference),
        "difference": diff, "result": result, "note": note,
    }


def eq_row(scenario, check, leakscope, reference, note="", as_bytes=True, info=False):
    """PASS when both figures exist and are equal (INFO rows never fail)."""
    if leakscope is None or reference is None:
        missing = "leakscope figure missing" if leakscope is None else "reference missing"
        return row(scenario, check, leakscope, reference, INFO if info else FAIL,
                   (note + "; " if note else "") + missing, as_bytes)
    ok = leakscope == reference
    return row(scenario, check, leakscope, reference, INFO if info else (PASS if ok else FAIL), note, as_bytes)


def read_text(path, default=""):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except OSError:
        return default


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------
# parsing

def parse_gpucheck(stdout_text):
    """The last ``GPUCHECK {...}`` line of a target's stdout, as a dict (None if absent)."""
    found = None
    for line in stdout_text.splitlines():
        if line.startswith(GPUCHECK_PREFIX):
            try:
                found = json.loads(line[len(GPUCHECK_PREFIX):])
            except ValueError:
                continue
    return found


def stable_lines(stdout_text):
    """The stdout lines that must be identical with and without leakscope."""
    return [l for l in stdout_text.splitlines()
            if not l.startswith(GPUCHECK_PREFIX) and VARIES_MARK not in l]


_REPORT_START = re.compile(r'\{\s*"leakscope_version"')


def split_report(stderr_text):
    """Cuts leakscope's JSON report out of a `leakscope run --format json` stderr.

    Returns (report dict or None, the stderr with the report replaced by a one-line
    placeholder). The report is the last object starting with "leakscope_version"; the
    program's own stderr comes before it and leakscope's "recording in" line after it.
    """
    starts = [m.start() for m in _REPORT_START.finditer(stderr_text)]
    dec = json.JSONDecoder()
    for start in reversed(starts):
        try:
            obj, end = dec.raw_decode(stderr_text, start)
        except ValueError:
            continue
        if isinstance(obj, dict) and "processes" in obj:
            rest = stderr_text[:start] + "[leakscope JSON report, %d bytes: report.json]" % (end - start) + stderr_text[end:]
            return obj, rest
    return None, stderr_text


def slim_report(report, host_sites=10):
    """A copy of the report with every GPU site but only the first ``host_sites`` host and
    mapped sites per process (the full report of a PyTorch run is megabytes of host sites;
    the checks read only GPU sites, totals and the gpu section)."""
    out = dict(report)
    procs = []
    for p in report.get("processes", []):
        q = dict(p)
        sites = p.get("sites", [])
        gpu = [s for s in sites if s.get("memory") not in ("host", "mapped")]
        host = [s for s in sites if s.get("memory") in ("host", "mapped")]
        q["sites"] = gpu + host[:host_sites]
        q["sites_slimmed"] = max(0, len(host) - host_sites)
        procs.append(q)
    out["processes"] = procs
    return out


def _count(text):
    """A number as compute-sanitizer prints it (2025.3 groups thousands: "3,145,728")."""
    return int(text.replace(",", ""))


def parse_sanitizer(text):
    """compute-sanitizer --leak-check full output -> dict.

    {"summary_bytes", "summary_count" (from "LEAK SUMMARY: N bytes leaked in M allocations";
    None when absent), "errors" (ERROR SUMMARY), "leaks": [{"bytes", "addr", "function"}]}
    where function is the first planted_* name in the leak's saved host backtrace.
    """
    res = {"summary_bytes": None, "summary_count": None, "errors": None, "leaks": []}
    current = None
    for raw in text.splitlines():
        line = raw.strip().lstrip("=").strip()
        m = re.search(r"LEAK SUMMARY:\s*([\d,]+)\s+bytes leaked in\s+([\d,]+)\s+allocation", line)
        if m:
            res["summary_bytes"], res["summary_count"] = _count(m.group(1)), _count(m.group(2))
            current = None
            continue
        m = re.search(r"ERROR SUMMARY:\s*(\d+)\s+error", line)
        if m:
            res["errors"] = int(m.group(1))
            current = None
            continue
        m = re.search(r"Leaked\s+([\d,]+)\s+bytes at\s+(0x[0-9a-fA-F]+)", line)
        if m:
            current = {"bytes": _count(m.group(1)), "addr": m.group(2), "function": None}
            res["leaks"].append(current)
            continue
        if current is not None and current["function"] is None and "Frame" in line:
            f = SANITIZER_FRAME_FN.search(line)
            if f:
                current["function"] = f.group(1)
    return res


# ----------------------------------------------------------------------------------------
# reading a report

def find_process(report, pid):
    """The process of the report with this pid; else the root process (no parent)."""
    procs = (report or {}).get("processes") or []
    for p in procs:
        if pid is not None and p.get("pid") == pid:
            return p
    for p in procs:
        if p.get("parent") is None:
            return p
    return procs[0] if procs else None


def gpu_of(proc):
    return (proc or {}).get("gpu") or None


def pool_entries(proc, pool, memory=None, device="any"):
    g = gpu_of(proc) or {}
    out = []
    for e in g.get("pools") or []:
        if e.get("pool") != pool:
            continue
        if memory is not None and e.get("memory") != memory:
            continue
        if device != "any" and e.get("device") != device:
            continue
        out.append(e)
    return out


def pool_figure(proc, pool, field="outstanding_bytes", memory="device", device="any"):
    """Sum of ``field`` over the matching ``gpu.pools`` entries; 0 when the pool is absent
    (it holds nothing); None when the report has no gpu section at all."""
    if gpu_of(proc) is None:
        return None
    return sum(int(e.get(field) or 0) for e in pool_entries(proc, pool, memory, device))


def gpu_sites(proc, **want):
    """GPU sites of the process matching every key=value given (value None matches null)."""
    out = []
    for s in (proc or {}).get("sites") or []:
        if s.get("memory") in ("host", "mapped"):
            continue
        if all(s.get(k) == v for k, v in want.items()):
            out.append(s)
    return out


def site_sum(sites, field="outstanding_bytes"):
    return sum(int(s.get(field) or 0) for s in sites)


def device_total(proc, device=0):
    """Outstanding device memory of the process on one device (gpu.devices, else totals)."""
    g = gpu_of(proc)
    if g is not None:
        for d in g.get("devices") or []:
            if d.get("device") == device:
                return int(((d.get("by_memory") or {}).get("device") or {}).get("outstanding_bytes") or 0)
    bm = ((proc or {}).get("totals") or {}).get("by_memory") or {}
    if "device" in bm:
        return int(bm["device"].get("outstanding_bytes") or 0)
    return None if g is None else 0


def device_entry(proc, device=0):
    for d in (gpu_of(proc) or {}).get("devices") or []:
        if d.get("device") == device:
            return d
    return None


def pools_summary(proc, memory=None):
    """'pytorch-caching 440 MiB, nccl 0 B' for the pools holding memory at exit."""
    parts = []
    for e in (gpu_of(proc) or {}).get("pools") or []:
        if memory is not None and e.get("memory") != memory:
            continue
        parts.append("%s/%s/dev%s: %s out, %s allocs" % (
            e.get("pool"), e.get("memory"), e.get("device"),
            fmt_bytes(int(e.get("outstanding_bytes") or 0)), e.get("allocations")))
    return "; ".join(parts) if parts else "(no pools)"


def space_summary(sites):
    """Sites grouped by memory and space: 'device/handle: 3 sites, 12 MiB out; ...'."""
    by = {}
    for s in sites:
        k = "%s/%s%s" % (s.get("memory"), s.get("space"), "" if s.get("owned", True) else " (not owned)")
        n, b, a = by.get(k, (0, 0, 0))
        by[k] = (n + 1, b + int(s.get("outstanding_bytes") or 0), a + int(s.get("allocated_bytes") or 0))
    return "; ".join("%s: %d sites, %s out, %s allocated" % (k, n, fmt_bytes(b), fmt_bytes(a))
                     for k, (n, b, a) in sorted(by.items())) or "(no sites)"


# ----------------------------------------------------------------------------------------
# one scenario's artifacts

class Scenario(object):
    """What the runs of one scenario left in ARTIFACTS/<name>/."""

    def __init__(self, root, name):
        self.name = name
        self.dir = os.path.join(root, name)
        self.present = os.path.isdir(self.dir)
        self.meta = {}
        self.out = {}
        self.err = {}
        for kind in ("bare", "shim", "sanitizer"):
            self.meta[kind] = read_json(os.path.join(self.dir, kind + ".meta.json"))
            self.out[kind] = read_text(os.path.join(self.dir, kind + ".out"))
            self.err[kind] = read_text(os.path.join(self.dir, kind + ".err"))
        self.sanitizer_log = read_text(os.path.join(self.dir, "sanitizer.log"))
        self.report = read_json(os.path.join(self.dir, "report.json"))
        self.check = parse_gpucheck(self.out["shim"]) or {}
        self.bare_check = parse_gpucheck(self.out["bare"]) or {}
        self.proc = find_process(self.report, self.check.get("pid"))

    @property
    def figures(self):
        """The target's own figures, from the run under leakscope (the same process)."""
        return self.check.get("figures") or {}

    def ran(self, kind):
        m = self.meta.get(kind)
        return m is not None and not m.get("skipped")


def common_rows(s, bare_only=False):
    """Rows every scenario gets: exit codes, identical stdout, a clean recording, NVML."""
    rows = []
    mb, ms = s.meta.get("bare"), s.meta.get("shim")

    def rc_text(m):
        if m is None:
            return "not run"
        if m.get("skipped"):
            return "skipped: " + m["skipped"]
        if m.get("timed_out"):
            return "timed out after %.0f s" % (m.get("wall_s") or 0)
        return m.get("rc")

    if bare_only:
        ok = mb is not None and mb.get("rc") == 0
        rows.append(row(s.name, "exit code 0 (bare)", None, rc_text(mb), PASS if ok else FAIL,
                        "wall %.1f s" % ((mb or {}).get("wall_s") or 0), as_bytes=False))
        return rows

    ok = mb is not None and ms is not None and mb.get("rc") == 0 and ms.get("rc") == 0
    rows.append(row(s.name, "exit code 0 (leakscope / bare)", rc_text(ms), rc_text(mb), PASS if ok else FAIL,
                    "wall %.1f s / %.1f s" % ((ms or {}).get("wall_s") or 0, (mb or {}).get("wall_s") or 0),
                    as_bytes=False, diff=""))

    a, b = stable_lines(s.out["shim"]), stable_lines(s.out["bare"])
    note = ""
    finished = bool(s.check) and bool(s.bare_check)
    if not finished:
        note = "no GPUCHECK line from the %s run: the target did not finish" % (
            "leakscope" if not s.check else "bare")
    elif a != b:
        for i in range(max(len(a), len(b))):
            la = a[i] if i < len(a) else "<none>"
            lb = b[i] if i < len(b) else "<none>"
            if la != lb:
                note = "line %d: leakscope %r, bare %r" % (i + 1, la[:80], lb[:80])
                break
    rows.append(row(s.name, "stdout identical (stable lines)", "%d lines" % len(a), "%d lines" % len(b),
                    PASS if (a == b and finished) else FAIL,
                    note, as_bytes=False, diff=""))

    rep = s.report
    if rep is None:
        rows.append(row(s.name, "recording: report with a gpu section", "no report", "report", FAIL,
                        "no JSON report in the leakscope run's stderr", as_bytes=False, diff=""))
        return rows
    procs = rep.get("processes") or []
    dropped = sum(int((p.get("dropped") or {}).get("allocs") or 0) + int((p.get("dropped") or {}).get("frees") or 0)
                  for p in procs)
    p = s.proc or {}
    stream = p.get("stream")
    fv = rep.get("format_version")
    problems = []
    if fv is None or fv < 2:
        problems.append("format_version %s" % fv)
    if gpu_of(p) is None:
        problems.append("no gpu section")
    if stream not in ("clean", "exec"):
        problems.append("stream %s (%s)" % (stream, p.get("stream_problem")))
    if dropped:
        problems.append("%d dropped events" % dropped)
    if s.check.get("pid") is not None and p.get("pid") != s.check.get("pid"):
        problems.append("target pid %s not in the report" % s.check.get("pid"))
    rows.append(row(s.name, "recording clean (format 2, gpu section, stream, drops)",
                    "v%s, stream %s, %d dropped, %d processes" % (fv, stream, dropped, len(procs)),
                    "v2, clean, 0 dropped", FAIL if problems else PASS, "; ".join(problems),
                    as_bytes=False, diff=""))
    rows.append(row(s.name, "device pools at exit", pools_summary(p), "", INFO, "", as_bytes=False, diff=""))

    nv = (s.check.get("nvml") or {})
    used = nv.get("used_bytes")
    total = device_total(p)
    note = nv.get("how", "")
    if used is not None and total is not None:
        note += "; NVML - leakscope = context, modules, library memory not allocated through a hooked call"
    rows.append(row(s.name, "device total vs NVML process used memory", total, used, INFO, note))
    return rows


# ----------------------------------------------------------------------------------------
# per-scenario checks; each returns a list of rows and may raise (a crash becomes a FAIL row)

def check_caching_like(s, pool):
    f, p = s.figures, s.proc
    rows = [eq_row(s.name, "%s outstanding == torch.cuda.memory_reserved()" % pool,
                   pool_figure(p, pool, memory="device", device=0), f.get("reserved"),
                   "backend %s" % f.get("backend"))]
    other = None
    if gpu_of(p) is not None:
        other = pool_figure(p, "pytorch-caching", device=0) + pool_figure(p, "pytorch-expandable", device=0)
        other -= pool_figure(p, pool, device=0)
    rows.append(eq_row(s.name, "other PyTorch pool holds nothing", other, 0,
                       "the %s pool of the other allocator" % ("pytorch-caching" if pool != "pytorch-caching" else "pytorch-expandable")))
    rows.append(row(s.name, "torch.cuda.memory_allocated() (for reading)", None, f.get("allocated"), INFO,
                    "blocks handed out; the rest of reserved is PyTorch's cache"))
    if pool == "pytorch-expandable":
        d = device_entry(p) or {}
        rows.append(row(s.name, "expandable: reserved address space / mapped (for reading)",
                        d.get("reserved_address_bytes"), d.get("mapped_bytes"), INFO,
                        "leakscope gpu.devices[0]: reserved_address_bytes (leakscope column) and mapped_bytes "
                        "(reference column); mapped should equal memory_reserved()"))
        rows.append(eq_row(s.name, "expandable: mapped bytes == memory_reserved()", d.get("mapped_bytes") if d else None,
                           f.get("reserved"), "each mapped handle is one reserved page of a segment"))
    return rows


def check_caching(s):
    return check_caching_like(s, "pytorch-caching")


def check_expandable(s):
    return check_caching_like(s, "pytorch-expandable")


def _pick_stream_pool(proc, handle):
    pools = (gpu_of(proc) or {}).get("stream_pools") or []
    if handle is not None:
        for sp in pools:
            try:
                if int(str(sp.get("handle")), 16) == int(handle):
                    return sp, "matched the default pool handle 0x%x" % int(handle)
            except ValueError:
                pass
    cand = [sp for sp in pools if sp.get("device") in (0, None) and not sp.get("destroyed")]
    if not cand:
        return None, "no stream pool in the report"
    cand.sort(key=lambda sp: (int(sp.get("readings") or 0), int(sp.get("reserved_bytes") or 0)), reverse=True)
    return cand[0], "the pool with the most readings (%d stream pools)" % len(pools)


def check_async(s):
    f, p = s.figures, s.proc
    sp, how = _pick_stream_pool(p, f.get("default_pool_handle"))
    sp = sp or {}
    rows = [
        eq_row(s.name, "stream pool reserved_bytes == memory_reserved() (RESERVED_MEM_CURRENT)",
               sp.get("reserved_bytes"), f.get("reserved"), how),
        eq_row(s.name, "stream pool used_bytes == memory_allocated() (USED_MEM_CURRENT)",
               sp.get("used_bytes"), f.get("allocated"),
               "last reading; the target allocates once more >10 ms after its last free"),
        eq_row(s.name, "cuda-async-pool live outstanding == memory_allocated()",
               pool_figure(p, "cuda-async-pool", device=0), f.get("allocated"),
               "every size a multiple of 2 MiB, so no pool rounding"),
        eq_row(s.name, "cuda-async-pool live outstanding == bytes of the tensors kept",
               pool_figure(p, "cuda-async-pool", device=0), f.get("kept_bytes")),
        row(s.name, "stream pool: created by program / readings", sp.get("created_by_program"), sp.get("readings"),
            INFO, "PyTorch uses the device's default pool (not created by the program)", as_bytes=False, diff=""),
    ]
    if f.get("backend") != "cudaMallocAsync":
        rows.append(row(s.name, "allocator backend", None, f.get("backend"), FAIL,
                        "PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync was not in effect", as_bytes=False))
    return rows


def check_pinned(s):
    f, p = s.figures, s.proc
    ref = f.get("host_reserved")
    how = "torch.cuda.host_memory_stats() %s" % f.get("host_reserved_key")
    if ref is None:
        ref, how = f.get("expected_reserved"), "sum of power-of-two blocks the target computed (no host stats)"
    ls = pool_figure(p, "pytorch-pinned-cache", memory="pinned")
    rows = [eq_row(s.name, "pytorch-pinned-cache (pinned) == host allocator reserved_bytes", ls, ref, how),
            eq_row(s.name, "pytorch-pinned-cache == power-of-two blocks expected", ls, f.get("expected_reserved"),
                   "CachingHostAllocator rounds each new block up to a power of two"),
            row(s.name, "host allocator allocated_bytes (for reading)", None, f.get("host_allocated"), INFO,
                "blocks in use; key %s" % f.get("host_allocated_key")),
            eq_row(s.name, "pytorch-caching (device) == memory_reserved()",
                   pool_figure(p, "pytorch-caching", device=0), f.get("reserved"))]
    return rows


def _snapshot_split(f):
    """(default-pool bytes, private-pool bytes) from the target's memory_snapshot sums."""
    snap = f.get("snapshot_pool_bytes")
    if not isinstance(snap, dict):
        return None, None
    default = sum(v for k, v in snap.items() if k == "0,0")
    private = sum(v for k, v in snap.items() if k != "0,0")
    return default, private


def check_graph(s):
    f, p = s.figures, s.proc
    caching = pool_figure(p, "pytorch-caching", device=0)
    graph = pool_figure(p, "pytorch-graph-pool", device=0)
    total = None if caching is None or graph is None else caching + graph
    default, private = _snapshot_split(f)
    # Segment sites only: block sites (space "block", PyTorch block tracking) are the
    # tensors carved out of those segments, recorded by the allocator's callbacks, which
    # carry no capture mark.
    captured = [x for x in gpu_sites(p, pool="pytorch-graph-pool") if x.get("space") != "block"]
    marked = [x for x in captured if x.get("during_capture") is True]
    captures = (gpu_of(p) or {}).get("captures")
    return [
        eq_row(s.name, "pytorch-caching + pytorch-graph-pool == memory_reserved()", total, f.get("reserved")),
        eq_row(s.name, "pytorch-graph-pool == private-pool segments (memory_snapshot)", graph, private,
               "segments whose segment_pool_id is not (0, 0); graph pool %s" % f.get("graph_pool_id")),
        eq_row(s.name, "pytorch-caching == default-pool segments (memory_snapshot)", caching, default),
        row(s.name, "graph-pool segment sites marked during_capture", len(marked), len(captured),
            PASS if captured and len(marked) == len(captured) else FAIL,
            "needs at least one site; all of them during_capture: true", as_bytes=False),
        row(s.name, "capture windows seen (gpu.captures)", captures, f.get("captures_made"),
            PASS if isinstance(captures, int) and captures >= 1 else FAIL,
            "at least one; the target captured %s graph(s)" % f.get("captures_made"), as_bytes=False),
    ]


def check_mempool(s):
    f, p = s.figures, s.proc
    c = f.get("c") or {}
    pool = "pytorch-mempool-pluggable"
    handles = gpu_sites(p, pool=pool, space="handle", owned=True)
    reservations = gpu_sites(p, pool=pool, space="reservation")
    mappings = gpu_sites(p, pool=pool, space="mapping")
    default, private = _snapshot_split(f)
    d = device_entry(p) or {}
    rows = [
        eq_row(s.name, "pluggable handle sites (owned) == C allocator's live handle bytes",
               site_sum(handles) if p else None, c.get("handle_bytes"), "%d sites" % len(handles)),
        eq_row(s.name, "pools[%s] outstanding == C allocator's live handle bytes" % pool,
               pool_figure(p, pool, memory="device", device=0), c.get("handle_bytes")),
        eq_row(s.name, "pluggable handles live count == C allocator's live count",
               sum(int(x.get("outstanding_count") or 0) for x in handles) if p else None, c.get("live"),
               as_bytes=False),
        eq_row(s.name, "space: reservation sites == C allocator's reserved bytes",
               site_sum(reservations) if p else None, c.get("reserved_bytes"), "%d sites" % len(reservations)),
        eq_row(s.name, "space: mapping sites == C allocator's mapped bytes",
               site_sum(mappings) if p else None, c.get("mapped_bytes"), "%d sites" % len(mappings)),
        eq_row(s.name, "gpu.devices[0] reserved_address_bytes == C reserved bytes",
               d.get("reserved_address_bytes") if d else None, c.get("reserved_bytes"),
               "only the C allocator reserves addresses in this scenario"),
        eq_row(s.name, "pytorch-caching + pluggable == memory_reserved()",
               None if p is None else (pool_figure(p, "pytorch-caching", device=0) or 0) + (pool_figure(p, pool, device=0) or 0),
               f.get("reserved"), "the MemPool's segments count in memory_reserved()"),
        eq_row(s.name, "C allocator bytes == torch's MemPool segments (memory_snapshot)", c.get("handle_bytes"),
               f.get("pool_segment_bytes"), "torch vs the C allocator, no leakscope figure", info=True),
        row(s.name, "C allocator calls: my_malloc / my_free / errors",
            "%s / %s / %s" % (c.get("mallocs"), c.get("frees"), c.get("errors")), "", INFO,
            "my_free calls exercise cuMemUnmap/cuMemRelease/cuMemAddressFree", as_bytes=False, diff=""),
    ]
    if c.get("errors"):
        rows.append(row(s.name, "C allocator errors", c.get("errors"), 0, FAIL, "see the target's stderr", as_bytes=False))
    return rows


def check_cupy(s):
    f, p = s.figures, s.proc
    return [
        eq_row(s.name, "cupy-pool outstanding == MemoryPool.total_bytes()",
               pool_figure(p, "cupy-pool", memory="device", device=0), f.get("total_bytes")),
        row(s.name, "MemoryPool.used_bytes() (for reading)", None, f.get("used_bytes"), INFO,
            "in use; total - used is CuPy's cache (%s free blocks)" % f.get("n_free_blocks")),
    ]


def check_nccl(s):
    f, p = s.figures, s.proc
    sites = gpu_sites(p, pool="nccl")
    allocated = pool_figure(p, "nccl", field="allocated_bytes", memory="device", device=0)
    allocs = pool_figure(p, "nccl", field="allocations", memory="device", device=0)
    outstanding = pool_figure(p, "nccl", memory="device", device=0)
    nv_growth = None
    if isinstance(f.get("nvml_during"), int) and isinstance(f.get("nvml_before"), int):
        nv_growth = f["nvml_during"] - f["nvml_before"]
    return [
        row(s.name, "pool nccl: NCCL's device memory seen (allocations > 0)", allocs, None,
            PASS if isinstance(allocs, int) and allocs > 0 else FAIL,
            "NCCL %s; allocated %s" % (f.get("nccl_version"), fmt_bytes(allocated)), as_bytes=False, diff=""),
        row(s.name, "pool nccl allocated bytes vs NVML growth while the communicator lived", allocated, nv_growth,
            INFO, "NVML growth also holds NCCL's context/module memory and the caching allocator's"),
        row(s.name, "pool nccl outstanding after destroy_process_group", outstanding, 0, INFO,
            "what NCCL did not give back (global resources are kept by NCCL until exit)"),
        row(s.name, "pool nccl sites by space", space_summary(sites), "", INFO,
            "NCCL >= 2.19 allocates with cuMemCreate + cuMemMap (NCCL_CUMEM_ENABLE)", as_bytes=False, diff=""),
        row(s.name, "all_reduce result correct", f.get("allreduce_ok"), True,
            PASS if f.get("allreduce_ok") is True else FAIL, "", as_bytes=False, diff=""),
    ]


def _leakscope_planted(proc):
    """Per planted function: [bytes, count] of device memory outstanding at exit."""
    per = {}
    for site in gpu_sites(proc, memory="device"):
        n = int(site.get("outstanding_bytes") or 0)
        if n <= 0:
            continue
        fn = "(no planted_* frame)"
        for fr in site.get("frames") or []:
            m = PLANTED_FN.search(fr.get("function") or "")
            if m:
                fn = m.group(1)
                break
        b, c = per.get(fn, (0, 0))
        per[fn] = (b + n, c + int(site.get("outstanding_count") or 0))
    return per


def check_planted(s):
    f, p = s.figures, s.proc
    san = parse_sanitizer(s.sanitizer_log + "\n" + s.out["sanitizer"] + "\n" + s.err["sanitizer"])
    per_ls = _leakscope_planted(p) if p else {}
    per_san = {}
    for leak in san["leaks"]:
        fn = leak["function"] or "(no planted_* frame)"
        b, c = per_san.get(fn, (0, 0))
        per_san[fn] = (b + leak["bytes"], c + 1)
    ls_bytes = sum(b for b, _ in per_ls.values()) if p else None
    ls_count = sum(c for _, c in per_ls.values()) if p else None
    note = "" if san["summary_bytes"] is not None else "no LEAK SUMMARY in compute-sanitizer's output"
    rows = [
        eq_row(s.name, "leaked bytes: leakscope vs compute-sanitizer LEAK SUMMARY", ls_bytes, san["summary_bytes"], note),
        eq_row(s.name, "leaked allocations: leakscope vs compute-sanitizer", ls_count, san["summary_count"], note,
               as_bytes=False),
        eq_row(s.name, "compute-sanitizer: per-leak lines add up to its summary",
               sum(l["bytes"] for l in san["leaks"]), san["summary_bytes"],
               "%d 'Leaked N bytes' lines" % len(san["leaks"]), info=True),
        eq_row(s.name, "leaked bytes: leakscope vs the program's own plan", ls_bytes, f.get("expected_leaked_bytes")),
    ]
    plan = f.get("planted") or {}
    for fn in sorted(set(per_ls) | set(per_san) | set(plan)):
        lb, lc = per_ls.get(fn, (0, 0))
        sb, sc = per_san.get(fn, (0, 0))
        if fn in plan and not plan[fn][0] and not lb and not sb:
            continue  # a function that frees what it allocates: nothing to compare
        r = eq_row(s.name, "%s: bytes, count (leakscope vs sanitizer)" % fn, lb, sb,
                   "count %d vs %d; planned %s" % (lc, sc, plan.get(fn)))
        if lc != sc:
            r["result"] = FAIL
        rows.append(r)
    ms = s.meta.get("sanitizer") or {}
    rows.append(row(s.name, "compute-sanitizer run: exit code / ERROR SUMMARY", ms.get("rc"), san["errors"], INFO,
                    "wall %.1f s; stdout %s the bare run's" % (
                        ms.get("wall_s") or 0,
                        "equals" if stable_lines(s.out["sanitizer"]) == stable_lines(s.out["bare"]) else "differs from"),
                    as_bytes=False, diff=""))
    return rows


CHECKS = {
    "planted-shared": check_planted,
    "planted-static": check_planted,
    "caching": check_caching,
    "expandable": check_expandable,
    "async": check_async,
    "pinned": check_pinned,
    "graph": check_graph,
    "mempool": check_mempool,
    "cupy": check_cupy,
    "nccl": check_nccl,
    compare_torch.SCENARIO: lambda s: compare_torch.check(s, sys.modules[__name__]),
    compare_aging.SCENARIO: lambda s: compare_aging.check(s, sys.modules[__name__]),
}

# What each scenario is, for the table's legend.
DESCRIPTIONS = {
    "planted-shared": "CUDA C program (nvcc -cudart shared) leaking cudaMalloc/cuMemAlloc blocks from distinct functions, vs compute-sanitizer --leak-check full",
    "planted-static": "the same program with the static CUDA runtime (nvcc's default): cudaMalloc reaches the driver through cuGetProcAddress only",
    "caching": "PyTorch default caching allocator",
    "expandable": "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
    "async": "PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync",
    "pinned": "pinned memory: torch.empty(pin_memory=True), tensor.pin_memory()",
    "graph": "CUDA graph capture and replay (torch.cuda.graph)",
    "mempool": "torch.cuda.MemPool with a CUDAPluggableAllocator written in C on cuMemCreate/cuMemMap (vLLM-style)",
    "cupy": "CuPy default memory pool",
    "nccl": "single-rank NCCL all-reduce via torch.distributed, then destroy_process_group",
    compare_torch.SCENARIO: compare_torch.DESCRIPTION,
    compare_aging.SCENARIO: compare_aging.DESCRIPTION,
}


def evaluate(root, scenarios=None, bare_only=False):
    """All rows for the artifacts under ``root``."""
    rows = []
    for name in scenarios or SCENARIOS:
        s = Scenario(root, name)
        if not s.present:
            continue
        try:
            rows.extend(common_rows(s, bare_only))
        except Exception as e:  # a broken artifact is a failed check, never a crash
            rows.append(row(name, "common checks", None, None, FAIL, "check crashed: %r" % (e,), as_bytes=False))
        if bare_only:
            rows.append(row(name, "target figures (bare run)", None,
                            json.dumps(s.bare_check.get("figures"), sort_keys=True)[:600], INFO,
                            "NVML: %s" % json.dumps(s.bare_check.get("nvml"))[:200], as_bytes=False, diff=""))
            continue
        try:
            rows.extend(CHECKS[name](s))
        except Exception as e:
            rows.append(row(name, "scenario checks", None, None, FAIL, "check crashed: %r" % (e,), as_bytes=False))
    return rows


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(rows, env=None, title="leakscope GPU check"):
    env = env or {}
    lines = ["# %s" % title, ""]
    for key, label in (("date", "date"), ("gpu", "GPU"), ("driver", "driver"), ("cuda_driver", "CUDA (driver)"),
                       ("cuda_torch", "CUDA (torch)"), ("torch", "PyTorch"), ("nccl", "NCCL"), ("cupy", "CuPy"),
                       ("nvcc", "nvcc"), ("sanitizer", "compute-sanitizer"), ("leakscope", "leakscope"),
                       ("python", "Python"), ("mode", "mode")):
        if env.get(key) not in (None, ""):
            lines.append("- %s: %s" % (label, env[key]))
    failed = sum(1 for r in rows if r["result"] == FAIL)
    passed = sum(1 for r in rows if r["result"] == PASS)
    lines += ["", "**%d checks: %d PASS, %d FAIL** (INFO rows are figures for reading)" % (
        passed + failed, passed, failed), ""]
    lines.append("| scenario | check | leakscope | reference | difference | result | note |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in rows:
        lines.append("| %s |" % " | ".join(_cell(x) for x in (
            r["scenario"], r["check"], r["leakscope_text"], r["reference_text"], r["difference"],
            "**FAIL**" if r["result"] == FAIL else r["result"], r["note"])))
    lines += ["", "Scenarios:", ""]
    names = []
    for r in rows:
        if r["scenario"] not in names:
            names.append(r["scenario"])
    for n in names:
        lines.append("- `%s`: %s" % (n, DESCRIPTIONS.get(n, "")))
    for k, v in sorted((env.get("skipped") or {}).items()):
        lines.append("- `%s` not run: %s" % (k, v))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------
# self-test on made-up artifacts

def _fake_site(memory, pool, outstanding, count=1, space="pointer", owned=True, during_capture=False,
               device=0, frames=None, allocated=None):
    return {"memory": memory, "pool": pool, "device": device, "space": space, "owned": owned,
            "during_capture": during_capture, "outstanding_bytes": outstanding, "outstanding_count": count,
            "allocations": count, "allocated_bytes": outstanding if allocated is None else allocated,
            "peak_bytes": outstanding, "temporary": 0,
            "frames": frames or [{"function": "main", "file": None, "line": None, "module": "x",
                                  "address": "0x1", "inlined": False}]}


def _fake_report(pid, sites, stream_pools=(), captures=0, devices_extra=None):
    """A format_version 2 report whose pools are the sums of the owned sites."""
    pools = {}
    dev_out = 0
    for s in sites:
        if s["memory"] in ("host", "mapped") or not s["owned"] or s["space"] not in ("pointer", "handle"):
            continue
        key = (s["pool"], s["memory"], s["device"])
        e = pools.setdefault(key, {"pool": s["pool"], "memory": s["memory"], "device": s["device"],
                                   "outstanding_bytes": 0, "outstanding_count": 0, "allocations": 0,
                                   "allocated_bytes": 0, "temporary": 0})
        for k in ("outstanding_bytes", "outstanding_count", "allocations", "allocated_bytes"):
            e[k] += s[k]
        if s["memory"] == "device":
            dev_out += s["outstanding_bytes"]
    dev = {"device": 0, "by_memory": {"device": {"outstanding_bytes": dev_out}},
           "reserved_address_bytes": 0, "mapped_bytes": 0, "registered_bytes": 0,
           "imported_handles": 0, "retained_handles": 0}
    dev.update(devices_extra or {})
    proc = {"pid": pid, "ppid": 1, "command": "python3 t.py", "argv": [], "exe": "/usr/bin/python3",
            "origin": "exec", "parent": None, "stream": "clean", "stream_problem": None,
            "totals": {"outstanding_bytes": dev_out, "by_memory": {"device": {"outstanding_bytes": dev_out}}},
            "dropped": {"allocs": 0, "alloc_bytes": 0, "frees": 0}, "unknown_frees": 0,
            "sites": sites + [_fake_site("host", "malloc", 100, device=None)], "sites_omitted": 0, "notes": [],
            "gpu": {"devices": [dev], "pools": list(pools.values()), "stream_pools": list(stream_pools),
                    "captures": captures}}
    return {"leakscope_version": "0.1.0", "format_version": 2, "command": ["python3"], "exit_status": 0,
            "signal": None, "warnings": [], "processes": [proc]}


def _write_fake(root, name, figures, report, stdout_extra="reserved 1\n", sanitizer=None, nvml=None):
    d = os.path.join(root, name)
    os.makedirs(d)
    pid = report["processes"][0]["pid"] if report else 4242
    check = {"scenario": name, "pid": pid, "figures": figures,
             "nvml": nvml or {"used_bytes": 600 << 20, "how": "pid match"}}
    out = stdout_extra + "address 0x7f00 [varies]\n" + GPUCHECK_PREFIX + json.dumps(check) + "\n"
    bare_check = dict(check, pid=pid + 1)
    bare_out = stdout_extra + "address 0x7e00 [varies]\n" + GPUCHECK_PREFIX + json.dumps(bare_check) + "\n"
    for kind, text in (("bare", bare_out), ("shim", out)):
        with open(os.path.join(d, kind + ".out"), "w") as f:
            f.write(text)
        with open(os.path.join(d, kind + ".meta.json"), "w") as f:
            json.dump({"rc": 0, "wall_s": 1.0, "timed_out": False, "skipped": None}, f)
    # the report goes through split_report, as in a real run
    err = "some warning from the program\n"
    if report is not None:
        err += json.dumps(report, indent=2) + "\nleakscope: recording in /tmp/x (show it again: ...)\n"
    rep, rest = split_report(err)
    assert (rep is None) == (report is None), "split_report lost the report"
    with open(os.path.join(d, "shim.err"), "w") as f:
        f.write(rest)
    if rep is not None:
        with open(os.path.join(d, "report.json"), "w") as f:
            json.dump(slim_report(rep), f)
    if sanitizer is not None:
        with open(os.path.join(d, "sanitizer.log"), "w") as f:
            f.write(sanitizer)
        with open(os.path.join(d, "sanitizer.out"), "w") as f:
            f.write(bare_out)
        with open(os.path.join(d, "sanitizer.meta.json"), "w") as f:
            json.dump({"rc": 0, "wall_s": 3.0, "timed_out": False, "skipped": None}, f)


SANITIZER_SAMPLE = """========= COMPUTE-SANITIZER
planted: done
========= Leaked 3,145,728 bytes at 0x7f4c2e000000
=========     Saved host backtrace up to driver entry point at cudaMalloc time
=========         Host Frame: [0x2e4e6f] in libcuda.so.1
=========         Host Frame:cudaMalloc [0x51ab3] in libcudart.so.13
=========         Host Frame:planted_leak_weights [0x1f2a] in planted_shared
=========         Host Frame:main [0x2001] in planted_shared
=========
========= Leaked 4096 bytes at 0x7f4c2e300000
=========     Saved host backtrace up to driver entry point at cudaMalloc time
=========         Host Frame: planted_leak_cache(int) in /tmp/planted_shared [0x1f80]
=========
========= Leaked 8192 bytes at 0x7f4c2e302000
=========         Host Frame:planted_leak_cache [0x1f80] in planted_shared
=========
========= Leaked 66048 bytes at 0x7f4c2e400000
=========         Host Frame:planted_leak_driver [0x1fa0] in planted_shared
=========
========= LEAK SUMMARY: 3224064 bytes leaked in 4 allocations
========= ERROR SUMMARY: 4 errors
"""


def self_test():
    """Builds made-up artifacts for every scenario, checks that a consistent set passes and
    that each planted inconsistency fails the row it should. Returns 0 on success."""
    failures = []

    def expect(cond, what):
        if not cond:
            failures.append(what)

    # parsers
    san = parse_sanitizer(SANITIZER_SAMPLE)
    expect(san["summary_bytes"] == 3224064 and san["summary_count"] == 4, "sanitizer summary")
    expect([l["function"] for l in san["leaks"]] ==
           ["planted_leak_weights", "planted_leak_cache", "planted_leak_cache", "planted_leak_driver"],
           "sanitizer per-leak functions: %r" % [l["function"] for l in san["leaks"]])
    expect(san["errors"] == 4, "sanitizer error summary")
    expect(stable_lines("a\nGPUCHECK {}\nb 0x1 [varies]\nc\n") == ["a", "c"], "stable_lines")
    expect(parse_gpucheck("x\nGPUCHECK {\"a\": 1}\nGPUCHECK {\"a\": 2}\n") == {"a": 2}, "parse_gpucheck")
    r, rest = split_report('prog {"x": 1}\n{\n  "leakscope_version": "0.1.0", "processes": []}\nleakscope: recording\n')
    expect(r == {"leakscope_version": "0.1.0", "processes": []} and "recording" in rest and "prog" in rest,
           "split_report")
    expect(fmt_bytes(3 << 20) == "3145728 (3.00 MiB)", "fmt_bytes")

    M = 1 << 20
    pid = 1000

    def build(root, broken=None):
        """Writes every scenario; ``broken`` names the one inconsistency to plant."""
        b = broken or ""
        # caching
        sites = [_fake_site("device", "pytorch-caching", 20 * M, 2), _fake_site("device", "pytorch-caching", 2 * M)]
        _write_fake(root, "caching", {"reserved": 22 * M + (1 if b == "caching" else 0), "allocated": 5 * M,
                                      "backend": "native"}, _fake_report(pid, sites))
        # expandable
        sites = [_fake_site("device", "pytorch-expandable", 40 * M, 2, space="handle"),
                 _fake_site("device", "pytorch-expandable", 80 << 30, 2, space="reservation")]
        _write_fake(root, "expandable", {"reserved": 40 * M, "allocated": 3 * M, "backend": "native"},
                    _fake_report(pid, sites, devices_extra={"reserved_address_bytes": 80 << 30,
                                                            "mapped_bytes": 40 * M + (M if b == "expandable" else 0)}))
        # async
        sites = [_fake_site("device", "cuda-async-pool", 50 * M, 4)]
        sp = [{"handle": "0x5a00", "device": 0, "created_by_program": False, "destroyed": False,
               "reserved_bytes": 64 * M, "used_bytes": 50 * M + (2 * M if b == "async" else 0), "readings": 7}]
        _write_fake(root, "async", {"reserved": 64 * M, "allocated": 50 * M, "kept_bytes": 50 * M,
                                    "backend": "cudaMallocAsync", "default_pool_handle": 0x5a00},
                    _fake_report(pid, sites, stream_pools=sp))
        # pinned
        pinned = 1024 + 4 * M + 4 * M + 16 * M
        sites = [_fake_site("pinned", "pytorch-pinned-cache", pinned, 4, device=None),
                 _fake_site("device", "pytorch-caching", 20 * M)]
        _write_fake(root, "pinned", {"host_reserved": pinned - (1024 if b == "pinned" else 0),
                                     "host_reserved_key": "reserved_bytes.current",
                                     "expected_reserved": pinned, "reserved": 20 * M, "allocated": 4 * M},
                    _fake_report(pid, sites))
        # graph
        sites = [_fake_site("device", "pytorch-caching", 22 * M),
                 _fake_site("device", "pytorch-graph-pool", 4 * M, during_capture=True),
                 _fake_site("device", "pytorch-graph-pool", 2 * M, during_capture=(b != "graph")),
                 # A tensor block in the graph pool: never capture-marked, never counted.
                 _fake_site("device", "pytorch-graph-pool", 1 * M, space="block", owned=False)]
        _write_fake(root, "graph", {"reserved": 28 * M, "snapshot_pool_bytes": {"0,0": 22 * M, "0,1": 6 * M},
                                    "graph_pool_id": [0, 1], "captures_made": 1},
                    _fake_report(pid, sites, captures=1))
        # mempool
        sites = [_fake_site("device", "pytorch-caching", 2 * M),
                 _fake_site("device", "pytorch-mempool-pluggable", 66 * M, 2, space="handle"),
                 _fake_site("device", "pytorch-mempool-pluggable", 66 * M, 2, space="reservation"),
                 _fake_site("device", "pytorch-mempool-pluggable", 66 * M, 2, space="mapping")]
        c = {"handle_bytes": 66 * M, "reserved_bytes": 66 * M + (2 * M if b == "mempool" else 0),
             "mapped_bytes": 66 * M, "live": 2, "mallocs": 3, "frees": 1, "errors": 0}
        _write_fake(root, "mempool", {"reserved": 68 * M, "c": c, "pool_segment_bytes": 66 * M,
                                      "snapshot_pool_bytes": {"0,0": 2 * M, "1,0": 66 * M}},
                    _fake_report(pid, sites, devices_extra={"reserved_address_bytes": 66 * M, "mapped_bytes": 66 * M}))
        # cupy
        sites = [_fake_site("device", "cupy-pool", 14 * M + 8192, 3)]
        _write_fake(root, "cupy", {"total_bytes": 14 * M + 8192, "used_bytes": 4 * M, "n_free_blocks": 1},
                    _fake_report(pid, sites), stdout_extra="sum 1\n" if b != "cupy" else "sum 1\n")
        if b == "cupy":  # stdout differs between the runs
            with open(os.path.join(root, "cupy", "shim.out"), "a") as f:
                f.write("extra line\n")
        # nccl
        sites = [_fake_site("device", "nccl", 0 if b == "nccl" else 0, 3, space="handle",
                            allocated=0 if b == "nccl" else 40 * M),
                 _fake_site("device", "nccl", 0, 3, space="mapping", allocated=40 * M)]
        if b == "nccl":
            sites[0]["allocations"] = 0
        _write_fake(root, "nccl", {"nccl_version": "2.28.3", "nvml_before": 600 * M, "nvml_during": 700 * M,
                                   "nvml_after": 610 * M, "allreduce_ok": True}, _fake_report(pid, sites))
        # planted: leakscope sites by function, including a freed one and a driver-API one
        def fr(fn):
            return [{"function": "cudaMalloc", "file": None, "line": None, "module": "libcudart.so.13",
                     "address": "0x1", "inlined": False},
                    {"function": fn, "file": "planted_leaks.cu", "line": 10, "module": "planted_shared",
                     "address": "0x2", "inlined": False}]
        for name in ("planted-shared", "planted-static"):
            sites = [_fake_site("device", "direct", 3 * M, frames=fr("planted_leak_weights")),
                     _fake_site("device", "direct", 4096 + 8192 + (4096 if (b == "planted" and name == "planted-static") else 0),
                                2, frames=fr("planted_leak_cache")),
                     _fake_site("device", "direct", 66048, frames=fr("planted_leak_driver")),
                     _fake_site("device", "direct", 0, 0, frames=fr("planted_scratch_ok"), allocated=8 * M)]
            plan = {"planted_leak_weights": [3 * M, 1], "planted_leak_cache": [12288, 2],
                    "planted_leak_driver": [66048, 1], "planted_scratch_ok": [0, 0]}
            _write_fake(root, name, {"expected_leaked_bytes": 3224064, "expected_leaked_count": 4, "planted": plan},
                        _fake_report(pid, sites), sanitizer=SANITIZER_SAMPLE)
        compare_torch.write_fake(sys.modules[__name__], root, b)
        compare_aging.write_fake(sys.modules[__name__], root, b)

    # 1. consistent artifacts: no FAIL
    tmp = tempfile.mkdtemp(prefix="gpucheck-selftest-")
    good = os.path.join(tmp, "good")
    os.makedirs(good)
    build(good)
    rows = evaluate(good)
    bad_rows = [r for r in rows if r["result"] == FAIL]
    expect(not bad_rows, "consistent artifacts failed: %s" % json.dumps(bad_rows, indent=1)[:3000])
    expect(len({r["scenario"] for r in rows}) == len(SCENARIOS), "every scenario has rows")
    md = render_markdown(rows, {"date": "today", "gpu": "fake"})
    expect("| caching |" in md and "0 FAIL" in md, "markdown table")

    # 2. each planted inconsistency fails the expected row (and only in its scenario)
    cases = {
        "caching": ("caching", "pytorch-caching outstanding"),
        "expandable": ("expandable", "mapped bytes == memory_reserved"),
        "async": ("async", "used_bytes"),
        "pinned": ("pinned", "host allocator reserved_bytes"),
        "graph": ("graph", "during_capture"),
        "mempool": ("mempool", "reservation sites"),
        "cupy": ("cupy", "stdout identical"),
        "nccl": ("nccl", "allocations > 0"),
        "planted": ("planted-static", "leaked bytes: leakscope vs compute-sanitizer"),
        compare_torch.SCENARIO: (compare_torch.SCENARIO, "LEAK-DEFAULT at its line"),
        compare_aging.SCENARIO: (compare_aging.SCENARIO, "LEAK-AGING block site: trend significant"),
        compare_aging.SCENARIO + "-churn": (compare_aging.SCENARIO, "CHURN-AGING block sites"),
        compare_aging.SCENARIO + "-hidden": (compare_aging.SCENARIO, "HIDDEN-AGING block site"),
        compare_aging.SCENARIO + "-hours": (compare_aging.SCENARIO, "hours == headroom_bytes / slope"),
    }
    for broken, (scn, check_part) in cases.items():
        root = os.path.join(tmp, "broken-" + broken)
        os.makedirs(root)
        build(root, broken)
        rows = evaluate(root)
        failed = [(r["scenario"], r["check"]) for r in rows if r["result"] == FAIL]
        expect(any(sc == scn and check_part in ch for sc, ch in failed),
               "%s: expected a FAIL in %s / %r, got %r" % (broken, scn, check_part, failed))
        expect(all(sc == scn for sc, _ in failed), "%s: FAIL outside %s: %r" % (broken, scn, failed))

    # 3. a missing report and a crashed run are FAIL rows, not exceptions
    root = os.path.join(tmp, "missing")
    os.makedirs(root)
    _write_fake(root, "caching", {"reserved": 1}, None)
    with open(os.path.join(root, "caching", "shim.meta.json"), "w") as f:
        json.dump({"rc": 139, "wall_s": 1.0, "timed_out": False, "skipped": None}, f)
    rows = evaluate(root)
    expect(sum(1 for r in rows if r["result"] == FAIL) >= 3, "missing report: %r" % [(r["check"], r["result"]) for r in rows])

    if failures:
        for f in failures:
            print("self-test FAILED: " + f, file=sys.stderr)
        return 1
    print("compare.py self-test passed (%d scenarios, %d planted inconsistencies caught)" % (len(SCENARIOS), len(cases)))
    return 0


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--self-test", action="store_true", help="check this module on made-up artifacts")
    ap.add_argument("--evaluate", metavar="ARTIFACTS", help="judge the artifacts in this folder")
    ap.add_argument("--bare-only", action="store_true", help="the artifacts come from a --bare-only run")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()
    if args.evaluate:
        env = read_json(os.path.join(args.evaluate, "env.json")) or {}
        rows = evaluate(args.evaluate, bare_only=args.bare_only or env.get("mode") == "bare-only")
        sys.stdout.write(render_markdown(rows, env))
        return 1 if any(r["result"] == FAIL for r in rows) or not rows else 0
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
