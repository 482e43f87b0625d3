/* run.c: inference for Llama-family transformers in one C file.

   Reading order (each section only uses the ones above it):
     1. errors and small helpers
     2. model file: header, validation, weights (mmapped)
     3. run state: activations and the KV cache
     4. kernels: rmsnorm, softmax, matmul, rope
     5. forward pass
     6. tokenizer: SentencePiece-style BPE with byte fallback
     7. sampler: greedy, temperature, top-p
     8. modes: generate, tokenize, perplexity
     9. command line

   Build: cc -O3 -o run run.c -lm            (add -fopenmp for threads)
   Only libc and libm; OpenMP is optional. */

#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ========================================================================== */
/* 1. Errors and small helpers                                                */
/* ========================================================================== */

/* Every error ends the program with one line on stderr and exit status 1. */
static void fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) fatal("out of memory (asked for %zu bytes)", n);
    return p;
}

static void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) fatal("out of memory (asked for %zu x %zu bytes)", count, size);
    return p;
}

static double time_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Reads a whole file into memory (tokenizers and prompts are small).
   The buffer gets a terminating NUL that is not counted in *len. */
static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fatal("%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            char *grown = realloc(buf, cap);
            if (!grown) fatal("%s: out of memory while reading", path);
            buf = grown;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) fatal("%s: read error", path);
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* ========================================================================== */
/* 2. Model file                                                              */
/* ========================================================================== */

/* Two formats, told apart by the first four bytes.

   (a) This project's format ("RUNC", version 1): a 256-byte header (FileHeader
       below, little-endian), then the tensors in this order, each starting at
       an offset that is a multiple of 64 bytes (so SIMD loads are aligned):
         token_embedding              (vocab_size, dim)
         for each layer:
           attn_norm                  (dim)
           wq                         (n_heads * head_dim, dim)
           wk                         (n_kv_heads * head_dim, dim)
           wv                         (n_kv_heads * head_dim, dim)
           wo                         (dim, n_heads * head_dim)
           ffn_norm                   (dim)
           w1 (gate)                  (hidden_dim, dim)
           w2 (down)                  (dim, hidden_dim)
           w3 (up)                    (hidden_dim, dim)
         final_norm                   (dim)
         classifier                   (vocab_size, dim)   absent when tied
       q and k rows are in the interleaved RoPE layout (pairs 2i, 2i+1), as
       Meta's original checkpoints; export.py converts Hugging Face's layout.

   (b) llama2.c's legacy format (version 0): seven int32 (dim, hidden_dim,
       n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative
       vocab_size means the classifier is stored separately), then fp32
       tensors grouped by kind across layers, with two unused RoPE tables. */

#define MODEL_MAGIC 0x434E5552u /* "RUNC" as little-endian bytes */
#define MODEL_VERSION 1
#define MODEL_HEADER_SIZE 256
#define TENSOR_ALIGN 64
#define MAX_EOS 8

enum { WEIGHT_F32 = 0 };
enum { FLAG_TIED_CLASSIFIER = 1u << 0 };

typedef struct {
    uint32_t magic;         /* MODEL_MAGIC */
    uint32_t version;       /* MODEL_VERSION */
    int32_t dim;            /* width of the residual stream */
    int32_t hidden_dim;     /* width of the SwiGLU feed-forward layer */
    int32_t n_layers;
    int32_t n_heads;        /* query heads */
    int32_t n_kv_heads;     /* key/value heads (grouped-query attention) */
    int32_t head_dim;       /* width of one head */
    int32_t vocab_size;
    int32_t seq_len;        /* longest context the model was trained for */
    float rope_theta;       /* RoPE base, 10000 for Llama 2, 500000 for Llama 3 */
    float rope_factor;      /* Llama 3.1 rope scaling; 0 turns it off */
    float rope_low_freq_factor;
    float rope_high_freq_factor;
    int32_t rope_original_seq_len;
    float norm_eps;         /* RMSNorm epsilon */
    uint32_t flags;         /* FLAG_TIED_CLASSIFIER */
    int32_t weight_type;    /* WEIGHT_F32 */
    int32_t bos_id;
    int32_t n_eos;          /* how many of eos_ids are used */
    int32_t eos_ids[MAX_EOS];
    uint8_t reserved[MODEL_HEADER_SIZE - 112]; /* zero */
} FileHeader;

_Static_assert(sizeof(FileHeader) == MODEL_HEADER_SIZE, "header must be 256 bytes");

typedef struct {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size, seq_len;
    float rope_theta;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_seq_len;
    float norm_eps;
    int tied_classifier;
    int weight_type;
    int bos_id;
    int n_eos;
    int eos_ids[MAX_EOS];
    int legacy; /* 1 when read from a llama2.c file */
} Config;

typedef struct {
    const float *attn_norm; /* (dim) */
    const float *wq;        /* (n_heads * head_dim, dim) */
    const float *wk;        /* (n_kv_heads * head_dim, dim) */
    const float *wv;        /* (n_kv_heads * head_dim, dim) */
    const float *wo;        /* (dim, n_heads * head_dim) */
    const float *ffn_norm;  /* (dim) */
    const float *w1;        /* (hidden_dim, dim) */
    const float *w2;        /* (dim, hidden_dim) */
    const float *w3;        /* (hidden_dim, dim) */
} LayerWeights;

typedef struct {
    const float *token_embedding; /* (vocab_size, dim) */
    LayerWeights *layers;         /* (n_layers) */
    const float *final_norm;      /* (dim) */
    const float *classifier;      /* (vocab_size, dim), may alias token_embedding */
} Weights;

/* Upper bounds on each dimension. They are far above any real model and keep
   every product of sizes below 2^63, so the size arithmetic cannot overflow. */
#define MAX_DIM (1 << 20)
#define MAX_LAYERS 4096
#define MAX_VOCAB (1 << 24)
#define MAX_SEQ (1 << 24)

static void check_dim(const char *path, const char *what, int64_t v, int64_t max) {
    if (v <= 0) fatal("%s: invalid model header: %s is %lld (must be positive)", path, what, (long long)v);
    if (v > max) fatal("%s: invalid model header: %s is %lld (larger than %lld)", path, what, (long long)v, (long long)max);
}

/* Checks the configuration for impossible values. Called before any size is
   computed from it, so later code may trust it. */
static void validate_config(const char *path, const Config *c) {
    check_dim(path, "dim", c->dim, MAX_DIM);
    check_dim(path, "hidden_dim", c->hidden_dim, MAX_DIM);
    check_dim(path, "n_layers", c->n_layers, MAX_LAYERS);
    check_dim(path, "n_heads", c->n_heads, MAX_DIM);
    check_dim(path, "n_kv_heads", c->n_kv_heads, MAX_DIM);
    check_dim(path, "head_dim", c->head_dim, MAX_DIM);
    check_dim(path, "vocab_size", c->vocab_size, MAX_VOCAB);
    check_dim(path, "seq_len", c->seq_len, MAX_SEQ);
    if (c->n_heads % c->n_kv_heads != 0)
        fatal("%s: invalid model header: n_kv_heads (%d) does not divide n_heads (%d)", path, c->n_kv_heads, c->n_heads);
    if ((int64_t)c->n_heads * c->head_dim > MAX_DIM)
        fatal("%s: invalid model header: n_heads * head_dim is too large", path);
    if (c->head_dim % 2 != 0)
        fatal("%s: invalid model header: head_dim (%d) must be even for RoPE", path, c->head_dim);
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta))
        fatal("%s: invalid model header: rope_theta must be positive", path);
    if (!(c->norm_eps > 0.0f) || !isfinite(c->norm_eps))
        fatal("%s: invalid model header: norm_eps must be positive", path);
    if (c->rope_factor != 0.0f) {
        if (!(c->rope_factor >= 1.0f) || !isfinite(c->rope_factor))
            fatal("%s: invalid model header: rope scaling factor must be >= 1 (or 0 for none)", path);
        if (!(c->rope_low_freq_factor > 0.0f) || !(c->rope_high_freq_factor > c->rope_low_freq_factor) ||
            !isfinite(c->rope_high_freq_factor))
            fatal("%s: invalid model header: rope scaling needs 0 < low_freq_factor < high_freq_factor", path);
        if (c->rope_original_seq_len <= 0)
            fatal("%s: invalid model header: rope scaling needs a positive original context length", path);
    }
    if (c->weight_type != WEIGHT_F32)
        fatal("%s: weight type %d is not supported (this build reads fp32 weights)", path, c->weight_type);
    if (c->bos_id < -1 || c->bos_id >= c->vocab_size)
        fatal("%s: invalid model header: bos_id %d is outside the vocabulary", path, c->bos_id);
    if (c->n_eos < 0 || c->n_eos > MAX_EOS)
        fatal("%s: invalid model header: n_eos is %d (at most %d)", path, c->n_eos, MAX_EOS);
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] < 0 || c->eos_ids[i] >= c->vocab_size)
            fatal("%s: invalid model header: eos id %d is outside the vocabulary", path, c->eos_ids[i]);
}

/* Hands out consecutive tensors from the mapped file, checking each one lies
   inside it. `align` is the alignment of each tensor's start (1 for legacy). */
typedef struct {
    const char *path;
    const uint8_t *base;
    uint64_t size;   /* file size */
    uint64_t offset; /* next free byte */
    uint64_t align;
} TensorReader;

static const float *take_tensor(TensorReader *r, uint64_t n_floats, const char *name) {
    uint64_t start = (r->offset + r->align - 1) / r->align * r->align;
    uint64_t bytes = n_floats * sizeof(float); /* n_floats < 2^60 by the bounds above */
    if (start > r->size || bytes > r->size - start)
        fatal("%s: file is truncated: tensor %s needs bytes %llu..%llu but the file has %llu",
              r->path, name, (unsigned long long)start, (unsigned long long)(start + bytes),
              (unsigned long long)r->size);
    r->offset = start + bytes;
    return (const float *)(r->base + start);
}

static void skip_bytes(TensorReader *r, uint64_t bytes, const char *name) {
    if (r->offset > r->size || bytes > r->size - r->offset)
        fatal("%s: file is truncated inside %s", r->path, name);
    r->offset += bytes;
}

/* Points every weight at its place in the file. */
static void map_weights(Weights *w, const Config *c, TensorReader *r) {
    uint64_t dim = c->dim, hidden = c->hidden_dim, vocab = c->vocab_size;
    uint64_t q_dim = (uint64_t)c->n_heads * c->head_dim, kv_dim = (uint64_t)c->n_kv_heads * c->head_dim;
    int L = c->n_layers;
    w->layers = xcalloc(L, sizeof(LayerWeights));
    w->token_embedding = take_tensor(r, vocab * dim, "token_embedding");
    if (!c->legacy) {
        for (int l = 0; l < L; l++) {
            LayerWeights *lw = &w->layers[l];
            lw->attn_norm = take_tensor(r, dim, "attn_norm");
            lw->wq = take_tensor(r, q_dim * dim, "wq");
            lw->wk = take_tensor(r, kv_dim * dim, "wk");
            lw->wv = take_tensor(r, kv_dim * dim, "wv");
            lw->wo = take_tensor(r, dim * q_dim, "wo");
            lw->ffn_norm = take_tensor(r, dim, "ffn_norm");
            lw->w1 = take_tensor(r, hidden * dim, "w1");
            lw->w2 = take_tensor(r, dim * hidden, "w2");
            lw->w3 = take_tensor(r, hidden * dim, "w3");
        }
        w->final_norm = take_tensor(r, dim, "final_norm");
    } else {
        /* llama2.c groups each kind of tensor across all layers. */
#define LEGACY_GROUP(field, n, name)                                          \
    do {                                                                      \
        const float *t = take_tensor(r, (uint64_t)L * (n), name);             \
        for (int l = 0; l < L; l++) w->layers[l].field = t + (uint64_t)l * (n); \
    } while (0)
        LEGACY_GROUP(attn_norm, dim, "rms_att_weight");
        LEGACY_GROUP(wq, q_dim * dim, "wq");
        LEGACY_GROUP(wk, kv_dim * dim, "wk");
        LEGACY_GROUP(wv, kv_dim * dim, "wv");
        LEGACY_GROUP(wo, dim * q_dim, "wo");
        LEGACY_GROUP(ffn_norm, dim, "rms_ffn_weight");
        LEGACY_GROUP(w1, hidden * dim, "w1");
        LEGACY_GROUP(w2, dim * hidden, "w2");
        LEGACY_GROUP(w3, hidden * dim, "w3");
#undef LEGACY_GROUP
        w->final_norm = take_tensor(r, dim, "rms_final_weight");
        /* two RoPE tables, (seq_len, head_dim / 2) each, that we recompute */
        skip_bytes(r, (uint64_t)c->seq_len * c->head_dim * sizeof(float), "freq_cis");
    }
    w->classifier = c->tied_classifier ? w->token_embedding : take_tensor(r, vocab * dim, "classifier");
    if (r->offset != r->size)
        fatal("%s: file has %llu bytes but the header describes %llu: wrong header or not a model file",
              r->path, (unsigned long long)r->size, (unsigned long long)r->offset);
}

static void read_header(const char *path, const uint8_t *data, uint64_t size, Config *c, uint64_t *data_start) {
    memset(c, 0, sizeof(*c));
    if (size < 4) fatal("%s: file is too small to be a model (%llu bytes)", path, (unsigned long long)size);
    uint32_t magic;
    memcpy(&magic, data, 4);
    if (magic == MODEL_MAGIC) {
        if (size < MODEL_HEADER_SIZE) fatal("%s: file is truncated inside the header", path);
        FileHeader h;
        memcpy(&h, data, sizeof h);
        if (h.version != MODEL_VERSION)
            fatal("%s: model format version %u is not supported (this build reads version %d)", path, h.version,
                  MODEL_VERSION);
        c->dim = h.dim; c->hidden_dim = h.hidden_dim; c->n_layers = h.n_layers;
        c->n_heads = h.n_heads; c->n_kv_heads = h.n_kv_heads; c->head_dim = h.head_dim;
        c->vocab_size = h.vocab_size; c->seq_len = h.seq_len;
        c->rope_theta = h.rope_theta; c->rope_factor = h.rope_factor;
        c->rope_low_freq_factor = h.rope_low_freq_factor; c->rope_high_freq_factor = h.rope_high_freq_factor;
        c->rope_original_seq_len = h.rope_original_seq_len;
        c->norm_eps = h.norm_eps;
        c->tied_classifier = (h.flags & FLAG_TIED_CLASSIFIER) != 0;
        if (h.flags & ~FLAG_TIED_CLASSIFIER) fatal("%s: unknown flags 0x%x in model header", path, h.flags);
        c->weight_type = h.weight_type;
        c->bos_id = h.bos_id;
        c->n_eos = h.n_eos;
        if (h.n_eos >= 0 && h.n_eos <= MAX_EOS) memcpy(c->eos_ids, h.eos_ids, sizeof(int32_t) * (size_t)h.n_eos);
        *data_start = MODEL_HEADER_SIZE;
    } else if (magic == 0x616b3432u) { /* "ak42" */
        fatal("%s: this is a llama2.c version 1/2 export; convert the original checkpoint with export.py", path);
    } else {
        /* llama2.c legacy: seven int32 and no magic */
        if (size < 7 * sizeof(int32_t)) fatal("%s: not a model file (too small for a header)", path);
        int32_t h[7];
        memcpy(h, data, sizeof h);
        c->legacy = 1;
        c->dim = h[0]; c->hidden_dim = h[1]; c->n_layers = h[2]; c->n_heads = h[3]; c->n_kv_heads = h[4];
        c->tied_classifier = h[5] > 0;
        c->vocab_size = h[5] == INT32_MIN ? 0 : abs(h[5]);
        c->seq_len = h[6];
        if (c->dim <= 0 || c->n_heads <= 0 || c->dim % c->n_heads != 0)
            fatal("%s: not a model file: no known magic, and as a llama2.c header dim %d is not a multiple "
                  "of n_heads %d", path, c->dim, c->n_heads);
        c->head_dim = c->dim / c->n_heads;
        c->rope_theta = 10000.0f;
        c->norm_eps = 1e-5f;
        c->weight_type = WEIGHT_F32;
        c->bos_id = 1;
        c->n_eos = 1;
        c->eos_ids[0] = 2;
        *data_start = 7 * sizeof(int32_t);
    }
    validate_config(path, c);
    if (c->legacy && c->vocab_size < 3) fatal("%s: invalid model header: vocab_size %d is too small", path, c->vocab_size);
}

typedef struct {
    Config config;
    Weights weights;
    const char *path;
    void *data;     /* the mmapped file */
    uint64_t size;  /* its length in bytes */
} Model;

static void build_model(Model *m, const char *path) {
    memset(m, 0, sizeof(*m));
    m->path = path;
    int fd = open(path, O_RDONLY);
    if (fd < 0) fatal("%s: cannot open model: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) fatal("%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) fatal("%s: not a regular file", path);
    m->size = (uint64_t)st.st_size;
    if (m->size < 4) fatal("%s: file is too small to be a model (%llu bytes)", path, (unsigned long long)m->size);
    if (m->size > (uint64_t)SIZE_MAX) fatal("%s: file is too large to map", path);
    m->data = mmap(NULL, (size_t)m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m->data == MAP_FAILED) fatal("%s: mmap failed: %s", path, strerror(errno));
    close(fd);
    uint64_t data_start;
    read_header(path, m->data, m->size, &m->config, &data_start);
    TensorReader r = {path, m->data, m->size, data_start, m->config.legacy ? 1 : TENSOR_ALIGN};
    map_weights(&m->weights, &m->config, &r);
}

static void free_model(Model *m) {
    free(m->weights.layers);
    if (m->data) munmap(m->data, (size_t)m->size);
}

static int is_eos(const Config *c, int token) {
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == token) return 1;
    return 0;
}

/* ========================================================================== */
/* 3. Run state: activations and the KV cache                                 */
/* ========================================================================== */

typedef struct {
    int ctx;          /* positions the KV cache holds */
    float *x;         /* (dim) the residual stream at the current position */
    float *xb;        /* (max(dim, q_dim)) normed input / attention output */
    float *xb2;       /* (dim) output of a block before it is added to x */
    float *hb;        /* (hidden_dim) gate branch of the feed-forward layer */
    float *hb2;       /* (hidden_dim) up branch of the feed-forward layer */
    float *q;         /* (n_heads * head_dim) query of the current position */
    float *att;       /* (n_heads, ctx) attention scores */
    float *logits;    /* (vocab_size) */
    float *key_cache;   /* (n_layers, ctx, n_kv_heads * head_dim) */
    float *value_cache; /* (n_layers, ctx, n_kv_heads * head_dim) */
    float *rope_freq; /* (head_dim / 2) rotation frequency of each pair */
    float *rope_cos;  /* (head_dim / 2) cos(pos * freq) at the current position */
    float *rope_sin;  /* (head_dim / 2) */
} RunState;

/* RoPE frequencies, with Llama 3.1's scaling when the file asks for it.
   PyTorch (Hugging Face _compute_llama3_parameters):
     inv_freq = 1 / theta ** (arange(0, head_dim, 2) / head_dim)
     wavelen = 2 * pi / inv_freq
     long wavelengths (> orig / low_freq_factor) are divided by factor,
     short ones (< orig / high_freq_factor) are kept, and those between
     are blended: smooth = (orig / wavelen - low) / (high - low). */
static void rope_frequencies(const Config *c, float *freq) {
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = 1.0 / pow((double)c->rope_theta, (double)(2 * i) / (double)c->head_dim);
        if (c->rope_factor != 0.0f) {
            double orig = c->rope_original_seq_len;
            double low_wavelen = orig / c->rope_low_freq_factor;
            double high_wavelen = orig / c->rope_high_freq_factor;
            double wavelen = 2.0 * 3.14159265358979323846 / f;
            if (wavelen > low_wavelen) {
                f = f / c->rope_factor;
            } else if (wavelen >= high_wavelen) {
                double smooth = (orig / wavelen - c->rope_low_freq_factor) /
                                (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1.0 - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        freq[i] = (float)f;
    }
}

static void build_state(RunState *s, const Config *c, int ctx) {
    int q_dim = c->n_heads * c->head_dim;
    uint64_t kv_dim = (uint64_t)c->n_kv_heads * c->head_dim;
    s->ctx = ctx;
    s->x = xcalloc(c->dim, sizeof(float));
    s->xb = xcalloc(c->dim > q_dim ? c->dim : q_dim, sizeof(float));
    s->xb2 = xcalloc(c->dim, sizeof(float));
    s->hb = xcalloc(c->hidden_dim, sizeof(float));
    s->hb2 = xcalloc(c->hidden_dim, sizeof(float));
    s->q = xcalloc(q_dim, sizeof(float));
    s->att = xcalloc((size_t)c->n_heads * ctx, sizeof(float));
    s->logits = xcalloc(c->vocab_size, sizeof(float));
    uint64_t cache = (uint64_t)c->n_layers * ctx * kv_dim;
    if (cache > SIZE_MAX / sizeof(float)) fatal("KV cache of %llu floats is too large", (unsigned long long)cache);
    s->key_cache = xcalloc((size_t)cache, sizeof(float));
    s->value_cache = xcalloc((size_t)cache, sizeof(float));
    s->rope_freq = xcalloc(c->head_dim / 2, sizeof(float));
    s->rope_cos = xcalloc(c->head_dim / 2, sizeof(float));
    s->rope_sin = xcalloc(c->head_dim / 2, sizeof(float));
    rope_frequencies(c, s->rope_freq);
}

static void free_state(RunState *s) {
    free(s->x); free(s->xb); free(s->xb2); free(s->hb); free(s->hb2); free(s->q); free(s->att);
    free(s->logits); free(s->key_cache); free(s->value_cache);
    free(s->rope_freq); free(s->rope_cos); free(s->rope_sin);
}

/* ========================================================================== */
/* 4. Kernels                                                                 */
/* ========================================================================== */

/* out = x / sqrt(mean(x^2) + eps) * weight
   PyTorch: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight */
static void rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float scale = 1.0f / sqrtf(ss / n + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * weight[i];
}

/* In place: x = exp(x - max) / sum(exp(x - max)).  PyTorch: torch.softmax(x, -1) */
static void softmax(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

/* out (d) = W (d, n) @ x (n).  PyTorch: out = x @ W.T  (nn.Linear without bias)
   Nearly all the time of a forward pass is spent here: each row is a dot
   product, and the rows are shared among threads. */
static void matmul(float *out, const float *x, const float *w, int n, int d) {
    int i;
#ifdef _OPENMP
#pragma omp parallel for private(i)
#endif
    for (i = 0; i < d; i++) {
        const float *row = w + (size_t)i * n;
        float sum = 0.0f;
        for (int j = 0; j < n; j++) sum += row[j] * x[j];
        out[i] = sum;
    }
}

/* Rotary position embedding on n_heads heads of width head_dim, in place.
   Each pair (x[2i], x[2i+1]) of a head is rotated by the angle pos * freq[i]:
     x[2i]   = x[2i] * cos - x[2i+1] * sin
     x[2i+1] = x[2i] * sin + x[2i+1] * cos
   (Meta's layout. Hugging Face rotates (x[i], x[i + head_dim/2]) instead;
   export.py reorders the rows of wq and wk so both compute the same.) */
static void rope(float *x, int n_heads, int head_dim, const float *cos_t, const float *sin_t) {
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < head_dim / 2; i++) {
            float a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * cos_t[i] - b * sin_t[i];
            v[2 * i + 1] = a * sin_t[i] + b * cos_t[i];
        }
    }
}

/* ========================================================================== */
/* 5. Forward pass                                                            */
/* ========================================================================== */

/* Runs one token at position pos through the model; returns the logits
   (vocab_size). Positions must come in order 0, 1, 2, ... (the KV cache holds
   keys and values of every earlier position). */
static float *forward(const Model *m, RunState *s, int token, int pos) {
    const Config *c = &m->config;
    const Weights *w = &m->weights;
    int dim = c->dim, hidden = c->hidden_dim, head_dim = c->head_dim;
    int q_dim = c->n_heads * head_dim;
    int kv_dim = c->n_kv_heads * head_dim;
    int group = c->n_heads / c->n_kv_heads; /* query heads sharing one kv head */
    float *x = s->x;

    /* x = embedding[token]   PyTorch: x = model.embed_tokens(token) */
    memcpy(x, w->token_embedding + (size_t)token * dim, dim * sizeof(float));

    /* cos and sin of this position, shared by every head of every layer */
    for (int i = 0; i < head_dim / 2; i++) {
        double angle = (double)pos * (double)s->rope_freq[i];
        s->rope_cos[i] = (float)cos(angle);
        s->rope_sin[i] = (float)sin(angle);
    }

    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *lw = &w->layers[l];
        size_t layer_off = (size_t)l * s->ctx * kv_dim;
        float *k = s->key_cache + layer_off + (size_t)pos * kv_dim;   /* (kv_dim) */
        float *v = s->value_cache + layer_off + (size_t)pos * kv_dim; /* (kv_dim) */

        /* ---- attention block: x = x + wo(attention(rmsnorm(x))) ---- */
        rmsnorm(s->xb, x, lw->attn_norm, dim, c->norm_eps);
        matmul(s->q, s->xb, lw->wq, dim, q_dim); /* q = wq(xb) */
        matmul(k, s->xb, lw->wk, dim, kv_dim);   /* k = wk(xb), straight into the cache */
        matmul(v, s->xb, lw->wv, dim, kv_dim);   /* v = wv(xb) */
        rope(s->q, c->n_heads, head_dim, s->rope_cos, s->rope_sin);
        rope(k, c->n_kv_heads, head_dim, s->rope_cos, s->rope_sin);

        /* Each query head h attends over positions 0..pos with kv head h / group.
           PyTorch: att = softmax(q @ k.T / sqrt(head_dim)) ; out = att @ v */
        int h;
        float scale = 1.0f / sqrtf((float)head_dim);
#ifdef _OPENMP
#pragma omp parallel for private(h)
#endif
        for (h = 0; h < c->n_heads; h++) {
            const float *qh = s->q + (size_t)h * head_dim;
            float *att = s->att + (size_t)h * s->ctx;
            size_t kv_off = (size_t)(h / group) * head_dim;
            for (int t = 0; t <= pos; t++) {
                const float *kt = s->key_cache + layer_off + (size_t)t * kv_dim + kv_off;
                float score = 0.0f;
                for (int i = 0; i < head_dim; i++) score += qh[i] * kt[i];
                att[t] = score * scale;
            }
            softmax(att, pos + 1);
            float *out = s->xb + (size_t)h * head_dim;
            memset(out, 0, head_dim * sizeof(float));
            for (int t = 0; t <= pos; t++) {
                const float *vt = s->value_cache + layer_off + (size_t)t * kv_dim + kv_off;
                float a = att[t];
                for (int i = 0; i < head_dim; i++) out[i] += a * vt[i];
            }
        }
        matmul(s->xb2, s->xb, lw->wo, q_dim, dim); /* xb2 = wo(attention) */
        for (int i = 0; i < dim; i++) x[i] += s->xb2[i];

        /* ---- feed-forward block: x = x + w2(silu(w1(xb)) * w3(xb)), xb = rmsnorm(x) ---- */
        rmsnorm(s->xb, x, lw->ffn_norm, dim, c->norm_eps);
        matmul(s->hb, s->xb, lw->w1, dim, hidden);
        matmul(s->hb2, s->xb, lw->w3, dim, hidden);
        for (int i = 0; i < hidden; i++) {
            float g = s->hb[i];
            s->hb[i] = g / (1.0f + expf(-g)) * s->hb2[i]; /* silu(g) = g * sigmoid(g) */
        }
        matmul(s->xb2, s->hb, lw->w2, hidden, dim);
        for (int i = 0; i < dim; i++) x[i] += s->xb2[i];
    }

    /* logits = classifier(rmsnorm(x))   PyTorch: lm_head(model.norm(x)) */
    rmsnorm(x, x, w->final_norm, dim, c->norm_eps);
    matmul(s->logits, x, w->classifier, dim, c->vocab_size);
    return s->logits;
}

/* ========================================================================== */
/* 6. Tokenizer                                                               */
/* ========================================================================== */

/* SentencePiece BPE, as SentencePiece encodes:
   - text is normalized: each space becomes the word marker (stored here as a
     plain ' ', so the literal marker U+2581 in text also becomes ' '), a
     space is put in front (the "dummy prefix"), and each byte that is not
     part of valid UTF-8 becomes U+FFFD;
   - it is split into characters, and the adjacent pair whose concatenation
     is the highest-scoring piece is merged, leftmost first on ties, until no
     pair merges;
   - a leftover piece not in the vocabulary becomes one <0xNN> token per byte.

   Two file formats, told apart by their first bytes:
   (a) this project's ("RUNT", version 1), written by export.py:
         uint32 magic, uint32 version, int32 vocab_size, int32 max_token_length,
         int32 bos_id, int32 eos_id, int32 unk_id, uint32 flags,
         then per token: float32 score, int32 type, int32 length, bytes.
       flags: 1 add dummy prefix, 2 add BOS, 4 remove extra whitespace.
   (b) llama2.c's tokenizer.bin: uint32 max_token_length, then per token:
       float32 score, int32 length, bytes. Ids 0, 1, 2 are unk, BOS and EOS. */

#define TOKENIZER_MAGIC 0x544E5552u /* "RUNT" */
#define TOKENIZER_VERSION 1
enum { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_USER_DEFINED = 4, TOK_UNUSED = 5, TOK_BYTE = 6 };
enum { TOKF_DUMMY_PREFIX = 1, TOKF_ADD_BOS = 2, TOKF_REMOVE_EXTRA_WS = 4 };

typedef struct {
    int vocab_size;
    char **pieces;      /* (vocab_size) bytes of each token, NUL-terminated */
    int *lengths;       /* (vocab_size) their lengths */
    float *scores;      /* (vocab_size) merge priority: higher merges first */
    uint8_t *types;     /* (vocab_size) TOK_* */
    int byte_ids[256];  /* id of <0xNN> for each byte, -1 if none */
    int bos_id, eos_id, unk_id;
    uint32_t flags;
    int max_len;        /* longest piece in bytes */
    int *hash;          /* open-addressing table of mergeable pieces -> id, -1 empty */
    uint32_t hash_mask;
    int *user_defined;  /* ids of USER_DEFINED pieces, matched whole before merging */
    int n_user_defined;
    char *blob;         /* the file's contents, which pieces point into */
} Tokenizer;

static uint32_t hash_bytes(const char *s, int len) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* Id of a piece that merges may produce, or -1. */
static int lookup_piece(const Tokenizer *t, const char *s, int len) {
    if (len > t->max_len) return -1;
    for (uint32_t i = hash_bytes(s, len) & t->hash_mask;; i = (i + 1) & t->hash_mask) {
        int id = t->hash[i];
        if (id < 0) return -1;
        if (t->lengths[id] == len && memcmp(t->pieces[id], s, len) == 0) return id;
    }
}

static int parse_byte_piece(const char *s, int len) {
    /* "<0xNN>" -> NN, else -1 */
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        int c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* expected_vocab: the model's vocab_size, or 0 when there is no model. */
static void build_tokenizer(Tokenizer *t, const char *path, int expected_vocab) {
    memset(t, 0, sizeof(*t));
    size_t size;
    t->blob = read_file(path, &size);
    const uint8_t *p = (const uint8_t *)t->blob, *end = p + size;
#define NEED(nbytes, what)                                                                   \
    do {                                                                                     \
        if ((size_t)(end - p) < (size_t)(nbytes)) fatal("%s: tokenizer file is truncated (%s)", path, what); \
    } while (0)
    uint32_t magic = 0;
    if (size >= 4) memcpy(&magic, p, 4);
    int ours = magic == TOKENIZER_MAGIC;
    int32_t hdr[8];
    if (ours) {
        NEED(sizeof hdr, "header");
        memcpy(hdr, p, sizeof hdr);
        p += sizeof hdr;
        if (hdr[1] != TOKENIZER_VERSION)
            fatal("%s: tokenizer format version %d is not supported (this build reads %d)", path, hdr[1], TOKENIZER_VERSION);
        t->vocab_size = hdr[2];
        t->bos_id = hdr[4]; t->eos_id = hdr[5]; t->unk_id = hdr[6];
        t->flags = (uint32_t)hdr[7];
        if (t->flags & ~7u) fatal("%s: unknown tokenizer flags 0x%x", path, t->flags);
        if (t->vocab_size <= 0 || t->vocab_size > MAX_VOCAB)
            fatal("%s: invalid tokenizer header: vocab_size %d", path, t->vocab_size);
    } else {
        NEED(4, "header");
        p += 4; /* max_token_length: recomputed below */
        /* Count the tokens: the file does not say how many it has. */
        const uint8_t *q = p;
        int n = 0;
        while (q < end) {
            int32_t len;
            if (end - q < 8) fatal("%s: tokenizer file is truncated (token %d)", path, n);
            memcpy(&len, q + 4, 4);
            if (len < 0 || len > end - q - 8) fatal("%s: tokenizer file is truncated or corrupt (token %d has length %d)", path, n, len);
            q += 8 + len;
            if (++n > MAX_VOCAB) fatal("%s: too many tokens", path);
        }
        if (n == 0) fatal("%s: tokenizer file has no tokens", path);
        t->vocab_size = n;
        t->bos_id = 1; t->eos_id = 2; t->unk_id = 0;
        t->flags = TOKF_DUMMY_PREFIX | TOKF_ADD_BOS;
    }
    if (expected_vocab && t->vocab_size != expected_vocab)
        fatal("%s: tokenizer has %d tokens but the model has a vocabulary of %d: wrong tokenizer for this model",
              path, t->vocab_size, expected_vocab);
    int V = t->vocab_size;
    if (t->bos_id < -1 || t->bos_id >= V || t->eos_id < -1 || t->eos_id >= V || t->unk_id < -1 || t->unk_id >= V)
        fatal("%s: invalid tokenizer header: special token id outside the vocabulary", path);
    t->pieces = xcalloc(V, sizeof(char *));
    t->lengths = xcalloc(V, sizeof(int));
    t->scores = xcalloc(V, sizeof(float));
    t->types = xcalloc(V, 1);
    t->user_defined = xcalloc(V, sizeof(int));
    for (int b = 0; b < 256; b++) t->byte_ids[b] = -1;

    /* Pieces are moved to a fresh buffer so each can end in a NUL. */
    size_t text_bytes = 0;
    const uint8_t *start = p;
    for (int i = 0; i < V; i++) {
        int32_t len, type = TOK_NORMAL;
        float score;
        NEED(4, "token score");
        memcpy(&score, p, 4); p += 4;
        if (ours) {
            NEED(4, "token type");
            memcpy(&type, p, 4); p += 4;
            if (type < TOK_NORMAL || type > TOK_BYTE) fatal("%s: token %d has unknown type %d", path, i, type);
        }
        NEED(4, "token length");
        memcpy(&len, p, 4); p += 4;
        if (len < 0 || len > 65536) fatal("%s: token %d has invalid length %d", path, i, len);
        NEED(len, "token bytes");
        p += len;
        text_bytes += (size_t)len + 1;
        (void)score; (void)type;
    }
    if (p != end) fatal("%s: tokenizer file has %lld unexpected bytes after the last token", path, (long long)(end - p));
    char *text = xmalloc(text_bytes);
    char *out = text;
    p = start;
    for (int i = 0; i < V; i++) {
        int32_t len, type = TOK_NORMAL;
        memcpy(&t->scores[i], p, 4); p += 4;
        if (ours) { memcpy(&type, p, 4); p += 4; }
        memcpy(&len, p, 4); p += 4;
        memcpy(out, p, len);
        out[len] = '\0';
        t->pieces[i] = out;
        t->lengths[i] = len;
        out += len + 1;
        p += len;
        if (!ours) { /* llama2.c's file has no types: infer them */
            if (i == t->unk_id) type = TOK_UNKNOWN;
            else if (i == t->bos_id || i == t->eos_id) type = TOK_CONTROL;
            else if (parse_byte_piece(t->pieces[i], len) >= 0) type = TOK_BYTE;
        }
        t->types[i] = (uint8_t)type;
        if (len > t->max_len) t->max_len = len;
        if (type == TOK_BYTE) {
            int b = parse_byte_piece(t->pieces[i], len);
            if (b < 0) fatal("%s: token %d is a byte token but its text is not <0xNN>", path, i);
            if (t->byte_ids[b] < 0) t->byte_ids[b] = i;
        }
        if (type == TOK_USER_DEFINED && len > 0) t->user_defined[t->n_user_defined++] = i;
    }
    free(t->blob);
    t->blob = text;
#undef NEED

    /* Hash table of the pieces that merges may produce (as SentencePiece:
       normal, user-defined and unused pieces; control, unknown and byte
       tokens are never made from text). The first id wins on duplicates. */
    uint32_t cap = 1;
    while (cap < (uint32_t)V * 2) cap <<= 1;
    t->hash_mask = cap - 1;
    t->hash = xmalloc(cap * sizeof(int));
    for (uint32_t i = 0; i < cap; i++) t->hash[i] = -1;
    for (int id = 0; id < V; id++) {
        int ty = t->types[id];
        if (ty != TOK_NORMAL && ty != TOK_USER_DEFINED && ty != TOK_UNUSED) continue;
        if (lookup_piece(t, t->pieces[id], t->lengths[id]) >= 0) continue;
        uint32_t i = hash_bytes(t->pieces[id], t->lengths[id]) & t->hash_mask;
        while (t->hash[i] >= 0) i = (i + 1) & t->hash_mask;
        t->hash[i] = id;
    }
}

static void free_tokenizer(Tokenizer *t) {
    free(t->pieces); free(t->lengths); free(t->scores); free(t->types);
    free(t->hash); free(t->user_defined); free(t->blob);
}

static const char REPLACEMENT_CHAR[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* Length of the valid UTF-8 character at s (1..4), or 0 if the bytes there
   are not valid UTF-8 (overlong forms, surrogates and values above U+10FFFF
   are invalid, as in SentencePiece). n is the number of bytes available. */
static int utf8_char_len(const uint8_t *s, size_t n) {
    uint32_t c = s[0];
    if (c < 0x80) return 1;
    int len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || (size_t)len > n) return 0;
    uint32_t cp = c & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return 0;
    return len;
}

/* SentencePiece's normalization of the text (see the top of this section).
   Returns a new buffer and its length in *out_len. */
static char *normalize_text(const Tokenizer *t, const char *text, size_t len, size_t *out_len) {
    /* each input byte becomes at most 3 bytes (invalid byte -> U+FFFD), plus the prefix */
    char *out = xmalloc(len * 3 + 2);
    size_t n = 0;
    const uint8_t *s = (const uint8_t *)text;
    int remove_ws = (t->flags & TOKF_REMOVE_EXTRA_WS) != 0;
    size_t i = 0;
    if (remove_ws)
        while (i < len && s[i] == ' ') i++;
    if (i < len && (t->flags & TOKF_DUMMY_PREFIX)) out[n++] = ' ';
    while (i < len) {
        int cl = utf8_char_len(s + i, len - i);
        if (cl == 0) {
            memcpy(out + n, REPLACEMENT_CHAR, 3);
            n += 3;
            i += 1;
        } else if (cl == 3 && memcmp(s + i, "\xE2\x96\x81", 3) == 0) { /* U+2581 is the space marker */
            out[n++] = ' ';
            i += 3;
        } else {
            memcpy(out + n, s + i, cl);
            n += cl;
            i += cl;
        }
        if (remove_ws && n > 0 && out[n - 1] == ' ') {
            /* collapse runs of spaces, and drop them at the end */
            while (i < len && s[i] == ' ') i++;
            if (i >= len) n--;
        }
    }
    *out_len = n;
    return out;
}

/* A candidate merge of the adjacent symbols left and right. */
typedef struct {
    float score;
    int left, right;
    int len; /* bytes of the merged piece: the pair is stale if this changed */
} MergeCandidate;

/* Max-heap on (score, then smaller left position), SentencePiece's order. */
static int merge_before(const MergeCandidate *a, const MergeCandidate *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(MergeCandidate *heap, int *n, MergeCandidate c) {
    int i = (*n)++;
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!merge_before(&c, &heap[parent])) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = c;
}

static MergeCandidate heap_pop(MergeCandidate *heap, int *n) {
    MergeCandidate top = heap[0], last = heap[--(*n)];
    int i = 0;
    for (;;) {
        int child = 2 * i + 1;
        if (child >= *n) break;
        if (child + 1 < *n && merge_before(&heap[child + 1], &heap[child])) child++;
        if (!merge_before(&heap[child], &last)) break;
        heap[i] = heap[child];
        i = child;
    }
    if (*n > 0) heap[i] = last;
    return top;
}

typedef struct {
    int start, len;   /* bytes of the normalized text this symbol covers */
    int prev, next;   /* neighbours in the linked list, -1 at the ends */
    int frozen;       /* user-defined piece: never merged */
} Symbol;

static void try_pair(const Tokenizer *t, const char *text, const Symbol *sym, int left,
                     MergeCandidate *heap, int *n_heap) {
    if (left < 0) return;
    int right = sym[left].next;
    if (right < 0 || sym[left].frozen || sym[right].frozen) return;
    int len = sym[left].len + sym[right].len;
    int id = lookup_piece(t, text + sym[left].start, len);
    if (id < 0) return;
    MergeCandidate c = {t->scores[id], left, right, len};
    heap_push(heap, n_heap, c);
}

/* Encodes text into token ids. tokens must have room for
   text_len * 3 + 3 ids (the most any text can produce). Returns the count. */
static int encode(const Tokenizer *t, const char *text, size_t text_len, int add_bos, int *tokens) {
    int n_tokens = 0;
    if (add_bos && t->bos_id >= 0 && (t->flags & TOKF_ADD_BOS)) tokens[n_tokens++] = t->bos_id;
    size_t norm_len;
    char *norm = normalize_text(t, text, text_len, &norm_len);
    if (norm_len > (size_t)INT32_MAX / 2) fatal("text is too long to tokenize (%zu bytes)", text_len);

    /* Split into characters (user-defined pieces whole), as a linked list. */
    Symbol *sym = xmalloc((norm_len + 1) * sizeof(Symbol));
    int n_sym = 0;
    for (size_t i = 0; i < norm_len;) {
        int len = 0, frozen = 0;
        for (int u = 0; u < t->n_user_defined; u++) { /* longest user-defined match */
            int id = t->user_defined[u], ul = t->lengths[id];
            if (ul > len && (size_t)ul <= norm_len - i && memcmp(norm + i, t->pieces[id], ul) == 0) {
                len = ul;
                frozen = 1;
            }
        }
        if (!frozen) len = utf8_char_len((const uint8_t *)norm + i, norm_len - i);
        if (len == 0) len = 1; /* cannot happen after normalization */
        sym[n_sym] = (Symbol){(int)i, len, n_sym - 1, n_sym + 1, frozen};
        n_sym++;
        i += len;
    }
    if (n_sym > 0) sym[n_sym - 1].next = -1;

    /* Merge the best pair until none is left. Stale candidates (a side
       already merged into something else) are skipped when popped. */
    MergeCandidate *heap = xmalloc((size_t)(2 * n_sym + 1) * sizeof(MergeCandidate));
    int n_heap = 0;
    for (int i = 0; i < n_sym; i++) try_pair(t, norm, sym, i, heap, &n_heap);
    while (n_heap > 0) {
        MergeCandidate c = heap_pop(heap, &n_heap);
        Symbol *L = &sym[c.left], *R = &sym[c.right];
        if (L->len == 0 || R->len == 0 || L->next != c.right || L->len + R->len != c.len) continue;
        L->len += R->len;
        R->len = 0;
        L->next = R->next;
        if (R->next >= 0) sym[R->next].prev = c.left;
        try_pair(t, norm, sym, L->prev, heap, &n_heap);
        try_pair(t, norm, sym, c.left, heap, &n_heap);
        /* a heap holds at most one live candidate per symbol plus stale ones:
           each merge adds two, and there are fewer than n_sym merges */
    }

    /* Emit ids; pieces not in the vocabulary fall back to byte tokens. */
    for (int i = n_sym > 0 ? 0 : -1; i >= 0; i = sym[i].next) {
        int id = lookup_piece(t, norm + sym[i].start, sym[i].len);
        if (id >= 0) {
            tokens[n_tokens++] = id;
            continue;
        }
        for (int b = 0; b < sym[i].len; b++) {
            int bid = t->byte_ids[(uint8_t)norm[sym[i].start + b]];
            if (bid >= 0) tokens[n_tokens++] = bid;
            else if (b == 0 && t->unk_id >= 0) tokens[n_tokens++] = t->unk_id; /* one unk per piece */
        }
    }
    free(heap);
    free(sym);
    free(norm);
    return n_tokens;
}

/* Bytes to print for token, which follows prev. Returns their count and sets
   *out. Control and unknown tokens print nothing; a byte token is its byte. */
static int decode_piece(const Tokenizer *t, int prev, int token, const char **out) {
    static char byte_buf[2];
    int type = t->types[token];
    if (type == TOK_BYTE) {
        byte_buf[0] = (char)parse_byte_piece(t->pieces[token], t->lengths[token]);
        *out = byte_buf;
        return 1;
    }
    if (type == TOK_CONTROL || type == TOK_UNKNOWN) {
        *out = "";
        return 0;
    }
    const char *s = t->pieces[token];
    int len = t->lengths[token];
    /* the dummy prefix: the first word after BOS loses its leading space */
    if (prev == t->bos_id && (t->flags & TOKF_DUMMY_PREFIX) && len > 0 && s[0] == ' ') { s++; len--; }
    *out = s;
    return len;
}

/* Prints bytes as they come, but only whole UTF-8 characters: a character
   split across byte tokens is held back until its last byte arrives. Invalid
   sequences print as U+FFFD; control characters other than whitespace are
   dropped (they could garble the terminal). */
typedef struct {
    uint8_t pending[4]; /* bytes of an unfinished character */
    int n_pending;
    int need;           /* length of that character, from its first byte */
    FILE *out;
} Utf8Printer;

static void utf8_put(Utf8Printer *p, const char *bytes, int len) {
    for (int i = 0; i < len; i++) {
        uint8_t b = (uint8_t)bytes[i];
        if (p->n_pending > 0 && (b & 0xC0) != 0x80) { /* the held character was cut short */
            fputs(REPLACEMENT_CHAR, p->out);
            p->n_pending = 0;
        }
        if (p->n_pending == 0) {
            if (b < 0x80) {
                if (b >= 0x20 || isspace(b)) fputc(b, p->out);
                continue;
            }
            p->need = (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 0;
            if (p->need == 0) { /* a continuation byte with no lead byte */
                fputs(REPLACEMENT_CHAR, p->out);
                continue;
            }
        }
        p->pending[p->n_pending++ & 3] = b;
        if (p->n_pending == p->need) {
            if (utf8_char_len(p->pending, p->need) == p->need) fwrite(p->pending, 1, p->need, p->out);
            else fputs(REPLACEMENT_CHAR, p->out);
            p->n_pending = 0;
        }
    }
}

static void utf8_flush(Utf8Printer *p) {
    if (p->n_pending > 0) fputs(REPLACEMENT_CHAR, p->out);
    p->n_pending = 0;
    fflush(p->out);
}

/* ========================================================================== */
/* 7. Sampler                                                                 */
/* ========================================================================== */

/* The same random numbers and top-p procedure as llama2.c, so both programs
   print the same text for the same model, flags and seed. */

typedef struct {
    float prob;
    int index;
} ProbIndex;

typedef struct {
    int vocab_size;
    ProbIndex *candidates; /* (vocab_size) scratch for top-p */
    float temperature;
    float topp;
    uint64_t rng_state;
} Sampler;

static void build_sampler(Sampler *s, int vocab_size, float temperature, float topp, uint64_t seed) {
    s->vocab_size = vocab_size;
    s->temperature = temperature;
    s->topp = topp;
    s->rng_state = seed;
    s->candidates = xcalloc(vocab_size, sizeof(ProbIndex));
}

static void free_sampler(Sampler *s) { free(s->candidates); }

/* xorshift64* (Marsaglia / Vigna) */
static uint32_t random_u32(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

static float random_f32(uint64_t *state) { /* in [0, 1) */
    return (random_u32(state) >> 8) / 16777216.0f;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Index i with probability probs[i]; coin is uniform in [0, 1). */
static int sample_multinomial(const float *probs, int n, float coin) {
    float cdf = 0.0f;
    for (int i = 0; i < n; i++) {
        cdf += probs[i];
        if (coin < cdf) return i;
    }
    return n - 1; /* rounding */
}

static int compare_prob_desc(const void *a, const void *b) {
    const ProbIndex *x = a, *y = b;
    return x->prob > y->prob ? -1 : x->prob < y->prob ? 1 : 0;
}

/* Top-p (nucleus) sampling: sample among the most likely tokens whose total
   probability just exceeds topp. Tokens below (1 - topp) / (n - 1) cannot be
   in that set, so they are dropped before sorting (a large saving). */
static int sample_topp(const float *probs, int n, float topp, ProbIndex *cand, float coin) {
    int n_cand = 0;
    const float cutoff = (1.0f - topp) / (n - 1);
    for (int i = 0; i < n; i++)
        if (probs[i] >= cutoff) cand[n_cand++] = (ProbIndex){probs[i], i};
    qsort(cand, n_cand, sizeof(ProbIndex), compare_prob_desc);
    float cumulative = 0.0f;
    int last = n_cand - 1;
    for (int i = 0; i < n_cand; i++) {
        cumulative += cand[i].prob;
        if (cumulative > topp) {
            last = i;
            break;
        }
    }
    float r = coin * cumulative;
    float cdf = 0.0f;
    for (int i = 0; i <= last; i++) {
        cdf += cand[i].prob;
        if (r < cdf) return cand[i].index;
    }
    return cand[last].index; /* rounding */
}

/* Picks the next token from the logits (which it overwrites). */
static int sample(Sampler *s, float *logits) {
    if (s->temperature == 0.0f) return argmax(logits, s->vocab_size);
    for (int i = 0; i < s->vocab_size; i++) logits[i] /= s->temperature;
    softmax(logits, s->vocab_size);
    float coin = random_f32(&s->rng_state);
    if (s->topp <= 0.0f || s->topp >= 1.0f) return sample_multinomial(logits, s->vocab_size, coin);
    return sample_topp(logits, s->vocab_size, s->topp, s->candidates, coin);
}

/* ========================================================================== */
/* 8. Modes: generate, tokenize, perplexity                                   */
/* ========================================================================== */

/* Tokenizes the prompt, with BOS first when the tokenizer uses one. */
static int *encode_prompt(const Tokenizer *tok, const char *text, size_t len, int *n_out) {
    int *tokens = xmalloc((len * 3 + 3) * sizeof(int));
    *n_out = encode(tok, text, len, 1, tokens);
    return tokens;
}

/* Prints the prompt and its continuation until `steps` positions are used,
   or the model emits BOS or an EOS token. */
static void generate(const Model *m, RunState *s, const Tokenizer *tok, Sampler *sampler,
                     const int *prompt, int n_prompt, int steps) {
    Utf8Printer printer = {{0}, 0, 0, stdout};
    int token = prompt[0];
    int pos = 0;
    double start = 0.0;
    while (pos < steps) {
        float *logits = forward(m, s, token, pos);
        /* inside the prompt the next token is given; after it, sampled */
        int next = pos + 1 < n_prompt ? prompt[pos + 1] : sample(sampler, logits);
        pos++;
        if (pos >= n_prompt && (next == m->config.bos_id || is_eos(&m->config, next))) break;
        const char *piece;
        int len = decode_piece(tok, token, next, &piece);
        utf8_put(&printer, piece, len);
        fflush(stdout);
        token = next;
        if (start == 0.0) start = time_seconds(); /* not timing the first step (warm-up) */
    }
    utf8_flush(&printer);
    printf("\n");
    fflush(stdout);
    if (pos > 1) {
        double elapsed = time_seconds() - start;
        fprintf(stderr, "achieved tok/s: %.2f\n", elapsed > 0 ? (pos - 1) / elapsed : 0.0);
    }
}

/* Mean negative log-likelihood of each token given all before it. */
static void perplexity(const Model *m, RunState *s, const int *tokens, int n) {
    double total = 0.0;
    for (int pos = 0; pos + 1 < n; pos++) {
        const float *logits = forward(m, s, tokens[pos], pos);
        int V = m->config.vocab_size;
        /* -log softmax(logits)[next] = logsumexp(logits) - logits[next] */
        double max = logits[0], sum = 0.0;
        for (int i = 1; i < V; i++)
            if (logits[i] > max) max = logits[i];
        for (int i = 0; i < V; i++) sum += exp((double)logits[i] - max);
        total += max + log(sum) - logits[tokens[pos + 1]];
    }
    double nll = n > 1 ? total / (n - 1) : 0.0;
    printf("tokens: %d\nnll: %.6f\nperplexity: %.6f\n", n, nll, exp(nll));
}

/* ========================================================================== */
/* 9. Command line                                                            */
/* ========================================================================== */

static void usage(FILE *f) {
    fprintf(f,
            "Usage:   run MODEL [options]\n"
            "         run -m tokenize -z TOKENIZER -i TEXT\n"
            "Example: run stories15M.bin -z tokenizer.bin -i \"Once upon a time\"\n"
            "Options:\n"
            "  -t <float>  temperature in [0, inf), default 1.0 (0 = greedy)\n"
            "  -p <float>  top-p (nucleus) in [0, 1], default 0.9 (0 or 1 = off)\n"
            "  -s <int>    random seed, default: the time\n"
            "  -n <int>    positions to run, prompt included, default 256 (0 = the model's maximum)\n"
            "  -i <string> input prompt\n"
            "  -f <path>   read the input prompt from a file\n"
            "  -z <path>   tokenizer file, default tokenizer.bin\n"
            "  -m <string> mode: generate (default), tokenize or perplexity\n"
            "  -y <string> system prompt (chat mode only)\n"
            "  -h          this help\n");
}

static double parse_number(const char *flag, const char *value, double lo, double hi) {
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (end == value || *end != '\0' || errno == ERANGE || isnan(v))
        fatal("%s expects a number, got '%s'", flag, value);
    if (v < lo || v > hi) fatal("%s must be between %g and %g, got %s", flag, lo, hi, value);
    return v;
}

static long long parse_integer(const char *flag, const char *value, long long lo, long long hi) {
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (end == value || *end != '\0' || errno == ERANGE) fatal("%s expects an integer, got '%s'", flag, value);
    if (v < lo || v > hi) fatal("%s must be between %lld and %lld, got %s", flag, lo, hi, value);
    return v;
}

#ifndef RUN_NO_MAIN
int main(int argc, char **argv) {
    const char *model_path = NULL, *tokenizer_path = "tokenizer.bin", *prompt = NULL, *prompt_file = NULL;
    const char *mode = "generate", *system_prompt = NULL;
    float temperature = 1.0f, topp = 0.9f;
    long long seed = 0, steps = 256;

    int i = 1;
    if (argc >= 2 && argv[1][0] != '-') model_path = argv[i++];
    for (; i < argc; i++) {
        const char *flag = argv[i];
        if (strcmp(flag, "-h") == 0 || strcmp(flag, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (flag[0] != '-' || strlen(flag) != 2) {
            usage(stderr);
            fatal("unexpected argument '%s'", flag);
        }
        if (!strchr("tpsnifzmy", flag[1])) {
            usage(stderr);
            fatal("unknown option %s", flag);
        }
        if (i + 1 >= argc) fatal("option %s needs a value", flag);
        const char *value = argv[++i];
        switch (flag[1]) {
        case 't': temperature = (float)parse_number(flag, value, 0.0, 1e6); break;
        case 'p': topp = (float)parse_number(flag, value, 0.0, 1.0); break;
        case 's': seed = parse_integer(flag, value, 0, INT64_MAX); break;
        case 'n': steps = parse_integer(flag, value, 0, INT32_MAX); break;
        case 'i': prompt = value; break;
        case 'f': prompt_file = value; break;
        case 'z': tokenizer_path = value; break;
        case 'm': mode = value; break;
        case 'y': system_prompt = value; break;
        }
    }
    int is_generate = strcmp(mode, "generate") == 0, is_tokenize = strcmp(mode, "tokenize") == 0,
        is_perplexity = strcmp(mode, "perplexity") == 0;
    if (!is_generate && !is_tokenize && !is_perplexity)
        fatal("unknown mode '%s' (expected generate, tokenize or perplexity)", mode);
    if (prompt && prompt_file) fatal("give the prompt with -i or -f, not both");
    if (system_prompt) fprintf(stderr, "note: -y (system prompt) is used only in chat mode; ignored\n");
    if (!model_path && !is_tokenize) {
        usage(stderr);
        fatal("no model file given");
    }

    size_t prompt_len = 0;
    char *prompt_buf = NULL;
    if (prompt_file) {
        prompt_buf = read_file(prompt_file, &prompt_len);
        if (strlen(prompt_buf) != prompt_len) fatal("%s: the prompt contains a NUL byte", prompt_file);
        prompt = prompt_buf;
    } else {
        if (!prompt) prompt = "";
        prompt_len = strlen(prompt);
    }

    Model model;
    int have_model = model_path != NULL;
    if (have_model) build_model(&model, model_path);
    Tokenizer tok;
    build_tokenizer(&tok, tokenizer_path, have_model ? model.config.vocab_size : 0);

    int n_prompt;
    int *tokens = encode_prompt(&tok, prompt, prompt_len, &n_prompt);

    if (is_tokenize) {
        for (int k = 0; k < n_prompt; k++) printf(k ? " %d" : "%d", tokens[k]);
        printf("\n");
    } else {
        const Config *c = &model.config;
        if (n_prompt < 1) fatal("the prompt encodes to no tokens (the tokenizer has no BOS): give a prompt with -i");
        int ctx;
        if (is_perplexity) {
            if (n_prompt < 2) fatal("perplexity needs a text of at least one token (-i or -f)");
            if (n_prompt > c->seq_len)
                fatal("the text is %d tokens but the model's context is %d: give a shorter text", n_prompt, c->seq_len);
            ctx = n_prompt;
        } else {
            if (steps == 0) steps = c->seq_len;
            if (steps > c->seq_len) {
                fprintf(stderr, "note: -n %lld is more than the model's context; using %d\n", steps, c->seq_len);
                steps = c->seq_len;
            }
            if (n_prompt > steps)
                fatal("the prompt is %d tokens but only %lld positions are allowed (-n): raise -n or shorten the prompt",
                      n_prompt, steps);
            ctx = (int)steps;
        }
        RunState state;
        build_state(&state, c, ctx);
        if (is_perplexity) {
            perplexity(&model, &state, tokens, n_prompt);
        } else {
            Sampler sampler;
            uint64_t rng_seed = seed > 0 ? (uint64_t)seed : (uint64_t)time(NULL);
            build_sampler(&sampler, c->vocab_size, temperature, topp, rng_seed);
            generate(&model, &state, &tok, &sampler, tokens, n_prompt, (int)steps);
            free_sampler(&sampler);
        }
        free_state(&state);
    }

    free(tokens);
    free(prompt_buf);
    free_tokenizer(&tok);
    if (have_model) free_model(&model);
    return 0;
}
#endif
