/* GPU scenario d: a program that uses only the libnccl.so.2 stand-in (fake_nccl.c), whose
 * private static runtime reaches the driver through cuGetProcAddress_v2 pointers. It links
 * neither libcudart nor libcuda.
 *
 *   3 buffers of 1,000,000 from NCCL's private cudaMalloc, one freed  -> 2,000,000
 *   cuMem buffers of 4 MiB (kept) and 6 MiB (freed by NCCL's retain/release/unmap/release/
 *   address-free sequence)                                             -> 4 MiB
 * All on device 0, all pool nccl: 6,194,304 bytes. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

int ncclFakeAllocBuffers(int n, size_t bytes, void **out);
int ncclFakeFreeBuffer(void *p);
int ncclFakeCumemAlloc(size_t bytes, unsigned long long *ptr);
int ncclFakeCumemFree(unsigned long long ptr, size_t bytes);

#define CHECK(call) check((call), #call, __LINE__)

static void check(int r, const char *what, int line) {
    if (r != 0) {
        printf("FAILED line %d: %s = %d\n", line, what, r);
        exit(1);
    }
}

void *volatile buffers[3];

int main(void) {
    void *b[3];
    CHECK(ncclFakeAllocBuffers(3, 1000000, b));
    for (int i = 0; i < 3; i++)
        printf("buffer %p\n", b[i]);
    CHECK(ncclFakeFreeBuffer(b[1]));
    buffers[0] = b[0];
    buffers[2] = b[2];
    unsigned long long kept = 0, gone = 0;
    CHECK(ncclFakeCumemAlloc(4u << 20, &kept));
    CHECK(ncclFakeCumemAlloc(6u << 20, &gone));
    printf("cumem 0x%llx 0x%llx\n", kept, gone);
    CHECK(ncclFakeCumemFree(gone, 6u << 20));
    printf("nccl_app done\n");
    return 0;
}
