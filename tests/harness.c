/* Test harness: run.c's functions, driven by the Python tests.

   harness logits MODEL CHUNK ID...  one line of logits per position, the
                                     tokens going through CHUNK at a time
   harness encode TOKENIZER FILE     FILE holds texts separated by NUL bytes;
                                     prints one line of ids per text (no BOS)
   harness kernels                   each SIMD kernel (dot products, tiles,
                                     attention; q4_k and q6_k on rows of 1 to
                                     11 blocks) against its scalar version on
                                     random data of odd sizes; prints
                                     the largest difference of each, relative to
                                     the sum of the products' magnitudes, and how
                                     many quantized values the SIMD and scalar
                                     quantize_vector disagree on (none allowed)
   harness matmul MODEL INDEX FILE   matrix INDEX (file order) times the inputs
                                     in FILE (float32), quantized as forward()
                                     does; prints the activations as quantized
                                     and the outputs. INDEX may list up to 3
                                     matrices of one width (1,2,3: wq, wk, wv):
                                     matmuls takes them at once, and each
                                     token's outputs are theirs one after
                                     another
   harness aligned MODEL KV_CACHE    the buffers of a run's state (KV_CACHE fp32
                                     or fp16): prints how many it has and how
                                     many do not start on a 64-byte cache line
   harness render TOKENIZER TEMPLATE FILE
                                     FILE holds a conversation: role, NUL,
                                     content, NUL, ... (roles system, user,
                                     assistant); prints the ids it renders to,
                                     ending with the generation prompt
*/
#define RUN_NO_MAIN
#include "../run.c"
#include <float.h> /* FLT_MIN */

/* harness logits MODEL CHUNK ID...: the tokens go through forward() CHUNK
   at a time (1: one by one, as generation; more: as a prompt). With
   KV_CACHE=fp16 in the environment, the KV cache holds halves. */
static int cmd_logits(int argc, char **argv) {
    int kv16 = getenv("KV_CACHE") && strcmp(getenv("KV_CACHE"), "fp16") == 0;
    Model m;
    build_model(&m, argv[2], LOAD_AUTO);
    int chunk = atoi(argv[3]), n = argc - 4;
    if (n < 1 || n > m.config.seq_len || chunk < 1) fatal("give a chunk size and between 1 and seq_len token ids");
    int *tokens = xmalloc(n * sizeof(int));
    for (int i = 0; i < n; i++) {
        tokens[i] = atoi(argv[4 + i]);
        if (tokens[i] < 0 || tokens[i] >= m.config.vocab_size) fatal("token %d is out of range", tokens[i]);
    }
    RunState s;
    build_state(&s, &m.config, n, kv16);
    if (chunk > s.max_logits) chunk = s.max_logits; /* every token's logits */
    int V = m.config.vocab_size;
    for (int pos = 0; pos < n; pos += chunk) {
        int T = n - pos < chunk ? n - pos : chunk;
        const float *logits = forward(&m, &s, tokens + pos, T, pos, 1);
        for (int t = 0; t < T; t++) {
            for (int i = 0; i < V; i++) printf(i ? " %.9g" : "%.9g", logits[(size_t)t * V + i]);
            printf("\n");
        }
    }
    free(tokens);
    free_state(&s);
    free_model(&m);
    return 0;
}

/* The model's matrix number `index`, in file order: 0 the embedding, then
   wq wk wv wo w1 w2 w3 of each layer, then the classifier. */
static const Matrix *matrix_by_index(const Model *m, int index) {
    const Weights *w = &m->weights;
    if (index == 0) return &w->token_embedding;
    if (index == 1 + 7 * m->config.n_layers) return &w->classifier;
    if (index < 0 || index > 7 * m->config.n_layers) fatal("no matrix %d", index);
    const LayerWeights *lw = &w->layers[(index - 1) / 7];
    const Matrix *mats[7] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->w1, &lw->w2, &lw->w3};
    return mats[(index - 1) % 7];
}

/* harness matmul MODEL INDEX[,INDEX...] FILE: FILE holds T inputs of the
   matrices' width as float32; they are quantized as forward() quantizes a
   matmul's input and multiplied by the matrix (one: matmul) or the
   matrices (matmuls), T at a time. Prints the first matrix's type, then per
   token a line of its quantized values, a line of their scales (one per 32)
   and a line of outputs (each matrix's rows in turn). */
static int cmd_matmul(char **argv) {
    Model m;
    build_model(&m, argv[2], LOAD_AUTO);
    const Matrix *Ws[MAX_MATMULS];
    int count = 0;
    for (const char *p = argv[3];; p++) { /* INDEX,INDEX,... */
        if (count == MAX_MATMULS) fatal("at most %d matrices", MAX_MATMULS);
        Ws[count] = matrix_by_index(&m, atoi(p));
        if (Ws[count++]->cols != Ws[0]->cols) fatal("matrices of different widths");
        if (!(p = strchr(p, ','))) break;
    }
    const Matrix *W = Ws[0];
    size_t len;
    float *x = (float *)read_file(argv[4], &len);
    int n = W->cols, T = (int)(len / (n * sizeof(float)));
    RunState s;
    build_state(&s, &m.config, T, 0);
    if (T < 1 || T > s.max_tokens) fatal("give between 1 and %d inputs", s.max_tokens);
    float *outs[MAX_MATMULS];
    for (int k = 0; k < count; k++) outs[k] = xmalloc((size_t)T * Ws[k]->rows * sizeof(float));
    OMP(omp parallel) /* a team, as forward starts */
    {
        matmul_input(&m.config, s.xq, &s.panels, x, T, n);
        if (count == 1) matmul(outs[0], x, s.xq, &s.panels, W, T);
        else matmuls(outs, x, s.xq, &s.panels, Ws, count, T);
    }
    printf("%s\n", WEIGHT_NAMES[W->type]);
    for (int t = 0; t < T; t++) {
        for (int j = 0; j < n; j++) printf(j ? " %d" : "%d", m.config.quantized ? s.xq[t].q[j] : 0);
        printf("\n");
        for (int b = 0; b < (n + QK - 1) / QK; b++) printf(b ? " %.9g" : "%.9g", m.config.quantized ? s.xq[t].scale[b] : 0.0f);
        printf("\n");
        for (int k = 0; k < count; k++)
            for (int r = 0; r < Ws[k]->rows; r++) printf(k || r ? " %.9g" : "%.9g", outs[k][(size_t)t * Ws[k]->rows + r]);
        printf("\n");
    }
    for (int k = 0; k < count; k++) free(outs[k]);
    free(x);
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
    } else { /* Llama 3 and Gemma trim the content; the others keep it as it is */
        int trim = f->template == TEMPLATE_LLAMA3 || f->template == TEMPLATE_LLAMA31 || f->template == TEMPLATE_GEMMA;
        render_text(r, trim ? msg : message);
    }
    render_special(r, f->eot);
    render_after_reply(r, f);
    free(msg);
}

static int cmd_render(char **argv) {
    Tokenizer t;
    build_tokenizer(&t, argv[2], 0);
    int template = -1;
    char name[64];
    snprintf(name, sizeof name, "%s", argv[3]);
    char *option = strchr(name, '/'); /* "qwen3/no-think": the template with thinking off */
    if (option) *option++ = '\0';
    for (int k = 1; k < N_TEMPLATES; k++)
        if (strcmp(name, TEMPLATE_NAMES[k]) == 0) template = k;
    if (template < 0) fatal("unknown template %s", argv[3]);
    size_t len;
    char *buf = read_file(argv[4], &len);
    const char *system = NULL;
    if (len > 0 && strcmp(buf, "system") == 0) system = buf + strlen(buf) + 1;
    ChatFormat f;
    build_chat_format(&f, &t, template, system, option && strcmp(option, "no-think") == 0);
    Render r = {&t, NULL, 0, 0, NULL, 0, 0, 0};
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

static float random_unit(uint64_t *state) { return random_f32(state) * 2.0f - 1.0f; }

/* The size a dot product's rounding error is measured against: the sum of
   the products' magnitudes, sum |w_i * x_i| (the result itself may cancel to
   near zero, where any relative difference is large). One per weight type. */
static double magnitude_f32(const float *w, const float *x, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) m += fabs((double)w[i] * x[i]);
    return m;
}

static double magnitude_q(const int8_t *w8, const uint8_t *w4, const uint16_t *ws, const QuantizedVector *x, int nb) {
    double m = 0;
    for (int j = 0; j < nb * QK; j++) {
        int b = j / QK, k = j % QK;
        int w = w8 ? w8[j] : (k < QK / 2 ? w4[b * QK / 2 + k] & 15 : w4[b * QK / 2 + k - QK / 2] >> 4) - 8;
        m += fabs((double)w * x->q[j] * fp16_to_fp32(ws[b]) * x->scale[b]);
    }
    return m;
}

/* `rows` rows of nb blocks (block_bytes each, one row after another) and
   their fp16 scales (nb per row), laid out as a q8_0 or q4_0 matrix's rows
   are in memory (run.c, section 2): groups of QGROUP blocks, each its
   scales, then its blocks. */
static uint8_t *grouped_rows(const void *values, const uint16_t *ws, int rows, int nb, size_t block_bytes) {
    uint8_t *out = xmalloc((size_t)rows * nb * (block_bytes + 2)), *o = out;
    for (int r = 0; r < rows; r++)
        for (int first = 0; first < nb; first += QGROUP) {
            int k = nb - first < QGROUP ? nb - first : QGROUP;
            memcpy(o, ws + (size_t)r * nb + first, 2 * (size_t)k), o += 2 * k;
            memcpy(o, (const uint8_t *)values + ((size_t)r * nb + first) * block_bytes, k * block_bytes), o += k * block_bytes;
        }
    return out;
}

/* The difference of a SIMD result from its scalar one, relative to the
   magnitude of the products; keeps the worst. */
static void compare(double *worst, double simd, double scalar, double magnitude) {
    double diff = fabs(simd - scalar) / (magnitude + 1e-30);
    if (diff > *worst) *worst = diff;
}

/* Compares a weighted sum of values, added to `start`, with its scalar
   version, each output relative to |start[i]| + sum_p |att[p] * v_p[i]| (v:
   the float values of the cache). */
static void compare_weighted(double *worst, const float *out, const float *out_plain, const float *start,
                             const float *att, const float *kv, size_t stride, int n, int head_dim) {
    for (int i = 0; i < head_dim; i++) {
        double m = fabs(start[i]);
        for (int p = 0; p < n; p++) m += fabs((double)att[p] * kv[p * stride + i]);
        compare(worst, out[i], out_plain[i], m);
    }
}

/* The attention kernels over odd head sizes, position counts and strides:
   worst[0] for the scores, worst[1] for the weighted sum of values; worst[2]
   and worst[3] for the same over an fp16 cache (held to their own scalar
   definitions, on the same halves). */
static void compare_attention(uint64_t *rng, double worst[4]) {
    static const int dims[] = {1, 7, 8, 16, 33, 48, 64, 100, 128, 130}, counts[] = {1, 3, 4, 5, 17, 64};
    for (size_t a = 0; a < sizeof dims / sizeof dims[0]; a++)
        for (size_t b = 0; b < sizeof counts / sizeof counts[0]; b++) {
            int head_dim = dims[a], n = counts[b];
            size_t stride = (size_t)head_dim * 3 + 5;
            float *q = xmalloc(head_dim * sizeof(float)), *kv = xmalloc(n * stride * sizeof(float));
            float *att = xmalloc(n * sizeof(float)), *att_plain = xmalloc(n * sizeof(float));
            float *out = xmalloc(head_dim * sizeof(float)), *out_plain = xmalloc(head_dim * sizeof(float));
            float *start = xmalloc(head_dim * sizeof(float)); /* the weighted sums add to it */
            for (int i = 0; i < head_dim; i++) q[i] = random_unit(rng);
            for (size_t i = 0; i < n * stride; i++) kv[i] = random_unit(rng);
            attention_scores(att, q, kv, stride, n, head_dim, 0.125f);
            attention_scores_scalar(att_plain, q, kv, stride, n, head_dim, 0.125f);
            for (int p = 0; p < n; p++)
                compare(&worst[0], att[p], att_plain[p], 0.125 * magnitude_f32(q, kv + p * stride, head_dim));
            for (int p = 0; p < n; p++) att[p] = random_f32(rng);
            for (int i = 0; i < head_dim; i++) out[i] = out_plain[i] = start[i] = random_f32(rng);
            weighted_sum(out, att, kv, stride, n, head_dim);
            weighted_sum_scalar(out_plain, att, kv, stride, n, head_dim);
            compare_weighted(&worst[1], out, out_plain, start, att, kv, stride, n, head_dim);
            uint16_t *kv16 = xmalloc(n * stride * sizeof(uint16_t)); /* the same values as halves */
            for (size_t i = 0; i < n * stride; i++) kv16[i] = fp32_to_fp16(kv[i]), kv[i] = fp16_to_fp32(kv16[i]);
            attention_scores_f16(att, q, kv16, stride, n, head_dim, 0.125f);
            attention_scores_f16_scalar(att_plain, q, kv16, stride, n, head_dim, 0.125f);
            for (int p = 0; p < n; p++)
                compare(&worst[2], att[p], att_plain[p], 0.125 * magnitude_f32(q, kv + p * stride, head_dim));
            for (int p = 0; p < n; p++) att[p] = random_f32(rng);
            for (int i = 0; i < head_dim; i++) out[i] = out_plain[i] = start[i] = random_f32(rng);
            weighted_sum_f16(out, att, kv16, stride, n, head_dim);
            weighted_sum_f16_scalar(out_plain, att, kv16, stride, n, head_dim);
            compare_weighted(&worst[3], out, out_plain, start, att, kv, stride, n, head_dim);
            free(kv16);
            free(q), free(kv), free(att), free(att_plain), free(out), free(out_plain), free(start);
        }
}

/* sum |w_j * x_j| of a K row against quantized x, from its dequantized weights */
/* gemm_f32 against gemm_f32_scalar: 1 to GEMM_ROWS rows (one every `stride`
   floats, stride > n) against a panel of GEMM_TOKENS tokens (packed, or with
   a longer stride as attention reads the value cache), on odd sizes;
   worst relative difference per output. */
static void compare_gemm(uint64_t *rng, double *worst) {
    static const int sizes[] = {1, 7, 8, 17, 64, 100, 257, 1000};
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++)
        for (int rows = 1; rows <= GEMM_ROWS; rows++) {
            int n = sizes[a];
            size_t stride = (size_t)n + 3, panel_stride = rows % 2 ? GEMM_TOKENS : GEMM_TOKENS + 5; /* packed, or in place */
            float *w = xmalloc(GEMM_ROWS * stride * sizeof(float)), *panel = xmalloc((size_t)n * panel_stride * sizeof(float));
            for (size_t i = 0; i < GEMM_ROWS * stride; i++) w[i] = random_unit(rng);
            for (size_t i = 0; i < n * panel_stride; i++) panel[i] = random_unit(rng) * 3.0f;
            float simd[GEMM_ROWS][GEMM_TOKENS], scalar[GEMM_ROWS][GEMM_TOKENS];
            gemm_f32(w, stride, rows, panel, panel_stride, n, simd);
            gemm_f32_scalar(w, stride, rows, panel, panel_stride, n, scalar);
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < GEMM_TOKENS; j++) {
                    double magnitude = 0;
                    for (int k = 0; k < n; k++) magnitude += fabs((double)w[r * stride + k] * panel[k * panel_stride + j]);
                    compare(worst, simd[r][j], scalar[r][j], magnitude);
                }
#if defined(USE_AVX512)
            /* two panels at once: packed ones, one after the other (the two
               halves of the values), or columns of the same rows in place
               (attention's values; the second from column 5 on) */
            if (n > 1) {
                int in_place = panel_stride != GEMM_TOKENS, values = in_place ? n : n / 2;
                size_t next = in_place ? 5 : (size_t)values * GEMM_TOKENS;
                float pair[2][GEMM_ROWS][GEMM_TOKENS], want[2][GEMM_ROWS][GEMM_TOKENS];
                gemm_f32_pair(w, stride, rows, panel, next, panel_stride, values, pair);
                for (int q = 0; q < 2; q++) gemm_f32_scalar(w, stride, rows, panel + q * next, panel_stride, values, want[q]);
                for (int q = 0; q < 2; q++)
                    for (int r = 0; r < rows; r++)
                        for (int j = 0; j < GEMM_TOKENS; j++) {
                            double magnitude = 0;
                            for (int k = 0; k < values; k++)
                                magnitude += fabs((double)w[r * stride + k] * panel[q * next + k * panel_stride + j]);
                            compare(worst, pair[q][r][j], want[q][r][j], magnitude);
                        }
            }
#endif
            free(w), free(panel);
        }
}

/* One quantized GEMM step's output for one panel (type 0: gemm_i16, 1:
   gemm_u8) against the scalar step's, each output relative to the sum of
   its products' magnitudes. */
static void compare_step_q(double *worst, int type, const int16_t *w16, const uint8_t *wu, const float *ws,
                           const float *wm, int nb, const int16_t *x16, const int8_t *x8, const float *xs,
                           const int32_t *xsum, float simd[GEMM_ROWS][GEMM_TOKENS]) {
    int n = nb * QK;
    float scalar[GEMM_ROWS][GEMM_TOKENS];
    if (type == 0) gemm_i16_scalar(w16, ws, nb, x16, xs, scalar);
    else gemm_u8_scalar(wu, ws, wm, nb, x8, xs, xsum, scalar);
    for (int r = 0; r < (type == 0 ? GEMM_ROWS_I16 : GEMM_ROWS); r++)
        for (int j = 0; j < GEMM_TOKENS; j++) {
            double magnitude = 0;
            for (int k = 0; k < n; k++) {
                int b = k / QK;
                double w = type == 0 ? w16[r * n + k] * ws[r * nb + b] : wu[r * n + k] * ws[r * nb + b] - wm[r * nb + b];
                double x = type == 0 ? x16[(k / 2 * GEMM_TOKENS + j) * 2 + k % 2] : x8[(k / 4 * GEMM_TOKENS + j) * 4 + k % 4];
                magnitude += fabs(w * x * xs[b * GEMM_TOKENS + j]);
            }
            compare(worst, simd[r][j], scalar[r][j], magnitude);
        }
}

/* gemm_i16 and gemm_u8 against their scalar versions (worst[0], worst[1]) on
   1 to 40 blocks of random weights (int16 as large as q6_k's; bytes up to
   GEMM_U8_MAX, q8_0's 255 with VNNI), scales, offsets and panels. */
static void compare_gemm_q(uint64_t *rng, double worst[2]) {
    static const int blocks[] = {1, 2, 3, 8, 24, 40};
    for (size_t a = 0; a < sizeof blocks / sizeof blocks[0]; a++) {
        int nb = blocks[a], n = nb * QK;
        int16_t *w16 = xmalloc((size_t)GEMM_ROWS * n * sizeof(int16_t)), *x16 = xmalloc((size_t)n * GEMM_TOKENS * sizeof(int16_t));
        uint8_t *wu = xmalloc((size_t)GEMM_ROWS * n);
        int8_t *x8 = xmalloc((size_t)n * GEMM_TOKENS);
        float *ws = xmalloc(GEMM_ROWS * nb * sizeof(float)), *wm = xmalloc(GEMM_ROWS * nb * sizeof(float));
        float *xs = xmalloc(nb * GEMM_TOKENS * sizeof(float));
        int32_t *xsum = xcalloc(nb * GEMM_TOKENS, sizeof(int32_t));
        for (int i = 0; i < GEMM_ROWS * n; i++) w16[i] = (int16_t)(random_u32(rng) % 8191 - 4095), wu[i] = (uint8_t)(random_u32(rng) % (GEMM_U8_MAX + 1));
        for (int i = 0; i < n * GEMM_TOKENS; i++) x16[i] = (int16_t)(random_u32(rng) % 255 - 127), x8[i] = (int8_t)(random_u32(rng) % 255 - 127);
        for (int k = 0; k < n; k++) /* the real sums of the panel's q, as quantize_vector makes them */
            for (int j = 0; j < GEMM_TOKENS; j++) xsum[k / QK * GEMM_TOKENS + j] += x8[(k / 4 * GEMM_TOKENS + j) * 4 + k % 4];
        for (int i = 0; i < GEMM_ROWS * nb; i++) ws[i] = random_unit(rng) * 0.01f, wm[i] = random_unit(rng) * 0.08f;
        for (int i = 0; i < nb * GEMM_TOKENS; i++) xs[i] = (random_unit(rng) + 1.5f) * 0.01f;
        float simd[GEMM_ROWS][GEMM_TOKENS];
        for (int type = 0; type < 2; type++) {
            if (type == 0) gemm_i16(w16, ws, nb, x16, xs, simd);
            else gemm_u8(wu, ws, wm, nb, x8, xs, xsum, simd);
            compare_step_q(&worst[type], type, w16, wu, ws, wm, nb, x16, x8, xs, xsum, simd);
        }
#if defined(USE_AVX512)
        /* the steps on two panels (gemm_*_pair): this panel and, right after it, a second one */
        int16_t *x16_2 = xmalloc((size_t)2 * n * GEMM_TOKENS * sizeof(int16_t));
        int8_t *x8_2 = xmalloc((size_t)2 * n * GEMM_TOKENS);
        float *xs_2 = xmalloc(2 * nb * GEMM_TOKENS * sizeof(float));
        int32_t *xsum_2 = xcalloc(2 * nb * GEMM_TOKENS, sizeof(int32_t));
        for (int i = 0; i < 2 * n * GEMM_TOKENS; i++)
            x16_2[i] = i < n * GEMM_TOKENS ? x16[i] : (int16_t)(random_u32(rng) % 255 - 127),
            x8_2[i] = i < n * GEMM_TOKENS ? x8[i] : (int8_t)(random_u32(rng) % 255 - 127);
        for (int q = 0; q < 2; q++)
            for (int k = 0; k < n; k++)
                for (int j = 0; j < GEMM_TOKENS; j++)
                    xsum_2[(q * nb + k / QK) * GEMM_TOKENS + j] += x8_2[q * n * GEMM_TOKENS + (k / 4 * GEMM_TOKENS + j) * 4 + k % 4];
        for (int i = 0; i < 2 * nb * GEMM_TOKENS; i++) xs_2[i] = (random_unit(rng) + 1.5f) * 0.01f;
        float pair[2][GEMM_ROWS][GEMM_TOKENS];
        for (int type = 0; type < 2; type++) {
            if (type == 0) gemm_i16_pair(w16, ws, nb, x16_2, xs_2, pair);
            else gemm_u8_pair(wu, ws, wm, nb, x8_2, xs_2, xsum_2, pair);
            for (int q = 0; q < 2; q++)
                compare_step_q(&worst[type], type, w16, wu, ws, wm, nb, x16_2 + (size_t)q * n * GEMM_TOKENS,
                               x8_2 + (size_t)q * n * GEMM_TOKENS, xs_2 + q * nb * GEMM_TOKENS,
                               xsum_2 + q * nb * GEMM_TOKENS, pair[q]);
        }
        free(x16_2), free(x8_2), free(xs_2), free(xsum_2);
#endif
        free(w16), free(x16), free(wu), free(x8), free(ws), free(wm), free(xs), free(xsum);
    }
}

static double magnitude_k(int type, const uint8_t *w, const QuantizedVector *x, int n_blocks) {
    size_t block_bytes = type == WEIGHT_Q4_K ? Q4K_BYTES : Q6K_BYTES;
    double m = 0;
    float v[QK_K];
    for (int b = 0; b < n_blocks; b++) {
        dequantize_k_block(type, w + b * block_bytes, v);
        for (int j = 0; j < QK_K; j++) {
            int k = b * QK_K + j;
            m += fabs((double)v[j] * x->q[k] * x->scale[k / QK]);
        }
    }
    return m;
}

/* The K kernels on rows of 1 to 11 blocks of random bytes (finite fp16 d and
   dmin): worst[0..3] for dot q4_k, dot q6_k, tile q4_k, tile q6_k. */
static void compare_k(uint64_t *rng, double worst[4]) {
    static const int counts[] = {1, 2, 3, 5, 8, 11};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        int nb = counts[c], n = nb * QK_K;
        uint8_t *w4 = xmalloc(2 * (size_t)nb * Q4K_BYTES), *w6 = xmalloc(2 * (size_t)nb * Q6K_BYTES);
        float *x = xmalloc(4 * (size_t)n * sizeof(float));
        QuantizedVector xq[4];
        for (int t = 0; t < 4; t++)
            build_quantized_vector(&xq[t], n);
        for (int rep = 0; rep < 10; rep++) {
            for (size_t i = 0; i < 2 * (size_t)nb * Q4K_BYTES; i++) w4[i] = (uint8_t)random_u32(rng);
            for (size_t i = 0; i < 2 * (size_t)nb * Q6K_BYTES; i++) w6[i] = (uint8_t)random_u32(rng);
            for (int b = 0; b < 2 * nb; b++) { /* scales ~1e-3..0.5 */
                uint16_t d = (uint16_t)(0x1000 + random_u32(rng) % 0x1800), dmin = (uint16_t)(0x1000 + random_u32(rng) % 0x1800);
                memcpy(w4 + (size_t)b * Q4K_BYTES, &d, 2), memcpy(w4 + (size_t)b * Q4K_BYTES + 2, &dmin, 2);
                memcpy(w6 + (size_t)b * Q6K_BYTES + 208, &d, 2);
            }
            for (int i = 0; i < 4 * n; i++) x[i] = random_unit(rng) * 3.0f;
            for (int t = 0; t < 4; t++) quantize_vector(&xq[t], x + (size_t)t * n, n, n, QK_K);
            const uint8_t *r4[2] = {w4, w4 + (size_t)nb * Q4K_BYTES}, *r6[2] = {w6, w6 + (size_t)nb * Q6K_BYTES};
            compare(&worst[0], dot_q4k(r4[0], &xq[0], nb), dot_q4k_scalar(r4[0], &xq[0], nb),
                    magnitude_k(WEIGHT_Q4_K, r4[0], &xq[0], nb));
            compare(&worst[1], dot_q6k(r6[0], &xq[0], nb), dot_q6k_scalar(r6[0], &xq[0], nb),
                    magnitude_k(WEIGHT_Q6_K, r6[0], &xq[0], nb));
            float simd[2][2][4], scalar[2][2][4];
            tile_q4k(r4[0], r4[1], xq, nb, simd[0]);
            tile_q4k_scalar(r4[0], r4[1], xq, nb, scalar[0]);
            tile_q6k(r6[0], r6[1], xq, nb, simd[1]);
            tile_q6k_scalar(r6[0], r6[1], xq, nb, scalar[1]);
            for (int r = 0; r < 2; r++)
                for (int t = 0; t < 4; t++) {
                    compare(&worst[2], simd[0][r][t], scalar[0][r][t], magnitude_k(WEIGHT_Q4_K, r4[r], &xq[t], nb));
                    compare(&worst[3], simd[1][r][t], scalar[1][r][t], magnitude_k(WEIGHT_Q6_K, r6[r], &xq[t], nb));
                }
        }
        free(w4), free(w6), free(x);
        for (int t = 0; t < 4; t++) free_quantized_vector(&xq[t]);
    }
}

/* The columns (4 rows x 1 token) against their scalar versions: worst[0]
   for q8_0, worst[1] for q4_0, each output relative to its row's products. */
static void compare_columns(uint64_t *rng, const int *sizes, int n_sizes, double worst[2]) {
    for (int k = 0; k < n_sizes; k++) {
        int n = sizes[k], padded = (n + QK - 1) / QK * QK, nb = padded / QK;
        float *x = xmalloc(n * sizeof(float));
        int8_t *w8 = xcalloc(4 * padded, 1);
        uint8_t *w4 = xcalloc(2 * padded, 1);
        uint16_t *ws = xmalloc(4 * nb * sizeof(uint16_t));
        QuantizedVector xq;
        build_quantized_vector(&xq, padded);
        for (int rep = 0; rep < 20; rep++) {
            for (int i = 0; i < n; i++) x[i] = random_unit(rng) * 3.0f;
            for (int i = 0; i < 4 * padded; i++) w8[i] = i % padded < n ? (int8_t)(random_u32(rng) % 255 - 127) : 0;
            for (int i = 0; i < 2 * padded; i++) w4[i] = (uint8_t)random_u32(rng);
            for (int i = 0; i < 4 * nb; i++) ws[i] = (uint16_t)(0x2000 + random_u32(rng) % 0x1800);
            quantize_vector(&xq, x, n, padded, QK);
            uint8_t *g8 = grouped_rows(w8, ws, 4, nb, QK), *g4 = grouped_rows(w4, ws, 4, nb, QK / 2);
            float simd[2][4], scalar[2][4];
            column_q8(g8, &xq, nb, simd[0]);
            column_q8_scalar(g8, &xq, nb, scalar[0]);
            column_q4(g4, &xq, nb, simd[1]);
            column_q4_scalar(g4, &xq, nb, scalar[1]);
            free(g8), free(g4);
            for (int r = 0; r < 4; r++) {
                compare(&worst[0], simd[0][r], scalar[0][r], magnitude_q(w8 + r * padded, NULL, ws + r * nb, &xq, nb));
                compare(&worst[1], simd[1][r], scalar[1][r],
                        magnitude_q(NULL, w4 + r * padded / 2, ws + r * nb, &xq, nb));
            }
        }
        free(x), free(w8), free(w4), free(ws);
        free_quantized_vector(&xq);
    }
}

/* One value against the one it should be: relative to it (or to the
   smallest normal float, for values in the denormals, whose own precision is
   less); an infinity or NaN where the other has none counts as 1. */
static void compare_value(double *worst, float got, float want) {
    if (!isfinite(want) || !isfinite(got)) {
        if (!(isnan(want) ? isnan(got) : got == want)) *worst = 1.0;
        return;
    }
    compare(worst, got, want, fmax(fabs(want), FLT_MIN));
}

/* exp_lanes, the exponential inside the SIMD softmax and gate, value by
   value against libm's expf (compare_value). Arguments up to +-120, and the edges: overflow,
   underflow into denormals and to 0, infinities, NaN. */
static double compare_exp(uint64_t *rng) {
    static const float special[] = {0.0f, -0.0f, 1e-8f, -1e-8f, 0.3465736f, -0.3465736f, 88.72f, 88.73f, 89.5f,
                                    -87.33f, -87.34f, -100.0f, -103.9f, -104.5f, 200.0f, -200.0f,
                                    INFINITY, -INFINITY, NAN, 1.0f, 2.0f, -3.0f, 10.0f, -10.0f};
    enum { N = 4096, LANES = 8 };
    static float x[N];
    double worst = 0;
    for (int rep = 0; rep < 30; rep++) {
        float spread = rep < 10 ? 1.0f : rep < 20 ? 30.0f : 120.0f;
        for (int i = 0; i < N; i++) x[i] = random_unit(rng) * spread;
        if (rep == 0) memcpy(x, special, sizeof special);
        for (int i = 0; i < N; i += LANES) {
            float got[LANES];
#if defined(USE_AVX2)
            _mm256_storeu_ps(got, exp_lanes(_mm256_loadu_ps(x + i)));
#elif defined(USE_NEON)
            vst1q_f32(got, exp_lanes(vld1q_f32(x + i)));
            vst1q_f32(got + 4, exp_lanes(vld1q_f32(x + i + 4)));
#else
            for (int k = 0; k < LANES; k++) got[k] = expf(x[i + k]); /* no SIMD build: nothing to compare */
#endif
            for (int k = 0; k < LANES; k++) compare_value(&worst, got[k], expf(x[i + k]));
        }
    }
    return worst;
}

/* softmax and gate_times_up against their scalar versions. softmax:
   worst[0], each probability by compare_value, over rows of every tail
   length, scores spread up to +-120 (so that many exponentials underflow)
   and masked scores (-inf: exactly 0 both ways). The gate,
   worst[1] for SiLU and worst[2] for GELU: each output relative to |g * up|,
   the product before the activation scales it (the scalar GELU's 1 + tanh(u)
   loses digits to cancellation where u is very negative), gates up to +-120
   (so that exp(-a) overflows). */
static void compare_softmax_gate(uint64_t *rng, double worst[3]) {
    enum { N = 1031 };
    static float x[N], plain[N], h[N], h_plain[N], up[N], g[N];
    for (int rep = 0; rep < 120; rep++) {
        int n = rep < 40 ? rep + 1 : N - rep % 17; /* short rows, and every tail of both SIMD widths */
        float spread = rep % 3 == 0 ? 1.0f : rep % 3 == 1 ? 30.0f : 120.0f;
        for (int i = 0; i < n; i++) x[i] = random_unit(rng) * spread;
        if (rep % 5 == 4)
            for (int i = 1; i < n; i += 3) x[i] = -INFINITY; /* masked positions */
        memcpy(plain, x, n * sizeof(float));
        softmax(x, n);
        softmax_scalar(plain, n);
        for (int i = 0; i < n; i++) compare_value(&worst[0], x[i], plain[i]);
        for (int activation = ACT_SILU; activation <= ACT_GELU_TANH; activation++) {
            for (int i = 0; i < n; i++) g[i] = random_unit(rng) * spread, up[i] = random_unit(rng) * 2.0f;
            memcpy(h, g, n * sizeof(float));
            memcpy(h_plain, g, n * sizeof(float));
            gate_times_up(h, up, n, activation);
            gate_times_up_scalar(h_plain, up, n, activation);
            for (int i = 0; i < n; i++) compare(&worst[1 + activation], h[i], h_plain[i], fabs(g[i] * up[i]));
        }
    }
}

/* unpack_row against unpack_row_scalar on random rows of each quantized
   type, rows of 1 to 67 blocks (a last group shorter than QGROUP included),
   every finite fp16 scale possible (subnormals and negatives too): the
   number of bytes of ws, wm and the values in which they differ. */
static long compare_unpack(uint64_t *rng) {
    static const int blocks[] = {1, 7, 8, 9, 16, 17, 67}; /* of 32 (q8_0, q4_0), or of 256 (q4_k, q6_k) */
    static const int types[] = {WEIGHT_Q8_0, WEIGHT_Q4_0, WEIGHT_Q4_K, WEIGHT_Q6_K};
    long differences = 0;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
        for (size_t c = 0; c < sizeof blocks / sizeof blocks[0]; c++) {
            int type = types[t], k = type == WEIGHT_Q4_K || type == WEIGHT_Q6_K;
            int n_padded = blocks[c] * (k ? QK_K : QK), n_blocks = n_padded / QK;
            size_t row = k ? (size_t)blocks[c] * (type == WEIGHT_Q4_K ? Q4K_BYTES : Q6K_BYTES)
                           : q_row_bytes(n_blocks, q_block_bytes(type));
            size_t out_bytes = 2 * (size_t)n_blocks * sizeof(float) + (size_t)n_padded * sizeof(int16_t);
            uint8_t *src = xmalloc(row), *simd = xmalloc(out_bytes), *plain = xmalloc(out_bytes);
            for (int rep = 0; rep < 20; rep++) {
                for (size_t i = 0; i < row; i++) src[i] = (uint8_t)random_u32(rng);
                for (int b = 0; b < n_blocks; b++) { /* make every scale finite: exponent below 31 */
                    uint16_t h = (uint16_t)random_u32(rng) & 0xBFFF;
                    size_t at = k ? (size_t)(b / 8) * (type == WEIGHT_Q4_K ? Q4K_BYTES : Q6K_BYTES) +
                                        (type == WEIGHT_Q4_K ? (size_t)(b % 2) * 2 : 208)
                                  : (size_t)(b / QGROUP * QGROUP) * (q_block_bytes(type) + 2) + 2 * (size_t)(b % QGROUP);
                    memcpy(src + at, &h, 2);
                }
                memset(simd, 0xAB, out_bytes), memset(plain, 0xAB, out_bytes);
                float *ws[2] = {(float *)simd, (float *)plain};
                unpack_row(type, src, n_padded, ws[0], ws[0] + n_blocks, ws[0] + 2 * n_blocks);
                unpack_row_scalar(type, src, n_padded, ws[1], ws[1] + n_blocks, ws[1] + 2 * n_blocks);
                for (size_t i = 0; i < out_bytes; i++) differences += simd[i] != plain[i];
            }
            free(src), free(simd), free(plain);
        }
    return differences;
}

static int cmd_kernels(void) {
    static const int sizes[] = {1, 7, 16, 31, 32, 33, 63, 64, 65, 95, 100, 224, 256, 257, 320, 1000, 1024, 4099};
    uint64_t rng = 12345;
    double worst[6] = {0}; /* dot f32, q8_0, q4_0, then tile f32, q8_0, q4_0 */
    long quantize_differences = 0; /* values, scales and sums the two quantize_vectors disagree on */
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        /* 2 weight rows and 4 tokens, so that the tiles see them all */
        int n = sizes[k], padded = (n + QK - 1) / QK * QK, nb = padded / QK;
        float *w = xmalloc(2 * n * sizeof(float)), *x = xmalloc(4 * n * sizeof(float));
        int8_t *w8 = xcalloc(2 * padded, 1);
        uint8_t *w4 = xcalloc(padded, 1);
        uint16_t *ws = xmalloc(2 * nb * sizeof(uint16_t));
        QuantizedVector xq[4], plain;
        build_quantized_vector(&plain, padded);
        for (int t = 0; t < 4; t++)
            build_quantized_vector(&xq[t], padded);
        for (int rep = 0; rep < 20; rep++) {
            for (int i = 0; i < 2 * n; i++) w[i] = random_unit(&rng);
            for (int i = 0; i < 4 * n; i++) x[i] = random_unit(&rng) * 3.0f;
            for (int i = 0; i < 2 * padded; i++) w8[i] = i % padded < n ? (int8_t)(random_u32(&rng) % 255 - 127) : 0;
            for (int i = 0; i < padded; i++) w4[i] = (uint8_t)random_u32(&rng);
            for (int i = 0; i < 2 * nb; i++) ws[i] = (uint16_t)(0x2000 + random_u32(&rng) % 0x1800); /* ~1e-3..0.5 */
            for (int t = 0; t < 4; t++) {
                /* blocks of 256 too, where n is whole blocks of 256; identical either way */
                for (int block = QK; block <= (n % QK_K == 0 ? QK_K : QK); block *= 8) {
                    quantize_vector(&xq[t], x + t * n, n, padded, block);
                    quantize_vector_scalar(&plain, x + t * n, n, padded, block);
                    for (int j = 0; j < padded; j++) quantize_differences += plain.q[j] != xq[t].q[j];
                    for (int j = 0; j < nb; j++)
                        quantize_differences += plain.scale[j] != xq[t].scale[j] || plain.sum[j] != xq[t].sum[j] ||
                                                plain.sum16[2 * j] != xq[t].sum16[2 * j] ||
                                                plain.sum16[2 * j + 1] != xq[t].sum16[2 * j + 1];
                }
            }
            compare(&worst[0], dot_f32(w, x, n), dot_f32_scalar(w, x, n), magnitude_f32(w, x, n));
            uint8_t *g8 = grouped_rows(w8, ws, 2, nb, QK), *g4 = grouped_rows(w4, ws, 2, nb, QK / 2);
            size_t row8 = (size_t)nb * (QK + 2), row4 = (size_t)nb * (QK / 2 + 2);
            compare(&worst[1], dot_q8(g8, &xq[0], nb), dot_q8_scalar(g8, &xq[0], nb), magnitude_q(w8, NULL, ws, &xq[0], nb));
            compare(&worst[2], dot_q4(g4, &xq[0], nb), dot_q4_scalar(g4, &xq[0], nb), magnitude_q(NULL, w4, ws, &xq[0], nb));
            float simd[3][2][4], scalar[3][2][4];
            tile_f32(w, w + n, x, n, simd[0]);
            tile_f32_scalar(w, w + n, x, n, scalar[0]);
            tile_q8(g8, g8 + row8, xq, nb, simd[1]);
            tile_q8_scalar(g8, g8 + row8, xq, nb, scalar[1]);
            tile_q4(g4, g4 + row4, xq, nb, simd[2]);
            tile_q4_scalar(g4, g4 + row4, xq, nb, scalar[2]);
            free(g8), free(g4);
            for (int r = 0; r < 2; r++)
                for (int t = 0; t < 4; t++) {
                    compare(&worst[3], simd[0][r][t], scalar[0][r][t], magnitude_f32(w + r * n, x + t * n, n));
                    compare(&worst[4], simd[1][r][t], scalar[1][r][t],
                            magnitude_q(w8 + r * padded, NULL, ws + r * nb, &xq[t], nb));
                    compare(&worst[5], simd[2][r][t], scalar[2][r][t],
                            magnitude_q(NULL, w4 + r * padded / 2, ws + r * nb, &xq[t], nb));
                }
        }
        free(w), free(x), free(w8), free(w4), free(ws);
        for (int t = 0; t < 4; t++) free_quantized_vector(&xq[t]);
        free_quantized_vector(&plain);
    }
    double attention[4] = {0}, k[4] = {0}, gemm = 0, gemm_q[2] = {0}, column[2] = {0}, softmax_gate[3] = {0}, exp = compare_exp(&rng);
    compare_columns(&rng, sizes, sizeof sizes / sizeof sizes[0], column);
    compare_softmax_gate(&rng, softmax_gate);
    compare_attention(&rng, attention);
    compare_gemm(&rng, &gemm);
    compare_gemm_q(&rng, gemm_q);
    compare_k(&rng, k);
    long unpack_differences = compare_unpack(&rng);
    printf("simd %s\nf32 %.3g\nq8_0 %.3g\nq4_0 %.3g\ntile_f32 %.3g\ntile_q8_0 %.3g\ntile_q4_0 %.3g\n"
           "attention_scores %.3g\nweighted_sum %.3g\nq4_k %.3g\nq6_k %.3g\ntile_q4_k %.3g\ntile_q6_k %.3g\n"
           "attention_scores_f16 %.3g\nweighted_sum_f16 %.3g\ngemm_f32 %.3g\ngemm_i16 %.3g\ngemm_u8 %.3g\n"
           "column_q8_0 %.3g\ncolumn_q4_0 %.3g\nexp %.3g\nsoftmax %.3g\ngate_silu %.3g\ngate_gelu %.3g\nquantize %ld\n"
           "unpack %ld\n",
           SIMD_NAME, worst[0], worst[1], worst[2], worst[3], worst[4], worst[5], attention[0], attention[1], k[0],
           k[1], k[2], k[3], attention[2], attention[3], gemm, gemm_q[0], gemm_q[1], column[0],
           column[1], exp, softmax_gate[0], softmax_gate[1], softmax_gate[2], quantize_differences,
           unpack_differences);
    return 0;
}

/* harness fp16 FILE: each float32 of FILE as the IEEE half fp32_to_fp16
   makes of it, one decimal number per line. */
static int cmd_fp16(char **argv) {
    size_t len;
    char *buf = read_file(argv[2], &len);
    for (size_t i = 0; i + 4 <= len; i += 4) {
        float f;
        memcpy(&f, buf + i, 4);
        printf("%u\n", fp32_to_fp16(f));
    }
    free(buf);
    return 0;
}

/* harness filter LOGITS HISTORY T TOPP TOPK MINP REPEAT LAST_N PRESENCE FREQUENCY:
   the sampler's steps 1-5 on the float32 logits of LOGITS, with the int32
   tokens of HISTORY in the penalties' window: each token kept, "id prob",
   the probabilities renormalized over those kept (at T = 0: the argmax). */
static int cmd_filter(char **argv) {
    size_t n_bytes, h_bytes;
    char *logits_file = read_file(argv[2], &n_bytes), *history = read_file(argv[3], &h_bytes);
    int V = (int)(n_bytes / 4);
    SamplerOptions o = {(float)atof(argv[4]), (float)atof(argv[5]), atoi(argv[6]), (float)atof(argv[7]),
                        (float)atof(argv[8]), atoi(argv[9]), (float)atof(argv[10]), (float)atof(argv[11])};
    Sampler s;
    build_sampler(&s, V, &o, 1);
    for (size_t i = 0; i + 4 <= h_bytes; i += 4) {
        int32_t tok;
        memcpy(&tok, history + i, 4);
        sampler_accept(&s, tok);
    }
    float *logits = xmalloc((size_t)V * sizeof(float));
    memcpy(logits, logits_file, (size_t)V * sizeof(float));
    if (penalties_on(&o)) apply_penalties(&s, logits);
    if (o.temperature == 0.0f) {
        printf("%d 1\n", argmax(logits, V));
    } else {
        for (int i = 0; i < V; i++) logits[i] /= o.temperature;
        softmax(logits, V);
        int n = filter_candidates(&s, logits, s.candidates);
        float kept = 0.0f;
        for (int i = 0; i < n; i++) kept += s.candidates[i].prob;
        for (int i = 0; i < n; i++) printf("%d %.9g\n", s.candidates[i].index, s.candidates[i].prob / kept);
    }
    free(logits), free(logits_file), free(history);
    free_sampler(&s);
    return 0;
}

/* prefetch WEIGHT_BYTES L3_BYTES: the distance into L2 that a core not AMD's
   takes for a model whose tokens read WEIGHT_BYTES, under an L3 of L3_BYTES
   (l2_ahead_for); "none" in builds without the x86 kernels' distances. */
static int cmd_prefetch(char **argv) {
#if defined(USE_AVX2)
    printf("%d\n", l2_ahead_for(strtoull(argv[2], NULL, 10), strtoull(argv[3], NULL, 10)));
#else
    (void)argv;
    printf("none\n");
#endif
    return 0;
}

/* harness share THREADS: generation's matmuls share their rows' units by
   stealing (share_units, next_units). A team of THREADS threads shares
   ROUNDS lists of units, one after another as a token's matmuls do, of
   sizes from 1 to 2000. Thread 0 starts on its run only when the others have
   ended theirs, as if its core were held off, so they take from its run
   whatever the machine's load. Prints the team's threads, the units not
   taken exactly once, and how many were taken by another thread than the
   one whose run they began in. */
static int cmd_share(char **argv) {
    enum { ROUNDS = 60, MOST = 2000 };
    static const int sizes[] = {1, 2, 7, 64, 513, MOST};
    int *taken = xcalloc(MOST, sizeof(int)), *taker = xcalloc(MOST, sizeof(int)), team = 1, ended = 0;
    long wrong = 0, stolen = 0;
    int threads = atoi(argv[2]);
    (void)threads; /* (a build without OpenMP runs on one thread) */
    OMP(omp parallel num_threads(threads))
    for (int round = 0; round < ROUNDS; round++) {
        int n = sizes[round % 6], from, to;
        OMP(omp single) /* (its end waits for the whole team) */
        {
            memset(taken, 0, MOST * sizeof(int));
            team = team_threads(), ended = 0;
        }
        share_units(n);
        for (int others_ended = thread_index() ? team : 0; others_ended < team - 1;) {
            OMP(omp atomic read)
            others_ended = ended;
        }
        while (next_units(&from, &to))
            for (int u = from; u < to; u++) {
                OMP(omp atomic)
                taken[u]++;
                taker[u] = thread_index();
            }
        if (thread_index()) {
            OMP(omp atomic)
            ended++;
        }
        team_wait();
        OMP(omp single)
        for (int u = 0; u < n; u++) {
            wrong += taken[u] != 1;
            stolen += (int64_t)n * taker[u] / team > u || (int64_t)n * (taker[u] + 1) / team <= u;
        }
    }
    printf("threads %d wrong %ld stolen %ld\n", team, wrong, stolen);
    free(taken), free(taker);
    return 0;
}

/* harness aligned MODEL KV_CACHE: every buffer build_state allocates, the
   ones this model and cache type leave NULL aside, should start on a cache
   line (xcalloc_touched), and so should the second thread's part of the
   per-thread scratch: counts those that do not. */
static void count_line(const void *p, int *count, int *misaligned) {
    if (p) *count += 1, *misaligned += (uintptr_t)p % CACHE_LINE != 0;
}

static int cmd_aligned(char **argv) {
    Model m;
    build_model(&m, argv[2], LOAD_AUTO);
    RunState s;
    build_state(&s, &m.config, m.config.seq_len < 64 ? m.config.seq_len : 64, strcmp(argv[3], "fp16") == 0);
    const void *buffers[] = {s.x, s.xb, s.xb2, s.ao, s.hb, s.hb2, s.q, s.att, s.logits, s.key_cache, s.value_cache,
                             s.key_cache16, s.value_cache16, s.kv_new, s.rope[0].freq, s.rope[0].cos, s.rope[0].sin,
                             s.rope[1].freq, s.rope[1].cos, s.rope[1].sin, s.xq, s.panels.x, s.panels.x16, s.panels.x8,
                             s.panels.scale, s.panels.sum, s.panels.rows, s.panels.sums, s.att_keys, s.att_rows};
    int count = 0, misaligned = 0;
    for (size_t i = 0; i < sizeof buffers / sizeof *buffers; i++) count_line(buffers[i], &count, &misaligned);
    if (s.panels.rows) count_line((char *)s.panels.rows + s.panels.row_bytes, &count, &misaligned); /* the second thread's */
    for (int t = 0; t < s.max_tokens && t < 4; t++) { /* the first tokens' quantized inputs */
        const QuantizedVector *v = &s.xq[t];
        const void *parts[] = {v->q, v->scale, v->sum, v->sum16, v->halves};
        for (int k = 0; k < 5; k++) count_line(parts[k], &count, &misaligned);
    }
    printf("buffers %d misaligned %d\n", count, misaligned);
    free_state(&s);
    free_model(&m);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 5 && strcmp(argv[1], "logits") == 0) return cmd_logits(argc, argv);
    if (argc == 4 && strcmp(argv[1], "encode") == 0) return cmd_encode(argv);
    if (argc == 5 && strcmp(argv[1], "render") == 0) return cmd_render(argv);
    if (argc == 2 && strcmp(argv[1], "kernels") == 0) return cmd_kernels();
    if (argc == 3 && strcmp(argv[1], "fp16") == 0) return cmd_fp16(argv);
    if (argc == 12 && strcmp(argv[1], "filter") == 0) return cmd_filter(argv);
    if (argc == 5 && strcmp(argv[1], "matmul") == 0) return cmd_matmul(argv);
    if (argc == 3 && strcmp(argv[1], "share") == 0) return cmd_share(argv);
    if (argc == 4 && strcmp(argv[1], "prefetch") == 0) return cmd_prefetch(argv);
    if (argc == 4 && strcmp(argv[1], "aligned") == 0) return cmd_aligned(argv);
    fprintf(stderr, "usage: harness logits MODEL CHUNK ID... | encode TOKENIZER FILE | render TOKENIZER TEMPLATE FILE"
                    " | kernels | matmul ... | fp16 FILE | filter ... | share THREADS | prefetch WEIGHT_BYTES L3_BYTES"
                    " | aligned MODEL KV_CACHE\n");
    return 2;
}
