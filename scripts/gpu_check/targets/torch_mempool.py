"""GPU-check target: torch.cuda.MemPool backed by a CUDAPluggableAllocator written in C.

    python3 torch_mempool.py PATH/libcumem_alloc.so

The allocator (native/cumem_alloc.c, vLLM-style) reserves, creates, maps and grants access
for every segment PyTorch's caching allocator asks for, and undoes it on free. Tensors are
allocated under ``torch.cuda.use_mem_pool(pool)``; a second pool is created, used, emptied
and deleted so that my_free runs too. The C allocator's counters (read with ctypes from the
same loaded library) are what leakscope's pool ``pytorch-mempool-pluggable`` must hold:
handle bytes, and as ``space: reservation`` / ``mapping`` sites its reserved and mapped bytes.
"""

import ctypes
import gc
import sys

import common

MiB = 1 << 20
COUNTERS = ("handle_bytes", "reserved_bytes", "mapped_bytes", "live", "mallocs", "frees", "errors")


def counters(lib):
    return {k: int(ctypes.c_ulonglong.in_dll(lib, "cumem_" + k).value) for k in COUNTERS}


def make_pool(torch, alloc):
    """torch.cuda.MemPool over the pluggable allocator (2.11 takes the _cuda_CUDAAllocator
    that CUDAPluggableAllocator.allocator() returns; older releases took the wrapper)."""
    try:
        return torch.cuda.MemPool(alloc.allocator())
    except TypeError:
        return torch.cuda.MemPool(alloc)


def use_pool(torch, pool):
    use = getattr(torch.cuda, "use_mem_pool", None) or torch.cuda.memory.use_mem_pool
    return use(pool)


def main():
    so = sys.argv[1]
    with common.step("import torch", 120):
        import torch
    with common.step("cuda init", 60):
        torch.cuda.init()
        torch.cuda.set_device(0)
        dev = torch.device("cuda", 0)
    lib = ctypes.CDLL(so)  # the same handle CUDAPluggableAllocator opens: one set of counters
    with common.step("mempool workload", 120):
        base = torch.ones(1 << 18, device=dev)                            # default pool, 1 MiB
        alloc = torch.cuda.memory.CUDAPluggableAllocator(so, "my_malloc", "my_free")
        pool = make_pool(torch, alloc)
        with use_pool(torch, pool):
            weights = torch.empty(64 * MiB, dtype=torch.uint8, device=dev)   # "weights"
            weights.fill_(1)
            kv = torch.zeros(3 * MiB + 5, dtype=torch.uint8, device=dev)     # "kv_cache", odd size
            small = torch.ones(1000, device=dev)                             # small-block segment
            scratch = torch.randn(1000, 1000, device=dev)                    # freed back into the pool
            checksum = int(weights[:1000].sum().item()) + float(small.sum().item())
            del scratch
        # A second pool, used, emptied and dropped: its segments go back through my_free
        # (if this PyTorch releases a deleted pool's segments on empty_cache).
        pool2 = make_pool(torch, alloc)
        with use_pool(torch, pool2):
            t = torch.empty(8 * MiB, dtype=torch.uint8, device=dev)
            t.fill_(2)
            checksum += int(t[:1000].sum().item())
            del t
        torch.cuda.synchronize()
        del pool2
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        pool_id = [int(v) for v in pool.id]
        common.keep(base, alloc, pool, weights, kv, small)
    c = counters(lib)
    snap = common.torch_snapshot_pools(torch)
    figures = common.torch_figures(torch)
    figures.update({
        "c": c, "pool_id": pool_id, "snapshot_pool_bytes": snap,
        "pool_segment_bytes": snap.get(",".join(str(v) for v in pool_id)),
    })
    common.say("checksum %s" % checksum)
    common.say("C allocator: %s" % " ".join("%s=%d" % (k, c[k]) for k in COUNTERS))
    common.say("memory_reserved %d" % figures["reserved"])
    common.emit("torch-mempool", figures)


if __name__ == "__main__":
    main()
