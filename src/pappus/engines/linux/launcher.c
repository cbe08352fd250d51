/*
 * pappus linux-engine launcher: the only native code of the linux engine.
 *
 * The worker starts this static, libc-free program ahead of time (a warm
 * pool), with posix_spawn (never fork: the worker's memory must not be
 * inherited), an empty environment, its parameter memfd on descriptor 0 and
 * one end of a socket pair on descriptor 3. Before any invocation exists the
 * launcher
 *
 *   1. maps the parameter memfd (shared: the worker's writes show through)
 *      and records the mapping's address in it;
 *   2. closes every other descriptor; sets RLIMIT_NOFILE, RLIMIT_STACK, no
 *      core dumps and no file writes; drops to uid/gid 65534 with no groups
 *      when the worker asks (it does where it can still set the process's
 *      limits: in the zygote's user namespace, or with CAP_SYS_RESOURCE);
 *      gives up every capability; sets no_new_privs,
 *      so the exec cannot grant any back;
 *   3. writes one byte ("armed") to the socket and closes it, then installs
 *      the filter the worker generated from the policy table, with
 *      SECCOMP_FILTER_FLAG_NEW_LISTENER. The listener lands on the lowest free
 *      descriptor, always 0 here; the worker takes it with pidfd_getfd;
 *   4. calls execveat(1, "", argv, envp, AT_EMPTY_PATH) with argv and envp at
 *      fixed places in the shared mapping. The filter stops this call and
 *      queues it to the listener: the launcher is now *parked*.
 *
 * An invocation takes a parked launcher. The worker writes argv and envp
 * (strings and pointer tables, pointing into the launcher's mapping), sets
 * RLIMIT_AS and RLIMIT_CPU from outside with prlimit, installs the function's
 * sealed executable as descriptor 1 (SECCOMP_IOCTL_NOTIF_ADDFD, close-on-exec)
 * and lets the parked execveat run. No process start, no hand-over message,
 * no filter installation is left on the invocation's path. The launcher's
 * memory is never the program's: the exec replaces it, and every descriptor
 * is close-on-exec, so the program starts with none.
 *
 * Started with the argument "zygote", the program starts launchers instead
 * (as the process engine's runner does), from a user namespace of its own (see
 * zygote()): it keeps only descriptor 3, and for
 * each request on it (one byte carrying a new launcher's parameter memfd)
 * makes a socket pair and clones itself with CLONE_PARENT, so the worker is
 * the launcher's parent; it sends the worker its end with the new pid. The
 * clone renames its argument to "launch", puts the memfd on descriptor 0 and
 * its end on 3, and goes on from step 1 exactly as a launcher started by
 * posix_spawn. The zygote never sees an invocation, so a clone holds nothing
 * but the launcher's own image. A clone is cheaper than a new exec.
 *
 * A failure is written into the parameter memfd (which step, which errno),
 * then the launcher exits. If the worker closes the listener instead (the
 * pool is closing, or the worker died) the parked call fails with ENOSYS
 * and the launcher exits the same way.
 */
#include <stddef.h>
#include <stdint.h>

#define PARAMS_MAGIC 0x324e4c5050415050ULL /* "PPAPPLN2" little-endian */
#define MAX_FILTER 4096
#define MAX_PARAMS (8UL << 20)
#define SETUP_STATUS 250
#define PARAMS_FD 0
#define LISTENER_FD 0
#define EXECUTABLE_FD 1
#define CHANNEL_FD 3
#define NOBODY 65534

struct sock_filter {
    uint16_t code;
    uint8_t jt, jf;
    uint32_t k;
};

/* The parameter memfd starts with this header; the filter follows it. The worker owns
 * the rest (argv and envp pointer tables at the given offsets, then the strings). */
struct params {
    uint64_t magic;
    uint64_t size;            /* of the memfd, bytes */
    uint64_t descriptors;     /* RLIMIT_NOFILE */
    uint64_t stack;           /* RLIMIT_STACK, bytes */
    uint64_t filter_length;   /* instructions */
    uint64_t argv_offset;     /* NULL-terminated pointer tables, written by the worker */
    uint64_t envp_offset;
    uint64_t become_nobody;   /* 1: switch to uid/gid 65534 (needs root) */
    /* written by the launcher: */
    uint64_t base;            /* address of its mapping: the worker's pointers point into it */
    uint64_t failed_step;     /* 0 = none */
    int64_t failed_errno;
};

#include "raw_syscall.h" /* placed beside this file by native_build */

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

/* Map the parameters (descriptor 0) and check the header against the memfd's size. */
static void map_parameters(void) {
    uint64_t status[18]; /* struct stat: st_size at byte 48 */
    if (sys6(SYS_FSTAT, PARAMS_FD, (long)status, 0, 0, 0, 0) < 0) leave(SETUP_STATUS);
    const uint64_t length = status[6];
    if (length < sizeof(struct params) || length > MAX_PARAMS) leave(SETUP_STATUS);
    long mapped = sys6(SYS_MMAP, 0, (long)length, 3 /* READ|WRITE */, 0x01 /* MAP_SHARED */,
                       PARAMS_FD, 0);
    if (mapped < 0) leave(SETUP_STATUS);
    shared = (volatile struct params *)mapped;
    check(sys6(SYS_CLOSE, PARAMS_FD, 0, 0, 0, 0, 0), 1);
    const uint64_t filter_end =
        sizeof(struct params) + shared->filter_length * sizeof(struct sock_filter);
    if (shared->magic != PARAMS_MAGIC || shared->size != length || shared->filter_length == 0 ||
        shared->filter_length > MAX_FILTER || shared->argv_offset < filter_end ||
        shared->envp_offset < filter_end || shared->argv_offset % 8 || shared->envp_offset % 8 ||
        shared->argv_offset > length - 8 || shared->envp_offset > length - 8)
        check(-22 /* EINVAL */, 1);
    shared->base = (uint64_t)mapped;
}

static void set_limit(int resource, uint64_t value) {
    uint64_t limit[2] = {value, value};
    check(sys6(SYS_SETRLIMIT, resource, (long)limit, 0, 0, 0, 0), 3);
}

__attribute__((noreturn)) static void launcher_main(void) {
    /* Only the parameters and the socket: the worker's descriptors must not reach the program. */
    sys6(SYS_CLOSE_RANGE, PARAMS_FD + 1, CHANNEL_FD - 1, 0, 0, 0, 0);
    sys6(SYS_CLOSE_RANGE, CHANNEL_FD + 1, ~0UL, 0, 0, 0, 0);
    map_parameters();
    const char *base = (const char *)shared;

    /* 2. Limits that do not depend on the invocation (RLIMIT_AS and RLIMIT_CPU do: the
     * worker sets them with prlimit just before letting the program start). */
    set_limit(4 /* RLIMIT_CORE */, 0);
    set_limit(1 /* RLIMIT_FSIZE */, 0);
    set_limit(7 /* RLIMIT_NOFILE */, shared->descriptors);
    set_limit(3 /* RLIMIT_STACK */, shared->stack);
    if (shared->become_nobody) {
        check(sys6(SYS_SETGROUPS, 0, 0, 0, 0, 0, 0), 4);
        check(sys6(SYS_SETRESGID, NOBODY, NOBODY, NOBODY, 0, 0, 0), 4);
        check(sys6(SYS_SETRESUID, NOBODY, NOBODY, NOBODY, 0, 0, 0), 4);
    }
    /* No capabilities, whatever the identity: effective, permitted and inheritable all
     * empty (ambient ones go with them). */
    uint32_t header[2] = {0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0};
    uint32_t none[6] = {0, 0, 0, 0, 0, 0};
    check(sys6(SYS_CAPSET, (long)header, (long)none, 0, 0, 0, 0), 4);
    check(sys6(SYS_PRCTL, 38 /* PR_SET_NO_NEW_PRIVS */, 1, 0, 0, 0, 0), 4);

    /* 3. "armed", then the filter. From here on every call is the filter's business. */
    const char armed = 'a';
    check(sys6(SYS_WRITE, CHANNEL_FD, (long)&armed, 1, 0, 0, 0), 5);
    check(sys6(SYS_CLOSE, CHANNEL_FD, 0, 0, 0, 0, 0), 5);
    struct {
        uint16_t length;
        const struct sock_filter *filter;
    } program = {(uint16_t)shared->filter_length, (const struct sock_filter *)(shared + 1)};
    /* WAIT_KILLABLE_RECV (Linux 5.19): once the supervisor has a call, only a fatal signal
     * interrupts the caller's wait, so a signal the program sends itself is delivered
     * after the answer, not by interrupting the call. Older kernels refuse the flag. */
    long listener = sys6(SYS_SECCOMP, 1 /* SECCOMP_SET_MODE_FILTER */,
                         8 | 32 /* NEW_LISTENER | WAIT_KILLABLE_RECV */, (long)&program, 0, 0, 0);
    if (listener == -22 /* EINVAL */)
        listener = sys6(SYS_SECCOMP, 1, 8 /* NEW_LISTENER */, (long)&program, 0, 0, 0);
    check(listener, 6);
    if (listener != LISTENER_FD) check(-9 /* EBADF */, 6);

    /* 4. Parked until an invocation fills in argv, envp, the limits and descriptor 1.
     * Only returns on failure. */
    static const char empty[] = "";
    check(sys6(SYS_EXECVEAT, EXECUTABLE_FD, (long)empty, (long)(base + shared->argv_offset),
               (long)(base + shared->envp_offset), 0x1000 /* AT_EMPTY_PATH */, 0), 7);
    leave(SETUP_STATUS);
}

#include "fd_passing.h" /* placed beside this file by native_build */

/* One request from the worker: a byte with a parameter memfd; -1 at end-of-file. */
static int receive_parameters(void) {
    int fd = receive_fd(CHANNEL_FD, 0);
    return fd < 0 ? -1 : fd;
}

/* Send the worker its end of a new launcher's socket pair, with the launcher's pid. */
static long send_launcher(int fd, int32_t pid) { return send_fd_with_pid(CHANNEL_FD, fd, pid); }

static void close_one(int fd) { sys6(SYS_CLOSE, fd, 0, 0, 0, 0, 0); }

/* `mode` is the zygote's argument string: a clone renames itself "launch" (same length),
 * so /proc and ps tell the zygote and its launchers apart. */
__attribute__((noreturn)) static void zygote(char *mode) {
    /* Only the worker's socket: nothing the worker let through by mistake is kept open. */
    sys6(SYS_CLOSE_RANGE, 0, CHANNEL_FD - 1, 0, 0, 0, 0);
    sys6(SYS_CLOSE_RANGE, CHANNEL_FD + 1, ~0UL, 0, 0, 0, 0);
    /* A user namespace of its own, so that launchers can become uid/gid 65534 and the
     * worker (its owner) can still set their limits without CAP_SYS_RESOURCE on the host.
     * 'u': the worker maps 65534 into it before its first request; 'n': not available
     * here (the launchers then keep the worker's identity, as spawned ones do). */
    const char userns = sys6(SYS_UNSHARE, CLONE_NEWUSER, 0, 0, 0, 0, 0) == 0 ? 'u' : 'n';
    if (sys6(SYS_WRITE, CHANNEL_FD, (long)&userns, 1, 0, 0, 0) != 1) leave(SETUP_STATUS);
    for (;;) {
        const int parameters = receive_parameters();
        if (parameters < 0) leave(0); /* the pool is closed, or the worker is gone */
        int pair[2];
        if (sys6(SYS_SOCKETPAIR, 1 /* AF_UNIX */, 1 /* SOCK_STREAM */, 0, (long)pair, 0, 0) < 0)
            leave(SETUP_STATUS); /* the worker starts launchers itself then */
        long pid = sys6(SYS_CLONE, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0, 0);
        if (pid == 0) { /* the new launcher: parameters on 0, its end on 3 */
            const char launch[] = "launch";
            for (unsigned i = 0; i < sizeof launch; i++) mode[i] = launch[i];
            /* 3 is the zygote's socket, never one of these: replace it first. */
            if (sys6(SYS_DUP3, pair[1], CHANNEL_FD, 0, 0, 0, 0) < 0) leave(SETUP_STATUS);
            if (parameters != PARAMS_FD &&
                sys6(SYS_DUP3, parameters, PARAMS_FD, 0, 0, 0, 0) < 0)
                leave(SETUP_STATUS);
            launcher_main(); /* closes every other descriptor first */
        }
        if (pid > 0 && send_launcher(pair[0], (int32_t)pid) < 0) leave(SETUP_STATUS);
        close_one(parameters);
        close_one(pair[0]);
        close_one(pair[1]);
        if (pid < 0) leave(SETUP_STATUS);
    }
}

/* argc and argv as the kernel left them: "zygote" as the first argument selects the mode. */
__attribute__((used, noreturn)) void launcher_entry(const uint64_t *initial_stack) {
    char *const *argv = (char *const *)(initial_stack + 1);
    char *mode = initial_stack[0] >= 2 ? argv[1] : 0;
    if (mode && mode[0] == 'z' && mode[1] == 'y' && mode[2] == 'g' && mode[3] == 'o' &&
        mode[4] == 't' && mode[5] == 'e' && mode[6] == 0)
        zygote(mode);
    launcher_main();
}

__asm__(
    ".text\n"
    ".global _start\n"
    "_start:\n"
    "    mov %rsp, %rdi\n"
    "    and $-16, %rsp\n"
    "    call launcher_entry\n"
    "    hlt\n");
