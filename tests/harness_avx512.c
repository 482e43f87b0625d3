/* The harness with run.c's AVX-512 kernels (the GEMM steps, the attention
   kernels and the Q4_K and Q6_K products in 512-bit registers), on any AVX2
   machine: on one without AVX-512 the instructions come from SIMDe (Debian's
   libsimde-dev), an implementation of x86 intrinsics in portable code that
   is independent of this project, so the tests hold the AVX-512 paths to
   their scalar definitions everywhere. On a machine with AVX-512 (and VNNI)
   SIMDe passes them to the real instructions, and make fast runs them
   natively. Built by tests/test_quantized.py with -march=native. */
#define _POSIX_C_SOURCE 200809L
#include <immintrin.h>
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#if !defined(__AVX512F__)
/* one conversion this SIMDe (0.7.4) lacks: 16 int32 to float, rounded to
   nearest as the instruction and C's conversion both do */
static simde__m512 cvtepi32_ps_512(simde__m512i a) {
    simde__m512i_private in = simde__m512i_to_private(a);
    simde__m512_private out;
    for (int i = 0; i < 16; i++) out.f32[i] = (float)in.i32[i];
    return simde__m512_from_private(out);
}
#define _mm512_cvtepi32_ps cvtepi32_ps_512
/* and 16 halves to float (an fp16 KV cache's keys and values), each by F16C */
static simde__m512 cvtph_ps_512(simde__m256i a) {
    simde__m256i_private in = simde__m256i_to_private(a);
    simde__m512_private out;
    for (int i = 0; i < 16; i++) out.f32[i] = _cvtsh_ss(in.u16[i]);
    return simde__m512_from_private(out);
}
#define _mm512_cvtph_ps cvtph_ps_512
/* and SIMDe 0.7.4's alias of the 512-bit madd takes the masked form's four
   arguments: the plain one, by its own name */
#undef _mm512_madd_epi16
#define _mm512_madd_epi16 simde_mm512_madd_epi16
#endif
#define RUN_AVX512 1
#include "harness.c"
