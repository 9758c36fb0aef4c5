/* A native module, as small as one can be: one function an interpreter calls, formatting text with the C library,
   as a Python extension's or a node addon's C code does. Built once per C library by notebook 05. */
#include <stdio.h>

static char reply[128];

const char *greet(const char *name) {
    snprintf(reply, sizeof reply, "native module says %s", name);
    return reply;
}
