/* Scenario 9: a program that closes every descriptor from 3 to 1024 (as daemons and
 * careful exec wrappers do) between two leaks, then keeps allocating. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))

void *volatile kept[16];

NOIPA void leak_before_close(void) {
    for (int i = 0; i < 5; i++) {
        kept[i] = malloc(700);
        memset(kept[i], 1, 700);
    }
}

NOIPA void leak_after_close(void) {
    for (int i = 0; i < 7; i++) {
        kept[5 + i] = malloc(900);
        memset(kept[5 + i], 2, 900);
    }
}

NOIPA void churn(void) {
    for (int i = 0; i < 1000; i++) {
        char *p = malloc(48 + (size_t)i);
        p[0] = (char)i;
        __asm__ volatile("" : : "r"(p) : "memory");
        free(p);
    }
}

int main(void) {
    leak_before_close();
    for (int fd = 3; fd <= 1024; fd++)
        close(fd);
    churn();
    leak_after_close();
    static const char msg[] = "closefds done\n";
    if (write(1, msg, sizeof msg - 1) < 0)
        return 2;
    return 0;
}
