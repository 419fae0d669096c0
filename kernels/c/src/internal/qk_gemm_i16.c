/* qk__gemm_i16: int16 x int16 -> int32 matrix product with both operands row-major in k.
 *
 * c[i, j] = sum_k a[i, k] * b[j, k]. The 4 x 4 register tile keeps 16 independent int32
 * dot-product reductions over contiguous int16 rows, which compilers vectorize with
 * multiply-add of int16 pairs (SSE2 pmaddwd, AVX2 vpmaddwd). Sums are exact: the caller bounds
 * |a|, |b| <= 255 and kc <= QK__K_CHUNK, so no partial sum leaves int32.
 *
 * The body is written once; qk__gemm_portable compiles it for the baseline target and, where
 * QK__HAVE_X86_AVX2, qk__gemm_avx2 compiles the same body for AVX2. The AVX-512 VNNI kernels
 * (intrinsics) are qk__gemm_avx512 (qk_gemm_avx512.c); qk__gemm_i16 selects among them. */
#include "qk_internal.h"

QK__ALWAYS_INLINE void qk__tile_2x4(size_t kc, const int16_t *a, size_t lda, const int16_t *b, size_t ldb,
                                    int32_t *c, size_t ldc)
{
    const int16_t *a0 = a, *a1 = a + lda;
    const int16_t *b0 = b, *b1 = b + ldb, *b2 = b + 2 * ldb, *b3 = b + 3 * ldb;
    int32_t s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
    size_t k;
    for (k = 0; k < kc; ++k) {
        int32_t x0 = a0[k], x1 = a1[k];
        int32_t y0 = b0[k], y1 = b1[k], y2 = b2[k], y3 = b3[k];
        s00 += x0 * y0;
        s01 += x0 * y1;
        s02 += x0 * y2;
        s03 += x0 * y3;
        s10 += x1 * y0;
        s11 += x1 * y1;
        s12 += x1 * y2;
        s13 += x1 * y3;
    }
    c[0] = s00;
    c[1] = s01;
    c[2] = s02;
    c[3] = s03;
    c += ldc;
    c[0] = s10;
    c[1] = s11;
    c[2] = s12;
    c[3] = s13;
}

QK__ALWAYS_INLINE void qk__gemm_body(size_t m, size_t n, size_t kc, const int16_t *a, size_t lda, const int16_t *b,
                                     size_t ldb, int32_t *c, size_t ldc)
{
    size_t i, j;
    for (i = 0; i < m; i += QK__MR) {
        for (j = 0; j < n; j += QK__NR) {
            qk__tile_2x4(kc, a + i * lda, lda, b + j * ldb, ldb, c + i * ldc + j, ldc);
        }
    }
}

static void qk__gemm_portable(size_t m, size_t n, size_t kc, const int16_t *a, size_t lda, const int16_t *b,
                              size_t ldb, int32_t *c, size_t ldc)
{
    qk__gemm_body(m, n, kc, a, lda, b, ldb, c, ldc);
}

#if QK__HAVE_X86_AVX2
QK__TARGET_AVX2 static void qk__gemm_avx2(size_t m, size_t n, size_t kc, const int16_t *a,
                                                          size_t lda, const int16_t *b, size_t ldb, int32_t *c,
                                                          size_t ldc)
{
    qk__gemm_body(m, n, kc, a, lda, b, ldb, c, ldc);
}
#endif

void qk__gemm_i16(int32_t isa, size_t m, size_t n, size_t kc, const int16_t *a, size_t lda, const int16_t *b,
                  size_t ldb, int32_t *c, size_t ldc)
{
#if QK__HAVE_X86_AVX512_VNNI
    if (isa == QK_ISA_X86_AVX512_VNNI) {
        qk__gemm_avx512(m, n, kc, a, lda, b, ldb, c, ldc);
        return;
    }
#endif
#if QK__HAVE_X86_AVX2
    if (isa == QK_ISA_X86_AVX2) {
        qk__gemm_avx2(m, n, kc, a, lda, b, ldb, c, ldc);
        return;
    }
#endif
    (void)isa;
    qk__gemm_portable(m, n, kc, a, lda, b, ldb, c, ldc);
}
