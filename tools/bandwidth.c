/* Memory read bandwidth of this machine: sums a 1 GiB buffer (far larger
   than any cache) with 1 thread and with all of them, best of 5 passes.
   cc -O2 -fopenmp tools/bandwidth.c -o bandwidth && ./bandwidth */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(void) {
    size_t n = (size_t)1 << 27; /* 2^27 uint64 = 1 GiB */
    uint64_t *buf = malloc(n * sizeof(uint64_t));
    if (!buf) return 1;
    for (size_t i = 0; i < n; i++) buf[i] = i;
    int max_threads = 1;
#ifdef _OPENMP
    max_threads = omp_get_max_threads();
#endif
    for (int threads = 1; threads <= max_threads; threads++) {
        double best = 1e30;
        uint64_t total = 0;
        for (int pass = 0; pass < 5; pass++) {
            double t0 = now();
            uint64_t sum = 0;
            long i;
#ifdef _OPENMP
#pragma omp parallel for reduction(+ : sum) num_threads(threads)
#endif
            for (i = 0; i < (long)n; i++) sum += buf[i];
            double t = now() - t0;
            if (t < best) best = t;
            total += sum;
        }
        printf("threads %d: %.2f GB/s (checksum %llu)\n", threads, n * sizeof(uint64_t) / best / 1e9,
               (unsigned long long)(total & 0xff));
    }
    free(buf);
    return 0;
}
