"""Stand-in of ``torch.cuda.memory``: statistics, the snapshot, ``MemPool``s."""

import contextlib

from torch import _C
from torch._C import _allocator


def _index(device):
    return _allocator.current_device() if device is None else _C._device_index(device)


def memory_allocated(device=None):
    return _allocator.allocated(_index(device))


def memory_reserved(device=None):
    return _allocator.reserved(_index(device))


def empty_cache():
    _allocator.empty_cache()


def _snapshot(device=None, augment_with_fx_traces=False):
    return _allocator.snapshot()


def memory_snapshot(mempool_id=None, include_traces=True):
    return _allocator.snapshot()["segments"]


class CUDAPluggableAllocator:
    """An allocator in a shared library (the stand-in never loads it)."""

    def __init__(self, path_to_so_file, alloc_fn_name, free_fn_name):
        self._allocator = ("pluggable", path_to_so_file, alloc_fn_name, free_fn_name)

    def allocator(self):
        return self._allocator


class MemPool(_C._MemPool):
    def __init__(self, allocator=None, use_on_oom=False, no_split=False):
        super().__init__(allocator, True, use_on_oom, no_split)

    @property
    def id(self):
        return super().id


@contextlib.contextmanager
def use_mem_pool(pool, device=None):
    _allocator.begin_pool(pool.id)
    try:
        yield
    finally:
        _allocator.end_pool()
