"""Stand-in of ``torch.cuda._gpu_trace``: the registries PyTorch fires from C++."""

from torch._utils import CallbackRegistry

MemoryAllocationCallbacks = CallbackRegistry("CUDA memory allocation")
MemoryDeallocationCallbacks = CallbackRegistry("CUDA memory deallocation")


def register_callback_for_memory_allocation(cb):
    MemoryAllocationCallbacks.add_callback(cb)


def register_callback_for_memory_deallocation(cb):
    MemoryDeallocationCallbacks.add_callback(cb)
