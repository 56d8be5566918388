/* Stand-in for libnccl.so.2: a library with its OWN static copy of the CUDA runtime
 * (fake_runtime.c compiled in with rt_rename.h: hidden, prefixed), as NCCL ships. Its
 * allocations never pass through an exported cuda* or cu* symbol: the private runtime
 * reaches the driver through dlsym(libcuda, "cuGetProcAddress_v2") pointers, and the
 * cuMem* functions come from the private cudaGetDriverEntryPoint, as NCCL's cudawrap.cc
 * does. Built with -fvisibility=hidden; only the ncclFake* functions are exported.
 *
 *   ncclFakeAllocBuffers(n, bytes, out): n device buffers through the private cudaMalloc;
 *   ncclFakeFreeBuffer(p): cudaFree;
 *   ncclFakeCumemAlloc(bytes, &ptr): reserve + cuMemCreate + cuMemMap + cuMemSetAccess on the
 *     current device (NCCL_CUMEM_ENABLE);
 *   ncclFakeCumemFree(ptr, bytes): NCCL's ncclCuMemFree sequence: retain the handle, release,
 *     unmap, release, free the addresses. */
#include "fake_cuda.h"

#include <stdint.h>

#define NCCL_API __attribute__((visibility("default")))
#define NOIPA __attribute__((noipa))

static struct {
    int ready;
    CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                       unsigned long long);
    CUresult (*release)(CUmemGenericAllocationHandle);
    CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
    CUresult (*unmap)(CUdeviceptr, size_t);
    CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
    CUresult (*address_free)(CUdeviceptr, size_t);
    CUresult (*set_access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
    CUresult (*retain)(CUmemGenericAllocationHandle *, void *);
} W;

static int load(const char *name, void *slot) {
    enum cudaDriverEntryPointQueryResult st = cudaDriverEntryPointSymbolNotFound;
    void *fn = NULL;
    if (cudaGetDriverEntryPoint(name, &fn, cudaEnableDefault, &st) != cudaSuccess ||
        st != cudaDriverEntryPointSuccess || !fn)
        return 0;
    *(void **)slot = fn;
    return 1;
}

NOIPA static int ncclCudaLibraryInit(void) {
    if (W.ready)
        return 0;
    int ok = load("cuMemCreate", &W.create) && load("cuMemRelease", &W.release) &&
             load("cuMemMap", &W.map) && load("cuMemUnmap", &W.unmap) &&
             load("cuMemAddressReserve", &W.reserve) &&
             load("cuMemAddressFree", &W.address_free) &&
             load("cuMemSetAccess", &W.set_access) &&
             load("cuMemRetainAllocationHandle", &W.retain);
    W.ready = ok;
    return ok ? 0 : 1;
}

NOIPA static int ncclCudaCalloc(void **p, size_t bytes) {
    return cudaMalloc(p, bytes);
}

NCCL_API int ncclFakeAllocBuffers(int n, size_t bytes, void **out) {
    for (int i = 0; i < n; i++)
        if (ncclCudaCalloc(&out[i], bytes) != cudaSuccess)
            return 1;
    return 0;
}

NCCL_API int ncclFakeFreeBuffer(void *p) { return cudaFree(p); }

NOIPA static int ncclCuMemAlloc(CUdeviceptr *ptr, size_t bytes) {
    if (ncclCudaLibraryInit() != 0)
        return 1;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess)
        return 2;
    CUmemAllocationProp prop = {0};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = dev;
    CUmemGenericAllocationHandle h = 0;
    if (W.reserve(ptr, bytes, 0, 0, 0) != CUDA_SUCCESS)
        return 3;
    if (W.create(&h, bytes, &prop, 0) != CUDA_SUCCESS)
        return 4;
    if (W.map(*ptr, bytes, 0, h, 0) != CUDA_SUCCESS)
        return 5;
    CUmemAccessDesc access = {{CU_MEM_LOCATION_TYPE_DEVICE, dev}, CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    if (W.set_access(*ptr, bytes, &access, 1) != CUDA_SUCCESS)
        return 6;
    return 0;
}

NCCL_API int ncclFakeCumemAlloc(size_t bytes, unsigned long long *ptr) {
    CUdeviceptr p = 0;
    int r = ncclCuMemAlloc(&p, bytes);
    *ptr = p;
    return r;
}

NCCL_API int ncclFakeCumemFree(unsigned long long ptr, size_t bytes) {
    if (ncclCudaLibraryInit() != 0)
        return 1;
    CUmemGenericAllocationHandle h = 0;
    if (W.retain(&h, (void *)(uintptr_t)ptr) != CUDA_SUCCESS)
        return 2;
    if (W.release(h) != CUDA_SUCCESS)
        return 3;
    if (W.unmap(ptr, bytes) != CUDA_SUCCESS)
        return 4;
    if (W.release(h) != CUDA_SUCCESS)
        return 5;
    if (W.address_free(ptr, bytes) != CUDA_SUCCESS)
        return 6;
    return 0;
}
