#include <stdio.h>

/* Linked against glibc as gcc links by default: the kernel must load /lib64/ld-linux-x86-64.so.2 first. */
int main(void) {
    puts("ok");
    return 0;
}
