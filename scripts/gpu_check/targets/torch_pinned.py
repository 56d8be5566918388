"""GPU-check target: PyTorch's pinned (page-locked) host memory.

torch.empty(..., pin_memory=True) and tensor.pin_memory() take blocks from PyTorch's
CachingHostAllocator, which rounds each new block up to a power of two and gets it with
cudaHostAlloc; freed blocks stay cached (never freed at exit: the allocator's destructor
leaves its blocks). leakscope's pool ``pytorch-pinned-cache`` (memory
``pinned``) must hold exactly the allocator's reserved bytes (host_memory_stats()
"reserved_bytes.current", which the allocator keeps as the sum of its blocks' sizes). The
target also computes that sum itself from the power-of-two rule, as a second reference.
"""

import common

MiB = 1 << 20


def pow2(n):
    p = 1
    while p < n:
        p <<= 1
    return p


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = prefix + str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def host_stats(torch):
    """PyTorch's host allocator statistics, flattened ("reserved_bytes.current": n, ...)."""
    for get in (lambda: torch.cuda.host_memory_stats(),
                lambda: torch.cuda.memory.host_memory_stats(),
                lambda: torch._C._cuda_hostMemoryStats()):
        try:
            stats = get()
            return flatten(dict(stats)), None
        except Exception as e:  # noqa: BLE001 - try the next spelling
            err = repr(e)
    return {}, err


def pick(stats, name):
    """The 'current' value of a statistic, whatever the exact spelling of its key."""
    for key in (name + ".current", name + ".all.current", name):
        if key in stats and isinstance(stats[key], int):
            return key, stats[key]
    for key, v in sorted(stats.items()):
        if key.startswith(name) and key.endswith("current") and isinstance(v, int):
            return key, v
    return None, None


def main():
    with common.step("import torch", 120):
        import torch
    with common.step("cuda init", 60):
        torch.cuda.init()
        torch.cuda.set_device(0)
    new_blocks = []  # sizes asked for that needed a new cudaHostAlloc
    with common.step("workload", 120):
        p1 = torch.empty(1000, dtype=torch.uint8, pin_memory=True)          # -> 1 KiB block
        new_blocks.append(1000)
        p2 = torch.empty(3 * MiB, dtype=torch.uint8, pin_memory=True)       # -> 4 MiB block
        new_blocks.append(3 * MiB)
        torch.manual_seed(0)
        p3 = torch.randn(1024, 1024).pin_memory()                           # 4 MiB -> 4 MiB block
        new_blocks.append(4 * MiB)
        p4 = torch.empty(10 * MiB + 1, dtype=torch.uint8, pin_memory=True)  # -> 16 MiB block
        new_blocks.append(10 * MiB + 1)
        del p4                                                              # cached, not freed
        p5 = torch.empty(9 * MiB, dtype=torch.uint8, pin_memory=True)       # reuses the 16 MiB block
        p5.fill_(5)
        g = p3.to("cuda", non_blocking=True)                                # a copy from pinned memory
        p2.fill_(1)
        torch.cuda.synchronize()
        # .cpu(), not .item(): PyTorch's .item() on a CUDA tensor stages the scalar in a tiny
        # pinned block from this same allocator, which would change the expected figure.
        checksum = round(float(g.sum().cpu()), 2) + int(p5[:1000].sum())
        common.keep(p1, p2, p3, p5, g)
    stats, err = host_stats(torch)
    rkey, reserved = pick(stats, "reserved_bytes")
    akey, allocated = pick(stats, "allocated_bytes")
    figures = common.torch_figures(torch)
    figures.update({
        "host_reserved": reserved, "host_reserved_key": rkey,
        "host_allocated": allocated, "host_allocated_key": akey,
        "host_stats": {k: v for k, v in stats.items() if isinstance(v, (int, float))},
        "host_stats_error": err,
        "expected_reserved": sum(pow2(n) for n in new_blocks),
    })
    common.say("checksum %s" % checksum)
    common.say("pinned blocks expected %d, host allocator reserved %s" % (figures["expected_reserved"], reserved))
    common.say("host_memory_stats keys: %s" % ", ".join(sorted(k for k in stats if k.endswith("current"))))
    common.emit("torch-pinned", figures)


if __name__ == "__main__":
    main()
