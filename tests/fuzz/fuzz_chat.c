/* libFuzzer target: chat template rendering. The input is split at NUL bytes
   into a system prompt (if it starts with S) and messages, rendered with every
   template through its family's tokenizer: Llama 3 (FUZZ_LLAMA3_TOKENIZER),
   Llama 2 for its own, Mistral's and Zephyr's (FUZZ_SPM_TOKENIZER), and for
   the others SmolLM2's with every template's special tokens added
   (FUZZ_BPE_TOKENIZER, made by chat_tokenizer.py). */
#define RUN_NO_MAIN
#define RUN_FUZZING
#include "../../run.c"

static Tokenizer tokenizers[3];
static ChatFormat formats[N_TEMPLATES]; /* built once: finding special tokens scans the vocabulary */
static int usable[N_TEMPLATES];          /* the tokenizer has the tokens the template needs */

static const Tokenizer *tokenizer_for(int template) {
    return &tokenizers[template == TEMPLATE_LLAMA3 || template == TEMPLATE_LLAMA31                                ? 0
                       : template == TEMPLATE_LLAMA2 || template == TEMPLATE_MISTRAL || template == TEMPLATE_ZEPHYR ? 2
                                                                                                                   : 1];
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *paths[3] = {getenv("FUZZ_LLAMA3_TOKENIZER"), getenv("FUZZ_BPE_TOKENIZER"), getenv("FUZZ_SPM_TOKENIZER")};
    for (int i = 0; i < 3; i++) {
        if (!paths[i] || setjmp(fuzz_escape) != 0) {
            fprintf(stderr, "set FUZZ_LLAMA3_TOKENIZER, FUZZ_BPE_TOKENIZER and FUZZ_SPM_TOKENIZER\n");
            exit(1);
        }
        build_tokenizer(&tokenizers[i], paths[i], 0);
    }
    for (int template = 1; template < N_TEMPLATES; template++)
        if (setjmp(fuzz_escape) == 0) {
            /* Qwen3 with thinking off (its empty think block), SmolLM3 with it on */
            build_chat_format(&formats[template], tokenizer_for(template), template, NULL, template == TEMPLATE_QWEN3);
            usable[template] = 1;
        }
    for (int template = 1; template < N_TEMPLATES; template++)
        if (!usable[template]) fprintf(stderr, "chat template %s: not fuzzed (its tokens are missing)\n", TEMPLATE_NAMES[template]);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    const char *system = size > 0 && text[0] == 'S' ? text + 1 : NULL;
    for (int template = 1; template < N_TEMPLATES; template++) {
        if (!usable[template]) continue;
        const Tokenizer *t = tokenizer_for(template);
        static Render r;
        memset(&r, 0, sizeof r);
        r.tok = t;
        if (setjmp(fuzz_escape) == 0) {
            ChatFormat f = formats[template];
            f.system = system;
            render_open(&r, &f);
            size_t i = system ? strlen(text) + 1 : 0;
            for (int first = 1; i <= size; first = 0) {
                render_user(&r, &f, text + i, first);
                render_flush(&r);
                render_special(&r, f.eot);
                render_after_reply(&r, &f);
                i += strlen(text + i) + 1;
            }
            render_flush(&r);
            for (int k = 0; k < r.n; k++)
                if (r.ids[k] < 0 || r.ids[k] >= t->vocab_size) __builtin_trap();
        }
        free(r.ids);
        free(r.text);
    }
    free(text);
    return 0;
}
