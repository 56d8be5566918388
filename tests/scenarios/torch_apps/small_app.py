"""Scenario for tests/torch_blocks.rs: one planted tensor leak with the stand-in torch, run
with a program's own sitecustomize on PYTHONPATH (user_site/), which must still run."""

import ctypes

import torch

leak = torch.empty(10_000)  # LEAK-SMALL
ctypes.pythonapi.Py_IncRef(ctypes.py_object(leak))
print("allocated %d reserved %d" % (torch.cuda.memory_allocated(), torch.cuda.memory_reserved()))
