"""Allocations at known places of Python code, for tests/python_shim.rs.

usage: frames.py MODE TRUTH.json [LIBNATIVE.so]

  frames    allocations in grow(), native() (ctypes malloc, GIL released), leaf() run by
            map() (a second eval loop), recurse() 300 calls deep, worker() in a
            threading.Thread and a native pthread (no Python state, from LIBNATIVE.so);
            writes the ground truth (code objects'
            names, files, bytecode lengths, instruction-to-line maps, the lines that
            allocate) to TRUTH.json
  shutdown  daemon threads deep in Python recursion allocating through ctypes (and inside
            a native loop that never returns) while the main thread exits with status 3
  churn     1,000,000 bytearrays of 600 bytes (each one a malloc and a free), for timing
            (the loop's wall and thread CPU time go to stderr)
"""
import ctypes
import dis
import json
import sys
import threading
import time

GROW = 1_234_567      # bytearray(n) mallocs n + 1
NATIVE = 777_777      # libc.malloc(n) through ctypes
LEAF = 345_679        # bytearray in leaf(), called by map()
WORKER = 555_555      # bytearray in a threading.Thread
NATIVE_THREAD = 424_242  # malloc on a pthread without Python
RECURSE = 232_323     # bytearray 300 Python calls deep

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

kept = []


def grow():
    for _ in range(3):
        kept.append(bytearray(GROW))  # ALLOC grow


def native():
    for _ in range(3):
        kept.append(libc.malloc(NATIVE))  # ALLOC native


def leaf(i):
    return bytearray(LEAF)  # ALLOC leaf


def mapped():
    kept.extend(map(leaf, range(3)))


def recurse(n):
    return recurse(n - 1) if n else bytearray(RECURSE)  # ALLOC recurse


def worker():
    for _ in range(3):
        kept.append(bytearray(WORKER))  # ALLOC worker


def truth(funcs):
    src = open(__file__).read().splitlines()
    out = {"minor": sys.version_info[1], "file": __file__, "codes": {}}
    for f in funcs:
        c = f.__code__
        marker = "# ALLOC " + c.co_name
        lines = [i + 1 for i, l in enumerate(src) if l.rstrip().endswith(marker)]
        out["codes"][getattr(c, "co_qualname", c.co_name)] = {
            "filename": c.co_filename,
            "first_line": c.co_firstlineno,
            "units": len(c.co_code) // 2,
            "line_starts": [[off // 2, line] for off, line in dis.findlinestarts(c)
                            if line is not None],
            "alloc_line": lines[0] if lines else None,
        }
    return out


def frames(path, lib):
    grow()
    native()
    mapped()
    kept.append(recurse(300))
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    nat = ctypes.CDLL(lib)
    nat.native_thread_alloc.restype = ctypes.c_void_p
    nat.native_thread_alloc.argtypes = [ctypes.c_size_t, ctypes.c_int]
    kept.append(nat.native_thread_alloc(NATIVE_THREAD, 3))
    with open(path, "w") as f:
        json.dump(truth([grow, native, leaf, mapped, recurse, worker, main]), f)
    print("frames done")


def deep(n, fn):
    return deep(n - 1, fn) if n else fn()


def churn_ctypes():
    while True:
        libc.free(libc.malloc(4096))


def shutdown(lib):
    nat = ctypes.CDLL(lib)
    nat.spin_alloc.argtypes = [ctypes.c_size_t]
    for i in range(4):
        fn = churn_ctypes if i % 2 else (lambda: nat.spin_alloc(1000))
        threading.Thread(target=deep, args=(30, fn), daemon=True).start()
    time.sleep(0.3)
    print("shutdown: main thread exits")
    sys.exit(3)


def churn():
    t, cpu = time.perf_counter(), time.thread_time()
    for _ in range(1_000_000):
        bytearray(600)
    print(f"churn: {time.perf_counter() - t:.3f} s wall, {time.thread_time() - cpu:.3f} s cpu",
          file=sys.stderr)
    print("churn done")


def main():
    mode = sys.argv[1]
    if mode == "frames":
        frames(sys.argv[2], sys.argv[3])
    elif mode == "shutdown":
        shutdown(sys.argv[3])
    else:
        churn()


if __name__ == "__main__":
    main()
