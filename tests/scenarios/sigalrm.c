/* Scenario 9: allocation while SIGALRM timers fire. An interval timer (1 ms) interrupts a
 * malloc/free loop; the handler only counts. The loop runs until enough signals arrived
 * (or a cap), then LEAKS blocks leak from their own function. The output does not depend
 * on how many signals arrived. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))
#define LEAKS 100

static volatile sig_atomic_t ticks;
void *volatile kept[LEAKS];

static void on_alarm(int sig) {
    (void)sig;
    ticks++;
}

NOIPA void churn_until_signals(void) {
    for (long i = 0; i < 20 * 1000 * 1000 && ticks < 200; i++) {
        char *p = malloc(32 + (size_t)(i % 512));
        p[0] = (char)i;
        __asm__ volatile("" : : "r"(p) : "memory");
        free(p);
    }
}

NOIPA void leak_after_signals(void) {
    for (int i = 0; i < LEAKS; i++) {
        kept[i] = malloc(640);
        memset(kept[i], 9, 640);
    }
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: the shim must cope with EINTR */
    if (sigaction(SIGALRM, &sa, NULL) != 0)
        return 2;
    struct itimerval it = {{0, 1000}, {0, 1000}};
    if (setitimer(ITIMER_REAL, &it, NULL) != 0)
        return 3;
    churn_until_signals();
    leak_after_signals();
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    static const char msg[] = "signals done\n";
    if (write(1, msg, sizeof msg - 1) < 0)
        return 4;
    return 0;
}
