/* Allocates and touches 1 MiB blocks until malloc fails, then aborts. */
#include <stdlib.h>
#include <string.h>
char *volatile last;
int main(void) {
    for (;;) {
        char *block = malloc(1 << 20);
        if (!block) abort();
        memset(block, 1, 1 << 20);
        last = block;
    }
}
