/* GPU scenario b: a program linked against the driver (libcuda.so.1 stand-in) that manages
 * memory the way vLLM's cumem allocator (csrc/cumem_allocator.cpp) does: reserve addresses,
 * cuMemCreate a physical allocation, cuMemMap it, cuMemSetAccess; to free ("sleep"):
 * cuMemUnmap, cuMemRelease, cuMemAddressFree. All through the exported driver symbols.
 *
 *   alloc_weights         3 handles on device 0 (4, 6 and 2 MiB); the 2 MiB one is freed
 *                         -> 10 MiB in 2 handles, each mapped in a reservation of its size
 *   leak_unmapped_handle  12 MiB handle with location device 1, created while device 0 is
 *                         current (its device comes from the properties), never mapped
 *   retain_and_release    a cuMemRetainAllocationHandle + cuMemRelease pair on the kept 4 MiB
 *                         weight block (it must stay live: one release per create or retain)
 *   alloc_kv_cache        2 handles of 8 MiB on device 1 (device 1 current); one is freed,
 *                         with a retain + release pair before its unmap/release
 *                         -> 8 MiB in 1 handle
 *   retain_kept_kv        cuMemRetainAllocationHandle on the kept kv block, never released:
 *                         a second reference to the same 8 MiB, not more memory
 *   import_peer_buffer    cuMemImportFromShareableHandle of a 2 MiB allocation of "another
 *                         process" on device 1, mapped into a 2 MiB reservation and kept
 *   twin_*                handles whose values equal device pointers (cuMemAlloc_v2), each
 *                         space its own namespace: pointer A 1,000,000 kept while handle A
 *                         (2 MiB) is released; handle B (4 MiB) kept while pointer B
 *                         (500,000) is freed, all on device 0
 *
 * Outstanding: device 0 10 MiB (2 owned handles) + 1,000,000 (1 pointer) + 4 MiB (1 owned
 * handle), device 1 20 MiB (2 owned handles);
 * mapped 10 MiB on each device; reserved 10 MiB on each device; 1 imported handle and 1
 * extra retained reference on device 1. stdout: every address and handle value. */
#include "fake_cuda.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define NOIPA __attribute__((noipa))
#define CHECK(call) check((call), #call, __LINE__)
#define MiB (1024ull * 1024ull)

static void check(int r, const char *what, int line) {
    if (r != 0) {
        printf("FAILED line %d: %s = %d\n", line, what, r);
        exit(1);
    }
}

struct block {
    CUdeviceptr va;
    size_t size;
    CUmemGenericAllocationHandle handle;
};

NOIPA CUdeviceptr reserve_range(size_t size) {
    CUdeviceptr va = 0;
    CHECK(cuMemAddressReserve(&va, size, 0, 0, 0));
    return va;
}

NOIPA CUmemGenericAllocationHandle create_handle(size_t size, int device) {
    CUmemAllocationProp prop = {0};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = device;
    size_t gran = 0;
    CHECK(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
    if (size % gran != 0) {
        printf("size %zu is not a multiple of the granularity %zu\n", size, gran);
        exit(1);
    }
    CUmemGenericAllocationHandle h = 0;
    CHECK(cuMemCreate(&h, size, &prop, 0));
    return h;
}

NOIPA void map_handle(CUdeviceptr va, size_t size, CUmemGenericAllocationHandle h, int device) {
    CHECK(cuMemMap(va, size, 0, h, 0));
    CUmemAccessDesc access = {{CU_MEM_LOCATION_TYPE_DEVICE, device},
                              CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    CHECK(cuMemSetAccess(va, size, &access, 1));
}

/* create_and_map in cumem_allocator.cpp */
NOIPA struct block cumem_alloc(size_t size, int device) {
    struct block b;
    b.size = size;
    b.va = reserve_range(size);
    b.handle = create_handle(size, device);
    map_handle(b.va, size, b.handle, device);
    printf("block va 0x%llx size %zu handle 0x%llx device %d\n", b.va, size, b.handle, device);
    return b;
}

/* unmap_and_release in cumem_allocator.cpp */
NOIPA void cumem_free(struct block b) {
    CHECK(cuMemUnmap(b.va, b.size));
    CHECK(cuMemRelease(b.handle));
    CHECK(cuMemAddressFree(b.va, b.size));
}

NOIPA void retain_and_release(struct block b) {
    CUmemGenericAllocationHandle h = 0;
    CHECK(cuMemRetainAllocationHandle(&h, (void *)(uintptr_t)(b.va + 4096)));
    printf("retained 0x%llx (same handle: %d)\n", h, h == b.handle);
    CHECK(cuMemRelease(h));
}

struct block weights[3], kv[2], peer;

NOIPA void alloc_weights(void) {
    weights[0] = cumem_alloc(4 * MiB, 0);
    weights[1] = cumem_alloc(6 * MiB, 0);
    weights[2] = cumem_alloc(2 * MiB, 0);
}

NOIPA void alloc_kv_cache(void) {
    kv[0] = cumem_alloc(8 * MiB, 1);
    kv[1] = cumem_alloc(8 * MiB, 1);
}

CUmemGenericAllocationHandle lonely;

NOIPA void leak_unmapped_handle(void) {
    lonely = create_handle(12 * MiB, 1);
    printf("lonely handle 0x%llx\n", lonely);
}

CUmemGenericAllocationHandle extra_ref;

NOIPA void retain_kept_kv(void) {
    CHECK(cuMemRetainAllocationHandle(&extra_ref, (void *)(uintptr_t)kv[0].va));
    printf("retained kv 0x%llx (same handle: %d)\n", extra_ref, extra_ref == kv[0].handle);
}

NOIPA void import_peer_buffer(void) {
    int fd = fake_foreign_shareable(1, 2 * MiB);
    CUmemGenericAllocationHandle h = 0;
    CHECK(cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fd,
                                         CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
    CUmemAllocationProp prop;
    CHECK(cuMemGetAllocationPropertiesFromHandle(&prop, h));
    peer.size = 2 * MiB;
    peer.handle = h;
    peer.va = reserve_range(peer.size);
    map_handle(peer.va, peer.size, h, prop.location.id);
    printf("imported 0x%llx on device %d at 0x%llx\n", h, prop.location.id, peer.va);
}

NOIPA CUdeviceptr twin_pointer_kept(void) {
    CUdeviceptr a = 0;
    CHECK(cuMemAlloc_v2(&a, 1000000));
    return a;
}

NOIPA void twin_handle_released(CUdeviceptr value) {
    fake_next_handle(value);
    CUmemGenericAllocationHandle h = create_handle(2 * MiB, 0);
    printf("twin handle 0x%llx == pointer 0x%llx\n", h, value);
    CHECK(cuMemRelease(h));
}

NOIPA CUdeviceptr twin_pointer_freed(void) {
    CUdeviceptr b = 0;
    CHECK(cuMemAlloc_v2(&b, 500000));
    return b;
}

CUmemGenericAllocationHandle twin_kept;

NOIPA void twin_handle_kept(CUdeviceptr value) {
    fake_next_handle(value);
    twin_kept = create_handle(4 * MiB, 0);
    printf("twin handle 0x%llx == pointer 0x%llx\n", twin_kept, value);
}

CUdeviceptr twin_ptr;

NOIPA void namespace_twins(void) {
    twin_ptr = twin_pointer_kept();
    twin_handle_released(twin_ptr);
    CUdeviceptr b = twin_pointer_freed();
    twin_handle_kept(b);
    CHECK(cuMemFree_v2(b));
}

static void set_device(int dev) {
    CUcontext ctx = NULL;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
}

int main(void) {
    CHECK(cuInit(0));
    int count = 0;
    CHECK(cuDeviceGetCount(&count));
    printf("devices %d\n", count);
    set_device(0);
    alloc_weights();
    leak_unmapped_handle();
    retain_and_release(weights[0]);
    namespace_twins();
    /* sleep mode for the smallest weight block */
    cumem_free(weights[2]);

    set_device(1);
    alloc_kv_cache();
    retain_and_release(kv[1]);
    cumem_free(kv[1]);
    retain_kept_kv();
    import_peer_buffer();
    set_device(0);
    printf("cumem_app done\n");
    return 0;
}
