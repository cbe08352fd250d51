/*
 * pappus linux-engine launcher: the only native code of the linux engine.
 *
 * The worker starts this static, libc-free program with posix_spawn (never
 * fork: the worker's memory must not be inherited), with an empty
 * environment and one end of a socket pair on descriptor 3, usually ahead
 * of time (a warm pool). An invocation sends two descriptors over that
 * socket: the function's static executable (a sealed memfd) and a
 * parameter memfd; end-of-file instead means "not needed, exit". The
 * launcher then
 *
 *   1. maps the parameters (limits, the seccomp program the worker generated
 *      from the policy table, argv and envp strings) and builds the argv and
 *      envp arrays;
 *   2. closes every other descriptor, sets RLIMIT_AS, RLIMIT_CPU,
 *      RLIMIT_NOFILE, RLIMIT_STACK, no core dumps, no file writes, and
 *      no_new_privs;
 *   3. writes one byte ("armed") to the socket, then installs the filter with
 *      SECCOMP_FILTER_FLAG_NEW_LISTENER. The listener lands on the lowest free
 *      descriptor, which is always 1 here (0 is the executable, 3 the socket);
 *      the supervisor takes it with pidfd_getfd;
 *   4. execveat(executable, "", argv, envp, AT_EMPTY_PATH). The filter sends
 *      this call to the supervisor, which lets exactly this first one through;
 *      every descriptor is close-on-exec, so the program starts with none.
 *
 * A failure before the program runs is written into the parameter memfd
 * (shared, so the worker sees it after the exit: which step, which errno)
 * and the launcher exits. That word is the launcher's only channel besides
 * its exit status; the program can never reach it (the mapping and the
 * descriptor are gone after the exec).
 */
#include <stddef.h>
#include <stdint.h>

#define PARAMS_MAGIC 0x314e4c5050415050ULL /* "PPAPPLN1" little-endian */
#define MAX_FILTER 4096
#define SETUP_STATUS 250
#define LISTENER_FD 1
#define EXECUTABLE_FD 0
#define CHANNEL_FD 3

struct sock_filter {
    uint16_t code;
    uint8_t jt, jf;
    uint32_t k;
};

/* The parameter memfd: this header, the filter, then argc + envc NUL-terminated strings. */
struct params {
    uint64_t magic;
    uint64_t address_space;   /* RLIMIT_AS, bytes */
    uint64_t cpu_seconds;     /* RLIMIT_CPU */
    uint64_t descriptors;     /* RLIMIT_NOFILE */
    uint64_t stack;           /* RLIMIT_STACK, bytes */
    uint64_t filter_length;   /* instructions */
    uint64_t argc, envc;
    uint64_t strings_length;
    /* written by the launcher when setup fails: */
    uint64_t failed_step;     /* 0 = none */
    int64_t failed_errno;
};

static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long result;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return result;
}

#define SYS_WRITE 1
#define SYS_MMAP 9
#define SYS_CLOSE 3
#define SYS_FSTAT 5
#define SYS_RECVMSG 47
#define SYS_FCNTL 72
#define SYS_PRCTL 157
#define SYS_SETRLIMIT 160
#define SYS_EXIT_GROUP 231
#define SYS_SECCOMP 317
#define SYS_EXECVEAT 322
#define SYS_CLOSE_RANGE 436

static volatile struct params *shared;

__attribute__((noreturn)) static void leave(int status) {
    for (;;) sys6(SYS_EXIT_GROUP, status, 0, 0, 0, 0, 0);
}

/* Record which step failed and why, where the worker will look, and exit. */
static void check(long result, int step) {
    if (result >= 0) return;
    if (shared) {
        shared->failed_errno = -result;
        shared->failed_step = (uint64_t)step;
    }
    leave(SETUP_STATUS);
}

/* Wait for the executable and the parameters (SCM_RIGHTS) on descriptor 3. */
static void receive(void) {
    uint64_t length = 0;
    uint64_t iov[2] = {(uint64_t)&length, sizeof length};
    uint64_t control[4] = {0, 0, 0, 0}; /* CMSG_SPACE(2 * sizeof(int)) == 24 */
    struct {
        void *name;
        uint32_t name_len, pad0;
        void *iov;
        uint64_t iov_len;
        void *control;
        uint64_t control_len;
        int32_t flags, pad1;
    } message = {0, 0, 0, iov, 1, control, 24, 0, 0};
    long received = sys6(SYS_RECVMSG, CHANNEL_FD, (long)&message,
                         0x40000000 /* MSG_CMSG_CLOEXEC */, 0, 0, 0);
    if (received <= 0) leave(0); /* the worker closed the pool: not needed */
    const uint32_t *header = (const uint32_t *)control; /* len (8 bytes), level, type, fds */
    if (received != sizeof length || control[0] != 24 || header[2] != 1 /* SOL_SOCKET */ ||
        header[3] != 1 /* SCM_RIGHTS */ || (int)header[4] != EXECUTABLE_FD)
        leave(SETUP_STATUS);
    const int params_fd = (int)header[5];
    if (length < sizeof(struct params) || length > (64UL << 20)) leave(SETUP_STATUS);
    long mapped = sys6(SYS_MMAP, 0, (long)length, 3 /* READ|WRITE */, 0x01 /* MAP_SHARED */,
                       params_fd, 0);
    if (mapped < 0) leave(SETUP_STATUS);
    shared = (volatile struct params *)mapped;
    check(sys6(SYS_CLOSE, params_fd, 0, 0, 0, 0, 0), 1);
    if (shared->magic != PARAMS_MAGIC || shared->filter_length == 0 ||
        shared->filter_length > MAX_FILTER ||
        sizeof(struct params) + shared->filter_length * sizeof(struct sock_filter) +
                shared->strings_length > length ||
        shared->argc == 0 || shared->argc + shared->envc > (1UL << 20))
        check(-22 /* EINVAL */, 1);
}

__attribute__((used, noreturn)) void launcher_main(void) {
    /* Only the socket: the worker's standard descriptors must not reach the program. */
    sys6(SYS_CLOSE_RANGE, 0, CHANNEL_FD - 1, 0, 0, 0, 0);
    sys6(SYS_CLOSE_RANGE, CHANNEL_FD + 1, ~0UL, 0, 0, 0, 0);
    receive();
    struct params params = *(struct params *)shared;
    const struct sock_filter *filter = (const struct sock_filter *)(shared + 1);
    const char *strings = (const char *)(filter + params.filter_length);
    const char *end = strings + params.strings_length;

    /* 1. argv and envp point into the shared mapping, which survives until the exec. */
    long table = sys6(SYS_MMAP, 0, (long)((params.argc + params.envc + 2) * sizeof(char *)),
                      3, 0x22 /* MAP_PRIVATE|MAP_ANONYMOUS */, -1, 0);
    check(table, 2);
    const char **argv = (const char **)table;
    const char **envp = argv + params.argc + 1;
    const char *cursor = strings;
    for (uint64_t i = 0; i < params.argc + params.envc; i++) {
        const char **slot = i < params.argc ? &argv[i] : &envp[i - params.argc];
        *slot = cursor;
        while (cursor < end && *cursor) cursor++;
        if (cursor >= end) check(-22, 2); /* not NUL-terminated: refuse */
        cursor++;
    }
    argv[params.argc] = 0;
    envp[params.envc] = 0;

    /* 2. Limits. Every descriptor is close-on-exec already (MSG_CMSG_CLOEXEC), except
     * the socket, which posix_spawn's dup2 made inheritable. */
    check(sys6(SYS_FCNTL, CHANNEL_FD, 2 /* F_SETFD */, 1 /* FD_CLOEXEC */, 0, 0, 0), 3);
    uint64_t limit[2];
    limit[0] = limit[1] = params.cpu_seconds;
    check(sys6(SYS_SETRLIMIT, 0 /* RLIMIT_CPU */, (long)limit, 0, 0, 0, 0), 3);
    limit[0] = limit[1] = 0;
    check(sys6(SYS_SETRLIMIT, 4 /* RLIMIT_CORE */, (long)limit, 0, 0, 0, 0), 3);
    check(sys6(SYS_SETRLIMIT, 1 /* RLIMIT_FSIZE */, (long)limit, 0, 0, 0, 0), 3);
    limit[0] = limit[1] = params.descriptors;
    check(sys6(SYS_SETRLIMIT, 7 /* RLIMIT_NOFILE */, (long)limit, 0, 0, 0, 0), 3);
    limit[0] = limit[1] = params.stack;
    check(sys6(SYS_SETRLIMIT, 3 /* RLIMIT_STACK */, (long)limit, 0, 0, 0, 0), 3);
    limit[0] = limit[1] = params.address_space;
    check(sys6(SYS_SETRLIMIT, 9 /* RLIMIT_AS */, (long)limit, 0, 0, 0, 0), 3);
    check(sys6(SYS_PRCTL, 38 /* PR_SET_NO_NEW_PRIVS */, 1, 0, 0, 0, 0), 4);

    /* 3. "armed", then the filter. From here on every call is the filter's business. */
    const char armed = 'a';
    check(sys6(SYS_WRITE, CHANNEL_FD, (long)&armed, 1, 0, 0, 0), 5);
    struct {
        uint16_t length;
        const struct sock_filter *filter;
    } program = {(uint16_t)params.filter_length, filter};
    long listener = sys6(SYS_SECCOMP, 1 /* SECCOMP_SET_MODE_FILTER */,
                         8 /* SECCOMP_FILTER_FLAG_NEW_LISTENER */, (long)&program, 0, 0, 0);
    check(listener, 6);
    if (listener != LISTENER_FD) check(-9 /* EBADF */, 6);

    /* 4. The program. Only returns on failure. */
    static const char empty[] = "";
    check(sys6(SYS_EXECVEAT, EXECUTABLE_FD, (long)empty, (long)argv, (long)envp,
               0x1000 /* AT_EMPTY_PATH */, 0), 7);
    leave(SETUP_STATUS);
}

__asm__(
    ".text\n"
    ".global _start\n"
    "_start:\n"
    "    and $-16, %rsp\n"
    "    call launcher_main\n"
    "    hlt\n");
