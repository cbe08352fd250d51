/*
 * pappus function SDK: write pure compute functions for the `process` engine
 * (Dandelion's native ABI, x86-64).
 *
 * A function is a freestanding static program: no libc, no system calls of
 * its own. It reads its input sets, emits items into its output sets and
 * returns from main(). The runtime (runtime/start.c) does the rest: it sets
 * up thread-local storage, calls main(), and at exit writes the output
 * descriptors the worker reads back.
 *
 * Build: pappus sdk build fn.c -o fn
 *
 * The memory layout follows Dandelion's ABI so binaries built with either
 * SDK run on both workers: the worker writes `__dandelion_system_data`
 * (struct pappus_system_data below) before the function starts.
 */
#ifndef PAPPUS_FUNCTION_H
#define PAPPUS_FUNCTION_H

#include <stddef.h>
#include <stdint.h>

/* ---- The ABI (Dandelion's layout; x86-64, all offsets fixed) ---------- */

/* One set: its name, and the index of its first item in the buffer array.
 * Set i holds items [sets[i].offset, sets[i+1].offset); a sentinel ends the
 * array. Names are not NUL-terminated. */
struct pappus_set_info {
    const char *ident;
    size_t ident_len;
    size_t offset;
};

/* One item: name (not NUL-terminated), data and key. */
struct pappus_buffer {
    const char *ident;
    size_t ident_len;
    void *data;
    size_t data_len;
    size_t key;
};

/* The worker writes this struct at the symbol `__dandelion_system_data`. */
struct pappus_system_data {
    int32_t exit_code;
    uintptr_t heap_begin;
    uintptr_t heap_end;
    size_t input_sets_len;
    struct pappus_set_info *input_sets;
    size_t output_sets_len;
    struct pappus_set_info *output_sets;
    struct pappus_buffer *input_bufs;
    struct pappus_buffer *output_bufs;
};

/* Exit codes the runtime itself uses (as Dandelion's SDK does). */
#define PAPPUS_EXIT_UNINITIALIZED 256
#define PAPPUS_EXIT_OUT_OF_MEMORY 259

/* ---- Reading inputs --------------------------------------------------- */

/* One input or output item, as the function sees it. */
struct pappus_item {
    const char *name;   /* not NUL-terminated */
    size_t name_len;
    const void *data;
    size_t len;
    uint32_t key;
};

/* Number of input sets the function was registered with. */
size_t pappus_input_set_count(void);
/* Name of input set `set` (not NUL-terminated; *len receives its length). */
const char *pappus_input_set_name(size_t set, size_t *len);
/* Number of items in input set `set` (0 for an absent set or a bad index). */
size_t pappus_input_item_count(size_t set);
/* Item `index` of input set `set`; returns 0 if there is no such item. */
int pappus_input_item(size_t set, size_t index, struct pappus_item *item);
/* Index of the input set called `name`, or -1. */
long pappus_input_set_index(const char *name);

/* ---- Writing outputs -------------------------------------------------- */

/* Number of output sets the function was registered with. */
size_t pappus_output_set_count(void);
/* Index of the output set called `name`, or -1. */
long pappus_output_set_index(const char *name);
/* Append an item to output set `set`, copying `name` (NUL-terminated; may
 * be NULL for an unnamed item) and `len` bytes of `data`. Returns 0, or -1
 * if `set` is out of range or memory is exhausted. */
int pappus_emit(size_t set, const char *name, const void *data, size_t len, uint32_t key);
/* Like pappus_emit, but without copying: `data` must come from
 * pappus_alloc (or static storage) and stay unchanged until main returns. */
int pappus_emit_buffer(size_t set, const char *name, void *data, size_t len, uint32_t key);

/* ---- Memory ----------------------------------------------------------- */

/* Allocate `size` bytes (16-byte aligned, zeroed) from the function's heap,
 * which lies between its inputs and its stack. Returns NULL when exhausted.
 * There is no free: a function's memory lives as long as one invocation. */
void *pappus_alloc(size_t size);

/* Freestanding helpers the compiler may also call implicitly. */
void *memcpy(void *dest, const void *src, size_t n);
void *memmove(void *dest, const void *src, size_t n);
void *memset(void *dest, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

/* The function's entry point: return 0 on success. A non-zero value is
 * reported to the caller as the invocation's exit code. */
int main(void);

#endif
