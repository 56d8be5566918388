// Aging scenario: memory that grows over time, for the trend tests.
//
//   aging SECONDS
//
// For SECONDS of wall time, paced by the clock:
// - `churn_0` .. `churn_7`: stationary sites; each keeps 64 blocks of random sizes and
//   replaces a random one every millisecond or so (allocated and freed from one place).
// - `leak_drift`: a churning site that also keeps one 4096-byte block every 50 ms: steady
//   growth from the same stack as its frees.
// - `grow_steps`: keeps a 1 MiB block at 1/5, 2/5, 3/5 and 4/5 of the run: four steps.
// - `startup_table`: 256 KiB allocated at start and kept: flat.
// Prints `leak_bytes_per_hour <rate>` (the drift site's planted rate) and `steps <n>`.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS 64
#define STEPS 4
static uint64_t s = 0x9e3779b97f4a7c15ull;
static inline uint64_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void *volatile sink;
static void *pools[9][SLOTS];

#define CHURN(n)                                                                 \
  __attribute__((noinline)) static void churn_##n(int fill) {                   \
    unsigned k = fill >= 0 ? (unsigned)fill : (unsigned)(rnd() % SLOTS);         \
    free(pools[n][k]);                                                          \
    size_t size = 16 + rnd() % (256 * (n + 1));                                 \
    pools[n][k] = malloc(size);                                                 \
    if (pools[n][k]) memset(pools[n][k], n, size < 32 ? size : 32);             \
  }
CHURN(0) CHURN(1) CHURN(2) CHURN(3) CHURN(4) CHURN(5) CHURN(6) CHURN(7)
static void (*const churns[8])(int) = {churn_0, churn_1, churn_2, churn_3,
                                       churn_4, churn_5, churn_6, churn_7};

// Replaces a random block of its own pool; with `keep`, the old block is kept instead of
// freed (the leak), so leaked and freed blocks come from the same call.
__attribute__((noinline)) static void leak_drift(int fill, int keep) {
  unsigned k = fill >= 0 ? (unsigned)fill : (unsigned)(rnd() % SLOTS);
  if (keep)
    sink = pools[8][k];
  else
    free(pools[8][k]);
  pools[8][k] = malloc(4096);
  if (pools[8][k]) memset(pools[8][k], 7, 64);
}

__attribute__((noinline)) static void grow_steps(void) {
  void *p = malloc(1 << 20);
  memset(p, 3, 1 << 20);
  sink = p;
}

__attribute__((noinline)) static void startup_table(void) {
  void *p = malloc(256 << 10);
  memset(p, 1, 256 << 10);
  sink = p;
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 6.0;
  startup_table();
  for (int k = 0; k < SLOTS; k++) {
    for (int n = 0; n < 8; n++) churns[n](k);
    leak_drift(k, 0);
  }
  double start = now(), next_leak = start + 0.05;
  int steps = 0;
  struct timespec pause = {0, 1000000};
  for (;;) {
    double t = now();
    if (t - start >= seconds) break;
    for (int n = 0; n < 8; n++) churns[n](-1);
    leak_drift(-1, 0);
    if (t >= next_leak) {
      leak_drift(-1, 1);
      next_leak += 0.05;
    }
    if (steps < STEPS && t - start >= seconds * (steps + 1) / (STEPS + 1.0)) {
      grow_steps();
      steps++;
    }
    nanosleep(&pause, NULL);
  }
  printf("leak_bytes_per_hour %.0f\nsteps %d\n", 4096.0 * 20 * 3600, steps);
  return 0;
}
