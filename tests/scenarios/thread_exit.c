/* Threads that end by pthread_exit (from a nested call), by cancellation at a
 * cancellation point, and by returning: each allocates before it ends. A forced unwind
 * through the shim's thread start routine must not abort the process. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void *kept[3]; /* global: the stores cannot be optimized away */

__attribute__((noinline)) static void exit_from_depth(int depth) {
    if (depth == 0) {
        kept[0] = malloc(1111);
        pthread_exit((void *)7);
    }
    exit_from_depth(depth - 1);
}

static void *exiter(void *arg) {
    (void)arg;
    exit_from_depth(5);
    return NULL;
}

static void *cancelled(void *arg) {
    (void)arg;
    kept[1] = malloc(2222);
    for (;;)
        pause(); /* a cancellation point */
    return NULL;
}

static void *returner(void *arg) {
    (void)arg;
    kept[2] = malloc(3333);
    return (void *)9;
}

int main(void) {
    pthread_t a, b, c;
    void *ra, *rb, *rc;
    pthread_create(&a, NULL, exiter, NULL);
    pthread_create(&b, NULL, cancelled, NULL);
    pthread_create(&c, NULL, returner, NULL);
    pthread_join(a, &ra);
    usleep(20000);
    pthread_cancel(b);
    pthread_join(b, &rb);
    pthread_join(c, &rc);
    printf("exit %ld cancelled %d return %ld\n", (long)ra, rb == PTHREAD_CANCELED, (long)rc);
    return 3;
}
