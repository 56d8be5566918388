/* Scenario 4: anonymous mappings. Kept: a private mapping, a shared anonymous mapping, a
 * mapping with a hole unmapped from its middle, one grown (and moved) by mremap, one
 * shrunk by mremap, one partly replaced by a PROT_NONE reservation. Not reported: a
 * file-backed mapping and a PROT_NONE reservation (both kept too). Churn maps and
 * unmaps. Prints the page size for the test to compute the expected bytes. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))

static size_t page;
void *volatile keep[16];

static void *anon(size_t len, int flags) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        _exit(10);
    return p;
}

NOIPA void map_keep(void) {
    keep[0] = mmap(NULL, 10 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(keep[0], 1, 10 * page);
}

NOIPA void map_shared(void) {
    keep[1] = mmap(NULL, 3 * page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
}

/* 8 pages, then pages 3 and 4 are unmapped: 6 pages stay, in two pieces. */
NOIPA void map_with_hole(void) {
    char *p = mmap(NULL, 8 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (munmap(p + 3 * page, 2 * page) != 0)
        _exit(11);
    keep[2] = p;
}

/* 4 pages grown to 12, allowed to move: 12 pages stay, attributed to the mremap. */
NOIPA void map_grow(void) {
    char *p = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    /* Occupy the pages right after it so that growing in place is unlikely. */
    char *blocker = mmap(p + 4 * page, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    char *q = mremap(p, 4 * page, 12 * page, MREMAP_MAYMOVE);
    if (q == MAP_FAILED)
        _exit(12);
    q[11 * page] = 1;
    keep[3] = q;
    if (blocker != MAP_FAILED)
        munmap(blocker, page);
}

/* 6 pages shrunk to 2 in place: 2 pages stay. */
NOIPA void map_shrink(void) {
    char *p = mmap(NULL, 6 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *q = mremap(p, 6 * page, 2 * page, 0);
    if (q == MAP_FAILED)
        _exit(13);
    keep[4] = q;
}

/* A file-backed mapping (of this program's own file): not anonymous memory. */
NOIPA void map_file(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        _exit(14);
    keep[5] = mmap(NULL, 2 * page, PROT_READ, MAP_PRIVATE, fd, 0);
    if (keep[5] == MAP_FAILED)
        _exit(15);
    close(fd);
}

/* 16 pages of address space reserved with PROT_NONE: no memory, not reported. */
NOIPA void map_reserve(void) {
    keep[6] = mmap(NULL, 16 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (keep[6] == MAP_FAILED)
        _exit(16);
}

/* 8 pages, then pages 2-5 are replaced by a PROT_NONE reservation (MAP_FIXED): the
 * memory there is gone, 4 pages stay. */
NOIPA void map_decommit(void) {
    char *p = anon(8 * page, MAP_PRIVATE);
    if (mmap(p + 2 * page, 4 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
        _exit(17);
    keep[7] = p;
}

/* Maps and unmaps: nothing stays. Includes a mapping unmapped in two halves. */
NOIPA void map_churn(void) {
    for (int i = 0; i < 100; i++) {
        char *p = anon((size_t)(1 + i % 5) * page, MAP_PRIVATE);
        p[0] = 1;
        munmap(p, (size_t)(1 + i % 5) * page);
    }
    char *p = anon(4 * page, MAP_PRIVATE);
    munmap(p, 2 * page);
    munmap(p + 2 * page, 2 * page);
}

int main(int argc, char **argv) {
    (void)argc;
    page = (size_t)sysconf(_SC_PAGESIZE);
    map_churn();
    map_keep();
    map_shared();
    map_with_hole();
    map_grow();
    map_shrink();
    map_file(argv[0]);
    map_reserve();
    map_decommit();
    char line[64];
    int n = snprintf(line, sizeof line, "page %zu\n", page);
    if (write(1, line, (size_t)n) < 0)
        return 2;
    return 0;
}
