/* For the Python frames scenario: a library whose native thread allocates with no Python
 * frame on its stack (it never touches the interpreter). */
#include <pthread.h>
#include <stdlib.h>

struct job {
    int count;
    size_t size;
    void **kept;
};

__attribute__((noinline)) static void *native_leaker(void *arg) {
    struct job *job = arg;
    for (int i = 0; i < job->count; i++)
        job->kept[i] = malloc(job->size);
    return NULL;
}

/* Starts the thread, waits for it; the blocks are never freed. 0 on success. */
int leak_in_native_thread(int count, size_t size) {
    static struct job job;
    static void *kept[1024];
    pthread_t thread;
    if (count < 0 || count > 1024)
        return 1;
    job.count = count;
    job.size = size;
    job.kept = kept;
    if (pthread_create(&thread, NULL, native_leaker, &job) != 0)
        return 1;
    return pthread_join(thread, NULL) != 0;
}
