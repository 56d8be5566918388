/* GPU scenario f, the program: linked against the driver stand-in, run with another
 * interposer of cuMemAlloc_v2 (interposer.c) in LD_PRELOAD.
 *
 *   interposed_alloc  cuMemAlloc_v2 3 x 300,000 by symbol (through both interposers), one
 *                     freed with cuMemFree_v2                        -> 600,000 on device 0
 *   resolved_alloc    cuGetProcAddress_v2("cuMemAlloc", 12000): 50,000 on device 0 */
#include "fake_cuda.h"

#include <stdio.h>
#include <stdlib.h>

#define NOIPA __attribute__((noipa))
#define CHECK(call) check((call), #call, __LINE__)

static void check(int r, const char *what, int line) {
    if (r != 0) {
        printf("FAILED line %d: %s = %d\n", line, what, r);
        exit(1);
    }
}

CUdeviceptr volatile kept[4];

NOIPA void interposed_alloc(void) {
    CUdeviceptr d[3];
    for (int i = 0; i < 3; i++) {
        CHECK(cuMemAlloc_v2(&d[i], 300000));
        printf("interposed 0x%llx\n", d[i]);
    }
    CHECK(cuMemFree_v2(d[0]));
    kept[0] = d[1];
    kept[1] = d[2];
}

NOIPA void resolved_alloc(void) {
    CUresult (*fn)(CUdeviceptr *, size_t) = NULL;
    CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    CHECK(cuGetProcAddress_v2("cuMemAlloc", (void **)&fn, 12000, 0, &st));
    CUdeviceptr d = 0;
    CHECK(fn(&d, 50000));
    printf("resolved 0x%llx\n", d);
    kept[2] = d;
}

int main(void) {
    CHECK(cuInit(0));
    interposed_alloc();
    resolved_alloc();
    printf("interposed_app done\n");
    return 0;
}
