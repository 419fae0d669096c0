/* The multiply-accumulate peak of one core, per instruction the integer kernels use: independent
 * chains of vpdpbusd (u8 x s8, AVX-512 VNNI), vpdpwssd (int16 pairs, AVX-512 VNNI) and vpmaddwd +
 * vpaddd (int16 pairs, AVX2), twelve accumulators each so that latency never limits. Prints one line
 * "name GMAC/s" per instruction the CPU has. Built and run by benchmarks/bench_kernels.py. */
#include <stdio.h>
#include <time.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#define STEPS 20000000L

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#define CHAINS(OP) OP(a0); OP(a1); OP(a2); OP(a3); OP(a4); OP(a5); OP(a6); OP(a7); OP(a8); OP(a9); OP(a10); OP(a11)
#define SUM12(T, ADD) ADD(ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7))), ADD(ADD(a8, a9), ADD(a10, a11)))

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static double zmm(int bytes, int *sink)
{
    __m512i a0 = _mm512_set1_epi32(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0,
            a9 = a0, a10 = a0, a11 = a0, x = _mm512_set1_epi32(0x01010101), y = x;
    double t0 = seconds(), t;
    long i;
    if (bytes) {
#define BUSD(a) __asm__ volatile("vpdpbusd %2, %1, %0" : "+v"(a) : "v"(x), "v"(y))
        for (i = 0; i < STEPS; ++i) {
            CHAINS(BUSD);
        }
    } else {
#define WSSD(a) __asm__ volatile("vpdpwssd %2, %1, %0" : "+v"(a) : "v"(x), "v"(y))
        for (i = 0; i < STEPS; ++i) {
            CHAINS(WSSD);
        }
    }
    t = seconds() - t0;
    *sink = _mm512_reduce_add_epi32(SUM12(__m512i, _mm512_add_epi32));
    return (double)STEPS * 12 * (bytes ? 64 : 32) / t / 1e9;
}

__attribute__((target("avx2"))) static double ymm_madd(int *sink)
{
    __m256i a0 = _mm256_set1_epi32(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0,
            a9 = a0, a10 = a0, a11 = a0, x = _mm256_set1_epi16(1), y = x;
    double t0 = seconds(), t;
    long i;
#define MADD(a) __asm__ volatile("vpmaddwd %1, %2, %%ymm15\n\tvpaddd %%ymm15, %0, %0" : "+v"(a) : "v"(x), "v"(y) : "xmm15")
    for (i = 0; i < STEPS; ++i) {
        CHAINS(MADD);
    }
    t = seconds() - t0;
    {
        __m256i s = SUM12(__m256i, _mm256_add_epi32);
        int lanes[8], k;
        _mm256_storeu_si256((__m256i *)lanes, s);
        for (k = 0; k < 8; ++k) {
            *sink += lanes[k];
        }
    }
    return (double)STEPS * 12 * 16 / t / 1e9;
}

int main(void)
{
    int sink = 0;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        printf("vpmaddwd_avx2 %.1f\n", ymm_madd(&sink));
    }
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni")) {
        printf("vpdpwssd_avx512 %.1f\n", zmm(0, &sink));
        printf("vpdpbusd_avx512 %.1f\n", zmm(1, &sink));
    }
    return sink == 42 ? 1 : 0;
}
#else
int main(void)
{
    return 0; /* no x86 vector peak to measure */
}
#endif
