"""Scenario 5 (Python): a multiprocessing worker started with the 'spawn' start method
(a fresh interpreter, exec'd, tracked through the inherited environment) leaks BLOCKS
blocks of SIZE bytes through ctypes' call of libc's malloc."""

import ctypes
import multiprocessing as mp
import sys

BLOCKS = 37
SIZE = 12345

kept = []


def work(blocks, size):
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    for _ in range(blocks):
        kept.append(libc.malloc(size))
    sys.stdout.write(f"worker kept {len(kept)}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    mp.set_start_method("spawn")
    p = mp.Process(target=work, args=(BLOCKS, SIZE))
    p.start()
    p.join()
    print(f"spawn done, worker exit {p.exitcode}")
