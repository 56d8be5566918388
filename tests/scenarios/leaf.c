/* Scenario 5's exec'd program: leaks 7 blocks of 1111 bytes from leaf_leak, frees the
 * rest, and exits with status 0. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))

void *volatile kept[7];

NOIPA void leaf_leak(void) {
    for (int i = 0; i < 7; i++) {
        kept[i] = malloc(1111);
        memset(kept[i], 7, 1111);
    }
}

NOIPA void leaf_churn(void) {
    for (int i = 0; i < 100; i++) {
        char *p = malloc(64 + (size_t)i);
        p[0] = (char)i;
        __asm__ volatile("" : : "r"(p) : "memory");
        free(p);
    }
}

int main(void) {
    leaf_churn();
    leaf_leak();
    static const char msg[] = "leaf done\n";
    if (write(1, msg, sizeof msg - 1) < 0)
        return 2;
    return 0;
}
