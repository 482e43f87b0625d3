/* libFuzzer target: a tokenizer file. Loading must accept it or say why; a
   tokenizer that loads must encode text and decode every token. */
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = write_input("tokenizer", data, size);
    if (!path) return 0;
    static Tokenizer t;
    memset(&t, 0, sizeof t);
    if (setjmp(fuzz_escape) == 0) {
        build_tokenizer(&t, path, 0);
        static const char text[] = "Hello wörld, it's 2024!\n\t日本 \xff <s> e\xcc\x81\xcc\xa3 \xe1\x84\x80\xe1\x85\xa1";
        int ids[3 * sizeof text + 3];
        int n = encode(&t, text, sizeof text - 1, 1, ids);
        FILE *null = fopen("/dev/null", "w");
        Utf8Printer p = {{0}, 0, 0, null};
        for (int i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= t.vocab_size) __builtin_trap();
            const char *piece;
            int len = decode_piece(&t, i ? ids[i - 1] : -1, ids[i], &piece);
            utf8_put(&p, piece, len);
        }
        for (int id = 0; id < t.vocab_size && id < 4096; id++) {
            const char *piece;
            int len = decode_piece(&t, -1, id, &piece);
            utf8_put(&p, piece, len);
        }
        fclose(null);
    }
    free_tokenizer(&t);
    return 0;
}
