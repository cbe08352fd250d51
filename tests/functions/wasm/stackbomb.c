/* Recurses without end: the wasm stack overflows (a trap, not a worker crash). */
#include <stdio.h>
static volatile int sink;
__attribute__((noinline)) static int depth(int n) {
    volatile char pad[256];
    pad[n & 255] = (char)n;
    int result = depth(n + 1);  /* pad is read after the call: no loop, no tail call */
    sink = pad[n & 255];
    return result;
}
int main(void) { printf("%d\n", depth(0)); return 0; }
