/* Scenario 5: fork + exec. The parent leaks a little, forks, and the child execs the
 * program named by argv[1] (with the rest of argv); the parent waits and reports the
 * child's exit status. The exec'd program is tracked through the inherited environment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))

void *volatile kept[4];

NOIPA void parent_leak(void) {
    for (int i = 0; i < 4; i++) {
        kept[i] = malloc(555);
        memset(kept[i], 5, 555);
    }
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    parent_leak();
    pid_t pid = fork();
    if (pid < 0)
        return 3;
    if (pid == 0) {
        execv(argv[1], &argv[1]);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return 4;
    char line[64];
    int n = snprintf(line, sizeof line, "execer: child exited %d\n",
                     WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    if (write(1, line, (size_t)n) < 0)
        return 5;
    return 0;
}
