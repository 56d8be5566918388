/* A program that leaks slowly while a test reads its live recording. Usage: slow_leak DIR.
 * Leaks 8 blocks of 1000 bytes from leak_block (a sleep between each), prints "batch1",
 * creates DIR/ready, then waits (allocating nothing) until the test creates DIR/go,
 * leaks 12 more blocks of 1000 bytes from leak_block, prints "batch2", exits 0. While it
 * waits, the recording holds exactly the first batch: 8000 bytes in 8 blocks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))
#define BLOCK 1000
#define FIRST 8
#define SECOND 12

void *volatile kept[FIRST + SECOND];

NOIPA void leak_block(int i) {
    kept[i] = malloc(BLOCK);
    memset(kept[i], i, BLOCK);
}

static void nap(long ms) {
    struct timespec t = {0, ms * 1000 * 1000};
    nanosleep(&t, NULL);
}

static void batch(int from, int n) {
    for (int i = from; i < from + n; i++) {
        leak_block(i);
        nap(5);
    }
}

static void path_of(char *out, size_t size, const char *dir, const char *name) {
    snprintf(out, size, "%s/%s", dir, name);
}

static void touch(const char *dir, const char *name) {
    char path[4096];
    path_of(path, sizeof path, dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        _exit(20);
    fclose(f);
}

static int exists(const char *dir, const char *name) {
    char path[4096];
    path_of(path, sizeof path, dir, name);
    return access(path, F_OK) == 0;
}

static void say(const char *s) {
    if (write(1, s, strlen(s)) < 0)
        _exit(21);
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    /* fopen's own buffers come and go before the first batch. */
    touch(argv[1], "started");
    batch(0, FIRST);
    say("batch1\n");
    touch(argv[1], "ready");
    /* Wait for the test (at most ten minutes). */
    for (int i = 0; i < 60000 && !exists(argv[1], "go"); i++)
        nap(10);
    batch(FIRST, SECOND);
    say("batch2\n");
    return 0;
}
