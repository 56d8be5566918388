/* Native helpers for tests/scenarios/python_shim/frames.py, loaded with ctypes:
 * native_thread_alloc runs a pthread with no Python state that mallocs; spin_alloc
 * mallocs and frees forever (called with the GIL released, from daemon threads that
 * are still inside it when the interpreter shuts down). */
#include <pthread.h>
#include <stdlib.h>

struct job {
    size_t size;
    int n;
    void **kept;
};

static void *run(void *arg) {
    struct job *j = arg;
    for (int i = 0; i < j->n; i++)
        j->kept[i] = malloc(j->size);
    return NULL;
}

/* Makes `n` blocks of `size` bytes on a new native thread and returns them (kept). */
void **native_thread_alloc(size_t size, int n) {
    struct job j = {size, n, calloc((size_t)n, sizeof(void *))};
    pthread_t t;
    if (j.kept == NULL || pthread_create(&t, NULL, run, &j) != 0)
        return NULL;
    pthread_join(t, NULL);
    return j.kept;
}

/* Never returns. */
void spin_alloc(size_t size) {
    for (;;) {
        void *volatile p = malloc(size);
        free(p);
    }
}
