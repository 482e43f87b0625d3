/* libFuzzer target: any bytes as a prompt, through the SentencePiece (Llama 2)
   and byte-level (SmolLM2) tokenizers; every id must be in the vocabulary, and
   decoding them must print. FUZZ_TOKENIZERS names the two files. */
#define RUN_NO_MAIN
#define RUN_FUZZING
#include "../../run.c"

static Tokenizer tokenizers[2];
static int n_tokenizers;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *paths[2] = {getenv("FUZZ_SPM_TOKENIZER"), getenv("FUZZ_BPE_TOKENIZER")};
    for (int i = 0; i < 2; i++)
        if (paths[i] && setjmp(fuzz_escape) == 0) build_tokenizer(&tokenizers[n_tokenizers++], paths[i], 0);
    if (n_tokenizers == 0) {
        fprintf(stderr, "set FUZZ_SPM_TOKENIZER and FUZZ_BPE_TOKENIZER\n");
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int *ids = malloc((size * 3 + 3) * sizeof(int));
    FILE *null = fopen("/dev/null", "w");
    for (int k = 0; k < n_tokenizers; k++) {
        const Tokenizer *t = &tokenizers[k];
        int n = encode(t, (const char *)data, size, 1, ids);
        if (n > (int)(size * 3 + 3)) __builtin_trap();
        Utf8Printer p = {{0}, 0, 0, null};
        for (int i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= t->vocab_size) __builtin_trap();
            const char *piece;
            int len = decode_piece(t, i ? ids[i - 1] : -1, ids[i], &piece);
            utf8_put(&p, piece, len);
        }
        utf8_flush(&p);
    }
    fclose(null);
    free(ids);
    return 0;
}
