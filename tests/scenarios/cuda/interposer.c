/* GPU scenario f, the other interposer: an LD_PRELOAD library of someone else's (placed after
 * leakscope's shim in LD_PRELOAD) that wraps the exported cuMemAlloc_v2, finds the real one
 * with dlsym(RTLD_NEXT, ...) and counts the calls. It must still find the driver's function
 * (not itself, not loop) with leakscope's shim in front of it. At exit it prints
 * "INTERPOSER cuMemAlloc_v2 calls=N" on stderr. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef int (*alloc_fn)(unsigned long long *, size_t);

static int calls;

__attribute__((visibility("default"))) int cuMemAlloc_v2(unsigned long long *dptr, size_t size) {
    static alloc_fn next;
    if (!next) {
        next = (alloc_fn)dlsym(RTLD_NEXT, "cuMemAlloc_v2");
        if (!next || next == cuMemAlloc_v2) {
            static const char msg[] = "INTERPOSER cannot find the next cuMemAlloc_v2\n";
            (void)!write(2, msg, sizeof msg - 1);
            abort();
        }
    }
    __atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED);
    return next(dptr, size);
}

__attribute__((destructor)) static void report(void) {
    char buf[64];
    int n = snprintf(buf, sizeof buf, "INTERPOSER cuMemAlloc_v2 calls=%d\n", calls);
    (void)!write(2, buf, (size_t)n);
}
