/*
 * Raw x86-64 Linux system calls without libc, for the freestanding helpers:
 * the process engine's runner and the linux engine's launcher (native_build
 * places this file beside each). A call returns the kernel's value: a negative
 * errno on failure, never -1 with errno set.
 */
#ifndef PAPPUS_RAW_SYSCALL_H
#define PAPPUS_RAW_SYSCALL_H

/* Always inlined: code on the runner's final page runs after its other pages are
 * unmapped, so it must not call out of that page. */
static inline __attribute__((always_inline)) long sys6(long n, long a, long b, long c, long d,
                                                       long e, long f) {
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

/* The x86-64 numbers the helpers use (arch/x86/entry/syscalls/syscall_64.tbl). */
#define SYS_READ 0
#define SYS_WRITE 1
#define SYS_CLOSE 3
#define SYS_FSTAT 5
#define SYS_MMAP 9
#define SYS_MPROTECT 10
#define SYS_MUNMAP 11
#define SYS_RT_SIGACTION 13
#define SYS_PREAD64 17
#define SYS_SENDMSG 46
#define SYS_RECVMSG 47
#define SYS_SOCKETPAIR 53
#define SYS_CLONE 56
#define SYS_SETGROUPS 116
#define SYS_SETRESUID 117
#define SYS_SETRESGID 119
#define SYS_CAPSET 126
#define SYS_SIGALTSTACK 131
#define SYS_PRCTL 157
#define SYS_SETRLIMIT 160
#define SYS_EXIT_GROUP 231
#define SYS_UNSHARE 272
#define SYS_DUP3 292
#define SYS_SECCOMP 317
#define SYS_EXECVEAT 322
#define SYS_CLOSE_RANGE 436

/* clone(2) flags and the exit signal the helpers' zygotes give their clones. */
#define CLONE_PARENT 0x00008000
#define CLONE_NEWUSER 0x10000000
#define SIGCHLD 17

#endif
