/* Reads /in/a, /in/dir/b, stdin, argv and $GREETING; writes stdout, stderr and files in /out,
   including a nested path and an output key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static size_t slurp(const char *path, char *buffer, size_t size) {
    FILE *file = fopen(path, "rb");
    if (!file) { perror(path); exit(2); }
    size_t n = fread(buffer, 1, size - 1, file);
    buffer[n] = 0;
    fclose(file);
    return n;
}

static void put(const char *path, const char *text) {
    FILE *file = fopen(path, "w");
    if (!file) { perror(path); exit(3); }
    fputs(text, file);
    fclose(file);
}

int main(int argc, char **argv) {
    char a[256], b[256], input[256];
    slurp("/in/a", a, sizeof a);
    slurp("/in/dir/b", b, sizeof b);
    size_t n = fread(input, 1, sizeof input - 1, stdin);
    input[n] = 0;
    printf("argc=%d", argc);
    for (int i = 0; i < argc; i++) printf(" [%s]", argv[i]);
    const char *greeting = getenv("GREETING");
    printf("\ngreeting=%s\nstdin=%s\n", greeting ? greeting : "(unset)", input);
    fprintf(stderr, "read %zu bytes of stdin\n", n);
    char joined[600];
    snprintf(joined, sizeof joined, "%s+%s", a, b);
    put("/out/joined", joined);
    if (mkdir("/out/nested", 0755) || mkdir("/out/nested/deep", 0755)) { perror("mkdir"); return 4; }
    put("/out/nested/deep/file", "deep");
    put("/out/keyed@42", "forty-two");
    return 0;
}
