/* Test harness: run.c's functions, driven by the Python tests.

   harness logits MODEL ID...        one line of logits per position
   harness encode TOKENIZER FILE     FILE holds texts separated by NUL bytes;
                                     prints one line of ids per text (no BOS)
*/
#define RUN_NO_MAIN
#include "../run.c"

static int cmd_logits(int argc, char **argv) {
    Model m;
    build_model(&m, argv[2]);
    int n = argc - 3;
    if (n < 1 || n > m.config.seq_len) fatal("give between 1 and seq_len token ids");
    RunState s;
    build_state(&s, &m.config, n);
    for (int pos = 0; pos < n; pos++) {
        int token = atoi(argv[3 + pos]);
        if (token < 0 || token >= m.config.vocab_size) fatal("token %d is out of range", token);
        const float *logits = forward(&m, &s, token, pos);
        for (int i = 0; i < m.config.vocab_size; i++) printf(i ? " %.9g" : "%.9g", logits[i]);
        printf("\n");
    }
    free_state(&s);
    free_model(&m);
    return 0;
}

static int cmd_encode(char **argv) {
    Tokenizer t;
    build_tokenizer(&t, argv[2], 0);
    size_t len;
    char *buf = read_file(argv[3], &len);
    int *ids = xmalloc((len * 3 + 3) * sizeof(int));
    for (size_t start = 0; start <= len;) {
        size_t end = start;
        while (end < len && buf[end] != '\0') end++;
        if (end == len && start == len && len > 0 && buf[len - 1] == '\0') break; /* trailing separator */
        int n = encode(&t, buf + start, end - start, 0, ids);
        for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        start = end + 1;
    }
    free(ids);
    free(buf);
    free_tokenizer(&t);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "logits") == 0) return cmd_logits(argc, argv);
    if (argc == 4 && strcmp(argv[1], "encode") == 0) return cmd_encode(argv);
    fprintf(stderr, "usage: harness logits MODEL ID... | harness encode TOKENIZER FILE\n");
    return 2;
}
