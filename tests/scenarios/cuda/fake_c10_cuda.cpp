// Stand-in for PyTorch's libc10_cuda.so (built under that name), with PyTorch's class and
// namespace names so that stacks through it look like PyTorch's:
//
// - c10::cuda::DriverAPI: driver functions fetched with
//   cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &status), as
//   c10/cuda/driver_api.cpp does (expandable segments reach the driver ONLY this way);
// - c10::cuda::CUDACachingAllocator::Native::ExpandableSegment: reserves a large address
//   range once, then maps and unmaps 2 MiB handles at its end (cuMemCreate + cuMemMap +
//   cuMemSetAccess; cuMemUnmap + cuMemRelease);
// - c10::cuda::CUDACachingAllocator::Native::DeviceCachingAllocator: blocks from cudaMalloc;
// - at::cuda::CUDACachingHostAllocatorImpl: pinned blocks from cudaHostAlloc.
#include "fake_cuda.h"
#include "fake_c10_cuda.h"

#include <cstdio>
#include <cstdlib>

#define NOIPA __attribute__((noipa))

namespace {
void check(int r, const char *what) {
    if (r != 0) {
        std::printf("FAILED in libc10_cuda: %s = %d\n", what, r);
        std::exit(1);
    }
}
} // namespace

#define CHECK(call) check((call), #call)

namespace c10 {
namespace cuda {

DriverAPI *DriverAPI::get() {
    static DriverAPI api;
    static bool loaded = false;
    if (!loaded) {
        api.load("cuMemCreate", reinterpret_cast<void **>(&api.cuMemCreate_));
        api.load("cuMemRelease", reinterpret_cast<void **>(&api.cuMemRelease_));
        api.load("cuMemMap", reinterpret_cast<void **>(&api.cuMemMap_));
        api.load("cuMemUnmap", reinterpret_cast<void **>(&api.cuMemUnmap_));
        api.load("cuMemAddressReserve", reinterpret_cast<void **>(&api.cuMemAddressReserve_));
        api.load("cuMemAddressFree", reinterpret_cast<void **>(&api.cuMemAddressFree_));
        api.load("cuMemSetAccess", reinterpret_cast<void **>(&api.cuMemSetAccess_));
        api.load("cuMemGetAllocationGranularity",
                 reinterpret_cast<void **>(&api.cuMemGetAllocationGranularity_));
        loaded = true;
    }
    return &api;
}

void DriverAPI::load(const char *name, void **slot) {
    cudaDriverEntryPointQueryResult st = cudaDriverEntryPointSymbolNotFound;
    CHECK(cudaGetDriverEntryPointByVersion(name, slot, 12000, cudaEnableDefault, &st));
    if (st != cudaDriverEntryPointSuccess || *slot == nullptr) {
        std::printf("FAILED in libc10_cuda: no entry point %s (status %d)\n", name, (int)st);
        std::exit(1);
    }
}

namespace CUDACachingAllocator {
namespace Native {

ExpandableSegment::ExpandableSegment(int device, size_t segment_size, size_t max_handles)
    : device_(device), segment_size_(segment_size), max_handles_(max_handles) {
    if (max_handles_ > kMaxHandles)
        std::exit(1);
    CHECK(DriverAPI::get()->cuMemAddressReserve_(&ptr_, segment_size_ * max_handles_, 0, 0, 0));
}

NOIPA void ExpandableSegment::map(size_t begin, size_t n) {
    for (size_t i = begin; i < begin + n; i++) {
        CUmemAllocationProp prop = {};
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = device_;
        CHECK(DriverAPI::get()->cuMemCreate_(&handles_[i], segment_size_, &prop, 0));
    }
    mapAndSetAccess(begin, n);
}

NOIPA void ExpandableSegment::mapAndSetAccess(size_t begin, size_t n) {
    for (size_t i = begin; i < begin + n; i++)
        CHECK(DriverAPI::get()->cuMemMap_(ptr_ + i * segment_size_, segment_size_, 0, handles_[i],
                                          0));
    CUmemAccessDesc desc = {{CU_MEM_LOCATION_TYPE_DEVICE, device_},
                            CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    CHECK(DriverAPI::get()->cuMemSetAccess_(ptr_ + begin * segment_size_, n * segment_size_, &desc,
                                            1));
}

NOIPA void ExpandableSegment::unmap(size_t begin, size_t n) {
    for (size_t i = begin; i < begin + n; i++) {
        CHECK(DriverAPI::get()->cuMemUnmap_(ptr_ + i * segment_size_, segment_size_));
        CHECK(DriverAPI::get()->cuMemRelease_(handles_[i]));
        handles_[i] = 0;
    }
}

NOIPA void *DeviceCachingAllocator::alloc_block(size_t size) {
    void *p = nullptr;
    CHECK(cudaMalloc(&p, size));
    return p;
}

NOIPA void *DeviceCachingAllocator::malloc(size_t size) { return alloc_block(size); }

} // namespace Native
} // namespace CUDACachingAllocator
} // namespace cuda
} // namespace c10

namespace at {
namespace cuda {

NOIPA void *CUDACachingHostAllocatorImpl::allocate_host_memory(size_t size) {
    void *p = nullptr;
    CHECK(cudaHostAlloc(&p, size, cudaHostAllocDefault));
    return p;
}

} // namespace cuda
} // namespace at
