/*
 * groupby: group the items of input set 0 by key.
 *
 * Output set 0: one item per distinct key, in ascending key order, named
 * after the first item with that key, holding the data of every item with
 * that key joined by '\n' (in input order), and keeping the key.
 */
#include <pappus/function.h>

int main(void) {
    size_t count = pappus_input_item_count(0);
    char *done = pappus_alloc(count + 1);
    if (!done) return PAPPUS_EXIT_OUT_OF_MEMORY;
    for (;;) {
        /* the smallest key not yet emitted */
        size_t first = count;
        struct pappus_item item, lowest = {0};
        for (size_t i = 0; i < count; i++) {
            pappus_input_item(0, i, &item);
            if (!done[i] && (first == count || item.key < lowest.key)) {
                first = i;
                lowest = item;
            }
        }
        if (first == count) return 0;
        size_t total = 0, members = 0;
        for (size_t i = first; i < count; i++) {
            pappus_input_item(0, i, &item);
            if (!done[i] && item.key == lowest.key) total += item.len, members++;
        }
        char *joined = pappus_alloc(total + members);
        if (!joined) return PAPPUS_EXIT_OUT_OF_MEMORY;
        size_t at = 0;
        for (size_t i = first; i < count; i++) {
            pappus_input_item(0, i, &item);
            if (done[i] || item.key != lowest.key) continue;
            if (at) joined[at++] = '\n';
            memcpy(joined + at, item.data, item.len);
            at += item.len;
            done[i] = 1;
        }
        char name[256];
        size_t len = lowest.name_len < sizeof name - 1 ? lowest.name_len : sizeof name - 1;
        memcpy(name, lowest.name, len);
        name[len] = 0;
        if (pappus_emit_buffer(0, name, joined, at, lowest.key)) return PAPPUS_EXIT_OUT_OF_MEMORY;
    }
}
