/* Scenario 9: a dlopen/dlclose loop. Usage: dl PLUGIN.so. Each of LOOPS rounds loads the
 * plugin, calls plugin_leak(333) (the block is kept) and plugin_churn, and unloads it. The
 * leaks must stay attributed to plugin_leak although the library is gone at exit. */
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

#define LOOPS 20

void *volatile kept[LOOPS];

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    for (int i = 0; i < LOOPS; i++) {
        void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (h == NULL)
            return 3;
        void *(*leak)(size_t) = (void *(*)(size_t))dlsym(h, "plugin_leak");
        int (*churn)(int) = (int (*)(int))dlsym(h, "plugin_churn");
        if (leak == NULL || churn == NULL)
            return 4;
        kept[i] = leak(333);
        churn(50);
        if (dlclose(h) != 0)
            return 5;
    }
    static const char msg[] = "dl done\n";
    if (write(1, msg, sizeof msg - 1) < 0)
        return 6;
    return 0;
}
