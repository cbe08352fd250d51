/*
 * hostile: one static Linux program per hostile behaviour for the linux engine,
 * chosen by its first argument (tests/engines/linux/test_hostile.py builds it
 * with musl-gcc and gcc).
 *
 * Refused calls (execve, execveat, x32, fork, socket) report the errno they got;
 * killed calls (ptrace, kill, tkill, tgkill, mount, unshare, io_uring_setup,
 * int80) are made raw and must never return; resource modes (bomb, sbrk-bomb,
 * brk-bomb, spin, spin-calls, flood, files, reopen) exhaust memory, time,
 * output or descriptors; identity, exec-memory and wild probe what the program
 * can learn or do. An unknown mode exits with 2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

/* volatile: the compiler must not see (and refuse) the bad pointers at build time */
static void *volatile WILD = (void *)0x10;
static void *volatile CODE;

static int report(const char *what, long result) {
    printf("%s=%ld errno=%d\n", what, result, result < 0 ? errno : 0);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    fflush(stdout);
    if (!strcmp(mode, "execve")) {
        char *args[] = {"sh", "-c", "echo escaped", NULL};
        errno = 0;
        long r = execve("/bin/sh", args, NULL);
        report("execve", r);
        return r < 0 && errno == EPERM ? 0 : 1;
    }
    if (!strcmp(mode, "execveat")) {
        char *args[] = {"again", NULL};
        errno = 0;
        long r = syscall(SYS_execveat, AT_FDCWD, "/in/data", args, NULL, 0);
        report("execveat", r);
        return r < 0 && errno == EPERM ? 0 : 1;
    }
    if (!strcmp(mode, "x32")) return report("x32", syscall(0x40000000 | SYS_getpid));
    if (!strcmp(mode, "fork")) {
        errno = 0;
        long r = fork();
        if (r == 0) _exit(0);
        return report("fork", r);
    }
    if (!strcmp(mode, "socket")) {
        errno = 0;
        return report("socket", syscall(SYS_socket, 2 /* AF_INET */, 1 /* SOCK_STREAM */, 0));
    }
    if (!strcmp(mode, "ptrace")) return report("ptrace", syscall(SYS_ptrace, 0, 0, 0, 0));
    /* pid and tid 1 are the program itself (getpid): these aim at every other process */
    if (!strcmp(mode, "kill")) return report("kill", kill(-1, SIGKILL));
    if (!strcmp(mode, "tkill")) return report("tkill", syscall(SYS_tkill, 2, SIGKILL));
    if (!strcmp(mode, "tgkill")) return report("tgkill", syscall(SYS_tgkill, 2, 2, SIGKILL));
    if (!strcmp(mode, "mount")) return report("mount", mount("none", "/in", "tmpfs", 0, NULL));
    if (!strcmp(mode, "unshare")) return report("unshare", unshare(CLONE_NEWUSER | CLONE_NEWNS));
    if (!strcmp(mode, "io_uring_setup")) {
        char params[120] = {0};
        return report("io_uring_setup", syscall(425, 8, params));
    }
    if (!strcmp(mode, "int80")) {
        long r;
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20) : "memory");  /* i386 getpid */
        return report("int80", r);
    }
    if (!strcmp(mode, "bomb")) {
        unsigned long total = 0;
        for (;;) {
            char *block = malloc(1 << 20);
            if (!block) {
                printf("malloc failed after %lu MiB\n", total);
                exit(1);
            }
            memset(block, 0xab, 1 << 20);
            total++;
        }
    }
    if (!strcmp(mode, "sbrk-bomb")) {
        for (unsigned long total = 0;; total++) {
            char *block = sbrk(1 << 20);
            if (block == (void *)-1) {
                printf("sbrk failed after %lu MiB\n", total);
                exit(1);
            }
            memset(block, 0xab, 1 << 20);
        }
    }
    if (!strcmp(mode, "brk-bomb")) {
        /* the heap grown by the brk call itself (musl's sbrk refuses any growth);
           no printf: its buffer would come from the heap this moves under glibc */
        char *end = (char *)syscall(SYS_brk, 0);
        for (;;) {
            char *next = (char *)syscall(SYS_brk, end + (1 << 20));
            if (next != end + (1 << 20)) {
                static const char failed[] = "brk failed\n";
                return write(1, failed, sizeof failed - 1) > 0;
            }
            memset(end, 0xab, 1 << 20);
            end = next;
        }
    }
    if (!strcmp(mode, "spin")) {
        for (volatile unsigned long i = 0;; i++) {}
    }
    if (!strcmp(mode, "spin-calls")) {
        for (;;) syscall(SYS_getppid);  /* a notification at every step */
    }
    if (!strcmp(mode, "flood")) {
        static char block[1 << 16];
        memset(block, 'x', sizeof block);
        for (unsigned long written = 0; written < (1UL << 30);) {
            long r = write(1, block, sizeof block);
            if (r <= 0) return report("flood write", r);
            written += (unsigned long)r;
        }
        return 0;
    }
    if (!strcmp(mode, "files")) {
        long limit = argc > 2 ? atol(argv[2]) : 1000000;
        for (long i = 0; i < limit; i++) {
            char path[64];
            snprintf(path, sizeof path, "/out/f%ld", i);
            int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0) {
                printf("created %ld files, then errno=%d\n", i, errno);
                return 1;
            }
            if (write(fd, "x", 1) != 1) return report("files write", -1);
            close(fd);
        }
        printf("created %ld files\n", limit);
        return 0;
    }
    if (!strcmp(mode, "identity")) {
        static int word;
        long tid = syscall(SYS_set_tid_address, &word);
        printf("set_tid_address=%ld getpid=%ld gettid=%ld getppid=%ld\n", tid, (long)getpid(),
               (long)syscall(SYS_gettid), (long)getppid());
        return 0;
    }
    if (!strcmp(mode, "reopen")) {
        /* open one input again and again, keeping every descriptor, then linger */
        long limit = argc > 3 ? atol(argv[3]) : 1000000, opened = 0;
        unsigned sum = 0;
        for (; opened < limit; opened++) {
            int fd = open(argv[2], O_RDONLY);
            unsigned char byte;
            if (fd < 0) break;
            if (read(fd, &byte, 1) == 1) sum += byte;
        }
        printf("opened %ld errno=%d sum=%u\n", opened, opened < limit ? errno : 0, sum);
        usleep(200000);
        return 0;
    }
    if (!strcmp(mode, "exec-memory")) {
        errno = 0;
        void *code = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        report("mmap-exec", code == MAP_FAILED ? -1 : 0);
        void *data = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        report("mmap-data", data == MAP_FAILED ? -1 : 0);
        errno = 0;
        report("mprotect-exec", mprotect(data, 4096, PROT_READ | PROT_WRITE | PROT_EXEC));
        int fd = open("/in/data", O_RDONLY);
        errno = 0;
        void *file = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
        report("mmap-file-exec", file == MAP_FAILED ? -1 : 0);
        return 0;
    }
    if (!strcmp(mode, "wild")) {
        int small = open("/in/data", O_RDONLY), big = open("/in/big", O_RDONLY);
        errno = 0;
        report("read-wild", read(small, WILD, 16));
        errno = 0;
        report("read-big-wild", read(big, WILD, 16));
        errno = 0;
        CODE = (void *)main;
        report("read-into-code", read(small, CODE, 16));
        errno = 0;
        report("write-wild", write(1, WILD, 16));
        errno = 0;
        report("open-wild", open(WILD, O_RDONLY));
        errno = 0;
        report("stat-wild", syscall(SYS_newfstatat, AT_FDCWD, "/in/data", WILD, 0));
        char buffer[4];
        report("read-after", read(small, buffer, sizeof buffer));
        printf("data=%.4s\n", buffer);
        return 0;
    }
    printf("unknown mode %s\n", mode);
    return 2;
}
