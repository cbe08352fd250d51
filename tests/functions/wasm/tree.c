/* Exercises directories, metadata, seeking, renaming and errors; reports on stdout. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int compare(const void *a, const void *b) { return strcmp(*(char **)a, *(char **)b); }

static void list(const char *path) {
    DIR *dir = opendir(path);
    if (!dir) { printf("opendir %s: %s\n", path, strerror(errno)); return; }
    char *names[64];
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) && count < 64) names[count++] = strdup(entry->d_name);
    closedir(dir);
    qsort(names, count, sizeof names[0], compare);
    printf("%s:", path);
    for (int i = 0; i < count; i++) {
        char full[512];
        struct stat info;
        snprintf(full, sizeof full, "%s/%s", path, names[i]);
        if (stat(full, &info)) { printf(" %s(?)", names[i]); continue; }
        if (S_ISDIR(info.st_mode)) printf(" %s/", names[i]);
        else printf(" %s(%lld)", names[i], (long long)info.st_size);
    }
    printf("\n");
}

static const char *outcome(int ok) { return ok ? "ok" : strerror(errno); }

int main(void) {
    list("/in");
    list("/in/dir");
    /* seek and read inside an input file */
    FILE *in = fopen("/in/a", "rb");
    char buffer[16] = {0};
    fseek(in, 2, SEEK_SET);
    fread(buffer, 1, 3, in);
    printf("seek 2 read 3: %s, tell %ld\n", buffer, ftell(in));
    fseek(in, -1, SEEK_END);
    printf("last byte: %c\n", fgetc(in));
    fclose(in);
    /* writing, appending, truncating, overwriting in the middle */
    FILE *out = fopen("/out/log", "w");
    fputs("one\n", out);
    fclose(out);
    out = fopen("/out/log", "a");
    fputs("two\n", out);
    fclose(out);
    int fd = open("/out/log", O_RDWR);
    printf("pwrite: %zd\n", pwrite(fd, "ONE", 3, 0));
    close(fd);
    out = fopen("/out/cut", "w");
    fputs("0123456789", out);
    fclose(out);
    printf("truncate: %s\n", outcome(truncate("/out/cut", 4) == 0));
    /* directories */
    printf("mkdir: %s\n", outcome(mkdir("/out/d", 0755) == 0));
    printf("mkdir again: %s\n", outcome(mkdir("/out/d", 0755) == 0));
    printf("mkdir in input: %s\n", outcome(mkdir("/in/x", 0755) == 0));
    printf("mkdir at root: %s\n", outcome(mkdir("/newset", 0755) == 0));
    out = fopen("/out/d/tmp", "w");
    fputs("temporary", out);
    fclose(out);
    printf("rmdir non-empty: %s\n", outcome(rmdir("/out/d") == 0));
    printf("rename: %s\n", outcome(rename("/out/d/tmp", "/out/d/kept@5") == 0));
    printf("open missing: %s\n", outcome(fopen("/out/nothing", "r") != NULL));
    printf("file as dir: %s\n", outcome(fopen("/in/a/x", "r") != NULL));
    printf("dir for writing: %s\n", outcome(fopen("/out/d", "w") != NULL));
    out = fopen("/out/gone", "w");
    fputs("gone", out);
    fclose(out);
    printf("unlink: %s\n", outcome(unlink("/out/gone") == 0));
    printf("unlink again: %s\n", outcome(unlink("/out/gone") == 0));
    printf("unlink output dir: %s\n", outcome(rmdir("/out") == 0));
    printf("dotdot: %s\n", outcome(fopen("/out/../in/a", "r") != NULL));
    printf("above root: %s\n", outcome(fopen("/../../in/a", "r") != NULL));
    list("/out");
    list("/out/d");
    /* the input keys */
    FILE *keys = fopen("/.pappus/keys/in", "r");
    char line[128];
    while (keys && fgets(line, sizeof line, keys)) printf("key line: %s", line);
    if (keys) fclose(keys);
    return 0;
}
