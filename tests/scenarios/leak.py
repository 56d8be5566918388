"""Scenario 6: a Python program with planted leaks: 100 blocks of 4096 bytes from libc's
malloc called through ctypes, and 50 bytearrays of 100,000 bytes whose reference counts
are raised once too often (as a buggy extension would), so that not even interpreter
shutdown frees them."""

import ctypes

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]

blocks = [libc.malloc(4096) for _ in range(100)]
arrays = [bytearray(100_000) for _ in range(50)]
for a in arrays:
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(a))
print(f"leak.py kept {len(blocks)} blocks and {len(arrays)} bytearrays")
