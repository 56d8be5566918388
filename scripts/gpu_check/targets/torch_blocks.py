"""GPU-check target: leakscope's PyTorch block tracking (on by default under `leakscope run`:
its injected helper registers the shim as PyTorch's GPU-trace memory callbacks and reads the
allocator's snapshot at exit).

    python3 torch_blocks.py [PATH/libcumem_alloc.so]

Plants one tensor leak per kind of pool, each at a line marked ``# LEAK-...``: the default
pool, a CUDA graph's private pool (allocated during capture), a ``torch.cuda.MemPool()`` with
the caching allocator's own cudaMalloc and, when the C allocator is given, a MemPool with a
``CUDAPluggableAllocator`` (vLLM-style). Around them: churn that is freed, a cuBLAS matmul,
tensors freed back to the cache. The GPUCHECK line carries torch's own truth:
memory_allocated() / memory_reserved(), per segment_pool_id the reserved and allocated bytes
from memory_snapshot(), and per planted leak its line, pool id, expected pool name, block
count and block bytes (the snapshot's block sizes at the tensors' addresses).
"""

import re
import sys

import common

MiB = 1 << 20
# memory_stats() keys set beside leakscope's device figures (for reading).
STATS = ("requested_bytes.all.current", "inactive_split_bytes.all.current", "segment.all.current",
         "allocation.all.current", "active_bytes.all.current")


def marker_lines():
    """{"LEAK-...": line} from this file's source."""
    out = {}
    with open(__file__) as f:
        for i, line in enumerate(f, 1):
            m = re.search(r"\S.*#\s(LEAK-[A-Z0-9-]+)\s*$", line)
            if m:
                out[m.group(1)] = i
    return out


def make_pool(torch, alloc):
    try:
        return torch.cuda.MemPool(alloc.allocator())
    except TypeError:
        return torch.cuda.MemPool(alloc)


def use_pool(torch, pool):
    use = getattr(torch.cuda, "use_mem_pool", None) or torch.cuda.memory.use_mem_pool
    return use(pool)


def main():
    so = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].endswith("missing") else None
    with common.step("import torch", 120):
        import torch
    with common.step("cuda init", 60):
        torch.cuda.init()
        torch.cuda.set_device(0)
        dev = torch.device("cuda", 0)
    planted = {}

    def plant(name, tensors, pool_name, pool_id):
        planted[name] = {"tensors": tensors, "pool": pool_name, "pool_id": [int(v) for v in pool_id]}

    with common.step("workload", 180):
        torch.manual_seed(0)
        weights = [torch.empty(3 * MiB + 100, dtype=torch.uint8, device=dev) for _ in range(3)]  # LEAK-DEFAULT
        for w in weights:
            w.fill_(1)
        plant("LEAK-DEFAULT", weights, "pytorch-caching", (0, 0))
        for i in range(200):                                  # churn, freed at once
            t = torch.randn(256, 256 + i, device=dev)
            del t
        a = torch.randn(1024, 1024, device=dev)
        b = torch.randn(1024, 1024, device=dev)
        c = a @ b                                             # cuBLAS workspace
        scratch = torch.empty(40 * MiB, dtype=torch.uint8, device=dev)
        scratch.zero_()
        del scratch                                           # back to the cache

        # A CUDA graph: what it allocates during capture lives in its private pool.
        x = torch.randn(1024, 1024, device=dev)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                y = x * 2 + 1
        torch.cuda.current_stream().wait_stream(s)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            graph_out = torch.empty(5 * MiB, dtype=torch.uint8, device=dev)  # LEAK-GRAPH
            graph_out.fill_(2)
            y = x * 2 + 1
        g.replay()
        torch.cuda.synchronize()
        plant("LEAK-GRAPH", [graph_out], "pytorch-graph-pool", g.pool())

        # A MemPool with the caching allocator's own cudaMalloc.
        plain = torch.cuda.MemPool()
        with use_pool(torch, plain):
            pooled = torch.empty(7 * MiB, dtype=torch.uint8, device=dev)  # LEAK-MEMPOOL
            pooled.fill_(3)
        plant("LEAK-MEMPOOL", [pooled], "pytorch-mempool", plain.id)

        keep = [weights, a, b, c, x, y, g, graph_out, plain, pooled]
        # A MemPool with an allocator of its own (vLLM's way), when the C allocator is built.
        if so:
            alloc = torch.cuda.memory.CUDAPluggableAllocator(so, "my_malloc", "my_free")
            pluggable = make_pool(torch, alloc)
            with use_pool(torch, pluggable):
                kv = [torch.empty(9 * MiB, dtype=torch.uint8, device=dev) for _ in range(2)]  # LEAK-PLUGGABLE
                for t in kv:
                    t.fill_(4)
            plant("LEAK-PLUGGABLE", kv, "pytorch-mempool-pluggable", pluggable.id)
            keep += [alloc, pluggable, kv]
        torch.cuda.synchronize()
        common.keep(*keep)

    lines = marker_lines()
    blocks = {}
    pools = {}
    for seg in torch.cuda.memory_snapshot():
        if seg.get("device", 0) != 0:
            continue
        key = ",".join(str(int(v)) for v in seg.get("segment_pool_id") or (0, 0))
        p = pools.setdefault(key, {"reserved": 0, "allocated": 0, "segments": 0})
        p["reserved"] += int(seg["total_size"])
        p["segments"] += 1
        for b in seg.get("blocks") or ():
            if b.get("state") == "active_allocated":
                p["allocated"] += int(b["size"])
                blocks[int(b["address"])] = int(b["size"])
    leaks = {}
    for name, p in planted.items():
        sizes = [blocks.get(t.data_ptr()) for t in p["tensors"]]
        leaks[name] = {"line": lines.get(name), "pool": p["pool"], "pool_id": p["pool_id"],
                       "count": len(sizes), "bytes": sum(v for v in sizes if v is not None),
                       "unknown_blocks": sum(1 for v in sizes if v is None)}
    figures = common.torch_figures(torch)
    stats = torch.cuda.memory_stats(0)
    figures.update({"pools": pools, "leaks": leaks, "file": __file__,
                    "stats": {k: stats.get(k) for k in STATS}})
    common.say("leaks planted: %s" % " ".join(sorted(leaks)))
    common.say("memory_allocated %d" % figures["allocated"])
    common.say("memory_reserved %d" % figures["reserved"])
    common.emit("torch-blocks", figures)


if __name__ == "__main__":
    main()
