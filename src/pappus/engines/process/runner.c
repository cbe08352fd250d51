/*
 * pappus process-engine runner: the only native code of the process engine.
 *
 * The worker starts this static, libc-free program with posix_spawn (never
 * fork: the worker's memory must not be inherited), with an empty
 * environment, one end of a socket pair on descriptor 3 and the seccomp
 * filter the worker generated on descriptor 5, usually ahead of time (a warm
 * pool). An invocation sends the context — a memfd — over the socket;
 * end-of-file instead means "not needed, exit". The first 64 KiB of the
 * context (below the function's lowest address, 0x10000) hold the parameters
 * the worker prepared: segment protections and limits. The runner
 *
 *   0. before the context arrives (nothing here depends on it): forbids
 *      core dumps and file writes, bounds its own stack, installs a handler
 *      that, on SIGSYS from the filter or a fault, writes a report (signal,
 *      syscall, fault address, rip) at the top of the context and exits with
 *      REPORT_STATUS, sets no_new_privs and installs the filter; then, with
 *      the context:
 *   1. reads the parameters, maps the context at address 0x10000 (context
 *      offset == virtual address; MAP_FIXED_NOREPLACE, so it never replaces
 *      its own mappings) and applies each segment's protection;
 *   2. closes every descriptor, sets RLIMIT_CPU and makes itself
 *      non-dumpable;
 *   3. from its "final" code page: unmaps its own set-up code, clears the
 *      registers and jumps to the function's entry with the stack at
 *      context_size - 32.
 *
 * The filter is in force from step 0, so it tells the runner's calls from
 * the function's by where they are made (seccomp sees the instruction
 * pointer): calls from the set-up code (the ELF's text up to the final page)
 * may be the few this program makes; from the final page, only the exact
 * munmap of the set-up code and exit_group; from anywhere else, only what the
 * function's policy allows. After step 3 no set-up code is mapped, and the
 * function cannot map any (mmap, mprotect and brk are not in its policy).
 * Installing a filter costs ~20 µs (the kernel converts and compiles it), so
 * this keeps it off the invocation's path; and the zygote below installs it
 * once for all its clones, which inherit it.
 *
 * Setup failures exit with SETUP_STATUS_BASE + step before the function
 * runs.
 *
 * Started with the argument "zygote", the program starts runners instead:
 * it does step 0 once, then for each byte read on descriptor 4 (a pipe) it
 * makes a socket pair and clones itself with CLONE_PARENT (the worker becomes
 * the parent, reaps it and opens its pidfd), and sends the worker its end
 * with the new pid. The clone closes everything but its end, which becomes its
 * descriptor 3, and continues exactly as a runner started by posix_spawn
 * after step 0 (which it inherited: limits, handlers, no_new_privs and the
 * filter): the zygote never receives a context, so a clone holds nothing but
 * the runner's own image. A clone is cheaper than a new exec (no new program
 * to load, no filter to install).
 *
 * The runner is linked far above any context (see runner.py), and
 * everything it touches after step 3 is the function's own business: the
 * handler (on the final page) only writes memory and calls exit_group, which
 * the filter allows.
 */
#include <stddef.h>
#include <stdint.h>

#define PARAMS_MAGIC 0x3252554e52505050ULL /* "PPPRNUR2" little-endian */
#define REPORT_MAGIC 0x50525050U /* "PPRP" */
#define MAX_SEGMENTS 32
#define MAX_FILTER 6000
#define SETUP_STATUS_BASE 240
#define REPORT_STATUS 239
#define FUNCTION_BASE 0x10000UL
#define FILTER_FD 5

/* The final page: the only code left mapped once the function runs (see above). Each
 * function here is whole in this section (always_inline system calls, no partitioning). */
#define FINAL __attribute__((section("pappus_final"), noinline, used))
/* The linker's bounds of the runner's image and of the final section. */
extern char __executable_start[], __start_pappus_final[];

struct segment {
    uint64_t address, length, protection;
};

struct sock_filter {
    uint16_t code;
    uint8_t jt, jf;
    uint32_t k;
};

struct params {
    uint64_t magic;
    uint64_t context_size;
    uint64_t entry;
    uint64_t stack;
    uint64_t cpu_seconds;
    uint64_t report_address;
    uint64_t segment_count;
    struct segment segments[MAX_SEGMENTS];
};

/* 32 bytes at context_size - 32: above the function's initial stack pointer. */
struct report {
    uint32_t magic;
    uint16_t signal;
    int16_t code;
    int32_t syscall;
    uint32_t arch;
    uint64_t address;
    uint64_t rip;
};

static struct params params;
static struct sock_filter filter[MAX_FILTER];
static int filter_installed; /* set by the zygote: its clones inherit the filter */
static unsigned char signal_stack[16384] __attribute__((aligned(16)));

#include "raw_syscall.h" /* placed beside this file by native_build */

FINAL __attribute__((noreturn)) static void leave(int status) {
    for (;;) sys6(SYS_EXIT_GROUP, status, 0, 0, 0, 0, 0);
}

static void check(long result, int step) {
    if (result < 0) leave(SETUP_STATUS_BASE + step);
}

/* SIGSYS (from the filter) and faults: report, then exit. Runs on the
 * alternate stack, so a function with a wild stack pointer is still seen. */
FINAL static void on_signal(int signal, void *info_raw, void *context_raw) {
    const unsigned char *info = info_raw;
    const unsigned char *context = context_raw;
    struct report *report = (struct report *)params.report_address;
    if (!report) leave(SETUP_STATUS_BASE + 6); /* before any context: the runner's own fault */
    report->signal = (uint16_t)signal;
    report->code = (int16_t) * (const int32_t *)(info + 8);
    report->address = *(const uint64_t *)(info + 16); /* si_addr or si_call_addr */
    report->syscall = *(const int32_t *)(info + 24);  /* SIGSYS only */
    report->arch = *(const uint32_t *)(info + 28);    /* SIGSYS only */
    report->rip = *(const uint64_t *)(context + 168); /* uc_mcontext.gregs[REG_RIP] */
    report->magic = REPORT_MAGIC;
    leave(REPORT_STATUS);
}

struct kernel_sigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

#define SA_SIGINFO 4
#define SA_ONSTACK 0x08000000
#define SA_RESTORER 0x04000000

FINAL static void restore(void) { leave(REPORT_STATUS); }

#include "fd_passing.h" /* placed beside this file by native_build */

/* Wait for the context descriptor (SCM_RIGHTS) on the socket, descriptor 3. */
static int receive_context(void) {
    int fd = receive_fd(3, 0x40000000 /* MSG_CMSG_CLOEXEC */);
    if (fd == FD_CLOSED) leave(0); /* the worker closed the pool: not needed */
    if (fd < 0) leave(SETUP_STATUS_BASE);
    return fd;
}

/* 0. What does not depend on the invocation is done before waiting for it (off its
 * path): limits, signal reports, no_new_privs and the filter (read from FILTER_FD). */
static void prepare_before_context(void) {
    uint64_t zero[2] = {0, 0};
    check(sys6(SYS_SETRLIMIT, 4 /* RLIMIT_CORE */, (long)zero, 0, 0, 0, 0), 5);
    check(sys6(SYS_SETRLIMIT, 1 /* RLIMIT_FSIZE */, (long)zero, 0, 0, 0, 0), 5);
    /* The kernel-made stack the runner started on stays mapped; stop it growing. */
    uint64_t stack_limit[2] = {256 * 1024, 256 * 1024};
    check(sys6(SYS_SETRLIMIT, 3 /* RLIMIT_STACK */, (long)stack_limit, 0, 0, 0, 0), 5);

    /* Reports for the filter's SIGSYS and for faults (the report address comes with
     * the context; the handler writes nowhere before it is known). */
    uint64_t stack[3] = {(uint64_t)signal_stack, 0, sizeof signal_stack};
    check(sys6(SYS_SIGALTSTACK, (long)stack, 0, 0, 0, 0, 0), 6);
    struct kernel_sigaction action = {(void *)on_signal, SA_SIGINFO | SA_ONSTACK | SA_RESTORER,
                                      (void *)restore, ~0ULL};
    static const int reported[] = {31 /* SIGSYS */, 11 /* SIGSEGV */, 7 /* SIGBUS */,
                                   4 /* SIGILL */,  8 /* SIGFPE */,  5 /* SIGTRAP */};
    for (unsigned i = 0; i < sizeof reported / sizeof reported[0]; i++)
        check(sys6(SYS_RT_SIGACTION, reported[i], (long)&action, 0, 8, 0, 0), 6);
    check(sys6(SYS_PRCTL, 38 /* PR_SET_NO_NEW_PRIVS */, 1, 0, 0, 0, 0), 7);

    long length = sys6(SYS_PREAD64, FILTER_FD, (long)filter, sizeof filter, 0, 0, 0);
    if (length <= 0 || length % sizeof(struct sock_filter) != 0) leave(SETUP_STATUS_BASE + 8);
    struct {
        uint16_t length;
        struct sock_filter *filter;
    } program = {(uint16_t)(length / sizeof(struct sock_filter)), filter};
    check(sys6(SYS_SECCOMP, 1 /* SECCOMP_SET_MODE_FILTER */, 0, (long)&program, 0, 0, 0), 8);
    filter_installed = 1;
    check(sys6(SYS_CLOSE_RANGE, FILTER_FD, FILTER_FD, 0, 0, 0, 0), 8);
}

/* 3. On the final page: unmap the set-up code (the filter lets this page make exactly
 * this call), clear the registers and jump to the function. */
FINAL __attribute__((noreturn, aligned(4096))) static void enter_function(
    uint64_t setup_start, uint64_t setup_length, uint64_t stack, uint64_t entry) {
    __asm__ volatile(
        "mov %[length], %%rsi\n"
        "mov %[start], %%rdi\n"
        "mov %[stack], %%rsp\n"
        "mov %[entry], %%r15\n"
        "mov %[munmap], %%eax\n"
        "syscall\n"
        "test %%rax, %%rax\n"
        "jnz 1f\n"
        "xor %%eax, %%eax\n xor %%ebx, %%ebx\n xor %%ecx, %%ecx\n xor %%edx, %%edx\n"
        "xor %%esi, %%esi\n xor %%edi, %%edi\n xor %%ebp, %%ebp\n"
        "xor %%r8d, %%r8d\n xor %%r9d, %%r9d\n xor %%r10d, %%r10d\n xor %%r11d, %%r11d\n"
        "xor %%r12d, %%r12d\n xor %%r13d, %%r13d\n xor %%r14d, %%r14d\n"
        "jmp *%%r15\n"
        "1:\n"
        "mov %[failed], %%edi\n" /* the unmap failed */
        "mov %[exit_group], %%eax\n"
        "syscall\n"
        "hlt\n"
        :
        : [start] "r"(setup_start), [length] "r"(setup_length), [stack] "r"(stack),
          [entry] "r"(entry), [munmap] "i"(SYS_MUNMAP), [exit_group] "i"(SYS_EXIT_GROUP),
          [failed] "i"(SETUP_STATUS_BASE + 10)
        : "memory");
    __builtin_unreachable();
}

__attribute__((noreturn)) static void runner_main(void) {
    if (!filter_installed) prepare_before_context(); /* a zygote's clone inherited it */
    const int context_fd = receive_context();
    check(sys6(SYS_PREAD64, context_fd, (long)&params, sizeof params, 0, 0, 0), 0);
    if (params.magic != PARAMS_MAGIC || params.segment_count > MAX_SEGMENTS ||
        params.context_size <= FUNCTION_BASE)
        leave(SETUP_STATUS_BASE + 1);

    /* 1. The context, at its own addresses. PROT_READ|WRITE, MAP_SHARED|MAP_FIXED_NOREPLACE. */
    long mapped = sys6(SYS_MMAP, FUNCTION_BASE, params.context_size - FUNCTION_BASE, 3,
                       0x01 | 0x100000, context_fd, FUNCTION_BASE);
    if (mapped != (long)FUNCTION_BASE) leave(SETUP_STATUS_BASE + 2);
    for (uint64_t i = 0; i < params.segment_count; i++)
        check(sys6(SYS_MPROTECT, params.segments[i].address, params.segments[i].length,
                   params.segments[i].protection, 0, 0, 0), 3);

    /* 2. No descriptors, no CPU beyond the budget, no core dumps or files, not dumpable. */
    check(sys6(SYS_CLOSE_RANGE, 0, ~0UL, 0, 0, 0, 0), 4);
    uint64_t cpu[2] = {params.cpu_seconds, params.cpu_seconds + 1};
    check(sys6(SYS_SETRLIMIT, 0 /* RLIMIT_CPU */, (long)cpu, 0, 0, 0, 0), 5);
    check(sys6(SYS_PRCTL, 4 /* PR_SET_DUMPABLE */, 0, 0, 0, 0, 0), 5);

    /* 3. The filter is in force since step 0; leave the set-up code behind. */
    enter_function((uint64_t)__executable_start,
                   (uint64_t)(__start_pappus_final - __executable_start), params.stack,
                   params.entry);
}

/* Send the worker its end of a new runner's socket pair, with the runner's pid. */
static long send_runner(int fd, int32_t pid) { return send_fd_with_pid(3, fd, pid); }

/* `mode` is the zygote's argument string: a clone renames itself "runner" (same length),
 * so /proc and ps tell the zygote and its runners apart.
 * Requests arrive on a pipe (descriptor 4), runners leave on the socket (3): a zygote
 * asleep on the socket would be woken for nothing each time the worker takes a runner
 * out of it (the kernel wakes a sender's waiters when its data is consumed). */
__attribute__((noreturn)) static void zygote(char *mode) {
    prepare_before_context(); /* once: every clone inherits it */
    /* Only the worker's socket and pipe: nothing let through by mistake is kept open. */
    check(sys6(SYS_CLOSE_RANGE, 0, 2, 0, 0, 0, 0), 9);
    check(sys6(SYS_CLOSE_RANGE, 5, ~0UL, 0, 0, 0, 0), 9);
    for (;;) {
        char byte;
        if (sys6(SYS_READ, 4, (long)&byte, 1, 0, 0, 0) <= 0) leave(0); /* pool closed */
        int pair[2];
        check(sys6(SYS_SOCKETPAIR, 1 /* AF_UNIX */, 1 /* SOCK_STREAM */, 0, (long)pair, 0, 0),
              9);
        long pid = sys6(SYS_CLONE, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0, 0);
        if (pid == 0) { /* the new runner: its end on 3, nothing else open */
            const char runner[] = "runner";
            for (unsigned i = 0; i < sizeof runner; i++) mode[i] = runner[i];
            if (pair[1] != 3) check(sys6(SYS_DUP3, pair[1], 3, 0, 0, 0, 0), 9);
            check(sys6(SYS_CLOSE_RANGE, 0, 2, 0, 0, 0, 0), 9);
            check(sys6(SYS_CLOSE_RANGE, 4, ~0UL, 0, 0, 0, 0), 9); /* also the request pipe */
            runner_main();
        }
        if (pid > 0) check(send_runner(pair[0], (int32_t)pid), 9);
        sys6(SYS_CLOSE_RANGE, pair[0], pair[0], 0, 0, 0, 0);
        sys6(SYS_CLOSE_RANGE, pair[1], pair[1], 0, 0, 0, 0);
        if (pid < 0) leave(SETUP_STATUS_BASE + 9); /* the worker starts runners itself then */
    }
}

/* argc and argv as the kernel left them: "zygote" as the first argument selects the mode. */
__attribute__((used, noreturn)) void runner_entry(const uint64_t *initial_stack) {
    char *const *argv = (char *const *)(initial_stack + 1);
    char *mode = initial_stack[0] >= 2 ? argv[1] : 0;
    if (mode && mode[0] == 'z' && mode[1] == 'y' && mode[2] == 'g' && mode[3] == 'o' &&
        mode[4] == 't' && mode[5] == 'e' && mode[6] == 0)
        zygote(mode);
    runner_main();
}

__asm__(
    ".text\n"
    ".global _start\n"
    "_start:\n"
    "    mov %rsp, %rdi\n"
    "    and $-16, %rsp\n"
    "    call runner_entry\n"
    "    hlt\n");
