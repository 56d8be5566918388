// Planted device-memory leaks, for comparing leakscope with compute-sanitizer --leak-check full.
//
// Each planted_* function allocates device memory from its own call site; some free it again,
// the others leak it: through the runtime (cudaMalloc) and through the driver (cuMemAlloc).
// The program prints what it leaked per function (the plan) in its GPUCHECK line, then
// destroys its context with cudaDeviceReset(), which compute-sanitizer needs to report leaks.
// No device code: nothing here depends on the GPU's architecture.
//
// Build (the driver does this):  nvcc -O0 -g -cudart {shared|static} -Xcompiler -rdynamic \
//                                     planted_leaks.cu -lcuda -o planted_{shared|static}
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define CK(call)                                                                        \
    do {                                                                                \
        cudaError_t e_ = (call);                                                        \
        if (e_ != cudaSuccess) {                                                        \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call,                 \
                    cudaGetErrorString(e_));                                            \
            exit(2);                                                                    \
        }                                                                               \
    } while (0)

#define CKD(call)                                                                       \
    do {                                                                                \
        CUresult r_ = (call);                                                           \
        if (r_ != CUDA_SUCCESS) {                                                       \
            const char *s_ = "?";                                                       \
            cuGetErrorName(r_, &s_);                                                    \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, s_);           \
            exit(2);                                                                    \
        }                                                                               \
    } while (0)

// The plan: bytes and blocks each function leaves behind.
struct planned {
    const char *name;
    unsigned long long bytes, count;
};
static struct planned plan[8];
static int nplan = 0;

static void record(const char *name, unsigned long long bytes, unsigned long long count) {
    plan[nplan].name = name;
    plan[nplan].bytes = bytes;
    plan[nplan].count = count;
    nplan++;
}

// Pointers are kept here so the leaks are leaks, not dead code the compiler could drop.
static void *volatile sink[16];

extern "C" __attribute__((noinline)) void planted_leak_weights(void) {
    void *p = NULL;
    CK(cudaMalloc(&p, 3u << 20));  // 3 MiB, leaked
    CK(cudaMemset(p, 0, 3u << 20));
    sink[0] = p;
    record("planted_leak_weights", 3u << 20, 1);
}

extern "C" __attribute__((noinline)) void planted_leak_cache(int n) {
    unsigned long long total = 0;
    for (int i = 0; i < n; i++) {  // one call site, n blocks of growing size, all leaked
        void *p = NULL;
        size_t size = 4096u * (size_t)(i + 1);
        CK(cudaMalloc(&p, size));
        sink[1 + i] = p;
        total += size;
    }
    record("planted_leak_cache", total, (unsigned long long)n);
}

extern "C" __attribute__((noinline)) void planted_leak_odd(void) {
    void *p = NULL;
    CK(cudaMalloc(&p, 1000));  // an odd size: both tools must report the size asked for
    sink[8] = p;
    record("planted_leak_odd", 1000, 1);
}

extern "C" __attribute__((noinline)) void planted_leak_driver(void) {
    CUdeviceptr d = 0;
    CKD(cuMemAlloc(&d, 65536 + 512));  // driver API, leaked
    sink[9] = (void *)d;
    record("planted_leak_driver", 65536 + 512, 1);
}

extern "C" __attribute__((noinline)) void planted_scratch_ok(void) {
    void *p = NULL;
    CK(cudaMalloc(&p, 8u << 20));  // freed: not a leak
    CK(cudaMemset(p, 1, 8u << 20));
    CK(cudaDeviceSynchronize());
    CK(cudaFree(p));
    record("planted_scratch_ok", 0, 0);
}

extern "C" __attribute__((noinline)) void planted_driver_ok(void) {
    CUdeviceptr d = 0;
    CKD(cuMemAlloc(&d, 1u << 20));  // freed through the driver: not a leak
    CKD(cuMemFree(d));
    record("planted_driver_ok", 0, 0);
}

int main(void) {
    CK(cudaSetDevice(0));
    CK(cudaFree(0));  // creates the primary context (the driver calls below use it)
    planted_leak_weights();
    planted_scratch_ok();
    planted_leak_cache(3);
    planted_leak_odd();
    planted_driver_ok();
    planted_leak_driver();
    CK(cudaDeviceSynchronize());

    unsigned long long bytes = 0, count = 0;
    for (int i = 0; i < nplan; i++) {
        printf("planted %s: %llu bytes in %llu blocks\n", plan[i].name, plan[i].bytes, plan[i].count);
        bytes += plan[i].bytes;
        count += plan[i].count;
    }
    printf("planted total: %llu bytes in %llu blocks\n", bytes, count);
    printf("GPUCHECK {\"scenario\": \"planted\", \"pid\": %d, \"figures\": {\"expected_leaked_bytes\": %llu, "
           "\"expected_leaked_count\": %llu, \"planted\": {",
           (int)getpid(), bytes, count);
    for (int i = 0; i < nplan; i++)
        printf("%s\"%s\": [%llu, %llu]", i ? ", " : "", plan[i].name, plan[i].bytes, plan[i].count);
    printf("}}, \"nvml\": {\"used_bytes\": null, \"how\": \"not read by the C program\"}}\n");
    fflush(stdout);

    CK(cudaDeviceReset());  // compute-sanitizer reports leaks when the context is destroyed
    return 0;
}
