/* libFuzzer target: a model file. Loading must accept it or say why; a model
   that loads must run a forward pass. */
#define RUN_NO_MAIN
#define RUN_FUZZING
#include "../../run.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/fuzz-model-%d.bin", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    static Model m; /* static: reachable after a longjmp out of build_model */
    static RunState s;
    memset(&m, 0, sizeof m);
    if (setjmp(fuzz_escape) == 0) {
        build_model(&m, path);
        build_state(&s, &m.config, 4);
        int tokens[3] = {0, m.config.vocab_size - 1, m.config.vocab_size / 2};
        forward(&m, &s, tokens, 3, 0, 1);
        forward(&m, &s, tokens, 1, 3, 0);
        free_state(&s);
    }
    free(m.weights.layers);
    if (m.data) munmap(m.data, (size_t)m.size);
    return 0;
}
