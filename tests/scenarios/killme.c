/* Scenario 8: a program whose collector is killed while it runs. Usage: killme DIR.
 * Leaks phase-1 blocks, prints "phase1", creates DIR/ready, then waits until the test
 * creates DIR/go (after killing the collector), leaks phase-2 blocks, prints "phase2",
 * writes DIR/done and exits 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))

void *volatile kept[64];

NOIPA void phase1_alloc(void) {
    for (int i = 0; i < 10; i++) {
        kept[i] = malloc(1500);
        memset(kept[i], 1, 1500);
    }
}

NOIPA void phase2_alloc(void) {
    for (int i = 0; i < 20; i++) {
        kept[10 + i] = malloc(2500);
        memset(kept[10 + i], 2, 2500);
    }
}

static void touch(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        _exit(20);
    fclose(f);
}

static int exists(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static void say(const char *s) {
    if (write(1, s, strlen(s)) < 0)
        _exit(21);
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    phase1_alloc();
    say("phase1\n");
    touch(argv[1], "ready");
    /* Wait for the test (at most ten minutes). */
    struct timespec tick = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 60000 && !exists(argv[1], "go"); i++)
        nanosleep(&tick, NULL);
    phase2_alloc();
    say("phase2\n");
    touch(argv[1], "done");
    return 0;
}
