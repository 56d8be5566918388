"""Scenario for tests/torch_blocks.rs: tensors of the stand-in torch (tests/scenarios/torch_stub)
in every kind of pool, with planted leaks at the lines marked ``# LEAK-...``, churn, split
free space, a block waiting for another stream, and pauses long enough for several readings
at ``--interval 100ms``. Prints ``TRUTH {json}`` last: the stand-in allocator's own figures
(memory_allocated / memory_reserved per device, every pool's figures, and per planted leak
its block count and bytes). Its stdout is the same with and without leakscope."""

import ctypes
import json
import time

import torch

MIB = 1 << 20
kept = []
leaks = {}


def note(name, tensors, pool):
    from torch._C import _allocator

    sizes = [_allocator._live[t.data_ptr()].size for t in tensors]
    entry = leaks.setdefault(name, {"count": 0, "bytes": 0, "pool": pool})
    entry["count"] += len(sizes)
    entry["bytes"] += sum(sizes)


def pause():
    time.sleep(0.35)


def leak_default():
    out = []
    for _ in range(5):
        out.append(torch.empty(3000))  # LEAK-DEFAULT
    note("LEAK-DEFAULT", out, "pytorch-caching")
    kept.extend(out)


def churn():
    for i in range(300):
        t = torch.empty(4096 + 8 * i)  # CHURN
        del t


def fragment():
    held = [torch.empty(100_000) for _ in range(10)]  # LEAK-FRAG
    kept.extend(held[::2])
    note("LEAK-FRAG", held[::2], "pytorch-caching")
    del held


def leak_graph():
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        with torch.cuda.graph(g):
            out = torch.empty(3 * MIB)  # LEAK-GRAPH
            scratch = torch.empty(MIB // 2)
            del scratch
    note("LEAK-GRAPH", [out], "pytorch-graph-pool")
    kept.extend([g, out])


def leak_mempool():
    alloc = torch.cuda.memory.CUDAPluggableAllocator("libcumem.so", "my_malloc", "my_free")
    pool = torch.cuda.MemPool(alloc.allocator())
    out = []
    with torch.cuda.use_mem_pool(pool):
        for _ in range(2):
            out.append(torch.empty(MIB + 100))  # LEAK-MEMPOOL
    note("LEAK-MEMPOOL", out, "pytorch-mempool-pluggable")
    plain = torch.cuda.MemPool()
    with torch.cuda.use_mem_pool(plain):
        t = torch.empty(8000)  # LEAK-PLAIN-MEMPOOL
    note("LEAK-PLAIN-MEMPOOL", [t], "pytorch-mempool")
    kept.extend(out + [t, alloc, pool, plain])


def leak_device1():
    t = torch.empty(700, device="cuda:1")  # LEAK-DEVICE1
    note("LEAK-DEVICE1", [t], "pytorch-caching")
    kept.append(t)


def awaiting_free():
    s = torch.cuda.Stream()
    t = torch.empty(5000)
    t.record_stream(s)
    del t  # freed by the program; the allocator waits for the other stream


def keep(objs):
    """One leaked reference: held through interpreter teardown, as a real leak would be."""
    inc = ctypes.pythonapi.Py_IncRef
    inc.argtypes = [ctypes.py_object]
    inc.restype = None
    inc(objs)


def main():
    leak_default()
    churn()
    pause()
    fragment()
    pause()
    leak_graph()
    leak_mempool()
    leak_device1()
    awaiting_free()
    pause()
    keep(kept)
    truth = {
        "allocated": [torch.cuda.memory_allocated(d) for d in (0, 1)],
        "reserved": [torch.cuda.memory_reserved(d) for d in (0, 1)],
        "pools": torch._C._allocator.figures(),
        "leaks": leaks,
    }
    print("kept %d tensors" % sum(v["count"] for v in leaks.values()))
    print("TRUTH " + json.dumps(truth, sort_keys=True))


main()
