/*
 * Passing a descriptor over a Unix socket (SCM_RIGHTS) without libc, for the
 * freestanding helpers that do it: the process engine's runner and the linux
 * engine's launcher (native_build places this file and raw_syscall.h beside each).
 */
#ifndef PAPPUS_FD_PASSING_H
#define PAPPUS_FD_PASSING_H

#include <stdint.h>

#include "raw_syscall.h"

struct message { /* struct msghdr */
    void *name;
    uint32_t name_len, pad0;
    void *iov;
    uint64_t iov_len;
    void *control;
    uint64_t control_len;
    int32_t flags, pad1;
};

#define FD_CLOSED (-1)        /* end of file (the worker closed its end) or an error */
#define FD_NOT_ATTACHED (-2)  /* a byte came, but not with exactly one descriptor */

/* Receive one byte on `socket` and the descriptor sent with it (recvmsg `flags`). */
static int receive_fd(int socket, long flags) {
    char byte;
    uint64_t iov[2] = {(uint64_t)&byte, 1};
    uint64_t control[3] = {0, 0, 0}; /* CMSG_SPACE(sizeof(int)) == 24 */
    struct message message = {0, 0, 0, iov, 1, control, sizeof control, 0, 0};
    if (sys6(SYS_RECVMSG, socket, (long)&message, flags, 0, 0, 0) <= 0) return FD_CLOSED;
    const uint32_t *header = (const uint32_t *)control; /* len (8 bytes), level, type, fd */
    if (control[0] < 20 || header[2] != 1 /* SOL_SOCKET */ || header[3] != 1 /* SCM_RIGHTS */)
        return FD_NOT_ATTACHED;
    return (int)header[4];
}

/* Send `fd` on `socket` with `pid` as the data (a new runner or launcher for the worker). */
static long send_fd_with_pid(int socket, int fd, int32_t pid) {
    uint64_t iov[2] = {(uint64_t)&pid, sizeof pid};
    uint64_t control[3] = {20 /* CMSG_LEN(sizeof(int)) */, 1 /* SOL_SOCKET, SCM_RIGHTS */ |
                           (1ULL << 32), (uint64_t)(uint32_t)fd};
    struct message message = {0, 0, 0, iov, 1, control, sizeof control, 0, 0};
    return sys6(SYS_SENDMSG, socket, (long)&message, 0x4000 /* MSG_NOSIGNAL */, 0, 0, 0);
}

#endif
