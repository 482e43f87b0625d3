/* Memory read bandwidth of this machine, as fast as a program can stream:
   a 1 GiB buffer (far larger than any cache) read with 1 thread and with all
   of them, the best of 10 passes (see below). The threads take it in runs
   of 4 MB, each the next run not yet taken, one after another, so that a
   thread whose core the host holds back for a moment does not leave the
   other waiting at the end (as run.c's matmuls share their rows). Each run
   is read with wide loads into several independent accumulators, so that
   neither the adds nor their latency limit the rate: only memory does. (Each
   thread reading a fixed half, as this tool did before, measured lower on
   this project's shared hosts: alternating, 2 threads, best of 5 passes,
   6 rounds, 61.6 against 65.4 GB/s on average; and in a slow stretch it
   read 37-39 GB/s while run.c's 1.1B q8_0 generation streamed 45, a row of
   `make bench` at 116% of that "ceiling".) The buffer sits in 2 MB pages
   where the system has them (transparent huge pages), as run.c's weights
   do, so that the ceiling is read the way run.c reads (alternating with 4
   KB pages here: 3% higher on average over 10 rounds, within this host's
   noise). The benchmark measures it with a row's threads before each of
   that row's generation runs and after the last, and divides by the
   highest.
   With THREADS, only that many threads are measured. With BYTES as well,
   the buffer is that large and each timed pass reads it over and over, at
   least 1 GiB in all: the ceiling of a model whose weights are BYTES. A
   model that fits in the last-level cache is read from there, every token,
   and so is such a buffer (on a Xeon with a 260 MB L3, stories15M's 61 MB
   fp32 generated at 112% of the 1 GiB read: it was never read from memory).
   Every pass is read twice, once plainly and once asking for the bytes
   ahead as run.c's kernels do on an Intel core (into L2 4.5 KB ahead, into
   L1 2 KB: prefetch_row), and the faster read counts: on a Xeon the
   kernels, prefetching, streamed faster than the plain read (the 1.1B fp32
   row of `make bench` at 103% of it), and the prefetching read there is the
   faster one; on a core where prefetching slows a stream, the plain read is.
   (On a second Xeon, with 2 threads: plain 36.5-37.4 GB/s, prefetching 4.5
   KB ahead 37.6-38.6, 8 KB ahead, as run.c did before, 29.9-30.2.)
   cc -O3 -march=native -fopenmp tools/bandwidth.c -o bandwidth && ./bandwidth [THREADS [BYTES]] */
#define _GNU_SOURCE /* madvise */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__)
#include <immintrin.h>
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Asks for the two cache lines 4.5 KB past p into L2 and 2 KB past it into L1
   (a prefetch is only a hint and never faults, even past the buffer's end). */
static void prefetch_ahead(const uint64_t *p) {
#if defined(__GNUC__)
    const char *c = (const char *)p;
    __builtin_prefetch(c + 4608, 0, 2), __builtin_prefetch(c + 4608 + 64, 0, 2);
    __builtin_prefetch(c + 2048), __builtin_prefetch(c + 2048 + 64);
#else
    (void)p;
#endif
}

/* Sum of words [from, to): 16 words (128 bytes, two cache lines) per step,
   into four accumulators; prefetching ahead or not. */
static uint64_t sum_part(const uint64_t *buf, size_t from, size_t to, int prefetch) {
#if defined(__AVX2__)
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = from;
    for (; i + 16 <= to; i += 16) {
        if (prefetch) prefetch_ahead(buf + i);
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(buf + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(buf + i + 4)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(buf + i + 8)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(buf + i + 12)));
    }
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
    uint64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
#else
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = from, fours = from + (to - from) / 4 * 4;
    for (; i < fours; i += 4) {
        if (prefetch && i % 16 == from % 16) prefetch_ahead(buf + i);
        s0 += buf[i], s1 += buf[i + 1], s2 += buf[i + 2], s3 += buf[i + 3];
    }
    uint64_t sum = s0 + s1 + s2 + s3;
#endif
    for (; i < to; i++) sum += buf[i];
    return sum;
}

/* Words per run that a thread takes at a time: 4 MB, a stream long enough
   for the hardware prefetcher (runs of 1 MB read a little slower). */
#define RUN_WORDS (((size_t)4 << 20) / sizeof(uint64_t))

/* Sum of all n words, `threads` threads taking runs of run_words in turn. */
static uint64_t read_runs(const uint64_t *buf, size_t n, int threads, size_t run_words, int prefetch) {
    uint64_t sum = 0;
    long runs = (long)((n + run_words - 1) / run_words), r;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(dynamic) reduction(+ : sum)
#endif
    for (r = 0; r < runs; r++) {
        size_t from = (size_t)r * run_words, to = from + run_words < n ? from + run_words : n;
        sum += sum_part(buf, from, to, prefetch);
    }
    (void)threads;
    return sum;
}

#ifndef BANDWIDTH_NO_MAIN /* tools/stream.c includes this file for read_runs */
int main(int argc, char **argv) {
    size_t n = (size_t)1 << 27; /* 2^27 uint64 = 1 GiB */
    if (argc > 2) { /* ./bandwidth THREADS BYTES: a buffer of BYTES (rounded up to whole steps of 128) */
        double bytes = atof(argv[2]);
        if (!(bytes >= 4096 && bytes <= 64e9)) {
            fprintf(stderr, "bandwidth: BYTES must be from 4096 to 64e9, not %s\n", argv[2]);
            return 1;
        }
        n = ((size_t)bytes + 127) / 128 * 16;
    }
    /* passes read the buffer `reps` times (at least 1 GiB), in runs of 4 MB or,
       in a small buffer, of an eighth of a thread's share, so that the
       threads end together */
    size_t bytes_read = n * sizeof(uint64_t), reps = (((size_t)1 << 30) + bytes_read - 1) / bytes_read;
    uint64_t *buf = aligned_alloc((size_t)2 << 20, n * sizeof(uint64_t)); /* 2 MB aligned, for whole huge pages */
    if (!buf) return 1;
#ifdef MADV_HUGEPAGE
    madvise(buf, n * sizeof(uint64_t), MADV_HUGEPAGE); /* a hint: without huge pages the buffer stays in 4 KB ones */
#endif
    int max_threads = 1;
#ifdef _OPENMP
    max_threads = omp_get_max_threads();
#endif
    /* first touch, each thread a part (the pages are written before they are read) */
#ifdef _OPENMP
#pragma omp parallel num_threads(max_threads)
#endif
    {
        int t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        for (size_t i = n / nt * t; i < (t == nt - 1 ? n : n / nt * (t + 1)); i++) buf[i] = i;
    }
    int only = argc > 1 ? atoi(argv[1]) : 0; /* ./bandwidth N: N threads only (even past the cores) */
#ifndef _OPENMP
    if (only > 1) only = 1; /* without OpenMP, one thread is all there is */
#endif
    for (int threads = only > 0 ? only : 1; threads <= (only > 0 ? only : max_threads); threads++) {
        double best = 1e30;
        uint64_t total = 0;
        size_t run_words = n / ((size_t)threads * 8) / 16 * 16;
        if (run_words > RUN_WORDS) run_words = RUN_WORDS;
        if (run_words < 16) run_words = 16;
        for (int pass = 0; pass < 10; pass++) { /* 5 plain, 5 prefetching, alternating */
            double t0 = now();
            uint64_t sum = 0;
            for (size_t rep = 0; rep < reps; rep++) sum += read_runs(buf, n, threads, run_words, pass % 2);
            double t = now() - t0;
            if (t < best) best = t;
            total += sum;
        }
        printf("threads %d: %.2f GB/s (checksum %llu)\n", threads, (double)reps * n * sizeof(uint64_t) / best / 1e9,
               (unsigned long long)(total & 0xff));
    }
    free(buf);
    return 0;
}
#endif
