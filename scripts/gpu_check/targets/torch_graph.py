"""GPU-check target: CUDA graph capture and replay with PyTorch.

Warms a small function up on a side stream, captures it with torch.cuda.graph (the caching
allocator serves allocations made during capture from the graph's private pool, with
cudaMalloc calls inside the capture window), replays it, and keeps the graph alive. Reports
memory_reserved() and, from memory_snapshot(), the reserved bytes of the default pool
(segment_pool_id (0, 0)) and of the private pools: leakscope's pytorch-caching and
pytorch-graph-pool must match them.
"""

import common


def main():
    with common.step("import torch", 120):
        import torch
    with common.step("cuda init", 60):
        torch.cuda.init()
        torch.cuda.set_device(0)
        dev = torch.device("cuda", 0)
    with common.step("capture and replay", 120):
        torch.manual_seed(0)
        x = torch.randn(1024, 1024, device=dev)          # static input
        w = torch.randn(1024, 1024, device=dev) / 32

        def f(inp):
            y = inp @ w                                   # cuBLAS
            z = torch.relu(y) + inp.sin()
            return torch.cat([z, y]) * 2                  # 8 MiB output

        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                f(x)
        torch.cuda.current_stream().wait_stream(s)
        torch.cuda.synchronize()

        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = f(x)
        sums = []
        for i in range(5):
            x.mul_(0.5)
            g.replay()
            sums.append(round(float(out.sum().item()), 1))
        torch.cuda.synchronize()
        pool_id = None
        try:
            pool_id = [int(v) for v in g.pool()]
        except Exception:  # noqa: BLE001 - only a label
            pass
        common.keep(g, x, w, out)
    figures = common.torch_figures(torch)
    figures["snapshot_pool_bytes"] = common.torch_snapshot_pools(torch)
    figures["graph_pool_id"] = pool_id
    figures["captures_made"] = 1
    figures["replays"] = len(sums)
    common.say("replay sums %s" % sums)
    common.say("memory_reserved %d" % figures["reserved"])
    common.say("pools in snapshot: %s" % sorted(figures["snapshot_pool_bytes"]))
    common.emit("torch-graph", figures)


if __name__ == "__main__":
    main()
