/*
 * The linux engine supervisor's fast path (loaded by fastpath.py with ctypes).
 *
 * serve() waits for the sandboxed program's notified calls and answers, without
 * Python and without the GIL, the few whose answer needs no file system: a fixed
 * value (getpid, set_tid_address, ...), the memory checks of a growing brk and
 * of an anonymous mmap when they clearly fit, exit_group, and the look-up of an
 * absolute path whose first component is not in the root directory (ENOENT:
 * start-up probes such as /proc/self/exe or /etc/localtime). Every other call,
 * and anything this code is not sure of, goes back to Python (serve returns
 * SERVE_CALL with the notification), whose handlers are the reference: what is
 * answered here is what Python would answer. Which call gets which treatment is
 * data (the actions and values tables), generated in Python from the policy.
 *
 * Every argument comes from the program and is treated as untrusted: integers
 * are range-checked, and the only memory of the program read here is a path,
 * copied with process_vm_readv (which fails, never faults, on a bad address).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* Defined here rather than taken from <linux/seccomp.h>: older headers lack some. */
struct notification {
    uint64_t id;
    uint32_t pid;
    uint32_t flags;
    int32_t nr;
    uint32_t arch;
    uint64_t instruction_pointer;
    uint64_t args[6];
};

struct response {
    uint64_t id;
    int64_t value;
    int32_t error;
    uint32_t flags;
};

#define IOCTL_RECV 0xC0502100UL      /* _IOWR('!', 0, struct seccomp_notif) */
#define IOCTL_SEND 0xC0182101UL      /* _IOWR('!', 1, struct seccomp_notif_resp) */
#define IOCTL_SET_FLAGS 0x40082104UL /* _IOW('!', 4, __u64), Linux 6.6 */
#define FLAG_CONTINUE 1U
#define FD_SYNC_WAKE_UP 1UL
#define AUDIT_ARCH_X86_64 0xC000003EU
#define X32_SYSCALL_BIT 0x40000000
#define MAP_ANONYMOUS 0x20
#define PAGE 4096ULL
#define USER_LIMIT (1ULL << 47) /* no x86-64 user address is above */
#define AT_FDCWD (-100)
#define PATH_ROOM 4096  /* bytes with the NUL; pappus.vfs allows 4096 without it */
#define MAX_NAME 255    /* pappus.vfs.nodes.MAX_NAME_BYTES */

enum action {
    ASK_PYTHON = 0,
    CONSTANT = 1,
    GROW_BRK = 2,
    ANONYMOUS_MMAP = 3,
    EXIT_GROUP = 4,
    LOOK_UP_PATH = 5,    /* a path in argument 0 (readlink, stat, access, ...) */
    LOOK_UP_PATH_AT = 6, /* a directory descriptor in argument 0, a path in argument 1 */
};
enum outcome {
    SERVE_CALL = 0,        /* state->notification is for Python to answer */
    SERVE_EXITED = 1,      /* exit_group was let run; state->exit_status holds its status */
    SERVE_DEADLINE = 2,    /* the deadline passed (the caller kills the process) */
    SERVE_GONE = 3,        /* the listener hung up: every task of the filter is gone */
    SERVE_INTERRUPTED = 4, /* a signal arrived for this thread: let Python handle it */
};

#define TABLE_SIZE 512

struct serve_state {
    int32_t pid;
    int32_t listener;
    int32_t statm;          /* /proc/<pid>/statm, or -1: memory checks go to Python */
    int32_t stat;           /* /proc/<pid>/stat, or -1 */
    uint32_t sync_wake_up;  /* whether the listener has the synchronous wake-up flag */
    uint64_t address_space; /* the memory bound in bytes */
    uint64_t heap_start;    /* start_brk of the program, 0 until read */
    int64_t deadline_ns;    /* CLOCK_MONOTONIC */
    uint64_t calls;         /* calls answered here (added to by serve) */
    int32_t exit_status;
    uint32_t python_only;   /* send every call to Python */
    uint32_t continue_pending; /* let call `continue_id` run first (Python decided so) */
    uint64_t continue_id;
    const uint8_t *actions; /* TABLE_SIZE entries, by call number */
    const int64_t *values;  /* TABLE_SIZE entries: CONSTANT answers, LOOK_UP_* checks */
    const char *root_names; /* the root directory's entries, each followed by a NUL */
    uint64_t root_names_length;
    struct notification notification;
};

size_t pappus_serve_state_size(void) { return sizeof(struct serve_state); }
size_t pappus_serve_notification_offset(void) { return offsetof(struct serve_state, notification); }

static int64_t now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
}

/* The first unsigned decimal number at or after *cursor in [*cursor, end); -1 if none. */
static int64_t next_number(const char **cursor, const char *end) {
    const char *at = *cursor;
    while (at < end && (*at < '0' || *at > '9')) at++;
    if (at == end) return -1;
    uint64_t value = 0;
    while (at < end && *at >= '0' && *at <= '9') {
        if (value > (UINT64_MAX - 9) / 10) return -1;
        value = value * 10 + (uint64_t)(*at - '0');
        at++;
    }
    *cursor = at;
    return value > (uint64_t)INT64_MAX ? -1 : (int64_t)value;
}

/* Bytes of address space in use (statm's first field, in pages); -1 if unknown. */
static int64_t address_space_in_use(const struct serve_state *state) {
    char text[128];
    if (state->statm < 0) return -1;
    ssize_t length = pread(state->statm, text, sizeof text, 0);
    if (length <= 0) return -1;
    const char *cursor = text;
    int64_t pages = next_number(&cursor, text + length);
    if (pages < 0 || (uint64_t)pages > USER_LIMIT / PAGE) return -1;
    return pages * (int64_t)PAGE;
}

/* start_brk, field 47 of /proc/<pid>/stat (read once per program); 0 if unknown. */
static uint64_t heap_start(struct serve_state *state) {
    char text[4096];
    if (state->heap_start != 0 || state->stat < 0) return state->heap_start;
    ssize_t length = pread(state->stat, text, sizeof text, 0);
    if (length <= 0) return 0;
    const char *end = text + length, *after_name = NULL;
    for (const char *at = text; at < end; at++)
        if (*at == ')') after_name = at + 1; /* the name may hold ')': the last one ends it */
    if (after_name == NULL) return 0;
    /* Fields from 3 on follow the name; field 3 (the state) is a letter, then numbers,
     * some of which may be negative: count space-separated fields rather than numbers. */
    const char *at = after_name;
    for (int field = 3; field < 47; field++) {
        while (at < end && *at == ' ') at++;
        while (at < end && *at != ' ') at++;
    }
    int64_t start = next_number(&at, end);
    if (start <= 0 || (uint64_t)start >= USER_LIMIT) return 0;
    state->heap_start = (uint64_t)start;
    return state->heap_start;
}

static uint64_t page_up(uint64_t address) { return (address + PAGE - 1) / PAGE * PAGE; }

/* Whether a break of `address` fits the bound even if the heap were empty now (as
 * Supervisor._brk's first test); otherwise Python looks closer. */
static int brk_fits(struct serve_state *state, uint64_t address) {
    if (address >= USER_LIMIT) return 0;
    int64_t in_use = address_space_in_use(state);
    uint64_t start = heap_start(state);
    if (in_use < 0 || start == 0) return 0;
    int64_t bound = (int64_t)(state->address_space / PAGE * PAGE);
    return in_use + (int64_t)page_up(address) - (int64_t)page_up(start) <= bound;
}

/* Whether an anonymous mapping of `length` bytes fits the bound (as Supervisor._mmap). */
static int mmap_fits(const struct serve_state *state, uint64_t length, uint64_t flags) {
    if (!(flags & MAP_ANONYMOUS) || length > state->address_space) return 0;
    int64_t in_use = address_space_in_use(state);
    /* in_use + length <= bound, written so that no sum can wrap */
    return in_use >= 0 && (uint64_t)in_use <= state->address_space &&
           length <= state->address_space - (uint64_t)in_use;
}

/* Copy the NUL-terminated path at `address` into `path` (up to PATH_ROOM bytes with
 * the NUL), a page at most at a time so that nothing past the NUL is read; its length,
 * or -1 if unreadable or too long (Python then gives EFAULT or ENAMETOOLONG). */
static ssize_t read_path(const struct serve_state *state, uint64_t address,
                         char path[PATH_ROOM]) {
    size_t length = 0;
    while (length < PATH_ROOM) {
        uint64_t at = address + length;
        if (at < address || at >= USER_LIMIT) return -1;
        size_t chunk = PAGE - at % PAGE;
        if (chunk > PATH_ROOM - length) chunk = PATH_ROOM - length;
        struct iovec local = {path + length, chunk}, remote = {(void *)at, chunk};
        if (process_vm_readv(state->pid, &local, 1, &remote, 1, 0) != (ssize_t)chunk) return -1;
        for (size_t i = length; i < length + chunk; i++)
            if (path[i] == '\0') return (ssize_t)i;
        length += chunk;
    }
    return -1;
}

static int is_root_entry(const struct serve_state *state, const char *name, size_t length) {
    const char *at = state->root_names, *end = at + state->root_names_length;
    while (at < end) {
        size_t entry = strnlen(at, (size_t)(end - at));
        if (entry == length && memcmp(at, name, length) == 0) return 1;
        at += entry + 1;
    }
    return 0;
}

/* Whether the path at `address` certainly does not exist: absolute, plain ASCII, every
 * component at most MAX_NAME bytes, and its first component (after "" and ".") neither
 * ".." nor an entry of the root directory, which the program cannot change. This is what
 * pappus.vfs concludes for such a path (ENOENT); anything else is left to it. */
static int certainly_absent(const struct serve_state *state, uint64_t address) {
    char path[PATH_ROOM];
    ssize_t length = read_path(state, address, path);
    if (length <= 0 || path[0] != '/') return 0;
    const char *first = NULL;
    size_t first_length = 0;
    for (ssize_t start = 0; start < length;) {
        ssize_t end = start;
        while (end < length && path[end] != '/') {
            if ((unsigned char)path[end] >= 0x80) return 0; /* UTF-8 checks stay in Python */
            end++;
        }
        size_t component = (size_t)(end - start);
        if (component > MAX_NAME) return 0;
        if (first == NULL && component > 0 && !(component == 1 && path[start] == '.')) {
            first = path + start;
            first_length = component;
        }
        start = end + 1;
    }
    if (first == NULL || (first_length == 2 && first[0] == '.' && first[1] == '.')) return 0;
    return !is_root_entry(state, first, first_length);
}

enum check { CHECK_POSITIVE = 1, CHECK_BITS = 2 }; /* fastpath.py's _PLAIN_ARGUMENTS */

/* Whether the call's other arguments pass, plainly, the checks the kernel makes before
 * its lookup (encoded in values[nr]: two words of argument, rule and allowed bits). If
 * not, Python answers: it has the kernel's exact rules (EINVAL even for a missing path). */
static int plain_arguments(const struct serve_state *state, const struct notification *call) {
    uint64_t checks = (uint64_t)state->values[call->nr];
    for (int i = 0; i < 2; i++, checks >>= 32) {
        uint32_t check = (uint32_t)checks;
        uint64_t argument = call->args[check & 7];
        uint32_t rule = (check >> 4) & 0xF, allowed = check >> 8;
        if (rule == CHECK_POSITIVE && (int32_t)argument <= 0) return 0;
        if (rule == CHECK_BITS && (argument & ~(uint64_t)allowed) != 0) return 0;
    }
    return 1;
}

/* Answer the current call; 0, or -errno. A call that is gone (ENOENT) is not an error. */
static int reply(struct serve_state *state, int64_t value, int32_t error, uint32_t flags) {
    struct response response = {state->notification.id, value, error, flags};
    if (ioctl(state->listener, IOCTL_SEND, &response) == 0 || errno == ENOENT) return 0;
    return -errno;
}

static int answer(struct serve_state *state, int64_t value, uint32_t flags) {
    return reply(state, value, 0, flags);
}

/* Let exit_group run without the synchronous hand-over: the kernel's teardown of the
 * process can then run on another CPU while the caller goes on. */
static int let_exit_run(struct serve_state *state) {
    if (state->sync_wake_up && ioctl(state->listener, IOCTL_SET_FLAGS, 0UL) != 0) return -errno;
    int result = answer(state, 0, FLAG_CONTINUE);
    if (state->sync_wake_up && ioctl(state->listener, IOCTL_SET_FLAGS, FD_SYNC_WAKE_UP) != 0)
        return result != 0 ? result : -errno;
    return result;
}

/* Answer the received call here if its action allows; 1 if answered, 0 for Python,
 * -errno on failure. */
static int try_answer(struct serve_state *state) {
    const struct notification *call = &state->notification;
    if (state->python_only || call->arch != AUDIT_ARCH_X86_64 || call->nr < 0 ||
        call->nr >= TABLE_SIZE)
        return 0; /* x32 numbers are beyond the table too */
    int result;
    switch (state->actions[call->nr]) {
    case CONSTANT:
        result = answer(state, state->values[call->nr], 0);
        break;
    case GROW_BRK:
        if (!brk_fits(state, call->args[0])) return 0;
        result = answer(state, 0, FLAG_CONTINUE);
        break;
    case ANONYMOUS_MMAP:
        if (!mmap_fits(state, call->args[1], call->args[3])) return 0;
        result = answer(state, 0, FLAG_CONTINUE);
        break;
    case EXIT_GROUP:
        state->exit_status = (int32_t)(call->args[0] & 0xFF);
        result = let_exit_run(state);
        break;
    case LOOK_UP_PATH:
        if (!plain_arguments(state, call) || !certainly_absent(state, call->args[0])) return 0;
        result = reply(state, 0, -ENOENT, 0);
        break;
    case LOOK_UP_PATH_AT:
        if ((int32_t)call->args[0] != AT_FDCWD || !plain_arguments(state, call) ||
            !certainly_absent(state, call->args[1]))
            return 0;
        result = reply(state, 0, -ENOENT, 0);
        break;
    default:
        return 0;
    }
    state->calls++;
    return result < 0 ? result : 1;
}

/* Serve calls until one needs Python, the program exits or goes, the deadline passes or
 * a signal arrives; returns an outcome, or -errno. */
int pappus_serve(struct serve_state *state) {
    struct pollfd waiting = {state->listener, POLLIN, 0};
    if (state->continue_pending) {
        /* Python has dealt with the call (the launcher's exec) and the kernel runs it
         * now, right before the wait: nothing runs on this CPU in between. */
        state->continue_pending = 0;
        struct response response = {state->continue_id, 0, 0, FLAG_CONTINUE};
        if (ioctl(state->listener, IOCTL_SEND, &response) != 0 && errno != ENOENT)
            return -errno;
    }
    for (;;) {
        int64_t remaining = state->deadline_ns - now_ns();
        if (remaining <= 0) return SERVE_DEADLINE; /* before every call: busy programs too */
        int64_t timeout_ms = remaining / 1000000 + 1;
        int ready = poll(&waiting, 1, timeout_ms > INT32_MAX ? INT32_MAX : (int)timeout_ms);
        if (ready < 0) {
            if (errno == EINTR) return SERVE_INTERRUPTED;
            return -errno;
        }
        if (ready == 0) continue;
        if (!(waiting.revents & POLLIN)) {
            if (waiting.revents & (POLLHUP | POLLERR | POLLNVAL)) return SERVE_GONE;
            continue;
        }
        struct notification *call = &state->notification;
        *call = (struct notification){0}; /* the kernel requires a zeroed buffer */
        if (ioctl(state->listener, IOCTL_RECV, call) != 0) {
            if (errno == ENOENT || errno == EINTR) continue; /* withdrawn, or the caller died */
            return -errno;
        }
        int answered = try_answer(state);
        if (answered < 0) return answered;
        if (answered == 0) return SERVE_CALL;
        if (state->actions[call->nr] == EXIT_GROUP) return SERVE_EXITED;
    }
}
