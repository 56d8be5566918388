/* Scenario 3: fork without exec. The parent allocates A (kept) and forks; the child frees
 * part of A, leaks B and exits; the parent leaks C (while the child runs) and waits. */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))
#define A_BLOCKS 20

void *volatile a[A_BLOCKS];
void *volatile b[5];
void *volatile c[3];

NOIPA void alloc_a(void) {
    for (int i = 0; i < A_BLOCKS; i++) {
        a[i] = malloc(1000 + (size_t)i);
        memset(a[i], 1, 1000 + (size_t)i);
    }
}

NOIPA void child_free_some_a(void) {
    for (int i = 0; i < 8; i++) {
        free(a[i]);
        a[i] = NULL;
    }
}

NOIPA void child_alloc_b(void) {
    for (int i = 0; i < 5; i++)
        b[i] = calloc(1, 2000);
}

NOIPA void parent_alloc_c(void) {
    for (int i = 0; i < 3; i++) {
        c[i] = malloc(3000);
        memset(c[i], 3, 3000);
    }
}

static void say(const char *s) {
    if (write(1, s, strlen(s)) < 0)
        _exit(9);
}

int main(void) {
    alloc_a();
    pid_t pid = fork();
    if (pid < 0)
        return 2;
    if (pid == 0) {
        child_free_some_a();
        child_alloc_b();
        say("child done\n");
        exit(0);
    }
    parent_alloc_c();
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return 3;
    say(WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "parent done\n" : "child failed\n");
    return 0;
}
