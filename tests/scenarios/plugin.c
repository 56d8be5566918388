/* Scenario 9's plugin, built as a shared library and dlopen'ed in a loop by dl.c: every
 * load leaks one block from plugin_leak and churns (freeing) in plugin_churn. */
#include <stdlib.h>
#include <string.h>

#define NOIPA __attribute__((noipa))

NOIPA void *plugin_leak(size_t n) {
    void *p = malloc(n);
    memset(p, 0x5a, n);
    return p;
}

NOIPA int plugin_churn(int rounds) {
    int sum = 0;
    for (int i = 0; i < rounds; i++) {
        char *p = malloc(100 + (size_t)i);
        p[0] = (char)i;
        sum += p[0];
        free(p);
    }
    return sum;
}
