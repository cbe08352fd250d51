/* Prints what the clocks give (logical under pappus) and 8 random bytes (host CSPRNG). */
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

static long long now(clockid_t clock) {
    struct timespec t;
    if (clock_gettime(clock, &t)) return -1;
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(void) {
    long long a = now(CLOCK_MONOTONIC), b = now(CLOCK_MONOTONIC);
    printf("monotonic %lld then %lld\n", a, b);
    printf("time %lld\n", (long long)time(NULL));
    sleep(2);
    printf("after sleep(2) %lld\n", now(CLOCK_MONOTONIC));
    unsigned char bytes[8];
    getentropy(bytes, sizeof bytes);
    for (int i = 0; i < 8; i++) printf("%02x", bytes[i]);
    printf("\n");
    return 0;
}
