#include <stdio.h>
#include <string.h>

/* A tiny program; --check prints ok and exits. */
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--check") == 0) { puts("ok"); return 0; }
    puts("hello from c");
    return 0;
}
