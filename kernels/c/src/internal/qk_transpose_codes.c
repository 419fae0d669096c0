/* qk__transpose_codes: dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols, bytes
 * (output codes computed per channel row, written where consecutive channels are adjacent: linear's
 * (batch, channel) output). The AVX2 build transposes tiles of 16 x 16 bytes in registers
 * (qk_transpose16.h); the edges, and the portable build, copy byte by byte. */
#include "qk_internal.h"
#include "qk_transpose16.h"

QK__ALWAYS_INLINE void qk__transpose_edge(const uint8_t *src, size_t src_stride, size_t i0, size_t i1, size_t j0,
                                          size_t j1, uint8_t *dst, size_t dst_stride)
{
    size_t i, j;
    for (j = j0; j < j1; ++j) {
        for (i = i0; i < i1; ++i) {
            dst[j * dst_stride + i] = src[i * src_stride + j];
        }
    }
}

static void qk__transpose_codes_portable(const uint8_t *src, size_t rows, size_t cols, size_t src_stride,
                                         uint8_t *dst, size_t dst_stride)
{
    qk__transpose_edge(src, src_stride, 0, rows, 0, cols, dst, dst_stride);
}

#if QK__HAVE_X86_AVX2
QK__TARGET_AVX2 static void qk__transpose_codes_avx2(const uint8_t *src, size_t rows, size_t cols, size_t src_stride,
                                                     uint8_t *dst, size_t dst_stride)
{
    size_t i0, j0, t;
    size_t rows16 = rows / 16 * 16, cols16 = cols / 16 * 16;
    for (i0 = 0; i0 < rows16; i0 += 16) {
        for (j0 = 0; j0 < cols16; j0 += 16) {
            __m128i a[16];
            for (t = 0; t < 16; ++t) {
                a[t] = _mm_loadu_si128((const __m128i *)(const void *)(src + (i0 + t) * src_stride + j0));
            }
            qk__transpose16_bytes(a);
            for (t = 0; t < 16; ++t) { /* a[t]: column j0 + t of rows i0 .. i0 + 16 */
                _mm_storeu_si128((__m128i *)(void *)(dst + (j0 + t) * dst_stride + i0), a[t]);
            }
        }
    }
    qk__transpose_edge(src, src_stride, 0, rows16, cols16, cols, dst, dst_stride);
    qk__transpose_edge(src, src_stride, rows16, rows, 0, cols, dst, dst_stride);
}
#endif

void qk__transpose_codes(int32_t isa, const uint8_t *src, size_t rows, size_t cols, size_t src_stride, uint8_t *dst,
                         size_t dst_stride)
{
#if QK__HAVE_X86_AVX2
    if (QK__USES_AVX2(isa)) {
        qk__transpose_codes_avx2(src, rows, cols, src_stride, dst, dst_stride);
        return;
    }
#endif
    (void)isa;
    qk__transpose_codes_portable(src, rows, cols, src_stride, dst, dst_stride);
}
