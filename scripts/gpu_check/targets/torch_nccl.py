"""GPU-check target: a single-rank NCCL all-reduce through torch.distributed.

init_process_group("nccl", rank=0, world_size=1) over a TCP store on a free local port, one
all_reduce (the communicator is created lazily there), destroy_process_group. NCCL's own
device memory (cuMemCreate/cuMemMap since NCCL 2.19, through its static runtime's
cuGetProcAddress) must show in leakscope's pool ``nccl``. NVML readings before, during and
after the communicator's life are printed as a rough reference.

Every step runs under a watchdog (common.step): on this single-GPU machine nothing may hang.
The driver sets NCCL_NVLS_ENABLE=0 and no other NCCL_* variable.
"""

import datetime
import os
import socket

import common


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nccl_version():
    try:
        import torch.cuda.nccl as nccl
        v = nccl.version()
    except Exception:  # noqa: BLE001 - a label only
        return None
    return ".".join(str(p) for p in v) if isinstance(v, (tuple, list)) else str(v)


def main():
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    with common.step("import torch", 120):
        import torch
        import torch.distributed as dist
    with common.step("cuda init", 60):
        torch.cuda.init()
        torch.cuda.set_device(0)
        x = torch.ones(1 << 20, device="cuda")          # 4 MiB; also creates the context
        torch.cuda.synchronize()
    nv_before = common.nvml_process_used()
    version = nccl_version()
    with common.step("init_process_group", 90):
        dist.init_process_group("nccl", init_method="tcp://127.0.0.1:%d" % free_port(),
                                rank=0, world_size=1, timeout=datetime.timedelta(seconds=60))
    with common.step("all_reduce", 90):
        dist.all_reduce(x)
        torch.cuda.synchronize()
        ok = bool((x == 1).all().item())
    nv_during = common.nvml_process_used()
    with common.step("destroy_process_group", 90):
        dist.destroy_process_group()
        torch.cuda.synchronize()
    common.keep(x)
    nv_after = common.nvml_process_used()
    figures = common.torch_figures(torch)
    figures.update({
        "nccl_version": version, "allreduce_ok": ok,
        "nvml_before": nv_before.get("used_bytes"), "nvml_during": nv_during.get("used_bytes"),
        "nvml_after": nv_after.get("used_bytes"),
    })
    common.say("nccl %s all_reduce ok: %s" % (version, ok))
    common.emit("torch-nccl", figures, nvml=nv_after)


if __name__ == "__main__":
    main()
