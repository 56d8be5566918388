/* Scenario 1: every intercepted host allocation entry point. Each leak_* function leaks a
 * distinct planted amount; churn() allocates through every entry point and frees it all
 * again. Output goes through write(2) so that stdio allocates nothing.
 * With the argument "no-pvalloc" the program never calls pvalloc: valgrind 3.19 does not
 * implement it (it aborts the program), so the valgrind run passes that argument. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))

/* Leaked blocks stay reachable from here (valgrind: "still reachable"). */
void *volatile keep[64];
static int nkeep;

static void hold(void *p) { keep[nkeep++] = p; }

/* Keeps the compiler from eliding a malloc/free pair. */
static inline void sink(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

NOIPA void leak_malloc(void) {
    for (int i = 0; i < 3; i++) {
        void *p = malloc(1001);
        memset(p, 1, 1001);
        hold(p);
    }
}

NOIPA void leak_malloc_zero(void) {
    void *p = malloc(0);
    hold(p);
}

NOIPA void leak_calloc(void) {
    void *p = calloc(7, 143);
    hold(p);
    p = calloc(2, 1003);
    hold(p);
}

NOIPA void leak_realloc_grow(void) {
    char *p = malloc(100);
    memset(p, 2, 100);
    p = realloc(p, 2005);
    hold(p);
}

NOIPA void leak_realloc_shrink(void) {
    char *p = malloc(5000);
    memset(p, 3, 5000);
    p = realloc(p, 307);
    hold(p);
}

NOIPA void leak_realloc_null(void) {
    void *p = realloc(NULL, 777);
    hold(p);
}

/* realloc(p, 0) frees p (glibc returns NULL); nothing of it is left. */
NOIPA int realloc_zero(void) {
    void *p = malloc(50);
    sink(p);
    void *q = realloc(p, 0);
    if (q != NULL) {
        free(q);
        return 1;
    }
    return 0;
}

NOIPA void leak_reallocarray(void) {
    void *p = reallocarray(NULL, 9, 111);
    hold(p);
    char *q = malloc(10);
    memset(q, 4, 10);
    q = reallocarray(q, 13, 101);
    hold(q);
}

NOIPA void leak_posix_memalign(void) {
    void *p = NULL;
    if (posix_memalign(&p, 64, 1234) == 0)
        hold(p);
}

NOIPA void leak_aligned_alloc(void) {
    void *p = aligned_alloc(256, 2048);
    hold(p);
}

NOIPA void leak_memalign(void) {
    void *p = memalign(128, 999);
    hold(p);
}

NOIPA void leak_valloc(void) {
    void *p = valloc(3003);
    hold(p);
}

NOIPA void leak_pvalloc(void) {
    void *p = pvalloc(5005);
    hold(p);
}

/* Inlined helper: its malloc shows up as an inlined frame inside leak_inlined. */
static inline __attribute__((always_inline)) void *inl_alloc(size_t n) {
    return malloc(n);
}

NOIPA void leak_inlined(void) {
    void *p = inl_alloc(4242);
    hold(p);
}

static int use_pvalloc = 1;

NOIPA void churn(void) {
    for (int i = 0; i < 200; i++) {
        void *a = malloc(16 + i);
        void *b = calloc(3, 10 + i);
        void *c = realloc(NULL, 40);
        c = realloc(c, 4000 + i);
        c = realloc(c, 20);
        void *d = reallocarray(NULL, 4, 8 + i);
        void *e = NULL;
        if (posix_memalign(&e, 32, 100 + i) != 0)
            e = NULL;
        void *f = aligned_alloc(64, 64 * (1 + i % 4));
        void *g = memalign(4096, 10);
        void *h = valloc(100);
        void *k = use_pvalloc ? pvalloc(1) : NULL;
        sink(a), sink(b), sink(c), sink(d), sink(e), sink(f), sink(g), sink(h), sink(k);
        free(a), free(b), free(c), free(d), free(e), free(f), free(g), free(h), free(k);
    }
    free(NULL);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "no-pvalloc") == 0)
        use_pvalloc = 0;
    churn();
    leak_malloc();
    leak_malloc_zero();
    leak_calloc();
    leak_realloc_grow();
    leak_realloc_shrink();
    leak_realloc_null();
    int odd = realloc_zero();
    leak_reallocarray();
    leak_posix_memalign();
    leak_aligned_alloc();
    leak_memalign();
    leak_valloc();
    if (use_pvalloc)
        leak_pvalloc();
    leak_inlined();
    const char *msg = odd ? "apis done (realloc0 kept)\n" : "apis done\n";
    if (write(1, msg, strlen(msg)) < 0)
        return 2;
    return 0;
}
