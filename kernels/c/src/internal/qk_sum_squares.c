/* qk__sum_squares: sum_k v[r][k]^2 of each of `rows` rows of kp int16 (kp <= QK__K_CHUNK, |v| <= 255), the
 * factors of the Cauchy-Schwarz bound of saturating datapaths (qk_mm_block.c); qk__sum_squares_bytes the
 * same for rows given as bytes (qk__mm_bytes). Exact in int32 lanes: 32768 * 65025 < 2^31. Portable
 * bodies, AVX2 and AVX-512 builds of them (widening multiply-adds the compilers vectorize). */
#include "qk_internal.h"

QK__ALWAYS_INLINE void qk__sum_squares_body(const int16_t *v, size_t rows, size_t kp, int64_t *out)
{
    size_t r, k;
    for (r = 0; r < rows; ++r) {
        const int16_t *row = v + r * kp;
        int32_t t = 0;
        for (k = 0; k < kp; ++k) {
            t += (int32_t)row[k] * (int32_t)row[k];
        }
        out[r] = t;
    }
}

QK__ALWAYS_INLINE void qk__sum_squares_bytes_body(const qk__mm_bytes *b, size_t rows, int64_t *out)
{
    size_t r, k;
    for (r = 0; r < rows; ++r) {
        const uint8_t *row = b->p + r * b->ld;
        int32_t t = 0;
        for (k = 0; k < b->k; ++k) {
            int32_t d = (int32_t)(row[k] ^ b->flip) - b->zz;
            t += d * d;
        }
        out[r] = t;
    }
}

static void qk__sum_squares_bytes_portable(const qk__mm_bytes *b, size_t rows, int64_t *out)
{
    qk__sum_squares_bytes_body(b, rows, out);
}

static void qk__sum_squares_portable(const int16_t *v, size_t rows, size_t kp, int64_t *out)
{
    qk__sum_squares_body(v, rows, kp, out);
}

#if QK__HAVE_X86_AVX2
QK__TARGET_AVX2 static void qk__sum_squares_avx2(const int16_t *v, size_t rows, size_t kp, int64_t *out)
{
    qk__sum_squares_body(v, rows, kp, out);
}

QK__TARGET_AVX2 static void qk__sum_squares_bytes_avx2(const qk__mm_bytes *b, size_t rows, int64_t *out)
{
    qk__sum_squares_bytes_body(b, rows, out);
}
#endif

#if QK__HAVE_X86_AVX512_VNNI
QK__TARGET_AVX512_VNNI static void qk__sum_squares_bytes_avx512(const qk__mm_bytes *b, size_t rows, int64_t *out)
{
    qk__sum_squares_bytes_body(b, rows, out);
}

QK__TARGET_AVX512_VNNI static void qk__sum_squares_avx512(const int16_t *v, size_t rows, size_t kp, int64_t *out)
{
    qk__sum_squares_body(v, rows, kp, out);
}
#endif

void qk__sum_squares(int32_t isa, const int16_t *v, size_t rows, size_t kp, int64_t *out)
{
#if QK__HAVE_X86_AVX512_VNNI
    if (isa == QK_ISA_X86_AVX512_VNNI) {
        qk__sum_squares_avx512(v, rows, kp, out);
        return;
    }
#endif
#if QK__HAVE_X86_AVX2
    if (QK__USES_AVX2(isa)) {
        qk__sum_squares_avx2(v, rows, kp, out);
        return;
    }
#endif
    (void)isa;
    qk__sum_squares_portable(v, rows, kp, out);
}

void qk__sum_squares_bytes(int32_t isa, const qk__mm_bytes *b, size_t rows, int64_t *out)
{
#if QK__HAVE_X86_AVX512_VNNI
    if (isa == QK_ISA_X86_AVX512_VNNI) {
        qk__sum_squares_bytes_avx512(b, rows, out);
        return;
    }
#endif
#if QK__HAVE_X86_AVX2
    if (QK__USES_AVX2(isa)) {
        qk__sum_squares_bytes_avx2(b, rows, out);
        return;
    }
#endif
    (void)isa;
    qk__sum_squares_bytes_portable(b, rows, out);
}
