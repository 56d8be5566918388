"""Stand-in of ``torch.cuda``: lazy initialization (with ``_lazy_call``'s queue, as PyTorch
runs it), devices and streams, CUDA graphs and pools, the memory statistics."""

import contextlib
import threading

import torch
from torch import _C
from torch._C import _allocator
from torch.cuda import _gpu_trace  # noqa: F401
from torch.cuda import memory
from torch.cuda.memory import (  # noqa: F401
    CUDAPluggableAllocator, MemPool, empty_cache, memory_allocated, memory_reserved,
    memory_snapshot, use_mem_pool)

_initialized = False
_queued_calls = []
_tls = threading.local()
_initialization_lock = threading.Lock()


def is_initialized():
    return _initialized


def is_available():
    return True


def _lazy_call(callable, **kwargs):
    if is_initialized() or hasattr(_tls, "is_initializing"):
        callable()
    else:
        _queued_calls.append(callable)


def _lazy_init():
    global _initialized
    if is_initialized() or hasattr(_tls, "is_initializing"):
        return
    with _initialization_lock:
        if is_initialized():
            return
        _tls.is_initializing = True
        try:
            for call in _queued_calls:
                call()
        finally:
            del _tls.is_initializing
        _initialized = True


def init():
    _lazy_init()


def get_allocator_backend():
    return "native"


def current_device():
    return _allocator.current_device()


def set_device(device):
    _allocator.set_device(_C._device_index(device))


def device_count():
    return 2


def synchronize(device=None):
    _allocator.synchronize()


class Stream:
    _next = [0x5A5A0000]

    def __init__(self, device=None):
        self.cuda_stream = Stream._next[0]
        Stream._next[0] += 0x100


@contextlib.contextmanager
def stream(s):
    before = _allocator.current_stream()
    _allocator.set_stream(s.cuda_stream)
    try:
        yield
    finally:
        _allocator.set_stream(before)


class CUDAGraph(_C._CUDAGraph):
    pass


def graph_pool_handle():
    return _allocator.new_pool_id(True)


@contextlib.contextmanager
def graph(cuda_graph, pool=None):
    cuda_graph.capture_begin(pool)
    try:
        yield
    finally:
        cuda_graph.capture_end()
