/* The interpreter's part: open a native module with the dynamic loader (dlopen, as python's import and node's
   require do for a .so or .node file), call its greet() and print what it returns. Exit 1 when the loader refuses
   the module, printing the loader's own message. Built once per C library by notebook 05. */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODULE.so NAME\n", argv[0]);
        return 2;
    }
    void *module = dlopen(argv[1], RTLD_NOW);
    if (module == NULL) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    const char *(*greet)(const char *) = (const char *(*)(const char *))dlsym(module, "greet");
    if (greet == NULL) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    puts(greet(argv[2]));
    return 0;
}
