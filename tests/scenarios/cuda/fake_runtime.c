/* Stand-in for NVIDIA's CUDA runtime, built as libcudart.so.13 (soname libcudart.so.13).
 *
 * Like the real runtime it never links the driver: on first use it dlopen()s
 * "libcuda.so.1", looks up "cuGetProcAddress_v2" with dlsym, and fetches every driver
 * function it needs through that resolver (CUDA version 13000, default stream flags, and the
 * per-thread-default-stream variants of the stream-ordered functions for the _ptsz entry
 * points). Every runtime allocation goes to the driver through those pointers: cudaMalloc is
 * cuMemAlloc_v2 reached by pointer, never by symbol.
 *
 * The same file is compiled into the libnccl.so.2 stand-in as a private, hidden copy (NCCL,
 * cuBLAS and cuBLASLt link the runtime statically): there rt_rename.h prefixes every
 * runtime name so nothing of it is exported or clashes with the real libcudart. */
#define _GNU_SOURCE
#include "fake_cuda.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define CUDART_VERSION 13000
#define PITCH_ELEMENT 16

#ifdef FAKE_RT_STATIC
#define RTAPI __attribute__((visibility("hidden")))
#else
#define RTAPI __attribute__((visibility("default")))
#endif

typedef CUresult (*getproc_fn)(const char *, void **, int, cuuint64_t,
                               CUdriverProcAddressQueryResult *);

static struct {
    pthread_once_t once;
    cudaError_t status;
    getproc_fn getproc;
    CUresult (*init)(unsigned int);
    CUresult (*driver_version)(int *);
    CUresult (*get_export_table)(const void **, const CUuuid *);
    CUresult (*primary_ctx_retain)(CUcontext *, CUdevice);
    CUresult (*ctx_set_current)(CUcontext);
    CUresult (*ctx_get_device)(CUdevice *);
    CUresult (*mem_alloc)(CUdeviceptr *, size_t);
    CUresult (*mem_free)(CUdeviceptr);
    CUresult (*mem_alloc_pitch)(CUdeviceptr *, size_t *, size_t, size_t, unsigned int);
    CUresult (*mem_alloc_managed)(CUdeviceptr *, size_t, unsigned int);
    CUresult (*mem_alloc_async)(CUdeviceptr *, size_t, CUstream);
    CUresult (*mem_free_async)(CUdeviceptr, CUstream);
    CUresult (*mem_alloc_from_pool_async)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
    CUresult (*mem_alloc_async_ptsz)(CUdeviceptr *, size_t, CUstream);
    CUresult (*mem_free_async_ptsz)(CUdeviceptr, CUstream);
    CUresult (*mem_alloc_from_pool_async_ptsz)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
    CUresult (*mem_alloc_host)(void **, size_t);
    CUresult (*mem_host_alloc)(void **, size_t, unsigned int);
    CUresult (*mem_free_host)(void *);
    CUresult (*mem_host_register)(void *, size_t, unsigned int);
    CUresult (*mem_host_unregister)(void *);
    CUresult (*pool_create)(CUmemoryPool *, const CUmemPoolProps *);
    CUresult (*pool_destroy)(CUmemoryPool);
    CUresult (*pool_trim_to)(CUmemoryPool, size_t);
    CUresult (*pool_get_attribute)(CUmemoryPool, CUmemPool_attribute, void *);
    CUresult (*device_get_default_mem_pool)(CUmemoryPool *, CUdevice);
    CUresult (*stream_begin_capture)(CUstream, CUstreamCaptureMode);
    CUresult (*stream_end_capture)(CUstream, CUgraph *);
} R = {.once = PTHREAD_ONCE_INIT, .status = cudaErrorInitializationError};

static int fetch(const char *name, void *slot, cuuint64_t flags) {
    CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    void *fn = NULL;
    if (R.getproc(name, &fn, CUDART_VERSION, flags, &st) != CUDA_SUCCESS ||
        st != CU_GET_PROC_ADDRESS_SUCCESS || fn == NULL)
        return 0;
    *(void **)slot = fn;
    return 1;
}

static void rt_init(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        return;
    R.getproc = (getproc_fn)dlsym(lib, "cuGetProcAddress_v2");
    if (!R.getproc)
        return;
    const cuuint64_t D = CU_GET_PROC_ADDRESS_DEFAULT;
    const cuuint64_t PT = CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
    int ok = fetch("cuInit", &R.init, D) && fetch("cuDriverGetVersion", &R.driver_version, D) &&
             fetch("cuGetExportTable", &R.get_export_table, D) &&
             fetch("cuDevicePrimaryCtxRetain", &R.primary_ctx_retain, D) &&
             fetch("cuCtxSetCurrent", &R.ctx_set_current, D) &&
             fetch("cuCtxGetDevice", &R.ctx_get_device, D) &&
             fetch("cuMemAlloc", &R.mem_alloc, D) && fetch("cuMemFree", &R.mem_free, D) &&
             fetch("cuMemAllocPitch", &R.mem_alloc_pitch, D) &&
             fetch("cuMemAllocManaged", &R.mem_alloc_managed, D) &&
             fetch("cuMemAllocAsync", &R.mem_alloc_async, D) &&
             fetch("cuMemFreeAsync", &R.mem_free_async, D) &&
             fetch("cuMemAllocFromPoolAsync", &R.mem_alloc_from_pool_async, D) &&
             fetch("cuMemAllocAsync", &R.mem_alloc_async_ptsz, PT) &&
             fetch("cuMemFreeAsync", &R.mem_free_async_ptsz, PT) &&
             fetch("cuMemAllocFromPoolAsync", &R.mem_alloc_from_pool_async_ptsz, PT) &&
             fetch("cuMemAllocHost", &R.mem_alloc_host, D) &&
             fetch("cuMemHostAlloc", &R.mem_host_alloc, D) &&
             fetch("cuMemFreeHost", &R.mem_free_host, D) &&
             fetch("cuMemHostRegister", &R.mem_host_register, D) &&
             fetch("cuMemHostUnregister", &R.mem_host_unregister, D) &&
             fetch("cuMemPoolCreate", &R.pool_create, D) &&
             fetch("cuMemPoolDestroy", &R.pool_destroy, D) &&
             fetch("cuMemPoolTrimTo", &R.pool_trim_to, D) &&
             fetch("cuMemPoolGetAttribute", &R.pool_get_attribute, D) &&
             fetch("cuDeviceGetDefaultMemPool", &R.device_get_default_mem_pool, D) &&
             fetch("cuStreamBeginCapture", &R.stream_begin_capture, D) &&
             fetch("cuStreamEndCapture", &R.stream_end_capture, D);
    if (!ok || R.init(0) != CUDA_SUCCESS)
        return;
    /* The real runtime asks for private tables; the stand-in driver has none. */
    const void *table = NULL;
    CUuuid id = {{0}};
    (void)R.get_export_table(&table, &id);
    R.status = cudaSuccess;
}

static cudaError_t ready(void) {
    pthread_once(&R.once, rt_init);
    return R.status;
}

#define READY()                                                                            \
    do {                                                                                   \
        cudaError_t e_ = ready();                                                          \
        if (e_ != cudaSuccess)                                                             \
            return e_;                                                                     \
    } while (0)

static cudaError_t err(CUresult r) { return (cudaError_t)r; }

RTAPI cudaError_t cudaMalloc(void **devPtr, size_t size) {
    READY();
    if (!devPtr)
        return cudaErrorInvalidValue;
    CUdeviceptr d = 0;
    CUresult r = R.mem_alloc(&d, size);
    *devPtr = r == CUDA_SUCCESS ? (void *)(uintptr_t)d : NULL;
    return err(r);
}

RTAPI cudaError_t cudaFree(void *devPtr) {
    READY();
    if (!devPtr)
        return cudaSuccess;
    return err(R.mem_free((CUdeviceptr)(uintptr_t)devPtr));
}

RTAPI cudaError_t cudaMallocAsync(void **devPtr, size_t size, cudaStream_t s) {
    READY();
    if (!devPtr)
        return cudaErrorInvalidValue;
    CUdeviceptr d = 0;
    CUresult r = R.mem_alloc_async(&d, size, s);
    *devPtr = r == CUDA_SUCCESS ? (void *)(uintptr_t)d : NULL;
    return err(r);
}

RTAPI cudaError_t cudaFreeAsync(void *devPtr, cudaStream_t s) {
    READY();
    return err(R.mem_free_async((CUdeviceptr)(uintptr_t)devPtr, s));
}

RTAPI cudaError_t cudaMallocFromPoolAsync(void **ptr, size_t size, cudaMemPool_t pool,
                                          cudaStream_t s) {
    READY();
    if (!ptr)
        return cudaErrorInvalidValue;
    CUdeviceptr d = 0;
    CUresult r = R.mem_alloc_from_pool_async(&d, size, pool, s);
    *ptr = r == CUDA_SUCCESS ? (void *)(uintptr_t)d : NULL;
    return err(r);
}

/* The per-thread-default-stream entry points (what a program compiled with
 * --default-stream per-thread calls): the driver's _ptsz functions. */
RTAPI cudaError_t cudaMallocAsync_ptsz(void **devPtr, size_t size, cudaStream_t s) {
    READY();
    if (!devPtr)
        return cudaErrorInvalidValue;
    CUdeviceptr d = 0;
    CUresult r = R.mem_alloc_async_ptsz(&d, size, s);
    *devPtr = r == CUDA_SUCCESS ? (void *)(uintptr_t)d : NULL;
    return err(r);
}

RTAPI cudaError_t cudaFreeAsync_ptsz(void *devPtr, cudaStream_t s) {
    READY();
    return err(R.mem_free_async_ptsz((CUdeviceptr)(uintptr_t)devPtr, s));
}

RTAPI cudaError_t cudaMallocFromPoolAsync_ptsz(void **ptr, size_t size, cudaMemPool_t pool,
                                               cudaStream_t s) {
    READY();
    if (!ptr)
        return cudaErrorInvalidValue;
    CUdeviceptr d = 0;
    CUresult r = R.mem_alloc_from_pool_async_ptsz(&d, size, pool, s);
    *ptr = r == CUDA_SUCCESS ? (void *)(uintptr_t)d : NULL;
    return err(r);
}

RTAPI cudaError_t cudaMallocHost(void **ptr, size_t size) {
    READY();
    return err(R.mem_alloc_host(ptr, size));
}

RTAPI cudaError_t cudaHostAlloc(void **pHost, size_t size, unsigned int flags) {
    READY();
    return err(R.mem_host_alloc(pHost, size, flags));
}

RTAPI cudaError_t cudaFreeHost(void *ptr) {
    READY();
    return err(R.mem_free_host(ptr));
}

RTAPI cudaError_t cudaMallocManaged(void **devPtr, size_t size, unsigned int flags) {
    READY();
    if (!devPtr)
        return cudaErrorInvalidValue;
    CUdeviceptr d = 0;
    CUresult r = R.mem_alloc_managed(&d, size, flags);
    *devPtr = r == CUDA_SUCCESS ? (void *)(uintptr_t)d : NULL;
    return err(r);
}

RTAPI cudaError_t cudaMallocPitch(void **devPtr, size_t *pitch, size_t width, size_t height) {
    READY();
    if (!devPtr || !pitch)
        return cudaErrorInvalidValue;
    CUdeviceptr d = 0;
    CUresult r = R.mem_alloc_pitch(&d, pitch, width, height, PITCH_ELEMENT);
    *devPtr = r == CUDA_SUCCESS ? (void *)(uintptr_t)d : NULL;
    return err(r);
}

RTAPI cudaError_t cudaMalloc3D(struct cudaPitchedPtr *p, struct cudaExtent extent) {
    READY();
    if (!p)
        return cudaErrorInvalidValue;
    CUdeviceptr d = 0;
    size_t pitch = 0;
    CUresult r =
        R.mem_alloc_pitch(&d, &pitch, extent.width, extent.height * extent.depth, PITCH_ELEMENT);
    if (r != CUDA_SUCCESS)
        return err(r);
    p->ptr = (void *)(uintptr_t)d;
    p->pitch = pitch;
    p->xsize = extent.width;
    p->ysize = extent.height;
    return cudaSuccess;
}

RTAPI cudaError_t cudaHostRegister(void *ptr, size_t size, unsigned int flags) {
    READY();
    return err(R.mem_host_register(ptr, size, flags));
}

RTAPI cudaError_t cudaHostUnregister(void *ptr) {
    READY();
    return err(R.mem_host_unregister(ptr));
}

RTAPI cudaError_t cudaMemPoolCreate(cudaMemPool_t *memPool, const struct cudaMemPoolProps *props) {
    READY();
    if (!props)
        return cudaErrorInvalidValue;
    CUmemPoolProps p = {0};
    p.allocType = (CUmemAllocationType)props->allocType;
    p.handleTypes = (CUmemAllocationHandleType)props->handleTypes;
    p.location.type = (CUmemLocationType)props->location.type;
    p.location.id = props->location.id;
    p.maxSize = props->maxSize;
    return err(R.pool_create(memPool, &p));
}

RTAPI cudaError_t cudaMemPoolDestroy(cudaMemPool_t memPool) {
    READY();
    return err(R.pool_destroy(memPool));
}

RTAPI cudaError_t cudaMemPoolTrimTo(cudaMemPool_t memPool, size_t minBytesToKeep) {
    READY();
    return err(R.pool_trim_to(memPool, minBytesToKeep));
}

RTAPI cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t memPool, enum cudaMemPoolAttr attr,
                                          void *value) {
    READY();
    return err(R.pool_get_attribute(memPool, (CUmemPool_attribute)attr, value));
}

RTAPI cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *memPool, int device) {
    READY();
    return err(R.device_get_default_mem_pool(memPool, device));
}

static cudaError_t entry_point(const char *symbol, void **funcPtr, unsigned int version,
                               unsigned long long flags,
                               enum cudaDriverEntryPointQueryResult *status) {
    READY();
    if (!symbol || !funcPtr)
        return cudaErrorInvalidValue;
    CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    CUresult r = R.getproc(symbol, funcPtr, (int)version, flags, &st);
    if (r != CUDA_SUCCESS)
        *funcPtr = NULL;
    if (status)
        *status = (enum cudaDriverEntryPointQueryResult)st;
    /* As the real runtime: a symbol that is missing or too new is reported through the
     * status, not as an error. */
    return r == CUDA_SUCCESS || r == CUDA_ERROR_NOT_FOUND ? cudaSuccess : err(r);
}

RTAPI cudaError_t cudaGetDriverEntryPoint(const char *symbol, void **funcPtr,
                                          unsigned long long flags,
                                          enum cudaDriverEntryPointQueryResult *status) {
    return entry_point(symbol, funcPtr, CUDART_VERSION, flags, status);
}

/* The _ptsz forms are what a program compiled with --default-stream per-thread calls: its
 * "default" means the per-thread default stream. */
static unsigned long long per_thread(unsigned long long flags) {
    return flags == cudaEnableDefault ? cudaEnablePerThreadDefaultStream : flags;
}

RTAPI cudaError_t cudaGetDriverEntryPoint_ptsz(const char *symbol, void **funcPtr,
                                               unsigned long long flags,
                                               enum cudaDriverEntryPointQueryResult *status) {
    return entry_point(symbol, funcPtr, CUDART_VERSION, per_thread(flags), status);
}

RTAPI cudaError_t cudaGetDriverEntryPointByVersion(const char *symbol, void **funcPtr,
                                                   unsigned int cudaVersion,
                                                   unsigned long long flags,
                                                   enum cudaDriverEntryPointQueryResult *status) {
    return entry_point(symbol, funcPtr, cudaVersion, flags, status);
}

RTAPI cudaError_t cudaGetDriverEntryPointByVersion_ptsz(
    const char *symbol, void **funcPtr, unsigned int cudaVersion, unsigned long long flags,
    enum cudaDriverEntryPointQueryResult *status) {
    return entry_point(symbol, funcPtr, cudaVersion, per_thread(flags), status);
}

RTAPI cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
    READY();
    return err(R.stream_begin_capture(stream, (CUstreamCaptureMode)mode));
}

RTAPI cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *pGraph) {
    READY();
    return err(R.stream_end_capture(stream, pGraph));
}

RTAPI cudaError_t cudaSetDevice(int device) {
    READY();
    CUcontext ctx = NULL;
    CUresult r = R.primary_ctx_retain(&ctx, device);
    if (r != CUDA_SUCCESS)
        return cudaErrorInvalidDevice;
    return err(R.ctx_set_current(ctx));
}

RTAPI cudaError_t cudaGetDevice(int *device) {
    READY();
    return err(R.ctx_get_device(device));
}

RTAPI cudaError_t cudaDriverGetVersion(int *driverVersion) {
    READY();
    return err(R.driver_version(driverVersion));
}

RTAPI cudaError_t cudaRuntimeGetVersion(int *runtimeVersion) {
    if (!runtimeVersion)
        return cudaErrorInvalidValue;
    *runtimeVersion = CUDART_VERSION;
    return cudaSuccess;
}
