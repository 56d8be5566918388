"""GPU scenario e: Python reaching the runtime and the driver only through ctypes, that is
through dlopen + dlsym(handle, name): never through a symbol a preloaded library could
interpose. Usage: cuda_ctypes.py LIBDIR (where libcudart.so.13 is).

  libcudart cudaMalloc      4 x 111,111, one freed with cudaFree -> 333,333 on device 0
  libcudart cudaMallocHost  54,321 pinned
  libcuda   cuMemAlloc_v2   2 x 222,222 after cudaSetDevice(1)   -> 444,444 on device 1
  libcuda   cuMemAllocManaged 77,777 on device 1
  libcuda   cuMemAlloc / cuMemFree: the LEGACY 32-bit symbols (what a ctypes user gets by
            asking for "cuMemAlloc"): 4,096 allocated and freed, must keep working
"""
import ctypes
import sys

libdir = sys.argv[1]
rt = ctypes.CDLL(libdir + "/libcudart.so.13")
kept = []

p = ctypes.c_void_p()
for _ in range(4):
    assert rt.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(111111)) == 0
    kept.append(p.value)
assert rt.cudaFree(ctypes.c_void_p(kept.pop(1))) == 0

h = ctypes.c_void_p()
assert rt.cudaMallocHost(ctypes.byref(h), ctypes.c_size_t(54321)) == 0
ctypes.memset(h, 7, 54321)

drv = ctypes.CDLL("libcuda.so.1")
assert rt.cudaSetDevice(1) == 0
d = ctypes.c_ulonglong()
for _ in range(2):
    assert drv.cuMemAlloc_v2(ctypes.byref(d), ctypes.c_size_t(222222)) == 0
    kept.append(d.value)
assert drv.cuMemAllocManaged(ctypes.byref(d), ctypes.c_size_t(77777), ctypes.c_uint(1)) == 0
kept.append(d.value)
assert rt.cudaSetDevice(0) == 0

legacy = ctypes.c_uint(0)
assert drv.cuMemAlloc(ctypes.byref(legacy), ctypes.c_uint(4096)) == 0
print("legacy", hex(legacy.value))
assert drv.cuMemFree(legacy) == 0

print(" ".join(hex(a) for a in kept))
print("cuda_ctypes done")
