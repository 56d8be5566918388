"""GPU-check target: PyTorch's device allocator in one of its three configurations.

    python3 torch_alloc.py caching      # default caching allocator (cudaMalloc segments)
    python3 torch_alloc.py expandable   # run with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    python3 torch_alloc.py async        # run with PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync

Allocates several tensors, frees some and keeps some, then prints torch's figures in the
GPUCHECK line: memory_reserved() (what leakscope's pytorch-caching / pytorch-expandable pool
must hold at exit) and memory_allocated(). For the cudaMallocAsync backend torch reads both
from the device's default pool (RESERVED_MEM_CURRENT / USED_MEM_CURRENT), so the target also
reports that pool's handle and the bytes it keeps.
"""

import ctypes
import sys
import time

import common

MiB = 1 << 20


def default_mempool_handle():
    """cudaDeviceGetDefaultMemPool(device 0) through the libcudart torch loaded, or None."""
    try:
        path = None
        with open("/proc/self/maps") as f:
            for line in f:
                if "libcudart.so" in line:
                    path = line.split()[-1]
                    break
        if path is None:
            return None
        lib = ctypes.CDLL(path)
        pool = ctypes.c_void_p()
        rc = lib.cudaDeviceGetDefaultMemPool(ctypes.byref(pool), ctypes.c_int(0))
        return pool.value if rc == 0 else None
    except Exception:  # noqa: BLE001 - only an extra hint for matching the stream pool
        return None


def caching_workload(torch, dev):
    """Small and large blocks, an odd size, a cuBLAS matmul (its workspace comes from the
    caching allocator), then some tensors freed back to the cache."""
    torch.manual_seed(0)
    a = torch.ones(1000, device=dev)                                     # small pool, 2 MiB segment
    b = torch.empty(3 * MiB + 123, dtype=torch.uint8, device=dev)        # large pool, odd size
    b.fill_(7)
    c = torch.randn(2048, 2048, device=dev)                              # 16 MiB
    d = torch.randn(2048, 2048, device=dev)
    e = c @ d                                                            # cuBLAS
    f = torch.empty(100 * MiB, dtype=torch.uint8, device=dev)            # freed below
    f.zero_()
    g = torch.ones(5000, device=dev)                                     # freed below
    checksum = float(e[:8, :8].sum().item()) + float(a.sum().item()) + float(g.sum().item())
    del d, f, g                       # back to the cache: still reserved
    torch.cuda.synchronize()
    common.keep(a, b, c, e)
    return {"checksum": round(checksum, 2)}


def async_workload(torch, dev):
    """Sizes in whole 2 MiB units (so the pool's used bytes equal the sizes asked for), no
    cuBLAS (its workspace would be freed during teardown), frees, then one more allocation
    more than 10 ms after the last free: leakscope samples a stream pool at most every 10 ms,
    so this makes its last reading the pool's final state."""
    a = torch.empty(8 * MiB, dtype=torch.uint8, device=dev)
    a.fill_(1)
    b = torch.empty(32 * MiB, dtype=torch.uint8, device=dev)
    b.fill_(2)
    c = a + 1                                                            # 8 MiB
    d = torch.empty(64 * MiB, dtype=torch.uint8, device=dev)
    d.zero_()
    e = torch.empty(16 * MiB, dtype=torch.uint8, device=dev)
    e.fill_(3)
    checksum = int(c[:4096].sum().item()) + int(e[:4096].sum().item())
    del d, e
    torch.cuda.synchronize()
    time.sleep(0.05)
    z = torch.empty(2 * MiB, dtype=torch.uint8, device=dev)              # the refreshing allocation
    torch.cuda.synchronize()
    kept = (a, b, c, z)
    common.keep(*kept)
    return {"checksum": checksum, "kept_bytes": sum(t.numel() * t.element_size() for t in kept),
            "default_pool_handle": default_mempool_handle()}


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "caching"
    if mode not in ("caching", "expandable", "async"):
        sys.exit("unknown mode %r" % mode)
    with common.step("import torch", 120):
        import torch
    with common.step("cuda init", 60):
        dev = torch.device("cuda", 0)
        torch.cuda.init()
        torch.cuda.set_device(0)
    with common.step("workload", 120):
        extra = async_workload(torch, dev) if mode == "async" else caching_workload(torch, dev)
        torch.cuda.synchronize()
    figures = common.torch_figures(torch)
    figures.update(extra)
    if mode != "async":
        figures["snapshot_pool_bytes"] = common.torch_snapshot_pools(torch)
        segs = torch.cuda.memory_snapshot()
        figures["expandable_segments"] = any(s.get("is_expandable") for s in segs)
    common.say("mode %s backend %s" % (mode, figures["backend"]))
    common.say("checksum %s" % extra["checksum"])
    common.say("memory_reserved %d memory_allocated %d" % (figures["reserved"], figures["allocated"]))
    if mode == "async":
        common.say("allocated equals kept tensors: %s" % (figures["allocated"] == extra["kept_bytes"]))
    else:
        common.say("expandable segments: %s" % figures["expandable_segments"])
    common.emit("torch-" + mode, figures)


if __name__ == "__main__":
    main()
