/*
 * matmac: out = set0 × set1 + set2 for rows-prefixed int64 matrices.
 *
 * Inputs: exactly three sets, each with zero or one item [rows, m00, ...].
 * A missing product operand turns the product into the other operand
 * (set0 missing: set1 + set2; set1 missing: set0 + set2); a missing set2
 * adds nothing. Output set 0: one item [rows, ...], key 0.
 * Exit codes as in Dandelion's test function: -1 set count, -2 item count,
 * -3 malformed matrix, -4 nothing to compute, -5 shapes that do not fit.
 */
#include <pappus/function.h>

struct matrix {
    size_t rows, cols;
    const int64_t *values;
};

/* 1: read a matrix; 0: set empty; -1: malformed. */
static int read_matrix(size_t set, struct matrix *m) {
    size_t count = pappus_input_item_count(set);
    if (count == 0) return 0;
    if (count != 1) return -1;
    struct pappus_item item;
    pappus_input_item(set, 0, &item);
    if (item.len < 16 || item.len % 8) return -1;
    const int64_t *raw = item.data;
    size_t values = item.len / 8 - 1;
    if (raw[0] <= 0 || values % (size_t)raw[0]) return -1;
    m->rows = (size_t)raw[0];
    m->cols = values / m->rows;
    m->values = raw + 1;
    return 1;
}

int main(void) {
    if (pappus_input_set_count() != 3) return -1;
    struct matrix a, b, c;
    int have_a = read_matrix(0, &a), have_b = read_matrix(1, &b), have_c = read_matrix(2, &c);
    if (have_a < 0 || have_b < 0 || have_c < 0) return -2;
    struct matrix product;
    int64_t *product_values = 0;
    if (have_a && have_b) {
        if (a.cols != b.rows) return -5;
        product_values = pappus_alloc(a.rows * b.cols * sizeof(int64_t));
        if (!product_values) return PAPPUS_EXIT_OUT_OF_MEMORY;
        for (size_t i = 0; i < a.rows; i++)
            for (size_t j = 0; j < b.cols; j++) {
                int64_t sum = 0;
                for (size_t k = 0; k < a.cols; k++) sum += a.values[i * a.cols + k] * b.values[k * b.cols + j];
                product_values[i * b.cols + j] = sum;
            }
        product = (struct matrix){a.rows, b.cols, product_values};
    } else if (have_a || have_b) {
        product = have_a ? a : b;
    } else if (have_c) {
        product = (struct matrix){c.rows, c.cols, 0};
    } else {
        return -4;
    }
    if (have_c && (c.rows != product.rows || c.cols != product.cols)) return -5;
    size_t n = product.rows * product.cols;
    int64_t *out = pappus_alloc((n + 1) * sizeof(int64_t));
    if (!out) return PAPPUS_EXIT_OUT_OF_MEMORY;
    out[0] = (int64_t)product.rows;
    for (size_t i = 0; i < n; i++)
        out[1 + i] = (product.values ? product.values[i] : 0) + (have_c ? c.values[i] : 0);
    return pappus_emit_buffer(0, 0, out, (n + 1) * sizeof(int64_t), 0) ? -6 : 0;
}
