"""GPU-check target: CuPy's default device memory pool.

Allocates arrays (a few elementwise kernels and a reduction run on them), frees one back to
the pool, and reports MemoryPool.total_bytes() (everything the pool got with cudaMalloc,
in use or cached) and used_bytes(): leakscope's pool ``cupy-pool`` must hold total_bytes().
Nothing here uses cuRAND or cuBLAS, whose own allocations are not the pool's.
"""

import common

MiB = 1 << 20


def main():
    with common.step("import cupy", 120):
        import cupy as cp
    with common.step("workload", 180):             # first use compiles kernels (NVRTC)
        cp.cuda.Device(0).use()
        pool = cp.get_default_memory_pool()
        a = cp.arange(1 << 20, dtype=cp.float32)                 # 4 MiB
        b = cp.ones((1000,), dtype=cp.float64)                   # 8000 B, rounded by the pool
        c = cp.empty((10 * MiB + 7,), dtype=cp.uint8)            # freed below: stays in the pool
        c.fill(1)
        d = a * 2 + 1
        s = float(d[:1000].sum()) + float(b.sum()) + int(c[:100].sum())
        del c
        cp.cuda.Device(0).synchronize()
        common.keep(a, b, d)
    figures = {
        "total_bytes": int(pool.total_bytes()),
        "used_bytes": int(pool.used_bytes()),
        "n_free_blocks": int(pool.n_free_blocks()),
        "cupy": cp.__version__,
    }
    common.say("sum %s" % s)
    common.say("pool total_bytes %d used_bytes %d free blocks %d" % (
        figures["total_bytes"], figures["used_bytes"], figures["n_free_blocks"]))
    common.emit("cupy-pool", figures)


if __name__ == "__main__":
    main()
