/* Host heap fragmentation: 200 000 blocks of 256 bytes, half of them freed.
 *
 *   fragment holes   frees every other block: each freed chunk is trapped between two
 *                    live ones, so glibc can neither coalesce nor return them (fragmented).
 *   fragment trim    allocates the blocks it keeps first, then the ones it frees, and frees
 *                    those: they coalesce into the top chunk and the heap is trimmed
 *                    (the control: same live bytes, nothing kept free).
 *
 * Then it waits (readings are taken meanwhile), and prints its own ground truth, taken with
 * glibc's mallinfo2 just before exit, without allocating:
 *   held <bytes> <blocks>
 *   mallinfo2 arena <> ordblks <> smblks <> hblks <> hblkhd <> uordblks <> fordblks <> keepcost <>
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCKS 200000
#define SIZE 256

/* Static, so the table itself is no heap chunk. */
static void *blocks[BLOCKS];

static void *block(void) {
    void *p = malloc(SIZE);
    if (!p) {
        _exit(3);
    }
    memset(p, 0xab, SIZE);
    return p;
}

static void holes(void) {
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = block();
    }
    for (int i = 0; i < BLOCKS; i += 2) {
        free(blocks[i]);
        blocks[i] = NULL;
    }
}

static void trim(void) {
    /* Kept blocks first (odd slots), then the temporary ones (even slots) above them. */
    for (int i = 1; i < BLOCKS; i += 2) {
        blocks[i] = block();
    }
    for (int i = 0; i < BLOCKS; i += 2) {
        blocks[i] = block();
    }
    for (int i = 0; i < BLOCKS; i += 2) {
        free(blocks[i]);
        blocks[i] = NULL;
    }
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "holes";
    if (strcmp(mode, "holes") == 0) {
        holes();
    } else if (strcmp(mode, "trim") == 0) {
        trim();
    } else {
        return 2;
    }
    /* Long enough for several readings at --interval 100ms. */
    struct timespec wait = {0, 700 * 1000 * 1000};
    nanosleep(&wait, NULL);

    struct mallinfo2 m = mallinfo2();
    char out[512];
    int n = snprintf(out, sizeof out,
                     "held %d %d\n"
                     "mallinfo2 arena %zu ordblks %zu smblks %zu hblks %zu hblkhd %zu "
                     "uordblks %zu fordblks %zu keepcost %zu\n",
                     (BLOCKS / 2) * SIZE, BLOCKS / 2, m.arena, m.ordblks, m.smblks, m.hblks,
                     m.hblkhd, m.uordblks, m.fordblks, m.keepcost);
    if (write(1, out, (size_t)n) != n) {
        return 4;
    }
    /* The kept blocks stay live to the end. */
    return 0;
}
