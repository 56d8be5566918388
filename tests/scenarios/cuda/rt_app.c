/* GPU scenario a: a program linked against the runtime (libcudart.so.13 stand-in), calling
 * every runtime allocation function. Each leak is planted from a function of its own:
 *
 *   rt_leak_device          cudaMalloc 3 x 1,000,000                 device 0
 *   rt_leak_malloc_host     cudaMallocHost 40,000                    pinned
 *   rt_leak_host_alloc      cudaHostAlloc 2 x 12,345                 pinned
 *   rt_leak_managed         cudaMallocManaged 2 x 65,536             managed, device 0
 *   rt_leak_pitch           cudaMallocPitch 1000 x 30 (pitch 1024) = 30,720, device 0
 *   rt_leak_3d              cudaMalloc3D 100 x 10 x 5 (pitch 512)  = 25,600, device 0
 *   rt_leak_async_default   cudaMallocAsync 3 x 300,000, one freed  = 600,000, default pool 0
 *   rt_leak_from_pool       cudaMallocFromPoolAsync 250,000 from a created pool (device 0)
 *   rt_leak_async_ptsz      cudaMallocAsync_ptsz 3 x 45,000, one freed with
 *                           cudaFreeAsync_ptsz                      = 90,000, default pool 0
 *   rt_leak_from_pool_ptsz  cudaMallocFromPoolAsync_ptsz 35,000 from the created pool
 *   rt_register_keep        malloc 65,536 (host) + cudaHostRegister of it (registration)
 *   rt_alloc_in_capture     cudaMalloc 2 x 4,096 inside a stream-capture window, device 0
 *   rt_alloc_other_thread   cudaMalloc 3,000 on ANOTHER thread while the main thread's
 *                           capture window is open: not made during capture
 *   rt_leak_device1         cudaMalloc 2 x 5,000,000 after cudaSetDevice(1)
 *   rt_leak_managed_dev1    cudaMallocManaged 33,333 on device 1
 *
 * and frees everything else: rt_churn (50 rounds of cudaMalloc/cudaMallocHost/
 * cudaMallocManaged/cudaMallocAsync with their frees, and a host malloc of the size just
 * freed with cudaFreeHost, which may get the pinned block's address), rt_pool_churn (a freed allocation from
 * each created pool; the second pool is then destroyed), rt_register_churn (register,
 * unregister, free). The created pool and the default pool of device 0 are trimmed to 0 at
 * the end. The program starts with cudaFree(NULL), the usual way to create the context.
 * stdout: the device addresses handed out and the pool readings. */
#include "fake_cuda.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOIPA __attribute__((noipa))
#define CHECK(call) check((call), #call, __LINE__)

static void check(int r, const char *what, int line) {
    if (r != 0) {
        printf("FAILED line %d: %s = %d\n", line, what, r);
        exit(1);
    }
}

void *volatile kept[64];
static int nkept;

static void keep(void *p) { kept[nkept++] = p; }

static void show(const char *what, void *p) { printf("%s %p\n", what, p); }

char *volatile host_sink;

NOIPA void rt_churn(int rounds) {
    for (int i = 0; i < rounds; i++) {
        void *d = NULL, *h = NULL, *m = NULL, *a = NULL;
        CHECK(cudaMalloc(&d, 1000));
        CHECK(cudaMallocHost(&h, 500));
        memset(h, i, 500);
        CHECK(cudaMallocManaged(&m, 700, cudaMemAttachGlobal));
        CHECK(cudaMallocAsync(&a, 900, NULL));
        CHECK(cudaFreeAsync(a, NULL));
        CHECK(cudaFree(m));
        CHECK(cudaFreeHost(h));
        host_sink = malloc(500);
        memset(host_sink, i, 500);
        free(host_sink);
        CHECK(cudaFree(d));
        if (i == 0)
            show("churn", d);
    }
}

NOIPA void rt_leak_device(void) {
    for (int i = 0; i < 3; i++) {
        void *p = NULL;
        CHECK(cudaMalloc(&p, 1000000));
        show("device", p);
        keep(p);
    }
}

NOIPA void rt_leak_malloc_host(void) {
    void *p = NULL;
    CHECK(cudaMallocHost(&p, 40000));
    memset(p, 1, 40000);
    keep(p);
}

NOIPA void rt_leak_host_alloc(void) {
    for (int i = 0; i < 2; i++) {
        void *p = NULL;
        CHECK(cudaHostAlloc(&p, 12345, cudaHostAllocPortable));
        memset(p, 2, 12345);
        keep(p);
    }
}

NOIPA void rt_leak_managed(void) {
    for (int i = 0; i < 2; i++) {
        void *p = NULL;
        CHECK(cudaMallocManaged(&p, 65536, cudaMemAttachGlobal));
        show("managed", p);
        keep(p);
    }
}

NOIPA void rt_leak_pitch(void) {
    void *p = NULL;
    size_t pitch = 0;
    CHECK(cudaMallocPitch(&p, &pitch, 1000, 30));
    printf("pitch %zu\n", pitch);
    show("pitched", p);
    keep(p);
}

NOIPA void rt_leak_3d(void) {
    struct cudaPitchedPtr pp;
    struct cudaExtent e = {100, 10, 5};
    CHECK(cudaMalloc3D(&pp, e));
    printf("3d pitch %zu xsize %zu ysize %zu\n", pp.pitch, pp.xsize, pp.ysize);
    show("3d", pp.ptr);
    keep(pp.ptr);
}

NOIPA void rt_leak_async_default(void) {
    void *p[3];
    for (int i = 0; i < 3; i++) {
        CHECK(cudaMallocAsync(&p[i], 300000, NULL));
        show("async", p[i]);
    }
    CHECK(cudaFreeAsync(p[1], NULL));
    keep(p[0]);
    keep(p[2]);
}

NOIPA void rt_leak_async_ptsz(void) {
    void *p[3];
    for (int i = 0; i < 3; i++) {
        CHECK(cudaMallocAsync_ptsz(&p[i], 45000, NULL));
        show("async-ptsz", p[i]);
    }
    CHECK(cudaFreeAsync_ptsz(p[0], NULL));
    keep(p[1]);
    keep(p[2]);
}

NOIPA void rt_leak_from_pool_ptsz(cudaMemPool_t pool) {
    void *p = NULL;
    CHECK(cudaMallocFromPoolAsync_ptsz(&p, 35000, pool, NULL));
    show("from-pool-ptsz", p);
    keep(p);
}

NOIPA void rt_leak_from_pool(cudaMemPool_t pool) {
    void *p = NULL;
    CHECK(cudaMallocFromPoolAsync(&p, 250000, pool, NULL));
    show("from-pool", p);
    keep(p);
}

NOIPA void rt_pool_churn(cudaMemPool_t pool, size_t n) {
    void *p = NULL;
    CHECK(cudaMallocFromPoolAsync(&p, n, pool, NULL));
    CHECK(cudaFreeAsync(p, NULL));
}

static void pool_reading(const char *what, cudaMemPool_t pool) {
    unsigned long long reserved = 0, used = 0;
    CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
    CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used));
    printf("%s reserved %llu used %llu\n", what, reserved, used);
}

NOIPA void rt_register_keep(void) {
    char *buf = malloc(65536);
    memset(buf, 3, 65536);
    CHECK(cudaHostRegister(buf, 65536, cudaHostRegisterDefault));
    keep(buf);
}

NOIPA void rt_register_churn(void) {
    char *buf = malloc(10000);
    memset(buf, 4, 10000);
    CHECK(cudaHostRegister(buf, 10000, cudaHostRegisterDefault));
    CHECK(cudaHostUnregister(buf));
    free(buf);
}

NOIPA void rt_alloc_in_capture(void) {
    for (int i = 0; i < 2; i++) {
        void *p = NULL;
        CHECK(cudaMalloc(&p, 4096));
        show("captured", p);
        keep(p);
    }
}

static void *other_thread_block;

NOIPA void *rt_alloc_other_thread(void *arg) {
    (void)arg;
    CHECK(cudaMalloc(&other_thread_block, 3000));
    return NULL;
}

NOIPA void rt_leak_device1(void) {
    for (int i = 0; i < 2; i++) {
        void *p = NULL;
        CHECK(cudaMalloc(&p, 5000000));
        show("device1", p);
        keep(p);
    }
}

NOIPA void rt_leak_managed_dev1(void) {
    void *p = NULL;
    CHECK(cudaMallocManaged(&p, 33333, cudaMemAttachGlobal));
    show("managed1", p);
    keep(p);
}

int main(void) {
    CHECK(cudaFree(NULL));
    int v = 0;
    CHECK(cudaRuntimeGetVersion(&v));
    printf("runtime %d\n", v);
    CHECK(cudaDriverGetVersion(&v));
    printf("driver %d\n", v);
    CHECK(cudaSetDevice(0));

    rt_churn(50);
    rt_leak_device();
    rt_leak_malloc_host();
    rt_leak_host_alloc();
    rt_leak_managed();
    rt_leak_pitch();
    rt_leak_3d();
    rt_leak_async_default();
    rt_leak_async_ptsz();

    struct cudaMemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = 0;
    cudaMemPool_t pool = NULL, pool2 = NULL;
    CHECK(cudaMemPoolCreate(&pool, &props));
    rt_leak_from_pool(pool);
    rt_leak_from_pool_ptsz(pool);
    rt_pool_churn(pool, 100000);
    CHECK(cudaMemPoolCreate(&pool2, &props));
    rt_pool_churn(pool2, 77000);
    CHECK(cudaMemPoolDestroy(pool2));

    rt_register_keep();
    rt_register_churn();

    CHECK(cudaStreamBeginCapture(NULL, cudaStreamCaptureModeRelaxed));
    rt_alloc_in_capture();
    pthread_t other;
    if (pthread_create(&other, NULL, rt_alloc_other_thread, NULL) != 0 ||
        pthread_join(other, NULL) != 0)
        return 2;
    show("other-thread", other_thread_block);
    keep(other_thread_block);
    cudaGraph_t graph = NULL;
    CHECK(cudaStreamEndCapture(NULL, &graph));

    CHECK(cudaSetDevice(1));
    rt_leak_device1();
    rt_leak_managed_dev1();
    CHECK(cudaSetDevice(0));
    int dev = -1;
    CHECK(cudaGetDevice(&dev));
    printf("current device %d\n", dev);

    cudaMemPool_t dflt = NULL;
    CHECK(cudaDeviceGetDefaultMemPool(&dflt, 0));
    CHECK(cudaMemPoolTrimTo(pool, 0));
    CHECK(cudaMemPoolTrimTo(dflt, 0));
    pool_reading("created pool", pool);
    pool_reading("default pool", dflt);
    printf("rt_app done, %d blocks kept\n", nkept);
    return 0;
}
