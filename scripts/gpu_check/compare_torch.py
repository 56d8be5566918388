"""The GPU check's judging of the ``torch-blocks`` scenario (targets/torch_blocks.py):
leakscope's PyTorch block tracking against torch's own figures. Kept apart from compare.py,
which calls :func:`check` and, in its self-test, :func:`write_fake`; ``h`` is compare.py
itself (its row helpers and report readers).

Checks: block sites (``space: "block"``) sum to ``memory_allocated()``; the ``gpu.torch``
section's device figures equal ``memory_allocated()`` / ``memory_reserved()`` and its pools
the snapshot's per-pool sums; the segment-level pools (cudaMalloc / cuMemCreate sites) sum to
``memory_reserved()``; every planted leak is one block site whose innermost Python frame is
its ``# LEAK-...`` line, in the right pool, with torch's block count and bytes.
"""

import os

SCENARIO = "torch-blocks"
DESCRIPTION = ("PyTorch block tracking (injected helper): planted tensor leaks in the default "
               "pool, a CUDA graph's pool, a MemPool and a pluggable MemPool, vs torch's "
               "memory_allocated/memory_reserved/memory_snapshot")
# Segment-level pools whose sum is memory_reserved() in this scenario (a plain MemPool's
# segments are cudaMalloc'd by the caching allocator: pytorch-caching).
SEGMENT_POOLS = ("pytorch-caching", "pytorch-graph-pool", "pytorch-mempool-pluggable", "pytorch-expandable")


def block_sites(proc):
    return [s for s in (proc or {}).get("sites") or [] if s.get("space") == "block"]


def headline(site):
    """(file, line) of the innermost Python frame, or None."""
    for f in site.get("frames") or []:
        if f.get("python"):
            return f.get("file"), f.get("line")
    return None


def check(s, h):
    f, p = s.figures, s.proc
    torch = (h.gpu_of(p) or {}).get("torch") if p else None
    blocks = block_sites(p)
    rows = []
    if torch is None:
        rows.append(h.row(s.name, "gpu.torch section present", "absent", "present", h.FAIL,
                          "the helper did not activate, or no reading/block record came",
                          as_bytes=False, diff=""))
    rows.append(h.eq_row(s.name, "block sites outstanding == torch.cuda.memory_allocated()",
                         h.site_sum(blocks) if p else None, f.get("allocated"),
                         "%d block sites" % len(blocks)))
    dev = None
    for d in (torch or {}).get("devices") or []:
        if d.get("device") == 0:
            dev = d
    latest = (dev or {}).get("latest") or {}
    rows.append(h.eq_row(s.name, "gpu.torch device 0 allocated_bytes == memory_allocated()",
                         latest.get("allocated_bytes") if dev else None, f.get("allocated")))
    rows.append(h.eq_row(s.name, "gpu.torch device 0 reserved_bytes (segments) == memory_reserved()",
                         latest.get("reserved_bytes") if dev else None, f.get("reserved")))
    seg = None
    if p is not None and h.gpu_of(p) is not None:
        seg = sum(h.pool_figure(p, name, device=0) or 0 for name in SEGMENT_POOLS)
    rows.append(h.eq_row(s.name, "segment sites (%s) == memory_reserved()" % " + ".join(SEGMENT_POOLS[:3]),
                         seg, f.get("reserved"), "cudaMalloc / cuMemCreate level, independent of the readings"))
    by_id = {}
    for pool in (torch or {}).get("pools") or []:
        if pool.get("device") == 0:
            by_id[",".join(str(v) for v in pool.get("pool_id") or [])] = pool
    for key, want in sorted((f.get("pools") or {}).items()):
        got = (by_id.get(key) or {}).get("latest") or {}
        name = (by_id.get(key) or {}).get("pool", "missing")
        rows.append(h.eq_row(s.name, "pool (%s) %s: reserved, allocated == memory_snapshot()" % (key, name),
                             got.get("reserved_bytes") if key in by_id else None, want.get("reserved"),
                             "allocated %s vs %s; segments %s vs %s" % (
                                 got.get("allocated_bytes"), want.get("allocated"),
                                 got.get("segments"), want.get("segments"))))
        if key in by_id and got.get("allocated_bytes") != want.get("allocated"):
            rows[-1]["result"] = h.FAIL
    target = os.path.basename(f.get("file") or "torch_blocks.py")
    for name, want in sorted((f.get("leaks") or {}).items()):
        at = [x for x in blocks
              if (headline(x) or (None, None))[1] == want.get("line")
              and os.path.basename((headline(x) or ("", None))[0] or "") == target]
        got = at[0] if len(at) == 1 else {}
        note = "line %s, want %s %s; %d sites at the line" % (want.get("line"), want.get("pool"),
                                                              want.get("pool_id"), len(at))
        if got:
            note += "; got %s, %s blocks" % (got.get("pool"), got.get("outstanding_count"))
        r = h.eq_row(s.name, "%s at its line: block bytes" % name, got.get("outstanding_bytes") if got else None,
                     want.get("bytes"), note)
        if got and (got.get("pool") != want.get("pool") or got.get("outstanding_count") != want.get("count")
                    or got.get("device") != 0):
            r["result"] = h.FAIL
        rows.append(r)
    stats = f.get("stats") or {}
    for ours, key, as_bytes in (("requested_bytes", "requested_bytes.all.current", True),
                                ("inactive_split_bytes", "inactive_split_bytes.all.current", True),
                                ("segments", "segment.all.current", False),
                                ("allocated_blocks", "allocation.all.current", False)):
        rows.append(h.eq_row(s.name, "gpu.torch device 0 %s vs memory_stats %s (for reading)" % (ours, key),
                             latest.get(ours) if dev else None, stats.get(key), as_bytes=as_bytes, info=True))
    tb = (torch or {}).get("blocks") or {}
    rows.append(h.row(s.name, "blocks: allocations / frees / live / untracked (for reading)",
                      "%s / %s / %s / %s" % (tb.get("allocations"), tb.get("frees"), tb.get("live_blocks"),
                                             tb.get("untracked_blocks")),
                      "", h.INFO, "readings %s; untracked: allocated blocks no tracked event holds" % (
                          (torch or {}).get("readings")), as_bytes=False, diff=""))
    return rows


def write_fake(h, root, broken=""):
    """Writes consistent made-up artifacts for the scenario (one inconsistency when
    ``broken`` is ``"torch-blocks"``: a planted leak reported one line off)."""
    M = 1 << 20
    pid = 1000
    target = "/x/scripts/gpu_check/targets/torch_blocks.py"

    def frames(line):
        return [{"function": "at::empty", "file": None, "line": None, "module": "libtorch_cuda.so",
                 "address": "0x1", "inlined": False},
                {"function": "main", "file": target, "line": line, "module": None, "address": "0x20",
                 "inlined": False, "python": True}]

    def block(pool, size, count, line):
        site = h._fake_site("device", pool, size, count, space="block", owned=False, frames=frames(line))
        return site

    leaks = {"LEAK-DEFAULT": {"line": 63, "pool": "pytorch-caching", "pool_id": [0, 0], "count": 3, "bytes": 12 * M},
             "LEAK-GRAPH": {"line": 88, "pool": "pytorch-graph-pool", "pool_id": [1, 0], "count": 1, "bytes": 6 * M},
             "LEAK-MEMPOOL": {"line": 98, "pool": "pytorch-mempool", "pool_id": [0, 1], "count": 1, "bytes": 8 * M}}
    sites = [h._fake_site("device", "pytorch-caching", 60 * M, 3), h._fake_site("device", "pytorch-graph-pool", 20 * M),
             block("pytorch-caching", 12 * M, 3, 63 + (1 if broken == SCENARIO else 0)),
             block("pytorch-caching", 5 * M, 2, 70),
             block("pytorch-graph-pool", 6 * M, 1, 88), block("pytorch-mempool", 8 * M, 1, 98)]
    report = h._fake_report(pid, sites)
    figures = lambda at, reserved, allocated: {  # noqa: E731
        "at_ns": at, "reserved_bytes": reserved, "allocated_bytes": allocated, "segments": 1}
    report["processes"][0]["gpu"]["torch"] = {
        "readings": 2, "span_ns": 10, "blocks": {"allocations": 400, "frees": 393, "live_blocks": 7,
                                                 "live_bytes": 31 * M, "untracked_blocks": 0},
        "devices": [{"device": 0, "latest": figures(9, 80 * M, 31 * M), "series": []}],
        "pools": [{"device": 0, "pool": "pytorch-caching", "pool_id": [0, 0], "latest": figures(9, 40 * M, 17 * M)},
                  {"device": 0, "pool": "pytorch-mempool", "pool_id": [0, 1], "latest": figures(9, 20 * M, 8 * M)},
                  {"device": 0, "pool": "pytorch-graph-pool", "pool_id": [1, 0],
                   "latest": figures(9, 20 * M, 6 * M)}]}
    pools = {"0,0": {"reserved": 40 * M, "allocated": 17 * M, "segments": 1},
             "0,1": {"reserved": 20 * M, "allocated": 8 * M, "segments": 1},
             "1,0": {"reserved": 20 * M, "allocated": 6 * M, "segments": 1}}
    h._write_fake(root, SCENARIO, {"reserved": 80 * M, "allocated": 31 * M, "backend": "native",
                                   "pools": pools, "leaks": leaks, "file": target}, report)
