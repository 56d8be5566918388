"""A stand-in ``torch`` package for leakscope's tests (no GPU, no PyTorch): just the surface
leakscope's PyTorch helper uses, over a small caching allocator written in Python
(``torch/_C/_allocator.py``, standing in for ``libc10_cuda``) that fires PyTorch's GPU-trace
memory callbacks like the real one. Tensors are byte buffers that exist only as addresses.

    torch.empty(nbytes, device="cuda:0")    a tensor of ``nbytes`` bytes (freed when dropped)
    torch.cuda.*                            see torch/cuda/__init__.py
"""

from torch._C import Tensor, empty  # noqa: F401  (tensor factories are native in PyTorch)
from torch import cuda  # noqa: F401

__version__ = "0.0.0+leakscope.stub"
