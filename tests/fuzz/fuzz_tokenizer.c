/* libFuzzer target: a tokenizer file. Loading must accept it or say why; a
   tokenizer that loads must encode text and decode every token. */
#define RUN_NO_MAIN
#define RUN_FUZZING
#include "../../run.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/fuzz-tokenizer-%d.bin", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    static Tokenizer t;
    memset(&t, 0, sizeof t);
    if (setjmp(fuzz_escape) == 0) {
        build_tokenizer(&t, path, 0);
        static const char text[] = "Hello wörld, it's 2024!\n\t日本 \xff <s> ";
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
