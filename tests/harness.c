/* Test harness: run.c's functions, driven by the Python tests.

   harness logits MODEL ID...        one line of logits per position
   harness encode TOKENIZER FILE     FILE holds texts separated by NUL bytes;
                                     prints one line of ids per text (no BOS)
   harness render TOKENIZER TEMPLATE FILE
                                     FILE holds a conversation: role, NUL,
                                     content, NUL, ... (roles system, user,
                                     assistant); prints the ids it renders to,
                                     ending with the generation prompt
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

/* A finished assistant message given as text, with its end-of-turn token,
   as the family's template writes it. */
static void render_assistant(Render *r, const ChatFormat *f, const char *message) {
    char *msg = trimmed(message);
    if (f->template == TEMPLATE_LLAMA2) { /* ' ' + content.strip() + ' ' + eos */
        render_text(r, " ");
        render_text(r, msg);
        render_text(r, " ");
    } else { /* Llama 3 trims the content; the others keep it as it is */
        render_text(r, f->template == TEMPLATE_LLAMA3 || f->template == TEMPLATE_LLAMA31 ? msg : message);
    }
    render_special(r, f->eot);
    render_after_reply(r, f);
    free(msg);
}

static int cmd_render(char **argv) {
    Tokenizer t;
    build_tokenizer(&t, argv[2], 0);
    int template = -1;
    for (int k = 1; k < N_TEMPLATES; k++)
        if (strcmp(argv[3], TEMPLATE_NAMES[k]) == 0) template = k;
    if (template < 0) fatal("unknown template %s", argv[3]);
    size_t len;
    char *buf = read_file(argv[4], &len);
    const char *system = NULL;
    if (len > 0 && strcmp(buf, "system") == 0) system = buf + strlen(buf) + 1;
    ChatFormat f;
    build_chat_format(&f, &t, template, system);
    Render r = {&t, NULL, 0, 0, NULL, 0, 0};
    render_open(&r, &f);
    int first = 1;
    for (size_t i = 0; i < len;) {
        const char *role = buf + i;
        i += strlen(role) + 1;
        const char *content = buf + i;
        i += strlen(content) + 1;
        if (strcmp(role, "user") == 0) render_user(&r, &f, content, first), first = 0;
        else if (strcmp(role, "assistant") == 0) render_assistant(&r, &f, content);
    }
    render_flush(&r);
    for (int k = 0; k < r.n; k++) printf(k ? " %d" : "%d", r.ids[k]);
    printf("\n");
    free(r.ids);
    free(r.text);
    free(buf);
    free_tokenizer(&t);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "logits") == 0) return cmd_logits(argc, argv);
    if (argc == 4 && strcmp(argv[1], "encode") == 0) return cmd_encode(argv);
    if (argc == 5 && strcmp(argv[1], "render") == 0) return cmd_render(argv);
    fprintf(stderr, "usage: harness logits MODEL ID... | encode TOKENIZER FILE | render TOKENIZER TEMPLATE FILE\n");
    return 2;
}
