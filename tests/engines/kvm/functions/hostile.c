/*
 * hostile (kvm): one misbehaving guest per mode, chosen by the data of item 0
 * of input set 0; modes that need an address read it (u64) from item 1.
 * Build with `pappus sdk build --target kvm` and `-Wl,-e,capture_entry`:
 * the entry point records every register the engine hands over before the
 * SDK's _start runs, so "secret_scan" can report them.
 *
 * Outputs (set 0) only for "noop" and "secret_scan".
 */
#include <pappus/function.h>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Warray-bounds"
#endif

#define SECRET 0x5ec2e75ec2e75ec2ULL

extern struct pappus_system_data __dandelion_system_data;

/* Filled by capture_entry: rax..r15 (16), rflags, fs base, gs base, mxcsr|fcw. */
uint64_t captured[20] __attribute__((aligned(16)));
uint8_t captured_fx[512] __attribute__((aligned(64)));
uint8_t captured_ymm[16 * 32] __attribute__((aligned(64)));
uint64_t secret_static[512];
const uint64_t pattern[4] = {1, 2, 3, 4};
static uint64_t secret_block[64] __attribute__((aligned(64)));

__asm__(".text\n.global capture_entry\ncapture_entry:\n"
        "mov %rax, captured+0(%rip)\n mov %rbx, captured+8(%rip)\n"
        "mov %rcx, captured+16(%rip)\n mov %rdx, captured+24(%rip)\n"
        "mov %rsi, captured+32(%rip)\n mov %rdi, captured+40(%rip)\n"
        "mov %rsp, captured+48(%rip)\n mov %rbp, captured+56(%rip)\n"
        "mov %r8, captured+64(%rip)\n mov %r9, captured+72(%rip)\n"
        "mov %r10, captured+80(%rip)\n mov %r11, captured+88(%rip)\n"
        "mov %r12, captured+96(%rip)\n mov %r13, captured+104(%rip)\n"
        "mov %r14, captured+112(%rip)\n mov %r15, captured+120(%rip)\n"
        "pushfq\n pop %rax\n mov %rax, captured+128(%rip)\n"
        "rdfsbase %rax\n mov %rax, captured+136(%rip)\n"
        "rdgsbase %rax\n mov %rax, captured+144(%rip)\n"
        "stmxcsr captured+152(%rip)\n fnstcw captured+156(%rip)\n"
        "fxsave captured_fx(%rip)\n"
        "vmovdqu %ymm0, captured_ymm+0(%rip)\n vmovdqu %ymm1, captured_ymm+32(%rip)\n"
        "vmovdqu %ymm2, captured_ymm+64(%rip)\n vmovdqu %ymm3, captured_ymm+96(%rip)\n"
        "vmovdqu %ymm4, captured_ymm+128(%rip)\n vmovdqu %ymm5, captured_ymm+160(%rip)\n"
        "vmovdqu %ymm6, captured_ymm+192(%rip)\n vmovdqu %ymm7, captured_ymm+224(%rip)\n"
        "vmovdqu %ymm8, captured_ymm+256(%rip)\n vmovdqu %ymm9, captured_ymm+288(%rip)\n"
        "vmovdqu %ymm10, captured_ymm+320(%rip)\n vmovdqu %ymm11, captured_ymm+352(%rip)\n"
        "vmovdqu %ymm12, captured_ymm+384(%rip)\n vmovdqu %ymm13, captured_ymm+416(%rip)\n"
        "vmovdqu %ymm14, captured_ymm+448(%rip)\n vmovdqu %ymm15, captured_ymm+480(%rip)\n"
        "xor %eax, %eax\n jmp _start\n");

static int is(const struct pappus_item *item, const char *mode) {
    size_t len = strlen(mode);
    return item->len == len && memcmp(item->data, mode, len) == 0;
}

static int has_avx512(void) {
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    if (!(b & (1u << 16))) return 0;
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0xE0) == 0xE0;
}

/* Leave a secret everywhere the next invocation could look, then exit without cleaning up. */
__attribute__((noreturn)) static void secret_write(void) {
    uint64_t *heap = pappus_alloc(1 << 20);
    for (size_t i = 0; heap && i < (1 << 20) / 8; i++) heap[i] = SECRET;
    for (size_t i = 0; i < 512; i++) secret_static[i] = SECRET;
    ((volatile uint64_t *)pattern)[0] = SECRET; /* the image's read-only data */
    volatile uint64_t deep[8192];                 /* 64 KiB of stack */
    for (size_t i = 0; i < 8192; i++) deep[i] = SECRET;
    for (size_t i = 0; i < 64; i++) secret_block[i] = SECRET;
    if (has_avx512())
        __asm__ volatile("vmovdqu64 (%0), %%zmm16\n vmovdqu64 (%0), %%zmm31\n"
                         "vmovdqu64 (%0), %%zmm0\n kmovq (%0), %%k1" ::"r"(secret_block));
    static const uint32_t odd_mxcsr = 0x7F80;
    static const uint16_t odd_fcw = 0x0F7F;
    __asm__ volatile(
        "vmovdqu (%0), %%ymm0\n vmovdqu (%0), %%ymm1\n vmovdqu (%0), %%ymm7\n"
        "vmovdqu (%0), %%ymm8\n vmovdqu (%0), %%ymm15\n"
        "fildq (%0)\n fildq (%0)\n fldcw (%2)\n ldmxcsr (%1)\n"
        "mov (%0), %%rax\n shr $16, %%rax\n wrfsbase %%rax\n wrgsbase %%rax\n" /* canonical */
        "mov (%0), %%rax\n"
        "mov %%rax, %%rbx\n mov %%rax, %%rcx\n mov %%rax, %%rdx\n mov %%rax, %%rsi\n"
        "mov %%rax, %%rdi\n mov %%rax, %%rbp\n mov %%rax, %%r8\n mov %%rax, %%r9\n"
        "mov %%rax, %%r10\n mov %%rax, %%r11\n mov %%rax, %%r12\n mov %%rax, %%r13\n"
        "mov %%rax, %%r14\n mov %%rax, %%r15\n"
        "std\n pushfq\n orq $0x40000, (%%rsp)\n popfq\n" /* DF and AC set */
        "int $32\n" ::"r"(secret_block), "r"(&odd_mxcsr), "r"(&odd_fcw) : "memory");
    __builtin_unreachable();
}

/* Report what this invocation found: registers at entry, and memory that is not zero. */
static int secret_scan(void) {
    uint64_t sp = (uint64_t)__builtin_frame_address(0);
    uint64_t report[4] = {0, 0, 0, 0}; /* non-zero words, first such address, pattern[0], 0 */
    const volatile uint64_t *word = (const volatile uint64_t *)__dandelion_system_data.heap_begin;
    for (; (uint64_t)word < sp - 4096; word++)
        if (*word) {
            if (!report[0]) report[1] = (uint64_t)word;
            report[0]++;
        }
    report[2] = ((const volatile uint64_t *)pattern)[0];
    uint8_t zmm[3 * 64 + 8] = {0};
    if (has_avx512())
        __asm__ volatile("vmovdqu64 %%zmm16, (%0)\n vmovdqu64 %%zmm31, 64(%0)\n"
                         "vmovdqu64 %%zmm0, 128(%0)\n kmovq %%k1, 192(%0)" ::"r"(zmm) : "memory");
    if (pappus_emit(0, "registers", captured, sizeof captured, 0) ||
        pappus_emit(0, "fxsave", captured_fx, sizeof captured_fx, 0) ||
        pappus_emit(0, "ymm", captured_ymm, sizeof captured_ymm, 0) ||
        pappus_emit(0, "zmm", zmm, sizeof zmm, 0) ||
        pappus_emit(0, "static", secret_static, sizeof secret_static, 0) ||
        pappus_emit(0, "memory", report, sizeof report, 0))
        return PAPPUS_EXIT_OUT_OF_MEMORY;
    return 0;
}

int main(void) {
    struct pappus_item mode, argument = {0};
    if (!pappus_input_item(0, 0, &mode)) return 98;
    uint64_t address = 0;
    if (pappus_input_item(0, 1, &argument) && argument.len == 8)
        address = *(const uint64_t *)argument.data;
    if (is(&mode, "noop")) return pappus_emit(0, "ok", "ok", 2, 0);
    if (is(&mode, "divide")) /* in asm: GCC computes 1 / x without dividing */
        __asm__ volatile("xor %%edx, %%edx\n mov $1, %%eax\n div %0" ::"r"(0) : "rax", "rdx");
    if (is(&mode, "ud2")) __asm__ volatile("ud2");
    if (is(&mode, "read")) return (int)*(volatile uint64_t *)address;
    if (is(&mode, "write")) *(volatile uint64_t *)address = SECRET;
    if (is(&mode, "jump")) ((void (*)(void))address)();
    if (is(&mode, "hlt")) __asm__ volatile("hlt");
    if (is(&mode, "cli")) __asm__ volatile("cli");
    if (is(&mode, "out")) __asm__ volatile("out %%al, $0x99" ::"a"(0));
    if (is(&mode, "out_exit_port")) __asm__ volatile("out %%al, $32" ::"a"(0));
    if (is(&mode, "cr3")) __asm__ volatile("mov %0, %%cr3" ::"r"(0x10000UL));
    if (is(&mode, "lgdt")) {
        static uint8_t descriptor[10];
        __asm__ volatile("lgdt %0" ::"m"(descriptor));
    }
    if (is(&mode, "int3")) __asm__ volatile("int3");
    if (is(&mode, "syscall")) __asm__ volatile("syscall" ::"a"(39) : "rcx", "r11", "memory");
    if (is(&mode, "spin")) { /* `address` iterations of busy work, then a normal return */
        volatile uint64_t sum = 0;
        for (uint64_t i = 0; i < address; i++) sum += i;
        return 0;
    }
    if (is(&mode, "loop"))
        for (;;) __asm__ volatile("");
    if (is(&mode, "secret_write")) secret_write();
    if (is(&mode, "secret_scan")) return secret_scan();
    return 99;
}
