/* libFuzzer target: a model file. Loading must accept it or say why; a model
   that loads must run a forward pass. */
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = write_input("model", data, size);
    if (!path) return 0;
    static Model m; /* static: reachable after a longjmp out of build_model */
    static RunState s;
    memset(&m, 0, sizeof m);
    if (setjmp(fuzz_escape) == 0) {
        build_model(&m, path, LOAD_AUTO);
        /* a chunk of 3 tokens (tiles), one (dot products), then one of 17
           (the GEMM steps and, with an fp32 cache, attend_panels) */
        build_state(&s, &m.config, 21, (int)(size & 1)); /* odd sizes: an fp16 KV cache */
        int tokens[17];
        for (int i = 0; i < 17; i++) tokens[i] = (int)((uint64_t)i * 7919 % (uint64_t)m.config.vocab_size);
        tokens[1] = m.config.vocab_size - 1;
        forward(&m, &s, tokens, 3, 0, 1);
        forward(&m, &s, tokens, 1, 3, 0);
        forward(&m, &s, tokens, 17, 4, 1);
        free_state(&s);
    }
    free_model(&m);
    return 0;
}
