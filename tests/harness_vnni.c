/* The harness with run.c's VNNI kernels, on a machine without VNNI: the two
   instructions they use (dpbusd, dpwssd) come from SIMDe (Debian's
   libsimde-dev), an implementation of x86 intrinsics in portable code that
   is independent of this project, so the tests hold the VNNI paths to their
   scalar definitions here too. On a machine with VNNI, make fast runs them
   natively. Built by tests/test_quantized.py with -march=native (AVX2). */
#define _POSIX_C_SOURCE 200809L
#include <immintrin.h>
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512/dpbusd.h>
#include <simde/x86/avx512/dpwssd.h>
#define RUN_VNNI 1
#define RUN_NO_AVX512 1 /* the 256-bit kernels, also on a machine with AVX-512 */
#include "harness.c"
