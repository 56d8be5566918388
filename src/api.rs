//! The intercepted functions, as the records name them, and what each one's address means:
//! a host pointer, or one of the GPU address spaces ([`GpuSpace`]). The mapping from API to
//! space is part of the protocol, so GPU frees need not carry their space.

use crate::gpu::GpuSpace;
use bincode::{Decode, Encode};

macro_rules! apis {
    ($($(#[$doc:meta])* $variant:ident => $name:literal, $space:expr;)*) => {
        /// The API the program called. For a realloc-like call, the stream carries a
        /// [`crate::Free`] of the old block and an [`crate::Alloc`] of the new one, both with
        /// the same api. A CUDA call that the runtime implements with a driver call is
        /// recorded once, with the API the program called.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, serde::Serialize, serde::Deserialize)]
        pub enum Api {
            $($(#[$doc])* $variant,)*
        }

        impl Api {
            /// Every API, in declaration order.
            pub const ALL: &'static [Api] = &[$(Api::$variant,)*];

            /// The function's name, as the program calls it (driver functions without
            /// their ABI suffix: `cuMemAlloc`, not `cuMemAlloc_v2`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Api::$variant => $name,)*
                }
            }

            /// The GPU address space this API's address names, `None` for host APIs.
            pub fn space(self) -> Option<GpuSpace> {
                match self {
                    $(Api::$variant => $space,)*
                }
            }
        }
    };
}

const PTR: Option<GpuSpace> = Some(GpuSpace::Pointer);
const HANDLE: Option<GpuSpace> = Some(GpuSpace::Handle);
const RESERVE: Option<GpuSpace> = Some(GpuSpace::Reservation);
const MAP: Option<GpuSpace> = Some(GpuSpace::Mapping);
const REGISTER: Option<GpuSpace> = Some(GpuSpace::Registration);
const POOL: Option<GpuSpace> = Some(GpuSpace::Pool);

apis! {
    Malloc => "malloc", None;
    Calloc => "calloc", None;
    Realloc => "realloc", None;
    ReallocArray => "reallocarray", None;
    PosixMemalign => "posix_memalign", None;
    AlignedAlloc => "aligned_alloc", None;
    Memalign => "memalign", None;
    Valloc => "valloc", None;
    Pvalloc => "pvalloc", None;
    Free => "free", None;
    Mmap => "mmap", None;
    Munmap => "munmap", None;
    Mremap => "mremap", None;

    // CUDA runtime.
    CudaMalloc => "cudaMalloc", PTR;
    CudaFree => "cudaFree", PTR;
    CudaMallocAsync => "cudaMallocAsync", PTR;
    CudaFreeAsync => "cudaFreeAsync", PTR;
    CudaMallocFromPoolAsync => "cudaMallocFromPoolAsync", PTR;
    CudaMallocHost => "cudaMallocHost", PTR;
    CudaHostAlloc => "cudaHostAlloc", PTR;
    CudaFreeHost => "cudaFreeHost", PTR;
    CudaMallocManaged => "cudaMallocManaged", PTR;
    CudaMallocPitch => "cudaMallocPitch", PTR;
    CudaMalloc3D => "cudaMalloc3D", PTR;
    CudaHostRegister => "cudaHostRegister", REGISTER;
    CudaHostUnregister => "cudaHostUnregister", REGISTER;
    CudaMemPoolCreate => "cudaMemPoolCreate", POOL;
    CudaMemPoolDestroy => "cudaMemPoolDestroy", POOL;
    CudaMemPoolTrimTo => "cudaMemPoolTrimTo", POOL;

    // CUDA driver.
    CuMemAlloc => "cuMemAlloc", PTR;
    CuMemFree => "cuMemFree", PTR;
    CuMemAllocPitch => "cuMemAllocPitch", PTR;
    CuMemAllocManaged => "cuMemAllocManaged", PTR;
    CuMemAllocAsync => "cuMemAllocAsync", PTR;
    CuMemFreeAsync => "cuMemFreeAsync", PTR;
    CuMemAllocFromPoolAsync => "cuMemAllocFromPoolAsync", PTR;
    CuMemAllocHost => "cuMemAllocHost", PTR;
    CuMemHostAlloc => "cuMemHostAlloc", PTR;
    CuMemFreeHost => "cuMemFreeHost", PTR;
    CuMemHostRegister => "cuMemHostRegister", REGISTER;
    CuMemHostUnregister => "cuMemHostUnregister", REGISTER;
    /// A physical allocation (virtual memory management): its address is the handle.
    CuMemCreate => "cuMemCreate", HANDLE;
    CuMemRelease => "cuMemRelease", HANDLE;
    /// Another reference to a live handle; balanced by a `cuMemRelease`.
    CuMemRetainAllocationHandle => "cuMemRetainAllocationHandle", HANDLE;
    /// A handle shared by another process: not this process's memory.
    CuMemImportFromShareableHandle => "cuMemImportFromShareableHandle", HANDLE;
    CuMemMap => "cuMemMap", MAP;
    CuMemUnmap => "cuMemUnmap", MAP;
    CuMemAddressReserve => "cuMemAddressReserve", RESERVE;
    CuMemAddressFree => "cuMemAddressFree", RESERVE;
    CuMemPoolCreate => "cuMemPoolCreate", POOL;
    CuMemPoolDestroy => "cuMemPoolDestroy", POOL;
    CuMemPoolTrimTo => "cuMemPoolTrimTo", POOL;
}

impl Api {
    /// Whether the allocation is served from a stream-ordered pool
    /// (`cudaMallocAsync` and its relatives).
    pub fn is_stream_ordered(self) -> bool {
        matches!(
            self,
            Api::CudaMallocAsync
                | Api::CudaMallocFromPoolAsync
                | Api::CuMemAllocAsync
                | Api::CuMemAllocFromPoolAsync
                | Api::CudaFreeAsync
                | Api::CuMemFreeAsync
        )
    }

    /// Whether an allocation by this API is the process's own memory. Imported handles
    /// belong to the exporting process, retained handles to whoever created them.
    pub fn owns(self) -> bool {
        !matches!(
            self,
            Api::CuMemImportFromShareableHandle | Api::CuMemRetainAllocationHandle
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_host_apis_have_no_space() {
        let mut names: Vec<_> = Api::ALL.iter().map(|a| a.name()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
        assert_eq!(Api::Malloc.space(), None);
        assert_eq!(Api::Mremap.space(), None);
        assert_eq!(Api::CudaFree.space(), Some(GpuSpace::Pointer));
        assert_eq!(Api::CuMemRelease.space(), Some(GpuSpace::Handle));
        assert_eq!(Api::CuMemUnmap.space(), Some(GpuSpace::Mapping));
        assert_eq!(Api::CuMemAddressFree.space(), Some(GpuSpace::Reservation));
        assert_eq!(
            Api::CudaHostUnregister.space(),
            Some(GpuSpace::Registration)
        );
    }

    #[test]
    fn ownership_and_stream_order() {
        assert!(Api::CuMemCreate.owns());
        assert!(!Api::CuMemImportFromShareableHandle.owns());
        assert!(!Api::CuMemRetainAllocationHandle.owns());
        assert!(Api::CudaMallocAsync.is_stream_ordered());
        assert!(!Api::CudaMalloc.is_stream_ordered());
    }
}
