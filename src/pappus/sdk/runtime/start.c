/*
 * pappus function SDK runtime: entry point, heap, inputs, outputs, exit.
 *
 * The worker starts the function at `_start` with the stack pointer near
 * the top of the context and `__dandelion_system_data` filled in. The only
 * system calls made are arch_prctl(ARCH_SET_FS) (thread pointer for code
 * that uses TLS or stack protection) and exit_group(0); everything else is
 * forbidden by the worker's seccomp filter.
 *
 * Built for the kvm engine (PAPPUS_TARGET_KVM, `pappus sdk build --target
 * kvm`) the function runs at ring 3 of a guest with no operating system:
 * the thread pointer is set with `wrfsbase` (the engine enables FSGSBASE)
 * and the exit is Dandelion's `int $32`. Nothing else differs.
 */
#include <pappus/function.h>

#define ARCH_SET_FS 0x1002
#define SYS_ARCH_PRCTL 158
#define SYS_EXIT_GROUP 231
#define STACK_RESERVE (64 * 1024) /* never let the heap come closer to the stack */

__attribute__((used, visibility("default")))
struct pappus_system_data __dandelion_system_data = {.exit_code = PAPPUS_EXIT_UNINITIALIZED};

/* Thread control block: %fs:0 must point to itself; %fs:0x28 is the
 * compiler's stack-protector canary slot. */
static uint64_t thread_block[32] __attribute__((aligned(64)));

static uintptr_t heap_next;

struct output_node {
    struct output_node *next;
    size_t set;
    struct pappus_buffer buffer;
};

static struct output_node *outputs_head, **outputs_tail = &outputs_head;
static size_t outputs_count;

#ifdef PAPPUS_TARGET_KVM
__attribute__((noreturn)) static void exit_group(int status) {
    (void)status; /* the exit code travels in __dandelion_system_data */
    for (;;) __asm__ volatile("int $32" ::: "memory");
}

static void set_thread_pointer(void *pointer) {
    __asm__ volatile("wrfsbase %0" : : "r"(pointer) : "memory");
}
#else
static long raw_syscall2(long number, long a, long b) {
    long result;
    __asm__ volatile("syscall" : "=a"(result) : "a"(number), "D"(a), "S"(b)
                     : "rcx", "r11", "memory");
    return result;
}

__attribute__((noreturn)) static void exit_group(int status) {
    for (;;) raw_syscall2(SYS_EXIT_GROUP, status, 0);
}

static void set_thread_pointer(void *pointer) {
    raw_syscall2(SYS_ARCH_PRCTL, ARCH_SET_FS, (long)(uintptr_t)pointer);
}
#endif

void *memcpy(void *dest, const void *src, size_t n) {
    unsigned char *d = dest;
    const unsigned char *s = src;
    while (n--) *d++ = *s++;
    return dest;
}

void *memmove(void *dest, const void *src, size_t n) {
    unsigned char *d = dest;
    const unsigned char *s = src;
    if (d < s) {
        while (n--) *d++ = *s++;
    } else {
        while (n--) d[n] = s[n];
    }
    return dest;
}

void *memset(void *dest, int c, size_t n) {
    unsigned char *d = dest;
    while (n--) *d++ = (unsigned char)c;
    return dest;
}

int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y) return *x - *y;
    return 0;
}

size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

void *pappus_alloc(size_t size) {
    uintptr_t start = (heap_next + 15) & ~(uintptr_t)15;
    uintptr_t stack = (uintptr_t)__builtin_frame_address(0);
    uintptr_t limit = __dandelion_system_data.heap_end;
    if (stack > STACK_RESERVE && stack - STACK_RESERVE < limit) limit = stack - STACK_RESERVE;
    if (start > limit || size > limit - start) return 0;
    heap_next = start + size;
    /* The context starts zeroed, and memory is never freed: already zero. */
    return (void *)start;
}

size_t pappus_input_set_count(void) { return __dandelion_system_data.input_sets_len; }

size_t pappus_output_set_count(void) { return __dandelion_system_data.output_sets_len; }

const char *pappus_input_set_name(size_t set, size_t *len) {
    if (set >= __dandelion_system_data.input_sets_len) {
        *len = 0;
        return 0;
    }
    *len = __dandelion_system_data.input_sets[set].ident_len;
    return __dandelion_system_data.input_sets[set].ident;
}

size_t pappus_input_item_count(size_t set) {
    const struct pappus_set_info *sets = __dandelion_system_data.input_sets;
    if (set >= __dandelion_system_data.input_sets_len) return 0;
    return sets[set + 1].offset - sets[set].offset;
}

int pappus_input_item(size_t set, size_t index, struct pappus_item *item) {
    if (index >= pappus_input_item_count(set)) return 0;
    const struct pappus_buffer *buffer =
        &__dandelion_system_data.input_bufs[__dandelion_system_data.input_sets[set].offset + index];
    item->name = buffer->ident;
    item->name_len = buffer->ident_len;
    item->data = buffer->data;
    item->len = buffer->data_len;
    item->key = (uint32_t)buffer->key;
    return 1;
}

static long find_set(const struct pappus_set_info *sets, size_t count, const char *name) {
    size_t len = strlen(name);
    for (size_t i = 0; i < count; i++)
        if (sets[i].ident_len == len && memcmp(sets[i].ident, name, len) == 0) return (long)i;
    return -1;
}

long pappus_input_set_index(const char *name) {
    return find_set(__dandelion_system_data.input_sets, __dandelion_system_data.input_sets_len,
                    name);
}

long pappus_output_set_index(const char *name) {
    return find_set(__dandelion_system_data.output_sets, __dandelion_system_data.output_sets_len,
                    name);
}

int pappus_emit_buffer(size_t set, const char *name, void *data, size_t len, uint32_t key) {
    if (set >= __dandelion_system_data.output_sets_len) return -1;
    struct output_node *node = pappus_alloc(sizeof *node);
    if (!node) return -1;
    size_t name_len = name ? strlen(name) : 0;
    char *name_copy = 0;
    if (name_len) {
        name_copy = pappus_alloc(name_len);
        if (!name_copy) return -1;
        memcpy(name_copy, name, name_len);
    }
    node->set = set;
    node->buffer = (struct pappus_buffer){name_copy, name_len, data, len, key};
    *outputs_tail = node;
    outputs_tail = &node->next;
    outputs_count++;
    return 0;
}

int pappus_emit(size_t set, const char *name, const void *data, size_t len, uint32_t key) {
    void *copy = pappus_alloc(len ? len : 1);
    if (!copy) return -1;
    memcpy(copy, data, len);
    return pappus_emit_buffer(set, name, copy, len, key);
}

/* Write output_bufs (grouped by set, in emission order) and every set's offset. */
static int publish_outputs(void) {
    struct pappus_system_data *sd = &__dandelion_system_data;
    struct pappus_buffer *buffers = pappus_alloc(sizeof(struct pappus_buffer) * (outputs_count + 1));
    if (!buffers) return -1;
    size_t next = 0;
    for (size_t set = 0; set < sd->output_sets_len; set++) {
        sd->output_sets[set].offset = next;
        for (struct output_node *node = outputs_head; node; node = node->next)
            if (node->set == set) buffers[next++] = node->buffer;
    }
    sd->output_sets[sd->output_sets_len].offset = next;
    sd->output_bufs = buffers;
    return 0;
}

__attribute__((used, noreturn)) void pappus_start(void) {
    thread_block[0] = (uint64_t)(uintptr_t)thread_block;
    set_thread_pointer(thread_block);
    heap_next = __dandelion_system_data.heap_begin;
    __dandelion_system_data.exit_code = main();
    if (publish_outputs() != 0) __dandelion_system_data.exit_code = PAPPUS_EXIT_OUT_OF_MEMORY;
    exit_group(0);
}

/* The entry point: align the stack as the ABI requires and call into C. */
__asm__(
    ".text\n"
    ".global _start\n"
    ".type _start,@function\n"
    "_start:\n"
    "    xor %ebp, %ebp\n"
    "    and $-16, %rsp\n"
    "    call pappus_start\n"
    "    hlt\n");
