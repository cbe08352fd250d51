/*
 * wordcount: how often each word occurs across every item of input set 0.
 *
 * Words are runs of bytes other than ASCII space, tab, CR and LF. Output
 * set 0: one item per distinct word, named after it, holding its count in
 * decimal, in order of first appearance.
 */
#include <pappus/function.h>

struct word {
    const char *text;
    size_t len;
    size_t count;
};

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int main(void) {
    size_t capacity = 0;
    for (size_t i = 0; i < pappus_input_item_count(0); i++) {
        struct pappus_item item;
        pappus_input_item(0, i, &item);
        capacity += item.len / 2 + 1; /* words are at least one byte plus a separator */
    }
    struct word *words = pappus_alloc((capacity + 1) * sizeof *words);
    if (!words) return PAPPUS_EXIT_OUT_OF_MEMORY;
    size_t distinct = 0;
    for (size_t i = 0; i < pappus_input_item_count(0); i++) {
        struct pappus_item item;
        pappus_input_item(0, i, &item);
        const char *text = item.data;
        for (size_t at = 0; at < item.len;) {
            while (at < item.len && is_space(text[at])) at++;
            size_t start = at;
            while (at < item.len && !is_space(text[at])) at++;
            if (at == start) break;
            size_t w = 0;
            while (w < distinct && !(words[w].len == at - start &&
                                     memcmp(words[w].text, text + start, at - start) == 0))
                w++;
            if (w == distinct) words[distinct++] = (struct word){text + start, at - start, 0};
            words[w].count++;
        }
    }
    for (size_t w = 0; w < distinct; w++) {
        char name[256], digits[24];
        size_t len = words[w].len < sizeof name - 1 ? words[w].len : sizeof name - 1;
        memcpy(name, words[w].text, len);
        name[len] = 0;
        size_t d = sizeof digits, value = words[w].count;
        do digits[--d] = (char)('0' + value % 10); while (value /= 10);
        if (pappus_emit(0, name, digits + d, sizeof digits - d, 0)) return PAPPUS_EXIT_OUT_OF_MEMORY;
    }
    return 0;
}
