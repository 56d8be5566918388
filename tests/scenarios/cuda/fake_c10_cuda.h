// The classes of the libc10_cuda.so stand-in (fake_c10_cuda.cpp), named as PyTorch's.
#ifndef FAKE_C10_CUDA_H
#define FAKE_C10_CUDA_H

#include "fake_cuda.h"

#include <cstddef>

namespace c10 {
namespace cuda {

struct DriverAPI {
    CUresult (*cuMemCreate_)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                             unsigned long long);
    CUresult (*cuMemRelease_)(CUmemGenericAllocationHandle);
    CUresult (*cuMemMap_)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
                          unsigned long long);
    CUresult (*cuMemUnmap_)(CUdeviceptr, size_t);
    CUresult (*cuMemAddressReserve_)(CUdeviceptr *, size_t, size_t, CUdeviceptr,
                                     unsigned long long);
    CUresult (*cuMemAddressFree_)(CUdeviceptr, size_t);
    CUresult (*cuMemSetAccess_)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
    CUresult (*cuMemGetAllocationGranularity_)(size_t *, const CUmemAllocationProp *,
                                               CUmemAllocationGranularity_flags);
    static DriverAPI *get();

  private:
    void load(const char *name, void **slot);
};

namespace CUDACachingAllocator {
namespace Native {

class ExpandableSegment {
  public:
    ExpandableSegment(int device, size_t segment_size, size_t max_handles);
    void map(size_t begin, size_t n);
    void unmap(size_t begin, size_t n);
    CUdeviceptr ptr() const { return ptr_; }

  private:
    void mapAndSetAccess(size_t begin, size_t n);
    static const size_t kMaxHandles = 64;
    int device_;
    size_t segment_size_;
    size_t max_handles_;
    CUdeviceptr ptr_ = 0;
    CUmemGenericAllocationHandle handles_[kMaxHandles] = {};
};

class DeviceCachingAllocator {
  public:
    void *malloc(size_t size);

  private:
    void *alloc_block(size_t size);
};

} // namespace Native
} // namespace CUDACachingAllocator
} // namespace cuda
} // namespace c10

namespace at {
namespace cuda {

class CUDACachingHostAllocatorImpl {
  public:
    void *allocate_host_memory(size_t size);
};

} // namespace cuda
} // namespace at

#endif
