/* Scenario: many TLS modules. A worker thread and then main dlopen N copies of a library
 * with thread-local storage (argv[1]/libtlsK.so), touch each one's TLS (growing the thread's
 * TLS vector, which makes __tls_get_addr call malloc) and allocate between loads; one
 * planted leak per load. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define NOIPA __attribute__((noipa))

static int n;
static const char *dir;
void *volatile kept[1024];
static volatile int next;

NOIPA void tls_leak(void) { kept[__atomic_fetch_add(&next, 1, __ATOMIC_RELAXED) % 1024] = malloc(48); }

static void *load_all(void *arg) {
    char path[4096];
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/libtls%d.so", dir, i);
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            fprintf(stderr, "%s\n", dlerror());
            exit(1);
        }
        char *(*touch)(void) = (char *(*)(void))dlsym(h, "tls_touch");
        touch();
        free(malloc(100));
        tls_leak();
    }
    return arg;
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    dir = argv[1];
    n = atoi(argv[2]);
    pthread_t t;
    if (pthread_create(&t, 0, load_all, 0) != 0)
        return 3;
    pthread_join(t, 0);
    load_all(0);
    printf("loaded %d TLS modules twice\n", n);
    return 0;
}
