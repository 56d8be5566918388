"""Scenario for tests/torch_blocks.rs: a Python program that never imports torch. Under
leakscope nothing of the PyTorch helper may run: no thread, no torch, same output."""

import sys
import threading

data = [bytearray(1000) for _ in range(10)]
print("threads %d" % threading.active_count())
print("torch imported: %s" % ("torch" in sys.modules))
