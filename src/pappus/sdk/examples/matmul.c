/*
 * matmul: out = [n] ++ A·Aᵀ for one rows-prefixed matrix of int64 values.
 *
 * Input: exactly one set with exactly one item [rows, a00, a01, ...] (row
 * major, little-endian int64). Output set 0: one item [rows, c00, ...] with
 * c[i][j] = Σ_k a[i][k]·a[j][k], keeping the input item's key.
 * Exit codes as in Dandelion's test function: -1 set count, -2 item count,
 * -3 too short, -4 bad shape.
 */
#include <pappus/function.h>

int main(void) {
    if (pappus_input_set_count() != 1) return -1;
    if (pappus_input_item_count(0) != 1) return -2;
    struct pappus_item item;
    pappus_input_item(0, 0, &item);
    if (item.len < 16 || item.len % 8 != 0) return -3;
    const int64_t *in = item.data;
    size_t values = item.len / 8 - 1;
    int64_t rows = in[0];
    if (rows <= 0 || values % (size_t)rows != 0) return -4;
    size_t n = (size_t)rows, cols = values / n;
    const int64_t *a = in + 1;
    int64_t *out = pappus_alloc((n * n + 1) * sizeof(int64_t));
    if (!out) return PAPPUS_EXIT_OUT_OF_MEMORY;
    out[0] = rows;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            int64_t sum = 0;
            for (size_t k = 0; k < cols; k++) sum += a[i * cols + k] * a[j * cols + k];
            out[1 + i * n + j] = sum;
        }
    return pappus_emit_buffer(0, 0, out, (n * n + 1) * sizeof(int64_t), item.key) ? -5 : 0;
}
