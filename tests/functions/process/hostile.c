/*
 * hostile: one process-engine function per hostile behaviour, chosen by the
 * data of the first item of input set 0 (e.g. "socket", "loop", "bufs_low").
 * Register it with one input set and two output sets ("out", "more").
 *
 * syscall modes make a raw system call the policy forbids ("runner_unmap" and
 * "jump" take addresses in the runner from a second item); crash modes fault;
 * forge modes write output descriptors into __dandelion_system_data by hand
 * and leave through a raw exit_group(0), so the SDK's publish step cannot
 * overwrite them. "noop" returns 0; an unknown mode (or a forbidden call that
 * returned) returns 99.
 */
#include <pappus/function.h>

/* The faults and the endless recursion below are the point. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Winfinite-recursion"
#endif

extern struct pappus_system_data __dandelion_system_data;

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

__attribute__((noreturn)) static void exit_group(long status) {
    for (;;) sys6(231, status, 0, 0, 0, 0, 0);
}

static const char *mode;
static size_t mode_len;

static int is(const char *name) {
    return strlen(name) == mode_len && memcmp(name, mode, mode_len) == 0;
}

/* Something to execute that lives in a writable, non-executable page. */
static unsigned char data_code[16] = {0xc3}; /* ret */
static char path[] = "/etc/passwd";
static char missing[] = "/nonexistent/pappus";
static char *empty_vector[] = {0};

static struct pappus_buffer forged[4];

/* Publish `count` buffers at `bufs` with set offsets {0, middle, count}. */
__attribute__((noreturn)) static void forge(void *bufs, size_t middle, size_t count) {
    struct pappus_system_data *sd = &__dandelion_system_data;
    sd->output_sets[0].offset = 0;
    sd->output_sets[1].offset = middle;
    sd->output_sets[sd->output_sets_len].offset = count;
    sd->output_bufs = bufs;
    sd->exit_code = 0;
    exit_group(0);
}

static void set_buffer(size_t index, const char *name, size_t name_len, void *data,
                       size_t len, size_t key) {
    forged[index] = (struct pappus_buffer){name, name_len, data, len, key};
}

static uintptr_t context_end(void) { return __dandelion_system_data.heap_end + 128; }

static int recurse(int depth) {
    volatile char pad[4096];
    pad[0] = (char)depth;
    return recurse(depth + 1) + pad[0];
}

static void syscall_modes(void) {
    if (is("socket")) sys6(41, 2, 1, 0, 0, 0, 0);
    if (is("open")) sys6(2, (long)path, 0, 0, 0, 0, 0);
    if (is("openat")) sys6(257, -100, (long)path, 0, 0, 0, 0);
    if (is("execve")) sys6(59, (long)missing, (long)empty_vector, (long)empty_vector, 0, 0, 0);
    if (is("fork")) sys6(57, 0, 0, 0, 0, 0, 0);
    if (is("vfork")) sys6(58, 0, 0, 0, 0, 0, 0);
    if (is("clone")) sys6(56, 0x10000 /* CLONE_THREAD alone: EINVAL */, 0, 0, 0, 0, 0);
    if (is("clone3")) sys6(435, 0, 0, 0, 0, 0, 0);
    if (is("ptrace")) sys6(101, 0 /* PTRACE_TRACEME */, 0, 0, 0, 0, 0);
    if (is("kill")) sys6(62, 1, 0 /* signal 0: only a probe */, 0, 0, 0, 0);
    if (is("mmap")) sys6(9, 0, 4096, 3, 0x22 /* MAP_PRIVATE|MAP_ANONYMOUS */, -1, 0);
    if (is("mprotect")) sys6(10, 0x11000, 4096, 7, 0, 0, 0);
    if (is("write")) sys6(1, 1, (long)path, 4, 0, 0, 0);
    if (is("rt_sigreturn")) sys6(15, 0, 0, 0, 0, 0, 0);
    if (is("x32")) sys6(39 | 0x40000000, 0, 0, 0, 0, 0, 0);            /* x32 getpid */
    if (is("x32_exit_group")) sys6(231 | 0x40000000, 5, 0, 0, 0, 0, 0);
    if (is("unknown_number")) sys6(0xffff, 0, 0, 0, 0, 0, 0);
    if (is("int80")) { /* i386 getpid (20) through the 32-bit entry */
        long result = 20;
        __asm__ volatile("int $0x80" : "+a"(result) : : "memory");
    }
    if (is("int80_exit")) { /* i386 exit (1): allowed on x86-64, not via int 0x80 */
        long result = 1;
        __asm__ volatile("int $0x80" : "+a"(result) : "b"(0) : "memory");
    }
    static uint64_t slot;
    if (is("arch_get_fs")) sys6(158, 0x1003, (long)&slot, 0, 0, 0, 0);
    if (is("arch_set_gs")) sys6(158, 0x1001, (long)&slot, 0, 0, 0, 0);
    /* The kernel truncates the option to int: the filter must check all 64 bits. */
    if (is("arch_high")) sys6(158, 0x100001002L, (long)&slot, 0, 0, 0, 0);
    if (is("vsyscall")) ((long (*)(void *, void *))0xffffffffff600000UL)(&slot, 0);
    /* The runner's own code, by address (the second input item: u64 target, nr, arg0, arg1). */
    struct pappus_item given;
    if (pappus_input_item(0, 1, &given) && given.len == 32) {
        const uint64_t *v = given.data;
        if (is("runner_unmap")) sys6(11, (long)v[2], (long)v[3], 0, 0, 0, 0);
        if (is("jump")) /* to v[0] with the call number and arguments set, as if to call */
            __asm__ volatile("mov %0, %%rax\n mov %1, %%rdi\n mov %2, %%rsi\n jmp *%3"
                             :
                             : "r"(v[1]), "r"(v[2]), "r"(v[3]), "r"(v[0])
                             : "rax", "rdi", "rsi", "memory");
    }
}

static int crash_modes(void) {
    if (is("loop"))
        for (;;) __asm__ volatile("" ::: "memory");
    if (is("write_low")) *(volatile char *)8 = 1;
    if (is("write_private")) *(volatile char *)0x1000 = 1; /* the runner's parameters */
    if (is("write_past")) *(volatile char *)(context_end() + 4096) = 1;
    if (is("write_text")) *(volatile unsigned char *)(uintptr_t)&recurse = 0xcc;
    if (is("exec_data")) ((void (*)(void))(uintptr_t)data_code)();
    if (is("exec_heap")) {
        unsigned char *code = pappus_alloc(16);
        code[0] = 0xc3;
        ((void (*)(void))(uintptr_t)code)();
    }
    if (is("exec_stack")) {
        volatile unsigned char code[16] = {0xc3};
        ((void (*)(void))(uintptr_t)code)();
    }
    if (is("stack_overflow")) return recurse(0);
    if (is("wild_stack")) __asm__ volatile("xor %%esp, %%esp\n push %%rax" ::: "memory");
    if (is("ud2")) __asm__ volatile("ud2");
    if (is("raw_exit")) exit_group(3);
    if (is("return7")) return 7;
    if (is("heap_exhausted")) {
        while (pappus_alloc(1 << 20)) {}
        return PAPPUS_EXIT_OUT_OF_MEMORY;
    }
    if (is("noop")) return 0;
    return 99; /* no such mode, or a forbidden call returned */
}

static void forge_modes(void) {
    static char payload[] = "payload";
    uintptr_t end = context_end();
    if (is("bufs_low")) {
        set_buffer(0, 0, 0, payload, 7, 0);
        forge((void *)0x1000, 1, 1);
    }
    if (is("bufs_past_end")) forge((void *)(end - 8), 1, 1);
    if (is("bufs_top")) forge((void *)0xfffffffffffffff0UL, 1, 1);
    if (is("data_outside")) {
        set_buffer(0, 0, 0, (void *)8, 16, 0);
        forge(forged, 1, 1);
    }
    if (is("name_outside")) {
        set_buffer(0, (const char *)(end + 4096), 4, payload, 7, 0);
        forge(forged, 1, 1);
    }
    if (is("count_2_32")) forge(forged, 0, (size_t)1 << 32);
    if (is("count_too_many")) forge(forged, 0, 1000001);
    if (is("empty_item")) {
        set_buffer(0, 0, 0, (void *)0xdead0000UL, 0, 5);
        forge(forged, 1, 1);
    }
    if (is("gib_item")) {
        set_buffer(0, 0, 0, payload, (size_t)1 << 30, 0);
        forge(forged, 1, 1);
    }
    if (is("huge_name")) {
        set_buffer(0, payload, ~(size_t)0, payload, 2, 0);
        forge(forged, 1, 1);
    }
    if (is("big_key")) {
        set_buffer(0, 0, 0, payload, 7, (size_t)1 << 32);
        forge(forged, 1, 1);
    }
    if (is("descending")) {
        set_buffer(0, 0, 0, payload, 1, 0);
        set_buffer(1, 0, 0, payload, 1, 0);
        forge(forged, 2, 1);
    }
    if (is("nonzero_start")) {
        __dandelion_system_data.output_sets[0].offset = 1;
        __dandelion_system_data.output_sets[1].offset = 1;
        __dandelion_system_data.output_sets[2].offset = 1;
        __dandelion_system_data.output_bufs = forged;
        exit_group(0);
    }
    if (is("valid_forgery")) { /* well-formed: out = [ab], more = [cde] named "n" */
        static char name[] = "n";
        set_buffer(0, 0, 0, payload, 2, 1);
        set_buffer(1, name, 1, payload + 2, 3, 4294967295UL);
        forge(forged, 1, 2);
    }
}

int main(void) {
    struct pappus_item item;
    if (!pappus_input_item(0, 0, &item)) return 98;
    mode = item.data;
    mode_len = item.len;
    syscall_modes();
    forge_modes();
    return crash_modes();
}
