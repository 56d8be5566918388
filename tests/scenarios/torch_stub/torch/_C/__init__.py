"""Stand-in of the native ``torch._C``: tensor factories, the allocator's entry points, the
GPU-trace switch and the pool classes. In PyTorch these are C++; leakscope trims Python
frames under ``torch/_C/`` from block stacks as it trims ``libc10_cuda``'s native frames."""

from torch._C import _allocator

_trace_active = False


def _activate_gpu_trace():
    global _trace_active
    _trace_active = True
    _allocator.trace(True)


class Tensor:
    """``nbytes`` bytes at ``data_ptr()`` on ``device``; gives its block back when dropped."""

    def __init__(self, ptr, nbytes, device):
        self._ptr = ptr
        self.nbytes = nbytes
        self.device = device

    def data_ptr(self):
        return self._ptr

    def record_stream(self, stream):
        """The block stays in use by ``stream`` until ``torch.cuda.synchronize()``."""
        _allocator.record_stream(self._ptr, stream.cuda_stream)

    def __del__(self):
        try:
            _allocator.free(self._ptr)
        except Exception:  # noqa: BLE001 - interpreter teardown
            pass


def _device_index(device):
    if device is None or device == "cuda":
        return _allocator.current_device()
    if isinstance(device, int):
        return device
    text = str(device)
    if not text.startswith("cuda"):
        raise RuntimeError("the stand-in torch only makes CUDA tensors")
    return int(text.split(":", 1)[1]) if ":" in text else _allocator.current_device()


def empty(nbytes, device="cuda"):
    """A tensor of ``nbytes`` bytes (PyTorch's factories initialize CUDA lazily)."""
    import torch.cuda

    torch.cuda._lazy_init()
    index = _device_index(device)
    return Tensor(_allocator.malloc(index, int(nbytes)), int(nbytes), index)


class _MemPool:
    """``c10::cuda::MemPool``: user-created pools get ``(0, uid)``."""

    def __init__(self, allocator=None, is_user_created=True, use_on_oom=False, no_split=False):
        self._id = _allocator.new_pool_id(is_user_created)
        self._allocator = allocator

    @property
    def id(self):
        return self._id


class _CUDAGraph:
    """``at::cuda::CUDAGraph``: a capture without a pool gets its own ``(uuid, 0)``."""

    def __init__(self):
        self._pool = None

    def capture_begin(self, pool=None):
        self._pool = tuple(pool) if pool else _allocator.new_pool_id(False)
        _allocator.begin_pool(self._pool)

    def capture_end(self):
        _allocator.end_pool()

    def pool(self):
        return self._pool
