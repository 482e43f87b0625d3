/* Arithmetic speed of run.c's kernels on one thread, with their data in cache:
   the ceiling on tokens/s once memory is not the limit. For each weight type,
   the dot product (generation: one token per weight row), the tile (prompt:
   2 rows x 4 tokens) and, for q8_0 and q4_0, the column (generation: 4 rows x
   1 token), on rows of 2048 weights, then the GEMM steps that prompts
   take (a step's rows x a panel of 16 tokens); prints billions of
   multiply-adds per second, best of 5 runs. Built like `make fast`:
   cc -O3 -march=native tools/kernels.c -o kernels -lm && ./kernels */
#define RUN_NO_MAIN
#include "../run.c"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

enum { N = 2048, NB = N / QK, REPS = 20000 };
enum { ROW8 = NB * (QK + 2), ROW4 = NB * (QK / 2 + 2) }; /* bytes of a q8_0 and a q4_0 row, scales with their blocks */

/* Every result feeds `sink`, so that the compiler cannot drop any work. */
static volatile float sink;

enum { DOT, TILE, COLUMN };

static double best_gmacs(int type, int kernel, float *w, float *x, const uint8_t *w8, const uint8_t *w4,
                         const uint8_t *wk, QuantizedVector *xq) {
    size_t k_row = (size_t)N / QK_K * (type == WEIGHT_Q4_K ? Q4K_BYTES : Q6K_BYTES);
    double best = 0;
    for (int run = 0; run < 5; run++) {
        float total = 0, out[2][4];
        double t0 = now();
        for (int r = 0; r < REPS; r++) {
            if (kernel == COLUMN) {
                for (int t = 0; t < 2; t++) { /* 8 dot products, as many as a tile */
                    float column[4];
                    if (type == WEIGHT_Q8_0) column_q8(w8, &xq[t], NB, column);
                    else column_q4(w4, &xq[t], NB, column);
                    total += column[0] + column[1] + column[2] + column[3];
                }
            } else if (kernel == TILE) {
                if (type == WEIGHT_F32) tile_f32(w, w + N, x, N, out);
                else if (type == WEIGHT_Q8_0) tile_q8(w8, w8 + ROW8, xq, NB, out);
                else if (type == WEIGHT_Q4_0) tile_q4(w4, w4 + ROW4, xq, NB, out);
                else if (type == WEIGHT_Q4_K) tile_q4k(wk, wk + k_row, xq, N / QK_K, out);
                else tile_q6k(wk, wk + k_row, xq, N / QK_K, out);
                for (int k = 0; k < 8; k++) total += out[k / 4][k % 4];
            } else {
                for (int k = 0; k < 8; k++) { /* 8 dot products, as many as a tile */
                    int row = k % 2, t = k / 2;
                    if (type == WEIGHT_F32) total += dot_f32(w + row * N, x + t * N, N);
                    else if (type == WEIGHT_Q8_0) total += dot_q8(w8 + row * ROW8, &xq[t], NB);
                    else if (type == WEIGHT_Q4_0) total += dot_q4(w4 + row * ROW4, &xq[t], NB);
                    else if (type == WEIGHT_Q4_K) total += dot_q4k(wk + row * k_row, &xq[t], N / QK_K);
                    else total += dot_q6k(wk + row * k_row, &xq[t], N / QK_K);
                }
            }
        }
        double seconds = now() - t0;
        sink = total;
        double gmacs = 8.0 * N * REPS / seconds / 1e9;
        if (gmacs > best) best = gmacs;
    }
    return best;
}

int main(void) {
    uint64_t rng = 7;
    float *w = xmalloc(2 * N * sizeof(float)), *x = xmalloc(4 * N * sizeof(float));
    /* 4 rows (a column's), 2 for the others; random values, each group's 8 scales 2^-7 (fp16 0x2000) */
    uint8_t *w8 = xmalloc(4 * ROW8), *w4 = xmalloc(4 * ROW4);
    QuantizedVector xq[4];
    for (int i = 0; i < 2 * N; i++) w[i] = random_f32(&rng) - 0.5f;
    for (int i = 0; i < 4 * ROW8; i++) w8[i] = i % (QGROUP * (QK + 2)) < 2 * QGROUP ? (i % 2 ? 0x20 : 0) : (uint8_t)(random_u32(&rng) % 255 - 127);
    for (int i = 0; i < 4 * ROW4; i++) w4[i] = i % (QGROUP * (QK / 2 + 2)) < 2 * QGROUP ? (i % 2 ? 0x20 : 0) : (uint8_t)random_u32(&rng);
    uint8_t *wk = xmalloc(2 * (N / QK_K) * Q6K_BYTES); /* K blocks of either type, d and dmin 2^-7 */
    for (int i = 0; i < 2 * (N / QK_K) * Q6K_BYTES; i++) wk[i] = (uint8_t)random_u32(&rng);
    for (int b = 0; b < 2 * (N / QK_K); b++) {
        wk[b * Q4K_BYTES + 1] = wk[b * Q4K_BYTES + 3] = 0x20, wk[b * Q4K_BYTES] = wk[b * Q4K_BYTES + 2] = 0;
        wk[b * Q6K_BYTES + 209] = 0x20, wk[b * Q6K_BYTES + 208] = 0;
    }
    for (int i = 0; i < 4 * N; i++) x[i] = random_f32(&rng) - 0.5f;
    for (int t = 0; t < 4; t++) {
        build_quantized_vector(&xq[t], N);
        quantize_vector(&xq[t], x + t * N, N, N, QK_K); /* blocks of 256 serve every type */
    }
    printf("kernels (%s, 1 thread, in cache), billions of multiply-adds per second:\n", SIMD_NAME);
    for (int type = WEIGHT_F32; type < N_WEIGHT_TYPES; type++) {
        printf("%s dot %.1f tile %.1f", WEIGHT_NAMES[type], best_gmacs(type, DOT, w, x, w8, w4, wk, xq),
               best_gmacs(type, TILE, w, x, w8, w4, wk, xq));
        if (type == WEIGHT_Q8_0 || type == WEIGHT_Q4_0) printf(" column %.1f", best_gmacs(type, COLUMN, w, x, w8, w4, wk, xq));
        printf("\n");
    }
    /* the GEMM steps of prompt processing: a step's rows against a panel of 16 tokens */
    float *panel = xmalloc((size_t)N * GEMM_TOKENS * GEMM_PANELS * sizeof(float)), *w6 = xmalloc((size_t)GEMM_ROWS * N * sizeof(float));
    for (int i = 0; i < N * GEMM_TOKENS * GEMM_PANELS; i++) panel[i] = random_f32(&rng) - 0.5f;
    for (int i = 0; i < GEMM_ROWS * N; i++) w6[i] = random_f32(&rng) - 0.5f;
    int16_t *w16 = xmalloc((size_t)GEMM_ROWS * N * sizeof(int16_t)), *x16 = xmalloc((size_t)N * GEMM_TOKENS * sizeof(int16_t));
    uint8_t *wu = xmalloc((size_t)GEMM_ROWS * N);
    int8_t *x8 = xmalloc((size_t)N * GEMM_TOKENS);
    float *gs = xmalloc((size_t)GEMM_ROWS * NB * sizeof(float)), *gm = xmalloc((size_t)GEMM_ROWS * NB * sizeof(float));
    float *xs = xmalloc((size_t)NB * GEMM_TOKENS * sizeof(float));
    int32_t *xsum = xmalloc((size_t)NB * GEMM_TOKENS * sizeof(int32_t));
    for (int i = 0; i < GEMM_ROWS * N; i++) w16[i] = (int16_t)(random_u32(&rng) % 255 - 127), wu[i] = random_u32(&rng) % 16;
    for (int i = 0; i < N * GEMM_TOKENS; i++) x16[i] = (int16_t)(random_u32(&rng) % 255 - 127), x8[i] = (int8_t)x16[i];
    for (int i = 0; i < GEMM_ROWS * NB; i++) gs[i] = 0.01f, gm[i] = 0.08f;
    for (int i = 0; i < NB * GEMM_TOKENS; i++) xs[i] = 0.01f, xsum[i] = (int32_t)(random_u32(&rng) % 1000);
    const char *names[] = {"fp32 gemm_f32", Q8_0_AS_BYTES ? "q6_k gemm_i16" : "q8_0/q6_k gemm_i16",
                           Q8_0_AS_BYTES ? "q8_0/q4_0/q4_k gemm_u8" : "q4_0/q4_k gemm_u8"};
    int step_rows[] = {GEMM_ROWS, GEMM_ROWS_I16, GEMM_ROWS};
    for (int kind = 0; kind < 3; kind++) {
#if !defined(QUANTIZED_PANELS)
        if (kind > 0) break; /* quantized prompts take the tiles in this build */
#endif
        double best = 0;
        for (int run = 0; run < 5; run++) {
            float out[GEMM_ROWS][GEMM_TOKENS], total = 0;
            double t0 = now();
            for (int r = 0; r < REPS / 12; r++) {
                if (kind == 0) gemm_f32(w6, N, GEMM_ROWS, panel, GEMM_TOKENS, N, out);
#if defined(QUANTIZED_PANELS)
                else if (kind == 1) gemm_i16(w16, gs, NB, x16, xs, out);
                else gemm_u8(wu, gs, gm, NB, x8, xs, xsum, out);
#endif
                total += out[r % step_rows[kind]][r % GEMM_TOKENS];
            }
            sink = total;
            double gmacs = (double)step_rows[kind] * GEMM_TOKENS * N * (REPS / 12) / (now() - t0) / 1e9;
            if (gmacs > best) best = gmacs;
        }
        printf("%s (%d rows x %d tokens) %.1f\n", names[kind], step_rows[kind], GEMM_TOKENS, best);
    }
#if defined(USE_AVX512)
    /* with AVX-512, the steps on two panels at once (the second right after the first) */
    int16_t *x16_2 = xmalloc((size_t)2 * N * GEMM_TOKENS * sizeof(int16_t));
    int8_t *x8_2 = xmalloc((size_t)2 * N * GEMM_TOKENS);
    float *xs_2 = xmalloc((size_t)2 * NB * GEMM_TOKENS * sizeof(float));
    int32_t *xsum_2 = xmalloc((size_t)2 * NB * GEMM_TOKENS * sizeof(int32_t));
    for (int i = 0; i < 2 * N * GEMM_TOKENS; i++) x16_2[i] = x16[i % (N * GEMM_TOKENS)], x8_2[i] = x8[i % (N * GEMM_TOKENS)];
    for (int i = 0; i < 2 * NB * GEMM_TOKENS; i++) xs_2[i] = 0.01f, xsum_2[i] = xsum[i % (NB * GEMM_TOKENS)];
    const char *pair_names[] = {"fp32 gemm_f32_pair", "q6_k gemm_i16_pair", "q8_0/q4_0/q4_k gemm_u8_pair"};
    for (int kind = 0; kind < 3; kind++) {
        double best = 0;
        for (int run = 0; run < 5; run++) {
            float out[2][GEMM_ROWS][GEMM_TOKENS], total = 0;
            double t0 = now();
            for (int r = 0; r < REPS / 24; r++) {
                if (kind == 0) gemm_f32_pair(w6, N, GEMM_ROWS, panel, (size_t)N * GEMM_TOKENS, GEMM_TOKENS, N, out);
                else if (kind == 1) gemm_i16_pair(w16, gs, NB, x16_2, xs_2, out);
                else gemm_u8_pair(wu, gs, gm, NB, x8_2, xs_2, xsum_2, out);
                total += out[r % 2][r % step_rows[kind]][r % GEMM_TOKENS];
            }
            sink = total;
            double gmacs = 2.0 * step_rows[kind] * GEMM_TOKENS * N * (REPS / 24) / (now() - t0) / 1e9;
            if (gmacs > best) best = gmacs;
        }
        printf("%s (%d rows x 2 panels of %d tokens) %.1f\n", pair_names[kind], step_rows[kind], GEMM_TOKENS, best);
    }
#endif
    return 0;
}
