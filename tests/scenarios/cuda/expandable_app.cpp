// GPU scenario c: PyTorch-style allocation through the libc10_cuda.so stand-in
// (fake_c10_cuda.cpp) and driver entry points from cudaGetDriverEntryPointByVersion & co.
//
//   grow_expandable        ExpandableSegment: 64 MiB reserved, 5 handles of 2 MiB mapped, the
//                          last 2 unmapped and released -> 6 MiB in 3 handles, device 0,
//                          pool pytorch-expandable
//   eager_alloc            DeviceCachingAllocator::malloc 2 x 20 MiB   pool pytorch-caching
//   graph_capture_alloc    DeviceCachingAllocator::malloc 2 MiB inside a capture window
//                          -> pool pytorch-graph-pool, during_capture
//   pinned_cache_alloc     CUDACachingHostAllocatorImpl 1 MiB pinned   pool pytorch-pinned-cache
//   direct_v2_entry        "cuMemAlloc" at 12000 (cuMemAlloc_v2): 123,456        pool direct
//   nested_resolver_alloc  "cuGetProcAddress" at 12000 from the runtime, then "cuMemAlloc" at
//                          12020 through it: 70,000                           pool direct
//   entry_point_managed    cudaGetDriverEntryPoint("cuMemAllocManaged"): 10,000 managed
//   ptsz_async_alloc       "cuMemAllocAsync" with cudaEnablePerThreadDefaultStream:
//                          2 x 50,000, must reach cuMemAllocAsync_ptsz   pool cuda-async-pool
//   ptsz_async_churn       cudaGetDriverEntryPoint_ptsz("cuMemAllocAsync") and
//                          cudaGetDriverEntryPointByVersion_ptsz("cuMemFreeAsync"): 50,000
//                          allocated and freed, both _ptsz
//   legacy_roundtrip       "cuMemAlloc" / "cuMemFree" at version 3000: the legacy 32-bit
//                          functions, unwrapped; 4,096 allocated and freed; a canary after
//                          the 32-bit pointer must survive
//
// Device 0's default pool is trimmed to 0 at the end.
#include "fake_c10_cuda.h"
#include "fake_cuda.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#define NOIPA __attribute__((noipa))
#define CHECK(call) check((call), #call, __LINE__)
#define MiB (1024ull * 1024ull)

using c10::cuda::CUDACachingAllocator::Native::DeviceCachingAllocator;
using c10::cuda::CUDACachingAllocator::Native::ExpandableSegment;

static void check(int r, const char *what, int line) {
    if (r != 0) {
        std::printf("FAILED line %d: %s = %d\n", line, what, r);
        std::exit(1);
    }
}

void *volatile kept[32];
static int nkept;

static void keep(void *p, const char *what) {
    kept[nkept++] = p;
    std::printf("%s %p\n", what, p);
}

template <typename F> static F entry(const char *name, unsigned version, unsigned long long flags) {
    void *fn = nullptr;
    cudaDriverEntryPointQueryResult st = cudaDriverEntryPointSymbolNotFound;
    CHECK(cudaGetDriverEntryPointByVersion(name, &fn, version, flags, &st));
    if (st != cudaDriverEntryPointSuccess || fn == nullptr) {
        std::printf("FAILED: %s at %u: status %d\n", name, version, (int)st);
        std::exit(1);
    }
    return reinterpret_cast<F>(fn);
}

ExpandableSegment *segment;

NOIPA void grow_expandable() {
    segment = new ExpandableSegment(0, 2 * MiB, 32);
    segment->map(0, 5);
    segment->unmap(3, 2);
    std::printf("segment at 0x%llx\n", segment->ptr());
}

DeviceCachingAllocator caching;

NOIPA void eager_alloc() {
    for (int i = 0; i < 2; i++)
        keep(caching.malloc(20 * MiB), "eager");
}

NOIPA void graph_capture_alloc() {
    CHECK(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeThreadLocal));
    keep(caching.malloc(2 * MiB), "graph");
    cudaGraph_t graph = nullptr;
    CHECK(cudaStreamEndCapture(nullptr, &graph));
}

NOIPA void pinned_cache_alloc() {
    at::cuda::CUDACachingHostAllocatorImpl host;
    void *p = host.allocate_host_memory(1 * MiB);
    static_cast<char *>(p)[0] = 1;
    kept[nkept++] = p;
}

typedef CUresult (*alloc_v2_fn)(CUdeviceptr *, size_t);

NOIPA void direct_v2_entry() {
    auto fn = entry<alloc_v2_fn>("cuMemAlloc", 12000, cudaEnableDefault);
    CUdeviceptr d = 0;
    CHECK(fn(&d, 123456));
    keep(reinterpret_cast<void *>(d), "v2");
}

typedef CUresult (*getproc_v2_fn)(const char *, void **, int, cuuint64_t,
                                  CUdriverProcAddressQueryResult *);

NOIPA void nested_resolver_alloc() {
    auto getproc = entry<getproc_v2_fn>("cuGetProcAddress", 12000, cudaEnableDefault);
    void *fn = nullptr;
    CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    CHECK(getproc("cuMemAlloc", &fn, 12020, CU_GET_PROC_ADDRESS_DEFAULT, &st));
    CUdeviceptr d = 0;
    CHECK(reinterpret_cast<alloc_v2_fn>(fn)(&d, 70000));
    keep(reinterpret_cast<void *>(d), "nested");
}

NOIPA void entry_point_managed() {
    void *fn = nullptr;
    cudaDriverEntryPointQueryResult st = cudaDriverEntryPointSymbolNotFound;
    CHECK(cudaGetDriverEntryPoint("cuMemAllocManaged", &fn, cudaEnableDefault, &st));
    CUdeviceptr d = 0;
    CHECK(reinterpret_cast<CUresult (*)(CUdeviceptr *, size_t, unsigned)>(fn)(&d, 10000,
                                                                              CU_MEM_ATTACH_GLOBAL));
    keep(reinterpret_cast<void *>(d), "managed");
}

typedef CUresult (*alloc_async_fn)(CUdeviceptr *, size_t, CUstream);
typedef CUresult (*free_async_fn)(CUdeviceptr, CUstream);

NOIPA void ptsz_async_alloc() {
    auto fn = entry<alloc_async_fn>("cuMemAllocAsync", 12000, cudaEnablePerThreadDefaultStream);
    for (int i = 0; i < 2; i++) {
        CUdeviceptr d = 0;
        CHECK(fn(&d, 50000, nullptr));
        keep(reinterpret_cast<void *>(d), "ptsz");
    }
}

NOIPA void ptsz_async_churn() {
    void *a = nullptr, *f = nullptr;
    cudaDriverEntryPointQueryResult st = cudaDriverEntryPointSymbolNotFound;
    CHECK(cudaGetDriverEntryPoint_ptsz("cuMemAllocAsync", &a, cudaEnableDefault, &st));
    CHECK(cudaGetDriverEntryPointByVersion_ptsz("cuMemFreeAsync", &f, 12000, cudaEnableDefault,
                                                &st));
    CUdeviceptr d = 0;
    CHECK(reinterpret_cast<alloc_async_fn>(a)(&d, 50000, nullptr));
    CHECK(reinterpret_cast<free_async_fn>(f)(d, nullptr));
}

struct legacy_out {
    CUdeviceptr_v1 ptr;
    unsigned canary;
};

NOIPA void legacy_roundtrip() {
    void *a = nullptr, *f = nullptr;
    cudaDriverEntryPointQueryResult st = cudaDriverEntryPointSymbolNotFound;
    CHECK(cudaGetDriverEntryPointByVersion("cuMemAlloc", &a, 3000, cudaEnableDefault, &st));
    std::printf("legacy alloc status %d\n", (int)st);
    CHECK(cudaGetDriverEntryPointByVersion("cuMemFree", &f, 3000, cudaEnableDefault, &st));
    legacy_out out = {0, 0xC0FFEEu};
    CHECK(reinterpret_cast<CUresult (*)(CUdeviceptr_v1 *, unsigned)>(a)(&out.ptr, 4096));
    std::printf("legacy ptr 0x%x canary 0x%x\n", out.ptr, out.canary);
    if (out.canary != 0xC0FFEEu)
        std::exit(3);
    CHECK(reinterpret_cast<CUresult (*)(CUdeviceptr_v1)>(f)(out.ptr));
}

static void statuses() {
    const char *names[] = {"cuNoSuchFunction", "cuMemCreate", "cuMemAllocAsync"};
    unsigned versions[] = {12000, 10000, 11000};
    for (int i = 0; i < 3; i++) {
        void *fn = reinterpret_cast<void *>(1);
        cudaDriverEntryPointQueryResult st = cudaDriverEntryPointSuccess;
        int r = cudaGetDriverEntryPointByVersion(names[i], &fn, versions[i], cudaEnableDefault, &st);
        std::printf("%s at %u: result %d status %d fn %p\n", names[i], versions[i], r, (int)st,
                    fn);
    }
}

int main() {
    CHECK(cudaSetDevice(0));
    grow_expandable();
    eager_alloc();
    graph_capture_alloc();
    pinned_cache_alloc();
    direct_v2_entry();
    nested_resolver_alloc();
    entry_point_managed();
    ptsz_async_alloc();
    ptsz_async_churn();
    legacy_roundtrip();
    statuses();
    cudaMemPool_t dflt = nullptr;
    CHECK(cudaDeviceGetDefaultMemPool(&dflt, 0));
    CHECK(cudaMemPoolTrimTo(dflt, 0));
    std::printf("expandable_app done, %d blocks kept\n", nkept);
    return 0;
}
