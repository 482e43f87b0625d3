/* How near generation's matrix-vector products come to streaming memory as
   fast as a plain read does. One token's matrices of the TinyLlama-1.1B shape
   (22 layers of wq, wk, wv, wo, w1, w3 and w2, then the 32000-row classifier:
   1.10 GB in q8_0, 0.58 GB in q4_0) are multiplied by one input through
   run.c's own matmul, as generation does, and the q8_0 bytes are read
   (tools/bandwidth.c's read_runs: wide loads, four accumulators, the
   threads taking runs of 4 MB in turn; plainly and prefetching, the faster
   counting), all alternating, round after round, so that the host's drift
   meets all alike. A fourth column reads the q4_0 rows as the q4_0 kernel
   does, shared among the threads alike, with none of its arithmetic
   (loads_only): the gap between it and the read is what the way of reading
   costs, the gap between it and q4_0 what the arithmetic costs. Prints each
   round's GB/s and, at the end, each one's mean and its share of the read's.
   Its use: choosing the x86 kernels' prefetch distances for a machine
   (run.c's prefetch_row: into L2 and into L1, chosen by the core's maker
   unless PREFETCH_L2_AHEAD or PREFETCH_L1_AHEAD fixes them), which it takes
   from the command line like any macro of run.c (the weights are random
   bytes; their values do not matter to the speed):
   cc -O3 -march=native -fopenmp [-DPREFETCH_L2_AHEAD=4608] [-DPREFETCH_L1_AHEAD=2048] tools/stream.c -o stream -lm
   ./stream [ROUNDS] */
#define RUN_NO_MAIN
#include "../run.c"
#define BANDWIDTH_NO_MAIN
#include "bandwidth.c" /* read_runs: the plain read, and now() */

enum { LAYERS = 22, DIM = 2048, KV_DIM = 256, HIDDEN = 5632, VOCAB = 32000, MATRICES = 7 * LAYERS + 1 };

/* One token's matrices, in the order forward reads them, in one type. */
typedef struct {
    Matrix m[MATRICES];
    uint8_t *buf;
    size_t bytes;
} Token;

static void build_token(Token *t, int type) {
    int shapes[7][2] = {{DIM, DIM}, {KV_DIM, DIM}, {KV_DIM, DIM}, {DIM, DIM}, {HIDDEN, DIM}, {HIDDEN, DIM}, {DIM, HIDDEN}};
    t->bytes = 0;
    for (int i = 0; i < MATRICES; i++) {
        int rows = i < 7 * LAYERS ? shapes[i % 7][0] : VOCAB, cols = i < 7 * LAYERS ? shapes[i % 7][1] : DIM;
        t->m[i] = (Matrix){type, rows, cols, cols, NULL};
        t->bytes += matrix_bytes(&t->m[i]);
    }
    size_t huge = (size_t)2 << 20, alloc = (t->bytes + huge - 1) / huge * huge;
    t->buf = aligned_alloc(huge, alloc); /* whole 2 MB pages, as run.c reads its weights */
    if (!t->buf) {
        fprintf(stderr, "stream: cannot allocate %zu bytes\n", alloc);
        exit(1);
    }
#ifdef MADV_HUGEPAGE
    madvise(t->buf, alloc, MADV_HUGEPAGE);
#endif
    size_t at = 0;
    for (int i = 0; i < MATRICES; i++) { /* each matrix's rows: random values, every scale fp16 1.0 */
        Matrix *m = &t->m[i];
        size_t bytes = matrix_bytes(m), group = QGROUP * (q_block_bytes(type) + 2); /* the rows are whole groups */
        m->data = t->buf + at;
        for (size_t j = 0; j < bytes; j++)
            t->buf[at + j] = j % group < 2 * QGROUP ? (j % 2 ? 0x3c : 0) : (uint8_t)((at + j) * 2654435761u >> 13);
        at += bytes;
    }
}

static volatile uint64_t sink; /* the read's sum, kept so that the read is not dropped */

/* One token's products: every matrix by one input, as generation does (in
   one team of threads, as forward starts). */
static void products(const Token *t, float *out, const float *x, const QuantizedVector *xq) {
    OMP(omp parallel)
    for (int i = 0; i < MATRICES; i++) matmul(out, x, xq, NULL, &t->m[i], 1);
}

/* A q4_0 row read as dot_q4_lanes reads it, group by group with the same
   prefetches, the input's activations beside it, but with none of the
   kernel's arithmetic: the bytes are only folded together. */
static uint64_t q4_row_loads(const uint8_t *row, const int8_t *halves, int n_blocks) {
    uint64_t sum = 0;
    for (int b = 0; b < n_blocks; b += QGROUP) { /* this shape's rows are whole groups */
        const uint8_t *group = row + (size_t)b * (QK / 2 + 2);
#if defined(USE_AVX2)
        prefetch_row(group), prefetch_row(group + 64), prefetch_row(group + 128);
#endif
        for (int i = 0; i < QGROUP * (QK / 2 + 2); i += 8) {
            uint64_t w;
            memcpy(&w, group + i, 8);
            sum ^= w;
        }
        for (int i = 0; i < QGROUP * QK; i += 8) {
            uint64_t a;
            memcpy(&a, halves + (size_t)b * QK + i, 8);
            sum ^= a;
        }
    }
    return sum;
}

/* The q4_0 products' stream with no arithmetic: every matrix's rows shared
   among the threads as matmul shares them (units of 4 rows, by stealing),
   each row read by q4_row_loads. What these products would stream at if
   the kernel's work cost nothing: the ceiling of its way of reading. */
static uint64_t loads_only(const Token *t, const QuantizedVector *xq) {
    uint64_t sum = 0;
    OMP(omp parallel reduction(^ : sum))
    for (int i = 0; i < MATRICES; i++) {
        const Matrix *W = &t->m[i];
        int from, to, n_blocks = W->cols_padded / QK;
        share_units((W->rows + 3) / 4);
        while (next_units(&from, &to))
            for (int r = 4 * from; r < 4 * to && r < W->rows; r++) sum ^= q4_row_loads(row_bytes(W, r), xq->halves, n_blocks);
        team_wait();
    }
    return sum;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 8;
    if (rounds < 1) rounds = 1;
    Token q8, q4;
    build_token(&q8, WEIGHT_Q8_0);
    build_token(&q4, WEIGHT_Q4_0);
    static float x[HIDDEN], out[VOCAB];
    for (int i = 0; i < HIDDEN; i++) x[i] = sinf((float)i);
    QuantizedVector xq;
    build_quantized_vector(&xq, HIDDEN);
    quantize_vector(&xq, x, HIDDEN, HIDDEN, QK);
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    printf("%s kernels, %d thread%s", SIMD_NAME, threads, threads > 1 ? "s" : "");
#if defined(USE_AVX2)
    printf(", prefetch into L2 %d bytes ahead, into L1 %d", prefetch_l2_ahead, prefetch_l1_ahead);
#endif
    printf("; GB/s, %d rounds:\n", rounds);
    double sum[4] = {0, 0, 0, 0};
    for (int r = 0; r < rounds; r++) {
        double gbs[5]; /* the read plainly, the read prefetching (the faster counts), q8_0, q4_0, q4_0's loads */
        for (int k = 0; k < 5; k++) {
            double t0 = now();
            size_t bytes = k >= 3 ? q4.bytes : q8.bytes; /* the read reads the q8_0 bytes */
            for (int rep = 0; rep < 3; rep++) {
                if (k < 2) sink = read_runs((const uint64_t *)q8.buf, q8.bytes / 8, threads, RUN_WORDS, k);
                else if (k < 4) products(k == 2 ? &q8 : &q4, out, x, &xq);
                else sink = loads_only(&q4, &xq);
            }
            gbs[k] = 3.0 * bytes / (now() - t0) / 1e9;
        }
        double round[4] = {gbs[0] > gbs[1] ? gbs[0] : gbs[1], gbs[2], gbs[3], gbs[4]}; /* read, q8_0, q4_0, loads */
        for (int k = 0; k < 4; k++) sum[k] += round[k];
        printf("round %d: read %.2f  q8_0 %.2f  q4_0 %.2f  q4_0 loads only %.2f\n", r + 1, round[0], round[1],
               round[2], round[3]);
    }
    printf("mean: read %.2f GB/s, q8_0 %.2f (%.0f%% of the read), q4_0 %.2f (%.0f%%), q4_0 loads only %.2f (%.0f%%)\n",
           sum[0] / rounds, sum[1] / rounds, 100 * sum[1] / sum[0], sum[2] / rounds, 100 * sum[2] / sum[0],
           sum[3] / rounds, 100 * sum[3] / sum[0]);
    free_quantized_vector(&xq);
    free(q8.buf), free(q4.buf);
    return 0;
}
