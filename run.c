/* run.c: inference for Llama-family transformers in one C file.

   Reading order (each section only uses the ones above it):
     1. errors and small helpers
     2. model file: header, validation, weights (read into 2 MB pages, or mmapped)
     3. run state: activations and the KV cache
     4. kernels: rmsnorm, softmax, matmul, rope
     5. forward pass
     6. tokenizer: SentencePiece and byte-level BPE, pre-tokenizers, NFC
     7. sampler: penalties, temperature, top-k, top-p, min-p
     8. modes: generate, tokenize, perplexity, chat
     9. views: the model card, the trace page (--trace-html)
    10. command line

   Build: cc -O3 -o run run.c -lm            (add -fopenmp for threads)
   Only libc and libm; OpenMP is optional. */

#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* and glibc's madvise, MADV_HUGEPAGE, MAP_ANONYMOUS (section 2) */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* OpenMP threads, in builds that have them (make fast): OMP(directive) is
   `#pragma directive` there and nothing elsewhere, where the same code runs
   on one thread. (C99's _Pragma writes a pragma from a macro.) */
#ifdef _OPENMP
#include <omp.h>
#include <sched.h>
#include <stdatomic.h>
#define OMP(directive) _Pragma(#directive)
static int thread_index(void) { return omp_get_thread_num(); } /* 0 .. threads - 1 */
static int team_threads(void) { return omp_get_num_threads(); } /* in the team now running */
static int max_threads(void) { return omp_get_max_threads(); }

/* The threads of a team wait here for each other: at the end of every step
   of forward (its loops are `omp for nowait`, then team_wait; one team at a
   time uses it, as forward never runs beside another). OpenMP's own
   wait at the end of a loop costs ~1.5 us on this project's 2-core machines
   (libgomp, a loop of empty steps), this one ~0.2, and a generated token
   passes ~15 such waits a layer: stories15M q4_0 generated 1.23x as fast
   with it, stories110M 1.07x, the 1.1B shape 1.03x (alternating, 6 of 6
   rounds each). A round: each thread counts itself in; the last one resets
   the count and moves `round` on; the others watch `round` (on a cache line
   of its own, so that the counting does not disturb them), pausing between
   looks, and after TEAM_SPINS looks (~75 us here) give up their core at each
   look (sched_yield) in case the thread they wait for needs it. Where the
   team has more threads than there are processors they yield at once: a
   spinning thread would hold a core that a thread being waited for needs
   (stories15M q4_0, -T 3 on 2 cores: 690 tok/s with OpenMP's wait, 127 if
   spinning first, 1574 yielding at once). */
#define TEAM_SPINS 4096
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define spin_pause() __builtin_ia32_pause() /* a hint to the core that this is a wait loop */
#elif defined(__GNUC__) && defined(__aarch64__)
#define spin_pause() __asm__ __volatile__("yield")
#else
#define spin_pause() ((void)0)
#endif
static struct {
    _Alignas(64) atomic_int arrived; /* threads that have reached this round's wait */
    _Alignas(64) atomic_uint round;  /* rounds completed (unsigned: it wraps around, harmlessly) */
    atomic_int processors;           /* omp_get_num_procs(), once (it asks the system each call) */
} team;

static void team_wait(void) {
    int threads = team_threads();
    if (threads == 1) return;
    unsigned round = atomic_load(&team.round);
    int processors = atomic_load(&team.processors);
    if (atomic_fetch_add(&team.arrived, 1) == threads - 1) { /* the last to arrive lets the others go */
        atomic_store(&team.arrived, 0);
        atomic_store(&team.round, round + 1u);
        return;
    }
    if (processors == 0) atomic_store(&team.processors, processors = omp_get_num_procs());
    int spins = threads > processors ? 0 : TEAM_SPINS;
    for (int looks = 0; atomic_load(&team.round) == round;) {
        if (looks < spins) {
            spin_pause();
            looks++;
        } else {
            sched_yield();
        }
    }
}

/* Rows shared by stealing: generation's matmuls (matmul, T < a GEMM's
   tokens) give each thread a run of their rows' units (4 rows each), the
   t-th of `threads` equal runs, and each thread takes its own run a few
   units at a time (SHARE_UNITS: 16 rows) and, when it is done, the back
   half of what the thread with the most left still has, and goes on with
   that as its own. So every thread reads one long stream of bytes, as the
   hardware prefetcher likes, and all end within a few units of each other.
   (Before, with OpenMP's guided schedule, the first thread to arrive took
   half of the rows in one piece, and the other, when it had done the rest,
   waited for that piece's end: 3.4% of the 1.1B shape's generation time on
   a Xeon, by timing each wait. Dynamic runs of 1/8, 1/16 or 1/32 of a
   matrix, which end together too, were 1-3% slower than guided: each run
   starts a new stream. Against guided, on that Xeon, 2 threads, timing
   every other token of one run with each: the 1.1B shape's time per token
   -1.1% to -1.2% in q4_0 (3 of 3 runs), -1.4% and -2.2% in q8_0, -2.0% in
   q4_k_m, -2.2% in fp32; stories110M q4_0 -8% and -1.3%, fp32 -2.5% and
   -1%; stories15M q4_0 +0.9% and -15%. Takes of 2 to 16 units: the same.)
   A thread's run is one 64-bit word, the first unit it has left
   (high half) and its end (low half), in a cache line of its own; the owner
   moves the first unit up, a thief the end down, both by compare-and-swap,
   so a unit is taken once. Only the owner fills its word, when it is empty:
   every word is empty when a matmul's threads have all ended (each ends
   when its own is empty and no other has two takes left), so a thread that
   starts late is never robbed of rows of an earlier matmul. Teams of more
   than TEAM_SHARES threads leave the threads past it out. */
#define SHARE_UNITS 4
#define TEAM_SHARES 1024
static struct {
    _Alignas(64) _Atomic uint64_t run; /* (first unit left << 32) | end */
} team_share[TEAM_SHARES];

static uint64_t share_word(uint32_t first, uint32_t end) { return (uint64_t)first << 32 | end; }
static uint32_t units_in(uint64_t run) { return (uint32_t)run - (uint32_t)(run >> 32); } /* left to take */
static int share_threads(void) { return team_threads() < TEAM_SHARES ? team_threads() : TEAM_SHARES; }

/* The calling thread's part of n units (every thread of the team calls it,
   then next_units until it returns 0, then team_wait). */
static void share_units(int n) {
    int me = thread_index(), threads = share_threads();
    if (me < threads)
        atomic_store(&team_share[me].run, share_word((uint32_t)((int64_t)n * me / threads),
                                                     (uint32_t)((int64_t)n * (me + 1) / threads)));
}

/* The next units [*from, *to) the calling thread takes; 0 when none is left to take. */
static int next_units(int *from, int *to) {
    int me = thread_index(), threads = share_threads();
    if (me >= threads) return 0;
    for (;;) {
        uint64_t own = atomic_load(&team_share[me].run);
        uint32_t first = (uint32_t)(own >> 32), end = (uint32_t)own;
        if (first < end) { /* the next units of its own run */
            uint32_t upto = end - first > SHARE_UNITS ? first + SHARE_UNITS : end;
            if (atomic_compare_exchange_weak(&team_share[me].run, &own, share_word(upto, end))) {
                *from = (int)first, *to = (int)upto;
                return 1;
            }
            continue;
        }
        int victim = -1; /* the thread with the most left, if it has two takes or more */
        uint64_t seen = 0;
        for (int t = 0; t < threads; t++) {
            uint64_t run = atomic_load(&team_share[t].run);
            if (t != me && units_in(run) >= 2 * SHARE_UNITS && (victim < 0 || units_in(run) > units_in(seen)))
                victim = t, seen = run;
        }
        if (victim < 0) return 0;
        uint32_t v_first = (uint32_t)(seen >> 32), v_end = (uint32_t)seen, half = v_first + (v_end - v_first + 1) / 2;
        if (atomic_compare_exchange_strong(&team_share[victim].run, &seen, share_word(v_first, half)))
            atomic_store(&team_share[me].run, share_word(half, v_end)); /* its back half, now this thread's */
    }
}
#else
#define OMP(directive)
static int thread_index(void) { return 0; }
static int team_threads(void) { return 1; }
static int max_threads(void) { return 1; }
static void team_wait(void) {}
/* One thread takes all n units at once. */
static int units_left;
static void share_units(int n) { units_left = n; }
static int next_units(int *from, int *to) {
    if (units_left == 0) return 0;
    *from = 0, *to = units_left, units_left = 0;
    return 1;
}
#endif

/* ========================================================================== */
/* 1. Errors and small helpers                                                */
/* ========================================================================== */

/* Every error ends the program with one line on stderr and exit status 1.
   (The fuzz targets in tests/fuzz define RUN_FUZZING: there an error returns
   to the target through fuzz_escape instead, so that it can try the next
   input.) */
#ifdef RUN_FUZZING
#include <setjmp.h>
static jmp_buf fuzz_escape;
#endif

static void fatal(const char *fmt, ...) {
#ifdef RUN_FUZZING
    (void)fmt;
    longjmp(fuzz_escape, 1);
#else
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
#endif
}

static size_t allocated_bytes; /* all that xmalloc and xcalloc handed out (--verbose) */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) fatal("out of memory (asked for %zu bytes)", n);
    allocated_bytes += n;
    return p;
}

static void *xcalloc(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) fatal("out of memory (asked for %zu x %zu bytes)", count, size);
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) fatal("out of memory (asked for %zu x %zu bytes)", count, size);
    allocated_bytes += count * size;
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

   (a) This project's format ("RUNC", version 3): a 256-byte header (FileHeader
       below, little-endian); then the type table: one byte per matrix (the
       2-D tensors below, in file order) giving its weight type, padded with
       zeros to a multiple of 64 bytes; then the layer table: one byte of
       LAYER_* bits per layer, padded the same way; then the tensors in this
       order, each starting at an offset that is a multiple of 64 bytes (so
       SIMD loads are aligned):
         token_embedding              (vocab_size, dim)
         for each layer:
           attn_norm                  (dim)
           wq                         (n_heads * head_dim, dim)
           bq                         (n_heads * head_dim)     only with FLAG_QKV_BIAS
           wk                         (n_kv_heads * head_dim, dim)
           bk                         (n_kv_heads * head_dim)  only with FLAG_QKV_BIAS
           wv                         (n_kv_heads * head_dim, dim)
           bv                         (n_kv_heads * head_dim)  only with FLAG_QKV_BIAS
           q_norm                     (head_dim)               only with FLAG_QK_NORM
           k_norm                     (head_dim)               only with FLAG_QK_NORM
           wo                         (dim, n_heads * head_dim)
           post_attn_norm             (dim)                    only with FLAG_POST_NORMS
           ffn_norm                   (dim)
           w1 (gate)                  (hidden_dim, dim)
           w2 (down)                  (dim, hidden_dim)
           w3 (up)                    (hidden_dim, dim)
           post_ffn_norm              (dim)                    only with FLAG_POST_NORMS
         final_norm                   (dim)
         classifier                   (vocab_size, dim)   absent when tied
       q and k rows are in the interleaved RoPE layout (pairs 2i, 2i+1), as
       Meta's original checkpoints; export.py converts Hugging Face's layout.
       Norms and biases are fp32. Each matrix is of its weight type:
         fp32: rows x cols floats;
         q8_0: each row padded with zeros to a multiple of 32 columns, in
               blocks of 32 int8 values, each with an fp16 scale; weight =
               value * scale. A row's blocks go in groups of 8 (the last
               group of a row may have fewer), each group its scales, then
               its blocks: 34 bytes per block in all, rows one after another
               (see q_block);
         q4_0: the same with 4-bit values: 16 bytes per block (18 with its
               scale), byte j holding values j (low nibble) and j + 16 (high
               nibble), each stored plus 8; weight = (nibble - 8) * scale;
         q4_k: ggml's Q4_K, byte for byte (cols a multiple of 256): each row
               is cols/256 blocks of 144 bytes (fp16 d, fp16 dmin, 12 bytes
               of 6-bit scales and mins, 128 bytes of 4-bit values); see
               dot_q4k_scalar for what they mean;
         q6_k: ggml's Q6_K, byte for byte: blocks of 256 values in 210 bytes
               (128 of low 4 bits, 64 of high 2 bits, 16 int8 scales, fp16
               d); see dot_q6k_scalar.
       Version 1 files (no type table: every matrix has the header's weight
       type, one of the first three) and version 2 files (the same as 3, but
       q8_0 and q4_0 rows held all their blocks, then all their scales) are
       still read when they have no q8_0 or q4_0 matrix: the kernels read
       only the grouped rows, so such files are to be exported again.

   (b) llama2.c's legacy format (version 0): seven int32 (dim, hidden_dim,
       n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative
       vocab_size means the classifier is stored separately), then fp32
       tensors grouped by kind across layers, with two unused RoPE tables. */

#define MODEL_MAGIC 0x434E5552u /* "RUNC" as little-endian bytes */
#define MODEL_VERSION 3 /* 2: a type per matrix; 3: q8_0 and q4_0 scales beside their blocks */
#define MODEL_HEADER_SIZE 256
#define TENSOR_ALIGN 64
#define MAX_EOS 8

enum { WEIGHT_F32 = 0, WEIGHT_Q8_0 = 1, WEIGHT_Q4_0 = 2, WEIGHT_Q4_K = 3, WEIGHT_Q6_K = 4, N_WEIGHT_TYPES };
static const char *WEIGHT_NAMES[N_WEIGHT_TYPES] = {"fp32", "q8_0", "q4_0", "q4_k", "q6_k"};
#define QK 32        /* values per block of a q8_0 or q4_0 row, and of quantized activations */
#define QGROUP 8     /* blocks per group of a q8_0 or q4_0 row: their scales, then the blocks */
#define QK_K 256     /* values per block of a q4_k or q6_k row */
#define Q4K_BYTES 144
#define Q6K_BYTES 210
enum { FLAG_TIED_CLASSIFIER = 1u << 0, FLAG_QKV_BIAS = 1u << 1, FLAG_QK_NORM = 1u << 2, FLAG_POST_NORMS = 1u << 3,
       FLAG_ROPE_FACTORS = 1u << 4 };
#define KNOWN_FLAGS (FLAG_TIED_CLASSIFIER | FLAG_QKV_BIAS | FLAG_QK_NORM | FLAG_POST_NORMS | FLAG_ROPE_FACTORS)
/* the layer table's bits: what sets one layer apart */
enum { LAYER_NO_ROPE = 1u << 0,  /* q and k are not rotated (SmolLM3's NoPE layers) */
       LAYER_SLIDING = 1u << 1 }; /* attends to the last sliding_window positions, with the local RoPE
                                     base (Gemma's local layers; every layer of Mistral 7B v0.1) */
#define KNOWN_LAYER_FLAGS (LAYER_NO_ROPE | LAYER_SLIDING)
enum { ACT_SILU = 0, ACT_GELU_TANH = 1, N_ACTIVATIONS }; /* the gate's activation in the feed-forward layer */
/* which sampling values a model recommends (the header's gen_given) or a user gave */
enum { GEN_TEMPERATURE = 1, GEN_TOP_P = 2, GEN_TOP_K = 4, GEN_MIN_P = 8, GEN_REPETITION_PENALTY = 16, GEN_ALL = 31 };

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
    uint32_t flags;         /* FLAG_TIED_CLASSIFIER, FLAG_QKV_BIAS, FLAG_QK_NORM, FLAG_POST_NORMS, FLAG_ROPE_FACTORS */
    int32_t weight_type;    /* WEIGHT_*: of every matrix (version 1), of most (from 2 on) */
    int32_t bos_id;
    int32_t n_eos;          /* how many of eos_ids are used */
    int32_t eos_ids[MAX_EOS];
    int32_t sliding_window; /* from version 2: a LAYER_SLIDING layer attends to the last this many positions */
    /* from version 2, scalar multipliers (Granite; 0 means the plain transformer's value): */
    float embedding_scale;  /* x = embedding * this (0: 1) */
    float attention_scale;  /* scores = q . k * this (0: 1 / sqrt(head_dim)) */
    float residual_scale;   /* x = x + block(x) * this (0: 1) */
    float logit_scale;      /* logits = classifier(x) * this (0: 1) */
    /* from version 2, Gemma's mechanisms (0: absent): */
    float rope_local_theta; /* RoPE base of LAYER_SLIDING layers, unscaled (0: they rotate as the others) */
    float rope_linear_factor; /* linear RoPE scaling of the other layers: positions / this (0: none) */
    int32_t activation;     /* ACT_*: SiLU (0) or GELU with the tanh approximation */
    float attn_softcap;     /* scores = cap * tanh(scores / cap) before the softmax (0: none) */
    float final_softcap;    /* logits = cap * tanh(logits / cap) (0: none) */
    /* from version 2, Phi-3's: */
    int32_t rope_dim;       /* RoPE rotates the first rope_dim values of each head (0: all head_dim) */
    float rope_attn_factor; /* cos and sin are multiplied by this (LongRoPE's attention factor; 0: 1) */
    /* from version 2, the model's recommended sampling (generation_config.json), chat's defaults: */
    uint32_t gen_given;     /* GEN_* bits: which of the five below the model gives */
    float gen_temperature, gen_top_p, gen_min_p, gen_repetition_penalty;
    int32_t gen_top_k;
    uint8_t reserved[MODEL_HEADER_SIZE - 184]; /* zero */
} FileHeader;

_Static_assert(sizeof(FileHeader) == MODEL_HEADER_SIZE, "header must be 256 bytes");

typedef struct {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size, seq_len;
    float rope_theta;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_seq_len;
    float norm_eps;
    int tied_classifier;
    int qkv_bias;   /* q, k and v projections have biases (Qwen2) */
    int qk_norm;    /* each head of q and of k is RMS-normed before RoPE (Qwen3) */
    int sliding_window; /* LAYER_SLIDING layers reach back this many positions, the current one included */
    float embedding_scale, attention_scale, residual_scale, logit_scale; /* see FileHeader; never 0 here */
    float rope_local_theta;   /* 0: sliding-window layers rotate as the others */
    float rope_linear_factor; /* 1 when the file says none */
    int activation;           /* ACT_* */
    int post_norms;           /* each block's output is RMS-normed before it joins the residual (Gemma) */
    float attn_softcap, final_softcap; /* 0: none */
    int rope_dim;             /* the rotated part of each head: head_dim, or less (Phi-4-mini's partial rotary) */
    float rope_attn_factor;   /* 1 when the file says none */
    int longrope;             /* the file has LongRoPE's factor tables (Phi-3.5, Phi-4-mini) */
    const float *rope_factors[2]; /* their per-frequency divisors: short and long, (rope_dim / 2) each */
    uint32_t gen_given;       /* GEN_*: the model's recommended sampling, below */
    float gen_temperature, gen_top_p, gen_min_p, gen_repetition_penalty;
    int gen_top_k;
    int weight_type;  /* the header's: of every matrix, or of most (the type table says) */
    int quantized;    /* some matrix is not fp32: matmul inputs are quantized */
    int k_types;      /* some matrix is q4_k or q6_k */
    int version;      /* of the file format (0: llama2.c) */
    int bos_id;
    int n_eos;
    int eos_ids[MAX_EOS];
    int legacy; /* 1 when read from a llama2.c file */
} Config;

/* A weight matrix (rows, cols) in its weight type. */
typedef struct {
    int type;                /* WEIGHT_* */
    int rows, cols;
    int cols_padded;         /* cols rounded up to whole blocks (quantized types) */
    const void *data;        /* float (rows, cols); q8_0 and q4_0: (rows, cols_padded / 32 blocks) in groups of
                                QGROUP (section 2, q_block); or K blocks (rows, cols / 256 blocks) */
} Matrix;

typedef struct {
    const float *attn_norm; /* (dim) */
    Matrix wq;              /* (n_heads * head_dim, dim) */
    Matrix wk;              /* (n_kv_heads * head_dim, dim) */
    Matrix wv;              /* (n_kv_heads * head_dim, dim) */
    const float *bq;        /* (n_heads * head_dim) or NULL: biases of the */
    const float *bk;        /* (n_kv_heads * head_dim)   q, k and v */
    const float *bv;        /* (n_kv_heads * head_dim)   projections */
    const float *q_norm;    /* (head_dim) or NULL: RMSNorm weights of each */
    const float *k_norm;    /* (head_dim)   query head and key head */
    Matrix wo;              /* (dim, n_heads * head_dim) */
    const float *post_attn_norm; /* (dim) or NULL: RMSNorm of the attention output (Gemma) */
    const float *ffn_norm;  /* (dim) */
    Matrix w1;              /* (hidden_dim, dim) */
    Matrix w2;              /* (dim, hidden_dim) */
    Matrix w3;              /* (hidden_dim, dim) */
    const float *post_ffn_norm; /* (dim) or NULL: RMSNorm of the feed-forward output (Gemma) */
    /* how the layer attends, from the layer table: */
    int rope;               /* 1: q and k are rotated; 0: a NoPE layer (SmolLM3's every fourth) */
    int sliding;            /* 1: the last sliding_window positions only, local RoPE base; 0: all */
} LayerWeights;

typedef struct {
    Matrix token_embedding;  /* (vocab_size, dim) */
    LayerWeights *layers;    /* (n_layers) */
    const float *final_norm; /* (dim) */
    Matrix classifier;       /* (vocab_size, dim), may be the token embedding */
} Weights;

/* IEEE half precision to float, by its bits (scales of quantized blocks). */
static float fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
    float f;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24 */
        f = (float)mant * (1.0f / 16777216.0f);
        return sign ? -f : f;
    }
    bits = exp == 31 ? sign | 0x7F800000u | (mant << 13) : sign | ((exp + 112) << 23) | (mant << 13);
    memcpy(&f, &bits, 4);
    return f;
}

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
    if (c->weight_type < 0 || c->weight_type >= N_WEIGHT_TYPES || (c->version == 1 && c->weight_type > WEIGHT_Q4_0))
        fatal("%s: weight type %d is not supported (0 fp32, 1 q8_0, 2 q4_0, 3 q4_k, 4 q6_k)", path, c->weight_type);
    if (c->sliding_window < 0) fatal("%s: invalid model header: sliding_window is %d", path, c->sliding_window);
    if (!(c->rope_local_theta >= 0.0f) || !isfinite(c->rope_local_theta))
        fatal("%s: invalid model header: rope_local_theta must be positive (or 0 for rope_theta)", path);
    if (c->rope_dim <= 0 || c->rope_dim > c->head_dim || c->rope_dim % 2 != 0)
        fatal("%s: invalid model header: rope_dim %d must be even and in 1..head_dim (%d)", path, c->rope_dim, c->head_dim);
    if (!(c->rope_attn_factor > 0.0f) || !isfinite(c->rope_attn_factor))
        fatal("%s: invalid model header: rope_attn_factor must be positive (or 0 for 1)", path);
    if (!(c->rope_linear_factor >= 1.0f) || !isfinite(c->rope_linear_factor))
        fatal("%s: invalid model header: rope_linear_factor must be >= 1 (or 0 for none)", path);
    if ((c->rope_linear_factor != 1.0f) + (c->rope_factor != 0.0f) + c->longrope > 1)
        fatal("%s: invalid model header: only one kind of rope scaling (Llama 3, linear, LongRoPE) can be on", path);
    if (c->longrope && c->rope_original_seq_len <= 0)
        fatal("%s: invalid model header: LongRoPE needs a positive original context length", path);
    if (c->activation < 0 || c->activation >= N_ACTIVATIONS)
        fatal("%s: invalid model header: activation %d (0 SiLU, 1 GELU tanh)", path, c->activation);
    if (!(c->attn_softcap >= 0.0f) || !isfinite(c->attn_softcap) || !(c->final_softcap >= 0.0f) ||
        !isfinite(c->final_softcap))
        fatal("%s: invalid model header: soft-capping values must be finite and >= 0", path);
    if (!isfinite(c->embedding_scale) || !isfinite(c->attention_scale) || !isfinite(c->residual_scale) ||
        !isfinite(c->logit_scale))
        fatal("%s: invalid model header: a scalar multiplier is not finite", path);
    if (c->gen_given & ~GEN_ALL) fatal("%s: invalid model header: unknown sampling bits 0x%x", path, c->gen_given);
    if (((c->gen_given & GEN_TEMPERATURE) && !(c->gen_temperature >= 0.0f && c->gen_temperature <= 1e6f)) ||
        ((c->gen_given & GEN_TOP_P) && !(c->gen_top_p >= 0.0f && c->gen_top_p <= 1.0f)) ||
        ((c->gen_given & GEN_MIN_P) && !(c->gen_min_p >= 0.0f && c->gen_min_p <= 1.0f)) ||
        ((c->gen_given & GEN_REPETITION_PENALTY) && !(c->gen_repetition_penalty >= 1e-3f && c->gen_repetition_penalty <= 1e3f)) ||
        ((c->gen_given & GEN_TOP_K) && (c->gen_top_k < 0 || c->gen_top_k > (1 << 20))))
        fatal("%s: invalid model header: a recommended sampling value is out of range", path);
    if (c->bos_id < -1 || c->bos_id >= c->vocab_size)
        fatal("%s: invalid model header: bos_id %d is outside the vocabulary", path, c->bos_id);
    if (c->n_eos < 0 || c->n_eos > MAX_EOS)
        fatal("%s: invalid model header: n_eos is %d (at most %d)", path, c->n_eos, MAX_EOS);
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] < 0 || c->eos_ids[i] >= c->vocab_size)
            fatal("%s: invalid model header: eos id %d is outside the vocabulary", path, c->eos_ids[i]);
}

/* Hands out consecutive tensors from the file's bytes, checking each one lies
   inside it. `align` is the alignment of each tensor's start (1 for legacy). */
typedef struct {
    const char *path;
    const uint8_t *base;
    uint64_t size;   /* file size */
    uint64_t offset; /* next free byte */
    uint64_t align;
    const uint8_t *types; /* the type of each matrix, in file order */
    int n_types, next_type;
    const uint8_t *layer_flags; /* LAYER_* of each layer (from version 2) */
    int version;                /* of the file format */
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

static const uint8_t *take_bytes(TensorReader *r, uint64_t bytes, const char *name) {
    uint64_t start = (r->offset + r->align - 1) / r->align * r->align;
    if (start > r->size || bytes > r->size - start)
        fatal("%s: file is truncated: tensor %s needs bytes %llu..%llu but the file has %llu",
              r->path, name, (unsigned long long)start, (unsigned long long)(start + bytes),
              (unsigned long long)r->size);
    r->offset = start + bytes;
    return r->base + start;
}

/* fp16 bits that are a NaN or an infinity */
static int fp16_not_finite(uint16_t h) { return ((h >> 10) & 0x1F) == 0x1F; }

/* A q8_0 or q4_0 row of n_blocks blocks (section 2's layout): groups of
   QGROUP blocks, each group the fp16 scales of its blocks, then the blocks
   (block_bytes each: 32 for q8_0, 16 for q4_0); the last group holds the
   blocks left over. So generation reads one stream of bytes per row, the
   scales among the values they scale. With all of a matrix's scales after
   all its values (format version 2), a second stream, one core read q4_0
   rows of 2048 at 20-23 GB/s against 27-31 in groups (a microbenchmark of
   the kernel's loads and arithmetic, one thread, a Zen 5 whose plain read
   is 26-35 GB/s), and the 1.1B shape generated, alternating on 2 threads,
   q4_0 60-62 -> 69-72 tokens/s and q8_0 33-35 -> 41-43 (prompts: no
   change). The bytes of a block's values, and of a row; where block b's
   values are; its scale: */
static size_t q_block_bytes(int type) { return type == WEIGHT_Q8_0 ? QK : QK / 2; }

static size_t q_row_bytes(int n_blocks, size_t block_bytes) { return (size_t)n_blocks * (block_bytes + 2); }

static const uint8_t *q_block(const uint8_t *row, int b, int n_blocks, size_t block_bytes) {
    int first = b / QGROUP * QGROUP, count = n_blocks - first < QGROUP ? n_blocks - first : QGROUP;
    return row + (size_t)first * (block_bytes + 2) + 2 * (size_t)count + (size_t)(b - first) * block_bytes;
}

/* (as fp16 bits; a group's scales are in block order) */
static uint16_t q_scale_bits(const uint8_t *row, int b, size_t block_bytes) {
    uint16_t h;
    memcpy(&h, row + (size_t)(b / QGROUP * QGROUP) * (block_bytes + 2) + 2 * (size_t)(b % QGROUP), 2);
    return h;
}

/* Whether every scale of a q8_0 or q4_0 matrix (rows of n_blocks blocks) is
   finite, as the kernels take them as they are: group by group, a group's
   scales side by side, with no branch on each, the rows shared among the
   threads. (One scale at a time, by q_scale_bits, on one thread, this check
   was a quarter of the 1.1B q8_0 model's start, 0.06 of 0.26 s; now the
   start takes 0.22-0.24 s, 0.20-0.22 without the check.) */
static int q_scales_finite(const uint8_t *p, uint64_t rows, int n_blocks, size_t block_bytes) {
    size_t per_row = q_row_bytes(n_blocks, block_bytes);
    int bad = 0;
    long long row;
    OMP(omp parallel for reduction(| : bad) if (rows * per_row >= ((size_t)1 << 20)))
    for (row = 0; row < (long long)rows; row++)
        for (int first = 0; first < n_blocks; first += QGROUP) {
            const uint8_t *scales = p + (size_t)row * per_row + (size_t)first * (block_bytes + 2);
            int count = n_blocks - first < QGROUP ? n_blocks - first : QGROUP;
            for (int k = 0; k < count; k++) {
                uint16_t h;
                memcpy(&h, scales + 2 * k, 2);
                bad |= fp16_not_finite(h);
            }
        }
    return !bad;
}

/* A K-quant matrix: rows of cols / 256 blocks; d (and Q4_K's dmin) must be finite. */
static void take_k_blocks(TensorReader *r, Matrix *m, const char *name) {
    if (m->cols % QK_K != 0)
        fatal("%s: tensor %s is %s with rows of %d values, not a multiple of %d", r->path, name,
              WEIGHT_NAMES[m->type], m->cols, QK_K);
    uint64_t block_bytes = m->type == WEIGHT_Q4_K ? Q4K_BYTES : Q6K_BYTES;
    uint64_t n_blocks = (uint64_t)m->rows * (m->cols / QK_K);
    const uint8_t *p = take_bytes(r, n_blocks * block_bytes, name);
    m->data = p;
    for (uint64_t b = 0; b < n_blocks; b++) {
        const uint8_t *blk = p + b * block_bytes;
        uint16_t d, dmin = 0;
        memcpy(&d, blk + (m->type == WEIGHT_Q4_K ? 0 : 208), 2);
        if (m->type == WEIGHT_Q4_K) memcpy(&dmin, blk + 2, 2);
        if (fp16_not_finite(d) || fp16_not_finite(dmin))
            fatal("%s: tensor %s has a NaN or infinite scale in block %llu", r->path, name, (unsigned long long)b);
    }
}

/* The next matrix, in the type the type table gives it (from version 2) or the
   header's (version 1); quantized blocks must have finite scales. */
static Matrix take_matrix(TensorReader *r, int type, uint64_t rows, uint64_t cols, const char *name) {
    if (r->types) {
        if (r->next_type >= r->n_types) fatal("%s: the type table is shorter than the matrices", r->path);
        type = r->types[r->next_type++];
        if (type >= N_WEIGHT_TYPES) fatal("%s: tensor %s has unknown weight type %d", r->path, name, type);
    }
    Matrix m = {type, (int)rows, (int)cols, (int)cols, NULL};
    if (type == WEIGHT_F32) {
        m.data = take_tensor(r, rows * cols, name);
        return m;
    }
    if (type == WEIGHT_Q4_K || type == WEIGHT_Q6_K) {
        take_k_blocks(r, &m, name);
        return m;
    }
    if (r->version < 3)
        fatal("%s: tensor %s is %s in the layout of format version %d, which this build no longer reads "
              "(version 3 keeps each group of blocks' scales beside them): export the model again with "
              "this export.py", r->path, name, WEIGHT_NAMES[type], r->version);
    m.cols_padded = (int)((cols + QK - 1) / QK * QK);
    int n_blocks = m.cols_padded / QK;
    size_t block_bytes = q_block_bytes(type);
    const uint8_t *p = take_bytes(r, rows * (uint64_t)n_blocks * (block_bytes + 2), name);
    m.data = p;
    if (!q_scales_finite(p, rows, n_blocks, block_bytes)) /* then find the first, to name it */
        for (uint64_t row = 0; row < rows; row++)
            for (int b = 0; b < n_blocks; b++)
                if (fp16_not_finite(q_scale_bits(p + row * (uint64_t)n_blocks * (block_bytes + 2), b, block_bytes)))
                    fatal("%s: tensor %s has a NaN or infinite scale in block %llu", r->path, name,
                          (unsigned long long)(row * n_blocks + b));
    return m;
}

/* A matrix that is a slice of fp32 floats (llama2.c's files). */
static Matrix f32_matrix(const float *data, int rows, int cols) {
    Matrix m = {WEIGHT_F32, rows, cols, cols, data};
    return m;
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
    int L = c->n_layers, T = c->weight_type;
    w->layers = xcalloc(L, sizeof(LayerWeights));
    w->token_embedding = take_matrix(r, T, vocab, dim, "token_embedding");
    if (!c->legacy) {
        for (int l = 0; l < L; l++) {
            LayerWeights *lw = &w->layers[l];
            uint8_t flags = r->layer_flags ? r->layer_flags[l] : 0;
            if (flags & ~KNOWN_LAYER_FLAGS) fatal("%s: layer %d has unknown flags 0x%x in the layer table", r->path, l, flags);
            if ((flags & LAYER_SLIDING) && c->sliding_window == 0)
                fatal("%s: layer %d is a sliding-window layer but the header's sliding_window is 0", r->path, l);
            lw->rope = !(flags & LAYER_NO_ROPE);
            lw->sliding = (flags & LAYER_SLIDING) != 0;
            lw->attn_norm = take_tensor(r, dim, "attn_norm");
            lw->wq = take_matrix(r, T, q_dim, dim, "wq");
            if (c->qkv_bias) lw->bq = take_tensor(r, q_dim, "bq");
            lw->wk = take_matrix(r, T, kv_dim, dim, "wk");
            if (c->qkv_bias) lw->bk = take_tensor(r, kv_dim, "bk");
            lw->wv = take_matrix(r, T, kv_dim, dim, "wv");
            if (c->qkv_bias) lw->bv = take_tensor(r, kv_dim, "bv");
            if (c->qk_norm) lw->q_norm = take_tensor(r, c->head_dim, "q_norm");
            if (c->qk_norm) lw->k_norm = take_tensor(r, c->head_dim, "k_norm");
            lw->wo = take_matrix(r, T, dim, q_dim, "wo");
            if (c->post_norms) lw->post_attn_norm = take_tensor(r, dim, "post_attn_norm");
            lw->ffn_norm = take_tensor(r, dim, "ffn_norm");
            lw->w1 = take_matrix(r, T, hidden, dim, "w1");
            lw->w2 = take_matrix(r, T, dim, hidden, "w2");
            lw->w3 = take_matrix(r, T, hidden, dim, "w3");
            if (c->post_norms) lw->post_ffn_norm = take_tensor(r, dim, "post_ffn_norm");
        }
        w->final_norm = take_tensor(r, dim, "final_norm");
    } else {
        /* llama2.c groups each kind of tensor across all layers (all fp32). */
#define LEGACY_NORMS(field, name)                                                     \
    do {                                                                              \
        const float *t = take_tensor(r, (uint64_t)L * dim, name);                     \
        for (int l = 0; l < L; l++) w->layers[l].field = t + (uint64_t)l * dim;       \
    } while (0)
#define LEGACY_MATRICES(field, rows, cols, name)                                      \
    do {                                                                              \
        const float *t = take_tensor(r, (uint64_t)L * (rows) * (cols), name);         \
        for (int l = 0; l < L; l++)                                                   \
            w->layers[l].field = f32_matrix(t + (uint64_t)l * (rows) * (cols), (int)(rows), (int)(cols)); \
    } while (0)
        for (int l = 0; l < L; l++) w->layers[l].rope = 1;
        LEGACY_NORMS(attn_norm, "rms_att_weight");
        LEGACY_MATRICES(wq, q_dim, dim, "wq");
        LEGACY_MATRICES(wk, kv_dim, dim, "wk");
        LEGACY_MATRICES(wv, kv_dim, dim, "wv");
        LEGACY_MATRICES(wo, dim, q_dim, "wo");
        LEGACY_NORMS(ffn_norm, "rms_ffn_weight");
        LEGACY_MATRICES(w1, hidden, dim, "w1");
        LEGACY_MATRICES(w2, dim, hidden, "w2");
        LEGACY_MATRICES(w3, hidden, dim, "w3");
#undef LEGACY_NORMS
#undef LEGACY_MATRICES
        w->final_norm = take_tensor(r, dim, "rms_final_weight");
        /* two RoPE tables, (seq_len, head_dim / 2) each, that we recompute */
        skip_bytes(r, (uint64_t)c->seq_len * c->head_dim * sizeof(float), "freq_cis");
    }
    w->classifier = c->tied_classifier ? w->token_embedding : take_matrix(r, T, vocab, dim, "classifier");
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
        if (h.version < 1 || h.version > MODEL_VERSION)
            fatal("%s: model format version %u is not supported (this build reads versions 1 to %d)", path,
                  h.version, MODEL_VERSION);
        c->version = (int)h.version;
        c->dim = h.dim; c->hidden_dim = h.hidden_dim; c->n_layers = h.n_layers;
        c->n_heads = h.n_heads; c->n_kv_heads = h.n_kv_heads; c->head_dim = h.head_dim;
        c->vocab_size = h.vocab_size; c->seq_len = h.seq_len;
        c->rope_theta = h.rope_theta; c->rope_factor = h.rope_factor;
        c->rope_low_freq_factor = h.rope_low_freq_factor; c->rope_high_freq_factor = h.rope_high_freq_factor;
        c->rope_original_seq_len = h.rope_original_seq_len;
        c->norm_eps = h.norm_eps;
        c->tied_classifier = (h.flags & FLAG_TIED_CLASSIFIER) != 0;
        c->qkv_bias = (h.flags & FLAG_QKV_BIAS) != 0;
        c->qk_norm = (h.flags & FLAG_QK_NORM) != 0;
        c->sliding_window = h.version >= 2 ? h.sliding_window : 0;
        c->embedding_scale = h.version >= 2 && h.embedding_scale != 0.0f ? h.embedding_scale : 1.0f;
        c->attention_scale = h.version >= 2 && h.attention_scale != 0.0f ? h.attention_scale : 1.0f / sqrtf((float)h.head_dim);
        c->residual_scale = h.version >= 2 && h.residual_scale != 0.0f ? h.residual_scale : 1.0f;
        c->logit_scale = h.version >= 2 && h.logit_scale != 0.0f ? h.logit_scale : 1.0f;
        int v2 = h.version >= 2; /* version 1 has zeros there */
        c->rope_local_theta = v2 ? h.rope_local_theta : 0.0f;
        c->rope_dim = v2 && h.rope_dim != 0 ? h.rope_dim : h.head_dim;
        c->rope_attn_factor = v2 && h.rope_attn_factor != 0.0f ? h.rope_attn_factor : 1.0f;
        c->rope_linear_factor = v2 && h.rope_linear_factor != 0.0f ? h.rope_linear_factor : 1.0f;
        c->activation = v2 ? h.activation : ACT_SILU;
        c->post_norms = (h.flags & FLAG_POST_NORMS) != 0;
        c->longrope = (h.flags & FLAG_ROPE_FACTORS) != 0;
        c->gen_given = v2 ? h.gen_given : 0;
        c->gen_temperature = h.gen_temperature, c->gen_top_p = h.gen_top_p, c->gen_min_p = h.gen_min_p;
        c->gen_repetition_penalty = h.gen_repetition_penalty, c->gen_top_k = h.gen_top_k;
        c->attn_softcap = v2 ? h.attn_softcap : 0.0f;
        c->final_softcap = v2 ? h.final_softcap : 0.0f;
        if (h.flags & ~KNOWN_FLAGS) fatal("%s: unknown flags 0x%x in model header", path, h.flags);
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
        c->version = 0;
        c->dim = h[0]; c->hidden_dim = h[1]; c->n_layers = h[2]; c->n_heads = h[3]; c->n_kv_heads = h[4];
        c->tied_classifier = h[5] > 0;
        c->vocab_size = h[5] == INT32_MIN ? 0 : abs(h[5]);
        c->seq_len = h[6];
        if (c->dim <= 0 || c->n_heads <= 0 || c->dim % c->n_heads != 0)
            fatal("%s: not a model file: no known magic, and as a llama2.c header dim %d is not a multiple "
                  "of n_heads %d", path, c->dim, c->n_heads);
        c->head_dim = c->dim / c->n_heads;
        c->embedding_scale = c->residual_scale = c->logit_scale = 1.0f;
        c->attention_scale = 1.0f / sqrtf((float)c->head_dim);
        c->rope_theta = 10000.0f;
        c->rope_linear_factor = c->rope_attn_factor = 1.0f;
        c->rope_dim = c->head_dim;
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
    void *data;         /* the file's bytes, read-only: in 2 MB pages, or mapped */
    uint64_t size;      /* their length */
    void *block;        /* what to munmap: the mapping, or the memory they were read into */
    size_t block_size;
    int read_in;        /* 1: read into memory (LOAD_READ), 0: the file mapped (LOAD_MMAP) */
} Model;

/* How the file's bytes come into memory: --mmap, --no-mmap, or by size. */
enum { LOAD_AUTO, LOAD_MMAP, LOAD_READ };
#define HUGE_PAGE ((size_t)2 << 20)

/* Generation reads every weight once per token, so how its memory is paged
   shows. A mapped file lies in the page cache in whatever pieces the kernel
   holds it (here: runs of 3 to 25 physically contiguous 4 KB pages), each
   page needing its own TLB entry. Read into anonymous memory that the kernel
   is asked to back with transparent huge pages, the weights lie in 2 MB
   pages: TinyLlama-1.1B generation 6-11% faster in fp32, q8_0 and q4_0 on
   this project's machines (alternating runs, medians). The cost: the bytes
   are copied once at the start (here 0.2 s for 619 MB and 1-2.3 s for
   4.4 GB on two threads, most of it the kernel zeroing fresh pages), and
   the memory is the process's own instead of the page cache, shared and
   droppable. So LOAD_AUTO reads in files from 8 MB (smaller ones gain
   nothing) up to half the physical memory (larger ones are mapped, which
   lets the kernel page them). Returns 0 where huge pages are not to be had
   (another OS, or the kernel's transparent huge pages set to never): the
   caller maps the file instead. */
static int read_in_huge_pages(Model *m, int fd) {
#if defined(MADV_HUGEPAGE) && defined(MAP_ANONYMOUS)
    char line[128] = "";
    FILE *thp = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!thp) return 0;
    int never = fgets(line, sizeof line, thp) == NULL || strstr(line, "[never]") != NULL;
    fclose(thp);
    if (never) return 0;
    size_t size = (size_t)m->size;
    if (size > SIZE_MAX - HUGE_PAGE || (sizeof(off_t) < 8 && m->size > (uint64_t)INT32_MAX)) return 0;
    m->block_size = size + HUGE_PAGE; /* room to start on a 2 MB boundary, as huge pages must */
    m->block = mmap(NULL, m->block_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m->block == MAP_FAILED) {
        m->block = NULL;
        return 0;
    }
    char *start = (char *)(((uintptr_t)m->block + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (madvise(start, size, MADV_HUGEPAGE) != 0) {
        munmap(m->block, m->block_size);
        m->block = NULL;
        return 0;
    }
    /* In pieces of 64 MB shared among the threads: the kernel zeroes each
       fresh page in the thread that first writes it, and that is most of the
       time this takes (4.4 GB here: 1.6-3.9 s on one thread, 0.9-2.3 s on two). */
    const size_t piece = (size_t)64 << 20;
    long long n_pieces = (long long)((size + piece - 1) / piece), p;
    int error = 0; /* errno of a failed read, or -1: the file ended early */
    OMP(omp parallel for schedule(dynamic) private(p))
    for (p = 0; p < n_pieces; p++) {
        size_t at = (size_t)p * piece, end = size - at < piece ? size : at + piece;
        while (at < end) {
            ssize_t got = pread(fd, start + at, end - at, (off_t)at);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                OMP(omp atomic write)
                error = got < 0 ? errno : -1;
                break;
            }
            at += (size_t)got;
        }
    }
    if (error > 0) fatal("%s: read failed: %s", m->path, strerror(error));
    if (error < 0) fatal("%s: the file ended before %zu bytes were read (changed while being read?)", m->path, size);
    mprotect(start, size, PROT_READ); /* read-only, as a mapped file: a stray write faults */
    m->data = start;
    m->read_in = 1;
    return 1;
#else
    (void)m, (void)fd;
    return 0;
#endif
}

/* LOAD_AUTO's choice for a file of `size` bytes (see read_in_huge_pages). */
static int load_by_size(uint64_t size) {
    uint64_t memory = 0;
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) memory = (uint64_t)pages * (uint64_t)page;
#endif
    return size >= ((uint64_t)8 << 20) && size <= memory / 2 ? LOAD_READ : LOAD_MMAP;
}

/* load: LOAD_AUTO, LOAD_MMAP or LOAD_READ (LOAD_READ maps the file where
   huge pages are not to be had). */
static void build_model(Model *m, const char *path, int load) {
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
    if (load == LOAD_AUTO) load = load_by_size(m->size);
    if (load != LOAD_READ || !read_in_huge_pages(m, fd)) {
        m->data = mmap(NULL, (size_t)m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m->data == MAP_FAILED) fatal("%s: mmap failed: %s", path, strerror(errno));
        m->block = m->data, m->block_size = (size_t)m->size;
    }
    close(fd);
    uint64_t data_start;
    read_header(path, m->data, m->size, &m->config, &data_start);
    Config *c = &m->config;
    TensorReader r = {path, m->data, m->size, data_start, c->legacy ? 1 : TENSOR_ALIGN, NULL, 0, 0, NULL, c->version};
    c->quantized = c->weight_type != WEIGHT_F32;
    if (c->version >= 2) { /* the type table: one byte per matrix; then the layer table: one byte per layer */
        r.n_types = 1 + 7 * c->n_layers + !c->tied_classifier;
        r.types = take_bytes(&r, (uint64_t)r.n_types, "type table");
        r.layer_flags = take_bytes(&r, (uint64_t)c->n_layers, "layer table");
        c->quantized = 0;
        for (int i = 0; i < r.n_types; i++) {
            c->quantized |= r.types[i] != WEIGHT_F32;
            c->k_types |= r.types[i] == WEIGHT_Q4_K || r.types[i] == WEIGHT_Q6_K;
        }
    }
    for (int k = 0; k < 2 * c->longrope; k++) { /* LongRoPE's tables: short factors, then long */
        const float *f = c->rope_factors[k] = take_tensor(&r, (uint64_t)c->rope_dim / 2, k ? "rope_long_factors" : "rope_short_factors");
        for (int i = 0; i < c->rope_dim / 2; i++)
            if (!(f[i] > 0.0f) || !isfinite(f[i])) fatal("%s: LongRoPE factor %d is %g (must be positive)", path, i, f[i]);
    }
    map_weights(&m->weights, c, &r);
}

static void free_model(Model *m) {
    free(m->weights.layers);
    if (m->block) munmap(m->block, m->block_size);
}

/* The bytes of one row of W, as the file holds it (q8_0 and q4_0: with its scales). */
static size_t matrix_row_bytes(const Matrix *W) {
    if (W->type == WEIGHT_F32) return (size_t)W->cols * sizeof(float);
    if (W->type == WEIGHT_Q4_K || W->type == WEIGHT_Q6_K)
        return (size_t)(W->cols / QK_K) * (W->type == WEIGHT_Q4_K ? Q4K_BYTES : Q6K_BYTES);
    return q_row_bytes(W->cols_padded / QK, q_block_bytes(W->type)); /* q8_0, q4_0 */
}

/* The bytes of all of W's rows. */
static uint64_t matrix_bytes(const Matrix *W) { return (uint64_t)W->rows * matrix_row_bytes(W); }

/* A layer's LAYER_MATRICES matrices, in the file's order. */
#define LAYER_MATRICES 7
static void layer_matrices(const LayerWeights *lw, const Matrix *out[LAYER_MATRICES]) {
    out[0] = &lw->wq, out[1] = &lw->wk, out[2] = &lw->wv, out[3] = &lw->wo;
    out[4] = &lw->w1, out[5] = &lw->w2, out[6] = &lw->w3;
}

/* The bytes of weights a generated token reads: every layer's matrices and
   the classifier (of the embedding table it reads one row, not counted;
   a tied classifier is the whole table, counted). */
static uint64_t token_weight_bytes(const Model *m) {
    uint64_t bytes = matrix_bytes(&m->weights.classifier);
    for (int l = 0; l < m->config.n_layers; l++) {
        const Matrix *each[LAYER_MATRICES];
        layer_matrices(&m->weights.layers[l], each);
        for (int k = 0; k < LAYER_MATRICES; k++) bytes += matrix_bytes(each[k]);
    }
    return bytes;
}

static int is_eos(const Config *c, int token) {
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == token) return 1;
    return 0;
}

/* ========================================================================== */
/* 3. Run state: activations and the KV cache                                 */
/* ========================================================================== */

#define MAX_BATCH 256 /* tokens of a prompt that go through the model together */
#define MAX_LOGITS 64  /* tokens whose logits one pass may return (perplexity): the table is
                          MAX_LOGITS x vocab floats, 67 MB for Gemma 3's 262144 tokens */
#define MAX_TRACE_WEIGHTS (1 << 23) /* --trace-html: attention weights a page may hold (32 MiB of floats) */
#define TRACE_TOP 10 /* --trace-html: candidates shown per generated token */

/* What --trace-html records while the model runs (the page: section 10).
   The forward pass fills the attention weights and the logit lens of each
   position it runs; generate adds each sampled token's candidates. */
typedef struct {
    int pos, chosen;           /* the position whose next token was sampled, and the token */
    float chosen_prob;         /* its probability after penalties and temperature */
    int n;                     /* candidates kept here (TRACE_TOP, or fewer in a small vocabulary) */
    int id[TRACE_TOP];         /* the most likely tokens, most likely first */
    float prob[TRACE_TOP];
    const char *cut[TRACE_TOP]; /* the rule that removed it ("top-k", ...), or "" (cut_rule) */
} TraceStep;

typedef struct TracePage {
    int capacity;       /* positions it holds: the run's context, at most trace_page_capacity (section 9) */
    int n_positions;    /* positions the model has run */
    int *tokens;        /* (capacity) the token fed at each position */
    float *attention;   /* (n_layers, n_heads, capacity, capacity): [l][h][q][k] = the weight query position q
                           gives key position k in head h of layer l; 0 where q does not attend */
    int *lens_token;    /* (n_layers, capacity): the token the residual stream after layer l at a position predicts */
    float *lens_prob;   /* (n_layers, capacity): its probability */
    TraceStep *steps;   /* (capacity) one per sampled token */
    int n_steps;
} TracePage;
#define GEMM_TOKENS 16 /* tokens of one panel of the prompt GEMMs (section 4, "panels") */
#define F32_RUN_STEPS 8 /* the most fp32 GEMM steps a thread takes at once (steps_f32) */
#define GEMM_ROWS 6     /* weight rows of one GEMM step: fp32, q4_0, q4_k and q8_0 with VNNI (gemm_f32, gemm_u8) */
/* (GEMM_ROWS_I16, the rows of a q6_k step, or q8_0's without VNNI, depends on the build: section 4) */

/* Activations quantized like a q8_0 row, for the integer dot products of a
   quantized matmul (section 4): x[j] ~ q[j] * scale[b] for j in block b. */
typedef struct {
    int8_t *q;      /* (n_padded) values in [-127, 127] */
    float *scale;   /* (n_padded / 32) */
    int32_t *sum;   /* (n_padded / 32) sum of each 32 q (q4_0 and q4_k need it) */
    int16_t *sum16; /* (n_padded / 16) sum of each 16 q (the x86 q6_k and q4_k kernels need it) */
    int8_t *halves; /* (n_padded) q again, as the x86 q4_0 kernels read it (arrange_halves, by
                       the AVX2 quantize_vector; unused elsewhere): in runs of four blocks, the
                       first halves of a run's blocks, then their second halves */
} QuantizedVector;

/* A run's working memory (build_state, and the quantized inputs it builds)
   is zeroed, page by page, as it is allocated. Memory from the C library
   is only promised: the kernel gives each 4 KB page when it is first
   written, and zeroes it then. Left to the first prompt, those faults came
   one page at a time in the middle of the work (the KV cache's pages as store_kv
   reached them, the buffers' as each matmul did), with the other thread
   waiting: on this project's machine (a
   virtual machine, where a fault costs more than on bare metal) they were
   a third to a half of a 512-token prompt's time on stories15M and
   stories110M, and the whole run took longer than with them all taken at
   the start. Large buffers (the KV cache) are asked for in 2 MB pages, as
   the weights are (read_in_huge_pages), and written by all threads: 1 GiB
   here in 0.5-1 s, against 2.7 s one 4 KB page at a time on one thread. The
   cost: the cache for the whole context (-n, or in chat the model's up to
   4096 positions) is taken at the start, as llama.cpp does, even where the
   run stops short of it; check_memory refuses one larger than the machine.
   Each buffer starts on a cache line of 64 bytes. calloc's start 16 bytes
   past one, and then every 512-bit load of the KV cache, of a token's
   quantized activations or of the attention scores spans two lines, and
   every other 256-bit one. Aligned, the same two threads on a Xeon, each
   token run through two states that differ only in this: the 1.1B shape in
   q4_0 -2.7% and -2.9% time per token (256 tokens), -3.1% over 1024; q4_k_m
   -1.4%; stories110M q4_0 -3.1%, stories15M q4_0 -4.1%; q8_0 and fp32
   level. */
#define CACHE_LINE 64
static size_t whole_lines(size_t bytes) { return (bytes + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE; }

static void zero_pages(void *p, size_t bytes) {
    long long pages = (long long)((bytes + 4095) / 4096), i;
    OMP(omp parallel for if (bytes >= HUGE_PAGE))
    for (i = 0; i < pages; i++) {
        size_t at = (size_t)i * 4096;
        memset((char *)p + at, 0, bytes - at < 4096 ? bytes - at : 4096);
    }
}

/* count x size bytes of zeros, on a cache line, their pages taken now */
static void *xcalloc_touched(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) fatal("out of memory (asked for %zu x %zu bytes)", count, size);
    size_t bytes = count * size, rounded = whole_lines(bytes ? bytes : 1); /* C11: a multiple of the alignment */
    char *p = bytes <= SIZE_MAX - CACHE_LINE ? aligned_alloc(CACHE_LINE, rounded) : NULL;
    if (!p) fatal("out of memory (asked for %zu x %zu bytes)", count, size);
    allocated_bytes += bytes;
#if defined(MADV_HUGEPAGE)
    uintptr_t start = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    uintptr_t end = ((uintptr_t)p + bytes) & ~(uintptr_t)(HUGE_PAGE - 1);
    if (end > start) madvise((void *)start, end - start, MADV_HUGEPAGE); /* only advice: failure changes nothing */
#endif
    zero_pages(p, rounded);
    return p;
}

static void build_quantized_vector(QuantizedVector *v, int n_padded) {
    v->q = xcalloc_touched(n_padded, 1);
    v->scale = xcalloc_touched(n_padded / QK, sizeof(float));
    v->sum = xcalloc_touched(n_padded / QK, sizeof(int32_t));
    v->sum16 = xcalloc_touched(n_padded / 16, sizeof(int16_t));
    v->halves = xcalloc_touched(n_padded, 1);
}

static void free_quantized_vector(QuantizedVector *v) {
    free(v->q), free(v->scale), free(v->sum), free(v->sum16), free(v->halves);
}

/* A chunk's matmul input laid out for the GEMM kernels of prompt processing
   (section 4, "panels"): tokens in panels of GEMM_TOKENS, n_panels = T / 16
   rounded up, zeros past the T tokens. Value k of token j of panel p is at
   x[p][k][j] (fp32), x16[p][k / 2][j][k % 2] (int16 pairs, for gemm_i16) or
   x8[p][k / 4][j][k % 4] (int8 quads, for gemm_u8); scale and sum hold each token's
   per-32 activation scales and sums of q, [p][b][j]. Only what the matrix's
   type needs is packed, once per input: the first matmul of an input packs,
   the others that share it (wk and wv after wq, w3 after w1) find it packed. */
typedef struct {
    unsigned packed; /* the GEMM kinds (bit 1 << kind) packed from the current input; new_matmul_input clears it */
    float *x;
    int16_t *x16;
    int8_t *x8;
    float *scale;
    int32_t *sum;
    void *rows;     /* per thread: a GEMM step's weight rows unpacked (unpack_rows), and their scales */
    size_t row_bytes; /* of `rows` per thread */
    float *sums;      /* per thread: (F32_RUN_STEPS, panels, GEMM_ROWS, GEMM_TOKENS) a run of fp32 steps' sums (steps_f32) */
    size_t sum_floats; /* of `sums` per thread */
} Panels;

/* RoPE's rotations: a frequency per pair of a head, and their cos and sin at
   the positions of the tokens of one forward pass. */
typedef struct {
    float *freq; /* (rope_dim / 2) rotation frequency of each pair */
    float *cos;  /* (T, rope_dim / 2) cos(pos * freq) * scale of each token's position */
    float *sin;  /* (T, rope_dim / 2) */
    float scale; /* 1, or LongRoPE's attention factor */
} RopeTable;

typedef struct {
    int ctx;          /* positions the KV cache holds */
    int max_tokens;   /* tokens one forward pass may take (T below) */
    int max_logits;   /* of which it may return all the logits (all_logits) */
    float *x;         /* (T, dim) the residual stream */
    float *xb;        /* (T, dim) normed input of a block */
    float *xb2;       /* (T, dim) output of a block before it is added to x */
    float *ao;        /* (T, n_heads * head_dim) attention output */
    float *hb;        /* (T, hidden_dim) gate branch of the feed-forward layer */
    float *hb2;       /* (T, hidden_dim) up branch of the feed-forward layer */
    float *q;         /* (T, n_heads * head_dim) queries */
    float *att;       /* (n_heads, ctx) attention scores */
    float *logits;    /* (T, vocab_size) */
    int kv16;           /* the KV cache holds IEEE halves (--kv-cache fp16): half the memory */
    float *key_cache;   /* (n_layers, n_kv_heads, ctx, head_dim), fp32; NULL with kv16 (see cache_at) */
    float *value_cache; /* (n_layers, n_kv_heads, ctx, head_dim), fp32; NULL with kv16 */
    uint16_t *key_cache16;   /* the same in fp16 with kv16, else NULL */
    uint16_t *value_cache16;
    float *kv_new;      /* (2, T, n_kv_heads * head_dim) new keys and values on their way into the cache */
    RopeTable rope[2]; /* [0] for global layers, [1] for sliding-window (local) layers with a base of their own */
    int n_rope;        /* 2 when the local layers have their own RoPE base (Gemma 3), else 1: they share [0] */
    QuantizedVector *xq; /* (T) activations quantized for a matmul */
    Panels panels;       /* a matmul's input packed for the GEMM kernels (matmul_panels) */
    float *att_keys;     /* (n_kv_heads, ctx rounded up to 16, head_dim) a chunk's keys in panels of 16 (attend_panels), or NULL */
    float *att_rows;     /* per thread: (GEMM_ROWS, ctx rounded up to 16) a step's scores (attend_panels) */
    int trace;        /* print each token fed to the model, with its position, on stderr */
    struct TracePage *page; /* --trace-html: what the forward passes record for the page (section 10), or NULL */
} RunState;

/* RoPE frequencies of the global layers (local: 0) or of the sliding-window
   layers that have a base of their own (local: 1; Gemma 3's, unscaled), with the
   file's scaling: Llama 3.1's, linear, or LongRoPE's per-frequency factors,
   long ones when the context (ctx) exceeds the original one, as llama.cpp
   chooses them. Only the first rope_dim values of a head rotate.
   PyTorch (Hugging Face _compute_default_rope_parameters, _compute_llama3_parameters,
   _compute_longrope_parameters):
     inv_freq = 1 / theta ** (arange(0, rope_dim, 2) / rope_dim)
     linear: inv_freq / factor (Gemma 3's global layers)
     longrope: inv_freq / ext_factors (short_factor, or long_factor past orig)
     llama3: wavelen = 2 * pi / inv_freq;
       long wavelengths (> orig / low_freq_factor) are divided by factor,
       short ones (< orig / high_freq_factor) are kept, and those between
       are blended: smooth = (orig / wavelen - low) / (high - low). */
static void rope_frequencies(const Config *c, int local, int ctx, float *freq) {
    int half = c->rope_dim / 2;
    double theta = local ? c->rope_local_theta : c->rope_theta;
    for (int i = 0; i < half; i++) {
        double f = 1.0 / pow(theta, (double)(2 * i) / (double)c->rope_dim);
        if (local) { /* unscaled */
            freq[i] = (float)f;
            continue;
        }
        f /= c->rope_linear_factor;
        if (c->longrope) f /= c->rope_factors[ctx > c->rope_original_seq_len][i];
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


/* Models declare contexts of 32k-128k positions, and a KV cache for all of
   them can outgrow the machine; the allocation itself would succeed (memory
   is only committed when written) and the run would then be killed for
   memory as build_state writes it. So a cache larger than the physical
   memory is refused up front, with a message. */
static void check_memory(uint64_t kv_bytes, int ctx) {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0 && kv_bytes > (uint64_t)pages * (uint64_t)page)
        fatal("the KV cache for %d positions needs %.1f GB, more than this machine's %.1f GB of memory: "
              "ask for fewer positions with -n", ctx, kv_bytes / 1e9, (double)pages * (double)page / 1e9);
#else
    (void)kv_bytes, (void)ctx;
#endif
}

/* Float to IEEE half, rounded to nearest even (overflow to infinity,
   underflow through the subnormals to zero). numpy: x.astype(np.float16) */
static uint16_t fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, exp = (x >> 23) & 0xFF, mant = x & 0x7FFFFF;
    if (exp == 0xFF) return (uint16_t)(sign | 0x7C00u | (mant ? 0x200u : 0)); /* inf, nan */
    int e = (int)exp - 127 + 15;                                               /* the half's exponent */
    if (e >= 31) return (uint16_t)(sign | 0x7C00u);                           /* too large: inf */
    int shift = e > 0 ? 13 : 14 - e;       /* mantissa bits dropped; subnormals drop more */
    if (shift > 24) return (uint16_t)sign; /* too small: zero */
    uint32_t m = e > 0 ? mant : mant | 0x800000u; /* a subnormal keeps the implicit 1 */
    uint32_t half = (e > 0 ? (uint32_t)e << 10 : 0) | (m >> shift), rest = m & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1))) half++; /* a carry may reach the exponent: right */
    return (uint16_t)(sign | half);
}

static void build_state(RunState *s, const Config *c, int ctx, int kv16) {
    memset(s, 0, sizeof(*s));
    int q_dim = c->n_heads * c->head_dim, half = c->rope_dim / 2;
    uint64_t kv_dim = (uint64_t)c->n_kv_heads * c->head_dim;
    int T = ctx < MAX_BATCH ? ctx : MAX_BATCH;
    s->ctx = ctx;
    s->max_tokens = T;
    s->max_logits = T < MAX_LOGITS ? T : MAX_LOGITS;
    s->x = xcalloc_touched((size_t)T * c->dim, sizeof(float));
    s->xb = xcalloc_touched((size_t)T * c->dim, sizeof(float));
    s->xb2 = xcalloc_touched((size_t)T * c->dim, sizeof(float));
    s->ao = xcalloc_touched((size_t)T * q_dim, sizeof(float));
    s->hb = xcalloc_touched((size_t)T * c->hidden_dim, sizeof(float));
    s->hb2 = xcalloc_touched((size_t)T * c->hidden_dim, sizeof(float));
    s->q = xcalloc_touched((size_t)T * q_dim, sizeof(float));
    s->att = xcalloc_touched((size_t)c->n_heads * ctx, sizeof(float));
    s->logits = xcalloc_touched((size_t)s->max_logits * c->vocab_size, sizeof(float));
    uint64_t cache = (uint64_t)c->n_layers * ctx * kv_dim;
    if (cache > SIZE_MAX / sizeof(float)) fatal("KV cache of %llu floats is too large", (unsigned long long)cache);
    size_t element = kv16 ? sizeof(uint16_t) : sizeof(float);
    check_memory(2 * cache * element, ctx);
    s->kv16 = kv16;
    s->kv_new = xcalloc_touched((size_t)2 * T * kv_dim, sizeof(float));
    if (kv16) {
        s->key_cache16 = xcalloc_touched((size_t)cache, element);
        s->value_cache16 = xcalloc_touched((size_t)cache, element);
    } else {
        s->key_cache = xcalloc_touched((size_t)cache, element);
        s->value_cache = xcalloc_touched((size_t)cache, element);
    }
    s->n_rope = c->rope_local_theta != 0.0f ? 2 : 1;
    for (int local = 0; local < s->n_rope; local++) {
        RopeTable *rt = &s->rope[local];
        rt->freq = xcalloc_touched(half, sizeof(float));
        rt->cos = xcalloc_touched((size_t)T * half, sizeof(float));
        rt->sin = xcalloc_touched((size_t)T * half, sizeof(float));
        rope_frequencies(c, local, ctx, rt->freq);
        rt->scale = local ? 1.0f : c->rope_attn_factor;
    }
    /* the widest matmul input, in whole blocks */
    int widest = c->dim > q_dim ? c->dim : q_dim;
    if (c->hidden_dim > widest) widest = c->hidden_dim;
    int padded = (widest + QK - 1) / QK * QK;
    s->xq = xcalloc_touched(T, sizeof(QuantizedVector));
    size_t slots = (size_t)(T + GEMM_TOKENS - 1) / GEMM_TOKENS * GEMM_TOKENS; /* tokens of the panels */
    int threads = max_threads();
    s->panels.x = xcalloc_touched(slots * padded, sizeof(float));
    s->panels.sum_floats = (size_t)F32_RUN_STEPS * slots * GEMM_ROWS;
    s->panels.sums = xcalloc_touched((size_t)threads * s->panels.sum_floats, sizeof(float));
    if (!kv16 && T >= GEMM_TOKENS && c->head_dim % GEMM_TOKENS == 0) {
        size_t positions = (size_t)(ctx + GEMM_TOKENS - 1) / GEMM_TOKENS * GEMM_TOKENS; /* whole panels */
        s->att_keys = xcalloc_touched(kv_dim * positions, sizeof(float));
        s->att_rows = xcalloc_touched((size_t)threads * GEMM_ROWS * positions, sizeof(float));
    }
    if (c->quantized) {
        s->panels.x16 = xcalloc_touched(slots * padded, sizeof(int16_t));
        s->panels.x8 = xcalloc_touched(slots * padded, 1);
        s->panels.scale = xcalloc_touched(slots * (padded / QK), sizeof(float));
        s->panels.sum = xcalloc_touched(slots * (padded / QK), sizeof(int32_t));
        /* each thread's part on a cache line */
        s->panels.row_bytes = whole_lines((size_t)GEMM_ROWS * (padded * sizeof(int16_t) + 2 * (padded / QK) * sizeof(float)));
        s->panels.rows = xcalloc_touched((size_t)threads, s->panels.row_bytes);
    }
    for (int t = 0; t < T; t++) build_quantized_vector(&s->xq[t], padded);
}

static void free_state(RunState *s) {
    for (int t = 0; t < s->max_tokens; t++) free_quantized_vector(&s->xq[t]);
    free(s->xq), free(s->panels.x), free(s->panels.x16), free(s->panels.x8), free(s->panels.scale), free(s->panels.sum);
    free(s->panels.rows), free(s->panels.sums), free(s->att_keys), free(s->att_rows);
    free(s->x); free(s->xb); free(s->xb2); free(s->ao); free(s->hb); free(s->hb2); free(s->q); free(s->att);
    free(s->logits); free(s->key_cache); free(s->value_cache);
    free(s->key_cache16); free(s->value_cache16); free(s->kv_new);
    for (int local = 0; local < 2; local++) free(s->rope[local].freq), free(s->rope[local].cos), free(s->rope[local].sin);
}

/* ========================================================================== */
/* 4. Kernels                                                                 */
/* ========================================================================== */

/* The index of the largest of x[0 .. n - 1] (the first, on ties) */
static int argmax(const float *x, int n) {
    int best = 0;
    float best_value = x[0]; /* kept in a register: x[best] would be a load on every step's critical path */
    for (int i = 1; i < n; i++)
        if (x[i] > best_value) best = i, best_value = x[i];
    return best;
}

/* Rotary position embedding on n_heads heads of width head_dim, in place.
   Each pair (x[2i], x[2i+1]) of a head's first rope_dim values (all of them
   but in Phi-4-mini) is rotated by the angle pos * freq[i]:
     x[2i]   = x[2i] * cos - x[2i+1] * sin
     x[2i+1] = x[2i] * sin + x[2i+1] * cos
   (Meta's layout. Hugging Face rotates (x[i], x[i + rope_dim/2]) instead;
   export.py reorders the rows of wq and wk so both compute the same.) */
static void rope(float *x, int n_heads, int head_dim, int rope_dim, const float *cos_t, const float *sin_t) {
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < rope_dim / 2; i++) { /* pairs past rope_dim (Phi-4-mini) stay as they are */
            float a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * cos_t[i] - b * sin_t[i];
            v[2 * i + 1] = a * sin_t[i] + b * cos_t[i];
        }
    }
}

/* ---- dot products: the inner loop of every matmul ----

   Each has a plain scalar version, the definition, and SIMD versions for
   x86 AVX2 (with FMA and F16C; AVX-512 machines run it too) and ARM NEON,
   chosen at compile time (make fast builds for this machine; -DRUN_SCALAR
   forces the scalar ones). The tests hold each SIMD version to its scalar
   one.

   VNNI: where the machine has it (AVX512-VNNI with AVX512-VL: Zen 4, Ice
   Lake and later Xeons; or AVX-VNNI: Alder Lake and later), the AVX2 kernels
   do their integer multiply-adds with one instruction each, on the same
   256-bit registers and data layout: dpbusd (32 products of unsigned by
   signed bytes, summed in fours and added to 8 int32) and dpwssd (16 products
   of int16, summed in pairs and added to 8 int32). Without VNNI the same sums
   take two or three instructions (maddubs or madd, widen, add): see
   dot_u8_s8, dot_i16_add2, pair_dot_q4 and gemm_u8_half. The sums are the same
   integers either way.
   (The tests also build this path on machines without VNNI, with the two
   instructions emulated: tests/harness_vnni.c defines RUN_VNNI.) */

#if defined(RUN_SCALAR)
#define SIMD_NAME "scalar"
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define USE_AVX2 1
#if ((defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)) || \
     defined(RUN_AVX512)) && !defined(RUN_NO_AVX512)
#define USE_AVX512 1 /* the GEMM steps in 512-bit registers (section "AVX-512"); the rest as below */
#define USE_VNNI 1
#define dpbusd _mm256_dpbusd_epi32
#define dpwssd _mm256_dpwssd_epi32
#define SIMD_NAME "AVX-512+VNNI"
#elif (defined(__AVX512VNNI__) && defined(__AVX512VL__)) || defined(RUN_VNNI)
#define USE_VNNI 1
#define dpbusd _mm256_dpbusd_epi32
#define dpwssd _mm256_dpwssd_epi32
#define SIMD_NAME "AVX2+VNNI"
#elif defined(__AVXVNNI__)
#define USE_VNNI 1
#define dpbusd _mm256_dpbusd_avx_epi32
#define dpwssd _mm256_dpwssd_avx_epi32
#define SIMD_NAME "AVX2+AVX-VNNI"
#else
#define SIMD_NAME "AVX2"
#endif
#elif defined(__ARM_NEON) && defined(__aarch64__)
#define USE_NEON 1
#define SIMD_NAME "NEON"
#else
#define SIMD_NAME "scalar"
#endif
#if defined(USE_AVX2)
#include <immintrin.h>
#elif defined(USE_NEON)
#include <arm_neon.h>
#endif

/* Weight rows of one q6_k GEMM step, or q8_0's without VNNI (gemm_i16): 3,
   whose sums and panel vectors fill AVX2's 16 registers, or 6 in AVX-512's
   32 (in cache, one thread: 107 -> 143 billion multiply-adds per second
   against 3) */
#if defined(USE_AVX512)
#define GEMM_ROWS_I16 6
#else
#define GEMM_ROWS_I16 3
#endif
/* Panels of one GEMM step: 2 with AVX-512 (gemm_*_pair), else 1 */
#if defined(USE_AVX512)
#define GEMM_PANELS 2
#else
#define GEMM_PANELS 1
#endif
_Static_assert(GEMM_ROWS_I16 <= GEMM_ROWS, "a step's rows fit the scratch and the output of GEMM_ROWS");

/* Generation streams every weight row from memory once per token. On ARM
   the quantized dot products ask for the bytes PREFETCH_AHEAD past those
   they are reading (4096, as first chosen: ARM's prefetchers differ and no
   ARM machine here can time it; a prefetch is only a hint and never faults,
   even past the end of the weights). The x86 ones take distances of their
   own (prefetch_row, below): every row is one stream of bytes now (q8_0
   and q4_0 since format version 3, the K blocks always), which a Zen's
   hardware prefetcher follows by itself, and there asking for the bytes
   1.25 KB ahead into L1 made them slower (a Zen 5, 1.1B shape, alternating:
   q4_0 72-75 against 77-83 tok/s; q4_k 47.6-49.2 against 49.7-53.3, q4_k_m
   46.7-49.8 against 49.8-53.9), where an Intel Xeon wants it. (It had
   been chosen when q8_0's and q4_0's scales lay apart from their values:
   TinyLlama-1.1B q8_0 on 2 threads 13.2 -> 15.9 tokens/s against none;
   nearer was better than farther, 4 KB ahead 16.1 and 1280 bytes 19.3
   tok/s, the prefetches outrunning the hardware's and becoming misses of
   their own.) */
#ifndef PREFETCH_AHEAD /* cc -DPREFETCH_AHEAD=... to try another */
#define PREFETCH_AHEAD 4096
#endif
#if defined(__GNUC__)
#define prefetch(p) __builtin_prefetch(p)
#else
#define prefetch(p) ((void)(p))
#endif
/* The same, in a loop that does nothing else (prefetch_rows): GCC deletes
   such a loop of __builtin_prefetch as having no effect, so on x86 the
   instruction is written out. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define prefetch_kept(p) __asm__ __volatile__("prefetcht0 %0" : : "m"(*(const char *)(p)))
#define prefetch_l2_kept(p) __asm__ __volatile__("prefetcht1 %0" : : "m"(*(const char *)(p))) /* into L2 */
#elif defined(__GNUC__)
#define prefetch_kept(p) prefetch(p)
#define prefetch_l2_kept(p) __builtin_prefetch(p, 0, 2)
#else
#define prefetch_kept(p) prefetch(p)
#define prefetch_l2_kept(p) ((void)(p))
#endif

/* The x86 kernels' prefetches (the rows of generation's quantized dot
   products): into L2, further ahead, and into L1, nearer, each distance in
   bytes past the bytes being read, 0 for none (prefetch_row).
   On the Zen 5 of the AVX-512 build, with the scales of q4_0 apart from its
   values, the one into L1 (then PREFETCH_AHEAD's) alone did not keep the
   kernel's loads from waiting on memory (tools/stream.c: its matmul at
   59-65% of the read, q8_0 at 82-86%); one into L2 8 KB ahead took them to
   74-81% and 81-90%, and generation of the 1.1B shape, alternating, q4_0
   72-75 -> 80 tok/s, q8_0 47-49 -> 49-50, q4_k_m 60.2-62.3 -> 61.0-63.5.
   With the scales among the values (section 2's groups), q8_0 and q4_0 read
   one stream per row and took the one into L2 alone: the one into L1 made
   them slower (1.1B q4_0 72-75 against 77-83 tok/s without it), and the
   one into L2 still helped a little (84-86 against 77-83; q8_0 43-51
   against 42-46); the K-quant rows kept it too. fp32's dot_f32, which has
   no prefetch, lost with it (1.1B 13.8-14.1 -> 13.0-13.3 tok/s). The
   256-bit build's machines then (Zen 2 and 3, where a single prefetch 4 KB
   ahead lost) could not time the one into L2, so it was off there and the
   rows were left to the hardware prefetcher (on that Zen 5, the 256-bit
   build so: 1.1B q4_0 49-57 -> 59-73 tok/s, q8_0 34-35 -> 39-42, against
   the scales apart with both prefetches).
   An Intel Xeon (family 6, model 207; 7 December 2026) wants both, in
   either build: timing every other generated token of one run with each
   (1.1B shape, 2 threads), the one into L1 2 KB ahead on top of the one
   into L2 took 3.8% off the time of a q8_0 token, 5.2% off q4_0's, 5.5%
   off q4_k's and 8% off q4_k_m's (1, 2 and 4 KB ahead alike, 256 and 512
   bytes less); without the one into L2 it was 2-9% slower than the one
   into L2 alone. The 256-bit build there: both against none, 40% less time
   a token (q4_0 34.6 -> 20.9 ms, q8_0 56.1 -> 37.5, q4_k_m 42.5 -> 25.4),
   both against the one into L2 alone 4-8% less.
   fp32's rows too, there, the same way: generating, 1.1B fp32 21.6% less
   time a token with both than with none (into L1 alone 14.5%, into L2
   alone 13.6%), stories110M fp32 20-26% (into L1 alone 21%, into L2 alone
   11%).
   A second Xeon (family 6, "model 167" as KVM names it, with a 480 MB L3;
   a later session of 7 December 2026) wants the one into L2 nearer: 4.5 KB
   ahead against 8 KB, timing every other generated token of one run with
   each (1.1B shape, 2 threads, either distance timed first), took 5.0-6.0%
   off the time of a q4_0 token, 6.3-6.8% off q8_0's, 6.7% off q4_k_m's and
   11.4-12.2% off fp32's (the 256-bit build: q4_0 3.8-4.3%, q8_0 7.0%);
   whole builds, alternating: 1.1B q4_0 47.0-48.6 -> 51.1-51.2 tok/s, q8_0
   23.8-24.0 -> 27.3-28.2, q4_k_m 40.3-40.8 -> 42.9-43.5, fp32 7.04-7.07 ->
   7.55-7.67. Around it, against 4.5 KB: 4 and 5 KB about level (q4_0
   within 0.7%; fp32 4 KB +1.2-1.6%), 3.75 KB +2%, 5.5 KB +2.6-3.3% (fp32,
   q4_k_m), 6 KB and 8 KB +5-6%, 3 KB +6.5%; the one into L1 at 1 KB
   instead of 2 KB +0.5-1.3%. There the
   matmuls alone (tools/stream.c) went from 83-84% of the read to 90-92%.
   Weights read from that L3 instead (stories110M's 70 MB of q4_0) did
   better 8 KB ahead: 4.5 KB cost 1.4-7.3% a token (stories110M fp32, 440
   MB, gained 9.3-9.9%): once the model is known, those whose weights the
   L3 holds take 8 KB (fit_prefetch, below). Both Xeons take 4.5 KB for the
   others: on the first, without the one into L1, 4 to 64 KB had measured
   alike.
   Which pays depends on the core's maker more than on the instruction set
   a build has, so the distances are chosen when the program starts
   (choose_prefetch): AMD's cores get what their Zens measured (into L2 8 KB
   ahead in the AVX-512 build, none in the 256-bit one; none into L1; none
   for fp32's rows, prefetch_fp32), the others the Xeons' (into L2 4.5 KB
   ahead, or 8 KB for weights the L3 holds, fit_prefetch; into L1 2 KB;
   fp32's rows too). cc -DPREFETCH_L2_AHEAD=... or
   -DPREFETCH_L1_AHEAD=... fixes one for any core (tools/stream.c times
   them). */
#if defined(USE_AVX2)
#if defined(PREFETCH_L2_AHEAD)
static int prefetch_l2_ahead = PREFETCH_L2_AHEAD;
#else
static int prefetch_l2_ahead = 4608;
#endif
#if defined(PREFETCH_L1_AHEAD)
static int prefetch_l1_ahead = PREFETCH_L1_AHEAD;
#else
static int prefetch_l1_ahead = 2048;
#endif

static int prefetch_fp32 = 1; /* whether dot_f32 prefetches its rows (prefetch_row) */

/* Runs before main (a GCC and clang constructor), so that every program
   built from this file, the tests' and the tools' too, reads rows alike. */
#if defined(__GNUC__)
__attribute__((constructor)) static void choose_prefetch(void) {
    __builtin_cpu_init();
    if (!__builtin_cpu_is("amd")) return;
#if !defined(PREFETCH_L2_AHEAD) && defined(USE_AVX512)
    prefetch_l2_ahead = 8192;
#elif !defined(PREFETCH_L2_AHEAD)
    prefetch_l2_ahead = 0;
#endif
#if !defined(PREFETCH_L1_AHEAD)
    prefetch_l1_ahead = 0;
#endif
    prefetch_fp32 = 0;
}
#endif

/* This core's last-level (L3) cache in bytes; 0 where the system does not say. */
static uint64_t l3_cache_bytes(void) {
#if defined(_SC_LEVEL3_CACHE_SIZE)
    long bytes = sysconf(_SC_LEVEL3_CACHE_SIZE); /* glibc's */
    return bytes > 0 ? (uint64_t)bytes : 0;
#else
    return 0;
#endif
}

/* The one into L2 on a core not AMD's, for a model whose generated tokens
   read weight_bytes each, on a core with an L3 cache of l3 bytes (0:
   unknown): 8 KB ahead where the L3 holds three times the weights, else 4.5
   KB. Weights that the L3 serves, every token, want it farther ahead than
   weights from memory. On the second Xeon above (503 MB of L3 as the system
   gives it, shared with the host's other machines: a read of 100 MB ran at
   52 GB/s there, of 200 MB at 41, of 582 MB at 35, from memory), timing
   every other generated token of one run with each, either first, 2
   threads, 8 KB against 4.5 KB a token's time: stories110M q8_0 (116 MB a
   token) -9.4% and -8.5% (the 256-bit build -8.1% and -7.5%), q4_0 (62 MB)
   -5.0% and -3.5%, q4_k -1.9% and -1.7%, q4_k_m -3.5% and -2.5%; the 1.1B
   shape cut to 4 layers, q4_0 (136 MB), -6.9% and -9.7% (256-bit: -3.6%,
   -6.9%); but cut to 8 layers (235 MB) +3.1% and +2.3%, to 12 (334 MB)
   +5.9% and +6.4%, 4 layers of q8_0 (257 MB) +6.1% and +5.9%, and the
   whole 1.1B shape (582 MB) +5-6% (above). Models of a few MB, which stay
   in L2 and L3 either way, measured level (stories15M q4_0 +1.7% and
   -1.3%, fp32 +0.0% and -0.2%). The turn lies between 136 and 235 MB: a
   third of this L3 is 168 MB. */
static int l2_ahead_for(uint64_t weight_bytes, uint64_t l3) {
    return l3 > 0 && weight_bytes <= l3 / 3 ? 8192 : 4608;
}

/* Once the model is known: the distance into L2 for its weights (l2_ahead_for), on a core not AMD's. */
static void fit_prefetch(uint64_t weight_bytes) {
#if defined(__GNUC__) && !defined(PREFETCH_L2_AHEAD)
    if (!__builtin_cpu_is("amd")) prefetch_l2_ahead = l2_ahead_for(weight_bytes, l3_cache_bytes());
#else
    (void)weight_bytes, (void)l2_ahead_for; /* a distance fixed by cc -DPREFETCH_L2_AHEAD=... stays */
#endif
}

/* Asks for the bytes prefetch_l2_ahead past p into L2, and prefetch_l1_ahead past it into L1. */
static inline void prefetch_row(const void *p) {
#if defined(__GNUC__)
    if (prefetch_l2_ahead) __builtin_prefetch((const char *)p + prefetch_l2_ahead, 0, 2);
    if (prefetch_l1_ahead) __builtin_prefetch((const char *)p + prefetch_l1_ahead);
#else
    (void)p;
#endif
}
#else
static void fit_prefetch(uint64_t weight_bytes) { (void)weight_bytes; } /* no prefetch distances to fit */
#endif

/* q8_0's values as bytes for gemm_u8 (section 4, the GEMM steps): with
   VNNI, dpbusd adds products of unsigned bytes, up to 255, straight into
   int32 sums, so q8_0's values q (-128..127) moved to u = q + 128 (0..255;
   in bits, q ^ 0x80) take gemm_u8 with an offset of 128 x the scale, as
   q4_0's nibbles take it with an offset of 8: per block,
   sum((u - 128) q_x) = sum(u q_x) - 128 sum(q_x). Where the sums go through
   int16 (maddubs, without VNNI: a pair of 255 x 127 products overflows
   them) q8_0 keeps gemm_i16's int16 values. gemm_u8 takes bytes up to
   GEMM_U8_MAX. */
#if defined(USE_VNNI)
#define Q8_0_AS_BYTES 1
#define GEMM_U8_MAX 255
#else
#define Q8_0_AS_BYTES 0
#define GEMM_U8_MAX 15
#endif

/* gemm_u8's offset of a q8_0 or q4_0 row, in units of its blocks' scales:
   the weight is (u - offset) * scale (unused where q8_0 takes gemm_i16) */
static float u8_offset(int type) { return type == WEIGHT_Q8_0 ? 128.0f : 8.0f; }

/* The scalar versions are not static: the tests call them even in builds
   where a SIMD version does the work. */

/* sum(a[i] * b[i]) for fp32 */
float dot_f32_scalar(const float *a, const float *b, int n) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) sum += a[i] * b[i];
    return sum;
}

/* Activations are quantized like q8_0 weights before a quantized matmul, so
   that each block is an integer dot product (as llama.cpp does): scale =
   max |x| / 127 over the block, q = round(x / scale) (to nearest, ties to
   even; x * (1 / scale), exactly so in the SIMD version). Blocks are of 32
   values for q8_0 and q4_0 weights, and of 256 (n a multiple of 256) for
   the K types, whose kernels then sum integers over a whole K block and
   convert once. Either way scale[] and sum[] have one entry per 32 values
   (a block of 256 repeats its scale 8 times). A block's values past n are
   padding, quantized as 0. */
void quantize_vector_scalar(QuantizedVector *out, const float *x, int n, int n_padded, int block) {
    for (int start = 0; start < n_padded; start += block) {
        float amax = 0.0f;
        for (int j = start; j < start + block && j < n; j++) {
            float a = fabsf(x[j]);
            amax = a > amax ? a : amax;
        }
        float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        for (int b = start / QK; b < (start + block) / QK; b++) {
            int32_t sum[2] = {0, 0}; /* of each half */
            for (int j = b * QK; j < (b + 1) * QK; j++) {
                int q = j < n ? (int)lrintf(x[j] * inv) : 0;
                out->q[j] = (int8_t)q;
                sum[(j - b * QK) / 16] += q;
            }
            out->scale[b] = d;
            out->sum[b] = sum[0] + sum[1];
            out->sum16[2 * b] = (int16_t)sum[0], out->sum16[2 * b + 1] = (int16_t)sum[1];
        }
    }
}

/* Row of a q8_0 matrix (its blocks and scales in groups, section 2) .
   quantized x: per block, (sum of q_w * q_x) * scale_w * scale_x */
float dot_q8_scalar(const uint8_t *row, const QuantizedVector *x, int n_blocks) {
    float sum = 0.0f;
    for (int b = 0; b < n_blocks; b++) {
        const int8_t *w = (const int8_t *)q_block(row, b, n_blocks, QK);
        int32_t acc = 0;
        for (int j = 0; j < QK; j++) acc += (int32_t)w[j] * x->q[b * QK + j];
        sum += (float)acc * fp16_to_fp32(q_scale_bits(row, b, QK)) * x->scale[b];
    }
    return sum;
}

/* Row of a q4_0 matrix . quantized x. Byte j of a block holds weights j (low
   nibble) and j + 16 (high nibble), each stored as q + 8 in [0, 15]; so the
   block's sum of q_w * q_x is sum(nibble * q_x) - 8 * sum(q_x). */
float dot_q4_scalar(const uint8_t *row, const QuantizedVector *x, int n_blocks) {
    float sum = 0.0f;
    for (int b = 0; b < n_blocks; b++) {
        const uint8_t *wb = q_block(row, b, n_blocks, QK / 2);
        const int8_t *xb = x->q + b * QK;
        int32_t acc = 0;
        for (int j = 0; j < QK / 2; j++) acc += (wb[j] & 15) * xb[j] + (wb[j] >> 4) * xb[j + QK / 2];
        sum += (float)(acc - 8 * x->sum[b]) * fp16_to_fp32(q_scale_bits(row, b, QK / 2)) * x->scale[b];
    }
    return sum;
}

/* A tile: 2 weight rows x 4 tokens, the 8 dot products of prompt processing
   done together (section "tiles" below for why). This is its definition:
   out[r][t] = row r . token t, eight scalar dot products. x holds the 4
   tokens one after another (fp32: n floats each). */
void tile_f32_scalar(const float *w0, const float *w1, const float *x, int n, float out[2][4]) {
    for (int t = 0; t < 4; t++) {
        out[0][t] = dot_f32_scalar(w0, x + (size_t)t * n, n);
        out[1][t] = dot_f32_scalar(w1, x + (size_t)t * n, n);
    }
}

void tile_q8_scalar(const uint8_t *row0, const uint8_t *row1, const QuantizedVector *x, int n_blocks, float out[2][4]) {
    for (int t = 0; t < 4; t++) {
        out[0][t] = dot_q8_scalar(row0, &x[t], n_blocks);
        out[1][t] = dot_q8_scalar(row1, &x[t], n_blocks);
    }
}

void tile_q4_scalar(const uint8_t *row0, const uint8_t *row1, const QuantizedVector *x, int n_blocks, float out[2][4]) {
    for (int t = 0; t < 4; t++) {
        out[0][t] = dot_q4_scalar(row0, &x[t], n_blocks);
        out[1][t] = dot_q4_scalar(row1, &x[t], n_blocks);
    }
}

/* A column: 4 weight rows x 1 token, the 4 dot products of generation done
   together (section "columns" below for why). This is its definition:
   out[r] = row r . x, for the 4 rows that start at `rows`, one after another
   as in a matrix. */
void column_q8_scalar(const uint8_t *rows, const QuantizedVector *x, int n_blocks, float out[4]) {
    for (int r = 0; r < 4; r++) out[r] = dot_q8_scalar(rows + r * q_row_bytes(n_blocks, QK), x, n_blocks);
}

void column_q4_scalar(const uint8_t *rows, const QuantizedVector *x, int n_blocks, float out[4]) {
    for (int r = 0; r < 4; r++) out[r] = dot_q4_scalar(rows + r * q_row_bytes(n_blocks, QK / 2), x, n_blocks);
}

/* The GEMM steps of prompt processing (section "panels" below for why): a
   few weight rows against a panel of GEMM_TOKENS tokens (the Panels layout,
   section 3), out[r][j] = row r . token j. These are their definitions.
   fp32: up to GEMM_ROWS rows of w, one every `stride` floats, against a
   panel whose value k of its 16 tokens is at panel[k * panel_stride + j]
   (GEMM_TOKENS for a packed panel; attention reads the cached values in
   place, one position every kv_dim floats). Rows past `rows` hold no result
   (the SIMD versions fill them with repeats). */
void gemm_f32_scalar(const float *w, size_t stride, int rows, const float *panel, size_t panel_stride, int n,
                     float out[GEMM_ROWS][GEMM_TOKENS]) {
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < GEMM_TOKENS; j++) {
            float sum = 0.0f;
            for (int k = 0; k < n; k++) sum += w[r * stride + k] * panel[k * panel_stride + j];
            out[r][j] = sum;
        }
}

/* Quantized weights are unpacked per step into one of two forms (unpack_rows).
   gemm_i16: GEMM_ROWS_I16 rows of int16 weights (w16, n_blocks * 32 each; q6_k's
   values times their group's integer scale, or q8_0's values where q8_0 does not
   take gemm_u8: Q8_0_AS_BYTES) with a float
   scale per 32 (ws, n_blocks each), against the int16 pairs of a panel (x16)
   and its scales (xs): per block, the integer sum of products times weight
   scale x activation scale. */
void gemm_i16_scalar(const int16_t *w16, const float *ws, int n_blocks, const int16_t *x16, const float *xs,
                     float out[GEMM_ROWS][GEMM_TOKENS]) {
    for (int r = 0; r < GEMM_ROWS_I16; r++)
        for (int j = 0; j < GEMM_TOKENS; j++) {
            float sum = 0.0f;
            for (int b = 0; b < n_blocks; b++) {
                int32_t dot = 0;
                for (int k = b * QK; k < (b + 1) * QK; k++)
                    dot += w16[(size_t)r * n_blocks * QK + k] * x16[((size_t)(k / 2) * GEMM_TOKENS + j) * 2 + k % 2];
                sum += (float)dot * (ws[r * n_blocks + b] * xs[b * GEMM_TOKENS + j]);
            }
            out[r][j] = sum;
        }
}

/* gemm_u8: GEMM_ROWS rows of unsigned weights u one per byte, in row order
   (wu), each weight u * ws - wm with a scale and an offset per 32 (q4_0: u
   0..15, ws = scale, wm = 8 * scale; q4_k: u 0..15, d * scale_i and dmin *
   min_i; with VNNI q8_0 too: u = q + 128, wm = 128 * scale, Q8_0_AS_BYTES), against
   the int8 quads of a panel (x8), its scales (xs) and sums of q (xsum):
   per block, (ws * sum(u * q_x) - wm * sum(q_x)) * activation scale. */
void gemm_u8_scalar(const uint8_t *wu, const float *ws, const float *wm, int n_blocks, const int8_t *x8,
                    const float *xs, const int32_t *xsum, float out[GEMM_ROWS][GEMM_TOKENS]) {
    for (int r = 0; r < GEMM_ROWS; r++)
        for (int j = 0; j < GEMM_TOKENS; j++) {
            float sum = 0.0f;
            for (int b = 0; b < n_blocks; b++) {
                int32_t dot = 0;
                for (int k = b * QK; k < (b + 1) * QK; k++)
                    dot += wu[(size_t)r * n_blocks * QK + k] * x8[((size_t)(k / 4) * GEMM_TOKENS + j) * 4 + k % 4];
                float x_scale = xs[b * GEMM_TOKENS + j];
                sum += (float)dot * (ws[r * n_blocks + b] * x_scale) -
                       wm[r * n_blocks + b] * (x_scale * (float)xsum[b * GEMM_TOKENS + j]);
            }
            out[r][j] = sum;
        }
}

/* ---- K-quants: ggml's Q4_K and Q6_K, blocks of 256 weights ----
   Their activations are quantized in blocks of 256 too (quantize_vector
   with block QK_K): K block b meets values 256b .. 256b + 255, which share
   one scale s = x->scale[8b], so the integer products of the whole block,
   each group times its integer scale, add up as integers and become a float
   once per block. x->sum[8b + i] is the sum of the q of group i (values
   32i .. 32i + 31 of the block). One quantization serves every matrix that
   reads an input, whatever its type (a Q4_K_M file mixes Q4_K and Q6_K
   matrices that read the same input, and q8_0/q4_0 read blocks of 256 as
   blocks of 32 of equal scale). */

/* fp16 at p (K blocks hold their scales unaligned) */
static float fp16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return fp16_to_fp32(h);
}

/* Q4_K's 12 bytes -> 8 scales and 8 mins of 6 bits, one of each per group
   of 32. The first four of each sit in the low 6 bits of bytes 0-3 (scales)
   and 4-7 (mins); the last four in the low (scales) and high (mins) nibbles
   of bytes 8-11, with their top two bits in the top bits of bytes 0-3 and
   4-7. Done on 32-bit words, four bytes at a time (little-endian). */
static void q4k_scales(const uint8_t *s, uint8_t sc[8], uint8_t mn[8]) {
    uint32_t a[3], out[4];
    memcpy(a, s, 12);
    out[0] = a[0] & 0x3f3f3f3fu;                                            /* scales 0-3 */
    out[1] = (a[2] & 0x0f0f0f0fu) | (((a[0] >> 6) & 0x03030303u) << 4);     /* scales 4-7 */
    out[2] = a[1] & 0x3f3f3f3fu;                                            /* mins 0-3 */
    out[3] = ((a[2] >> 4) & 0x0f0f0f0fu) | (((a[1] >> 6) & 0x03030303u) << 4); /* mins 4-7 */
    memcpy(sc, out, 8);
    memcpy(mn, out + 2, 8);
}

/* Q4_K's nibble of value v (0..255) of a block: bytes 32c .. 32c + 31 of its
   128 hold group 2c in their low nibbles and group 2c + 1 in their high ones. */
static int q4k_nibble(const uint8_t *blk, int v) {
    int group = v / 32;
    return (blk[16 + (group / 2) * 32 + v % 32] >> (group % 2 * 4)) & 15;
}

/* Row of a q4_k matrix . quantized x. A block: fp16 d, fp16 dmin, 12 bytes of
   scales and mins, 128 bytes of nibbles; weight = d * scale[i] * nibble -
   dmin * min[i] in group i. Against activation values q_x of scale s, with
   S_i the sum of group i's q_x, a block gives
     s * (d * sum_i scale[i] * sum(nibble * q_x) - dmin * sum_i min[i] * S_i) */
float dot_q4k_scalar(const uint8_t *w, const QuantizedVector *x, int n_blocks) {
    float sum = 0.0f;
    for (int b = 0; b < n_blocks; b++) {
        const uint8_t *blk = w + (size_t)b * Q4K_BYTES;
        const int8_t *xq = x->q + (size_t)b * QK_K;
        uint8_t sc[8], mn[8];
        q4k_scales(blk + 4, sc, mn);
        int32_t products = 0, mins = 0;
        for (int i = 0; i < 8; i++) {
            int32_t acc = 0;
            for (int j = 0; j < 32; j++) acc += q4k_nibble(blk, i * 32 + j) * xq[i * 32 + j];
            products += sc[i] * acc;
            mins += mn[i] * x->sum[b * 8 + i];
        }
        sum += x->scale[b * 8] * (fp16_at(blk) * (float)products - fp16_at(blk + 2) * (float)mins);
    }
    return sum;
}

/* Q6_K's value v (0..255) of a block, in [-32, 31]: 4 low bits from the first
   128 bytes, 2 high bits from the next 64, minus 32. Each half of the block
   (128 values) has 64 bytes of low bits and 32 of high bits; its value 32j + l
   takes the low (j < 2) or high nibble of low-bit byte 32 * (j % 2) + l, and
   bits 2j, 2j + 1 of high-bit byte l. */
static int q6k_value(const uint8_t *blk, int v) {
    int half = v / 128, j = v % 128 / 32, l = v % 32;
    int low = (blk[half * 64 + (j % 2) * 32 + l] >> (j / 2 * 4)) & 15;
    int high = (blk[128 + half * 32 + l] >> (2 * j)) & 3;
    return (low | high << 4) - 32;
}

/* Row of a q6_k matrix . quantized x. A block: the 6-bit values, 16 int8
   scales (one per 16 values) and fp16 d; weight = d * scale[v / 16] * value,
   so a block gives s * d * sum_v scale[v / 16] * value_v * q_x,v. */
float dot_q6k_scalar(const uint8_t *w, const QuantizedVector *x, int n_blocks) {
    float sum = 0.0f;
    for (int b = 0; b < n_blocks; b++) {
        const uint8_t *blk = w + (size_t)b * Q6K_BYTES;
        const int8_t *scales = (const int8_t *)(blk + 192), *xq = x->q + (size_t)b * QK_K;
        int32_t products = 0;
        for (int v = 0; v < QK_K; v++) products += scales[v / 16] * q6k_value(blk, v) * xq[v];
        sum += x->scale[b * 8] * fp16_at(blk + 208) * (float)products;
    }
    return sum;
}

/* One K block's 256 weights as floats (the embedding lookup, and the tests). */
void dequantize_k_block(int type, const uint8_t *blk, float out[QK_K]) {
    if (type == WEIGHT_Q4_K) {
        uint8_t sc[8], mn[8];
        q4k_scales(blk + 4, sc, mn);
        float d = fp16_at(blk), dmin = fp16_at(blk + 2);
        for (int v = 0; v < QK_K; v++) out[v] = d * sc[v / 32] * q4k_nibble(blk, v) - dmin * mn[v / 32];
    } else {
        float d = fp16_at(blk + 208);
        for (int v = 0; v < QK_K; v++) out[v] = d * ((const int8_t *)(blk + 192))[v / 16] * q6k_value(blk, v);
    }
}

void tile_q4k_scalar(const uint8_t *w0, const uint8_t *w1, const QuantizedVector *x, int n_blocks, float out[2][4]) {
    for (int t = 0; t < 4; t++) {
        out[0][t] = dot_q4k_scalar(w0, &x[t], n_blocks);
        out[1][t] = dot_q4k_scalar(w1, &x[t], n_blocks);
    }
}

void tile_q6k_scalar(const uint8_t *w0, const uint8_t *w1, const QuantizedVector *x, int n_blocks, float out[2][4]) {
    for (int t = 0; t < 4; t++) {
        out[0][t] = dot_q6k_scalar(w0, &x[t], n_blocks);
        out[1][t] = dot_q6k_scalar(w1, &x[t], n_blocks);
    }
}

/* Prompts unpack each quantized weight row once per step of the GEMM (the
   section "panels" below says why) into the form its kernel reads:
   unpack_row_scalar is the definition, per block. Per weight this must cost
   less than the few multiply-adds the GEMM then does with it. q8_0: 32
   values as bytes + 128 (with VNNI), or as int16. q4_0: byte j holds
   weights j (low nibble) and j + 16.
   q4_k: each 32 bytes of nibbles hold a group of 32 in their low nibbles and
   the next group in their high ones. q6_k: each value (q6k_value) times its
   group's integer scale, at most 32 x 127 in size. */
static void split_nibbles_scalar(uint8_t *lo, uint8_t *hi, const uint8_t *src, int n) {
    for (int i = 0; i < n; i++) lo[i] = src[i] & 15, hi[i] = src[i] >> 4;
}

/* Block b of a q8_0 or q4_0 row of n_blocks blocks: its scale into ws[b],
   gemm_u8's offset into wm[b] (u8_offset x the scale), its values into w
   (q8_0: bytes q + 128 at w + 32b, Q8_0_AS_BYTES, or int16 at w + 32b;
   q4_0: bytes at w + 32b, the block's low nibbles, then its high ones). */
static void unpack_q_block(int type, const uint8_t *src, int b, int n_blocks, float *ws, float *wm, void *w) {
    size_t block_bytes = q_block_bytes(type);
    const uint8_t *block = q_block(src, b, n_blocks, block_bytes);
    ws[b] = fp16_to_fp32(q_scale_bits(src, b, block_bytes));
    wm[b] = u8_offset(type) * ws[b];
    if (type == WEIGHT_Q8_0 && Q8_0_AS_BYTES)
        for (int k = 0; k < QK; k++) ((uint8_t *)w)[b * QK + k] = block[k] ^ 0x80; /* q + 128 */
    else if (type == WEIGHT_Q8_0)
        for (int k = 0; k < QK; k++) ((int16_t *)w)[b * QK + k] = ((const int8_t *)block)[k];
    else
        split_nibbles_scalar((uint8_t *)w + b * QK, (uint8_t *)w + b * QK + QK / 2, block, QK / 2);
}

/* A quantized row (src: n_padded values of `type`) as the GEMM steps read
   it: a float scale per 32 values into ws, an offset per 32 into wm
   (gemm_u8's: q4_0 8 x the scale, q8_0 128 x it, q4_k dmin x the group's
   min; q6_k writes none), and the values into w: gemm_i16's int16 (q6_k;
   q8_0 without VNNI) or gemm_u8's bytes (q4_0; q4_k; q8_0 + 128 with VNNI:
   Q8_0_AS_BYTES). (Only the tests run it: quantized prompts take the
   GEMM steps in the AVX2 builds alone, with unpack_row.) */
void unpack_row_scalar(int type, const uint8_t *src, int n_padded, float *ws, float *wm, void *w) {
    int n_blocks = n_padded / QK;
    if (type == WEIGHT_Q8_0 || type == WEIGHT_Q4_0) {
        for (int b = 0; b < n_blocks; b++) unpack_q_block(type, src, b, n_blocks, ws, wm, w);
    } else if (type == WEIGHT_Q4_K) {
        for (int b = 0; b < n_padded / QK_K; b++) {
            const uint8_t *blk = src + (size_t)b * Q4K_BYTES;
            uint8_t sc[8], mn[8];
            q4k_scales(blk + 4, sc, mn);
            float d = fp16_at(blk), dmin = fp16_at(blk + 2);
            for (int g = 0; g < 8; g++) ws[b * 8 + g] = d * sc[g], wm[b * 8 + g] = dmin * mn[g];
            for (int c = 0; c < 4; c++) { /* 32 bytes: group 2c's values, group 2c + 1's */
                uint8_t *dst = (uint8_t *)w + b * QK_K + 64 * c;
                split_nibbles_scalar(dst, dst + 32, blk + 16 + 32 * c, 32);
            }
        }
    } else { /* q6_k */
        for (int b = 0; b < n_padded / QK_K; b++) {
            const uint8_t *blk = src + (size_t)b * Q6K_BYTES;
            const int8_t *scales = (const int8_t *)(blk + 192);
            for (int g = 0; g < 8; g++) ws[b * 8 + g] = fp16_at(blk + 208);
            for (int v = 0; v < QK_K; v++)
                ((int16_t *)w)[b * QK_K + v] = (int16_t)(scales[v / 16] * q6k_value(blk, v));
        }
    }
}

/* att[p] = (q . k_p) * scale for positions p < n, where k_p starts at
   k + p * stride: one query head's attention scores over the cached keys.
   PyTorch: att = q @ k.T * scale */
void attention_scores_scalar(float *att, const float *q, const float *k, size_t stride, int n, int head_dim,
                             float scale) {
    for (int p = 0; p < n; p++) att[p] = dot_f32_scalar(q, k + p * stride, head_dim) * scale;
}

/* out (head_dim) += sum over positions p < n of att[p] * v_p, where v_p
   starts at v + p * stride: attention's weighted sum of the cached values,
   added to out (so that a head's positions can be taken a block at a time:
   attend_each). PyTorch: out += att @ v */
void weighted_sum_scalar(float *out, const float *att, const float *v, size_t stride, int n, int head_dim) {
    for (int p = 0; p < n; p++)
        for (int i = 0; i < head_dim; i++) out[i] += att[p] * v[p * stride + i];
}

/* The same two over a 16-bit KV cache (--kv-cache fp16): each cached key and
   value is an IEEE half, widened to float as it is read. */
void attention_scores_f16_scalar(float *att, const float *q, const uint16_t *k, size_t stride, int n, int head_dim,
                                 float scale) {
    for (int p = 0; p < n; p++) {
        float sum = 0.0f;
        for (int i = 0; i < head_dim; i++) sum += q[i] * fp16_to_fp32(k[p * stride + i]);
        att[p] = sum * scale;
    }
}

void weighted_sum_f16_scalar(float *out, const float *att, const uint16_t *v, size_t stride, int n, int head_dim) {
    for (int p = 0; p < n; p++)
        for (int i = 0; i < head_dim; i++) out[i] += att[p] * fp16_to_fp32(v[p * stride + i]);
}

/* ---- exponentials: attention's softmax and the gate's activation ----
   Both take one exponential per value: per attention score, per hidden value
   of the feed-forward. One at a time, libm's expf was a tenth of a 512-token
   prompt of stories15M (perf), and the softmax's max and sum, each a chain of
   dependent scalar steps, were half of what remained in it. The SIMD versions
   work on 8 (AVX2) or 4 (NEON) values at once, their exponentials by
   exp_lanes, within a few roundings of expf. */

/* In place: x = exp(x - max) / sum(exp(x - max)).  PyTorch: torch.softmax(x, -1) */
void softmax_scalar(float *x, int n) {
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

/* The end of a SIMD softmax (both instruction sets): the values from `from`
   on, past the last whole vector, as softmax_scalar does them, added to the
   vectors' sum, then the division (which needs no intrinsics: it has no
   chain from one value to the next, and the compiler vectorizes it). */
#if defined(USE_AVX2) || defined(USE_NEON)
static inline void softmax_rest(float *x, int from, int n, float max, float sum) {
    for (int i = from; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= sum;
}
#endif

/* The gate's activation. SiLU: g * sigmoid(g) (Llama). GELU, tanh
   approximation: 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) (Gemma).
   PyTorch: F.silu(g), F.gelu(g, approximate="tanh") */
static float gate_activation(int activation, float g) {
    if (activation == ACT_GELU_TANH)
        return 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
    return g / (1.0f + expf(-g));
}

/* In place: h[i] = act(h[i]) * up[i] for i < n: the feed-forward's gate,
   activated, times its up projection.  PyTorch: act(gate) * up */
void gate_times_up_scalar(float *h, const float *up, size_t n, int activation) {
    for (size_t i = 0; i < n; i++) h[i] = gate_activation(activation, h[i]) * up[i];
}

#if defined(USE_AVX2)
static float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Four independent sums, so that each FMA need not wait for the one before.
   No prefetch here, unlike the quantized dot products: this loop is so short
   per byte that the core's out-of-order window alone keeps enough reads in
   flight, and prefetches only slowed it (TinyLlama-1.1B fp32 on 2 threads,
   alternating builds: 3.75 tokens/s with them, 4.82 without; any distance). */
static float dot_f32(const float *a, const float *b, int n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(),
           acc3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        if (prefetch_fp32) prefetch_row(a + i), prefetch_row(a + i + 16); /* a: the weight row, in a matmul */
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
        acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
    }
    for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    float sum = hsum256(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

/* 32 products of unsigned by signed bytes, summed in fours into 8 int32.
   AVX2: maddubs sums them in pairs as int16 (saturating: every caller keeps
   a pair below 2^15), and madd by 1 widens. VNNI: one dpbusd. */
static __m256i dot_u8_s8(__m256i u, __m256i s) {
#if defined(USE_VNNI)
    return dpbusd(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

/* The combined scale (weight scale x activation scale) of 8 blocks. */
static __m256 block_scales(const uint16_t *ws, const float *xs) {
    return _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)ws)), _mm256_loadu_ps(xs));
}

/* acc + s[k] x -offset x sum[k] for the 8 blocks of a group: where a kernel
   multiplies unsigned weights u = q + offset (u8_offset: q4_0's nibbles, and
   q8_0's bytes in the 512-bit steps), what the offset added to each block's
   integer products (offset x the sum of its activations' q) taken off, in
   the lanes of the group's combined scales s (block_scales). */
static __m256 add_group_offsets(__m256 acc, __m256 s, const int32_t *sum, float offset) {
    __m256 sums = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)sum));
    return _mm256_fmadd_ps(s, _mm256_mul_ps(sums, _mm256_set1_ps(-offset)), acc);
}

/* quantize_vector_scalar, 32 values at a time: the same max, the same
   multiply, and cvtps rounds to nearest even as lrintf does. The packs
   interleave 128-bit lanes, and the final permute puts the bytes back in order. */
static float absmax32(const float *x) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x), abs_mask),
                                           _mm256_and_ps(_mm256_loadu_ps(x + 8), abs_mask)),
                             _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + 16), abs_mask),
                                           _mm256_and_ps(_mm256_loadu_ps(x + 24), abs_mask)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* 32 values times inv, rounded, stored as bytes, with the sums of each 16
   (two rounds of hadd reduce both halves at once) and of all 32 */
static void quantize32(const float *x, float inv, int8_t *q, int32_t *sum, int16_t *sum16) {
    __m256 iv = _mm256_set1_ps(inv);
    __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), iv));
    __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), iv));
    __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), iv));
    __m256i q3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), iv));
    __m256i halves = _mm256_hadd_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(halves), _mm256_extracti128_si256(halves, 1));
    s4 = _mm_hadd_epi32(s4, s4); /* first half's sum, second half's, twice */
    int32_t first = _mm_cvtsi128_si32(s4), second = _mm_extract_epi32(s4, 1);
    __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
    bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)q, bytes);
    *sum = first + second;
    sum16[0] = (int16_t)first, sum16[1] = (int16_t)second;
}

/* The blocks of a run of up to four that starts at block `run` (a multiple
   of 4; the last run of n_blocks can be shorter). */
static int run_blocks(int run, int n_blocks) { return n_blocks - run < 4 ? n_blocks - run : 4; }

/* halves from q: the blocks go in runs of four (the last run can be
   shorter), and a run's blocks b .. b + 3 become their first halves
   q[b][0..15], q[b + 1][0..15], q[b + 2][0..15], q[b + 3][0..15], then their
   second halves q[b][16..31], ... So one 512-bit load gives the activations
   that meet the low nibbles of four q4_0 blocks, and the next the ones that
   meet their high nibbles (q4_group_blocks); a 256-bit load two blocks'
   (load_x_pair). */
static void arrange_halves(QuantizedVector *v, int n_padded) {
    int n_blocks = n_padded / QK;
    for (int run = 0; run < n_blocks; run += 4) {
        int count = run_blocks(run, n_blocks);
        int8_t *out = v->halves + run * QK;
        for (int k = 0; k < count; k++) {
            memcpy(out + 16 * k, v->q + (run + k) * QK, 16);
            memcpy(out + 16 * (count + k), v->q + (run + k) * QK + 16, 16);
        }
    }
}

static void quantize_vector(QuantizedVector *out, const float *x, int n, int n_padded, int block) {
    int per = block / QK, b = 0; /* blocks of 32 per quantization block */
    for (; (b + per) * QK <= n; b += per) {
        float amax = 0.0f;
        for (int k = 0; k < per; k++) {
            float m = absmax32(x + (b + k) * QK);
            amax = m > amax ? m : amax;
        }
        float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        for (int k = 0; k < per; k++) {
            out->scale[b + k] = d;
            quantize32(x + (b + k) * QK, inv, out->q + (b + k) * QK, out->sum + b + k, out->sum16 + 2 * (b + k));
        }
    }
    if (b < n_padded / QK) { /* the last block, when n stops inside it (blocks of 32 only) */
        QuantizedVector rest = {out->q + b * QK, out->scale + b, out->sum + b, out->sum16 + 2 * b, NULL};
        quantize_vector_scalar(&rest, x + b * QK, n - b * QK, n_padded - b * QK, block);
    }
    arrange_halves(out, n_padded);
}

/* One q8_0 block . one activation block, as 8 int32 partial sums. maddubs
   multiplies unsigned by signed bytes, so the weights' signs move onto the
   activations: |w| * (x * sign(w)) = w * x. */
static __m256i block_q8(const int8_t *w, const int8_t *x) {
    __m256i wv = _mm256_loadu_si256((const __m256i *)w), xv = _mm256_loadu_si256((const __m256i *)x);
    return dot_u8_s8(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
}

_Static_assert(QGROUP == 8, "a group's 8 fp16 scales are one 128-bit load (block_scales)");

#if defined(USE_AVX512)
/* v's two 256-bit halves, added (the upper one through a cast: extractf32x8
   would need AVX512DQ) */
static __m256 add_halves(__m512 v) {
    return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/* The 8 blocks of a full q8_0 group . x, two blocks a 512-bit step, given
   the group's combined scales s (block_scales): 8 lanes that add up to
   sum_k s[k] * ((w_k + 128) . x_k), the -128 * sum(q_x) of each block going
   in apart, as q4_0's -8 * sum(q_x) does. dpbusd takes unsigned bytes
   against signed ones, so the weights move to w + 128 (0..255; in bits,
   w ^ 0x80), as the GEMM steps' q8_0 bytes do (Q8_0_AS_BYTES): one xor per
   two blocks where block_q8 takes two sign operations per block (the 256-bit
   steps below; AVX-512 has no 512-bit vpsignb). Each product is at most
   255 x 127 and a lane adds 4 of them, and the integer sums are exact: only
   the floats' rounding differs from the 256-bit steps'. In cache, one thread
   (tools/kernels.c, 3 runs alternating): dot_q8 37.5-38.4 -> 45.6-49.6
   billion multiply-adds a second, column_q8 38.2-39.8 -> 47.0-49.3. Whole
   builds alternating, 2 threads, on the second Xeon of the README: stories110M
   q8_0, read from L3, 237-254 -> 286-293 tok/s, stories15M 1858-1921 ->
   2104-2147; the 1.1B shape, read from memory, level (26.3-27.2 against
   26.5-27.3, 4 rounds). */
static __m256 q8_group_blocks(const int8_t *w, const int8_t *xq, __m256 s) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512 acc = _mm512_setzero_ps(), s16 = _mm512_castps256_ps512(s);
    for (int k = 0; k < QGROUP; k += 2) {
        __m512i u = _mm512_xor_si512(_mm512_loadu_si512((const void *)(w + k * QK)), flip); /* blocks k, k + 1 */
        __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, _mm512_loadu_si512((const void *)(xq + k * QK)));
        /* lanes 0-7 are block k's, 8-15 block k + 1's: their scales put in place by one permute */
        __m512 scale = _mm512_permutexvar_ps(_mm512_setr_epi32(k, k, k, k, k, k, k, k, k + 1, k + 1, k + 1, k + 1,
                                                               k + 1, k + 1, k + 1, k + 1), s16);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), scale, acc);
    }
    return add_halves(acc);
}
#endif

/* One group of the row (section 2) per step: its 8 scales, multiplied by
   the activations' in one vector, then its 8 blocks, in two independent
   sums; the blocks of a last, shorter group one at a time, still in SIMD.
   Returns the sum before its last step: 8 lanes that add up to row . x
   (dot_q8 adds them; a column adds four rows' at once). */
static __m256 dot_q8_lanes(const uint8_t *row, const QuantizedVector *x, int n_blocks) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int b = 0;
    for (; b + QGROUP <= n_blocks; b += QGROUP) {
        const uint8_t *group = row + (size_t)b * (QK + 2);
        const int8_t *w = (const int8_t *)(group + 2 * QGROUP);
        for (int at = 0; at < QGROUP * (QK + 2); at += 64) prefetch_row(group + at); /* 272 bytes */
#if defined(USE_AVX512)
        __m256 s = block_scales((const uint16_t *)group, x->scale + b);
        acc1 = add_group_offsets(acc1, s, x->sum + b, u8_offset(WEIGHT_Q8_0));
        acc0 = _mm256_add_ps(acc0, q8_group_blocks(w, x->q + b * QK, s));
#else
        float scale[8];
        _mm256_storeu_ps(scale, block_scales((const uint16_t *)group, x->scale + b));
        for (int k = 0; k < 8; k += 2) {
            __m256i d0 = block_q8(w + k * QK, x->q + (b + k) * QK);
            __m256i d1 = block_q8(w + (k + 1) * QK, x->q + (b + k + 1) * QK);
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), _mm256_broadcast_ss(scale + k), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d1), _mm256_broadcast_ss(scale + k + 1), acc1);
        }
#endif
    }
    const uint8_t *group = row + (size_t)b * (QK + 2); /* the last, shorter group: `count` scales, then blocks */
    for (int k = 0, count = n_blocks - b; k < count; k++) {
        __m256 s = _mm256_set1_ps(_cvtsh_ss(q_scale_bits(group, k, QK)) * x->scale[b + k]);
        __m256i d = block_q8((const int8_t *)(group + 2 * count + k * QK), x->q + (size_t)(b + k) * QK);
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), s, acc0);
    }
    return _mm256_add_ps(acc0, acc1);
}

static float dot_q8(const uint8_t *row, const QuantizedVector *x, int n_blocks) {
    return hsum256(dot_q8_lanes(row, x, n_blocks));
}

/* A q4_0 block's 16 bytes -> its 32 nibbles in order: the low nibbles
   (weights 0..15) in the lower half, the high ones (16..31) in the upper. */
static __m256i unpack_q4(const uint8_t *p) {
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(b), _mm_srli_epi16(b, 4), 1);
    return _mm256_and_si256(both, _mm256_set1_epi8(15));
}

/* One q4_0 block's nibbles . one activation block, as 8 int32 partial sums. */
static __m256i block_q4(const uint8_t *w, const int8_t *x) {
    return dot_u8_s8(unpack_q4(w), _mm256_loadu_si256((const __m256i *)x));
}

/* Two q4_0 blocks (32 packed bytes) -> the low nibbles of both (weights 0..15
   of each, block by 128-bit lane) and the high nibbles of both (16..31). */
static void unpack_q4_pair(const uint8_t *p, __m256i *lo, __m256i *hi) {
    const __m256i low4 = _mm256_set1_epi8(15);
    __m256i bytes = _mm256_loadu_si256((const __m256i *)p);
    *lo = _mm256_and_si256(bytes, low4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4);
}

/* Two activation blocks, arranged to match as arrange_halves laid them out:
   their first halves at p, their second halves `apart` bytes later (two
   loads, where the natural order would take four and two inserts for every
   row). */
static void load_x_pair(const int8_t *p, int apart, __m256i *first, __m256i *second) {
    *first = _mm256_loadu_si256((const __m256i *)p);
    *second = _mm256_loadu_si256((const __m256i *)(p + apart));
}

/* Where blocks b and b + 1 (b even) of n_blocks lie in arrange_halves'
   order: their first halves at the offset returned, their second halves
   *apart bytes after them (16 times the blocks of their run). */
static int pair_at(int b, int n_blocks, int *apart) {
    int run = b / 4 * 4;
    *apart = 16 * run_blocks(run, n_blocks);
    return run * QK + 16 * (b - run);
}

/* Nibbles . activations of two blocks: lanes 0-3 sum to the first block's, 4-7 to the second's. */
static __m256i pair_dot_q4(__m256i lo, __m256i hi, __m256i x_first, __m256i x_second) {
#if defined(USE_VNNI)
    return dpbusd(dpbusd(_mm256_setzero_si256(), lo, x_first), hi, x_second);
#else
    __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(lo, x_first), _mm256_maddubs_epi16(hi, x_second));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
#endif
}

/* first's value in lanes 0-3, second's in lanes 4-7 */
static __m256 pair_scale(const float *first, const float *second) {
    return _mm256_blend_ps(_mm256_broadcast_ss(first), _mm256_broadcast_ss(second), 0xF0);
}

#if defined(USE_AVX512)
/* The 8 blocks of a full q4_0 group . x, four blocks a 512-bit step, given
   the group's combined scales s (block_scales): 8 lanes that add up to
   sum_k s[k] * (nibbles_k . x_k), as dot_q4_lanes' 256-bit steps give (the
   -8 * sum(q_x) goes in apart). The 64 bytes of four blocks give the low
   nibbles of all four (block by 128-bit lane) and their high nibbles, as
   unpack_q4_pair gives two blocks'; the activations that meet them are a
   run of arrange_halves: the first halves of the four blocks, then their
   second halves, two plain loads. Per four blocks that is one load, and,
   shift, and, conversion, permute and multiply-add where the 256-bit steps
   take two of each, and as many dpbusd (on the Xeon of the README, one
   512-bit dpbusd a cycle against two 256-bit ones: in cache, one thread,
   the same rate). Generating from memory it leaves the core more room for
   the loads: 1.1B q4_0, 2 threads, timing every other token of one run with
   each, 1.0-1.8% less time per token (7 of 7 runs). The activations were at
   first arranged in pairs of blocks, as the 256-bit steps read them, and
   brought together here by two shuffles of 128-bit lanes; arranged in runs
   of four, without the shuffles: 0.6-3.6% less time a token again (9 of 9
   runs, either version timed first). */
static __m256 q4_group_blocks(const uint8_t *w, const int8_t *halves, __m256 s) {
    const __m512i low4 = _mm512_set1_epi8(15);
    __m512 acc = _mm512_setzero_ps(), s16 = _mm512_castps256_ps512(s);
    for (int k = 0; k < QGROUP; k += 4) {
        __m512i bytes = _mm512_loadu_si512((const void *)(w + k * QK / 2));
        __m512i lo = _mm512_and_si512(bytes, low4), hi = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low4);
        __m512i first = _mm512_loadu_si512((const void *)(halves + k * QK));       /* the four first halves */
        __m512i second = _mm512_loadu_si512((const void *)(halves + k * QK + 64)); /* their second halves */
        __m512i d = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, first), hi, second);
        /* lane j (4 int32) is block k + j's: its scale put in place by one permute */
        __m512 scale = _mm512_permutexvar_ps(_mm512_setr_epi32(k, k, k, k, k + 1, k + 1, k + 1, k + 1,
                                                               k + 2, k + 2, k + 2, k + 2, k + 3, k + 3, k + 3, k + 3), s16);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), scale, acc);
    }
    return add_halves(acc);
}
#endif

/* The nibbles (0..15) are unsigned, as maddubs wants, and multiply the
   activations directly. Two blocks go together: their 32 packed bytes give the
   low nibbles of both (one 256-bit and) and the high nibbles of both, and the
   activations, arranged to match once per input (arrange_halves: [first halves
   of both], [second halves], in runs of four blocks), are two plain loads. The
   two products then add as int16 (each pair sum is at most 2 * 15 * 127, so no
   overflow) and widen once, lanes 0-3 holding the first block and 4-7 the
   second: one widening, conversion and multiply-add per two blocks instead of
   per block (this machine has one pipe for integer multiplies; 1.1B shape:
   19.8 -> 21.6 tok/s), with the two blocks' scales put in place by one
   permute. The -8 * sum(q_x) of each block goes into the same sums, 8 blocks
   at a time (scale x -8 sum(q_x), lane by lane); a block left over takes its
   own off its integer products (lane 0). Arranging the activations in advance
   and the permute (in place of four loads, two inserts, a store and two
   broadcasts per pair) took this kernel, in cache on one thread, from 20.7 to
   29.1 billion multiply-adds per second on rows of 2048 and from 12.3 to 19.2
   on 768 x 288 (alternating builds, best of 11). Steps of a group, as
   dot_q8_lanes. Returns 8 lanes that add up to row . x, as dot_q8_lanes. */
static __m256 dot_q4_lanes(const uint8_t *row, const QuantizedVector *x, int n_blocks) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int b = 0;
    for (; b + QGROUP <= n_blocks; b += QGROUP) {
        const uint8_t *group = row + (size_t)b * (QK / 2 + 2), *w = group + 2 * QGROUP;
        prefetch_row(group), prefetch_row(group + 64), prefetch_row(group + 128); /* 144 bytes */
        __m256 s = block_scales((const uint16_t *)group, x->scale + b);
        acc1 = add_group_offsets(acc1, s, x->sum + b, u8_offset(WEIGHT_Q4_0));
#if defined(USE_AVX512)
        acc0 = _mm256_add_ps(acc0, q4_group_blocks(w, x->halves + b * QK, s));
#else
        for (int k = 0; k < 8; k += 2) {
            __m256i lo, hi, x_first, x_second;
            unpack_q4_pair(w + k * QK / 2, &lo, &hi);
            /* blocks b + k, b + k + 1 in the group's two runs of four (b is a multiple of 8) */
            load_x_pair(x->halves + (b + (k & 4)) * QK + 16 * (k & 2), 64, &x_first, &x_second);
            __m256 d = _mm256_cvtepi32_ps(pair_dot_q4(lo, hi, x_first, x_second));
            /* lanes 0-3: block b + k's scale, 4-7: block b + k + 1's (one permute) */
            __m256 pair = _mm256_permutevar8x32_ps(s, _mm256_setr_epi32(k, k, k, k, k + 1, k + 1, k + 1, k + 1));
            if (k & 2) acc1 = _mm256_fmadd_ps(d, pair, acc1);
            else acc0 = _mm256_fmadd_ps(d, pair, acc0);
        }
#endif
    }
    const uint8_t *group = row + (size_t)b * (QK / 2 + 2); /* the last, shorter group */
    for (int k = 0, count = n_blocks - b; k < count; k++) {
        float s = _cvtsh_ss(q_scale_bits(group, k, QK / 2)) * x->scale[b + k];
        __m256i d = block_q4(group + 2 * count + k * QK / 2, x->q + (size_t)(b + k) * QK);
        d = _mm256_sub_epi32(d, _mm256_setr_epi32(8 * x->sum[b + k], 0, 0, 0, 0, 0, 0, 0));
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(s), acc0);
    }
    return _mm256_add_ps(acc0, acc1);
}

static float dot_q4(const uint8_t *row, const QuantizedVector *x, int n_blocks) {
    return hsum256(dot_q4_lanes(row, x, n_blocks));
}

/* ---- columns: the matrix-vector kernels of generation ----
   A column is 4 weight rows x 1 token: generation's dot products, four rows
   at a time. Each row is read whole, one after another, exactly as dot_q8 and
   dot_q4 read it (so memory sees the same single stream per thread); what the
   four share is the end, one hadd tree for all their sums instead of a
   horizontal sum each, and one call. That end counts on short rows: in
   cache, one thread, on 32000 x 288 (stories15M's classifier) and 768 x 288
   the columns ran at 0.93-1.26x the speed of four dot products, mostly
   1.1-1.2x (three runs, best of 7 each; this host's noise is of that
   order), and at 1.02-1.04x on rows of 2048. (Reading the four rows
   side by side, so that each activation block is loaded once for all four,
   was faster still in cache, but it breaks each thread's stream into four
   that the hardware prefetcher follows badly: the TinyLlama-1.1B shape, read
   from memory, generated at 0.65x the speed.) Their plain versions are
   column_*_scalar above. out[r] = row r . x for the 4 rows that start at
   `rows`, one after another. */

/* The sums of four vectors, each across its 8 lanes, as 4 floats. */
static __m128 hsum256_x4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3)); /* lanes r and r + 4: vector r's */
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

static void column_q8(const uint8_t *rows, const QuantizedVector *x, int n_blocks, float out[4]) {
    __m256 lanes[4];
    for (int r = 0; r < 4; r++) lanes[r] = dot_q8_lanes(rows + r * q_row_bytes(n_blocks, QK), x, n_blocks);
    _mm_storeu_ps(out, hsum256_x4(lanes[0], lanes[1], lanes[2], lanes[3]));
}

static void column_q4(const uint8_t *rows, const QuantizedVector *x, int n_blocks, float out[4]) {
    __m256 lanes[4];
    for (int r = 0; r < 4; r++) lanes[r] = dot_q4_lanes(rows + r * q_row_bytes(n_blocks, QK / 2), x, n_blocks);
    _mm_storeu_ps(out, hsum256_x4(lanes[0], lanes[1], lanes[2], lanes[3]));
}

/* 8 cached values from an fp32 cache, or from an fp16 one (F16C widens them). */
static inline __m256 load_cached8(const void *cache, int half, size_t at) {
    if (half) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)cache + at)));
    return _mm256_loadu_ps((const float *)cache + at);
}

/* q . (cached key at `at`) over head values from..head_dim, one by one. */
static float dot_cached_tail(const float *q, const void *k, int half, size_t at, int from, int head_dim) {
    float sum = 0.0f;
    for (int i = from; i < head_dim; i++)
        sum += q[i] * (half ? fp16_to_fp32(((const uint16_t *)k)[at + i]) : ((const float *)k)[at + i]);
    return sum;
}

/* The cached rows (keys or values) a few positions ahead of those being
   read are asked for in advance: each head's run of the cache is short
   (n positions of head_dim), so the hardware prefetcher alone has hardly
   found the stream before it ends. `bytes` of the row at element `at`
   (stories110M generating 256 tokens: 10% less time in attention, on top of
   the cache's layout, see cache_at). */
#define ATTENTION_AHEAD 8
static inline void prefetch_cached(const void *cache, int half, size_t at, int bytes) {
    const char *row = (const char *)cache + at * (half ? sizeof(uint16_t) : sizeof(float));
    for (int b = 0; b < bytes; b += 64) prefetch(row + b);
}

#if defined(USE_AVX512)
/* AVX-512 forms of the two attention kernels, where head_dim is a multiple
   of 16 (the 256-bit ones below take the rest). 16 cached values, from an
   fp32 or an fp16 cache: */
static inline __m512 load_cached16(const void *cache, int half, size_t at) {
    if (half) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)cache + at)));
    return _mm512_loadu_ps((const float *)cache + at);
}

/* Scores of 8 positions a step: each 512-bit load of q serves 8 keys, whose
   sums are reduced together (each 512-bit sum to 256 bits, then three rounds
   of hadd). Returns the positions done, a multiple of 8 (the 256-bit steps
   take the rest). */
static inline int attention_scores_512(float *att, const float *q, const void *k, int half, size_t stride, int n,
                                       int head_dim, float scale) {
    int p = 0, row_bytes = head_dim * (half ? 2 : 4);
    for (; p + 8 <= n; p += 8) {
        size_t k0 = p * stride;
        for (int j = 0; j < 8; j++) prefetch_cached(k, half, k0 + (ATTENTION_AHEAD + j) * stride, row_bytes);
        __m512 a[8];
        for (int j = 0; j < 8; j++) a[j] = _mm512_setzero_ps();
        for (int i = 0; i < head_dim; i += 16) {
            __m512 qv = _mm512_loadu_ps(q + i);
            for (int j = 0; j < 8; j++) a[j] = _mm512_fmadd_ps(qv, load_cached16(k, half, k0 + j * stride + i), a[j]);
        }
        __m256 b[8];
        for (int j = 0; j < 8; j++) b[j] = add_halves(a[j]);
        __m256 h0 = _mm256_hadd_ps(_mm256_hadd_ps(b[0], b[1]), _mm256_hadd_ps(b[2], b[3])); /* [0 1 2 3 | 0 1 2 3] */
        __m256 h1 = _mm256_hadd_ps(_mm256_hadd_ps(b[4], b[5]), _mm256_hadd_ps(b[6], b[7])); /* [4 5 6 7 | 4 5 6 7] */
        __m256 sums = _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31));
        _mm256_storeu_ps(att + p, _mm256_mul_ps(sums, _mm256_set1_ps(scale)));
    }
    return p;
}

/* out[0 .. 16 * vectors) += the weighted sum, two positions a step into two
   sets of sums (so that each multiply-add waits on the one two positions
   back), added together at the end. */
static inline void weighted_sum_columns_512(float *out, const float *att, const void *v, int half, size_t stride,
                                            int n, int vectors) {
    __m512 a[4], b[4];
    for (int k = 0; k < vectors; k++) a[k] = _mm512_loadu_ps(out + 16 * k), b[k] = _mm512_setzero_ps();
    int p = 0;
    for (; p + 2 <= n; p += 2) {
        prefetch_cached(v, half, (p + ATTENTION_AHEAD) * stride, vectors * 16 * (half ? 2 : 4));
        prefetch_cached(v, half, (p + 1 + ATTENTION_AHEAD) * stride, vectors * 16 * (half ? 2 : 4));
        __m512 w0 = _mm512_set1_ps(att[p]), w1 = _mm512_set1_ps(att[p + 1]);
        for (int k = 0; k < vectors; k++) {
            a[k] = _mm512_fmadd_ps(w0, load_cached16(v, half, p * stride + 16 * k), a[k]);
            b[k] = _mm512_fmadd_ps(w1, load_cached16(v, half, (p + 1) * stride + 16 * k), b[k]);
        }
    }
    if (p < n)
        for (int k = 0; k < vectors; k++) a[k] = _mm512_fmadd_ps(_mm512_set1_ps(att[p]), load_cached16(v, half, p * stride + 16 * k), a[k]);
    for (int k = 0; k < vectors; k++) _mm512_storeu_ps(out + 16 * k, _mm512_add_ps(a[k], b[k]));
}

/* 64, then 16 of the head's values at a time; returns how many it did. */
static inline int weighted_sum_512(float *out, const float *att, const void *v, int half, size_t stride, int n,
                                   int head_dim) {
    int i = 0;
    for (; i + 64 <= head_dim; i += 64)
        weighted_sum_columns_512(out + i, att, (const char *)v + i * (half ? 2 : 4), half, stride, n, 4);
    for (; i + 16 <= head_dim; i += 16)
        weighted_sum_columns_512(out + i, att, (const char *)v + i * (half ? 2 : 4), half, stride, n, 1);
    return i;
}
#endif

/* Four positions at a time: each load of q serves 4 keys, and the four sums
   are reduced together (two rounds of hadd) instead of one by one. (half is
   a constant at each call, so the compiler makes one loop of each.) */
static inline void attention_scores_cached(float *att, const float *q, const void *k, int half, size_t stride, int n,
                                           int head_dim, float scale) {
    int p = 0, whole = head_dim / 8 * 8, row_bytes = head_dim * (half ? 2 : 4);
#if defined(USE_AVX512)
    if (head_dim % 16 == 0) p = attention_scores_512(att, q, k, half, stride, n, head_dim, scale);
#endif
    for (; p + 4 <= n; p += 4) {
        size_t k0 = p * stride, k1 = k0 + stride, k2 = k1 + stride, k3 = k2 + stride;
        for (int j = 0; j < 4; j++) prefetch_cached(k, half, k0 + (ATTENTION_AHEAD + j) * stride, row_bytes);
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int i = 0; i < whole; i += 8) {
            __m256 qv = _mm256_loadu_ps(q + i);
            a0 = _mm256_fmadd_ps(qv, load_cached8(k, half, k0 + i), a0);
            a1 = _mm256_fmadd_ps(qv, load_cached8(k, half, k1 + i), a1);
            a2 = _mm256_fmadd_ps(qv, load_cached8(k, half, k2 + i), a2);
            a3 = _mm256_fmadd_ps(qv, load_cached8(k, half, k3 + i), a3);
        }
        __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3)); /* [0 1 2 3 | 0 1 2 3] halves */
        __m128 sums = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        float out[4];
        _mm_storeu_ps(out, sums);
        for (int j = 0; j < 4; j++) att[p + j] = (out[j] + dot_cached_tail(q, k, half, k0 + j * stride, whole, head_dim)) * scale;
    }
    for (; p < n; p++) {
        __m256 a = _mm256_setzero_ps();
        for (int i = 0; i < whole; i += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load_cached8(k, half, p * stride + i), a);
        att[p] = (hsum256(a) + dot_cached_tail(q, k, half, p * stride, whole, head_dim)) * scale;
    }
}

static void attention_scores(float *att, const float *q, const float *k, size_t stride, int n, int head_dim,
                             float scale) {
    attention_scores_cached(att, q, k, 0, stride, n, head_dim, scale);
}

static void attention_scores_f16(float *att, const float *q, const uint16_t *k, size_t stride, int n, int head_dim,
                                 float scale) {
    attention_scores_cached(att, q, k, 1, stride, n, head_dim, scale);
}

/* out[0 .. 8 * vectors) += sum over p < n of att[p] * v_p[0 .. 8 * vectors),
   the partial sums held in `vectors` registers for the whole pass. (half is
   a constant at each call, so the compiler makes one loop of each.) */
static inline void weighted_sum_columns(float *out, const float *att, const void *v, int half, size_t stride, int n,
                                        int vectors) {
    __m256 a[8];
    for (int k = 0; k < vectors; k++) a[k] = _mm256_loadu_ps(out + 8 * k);
    for (int p = 0; p < n; p++) {
        prefetch_cached(v, half, (p + ATTENTION_AHEAD) * stride, vectors * 8 * (half ? 2 : 4));
        __m256 w = _mm256_broadcast_ss(att + p);
        for (int k = 0; k < vectors; k++) a[k] = _mm256_fmadd_ps(w, load_cached8(v, half, p * stride + 8 * k), a[k]);
    }
    for (int k = 0; k < vectors; k++) _mm256_storeu_ps(out + 8 * k, a[k]);
}

/* 64 (then 32, then 8) of the head's values at a time, summed in registers
   over all positions: each value is loaded once, and out only at the start
   and the end. */
static void weighted_sum(float *out, const float *att, const float *v, size_t stride, int n, int head_dim) {
    int i = 0;
#if defined(USE_AVX512)
    i = weighted_sum_512(out, att, v, 0, stride, n, head_dim);
#endif
    for (; i + 64 <= head_dim; i += 64) weighted_sum_columns(out + i, att, v + i, 0, stride, n, 8);
    for (; i + 32 <= head_dim; i += 32) weighted_sum_columns(out + i, att, v + i, 0, stride, n, 4);
    for (; i + 8 <= head_dim; i += 8) weighted_sum_columns(out + i, att, v + i, 0, stride, n, 1);
    if (i < head_dim) weighted_sum_scalar(out + i, att, v + i, stride, n, head_dim - i);
}

static void weighted_sum_f16(float *out, const float *att, const uint16_t *v, size_t stride, int n, int head_dim) {
    int i = 0;
#if defined(USE_AVX512)
    i = weighted_sum_512(out, att, v, 1, stride, n, head_dim);
#endif
    for (; i + 64 <= head_dim; i += 64) weighted_sum_columns(out + i, att, v + i, 1, stride, n, 8);
    for (; i + 32 <= head_dim; i += 32) weighted_sum_columns(out + i, att, v + i, 1, stride, n, 4);
    for (; i + 8 <= head_dim; i += 8) weighted_sum_columns(out + i, att, v + i, 1, stride, n, 1);
    if (i < head_dim) weighted_sum_f16_scalar(out + i, att, v + i, stride, n, head_dim - i);
}

/* An empty asm statement that says it changes v: the compiler must then have
   v in a register at this point, and can no longer fold its load into every
   instruction that uses it, nor reorder the sums it is part of (see gemm_i16
   and gemm_u8_half). */
#if defined(__GNUC__)
#define IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define IN_REGISTER(v) ((void)0)
#endif

/* Before a loop of 8 steps: GCC unrolls it whole, so that the sums it carries
   from step to step need no copying between registers (GCC's loop kept each
   new sum in a register of its own and copied it back, a sixth of the
   instructions of gemm_i16's loop). clang keeps such loops without copies
   and measured no better unrolled; it is left to itself. */
#if defined(__GNUC__) && !defined(__clang__)
#define UNROLL_8 _Pragma("GCC unroll 8")
#else
#define UNROLL_8
#endif

#if !defined(USE_AVX512) /* the 256-bit GEMM steps; AVX-512 builds have their own below */

/* ---- panels: the fp32 GEMM of prompt processing ----
   The tokens of a chunk are packed 16 to a panel, value k of all 16 side by
   side (pack_panels), so one step of the loop below loads value k of 16
   tokens as two vectors, broadcasts weight k of each of 6 rows, and does 12
   independent multiply-adds: 8 loads for 12 FMAs, and every product lands in
   the lane of its output, so nothing is summed across lanes. A tile of 2 rows
   x 4 tokens (below) loads 6 vectors for 8 FMAs; this is what lets fp32
   prompts run near the FMA units' rate. Definition: gemm_f32_scalar. */
static void gemm_f32(const float *w, size_t stride, int rows, const float *panel, size_t panel_stride, int n,
                     float out[GEMM_ROWS][GEMM_TOKENS]) {
    const float *wr[GEMM_ROWS]; /* rows past `rows` repeat the last one: computed, not stored */
    for (int r = 0; r < GEMM_ROWS; r++) wr[r] = w + (size_t)(r < rows ? r : rows - 1) * stride;
    _Static_assert(GEMM_ROWS == 6, "gemm_f32 names the accumulators of its 6 rows one by one");
    /* 12 accumulators, a<row><half>, named one by one: in an array, a
       compiler may keep them in memory where the function is not inlined
       (measured: 1.7x slower) */
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
    __m256 a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
    for (int k = 0; k < n; k++) {
        __m256 x0 = _mm256_loadu_ps(panel + k * panel_stride), x1 = _mm256_loadu_ps(panel + k * panel_stride + 8), wk;
        wk = _mm256_broadcast_ss(wr[0] + k), a00 = _mm256_fmadd_ps(wk, x0, a00), a01 = _mm256_fmadd_ps(wk, x1, a01);
        wk = _mm256_broadcast_ss(wr[1] + k), a10 = _mm256_fmadd_ps(wk, x0, a10), a11 = _mm256_fmadd_ps(wk, x1, a11);
        wk = _mm256_broadcast_ss(wr[2] + k), a20 = _mm256_fmadd_ps(wk, x0, a20), a21 = _mm256_fmadd_ps(wk, x1, a21);
        wk = _mm256_broadcast_ss(wr[3] + k), a30 = _mm256_fmadd_ps(wk, x0, a30), a31 = _mm256_fmadd_ps(wk, x1, a31);
        wk = _mm256_broadcast_ss(wr[4] + k), a40 = _mm256_fmadd_ps(wk, x0, a40), a41 = _mm256_fmadd_ps(wk, x1, a41);
        wk = _mm256_broadcast_ss(wr[5] + k), a50 = _mm256_fmadd_ps(wk, x0, a50), a51 = _mm256_fmadd_ps(wk, x1, a51);
    }
    /* all rows stored: with rows as the bound, the accumulators could not
       stay in registers either */
    _mm256_storeu_ps(out[0], a00), _mm256_storeu_ps(out[0] + 8, a01), _mm256_storeu_ps(out[1], a10);
    _mm256_storeu_ps(out[1] + 8, a11), _mm256_storeu_ps(out[2], a20), _mm256_storeu_ps(out[2] + 8, a21);
    _mm256_storeu_ps(out[3], a30), _mm256_storeu_ps(out[3] + 8, a31), _mm256_storeu_ps(out[4], a40);
    _mm256_storeu_ps(out[4] + 8, a41), _mm256_storeu_ps(out[5], a50), _mm256_storeu_ps(out[5] + 8, a51);
}

/* acc + a1 . b1 + a2 . b2, each . the products of int16 pairs summed into
   int32: two madds whose sum is added once (VNNI: two dpwssd) */
static __m256i dot_i16_add2(__m256i acc, __m256i a1, __m256i b1, __m256i a2, __m256i b2) {
#if defined(USE_VNNI)
    return dpwssd(dpwssd(acc, a1, b1), a2, b2);
#else
    return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(a1, b1), _mm256_madd_epi16(a2, b2)));
#endif
}

/* q6_k, and q8_0 without VNNI (definition: gemm_i16_scalar). Without VNNI, int8 x int8 products
   cost two multiplies per 32 (maddubs, then madd to widen); with the weights
   widened to int16 once per step, one madd does 16 multiply-adds and sums
   pairs straight into int32. Per two pairs of values k: two loads of 16
   tokens' pairs (four vectors), 6 broadcast weight pairs, 12 madds into int32
   sums that become floats once per block. 3 rows x 16 tokens: 12
   accumulators. With VNNI each madd and its add are one dpwssd.
   The panel's vectors are held in registers (IN_REGISTER): GCC otherwise
   reloaded each from memory for every row's madd, and those loads, not the
   madds, were the limit (llvm-mca: the load ports' share of the floating-point
   pipes); with them, and two pairs per step, in cache on one thread, 39.9 ->
   58.2 billion multiply-adds per second (alternating builds, best of 12).
   The block's 8 steps are unrolled whole (UNROLL_8) with the sums pinned
   after each: 12 rounds alternating, median 39.5 -> 49.7 (best 57.5 ->
   61.4); prompts of 512 tokens on the 1.1B shape, q8_0, 60 -> 77 tokens/s
   (medians of 3, 2 threads). */
static void gemm_i16(const int16_t *w16, const float *ws, int n_blocks, const int16_t *x16, const float *xs,
                    float out[GEMM_ROWS][GEMM_TOKENS]) {
    __m256 a[GEMM_ROWS_I16][2];
    for (int r = 0; r < GEMM_ROWS_I16; r++) a[r][0] = a[r][1] = _mm256_setzero_ps();
    size_t n = (size_t)n_blocks * QK;
    for (int b = 0; b < n_blocks; b++) {
        __m256i sum[GEMM_ROWS_I16][2];
        for (int r = 0; r < GEMM_ROWS_I16; r++) sum[r][0] = sum[r][1] = _mm256_setzero_si256();
        UNROLL_8
        for (int g = 0; g < QK / 2; g += 2) { /* pairs g and g + 1 */
            const int16_t *p = x16 + (size_t)(b * QK / 2 + g) * 2 * GEMM_TOKENS;
            __m256i x0 = _mm256_loadu_si256((const __m256i *)p), x1 = _mm256_loadu_si256((const __m256i *)(p + 16));
            __m256i y0 = _mm256_loadu_si256((const __m256i *)(p + 32)), y1 = _mm256_loadu_si256((const __m256i *)(p + 48));
            IN_REGISTER(x0);
            IN_REGISTER(x1);
            IN_REGISTER(y0);
            IN_REGISTER(y1);
            for (int r = 0; r < GEMM_ROWS_I16; r++) {
                int32_t pairs[2];
                memcpy(pairs, w16 + r * n + b * QK + 2 * g, 8);
                __m256i wx = _mm256_set1_epi32(pairs[0]), wy = _mm256_set1_epi32(pairs[1]);
                sum[r][0] = dot_i16_add2(sum[r][0], wx, x0, wy, y0);
                sum[r][1] = dot_i16_add2(sum[r][1], wx, x1, wy, y1);
                IN_REGISTER(sum[r][0]); /* step after step, not a tree (see gemm_u8_half) */
                IN_REGISTER(sum[r][1]);
            }
        }
        __m256 xs0 = _mm256_loadu_ps(xs + b * GEMM_TOKENS), xs1 = _mm256_loadu_ps(xs + b * GEMM_TOKENS + 8);
        for (int r = 0; r < GEMM_ROWS_I16; r++) {
            __m256 wsb = _mm256_broadcast_ss(ws + r * n_blocks + b);
            a[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[r][0]), _mm256_mul_ps(wsb, xs0), a[r][0]);
            a[r][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[r][1]), _mm256_mul_ps(wsb, xs1), a[r][1]);
        }
    }
    for (int r = 0; r < GEMM_ROWS_I16; r++) _mm256_storeu_ps(out[r], a[r][0]), _mm256_storeu_ps(out[r] + 8, a[r][1]);
}

/* q4_0 and q4_k (and q8_0 with VNNI), 6 rows x the 8 tokens from `half` of
   a panel. The values u (0..15) are the unsigned operand maddubs needs, and
   their products are small: a pair is at most 2 x 15 x 127, so a whole
   block's 8 maddubs add up as int16 and widen once (one madd per 32 x 8
   products where gemm_i16 needs 16). VNNI: dpbusd adds each product of 4
   straight into int32 sums, which hold q8_0's bytes (up to 255) too.
   Each sum is pinned in its register after every add (IN_REGISTER): GCC
   otherwise unrolled the block's 8 x 6 maddubs whole and, the adds being
   free to reorder, summed them as a tree whose 48 partial products it kept
   on the stack; pinned, each step is 6 broadcasts, 6 maddubs and 6 adds in
   registers, and unrolled whole (UNROLL_8) no sum is copied between steps
   (in cache on one thread, alternating builds, 12 rounds: median 59 -> 80,
   best 65 -> 91 billion multiply-adds per second; prompts of 512 tokens,
   q4_0, 2 threads: stories110M 746 -> 917 tokens/s, medians of 5, the
   1.1B shape 75 -> 102, medians of 3). Definition: gemm_u8_scalar. */
static void gemm_u8_half(const uint8_t *wu, const float *ws, const float *wm, int n_blocks, const int8_t *x8,
                         const float *xs, const int32_t *xsum, int half, float out[GEMM_ROWS][GEMM_TOKENS]) {
    __m256 a[GEMM_ROWS];
    for (int r = 0; r < GEMM_ROWS; r++) a[r] = _mm256_setzero_ps();
    size_t n = (size_t)n_blocks * QK;
    for (int b = 0; b < n_blocks; b++) {
        __m256i sum[GEMM_ROWS]; /* int16 sums (AVX2) or int32 (VNNI) */
        for (int r = 0; r < GEMM_ROWS; r++) sum[r] = _mm256_setzero_si256();
        UNROLL_8
        for (int g = 0; g < QK / 4; g++) {
            __m256i xv = _mm256_loadu_si256((const __m256i *)(x8 + ((size_t)(b * QK / 4 + g) * GEMM_TOKENS + half * 8) * 4));
            for (int r = 0; r < GEMM_ROWS; r++) {
                int32_t quad;
                memcpy(&quad, wu + r * n + b * QK + 4 * g, 4);
#if defined(USE_VNNI)
                sum[r] = dpbusd(sum[r], _mm256_set1_epi32(quad), xv);
#else
                sum[r] = _mm256_add_epi16(sum[r], _mm256_maddubs_epi16(_mm256_set1_epi32(quad), xv));
#endif
                IN_REGISTER(sum[r]); /* one add after another (see the comment above) */
            }
        }
        __m256 xsv = _mm256_loadu_ps(xs + b * GEMM_TOKENS + half * 8);
        __m256 xsums = _mm256_mul_ps(xsv, _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(xsum + b * GEMM_TOKENS + half * 8))));
        for (int r = 0; r < GEMM_ROWS; r++) {
#if defined(USE_VNNI)
            __m256 dot = _mm256_cvtepi32_ps(sum[r]);
#else
            __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(sum[r], _mm256_set1_epi16(1)));
#endif
            a[r] = _mm256_fmadd_ps(dot, _mm256_mul_ps(_mm256_broadcast_ss(ws + r * n_blocks + b), xsv), a[r]);
            a[r] = _mm256_fnmadd_ps(_mm256_broadcast_ss(wm + r * n_blocks + b), xsums, a[r]);
        }
    }
    for (int r = 0; r < GEMM_ROWS; r++) _mm256_storeu_ps(out[r] + half * 8, a[r]);
}

static void gemm_u8(const uint8_t *wu, const float *ws, const float *wm, int n_blocks, const int8_t *x8, const float *xs,
                    const int32_t *xsum, float out[GEMM_ROWS][GEMM_TOKENS]) {
    gemm_u8_half(wu, ws, wm, n_blocks, x8, xs, xsum, 0, out);
    gemm_u8_half(wu, ws, wm, n_blocks, x8, xs, xsum, 1, out);
}
#else /* USE_AVX512 */

/* ---- AVX-512: the GEMM steps in 512-bit registers ----
   A panel's 16 tokens fill one 512-bit register where they fill two of 256
   bits (16 floats; 16 tokens' int16 pairs; 16 tokens' int8 quads), so each
   step loads half the vectors and issues half the instructions for the same
   multiply-adds, and each broadcast weight serves 16 tokens where the 256-bit
   steps use it for 8. Same layouts, same sums, same order of the float
   additions as the 256-bit steps above (their comments say why each is built
   as it is); their definitions are the same gemm_*_scalar. Measured in
   the README ("AVX-512"). */

/* IN_REGISTER for a 512-bit vector: "v" allows all 32 registers (none where
   SIMDe stands in for AVX-512 in the tests: its vectors are not registers) */
#if defined(__GNUC__) && defined(__AVX512F__)
#define IN_ZMM(v) __asm__("" : "+v"(v))
#else
#define IN_ZMM(v) ((void)0)
#endif

/* fp32: per value k, one load (value k of the 16 tokens) and 6 FMAs, each
   broadcasting its row's weight k from memory (in cache, one thread: 75
   billion multiply-adds per second against AVX2's 53; a second accumulator
   per row, for odd k: no faster, 76; the loads, 7 per 6 FMAs, are the likely
   limit). */
static void gemm_f32(const float *w, size_t stride, int rows, const float *panel, size_t panel_stride, int n,
                     float out[GEMM_ROWS][GEMM_TOKENS]) {
    const float *wr[GEMM_ROWS]; /* rows past `rows` repeat the last one: computed, not stored */
    for (int r = 0; r < GEMM_ROWS; r++) wr[r] = w + (size_t)(r < rows ? r : rows - 1) * stride;
    _Static_assert(GEMM_ROWS == 6, "gemm_f32 names the accumulators of its 6 rows one by one");
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
    for (int k = 0; k < n; k++) {
        __m512 x = _mm512_loadu_ps(panel + k * panel_stride); /* value k of the 16 tokens */
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(wr[0][k]), x, a0);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(wr[1][k]), x, a1);
        a2 = _mm512_fmadd_ps(_mm512_set1_ps(wr[2][k]), x, a2);
        a3 = _mm512_fmadd_ps(_mm512_set1_ps(wr[3][k]), x, a3);
        a4 = _mm512_fmadd_ps(_mm512_set1_ps(wr[4][k]), x, a4);
        a5 = _mm512_fmadd_ps(_mm512_set1_ps(wr[5][k]), x, a5);
    }
    _mm512_storeu_ps(out[0], a0), _mm512_storeu_ps(out[1], a1), _mm512_storeu_ps(out[2], a2);
    _mm512_storeu_ps(out[3], a3), _mm512_storeu_ps(out[4], a4), _mm512_storeu_ps(out[5], a5);
}

/* q6_k, 6 rows (GEMM_ROWS_I16): per two pairs of values k, two
   loads (16 tokens' pairs each) and per row two dpwssd, each by one broadcast
   pair of the row's weights. Each pair is its own 4-byte broadcast, which
   dpwssd takes as its memory operand: GCC loaded the row's two pairs as one
   8-byte integer and moved each half into a vector register (in cache, one
   thread, 3 rows: 62 -> 107 billion multiply-adds per second, the panel's
   vectors pinned too; 6 rows: 143; AVX2+VNNI's 3 rows of 256 bits: 82). */
static void gemm_i16(const int16_t *w16, const float *ws, int n_blocks, const int16_t *x16, const float *xs,
                    float out[GEMM_ROWS][GEMM_TOKENS]) {
    __m512 a[GEMM_ROWS_I16];
    for (int r = 0; r < GEMM_ROWS_I16; r++) a[r] = _mm512_setzero_ps();
    size_t n = (size_t)n_blocks * QK;
    for (int b = 0; b < n_blocks; b++) {
        __m512i sum[GEMM_ROWS_I16];
        for (int r = 0; r < GEMM_ROWS_I16; r++) sum[r] = _mm512_setzero_si512();
        UNROLL_8
        for (int g = 0; g < QK / 2; g += 2) { /* pairs g and g + 1 */
            const int16_t *p = x16 + (size_t)(b * QK / 2 + g) * 2 * GEMM_TOKENS;
            __m512i x = _mm512_loadu_si512(p), y = _mm512_loadu_si512(p + 32);
            IN_ZMM(x);
            IN_ZMM(y);
            for (int r = 0; r < GEMM_ROWS_I16; r++) {
                int32_t px, py;
                memcpy(&px, w16 + r * n + b * QK + 2 * g, 4);
                memcpy(&py, w16 + r * n + b * QK + 2 * g + 2, 4);
                sum[r] = _mm512_dpwssd_epi32(sum[r], x, _mm512_set1_epi32(px));
                sum[r] = _mm512_dpwssd_epi32(sum[r], y, _mm512_set1_epi32(py));
            }
        }
        __m512 xsb = _mm512_loadu_ps(xs + b * GEMM_TOKENS);
        for (int r = 0; r < GEMM_ROWS_I16; r++)
            a[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[r]),
                                   _mm512_mul_ps(_mm512_set1_ps(ws[r * n_blocks + b]), xsb), a[r]);
    }
    for (int r = 0; r < GEMM_ROWS_I16; r++) _mm512_storeu_ps(out[r], a[r]);
}

/* q4_0, q4_k and q8_0: per quad of values k, one load (16 tokens' quads) and per
   row one dpbusd of the row's broadcast quad (unsigned) by it (signed): both
   of gemm_u8_half's halves in one pass (in cache, one thread: 232 billion
   multiply-adds per second against AVX2+VNNI's 128; a second sum per row,
   for odd quads, so that each dpbusd waits less for the one before: no
   faster, 209-223). */
static void gemm_u8(const uint8_t *wu, const float *ws, const float *wm, int n_blocks, const int8_t *x8, const float *xs,
                    const int32_t *xsum, float out[GEMM_ROWS][GEMM_TOKENS]) {
    __m512 a[GEMM_ROWS];
    for (int r = 0; r < GEMM_ROWS; r++) a[r] = _mm512_setzero_ps();
    size_t n = (size_t)n_blocks * QK;
    for (int b = 0; b < n_blocks; b++) {
        __m512i sum[GEMM_ROWS];
        for (int r = 0; r < GEMM_ROWS; r++) sum[r] = _mm512_setzero_si512();
        UNROLL_8
        for (int g = 0; g < QK / 4; g++) {
            __m512i xv = _mm512_loadu_si512(x8 + (size_t)(b * QK / 4 + g) * GEMM_TOKENS * 4);
            for (int r = 0; r < GEMM_ROWS; r++) {
                int32_t quad;
                memcpy(&quad, wu + r * n + b * QK + 4 * g, 4);
                sum[r] = _mm512_dpbusd_epi32(sum[r], _mm512_set1_epi32(quad), xv);
            }
        }
        __m512 xsv = _mm512_loadu_ps(xs + b * GEMM_TOKENS);
        __m512 xsums = _mm512_mul_ps(xsv, _mm512_cvtepi32_ps(_mm512_loadu_si512(xsum + b * GEMM_TOKENS)));
        for (int r = 0; r < GEMM_ROWS; r++) {
            a[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[r]), _mm512_mul_ps(_mm512_set1_ps(ws[r * n_blocks + b]), xsv), a[r]);
            a[r] = _mm512_fnmadd_ps(_mm512_set1_ps(wm[r * n_blocks + b]), xsums, a[r]);
        }
    }
    for (int r = 0; r < GEMM_ROWS; r++) _mm512_storeu_ps(out[r], a[r]);
}

/* The steps on two panels at once (GEMM_PANELS: matmul's steps take the
   panels in pairs; an odd last one goes alone, through the steps above):
   panel p at x (and its scales and sums at xs, xsum) and panel p + 1 right
   after it, as Panels lays them out; out[q] for panel p + q. Definitions:
   gemm_*_scalar on each panel. Each weight broadcast serves 32 tokens, and
   each step's panel vectors two rows' worth of work more.
   fp32: per value k, one load from each panel and 12 FMAs, so the loads
   fall from 7 to 4 per 6 FMAs (in cache, one thread: 73 -> 118 billion
   multiply-adds per second against gemm_f32 twice, rows of 768). Its two
   panels are `next` floats apart, each with gemm_f32's panel_stride:
   matmul's packed ones (next n * 16, stride 16), or attention's columns
   of the cached values, in place (next 16, stride head_dim). */
static void gemm_f32_pair(const float *w, size_t stride, int rows, const float *x, size_t next, size_t panel_stride,
                          int n, float out[2][GEMM_ROWS][GEMM_TOKENS]) {
    const float *x0 = x, *x1 = x + next;
    const float *wr[GEMM_ROWS]; /* rows past `rows` repeat the last one: computed, not stored */
    for (int r = 0; r < GEMM_ROWS; r++) wr[r] = w + (size_t)(r < rows ? r : rows - 1) * stride;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0; /* panel 0 */
    __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0, b4 = a0, b5 = a0;                   /* panel 1 */
    for (int k = 0; k < n; k++) {
        __m512 a = _mm512_loadu_ps(x0 + k * panel_stride), b = _mm512_loadu_ps(x1 + k * panel_stride), wk;
        wk = _mm512_set1_ps(wr[0][k]), a0 = _mm512_fmadd_ps(wk, a, a0), b0 = _mm512_fmadd_ps(wk, b, b0);
        wk = _mm512_set1_ps(wr[1][k]), a1 = _mm512_fmadd_ps(wk, a, a1), b1 = _mm512_fmadd_ps(wk, b, b1);
        wk = _mm512_set1_ps(wr[2][k]), a2 = _mm512_fmadd_ps(wk, a, a2), b2 = _mm512_fmadd_ps(wk, b, b2);
        wk = _mm512_set1_ps(wr[3][k]), a3 = _mm512_fmadd_ps(wk, a, a3), b3 = _mm512_fmadd_ps(wk, b, b3);
        wk = _mm512_set1_ps(wr[4][k]), a4 = _mm512_fmadd_ps(wk, a, a4), b4 = _mm512_fmadd_ps(wk, b, b4);
        wk = _mm512_set1_ps(wr[5][k]), a5 = _mm512_fmadd_ps(wk, a, a5), b5 = _mm512_fmadd_ps(wk, b, b5);
    }
    _mm512_storeu_ps(out[0][0], a0), _mm512_storeu_ps(out[0][1], a1), _mm512_storeu_ps(out[0][2], a2);
    _mm512_storeu_ps(out[0][3], a3), _mm512_storeu_ps(out[0][4], a4), _mm512_storeu_ps(out[0][5], a5);
    _mm512_storeu_ps(out[1][0], b0), _mm512_storeu_ps(out[1][1], b1), _mm512_storeu_ps(out[1][2], b2);
    _mm512_storeu_ps(out[1][3], b3), _mm512_storeu_ps(out[1][4], b4), _mm512_storeu_ps(out[1][5], b5);
}

/* q6_k: per two pairs of values k, four loads (two per panel) and
   per row four dpwssd, the row's two broadcast pairs each serving both
   panels (in cache, one thread: 130-142 -> 161-177 against gemm_i16 twice). */
static void gemm_i16_pair(const int16_t *w16, const float *ws, int n_blocks, const int16_t *x16, const float *xs,
                          float out[2][GEMM_ROWS][GEMM_TOKENS]) {
    const int16_t *x16b = x16 + (size_t)n_blocks * QK * GEMM_TOKENS; /* the second panel */
    const float *xsb = xs + (size_t)n_blocks * GEMM_TOKENS;
    __m512 a[GEMM_ROWS_I16], c[GEMM_ROWS_I16]; /* panel 0, panel 1 */
    for (int r = 0; r < GEMM_ROWS_I16; r++) a[r] = c[r] = _mm512_setzero_ps();
    size_t n = (size_t)n_blocks * QK;
    for (int b = 0; b < n_blocks; b++) {
        __m512i s0[GEMM_ROWS_I16], s1[GEMM_ROWS_I16];
        for (int r = 0; r < GEMM_ROWS_I16; r++) s0[r] = s1[r] = _mm512_setzero_si512();
        UNROLL_8
        for (int g = 0; g < QK / 2; g += 2) { /* pairs g and g + 1 */
            size_t at = (size_t)(b * QK / 2 + g) * 2 * GEMM_TOKENS;
            __m512i x = _mm512_loadu_si512(x16 + at), y = _mm512_loadu_si512(x16 + at + 32);
            __m512i u = _mm512_loadu_si512(x16b + at), v = _mm512_loadu_si512(x16b + at + 32);
            IN_ZMM(x);
            IN_ZMM(y);
            IN_ZMM(u);
            IN_ZMM(v);
            for (int r = 0; r < GEMM_ROWS_I16; r++) {
                int32_t px, py;
                memcpy(&px, w16 + r * n + b * QK + 2 * g, 4);
                memcpy(&py, w16 + r * n + b * QK + 2 * g + 2, 4);
                __m512i wx = _mm512_set1_epi32(px), wy = _mm512_set1_epi32(py);
                s0[r] = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(s0[r], x, wx), y, wy);
                s1[r] = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(s1[r], u, wx), v, wy);
            }
        }
        __m512 xa = _mm512_loadu_ps(xs + b * GEMM_TOKENS), xb = _mm512_loadu_ps(xsb + b * GEMM_TOKENS);
        for (int r = 0; r < GEMM_ROWS_I16; r++) {
            __m512 wsb = _mm512_set1_ps(ws[r * n_blocks + b]);
            a[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s0[r]), _mm512_mul_ps(wsb, xa), a[r]);
            c[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1[r]), _mm512_mul_ps(wsb, xb), c[r]);
        }
    }
    for (int r = 0; r < GEMM_ROWS_I16; r++) _mm512_storeu_ps(out[0][r], a[r]), _mm512_storeu_ps(out[1][r], c[r]);
}

/* q4_0, q4_k and q8_0: per quad of values k, one load from each panel and per row
   two dpbusd, the row's broadcast quad serving both (in cache, one thread:
   239-249 -> 307-315 against gemm_u8 twice). */
static void gemm_u8_pair(const uint8_t *wu, const float *ws, const float *wm, int n_blocks, const int8_t *x8,
                         const float *xs, const int32_t *xsum, float out[2][GEMM_ROWS][GEMM_TOKENS]) {
    const int8_t *x8b = x8 + (size_t)n_blocks * QK * GEMM_TOKENS; /* the second panel */
    const float *xsb = xs + (size_t)n_blocks * GEMM_TOKENS;
    const int32_t *xsumb = xsum + (size_t)n_blocks * GEMM_TOKENS;
    __m512 a[GEMM_ROWS], c[GEMM_ROWS]; /* panel 0, panel 1 */
    for (int r = 0; r < GEMM_ROWS; r++) a[r] = c[r] = _mm512_setzero_ps();
    size_t n = (size_t)n_blocks * QK;
    for (int b = 0; b < n_blocks; b++) {
        __m512i s0[GEMM_ROWS], s1[GEMM_ROWS];
        for (int r = 0; r < GEMM_ROWS; r++) s0[r] = s1[r] = _mm512_setzero_si512();
        UNROLL_8
        for (int g = 0; g < QK / 4; g++) {
            size_t at = (size_t)(b * QK / 4 + g) * GEMM_TOKENS * 4;
            __m512i x = _mm512_loadu_si512(x8 + at), y = _mm512_loadu_si512(x8b + at);
            IN_ZMM(x);
            IN_ZMM(y);
            for (int r = 0; r < GEMM_ROWS; r++) {
                int32_t quad;
                memcpy(&quad, wu + r * n + b * QK + 4 * g, 4);
                __m512i q = _mm512_set1_epi32(quad);
                s0[r] = _mm512_dpbusd_epi32(s0[r], q, x);
                s1[r] = _mm512_dpbusd_epi32(s1[r], q, y);
            }
        }
        __m512 xa = _mm512_loadu_ps(xs + b * GEMM_TOKENS), xb = _mm512_loadu_ps(xsb + b * GEMM_TOKENS);
        __m512 suma = _mm512_mul_ps(xa, _mm512_cvtepi32_ps(_mm512_loadu_si512(xsum + b * GEMM_TOKENS)));
        __m512 sumb = _mm512_mul_ps(xb, _mm512_cvtepi32_ps(_mm512_loadu_si512(xsumb + b * GEMM_TOKENS)));
        for (int r = 0; r < GEMM_ROWS; r++) {
            __m512 wsb = _mm512_set1_ps(ws[r * n_blocks + b]), wmb = _mm512_set1_ps(wm[r * n_blocks + b]);
            a[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s0[r]), _mm512_mul_ps(wsb, xa), a[r]);
            a[r] = _mm512_fnmadd_ps(wmb, suma, a[r]);
            c[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1[r]), _mm512_mul_ps(wsb, xb), c[r]);
            c[r] = _mm512_fnmadd_ps(wmb, sumb, c[r]);
        }
    }
    for (int r = 0; r < GEMM_ROWS; r++) _mm512_storeu_ps(out[0][r], a[r]), _mm512_storeu_ps(out[1][r], c[r]);
}
#endif /* USE_AVX512 */
#define QUANTIZED_PANELS 1 /* quantized prompts take the GEMM path (elsewhere: the tiles) */

/* ---- tiles: the matrix-matrix kernels of prompt processing ----
   A tile is 2 weight rows x 4 tokens, 8 dot products at once: each weight
   loaded (and for q4_0 unpacked) is used by 4 tokens, and each token's
   activations by 2 rows, so the loads no longer outnumber the multiplies.
   Their plain versions are tile_*_scalar above, which the tests hold them
   to. out[r][t] = row r . token t. */

static void tile_f32(const float *w0, const float *w1, const float *x, int n, float out[2][4]) {
    __m256 a[2][4];
    for (int t = 0; t < 4; t++) a[0][t] = a[1][t] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 r0 = _mm256_loadu_ps(w0 + i), r1 = _mm256_loadu_ps(w1 + i);
        IN_REGISTER(r0); /* GCC otherwise loaded both again for each token: 16 loads to 8 */
        IN_REGISTER(r1); /* multiply-adds, and half the speed (T = 8, in cache: 15 -> 23-28 GMAC/s) */
        for (int t = 0; t < 4; t++) {
            __m256 xt = _mm256_loadu_ps(x + (size_t)t * n + i);
            a[0][t] = _mm256_fmadd_ps(r0, xt, a[0][t]);
            a[1][t] = _mm256_fmadd_ps(r1, xt, a[1][t]);
        }
    }
    for (int t = 0; t < 4; t++) {
        const float *xt = x + (size_t)t * n;
        out[0][t] = hsum256(a[0][t]) + dot_f32_scalar(w0 + i, xt + i, n - i);
        out[1][t] = hsum256(a[1][t]) + dot_f32_scalar(w1 + i, xt + i, n - i);
    }
}

/* The 8 combined scales of block b: lanes r * 4 + t = scale of row r x scale of token t. */
static __m256 tile_scales(const uint8_t *row0, const uint8_t *row1, size_t block_bytes, const QuantizedVector *x, int b) {
    __m128 xs = _mm_setr_ps(x[0].scale[b], x[1].scale[b], x[2].scale[b], x[3].scale[b]);
    __m256 ws = _mm256_setr_m128(_mm_set1_ps(_cvtsh_ss(q_scale_bits(row0, b, block_bytes))),
                                 _mm_set1_ps(_cvtsh_ss(q_scale_bits(row1, b, block_bytes))));
    return _mm256_mul_ps(ws, _mm256_setr_m128(xs, xs));
}

/* The 4 tokens' sums of q_x in block b, as floats, in lanes t and 4 + t (q4_0's offset). */
static __m256 tile_sums(const QuantizedVector *x, int b) {
    __m128 sums = _mm_cvtepi32_ps(_mm_setr_epi32(x[0].sum[b], x[1].sum[b], x[2].sum[b], x[3].sum[b]));
    return _mm256_setr_m128(sums, sums);
}

static void tile_q8(const uint8_t *row0, const uint8_t *row1, const QuantizedVector *x, int n_blocks, float out[2][4]) {
    __m256 a[2][4];
    for (int t = 0; t < 4; t++) a[0][t] = a[1][t] = _mm256_setzero_ps();
    for (int b = 0; b < n_blocks; b++) {
        float scale[8];
        _mm256_storeu_ps(scale, tile_scales(row0, row1, QK, x, b));
        __m256i r0 = _mm256_loadu_si256((const __m256i *)q_block(row0, b, n_blocks, QK));
        __m256i r1 = _mm256_loadu_si256((const __m256i *)q_block(row1, b, n_blocks, QK));
        __m256i u0 = _mm256_sign_epi8(r0, r0), u1 = _mm256_sign_epi8(r1, r1);
        for (int t = 0; t < 4; t++) {
            __m256i xt = _mm256_loadu_si256((const __m256i *)(x[t].q + b * QK));
            __m256i d0 = dot_u8_s8(u0, _mm256_sign_epi8(xt, r0)), d1 = dot_u8_s8(u1, _mm256_sign_epi8(xt, r1));
            a[0][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), _mm256_broadcast_ss(scale + t), a[0][t]);
            a[1][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d1), _mm256_broadcast_ss(scale + 4 + t), a[1][t]);
        }
    }
    for (int t = 0; t < 4; t++) out[0][t] = hsum256(a[0][t]), out[1][t] = hsum256(a[1][t]);
}

/* Blocks go in pairs, as in dot_q4: both blocks' nibbles from one 256-bit
   load (a pair never spans two groups: they hold an even number of blocks
   but the last), each token's activations loaded to match, one widening per
   pair. A last odd block goes alone. */
static void tile_q4(const uint8_t *row0, const uint8_t *row1, const QuantizedVector *x, int n_blocks, float out[2][4]) {
    __m256 a[2][4], offset = _mm256_setzero_ps();
    for (int t = 0; t < 4; t++) a[0][t] = a[1][t] = _mm256_setzero_ps();
    int b = 0;
    for (; b + 2 <= n_blocks; b += 2) {
        float scale[2][8];
        for (int k = 0; k < 2; k++) {
            __m256 s = tile_scales(row0, row1, QK / 2, x, b + k);
            _mm256_storeu_ps(scale[k], s);
            offset = _mm256_fmadd_ps(s, tile_sums(x, b + k), offset);
        }
        __m256i lo0, hi0, lo1, hi1;
        unpack_q4_pair(q_block(row0, b, n_blocks, QK / 2), &lo0, &hi0);
        unpack_q4_pair(q_block(row1, b, n_blocks, QK / 2), &lo1, &hi1);
        int apart, at = pair_at(b, n_blocks, &apart);
        for (int t = 0; t < 4; t++) {
            __m256i x_first, x_second;
            load_x_pair(x[t].halves + at, apart, &x_first, &x_second);
            __m256 d0 = _mm256_cvtepi32_ps(pair_dot_q4(lo0, hi0, x_first, x_second));
            __m256 d1 = _mm256_cvtepi32_ps(pair_dot_q4(lo1, hi1, x_first, x_second));
            a[0][t] = _mm256_fmadd_ps(d0, pair_scale(scale[0] + t, scale[1] + t), a[0][t]);
            a[1][t] = _mm256_fmadd_ps(d1, pair_scale(scale[0] + 4 + t, scale[1] + 4 + t), a[1][t]);
        }
    }
    if (b < n_blocks) { /* an odd last block */
        __m256 s = tile_scales(row0, row1, QK / 2, x, b);
        float scale[8];
        _mm256_storeu_ps(scale, s);
        offset = _mm256_fmadd_ps(s, tile_sums(x, b), offset);
        __m256i n0 = unpack_q4(q_block(row0, b, n_blocks, QK / 2)), n1 = unpack_q4(q_block(row1, b, n_blocks, QK / 2));
        for (int t = 0; t < 4; t++) {
            __m256i xt = _mm256_loadu_si256((const __m256i *)(x[t].q + b * QK));
            a[0][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8_s8(n0, xt)), _mm256_broadcast_ss(scale + t), a[0][t]);
            a[1][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8_s8(n1, xt)), _mm256_broadcast_ss(scale + 4 + t), a[1][t]);
        }
    }
    float off[8];
    _mm256_storeu_ps(off, offset);
    for (int t = 0; t < 4; t++) out[0][t] = hsum256(a[0][t]) - 8.0f * off[t], out[1][t] = hsum256(a[1][t]) - 8.0f * off[4 + t];
}

/* ---- K-quants (AVX2) ----
   A K block's products are summed as int32 with each group's integer scale
   as the multiplier of the widening madd (instead of ones), so a whole
   block of 256 weights costs one conversion and one float multiply-add. */

/* the fp16 at p, by F16C */
static float half_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* q4k_scales in one vector, for the dot product and the tile: the 8 scales in bytes 0-7,
   the 8 mins in bytes 8-15. The 12 bytes at blk + 4 as 32-bit lanes a0 a1
   a2: scales 0-3 are a0's low 6 bits, scales 4-7 a2's low nibbles with a0's
   top 2 bits above them; the mins likewise from a1 and a2's high nibbles.
   (The load takes 16 bytes: the last 4 are the block's first nibbles,
   unused.) Taken apart in general-purpose registers (q4k_scales) and moved
   over, they cost the 1.1B shape's q4_k generation 5% (56.0 against 59.6
   tok/s, alternating builds, 8 of 8 rounds). */
static __m128i q4k_scales_vector(const uint8_t *blk) {
    __m128i v = _mm_loadu_si128((const __m128i *)(blk + 4));
    __m128i low = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0)), _mm_setr_epi32(0, 0, 0, 4));
    low = _mm_and_si128(low, _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f)); /* [a0 a2 a1 a2>>4] */
    __m128i high = _mm_srli_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0)), 2); /* top 2 bits to bits 4, 5 */
    return _mm_or_si128(low, _mm_and_si128(high, _mm_setr_epi32(0, 0x30303030, 0, 0x30303030)));
}

/* The 8 scales of a Q4_K block (bytes 0-7 of sc) in every 8 bytes of a
   vector, and group g's scale as 16 int16 taken from it by a byte shuffle
   (one instruction, where a broadcast from memory takes three). */
static __m256i q4k_scale_bytes(__m128i sc) { return _mm256_broadcastq_epi64(sc); }

static __m256i q4k_group_scale(__m256i scale_bytes, int g) {
    return _mm256_shuffle_epi8(scale_bytes, _mm256_set1_epi16((short)(0x8000 | g))); /* 0x80: a zero byte */
}

/* A Q4_K block's nibbles . one token's 256 activations, each group times its
   scale, as 8 int32 (scales_mins: q4k_scales_vector's). The 32 bytes holding
   groups 2c and 2c + 1 split into their low nibbles (group 2c) and high ones
   (2c + 1) with unpack_q4_pair: each group meets 32 consecutive activations,
   no reordering needed; each pair of groups is scaled and summed by
   dot_i16_add2 (with VNNI, two dpwssd). */
#if !defined(USE_AVX512)
static __m256i q4k_products(const uint8_t *blk, __m128i scales_mins, const int8_t *xq) {
    __m256i scales = q4k_scale_bytes(scales_mins), acc = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        __m256i lo, hi;
        unpack_q4_pair(blk + 16 + 32 * c, &lo, &hi);
        __m256i p0 = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(xq + 64 * c)));
        __m256i p1 = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(xq + 64 * c + 32)));
        acc = dot_i16_add2(acc, p0, q4k_group_scale(scales, 2 * c), p1, q4k_group_scale(scales, 2 * c + 1));
    }
    return acc;
}
#else
/* The AVX-512 form: both groups of the 32 bytes in one register, the low
   nibbles (group 2c) in the lower 256 bits and the high ones (2c + 1) in
   the upper (one 32-byte load into both halves, shifted by 0 and 4 by one
   variable shift), meet their 64 consecutive activations in one maddubs, and take
   their two scales by one byte shuffle (every 128-bit lane holds all 8
   scale bytes); the two halves add up at the end, as integers, so the sums
   are those of the AVX2 form exactly. Generation of the 1.1B shape, builds
   alternating: q4_k 1.06x (6 of 6 rounds), q4_k_m 1.09x (5 of 5); in cache
   (tools/kernels.c) 39-46 -> 53 billion multiply-adds a second. The weights
   are still read 32 bytes at a time: 64-byte loads (two chunks, put in
   order by two lane shuffles) were 5% faster in cache but, a Q4_K block
   being 144 bytes, most of them cross a cache line, and generation went
   2.5% slower (1 of 6 rounds). Each step's products are scaled and added
   by one dpwssd, where a madd and an add took two instructions (in cache,
   one thread, 6 of 6 rounds: q4_k 57 -> 59-60, q6_k's the same way 57 ->
   60 billion multiply-adds a second; generation of the 1.1B shape level
   within this host's noise). */
static __m256i q4k_products(const uint8_t *blk, __m128i scales_mins, const int8_t *xq) {
    __m512i scale_bytes = _mm512_broadcastq_epi64(scales_mins), acc = _mm512_setzero_si512();
    const __m512i by = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1); /* the upper half by 4 */
    for (int c = 0; c < 4; c++) {
        __m512i w = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * c)));
        __m512i nibbles = _mm512_and_si512(_mm512_srlv_epi16(w, by), _mm512_set1_epi8(15));
        __m512i pick = _mm512_inserti64x4(_mm512_set1_epi16((short)(0x8000 | 2 * c)),
                                          _mm256_set1_epi16((short)(0x8000 | (2 * c + 1))), 1); /* 0x80: a zero byte */
        __m512i p = _mm512_maddubs_epi16(nibbles, _mm512_loadu_si512((const void *)(xq + 64 * c)));
        acc = _mm512_dpwssd_epi32(acc, p, _mm512_shuffle_epi8(scale_bytes, pick));
    }
    return _mm256_add_epi32(_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64(acc, 1));
}
#endif

/* mins[i] * S_i over the 8 groups, as 8 int32 (the mins: bytes 8-15 of
   q4k_scales_vector's), in one madd: each min, twice, against the sums of
   the group's two halves of 16 (sum16). In floats, from the sums of 32,
   they took two more conversions and a multiply. */
static __m256i q4k_mins(__m128i scales_mins, const int16_t *sum16) {
    __m256i twice = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(scales_mins, scales_mins)); /* m0 m0 m1 m1 .. m7 m7 */
    return _mm256_madd_epi16(twice, _mm256_loadu_si256((const __m256i *)sum16));
}

/* A Q4_K block's d and dmin times x's scale, lanes 0 and 1, by one
   conversion (in cache 52.5 -> 54.8; 1.1B q4_k 1.02x, 7 of 8) */
static __m128 q4k_d_dmin(const uint8_t *blk, float x_scale) {
    int32_t d_dmin;
    memcpy(&d_dmin, blk, 4);
    return _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(d_dmin)), _mm_set1_ps(x_scale));
}

/* Row of a q4_k matrix . x (dot_q4k_scalar). The AVX-512 form keeps a
   block's products (lanes 0-7) and its mins' sums (8-15) side by side in one
   register: one conversion and one multiply-add by [d x 8, dmin x 8] take
   both, and the halves are subtracted once at the end. With q4k_mins in
   integers and the nibbles split by one variable shift, in cache (one thread)
   57 -> 61 billion multiply-adds a second; generation, builds alternating:
   1.1B q4_k 1.05x (6 of 6 rounds), q4_k_m 1.07x (5 of 5). */
#if defined(USE_AVX512)
static float dot_q4k(const uint8_t *w, const QuantizedVector *x, int n_blocks) {
    __m512 acc = _mm512_setzero_ps();
    const __m512i d_then_dmin = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    for (int b = 0; b < n_blocks; b++) {
        const uint8_t *blk = w + (size_t)b * Q4K_BYTES;
        prefetch_row(blk), prefetch_row(blk + 64), prefetch_row(blk + 128);
        __m128i scales_mins = q4k_scales_vector(blk);
        __m128 ds = q4k_d_dmin(blk, x->scale[b * 8]);
        __m256i products = q4k_products(blk, scales_mins, x->q + (size_t)b * QK_K);
        __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(products), q4k_mins(scales_mins, x->sum16 + b * 16), 1);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(both), _mm512_permutexvar_ps(d_then_dmin, _mm512_castps128_ps512(ds)), acc);
    }
    __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)); /* (extractf32x8 is AVX512DQ) */
    return hsum256(_mm256_sub_ps(_mm512_castps512_ps256(acc), high));
}
#else
static float dot_q4k(const uint8_t *w, const QuantizedVector *x, int n_blocks) {
    __m256 acc = _mm256_setzero_ps(), mins = _mm256_setzero_ps();
    for (int b = 0; b < n_blocks; b++) {
        const uint8_t *blk = w + (size_t)b * Q4K_BYTES;
        prefetch_row(blk), prefetch_row(blk + 64), prefetch_row(blk + 128);
        __m128i scales_mins = q4k_scales_vector(blk);
        __m128 ds = q4k_d_dmin(blk, x->scale[b * 8]);
        __m256i products = q4k_products(blk, scales_mins, x->q + (size_t)b * QK_K);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(products), _mm256_broadcastss_ps(ds), acc);
        mins = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q4k_mins(scales_mins, x->sum16 + b * 16)),
                               _mm256_broadcastss_ps(_mm_movehdup_ps(ds)), mins);
    }
    return hsum256(_mm256_sub_ps(acc, mins));
}
#endif

/* Group i of a Q6_K block (values 32i .. 32i + 31) as bytes q in [0, 63]
   (the weight is q - 32): the low 4 bits from one nibble of 32 low-bit
   bytes, the high 2 from bits 2j, 2j + 1 of the 32 high-bit bytes, moved to
   bits 4, 5. */
static __m256i q6k_group(const uint8_t *blk, int i) {
    int half = i / 4, j = i % 4;
    __m256i low = _mm256_loadu_si256((const __m256i *)(blk + half * 64 + (j % 2) * 32));
    __m256i high = _mm256_loadu_si256((const __m256i *)(blk + 128 + half * 32));
    if (j >= 2) low = _mm256_srli_epi16(low, 4);
    switch (j) { /* bits 2j, 2j + 1 to bits 4, 5 (the mask below drops what crosses a byte) */
    case 0: high = _mm256_slli_epi16(high, 4); break;
    case 1: high = _mm256_slli_epi16(high, 2); break;
    case 3: high = _mm256_srli_epi16(high, 2); break;
    }
    return _mm256_or_si256(_mm256_and_si256(low, _mm256_set1_epi8(15)), _mm256_and_si256(high, _mm256_set1_epi8(0x30)));
}

/* A Q6_K block's 16 scales as int16, those of half h (scales 8h .. 8h + 7)
   in both 128-bit lanes; then group j of that half takes its two scales,
   one per lane (the low lane holds the group's first 16 values, the high
   lane the rest), each repeated 8 times, by one byte shuffle. */
static void q6k_half_scales(const uint8_t *blk, __m256i halves[2]) {
    __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 192)));
    halves[0] = _mm256_permute2x128_si256(v, v, 0x00);
    halves[1] = _mm256_permute2x128_si256(v, v, 0x11);
}

static __m256i q6k_group_scales(__m256i half_scales, int j) {
    __m256i pick = _mm256_setr_m128i(_mm_set1_epi16((short)((4 * j + 1) << 8 | 4 * j)),
                                     _mm_set1_epi16((short)((4 * j + 3) << 8 | (4 * j + 2))));
    return _mm256_shuffle_epi8(half_scales, pick);
}

/* Group values q . 32 activations, each half times its scale, as 8 int32.
   q is unsigned, as maddubs wants; the - 32 of every weight is taken out
   once per block (q6k_offset). */
static __m256i q6k_group_dot(__m256i q, __m256i scales16, const int8_t *x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)x)), scales16);
}

/* 32 * sum over the block's 16 groups of 16 of scale * (sum of their q_x),
   as 8 int32: what the - 32 of every weight takes from the products. */
static __m256i q6k_offset(const uint8_t *blk, const int16_t *sum16) {
    __m256i scales = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 192)));
    __m256i sums = _mm256_loadu_si256((const __m256i *)sum16);
    return _mm256_slli_epi32(_mm256_madd_epi16(scales, sums), 5);
}

/* A Q6_K block's groups . one token's 256 activations, each half-group
   times its scale, as 8 int32 (before q6k_offset). */
#if !defined(USE_AVX512)
static __m256i q6k_products(const uint8_t *blk, const int8_t *xq) {
    __m256i halves[2], p0 = _mm256_setzero_si256(), p1 = _mm256_setzero_si256();
    q6k_half_scales(blk, halves);
    for (int i = 0; i < 8; i += 2) {
        p0 = _mm256_add_epi32(p0, q6k_group_dot(q6k_group(blk, i), q6k_group_scales(halves[i / 4], i % 4), xq + 32 * i));
        p1 = _mm256_add_epi32(p1, q6k_group_dot(q6k_group(blk, i + 1), q6k_group_scales(halves[i / 4], i % 4 + 1),
                                                xq + 32 * i + 32));
    }
    return _mm256_add_epi32(p0, p1);
}
#else
/* The AVX-512 form: two groups a step, j and j + 1 of a half (as
   q6k_group: their low bits are the low, or the high, nibbles of the half's
   64 low-bit bytes, and their high bits the same 32 bytes shifted by two
   amounts, one per 256 bits, by a variable shift), against their 64
   consecutive activations; each 128-bit lane (16 values) takes its own scale
   from the half's 8 by one byte shuffle. The halves add up at the end as
   integers: the sums of the AVX2 form exactly. In cache (tools/kernels.c)
   44 -> 56 billion multiply-adds a second; generating, builds alternating,
   q6_k models of the 1.1B shape 1.18x and of stories110M 1.10x (6 of 6
   rounds each), the 1.1B q4_k_m (q6_k in a quarter of its bytes) 1.02x. */
static __m256i q6k_products(const uint8_t *blk, const int8_t *xq) {
    __m256i all_scales = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 192))); /* 16 int16 */
    __m512i acc = _mm512_setzero_si512();
    for (int half = 0; half < 2; half++) {
        const uint8_t *low_bits = blk + 64 * half, *high_bits = blk + 128 + 32 * half;
        __m512i scales = _mm512_broadcast_i32x4(half ? _mm256_extracti128_si256(all_scales, 1)
                                                     : _mm256_castsi256_si128(all_scales)); /* the half's 8, in every lane */
        __m512i low = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)low_bits)),
                                         _mm256_loadu_si256((const __m256i *)(low_bits + 32)), 1);
        __m512i high = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)high_bits));
        for (int j = 0; j < 4; j += 2) { /* bits 2j, 2j + 1 of high to bits 4, 5, and 2j + 2, 2j + 3 */
            __m512i by = _mm512_inserti64x4(_mm512_set1_epi16(j ? 0 : 4), _mm256_set1_epi16(2), 1);
            __m512i q = _mm512_or_si512(_mm512_and_si512(j ? _mm512_srli_epi16(low, 4) : low, _mm512_set1_epi8(15)),
                                        _mm512_and_si512(j ? _mm512_srlv_epi16(high, by) : _mm512_sllv_epi16(high, by),
                                                         _mm512_set1_epi8(0x30)));
            __m512i pick = _mm512_inserti64x4( /* lane L: the int16 scale 2j + L of the half (one 512-bit
                                                  shuffle; two of q6k_group_scales: 10% slower in cache) */
                _mm512_castsi256_si512(_mm256_setr_m128i(_mm_set1_epi16((short)((4 * j + 1) << 8 | 4 * j)),
                                                         _mm_set1_epi16((short)((4 * j + 3) << 8 | (4 * j + 2))))),
                _mm256_setr_m128i(_mm_set1_epi16((short)((4 * j + 5) << 8 | (4 * j + 4))),
                                  _mm_set1_epi16((short)((4 * j + 7) << 8 | (4 * j + 6)))), 1);
            __m512i x = _mm512_loadu_si512((const void *)(xq + 128 * half + 32 * j));
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(q, x), _mm512_shuffle_epi8(scales, pick));
        }
    }
    return _mm256_add_epi32(_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64(acc, 1));
}
#endif

static float dot_q6k(const uint8_t *w, const QuantizedVector *x, int n_blocks) {
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n_blocks; b++) {
        const uint8_t *blk = w + (size_t)b * Q6K_BYTES;
        prefetch_row(blk), prefetch_row(blk + 64), prefetch_row(blk + 128), prefetch_row(blk + 192);
        __m256i exact = _mm256_sub_epi32(q6k_products(blk, x->q + (size_t)b * QK_K), q6k_offset(blk, x->sum16 + b * 16));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(exact), _mm256_set1_ps(x->scale[b * 8] * half_at(blk + 208)), acc);
    }
    return hsum256(acc);
}

/* Tiles of K blocks: each group of weights unpacked once for the 4 tokens;
   a block's integer sums of each (row, token) in registers, then one
   multiply-add each into the float sums. */
static void tile_q4k(const uint8_t *w0, const uint8_t *w1, const QuantizedVector *x, int n_blocks, float out[2][4]) {
    __m256 a[2][4];
    for (int t = 0; t < 4; t++) a[0][t] = a[1][t] = _mm256_setzero_ps();
    for (int b = 0; b < n_blocks; b++) {
        const uint8_t *blk[2] = {w0 + (size_t)b * Q4K_BYTES, w1 + (size_t)b * Q4K_BYTES};
        __m128i scales_mins[2] = {q4k_scales_vector(blk[0]), q4k_scales_vector(blk[1])};
        __m256i scales[2] = {q4k_scale_bytes(scales_mins[0]), q4k_scale_bytes(scales_mins[1])};
        __m256i p[2][4];
        for (int t = 0; t < 4; t++) p[0][t] = p[1][t] = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i lo0, hi0, lo1, hi1;
            unpack_q4_pair(blk[0] + 16 + 32 * c, &lo0, &hi0);
            unpack_q4_pair(blk[1] + 16 + 32 * c, &lo1, &hi1);
            __m256i s00 = q4k_group_scale(scales[0], 2 * c), s01 = q4k_group_scale(scales[0], 2 * c + 1);
            __m256i s10 = q4k_group_scale(scales[1], 2 * c), s11 = q4k_group_scale(scales[1], 2 * c + 1);
            for (int t = 0; t < 4; t++) {
                const int8_t *xq = x[t].q + (size_t)b * QK_K + 64 * c;
                __m256i x0 = _mm256_loadu_si256((const __m256i *)xq), x1 = _mm256_loadu_si256((const __m256i *)(xq + 32));
                p[0][t] = _mm256_add_epi32(p[0][t], _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo0, x0), s00),
                                                                     _mm256_madd_epi16(_mm256_maddubs_epi16(hi0, x1), s01)));
                p[1][t] = _mm256_add_epi32(p[1][t], _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo1, x0), s10),
                                                                     _mm256_madd_epi16(_mm256_maddubs_epi16(hi1, x1), s11)));
            }
        }
        for (int r = 0; r < 2; r++)
            for (int t = 0; t < 4; t++) {
                float s = x[t].scale[b * 8];
                __m256 products = _mm256_mul_ps(_mm256_cvtepi32_ps(p[r][t]), _mm256_set1_ps(s * half_at(blk[r])));
                __m256 mins = _mm256_mul_ps(_mm256_cvtepi32_ps(q4k_mins(scales_mins[r], x[t].sum16 + b * 16)),
                                            _mm256_set1_ps(s * half_at(blk[r] + 2)));
                a[r][t] = _mm256_add_ps(a[r][t], _mm256_sub_ps(products, mins));
            }
    }
    for (int t = 0; t < 4; t++) out[0][t] = hsum256(a[0][t]), out[1][t] = hsum256(a[1][t]);
}

static void tile_q6k(const uint8_t *w0, const uint8_t *w1, const QuantizedVector *x, int n_blocks, float out[2][4]) {
    __m256 a[2][4];
    for (int t = 0; t < 4; t++) a[0][t] = a[1][t] = _mm256_setzero_ps();
    for (int b = 0; b < n_blocks; b++) {
        const uint8_t *blk[2] = {w0 + (size_t)b * Q6K_BYTES, w1 + (size_t)b * Q6K_BYTES};
        __m256i p[2][4], halves0[2], halves1[2];
        for (int t = 0; t < 4; t++) p[0][t] = p[1][t] = _mm256_setzero_si256();
        q6k_half_scales(blk[0], halves0);
        q6k_half_scales(blk[1], halves1);
        for (int i = 0; i < 8; i++) {
            __m256i g0 = q6k_group(blk[0], i), g1 = q6k_group(blk[1], i);
            __m256i s0 = q6k_group_scales(halves0[i / 4], i % 4), s1 = q6k_group_scales(halves1[i / 4], i % 4);
            for (int t = 0; t < 4; t++) {
                const int8_t *xq = x[t].q + (size_t)b * QK_K + 32 * i;
                p[0][t] = _mm256_add_epi32(p[0][t], q6k_group_dot(g0, s0, xq));
                p[1][t] = _mm256_add_epi32(p[1][t], q6k_group_dot(g1, s1, xq));
            }
        }
        for (int r = 0; r < 2; r++) {
            float d = half_at(blk[r] + 208);
            for (int t = 0; t < 4; t++) {
                __m256i exact = _mm256_sub_epi32(p[r][t], q6k_offset(blk[r], x[t].sum16 + b * 16));
                a[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(exact), _mm256_set1_ps(x[t].scale[b * 8] * d), a[r][t]);
            }
        }
    }
    for (int t = 0; t < 4; t++) out[0][t] = hsum256(a[0][t]), out[1][t] = hsum256(a[1][t]);
}

/* exp(x) in 8 lanes. With n = round(x / ln 2) and r = x - n ln 2 (|r| <=
   ln 2 / 2), exp(x) = 2^n exp(r): exp(r) by its Taylor series up to r^7 (the
   first term left out, r^8 / 8!, is under 1e-8 of the result), 2^n made as a
   float's exponent bits. ln 2 is taken in two parts, the first with so few
   bits that n times it is exact; 2^n is applied in two halves, so that the
   results that underflow to denormals or to 0, and those that overflow to
   infinity, come out as expf's do. NaN stays NaN. */
static __m256 exp_lanes(__m256 x) {
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-104.0f)), _mm256_set1_ps(89.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040); /* Horner: 1 + r (1 + r (1/2 + r (1/6 + ... r / 7!))) */
    static const float taylor[] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 1.0f / 2, 1.0f, 1.0f};
    for (int k = 0; k < 7; k++) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(taylor[k]));
    __m256i ni = _mm256_cvtps_epi32(n), n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    return _mm256_blendv_ps(_mm256_mul_ps(_mm256_mul_ps(p, s1), s2), x, nan);
}

/* softmax_scalar's steps, 8 values at a time: the max, exp(x - max) and its
   sum; the last n % 8 values and the division by softmax_rest. */
static void softmax(float *x, int n) {
    int i = 0;
    __m256 max8 = _mm256_set1_ps(-INFINITY), sum8 = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) max8 = _mm256_max_ps(max8, _mm256_loadu_ps(x + i));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(max8), _mm256_extractf128_ps(max8, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    float max = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    for (; i < n; i++)
        if (x[i] > max) max = x[i];
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp_lanes(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(max)));
        _mm256_storeu_ps(x + i, e);
        sum8 = _mm256_add_ps(sum8, e);
    }
    softmax_rest(x, i, n, max, hsum256(sum8));
}

/* SiLU is g sigmoid(g) = g / (1 + exp(-g)), and GELU's 0.5 (1 + tanh(u)) is
   sigmoid(2u): both are g / (1 + exp(-a)), for a = g or a = 2u. */
static void gate_times_up(float *h, const float *up, size_t n, int activation) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(h + i), a = g;
        if (activation == ACT_GELU_TANH) { /* a = 2 sqrt(2/pi) (g + 0.044715 g^3) */
            __m256 g3 = _mm256_mul_ps(_mm256_mul_ps(g, g), g);
            a = _mm256_mul_ps(_mm256_fmadd_ps(g3, _mm256_set1_ps(0.044715f), g), _mm256_set1_ps(2.0f * 0.7978845608028654f));
        }
        __m256 sigmoid_den = _mm256_add_ps(_mm256_set1_ps(1.0f), exp_lanes(_mm256_sub_ps(_mm256_setzero_ps(), a)));
        _mm256_storeu_ps(h + i, _mm256_mul_ps(_mm256_div_ps(g, sigmoid_den), _mm256_loadu_ps(up + i)));
    }
    gate_times_up_scalar(h + i, up + i, n - i, activation);
}

/* unpack_row_scalar's results, 32 bytes at a time: a q8_0 or q4_0 group's 8
   scales by one conversion (F16C, exact, as fp16_to_fp32), two q4_0 blocks'
   nibbles split (unpack_q4_pair) and put in order by two lane permutes, 32
   q8_0 values moved to unsigned by one xor (or 16 widened at once), a q4_k
   block's scales and mins by q4k_scales_vector and its nibbles by
   unpack_q4_pair, q6_k's values by q6k_group, times their scales as int16.
   (The loops of
   bytes took over half of a short prompt's matmul time: 1.1B shape, 16
   tokens, 2 threads, timers: q8_0 77 of 136 ms, q4_0 66 of 107, q4_k 45
   of 86.) A last group shorter than QGROUP goes block by block. */
static void unpack_row(int type, const uint8_t *src, int n_padded, float *ws, float *wm, void *w) {
    int n_blocks = n_padded / QK, b = 0;
    if (type == WEIGHT_Q8_0 || type == WEIGHT_Q4_0) {
        size_t block_bytes = q_block_bytes(type);
        for (; b + QGROUP <= n_blocks; b += QGROUP) {
            const uint8_t *group = src + (size_t)b * (block_bytes + 2), *values = group + 2 * QGROUP;
            __m256 scale = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)group));
            _mm256_storeu_ps(ws + b, scale);
            _mm256_storeu_ps(wm + b, _mm256_mul_ps(scale, _mm256_set1_ps(u8_offset(type))));
            if (type == WEIGHT_Q8_0 && Q8_0_AS_BYTES) {
                uint8_t *dst = (uint8_t *)w + (size_t)b * QK;
                for (int k = 0; k < QGROUP * QK; k += 32) /* q + 128 */
                    _mm256_storeu_si256((__m256i *)(dst + k), _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(values + k)),
                                                                               _mm256_set1_epi8((char)0x80)));
            } else if (type == WEIGHT_Q8_0) {
                int16_t *dst = (int16_t *)w + (size_t)b * QK;
                for (int k = 0; k < QGROUP * QK; k += 16)
                    _mm256_storeu_si256((__m256i *)(dst + k), _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(values + k))));
            } else {
                uint8_t *dst = (uint8_t *)w + (size_t)b * QK;
                for (int k = 0; k < QGROUP; k += 2) { /* blocks k, k + 1: [low k | low k + 1], [high k | high k + 1] */
                    __m256i lo, hi;
                    unpack_q4_pair(values + k * (QK / 2), &lo, &hi);
                    _mm256_storeu_si256((__m256i *)(dst + k * QK), _mm256_permute2x128_si256(lo, hi, 0x20));
                    _mm256_storeu_si256((__m256i *)(dst + (k + 1) * QK), _mm256_permute2x128_si256(lo, hi, 0x31));
                }
            }
        }
        for (; b < n_blocks; b++) unpack_q_block(type, src, b, n_blocks, ws, wm, w);
    } else if (type == WEIGHT_Q4_K) {
        for (int k = 0; k < n_padded / QK_K; k++) {
            const uint8_t *blk = src + (size_t)k * Q4K_BYTES;
            __m128i scales_mins = q4k_scales_vector(blk);
            __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(scales_mins));
            __m256 mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(scales_mins, scales_mins)));
            _mm256_storeu_ps(ws + 8 * k, _mm256_mul_ps(_mm256_set1_ps(half_at(blk)), sc));
            _mm256_storeu_ps(wm + 8 * k, _mm256_mul_ps(_mm256_set1_ps(half_at(blk + 2)), mn));
            for (int c = 0; c < 4; c++) { /* 32 bytes: group 2c's values, group 2c + 1's */
                __m256i lo, hi;
                unpack_q4_pair(blk + 16 + 32 * c, &lo, &hi);
                uint8_t *dst = (uint8_t *)w + (size_t)k * QK_K + 64 * c;
                _mm256_storeu_si256((__m256i *)dst, lo), _mm256_storeu_si256((__m256i *)(dst + 32), hi);
            }
        }
    } else { /* q6_k */
        for (int k = 0; k < n_padded / QK_K; k++) {
            const uint8_t *blk = src + (size_t)k * Q6K_BYTES;
            const int8_t *scales = (const int8_t *)(blk + 192);
            _mm256_storeu_ps(ws + 8 * k, _mm256_set1_ps(half_at(blk + 208)));
            for (int i = 0; i < 8; i++) {
                __m256i q = q6k_group(blk, i); /* 32 values in [0, 63]: the weight is q - 32 */
                int16_t *dst = (int16_t *)w + (size_t)k * QK_K + 32 * i;
                for (int h = 0; h < 2; h++) {
                    __m256i v = _mm256_sub_epi16(_mm256_cvtepu8_epi16(h ? _mm256_extracti128_si256(q, 1) : _mm256_castsi256_si128(q)),
                                                 _mm256_set1_epi16(32));
                    _mm256_storeu_si256((__m256i *)(dst + 16 * h), _mm256_mullo_epi16(v, _mm256_set1_epi16(scales[2 * i + h])));
                }
            }
        }
    }
}
#elif defined(USE_NEON)
#define quantize_vector quantize_vector_scalar
#define unpack_row unpack_row_scalar

static float dot_f32(const float *a, const float *b, int n) {
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        if (i % 16 == 0) prefetch((const char *)(a + i) + PREFETCH_AHEAD); /* a: the weight row, in a matmul */
        acc0 = vfmaq_f32(acc0, vld1q_f32(a + i), vld1q_f32(b + i));
        acc1 = vfmaq_f32(acc1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    }
    float sum = vaddvq_f32(vaddq_f32(acc0, acc1));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

/* 16 products of signed bytes, summed into 4 int32 */
static int32x4_t dot_s8(int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(vdupq_n_s32(0), a, b);
#else
    int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    int16x8_t hi = vmull_high_s8(a, b);
    return vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi));
#endif
}

/* A row's blocks in order, each found in its group (section 2): the
   prefetch reads ahead in the row's one stream of bytes. */
static float dot_q8(const uint8_t *row, const QuantizedVector *x, int n_blocks) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int b = 0; b < n_blocks; b++) {
        const int8_t *wb = (const int8_t *)q_block(row, b, n_blocks, QK), *xb = x->q + b * QK;
        if (b % 2 == 0) prefetch(wb + PREFETCH_AHEAD);
        int32x4_t d = vaddq_s32(dot_s8(vld1q_s8(wb), vld1q_s8(xb)), dot_s8(vld1q_s8(wb + 16), vld1q_s8(xb + 16)));
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(d), fp16_to_fp32(q_scale_bits(row, b, QK)) * x->scale[b]);
    }
    return vaddvq_f32(acc);
}

static float dot_q4(const uint8_t *row, const QuantizedVector *x, int n_blocks) {
    float sum = 0.0f;
    for (int b = 0; b < n_blocks; b++) {
        const uint8_t *wb = q_block(row, b, n_blocks, QK / 2);
        if (b % 4 == 0) prefetch(wb + PREFETCH_AHEAD);
        uint8x16_t p = vld1q_u8(wb);
        int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(p, vdupq_n_u8(15))), hi = vreinterpretq_s8_u8(vshrq_n_u8(p, 4));
        const int8_t *xb = x->q + b * QK;
        int32x4_t d = vaddq_s32(dot_s8(lo, vld1q_s8(xb)), dot_s8(hi, vld1q_s8(xb + 16)));
        sum += (float)(vaddvq_s32(d) - 8 * x->sum[b]) * fp16_to_fp32(q_scale_bits(row, b, QK / 2)) * x->scale[b];
    }
    return sum;
}

static void attention_scores(float *att, const float *q, const float *k, size_t stride, int n, int head_dim,
                             float scale) {
    for (int p = 0; p < n; p++) att[p] = dot_f32(q, k + p * stride, head_dim) * scale;
}

/* 4 cached values from an fp32 cache, or from an fp16 one (widened). */
static inline float32x4_t load_cached4(const void *cache, int half, size_t at) {
    if (half) return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)cache + at)));
    return vld1q_f32((const float *)cache + at);
}

/* 16 of the head's values at a time, summed in registers over all positions;
   returns how many it did (the caller's scalar loop does the rest). */
static inline int weighted_sum_columns(float *out, const float *att, const void *v, int half, size_t stride, int n,
                                       int head_dim) {
    int i = 0;
    for (; i + 16 <= head_dim; i += 16) {
        float32x4_t a0 = vld1q_f32(out + i), a1 = vld1q_f32(out + i + 4), a2 = vld1q_f32(out + i + 8),
                    a3 = vld1q_f32(out + i + 12);
        for (int p = 0; p < n; p++) {
            size_t at = p * stride + i;
            a0 = vfmaq_n_f32(a0, load_cached4(v, half, at), att[p]);
            a1 = vfmaq_n_f32(a1, load_cached4(v, half, at + 4), att[p]);
            a2 = vfmaq_n_f32(a2, load_cached4(v, half, at + 8), att[p]);
            a3 = vfmaq_n_f32(a3, load_cached4(v, half, at + 12), att[p]);
        }
        vst1q_f32(out + i, a0), vst1q_f32(out + i + 4, a1), vst1q_f32(out + i + 8, a2), vst1q_f32(out + i + 12, a3);
    }
    return i;
}

static void weighted_sum(float *out, const float *att, const float *v, size_t stride, int n, int head_dim) {
    int i = weighted_sum_columns(out, att, v, 0, stride, n, head_dim);
    if (i < head_dim) weighted_sum_scalar(out + i, att, v + i, stride, n, head_dim - i);
}

static void weighted_sum_f16(float *out, const float *att, const uint16_t *v, size_t stride, int n, int head_dim) {
    int i = weighted_sum_columns(out, att, v, 1, stride, n, head_dim);
    if (i < head_dim) weighted_sum_f16_scalar(out + i, att, v + i, stride, n, head_dim - i);
}

static void attention_scores_f16(float *att, const float *q, const uint16_t *k, size_t stride, int n, int head_dim,
                                 float scale) {
    int whole = head_dim / 4 * 4;
    for (int p = 0; p < n; p++) {
        const uint16_t *kp = k + p * stride;
        float32x4_t a = vdupq_n_f32(0.0f);
        for (int i = 0; i < whole; i += 4) a = vfmaq_f32(a, vld1q_f32(q + i), load_cached4(kp, 1, i));
        float sum = vaddvq_f32(a);
        for (int i = whole; i < head_dim; i++) sum += q[i] * fp16_to_fp32(kp[i]);
        att[p] = sum * scale;
    }
}

/* The fp32 GEMM step (6 rows x 16 tokens; see the AVX2 one above): 24
   accumulators of 4 lanes, of NEON's 32 registers. */
static void gemm_f32(const float *w, size_t stride, int rows, const float *panel, size_t panel_stride, int n,
                     float out[GEMM_ROWS][GEMM_TOKENS]) {
    const float *wr[GEMM_ROWS];
    for (int r = 0; r < GEMM_ROWS; r++) wr[r] = w + (size_t)(r < rows ? r : rows - 1) * stride;
    float32x4_t a[GEMM_ROWS][4];
    for (int r = 0; r < GEMM_ROWS; r++)
        for (int j = 0; j < 4; j++) a[r][j] = vdupq_n_f32(0.0f);
    for (int k = 0; k < n; k++) {
        const float *p = panel + k * panel_stride;
        float32x4_t x0 = vld1q_f32(p), x1 = vld1q_f32(p + 4), x2 = vld1q_f32(p + 8), x3 = vld1q_f32(p + 12);
        for (int r = 0; r < GEMM_ROWS; r++) {
            float32x4_t wk = vld1q_dup_f32(wr[r] + k);
            a[r][0] = vfmaq_f32(a[r][0], wk, x0), a[r][1] = vfmaq_f32(a[r][1], wk, x1);
            a[r][2] = vfmaq_f32(a[r][2], wk, x2), a[r][3] = vfmaq_f32(a[r][3], wk, x3);
        }
    }
    for (int r = 0; r < GEMM_ROWS; r++) /* all rows: see the AVX2 version */
        for (int j = 0; j < 4; j++) vst1q_f32(out[r] + 4 * j, a[r][j]);
}

/* Quantized prompts keep the tiles on NEON (no QUANTIZED_PANELS): the
   GEMM steps here are the definitions, for the tests. */
#define gemm_i16 gemm_i16_scalar
#define gemm_u8 gemm_u8_scalar

/* Tiles (2 rows x 4 tokens; see the AVX2 ones above). */
static void tile_f32(const float *w0, const float *w1, const float *x, int n, float out[2][4]) {
    float32x4_t a[2][4];
    for (int t = 0; t < 4; t++) a[0][t] = a[1][t] = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t r0 = vld1q_f32(w0 + i), r1 = vld1q_f32(w1 + i);
        for (int t = 0; t < 4; t++) {
            float32x4_t xt = vld1q_f32(x + (size_t)t * n + i);
            a[0][t] = vfmaq_f32(a[0][t], r0, xt);
            a[1][t] = vfmaq_f32(a[1][t], r1, xt);
        }
    }
    for (int t = 0; t < 4; t++) {
        const float *xt = x + (size_t)t * n;
        out[0][t] = vaddvq_f32(a[0][t]) + dot_f32_scalar(w0 + i, xt + i, n - i);
        out[1][t] = vaddvq_f32(a[1][t]) + dot_f32_scalar(w1 + i, xt + i, n - i);
    }
}

/* Both halves of a weight block against token t's block: 4 partial sums as floats. */
static float32x4_t block_dot(int8x16_t lo, int8x16_t hi, const int8_t *xb) {
    return vcvtq_f32_s32(vaddq_s32(dot_s8(lo, vld1q_s8(xb)), dot_s8(hi, vld1q_s8(xb + 16))));
}

/* One block of two weight rows (each as its two signed 16-byte halves, with
   its scale) against the 4 tokens' blocks b, added into the tile's sums. */
static void tile_block(float32x4_t a[2][4], const int8x16_t r0[2], const int8x16_t r1[2], float sw0, float sw1,
                       const QuantizedVector *x, int b) {
    for (int t = 0; t < 4; t++) {
        const int8_t *xb = x[t].q + b * QK;
        a[0][t] = vfmaq_n_f32(a[0][t], block_dot(r0[0], r0[1], xb), sw0 * x[t].scale[b]);
        a[1][t] = vfmaq_n_f32(a[1][t], block_dot(r1[0], r1[1], xb), sw1 * x[t].scale[b]);
    }
}

static void tile_sum(float32x4_t a[2][4], float out[2][4]) {
    for (int t = 0; t < 4; t++) out[0][t] = vaddvq_f32(a[0][t]), out[1][t] = vaddvq_f32(a[1][t]);
}

static void tile_q8(const uint8_t *row0, const uint8_t *row1, const QuantizedVector *x, int n_blocks, float out[2][4]) {
    float32x4_t a[2][4];
    for (int t = 0; t < 4; t++) a[0][t] = a[1][t] = vdupq_n_f32(0.0f);
    for (int b = 0; b < n_blocks; b++) {
        const int8_t *w0 = (const int8_t *)q_block(row0, b, n_blocks, QK), *w1 = (const int8_t *)q_block(row1, b, n_blocks, QK);
        int8x16_t r0[2] = {vld1q_s8(w0), vld1q_s8(w0 + 16)};
        int8x16_t r1[2] = {vld1q_s8(w1), vld1q_s8(w1 + 16)};
        tile_block(a, r0, r1, fp16_to_fp32(q_scale_bits(row0, b, QK)), fp16_to_fp32(q_scale_bits(row1, b, QK)), x, b);
    }
    tile_sum(a, out);
}

/* A q4_0 block's 16 bytes -> its weights (nibble - 8) as two signed halves. */
static void unpack_q4_signed(const uint8_t *p, int8x16_t out[2]) {
    uint8x16_t bytes = vld1q_u8(p);
    out[0] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(bytes, vdupq_n_u8(15))), vdupq_n_s8(8));
    out[1] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(bytes, 4)), vdupq_n_s8(8));
}

/* q4_0 nibbles become signed weights (nibble - 8) once, for all 4 tokens. */
static void tile_q4(const uint8_t *row0, const uint8_t *row1, const QuantizedVector *x, int n_blocks, float out[2][4]) {
    float32x4_t a[2][4];
    for (int t = 0; t < 4; t++) a[0][t] = a[1][t] = vdupq_n_f32(0.0f);
    for (int b = 0; b < n_blocks; b++) {
        int8x16_t r0[2], r1[2];
        unpack_q4_signed(q_block(row0, b, n_blocks, QK / 2), r0);
        unpack_q4_signed(q_block(row1, b, n_blocks, QK / 2), r1);
        float s0 = fp16_to_fp32(q_scale_bits(row0, b, QK / 2)), s1 = fp16_to_fp32(q_scale_bits(row1, b, QK / 2));
        tile_block(a, r0, r1, s0, s1, x, b);
    }
    tile_sum(a, out);
}

/* Columns (4 rows x 1 token; see the AVX2 ones above): for now the dot
   products of each row, held to the scalar columns under qemu; whether
   sharing the activations pays on an ARM core is not yet measured. */
static void column_q8(const uint8_t *rows, const QuantizedVector *x, int n_blocks, float out[4]) {
    for (int r = 0; r < 4; r++) out[r] = dot_q8(rows + r * q_row_bytes(n_blocks, QK), x, n_blocks);
}

static void column_q4(const uint8_t *rows, const QuantizedVector *x, int n_blocks, float out[4]) {
    for (int r = 0; r < 4; r++) out[r] = dot_q4(rows + r * q_row_bytes(n_blocks, QK / 2), x, n_blocks);
}

/* ---- K-quants (NEON): each group of 32 weights unpacked to signed bytes,
   dot_s8 against the activations 16 at a time, the block's products summed
   as integers (see the AVX2 ones) ---- */

/* Q4_K group pair c: the low nibbles (group 2c) and high ones (2c + 1), two halves each */
static void q4k_unpack_pair(const uint8_t *blk, int c, int8x16_t lo[2], int8x16_t hi[2]) {
    for (int h = 0; h < 2; h++) {
        uint8x16_t bytes = vld1q_u8(blk + 16 + 32 * c + 16 * h);
        lo[h] = vreinterpretq_s8_u8(vandq_u8(bytes, vdupq_n_u8(15)));
        hi[h] = vreinterpretq_s8_u8(vshrq_n_u8(bytes, 4));
    }
}

/* 32 weights (two halves) . 32 activations, as 4 partial sums */
static int32x4_t dot32(const int8x16_t w[2], const int8_t *x) {
    return vaddq_s32(dot_s8(w[0], vld1q_s8(x)), dot_s8(w[1], vld1q_s8(x + 16)));
}

/* A Q4_K block . 256 activations: (sum_i scale[i] * products_i, sum_i min[i] * S_i) */
static void q4k_block(const uint8_t *blk, const int8_t *xq, const int32_t *sums, int32_t *products, int32_t *mins) {
    uint8_t sc[8], mn[8];
    q4k_scales(blk + 4, sc, mn);
    int32x4_t acc = vdupq_n_s32(0); /* partial sums times their group's scale, reduced once */
    for (int c = 0; c < 4; c++) {
        int8x16_t lo[2], hi[2];
        q4k_unpack_pair(blk, c, lo, hi);
        acc = vmlaq_n_s32(acc, dot32(lo, xq + 64 * c), sc[2 * c]);
        acc = vmlaq_n_s32(acc, dot32(hi, xq + 64 * c + 32), sc[2 * c + 1]);
    }
    *products = vaddvq_s32(acc);
    *mins = 0;
    for (int i = 0; i < 8; i++) *mins += mn[i] * sums[i];
}

/* Group i of a Q6_K block as two halves of signed bytes in [-32, 31] */
static void q6k_unpack(const uint8_t *blk, int i, int8x16_t w[2]) {
    int half = i / 4, j = i % 4;
    for (int h = 0; h < 2; h++) {
        uint8x16_t low = vld1q_u8(blk + half * 64 + (j % 2) * 32 + 16 * h);
        uint8x16_t high = vld1q_u8(blk + 128 + half * 32 + 16 * h);
        low = j < 2 ? vandq_u8(low, vdupq_n_u8(15)) : vshrq_n_u8(low, 4);
        high = vandq_u8(vshlq_u8(high, vdupq_n_s8((int8_t)(-2 * j))), vdupq_n_u8(3));
        w[h] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(low, vshlq_n_u8(high, 4))), vdupq_n_s8(32));
    }
}

/* A Q6_K block . 256 activations: sum_v scale[v / 16] * value_v * q_x,v */
static int32_t q6k_block(const uint8_t *blk, const int8_t *xq) {
    const int8_t *sc = (const int8_t *)(blk + 192);
    int32x4_t acc = vdupq_n_s32(0);
    for (int i = 0; i < 8; i++) {
        int8x16_t g[2];
        q6k_unpack(blk, i, g);
        acc = vmlaq_n_s32(acc, dot_s8(g[0], vld1q_s8(xq + 32 * i)), sc[2 * i]);
        acc = vmlaq_n_s32(acc, dot_s8(g[1], vld1q_s8(xq + 32 * i + 16)), sc[2 * i + 1]);
    }
    return vaddvq_s32(acc);
}

static float dot_q4k(const uint8_t *w, const QuantizedVector *x, int n_blocks) {
    float sum = 0.0f;
    for (int b = 0; b < n_blocks; b++) {
        const uint8_t *blk = w + (size_t)b * Q4K_BYTES;
        prefetch(blk + PREFETCH_AHEAD);
        prefetch(blk + 128 + PREFETCH_AHEAD);
        int32_t products, mins;
        q4k_block(blk, x->q + (size_t)b * QK_K, x->sum + b * 8, &products, &mins);
        sum += x->scale[b * 8] * (fp16_at(blk) * (float)products - fp16_at(blk + 2) * (float)mins);
    }
    return sum;
}

static float dot_q6k(const uint8_t *w, const QuantizedVector *x, int n_blocks) {
    float sum = 0.0f;
    for (int b = 0; b < n_blocks; b++) {
        const uint8_t *blk = w + (size_t)b * Q6K_BYTES;
        prefetch(blk + PREFETCH_AHEAD);
        prefetch(blk + 128 + PREFETCH_AHEAD);
        sum += x->scale[b * 8] * fp16_at(blk + 208) * (float)q6k_block(blk, x->q + (size_t)b * QK_K);
    }
    return sum;
}

/* The NEON K tiles are, for now, the dot products of each row and token:
   correct (held to the scalar tiles under qemu) but not yet a register tile
   that unpacks each group once for 4 tokens, as the AVX2 ones do; no ARM
   machine was at hand to measure one. */
static void tile_q4k(const uint8_t *w0, const uint8_t *w1, const QuantizedVector *x, int n_blocks, float out[2][4]) {
    for (int t = 0; t < 4; t++) out[0][t] = dot_q4k(w0, &x[t], n_blocks), out[1][t] = dot_q4k(w1, &x[t], n_blocks);
}

static void tile_q6k(const uint8_t *w0, const uint8_t *w1, const QuantizedVector *x, int n_blocks, float out[2][4]) {
    for (int t = 0; t < 4; t++) out[0][t] = dot_q6k(w0, &x[t], n_blocks), out[1][t] = dot_q6k(w1, &x[t], n_blocks);
}

/* exp(x) in 4 lanes: the AVX2 exp_lanes, step for step */
static float32x4_t exp_lanes(float32x4_t x) {
    uint32x4_t nan = vmvnq_u32(vceqq_f32(x, x));
    float32x4_t xc = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-104.0f)), vdupq_n_f32(89.0f));
    float32x4_t n = vrndnq_f32(vmulq_f32(xc, vdupq_n_f32(1.44269504f)));
    float32x4_t r = vfmsq_f32(vfmsq_f32(xc, n, vdupq_n_f32(0.693359375f)), n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.0f / 5040);
    static const float taylor[] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 1.0f / 2, 1.0f, 1.0f};
    for (int k = 0; k < 7; k++) p = vfmaq_f32(vdupq_n_f32(taylor[k]), p, r);
    int32x4_t ni = vcvtq_s32_f32(n), n1 = vshrq_n_s32(ni, 1), n2 = vsubq_s32(ni, n1);
    float32x4_t s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, vdupq_n_s32(127)), 23));
    float32x4_t s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, vdupq_n_s32(127)), 23));
    return vbslq_f32(nan, x, vmulq_f32(vmulq_f32(p, s1), s2));
}

static void softmax(float *x, int n) {
    int i = 0;
    float32x4_t max4 = vdupq_n_f32(-INFINITY), sum4 = vdupq_n_f32(0.0f);
    for (; i + 4 <= n; i += 4) max4 = vmaxq_f32(max4, vld1q_f32(x + i));
    float max = vmaxvq_f32(max4);
    for (; i < n; i++)
        if (x[i] > max) max = x[i];
    for (i = 0; i + 4 <= n; i += 4) {
        float32x4_t e = exp_lanes(vsubq_f32(vld1q_f32(x + i), vdupq_n_f32(max)));
        vst1q_f32(x + i, e);
        sum4 = vaddq_f32(sum4, e);
    }
    softmax_rest(x, i, n, max, vaddvq_f32(sum4));
}

static void gate_times_up(float *h, const float *up, size_t n, int activation) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t g = vld1q_f32(h + i), a = g;
        if (activation == ACT_GELU_TANH) {
            float32x4_t g3 = vmulq_f32(vmulq_f32(g, g), g);
            a = vmulq_n_f32(vfmaq_n_f32(g, g3, 0.044715f), 2.0f * 0.7978845608028654f);
        }
        float32x4_t sigmoid_den = vaddq_f32(vdupq_n_f32(1.0f), exp_lanes(vnegq_f32(a)));
        vst1q_f32(h + i, vmulq_f32(vdivq_f32(g, sigmoid_den), vld1q_f32(up + i)));
    }
    gate_times_up_scalar(h + i, up + i, n - i, activation);
}

#else
#define quantize_vector quantize_vector_scalar
#define unpack_row unpack_row_scalar
#define softmax softmax_scalar
#define gate_times_up gate_times_up_scalar
#define dot_f32 dot_f32_scalar
#define dot_q8 dot_q8_scalar
#define dot_q4 dot_q4_scalar
#define tile_f32 tile_f32_scalar
#define gemm_f32 gemm_f32_scalar
#define gemm_i16 gemm_i16_scalar
#define gemm_u8 gemm_u8_scalar
#define tile_q8 tile_q8_scalar
#define tile_q4 tile_q4_scalar
#define column_q8 column_q8_scalar
#define column_q4 column_q4_scalar
#define dot_q4k dot_q4k_scalar
#define dot_q6k dot_q6k_scalar
#define tile_q4k tile_q4k_scalar
#define tile_q6k tile_q6k_scalar
#define attention_scores attention_scores_scalar
#define weighted_sum weighted_sum_scalar
#define attention_scores_f16 attention_scores_f16_scalar
#define weighted_sum_f16 weighted_sum_f16_scalar
#endif

/* out = x / sqrt(mean(x^2) + eps) * weight
   PyTorch: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight
   The sum of squares is x . x by dot_f32: in SIMD builds, independent sums
   side by side, where one running sum waited for each add before the next
   (2048 adds one after another, some 3 us of a token's norm, while the other
   thread waits: timing every other token of one run with each, 2 threads,
   on the Xeon, 1.1B q4_0 -0.3% to -0.5% time per token (3 of 3 runs),
   stories110M q4_0 -2.0% and -2.2%, stories15M q4_0 -1%). */
static void rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    float ss = dot_f32(x, x, n);
    float scale = 1.0f / sqrtf(ss / n + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * weight[i];
}

/* A token's x (n values) as the input of the matmuls that follow: quantized
   into xq once for all the matrices that read it (wq, wk and wv share one
   input, w1 and w3 another), whatever their types: in blocks of 256 when the
   model has K matrices and n allows it (every K matrix's input does), else
   of 32; nothing to quantize when every matrix of the model is fp32. */
static void quantize_input(const Config *c, QuantizedVector *xq, const float *x, int n) {
    if (!c->quantized) return;
    int block = c->k_types && n % QK_K == 0 ? QK_K : QK;
    quantize_vector(xq, x, n, (n + QK - 1) / QK * QK, block);
}

/* A new input of the matmuls: its GEMM panels (a chunk of tokens, at least
   gemm_min_tokens of some kind) are not packed yet; the first matmul that needs them
   packs them (matmul_panels). Like every step of forward, called by all the
   threads of its team (see forward): one marks the panels, the others wait
   for it. */
static void new_matmul_input(Panels *pn, int T) {
    if (T > 1) {
        OMP(omp single nowait)
        pn->packed = 0;
        team_wait();
    }
}

/* x (T tokens of n values) becomes the input of the matmuls that follow
   (quantize_input); the threads share a prompt chunk's tokens. */
static void matmul_input(const Config *c, QuantizedVector *xq, Panels *pn, const float *x, int T, int n) {
    int t;
    new_matmul_input(pn, T);
    OMP(omp for nowait)
    for (t = 0; t < T; t++) quantize_input(c, &xq[t], x + (size_t)t * n, n);
    team_wait();
}

/* Row r of a quantized matrix: its bytes (and its scales, for q8_0 and q4_0) */
static const uint8_t *row_bytes(const Matrix *W, int r) {
    return (const uint8_t *)W->data + (size_t)r * matrix_row_bytes(W);
}

/* Row r of W . token t's input: one output of a matmul. */
static float row_dot(const Matrix *W, int r, const float *x, const QuantizedVector *xq, int t) {
    int n_blocks = W->cols_padded / QK, n_k = W->cols / QK_K;
    switch (W->type) {
    case WEIGHT_F32: return dot_f32((const float *)W->data + (size_t)r * W->cols, x + (size_t)t * W->cols, W->cols);
    case WEIGHT_Q8_0: return dot_q8(row_bytes(W, r), &xq[t], n_blocks);
    case WEIGHT_Q4_0: return dot_q4(row_bytes(W, r), &xq[t], n_blocks);
    case WEIGHT_Q4_K: return dot_q4k(row_bytes(W, r), &xq[t], n_k);
    default: return dot_q6k(row_bytes(W, r), &xq[t], n_k);
    }
}

/* Rows r .. r + 3 of W . token t's input: a column of 4 outputs (q8_0 and
   q4_0 share the token's side among the four rows; other types go row by row). */
static void row_column(const Matrix *W, int r, const float *x, const QuantizedVector *xq, int t, float out[4]) {
    int n_blocks = W->cols_padded / QK;
    switch (W->type) {
    case WEIGHT_Q8_0: column_q8(row_bytes(W, r), &xq[t], n_blocks, out); break;
    case WEIGHT_Q4_0: column_q4(row_bytes(W, r), &xq[t], n_blocks, out); break;
    default:
        for (int k = 0; k < 4; k++) out[k] = row_dot(W, r + k, x, xq, t);
    }
}

/* Rows r, r + 1 of W . tokens t .. t + 3: a tile of 8 outputs. */
static void row_tile(const Matrix *W, int r, const float *x, const QuantizedVector *xq, int t, float out[2][4]) {
    int n_blocks = W->cols_padded / QK, n_k = W->cols / QK_K;
    size_t n = W->cols;
    switch (W->type) {
    case WEIGHT_F32: {
        const float *w0 = (const float *)W->data + r * n;
        tile_f32(w0, w0 + n, x + t * n, (int)n, out);
        break;
    }
    case WEIGHT_Q8_0: tile_q8(row_bytes(W, r), row_bytes(W, r + 1), &xq[t], n_blocks, out); break;
    case WEIGHT_Q4_0: tile_q4(row_bytes(W, r), row_bytes(W, r + 1), &xq[t], n_blocks, out); break;
    case WEIGHT_Q4_K: tile_q4k(row_bytes(W, r), row_bytes(W, r + 1), &xq[t], n_k, out); break;
    default: tile_q6k(row_bytes(W, r), row_bytes(W, r + 1), &xq[t], n_k, out); break;
    }
}

/* The GEMM kernel that serves each weight type (0: none, the tiles do) */
enum { GEMM_NONE, GEMM_F32, GEMM_I16, GEMM_U8 };
static int gemm_kind(int type) {
    switch (type) {
    case WEIGHT_F32: return GEMM_F32;
#if defined(QUANTIZED_PANELS)
    case WEIGHT_Q8_0: return Q8_0_AS_BYTES ? GEMM_U8 : GEMM_I16;
    case WEIGHT_Q6_K: return GEMM_I16;
    case WEIGHT_Q4_0: case WEIGHT_Q4_K: return GEMM_U8;
#endif
    default: return GEMM_NONE;
    }
}

/* The fewest tokens for which a matmul of a GEMM kind takes the GEMM steps
   (matmul_panels) rather than the tiles. A step always computes a whole
   panel of GEMM_TOKENS tokens, the missing ones zeros, and a quantized step
   first unpacks its rows (unpack_row), so the steps cost about the same for
   2 tokens as for 16, and the tiles cost in proportion to the tokens: below
   some number of them the tiles win. Prompts of 3 to 14 tokens on the 1.1B
   shape (2 threads, best of 2, the AVX-512 build, then the 256-bit one on
   the same Zen 5), milliseconds, tiles / steps: q4_0 76 / 69 at 7 tokens,
   97 / 70 at 9 (256-bit 88 / 96 at 7, 118 / 93 at 9); q4_k 76 / 72 at 7,
   110 / 89 at 9 (256-bit 98 / 103 at 9, 128 / 112 at 11); q8_0 97 / 125 at
   7, 154 / 123 at 9 (256-bit 134 / 153 at 7, 169 / 158 at 9); q6_k 137 /
   134 at 11 (256-bit 198 / 185 at 11); fp32 132 / 166 at 3, 196 / 170 at 5
   (256-bit 247 / 224 at 7). The bounds below are about where the two meet
   in both builds. A chat turn's prompt is often this short. Then the next
   step's rows came to be prefetched (prefetch_rows) and q8_0 took gemm_u8
   (Q8_0_AS_BYTES), and gemm_u8's steps came to cost 55-66 ms for any
   prompt of 4-14 tokens on the AVX-512 build, 86-103 on the 256-bit one
   (best of 3, then 2): tiles / steps at 6 tokens q8_0 79 / 63, q4_0 79 /
   58, q4_k 73 / 60 (256-bit q8_0 130 / 95, q4_0 115 / 101, q4_k 90 / 102;
   at 7 q4_k 106 / 100). gemm_i16's bound, measured again then (best of 3):
   q6_k 82 / 102 at 7 tokens, 143 / 112 at 8 (256-bit 151 / 138 at 7, 150
   / 146 at 8); q8_0 in a build without VNNI (-march=znver2 on the same
   machine) 151 / 151 at 8, 148 / 153 at 9, q6_k there 178 / 161 at 8. */
static int gemm_min_tokens(int kind) {
    switch (kind) {
    case GEMM_F32: return 8;
#if defined(USE_AVX512)
    case GEMM_U8: return 6;
#else
    case GEMM_U8: return 7;
#endif
    default: return 8; /* GEMM_I16 */
    }
}

/* An fp32 panel: dst[k][j] (n values of 16 rows side by side) = value k of
   row j, for the `count` rows of n values at src, `stride` apart; zeros for
   rows count .. 15. A transpose, 16 x 16 values at a time (row by row, each
   store 16 apart, it was 2.7x slower). A matmul's input (pack_panel) and a
   chunk's keys (attend_panels) are packed so. */
static void transpose_panel(float *dst, const float *src, size_t stride, int count, int n) {
    float block[GEMM_TOKENS][16];
    for (int k0 = 0; k0 < n; k0 += 16) {
        int m = n - k0 < 16 ? n - k0 : 16;
        for (int j = 0; j < GEMM_TOKENS; j++) { /* values k0 .. k0 + 15 of row j */
            if (j < count && m == 16) memcpy(block[j], src + j * stride + k0, sizeof block[j]);
            else for (int k = 0; k < 16; k++) block[j][k] = j < count && k < m ? src[j * stride + k0 + k] : 0.0f;
        }
        for (int k = 0; k < m; k++)
            for (int j = 0; j < GEMM_TOKENS; j++) dst[(size_t)(k0 + k) * GEMM_TOKENS + j] = block[j][k];
    }
}

/* Panel p of a chunk's matmul input, in the layout of a GEMM kind (Panels,
   section 3): fp32 values from x (T, n); quantized ones from xq. */
static void pack_panel(Panels *pn, int kind, const float *x, const QuantizedVector *xq, int T, int n, int p) {
    int n_padded = (n + QK - 1) / QK * QK, n_blocks = n_padded / QK;
    if (kind == GEMM_F32) {
        transpose_panel(pn->x + (size_t)p * n * GEMM_TOKENS, x + (size_t)p * GEMM_TOKENS * n, (size_t)n,
                        T - p * GEMM_TOKENS, n);
        return;
    }
    for (int j = 0; j < GEMM_TOKENS; j++) {
        int t = p * GEMM_TOKENS + j, real = t < T;
        size_t base = (size_t)p * n_padded * GEMM_TOKENS;
        static const int8_t none[4];
        for (int g = 0; g < n_padded / 4; g++) { /* 4 values at a time: one int8 quad, two int16 pairs */
            const int8_t *q = real ? xq[t].q + 4 * g : none;
            if (kind == GEMM_I16) {
                int16_t *dst = pn->x16 + base + ((size_t)(2 * g) * GEMM_TOKENS + j) * 2;
                dst[0] = q[0], dst[1] = q[1], dst[2 * GEMM_TOKENS] = q[2], dst[2 * GEMM_TOKENS + 1] = q[3];
            } else {
                memcpy(pn->x8 + base + ((size_t)g * GEMM_TOKENS + j) * 4, q, 4);
            }
        }
        for (int b = 0; b < n_blocks; b++) {
            pn->scale[((size_t)p * n_blocks + b) * GEMM_TOKENS + j] = real ? xq[t].scale[b] : 0.0f;
            pn->sum[((size_t)p * n_blocks + b) * GEMM_TOKENS + j] = real ? xq[t].sum[b] : 0;
        }
    }
}

/* Rows i .. i + rows - 1 of a quantized matrix as its GEMM kernel reads them
   (unpack_row, row by row), into `scratch`: a float scale per 32 (ws) and
   offset per 32 (wm), then the weights (gemm_i16: int16 w16; gemm_u8: bytes
   wu); rows past the matrix repeat its last row. */
static void unpack_rows(const Matrix *W, int i, int rows, int step_rows, void *scratch) {
    int n_padded = W->cols_padded, n_blocks = n_padded / QK, i16 = gemm_kind(W->type) == GEMM_I16;
    float *ws = scratch, *wm = ws + GEMM_ROWS * n_blocks;
    int16_t *w16 = (int16_t *)(wm + GEMM_ROWS * n_blocks);
    uint8_t *wu = (uint8_t *)w16;
    for (int r = 0; r < step_rows; r++) {
        void *w = i16 ? (void *)(w16 + (size_t)r * n_padded) : (void *)(wu + (size_t)r * n_padded);
        unpack_row(W->type, row_bytes(W, i + (r < rows ? r : rows - 1)), n_padded, ws + r * n_blocks,
                   wm + r * n_blocks, w);
    }
}

/* Asks for rows i .. i + count - 1 of a quantized matrix (those it has) to
   come into cache, a prefetch per cache line. matmul_panels asks for the
   next step's rows while its GEMM works on this step's, so that unpacking
   them does not wait on memory: prompts of the 1.1B shape, 11 and 14
   tokens, ms, best of 2-3: q8_0 129-137 -> 114-128, q4_0 70-71 -> 56-58;
   512 tokens, alternating, 3 rounds: q8_0 1.055x (3 of 3), q4_k_m 1.01x
   (2 of 3). Into L2 only: about the same. The fp32 steps, which read their
   rows in place, gained nothing from it (0.99-1.02). */
static void prefetch_rows(const Matrix *W, int i, int count) {
    if (i >= W->rows) return;
    if (count > W->rows - i) count = W->rows - i;
    const char *from = (const char *)row_bytes(W, i), *to = (const char *)row_bytes(W, i + count);
    for (const char *p = from; p < to; p += 64) prefetch_kept(p);
}

/* The fp32 step on `panels` panels (1, or 2 with AVX-512: GEMM_PANELS) at
   x, x + next: gemm_f32, or gemm_f32_pair (out[q] for the panel at
   x + q * next). */
static void gemm_f32_panels(const float *w, size_t stride, int rows, const float *x, size_t next, size_t panel_stride,
                            int n, int panels, float out[GEMM_PANELS][GEMM_ROWS][GEMM_TOKENS]) {
#if defined(USE_AVX512)
    if (panels == 2) {
        gemm_f32_pair(w, stride, rows, x, next, panel_stride, n, out);
        return;
    }
#endif
    (void)panels, (void)next;
    gemm_f32(w, stride, rows, x, panel_stride, n, out[0]);
}

/* One quantized GEMM step: a step's rows of W, which `scratch` holds as
   unpack_rows left them, against panel p, or panels p and p + 1 (panels = 2,
   with AVX-512: GEMM_PANELS), into out[q][r][j] for panel p + q. */
static void gemm_step(const Matrix *W, int kind, const Panels *pn, int p, int panels, void *scratch,
                      float out[GEMM_PANELS][GEMM_ROWS][GEMM_TOKENS]) {
    int n_padded = W->cols_padded, n_blocks = n_padded / QK;
    const float *ws = scratch, *wm = ws + GEMM_ROWS * n_blocks;
    const int16_t *w16 = (const int16_t *)(wm + GEMM_ROWS * n_blocks);
    const uint8_t *wu = (const uint8_t *)w16;
    size_t panel = (size_t)p * n_padded * GEMM_TOKENS, panel_blocks = (size_t)p * n_blocks * GEMM_TOKENS;
    const float *xs = pn->scale + panel_blocks;
#if defined(USE_AVX512)
    if (panels == 2) {
        if (kind == GEMM_I16) gemm_i16_pair(w16, ws, n_blocks, pn->x16 + panel, xs, out);
        else gemm_u8_pair(wu, ws, wm, n_blocks, pn->x8 + panel, xs, pn->sum + panel_blocks, out);
        return;
    }
#endif
    (void)panels;
    if (kind == GEMM_I16) gemm_i16(w16, ws, n_blocks, pn->x16 + panel, xs, out[0]);
    else gemm_u8(wu, ws, wm, n_blocks, pn->x8 + panel, xs, pn->sum + panel_blocks, out[0]);
}

/* A step's outputs into out (T, d): out[t][i + r] = step[q][r][j] for token
   t = j of panel p + q. */
static void store_step(float *out, int d, int T, int i, int rows, int p, int panels,
                       float (*step)[GEMM_ROWS][GEMM_TOKENS]) {
    for (int q = 0; q < panels; q++)
        for (int j = 0, t = (p + q) * GEMM_TOKENS; j < GEMM_TOKENS && t + j < T; j++)
            for (int r = 0; r < rows; r++) out[(size_t)(t + j) * d + i + r] = step[q][r][j];
}

/* The fp32 steps, in k-blocks. A step reads every panel whole, and a chunk's
   fp32 panels outgrow a core's L2 cache: 256 tokens of n = 2048 are 2 MB,
   of w2's n = 5632 5.6 MB. The steps then ran at the speed the panels came
   from L3, not at the FMA units' (on a Xeon, where L3 feeds a core far slower
   than L2: the 1.1B shape's 512-token prompts at 65% of gemm_f32_pair's rate
   in cache). So each thread takes a run of up to F32_RUN_STEPS steps (48
   rows) and goes through n in blocks of F32_K_BLOCK_BYTES' worth of every
   panel (512 KB: half or all of an L2 cache of today; 512 values of 256
   tokens), each block by all the run's steps while it stays in L2. The
   weights are still read once per chunk. The blocks' sums add up in the
   thread's pn->sums, in the steps' own layout, and go to out once per run:
   out (T, d) takes a step's sums 6 floats to a token, each token on its own
   cache line, and adding each block's sums there cost ~6% of the prompt.
   On that Xeon, 512-token prompts, 2 threads, builds alternating: the 1.1B
   shape 80.8 -> 90.1 tok/s (4 of 4 rounds) with the sums added in out, the
   smaller shapes and the 256-bit build within noise; then 103.1 -> 109.8
   (6 of 6) with them added in pn->sums. */
#ifndef F32_K_BLOCK_BYTES /* cc -DF32_K_BLOCK_BYTES=... to try another */
#define F32_K_BLOCK_BYTES (512 * 1024)
#endif
static void steps_f32(float *out, const Panels *pn, const Matrix *W, int T) {
    int d = W->rows, n = W->cols, n_panels = (T + GEMM_TOKENS - 1) / GEMM_TOKENS;
    /* values per block: a multiple of 16, at least 64 */
    int k_block = (int)(F32_K_BLOCK_BYTES / ((size_t)n_panels * GEMM_TOKENS * sizeof(float))) / 16 * 16;
    if (k_block < 64) k_block = 64;
    /* runs of up to F32_RUN_STEPS steps, at least 4 runs per thread for the guided schedule to share */
    int run_steps = d / (GEMM_ROWS * 4 * team_threads());
    int run = (run_steps < 1 ? 1 : run_steps > F32_RUN_STEPS ? F32_RUN_STEPS : run_steps) * GEMM_ROWS;
    /* this thread's sums: (F32_RUN_STEPS, n_panels, GEMM_ROWS, GEMM_TOKENS) */
    float (*sums)[GEMM_ROWS][GEMM_TOKENS] = (float (*)[GEMM_ROWS][GEMM_TOKENS])(pn->sums + (size_t)thread_index() * pn->sum_floats);
    int i;
    OMP(omp for schedule(guided) nowait)
    for (i = 0; i < d; i += run) {
        int end = d - i < run ? d : i + run;
        for (int k0 = 0; k0 < n; k0 += k_block) {
            int kn = n - k0 < k_block ? n - k0 : k_block;
            for (int s = i; s < end; s += GEMM_ROWS) {
                int rows = end - s < GEMM_ROWS ? end - s : GEMM_ROWS;
                const float *w = (const float *)W->data + (size_t)s * n + k0; /* (rows, n) from column k0 */
                for (int p = 0; p < n_panels; p += GEMM_PANELS) {
                    float step[GEMM_PANELS][GEMM_ROWS][GEMM_TOKENS];
                    int panels = n_panels - p < GEMM_PANELS ? n_panels - p : GEMM_PANELS;
                    const float *x = pn->x + ((size_t)p * n + k0) * GEMM_TOKENS; /* panel p from value k0 */
                    gemm_f32_panels(w, (size_t)n, rows, x, (size_t)n * GEMM_TOKENS, GEMM_TOKENS, kn, panels, step);
                    /* the sums of step s - i / GEMM_ROWS of the run, panels p, p + 1 */
                    float *sum = &sums[(size_t)(s - i) / GEMM_ROWS * n_panels + p][0][0], *add = &step[0][0][0];
                    for (int e = 0; e < panels * GEMM_ROWS * GEMM_TOKENS; e++) sum[e] = k0 ? sum[e] + add[e] : add[e];
                }
            }
        }
        for (int s = i; s < end; s += GEMM_ROWS)
            store_step(out, d, T, s, end - s < GEMM_ROWS ? end - s : GEMM_ROWS, 0, n_panels,
                       sums + (size_t)(s - i) / GEMM_ROWS * n_panels);
    }
}

/* matmul's GEMM path (prompt chunks of at least gemm_min_tokens tokens, weight
   types with a GEMM kernel in this build): the threads first share the
   panels to pack (unless a matmul of the same input packed them), then the
   steps of GEMM_ROWS (gemm_i16: GEMM_ROWS_I16) rows, each against every
   panel in turn (with AVX-512 two at a time); each step's rows (6 x 8 KB of
   fp32 at n = 2048) are read from memory once and stay in the core's cache
   while every panel passes them. (Panels taken in groups that stay in the
   core's L2 cache, each group by every step before the next: in a
   microbenchmark the fp32 steps of w2's shape, 768 x 2048, went from 87 to
   97 billion multiply-adds per second on one thread, but stories110M's fp32
   prompts did not get faster, and quantized steps, unpacking their rows
   once per group, got slower.) */
static void matmul_panels(float *out, const float *x, const QuantizedVector *xq, Panels *pn, const Matrix *W, int T) {
    int d = W->rows, n = W->cols, n_panels = (T + GEMM_TOKENS - 1) / GEMM_TOKENS, kind = gemm_kind(W->type);
    int step_rows = kind == GEMM_I16 ? GEMM_ROWS_I16 : GEMM_ROWS;
    int to_pack = pn->packed & 1u << kind ? 0 : n_panels; /* none if a matmul of the same input packed them */
    /* this thread's scratch for unpacked rows (none in a model of fp32 matrices only) */
    char *scratch = pn->rows ? (char *)pn->rows + (size_t)thread_index() * pn->row_bytes : NULL;
    int i, p;
    OMP(omp for nowait)
    for (p = 0; p < to_pack; p++) pack_panel(pn, kind, x, xq, T, n, p);
    team_wait();
    /* (the threads wait here until every panel is packed; every thread has
       read the mark before, and one sets it now) */
    OMP(omp single nowait)
    pn->packed |= 1u << kind;
    if (kind == GEMM_F32) {
        steps_f32(out, pn, W, T);
    } else {
        OMP(omp for schedule(guided) nowait)
        for (i = 0; i < d; i += step_rows) {
            int rows = d - i < step_rows ? d - i : step_rows;
            unpack_rows(W, i, rows, step_rows, scratch); /* once, for every panel */
            prefetch_rows(W, i + step_rows, step_rows);  /* the next step's, while the panels pass these */
            for (p = 0; p < n_panels; p += GEMM_PANELS) {
                float step[GEMM_PANELS][GEMM_ROWS][GEMM_TOKENS];
                int panels = n_panels - p < GEMM_PANELS ? n_panels - p : GEMM_PANELS;
                gemm_step(W, kind, pn, p, panels, scratch, step);
                store_step(out, d, T, i, rows, p, panels, step);
            }
        }
    }
    team_wait();
}

/* Rows i .. i + 3 of out (T, d) = x @ W^T (fewer at the end of W): tiles of
   2 rows x 4 tokens, then the tokens left over in columns. */
static void matmul_rows(float *out, const float *x, const QuantizedVector *xq, const Matrix *W, int T, int i) {
    int d = W->rows, t = 0;
    if (i + 4 <= d) {
        for (; t + 4 <= T; t += 4)
            for (int r = i; r < i + 4; r += 2) {
                float tile[2][4];
                row_tile(W, r, x, xq, t, tile);
                for (int k = 0; k < 4; k++)
                    out[(size_t)(t + k) * d + r] = tile[0][k], out[(size_t)(t + k) * d + r + 1] = tile[1][k];
            }
        for (; t < T; t++) row_column(W, i, x, xq, t, out + (size_t)t * d + i);
    }
    for (; t < T; t++) /* the last rows, when d is not a multiple of 4 */
        for (int r = i; r < d; r++) out[(size_t)t * d + r] = row_dot(W, r, x, xq, t);
}

/* Whether a chunk of T tokens multiplies W by the GEMM steps (matmul_panels). */
static int takes_panels(const Matrix *W, int T) {
    int kind = gemm_kind(W->type);
    return kind != GEMM_NONE && T >= gemm_min_tokens(kind);
}

#define MAX_MATMULS 3 /* matrices of one input (matmuls): wq, wk and wv */

/* The rows of `count` matrices of one input, outs[m] (T, Ws[m]->rows) =
   x @ Ws[m]^T, as one list of units of 4 rows (a matrix's last unit may
   hold fewer), which the threads share by stealing (share_units): each
   streams long runs of rows, and they end together. (Before that, guided
   had been chosen over dynamic runs of 8, 16 and 32 rows: 1.1B shape, q8_0,
   alternating, median of 8: 13.5, 15.7 and 16.5 tok/s against guided's
   16.6, the short runs breaking the streams the hardware prefetcher
   follows.) */
static void matmul_units(float *const outs[], const float *x, const QuantizedVector *xq, const Matrix *const Ws[],
                         int count, int T) {
    int first[MAX_MATMULS + 1] = {0}, from, to; /* the first unit of each matrix; first[count]: all of them */
    for (int m = 0; m < count; m++) first[m + 1] = first[m] + (Ws[m]->rows + 3) / 4;
    share_units(first[count]);
    while (next_units(&from, &to))
        for (int u = from, m = 0; u < to; u++) {
            while (u >= first[m + 1]) m++;
            matmul_rows(outs[m], x, xq, Ws[m], T, 4 * (u - first[m]));
        }
    team_wait();
}

/* out (T, d) = x (T, n) @ W (d, n)^T, for T tokens at once; for quantized
   weights xq must hold x quantized (quantize_input, for each token).
   PyTorch: out = x @ W.T  (nn.Linear without bias)
   Nearly all the time of a forward pass is spent here. Output rows are
   shared among threads, four at a time. Each weight row is read from memory
   once and used for all T tokens, four tokens per tile, while it is in cache:
   that is why a prompt processed in chunks costs far less per token than
   generation, where T = 1 and each row gives a single dot product (four rows
   at a time, a column). Chunks of gemm_min_tokens or more take the GEMM
   steps instead (matmul_panels). */
static void matmul(float *out, const float *x, const QuantizedVector *xq, Panels *panels, const Matrix *W, int T) {
    if (takes_panels(W, T)) matmul_panels(out, x, xq, panels, W, T);
    else matmul_units(&out, x, xq, &W, 1, T);
}

/* outs[m] = x @ Ws[m]^T for the `count` matrices that read one input (wq, wk
   and wv; w1 and w3): where their rows go by units (generation, and chunks too
   short for the GEMM steps), their rows are one list, so that the threads wait
   for each other once, after all of them, where they waited after each, and
   each thread's stream of rows goes on from one matrix into the next. Both
   versions in one build, switching at every generated token, 2 threads, on the
   Xeon of the README, time a token: 1.1B q4_0 -0.1% to -0.8% in 7 of 8 runs
   (either version timed first), +0.5% in the eighth; q8_0 0 and -0.3%;
   stories110M q4_0 -1.7% to -3.1% in 3 of 4, +1.2% in the fourth; stories15M
   q4_0 -0.8% to -3.5% (4 of 4). Small on the 1.1B shape, more on the small
   ones. (On a Zen 5, with OpenMP's guided schedule, the same had measured no
   difference.) */
static void matmuls(float *const outs[], const float *x, const QuantizedVector *xq, Panels *panels,
                    const Matrix *const Ws[], int count, int T) {
    int any_panels = 0;
    for (int m = 0; m < count; m++) any_panels |= takes_panels(Ws[m], T);
    if (!any_panels) {
        matmul_units(outs, x, xq, Ws, count, T);
        return;
    }
    for (int m = 0; m < count; m++) matmul(outs[m], x, xq, panels, Ws[m], T);
}

/* Row `row` of W as floats (the embedding lookup: only this row is read). */
static void matrix_row(float *out, const Matrix *W, int row) {
    int n = W->cols;
    if (W->type == WEIGHT_F32) {
        memcpy(out, (const float *)W->data + (size_t)row * n, n * sizeof(float));
        return;
    }
    const uint8_t *p = row_bytes(W, row);
    if (W->type == WEIGHT_Q4_K || W->type == WEIGHT_Q6_K) {
        size_t block_bytes = W->type == WEIGHT_Q4_K ? Q4K_BYTES : Q6K_BYTES;
        for (int b = 0; b < n / QK_K; b++) dequantize_k_block(W->type, p + b * block_bytes, out + (size_t)b * QK_K);
        return;
    }
    int n_blocks = W->cols_padded / QK;
    size_t block_bytes = q_block_bytes(W->type);
    for (int b = 0; b < n_blocks; b++) {
        const uint8_t *block = q_block(p, b, n_blocks, block_bytes);
        float s = fp16_to_fp32(q_scale_bits(p, b, block_bytes));
        for (int k = 0; k < QK && b * QK + k < n; k++) {
            int q = W->type == WEIGHT_Q8_0 ? ((const int8_t *)block)[k]
                                           : (k < QK / 2 ? block[k] & 15 : block[k - QK / 2] >> 4) - 8; /* q4_0 nibbles */
            out[b * QK + k] = q * s;
        }
    }
}

/* ========================================================================== */
/* 5. Forward pass                                                            */
/* ========================================================================== */

/* One token's query, key and value (q: n_heads heads, k and v: n_kv_heads
   heads of head_dim), in place, from the projections to what attention
   uses: the biases (Qwen2), the RMSNorm of each head of q and of k (Qwen3),
   then RoPE at the token's position (cos_t, sin_t), unless the layer has none. */
static void attention_inputs(const Config *c, const LayerWeights *lw, float *q, float *k, float *v,
                             const float *cos_t, const float *sin_t) {
    int head_dim = c->head_dim, q_dim = c->n_heads * head_dim, kv_dim = c->n_kv_heads * head_dim;
    if (c->qkv_bias) { /* q += bq, k += bk, v += bv */
        for (int i = 0; i < q_dim; i++) q[i] += lw->bq[i];
        for (int i = 0; i < kv_dim; i++) k[i] += lw->bk[i], v[i] += lw->bv[i];
    }
    if (c->qk_norm) { /* PyTorch: q = q_norm(q.view(n_heads, head_dim)); k = k_norm(k.view(n_kv_heads, head_dim)) */
        for (int h = 0; h < c->n_heads; h++) rmsnorm(q + h * head_dim, q + h * head_dim, lw->q_norm, head_dim, c->norm_eps);
        for (int h = 0; h < c->n_kv_heads; h++) rmsnorm(k + h * head_dim, k + h * head_dim, lw->k_norm, head_dim, c->norm_eps);
    }
    if (lw->rope) { /* all layers but SmolLM3's NoPE ones */
        rope(q, c->n_heads, head_dim, c->rope_dim, cos_t, sin_t);
        rope(k, c->n_kv_heads, head_dim, c->rope_dim, cos_t, sin_t);
    }
}

/* out = rmsnorm(x) * weight for each of T tokens (T, dim), as the input of
   the matmuls that follow (quantize_input). A prompt chunk's tokens are
   shared among the threads (one at a time, the norms of a chunk held the
   other thread waiting); each token is normed and quantized by one thread,
   so that the threads wait for each other once, after both (when
   generating, OpenMP's wait cost about as much as a token's norm: see forward). */
static void norm_input(const Config *c, RunState *s, float *out, const float *x, const float *weight, int T) {
    int dim = c->dim, t;
    new_matmul_input(&s->panels, T);
    OMP(omp for nowait)
    for (t = 0; t < T; t++) {
        float *out_t = out + (size_t)t * dim;
        rmsnorm(out_t, x + (size_t)t * dim, weight, dim, c->norm_eps);
        quantize_input(c, &s->xq[t], out_t, dim);
    }
    team_wait();
}

/* x = x + residual_scale * post_norm(out), for each of T tokens: a block's
   output joins the residual stream. post_norm is NULL but for Gemma, whose
   blocks norm their output first; residual_scale is 1 but for Granite. */
static void add_to_residual(const Config *c, float *x, float *out, const float *post_norm, int T) {
    int dim = c->dim, t;
    OMP(omp for nowait)
    for (t = 0; t < T; t++) {
        float *x_t = x + (size_t)t * dim, *out_t = out + (size_t)t * dim;
        if (post_norm) rmsnorm(out_t, out_t, post_norm, dim, c->norm_eps);
        for (int i = 0; i < dim; i++) x_t[i] += c->residual_scale * out_t[i];
    }
    team_wait();
}

/* In place: x = cap * tanh(x / cap), which bounds x to (-cap, cap) smoothly
   (Gemma 2's attention scores and logits).  PyTorch: torch.tanh(x / cap) * cap */
static void soft_cap(float *x, size_t n, float cap) {
    for (size_t i = 0; i < n; i++) x[i] = cap * tanhf(x[i] / cap);
}

/* --trace-html: the attention weights of query position q in head h of
   layer l (n of them, from position first on) go into the page. */
static void page_attention(TracePage *page, const Config *c, int l, int h, int q, int first, const float *att, int n) {
    size_t row = (((size_t)l * c->n_heads + h) * page->capacity + q) * page->capacity;
    memcpy(page->attention + row + first, att, (size_t)n * sizeof(float));
}

/* The positions query position q_pos attends to: first .. q_pos, all of them
   (window 0) or, in a sliding-window layer, the last `window`. */
static int first_position(int q_pos, int window) { return window && q_pos >= window ? q_pos + 1 - window : 0; }

/* Where position `position` of kv head `kv_head` of layer l lies in the
   cache (in values). Each head's keys lie one after another, position by
   position, and so do its values: attention over one head reads one
   contiguous run, which the hardware prefetcher streams (with the positions
   of all heads side by side, (n_layers, ctx, kv_dim), each head's keys were
   a stride apart: stories110M generating 256 tokens spent 20% less time in
   attention this way). */
static size_t cache_at(const Config *c, const RunState *s, int l, int kv_head, int position) {
    return (((size_t)l * c->n_kv_heads + kv_head) * s->ctx + position) * c->head_dim;
}

/* The share of n tasks this thread takes, from .. to - 1: a contiguous run,
   as OpenMP's static schedule gives (all n on one thread). */
static void thread_share(int n, int *from, int *to) {
    int threads = team_threads(), i = thread_index();
    *from = (int)((int64_t)n * i / threads), *to = (int)((int64_t)n * (i + 1) / threads);
}

/* Positions of the cache that attend_each reads at a time: 64 keys (or
   values) of 64 floats are 16 KB, which stay in the core's L1 cache while
   every query head that reads them takes its turn. */
#define ATTENTION_BLOCK 64

/* While a group's heads read a block of the cache from L1, each asks for
   its share of the next block into L2 (the next keys, then the first
   values; the next values, then the next kv head's first keys), so that the
   first head's pass over every block reads it from L2, where it read it
   from L3 or memory at the rate the core's misses in flight allow. Only
   where ATTENTION_AHEAD_HEADS heads or more share the block: TinyLlama's
   groups of 8 (1.1B q4_0, 2 threads, both versions in one build switching
   at every token: over 1024 tokens 0.9-2.0% less time a token, 6 of 6 runs
   with either version first; over 300 tokens 0.5% and 0.8%), but one head
   alone, as in stories110M's attention, asks for a whole block at once and
   ran 5-9% slower; groups of 2 and 3 are untimed. */
#define ATTENTION_AHEAD_HEADS 4

/* Share `share` of `shares` of the cache's block of `positions` rows of
   head_dim values at element `at`, asked for into L2. */
static void prefetch_block_share(const void *cache, int half, size_t at, int positions, int head_dim, int share,
                                 int shares) {
    size_t bytes = (size_t)positions * head_dim * (half ? 2 : 4), part = (bytes / shares + 63) / 64 * 64;
    const char *p = (const char *)cache + at * (half ? 2 : 4);
    for (size_t o = share * part; o < (share + 1) * part && o < bytes; o += 64) prefetch_l2_kept(p + o);
}

/* Attention of T tokens at positions pos .., one query at a time: token t
   attends over positions first_position(pos + t) .. pos + t; query head h
   reads kv head h / group. Each thread takes a contiguous run of the query
   heads (thread_share), and the heads of its run that read the same kv head
   (grouped-query attention: 8 of TinyLlama's 32 read each of its 4) go
   through that kv head's cache together, ATTENTION_BLOCK positions at a
   time: first the scores of every head over a block of keys, then, after
   each head's softmax, every head's weighted sum over a block of values.
   So a block is read from memory once and then from L1, where each head,
   one after another, read all of the kv head's cache (from L2 at best).
   Generating with the 1.1B shape (q4_0, 2 threads, positions 512 to 1024,
   timers, alternating builds): attention 2.7-3.3 ms a token before, 2.5-3.0
   with the AVX-512 kernels alone (attention_scores_512, which gain where
   their data is in L1), 2.1-2.5 with both; the 256-bit kernels alone
   gained nothing from the blocks. See the README for tokens/s.
   PyTorch: att = softmax(q @ k.T * scale + causal mask); out = att @ v */
static void attend_each(const Config *c, RunState *s, int l, int T, int pos, int window) {
    int head_dim = c->head_dim, q_dim = c->n_heads * head_dim;
    int group = c->n_heads / c->n_kv_heads, from_head, to_head; /* query heads sharing one kv head */
    float scale = c->attention_scale; /* 1 / sqrt(head_dim), Gemma's query_pre_attn_scalar^-0.5, or Granite's */
    const void *keys = s->kv16 ? (const void *)s->key_cache16 : (const void *)s->key_cache;
    const void *values = s->kv16 ? (const void *)s->value_cache16 : (const void *)s->value_cache;
    thread_share(c->n_heads, &from_head, &to_head);
    for (int t = 0; t < T; t++) {
        int last = pos + t, first = first_position(last, window), n = last + 1 - first;
        int first_count = n < ATTENTION_BLOCK ? n : ATTENTION_BLOCK; /* the positions of a first block */
        for (int h0 = from_head, h1; h0 < to_head; h0 = h1) {
            int kv = h0 / group;
            h1 = (kv + 1) * group < to_head ? (kv + 1) * group : to_head; /* heads h0 .. h1 - 1 read kv head kv */
            size_t from = cache_at(c, s, l, kv, first);
            int ahead = h1 - h0 >= ATTENTION_AHEAD_HEADS; /* whether the heads ask for the next block */
            for (int b = 0; b < n; b += ATTENTION_BLOCK) { /* scores (n) of each head, block by block */
                int count = n - b < ATTENTION_BLOCK ? n - b : ATTENTION_BLOCK, rest = n - b - count;
                size_t at = from + (size_t)b * head_dim;
                /* the block the heads read next, asked into L2 as they go: the next keys, or the values' first */
                const void *next = rest > 0 ? keys : values;
                size_t next_at = rest > 0 ? at + (size_t)count * head_dim : from;
                int next_count = rest > 0 ? (rest < ATTENTION_BLOCK ? rest : ATTENTION_BLOCK) : first_count;
                for (int h = h0; h < h1; h++) {
                    if (ahead) prefetch_block_share(next, s->kv16, next_at, next_count, head_dim, h - h0, h1 - h0);
                    const float *qh = s->q + (size_t)t * q_dim + (size_t)h * head_dim;
                    float *att = s->att + (size_t)h * s->ctx + b;
                    if (s->kv16) attention_scores_f16(att, qh, s->key_cache16 + at, head_dim, count, head_dim, scale);
                    else attention_scores(att, qh, s->key_cache + at, head_dim, count, head_dim, scale);
                }
            }
            for (int h = h0; h < h1; h++) {
                float *att = s->att + (size_t)h * s->ctx;
                if (c->attn_softcap > 0.0f) soft_cap(att, n, c->attn_softcap); /* Gemma 2 */
                softmax(att, n);
                if (s->page) page_attention(s->page, c, l, h, last, first, att, n);
                memset(s->ao + (size_t)t * q_dim + (size_t)h * head_dim, 0, head_dim * sizeof(float));
            }
            for (int b = 0; b < n; b += ATTENTION_BLOCK) { /* out (head_dim) of each head += att . values, block by block */
                int count = n - b < ATTENTION_BLOCK ? n - b : ATTENTION_BLOCK, rest = n - b - count;
                size_t at = from + (size_t)b * head_dim;
                /* next: the next values, or the next kv head's first keys (none after this thread's last) */
                const void *next = rest > 0 ? values : h1 < to_head ? keys : NULL;
                size_t next_at = rest > 0 ? at + (size_t)count * head_dim : next ? cache_at(c, s, l, kv + 1, first) : 0;
                int next_count = rest > 0 ? (rest < ATTENTION_BLOCK ? rest : ATTENTION_BLOCK) : first_count;
                for (int h = h0; h < h1; h++) {
                    if (ahead && next) prefetch_block_share(next, s->kv16, next_at, next_count, head_dim, h - h0, h1 - h0);
                    const float *att = s->att + (size_t)h * s->ctx + b;
                    float *out = s->ao + (size_t)t * q_dim + (size_t)h * head_dim;
                    if (s->kv16) weighted_sum_f16(out, att, s->value_cache16 + at, head_dim, count, head_dim);
                    else weighted_sum(out, att, s->value_cache + at, head_dim, count, head_dim);
                }
            }
        }
    }
    team_wait(); /* every head's output is written */
}

/* Whether a chunk's attention takes attend_panels: at least a panel of
   queries, an fp32 cache, and heads of whole panels (the values are read 16
   at a time, in place). build_state made the scratch for it. */
static int use_attention_panels(const Config *c, const RunState *s, int T) {
    return T >= GEMM_TOKENS && s->att_keys && c->head_dim % GEMM_TOKENS == 0;
}

/* The same attention as attend_each, for a prompt chunk, as matrix products
   by the GEMM steps. First each kv head's keys, from the first position any
   query of the chunk attends to up to the chunk's last, are packed 16
   positions to a panel, as a matmul's input is (K^T; positions past the
   chunk are zeros). Then for each head and each step of 6 queries (the
   threads share these): scores (6, n) = Q K^T, the queries' rows read in
   place as a GEMM's weight rows and the key panels as its panels, each
   step's 16 or 32 scores stored side by side; each query's soft-cap and
   softmax over the positions it attends to (0 for the others); then
   out (6, head_dim) = P V, the probabilities as the rows and the cached
   values, read in place 16 columns at a time, as the panels. The n
   positions run from the key panel of the first query's first position to
   the last query's own. Per query, the same arithmetic as attend_each, in
   another order. (Before, the keys were the rows and each panel of 16
   queries was packed: each step's 96 scores went one by one into 16 rows;
   stories110M's fp32 prompt of 512 tokens spent 37-38 ms in attention
   then, 27-28 now.) */
static void attend_panels(const Config *c, RunState *s, int l, int T, int pos, int window) {
    int head_dim = c->head_dim, q_dim = c->n_heads * head_dim, group = c->n_heads / c->n_kv_heads;
    int first = first_position(pos, window), last = pos + T - 1; /* the positions the chunk attends to */
    int n_key_panels = (last + 1 - first + GEMM_TOKENS - 1) / GEMM_TOKENS, n_steps = (T + GEMM_ROWS - 1) / GEMM_ROWS;
    size_t positions = (size_t)(s->ctx + GEMM_TOKENS - 1) / GEMM_TOKENS * GEMM_TOKENS; /* as build_state made them */
    size_t panel_floats = (size_t)head_dim * GEMM_TOKENS, head_floats = positions * head_dim;
    float scale = c->attention_scale;
    int task;
    /* (rows, n_pad): this thread's step's scores, then probabilities */
    float *att = s->att_rows + (size_t)thread_index() * GEMM_ROWS * positions;
    OMP(omp for nowait)
    for (task = 0; task < c->n_kv_heads * n_key_panels; task++) { /* K^T, panel by panel */
        int g = task / n_key_panels, kp = task % n_key_panels, from = first + kp * GEMM_TOKENS; /* its first position */
        transpose_panel(s->att_keys + g * head_floats + kp * panel_floats, s->key_cache + cache_at(c, s, l, g, from),
                        (size_t)head_dim, last + 1 - from, head_dim);
    }
    team_wait();
    /* (the threads wait here until every panel is packed) */
    OMP(omp for schedule(dynamic) nowait)
    for (task = 0; task < c->n_heads * n_steps; task++) {
        int h = task / n_steps, t0 = task % n_steps * GEMM_ROWS, rows = T - t0 < GEMM_ROWS ? T - t0 : GEMM_ROWS;
        int kp0 = (first_position(pos + t0, window) - first) / GEMM_TOKENS, base = first + kp0 * GEMM_TOKENS;
        int n = pos + t0 + rows - base, n_panels = (n + GEMM_TOKENS - 1) / GEMM_TOKENS;
        size_t n_pad = (size_t)n_panels * GEMM_TOKENS;
        const float *q = s->q + (size_t)t0 * q_dim + (size_t)h * head_dim;
        const float *keys = s->att_keys + (h / group) * head_floats + kp0 * panel_floats;
        const float *values = s->value_cache + cache_at(c, s, l, h / group, base);
        float step[GEMM_PANELS][GEMM_ROWS][GEMM_TOKENS];
        for (int p = 0; p < n_panels; p += GEMM_PANELS) { /* scores: 6 queries x 16 (or 32) positions per step */
            int panels = n_panels - p < GEMM_PANELS ? n_panels - p : GEMM_PANELS;
            gemm_f32_panels(q, (size_t)q_dim, rows, keys + p * panel_floats, panel_floats, GEMM_TOKENS, head_dim,
                            panels, step);
            for (int b = 0; b < panels; b++)
                for (int r = 0; r < rows; r++)
                    for (int j = 0; j < GEMM_TOKENS; j++) att[r * n_pad + (p + b) * GEMM_TOKENS + j] = step[b][r][j] * scale;
        }
        for (int r = 0; r < rows; r++) { /* query r attends to positions from .. its own */
            float *row = att + r * n_pad;
            int own = pos + t0 + r, from = first_position(own, window) - base, count = own + 1 - base - from;
            if (c->attn_softcap > 0.0f) soft_cap(row + from, count, c->attn_softcap); /* Gemma 2 */
            softmax(row + from, count);
            if (s->page) page_attention(s->page, c, l, h, own, base + from, row + from, count);
            for (int i = 0; i < from; i++) row[i] = 0.0f;
            for (int i = from + count; i < n; i++) row[i] = 0.0f;
        }
        for (int c0 = 0; c0 < head_dim; c0 += GEMM_PANELS * GEMM_TOKENS) { /* out: 6 queries x 16 (or 32) of head_dim */
            int panels = (head_dim - c0) / GEMM_TOKENS < GEMM_PANELS ? (head_dim - c0) / GEMM_TOKENS : GEMM_PANELS;
            gemm_f32_panels(att, n_pad, rows, values + c0, GEMM_TOKENS, (size_t)head_dim, n, panels, step);
            for (int b = 0; b < panels; b++)
                for (int r = 0; r < rows; r++)
                    memcpy(s->ao + (size_t)(t0 + r) * q_dim + (size_t)h * head_dim + c0 + b * GEMM_TOKENS, step[b][r],
                           sizeof step[b][r]);
        }
    }
    team_wait();
}

/* A token's new key and value k, v (kv_dim) of layer l into the cache at
   its position, head by head (see cache_at), as halves in an fp16 cache.
   PyTorch: cache_k[l, :, position] = k.view(n_kv_heads, head_dim) */
static void store_kv(const Config *c, RunState *s, int l, int position, const float *k, const float *v) {
    int head_dim = c->head_dim;
    for (int g = 0; g < c->n_kv_heads; g++) {
        size_t at = cache_at(c, s, l, g, position), from = (size_t)g * head_dim;
        if (s->kv16) {
            for (int i = 0; i < head_dim; i++)
                s->key_cache16[at + i] = fp32_to_fp16(k[from + i]), s->value_cache16[at + i] = fp32_to_fp16(v[from + i]);
        } else {
            memcpy(s->key_cache + at, k + from, head_dim * sizeof(float));
            memcpy(s->value_cache + at, v + from, head_dim * sizeof(float));
        }
    }
}

/* The attention block of layer l for T tokens at positions pos ..:
   x = x + wo(attention(rmsnorm(x))). Keys and values go into the cache. */
static void attention_block(const Config *c, const LayerWeights *lw, RunState *s, int l, int T, int pos) {
    int head_dim = c->head_dim, half = c->rope_dim / 2;
    int q_dim = c->n_heads * head_dim, kv_dim = c->n_kv_heads * head_dim;
    float *k = s->kv_new, *v = s->kv_new + (size_t)T * kv_dim; /* the new keys and values (T, kv_dim) */
    const RopeTable *rt = &s->rope[lw->sliding && s->n_rope > 1]; /* Gemma 3's local layers: their own base */

    norm_input(c, s, s->xb, s->x, lw->attn_norm, T);
    float *qkv[] = {s->q, k, v}; /* q = wq(xb), k = wk(xb), v = wv(xb) */
    const Matrix *w_qkv[] = {&lw->wq, &lw->wk, &lw->wv};
    matmuls(qkv, s->xb, s->xq, &s->panels, w_qkv, 3, T);
    int t;
    OMP(omp for nowait) /* a prompt chunk: the threads share its tokens */
    for (t = 0; t < T; t++) {
        float *kt = k + (size_t)t * kv_dim, *vt = v + (size_t)t * kv_dim;
        attention_inputs(c, lw, s->q + (size_t)t * q_dim, kt, vt, rt->cos + t * half, rt->sin + t * half);
        store_kv(c, s, l, pos + t, kt, vt);
    }
    team_wait();

    int window = lw->sliding ? c->sliding_window : 0;
    if (use_attention_panels(c, s, T)) attend_panels(c, s, l, T, pos, window);
    else attend_each(c, s, l, T, pos, window);
    matmul_input(c, s->xq, &s->panels, s->ao, T, q_dim);
    matmul(s->xb2, s->ao, s->xq, &s->panels, &lw->wo, T); /* xb2 = wo(attention) */
    add_to_residual(c, s->x, s->xb2, lw->post_attn_norm, T);
}

/* The feed-forward block for T tokens: x = x + w2(act(w1(xb)) * w3(xb)),
   xb = rmsnorm(x). */
static void feed_forward_block(const Config *c, const LayerWeights *lw, RunState *s, int T) {
    int hidden = c->hidden_dim;
    norm_input(c, s, s->xb, s->x, lw->ffn_norm, T);
    float *gate_up[] = {s->hb, s->hb2}; /* gate = w1(xb), up = w3(xb) */
    const Matrix *w_gate_up[] = {&lw->w1, &lw->w3};
    matmuls(gate_up, s->xb, s->xq, &s->panels, w_gate_up, 2, T);
    /* hb = act(gate) * up, elementwise, the input of w2; a prompt chunk's
       tokens are shared among the threads (T x hidden activations: on
       stories15M, serial, they held the other thread waiting for a tenth of
       the prompt's time), each token's activation and quantization by one */
    int t;
    new_matmul_input(&s->panels, T);
    OMP(omp for nowait)
    for (t = 0; t < T; t++) {
        float *h_t = s->hb + (size_t)t * hidden;
        gate_times_up(h_t, s->hb2 + (size_t)t * hidden, hidden, c->activation);
        quantize_input(c, &s->xq[t], h_t, hidden);
    }
    team_wait();
    matmul(s->xb2, s->hb, s->xq, &s->panels, &lw->w2, T); /* down */
    add_to_residual(c, s->x, s->xb2, lw->post_ffn_norm, T);
}

/* The model's ending on T rows h (T, dim) of the residual stream: s->logits
   (T, vocab) = classifier(rmsnorm(h)), then Granite's scale and Gemma 2's
   soft-cap; the normed rows go to normed (h itself will do).
   PyTorch: lm_head(model.norm(h)) */
static void model_head(const Model *m, RunState *s, float *normed, const float *h, int T) {
    const Config *c = &m->config;
    int V = c->vocab_size, t;
    norm_input(c, s, normed, h, m->weights.final_norm, T);
    matmul(s->logits, normed, s->xq, &s->panels, &m->weights.classifier, T);
    if (c->logit_scale == 1.0f && c->final_softcap <= 0.0f) return;
    OMP(omp for nowait)
    for (t = 0; t < T; t++) {
        float *logits = s->logits + (size_t)t * V;
        if (c->logit_scale != 1.0f) /* Granite: logits / logits_scaling */
            for (int i = 0; i < V; i++) logits[i] *= c->logit_scale;
        if (c->final_softcap > 0.0f) soft_cap(logits, V, c->final_softcap); /* Gemma 2 */
    }
    team_wait();
}

/* --trace-html's logit lens: what the residual stream after layer l would
   predict at each of the T positions if the model stopped there, by the
   model's own ending (model_head, on a copy: s->xb). The page keeps the most
   likely token and its probability.
   PyTorch: softmax(lm_head(norm(hidden_states[l + 1])), -1).max(-1) */
static void page_logit_lens(const Model *m, RunState *s, int l, int T, int pos) {
    int V = m->config.vocab_size, t;
    model_head(m, s, s->xb, s->x, T);
    OMP(omp for nowait)
    for (t = 0; t < T; t++) {
        float *logits = s->logits + (size_t)t * V;
        softmax(logits, V);
        int best = argmax(logits, V);
        s->page->lens_token[(size_t)l * s->page->capacity + pos + t] = best;
        s->page->lens_prob[(size_t)l * s->page->capacity + pos + t] = logits[best];
    }
    team_wait();
}

/* x[t] = embedding[token t] * embedding_scale, for the T tokens (x: T, dim),
   and the cos and sin of each token's position, shared by every head of
   every layer (of each kind, when the local layers have their own base).
   PyTorch: x = model.embed_tokens(tokens) * scale  (the scale is 1 but for
   Granite's multiplier and Gemma's sqrt(dim)) */
static void embed_tokens(const Model *m, RunState *s, const int *tokens, int T, int pos) {
    const Config *c = &m->config;
    int dim = c->dim, half = c->rope_dim / 2, t;
    OMP(omp for nowait)
    for (t = 0; t < T; t++) {
        float *xt = s->x + (size_t)t * dim;
        matrix_row(xt, &m->weights.token_embedding, tokens[t]);
        for (int i = 0; i < dim; i++) xt[i] *= c->embedding_scale;
        for (int local = 0; local < s->n_rope; local++) {
            RopeTable *rt = &s->rope[local];
            for (int i = 0; i < half; i++) {
                double angle = (double)(pos + t) * (double)rt->freq[i];
                rt->cos[t * half + i] = (float)(cos(angle) * rt->scale);
                rt->sin[t * half + i] = (float)(sin(angle) * rt->scale);
            }
        }
    }
    team_wait();
}

/* Runs T tokens, at positions pos .. pos + T - 1, through the model (T at most
   s->max_tokens; earlier positions must already be in the KV cache). Returns
   the logits: of every token (T, vocab_size) if all_logits (T at most
   s->max_logits), else of the last token only (vocab_size). Generation
   passes one token at a time; a prompt goes through in chunks of up to
   MAX_BATCH tokens, each weight matrix read once per chunk.

   Threads: with OpenMP, forward starts one team of threads and every thread
   runs all of what follows, one step after another. Each step shares its
   work among them with `omp for nowait` (a prompt chunk's matmul its rows,
   attention its heads, the other steps a prompt chunk's tokens; generation's
   matmuls by stealing, share_units), and at its end the
   threads wait for each other (team_wait) before the next step reads what
   it wrote (one thread alone takes a step of one token: the norms, say,
   when generating). Without OpenMP the same code runs on one thread.
   (Before, each step that shared its work started and ended a team of its
   own, 177 a token of the 1.1B shape; alternating, median of 10 rounds, 2
   threads: stories15M q4_0 generated 1451 tok/s then and 1750 now,
   stories110M q4_0 403 and 441, the 1.1B q4_0 65 and 67 (q8_0 the same);
   prompts the same. Starting a team cost ~3 us here, OpenMP's wait ~1.4 us
   (team_wait's ~0.2), as much as norming and quantizing a token of 2048
   values: so a token's steps that need no wait between them are one step
   (norm_input, the activation with its quantization): stories15M q4_0 +7%,
   12 of 12 rounds. Matmuls of one input going on without a wait (wq, wk,
   wv; w1, w3): no faster then, with OpenMP's schedules; with the rows
   shared by stealing, a little, and they are one list now: matmuls.) */
static float *forward(const Model *m, RunState *s, const int *tokens, int T, int pos, int all_logits) {
    const Config *c = &m->config;
    const Weights *w = &m->weights;
    int dim = c->dim;
    if (T > s->max_tokens || (all_logits && T > s->max_logits)) /* the callers' contract: never from input */
        fatal("forward: %d tokens, at most %d (%d with all their logits)", T, s->max_tokens, s->max_logits);

    OMP(omp parallel)
    {
        embed_tokens(m, s, tokens, T, pos);
        for (int l = 0; l < c->n_layers; l++) {
            attention_block(c, &w->layers[l], s, l, T, pos);
            feed_forward_block(c, &w->layers[l], s, T);
            if (s->page) page_logit_lens(m, s, l, T, pos);
        }
        /* logits = classifier(rmsnorm(x)) of every token, or of the last one (model_head) */
        int first = all_logits ? 0 : T - 1;
        model_head(m, s, s->x + (size_t)first * dim, s->x + (size_t)first * dim, T - first);
    }
    if (s->page) { /* the positions the page now covers */
        memcpy(s->page->tokens + pos, tokens, (size_t)T * sizeof(int));
        s->page->n_positions = pos + T;
    }
    return s->logits;
}

/* ========================================================================== */
/* 6. Tokenizer                                                               */
/* ========================================================================== */

/* Byte pair encoding, in two kinds. Both split text into small symbols and
   repeatedly merge the adjacent pair of highest priority (leftmost first on
   ties) until no pair merges.

   SentencePiece BPE (Llama 2, TinyLlama, Mistral), exactly as SentencePiece:
   - the text is normalized: each space becomes the word marker (stored here
     as a plain ' ', so a literal marker U+2581 in the text also becomes
     ' '), a space is put in front (the "dummy prefix"), each byte that is
     not part of valid UTF-8 becomes U+FFFD, and, if the tokenizer says so,
     runs of spaces are squeezed;
   - the symbols start as characters; a pair merges when its concatenation
     is a piece, with the piece's score as priority (or, for a SentencePiece
     model written as tokenizer.json with a merge list, Gemma 3's, when the
     pair is in the list, earlier merges first: the tokenizers library's rule);
   - a leftover symbol not in the vocabulary becomes one <0xNN> token per byte.

   Byte-level BPE (GPT-2 style: Llama 3, SmolLM2, Qwen2.5):
   - the text is first cut into pieces by the family's pre-tokenizer (a
     regular expression, coded by hand below) and BPE runs inside each piece;
   - the symbols start as single bytes (every byte is a token); a pair merges
     when it is in the merge list (earlier merges first), or, for tokenizers
     given as ranks (tiktoken: no merge list), when its concatenation is a
     token (lower rank first; stored as score = -rank).

   In both, control tokens (BOS, EOS, chat markers) never come from text:
   they are placed by id. User-defined tokens are matched whole first.

   Two file formats, told apart by their first bytes:
   (a) this project's ("RUNT", version 1), written by export.py: a 64-byte
       header of 16 int32: magic, version, vocab_size, max_token_length,
       bos_id, eos_id, unk_id, flags, kind (1 SentencePiece, 2 byte-level),
       pre-tokenizer (PRETOK_*), n_merges, chat template (TEMPLATE_*),
       length of the default system prompt, then zeros; per token: float32
       score, int32 type (TOK_*, plus STRIP_* << 8), int32 length, bytes;
       then n_merges pairs of int32 token ids (left, right), highest priority
       first; then the default system prompt's bytes; then, with TOKF_NFC,
       NFC's three tables (see nfc_normalize).
   (b) llama2.c's tokenizer.bin: uint32 max_token_length, then per token:
       float32 score, int32 length, bytes. Ids 0, 1, 2 are unk, BOS and EOS. */

#define TOKENIZER_MAGIC 0x544E5552u /* "RUNT" */
#define TOKENIZER_VERSION 1
#define TOKENIZER_HEADER_INTS 16
enum { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_USER_DEFINED = 4, TOK_UNUSED = 5, TOK_BYTE = 6 };
enum { TOKF_DUMMY_PREFIX = 1, TOKF_ADD_BOS = 2, TOKF_REMOVE_EXTRA_WS = 4, TOKF_IGNORE_MERGES = 8, TOKF_NFC = 16 };
enum { KIND_SENTENCEPIECE = 1, KIND_BYTE_LEVEL = 2 };
/* pre-tokenizers of byte-level BPE (their patterns are given at pretokenize) */
enum { PRETOK_NONE = 0, PRETOK_LLAMA3 = 1, PRETOK_QWEN2 = 2, PRETOK_GPT2 = 3, PRETOK_SMOLLM = 4, PRETOK_O200K = 5 };
/* chat templates (rendered in section 8), recorded by the tokenizer file */
enum { TEMPLATE_NONE, TEMPLATE_LLAMA2, TEMPLATE_LLAMA3, TEMPLATE_LLAMA31, TEMPLATE_CHATML, TEMPLATE_ZEPHYR,
       TEMPLATE_MISTRAL, TEMPLATE_DEEPSEEK_R1, TEMPLATE_GEMMA, TEMPLATE_PHI3, TEMPLATE_PHI4, TEMPLATE_QWEN3,
       TEMPLATE_SMOLLM3, TEMPLATE_GRANITE, N_TEMPLATES };
static const char *TEMPLATE_NAMES[N_TEMPLATES] = {"none", "llama2", "llama3", "llama3.1", "chatml", "zephyr", "mistral",
                                                  "deepseek-r1", "gemma", "phi3", "phi4", "qwen3", "smollm3", "granite"};
#define TEMPLATE_LIST "llama2, llama3, llama3.1, chatml, zephyr, mistral, deepseek-r1, gemma, phi3, phi4, qwen3, " \
                      "smollm3, granite"
/* An added token may swallow the whitespace beside it when it is matched or
   rendered (Hugging Face's AddedToken rstrip / lstrip; Phi-3's chat tokens):
   bits 8 and 9 of a token's type in the file. */
enum { STRIP_RIGHT = 1, STRIP_LEFT = 2 };

typedef struct {
    int vocab_size;
    int kind;           /* KIND_* */
    int pretok;         /* PRETOK_* */
    char **pieces;      /* (vocab_size) bytes of each token, NUL-terminated */
    int *lengths;       /* (vocab_size) their lengths */
    float *scores;      /* (vocab_size) merge priority when merging by concatenation */
    uint8_t *types;     /* (vocab_size) TOK_* */
    uint8_t *strip;     /* (vocab_size) STRIP_* */
    int byte_ids[256];  /* token of each single byte: <0xNN>, or the byte itself; -1 if none */
    int bos_id, eos_id, unk_id;
    uint32_t flags;     /* TOKF_* */
    int max_len;        /* longest piece in bytes */
    int *hash;          /* open-addressing table: mergeable piece -> id, -1 empty */
    uint32_t hash_mask;
    int n_merges;
    int32_t *merges;    /* (n_merges, 3): left id, right id, merged id */
    int *merge_hash;    /* open-addressing table: (left, right) -> merge index, -1 empty */
    uint32_t merge_mask;
    int *user_defined;  /* ids of USER_DEFINED pieces, matched whole before merging */
    int n_user_defined;
    char *blob;         /* the pieces' bytes */
    char *file;         /* the file's contents, while it is being read */
    int chat_template;  /* TEMPLATE_* (section 8), from the model's own chat template */
    char *default_system; /* system prompt the template uses when none is given, or NULL */
    int32_t *nfc[3];    /* with TOKF_NFC: (n, 3) sorted triples: decompositions (cp, first, second or 0),
                           combining classes (cp, class, 0), compositions (first, second, composite) */
    int n_nfc[3];
} Tokenizer;

static uint32_t hash_bytes(const char *s, int len) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static uint32_t hash_pair(int left, int right) {
    uint64_t k = ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(k >> 32);
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

/* Index of the merge of (left, right) in the merge list, or -1. */
static int lookup_merge(const Tokenizer *t, int left, int right) {
    for (uint32_t i = hash_pair(left, right) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        int m = t->merge_hash[i];
        if (m < 0) return -1;
        if (t->merges[3 * m] == left && t->merges[3 * m + 1] == right) return m;
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

/* Bounds-checked reading of a tokenizer file. */
typedef struct {
    const char *path;
    const uint8_t *p, *end;
} ByteReader;

static void need_bytes(ByteReader *r, size_t n, const char *what) {
    if ((size_t)(r->end - r->p) < n) fatal("%s: tokenizer file is truncated (%s)", r->path, what);
}

static int32_t read_i32(ByteReader *r, const char *what) {
    int32_t v;
    need_bytes(r, 4, what);
    memcpy(&v, r->p, 4);
    r->p += 4;
    return v;
}

/* Counts the tokens of a llama2.c tokenizer.bin: the file does not say. */
static int count_legacy_tokens(ByteReader r) {
    int n = 0;
    while (r.p < r.end) {
        read_i32(&r, "token score");
        int32_t len = read_i32(&r, "token length");
        if (len < 0 || len > r.end - r.p)
            fatal("%s: tokenizer file is truncated or corrupt (token %d has length %d)", r.path, n, len);
        r.p += len;
        if (++n > MAX_VOCAB) fatal("%s: too many tokens", r.path);
    }
    if (n == 0) fatal("%s: tokenizer file has no tokens", r.path);
    return n;
}

/* Inserts id into an open-addressing table unless `find` already finds it. */
static void build_piece_hash(Tokenizer *t) {
    uint32_t cap = 1;
    while (cap < (uint32_t)t->vocab_size * 2) cap <<= 1;
    t->hash_mask = cap - 1;
    t->hash = xmalloc(cap * sizeof(int));
    for (uint32_t i = 0; i < cap; i++) t->hash[i] = -1;
    /* As SentencePiece: normal, user-defined and unused pieces can be made by
       merging; control, unknown and byte tokens never are. First id wins. */
    for (int id = 0; id < t->vocab_size; id++) {
        int ty = t->types[id];
        if (ty != TOK_NORMAL && ty != TOK_USER_DEFINED && ty != TOK_UNUSED) continue;
        if (lookup_piece(t, t->pieces[id], t->lengths[id]) >= 0) continue;
        uint32_t i = hash_bytes(t->pieces[id], t->lengths[id]) & t->hash_mask;
        while (t->hash[i] >= 0) i = (i + 1) & t->hash_mask;
        t->hash[i] = id;
    }
}

static void read_merges(Tokenizer *t, ByteReader *r) {
    int n = t->n_merges;
    t->merges = xcalloc((size_t)n * 3, sizeof(int32_t));
    uint32_t cap = 1;
    while (cap < (uint32_t)n * 2 + 2) cap <<= 1;
    t->merge_mask = cap - 1;
    t->merge_hash = xmalloc(cap * sizeof(int));
    for (uint32_t i = 0; i < cap; i++) t->merge_hash[i] = -1;
    char *buf = xmalloc(2 * (size_t)t->max_len + 1);
    for (int m = 0; m < n; m++) {
        int32_t a = read_i32(r, "merges"), b = read_i32(r, "merges");
        if (a < 0 || a >= t->vocab_size || b < 0 || b >= t->vocab_size)
            fatal("%s: merge %d names a token outside the vocabulary", r->path, m);
        memcpy(buf, t->pieces[a], t->lengths[a]);
        memcpy(buf + t->lengths[a], t->pieces[b], t->lengths[b]);
        int merged = lookup_piece(t, buf, t->lengths[a] + t->lengths[b]);
        if (merged < 0) fatal("%s: merge %d makes a token that is not in the vocabulary", r->path, m);
        if (lookup_merge(t, a, b) >= 0) continue; /* a repeated merge: the first one counts */
        t->merges[3 * m] = a;
        t->merges[3 * m + 1] = b;
        t->merges[3 * m + 2] = merged;
        uint32_t i = hash_pair(a, b) & t->merge_mask;
        while (t->merge_hash[i] >= 0) i = (i + 1) & t->merge_mask;
        t->merge_hash[i] = m;
    }
    free(buf);
}

/* expected_vocab: the model's vocab_size, or 0 when there is no model. */
static void build_tokenizer(Tokenizer *t, const char *path, int expected_vocab) {
    memset(t, 0, sizeof(*t));
    size_t size;
    char *file = t->file = read_file(path, &size);
    ByteReader r = {path, (const uint8_t *)file, (const uint8_t *)file + size};
    uint32_t magic = 0;
    if (size >= 4) memcpy(&magic, file, 4);
    int ours = magic == TOKENIZER_MAGIC;
    int32_t system_len = 0, declared_max_len;
    if (ours) {
        int32_t h[TOKENIZER_HEADER_INTS];
        for (int i = 0; i < TOKENIZER_HEADER_INTS; i++) h[i] = read_i32(&r, "header");
        if (h[1] != TOKENIZER_VERSION)
            fatal("%s: tokenizer format version %d is not supported (this build reads %d)", path, h[1], TOKENIZER_VERSION);
        t->vocab_size = h[2];
        declared_max_len = h[3];
        t->bos_id = h[4]; t->eos_id = h[5]; t->unk_id = h[6];
        t->flags = (uint32_t)h[7];
        t->kind = h[8];
        t->pretok = h[9];
        t->n_merges = h[10];
        t->chat_template = h[11];
        if (h[11] < 0 || h[11] >= N_TEMPLATES) fatal("%s: unknown chat template %d", path, h[11]);
        if (h[12] < 0 || h[12] > 65536) fatal("%s: invalid default system prompt length %d", path, h[12]);
        system_len = h[12];
        if (t->vocab_size <= 0 || t->vocab_size > MAX_VOCAB)
            fatal("%s: invalid tokenizer header: vocab_size %d", path, t->vocab_size);
        if (t->flags & ~31u) fatal("%s: unknown tokenizer flags 0x%x", path, t->flags);
        if (t->kind != KIND_SENTENCEPIECE && t->kind != KIND_BYTE_LEVEL)
            fatal("%s: unknown tokenizer kind %d", path, t->kind);
        if (t->pretok < PRETOK_NONE || t->pretok > PRETOK_O200K || (t->kind == KIND_SENTENCEPIECE && t->pretok))
            fatal("%s: unknown pre-tokenizer %d", path, t->pretok);
        if (t->n_merges < 0 || t->n_merges > 4 * MAX_VOCAB)
            fatal("%s: invalid tokenizer header: %d merges", path, t->n_merges);
    } else {
        declared_max_len = read_i32(&r, "header");
        t->vocab_size = count_legacy_tokens(r);
        t->bos_id = 1; t->eos_id = 2; t->unk_id = 0;
        t->flags = TOKF_DUMMY_PREFIX | TOKF_ADD_BOS;
        t->kind = KIND_SENTENCEPIECE;
    }
    if (expected_vocab && t->vocab_size != expected_vocab)
        fatal("%s: tokenizer has %d tokens but the model has a vocabulary of %d: "
              "wrong tokenizer for this model (choose one with -z)", path, t->vocab_size, expected_vocab);
    int V = t->vocab_size;
    if (t->bos_id < -1 || t->bos_id >= V || t->eos_id < -1 || t->eos_id >= V || t->unk_id < -1 || t->unk_id >= V)
        fatal("%s: invalid tokenizer header: special token id outside the vocabulary", path);
    t->pieces = xcalloc(V, sizeof(char *));
    t->lengths = xcalloc(V, sizeof(int));
    t->scores = xcalloc(V, sizeof(float));
    t->types = xcalloc(V, 1);
    t->strip = xcalloc(V, 1);
    t->user_defined = xcalloc(V, sizeof(int));
    for (int b = 0; b < 256; b++) t->byte_ids[b] = -1;

    /* The pieces get a buffer of their own, so that each can end in a NUL:
       its size is at most the file's size plus one NUL per token. */
    t->blob = xmalloc(size + (size_t)V + 1);
    char *out = t->blob;
    for (int i = 0; i < V; i++) {
        t->scores[i] = 0.0f;
        memcpy(&t->scores[i], (need_bytes(&r, 4, "token score"), r.p), 4);
        r.p += 4;
        int32_t type = ours ? read_i32(&r, "token type") : TOK_NORMAL;
        t->strip[i] = (uint8_t)((type >> 8) & 3);
        type &= ~(3 << 8);
        if (type < TOK_NORMAL || type > TOK_BYTE) fatal("%s: token %d has unknown type %d", path, i, type);
        int32_t len = read_i32(&r, "token length");
        if (len < 0 || len > 65536) fatal("%s: token %d has invalid length %d", path, i, len);
        if (len > declared_max_len)
            fatal("%s: token %d is %d bytes, longer than the declared maximum of %d", path, i, len, declared_max_len);
        need_bytes(&r, (size_t)len, "token bytes");
        memcpy(out, r.p, len);
        r.p += len;
        out[len] = '\0';
        t->pieces[i] = out;
        t->lengths[i] = len;
        out += len + 1;
        if (!ours) { /* llama2.c's file has no types: infer them */
            if (i == t->unk_id) type = TOK_UNKNOWN;
            else if (i == t->bos_id || i == t->eos_id) type = TOK_CONTROL;
            else if (parse_byte_piece(t->pieces[i], len) >= 0) type = TOK_BYTE;
        }
        t->types[i] = (uint8_t)type;
        if (len > t->max_len) t->max_len = len;
        if (type == TOK_BYTE) {
            if (t->kind != KIND_SENTENCEPIECE) fatal("%s: token %d: byte tokens belong to SentencePiece tokenizers", path, i);
            int b = parse_byte_piece(t->pieces[i], len);
            if (b < 0) fatal("%s: token %d is a byte token but its text is not <0xNN>", path, i);
            if (t->byte_ids[b] < 0) t->byte_ids[b] = i;
        }
        if (type == TOK_USER_DEFINED && len > 0) t->user_defined[t->n_user_defined++] = i;
    }
    build_piece_hash(t);
    if (t->kind == KIND_BYTE_LEVEL) {
        for (int b = 0; b < 256; b++) { /* a byte without a token is dropped, as Hugging Face does */
            char c = (char)b;
            t->byte_ids[b] = lookup_piece(t, &c, 1);
        }
    }
    if (t->n_merges > 0) read_merges(t, &r);
    if (system_len > 0) {
        need_bytes(&r, (size_t)system_len, "default system prompt");
        t->default_system = xmalloc((size_t)system_len + 1);
        memcpy(t->default_system, r.p, system_len);
        t->default_system[system_len] = '\0';
        r.p += system_len;
    }
    for (int k = 0; k < 3 * ((t->flags & TOKF_NFC) != 0); k++) { /* NFC's tables */
        int32_t n = read_i32(&r, "NFC table");
        if (n < 0 || n > (1 << 20)) fatal("%s: NFC table %d has %d entries", path, k, n);
        int32_t *e = t->nfc[k] = xmalloc((size_t)n * 3 * sizeof(int32_t));
        for (int i = 0; i < 3 * n; i++) e[i] = read_i32(&r, "NFC table");
        for (int i = 0; i < n; i++) {
            int sorted = i == 0 || e[3 * i] > e[3 * i - 3] || (k == 2 && e[3 * i] == e[3 * i - 3] && e[3 * i + 1] > e[3 * i - 2]);
            for (int j = 0; j < 3; j++)
                if (e[3 * i + j] < 0 || e[3 * i + j] >= 0x110000) fatal("%s: NFC table %d: a code point out of range", path, k);
            if (!sorted) fatal("%s: NFC table %d is not sorted", path, k);
        }
        t->n_nfc[k] = n;
    }
    if (r.p != r.end)
        fatal("%s: tokenizer file has %lld unexpected bytes at the end", path, (long long)(r.end - r.p));
    free(file);
    t->file = NULL;
}

static void free_tokenizer(Tokenizer *t) {
    free(t->pieces); free(t->lengths); free(t->scores); free(t->types); free(t->strip);
    free(t->hash); free(t->merges); free(t->merge_hash); free(t->user_defined); free(t->blob);
    free(t->default_system);
    for (int k = 0; k < 3; k++) free(t->nfc[k]);
    free(t->file);
}

/* ---- Unicode: UTF-8 and the character classes of the pre-tokenizers ---- */

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

#define NOT_A_CHAR 0xFFFFFFFFu /* an invalid byte: neither letter, number nor space */

/* The character at s (n > 0 bytes): its code point, and its length in *len.
   An invalid byte counts as a character of its own. */
static uint32_t decode_char(const uint8_t *s, size_t n, int *len) {
    *len = utf8_char_len(s, n);
    if (*len == 0) {
        *len = 1;
        return NOT_A_CHAR;
    }
    if (*len == 1) return s[0];
    uint32_t cp = s[0] & (0x7F >> *len);
    for (int i = 1; i < *len; i++) cp = (cp << 6) | (s[i] & 0x3F);
    return cp;
}

/* UNICODE_LETTERS (\p{L}), UNICODE_NUMBERS (\p{N}), and for o200k UNICODE_LOWER
   (\p{Ll}), UNICODE_UPPER (\p{Lu}, \p{Lt}) and UNICODE_MARKS (\p{M}): sorted
   code point ranges. */
/* generated by tools/gen_unicode.py (python3-regex 2.5.123) */
static const uint32_t UNICODE_LETTERS[][2] = { /* 659 ranges */
    {0x41,0x5A},{0x61,0x7A},{0xAA,0xAA},{0xB5,0xB5},{0xBA,0xBA},{0xC0,0xD6},
    {0xD8,0xF6},{0xF8,0x2C1},{0x2C6,0x2D1},{0x2E0,0x2E4},{0x2EC,0x2EC},{0x2EE,0x2EE},
    {0x370,0x374},{0x376,0x377},{0x37A,0x37D},{0x37F,0x37F},{0x386,0x386},{0x388,0x38A},
    {0x38C,0x38C},{0x38E,0x3A1},{0x3A3,0x3F5},{0x3F7,0x481},{0x48A,0x52F},{0x531,0x556},
    {0x559,0x559},{0x560,0x588},{0x5D0,0x5EA},{0x5EF,0x5F2},{0x620,0x64A},{0x66E,0x66F},
    {0x671,0x6D3},{0x6D5,0x6D5},{0x6E5,0x6E6},{0x6EE,0x6EF},{0x6FA,0x6FC},{0x6FF,0x6FF},
    {0x710,0x710},{0x712,0x72F},{0x74D,0x7A5},{0x7B1,0x7B1},{0x7CA,0x7EA},{0x7F4,0x7F5},
    {0x7FA,0x7FA},{0x800,0x815},{0x81A,0x81A},{0x824,0x824},{0x828,0x828},{0x840,0x858},
    {0x860,0x86A},{0x870,0x887},{0x889,0x88E},{0x8A0,0x8C9},{0x904,0x939},{0x93D,0x93D},
    {0x950,0x950},{0x958,0x961},{0x971,0x980},{0x985,0x98C},{0x98F,0x990},{0x993,0x9A8},
    {0x9AA,0x9B0},{0x9B2,0x9B2},{0x9B6,0x9B9},{0x9BD,0x9BD},{0x9CE,0x9CE},{0x9DC,0x9DD},
    {0x9DF,0x9E1},{0x9F0,0x9F1},{0x9FC,0x9FC},{0xA05,0xA0A},{0xA0F,0xA10},{0xA13,0xA28},
    {0xA2A,0xA30},{0xA32,0xA33},{0xA35,0xA36},{0xA38,0xA39},{0xA59,0xA5C},{0xA5E,0xA5E},
    {0xA72,0xA74},{0xA85,0xA8D},{0xA8F,0xA91},{0xA93,0xAA8},{0xAAA,0xAB0},{0xAB2,0xAB3},
    {0xAB5,0xAB9},{0xABD,0xABD},{0xAD0,0xAD0},{0xAE0,0xAE1},{0xAF9,0xAF9},{0xB05,0xB0C},
    {0xB0F,0xB10},{0xB13,0xB28},{0xB2A,0xB30},{0xB32,0xB33},{0xB35,0xB39},{0xB3D,0xB3D},
    {0xB5C,0xB5D},{0xB5F,0xB61},{0xB71,0xB71},{0xB83,0xB83},{0xB85,0xB8A},{0xB8E,0xB90},
    {0xB92,0xB95},{0xB99,0xB9A},{0xB9C,0xB9C},{0xB9E,0xB9F},{0xBA3,0xBA4},{0xBA8,0xBAA},
    {0xBAE,0xBB9},{0xBD0,0xBD0},{0xC05,0xC0C},{0xC0E,0xC10},{0xC12,0xC28},{0xC2A,0xC39},
    {0xC3D,0xC3D},{0xC58,0xC5A},{0xC5D,0xC5D},{0xC60,0xC61},{0xC80,0xC80},{0xC85,0xC8C},
    {0xC8E,0xC90},{0xC92,0xCA8},{0xCAA,0xCB3},{0xCB5,0xCB9},{0xCBD,0xCBD},{0xCDD,0xCDE},
    {0xCE0,0xCE1},{0xCF1,0xCF2},{0xD04,0xD0C},{0xD0E,0xD10},{0xD12,0xD3A},{0xD3D,0xD3D},
    {0xD4E,0xD4E},{0xD54,0xD56},{0xD5F,0xD61},{0xD7A,0xD7F},{0xD85,0xD96},{0xD9A,0xDB1},
    {0xDB3,0xDBB},{0xDBD,0xDBD},{0xDC0,0xDC6},{0xE01,0xE30},{0xE32,0xE33},{0xE40,0xE46},
    {0xE81,0xE82},{0xE84,0xE84},{0xE86,0xE8A},{0xE8C,0xEA3},{0xEA5,0xEA5},{0xEA7,0xEB0},
    {0xEB2,0xEB3},{0xEBD,0xEBD},{0xEC0,0xEC4},{0xEC6,0xEC6},{0xEDC,0xEDF},{0xF00,0xF00},
    {0xF40,0xF47},{0xF49,0xF6C},{0xF88,0xF8C},{0x1000,0x102A},{0x103F,0x103F},{0x1050,0x1055},
    {0x105A,0x105D},{0x1061,0x1061},{0x1065,0x1066},{0x106E,0x1070},{0x1075,0x1081},{0x108E,0x108E},
    {0x10A0,0x10C5},{0x10C7,0x10C7},{0x10CD,0x10CD},{0x10D0,0x10FA},{0x10FC,0x1248},{0x124A,0x124D},
    {0x1250,0x1256},{0x1258,0x1258},{0x125A,0x125D},{0x1260,0x1288},{0x128A,0x128D},{0x1290,0x12B0},
    {0x12B2,0x12B5},{0x12B8,0x12BE},{0x12C0,0x12C0},{0x12C2,0x12C5},{0x12C8,0x12D6},{0x12D8,0x1310},
    {0x1312,0x1315},{0x1318,0x135A},{0x1380,0x138F},{0x13A0,0x13F5},{0x13F8,0x13FD},{0x1401,0x166C},
    {0x166F,0x167F},{0x1681,0x169A},{0x16A0,0x16EA},{0x16F1,0x16F8},{0x1700,0x1711},{0x171F,0x1731},
    {0x1740,0x1751},{0x1760,0x176C},{0x176E,0x1770},{0x1780,0x17B3},{0x17D7,0x17D7},{0x17DC,0x17DC},
    {0x1820,0x1878},{0x1880,0x1884},{0x1887,0x18A8},{0x18AA,0x18AA},{0x18B0,0x18F5},{0x1900,0x191E},
    {0x1950,0x196D},{0x1970,0x1974},{0x1980,0x19AB},{0x19B0,0x19C9},{0x1A00,0x1A16},{0x1A20,0x1A54},
    {0x1AA7,0x1AA7},{0x1B05,0x1B33},{0x1B45,0x1B4C},{0x1B83,0x1BA0},{0x1BAE,0x1BAF},{0x1BBA,0x1BE5},
    {0x1C00,0x1C23},{0x1C4D,0x1C4F},{0x1C5A,0x1C7D},{0x1C80,0x1C88},{0x1C90,0x1CBA},{0x1CBD,0x1CBF},
    {0x1CE9,0x1CEC},{0x1CEE,0x1CF3},{0x1CF5,0x1CF6},{0x1CFA,0x1CFA},{0x1D00,0x1DBF},{0x1E00,0x1F15},
    {0x1F18,0x1F1D},{0x1F20,0x1F45},{0x1F48,0x1F4D},{0x1F50,0x1F57},{0x1F59,0x1F59},{0x1F5B,0x1F5B},
    {0x1F5D,0x1F5D},{0x1F5F,0x1F7D},{0x1F80,0x1FB4},{0x1FB6,0x1FBC},{0x1FBE,0x1FBE},{0x1FC2,0x1FC4},
    {0x1FC6,0x1FCC},{0x1FD0,0x1FD3},{0x1FD6,0x1FDB},{0x1FE0,0x1FEC},{0x1FF2,0x1FF4},{0x1FF6,0x1FFC},
    {0x2071,0x2071},{0x207F,0x207F},{0x2090,0x209C},{0x2102,0x2102},{0x2107,0x2107},{0x210A,0x2113},
    {0x2115,0x2115},{0x2119,0x211D},{0x2124,0x2124},{0x2126,0x2126},{0x2128,0x2128},{0x212A,0x212D},
    {0x212F,0x2139},{0x213C,0x213F},{0x2145,0x2149},{0x214E,0x214E},{0x2183,0x2184},{0x2C00,0x2CE4},
    {0x2CEB,0x2CEE},{0x2CF2,0x2CF3},{0x2D00,0x2D25},{0x2D27,0x2D27},{0x2D2D,0x2D2D},{0x2D30,0x2D67},
    {0x2D6F,0x2D6F},{0x2D80,0x2D96},{0x2DA0,0x2DA6},{0x2DA8,0x2DAE},{0x2DB0,0x2DB6},{0x2DB8,0x2DBE},
    {0x2DC0,0x2DC6},{0x2DC8,0x2DCE},{0x2DD0,0x2DD6},{0x2DD8,0x2DDE},{0x2E2F,0x2E2F},{0x3005,0x3006},
    {0x3031,0x3035},{0x303B,0x303C},{0x3041,0x3096},{0x309D,0x309F},{0x30A1,0x30FA},{0x30FC,0x30FF},
    {0x3105,0x312F},{0x3131,0x318E},{0x31A0,0x31BF},{0x31F0,0x31FF},{0x3400,0x4DBF},{0x4E00,0xA48C},
    {0xA4D0,0xA4FD},{0xA500,0xA60C},{0xA610,0xA61F},{0xA62A,0xA62B},{0xA640,0xA66E},{0xA67F,0xA69D},
    {0xA6A0,0xA6E5},{0xA717,0xA71F},{0xA722,0xA788},{0xA78B,0xA7CA},{0xA7D0,0xA7D1},{0xA7D3,0xA7D3},
    {0xA7D5,0xA7D9},{0xA7F2,0xA801},{0xA803,0xA805},{0xA807,0xA80A},{0xA80C,0xA822},{0xA840,0xA873},
    {0xA882,0xA8B3},{0xA8F2,0xA8F7},{0xA8FB,0xA8FB},{0xA8FD,0xA8FE},{0xA90A,0xA925},{0xA930,0xA946},
    {0xA960,0xA97C},{0xA984,0xA9B2},{0xA9CF,0xA9CF},{0xA9E0,0xA9E4},{0xA9E6,0xA9EF},{0xA9FA,0xA9FE},
    {0xAA00,0xAA28},{0xAA40,0xAA42},{0xAA44,0xAA4B},{0xAA60,0xAA76},{0xAA7A,0xAA7A},{0xAA7E,0xAAAF},
    {0xAAB1,0xAAB1},{0xAAB5,0xAAB6},{0xAAB9,0xAABD},{0xAAC0,0xAAC0},{0xAAC2,0xAAC2},{0xAADB,0xAADD},
    {0xAAE0,0xAAEA},{0xAAF2,0xAAF4},{0xAB01,0xAB06},{0xAB09,0xAB0E},{0xAB11,0xAB16},{0xAB20,0xAB26},
    {0xAB28,0xAB2E},{0xAB30,0xAB5A},{0xAB5C,0xAB69},{0xAB70,0xABE2},{0xAC00,0xD7A3},{0xD7B0,0xD7C6},
    {0xD7CB,0xD7FB},{0xF900,0xFA6D},{0xFA70,0xFAD9},{0xFB00,0xFB06},{0xFB13,0xFB17},{0xFB1D,0xFB1D},
    {0xFB1F,0xFB28},{0xFB2A,0xFB36},{0xFB38,0xFB3C},{0xFB3E,0xFB3E},{0xFB40,0xFB41},{0xFB43,0xFB44},
    {0xFB46,0xFBB1},{0xFBD3,0xFD3D},{0xFD50,0xFD8F},{0xFD92,0xFDC7},{0xFDF0,0xFDFB},{0xFE70,0xFE74},
    {0xFE76,0xFEFC},{0xFF21,0xFF3A},{0xFF41,0xFF5A},{0xFF66,0xFFBE},{0xFFC2,0xFFC7},{0xFFCA,0xFFCF},
    {0xFFD2,0xFFD7},{0xFFDA,0xFFDC},{0x10000,0x1000B},{0x1000D,0x10026},{0x10028,0x1003A},{0x1003C,0x1003D},
    {0x1003F,0x1004D},{0x10050,0x1005D},{0x10080,0x100FA},{0x10280,0x1029C},{0x102A0,0x102D0},{0x10300,0x1031F},
    {0x1032D,0x10340},{0x10342,0x10349},{0x10350,0x10375},{0x10380,0x1039D},{0x103A0,0x103C3},{0x103C8,0x103CF},
    {0x10400,0x1049D},{0x104B0,0x104D3},{0x104D8,0x104FB},{0x10500,0x10527},{0x10530,0x10563},{0x10570,0x1057A},
    {0x1057C,0x1058A},{0x1058C,0x10592},{0x10594,0x10595},{0x10597,0x105A1},{0x105A3,0x105B1},{0x105B3,0x105B9},
    {0x105BB,0x105BC},{0x10600,0x10736},{0x10740,0x10755},{0x10760,0x10767},{0x10780,0x10785},{0x10787,0x107B0},
    {0x107B2,0x107BA},{0x10800,0x10805},{0x10808,0x10808},{0x1080A,0x10835},{0x10837,0x10838},{0x1083C,0x1083C},
    {0x1083F,0x10855},{0x10860,0x10876},{0x10880,0x1089E},{0x108E0,0x108F2},{0x108F4,0x108F5},{0x10900,0x10915},
    {0x10920,0x10939},{0x10980,0x109B7},{0x109BE,0x109BF},{0x10A00,0x10A00},{0x10A10,0x10A13},{0x10A15,0x10A17},
    {0x10A19,0x10A35},{0x10A60,0x10A7C},{0x10A80,0x10A9C},{0x10AC0,0x10AC7},{0x10AC9,0x10AE4},{0x10B00,0x10B35},
    {0x10B40,0x10B55},{0x10B60,0x10B72},{0x10B80,0x10B91},{0x10C00,0x10C48},{0x10C80,0x10CB2},{0x10CC0,0x10CF2},
    {0x10D00,0x10D23},{0x10E80,0x10EA9},{0x10EB0,0x10EB1},{0x10F00,0x10F1C},{0x10F27,0x10F27},{0x10F30,0x10F45},
    {0x10F70,0x10F81},{0x10FB0,0x10FC4},{0x10FE0,0x10FF6},{0x11003,0x11037},{0x11071,0x11072},{0x11075,0x11075},
    {0x11083,0x110AF},{0x110D0,0x110E8},{0x11103,0x11126},{0x11144,0x11144},{0x11147,0x11147},{0x11150,0x11172},
    {0x11176,0x11176},{0x11183,0x111B2},{0x111C1,0x111C4},{0x111DA,0x111DA},{0x111DC,0x111DC},{0x11200,0x11211},
    {0x11213,0x1122B},{0x1123F,0x11240},{0x11280,0x11286},{0x11288,0x11288},{0x1128A,0x1128D},{0x1128F,0x1129D},
    {0x1129F,0x112A8},{0x112B0,0x112DE},{0x11305,0x1130C},{0x1130F,0x11310},{0x11313,0x11328},{0x1132A,0x11330},
    {0x11332,0x11333},{0x11335,0x11339},{0x1133D,0x1133D},{0x11350,0x11350},{0x1135D,0x11361},{0x11400,0x11434},
    {0x11447,0x1144A},{0x1145F,0x11461},{0x11480,0x114AF},{0x114C4,0x114C5},{0x114C7,0x114C7},{0x11580,0x115AE},
    {0x115D8,0x115DB},{0x11600,0x1162F},{0x11644,0x11644},{0x11680,0x116AA},{0x116B8,0x116B8},{0x11700,0x1171A},
    {0x11740,0x11746},{0x11800,0x1182B},{0x118A0,0x118DF},{0x118FF,0x11906},{0x11909,0x11909},{0x1190C,0x11913},
    {0x11915,0x11916},{0x11918,0x1192F},{0x1193F,0x1193F},{0x11941,0x11941},{0x119A0,0x119A7},{0x119AA,0x119D0},
    {0x119E1,0x119E1},{0x119E3,0x119E3},{0x11A00,0x11A00},{0x11A0B,0x11A32},{0x11A3A,0x11A3A},{0x11A50,0x11A50},
    {0x11A5C,0x11A89},{0x11A9D,0x11A9D},{0x11AB0,0x11AF8},{0x11C00,0x11C08},{0x11C0A,0x11C2E},{0x11C40,0x11C40},
    {0x11C72,0x11C8F},{0x11D00,0x11D06},{0x11D08,0x11D09},{0x11D0B,0x11D30},{0x11D46,0x11D46},{0x11D60,0x11D65},
    {0x11D67,0x11D68},{0x11D6A,0x11D89},{0x11D98,0x11D98},{0x11EE0,0x11EF2},{0x11F02,0x11F02},{0x11F04,0x11F10},
    {0x11F12,0x11F33},{0x11FB0,0x11FB0},{0x12000,0x12399},{0x12480,0x12543},{0x12F90,0x12FF0},{0x13000,0x1342F},
    {0x13441,0x13446},{0x14400,0x14646},{0x16800,0x16A38},{0x16A40,0x16A5E},{0x16A70,0x16ABE},{0x16AD0,0x16AED},
    {0x16B00,0x16B2F},{0x16B40,0x16B43},{0x16B63,0x16B77},{0x16B7D,0x16B8F},{0x16E40,0x16E7F},{0x16F00,0x16F4A},
    {0x16F50,0x16F50},{0x16F93,0x16F9F},{0x16FE0,0x16FE1},{0x16FE3,0x16FE3},{0x17000,0x187F7},{0x18800,0x18CD5},
    {0x18D00,0x18D08},{0x1AFF0,0x1AFF3},{0x1AFF5,0x1AFFB},{0x1AFFD,0x1AFFE},{0x1B000,0x1B122},{0x1B132,0x1B132},
    {0x1B150,0x1B152},{0x1B155,0x1B155},{0x1B164,0x1B167},{0x1B170,0x1B2FB},{0x1BC00,0x1BC6A},{0x1BC70,0x1BC7C},
    {0x1BC80,0x1BC88},{0x1BC90,0x1BC99},{0x1D400,0x1D454},{0x1D456,0x1D49C},{0x1D49E,0x1D49F},{0x1D4A2,0x1D4A2},
    {0x1D4A5,0x1D4A6},{0x1D4A9,0x1D4AC},{0x1D4AE,0x1D4B9},{0x1D4BB,0x1D4BB},{0x1D4BD,0x1D4C3},{0x1D4C5,0x1D505},
    {0x1D507,0x1D50A},{0x1D50D,0x1D514},{0x1D516,0x1D51C},{0x1D51E,0x1D539},{0x1D53B,0x1D53E},{0x1D540,0x1D544},
    {0x1D546,0x1D546},{0x1D54A,0x1D550},{0x1D552,0x1D6A5},{0x1D6A8,0x1D6C0},{0x1D6C2,0x1D6DA},{0x1D6DC,0x1D6FA},
    {0x1D6FC,0x1D714},{0x1D716,0x1D734},{0x1D736,0x1D74E},{0x1D750,0x1D76E},{0x1D770,0x1D788},{0x1D78A,0x1D7A8},
    {0x1D7AA,0x1D7C2},{0x1D7C4,0x1D7CB},{0x1DF00,0x1DF1E},{0x1DF25,0x1DF2A},{0x1E030,0x1E06D},{0x1E100,0x1E12C},
    {0x1E137,0x1E13D},{0x1E14E,0x1E14E},{0x1E290,0x1E2AD},{0x1E2C0,0x1E2EB},{0x1E4D0,0x1E4EB},{0x1E7E0,0x1E7E6},
    {0x1E7E8,0x1E7EB},{0x1E7ED,0x1E7EE},{0x1E7F0,0x1E7FE},{0x1E800,0x1E8C4},{0x1E900,0x1E943},{0x1E94B,0x1E94B},
    {0x1EE00,0x1EE03},{0x1EE05,0x1EE1F},{0x1EE21,0x1EE22},{0x1EE24,0x1EE24},{0x1EE27,0x1EE27},{0x1EE29,0x1EE32},
    {0x1EE34,0x1EE37},{0x1EE39,0x1EE39},{0x1EE3B,0x1EE3B},{0x1EE42,0x1EE42},{0x1EE47,0x1EE47},{0x1EE49,0x1EE49},
    {0x1EE4B,0x1EE4B},{0x1EE4D,0x1EE4F},{0x1EE51,0x1EE52},{0x1EE54,0x1EE54},{0x1EE57,0x1EE57},{0x1EE59,0x1EE59},
    {0x1EE5B,0x1EE5B},{0x1EE5D,0x1EE5D},{0x1EE5F,0x1EE5F},{0x1EE61,0x1EE62},{0x1EE64,0x1EE64},{0x1EE67,0x1EE6A},
    {0x1EE6C,0x1EE72},{0x1EE74,0x1EE77},{0x1EE79,0x1EE7C},{0x1EE7E,0x1EE7E},{0x1EE80,0x1EE89},{0x1EE8B,0x1EE9B},
    {0x1EEA1,0x1EEA3},{0x1EEA5,0x1EEA9},{0x1EEAB,0x1EEBB},{0x20000,0x2A6DF},{0x2A700,0x2B739},{0x2B740,0x2B81D},
    {0x2B820,0x2CEA1},{0x2CEB0,0x2EBE0},{0x2F800,0x2FA1D},{0x30000,0x3134A},{0x31350,0x323AF},
};
static const uint32_t UNICODE_NUMBERS[][2] = { /* 137 ranges */
    {0x30,0x39},{0xB2,0xB3},{0xB9,0xB9},{0xBC,0xBE},{0x660,0x669},{0x6F0,0x6F9},
    {0x7C0,0x7C9},{0x966,0x96F},{0x9E6,0x9EF},{0x9F4,0x9F9},{0xA66,0xA6F},{0xAE6,0xAEF},
    {0xB66,0xB6F},{0xB72,0xB77},{0xBE6,0xBF2},{0xC66,0xC6F},{0xC78,0xC7E},{0xCE6,0xCEF},
    {0xD58,0xD5E},{0xD66,0xD78},{0xDE6,0xDEF},{0xE50,0xE59},{0xED0,0xED9},{0xF20,0xF33},
    {0x1040,0x1049},{0x1090,0x1099},{0x1369,0x137C},{0x16EE,0x16F0},{0x17E0,0x17E9},{0x17F0,0x17F9},
    {0x1810,0x1819},{0x1946,0x194F},{0x19D0,0x19DA},{0x1A80,0x1A89},{0x1A90,0x1A99},{0x1B50,0x1B59},
    {0x1BB0,0x1BB9},{0x1C40,0x1C49},{0x1C50,0x1C59},{0x2070,0x2070},{0x2074,0x2079},{0x2080,0x2089},
    {0x2150,0x2182},{0x2185,0x2189},{0x2460,0x249B},{0x24EA,0x24FF},{0x2776,0x2793},{0x2CFD,0x2CFD},
    {0x3007,0x3007},{0x3021,0x3029},{0x3038,0x303A},{0x3192,0x3195},{0x3220,0x3229},{0x3248,0x324F},
    {0x3251,0x325F},{0x3280,0x3289},{0x32B1,0x32BF},{0xA620,0xA629},{0xA6E6,0xA6EF},{0xA830,0xA835},
    {0xA8D0,0xA8D9},{0xA900,0xA909},{0xA9D0,0xA9D9},{0xA9F0,0xA9F9},{0xAA50,0xAA59},{0xABF0,0xABF9},
    {0xFF10,0xFF19},{0x10107,0x10133},{0x10140,0x10178},{0x1018A,0x1018B},{0x102E1,0x102FB},{0x10320,0x10323},
    {0x10341,0x10341},{0x1034A,0x1034A},{0x103D1,0x103D5},{0x104A0,0x104A9},{0x10858,0x1085F},{0x10879,0x1087F},
    {0x108A7,0x108AF},{0x108FB,0x108FF},{0x10916,0x1091B},{0x109BC,0x109BD},{0x109C0,0x109CF},{0x109D2,0x109FF},
    {0x10A40,0x10A48},{0x10A7D,0x10A7E},{0x10A9D,0x10A9F},{0x10AEB,0x10AEF},{0x10B58,0x10B5F},{0x10B78,0x10B7F},
    {0x10BA9,0x10BAF},{0x10CFA,0x10CFF},{0x10D30,0x10D39},{0x10E60,0x10E7E},{0x10F1D,0x10F26},{0x10F51,0x10F54},
    {0x10FC5,0x10FCB},{0x11052,0x1106F},{0x110F0,0x110F9},{0x11136,0x1113F},{0x111D0,0x111D9},{0x111E1,0x111F4},
    {0x112F0,0x112F9},{0x11450,0x11459},{0x114D0,0x114D9},{0x11650,0x11659},{0x116C0,0x116C9},{0x11730,0x1173B},
    {0x118E0,0x118F2},{0x11950,0x11959},{0x11C50,0x11C6C},{0x11D50,0x11D59},{0x11DA0,0x11DA9},{0x11F50,0x11F59},
    {0x11FC0,0x11FD4},{0x12400,0x1246E},{0x16A60,0x16A69},{0x16AC0,0x16AC9},{0x16B50,0x16B59},{0x16B5B,0x16B61},
    {0x16E80,0x16E96},{0x1D2C0,0x1D2D3},{0x1D2E0,0x1D2F3},{0x1D360,0x1D378},{0x1D7CE,0x1D7FF},{0x1E140,0x1E149},
    {0x1E2F0,0x1E2F9},{0x1E4F0,0x1E4F9},{0x1E8C7,0x1E8CF},{0x1E950,0x1E959},{0x1EC71,0x1ECAB},{0x1ECAD,0x1ECAF},
    {0x1ECB1,0x1ECB4},{0x1ED01,0x1ED2D},{0x1ED2F,0x1ED3D},{0x1F100,0x1F10C},{0x1FBF0,0x1FBF9},
};
static const uint32_t UNICODE_LOWER[][2] = { /* 658 ranges */
    {0x61,0x7A},{0xB5,0xB5},{0xDF,0xF6},{0xF8,0xFF},{0x101,0x101},{0x103,0x103},
    {0x105,0x105},{0x107,0x107},{0x109,0x109},{0x10B,0x10B},{0x10D,0x10D},{0x10F,0x10F},
    {0x111,0x111},{0x113,0x113},{0x115,0x115},{0x117,0x117},{0x119,0x119},{0x11B,0x11B},
    {0x11D,0x11D},{0x11F,0x11F},{0x121,0x121},{0x123,0x123},{0x125,0x125},{0x127,0x127},
    {0x129,0x129},{0x12B,0x12B},{0x12D,0x12D},{0x12F,0x12F},{0x131,0x131},{0x133,0x133},
    {0x135,0x135},{0x137,0x138},{0x13A,0x13A},{0x13C,0x13C},{0x13E,0x13E},{0x140,0x140},
    {0x142,0x142},{0x144,0x144},{0x146,0x146},{0x148,0x149},{0x14B,0x14B},{0x14D,0x14D},
    {0x14F,0x14F},{0x151,0x151},{0x153,0x153},{0x155,0x155},{0x157,0x157},{0x159,0x159},
    {0x15B,0x15B},{0x15D,0x15D},{0x15F,0x15F},{0x161,0x161},{0x163,0x163},{0x165,0x165},
    {0x167,0x167},{0x169,0x169},{0x16B,0x16B},{0x16D,0x16D},{0x16F,0x16F},{0x171,0x171},
    {0x173,0x173},{0x175,0x175},{0x177,0x177},{0x17A,0x17A},{0x17C,0x17C},{0x17E,0x180},
    {0x183,0x183},{0x185,0x185},{0x188,0x188},{0x18C,0x18D},{0x192,0x192},{0x195,0x195},
    {0x199,0x19B},{0x19E,0x19E},{0x1A1,0x1A1},{0x1A3,0x1A3},{0x1A5,0x1A5},{0x1A8,0x1A8},
    {0x1AA,0x1AB},{0x1AD,0x1AD},{0x1B0,0x1B0},{0x1B4,0x1B4},{0x1B6,0x1B6},{0x1B9,0x1BA},
    {0x1BD,0x1BF},{0x1C6,0x1C6},{0x1C9,0x1C9},{0x1CC,0x1CC},{0x1CE,0x1CE},{0x1D0,0x1D0},
    {0x1D2,0x1D2},{0x1D4,0x1D4},{0x1D6,0x1D6},{0x1D8,0x1D8},{0x1DA,0x1DA},{0x1DC,0x1DD},
    {0x1DF,0x1DF},{0x1E1,0x1E1},{0x1E3,0x1E3},{0x1E5,0x1E5},{0x1E7,0x1E7},{0x1E9,0x1E9},
    {0x1EB,0x1EB},{0x1ED,0x1ED},{0x1EF,0x1F0},{0x1F3,0x1F3},{0x1F5,0x1F5},{0x1F9,0x1F9},
    {0x1FB,0x1FB},{0x1FD,0x1FD},{0x1FF,0x1FF},{0x201,0x201},{0x203,0x203},{0x205,0x205},
    {0x207,0x207},{0x209,0x209},{0x20B,0x20B},{0x20D,0x20D},{0x20F,0x20F},{0x211,0x211},
    {0x213,0x213},{0x215,0x215},{0x217,0x217},{0x219,0x219},{0x21B,0x21B},{0x21D,0x21D},
    {0x21F,0x21F},{0x221,0x221},{0x223,0x223},{0x225,0x225},{0x227,0x227},{0x229,0x229},
    {0x22B,0x22B},{0x22D,0x22D},{0x22F,0x22F},{0x231,0x231},{0x233,0x239},{0x23C,0x23C},
    {0x23F,0x240},{0x242,0x242},{0x247,0x247},{0x249,0x249},{0x24B,0x24B},{0x24D,0x24D},
    {0x24F,0x293},{0x295,0x2AF},{0x371,0x371},{0x373,0x373},{0x377,0x377},{0x37B,0x37D},
    {0x390,0x390},{0x3AC,0x3CE},{0x3D0,0x3D1},{0x3D5,0x3D7},{0x3D9,0x3D9},{0x3DB,0x3DB},
    {0x3DD,0x3DD},{0x3DF,0x3DF},{0x3E1,0x3E1},{0x3E3,0x3E3},{0x3E5,0x3E5},{0x3E7,0x3E7},
    {0x3E9,0x3E9},{0x3EB,0x3EB},{0x3ED,0x3ED},{0x3EF,0x3F3},{0x3F5,0x3F5},{0x3F8,0x3F8},
    {0x3FB,0x3FC},{0x430,0x45F},{0x461,0x461},{0x463,0x463},{0x465,0x465},{0x467,0x467},
    {0x469,0x469},{0x46B,0x46B},{0x46D,0x46D},{0x46F,0x46F},{0x471,0x471},{0x473,0x473},
    {0x475,0x475},{0x477,0x477},{0x479,0x479},{0x47B,0x47B},{0x47D,0x47D},{0x47F,0x47F},
    {0x481,0x481},{0x48B,0x48B},{0x48D,0x48D},{0x48F,0x48F},{0x491,0x491},{0x493,0x493},
    {0x495,0x495},{0x497,0x497},{0x499,0x499},{0x49B,0x49B},{0x49D,0x49D},{0x49F,0x49F},
    {0x4A1,0x4A1},{0x4A3,0x4A3},{0x4A5,0x4A5},{0x4A7,0x4A7},{0x4A9,0x4A9},{0x4AB,0x4AB},
    {0x4AD,0x4AD},{0x4AF,0x4AF},{0x4B1,0x4B1},{0x4B3,0x4B3},{0x4B5,0x4B5},{0x4B7,0x4B7},
    {0x4B9,0x4B9},{0x4BB,0x4BB},{0x4BD,0x4BD},{0x4BF,0x4BF},{0x4C2,0x4C2},{0x4C4,0x4C4},
    {0x4C6,0x4C6},{0x4C8,0x4C8},{0x4CA,0x4CA},{0x4CC,0x4CC},{0x4CE,0x4CF},{0x4D1,0x4D1},
    {0x4D3,0x4D3},{0x4D5,0x4D5},{0x4D7,0x4D7},{0x4D9,0x4D9},{0x4DB,0x4DB},{0x4DD,0x4DD},
    {0x4DF,0x4DF},{0x4E1,0x4E1},{0x4E3,0x4E3},{0x4E5,0x4E5},{0x4E7,0x4E7},{0x4E9,0x4E9},
    {0x4EB,0x4EB},{0x4ED,0x4ED},{0x4EF,0x4EF},{0x4F1,0x4F1},{0x4F3,0x4F3},{0x4F5,0x4F5},
    {0x4F7,0x4F7},{0x4F9,0x4F9},{0x4FB,0x4FB},{0x4FD,0x4FD},{0x4FF,0x4FF},{0x501,0x501},
    {0x503,0x503},{0x505,0x505},{0x507,0x507},{0x509,0x509},{0x50B,0x50B},{0x50D,0x50D},
    {0x50F,0x50F},{0x511,0x511},{0x513,0x513},{0x515,0x515},{0x517,0x517},{0x519,0x519},
    {0x51B,0x51B},{0x51D,0x51D},{0x51F,0x51F},{0x521,0x521},{0x523,0x523},{0x525,0x525},
    {0x527,0x527},{0x529,0x529},{0x52B,0x52B},{0x52D,0x52D},{0x52F,0x52F},{0x560,0x588},
    {0x10D0,0x10FA},{0x10FD,0x10FF},{0x13F8,0x13FD},{0x1C80,0x1C88},{0x1D00,0x1D2B},{0x1D6B,0x1D77},
    {0x1D79,0x1D9A},{0x1E01,0x1E01},{0x1E03,0x1E03},{0x1E05,0x1E05},{0x1E07,0x1E07},{0x1E09,0x1E09},
    {0x1E0B,0x1E0B},{0x1E0D,0x1E0D},{0x1E0F,0x1E0F},{0x1E11,0x1E11},{0x1E13,0x1E13},{0x1E15,0x1E15},
    {0x1E17,0x1E17},{0x1E19,0x1E19},{0x1E1B,0x1E1B},{0x1E1D,0x1E1D},{0x1E1F,0x1E1F},{0x1E21,0x1E21},
    {0x1E23,0x1E23},{0x1E25,0x1E25},{0x1E27,0x1E27},{0x1E29,0x1E29},{0x1E2B,0x1E2B},{0x1E2D,0x1E2D},
    {0x1E2F,0x1E2F},{0x1E31,0x1E31},{0x1E33,0x1E33},{0x1E35,0x1E35},{0x1E37,0x1E37},{0x1E39,0x1E39},
    {0x1E3B,0x1E3B},{0x1E3D,0x1E3D},{0x1E3F,0x1E3F},{0x1E41,0x1E41},{0x1E43,0x1E43},{0x1E45,0x1E45},
    {0x1E47,0x1E47},{0x1E49,0x1E49},{0x1E4B,0x1E4B},{0x1E4D,0x1E4D},{0x1E4F,0x1E4F},{0x1E51,0x1E51},
    {0x1E53,0x1E53},{0x1E55,0x1E55},{0x1E57,0x1E57},{0x1E59,0x1E59},{0x1E5B,0x1E5B},{0x1E5D,0x1E5D},
    {0x1E5F,0x1E5F},{0x1E61,0x1E61},{0x1E63,0x1E63},{0x1E65,0x1E65},{0x1E67,0x1E67},{0x1E69,0x1E69},
    {0x1E6B,0x1E6B},{0x1E6D,0x1E6D},{0x1E6F,0x1E6F},{0x1E71,0x1E71},{0x1E73,0x1E73},{0x1E75,0x1E75},
    {0x1E77,0x1E77},{0x1E79,0x1E79},{0x1E7B,0x1E7B},{0x1E7D,0x1E7D},{0x1E7F,0x1E7F},{0x1E81,0x1E81},
    {0x1E83,0x1E83},{0x1E85,0x1E85},{0x1E87,0x1E87},{0x1E89,0x1E89},{0x1E8B,0x1E8B},{0x1E8D,0x1E8D},
    {0x1E8F,0x1E8F},{0x1E91,0x1E91},{0x1E93,0x1E93},{0x1E95,0x1E9D},{0x1E9F,0x1E9F},{0x1EA1,0x1EA1},
    {0x1EA3,0x1EA3},{0x1EA5,0x1EA5},{0x1EA7,0x1EA7},{0x1EA9,0x1EA9},{0x1EAB,0x1EAB},{0x1EAD,0x1EAD},
    {0x1EAF,0x1EAF},{0x1EB1,0x1EB1},{0x1EB3,0x1EB3},{0x1EB5,0x1EB5},{0x1EB7,0x1EB7},{0x1EB9,0x1EB9},
    {0x1EBB,0x1EBB},{0x1EBD,0x1EBD},{0x1EBF,0x1EBF},{0x1EC1,0x1EC1},{0x1EC3,0x1EC3},{0x1EC5,0x1EC5},
    {0x1EC7,0x1EC7},{0x1EC9,0x1EC9},{0x1ECB,0x1ECB},{0x1ECD,0x1ECD},{0x1ECF,0x1ECF},{0x1ED1,0x1ED1},
    {0x1ED3,0x1ED3},{0x1ED5,0x1ED5},{0x1ED7,0x1ED7},{0x1ED9,0x1ED9},{0x1EDB,0x1EDB},{0x1EDD,0x1EDD},
    {0x1EDF,0x1EDF},{0x1EE1,0x1EE1},{0x1EE3,0x1EE3},{0x1EE5,0x1EE5},{0x1EE7,0x1EE7},{0x1EE9,0x1EE9},
    {0x1EEB,0x1EEB},{0x1EED,0x1EED},{0x1EEF,0x1EEF},{0x1EF1,0x1EF1},{0x1EF3,0x1EF3},{0x1EF5,0x1EF5},
    {0x1EF7,0x1EF7},{0x1EF9,0x1EF9},{0x1EFB,0x1EFB},{0x1EFD,0x1EFD},{0x1EFF,0x1F07},{0x1F10,0x1F15},
    {0x1F20,0x1F27},{0x1F30,0x1F37},{0x1F40,0x1F45},{0x1F50,0x1F57},{0x1F60,0x1F67},{0x1F70,0x1F7D},
    {0x1F80,0x1F87},{0x1F90,0x1F97},{0x1FA0,0x1FA7},{0x1FB0,0x1FB4},{0x1FB6,0x1FB7},{0x1FBE,0x1FBE},
    {0x1FC2,0x1FC4},{0x1FC6,0x1FC7},{0x1FD0,0x1FD3},{0x1FD6,0x1FD7},{0x1FE0,0x1FE7},{0x1FF2,0x1FF4},
    {0x1FF6,0x1FF7},{0x210A,0x210A},{0x210E,0x210F},{0x2113,0x2113},{0x212F,0x212F},{0x2134,0x2134},
    {0x2139,0x2139},{0x213C,0x213D},{0x2146,0x2149},{0x214E,0x214E},{0x2184,0x2184},{0x2C30,0x2C5F},
    {0x2C61,0x2C61},{0x2C65,0x2C66},{0x2C68,0x2C68},{0x2C6A,0x2C6A},{0x2C6C,0x2C6C},{0x2C71,0x2C71},
    {0x2C73,0x2C74},{0x2C76,0x2C7B},{0x2C81,0x2C81},{0x2C83,0x2C83},{0x2C85,0x2C85},{0x2C87,0x2C87},
    {0x2C89,0x2C89},{0x2C8B,0x2C8B},{0x2C8D,0x2C8D},{0x2C8F,0x2C8F},{0x2C91,0x2C91},{0x2C93,0x2C93},
    {0x2C95,0x2C95},{0x2C97,0x2C97},{0x2C99,0x2C99},{0x2C9B,0x2C9B},{0x2C9D,0x2C9D},{0x2C9F,0x2C9F},
    {0x2CA1,0x2CA1},{0x2CA3,0x2CA3},{0x2CA5,0x2CA5},{0x2CA7,0x2CA7},{0x2CA9,0x2CA9},{0x2CAB,0x2CAB},
    {0x2CAD,0x2CAD},{0x2CAF,0x2CAF},{0x2CB1,0x2CB1},{0x2CB3,0x2CB3},{0x2CB5,0x2CB5},{0x2CB7,0x2CB7},
    {0x2CB9,0x2CB9},{0x2CBB,0x2CBB},{0x2CBD,0x2CBD},{0x2CBF,0x2CBF},{0x2CC1,0x2CC1},{0x2CC3,0x2CC3},
    {0x2CC5,0x2CC5},{0x2CC7,0x2CC7},{0x2CC9,0x2CC9},{0x2CCB,0x2CCB},{0x2CCD,0x2CCD},{0x2CCF,0x2CCF},
    {0x2CD1,0x2CD1},{0x2CD3,0x2CD3},{0x2CD5,0x2CD5},{0x2CD7,0x2CD7},{0x2CD9,0x2CD9},{0x2CDB,0x2CDB},
    {0x2CDD,0x2CDD},{0x2CDF,0x2CDF},{0x2CE1,0x2CE1},{0x2CE3,0x2CE4},{0x2CEC,0x2CEC},{0x2CEE,0x2CEE},
    {0x2CF3,0x2CF3},{0x2D00,0x2D25},{0x2D27,0x2D27},{0x2D2D,0x2D2D},{0xA641,0xA641},{0xA643,0xA643},
    {0xA645,0xA645},{0xA647,0xA647},{0xA649,0xA649},{0xA64B,0xA64B},{0xA64D,0xA64D},{0xA64F,0xA64F},
    {0xA651,0xA651},{0xA653,0xA653},{0xA655,0xA655},{0xA657,0xA657},{0xA659,0xA659},{0xA65B,0xA65B},
    {0xA65D,0xA65D},{0xA65F,0xA65F},{0xA661,0xA661},{0xA663,0xA663},{0xA665,0xA665},{0xA667,0xA667},
    {0xA669,0xA669},{0xA66B,0xA66B},{0xA66D,0xA66D},{0xA681,0xA681},{0xA683,0xA683},{0xA685,0xA685},
    {0xA687,0xA687},{0xA689,0xA689},{0xA68B,0xA68B},{0xA68D,0xA68D},{0xA68F,0xA68F},{0xA691,0xA691},
    {0xA693,0xA693},{0xA695,0xA695},{0xA697,0xA697},{0xA699,0xA699},{0xA69B,0xA69B},{0xA723,0xA723},
    {0xA725,0xA725},{0xA727,0xA727},{0xA729,0xA729},{0xA72B,0xA72B},{0xA72D,0xA72D},{0xA72F,0xA731},
    {0xA733,0xA733},{0xA735,0xA735},{0xA737,0xA737},{0xA739,0xA739},{0xA73B,0xA73B},{0xA73D,0xA73D},
    {0xA73F,0xA73F},{0xA741,0xA741},{0xA743,0xA743},{0xA745,0xA745},{0xA747,0xA747},{0xA749,0xA749},
    {0xA74B,0xA74B},{0xA74D,0xA74D},{0xA74F,0xA74F},{0xA751,0xA751},{0xA753,0xA753},{0xA755,0xA755},
    {0xA757,0xA757},{0xA759,0xA759},{0xA75B,0xA75B},{0xA75D,0xA75D},{0xA75F,0xA75F},{0xA761,0xA761},
    {0xA763,0xA763},{0xA765,0xA765},{0xA767,0xA767},{0xA769,0xA769},{0xA76B,0xA76B},{0xA76D,0xA76D},
    {0xA76F,0xA76F},{0xA771,0xA778},{0xA77A,0xA77A},{0xA77C,0xA77C},{0xA77F,0xA77F},{0xA781,0xA781},
    {0xA783,0xA783},{0xA785,0xA785},{0xA787,0xA787},{0xA78C,0xA78C},{0xA78E,0xA78E},{0xA791,0xA791},
    {0xA793,0xA795},{0xA797,0xA797},{0xA799,0xA799},{0xA79B,0xA79B},{0xA79D,0xA79D},{0xA79F,0xA79F},
    {0xA7A1,0xA7A1},{0xA7A3,0xA7A3},{0xA7A5,0xA7A5},{0xA7A7,0xA7A7},{0xA7A9,0xA7A9},{0xA7AF,0xA7AF},
    {0xA7B5,0xA7B5},{0xA7B7,0xA7B7},{0xA7B9,0xA7B9},{0xA7BB,0xA7BB},{0xA7BD,0xA7BD},{0xA7BF,0xA7BF},
    {0xA7C1,0xA7C1},{0xA7C3,0xA7C3},{0xA7C8,0xA7C8},{0xA7CA,0xA7CA},{0xA7D1,0xA7D1},{0xA7D3,0xA7D3},
    {0xA7D5,0xA7D5},{0xA7D7,0xA7D7},{0xA7D9,0xA7D9},{0xA7F6,0xA7F6},{0xA7FA,0xA7FA},{0xAB30,0xAB5A},
    {0xAB60,0xAB68},{0xAB70,0xABBF},{0xFB00,0xFB06},{0xFB13,0xFB17},{0xFF41,0xFF5A},{0x10428,0x1044F},
    {0x104D8,0x104FB},{0x10597,0x105A1},{0x105A3,0x105B1},{0x105B3,0x105B9},{0x105BB,0x105BC},{0x10CC0,0x10CF2},
    {0x118C0,0x118DF},{0x16E60,0x16E7F},{0x1D41A,0x1D433},{0x1D44E,0x1D454},{0x1D456,0x1D467},{0x1D482,0x1D49B},
    {0x1D4B6,0x1D4B9},{0x1D4BB,0x1D4BB},{0x1D4BD,0x1D4C3},{0x1D4C5,0x1D4CF},{0x1D4EA,0x1D503},{0x1D51E,0x1D537},
    {0x1D552,0x1D56B},{0x1D586,0x1D59F},{0x1D5BA,0x1D5D3},{0x1D5EE,0x1D607},{0x1D622,0x1D63B},{0x1D656,0x1D66F},
    {0x1D68A,0x1D6A5},{0x1D6C2,0x1D6DA},{0x1D6DC,0x1D6E1},{0x1D6FC,0x1D714},{0x1D716,0x1D71B},{0x1D736,0x1D74E},
    {0x1D750,0x1D755},{0x1D770,0x1D788},{0x1D78A,0x1D78F},{0x1D7AA,0x1D7C2},{0x1D7C4,0x1D7C9},{0x1D7CB,0x1D7CB},
    {0x1DF00,0x1DF09},{0x1DF0B,0x1DF1E},{0x1DF25,0x1DF2A},{0x1E922,0x1E943},
};
static const uint32_t UNICODE_UPPER[][2] = { /* 649 ranges */
    {0x41,0x5A},{0xC0,0xD6},{0xD8,0xDE},{0x100,0x100},{0x102,0x102},{0x104,0x104},
    {0x106,0x106},{0x108,0x108},{0x10A,0x10A},{0x10C,0x10C},{0x10E,0x10E},{0x110,0x110},
    {0x112,0x112},{0x114,0x114},{0x116,0x116},{0x118,0x118},{0x11A,0x11A},{0x11C,0x11C},
    {0x11E,0x11E},{0x120,0x120},{0x122,0x122},{0x124,0x124},{0x126,0x126},{0x128,0x128},
    {0x12A,0x12A},{0x12C,0x12C},{0x12E,0x12E},{0x130,0x130},{0x132,0x132},{0x134,0x134},
    {0x136,0x136},{0x139,0x139},{0x13B,0x13B},{0x13D,0x13D},{0x13F,0x13F},{0x141,0x141},
    {0x143,0x143},{0x145,0x145},{0x147,0x147},{0x14A,0x14A},{0x14C,0x14C},{0x14E,0x14E},
    {0x150,0x150},{0x152,0x152},{0x154,0x154},{0x156,0x156},{0x158,0x158},{0x15A,0x15A},
    {0x15C,0x15C},{0x15E,0x15E},{0x160,0x160},{0x162,0x162},{0x164,0x164},{0x166,0x166},
    {0x168,0x168},{0x16A,0x16A},{0x16C,0x16C},{0x16E,0x16E},{0x170,0x170},{0x172,0x172},
    {0x174,0x174},{0x176,0x176},{0x178,0x179},{0x17B,0x17B},{0x17D,0x17D},{0x181,0x182},
    {0x184,0x184},{0x186,0x187},{0x189,0x18B},{0x18E,0x191},{0x193,0x194},{0x196,0x198},
    {0x19C,0x19D},{0x19F,0x1A0},{0x1A2,0x1A2},{0x1A4,0x1A4},{0x1A6,0x1A7},{0x1A9,0x1A9},
    {0x1AC,0x1AC},{0x1AE,0x1AF},{0x1B1,0x1B3},{0x1B5,0x1B5},{0x1B7,0x1B8},{0x1BC,0x1BC},
    {0x1C4,0x1C5},{0x1C7,0x1C8},{0x1CA,0x1CB},{0x1CD,0x1CD},{0x1CF,0x1CF},{0x1D1,0x1D1},
    {0x1D3,0x1D3},{0x1D5,0x1D5},{0x1D7,0x1D7},{0x1D9,0x1D9},{0x1DB,0x1DB},{0x1DE,0x1DE},
    {0x1E0,0x1E0},{0x1E2,0x1E2},{0x1E4,0x1E4},{0x1E6,0x1E6},{0x1E8,0x1E8},{0x1EA,0x1EA},
    {0x1EC,0x1EC},{0x1EE,0x1EE},{0x1F1,0x1F2},{0x1F4,0x1F4},{0x1F6,0x1F8},{0x1FA,0x1FA},
    {0x1FC,0x1FC},{0x1FE,0x1FE},{0x200,0x200},{0x202,0x202},{0x204,0x204},{0x206,0x206},
    {0x208,0x208},{0x20A,0x20A},{0x20C,0x20C},{0x20E,0x20E},{0x210,0x210},{0x212,0x212},
    {0x214,0x214},{0x216,0x216},{0x218,0x218},{0x21A,0x21A},{0x21C,0x21C},{0x21E,0x21E},
    {0x220,0x220},{0x222,0x222},{0x224,0x224},{0x226,0x226},{0x228,0x228},{0x22A,0x22A},
    {0x22C,0x22C},{0x22E,0x22E},{0x230,0x230},{0x232,0x232},{0x23A,0x23B},{0x23D,0x23E},
    {0x241,0x241},{0x243,0x246},{0x248,0x248},{0x24A,0x24A},{0x24C,0x24C},{0x24E,0x24E},
    {0x370,0x370},{0x372,0x372},{0x376,0x376},{0x37F,0x37F},{0x386,0x386},{0x388,0x38A},
    {0x38C,0x38C},{0x38E,0x38F},{0x391,0x3A1},{0x3A3,0x3AB},{0x3CF,0x3CF},{0x3D2,0x3D4},
    {0x3D8,0x3D8},{0x3DA,0x3DA},{0x3DC,0x3DC},{0x3DE,0x3DE},{0x3E0,0x3E0},{0x3E2,0x3E2},
    {0x3E4,0x3E4},{0x3E6,0x3E6},{0x3E8,0x3E8},{0x3EA,0x3EA},{0x3EC,0x3EC},{0x3EE,0x3EE},
    {0x3F4,0x3F4},{0x3F7,0x3F7},{0x3F9,0x3FA},{0x3FD,0x42F},{0x460,0x460},{0x462,0x462},
    {0x464,0x464},{0x466,0x466},{0x468,0x468},{0x46A,0x46A},{0x46C,0x46C},{0x46E,0x46E},
    {0x470,0x470},{0x472,0x472},{0x474,0x474},{0x476,0x476},{0x478,0x478},{0x47A,0x47A},
    {0x47C,0x47C},{0x47E,0x47E},{0x480,0x480},{0x48A,0x48A},{0x48C,0x48C},{0x48E,0x48E},
    {0x490,0x490},{0x492,0x492},{0x494,0x494},{0x496,0x496},{0x498,0x498},{0x49A,0x49A},
    {0x49C,0x49C},{0x49E,0x49E},{0x4A0,0x4A0},{0x4A2,0x4A2},{0x4A4,0x4A4},{0x4A6,0x4A6},
    {0x4A8,0x4A8},{0x4AA,0x4AA},{0x4AC,0x4AC},{0x4AE,0x4AE},{0x4B0,0x4B0},{0x4B2,0x4B2},
    {0x4B4,0x4B4},{0x4B6,0x4B6},{0x4B8,0x4B8},{0x4BA,0x4BA},{0x4BC,0x4BC},{0x4BE,0x4BE},
    {0x4C0,0x4C1},{0x4C3,0x4C3},{0x4C5,0x4C5},{0x4C7,0x4C7},{0x4C9,0x4C9},{0x4CB,0x4CB},
    {0x4CD,0x4CD},{0x4D0,0x4D0},{0x4D2,0x4D2},{0x4D4,0x4D4},{0x4D6,0x4D6},{0x4D8,0x4D8},
    {0x4DA,0x4DA},{0x4DC,0x4DC},{0x4DE,0x4DE},{0x4E0,0x4E0},{0x4E2,0x4E2},{0x4E4,0x4E4},
    {0x4E6,0x4E6},{0x4E8,0x4E8},{0x4EA,0x4EA},{0x4EC,0x4EC},{0x4EE,0x4EE},{0x4F0,0x4F0},
    {0x4F2,0x4F2},{0x4F4,0x4F4},{0x4F6,0x4F6},{0x4F8,0x4F8},{0x4FA,0x4FA},{0x4FC,0x4FC},
    {0x4FE,0x4FE},{0x500,0x500},{0x502,0x502},{0x504,0x504},{0x506,0x506},{0x508,0x508},
    {0x50A,0x50A},{0x50C,0x50C},{0x50E,0x50E},{0x510,0x510},{0x512,0x512},{0x514,0x514},
    {0x516,0x516},{0x518,0x518},{0x51A,0x51A},{0x51C,0x51C},{0x51E,0x51E},{0x520,0x520},
    {0x522,0x522},{0x524,0x524},{0x526,0x526},{0x528,0x528},{0x52A,0x52A},{0x52C,0x52C},
    {0x52E,0x52E},{0x531,0x556},{0x10A0,0x10C5},{0x10C7,0x10C7},{0x10CD,0x10CD},{0x13A0,0x13F5},
    {0x1C90,0x1CBA},{0x1CBD,0x1CBF},{0x1E00,0x1E00},{0x1E02,0x1E02},{0x1E04,0x1E04},{0x1E06,0x1E06},
    {0x1E08,0x1E08},{0x1E0A,0x1E0A},{0x1E0C,0x1E0C},{0x1E0E,0x1E0E},{0x1E10,0x1E10},{0x1E12,0x1E12},
    {0x1E14,0x1E14},{0x1E16,0x1E16},{0x1E18,0x1E18},{0x1E1A,0x1E1A},{0x1E1C,0x1E1C},{0x1E1E,0x1E1E},
    {0x1E20,0x1E20},{0x1E22,0x1E22},{0x1E24,0x1E24},{0x1E26,0x1E26},{0x1E28,0x1E28},{0x1E2A,0x1E2A},
    {0x1E2C,0x1E2C},{0x1E2E,0x1E2E},{0x1E30,0x1E30},{0x1E32,0x1E32},{0x1E34,0x1E34},{0x1E36,0x1E36},
    {0x1E38,0x1E38},{0x1E3A,0x1E3A},{0x1E3C,0x1E3C},{0x1E3E,0x1E3E},{0x1E40,0x1E40},{0x1E42,0x1E42},
    {0x1E44,0x1E44},{0x1E46,0x1E46},{0x1E48,0x1E48},{0x1E4A,0x1E4A},{0x1E4C,0x1E4C},{0x1E4E,0x1E4E},
    {0x1E50,0x1E50},{0x1E52,0x1E52},{0x1E54,0x1E54},{0x1E56,0x1E56},{0x1E58,0x1E58},{0x1E5A,0x1E5A},
    {0x1E5C,0x1E5C},{0x1E5E,0x1E5E},{0x1E60,0x1E60},{0x1E62,0x1E62},{0x1E64,0x1E64},{0x1E66,0x1E66},
    {0x1E68,0x1E68},{0x1E6A,0x1E6A},{0x1E6C,0x1E6C},{0x1E6E,0x1E6E},{0x1E70,0x1E70},{0x1E72,0x1E72},
    {0x1E74,0x1E74},{0x1E76,0x1E76},{0x1E78,0x1E78},{0x1E7A,0x1E7A},{0x1E7C,0x1E7C},{0x1E7E,0x1E7E},
    {0x1E80,0x1E80},{0x1E82,0x1E82},{0x1E84,0x1E84},{0x1E86,0x1E86},{0x1E88,0x1E88},{0x1E8A,0x1E8A},
    {0x1E8C,0x1E8C},{0x1E8E,0x1E8E},{0x1E90,0x1E90},{0x1E92,0x1E92},{0x1E94,0x1E94},{0x1E9E,0x1E9E},
    {0x1EA0,0x1EA0},{0x1EA2,0x1EA2},{0x1EA4,0x1EA4},{0x1EA6,0x1EA6},{0x1EA8,0x1EA8},{0x1EAA,0x1EAA},
    {0x1EAC,0x1EAC},{0x1EAE,0x1EAE},{0x1EB0,0x1EB0},{0x1EB2,0x1EB2},{0x1EB4,0x1EB4},{0x1EB6,0x1EB6},
    {0x1EB8,0x1EB8},{0x1EBA,0x1EBA},{0x1EBC,0x1EBC},{0x1EBE,0x1EBE},{0x1EC0,0x1EC0},{0x1EC2,0x1EC2},
    {0x1EC4,0x1EC4},{0x1EC6,0x1EC6},{0x1EC8,0x1EC8},{0x1ECA,0x1ECA},{0x1ECC,0x1ECC},{0x1ECE,0x1ECE},
    {0x1ED0,0x1ED0},{0x1ED2,0x1ED2},{0x1ED4,0x1ED4},{0x1ED6,0x1ED6},{0x1ED8,0x1ED8},{0x1EDA,0x1EDA},
    {0x1EDC,0x1EDC},{0x1EDE,0x1EDE},{0x1EE0,0x1EE0},{0x1EE2,0x1EE2},{0x1EE4,0x1EE4},{0x1EE6,0x1EE6},
    {0x1EE8,0x1EE8},{0x1EEA,0x1EEA},{0x1EEC,0x1EEC},{0x1EEE,0x1EEE},{0x1EF0,0x1EF0},{0x1EF2,0x1EF2},
    {0x1EF4,0x1EF4},{0x1EF6,0x1EF6},{0x1EF8,0x1EF8},{0x1EFA,0x1EFA},{0x1EFC,0x1EFC},{0x1EFE,0x1EFE},
    {0x1F08,0x1F0F},{0x1F18,0x1F1D},{0x1F28,0x1F2F},{0x1F38,0x1F3F},{0x1F48,0x1F4D},{0x1F59,0x1F59},
    {0x1F5B,0x1F5B},{0x1F5D,0x1F5D},{0x1F5F,0x1F5F},{0x1F68,0x1F6F},{0x1F88,0x1F8F},{0x1F98,0x1F9F},
    {0x1FA8,0x1FAF},{0x1FB8,0x1FBC},{0x1FC8,0x1FCC},{0x1FD8,0x1FDB},{0x1FE8,0x1FEC},{0x1FF8,0x1FFC},
    {0x2102,0x2102},{0x2107,0x2107},{0x210B,0x210D},{0x2110,0x2112},{0x2115,0x2115},{0x2119,0x211D},
    {0x2124,0x2124},{0x2126,0x2126},{0x2128,0x2128},{0x212A,0x212D},{0x2130,0x2133},{0x213E,0x213F},
    {0x2145,0x2145},{0x2183,0x2183},{0x2C00,0x2C2F},{0x2C60,0x2C60},{0x2C62,0x2C64},{0x2C67,0x2C67},
    {0x2C69,0x2C69},{0x2C6B,0x2C6B},{0x2C6D,0x2C70},{0x2C72,0x2C72},{0x2C75,0x2C75},{0x2C7E,0x2C80},
    {0x2C82,0x2C82},{0x2C84,0x2C84},{0x2C86,0x2C86},{0x2C88,0x2C88},{0x2C8A,0x2C8A},{0x2C8C,0x2C8C},
    {0x2C8E,0x2C8E},{0x2C90,0x2C90},{0x2C92,0x2C92},{0x2C94,0x2C94},{0x2C96,0x2C96},{0x2C98,0x2C98},
    {0x2C9A,0x2C9A},{0x2C9C,0x2C9C},{0x2C9E,0x2C9E},{0x2CA0,0x2CA0},{0x2CA2,0x2CA2},{0x2CA4,0x2CA4},
    {0x2CA6,0x2CA6},{0x2CA8,0x2CA8},{0x2CAA,0x2CAA},{0x2CAC,0x2CAC},{0x2CAE,0x2CAE},{0x2CB0,0x2CB0},
    {0x2CB2,0x2CB2},{0x2CB4,0x2CB4},{0x2CB6,0x2CB6},{0x2CB8,0x2CB8},{0x2CBA,0x2CBA},{0x2CBC,0x2CBC},
    {0x2CBE,0x2CBE},{0x2CC0,0x2CC0},{0x2CC2,0x2CC2},{0x2CC4,0x2CC4},{0x2CC6,0x2CC6},{0x2CC8,0x2CC8},
    {0x2CCA,0x2CCA},{0x2CCC,0x2CCC},{0x2CCE,0x2CCE},{0x2CD0,0x2CD0},{0x2CD2,0x2CD2},{0x2CD4,0x2CD4},
    {0x2CD6,0x2CD6},{0x2CD8,0x2CD8},{0x2CDA,0x2CDA},{0x2CDC,0x2CDC},{0x2CDE,0x2CDE},{0x2CE0,0x2CE0},
    {0x2CE2,0x2CE2},{0x2CEB,0x2CEB},{0x2CED,0x2CED},{0x2CF2,0x2CF2},{0xA640,0xA640},{0xA642,0xA642},
    {0xA644,0xA644},{0xA646,0xA646},{0xA648,0xA648},{0xA64A,0xA64A},{0xA64C,0xA64C},{0xA64E,0xA64E},
    {0xA650,0xA650},{0xA652,0xA652},{0xA654,0xA654},{0xA656,0xA656},{0xA658,0xA658},{0xA65A,0xA65A},
    {0xA65C,0xA65C},{0xA65E,0xA65E},{0xA660,0xA660},{0xA662,0xA662},{0xA664,0xA664},{0xA666,0xA666},
    {0xA668,0xA668},{0xA66A,0xA66A},{0xA66C,0xA66C},{0xA680,0xA680},{0xA682,0xA682},{0xA684,0xA684},
    {0xA686,0xA686},{0xA688,0xA688},{0xA68A,0xA68A},{0xA68C,0xA68C},{0xA68E,0xA68E},{0xA690,0xA690},
    {0xA692,0xA692},{0xA694,0xA694},{0xA696,0xA696},{0xA698,0xA698},{0xA69A,0xA69A},{0xA722,0xA722},
    {0xA724,0xA724},{0xA726,0xA726},{0xA728,0xA728},{0xA72A,0xA72A},{0xA72C,0xA72C},{0xA72E,0xA72E},
    {0xA732,0xA732},{0xA734,0xA734},{0xA736,0xA736},{0xA738,0xA738},{0xA73A,0xA73A},{0xA73C,0xA73C},
    {0xA73E,0xA73E},{0xA740,0xA740},{0xA742,0xA742},{0xA744,0xA744},{0xA746,0xA746},{0xA748,0xA748},
    {0xA74A,0xA74A},{0xA74C,0xA74C},{0xA74E,0xA74E},{0xA750,0xA750},{0xA752,0xA752},{0xA754,0xA754},
    {0xA756,0xA756},{0xA758,0xA758},{0xA75A,0xA75A},{0xA75C,0xA75C},{0xA75E,0xA75E},{0xA760,0xA760},
    {0xA762,0xA762},{0xA764,0xA764},{0xA766,0xA766},{0xA768,0xA768},{0xA76A,0xA76A},{0xA76C,0xA76C},
    {0xA76E,0xA76E},{0xA779,0xA779},{0xA77B,0xA77B},{0xA77D,0xA77E},{0xA780,0xA780},{0xA782,0xA782},
    {0xA784,0xA784},{0xA786,0xA786},{0xA78B,0xA78B},{0xA78D,0xA78D},{0xA790,0xA790},{0xA792,0xA792},
    {0xA796,0xA796},{0xA798,0xA798},{0xA79A,0xA79A},{0xA79C,0xA79C},{0xA79E,0xA79E},{0xA7A0,0xA7A0},
    {0xA7A2,0xA7A2},{0xA7A4,0xA7A4},{0xA7A6,0xA7A6},{0xA7A8,0xA7A8},{0xA7AA,0xA7AE},{0xA7B0,0xA7B4},
    {0xA7B6,0xA7B6},{0xA7B8,0xA7B8},{0xA7BA,0xA7BA},{0xA7BC,0xA7BC},{0xA7BE,0xA7BE},{0xA7C0,0xA7C0},
    {0xA7C2,0xA7C2},{0xA7C4,0xA7C7},{0xA7C9,0xA7C9},{0xA7D0,0xA7D0},{0xA7D6,0xA7D6},{0xA7D8,0xA7D8},
    {0xA7F5,0xA7F5},{0xFF21,0xFF3A},{0x10400,0x10427},{0x104B0,0x104D3},{0x10570,0x1057A},{0x1057C,0x1058A},
    {0x1058C,0x10592},{0x10594,0x10595},{0x10C80,0x10CB2},{0x118A0,0x118BF},{0x16E40,0x16E5F},{0x1D400,0x1D419},
    {0x1D434,0x1D44D},{0x1D468,0x1D481},{0x1D49C,0x1D49C},{0x1D49E,0x1D49F},{0x1D4A2,0x1D4A2},{0x1D4A5,0x1D4A6},
    {0x1D4A9,0x1D4AC},{0x1D4AE,0x1D4B5},{0x1D4D0,0x1D4E9},{0x1D504,0x1D505},{0x1D507,0x1D50A},{0x1D50D,0x1D514},
    {0x1D516,0x1D51C},{0x1D538,0x1D539},{0x1D53B,0x1D53E},{0x1D540,0x1D544},{0x1D546,0x1D546},{0x1D54A,0x1D550},
    {0x1D56C,0x1D585},{0x1D5A0,0x1D5B9},{0x1D5D4,0x1D5ED},{0x1D608,0x1D621},{0x1D63C,0x1D655},{0x1D670,0x1D689},
    {0x1D6A8,0x1D6C0},{0x1D6E2,0x1D6FA},{0x1D71C,0x1D734},{0x1D756,0x1D76E},{0x1D790,0x1D7A8},{0x1D7CA,0x1D7CA},
    {0x1E900,0x1E921},
};
static const uint32_t UNICODE_MARKS[][2] = { /* 310 ranges */
    {0x300,0x36F},{0x483,0x489},{0x591,0x5BD},{0x5BF,0x5BF},{0x5C1,0x5C2},{0x5C4,0x5C5},
    {0x5C7,0x5C7},{0x610,0x61A},{0x64B,0x65F},{0x670,0x670},{0x6D6,0x6DC},{0x6DF,0x6E4},
    {0x6E7,0x6E8},{0x6EA,0x6ED},{0x711,0x711},{0x730,0x74A},{0x7A6,0x7B0},{0x7EB,0x7F3},
    {0x7FD,0x7FD},{0x816,0x819},{0x81B,0x823},{0x825,0x827},{0x829,0x82D},{0x859,0x85B},
    {0x898,0x89F},{0x8CA,0x8E1},{0x8E3,0x903},{0x93A,0x93C},{0x93E,0x94F},{0x951,0x957},
    {0x962,0x963},{0x981,0x983},{0x9BC,0x9BC},{0x9BE,0x9C4},{0x9C7,0x9C8},{0x9CB,0x9CD},
    {0x9D7,0x9D7},{0x9E2,0x9E3},{0x9FE,0x9FE},{0xA01,0xA03},{0xA3C,0xA3C},{0xA3E,0xA42},
    {0xA47,0xA48},{0xA4B,0xA4D},{0xA51,0xA51},{0xA70,0xA71},{0xA75,0xA75},{0xA81,0xA83},
    {0xABC,0xABC},{0xABE,0xAC5},{0xAC7,0xAC9},{0xACB,0xACD},{0xAE2,0xAE3},{0xAFA,0xAFF},
    {0xB01,0xB03},{0xB3C,0xB3C},{0xB3E,0xB44},{0xB47,0xB48},{0xB4B,0xB4D},{0xB55,0xB57},
    {0xB62,0xB63},{0xB82,0xB82},{0xBBE,0xBC2},{0xBC6,0xBC8},{0xBCA,0xBCD},{0xBD7,0xBD7},
    {0xC00,0xC04},{0xC3C,0xC3C},{0xC3E,0xC44},{0xC46,0xC48},{0xC4A,0xC4D},{0xC55,0xC56},
    {0xC62,0xC63},{0xC81,0xC83},{0xCBC,0xCBC},{0xCBE,0xCC4},{0xCC6,0xCC8},{0xCCA,0xCCD},
    {0xCD5,0xCD6},{0xCE2,0xCE3},{0xCF3,0xCF3},{0xD00,0xD03},{0xD3B,0xD3C},{0xD3E,0xD44},
    {0xD46,0xD48},{0xD4A,0xD4D},{0xD57,0xD57},{0xD62,0xD63},{0xD81,0xD83},{0xDCA,0xDCA},
    {0xDCF,0xDD4},{0xDD6,0xDD6},{0xDD8,0xDDF},{0xDF2,0xDF3},{0xE31,0xE31},{0xE34,0xE3A},
    {0xE47,0xE4E},{0xEB1,0xEB1},{0xEB4,0xEBC},{0xEC8,0xECE},{0xF18,0xF19},{0xF35,0xF35},
    {0xF37,0xF37},{0xF39,0xF39},{0xF3E,0xF3F},{0xF71,0xF84},{0xF86,0xF87},{0xF8D,0xF97},
    {0xF99,0xFBC},{0xFC6,0xFC6},{0x102B,0x103E},{0x1056,0x1059},{0x105E,0x1060},{0x1062,0x1064},
    {0x1067,0x106D},{0x1071,0x1074},{0x1082,0x108D},{0x108F,0x108F},{0x109A,0x109D},{0x135D,0x135F},
    {0x1712,0x1715},{0x1732,0x1734},{0x1752,0x1753},{0x1772,0x1773},{0x17B4,0x17D3},{0x17DD,0x17DD},
    {0x180B,0x180D},{0x180F,0x180F},{0x1885,0x1886},{0x18A9,0x18A9},{0x1920,0x192B},{0x1930,0x193B},
    {0x1A17,0x1A1B},{0x1A55,0x1A5E},{0x1A60,0x1A7C},{0x1A7F,0x1A7F},{0x1AB0,0x1ACE},{0x1B00,0x1B04},
    {0x1B34,0x1B44},{0x1B6B,0x1B73},{0x1B80,0x1B82},{0x1BA1,0x1BAD},{0x1BE6,0x1BF3},{0x1C24,0x1C37},
    {0x1CD0,0x1CD2},{0x1CD4,0x1CE8},{0x1CED,0x1CED},{0x1CF4,0x1CF4},{0x1CF7,0x1CF9},{0x1DC0,0x1DFF},
    {0x20D0,0x20F0},{0x2CEF,0x2CF1},{0x2D7F,0x2D7F},{0x2DE0,0x2DFF},{0x302A,0x302F},{0x3099,0x309A},
    {0xA66F,0xA672},{0xA674,0xA67D},{0xA69E,0xA69F},{0xA6F0,0xA6F1},{0xA802,0xA802},{0xA806,0xA806},
    {0xA80B,0xA80B},{0xA823,0xA827},{0xA82C,0xA82C},{0xA880,0xA881},{0xA8B4,0xA8C5},{0xA8E0,0xA8F1},
    {0xA8FF,0xA8FF},{0xA926,0xA92D},{0xA947,0xA953},{0xA980,0xA983},{0xA9B3,0xA9C0},{0xA9E5,0xA9E5},
    {0xAA29,0xAA36},{0xAA43,0xAA43},{0xAA4C,0xAA4D},{0xAA7B,0xAA7D},{0xAAB0,0xAAB0},{0xAAB2,0xAAB4},
    {0xAAB7,0xAAB8},{0xAABE,0xAABF},{0xAAC1,0xAAC1},{0xAAEB,0xAAEF},{0xAAF5,0xAAF6},{0xABE3,0xABEA},
    {0xABEC,0xABED},{0xFB1E,0xFB1E},{0xFE00,0xFE0F},{0xFE20,0xFE2F},{0x101FD,0x101FD},{0x102E0,0x102E0},
    {0x10376,0x1037A},{0x10A01,0x10A03},{0x10A05,0x10A06},{0x10A0C,0x10A0F},{0x10A38,0x10A3A},{0x10A3F,0x10A3F},
    {0x10AE5,0x10AE6},{0x10D24,0x10D27},{0x10EAB,0x10EAC},{0x10EFD,0x10EFF},{0x10F46,0x10F50},{0x10F82,0x10F85},
    {0x11000,0x11002},{0x11038,0x11046},{0x11070,0x11070},{0x11073,0x11074},{0x1107F,0x11082},{0x110B0,0x110BA},
    {0x110C2,0x110C2},{0x11100,0x11102},{0x11127,0x11134},{0x11145,0x11146},{0x11173,0x11173},{0x11180,0x11182},
    {0x111B3,0x111C0},{0x111C9,0x111CC},{0x111CE,0x111CF},{0x1122C,0x11237},{0x1123E,0x1123E},{0x11241,0x11241},
    {0x112DF,0x112EA},{0x11300,0x11303},{0x1133B,0x1133C},{0x1133E,0x11344},{0x11347,0x11348},{0x1134B,0x1134D},
    {0x11357,0x11357},{0x11362,0x11363},{0x11366,0x1136C},{0x11370,0x11374},{0x11435,0x11446},{0x1145E,0x1145E},
    {0x114B0,0x114C3},{0x115AF,0x115B5},{0x115B8,0x115C0},{0x115DC,0x115DD},{0x11630,0x11640},{0x116AB,0x116B7},
    {0x1171D,0x1172B},{0x1182C,0x1183A},{0x11930,0x11935},{0x11937,0x11938},{0x1193B,0x1193E},{0x11940,0x11940},
    {0x11942,0x11943},{0x119D1,0x119D7},{0x119DA,0x119E0},{0x119E4,0x119E4},{0x11A01,0x11A0A},{0x11A33,0x11A39},
    {0x11A3B,0x11A3E},{0x11A47,0x11A47},{0x11A51,0x11A5B},{0x11A8A,0x11A99},{0x11C2F,0x11C36},{0x11C38,0x11C3F},
    {0x11C92,0x11CA7},{0x11CA9,0x11CB6},{0x11D31,0x11D36},{0x11D3A,0x11D3A},{0x11D3C,0x11D3D},{0x11D3F,0x11D45},
    {0x11D47,0x11D47},{0x11D8A,0x11D8E},{0x11D90,0x11D91},{0x11D93,0x11D97},{0x11EF3,0x11EF6},{0x11F00,0x11F01},
    {0x11F03,0x11F03},{0x11F34,0x11F3A},{0x11F3E,0x11F42},{0x13440,0x13440},{0x13447,0x13455},{0x16AF0,0x16AF4},
    {0x16B30,0x16B36},{0x16F4F,0x16F4F},{0x16F51,0x16F87},{0x16F8F,0x16F92},{0x16FE4,0x16FE4},{0x16FF0,0x16FF1},
    {0x1BC9D,0x1BC9E},{0x1CF00,0x1CF2D},{0x1CF30,0x1CF46},{0x1D165,0x1D169},{0x1D16D,0x1D172},{0x1D17B,0x1D182},
    {0x1D185,0x1D18B},{0x1D1AA,0x1D1AD},{0x1D242,0x1D244},{0x1DA00,0x1DA36},{0x1DA3B,0x1DA6C},{0x1DA75,0x1DA75},
    {0x1DA84,0x1DA84},{0x1DA9B,0x1DA9F},{0x1DAA1,0x1DAAF},{0x1E000,0x1E006},{0x1E008,0x1E018},{0x1E01B,0x1E021},
    {0x1E023,0x1E024},{0x1E026,0x1E02A},{0x1E08F,0x1E08F},{0x1E130,0x1E136},{0x1E2AE,0x1E2AE},{0x1E2EC,0x1E2EF},
    {0x1E4EC,0x1E4EF},{0x1E8D0,0x1E8D6},{0x1E944,0x1E94A},{0xE0100,0xE01EF},
};

static int in_ranges(uint32_t cp, const uint32_t (*r)[2], int n) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid - 1;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

#define IN_TABLE(cp, table) in_ranges(cp, table, (int)(sizeof table / sizeof table[0]))

static int is_letter(uint32_t cp) {
    if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    return IN_TABLE(cp, UNICODE_LETTERS);
}

static int is_number(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    return IN_TABLE(cp, UNICODE_NUMBERS);
}

static int is_space(uint32_t cp) { /* \s: Unicode White_Space */
    return (cp >= 9 && cp <= 13) || cp == ' ' || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

static int is_newline(uint32_t cp) { return cp == '\r' || cp == '\n'; }
/* o200k's two letter classes: [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}],
   that is letters that are not lowercase (not upper or title case), and marks */
static int is_upper_class(uint32_t cp) {
    return (is_letter(cp) && !IN_TABLE(cp, UNICODE_LOWER)) || IN_TABLE(cp, UNICODE_MARKS);
}
static int is_lower_class(uint32_t cp) {
    return (is_letter(cp) && !IN_TABLE(cp, UNICODE_UPPER)) || IN_TABLE(cp, UNICODE_MARKS);
}
static int is_newline_or_slash(uint32_t cp) { return is_newline(cp) || cp == '/'; }
static int is_other(uint32_t cp) { return !is_space(cp) && !is_letter(cp) && !is_number(cp); }

/* ---- Pre-tokenizers: the first piece of the text, coded from the regex ---- */

/* Bytes of the run of characters at s[i..n) for which `in_class` holds. */
static size_t skip_class(const uint8_t *s, size_t n, size_t i, int (*in_class)(uint32_t), int max_chars) {
    for (int count = 0; i < n && count < max_chars; count++) {
        int len;
        if (!in_class(decode_char(s + i, n - i, &len))) break;
        i += len;
    }
    return i;
}

/* 's 't 're 've 'm 'll 'd (any case when ignore_case: Llama 3 and Qwen2 write
   (?i:...), in which the long s U+017F is an s). Returns the length or 0. */
static size_t contraction(const uint8_t *s, size_t n, int ignore_case) {
    if (n < 2 || s[0] != '\'') return 0;
    int c1 = ignore_case && s[1] < 0x80 ? tolower(s[1]) : s[1];
    int c2 = n >= 3 ? (ignore_case && s[2] < 0x80 ? tolower(s[2]) : s[2]) : 0;
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
    if (ignore_case && n >= 3 && s[1] == 0xC5 && s[2] == 0xBF) return 3; /* 'ſ */
    return 0;
}

/* Whitespace at s (the first character is a space):
     \s*[\r\n]+   (newline_rule: up to the last newline of the run)
     \s+(?!\S)    (the run, but its last space stays for the next piece)
     \s+          (the run)                                                */
static size_t whitespace_piece(const uint8_t *s, size_t n, int newline_rule) {
    size_t i = 0, last_start = 0, after_newline = 0;
    int chars = 0;
    while (i < n) {
        int len;
        uint32_t cp = decode_char(s + i, n - i, &len);
        if (!is_space(cp)) break;
        last_start = i;
        i += len;
        chars++;
        if (is_newline(cp)) after_newline = i;
    }
    if (newline_rule && after_newline > 0) return after_newline;
    if (i == n || chars < 2) return i;
    return last_start;
}

/* Llama 3 (max_digits 3) and Qwen2 (max_digits 1):
     (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
     | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+                    */
static size_t pretok_llama3(const uint8_t *s, size_t n, int max_digits) {
    size_t k = contraction(s, n, 1);
    if (k) return k;
    int l0, l1 = 0;
    uint32_t c0 = decode_char(s, n, &l0), c1 = (size_t)l0 < n ? decode_char(s + l0, n - l0, &l1) : NOT_A_CHAR;
    if (is_letter(c0)) return skip_class(s, n, 0, is_letter, INT32_MAX);
    if (!is_newline(c0) && !is_number(c0) && l1 && is_letter(c1)) return skip_class(s, n, l0, is_letter, INT32_MAX);
    if (is_number(c0)) return skip_class(s, n, 0, is_number, max_digits);
    size_t i = c0 == ' ' && l1 && is_other(c1) ? 1 : 0;
    if (i == 1 || is_other(c0)) return skip_class(s, n, skip_class(s, n, i, is_other, INT32_MAX), is_newline, INT32_MAX);
    return whitespace_piece(s, n, 1);
}

/* GPT-2:  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t pretok_gpt2(const uint8_t *s, size_t n) {
    size_t k = contraction(s, n, 0);
    if (k) return k;
    int l0, l1 = 0;
    uint32_t c0 = decode_char(s, n, &l0), c1 = (size_t)l0 < n ? decode_char(s + l0, n - l0, &l1) : NOT_A_CHAR;
    int (*classes[3])(uint32_t) = {is_letter, is_number, is_other};
    for (int c = 0; c < 3; c++) {
        if (classes[c](c0)) return skip_class(s, n, 0, classes[c], INT32_MAX);
        if (c0 == ' ' && l1 && classes[c](c1)) return skip_class(s, n, 1, classes[c], INT32_MAX);
    }
    return whitespace_piece(s, n, 0);
}

/* o200k's two word alternatives from byte i on (after the optional prefix
   character); returns the word's end, or 0 if neither matches:
     [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(contraction)?
     [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(contraction)?
   The classes overlap (Lm, Lo, M), so the first one's backtracking is spelled
   out: its run of upper-class characters gives back, if it must, everything
   after the last character that is in both. */
static size_t o200k_word(const uint8_t *s, size_t n, size_t i) {
    size_t j = i, last_both = 0;
    int len;
    while (j < n) { /* the upper-class run */
        uint32_t cp = decode_char(s + j, n - j, &len);
        if (!is_upper_class(cp)) break;
        j += len;
        if (is_lower_class(cp)) last_both = j;
    }
    size_t end;
    if (j < n && is_lower_class(decode_char(s + j, n - j, &len))) end = skip_class(s, n, j, is_lower_class, INT32_MAX);
    else if (last_both) end = last_both; /* the first alternative, after backtracking */
    else if (j > i) end = j;              /* the second, with no lowercase after */
    else return 0;
    return end + contraction(s + end, n - end, 1);
}

/* o200k (Phi-4-mini; GPT-4o's tokenizer):
     [^\r\n\p{L}\p{N}]?(the two word alternatives above)|\p{N}{1,3}
     | ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+                 */
static size_t pretok_o200k(const uint8_t *s, size_t n) {
    int l0, l1 = 0;
    uint32_t c0 = decode_char(s, n, &l0), c1 = (size_t)l0 < n ? decode_char(s + l0, n - l0, &l1) : NOT_A_CHAR;
    size_t end = 0;
    if (!is_newline(c0) && !is_letter(c0) && !is_number(c0)) end = o200k_word(s, n, l0); /* with the prefix */
    if (!end) end = o200k_word(s, n, 0);                                                   /* without */
    if (end) return end;
    if (is_number(c0)) return skip_class(s, n, 0, is_number, 3);
    size_t i = c0 == ' ' && l1 && is_other(c1) ? 1 : 0;
    if (i == 1 || is_other(c0))
        return skip_class(s, n, skip_class(s, n, i, is_other, INT32_MAX), is_newline_or_slash, INT32_MAX);
    return whitespace_piece(s, n, 1);
}

/* Length of the first pre-token of s[0..n), n > 0. */
static size_t pretokenize(int kind, const uint8_t *s, size_t n) {
    switch (kind) {
    case PRETOK_LLAMA3: return pretok_llama3(s, n, 3);
    case PRETOK_QWEN2: return pretok_llama3(s, n, 1);
    case PRETOK_GPT2: return pretok_gpt2(s, n);
    case PRETOK_O200K: return pretok_o200k(s, n);
    default: return n;
    }
}

/* ---- NFC: Unicode's canonical composition (Qwen's tokenizers ask for it) ----
   Text is put in Normalization Form C: each character fully decomposed
   (canonically), the combining marks of each run sorted by class, then
   recomposed where a composition exists and is not blocked. The data
   (decompositions, classes, compositions) come with the tokenizer file,
   from Python's unicodedata; Hangul syllables are computed. Python:
   unicodedata.normalize("NFC", text) */

/* The triple of table k whose first (and, for compositions, second) value is a (b). */
static const int32_t *nfc_find(const Tokenizer *t, int k, int32_t a, int32_t b) {
    int lo = 0, hi = t->n_nfc[k] - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const int32_t *e = t->nfc[k] + 3 * mid;
        int cmp = a != e[0] ? (a < e[0] ? -1 : 1) : k == 2 && b != e[1] ? (b < e[1] ? -1 : 1) : 0;
        if (cmp == 0) return e;
        if (cmp < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

static int combining_class(const Tokenizer *t, uint32_t cp) {
    const int32_t *e = cp < 0x110000 ? nfc_find(t, 1, (int32_t)cp, 0) : NULL;
    return e ? e[1] : 0;
}

#define HANGUL_S 0xAC00 /* Hangul syllables: S = S0 + (L index * 21 + V index) * 28 + T index */
#define HANGUL_L 0x1100
#define HANGUL_V 0x1161
#define HANGUL_T 0x11A7

/* Appends cp's full canonical decomposition to out (growing it). depth
   bounds the recursion whatever the file's tables hold. */
static void decompose_char(const Tokenizer *t, uint32_t cp, uint32_t **out, size_t *n, size_t *cap, int depth) {
    if (*n + 4 > *cap) {
        *cap = *cap * 2 + 16;
        uint32_t *grown = realloc(*out, *cap * sizeof(uint32_t));
        if (!grown) fatal("out of memory");
        *out = grown;
    }
    if (cp >= HANGUL_S && cp < HANGUL_S + 11172) {
        uint32_t s = cp - HANGUL_S;
        (*out)[(*n)++] = HANGUL_L + s / 588;
        (*out)[(*n)++] = HANGUL_V + s % 588 / 28;
        if (s % 28) (*out)[(*n)++] = HANGUL_T + s % 28;
        return;
    }
    const int32_t *e = cp < 0x110000 && depth < 4 ? nfc_find(t, 0, (int32_t)cp, 0) : NULL;
    if (!e) {
        (*out)[(*n)++] = cp;
        return;
    }
    decompose_char(t, (uint32_t)e[1], out, n, cap, depth + 1);
    if (e[2]) decompose_char(t, (uint32_t)e[2], out, n, cap, depth + 1);
}

/* The composite of a and b, or 0. */
static uint32_t compose_pair(const Tokenizer *t, uint32_t a, uint32_t b) {
    if (a >= HANGUL_L && a < HANGUL_L + 19 && b >= HANGUL_V && b < HANGUL_V + 21)
        return HANGUL_S + ((a - HANGUL_L) * 21 + (b - HANGUL_V)) * 28;
    if (a >= HANGUL_S && a < HANGUL_S + 11172 && (a - HANGUL_S) % 28 == 0 && b > HANGUL_T && b < HANGUL_T + 28)
        return a + (b - HANGUL_T);
    const int32_t *e = a < 0x110000 && b < 0x110000 ? nfc_find(t, 2, (int32_t)a, (int32_t)b) : NULL;
    return e ? (uint32_t)e[2] : 0;
}

/* text in NFC, as a new buffer (its length in *out_len), or NULL when it is
   NFC already because nothing in it is at or above U+0300 (UTF-8 lead bytes
   below 0xCC), nearly always. Bytes that are not UTF-8 stay as they are. */
static char *nfc_normalize(const Tokenizer *t, const char *text, size_t len, size_t *out_len) {
    const uint8_t *s = (const uint8_t *)text;
    size_t i = 0;
    while (i < len && s[i] < 0xCC) i++;
    if (i == len) return NULL;
    uint32_t *cp = NULL; /* decomposed; an invalid byte b is 0x110000 + b */
    size_t n = 0, cap = 0;
    for (i = 0; i < len;) {
        int l;
        uint32_t c = decode_char(s + i, len - i, &l);
        decompose_char(t, c == NOT_A_CHAR ? 0x110000u + s[i] : c, &cp, &n, &cap, 0);
        i += l;
    }
    for (size_t k = 1; k < n; k++) { /* canonical order: a stable sort of each run of marks by class */
        int cc = combining_class(t, cp[k]);
        for (size_t j = k; cc && j > 0 && combining_class(t, cp[j - 1]) > cc; j--) {
            uint32_t tmp = cp[j];
            cp[j] = cp[j - 1], cp[j - 1] = tmp;
        }
    }
    size_t w = 0, starter = SIZE_MAX;
    int last_cc = 0; /* class of the last character kept after the starter */
    for (size_t k = 0; k < n; k++) { /* compose each character with the starter, unless blocked */
        int cc = combining_class(t, cp[k]);
        int adjacent = starter != SIZE_MAX && w == starter + 1, unblocked = adjacent || (last_cc != 0 && last_cc < cc);
        uint32_t composite = starter != SIZE_MAX && unblocked ? compose_pair(t, cp[starter], cp[k]) : 0;
        if (composite) {
            cp[starter] = composite;
            continue;
        }
        if (cc == 0) starter = w;
        last_cc = cc;
        cp[w++] = cp[k];
    }
    char *out = xmalloc(4 * w + 1);
    size_t o = 0;
    for (size_t k = 0; k < w; k++) {
        uint32_t c = cp[k];
        if (c >= 0x110000) out[o++] = (char)(c - 0x110000);
        else if (c < 0x80) out[o++] = (char)c;
        else if (c < 0x800) out[o++] = (char)(0xC0 | c >> 6), out[o++] = (char)(0x80 | (c & 0x3F));
        else if (c < 0x10000)
            out[o++] = (char)(0xE0 | c >> 12), out[o++] = (char)(0x80 | (c >> 6 & 0x3F)), out[o++] = (char)(0x80 | (c & 0x3F));
        else
            out[o++] = (char)(0xF0 | c >> 18), out[o++] = (char)(0x80 | (c >> 12 & 0x3F)),
            out[o++] = (char)(0x80 | (c >> 6 & 0x3F)), out[o++] = (char)(0x80 | (c & 0x3F));
    }
    free(cp);
    if (o > 3 * len) fatal("the tokenizer's NFC tables expand the text more than Unicode allows");
    *out_len = o;
    return out;
}

/* ---- BPE merging ---- */

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
            /* squeeze runs of spaces, and drop them at the end */
            while (i < len && s[i] == ' ') i++;
            if (i >= len) n--;
        }
    }
    *out_len = n;
    return out;
}

/* A candidate merge of the adjacent symbols left and right. */
typedef struct {
    float score;   /* priority: higher merges first */
    int left, right;
    int len;       /* bytes of the merged symbol: the pair is stale if this changed */
    int id;        /* token of the merged symbol */
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
    int start, len;   /* bytes of the text this symbol covers; len 0 once merged away */
    int prev, next;   /* neighbours in the linked list, -1 at the ends */
    int id;           /* its token, -1 if not in the vocabulary */
} Symbol;

/* Scratch space for merging, sized for the longest segment of a text. */
typedef struct {
    Symbol *sym;
    MergeCandidate *heap;
} BpeScratch;

static void try_pair(const Tokenizer *t, const char *text, const Symbol *sym, int left,
                     MergeCandidate *heap, int *n_heap) {
    if (left < 0) return;
    int right = sym[left].next;
    if (right < 0) return;
    MergeCandidate c = {0.0f, left, right, sym[left].len + sym[right].len, -1};
    if (t->n_merges > 0) { /* merge list: earlier merges first */
        if (sym[left].id < 0 || sym[right].id < 0) return;
        int m = lookup_merge(t, sym[left].id, sym[right].id);
        if (m < 0) return;
        c.score = -(float)m;
        c.id = t->merges[3 * m + 2];
    } else { /* the concatenation is a token: its score first */
        c.id = lookup_piece(t, text + sym[left].start, c.len);
        if (c.id < 0) return;
        c.score = t->scores[c.id];
    }
    heap_push(heap, n_heap, c);
}

/* BPE on one segment s[0..len): SentencePiece's characters or byte-level's
   bytes, merged by priority. Writes the tokens to out; returns their count. */
static int bpe_segment(const Tokenizer *t, const char *s, int len, BpeScratch *scratch, int *out) {
    if (len == 0) return 0;
    if (t->flags & TOKF_IGNORE_MERGES) { /* a piece that is a token is taken whole */
        int id = lookup_piece(t, s, len);
        if (id >= 0) {
            out[0] = id;
            return 1;
        }
    }
    Symbol *sym = scratch->sym;
    int n_sym = 0;
    for (int i = 0; i < len;) {
        int l = t->kind == KIND_BYTE_LEVEL ? 1 : utf8_char_len((const uint8_t *)s + i, len - i);
        if (l == 0) l = 1; /* cannot happen after normalization */
        int id = t->kind == KIND_BYTE_LEVEL ? t->byte_ids[(uint8_t)s[i]] : lookup_piece(t, s + i, l);
        if (id < 0 && t->kind == KIND_BYTE_LEVEL) { /* a byte with no token: dropped */
            i += l;
            continue;
        }
        sym[n_sym] = (Symbol){i, l, n_sym - 1, n_sym + 1, id};
        n_sym++;
        i += l;
    }
    if (n_sym == 0) return 0;
    sym[n_sym - 1].next = -1;

    /* Merge the best pair until none is left. Stale candidates (a side
       already merged into something else) are skipped when popped. A heap
       holds fewer than 2 * n_sym candidates: n_sym - 1 at first, and each
       merge removes one and adds at most two. */
    MergeCandidate *heap = scratch->heap;
    int n_heap = 0;
    for (int i = 0; i < n_sym; i++) try_pair(t, s, sym, i, heap, &n_heap);
    while (n_heap > 0) {
        MergeCandidate c = heap_pop(heap, &n_heap);
        Symbol *L = &sym[c.left], *R = &sym[c.right];
        if (L->len == 0 || R->len == 0 || L->next != c.right || L->len + R->len != c.len) continue;
        L->len += R->len;
        L->id = c.id;
        R->len = 0;
        L->next = R->next;
        if (R->next >= 0) sym[R->next].prev = c.left;
        try_pair(t, s, sym, L->prev, heap, &n_heap);
        try_pair(t, s, sym, c.left, heap, &n_heap);
    }

    /* Emit the tokens; symbols outside the vocabulary fall back to bytes. */
    int n = 0;
    for (int i = 0; i >= 0; i = sym[i].next) {
        if (sym[i].id >= 0) {
            out[n++] = sym[i].id;
            continue;
        }
        for (int b = 0; b < sym[i].len; b++) {
            int bid = t->byte_ids[(uint8_t)s[sym[i].start + b]];
            if (bid >= 0) out[n++] = bid;
            else if (b == 0 && t->unk_id >= 0) out[n++] = t->unk_id; /* one unk per symbol */
        }
    }
    return n;
}

/* Tokens of text that holds no user-defined token: SentencePiece merges it
   whole, byte-level BPE piece by piece. */
static int encode_span(const Tokenizer *t, const char *s, size_t len, BpeScratch *scratch, int *out) {
    if (t->kind == KIND_SENTENCEPIECE) return bpe_segment(t, s, (int)len, scratch, out);
    int n = 0;
    const uint8_t *u = (const uint8_t *)s;
    for (size_t pos = 0; pos < len;) {
        size_t run = len - pos;
        int pretok = t->pretok;
        if (pretok == PRETOK_SMOLLM) {
            /* SmolLM2: each digit alone first, then GPT-2's pattern on the rest */
            int cl;
            if (is_number(decode_char(u + pos, run, &cl))) {
                n += bpe_segment(t, s + pos, cl, scratch, out + n);
                pos += cl;
                continue;
            }
            size_t end = pos;
            while (end < len && !is_number(decode_char(u + end, len - end, &cl))) end += cl;
            run = end - pos;
            pretok = PRETOK_GPT2;
        }
        for (size_t end = pos + run; pos < end;) {
            size_t piece = pretokenize(pretok, u + pos, end - pos);
            n += bpe_segment(t, s + pos, (int)piece, scratch, out + n);
            pos += piece;
        }
    }
    return n;
}

/* Encodes text into token ids, BOS first if add_bos and the tokenizer uses
   one. tokens must have room for text_len * 3 + 3 ids (the most any text
   can produce). Returns the count. */
static int encode(const Tokenizer *t, const char *text, size_t text_len, int add_bos, int *tokens) {
    int n_tokens = 0;
    if (add_bos && t->bos_id >= 0 && (t->flags & TOKF_ADD_BOS)) tokens[n_tokens++] = t->bos_id;
    size_t len = text_len;
    char *norm = NULL;
    if (t->kind == KIND_SENTENCEPIECE) text = norm = normalize_text(t, text, text_len, &len);
    else if ((t->flags & TOKF_NFC) && (norm = nfc_normalize(t, text, text_len, &len))) text = norm;
    if (len > (size_t)INT32_MAX / 4) fatal("text is too long to tokenize (%zu bytes)", text_len);
    BpeScratch scratch = {xmalloc((len + 1) * sizeof(Symbol)), xmalloc((2 * len + 2) * sizeof(MergeCandidate))};

    /* Cut out user-defined tokens (longest match), encode what lies between. */
    size_t done = 0;
    for (size_t i = 0; i < len && t->n_user_defined > 0;) {
        int best = -1;
        for (int u = 0; u < t->n_user_defined; u++) {
            int id = t->user_defined[u], ul = t->lengths[id];
            if ((size_t)ul <= len - i && (best < 0 || ul > t->lengths[best]) && memcmp(text + i, t->pieces[id], ul) == 0)
                best = id;
        }
        if (best < 0) {
            i++;
            continue;
        }
        size_t end = i; /* the text before it, less the whitespace the token swallows on its left */
        if (t->strip[best] & STRIP_LEFT)
            while (end > done && isspace((unsigned char)text[end - 1])) end--;
        n_tokens += encode_span(t, text + done, end - done, &scratch, tokens + n_tokens);
        tokens[n_tokens++] = best;
        i += t->lengths[best];
        if (t->strip[best] & STRIP_RIGHT)
            while (i < len && isspace((unsigned char)text[i])) i++;
        done = i;
    }
    n_tokens += encode_span(t, text + done, len - done, &scratch, tokens + n_tokens);
    free(scratch.sym);
    free(scratch.heap);
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
    /* the dummy prefix: the first word (after BOS, if any) loses its leading space */
    if ((prev < 0 || prev == t->bos_id) && (t->flags & TOKF_DUMMY_PREFIX) && len > 0 && s[0] == ' ') { s++; len--; }
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

/* Output that ends before the first occurrence of any stop string (--stop),
   which is not printed even when it spans several tokens: text is held back
   while its end could still be the start of one. */
#define MAX_STOPS 8
typedef struct {
    const char **stops;
    int n_stops;
    char *held;          /* bytes not printed yet */
    size_t n_held, cap;
    int stopped;         /* a stop string came: the output has ended */
    Utf8Printer *out;
} StopFilter;

static void stop_put(StopFilter *f, const char *bytes, int len) {
    if (f->stopped) return;
    if (f->n_stops == 0) {
        utf8_put(f->out, bytes, len);
        return;
    }
    if (f->n_held + (size_t)len + 1 > f->cap) {
        f->cap = (f->n_held + (size_t)len + 1) * 2;
        char *grown = realloc(f->held, f->cap);
        if (!grown) fatal("out of memory");
        f->held = grown;
    }
    memcpy(f->held + f->n_held, bytes, (size_t)len);
    f->n_held += (size_t)len;
    size_t first = SIZE_MAX, keep = 0; /* the earliest stop string; the longest tail that may begin one */
    for (int k = 0; k < f->n_stops; k++) {
        size_t sl = strlen(f->stops[k]);
        for (size_t at = 0; at + sl <= f->n_held && at < first; at++)
            if (memcmp(f->held + at, f->stops[k], sl) == 0) first = at;
        for (size_t tail = sl - 1; tail > keep; tail--)
            if (tail <= f->n_held && memcmp(f->held + f->n_held - tail, f->stops[k], tail) == 0) keep = tail;
    }
    if (first != SIZE_MAX) {
        utf8_put(f->out, f->held, (int)first);
        f->stopped = 1, f->n_held = 0;
        return;
    }
    utf8_put(f->out, f->held, (int)(f->n_held - keep));
    memmove(f->held, f->held + f->n_held - keep, keep);
    f->n_held = keep;
}

/* The end of the output: what was held back prints (no stop string came). */
static void stop_finish(StopFilter *f) {
    if (!f->stopped) utf8_put(f->out, f->held, (int)f->n_held);
    f->n_held = 0, f->stopped = 0;
    utf8_flush(f->out);
}

/* ========================================================================== */
/* 7. Sampler                                                                 */
/* ========================================================================== */

/* The same random numbers and top-p procedure as llama2.c, so both programs
   print the same text for the same model, flags and seed. The other controls
   (off by default) apply in this order, each a small function below:
     1. penalties on the logits of the tokens of the last repeat_last_n
        positions: repetition (CTRL's rule), presence, frequency;
     2. temperature (0: the most likely token, after the penalties);
     3. top-k, 4. top-p, 5. min-p: each keeps a prefix of the tokens sorted
        by probability; 6. the draw among those kept, in proportion. */

typedef struct {
    float prob;
    int index;
} ProbIndex;

typedef struct {
    float temperature;     /* >= 0; 0: greedy */
    float topp;            /* in [0, 1]; 0 or 1: off */
    int top_k;             /* 0: off */
    float min_p;           /* in [0, 1]; 0: off */
    float repeat_penalty;  /* > 0; 1: off */
    int repeat_last_n;     /* the penalties' window of recent tokens */
    float presence_penalty, frequency_penalty; /* 0: off */
} SamplerOptions;

static const SamplerOptions DEFAULT_SAMPLING = {1.0f, 0.9f, 0, 0.0f, 1.0f, 64, 0.0f, 0.0f};

typedef struct {
    int vocab_size;
    SamplerOptions o;
    ProbIndex *candidates; /* (vocab_size) scratch for top-p and the filters */
    int *recent;           /* (repeat_last_n) the last tokens of the context, a ring */
    int n_recent, next_recent;
    int *counts;           /* (vocab_size) occurrences in the window, zero between uses */
    uint64_t rng_state;
} Sampler;

static void build_sampler(Sampler *s, int vocab_size, const SamplerOptions *o, uint64_t seed) {
    memset(s, 0, sizeof(*s));
    s->vocab_size = vocab_size;
    s->o = *o;
    s->rng_state = seed;
    s->candidates = xcalloc(vocab_size, sizeof(ProbIndex));
    s->recent = xcalloc(o->repeat_last_n > 0 ? o->repeat_last_n : 1, sizeof(int));
    s->counts = xcalloc(vocab_size, sizeof(int));
}

static void free_sampler(Sampler *s) { free(s->candidates), free(s->recent), free(s->counts); }

/* A token joins the context (prompt or reply): the penalties' window. */
static void sampler_accept(Sampler *s, int token) {
    if (s->o.repeat_last_n <= 0) return;
    s->recent[s->next_recent] = token;
    s->next_recent = (s->next_recent + 1) % s->o.repeat_last_n;
    if (s->n_recent < s->o.repeat_last_n) s->n_recent++;
}

static int penalties_on(const SamplerOptions *o) {
    return o->repeat_penalty != 1.0f || o->presence_penalty != 0.0f || o->frequency_penalty != 0.0f;
}

/* Step 1, in place, for each token t that occurs c_t > 0 times in the window:
     repetition (CTRL, as llama.cpp): logit_t = logit_t > 0 ? logit_t / R : logit_t * R
     presence and frequency (OpenAI): logit_t -= presence + c_t * frequency  */
static void apply_penalties(Sampler *s, float *logits) {
    const SamplerOptions *o = &s->o;
    for (int i = 0; i < s->n_recent; i++) s->counts[s->recent[i]]++;
    for (int i = 0; i < s->n_recent; i++) {
        int t = s->recent[i], c = s->counts[t];
        if (c == 0) continue; /* done already */
        float l = logits[t];
        l = l > 0.0f ? l / o->repeat_penalty : l * o->repeat_penalty;
        logits[t] = l - o->presence_penalty - (float)c * o->frequency_penalty;
        s->counts[t] = 0;
    }
}

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

/* The K most likely of probs[0..n) into cand, sorted, by a min-heap of K. */
static int select_top_k(const float *probs, int n, int k, ProbIndex *cand) {
    if (k > n) k = n;
    int size = 0;
    for (int i = 0; i < n; i++) {
        ProbIndex x = {probs[i], i};
        if (size == k && !(x.prob > cand[0].prob)) continue;
        int j;
        if (size < k) { /* sift up */
            for (j = size++; j > 0 && cand[(j - 1) / 2].prob > x.prob; j = (j - 1) / 2) cand[j] = cand[(j - 1) / 2];
        } else { /* replace the least, sift down */
            for (j = 0;;) {
                int c = 2 * j + 1;
                if (c >= size) break;
                if (c + 1 < size && cand[c + 1].prob < cand[c].prob) c++;
                if (!(cand[c].prob < x.prob)) break;
                cand[j] = cand[c], j = c;
            }
        }
        cand[j] = x;
    }
    qsort(cand, size, sizeof(ProbIndex), compare_prob_desc);
    return size;
}

/* Steps 3-5 on cand[0..n), probabilities sorted in decreasing order, of
   total `total` (1, or the top-k survivors' sum): how many each keeps.
     top-k: the k most likely (cand holds those already)
     top-p: the fewest whose probability, renormalized, sums past p
     min-p: those with probability >= min_p * the most likely one's   */
static int top_p_keeps(const ProbIndex *cand, int n, float total, float topp) {
    if (topp <= 0.0f || topp >= 1.0f) return n;
    float cumulative = 0.0f;
    for (int i = 0; i < n; i++) {
        cumulative += cand[i].prob / total;
        if (cumulative > topp) return i + 1;
    }
    return n;
}

static int min_p_keeps(const ProbIndex *cand, int n, float min_p) {
    int keep = 1;
    while (keep < n && cand[keep].prob >= min_p * cand[0].prob) keep++;
    return keep;
}

/* The tokens steps 3-5 keep, in cand[0..returned), most likely first, from
   the probabilities (after the penalties and the temperature). */
static int filter_candidates(const Sampler *s, const float *probs, ProbIndex *cand) {
    const SamplerOptions *o = &s->o;
    int n = 0;
    float total = 1.0f;
    if (o->top_k > 0) {
        n = select_top_k(probs, s->vocab_size, o->top_k, cand);
        total = 0.0f;
        for (int i = 0; i < n; i++) total += cand[i].prob;
    } else { /* only tokens min-p can keep are sorted (all when it is off) */
        float floor = o->min_p * probs[argmax(probs, s->vocab_size)];
        for (int i = 0; i < s->vocab_size; i++)
            if (probs[i] >= floor) cand[n++] = (ProbIndex){probs[i], i};
        qsort(cand, n, sizeof(ProbIndex), compare_prob_desc);
    }
    n = top_p_keeps(cand, n, total, o->topp);
    if (o->min_p > 0.0f) n = min_p_keeps(cand, n, o->min_p);
    return n;
}

/* Picks the next token from the logits (which it overwrites). */
static int sample(Sampler *s, float *logits) {
    const SamplerOptions *o = &s->o;
    if (penalties_on(o)) apply_penalties(s, logits);
    if (o->temperature == 0.0f) return argmax(logits, s->vocab_size);
    for (int i = 0; i < s->vocab_size; i++) logits[i] /= o->temperature;
    softmax(logits, s->vocab_size);
    float coin = random_f32(&s->rng_state);
    if (o->top_k == 0 && o->min_p == 0.0f) { /* llama2.c's own steps, so its outputs stay byte for byte */
        if (o->topp <= 0.0f || o->topp >= 1.0f) return sample_multinomial(logits, s->vocab_size, coin);
        return sample_topp(logits, s->vocab_size, o->topp, s->candidates, coin);
    }
    int n = filter_candidates(s, logits, s->candidates);
    float kept = 0.0f;
    for (int i = 0; i < n; i++) kept += s->candidates[i].prob;
    float r = coin * kept, cdf = 0.0f; /* step 6: the draw, in proportion among those kept */
    for (int i = 0; i < n; i++) {
        cdf += s->candidates[i].prob;
        if (r < cdf) return s->candidates[i].index;
    }
    return s->candidates[n - 1].index; /* rounding */
}

/* ========================================================================== */
/* 8. Modes: generate, tokenize, perplexity, chat                             */
/* ========================================================================== */

/* Tokenizes the prompt, with BOS first when the tokenizer uses one. */
static int *encode_prompt(const Tokenizer *tok, const char *text, size_t len, int *n_out) {
    int *tokens = xmalloc((len * 3 + 3) * sizeof(int));
    *n_out = encode(tok, text, len, 1, tokens);
    return tokens;
}

/* ---- teaching views ---- */

/* A token's text for display: its bytes, or <0xNN> for each byte when it is a
   byte token or its bytes are not whole UTF-8 characters; \n and \t escaped.
   Returns 1 for text, 2 for bytes, 3 for a control token. */
static int token_text(const Tokenizer *t, int id, char *out, size_t cap) {
    const char *p = t->pieces[id];
    int len = t->lengths[id], kind = t->types[id] == TOK_CONTROL || t->types[id] == TOK_UNKNOWN ? 3 : 1;
    if (t->types[id] == TOK_BYTE) {
        snprintf(out, cap, "%s", p);
        return 2;
    }
    for (int i = 0; i < len;) { /* whole UTF-8 characters? */
        int cl = utf8_char_len((const uint8_t *)p + i, len - i);
        if (cl == 0) kind = 2;
        i += cl ? cl : 1;
    }
    size_t n = 0;
    for (int i = 0; i < len && n + 8 < cap; i++) {
        uint8_t b = (uint8_t)p[i];
        if (kind == 2) n += snprintf(out + n, cap - n, "<0x%02X>", b);
        else if (b == '\n') n += snprintf(out + n, cap - n, "\\n");
        else if (b == '\t') n += snprintf(out + n, cap - n, "\\t");
        else if (b < 0x20) n += snprintf(out + n, cap - n, "<0x%02X>", b);
        else out[n++] = (char)b;
    }
    out[n] = '\0';
    return kind;
}

/* -m tokenize --show: the text cut into its tokens. On a terminal the tokens
   alternate between two background colours, byte tokens are underlined and
   control tokens bold; otherwise each token is in [brackets], control tokens
   in {braces}. Then the ids and their count. */
static void show_tokens(const Tokenizer *t, const int *ids, int n, int color) {
    char text[1024];
    static const char *bg[2] = {"\033[30;48;5;153m", "\033[30;48;5;223m"};
    for (int i = 0; i < n; i++) {
        int kind = token_text(t, ids[i], text, sizeof text);
        if (color) printf("%s%s%s\033[0m", bg[i % 2], kind == 2 ? "\033[4m" : kind == 3 ? "\033[1m" : "", text);
        else printf(kind == 3 ? "{%s}" : "[%s]", text);
    }
    printf("\nids: ");
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\ntokens: %d\n", n);
}

/* How many of the ranked candidates each rule keeps (rank_candidates). */
typedef struct {
    int top_k, top_p, min_p;
} Keeps;

/* The next-token candidates as the sampler sees them: probs holds the
   logits on entry and becomes the probabilities after the penalties and the
   temperature (at temperature 0, the model's own); order gets all of them,
   most likely first. Returns how many each rule keeps, applied in order
   (top-k, then top-p on top-k's renormalized survivors, then min-p; greedy
   keeps one). The penalties' window must not have moved since sampling. */
static Keeps rank_candidates(Sampler *sampler, float *probs, ProbIndex *order) {
    const SamplerOptions *o = &sampler->o;
    int V = sampler->vocab_size;
    if (penalties_on(o)) apply_penalties(sampler, probs);
    float temp = o->temperature > 0.0f ? o->temperature : 1.0f;
    for (int i = 0; i < V; i++) probs[i] /= temp;
    softmax(probs, V);
    for (int i = 0; i < V; i++) order[i] = (ProbIndex){probs[i], i};
    qsort(order, V, sizeof(ProbIndex), compare_prob_desc);
    Keeps keep;
    keep.top_k = o->top_k > 0 && o->top_k < V ? o->top_k : V;
    float total = 0.0f;
    for (int i = 0; i < keep.top_k; i++) total += order[i].prob;
    keep.top_p = top_p_keeps(order, keep.top_k, o->top_k > 0 ? total : 1.0f, o->topp);
    keep.min_p = o->min_p > 0.0f ? min_p_keeps(order, keep.top_p, o->min_p) : keep.top_p;
    if (o->temperature == 0.0f) keep.top_k = keep.top_p = keep.min_p = 1; /* greedy keeps only the most likely */
    return keep;
}

/* The first rule that removes the candidate of rank i, or "" if none does. */
static const char *cut_rule(const SamplerOptions *o, Keeps keep, int i) {
    return o->temperature == 0.0f && i > 0 ? "greedy" : i >= keep.top_k ? "top-k"
           : i >= keep.top_p ? "top-p" : i >= keep.min_p ? "min-p" : "";
}

/* --probs K: the K most likely next tokens with their probabilities (as
   rank_candidates left probs, order and keep), each that a rule removes
   marked with the first rule that does ("cut: top-k", "top-p", "min-p", or
   "greedy" at temperature 0), then the one sampled. On stderr, one line per
   token. */
static void show_probabilities(const Tokenizer *t, const Sampler *sampler, const float *probs, int k, int pos,
                               int chosen, const ProbIndex *order, Keeps keep) {
    char text[1024];
    token_text(t, chosen, text, sizeof text);
    fprintf(stderr, "[pos %d] '%s' %.1f%% |", pos, text, 100.0 * probs[chosen]);
    for (int i = 0; i < k && i < sampler->vocab_size; i++) {
        const char *cut = cut_rule(&sampler->o, keep, i);
        token_text(t, order[i].index, text, sizeof text);
        fprintf(stderr, " '%s' %.1f%%%s%s%s", text, 100.0 * order[i].prob, *cut ? " (cut: " : "", cut, *cut ? ")" : "");
    }
    fputc('\n', stderr);
}

/* --trace-html (section 9): the candidates of the token sampled for position pos, as
   rank_candidates left them */
static void page_step(TracePage *page, const SamplerOptions *o, const float *probs, const ProbIndex *order, Keeps keep,
                      int vocab_size, int pos, int chosen) {
    if (page->n_steps == page->capacity) return;
    TraceStep *step = &page->steps[page->n_steps++];
    step->pos = pos, step->chosen = chosen, step->chosen_prob = probs[chosen];
    step->n = vocab_size < TRACE_TOP ? vocab_size : TRACE_TOP;
    for (int i = 0; i < step->n; i++)
        step->id[i] = order[i].index, step->prob[i] = order[i].prob, step->cut[i] = cut_rule(o, keep, i);
}

/* Runs tokens through the model from position pos on, in chunks of up to
   s->max_tokens; returns the logits of the last one. With s->trace each token
   is printed, with its position, on stderr. */
static float *process_tokens(const Model *m, RunState *s, const int *tokens, int n, int pos) {
    float *logits = NULL;
    for (int done = 0; done < n;) {
        int T = n - done < s->max_tokens ? n - done : s->max_tokens;
        if (s->trace)
            for (int t = 0; t < T; t++) fprintf(stderr, "[pos %d] %d\n", pos + done + t, tokens[done + t]);
        logits = forward(m, s, tokens + done, T, pos + done, 0);
        done += T;
    }
    return logits;
}

/* Prints the prompt and its continuation until `steps` positions are used,
   or the model emits BOS or an EOS token. The prompt goes through the model
   in chunks; then one token at a time. */
static void generate(const Model *m, RunState *s, const Tokenizer *tok, Sampler *sampler,
                     const int *prompt, int n_prompt, int steps, int show_probs, const char **stops, int n_stops) {
    int rank = show_probs || s->page; /* the candidates are ranked for --probs and for the trace page */
    float *probs = rank ? xmalloc((size_t)m->config.vocab_size * sizeof(float)) : NULL;
    ProbIndex *order = rank ? xmalloc((size_t)m->config.vocab_size * sizeof(ProbIndex)) : NULL;
    Utf8Printer printer = {{0}, 0, 0, stdout};
    StopFilter reply = {stops, n_stops, NULL, 0, 0, 0, &printer};
    const char *piece;
    for (int i = 0; i < n_prompt; i++) { /* BOS prints nothing */
        int len = decode_piece(tok, i > 0 ? prompt[i - 1] : -1, prompt[i], &piece);
        utf8_put(&printer, piece, len);
    }
    fflush(stdout);
    double start = time_seconds();
    for (int i = 0; i < n_prompt; i++) sampler_accept(sampler, prompt[i]);
    float *logits = process_tokens(m, s, prompt, n_prompt, 0);
    double prompt_done = time_seconds();
    int token = prompt[n_prompt - 1], pos = n_prompt, n_forward = 0;
    for (;;) {
        if (rank) memcpy(probs, logits, (size_t)m->config.vocab_size * sizeof(float)); /* sample() overwrites */
        int next = sample(sampler, logits);
        if (rank) {
            Keeps keep = rank_candidates(sampler, probs, order);
            if (show_probs) show_probabilities(tok, sampler, probs, show_probs, pos, next, order, keep);
            if (s->page) page_step(s->page, &sampler->o, probs, order, keep, m->config.vocab_size, pos, next);
        }
        if (next == m->config.bos_id || is_eos(&m->config, next)) break;
        sampler_accept(sampler, next);
        int len = decode_piece(tok, token, next, &piece);
        stop_put(&reply, piece, len);
        fflush(stdout);
        if (reply.stopped) break;
        token = next;
        if (pos >= steps) break;
        if (s->trace) fprintf(stderr, "[pos %d] %d\n", pos, token);
        logits = forward(m, s, &token, 1, pos++, 0);
        n_forward++;
    }
    stop_finish(&reply);
    free(reply.held);
    printf("\n");
    fflush(stdout);
    double end = time_seconds();
    double prompt_rate = prompt_done > start ? n_prompt / (prompt_done - start) : 0.0;
    double gen_rate = end > prompt_done && n_forward > 0 ? n_forward / (end - prompt_done) : 0.0;
    fprintf(stderr, "prompt: %d tokens at %.2f tok/s; generation: %d tokens at %.2f tok/s\n", n_prompt,
            prompt_rate, n_forward, gen_rate);
    fprintf(stderr, "achieved tok/s: %.2f\n", gen_rate); /* llama2.c's line: the generation speed */
    free(probs);
    free(order);
}

/* Mean negative log-likelihood of each token given all before it. */
static void perplexity(const Model *m, RunState *s, const int *tokens, int n) {
    double total = 0.0;
    int V = m->config.vocab_size;
    for (int pos = 0; pos + 1 < n;) {
        int T = n - 1 - pos < s->max_logits ? n - 1 - pos : s->max_logits;
        const float *all = forward(m, s, tokens + pos, T, pos, 1);
        for (int t = 0; t < T; t++) {
            /* -log softmax(logits)[next] = logsumexp(logits) - logits[next] */
            const float *logits = all + (size_t)t * V;
            double max = logits[0], sum = 0.0;
            for (int i = 1; i < V; i++)
                if (logits[i] > max) max = logits[i];
            for (int i = 0; i < V; i++) sum += exp((double)logits[i] - max);
            total += max + log(sum) - logits[tokens[pos + t + 1]];
        }
        pos += T;
    }
    double nll = n > 1 ? total / (n - 1) : 0.0;
    printf("tokens: %d\nnll: %.6f\nperplexity: %.6f\n", n, nll, exp(nll));
}

/* ---- chat ---------------------------------------------------------------- */

/* Chat templates, each written from the family's published Hugging Face
   template (tokenizer_config.json's chat_template). Special tokens are
   placed by id; the text between two of them is encoded in one piece, as
   Hugging Face does when it tokenizes the rendered string. */

/* Tokens being rendered: text accumulates until a special token (or
   render_flush) encodes it, so the text between two special tokens is
   encoded in one piece. */
typedef struct {
    const Tokenizer *tok;
    int *ids;
    int n, cap;
    char *text;
    size_t text_len, text_cap;
    int strip_next; /* the last token swallows the whitespace after it (STRIP_RIGHT) */
} Render;

static void render_text(Render *r, const char *s) {
    if (r->strip_next) {
        while (isspace((unsigned char)*s)) s++;
        if (*s) r->strip_next = 0;
    }
    size_t len = strlen(s);
    if (r->text_len + len + 1 > r->text_cap) {
        r->text_cap = (r->text_len + len + 1) * 2;
        char *grown = realloc(r->text, r->text_cap);
        if (!grown) fatal("out of memory");
        r->text = grown;
    }
    memcpy(r->text + r->text_len, s, len);
    r->text_len += len;
}

static void render_reserve(Render *r, size_t more) {
    if ((size_t)r->n + more <= (size_t)r->cap) return;
    r->cap = (int)((r->n + more) * 2);
    int *grown = realloc(r->ids, (size_t)r->cap * sizeof(int));
    if (!grown) fatal("out of memory");
    r->ids = grown;
}

static void render_flush(Render *r) {
    if (r->text_len == 0) return;
    render_reserve(r, r->text_len * 3 + 3);
    r->n += encode(r->tok, r->text, r->text_len, 0, r->ids + r->n);
    r->text_len = 0;
}

static void render_special(Render *r, int id) {
    if (r->tok->strip[id] & STRIP_LEFT) /* the token swallows the whitespace before it */
        while (r->text_len > 0 && isspace((unsigned char)r->text[r->text_len - 1])) r->text_len--;
    render_flush(r);
    render_reserve(r, 1);
    r->ids[r->n++] = id;
    r->strip_next = (r->tok->strip[id] & STRIP_RIGHT) != 0;
}

/* The control (or user-defined) token spelled `text`, which the template needs. */
static int special_id(const Tokenizer *t, const char *text) {
    for (int i = 0; i < t->vocab_size; i++)
        if ((t->types[i] == TOK_CONTROL || t->types[i] == TOK_USER_DEFINED) && strcmp(t->pieces[i], text) == 0) return i;
    fatal("the chat template needs the token %s, which the tokenizer does not have", text);
    return -1;
}

/* Copy of s without leading and trailing whitespace (Jinja's trim/strip). */
static char *trimmed(const char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) n--;
    char *out = xmalloc(n + 1);
    memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

typedef struct {
    int template;
    const char *system; /* or NULL */
    int bos, eos;       /* the tokenizer's */
    int eot;            /* token that ends an assistant turn */
    int a, b;           /* the template's other special tokens: header start/end, im_start/im_end,
                           DeepSeek's User/Assistant, Gemma's start_of_turn/end_of_turn,
                           Phi's <|user|>/<|assistant|>, or Granite's start_of_role/end_of_role */
    int c;              /* Phi's <|system|> */
    int think_open, think_close; /* <think> and </think> of a reasoning model, or -1 */
    int no_think;       /* thinking off (--no-think; SmolLM3: or /no_think in the system prompt): an empty
                           thinking block opens each reply */
} ChatFormat;

static void build_chat_format(ChatFormat *f, const Tokenizer *t, int template, const char *system, int no_think) {
    memset(f, 0, sizeof(*f));
    f->template = template;
    f->system = system ? system : t->default_system;
    f->bos = t->bos_id;
    f->eos = f->eot = t->eos_id;
    f->think_open = f->think_close = -1;
    if (template == TEMPLATE_LLAMA3 || template == TEMPLATE_LLAMA31) {
        f->a = special_id(t, "<|start_header_id|>");
        f->b = special_id(t, "<|end_header_id|>");
        f->eot = special_id(t, "<|eot_id|>");
    } else if (template == TEMPLATE_CHATML || template == TEMPLATE_QWEN3 || template == TEMPLATE_SMOLLM3) {
        f->a = special_id(t, "<|im_start|>");
        f->b = f->eot = special_id(t, "<|im_end|>");
        if (template != TEMPLATE_CHATML) { /* ChatML, with a thinking section before each reply */
            f->think_open = special_id(t, "<think>");
            f->think_close = special_id(t, "</think>");
        }
    } else if (template == TEMPLATE_DEEPSEEK_R1) { /* "｜" is U+FF5C, the fullwidth bar */
        f->a = special_id(t, "<\xEF\xBD\x9C" "User\xEF\xBD\x9C>");
        f->b = special_id(t, "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>");
        f->think_open = special_id(t, "<think>");
        f->think_close = special_id(t, "</think>");
    } else if (template == TEMPLATE_GEMMA) {
        f->a = special_id(t, "<start_of_turn>");
        f->b = f->eot = special_id(t, "<end_of_turn>");
    } else if (template == TEMPLATE_GRANITE) {
        f->a = special_id(t, "<|start_of_role|>");
        f->b = special_id(t, "<|end_of_role|>");
        f->eot = special_id(t, "<|end_of_text|>");
    } else if (template == TEMPLATE_PHI3 || template == TEMPLATE_PHI4) {
        f->a = special_id(t, "<|user|>");
        f->b = special_id(t, "<|assistant|>");
        f->c = special_id(t, "<|system|>");
        f->eot = special_id(t, "<|end|>");
    }
    if ((template == TEMPLATE_LLAMA2 || template == TEMPLATE_LLAMA3 || template == TEMPLATE_LLAMA31 ||
         template == TEMPLATE_MISTRAL || template == TEMPLATE_DEEPSEEK_R1 || template == TEMPLATE_GEMMA) && f->bos < 0)
        fatal("the %s chat template needs a BOS token, which the tokenizer does not have", TEMPLATE_NAMES[template]);
    if (f->eot < 0) fatal("the chat template needs an end-of-turn token, which the tokenizer does not have");
    if (no_think && template != TEMPLATE_QWEN3 && template != TEMPLATE_SMOLLM3)
        fatal("--no-think: the %s chat template has no switch for thinking (qwen3 and smollm3 have)",
              TEMPLATE_NAMES[template]);
    f->no_think = no_think;
    if (template == TEMPLATE_SMOLLM3 && f->system) { /* its system prompt may say /no_think or /think */
        if (strstr(f->system, "/no_think")) f->no_think = 1;
        else if (strstr(f->system, "/think")) f->no_think = 0;
    }
}

/* ChatML's and Gemma's turns: <|im_start|>role\n ... <|im_end|>\n
   (Gemma: <start_of_turn>role\n ... <end_of_turn>\n) */
static void turn_start(Render *r, const ChatFormat *f, const char *role) {
    render_special(r, f->a);
    render_text(r, role);
    render_text(r, "\n");
}

static void turn_end(Render *r, const ChatFormat *f) {
    render_special(r, f->b);
    render_text(r, "\n");
}

static void llama3_header(Render *r, const ChatFormat *f, const char *role) {
    render_special(r, f->a);
    render_text(r, role);
    render_special(r, f->b);
    render_text(r, "\n\n");
}

/* A Phi message after its role token: Phi-3's newline, the text as it is,
   <|end|> and Phi-3's newline. (Phi-3's role and end tokens swallow the
   whitespace after them when Hugging Face tokenizes, so those newlines
   vanish: render_special does the same from the tokenizer's strip flags.) */
static void phi_turn(Render *r, const ChatFormat *f, const char *text) {
    int newlines = f->template == TEMPLATE_PHI3;
    if (newlines) render_text(r, "\n");
    render_text(r, text);
    render_special(r, f->eot);
    if (newlines) render_text(r, "\n");
}

/* Copy of s without any occurrence of each of the n words, and without
   trailing whitespace (Python's s.replace(w, "")... .rstrip()). */
static char *without_words(const char *s, const char **words, int n) {
    char *out = xmalloc(strlen(s) + 1), *o = out;
    while (*s) {
        int skipped = 0;
        for (int w = 0; w < n && !skipped; w++) {
            size_t len = strlen(words[w]);
            if (strncmp(s, words[w], len) == 0) s += len, skipped = 1;
        }
        if (!skipped) *o++ = *s++;
    }
    while (o > out && isspace((unsigned char)o[-1])) o--;
    *o = '\0';
    return out;
}

/* SmolLM3's system turn, as its template writes it (without tools): a
   metadata block with today's date and the reasoning mode, then the custom
   instructions (the system prompt less its /think or /no_think), or the
   default ones. Its template ends this turn without <|im_end|>; so does this.
   "/system_override" in the system prompt replaces it all with the prompt. */
static void smollm3_system(Render *r, const ChatFormat *f) {
    static const char *flags[] = {"/no_think", "/think"}, *override[] = {"/system_override"};
    char *custom = f->system ? without_words(f->system, flags, 2) : NULL;
    turn_start(r, f, "system");
    if (f->system && strstr(f->system, "/system_override")) {
        char *text = without_words(custom, override, 1);
        render_text(r, text);
        turn_end(r, f);
        free(text);
    } else {
        char today[64];
        time_t now = time(NULL);
        strftime(today, sizeof today, "%d %B %Y", localtime(&now));
        render_text(r, "## Metadata\n\nKnowledge Cutoff Date: June 2025\nToday Date: ");
        render_text(r, today);
        render_text(r, f->no_think ? "\nReasoning Mode: /no_think\n\n" : "\nReasoning Mode: /think\n\n");
        render_text(r, "## Custom Instructions\n\n");
        if (custom && custom[0])
            render_text(r, custom);
        else if (!f->no_think)
            render_text(r, "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Your role as an "
                "assistant involves thoroughly exploring questions through a systematic thinking process before "
                "providing the final precise and accurate solutions. This requires engaging in a comprehensive cycle "
                "of analysis, summarizing, exploration, reassessment, reflection, backtracking, and iteration to "
                "develop well-considered thinking process. Please structure your response into two main sections: "
                "Thought and Solution using the specified format: <think> Thought section </think> Solution section. "
                "In the Thought section, detail your reasoning process in steps. Each step should include detailed "
                "considerations such as analysing questions, summarizing relevant findings, brainstorming new ideas, "
                "verifying the accuracy of the current steps, refining any errors, and revisiting previous steps. In "
                "the Solution section, based on various attempts, explorations, and reflections from the Thought "
                "section, systematically present the final solution that you deem correct. The Solution section "
                "should be logical, accurate, and concise and detail necessary steps needed to reach the conclusion.");
        else
            render_text(r, "You are a helpful AI assistant named SmolLM, trained by Hugging Face.");
        render_text(r, "\n\n");
    }
    free(custom);
}

/* A Granite turn: <|start_of_role|>{role}<|end_of_role|>{text}<|end_of_text|>\n */
static void granite_turn(Render *r, const ChatFormat *f, const char *role, const char *text) {
    render_special(r, f->a);
    render_text(r, role);
    render_special(r, f->b);
    render_text(r, text);
    render_special(r, f->eot);
    render_text(r, "\n");
}

/* Granite 3.x's system turn: the system prompt, or the template's own (the
   knowledge cutoff, today's date, who it is). */
static void granite_system(Render *r, const ChatFormat *f) {
    if (f->system) {
        granite_turn(r, f, "system", f->system);
        return;
    }
    char text[256], today[64];
    time_t now = time(NULL);
    strftime(today, sizeof today, "%B %d, %Y", localtime(&now));
    snprintf(text, sizeof text, "Knowledge Cutoff Date: April 2024.\nToday's Date: %s.\nYou are Granite, developed by "
             "IBM. You are a helpful AI assistant.", today);
    granite_turn(r, f, "system", text);
}

/* The start of a conversation: BOS and the system prompt, where the template
   puts them before the first user message. */
static void render_open(Render *r, const ChatFormat *f) {
    char *sys = f->system ? trimmed(f->system) : NULL;
    switch (f->template) {
    case TEMPLATE_LLAMA3:
    case TEMPLATE_LLAMA31:
        render_special(r, f->bos);
        if (f->template == TEMPLATE_LLAMA31 || sys) {
            llama3_header(r, f, "system");
            if (f->template == TEMPLATE_LLAMA31)
                render_text(r, "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n");
            render_text(r, sys ? sys : "");
            render_special(r, f->eot);
        }
        break;
    case TEMPLATE_CHATML:
    case TEMPLATE_QWEN3:
        if (f->system) { /* untrimmed, as the template writes it */
            turn_start(r, f, "system");
            render_text(r, f->system);
            turn_end(r, f);
        }
        break;
    case TEMPLATE_ZEPHYR:
        if (f->system) {
            render_text(r, "<|system|>\n");
            render_text(r, f->system);
            render_special(r, f->eos);
            render_text(r, "\n");
        }
        break;
    case TEMPLATE_MISTRAL:
    case TEMPLATE_GEMMA: render_special(r, f->bos); break; /* Gemma: the system prompt opens the first user turn */
    case TEMPLATE_SMOLLM3: smollm3_system(r, f); break;
    case TEMPLATE_GRANITE: granite_system(r, f); break;
    case TEMPLATE_PHI3: /* <|system|>\n{system}<|end|>\n, if the system prompt is not empty; no BOS */
    case TEMPLATE_PHI4: /* <|system|>{system}<|end|> */
        if (f->system && f->system[0]) {
            render_special(r, f->c);
            phi_turn(r, f, f->system);
        }
        break;
    case TEMPLATE_DEEPSEEK_R1: /* the system prompt right after BOS, untagged */
        render_special(r, f->bos);
        if (f->system) render_text(r, f->system);
        break;
    default: break; /* Llama 2 puts BOS and the system prompt in the first user turn */
    }
    free(sys);
}

/* A user message and the assistant's header (the generation prompt). */
static void render_user(Render *r, const ChatFormat *f, const char *message, int first) {
    char *msg = trimmed(message);
    switch (f->template) {
    case TEMPLATE_LLAMA2: /* [INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] */
        render_special(r, f->bos);
        render_text(r, "[INST] ");
        if (first && f->system) {
            char *sys = trimmed(f->system);
            render_text(r, "<<SYS>>\n");
            render_text(r, sys);
            render_text(r, "\n<</SYS>>\n\n");
            free(sys);
        }
        render_text(r, msg);
        render_text(r, " [/INST]");
        break;
    case TEMPLATE_MISTRAL: /* no system role: the system prompt leads the first message */
        render_text(r, "[INST] ");
        if (first && f->system) {
            render_text(r, f->system);
            render_text(r, "\n\n");
        }
        render_text(r, message);
        render_text(r, " [/INST]");
        break;
    case TEMPLATE_LLAMA3:
    case TEMPLATE_LLAMA31:
        llama3_header(r, f, "user");
        render_text(r, msg);
        render_special(r, f->eot);
        llama3_header(r, f, "assistant");
        break;
    case TEMPLATE_CHATML:
    case TEMPLATE_QWEN3:
    case TEMPLATE_SMOLLM3:
        turn_start(r, f, "user");
        render_text(r, message);
        turn_end(r, f);
        turn_start(r, f, "assistant");
        if (f->no_think) { /* enable_thinking=False: <think>\n\n</think>\n\n (SmolLM3: one newline at the end) */
            render_special(r, f->think_open);
            render_text(r, "\n\n");
            render_special(r, f->think_close);
            render_text(r, f->template == TEMPLATE_QWEN3 ? "\n\n" : "\n");
        }
        break;
    case TEMPLATE_ZEPHYR:
        render_text(r, "<|user|>\n");
        render_text(r, message);
        render_special(r, f->eos);
        render_text(r, "\n<|assistant|>\n");
        break;
    case TEMPLATE_DEEPSEEK_R1: /* <｜User｜>...<｜Assistant｜><think>\n: the reply starts thinking */
        render_special(r, f->a);
        render_text(r, message);
        render_special(r, f->b);
        render_special(r, f->think_open);
        render_text(r, "\n");
        break;
    case TEMPLATE_GRANITE: /* ...user<|end_of_role|>{user}<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|> */
        granite_turn(r, f, "user", message);
        render_special(r, f->a);
        render_text(r, "assistant");
        render_special(r, f->b);
        break;
    case TEMPLATE_PHI3: /* <|user|>\n{user}<|end|>\n<|assistant|>\n (Phi-4: no newlines) */
    case TEMPLATE_PHI4:
        render_special(r, f->a);
        phi_turn(r, f, message);
        render_special(r, f->b);
        if (f->template == TEMPLATE_PHI3) render_text(r, "\n");
        break;
    case TEMPLATE_GEMMA: /* <start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n<start_of_turn>model\n */
        turn_start(r, f, "user");
        if (first && f->system) { /* untrimmed, then a blank line */
            render_text(r, f->system);
            render_text(r, "\n\n");
        }
        render_text(r, msg);
        turn_end(r, f);
        turn_start(r, f, "model");
        break;
    default: fatal("no chat template");
    }
    free(msg);
}

/* What follows the assistant's end-of-turn token, before the next user turn. */
static void render_after_reply(Render *r, const ChatFormat *f) {
    if (f->template == TEMPLATE_CHATML || f->template == TEMPLATE_QWEN3 || f->template == TEMPLATE_SMOLLM3 ||
        f->template == TEMPLATE_ZEPHYR || f->template == TEMPLATE_GEMMA || f->template == TEMPLATE_PHI3 ||
        f->template == TEMPLATE_GRANITE)
        render_text(r, "\n");
}

static volatile sig_atomic_t interrupted = 0;
static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

/* Reads one message: lines ending in a backslash continue it. Returns NULL at
   end of input. */
static char *read_message(FILE *in, int interactive) {
    char *msg = NULL, *line = NULL;
    size_t msg_len = 0, cap = 0;
    for (;;) {
        ssize_t n = getline(&line, &cap, in);
        if (n < 0) break;
        if (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
        int more = n > 0 && line[n - 1] == '\\';
        if (more) line[n - 1] = '\n'; /* the backslash becomes the line break */
        char *grown = realloc(msg, msg_len + (size_t)n + 1);
        if (!grown) fatal("out of memory");
        msg = grown;
        memcpy(msg + msg_len, line, (size_t)n);
        msg_len += (size_t)n;
        msg[msg_len] = '\0';
        if (!more) break;
        if (interactive) fputs("... ", stdout), fflush(stdout);
    }
    free(line);
    return msg;
}

/* Feeds tokens into the model from position *pos on; returns the logits of
   the last one. */
static float *feed(const Model *m, RunState *s, const int *tokens, int n, int *pos) {
    float *logits = process_tokens(m, s, tokens, n, *pos);
    *pos += n;
    return logits;
}

/* A conversation in the terminal (or from a pipe): each message is appended
   to the KV cache, so nothing already processed is computed again. */
static void chat(const Model *m, RunState *s, const Tokenizer *tok, Sampler *sampler, const ChatFormat *f,
                 int stats, const char **stops, int n_stops) {
    const Config *c = &m->config;
    int interactive = isatty(0);
    Render r = {tok, NULL, 0, 0, NULL, 0, 0, 0};
    int pos = 0;       /* next position in the KV cache */
    int pending = -1;  /* a sampled end-of-turn token not yet fed to the model */
    int started = 0;   /* the conversation's opening has been rendered */
    Utf8Printer printer = {{0}, 0, 0, stdout};
    StopFilter reply = {stops, n_stops, NULL, 0, 0, 0, &printer};
    for (;;) {
        if (interactive) fputs("User: ", stdout), fflush(stdout);
        char *message = read_message(stdin, interactive);
        if (!message) break;
        if (strcmp(message, "/exit") == 0) {
            free(message);
            break;
        }
        if (strcmp(message, "/reset") == 0) {
            pos = 0, pending = -1, started = 0;
            printf("(conversation cleared)\n");
            free(message);
            continue;
        }
        r.n = 0, r.strip_next = 0;
        if (pending >= 0) {
            render_special(&r, pending);
            render_after_reply(&r, f);
        }
        if (!started) render_open(&r, f);
        render_user(&r, f, message, !started);
        render_flush(&r);
        free(message);
        if (pos + r.n + 1 >= s->ctx) {
            printf("(the context is full: %d of %d positions are used, and this message needs %d more; "
                   "type /reset to start over)\n", pos, s->ctx, r.n);
            fflush(stdout);
            continue;
        }
        started = 1;
        pending = -1;
        for (int i = 0; i < r.n; i++) sampler_accept(sampler, r.ids[i]);
        float *logits = feed(m, s, r.ids, r.n, &pos);

        /* the reply, until an end-of-turn token, the end of the context, or Ctrl-C */
        if (interactive) fputs("Assistant: ", stdout);
        interrupted = 0;
        signal(SIGINT, on_sigint);
        int prev = -1, n_reply = 0;
        /* a reasoning model's thinking is shown dimmed (marked when not a terminal) */
        const char *think_on = isatty(1) ? "\033[2m" : "[think]", *think_off = isatty(1) ? "\033[0m" : "[/think]";
        int thinking = f->template == TEMPLATE_DEEPSEEK_R1; /* its prompt ends in <think> */
        if (thinking) fputs(think_on, stdout);
        double start = time_seconds();
        for (;;) {
            int next = sample(sampler, logits);
            if (next == f->eot || is_eos(c, next) || next == tok->eos_id) {
                pending = f->eot;
                break;
            }
            const char *piece;
            int len = 0;
            if (next == f->think_open || next == f->think_close) {
                stop_finish(&reply);
                thinking = next == f->think_open;
                fputs(thinking ? think_on : think_off, stdout);
            } else {
                len = decode_piece(tok, prev, next, &piece);
            }
            if (len > 0) stop_put(&reply, piece, len);
            fflush(stdout);
            n_reply++;
            prev = next;
            if (reply.stopped) { /* a stop string ends the reply: the turn is closed as the model would */
                pending = f->eot;
                sampler_accept(sampler, next);
                feed(m, s, &next, 1, &pos);
                break;
            }
            if (interrupted || pos + 2 >= s->ctx) { /* keep room for the end-of-turn token */
                if (!interrupted) printf(" (the context is full: type /reset to start over)");
                pending = f->eot;             /* close the turn as the model would have */
                feed(m, s, &next, 1, &pos);
                break;
            }
            sampler_accept(sampler, next);
            logits = feed(m, s, &next, 1, &pos);
        }
        signal(SIGINT, SIG_DFL);
        stop_finish(&reply);
        if (thinking) fputs(think_off, stdout);
        printf("\n");
        if (stats) {
            double elapsed = time_seconds() - start;
            fprintf(stderr, "(%d tokens, %.2f tok/s, %d of %d positions used)\n", n_reply,
                    elapsed > 0 ? n_reply / elapsed : 0.0, pos, s->ctx);
        }
        fflush(stdout);
    }
    free(r.ids);
    free(r.text);
    free(reply.held);
}

/* ========================================================================== */
/* 9. Views: the model card and the trace page                                */
/* ========================================================================== */

/* --verbose (on stderr) and the trace page: what is running. */
static void print_model_card(FILE *f, const Model *m, const RunState *s, const Tokenizer *t, const char *tokenizer_path) {
    static const char *kinds[] = {"", "SentencePiece BPE", "byte-level BPE"};
    const Config *c = &m->config;
    uint64_t q_dim = (uint64_t)c->n_heads * c->head_dim, kv_dim = (uint64_t)c->n_kv_heads * c->head_dim;
    uint64_t per_layer = 2 * (uint64_t)c->dim + (q_dim + 2 * kv_dim) * c->dim + c->dim * q_dim +
                         3 * (uint64_t)c->hidden_dim * c->dim + (c->qkv_bias ? q_dim + 2 * kv_dim : 0) +
                         (c->qk_norm ? 2 * (uint64_t)c->head_dim : 0) + (c->post_norms ? 2 * (uint64_t)c->dim : 0);
    /* (LongRoPE's factor tables are not parameters: fixed, not learned) */
    uint64_t params = (uint64_t)c->vocab_size * c->dim * (c->tied_classifier ? 1 : 2) + c->dim +
                      per_layer * c->n_layers;
    int threads = max_threads();
    double kv_mb = 2.0 * c->n_layers * s->ctx * kv_dim * (s->kv16 ? 2 : 4) / 1e6;
    fprintf(f, "model       %s (%s format)\n", m->path, c->legacy ? "llama2.c" : "run.c");
    fprintf(f, "shape       dim %d, ffn %d, %d layers, %d query heads sharing %d key/value heads of %d, "
                    "vocab %d, context %d\n", c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
            c->head_dim, c->vocab_size, c->seq_len);
    /* the matrices' types: one, or a mix (a Q4_K_M GGUF, say), counted */
    const Weights *w = &m->weights;
    int count[N_WEIGHT_TYPES] = {0}, kinds_used = 0;
    count[w->token_embedding.type]++;
    if (!c->tied_classifier) count[w->classifier.type]++;
    for (int l = 0; l < c->n_layers; l++) {
        const Matrix *mats[LAYER_MATRICES];
        layer_matrices(&w->layers[l], mats);
        for (int i = 0; i < LAYER_MATRICES; i++) count[mats[i]->type]++;
    }
    char types[160] = "";
    for (int k = 0; k < N_WEIGHT_TYPES; k++)
        if (count[k]) {
            size_t used = strlen(types);
            snprintf(types + used, sizeof types - used, "%s%d %s", kinds_used++ ? " + " : "", count[k], WEIGHT_NAMES[k]);
        }
    fprintf(f, "parameters  %.2fM, weights %s%s%s%s\n", params / 1e6, kinds_used > 1 ? types : WEIGHT_NAMES[c->weight_type],
            c->tied_classifier ? ", classifier tied to the embedding" : "", c->qkv_bias ? ", q/k/v biases" : "",
            c->qk_norm ? ", q/k norms per head" : "");
    if (kinds_used > 1) { /* a mixed file: every matrix's type */
        fprintf(f, "types       token_embedding %s, classifier %s\n", WEIGHT_NAMES[w->token_embedding.type],
                WEIGHT_NAMES[w->classifier.type]);
        for (int l = 0; l < c->n_layers; l++) {
            const LayerWeights *lw = &w->layers[l];
            fprintf(f, "            layer %d: wq %s, wk %s, wv %s, wo %s, w1 %s, w2 %s, w3 %s\n", l,
                    WEIGHT_NAMES[lw->wq.type], WEIGHT_NAMES[lw->wk.type], WEIGHT_NAMES[lw->wv.type],
                    WEIGHT_NAMES[lw->wo.type], WEIGHT_NAMES[lw->w1.type], WEIGHT_NAMES[lw->w2.type],
                    WEIGHT_NAMES[lw->w3.type]);
        }
    }
    int n_sliding = 0, n_no_rope = 0;
    for (int l = 0; l < c->n_layers; l++) n_sliding += w->layers[l].sliding, n_no_rope += !w->layers[l].rope;
    fprintf(f, "rope        theta %g", c->rope_theta);
    if (c->rope_factor != 0.0f)
        fprintf(f, ", Llama 3.1 scaling x%g (original context %d)", c->rope_factor, c->rope_original_seq_len);
    if (c->rope_linear_factor != 1.0f) fprintf(f, ", linear scaling x%g", c->rope_linear_factor);
    if (c->longrope)
        fprintf(f, ", LongRoPE %s factors (original context %d), attention factor %g",
                s->ctx > c->rope_original_seq_len ? "long" : "short", c->rope_original_seq_len, c->rope_attn_factor);
    if (c->rope_dim != c->head_dim) fprintf(f, ", first %d of %d values of each head rotated", c->rope_dim, c->head_dim);
    if (n_sliding && c->rope_local_theta != 0.0f) fprintf(f, "; local layers theta %g", c->rope_local_theta);
    if (n_no_rope) fprintf(f, "; %d layers without RoPE", n_no_rope);
    fprintf(f, "; RMSNorm eps %g%s\n", c->norm_eps, c->post_norms ? ", block outputs normed too" : "");
    if (n_sliding)
        fprintf(f, "attention   sliding window in %d of %d layers: each position sees the last %d\n", n_sliding,
                c->n_layers, c->sliding_window);
    if (c->activation != ACT_SILU || c->attn_softcap > 0.0f || c->final_softcap > 0.0f)
        fprintf(f, "mechanisms  %s gate; soft-caps: scores %g, logits %g (0: none)\n",
                c->activation == ACT_GELU_TANH ? "GELU-tanh" : "SiLU", c->attn_softcap, c->final_softcap);
    fprintf(f, "tokenizer   %s: %s, %d tokens, chat template %s\n", tokenizer_path, kinds[t->kind],
            t->vocab_size, TEMPLATE_NAMES[t->chat_template]);
    fprintf(f, "memory      %.1f MB %s (the file), %.1f MB allocated, of which the KV cache for %d "
                    "positions is %.1f MB (%s)\n", m->size / 1e6, m->read_in ? "read into 2 MB pages" : "mapped",
            allocated_bytes / 1e6, s->ctx, kv_mb,
            s->kv16 ? "fp16" : "fp32");
    fprintf(f, "compute     %d thread%s, %s kernels\n", threads, threads > 1 ? "s" : "", SIMD_NAME);
#if defined(USE_AVX2)
    fprintf(f, "prefetch    rows %d bytes ahead into L2, %d into L1 (0: none); weights %.1f MB a token, L3 %.1f MB "
               "(0: unknown)\n", prefetch_l2_ahead, prefetch_l1_ahead, token_weight_bytes(m) / 1e6, l3_cache_bytes() / 1e6);
#endif
}

/* --trace-html FILE writes one self-contained HTML page (its style, data and
   script inline: it opens from disk, offline, in any current browser) that
   shows a generation from inside:
   1. the tokens, prompt and generated, as chips (their ids and bytes on hover);
   2. each sampled token's candidates, their probabilities as bars, the chosen
      one marked, the ones temperature, top-k, top-p and min-p cut labelled
      (rank_candidates, cut_rule: what --probs prints);
   3. attention: for a layer and head chosen in the page, every position's
      weights over the positions before it (attend_each and attend_panels hand
      them to page_attention), and which query heads share each key/value head;
   4. the logit lens: for each layer and position, the token the residual
      stream after that layer would predict (page_logit_lens);
   5. the model card (print_model_card).
   Nothing is recorded without the flag (s->page is NULL). Attention takes
   n_layers x n_heads x positions^2 floats, so a page holds at most
   MAX_TRACE_WEIGHTS of them: trace_page_capacity positions. */

/* The most positions a page can hold for the model */
static int trace_page_capacity(const Config *c) {
    return (int)floor(sqrt((double)MAX_TRACE_WEIGHTS / ((double)c->n_layers * c->n_heads)));
}

static void build_trace_page(TracePage *page, const Config *c, int capacity) {
    page->capacity = capacity;
    page->n_positions = page->n_steps = 0;
    page->tokens = xcalloc((size_t)capacity, sizeof(int));
    page->attention = xcalloc((size_t)c->n_layers * c->n_heads * capacity * capacity, sizeof(float));
    page->lens_token = xcalloc((size_t)c->n_layers * capacity, sizeof(int));
    page->lens_prob = xcalloc((size_t)c->n_layers * capacity, sizeof(float));
    page->steps = xcalloc((size_t)capacity, sizeof(TraceStep));
}

static void free_trace_page(TracePage *page) {
    free(page->tokens), free(page->attention), free(page->lens_token), free(page->lens_prob), free(page->steps);
}

/* The page is written to PATH.tmp and renamed to PATH once complete, so an
   error on the way (fatal exits) leaves nothing half-written: atexit removes
   the temporary file unless the rename took it. */
static char *page_tmp_path;
static void remove_page_tmp(void) {
    if (page_tmp_path) remove(page_tmp_path);
}

static FILE *open_trace_page(const char *path) {
    size_t len = strlen(path) + 5;
    page_tmp_path = xmalloc(len);
    snprintf(page_tmp_path, len, "%s.tmp", path);
    FILE *f = fopen(page_tmp_path, "wb");
    if (!f) {
        free(page_tmp_path), page_tmp_path = NULL;
        fatal("--trace-html %s: cannot write there: %s", path, strerror(errno));
    }
    atexit(remove_page_tmp);
    return f;
}

/* s as a JSON string, safe inside an HTML <script> element: quotes,
   backslashes, control characters and < > & escaped */
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == '<' || *p == '>' || *p == '&') fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

/* A token as the page shows it: {"id", "text" (token_text), "kind" (1 text,
   2 bytes, 3 control), "bytes" (its piece in hex)} */
static void json_token(FILE *f, const Tokenizer *t, int id) {
    char text[1024];
    int kind = token_text(t, id, text, sizeof text);
    fprintf(f, "{\"id\":%d,\"text\":", id);
    json_string(f, text);
    fprintf(f, ",\"kind\":%d,\"bytes\":\"", kind);
    for (int i = 0; i < t->lengths[id]; i++) fprintf(f, "%02x", (uint8_t)t->pieces[id][i]);
    fputs("\"}", f);
}

/* The floats as base64 of their little-endian bytes (how the page's script
   reads the attention weights back, exactly) */
static void base64_floats(FILE *f, const float *x, size_t n) {
    static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t group[3];
    int filled = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], 4);
        for (int b = 0; b < 4; b++) {
            group[filled++] = (uint8_t)(bits >> (8 * b));
            if (filled == 3) {
                fputc(digits[group[0] >> 2], f), fputc(digits[(group[0] & 3) << 4 | group[1] >> 4], f);
                fputc(digits[(group[1] & 15) << 2 | group[2] >> 6], f), fputc(digits[group[2] & 63], f);
                filled = 0;
            }
        }
    }
    if (filled) {
        if (filled == 1) group[1] = 0;
        fputc(digits[group[0] >> 2], f), fputc(digits[(group[0] & 3) << 4 | group[1] >> 4], f);
        fputc(filled == 2 ? digits[(group[1] & 15) << 2] : '=', f), fputc('=', f);
    }
}

static const char *PAGE_STYLE =
    "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#1b1f24}"
    "h1{font-size:22px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}"
    "p.note{color:#555;margin:4px 0 10px}pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px}"
    ".token{display:inline-block;padding:1px 2px;margin:1px 0;border-radius:3px;white-space:pre;font-family:ui-monospace,monospace}"
    ".token:nth-child(odd){background:#cfe3ff}.token:nth-child(even){background:#ffe2c2}"
    ".token.k2{text-decoration:underline}.token.k3{font-weight:bold}.token.generated{outline:1px solid #2a7}"
    "#steps{max-height:290px;overflow:auto;border:1px solid #eee;padding:6px}"
    ".step{display:inline-block;vertical-align:top;width:250px;margin:0 10px 12px 0;font-size:12px}"
    ".step h3{font-size:12px;margin:0 0 3px;font-weight:600}"
    ".candidate{position:relative;height:17px;margin:1px 0;background:#f2f2f2;white-space:nowrap;overflow:hidden}"
    ".candidate .bar{position:absolute;left:0;top:0;bottom:0;background:#9cc3f0}"
    ".candidate.cut .bar{background:#ddd}.candidate.chosen .bar{background:#4a9}"
    ".candidate span{position:relative;padding-left:4px;font-family:ui-monospace,monospace}"
    ".candidate .rule{color:#a33;font-size:11px}"
    "#attention-controls select{margin-right:12px}#heatmap{border:1px solid #ccc;image-rendering:pixelated;cursor:crosshair}"
    "#attention-info{font-family:ui-monospace,monospace;min-height:1.4em;margin:6px 0}"
    ".kv-group{display:inline-block;border:1px solid #ccc;border-radius:4px;margin:2px 6px 2px 0;padding:2px 4px}"
    ".q-head{display:inline-block;min-width:18px;text-align:center;margin:1px;background:#eee;cursor:pointer}"
    ".q-head.current{background:#4a9;color:#fff}.kv-group.current{border-color:#4a9}"
    "#lens-wrap{overflow:auto;max-height:640px}#lens{border-collapse:collapse;font:11px ui-monospace,monospace}"
    "#lens td,#lens th{border:1px solid #e3e3e3;padding:1px 3px;white-space:pre;max-width:90px;overflow:hidden}"
    "#lens td.final{outline:1px solid #2a7}";

/* The page's script, line by line: it decodes the data and builds every panel. */
static const char *PAGE_SCRIPT[] = {
    "const D = JSON.parse(document.getElementById('trace-data').textContent);",
    "const P = D.positions, L = D.n_layers, H = D.n_heads, KV = D.n_kv_heads, G = H / KV;",
    "const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls;",
    "  if (text !== undefined) e.textContent = text; return e; };",
    "const piece = id => D.pieces[id] !== undefined ? D.pieces[id] : '#' + id;",
    "const pct = p => (100 * p).toFixed(p < 0.001 ? 3 : 1) + '%';",
    "const bytes = atob(D.attention), view = new DataView(new ArrayBuffer(bytes.length));",
    "for (let i = 0; i < bytes.length; i++) view.setUint8(i, bytes.charCodeAt(i));",
    "const weight = (l, h, q, k) => view.getFloat32(4 * (((l * H + h) * P + q) * P + k), true);",
    "/* 1. tokens */",
    "const chips = document.getElementById('token-chips');",
    "D.tokens.forEach((t, i) => {",
    "  const s = el('span', 'token k' + t.kind + (i >= D.n_prompt ? ' generated' : ''), t.text);",
    "  s.title = 'position ' + i + ' \\u00b7 id ' + t.id + ' \\u00b7 bytes ' + (t.bytes.match(/../g) || []).join(' ');",
    "  chips.appendChild(s); });",
    "/* 2. each sampled token's candidates */",
    "const S = D.sampling, off = v => v ? v : 'off';",
    "document.getElementById('sampling').textContent = 'This run: temperature ' + S.temperature + ', top-k ' +",
    "  off(S.top_k) + ', top-p ' + (S.top_p > 0 && S.top_p < 1 ? S.top_p : 'off') + ', min-p ' + off(S.min_p) + '.';",
    "const steps = document.getElementById('steps');",
    "D.steps.forEach(st => {",
    "  const box = el('div', 'step');",
    "  box.appendChild(el('h3', '', 'position ' + st.pos + ': ' + piece(st.chosen) + ' (' + pct(st.p) + ')'));",
    "  st.candidates.forEach(([id, p, cut]) => {",
    "    const row = el('div', 'candidate' + (id === st.chosen ? ' chosen' : '') + (cut ? ' cut' : ''));",
    "    const bar = el('div', 'bar'); bar.style.width = (100 * p).toFixed(2) + '%'; row.appendChild(bar);",
    "    row.appendChild(el('span', '', piece(id) + '  ' + pct(p)));",
    "    if (cut) row.appendChild(el('span', 'rule', ' cut: ' + cut));",
    "    row.title = 'id ' + id; box.appendChild(row); });",
    "  steps.appendChild(box); });",
    "/* 3. attention */",
    "const layerSel = document.getElementById('layer'), headSel = document.getElementById('head');",
    "for (let l = 0; l < L; l++) layerSel.appendChild(el('option', '', 'layer ' + l)).value = l;",
    "for (let h = 0; h < H; h++) headSel.appendChild(el('option', '', 'head ' + h + ' (kv ' + Math.floor(h / G) + ')')).value = h;",
    "const canvas = document.getElementById('heatmap'), cell = Math.max(1, Math.min(14, Math.floor(720 / P)));",
    "canvas.width = canvas.height = P * cell; canvas.dataset.positions = P;",
    "const gqa = document.getElementById('gqa');",
    "for (let g = 0; g < KV; g++) {",
    "  const grp = el('div', 'kv-group', 'kv head ' + g + ': '); grp.dataset.kv = g;",
    "  for (let h = g * G; h < (g + 1) * G; h++) {",
    "    const q = el('span', 'q-head', 'q' + h); q.dataset.head = h;",
    "    q.onclick = () => { headSel.value = h; draw(); }; grp.appendChild(q); }",
    "  gqa.appendChild(grp); }",
    "function draw() {",
    "  const l = +layerSel.value, h = +headSel.value, ctx = canvas.getContext('2d');",
    "  ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, canvas.width, canvas.height);",
    "  for (let q = 0; q < P; q++) for (let k = 0; k <= q; k++) {",
    "    const w = weight(l, h, q, k); if (w <= 0) continue;",
    "    const v = Math.round(255 * (1 - Math.sqrt(w)));",
    "    ctx.fillStyle = 'rgb(' + v + ',' + v + ',255)'; ctx.fillRect(k * cell, q * cell, cell, cell); }",
    "  document.querySelectorAll('.q-head').forEach(e => e.classList.toggle('current', +e.dataset.head === h));",
    "  document.querySelectorAll('.kv-group').forEach(e => e.classList.toggle('current', +e.dataset.kv === Math.floor(h / G)));",
    "}",
    "layerSel.onchange = headSel.onchange = draw;",
    "canvas.onmousemove = e => {",
    "  const r = canvas.getBoundingClientRect(), q = Math.floor((e.clientY - r.top) / cell), k = Math.floor((e.clientX - r.left) / cell);",
    "  if (q < 0 || k < 0 || q >= P || k >= P) return;",
    "  document.getElementById('attention-info').textContent = 'position ' + q + ' ' + D.tokens[q].text + ' \\u2192 position ' +",
    "    k + ' ' + D.tokens[k].text + ': ' + pct(weight(+layerSel.value, +headSel.value, q, k)); };",
    "draw();",
    "/* 4. the logit lens */",
    "const lens = document.getElementById('lens'), head = el('tr');",
    "head.appendChild(el('th', '', 'layer \\\\ input'));",
    "for (let p = 0; p < P; p++) { const th = el('th', '', D.tokens[p].text); th.title = 'position ' + p; head.appendChild(th); }",
    "lens.appendChild(el('thead')).appendChild(head);",
    "const body = lens.appendChild(el('tbody'));",
    "for (let l = 0; l < L; l++) {",
    "  const tr = el('tr'); tr.appendChild(el('th', '', 'after ' + l));",
    "  for (let p = 0; p < P; p++) {",
    "    const id = D.lens.token[l][p], pr = D.lens.prob[l][p];",
    "    const td = el('td', id === D.lens.token[L - 1][p] ? 'final' : '', piece(id));",
    "    td.style.background = 'rgba(74,153,119,' + pr.toFixed(3) + ')';",
    "    td.title = 'layer ' + l + ', position ' + p + ': ' + piece(id) + ' ' + pct(pr); tr.appendChild(td); }",
    "  body.appendChild(tr); }",
    "/* 5. the model card */",
    "document.getElementById('card').textContent = D.card;",
    "document.body.dataset.ready = '1';",
    NULL};

/* The model card as --verbose prints it, as a string */
static char *model_card_text(const Model *m, const RunState *s, const Tokenizer *tok, const char *tokenizer_path) {
    FILE *card = tmpfile();
    if (!card) fatal("--trace-html: cannot make a temporary file: %s", strerror(errno));
    print_model_card(card, m, s, tok, tokenizer_path);
    long len = ftell(card);
    char *text = xcalloc((size_t)(len > 0 ? len : 0) + 1, 1);
    rewind(card);
    if (len > 0 && fread(text, 1, (size_t)len, card) != (size_t)len) fatal("--trace-html: cannot read the model card back");
    fclose(card);
    return text;
}

/* The logit lens as {"token": [[layer 0's P tokens], ...], "prob": [[...], ...]} */
static void json_lens(FILE *f, const TracePage *page, int n_layers, int P) {
    for (int part = 0; part < 2; part++) {
        fputs(part ? ",\"prob\":[" : "{\"token\":[", f);
        for (int l = 0; l < n_layers; l++) {
            fputs(l ? ",[" : "[", f);
            for (int p = 0; p < P; p++) {
                size_t at = (size_t)l * page->capacity + p;
                if (part) fprintf(f, "%s%.9g", p ? "," : "", page->lens_prob[at]);
                else fprintf(f, "%s%d", p ? "," : "", page->lens_token[at]);
            }
            fputc(']', f);
        }
        fputc(']', f);
    }
    fputc('}', f);
}

/* {"id": text, ...} for every token the steps and the lens name */
static void json_pieces(FILE *f, const TracePage *page, const Tokenizer *tok, int n_layers, int P) {
    char *named = xcalloc((size_t)tok->vocab_size, 1);
    for (int i = 0; i < page->n_steps; i++)
        for (int k = 0; k < page->steps[i].n; k++) named[page->steps[i].id[k]] = 1;
    for (int l = 0; l < n_layers; l++)
        for (int p = 0; p < P; p++) named[page->lens_token[(size_t)l * page->capacity + p]] = 1;
    fputc('{', f);
    for (int id = 0, first = 1; id < tok->vocab_size; id++)
        if (named[id]) {
            char text[1024];
            token_text(tok, id, text, sizeof text);
            fprintf(f, "%s\"%d\":", first ? "" : ",", id);
            json_string(f, text);
            first = 0;
        }
    fputc('}', f);
    free(named);
}

/* The attention weights as one base64 string: (n_layers, n_heads, P, P)
   float32, the page's rows cut to the P positions run */
static void json_attention(FILE *f, const TracePage *page, int n_layers, int n_heads, int P) {
    float *rows = xmalloc((size_t)n_layers * n_heads * P * P * sizeof(float));
    for (int lh = 0; lh < n_layers * n_heads; lh++)
        for (int q = 0; q < P; q++)
            memcpy(rows + ((size_t)lh * P + q) * P, page->attention + ((size_t)lh * page->capacity + q) * page->capacity,
                   (size_t)P * sizeof(float));
    fputc('"', f);
    base64_floats(f, rows, (size_t)n_layers * n_heads * P * P);
    fputc('"', f);
    free(rows);
}

/* Writes the page to f, which open_trace_page opened, then moves it to
   path. Its tokens: the P positions run (the first n_prompt of them the
   prompt's), and the last token sampled, which was never run. */
static void write_trace_page(FILE *f, const char *path, const Model *m, const RunState *s, const Tokenizer *tok,
                             const char *tokenizer_path, int n_prompt, const SamplerOptions *o) {
    const Config *c = &m->config;
    const TracePage *page = s->page;
    int P = page->n_positions;
    int last_unrun = page->n_steps && page->steps[page->n_steps - 1].pos == P;
    char *card_text = model_card_text(m, s, tok, tokenizer_path);

    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>run.c trace: ", f);
    for (const char *p = m->path; *p; p++) /* the title: the model's path, escaped */
        if (*p == '<') fputs("&lt;", f); else if (*p == '&') fputs("&amp;", f); else fputc(*p, f);
    fprintf(f, "</title>\n<style>%s</style>\n", PAGE_STYLE);
    /* script errors are counted on the body, so a test (or a reader) sees them */
    fputs("<script>window.onerror = () => { const b = document.body; b.dataset.errors = +b.dataset.errors + 1; };</script>\n"
          "</head>\n<body data-errors=\"0\" data-ready=\"0\">\n<h1>Inside a forward pass</h1>\n"
          "<p class=\"note\">Written by run.c --trace-html: one generation, seen from inside. Hover over anything "
          "for its numbers.</p>\n"
          "<section id=\"tokens-panel\"><h2>1. Tokens</h2><p class=\"note\">The prompt, then the generated tokens "
          "(outlined); hover for the position, id and bytes. Underlined: byte tokens; bold: control tokens.</p>"
          "<div id=\"token-chips\"></div></section>\n"
          "<section id=\"steps-panel\"><h2>2. Sampling</h2><p class=\"note\">Before each generated token, the most "
          "likely candidates after the penalties and the temperature; green: the token chosen; grey and labelled: "
          "removed by temperature 0 (greedy), top-k, top-p or min-p. Scroll for the rest.</p><p class=\"note\" "
          "id=\"sampling\"></p><div id=\"steps\"></div></section>\n"
          "<section id=\"attention-panel\"><h2>3. Attention</h2><p class=\"note\">Row: the position attending "
          "(the query); column: the position attended to (the key). Darker: more weight. Each row sums to 1, and "
          "nothing lies right of the diagonal: a position sees only itself and the ones before it.</p>"
          "<div id=\"attention-controls\"><select id=\"layer\"></select><select id=\"head\"></select></div>"
          "<div id=\"attention-info\"></div><canvas id=\"heatmap\"></canvas>"
          "<p class=\"note\">Grouped-query attention: the query heads in one box share one key/value head "
          "(click one to show it).</p><div id=\"gqa\"></div></section>\n"
          "<section id=\"lens-panel\"><h2>4. The logit lens</h2><p class=\"note\">What the model would predict "
          "next at each position if it stopped after each layer (the final norm and the classifier applied to "
          "the residual stream there), with its probability as the shade; outlined: the same as the last "
          "layer's.</p><div id=\"lens-wrap\"><table id=\"lens\"></table></div></section>\n"
          "<section id=\"card-panel\"><h2>5. The model</h2><pre id=\"card\"></pre></section>\n"
          "<script id=\"trace-data\" type=\"application/json\">\n", f);

    /* the data */
    fputs("{\"model\":", f);
    json_string(f, m->path);
    fputs(",\"card\":", f);
    json_string(f, card_text);
    fprintf(f, ",\"n_layers\":%d,\"n_heads\":%d,\"n_kv_heads\":%d,\"positions\":%d,\"n_prompt\":%d,\n", c->n_layers,
            c->n_heads, c->n_kv_heads, P, n_prompt);
    fprintf(f, "\"sampling\":{\"temperature\":%g,\"top_p\":%g,\"top_k\":%d,\"min_p\":%g},\n\"tokens\":[", o->temperature,
            o->topp, o->top_k, o->min_p);
    for (int i = 0; i < P + last_unrun; i++) {
        if (i) fputc(',', f);
        json_token(f, tok, i < P ? page->tokens[i] : page->steps[page->n_steps - 1].chosen);
    }
    fputs("],\n\"steps\":[", f);
    for (int i = 0; i < page->n_steps; i++) {
        const TraceStep *st = &page->steps[i];
        fprintf(f, "%s{\"pos\":%d,\"chosen\":%d,\"p\":%.9g,\"candidates\":[", i ? "," : "", st->pos, st->chosen, st->chosen_prob);
        for (int k = 0; k < st->n; k++) fprintf(f, "%s[%d,%.9g,\"%s\"]", k ? "," : "", st->id[k], st->prob[k], st->cut[k]);
        fputs("]}", f);
    }
    fputs("],\n\"lens\":", f);
    json_lens(f, page, c->n_layers, P);
    fputs(",\n\"pieces\":", f);
    json_pieces(f, page, tok, c->n_layers, P);
    fputs(",\n\"attention\":", f);
    json_attention(f, page, c->n_layers, c->n_heads, P);
    fputs("}\n</script>\n<script>\n", f);
    for (int i = 0; PAGE_SCRIPT[i]; i++) fprintf(f, "%s\n", PAGE_SCRIPT[i]);
    fputs("</script>\n</body></html>\n", f);
    free(card_text);
    if (fflush(f) != 0 || ferror(f)) fatal("--trace-html %s: cannot write: %s", path, strerror(errno));
    if (fclose(f) != 0) fatal("--trace-html %s: cannot write: %s", path, strerror(errno));
    if (rename(page_tmp_path, path) != 0) fatal("--trace-html %s: cannot move the page there: %s", path, strerror(errno));
    free(page_tmp_path), page_tmp_path = NULL;
    fprintf(stderr, "trace page: %s (%d positions, %d layers x %d heads)\n", path, P, c->n_layers, c->n_heads);
}

/* ========================================================================== */
/* 10. Command line                                                           */
/* ========================================================================== */

/* Chat: the model's recommended sampling (its generation_config.json, which
   export records) for each value the user did not give. Returns which it set. */
static uint32_t use_model_sampling(const Config *c, SamplerOptions *o, uint32_t given) {
    uint32_t use = c->gen_given & ~given;
    if (use & GEN_TEMPERATURE) o->temperature = c->gen_temperature;
    if (use & GEN_TOP_P) o->topp = c->gen_top_p;
    if (use & GEN_TOP_K) o->top_k = c->gen_top_k;
    if (use & GEN_MIN_P) o->min_p = c->gen_min_p;
    if (use & GEN_REPETITION_PENALTY) o->repeat_penalty = c->gen_repetition_penalty;
    return use;
}

/* --verbose in chat: the sampling values in force and where each came from. */
static void print_sampling(const SamplerOptions *o, uint32_t given, uint32_t from_model) {
    static const char *names[5] = {"temperature", "top-p", "top-k", "min-p", "repeat penalty"};
    float values[5] = {o->temperature, o->topp, (float)o->top_k, o->min_p, o->repeat_penalty};
    fprintf(stderr, "sampling   ");
    for (int k = 0; k < 5; k++)
        fprintf(stderr, "%s %s %g (%s)", k ? "," : "", names[k], values[k],
                given & (1u << k) ? "flag" : from_model & (1u << k) ? "the model's generation_config" : "default");
    fprintf(stderr, "\n");
}

static void usage(FILE *f) {
    fprintf(f,
            "Usage:   run MODEL [options]\n"
            "         run -m tokenize -z TOKENIZER -i TEXT\n"
            "Example: run stories15M.bin -z tokenizer.bin -i \"Once upon a time\"\n"
            "Sampling, applied in this order (all but -t and -p off by default):\n"
            "  --repeat-penalty <float>    over the last N tokens: positive logits / R, negative ones * R; default 1\n"
            "  --presence-penalty <float>  minus this from the logit of each token in the last N; default 0\n"
            "  --frequency-penalty <float> minus this times its count in the last N; default 0\n"
            "  --repeat-last-n <int>       N, the penalties' window of recent tokens; default 64\n"
            "  -t <float>  temperature in [0, inf), default 1.0 (0 = greedy)\n"
            "  --top-k <int>    keep the K most likely; default 0 (off)\n"
            "  -p <float>  top-p (nucleus) in [0, 1], default 0.9 (0 or 1 = off)\n"
            "  --min-p <float>  keep those at least P times as likely as the most likely; default 0 (off)\n"
            "  --stop <string>  end the output (each chat reply) before this string; repeatable, up to 8\n"
            "Other options:\n"
            "  -s <int>    random seed, default: the time\n"
            "  -n <int>    positions to run, prompt included, default 256 (0 = the model's maximum)\n"
            "  -i <string> input prompt\n"
            "  -f <path>   read the input prompt from a file\n"
            "  -z <path>   tokenizer file, default: tokenizer.bin beside the model, else in the current directory\n"
            "  -m <string> mode: generate (default), chat, tokenize or perplexity\n"
            "  -y <string> system prompt (chat mode)\n"
            "  -T <int>    threads, default: OMP_NUM_THREADS or all cores (builds with OpenMP)\n"
            "  --template <name>  chat template: " TEMPLATE_LIST "\n"
            "                     (default: the model's own)\n"
            "  --no-think  chat with a qwen3 or smollm3 model: thinking off (an empty thinking block opens each reply)\n"
            "  --kv-cache <type>  fp32 (default) or fp16: the KV cache in half the memory\n"
            "  --mmap      map the model file (start at once, share the page cache) instead of reading it\n"
            "              into 2 MB pages (faster generation); the default maps only files under 8 MB\n"
            "              or over half the memory\n"
            "  --no-mmap   read the model file into 2 MB pages, whatever its size\n"
            "  --stats     chat: tokens/s after each reply\n"
            "  --trace     print each token fed to the model, with its position, on stderr\n"
            "  --verbose   a model card on stderr: shape, weights, tokenizer, memory, threads\n"
            "  --probs <K> generate: after each token, the K most likely with their probabilities,\n"
            "              each marked with the rule that cut it\n"
            "  --trace-html <file>  generate: write a page showing the run from inside (tokens, candidates,\n"
            "              attention of every layer and head, logit lens, model card); it holds at most\n"
            "              2^23 attention weights: -n up to sqrt(8388608 / (layers x heads)) positions\n"
            "  --show      tokenize: the text cut into its tokens (colours on a terminal)\n"
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

/* Without -z: tokenizer.bin beside the model file, else in the current
   directory (llama2.c's default). */
static char *default_tokenizer_path(const char *model_path) {
    const char *name = "tokenizer.bin";
    if (model_path) {
        const char *slash = strrchr(model_path, '/');
        size_t dir_len = slash ? (size_t)(slash - model_path) + 1 : 0;
        char *beside = xmalloc(dir_len + strlen(name) + 1);
        memcpy(beside, model_path, dir_len);
        strcpy(beside + dir_len, name);
        if (access(beside, F_OK) == 0) return beside;
        free(beside);
    }
    char *here = xmalloc(strlen(name) + 1);
    strcpy(here, name);
    return here;
}

#ifndef RUN_NO_MAIN
int main(int argc, char **argv) {
    const char *model_path = NULL, *tokenizer_path = NULL, *prompt = NULL, *prompt_file = NULL;
    const char *mode = "generate", *system_prompt = NULL, *page_path = NULL;
    SamplerOptions sampling = DEFAULT_SAMPLING;
    uint32_t given = 0; /* GEN_*: the sampling values the user gave */
    const char *stops[MAX_STOPS];
    int n_stops = 0;
    long long seed = 0, steps = 256;
    int steps_given = 0, template = -1, stats = 0, trace = 0, verbose = 0, show = 0, show_probs = 0, no_think = 0, kv16 = 0,
        load = LOAD_AUTO;

    int i = 1;
    if (argc >= 2 && argv[1][0] != '-') model_path = argv[i++];
    for (; i < argc; i++) {
        const char *flag = argv[i];
        if (strcmp(flag, "-h") == 0 || strcmp(flag, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(flag, "--stats") == 0 || strcmp(flag, "--trace") == 0 || strcmp(flag, "--verbose") == 0) {
            *(flag[2] == 's' ? &stats : flag[2] == 't' ? &trace : &verbose) = 1;
            continue;
        }
        if (strcmp(flag, "--mmap") == 0 || strcmp(flag, "--no-mmap") == 0) {
            load = flag[2] == 'm' ? LOAD_MMAP : LOAD_READ;
            continue;
        }
        if (strcmp(flag, "--show") == 0 || strcmp(flag, "--no-think") == 0) {
            *(flag[2] == 's' ? &show : &no_think) = 1;
            continue;
        }
        if (strcmp(flag, "--probs") == 0) {
            if (i + 1 >= argc) fatal("option --probs needs a value");
            show_probs = (int)parse_integer(flag, argv[++i], 1, 100);
            continue;
        }
        /* sampling controls, each with its range (see the sampler section) */
        if (strcmp(flag, "--top-k") == 0 || strcmp(flag, "--repeat-last-n") == 0) {
            if (i + 1 >= argc) fatal("option %s needs a value", flag);
            int v = (int)parse_integer(flag, argv[++i], flag[2] == 't' ? 0 : 1, 1 << 20);
            *(flag[2] == 't' ? &sampling.top_k : &sampling.repeat_last_n) = v;
            given |= flag[2] == 't' ? GEN_TOP_K : 0;
            continue;
        }
        if (strcmp(flag, "--min-p") == 0 || strcmp(flag, "--repeat-penalty") == 0 ||
            strcmp(flag, "--presence-penalty") == 0 || strcmp(flag, "--frequency-penalty") == 0) {
            if (i + 1 >= argc) fatal("option %s needs a value", flag);
            const char *value = argv[++i];
            if (flag[3] == 'i') sampling.min_p = (float)parse_number(flag, value, 0.0, 1.0), given |= GEN_MIN_P;
            else if (flag[2] == 'r')
                sampling.repeat_penalty = (float)parse_number(flag, value, 1e-3, 1e3), given |= GEN_REPETITION_PENALTY;
            else if (flag[2] == 'p') sampling.presence_penalty = (float)parse_number(flag, value, -100.0, 100.0);
            else sampling.frequency_penalty = (float)parse_number(flag, value, -100.0, 100.0);
            continue;
        }
        if (strcmp(flag, "--stop") == 0) {
            if (i + 1 >= argc) fatal("option --stop needs a value");
            if (n_stops == MAX_STOPS) fatal("at most %d --stop strings", MAX_STOPS);
            if (argv[i + 1][0] == '\0') fatal("--stop needs a non-empty string");
            stops[n_stops++] = argv[++i];
            continue;
        }
        if (strcmp(flag, "--trace-html") == 0) {
            if (i + 1 >= argc) fatal("option --trace-html needs a file name");
            page_path = argv[++i];
            continue;
        }
        if (strcmp(flag, "--kv-cache") == 0) {
            if (i + 1 >= argc) fatal("option --kv-cache needs a value");
            const char *type = argv[++i];
            if (strcmp(type, "fp16") != 0 && strcmp(type, "fp32") != 0)
                fatal("--kv-cache: unknown type '%s' (fp32, fp16)", type);
            kv16 = strcmp(type, "fp16") == 0;
            continue;
        }
        if (strcmp(flag, "--template") == 0) {
            if (i + 1 >= argc) fatal("option --template needs a value");
            const char *name = argv[++i];
            for (int k = 1; k < N_TEMPLATES; k++)
                if (strcmp(name, TEMPLATE_NAMES[k]) == 0) template = k;
            if (template < 0)
                fatal("unknown chat template '%s' (" TEMPLATE_LIST ")",
                      name);
            continue;
        }
        if (flag[0] != '-' || strlen(flag) != 2) {
            usage(stderr);
            fatal("unexpected argument '%s'", flag);
        }
        if (!strchr("tpsnifzmyT", flag[1])) {
            usage(stderr);
            fatal("unknown option %s", flag);
        }
        if (i + 1 >= argc) fatal("option %s needs a value", flag);
        const char *value = argv[++i];
        switch (flag[1]) {
        case 't': sampling.temperature = (float)parse_number(flag, value, 0.0, 1e6), given |= GEN_TEMPERATURE; break;
        case 'p': sampling.topp = (float)parse_number(flag, value, 0.0, 1.0), given |= GEN_TOP_P; break;
        case 's': seed = parse_integer(flag, value, 0, INT64_MAX); break;
        case 'n': steps = parse_integer(flag, value, 0, INT32_MAX), steps_given = 1; break;
        case 'i': prompt = value; break;
        case 'f': prompt_file = value; break;
        case 'z': tokenizer_path = value; break;
        case 'm': mode = value; break;
        case 'y': system_prompt = value; break;
        case 'T': {
            int threads = (int)parse_integer(flag, value, 1, 1024);
#ifdef _OPENMP
            omp_set_num_threads(threads);
#else
            if (threads > 1) fprintf(stderr, "note: this build has no OpenMP: -T %d runs on one thread\n", threads);
#endif
            break;
        }
        }
    }
    int is_generate = strcmp(mode, "generate") == 0, is_tokenize = strcmp(mode, "tokenize") == 0,
        is_perplexity = strcmp(mode, "perplexity") == 0, is_chat = strcmp(mode, "chat") == 0;
    if (!is_generate && !is_tokenize && !is_perplexity && !is_chat)
        fatal("unknown mode '%s' (expected generate, chat, tokenize or perplexity)", mode);
    if (prompt && prompt_file) fatal("give the prompt with -i or -f, not both");
    if (system_prompt && !is_chat) fprintf(stderr, "note: -y (system prompt) is used only in chat mode; ignored\n");
    if (is_chat && (prompt || prompt_file)) fatal("chat mode reads its messages from the input, not from -i or -f");
    if (page_path && !is_generate) fatal("--trace-html traces a generation: use it in generate mode (-m generate)");
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
    if (have_model) {
        build_model(&model, model_path, load);
        fit_prefetch(token_weight_bytes(&model)); /* how far ahead its rows are asked for */
    }
    char *found_tokenizer = NULL;
    if (!tokenizer_path) tokenizer_path = found_tokenizer = default_tokenizer_path(model_path);
    Tokenizer tok;
    build_tokenizer(&tok, tokenizer_path, have_model ? model.config.vocab_size : 0);

    int n_prompt;
    int *tokens = encode_prompt(&tok, prompt, prompt_len, &n_prompt);

    if (is_tokenize && show) {
        show_tokens(&tok, tokens, n_prompt, isatty(1));
    } else if (is_tokenize) {
        for (int k = 0; k < n_prompt; k++) printf(k ? " %d" : "%d", tokens[k]);
        printf("\n");
    } else if (is_chat) {
        const Config *c = &model.config;
        if (template < 0) template = tok.chat_template;
        if (template == TEMPLATE_NONE)
            fatal("%s: the model has no known chat template: choose one with --template "
                  "(" TEMPLATE_LIST ")", tokenizer_path);
        /* the context: -n, or the model's, up to 4096 positions (the KV cache grows with it) */
        int ctx = steps_given && steps > 0 ? (int)(steps < c->seq_len ? steps : c->seq_len)
                                           : (c->seq_len < 4096 ? c->seq_len : 4096);
        char *asked = NULL;
        if (!system_prompt && isatty(0)) { /* as llama2.c: ask once */
            fputs("Enter system prompt (optional): ", stdout);
            fflush(stdout);
            asked = read_message(stdin, 1);
            if (asked && asked[0]) system_prompt = asked;
        }
        ChatFormat format;
        build_chat_format(&format, &tok, template, system_prompt, no_think);
        RunState state;
        build_state(&state, c, ctx, kv16);
        state.trace = trace;
        uint32_t from_model = use_model_sampling(c, &sampling, given);
        if (verbose) {
            print_model_card(stderr, &model, &state, &tok, tokenizer_path);
            print_sampling(&sampling, given, from_model);
        }
        Sampler sampler;
        build_sampler(&sampler, c->vocab_size, &sampling, seed > 0 ? (uint64_t)seed : (uint64_t)time(NULL));
        chat(&model, &state, &tok, &sampler, &format, stats, stops, n_stops);
        free_sampler(&sampler);
        free_state(&state);
        free(asked);
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
        TracePage page;
        FILE *page_file = NULL;
        if (page_path) { /* refused before anything runs or is written, if the page cannot hold the positions */
            int capacity = trace_page_capacity(c);
            if (ctx > capacity)
                fatal("--trace-html: a page holds at most %d positions of this model (its attention is %d layers x "
                      "%d heads x positions^2 weights, at most %d); -n is %d: give -n %d or less",
                      capacity, c->n_layers, c->n_heads, MAX_TRACE_WEIGHTS, ctx, capacity);
            page_file = open_trace_page(page_path);
            build_trace_page(&page, c, ctx);
        }
        RunState state;
        build_state(&state, c, ctx, kv16);
        state.trace = trace;
        state.page = page_path ? &page : NULL;
        if (verbose) print_model_card(stderr, &model, &state, &tok, tokenizer_path);
        if (is_perplexity) {
            perplexity(&model, &state, tokens, n_prompt);
        } else {
            Sampler sampler;
            uint64_t rng_seed = seed > 0 ? (uint64_t)seed : (uint64_t)time(NULL);
            build_sampler(&sampler, c->vocab_size, &sampling, rng_seed);
            generate(&model, &state, &tok, &sampler, tokens, n_prompt, (int)steps, show_probs, stops, n_stops);
            free_sampler(&sampler);
            if (page_path) write_trace_page(page_file, page_path, &model, &state, &tok, tokenizer_path, n_prompt, &sampling);
        }
        if (page_path) free_trace_page(&page);
        free_state(&state);
    }

    free(tokens);
    free(prompt_buf);
    free(found_tokenizer);
    free_tokenizer(&tok);
    if (have_model) free_model(&model);
    return 0;
}
#endif
