/*
 * A CUDAPluggableAllocator for torch.cuda.MemPool on CUDA's virtual memory management API,
 * as vLLM's cumem allocator does it (csrc/cumem_allocator.cpp): every allocation reserves an
 * address range, creates a physical allocation, maps it and grants access; every free unmaps,
 * releases and frees the range. Linked with -lcuda, so its driver calls go through the PLT
 * (leakscope's exported cuMemCreate/cuMemMap/... interpose them).
 *
 * The GPU check reads what the allocator holds through the exported counters below (ctypes)
 * and compares them with leakscope's pool `pytorch-mempool-pluggable`.
 *
 * Build: gcc -O2 -g -shared -fPIC cumem_alloc.c -I<cuda>/include -L<cuda>/lib64/stubs -lcuda
 */
#include <cuda.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

/* What the allocator holds now (bytes are the granularity-rounded sizes it mapped). */
unsigned long long cumem_handle_bytes = 0;   /* live cuMemCreate handles */
unsigned long long cumem_reserved_bytes = 0; /* live cuMemAddressReserve ranges */
unsigned long long cumem_mapped_bytes = 0;   /* live cuMemMap mappings */
unsigned long long cumem_live = 0;           /* live allocations */
/* Calls so far. */
unsigned long long cumem_mallocs = 0;
unsigned long long cumem_frees = 0;
unsigned long long cumem_errors = 0;

struct entry {
    CUdeviceptr ptr;
    size_t size;
    CUmemGenericAllocationHandle handle;
    struct entry *next;
};

static struct entry *entries = NULL;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int failed(CUresult r, const char *what) {
    if (r == CUDA_SUCCESS) return 0;
    const char *name = NULL;
    cuGetErrorName(r, &name);
    fprintf(stderr, "cumem_alloc: %s failed: %s (%d)\n", what, name ? name : "?", (int)r);
    __atomic_add_fetch(&cumem_errors, 1, __ATOMIC_SEQ_CST);
    return 1;
}

/* Makes sure a context is current (PyTorch has made one; a fresh thread may have none). */
static int ensure_context(int device) {
    CUcontext ctx = NULL;
    if (failed(cuCtxGetCurrent(&ctx), "cuCtxGetCurrent")) return 1;
    if (ctx) return 0;
    CUdevice dev;
    if (failed(cuDeviceGet(&dev, device), "cuDeviceGet")) return 1;
    if (failed(cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain")) return 1;
    return failed(cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
}

void *my_malloc(ssize_t size, int device, void *stream) {
    (void)stream;
    __atomic_add_fetch(&cumem_mallocs, 1, __ATOMIC_SEQ_CST);
    if (size <= 0 || ensure_context(device)) return NULL;

    CUmemAllocationProp prop = {0};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = device;
    size_t gran = 0;
    if (failed(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM),
               "cuMemGetAllocationGranularity"))
        return NULL;
    if (gran == 0) gran = 2u << 20;
    size_t bytes = ((size_t)size + gran - 1) / gran * gran;

    CUdeviceptr ptr = 0;
    if (failed(cuMemAddressReserve(&ptr, bytes, gran, 0, 0), "cuMemAddressReserve")) return NULL;
    CUmemGenericAllocationHandle handle;
    if (failed(cuMemCreate(&handle, bytes, &prop, 0), "cuMemCreate")) {
        cuMemAddressFree(ptr, bytes);
        return NULL;
    }
    if (failed(cuMemMap(ptr, bytes, 0, handle, 0), "cuMemMap")) {
        cuMemRelease(handle);
        cuMemAddressFree(ptr, bytes);
        return NULL;
    }
    CUmemAccessDesc access = {0};
    access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    access.location.id = device;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    if (failed(cuMemSetAccess(ptr, bytes, &access, 1), "cuMemSetAccess")) {
        cuMemUnmap(ptr, bytes);
        cuMemRelease(handle);
        cuMemAddressFree(ptr, bytes);
        return NULL;
    }

    struct entry *e = malloc(sizeof *e);
    if (!e) return NULL;
    e->ptr = ptr;
    e->size = bytes;
    e->handle = handle;
    pthread_mutex_lock(&lock);
    e->next = entries;
    entries = e;
    cumem_handle_bytes += bytes;
    cumem_reserved_bytes += bytes;
    cumem_mapped_bytes += bytes;
    cumem_live += 1;
    pthread_mutex_unlock(&lock);
    return (void *)ptr;
}

void my_free(void *p, ssize_t size, int device, void *stream) {
    (void)size;
    (void)device;
    (void)stream;
    __atomic_add_fetch(&cumem_frees, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&lock);
    struct entry **at = &entries;
    while (*at && (*at)->ptr != (CUdeviceptr)p) at = &(*at)->next;
    struct entry *e = *at;
    if (e) *at = e->next;
    pthread_mutex_unlock(&lock);
    if (!e) {
        fprintf(stderr, "cumem_alloc: free of unknown pointer %p\n", p);
        __atomic_add_fetch(&cumem_errors, 1, __ATOMIC_SEQ_CST);
        return;
    }
    failed(cuMemUnmap(e->ptr, e->size), "cuMemUnmap");
    failed(cuMemRelease(e->handle), "cuMemRelease");
    failed(cuMemAddressFree(e->ptr, e->size), "cuMemAddressFree");
    pthread_mutex_lock(&lock);
    cumem_handle_bytes -= e->size;
    cumem_reserved_bytes -= e->size;
    cumem_mapped_bytes -= e->size;
    cumem_live -= 1;
    pthread_mutex_unlock(&lock);
    free(e);
}
