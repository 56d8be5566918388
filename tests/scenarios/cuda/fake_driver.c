/* Stand-in for NVIDIA's driver library, built as libcuda.so.1 (soname libcuda.so.1).
 *
 * Device and managed memory are not memory: they are made-up addresses from per-device
 * counters (device 0 from 0x7e0000000000, device 1 64 GiB above), kept in a table so that
 * every free is checked; a freed block's address is handed out again for the next block
 * of the same rounded size on the same device, as a real driver does. Pinned memory
 * (cuMemAllocHost, cuMemHostAlloc) is real host memory from malloc, so that the program may
 * touch it and a tracer must not count it as the program's own heap. Legacy (pre-3.2 ABI)
 * cuMemAlloc hands out 32-bit addresses.
 *
 * cuGetProcAddress[_v2] resolves base names by requested version and stream flags, like the
 * real driver: "cuMemAlloc" at 3020 or above gives cuMemAlloc_v2, below it the legacy
 * function; flag CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM gives the _ptsz variant of
 * the stream-ordered functions. Several names resolve to INTERNAL functions (static, not
 * exported) rather than to the exported symbol of the same name, as the real driver may.
 *
 * Ground truth: at exit (or on fake_driver_report()) the driver prints lines beginning
 * "FAKE-DRIVER " on stderr: outstanding bytes per kind and device, handle counts, mapped /
 * reserved / registered bytes, every stream-ordered pool's reserved and used bytes, and how
 * many times each variant function was entered. */
#define _GNU_SOURCE
#include "fake_cuda.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define INTERNAL static __attribute__((noinline, used))

#define NDEV 2
#define GRANULE (2ull << 20)
#define DEVICE_BASE 0x7e0000000000ull
#define DEVICE_STRIDE 0x1000000000ull
#define MANAGED_BASE 0x7d0000000000ull
#define VA_BASE 0x7c0000000000ull
#define LEGACY_BASE 0x10000000ull
#define DRIVER_VERSION 13000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int initialized;
static int cur_dev;

/* ------------------------------------------------------------------ call counters */

#define COUNTERS(X)                                                                        \
    X(cuMemAlloc) X(cuMemAlloc_v2) X(cuMemFree) X(cuMemFree_v2) X(cuMemAllocPitch)          \
    X(cuMemAllocPitch_v2) X(cuMemAllocManaged) X(cuMemAllocAsync) X(cuMemAllocAsync_ptsz)   \
    X(cuMemFreeAsync) X(cuMemFreeAsync_ptsz) X(cuMemAllocFromPoolAsync)                     \
    X(cuMemAllocFromPoolAsync_ptsz) X(cuMemAllocHost) X(cuMemAllocHost_v2) X(cuMemHostAlloc) \
    X(cuMemFreeHost) X(cuMemHostRegister) X(cuMemHostRegister_v2) X(cuMemHostUnregister)    \
    X(cuMemCreate) X(cuMemRelease) X(cuMemMap) X(cuMemUnmap) X(cuMemAddressReserve)         \
    X(cuMemAddressFree) X(cuMemRetainAllocationHandle) X(cuMemImportFromShareableHandle)    \
    X(cuMemSetAccess) X(cuMemPoolCreate) X(cuMemPoolDestroy) X(cuMemPoolTrimTo)             \
    X(cuStreamBeginCapture_v2) X(cuStreamEndCapture) X(cuGetProcAddress)                    \
    X(cuGetProcAddress_v2) X(cuGetExportTable)

enum {
#define X(n) C_##n,
    COUNTERS(X)
#undef X
        C_COUNT
};

static const char *const counter_names[C_COUNT] = {
#define X(n) #n,
    COUNTERS(X)
#undef X
};

static unsigned long counters[C_COUNT];
static unsigned long bad_calls; /* frees/unmaps of unknown things, bad arguments */

#define COUNT(n) __atomic_fetch_add(&counters[C_##n], 1, __ATOMIC_RELAXED)

/* ------------------------------------------------------------------ tables */

enum kind { K_DEVICE = 1, K_MANAGED = 2, K_PINNED = 3, K_LEGACY = 4 };

struct block {
    int live;
    int kind;
    int dev;
    unsigned long long addr;
    size_t size;   /* bytes accounted (asked for; pitch x height for pitched) */
    size_t span;   /* bytes of address space it occupies */
    int pool;      /* index into pools, -1 if not stream-ordered */
};

struct handle {
    int live;
    int imported;
    int dev;
    int refs;
    unsigned long long value;
    size_t size;
};

struct mapping {
    int live;
    unsigned long long va;
    size_t size;
    int handle;
};

struct reservation {
    int live;
    int dev;
    unsigned long long va;
    size_t size;
};

struct registration {
    int live;
    void *ptr;
    size_t size;
};

struct pool {
    int live;
    int is_default;
    int destroyed;
    int dev;
    size_t reserved;
    size_t used;
};

struct foreign {
    int dev;
    size_t size;
};

#define MAXB 8192
#define MAXH 256
#define MAXP 16
static struct block blocks[MAXB];
static struct handle handles[MAXH];
static struct mapping mappings[MAXH];
static struct reservation reservations[MAXH];
static struct registration registrations[MAXH];
static struct pool pools[MAXP];
static struct foreign foreigns[16];
static int nforeign;
static int capturing;

static unsigned long long next_dev[NDEV] = {DEVICE_BASE, DEVICE_BASE + DEVICE_STRIDE};
static unsigned long long next_managed = MANAGED_BASE;
static unsigned long long next_va = VA_BASE;
static unsigned long long next_legacy = LEGACY_BASE;
static unsigned long long next_handle = 0x5000;

struct fake_ctx {
    int dev;
};
static struct fake_ctx contexts[NDEV] = {{0}, {1}};

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

static void ensure_defaults(void) {
    for (int d = 0; d < NDEV; d++) {
        if (!pools[d].live) {
            pools[d].live = 1;
            pools[d].is_default = 1;
            pools[d].dev = d;
        }
    }
}

static CUmemoryPool pool_ptr(int i) { return (CUmemoryPool)(void *)&pools[i]; }

static int pool_index(CUmemoryPool p) {
    for (int i = 0; i < MAXP; i++)
        if ((void *)p == (void *)&pools[i] && pools[i].live && !pools[i].destroyed)
            return i;
    return -1;
}

/* A new block: reuses the address of a freed block of the same kind, device and span. */
static CUresult new_block(int kind, int dev, size_t size, size_t span, int pool,
                          unsigned long long *out) {
    int slot = -1;
    unsigned long long addr = 0;
    if (kind == K_DEVICE || kind == K_MANAGED || kind == K_LEGACY) {
        for (int i = 0; i < MAXB; i++) {
            if (!blocks[i].live && blocks[i].addr != 0 && blocks[i].kind == kind &&
                blocks[i].dev == dev && blocks[i].span == span) {
                slot = i;
                addr = blocks[i].addr;
                break;
            }
        }
    }
    if (slot < 0) {
        for (int i = 0; i < MAXB; i++) {
            if (!blocks[i].live && blocks[i].addr == 0) {
                slot = i;
                break;
            }
        }
        if (slot < 0)
            return CUDA_ERROR_OUT_OF_MEMORY;
        if (kind == K_DEVICE) {
            addr = next_dev[dev];
            next_dev[dev] += span;
        } else if (kind == K_MANAGED) {
            addr = next_managed;
            next_managed += span;
        } else if (kind == K_LEGACY) {
            addr = next_legacy;
            next_legacy += span;
        } else {
            addr = *out; /* pinned: the caller's malloc'd address */
        }
    }
    blocks[slot].live = 1;
    blocks[slot].kind = kind;
    blocks[slot].dev = dev;
    blocks[slot].addr = addr;
    blocks[slot].size = size;
    blocks[slot].span = span;
    blocks[slot].pool = pool;
    *out = addr;
    return CUDA_SUCCESS;
}

static int find_block(unsigned long long addr, int kind1, int kind2) {
    for (int i = 0; i < MAXB; i++)
        if (blocks[i].live && blocks[i].addr == addr &&
            (blocks[i].kind == kind1 || blocks[i].kind == kind2))
            return i;
    return -1;
}

/* Ends block i. Pinned blocks forget their address (malloc may hand it out again). */
static void end_block(int i) {
    blocks[i].live = 0;
    if (blocks[i].kind == K_PINNED)
        blocks[i].addr = 0;
}

static int bad(void) {
    __atomic_fetch_add(&bad_calls, 1, __ATOMIC_RELAXED);
    return CUDA_ERROR_INVALID_VALUE;
}

/* ------------------------------------------------------------------ init, devices */

EXPORT CUresult cuInit(unsigned int flags) {
    (void)flags;
    pthread_mutex_lock(&lock);
    initialized = 1;
    ensure_defaults();
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDriverGetVersion(int *v) {
    if (!v)
        return CUDA_ERROR_INVALID_VALUE;
    *v = DRIVER_VERSION;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGet(CUdevice *d, int ordinal) {
    if (!d || ordinal < 0 || ordinal >= NDEV)
        return CUDA_ERROR_INVALID_DEVICE;
    *d = ordinal;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetCount(int *count) {
    if (!count)
        return CUDA_ERROR_INVALID_VALUE;
    *count = NDEV;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev) {
    if (!pctx || dev < 0 || dev >= NDEV)
        return CUDA_ERROR_INVALID_DEVICE;
    *pctx = (CUcontext)(void *)&contexts[dev];
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSetCurrent(CUcontext ctx) {
    for (int d = 0; d < NDEV; d++) {
        if ((void *)ctx == (void *)&contexts[d]) {
            __atomic_store_n(&cur_dev, d, __ATOMIC_RELAXED);
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_INVALID_CONTEXT;
}

EXPORT CUresult cuCtxGetCurrent(CUcontext *pctx) {
    if (!pctx)
        return CUDA_ERROR_INVALID_VALUE;
    *pctx = (CUcontext)(void *)&contexts[__atomic_load_n(&cur_dev, __ATOMIC_RELAXED)];
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetDevice(CUdevice *device) {
    if (!device)
        return CUDA_ERROR_INVALID_VALUE;
    *device = __atomic_load_n(&cur_dev, __ATOMIC_RELAXED);
    return CUDA_SUCCESS;
}

EXPORT void fake_set_device(int dev) {
    if (dev >= 0 && dev < NDEV)
        __atomic_store_n(&cur_dev, dev, __ATOMIC_RELAXED);
}

static int current_device(void) { return __atomic_load_n(&cur_dev, __ATOMIC_RELAXED); }

EXPORT CUresult cuGetExportTable(const void **ppExportTable, const CUuuid *pExportTableId) {
    COUNT(cuGetExportTable);
    (void)pExportTableId;
    if (ppExportTable)
        *ppExportTable = NULL;
    return CUDA_ERROR_NOT_SUPPORTED;
}

/* ------------------------------------------------------------------ pointer queries */

EXPORT CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attribute, CUdeviceptr ptr) {
    if (!data)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    int found = -1;
    for (int i = 0; i < MAXB && found < 0; i++)
        if (blocks[i].live && ptr >= blocks[i].addr && ptr < blocks[i].addr + blocks[i].span)
            found = i;
    CUresult r = CUDA_SUCCESS;
    if (found >= 0) {
        struct block *b = &blocks[found];
        switch (attribute) {
        case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
            *(int *)data = b->dev;
            break;
        case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
            *(CUmemoryPool *)data = b->pool >= 0 ? pool_ptr(b->pool) : NULL;
            break;
        case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
            *(unsigned int *)data = b->kind == K_PINNED ? CU_MEMORYTYPE_HOST : CU_MEMORYTYPE_DEVICE;
            break;
        case CU_POINTER_ATTRIBUTE_IS_MANAGED:
            *(int *)data = b->kind == K_MANAGED;
            break;
        case CU_POINTER_ATTRIBUTE_CONTEXT:
            *(CUcontext *)data = (CUcontext)(void *)&contexts[b->dev];
            break;
        case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
            *(CUdeviceptr *)data = b->addr;
            break;
        case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
            *(size_t *)data = b->span;
            break;
        case CU_POINTER_ATTRIBUTE_MAPPED:
            *(int *)data = 1;
            break;
        default:
            r = CUDA_ERROR_INVALID_VALUE;
        }
        pthread_mutex_unlock(&lock);
        return r;
    }
    /* A mapped virtual-memory address: its handle's device. */
    for (int i = 0; i < MAXH; i++) {
        if (mappings[i].live && ptr >= mappings[i].va && ptr < mappings[i].va + mappings[i].size) {
            struct handle *h = &handles[mappings[i].handle];
            switch (attribute) {
            case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
                *(int *)data = h->dev;
                break;
            case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
                *(CUmemoryPool *)data = NULL;
                break;
            case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
                *(unsigned int *)data = CU_MEMORYTYPE_DEVICE;
                break;
            case CU_POINTER_ATTRIBUTE_IS_MANAGED:
                *(int *)data = 0;
                break;
            case CU_POINTER_ATTRIBUTE_MAPPED:
                *(int *)data = 1;
                break;
            default:
                r = CUDA_ERROR_INVALID_VALUE;
            }
            pthread_mutex_unlock(&lock);
            return r;
        }
    }
    pthread_mutex_unlock(&lock);
    return CUDA_ERROR_INVALID_VALUE;
}

/* ------------------------------------------------------------------ plain device memory */

static CUresult alloc_device(int kind, CUdeviceptr *dptr, size_t size, size_t span, int pool) {
    if (!dptr || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    unsigned long long addr = 0;
    int dev = current_device();
    if (pool >= 0)
        dev = pools[pool].dev;
    CUresult r = new_block(kind, dev, size, span, pool, &addr);
    if (r == CUDA_SUCCESS && pool >= 0) {
        pools[pool].used += size;
        if (pools[pool].used > pools[pool].reserved)
            pools[pool].reserved = round_up(pools[pool].used, GRANULE);
    }
    pthread_mutex_unlock(&lock);
    if (r == CUDA_SUCCESS)
        *dptr = addr;
    return r;
}

static CUresult free_device(CUdeviceptr dptr, int want_pool) {
    pthread_mutex_lock(&lock);
    int i = find_block(dptr, K_DEVICE, K_MANAGED);
    if (i < 0 || (want_pool && blocks[i].pool < 0)) {
        pthread_mutex_unlock(&lock);
        return bad();
    }
    if (blocks[i].pool >= 0)
        pools[blocks[i].pool].used -= blocks[i].size;
    end_block(i);
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

INTERNAL CUresult impl_mem_alloc_v2(CUdeviceptr *dptr, size_t bytesize) {
    COUNT(cuMemAlloc_v2);
    return alloc_device(K_DEVICE, dptr, bytesize, round_up(bytesize, 512), -1);
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize) {
    return impl_mem_alloc_v2(dptr, bytesize);
}

INTERNAL CUresult impl_mem_free_v2(CUdeviceptr dptr) {
    COUNT(cuMemFree_v2);
    if (dptr == 0)
        return CUDA_SUCCESS;
    return free_device(dptr, 0);
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr) { return impl_mem_free_v2(dptr); }

/* The pre-3.2 ABI: 32-bit pointer and size. */
EXPORT CUresult cuMemAlloc(CUdeviceptr_v1 *dptr, unsigned int bytesize) {
    COUNT(cuMemAlloc);
    if (!dptr || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    unsigned long long addr = 0;
    CUresult r = new_block(K_LEGACY, current_device(), bytesize, round_up(bytesize, 512), -1, &addr);
    pthread_mutex_unlock(&lock);
    if (r == CUDA_SUCCESS)
        *dptr = (CUdeviceptr_v1)addr;
    return r;
}

EXPORT CUresult cuMemFree(CUdeviceptr_v1 dptr) {
    COUNT(cuMemFree);
    pthread_mutex_lock(&lock);
    int i = find_block(dptr, K_LEGACY, K_LEGACY);
    if (i < 0) {
        pthread_mutex_unlock(&lock);
        return bad();
    }
    end_block(i);
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t WidthInBytes,
                                   size_t Height, unsigned int ElementSizeBytes) {
    COUNT(cuMemAllocPitch_v2);
    if (!pPitch || WidthInBytes == 0 || Height == 0 ||
        (ElementSizeBytes != 4 && ElementSizeBytes != 8 && ElementSizeBytes != 16))
        return CUDA_ERROR_INVALID_VALUE;
    size_t pitch = round_up(WidthInBytes, 512);
    CUresult r = alloc_device(K_DEVICE, dptr, pitch * Height, pitch * Height, -1);
    if (r == CUDA_SUCCESS)
        *pPitch = pitch;
    return r;
}

EXPORT CUresult cuMemAllocPitch(CUdeviceptr_v1 *dptr, unsigned int *pPitch, unsigned int WidthInBytes,
                                unsigned int Height, unsigned int ElementSizeBytes) {
    COUNT(cuMemAllocPitch);
    (void)dptr, (void)pPitch, (void)WidthInBytes, (void)Height, (void)ElementSizeBytes;
    return CUDA_ERROR_NOT_SUPPORTED;
}

EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags) {
    COUNT(cuMemAllocManaged);
    (void)flags;
    return alloc_device(K_MANAGED, dptr, bytesize, round_up(bytesize, 4096), -1);
}

/* ------------------------------------------------------------------ stream-ordered */

static CUresult alloc_async(CUdeviceptr *dptr, size_t bytesize, int pool) {
    if (pool < 0)
        return bad();
    return alloc_device(K_DEVICE, dptr, bytesize, round_up(bytesize, 512), pool);
}

static int current_pool(void) {
    pthread_mutex_lock(&lock);
    ensure_defaults();
    pthread_mutex_unlock(&lock);
    return current_device();
}

INTERNAL CUresult impl_mem_alloc_async(CUdeviceptr *dptr, size_t bytesize, CUstream s) {
    COUNT(cuMemAllocAsync);
    (void)s;
    return alloc_async(dptr, bytesize, current_pool());
}

INTERNAL CUresult impl_mem_alloc_async_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream s) {
    COUNT(cuMemAllocAsync_ptsz);
    (void)s;
    return alloc_async(dptr, bytesize, current_pool());
}

EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream s) {
    return impl_mem_alloc_async(dptr, bytesize, s);
}

EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream s) {
    return impl_mem_alloc_async_ptsz(dptr, bytesize, s);
}

EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream s) {
    COUNT(cuMemFreeAsync);
    (void)s;
    return free_device(dptr, 1);
}

EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream s) {
    COUNT(cuMemFreeAsync_ptsz);
    (void)s;
    return free_device(dptr, 1);
}

static int pool_of(CUmemoryPool p) {
    pthread_mutex_lock(&lock);
    int i = pool_index(p);
    pthread_mutex_unlock(&lock);
    return i;
}

INTERNAL CUresult impl_mem_alloc_from_pool_async(CUdeviceptr *dptr, size_t bytesize,
                                                 CUmemoryPool pool, CUstream s) {
    COUNT(cuMemAllocFromPoolAsync);
    (void)s;
    return alloc_async(dptr, bytesize, pool_of(pool));
}

INTERNAL CUresult impl_mem_alloc_from_pool_async_ptsz(CUdeviceptr *dptr, size_t bytesize,
                                                      CUmemoryPool pool, CUstream s) {
    COUNT(cuMemAllocFromPoolAsync_ptsz);
    (void)s;
    return alloc_async(dptr, bytesize, pool_of(pool));
}

EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
                                        CUstream s) {
    return impl_mem_alloc_from_pool_async(dptr, bytesize, pool, s);
}

EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
                                             CUstream s) {
    return impl_mem_alloc_from_pool_async_ptsz(dptr, bytesize, pool, s);
}

EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props) {
    COUNT(cuMemPoolCreate);
    if (!pool || !props || props->allocType != CU_MEM_ALLOCATION_TYPE_PINNED ||
        props->location.type != CU_MEM_LOCATION_TYPE_DEVICE || props->location.id < 0 ||
        props->location.id >= NDEV)
        return bad();
    pthread_mutex_lock(&lock);
    ensure_defaults();
    int slot = -1;
    for (int i = NDEV; i < MAXP && slot < 0; i++)
        if (!pools[i].live)
            slot = i;
    if (slot < 0) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    memset(&pools[slot], 0, sizeof pools[slot]);
    pools[slot].live = 1;
    pools[slot].dev = props->location.id;
    *pool = pool_ptr(slot);
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolDestroy(CUmemoryPool pool) {
    COUNT(cuMemPoolDestroy);
    pthread_mutex_lock(&lock);
    int i = pool_index(pool);
    if (i < 0 || pools[i].is_default) {
        pthread_mutex_unlock(&lock);
        return bad();
    }
    pools[i].destroyed = 1;
    if (pools[i].used == 0)
        pools[i].reserved = 0;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t keep) {
    COUNT(cuMemPoolTrimTo);
    pthread_mutex_lock(&lock);
    int i = pool_index(pool);
    if (i < 0) {
        pthread_mutex_unlock(&lock);
        return bad();
    }
    struct pool *p = &pools[i];
    if (p->reserved > keep) {
        size_t floor_used = round_up(p->used, GRANULE);
        size_t floor_keep = round_up(keep, GRANULE);
        size_t r = floor_used > floor_keep ? floor_used : floor_keep;
        if (r < p->reserved)
            p->reserved = r;
    }
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolGetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value) {
    if (!value)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    int i = pool_index(pool);
    CUresult r = CUDA_SUCCESS;
    if (i < 0) {
        r = CUDA_ERROR_INVALID_VALUE;
    } else if (attr == CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT) {
        *(cuuint64_t *)value = pools[i].reserved;
    } else if (attr == CU_MEMPOOL_ATTR_USED_MEM_CURRENT) {
        *(cuuint64_t *)value = pools[i].used;
    } else if (attr == CU_MEMPOOL_ATTR_RELEASE_THRESHOLD) {
        *(cuuint64_t *)value = 0;
    } else {
        r = CUDA_ERROR_INVALID_VALUE;
    }
    pthread_mutex_unlock(&lock);
    return r;
}

EXPORT CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev) {
    if (!pool || dev < 0 || dev >= NDEV)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    ensure_defaults();
    *pool = pool_ptr(dev);
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool, CUdevice dev) {
    return cuDeviceGetMemPool(pool, dev);
}

/* ------------------------------------------------------------------ pinned host memory */

static CUresult alloc_pinned(void **pp, size_t bytesize) {
    if (!pp || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    /* Real host memory, allocated inside the driver: the program's pinned buffer, not
     * its heap. */
    void *mem = malloc(bytesize);
    if (!mem)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&lock);
    unsigned long long addr = (unsigned long long)(uintptr_t)mem;
    CUresult r = new_block(K_PINNED, current_device(), bytesize, bytesize, -1, &addr);
    pthread_mutex_unlock(&lock);
    if (r != CUDA_SUCCESS) {
        free(mem);
        return r;
    }
    *pp = mem;
    return CUDA_SUCCESS;
}

INTERNAL CUresult impl_mem_alloc_host_v2(void **pp, size_t bytesize) {
    COUNT(cuMemAllocHost_v2);
    return alloc_pinned(pp, bytesize);
}

EXPORT CUresult cuMemAllocHost_v2(void **pp, size_t bytesize) {
    return impl_mem_alloc_host_v2(pp, bytesize);
}

EXPORT CUresult cuMemAllocHost(void **pp, unsigned int bytesize) {
    COUNT(cuMemAllocHost);
    return alloc_pinned(pp, bytesize);
}

EXPORT CUresult cuMemHostAlloc(void **pp, size_t bytesize, unsigned int flags) {
    COUNT(cuMemHostAlloc);
    (void)flags;
    return alloc_pinned(pp, bytesize);
}

INTERNAL CUresult impl_mem_free_host(void *p) {
    COUNT(cuMemFreeHost);
    pthread_mutex_lock(&lock);
    int i = find_block((unsigned long long)(uintptr_t)p, K_PINNED, K_PINNED);
    if (i < 0) {
        pthread_mutex_unlock(&lock);
        return bad();
    }
    end_block(i);
    pthread_mutex_unlock(&lock);
    free(p);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemFreeHost(void *p) { return impl_mem_free_host(p); }

static CUresult host_register(void *p, size_t bytesize) {
    if (!p || bytesize == 0)
        return bad();
    pthread_mutex_lock(&lock);
    int slot = -1;
    for (int i = 0; i < MAXH && slot < 0; i++)
        if (!registrations[i].live)
            slot = i;
    if (slot >= 0) {
        registrations[slot].live = 1;
        registrations[slot].ptr = p;
        registrations[slot].size = bytesize;
    }
    pthread_mutex_unlock(&lock);
    return slot >= 0 ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

EXPORT CUresult cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int flags) {
    COUNT(cuMemHostRegister_v2);
    (void)flags;
    return host_register(p, bytesize);
}

EXPORT CUresult cuMemHostRegister(void *p, size_t bytesize, unsigned int flags) {
    COUNT(cuMemHostRegister);
    (void)flags;
    return host_register(p, bytesize);
}

EXPORT CUresult cuMemHostUnregister(void *p) {
    COUNT(cuMemHostUnregister);
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAXH; i++) {
        if (registrations[i].live && registrations[i].ptr == p) {
            registrations[i].live = 0;
            pthread_mutex_unlock(&lock);
            return CUDA_SUCCESS;
        }
    }
    pthread_mutex_unlock(&lock);
    return bad();
}

/* ------------------------------------------------------------------ virtual memory */

static int find_handle(CUmemGenericAllocationHandle h) {
    for (int i = 0; i < MAXH; i++)
        if (handles[i].live && handles[i].value == h)
            return i;
    return -1;
}

static unsigned long long pending_handle;

EXPORT void fake_next_handle(unsigned long long value) {
    pthread_mutex_lock(&lock);
    pending_handle = value;
    pthread_mutex_unlock(&lock);
}

static CUresult new_handle(CUmemGenericAllocationHandle *out, size_t size, int dev, int imported) {
    unsigned long long value = pending_handle ? pending_handle : next_handle;
    if (find_handle(value) >= 0)
        return CUDA_ERROR_INVALID_VALUE;
    for (int i = 0; i < MAXH; i++) {
        if (!handles[i].live) {
            handles[i].live = 1;
            handles[i].imported = imported;
            handles[i].dev = dev;
            handles[i].refs = 1;
            handles[i].size = size;
            handles[i].value = value;
            if (pending_handle)
                pending_handle = 0;
            else
                next_handle += 0x10;
            *out = value;
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_OUT_OF_MEMORY;
}

INTERNAL CUresult impl_mem_create(CUmemGenericAllocationHandle *handle, size_t size,
                                  const CUmemAllocationProp *prop, unsigned long long flags) {
    COUNT(cuMemCreate);
    if (!handle || !prop || size == 0 || size % GRANULE != 0 || flags != 0 ||
        prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
        prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE || prop->location.id < 0 ||
        prop->location.id >= NDEV)
        return bad();
    pthread_mutex_lock(&lock);
    CUresult r = new_handle(handle, size, prop->location.id, 0);
    pthread_mutex_unlock(&lock);
    return r;
}

EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                            const CUmemAllocationProp *prop, unsigned long long flags) {
    return impl_mem_create(handle, size, prop, flags);
}

INTERNAL CUresult impl_mem_release(CUmemGenericAllocationHandle handle) {
    COUNT(cuMemRelease);
    pthread_mutex_lock(&lock);
    int i = find_handle(handle);
    if (i < 0) {
        pthread_mutex_unlock(&lock);
        return bad();
    }
    if (--handles[i].refs == 0)
        handles[i].live = 0;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
    return impl_mem_release(handle);
}

INTERNAL CUresult impl_mem_address_reserve(CUdeviceptr *ptr, size_t size, size_t alignment,
                                           CUdeviceptr addr, unsigned long long flags) {
    COUNT(cuMemAddressReserve);
    (void)alignment, (void)addr;
    if (!ptr || size == 0 || size % GRANULE != 0 || flags != 0)
        return bad();
    pthread_mutex_lock(&lock);
    int slot = -1;
    for (int i = 0; i < MAXH && slot < 0; i++)
        if (!reservations[i].live)
            slot = i;
    if (slot < 0) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    reservations[slot].live = 1;
    reservations[slot].dev = current_device();
    reservations[slot].va = next_va;
    reservations[slot].size = size;
    *ptr = next_va;
    next_va += size + GRANULE;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment,
                                    CUdeviceptr addr, unsigned long long flags) {
    return impl_mem_address_reserve(ptr, size, alignment, addr, flags);
}

EXPORT CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size) {
    COUNT(cuMemAddressFree);
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAXH; i++) {
        if (reservations[i].live && reservations[i].va == ptr && reservations[i].size == size) {
            for (int m = 0; m < MAXH; m++) {
                if (mappings[m].live && mappings[m].va >= ptr && mappings[m].va < ptr + size) {
                    pthread_mutex_unlock(&lock);
                    return bad(); /* still mapped */
                }
            }
            reservations[i].live = 0;
            pthread_mutex_unlock(&lock);
            return CUDA_SUCCESS;
        }
    }
    pthread_mutex_unlock(&lock);
    return bad();
}

INTERNAL CUresult impl_mem_map(CUdeviceptr ptr, size_t size, size_t offset,
                               CUmemGenericAllocationHandle handle, unsigned long long flags) {
    COUNT(cuMemMap);
    if (offset != 0 || flags != 0)
        return bad();
    pthread_mutex_lock(&lock);
    int h = find_handle(handle);
    int inside = 0;
    for (int i = 0; i < MAXH; i++)
        if (reservations[i].live && ptr >= reservations[i].va &&
            ptr + size <= reservations[i].va + reservations[i].size)
            inside = 1;
    if (h < 0 || !inside || size != handles[h].size) {
        pthread_mutex_unlock(&lock);
        return bad();
    }
    for (int i = 0; i < MAXH; i++) {
        if (mappings[i].live && ptr < mappings[i].va + mappings[i].size &&
            mappings[i].va < ptr + size) {
            pthread_mutex_unlock(&lock);
            return bad(); /* overlaps */
        }
    }
    for (int i = 0; i < MAXH; i++) {
        if (!mappings[i].live) {
            mappings[i].live = 1;
            mappings[i].va = ptr;
            mappings[i].size = size;
            mappings[i].handle = h;
            pthread_mutex_unlock(&lock);
            return CUDA_SUCCESS;
        }
    }
    pthread_mutex_unlock(&lock);
    return CUDA_ERROR_OUT_OF_MEMORY;
}

EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                         CUmemGenericAllocationHandle handle, unsigned long long flags) {
    return impl_mem_map(ptr, size, offset, handle, flags);
}

EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) {
    COUNT(cuMemUnmap);
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAXH; i++) {
        if (mappings[i].live && mappings[i].va == ptr && mappings[i].size == size) {
            mappings[i].live = 0;
            pthread_mutex_unlock(&lock);
            return CUDA_SUCCESS;
        }
    }
    pthread_mutex_unlock(&lock);
    return bad();
}

EXPORT CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc,
                               size_t count) {
    COUNT(cuMemSetAccess);
    if (!desc || count == 0)
        return bad();
    /* The range may span several adjacent mappings, but must be mapped throughout. */
    pthread_mutex_lock(&lock);
    size_t covered = 0;
    for (int i = 0; i < MAXH; i++) {
        if (!mappings[i].live)
            continue;
        unsigned long long lo = mappings[i].va > ptr ? mappings[i].va : ptr;
        unsigned long long hi = mappings[i].va + mappings[i].size < ptr + size
                                    ? mappings[i].va + mappings[i].size
                                    : ptr + size;
        if (lo < hi)
            covered += hi - lo;
    }
    pthread_mutex_unlock(&lock);
    return size != 0 && covered == size ? CUDA_SUCCESS : bad();
}

EXPORT CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *handle, void *addr) {
    COUNT(cuMemRetainAllocationHandle);
    if (!handle)
        return bad();
    unsigned long long a = (unsigned long long)(uintptr_t)addr;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAXH; i++) {
        if (mappings[i].live && a >= mappings[i].va && a < mappings[i].va + mappings[i].size) {
            struct handle *h = &handles[mappings[i].handle];
            h->refs++;
            *handle = h->value;
            pthread_mutex_unlock(&lock);
            return CUDA_SUCCESS;
        }
    }
    pthread_mutex_unlock(&lock);
    return bad();
}

EXPORT int fake_foreign_shareable(int dev, size_t size) {
    pthread_mutex_lock(&lock);
    int fd = -1;
    if (nforeign < 16 && dev >= 0 && dev < NDEV) {
        foreigns[nforeign].dev = dev;
        foreigns[nforeign].size = size;
        fd = 1000 + nforeign++;
    }
    pthread_mutex_unlock(&lock);
    return fd;
}

EXPORT CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *handle, void *osHandle,
                                               CUmemAllocationHandleType type) {
    COUNT(cuMemImportFromShareableHandle);
    int fd = (int)(intptr_t)osHandle;
    if (!handle || type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR || fd < 1000 ||
        fd >= 1000 + nforeign)
        return bad();
    pthread_mutex_lock(&lock);
    CUresult r = new_handle(handle, foreigns[fd - 1000].size, foreigns[fd - 1000].dev, 1);
    pthread_mutex_unlock(&lock);
    return r;
}

EXPORT CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
                                              CUmemAllocationGranularity_flags option) {
    (void)prop, (void)option;
    if (!granularity)
        return CUDA_ERROR_INVALID_VALUE;
    *granularity = GRANULE;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp *prop,
                                                       CUmemGenericAllocationHandle handle) {
    if (!prop)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    int i = find_handle(handle);
    if (i < 0) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    memset(prop, 0, sizeof *prop);
    prop->type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop->requestedHandleTypes =
        handles[i].imported ? CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR : CU_MEM_HANDLE_TYPE_NONE;
    prop->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop->location.id = handles[i].dev;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------ graph capture */

INTERNAL CUresult impl_stream_begin_capture(CUstream s, CUstreamCaptureMode mode) {
    COUNT(cuStreamBeginCapture_v2);
    (void)s, (void)mode;
    if (__atomic_exchange_n(&capturing, 1, __ATOMIC_RELAXED))
        return bad();
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamBeginCapture_v2(CUstream s, CUstreamCaptureMode mode) {
    return impl_stream_begin_capture(s, mode);
}

static char fake_graph;

EXPORT CUresult cuStreamEndCapture(CUstream s, CUgraph *graph) {
    COUNT(cuStreamEndCapture);
    (void)s;
    if (!graph || !__atomic_exchange_n(&capturing, 0, __ATOMIC_RELAXED))
        return bad();
    *graph = (CUgraph)(void *)&fake_graph;
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------ entry points */

struct entry {
    const char *name;
    int version; /* the first CUDA version with this ABI */
    void *fn;
    void *fn_ptsz; /* per-thread default stream variant, NULL if the same */
};

static const struct entry entries[] = {
    {"cuInit", 2000, (void *)cuInit, NULL},
    {"cuDriverGetVersion", 2020, (void *)cuDriverGetVersion, NULL},
    {"cuGetProcAddress", 11030, (void *)cuGetProcAddress, NULL},
    {"cuGetProcAddress", 12000, (void *)cuGetProcAddress_v2, NULL},
    {"cuGetExportTable", 3000, (void *)cuGetExportTable, NULL},
    {"cuDeviceGet", 2000, (void *)cuDeviceGet, NULL},
    {"cuDeviceGetCount", 2000, (void *)cuDeviceGetCount, NULL},
    {"cuDevicePrimaryCtxRetain", 7000, (void *)cuDevicePrimaryCtxRetain, NULL},
    {"cuCtxSetCurrent", 4000, (void *)cuCtxSetCurrent, NULL},
    {"cuCtxGetCurrent", 4000, (void *)cuCtxGetCurrent, NULL},
    {"cuCtxGetDevice", 2000, (void *)cuCtxGetDevice, NULL},
    {"cuPointerGetAttribute", 4000, (void *)cuPointerGetAttribute, NULL},
    {"cuMemAlloc", 2000, (void *)cuMemAlloc, NULL},
    {"cuMemAlloc", 3020, (void *)impl_mem_alloc_v2, NULL},
    {"cuMemFree", 2000, (void *)cuMemFree, NULL},
    {"cuMemFree", 3020, (void *)impl_mem_free_v2, NULL},
    {"cuMemAllocPitch", 2000, (void *)cuMemAllocPitch, NULL},
    {"cuMemAllocPitch", 3020, (void *)cuMemAllocPitch_v2, NULL},
    {"cuMemAllocHost", 2000, (void *)cuMemAllocHost, NULL},
    {"cuMemAllocHost", 3020, (void *)impl_mem_alloc_host_v2, NULL},
    {"cuMemHostAlloc", 2020, (void *)cuMemHostAlloc, NULL},
    {"cuMemFreeHost", 2000, (void *)impl_mem_free_host, NULL},
    {"cuMemHostRegister", 4000, (void *)cuMemHostRegister, NULL},
    {"cuMemHostRegister", 6050, (void *)cuMemHostRegister_v2, NULL},
    {"cuMemHostUnregister", 4000, (void *)cuMemHostUnregister, NULL},
    {"cuMemAllocManaged", 6000, (void *)cuMemAllocManaged, NULL},
    {"cuMemAllocAsync", 11020, (void *)impl_mem_alloc_async, (void *)impl_mem_alloc_async_ptsz},
    {"cuMemFreeAsync", 11020, (void *)cuMemFreeAsync, (void *)cuMemFreeAsync_ptsz},
    {"cuMemAllocFromPoolAsync", 11020, (void *)impl_mem_alloc_from_pool_async,
     (void *)impl_mem_alloc_from_pool_async_ptsz},
    {"cuMemPoolCreate", 11020, (void *)cuMemPoolCreate, NULL},
    {"cuMemPoolDestroy", 11020, (void *)cuMemPoolDestroy, NULL},
    {"cuMemPoolTrimTo", 11020, (void *)cuMemPoolTrimTo, NULL},
    {"cuMemPoolGetAttribute", 11020, (void *)cuMemPoolGetAttribute, NULL},
    {"cuDeviceGetMemPool", 11020, (void *)cuDeviceGetMemPool, NULL},
    {"cuDeviceGetDefaultMemPool", 11020, (void *)cuDeviceGetDefaultMemPool, NULL},
    {"cuMemCreate", 10020, (void *)impl_mem_create, NULL},
    {"cuMemRelease", 10020, (void *)impl_mem_release, NULL},
    {"cuMemMap", 10020, (void *)impl_mem_map, NULL},
    {"cuMemUnmap", 10020, (void *)cuMemUnmap, NULL},
    {"cuMemAddressReserve", 10020, (void *)impl_mem_address_reserve, NULL},
    {"cuMemAddressFree", 10020, (void *)cuMemAddressFree, NULL},
    {"cuMemSetAccess", 10020, (void *)cuMemSetAccess, NULL},
    {"cuMemRetainAllocationHandle", 11000, (void *)cuMemRetainAllocationHandle, NULL},
    {"cuMemImportFromShareableHandle", 10020, (void *)cuMemImportFromShareableHandle, NULL},
    {"cuMemGetAllocationGranularity", 10020, (void *)cuMemGetAllocationGranularity, NULL},
    {"cuMemGetAllocationPropertiesFromHandle", 10020,
     (void *)cuMemGetAllocationPropertiesFromHandle, NULL},
    {"cuStreamBeginCapture", 10010, (void *)impl_stream_begin_capture, NULL},
    {"cuStreamEndCapture", 10000, (void *)cuStreamEndCapture, NULL},
};

static CUresult resolve(const char *symbol, void **pfn, int version, cuuint64_t flags,
                        CUdriverProcAddressQueryResult *status) {
    if (!symbol || !pfn || (flags & ~(cuuint64_t)3) != 0) {
        if (status)
            *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
        return CUDA_ERROR_INVALID_VALUE;
    }
    const struct entry *best = NULL;
    int known = 0;
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
        if (strcmp(entries[i].name, symbol) != 0)
            continue;
        known = 1;
        if (entries[i].version <= version && (!best || entries[i].version > best->version))
            best = &entries[i];
    }
    if (!best) {
        *pfn = NULL;
        if (status)
            *status = known ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
                            : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
        return CUDA_ERROR_NOT_FOUND;
    }
    *pfn = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) && best->fn_ptsz ? best->fn_ptsz
                                                                                   : best->fn;
    if (status)
        *status = CU_GET_PROC_ADDRESS_SUCCESS;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags) {
    COUNT(cuGetProcAddress);
    return resolve(symbol, pfn, version, flags, NULL);
}

EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                                    CUdriverProcAddressQueryResult *status) {
    COUNT(cuGetProcAddress_v2);
    return resolve(symbol, pfn, version, flags, status);
}

/* ------------------------------------------------------------------ ground truth */

static char report_buf[16384];
static size_t report_len;

static void out(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(report_buf + report_len, sizeof report_buf - report_len, fmt, ap);
    va_end(ap);
    if (n > 0 && report_len + (size_t)n < sizeof report_buf)
        report_len += (size_t)n;
}

EXPORT void fake_driver_report(void) {
    pthread_mutex_lock(&lock);
    report_len = 0;
    unsigned long long device[NDEV] = {0}, managed[NDEV] = {0}, pinned = 0, device_count = 0,
                       managed_count = 0, pinned_count = 0, legacy = 0;
    for (int i = 0; i < MAXB; i++) {
        if (!blocks[i].live)
            continue;
        switch (blocks[i].kind) {
        case K_DEVICE:
            device[blocks[i].dev] += blocks[i].size;
            device_count++;
            break;
        case K_MANAGED:
            managed[blocks[i].dev] += blocks[i].size;
            managed_count++;
            break;
        case K_PINNED:
            pinned += blocks[i].size;
            pinned_count++;
            break;
        case K_LEGACY:
            legacy += blocks[i].size;
            break;
        }
    }
    unsigned long long owned = 0, imported = 0, retained = 0, mapped[NDEV] = {0},
                       reserved[NDEV] = {0}, registered = 0, handle_bytes[NDEV] = {0};
    for (int i = 0; i < MAXH; i++) {
        if (handles[i].live) {
            if (handles[i].imported) {
                imported++;
                retained += (unsigned long long)(handles[i].refs - 1);
            } else {
                owned++;
                handle_bytes[handles[i].dev] += handles[i].size;
                retained += (unsigned long long)(handles[i].refs - 1);
            }
        }
        if (mappings[i].live)
            mapped[handles[mappings[i].handle].dev] += mappings[i].size;
        if (reservations[i].live)
            reserved[reservations[i].dev] += reservations[i].size;
        if (registrations[i].live)
            registered += registrations[i].size;
    }
    unsigned long long dev_total = 0;
    for (int d = 0; d < NDEV; d++)
        dev_total += device[d] + handle_bytes[d];
    out("FAKE-DRIVER totals device=%llu pinned=%llu managed=%llu device_blocks=%llu "
        "pinned_blocks=%llu managed_blocks=%llu legacy=%llu handles=%llu imported=%llu "
        "retained=%llu registered=%llu bad=%lu\n",
        dev_total, pinned, managed[0] + managed[1], device_count, pinned_count, managed_count,
        legacy, owned, imported, retained, registered, bad_calls);
    for (int d = 0; d < NDEV; d++)
        out("FAKE-DRIVER dev%d device=%llu pointers=%llu handle_bytes=%llu managed=%llu "
            "mapped=%llu reserved=%llu\n",
            d, device[d] + handle_bytes[d], device[d], handle_bytes[d], managed[d], mapped[d],
            reserved[d]);
    for (int i = 0; i < MAXP; i++)
        if (pools[i].live)
            out("FAKE-DRIVER pool handle=0x%llx device=%d default=%d destroyed=%d reserved=%zu "
                "used=%zu\n",
                (unsigned long long)(uintptr_t)&pools[i], pools[i].dev, pools[i].is_default,
                pools[i].destroyed, pools[i].reserved, pools[i].used);
    out("FAKE-DRIVER calls");
    for (int i = 0; i < C_COUNT; i++)
        out(" %s=%lu", counter_names[i], counters[i]);
    out("\n");
    pthread_mutex_unlock(&lock);
    size_t done = 0;
    while (done < report_len) {
        ssize_t n = write(2, report_buf + done, report_len - done);
        if (n <= 0)
            break;
        done += (size_t)n;
    }
}

__attribute__((destructor)) static void fake_driver_fini(void) { fake_driver_report(); }
