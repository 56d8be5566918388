/* GPU scenario b2: a program linked against the driver (libcuda.so.1 stand-in) calling every
 * exported driver allocation symbol by name, plus the exported resolvers cuGetProcAddress
 * (v1 signature) and cuGetProcAddress_v2, and cuGetExportTable (which fails, and must keep
 * failing the same way). Planted leaks:
 *
 *   driver_leak_device      cuMemAlloc_v2 3 x 262,144, one freed   = 524,288, device 0
 *   driver_leak_pitch       cuMemAllocPitch_v2 3000 x 7 (pitch 3072) = 21,504, device 0
 *   driver_leak_managed     cuMemAllocManaged 2 x 50,000 on device 1 = 100,000
 *   driver_leak_host_alloc  cuMemHostAlloc 30,000                   pinned
 *   driver_leak_alloc_host  cuMemAllocHost_v2 2 x 7,000            = 14,000 pinned
 *   driver_register_keep    malloc 12,288 + cuMemHostRegister_v2 (registration, kept)
 *   driver_async            cuMemAllocAsync 3 x 10,000, one freed  = 20,000, default pool 0
 *   driver_async_ptsz       cuMemAllocAsync_ptsz 2 x 20,000, one freed with
 *                           cuMemFreeAsync_ptsz                   = 20,000, default pool 0
 *   driver_pool_alloc       cuMemAllocFromPoolAsync 400,000 from a pool on device 1
 *   driver_pool_alloc_ptsz  cuMemAllocFromPoolAsync_ptsz 5,000 from the same pool
 *   v1_resolver_managed     cuGetProcAddress("cuMemAllocManaged", 12000): 1,000,000 managed,
 *                           device 0
 *   v2_resolver_pinned      cuGetProcAddress_v2("cuMemAllocHost", 12000): 100,000 pinned
 *   boundary_v2_alloc       cuGetProcAddress_v2("cuMemAlloc", 3020), the first version of the
 *                           _v2 ABI: 33,000, device 0
 *   v1_resolver_by_pointer  cuGetProcAddress_v2("cuGetProcAddress", 11030) gives the v1
 *                           resolver; through it "cuMemAlloc" at 12000: 44,000, device 0
 *   rtld_default_alloc      dlsym(RTLD_DEFAULT, "cuMemAlloc_v2"): 66,000, device 0
 *   dlopen_handle_alloc     dlsym(dlopen("libcuda.so.1", RTLD_NOLOAD), "cuMemAlloc_v2"):
 *                           77,000, device 0
 *
 * Freed: driver_pinned_churn (20 x cuMemAllocHost_v2 + cuMemFreeHost), driver_register_churn,
 * driver_pool_churn (a second pool on device 0, one allocation freed, pool destroyed),
 * v2_resolver_legacy (cuMemAlloc asked at version 3010: the legacy 32-bit function, used and
 * freed with the legacy cuMemFree). The device 1 pool and device 0's default pool are trimmed
 * to 0 at the end. */
#include "fake_cuda.h"

#include <dlfcn.h>
#include <stdint.h>
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

void *volatile kept_host[16];
CUdeviceptr volatile kept_dev[32];
static int nhost, ndev;

static void keep_dev(CUdeviceptr d) {
    kept_dev[ndev++] = d;
    printf("device 0x%llx\n", d);
}

NOIPA void driver_leak_device(void) {
    CUdeviceptr d[3];
    for (int i = 0; i < 3; i++)
        CHECK(cuMemAlloc_v2(&d[i], 262144));
    CHECK(cuMemFree_v2(d[1]));
    keep_dev(d[0]);
    keep_dev(d[2]);
}

NOIPA void driver_leak_pitch(void) {
    CUdeviceptr d = 0;
    size_t pitch = 0;
    CHECK(cuMemAllocPitch_v2(&d, &pitch, 3000, 7, 4));
    printf("pitch %zu\n", pitch);
    keep_dev(d);
}

NOIPA void driver_leak_managed(void) {
    for (int i = 0; i < 2; i++) {
        CUdeviceptr d = 0;
        CHECK(cuMemAllocManaged(&d, 50000, CU_MEM_ATTACH_GLOBAL));
        keep_dev(d);
    }
}

NOIPA void driver_leak_host_alloc(void) {
    void *p = NULL;
    CHECK(cuMemHostAlloc(&p, 30000, CU_MEMHOSTALLOC_PORTABLE));
    memset(p, 1, 30000);
    kept_host[nhost++] = p;
}

NOIPA void driver_leak_alloc_host(void) {
    for (int i = 0; i < 2; i++) {
        void *p = NULL;
        CHECK(cuMemAllocHost_v2(&p, 7000));
        memset(p, 2, 7000);
        kept_host[nhost++] = p;
    }
}

NOIPA void driver_pinned_churn(void) {
    for (int i = 0; i < 20; i++) {
        void *p = NULL;
        CHECK(cuMemAllocHost_v2(&p, 3000 + (size_t)i));
        memset(p, i, 3000);
        CHECK(cuMemFreeHost(p));
    }
}

NOIPA void driver_register_keep(void) {
    char *buf = malloc(12288);
    memset(buf, 5, 12288);
    CHECK(cuMemHostRegister_v2(buf, 12288, CU_MEMHOSTREGISTER_PORTABLE));
    kept_host[nhost++] = buf;
}

NOIPA void driver_register_churn(void) {
    char *buf = malloc(8192);
    memset(buf, 6, 8192);
    CHECK(cuMemHostRegister_v2(buf, 8192, 0));
    CHECK(cuMemHostUnregister(buf));
    free(buf);
}

NOIPA void driver_async(void) {
    CUdeviceptr d[3];
    for (int i = 0; i < 3; i++)
        CHECK(cuMemAllocAsync(&d[i], 10000, NULL));
    CHECK(cuMemFreeAsync(d[0], NULL));
    keep_dev(d[1]);
    keep_dev(d[2]);
}

NOIPA void driver_async_ptsz(void) {
    CUdeviceptr d[2];
    for (int i = 0; i < 2; i++)
        CHECK(cuMemAllocAsync_ptsz(&d[i], 20000, NULL));
    CHECK(cuMemFreeAsync_ptsz(d[1], NULL));
    keep_dev(d[0]);
}

NOIPA void driver_pool_alloc(CUmemoryPool pool) {
    CUdeviceptr d = 0;
    CHECK(cuMemAllocFromPoolAsync(&d, 400000, pool, NULL));
    keep_dev(d);
}

NOIPA void driver_pool_alloc_ptsz(CUmemoryPool pool) {
    CUdeviceptr d = 0;
    CHECK(cuMemAllocFromPoolAsync_ptsz(&d, 5000, pool, NULL));
    keep_dev(d);
}

NOIPA void driver_pool_churn(void) {
    CUmemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = 0;
    CUmemoryPool pool = NULL;
    CHECK(cuMemPoolCreate(&pool, &props));
    CUdeviceptr d = 0;
    CHECK(cuMemAllocFromPoolAsync(&d, 1000, pool, NULL));
    CHECK(cuMemFreeAsync(d, NULL));
    CHECK(cuMemPoolDestroy(pool));
}

NOIPA void v1_resolver_managed(void) {
    CUresult (*fn)(CUdeviceptr *, size_t, unsigned int) = NULL;
    CHECK(cuGetProcAddress("cuMemAllocManaged", (void **)&fn, 12000, CU_GET_PROC_ADDRESS_DEFAULT));
    CUdeviceptr d = 0;
    CHECK(fn(&d, 1000000, CU_MEM_ATTACH_GLOBAL));
    keep_dev(d);
}

NOIPA void v2_resolver_pinned(void) {
    CUresult (*fn)(void **, size_t) = NULL;
    CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    CHECK(cuGetProcAddress_v2("cuMemAllocHost", (void **)&fn, 12000, CU_GET_PROC_ADDRESS_DEFAULT,
                              &st));
    printf("cuMemAllocHost status %d\n", st);
    void *p = NULL;
    CHECK(fn(&p, 100000));
    memset(p, 7, 100000);
    kept_host[nhost++] = p;
}

typedef CUresult (*alloc_v2_fn)(CUdeviceptr *, size_t);

NOIPA void boundary_v2_alloc(void) {
    alloc_v2_fn fn = NULL;
    CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    CHECK(cuGetProcAddress_v2("cuMemAlloc", (void **)&fn, 3020, 0, &st));
    CUdeviceptr d = 0;
    CHECK(fn(&d, 33000));
    keep_dev(d);
}

NOIPA void v1_resolver_by_pointer(void) {
    CUresult (*v1)(const char *, void **, int, cuuint64_t) = NULL;
    CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    CHECK(cuGetProcAddress_v2("cuGetProcAddress", (void **)&v1, 11030, 0, &st));
    alloc_v2_fn fn = NULL;
    CHECK(v1("cuMemAlloc", (void **)&fn, 12000, 0));
    CUdeviceptr d = 0;
    CHECK(fn(&d, 44000));
    keep_dev(d);
}

NOIPA void rtld_default_alloc(void) {
    alloc_v2_fn fn = (alloc_v2_fn)dlsym(RTLD_DEFAULT, "cuMemAlloc_v2");
    CUdeviceptr d = 0;
    CHECK(fn ? fn(&d, 66000) : -1);
    keep_dev(d);
}

NOIPA void dlopen_handle_alloc(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    alloc_v2_fn fn = lib ? (alloc_v2_fn)dlsym(lib, "cuMemAlloc_v2") : NULL;
    CUdeviceptr d = 0;
    CHECK(fn ? fn(&d, 77000) : -1);
    keep_dev(d);
    dlclose(lib);
}

struct legacy_out {
    CUdeviceptr_v1 ptr;
    unsigned int canary;
};

NOIPA void v2_resolver_legacy(void) {
    CUresult (*alloc)(CUdeviceptr_v1 *, unsigned int) = NULL;
    CUresult (*release)(CUdeviceptr_v1) = NULL;
    CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    CHECK(cuGetProcAddress_v2("cuMemAlloc", (void **)&alloc, 3010, 0, &st));
    printf("legacy cuMemAlloc status %d\n", st);
    CHECK(cuGetProcAddress_v2("cuMemFree", (void **)&release, 3010, 0, &st));
    struct legacy_out out = {0, 0xC0FFEEu};
    CHECK(alloc(&out.ptr, 4096));
    printf("legacy ptr 0x%x canary 0x%x\n", out.ptr, out.canary);
    CHECK(release(out.ptr));
}

static void statuses(void) {
    void *fn = (void *)1;
    CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SUCCESS;
    CUresult r = cuGetProcAddress_v2("cuNoSuchFunction", &fn, 12000, 0, &st);
    printf("missing: result %d status %d fn %p\n", r, st, fn);
    fn = (void *)1;
    r = cuGetProcAddress_v2("cuMemPoolCreate", &fn, 11000, 0, &st);
    printf("too new: result %d status %d fn %p\n", r, st, fn);
    const void *table = (const void *)1;
    CUuuid id;
    memset(&id, 0x42, sizeof id);
    r = cuGetExportTable(&table, &id);
    printf("export table: result %d table %p\n", r, table);
}

static void set_device(int dev) {
    CUcontext ctx = NULL;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
}

int main(void) {
    CHECK(cuInit(0));
    int v = 0;
    CHECK(cuDriverGetVersion(&v));
    printf("driver %d\n", v);
    set_device(0);
    driver_leak_device();
    driver_leak_pitch();
    driver_leak_host_alloc();
    driver_leak_alloc_host();
    driver_pinned_churn();
    driver_register_keep();
    driver_register_churn();
    driver_async();
    driver_async_ptsz();
    driver_pool_churn();
    v1_resolver_managed();
    v2_resolver_pinned();
    v2_resolver_legacy();
    boundary_v2_alloc();
    v1_resolver_by_pointer();
    rtld_default_alloc();
    dlopen_handle_alloc();
    statuses();

    set_device(1);
    driver_leak_managed();
    CUmemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = 1;
    CUmemoryPool pool = NULL;
    CHECK(cuMemPoolCreate(&pool, &props));
    driver_pool_alloc(pool);
    driver_pool_alloc_ptsz(pool);
    CHECK(cuMemPoolTrimTo(pool, 0));
    set_device(0);

    CUmemoryPool dflt = NULL;
    CHECK(cuDeviceGetMemPool(&dflt, 0));
    CHECK(cuMemPoolTrimTo(dflt, 0));
    CUdevice dev = -1;
    CHECK(cuCtxGetDevice(&dev));
    printf("driver_app done on device %d\n", dev);
    return 0;
}
