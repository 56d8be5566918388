/* Forced in front of fake_runtime.c (gcc -include) when it is compiled into the libnccl.so.2
 * stand-in as that library's private static runtime: every runtime name gets the prefix
 * ncclrt_, and FAKE_RT_STATIC makes them hidden, so nothing of it is exported and the
 * program's own libcudart (or a tracer's cudaMalloc) is never bound to it. */
#ifndef RT_RENAME_H
#define RT_RENAME_H
#define FAKE_RT_STATIC 1
#define cudaDeviceGetDefaultMemPool ncclrt_cudaDeviceGetDefaultMemPool
#define cudaDriverGetVersion ncclrt_cudaDriverGetVersion
#define cudaFree ncclrt_cudaFree
#define cudaFreeAsync ncclrt_cudaFreeAsync
#define cudaFreeHost ncclrt_cudaFreeHost
#define cudaGetDevice ncclrt_cudaGetDevice
#define cudaGetDriverEntryPoint ncclrt_cudaGetDriverEntryPoint
#define cudaGetDriverEntryPointByVersion ncclrt_cudaGetDriverEntryPointByVersion
#define cudaGetDriverEntryPointByVersion_ptsz ncclrt_cudaGetDriverEntryPointByVersion_ptsz
#define cudaGetDriverEntryPoint_ptsz ncclrt_cudaGetDriverEntryPoint_ptsz
#define cudaHostAlloc ncclrt_cudaHostAlloc
#define cudaHostRegister ncclrt_cudaHostRegister
#define cudaHostUnregister ncclrt_cudaHostUnregister
#define cudaMalloc ncclrt_cudaMalloc
#define cudaMalloc3D ncclrt_cudaMalloc3D
#define cudaMallocAsync ncclrt_cudaMallocAsync
#define cudaMallocFromPoolAsync ncclrt_cudaMallocFromPoolAsync
#define cudaMallocHost ncclrt_cudaMallocHost
#define cudaMallocManaged ncclrt_cudaMallocManaged
#define cudaMallocPitch ncclrt_cudaMallocPitch
#define cudaMemPoolCreate ncclrt_cudaMemPoolCreate
#define cudaMemPoolDestroy ncclrt_cudaMemPoolDestroy
#define cudaMemPoolGetAttribute ncclrt_cudaMemPoolGetAttribute
#define cudaMemPoolTrimTo ncclrt_cudaMemPoolTrimTo
#define cudaRuntimeGetVersion ncclrt_cudaRuntimeGetVersion
#define cudaSetDevice ncclrt_cudaSetDevice
#define cudaStreamBeginCapture ncclrt_cudaStreamBeginCapture
#define cudaStreamEndCapture ncclrt_cudaStreamEndCapture
#define cudaMallocAsync_ptsz ncclrt_cudaMallocAsync_ptsz
#define cudaFreeAsync_ptsz ncclrt_cudaFreeAsync_ptsz
#define cudaMallocFromPoolAsync_ptsz ncclrt_cudaMallocFromPoolAsync_ptsz
#endif
