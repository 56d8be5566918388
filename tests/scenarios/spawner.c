/* Starts the program named by argv[1] twice without fork: once with posix_spawn (glibc
 * uses clone(CLONE_VM|CLONE_VFORK) inside it) and once with vfork + execv. The shim must
 * not act inside the vfork child, which shares the parent's memory; each exec'd child is
 * tracked through the inherited environment. Leaks 3 blocks of 999 bytes itself. */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))

extern char **environ;
void *volatile kept[3];

NOIPA void spawner_leak(void) {
    for (int i = 0; i < 3; i++) {
        kept[i] = malloc(999);
        memset(kept[i], 3, 999);
    }
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    spawner_leak();
    char *child_argv[] = {argv[1], NULL};
    pid_t pid;
    if (posix_spawn(&pid, argv[1], NULL, NULL, child_argv, environ) != 0)
        return 3;
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return 4;
    pid = vfork();
    if (pid == 0) {
        execv(argv[1], child_argv);
        _exit(127);
    }
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return 5;
    printf("spawner: both children exited 0\n");
    return 0;
}
