/*
 * aging_workload: a long-running allocation workload for leakscope's aging benchmark
 * (see bench/README-aging.md and bench/aging_detect.py).
 *
 *   - S churning sites, each a distinct function churn_site_NNN (distinct call sites for a
 *     stack-based profiler). Every site keeps a pool of slots, pre-filled at start, and each
 *     allocation replaces a random slot (free the old block, malloc a new one, touch it), so
 *     every site is stationary from the first second. Kinds:
 *       fast: 64 slots, 16..1024 bytes, the bulk of the allocation rate;
 *       slow: ~10% of the sites, 256 slots, 16..1024 bytes, 4 allocations/s
 *             (each slot lives about a minute: autocorrelated but stationary);
 *       big:  ~2% of the sites (at least one), 8 slots of 64..512 KiB, 20 allocations/s
 *             (around glibc's mmap threshold).
 *   - One leak site leaky_request_buffer: 64 slots of 64..512 bytes at 100 allocations/s,
 *     freed from the same place, except that with probability --leak-share the replaced
 *     block is not freed but moved to a never-freed list.
 *   - One step site grow_cache_segment: every --step-every seconds it mallocs --step-bytes,
 *     memsets them and keeps them (0 disables it).
 *
 * Build: gcc -O2 -g -fno-omit-frame-pointer -o aging_workload aging_workload.c
 * Run:   ./aging_workload [--minutes M] [--rate N] [--sites S] [--leak-share F]
 *                         [--step-every SECONDS] [--step-bytes B] [--seed N]
 * SIGTERM / SIGINT end it early, cleanly. A summary goes to stderr at start and at exit,
 * as `aging_workload: key=value ...` lines.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define S_MAX 1000

#define FAST_SLOTS 64
#define SLOW_SLOTS 256
#define BIG_SLOTS 8
#define LEAK_SLOTS 64
#define SLOW_RATE 4.0   /* allocations per second per slow site */
#define BIG_RATE 20.0   /* allocations per second per big-block site */
#define LEAK_RATE 100.0 /* allocations per second of the leak site */
#define LEAK_MIN 64
#define LEAK_MAX 512
#define SMALL_MIN 16
#define SMALL_MAX 1024
#define BIG_MIN (64 * 1024)
#define BIG_MAX (512 * 1024)

/* ---- the churning sites: S_MAX distinct functions ------------------------------------ */

/* Each body differs by its index (the fill byte and the tag written into the block), so
 * identical-code folding cannot merge them; noinline/noclone keep each a frame of its own,
 * and the memset after malloc keeps the call from becoming a tail call. */
#define SITE(N)                                                                        \
    __attribute__((noinline, noclone)) static void *churn_site_##N(size_t n)           \
    {                                                                                  \
        unsigned char *p = malloc(n);                                                  \
        if (p) {                                                                       \
            memset(p, (0x1##N) & 0xff, n);                                             \
            *(volatile uint32_t *)p = 0x1##N;                                          \
        }                                                                              \
        return p;                                                                      \
    }
#define D10(P) SITE(P##0) SITE(P##1) SITE(P##2) SITE(P##3) SITE(P##4) \
               SITE(P##5) SITE(P##6) SITE(P##7) SITE(P##8) SITE(P##9)
#define D100(P) D10(P##0) D10(P##1) D10(P##2) D10(P##3) D10(P##4) \
                D10(P##5) D10(P##6) D10(P##7) D10(P##8) D10(P##9)
D100(0) D100(1) D100(2) D100(3) D100(4) D100(5) D100(6) D100(7) D100(8) D100(9)
#undef SITE
#undef D10
#undef D100

typedef void *(*site_fn)(size_t);
#define SITE(N) churn_site_##N,
#define D10(P) SITE(P##0) SITE(P##1) SITE(P##2) SITE(P##3) SITE(P##4) \
               SITE(P##5) SITE(P##6) SITE(P##7) SITE(P##8) SITE(P##9)
#define D100(P) D10(P##0) D10(P##1) D10(P##2) D10(P##3) D10(P##4) \
                D10(P##5) D10(P##6) D10(P##7) D10(P##8) D10(P##9)
static site_fn const SITE_FNS[S_MAX] = {
    D100(0) D100(1) D100(2) D100(3) D100(4) D100(5) D100(6) D100(7) D100(8) D100(9)
};
#undef SITE
#undef D10
#undef D100

/* ---- random numbers ------------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_unit(void) { return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0); }

static size_t rng_range(size_t lo, size_t hi) /* inclusive */
{
    return lo + (size_t)(rng_next() % (uint64_t)(hi - lo + 1));
}

/* ---- sites --------------------------------------------------------------------------- */

enum kind { FAST, SLOW, BIG, LEAK };

struct site {
    enum kind kind;
    int index;       /* churn_site_NNN, or -1 for the leak site */
    size_t nslots;
    size_t min, max; /* allocation sizes */
    void **slots;
    uint64_t allocs;
};

/* ---- the leak site ------------------------------------------------------------------- */

/* The head of every block of the leak site (its blocks are at least 64 bytes). */
struct leak_block {
    struct leak_block *next; /* on the never-freed list once leaked */
    size_t size;             /* requested bytes */
};

static struct leak_block *leak_list;
static uint64_t leaked_blocks, leaked_bytes;
static double leak_share = 0.00145;

/* Allocates a request buffer into slot i; the buffer it replaces is freed from here too,
 * except that with probability leak_share it is "forgotten" (kept on a list, never freed). */
__attribute__((noinline, noclone)) static void leaky_request_buffer(struct site *s, size_t i)
{
    struct leak_block *old = s->slots[i];
    size_t n = rng_range(s->min, s->max);
    struct leak_block *p = malloc(n);
    if (!p) {
        perror("aging_workload: malloc");
        exit(1);
    }
    memset(p, 0x5a, n);
    p->next = NULL;
    p->size = n;
    if (old) {
        if (rng_unit() < leak_share) {
            old->next = leak_list;
            leak_list = old;
            leaked_blocks++;
            leaked_bytes += old->size;
        } else {
            free(old);
        }
    }
    s->slots[i] = p;
    s->allocs++;
}

/* ---- the step site ------------------------------------------------------------------- */

struct segment {
    struct segment *next;
};

static struct segment *segments;
static uint64_t steps_done, step_bytes_total;

__attribute__((noinline, noclone)) static void grow_cache_segment(size_t bytes)
{
    struct segment *p = malloc(bytes);
    if (!p) {
        perror("aging_workload: malloc");
        exit(1);
    }
    memset(p, 0xc3, bytes);
    p->next = segments;
    segments = p;
    steps_done++;
    step_bytes_total += bytes;
}

/* ---- churn ---------------------------------------------------------------------------- */

__attribute__((noinline, noclone)) static void churn(struct site *s, size_t i)
{
    void *old = s->slots[i];
    size_t n = rng_range(s->min, s->max);
    void *p = SITE_FNS[s->index](n);
    if (!p) {
        perror("aging_workload: malloc");
        exit(1);
    }
    free(old);
    s->slots[i] = p;
    s->allocs++;
}

__attribute__((noinline, noclone)) static void replace(struct site *s, size_t i)
{
    if (s->kind == LEAK)
        leaky_request_buffer(s, i);
    else
        churn(s, i);
}

/* ---- the request loop ------------------------------------------------------------------ */

static struct site *all_sites;
static double *all_cum;
static long n_all; /* sites, the leak site last */
static double total_rate;
static long prefill_site;
static size_t prefill_slot;

/* Makes n allocations at sites drawn by their rates; on its first call it first pre-fills
 * every slot of every site. All allocations go through here, so each site has one stack. */
__attribute__((noinline, noclone)) static void drive(uint64_t n)
{
    for (;;) {
        struct site *s;
        size_t slot;
        if (prefill_site < n_all) {
            s = &all_sites[prefill_site];
            slot = prefill_slot;
            if (++prefill_slot == s->nslots)
                prefill_site++, prefill_slot = 0;
        } else {
            if (n == 0)
                return;
            n--;
            double r = rng_unit() * total_rate;
            long lo = 0, hi = n_all - 1;
            while (lo < hi) {
                long mid = (lo + hi) / 2;
                if (all_cum[mid] > r)
                    hi = mid;
                else
                    lo = mid + 1;
            }
            s = &all_sites[lo];
            slot = rng_range(0, s->nslots - 1);
        }
        replace(s, slot);
    }
}

/* ---- pacing ---------------------------------------------------------------------------- */

static volatile sig_atomic_t stop;
static char start_line[512];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct loop_state {
    double duration, step_every, next_step;
    size_t step_bytes;
    double t0, last, credit;
    uint64_t n, done;
    int started;
};

/* One tick: the allocations due, then the steps due, then 1 ms of sleep. Returns 0 when the
 * run is over. Its first call (n = 0) only pre-fills, then starts the clock. */
__attribute__((noinline, noclone)) static int loop_body(struct loop_state *L)
{
    drive(L->n); /* the only call of drive() */
    L->done += L->n;
    if (!L->started) {
        L->started = 1;
        for (long i = 0; i < n_all; i++)
            all_sites[i].allocs = 0;
        fputs(start_line, stderr);
        L->t0 = L->last = now();
        L->done = 0;
    } else {
        double el = now() - L->t0;
        while (L->step_every > 0 && el >= L->next_step && !stop) {
            grow_cache_segment(L->step_bytes);
            L->next_step += L->step_every;
        }
        static const struct timespec tick = {0, 1000000}; /* 1 ms */
        nanosleep(&tick, NULL);
    }
    if (stop)
        return 0;
    double t = now();
    if (t - L->t0 >= L->duration)
        return 0;
    L->credit += (t - L->last) * total_rate;
    L->last = t;
    if (L->credit > total_rate) /* more than a second behind: drop the backlog */
        L->credit = total_rate;
    L->n = (uint64_t)L->credit;
    L->credit -= (double)L->n;
    return 1;
}

/* ---- main ----------------------------------------------------------------------------- */

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [--minutes M] [--rate N] [--sites S] [--leak-share F]\n"
            "          [--step-every SECONDS] [--step-bytes B] [--seed N] [--big 0|1]\n"
            "  --minutes M         run time in minutes (default 30)\n"
            "  --rate N            total allocations per second (default 20000)\n"
            "  --sites S           churning sites, 1..%d (default 200)\n"
            "  --leak-share F      share of the leak site's allocations never freed (default 0.00145)\n"
            "  --step-every S      seconds between the step site's steps, 0: none (default 180)\n"
            "  --step-bytes B      bytes per step (default 1048576)\n"
            "  --seed N            random seed (default 1)\n"
            "  --big 0|1           big-block sites (64..512 KiB, around glibc's mmap threshold; default 1)\n",
            argv0, S_MAX);
}

static double arg_double(const char *name, const char *v)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || d < 0) {
        fprintf(stderr, "aging_workload: bad value for %s: %s\n", name, v);
        exit(2);
    }
    return d;
}

int main(int argc, char **argv)
{
    double minutes = 30, rate = 20000, step_every = 180, step_bytes = 1048576;
    long nsites = 200;
    uint64_t seed = 1;
    int big = 1; /* --big 0: no big-block sites (they move glibc's mmap threshold) */

    for (int a = 1; a < argc; a++) {
        const char *o = argv[a];
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage(argv[0]);
            return 0;
        }
        if (a + 1 >= argc) {
            usage(argv[0]);
            return 2;
        }
        const char *v = argv[++a];
        if (!strcmp(o, "--minutes"))
            minutes = arg_double(o, v);
        else if (!strcmp(o, "--rate"))
            rate = arg_double(o, v);
        else if (!strcmp(o, "--sites"))
            nsites = (long)arg_double(o, v);
        else if (!strcmp(o, "--leak-share"))
            leak_share = arg_double(o, v);
        else if (!strcmp(o, "--step-every"))
            step_every = arg_double(o, v);
        else if (!strcmp(o, "--step-bytes"))
            step_bytes = arg_double(o, v);
        else if (!strcmp(o, "--seed"))
            seed = (uint64_t)arg_double(o, v);
        else if (!strcmp(o, "--big"))
            big = arg_double(o, v) != 0;
        else {
            usage(argv[0]);
            return 2;
        }
    }
    if (nsites < 1 || nsites > S_MAX || leak_share > 1 || step_bytes < sizeof(struct segment)) {
        usage(argv[0]);
        return 2;
    }
    rng_state = seed * 0x2545f4914f6cdd1dULL + 12345;

    /* Sites: index i is big when i % 50 == 25 (the last site when there are fewer than 26),
     * slow when i % 10 == 3, fast otherwise; the leak site comes last. */
    struct site *sites = calloc((size_t)nsites + 1, sizeof *sites);
    double *cum = calloc((size_t)nsites + 1, sizeof *cum);
    if (!sites || !cum)
        return 1;
    long nfast = 0, nslow = 0, nbig = 0;
    for (long i = 0; i < nsites; i++) {
        struct site *s = &sites[i];
        s->index = (int)i;
        if (big && (i % 50 == 25 || (nsites < 26 && i == nsites - 1))) {
            s->kind = BIG, s->nslots = BIG_SLOTS, s->min = BIG_MIN, s->max = BIG_MAX;
            nbig++;
        } else if (i % 10 == 3) {
            s->kind = SLOW, s->nslots = SLOW_SLOTS, s->min = SMALL_MIN, s->max = SMALL_MAX;
            nslow++;
        } else {
            s->kind = FAST, s->nslots = FAST_SLOTS, s->min = SMALL_MIN, s->max = SMALL_MAX;
            nfast++;
        }
    }
    struct site *leak = &sites[nsites];
    leak->kind = LEAK, leak->index = -1, leak->nslots = LEAK_SLOTS;
    leak->min = LEAK_MIN, leak->max = LEAK_MAX;

    double fast_rate = nfast ? (rate - LEAK_RATE - nslow * SLOW_RATE - nbig * BIG_RATE) / nfast : 0;
    if (nfast && fast_rate < 1) {
        fprintf(stderr,
                "aging_workload: --rate %.0f is too low for %ld sites: the leak, slow and big "
                "sites alone take %.0f allocations/s\n",
                rate, nsites, LEAK_RATE + nslow * SLOW_RATE + nbig * BIG_RATE);
        return 2;
    }
    double acc = 0;
    for (long i = 0; i <= nsites; i++) {
        struct site *s = &sites[i];
        acc += s->kind == FAST ? fast_rate : s->kind == SLOW ? SLOW_RATE
             : s->kind == BIG  ? BIG_RATE  : LEAK_RATE;
        cum[i] = acc;
    }

    for (long i = 0; i <= nsites; i++) {
        sites[i].slots = calloc(sites[i].nslots, sizeof *sites[i].slots);
        if (!sites[i].slots)
            return 1;
    }
    all_sites = sites, all_cum = cum, n_all = nsites + 1, total_rate = acc;

    double mean_leak = (LEAK_MIN + LEAK_MAX) / 2.0;
    double intended_kb_h = LEAK_RATE * leak_share * mean_leak * 3600 / 1000;
    uint64_t prefill_total = 0;
    for (long i = 0; i <= nsites; i++)
        prefill_total += sites[i].nslots;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    snprintf(start_line, sizeof start_line,
             "aging_workload: start pid=%ld minutes=%g rate=%.0f sites=%ld fast=%ld slow=%ld "
             "big=%ld fast_rate_per_site=%.1f leak_allocs_per_s=%.0f leak_share=%g "
             "intended_leak_kb_per_h=%.1f step_every_s=%g step_bytes=%.0f "
             "prefill_allocs=%llu seed=%llu\n",
             (long)getpid(), minutes, rate, nsites, nfast, nslow, nbig, fast_rate, LEAK_RATE,
             leak_share, intended_kb_h, step_every, step_bytes,
             (unsigned long long)prefill_total, (unsigned long long)seed);

    struct loop_state L = {
        .duration = minutes * 60,
        .step_every = step_every,
        .step_bytes = (size_t)step_bytes,
        .next_step = step_every,
    };
    /* The simplest loop, so that the compiler has no reason to copy the call: every
     * allocation, pre-fill included, happens under this one call instruction. */
    do {
    } while (loop_body(&L));
    double elapsed = now() - L.t0;
    uint64_t done = L.done;

    uint64_t by_kind[4] = {0, 0, 0, 0};
    for (long i = 0; i <= nsites; i++)
        by_kind[sites[i].kind] += sites[i].allocs;

    /* Clean exit: the churn pools go back; the leak and the steps stay. */
    for (long i = 0; i < nsites; i++) {
        for (size_t k = 0; k < sites[i].nslots; k++)
            free(sites[i].slots[k]);
        free(sites[i].slots);
    }
    for (size_t k = 0; k < leak->nslots; k++)
        free(leak->slots[k]);
    free(leak->slots);

    double hours = elapsed / 3600;
    fprintf(stderr,
            "aging_workload: done elapsed_s=%.1f allocations=%llu rate_per_s=%.1f fast=%llu slow=%llu "
            "big=%llu leak_site=%llu leak_site_rate_per_s=%.1f leaked_blocks=%llu leaked_bytes=%llu "
            "measured_leak_kb_per_h=%.1f intended_leak_kb_per_h=%.1f steps=%llu step_bytes_total=%llu "
            "interrupted=%d\n",
            elapsed, (unsigned long long)done, elapsed > 0 ? done / elapsed : 0.0,
            (unsigned long long)by_kind[FAST], (unsigned long long)by_kind[SLOW],
            (unsigned long long)by_kind[BIG], (unsigned long long)by_kind[LEAK],
            elapsed > 0 ? by_kind[LEAK] / elapsed : 0.0, (unsigned long long)leaked_blocks,
            (unsigned long long)leaked_bytes, hours > 0 ? leaked_bytes / hours / 1000 : 0.0,
            intended_kb_h, (unsigned long long)steps_done, (unsigned long long)step_bytes_total,
            (int)stop);
    free(sites);
    free(cum);
    return 0;
}
