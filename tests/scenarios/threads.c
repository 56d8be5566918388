/* Scenario 2: 16 threads allocate at once through one shared function. Each thread leaks
 * LEAK_PER_THREAD blocks, frees some of its own blocks, and frees the others' blocks: after
 * a barrier, thread i frees blocks that thread (i + 1) % 16 allocated. Deterministic:
 * which blocks leak does not depend on the interleaving. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))
#define THREADS 16
#define BLOCKS 400
#define LEAK_EVERY 40 /* blocks j with j % LEAK_EVERY == 0 leak: 10 per thread */

static void *slots[THREADS][BLOCKS];
void *volatile leaked[THREADS * BLOCKS];
static pthread_barrier_t barrier;

/* The shared allocation function: sizes depend on the thread and the block. */
NOIPA void *shared_alloc(int thread, int j) {
    size_t n = 24 + (size_t)thread * 8 + (size_t)(j % 7);
    void *p = malloc(n);
    memset(p, thread, n);
    return p;
}

/* Each thread also grows one buffer with realloc and frees it. */
NOIPA void grow_and_drop(int thread) {
    char *p = NULL;
    for (int k = 1; k <= 20; k++) {
        p = realloc(p, (size_t)k * 64 + (size_t)thread);
        p[0] = (char)k;
    }
    free(p);
}

NOIPA void *worker(void *arg) {
    int me = (int)(long)arg;
    for (int j = 0; j < BLOCKS; j++)
        slots[me][j] = shared_alloc(me, j);
    grow_and_drop(me);
    /* Free some of our own blocks before the barrier (every third, none that leak). */
    for (int j = 0; j < BLOCKS; j++) {
        if (j % 3 == 1 && j % LEAK_EVERY != 0) {
            free(slots[me][j]);
            slots[me][j] = NULL;
        }
    }
    pthread_barrier_wait(&barrier);
    /* Free the neighbour's remaining blocks, except the ones that leak. */
    int other = (me + 1) % THREADS;
    for (int j = 0; j < BLOCKS; j++) {
        if (j % LEAK_EVERY == 0) {
            leaked[other * BLOCKS + j] = slots[other][j];
        } else if (slots[other][j] != NULL) {
            free(slots[other][j]);
        }
    }
    return NULL;
}

int main(void) {
    pthread_t t[THREADS];
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (long i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)i) != 0)
            return 2;
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    static const char msg[] = "threads done\n";
    if (write(1, msg, sizeof msg - 1) < 0)
        return 3;
    return 0;
}
