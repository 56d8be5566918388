"""Python frames scenario: planted leaks that the report must attribute to their Python
line (each marked with a comment the test searches for), across the modules of a package,
a class method, a `threading.Thread` worker and a ctypes call into libc's malloc; a site
that frees everything it allocates; and a native thread (started by the C library named
on the command line) that allocates with no Python frame at all.

The kept objects get one extra reference each (as a buggy extension would) so that not
even interpreter shutdown frees them. Sizes and counts are the test's ground truth:
`bytearray(n)` allocates n + 1 bytes (a trailing NUL)."""

import ctypes
import sys
import threading

from pkg import store
from pkg.cache import Cache

A_COUNT, A_SIZE = 30, 100_000
B_COUNT, B_SIZE = 20, 70_000
T_COUNT, T_SIZE = 25, 50_000
C_COUNT, C_SIZE = 60, 12_345
CHURN_COUNT, CHURN_SIZE = 200, 30_000
NATIVE_COUNT, NATIVE_SIZE = 15, 23_456

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]


def keep(obj):
    """One reference too many: `obj` survives interpreter shutdown."""
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def worker(count, size, out):
    for _ in range(count):
        out.append(bytearray(size))  # LEAK-T


def malloc_blocks(count, size):
    blocks = []
    for _ in range(count):
        blocks.append(libc.malloc(size))  # LEAK-C
    return blocks


def churn(count, size):
    total = 0
    for _ in range(count):
        buf = bytearray(size)  # CHURN
        total += len(buf)
        del buf
    return total


def main():
    native = ctypes.CDLL(sys.argv[1])
    native.leak_in_native_thread.argtypes = [ctypes.c_int, ctypes.c_size_t]
    native.leak_in_native_thread.restype = ctypes.c_int

    store.remember(A_COUNT, A_SIZE)  # CALL-A
    keep(store.kept())

    cache = Cache()
    for key in range(B_COUNT):
        cache.add(key, B_SIZE)
    keep(cache.items)

    out = []
    thread = threading.Thread(target=worker, args=(T_COUNT, T_SIZE, out))
    thread.start()
    thread.join()
    keep(out)

    blocks = malloc_blocks(C_COUNT, C_SIZE)
    churned = churn(CHURN_COUNT, CHURN_SIZE)
    failed = native.leak_in_native_thread(NATIVE_COUNT, NATIVE_SIZE)
    print(
        f"kept {len(store.kept())} + {len(cache.items)} + {len(out)} bytearrays, "
        f"{len(blocks)} blocks; churned {churned} bytes; native thread failed: {failed}"
    )


main()
