/* qk__depthwise_row: one output row of a convolution with one input channel per group.
 *
 * For each tap (i, j) the row of the zero-padded int16 plane is multiplied by the int16 weight
 * and added to the int32 row accumulator: a widening int16 multiply-add along the row that
 * compilers vectorize. Same dispatch scheme as qk__gemm_i16 (portable body, AVX2 copy). */
#include "qk_internal.h"

QK__ALWAYS_INLINE void qk__depthwise_row_body(const int16_t *plane, size_t wp, const int16_t *w, size_t kh,
                                              size_t kw, size_t sw, size_t dh, size_t dw, size_t ow, int32_t *acc)
{
    size_t i, j, col;
    for (col = 0; col < ow; ++col) {
        acc[col] = 0;
    }
    for (i = 0; i < kh; ++i) {
        for (j = 0; j < kw; ++j) {
            int16_t wv = w[i * kw + j];
            const int16_t *src = plane + i * dh * wp + j * dw;
            if (sw == 1) {
                for (col = 0; col < ow; ++col) {
                    acc[col] += (int32_t)wv * (int32_t)src[col];
                }
            } else {
                for (col = 0; col < ow; ++col) {
                    acc[col] += (int32_t)wv * (int32_t)src[col * sw];
                }
            }
        }
    }
}

static void qk__depthwise_row_portable(const int16_t *plane, size_t wp, const int16_t *w, size_t kh, size_t kw,
                                       size_t sw, size_t dh, size_t dw, size_t ow, int32_t *acc)
{
    qk__depthwise_row_body(plane, wp, w, kh, kw, sw, dh, dw, ow, acc);
}

#if QK__HAVE_X86_AVX2
QK__TARGET_AVX2 static void qk__depthwise_row_avx2(const int16_t *plane, size_t wp, const int16_t *w, size_t kh,
                                                   size_t kw, size_t sw, size_t dh, size_t dw, size_t ow,
                                                   int32_t *acc)
{
    qk__depthwise_row_body(plane, wp, w, kh, kw, sw, dh, dw, ow, acc);
}
#endif

void qk__depthwise_row(int32_t isa, const int16_t *plane, size_t wp, const int16_t *w, size_t kh, size_t kw,
                       size_t sw, size_t dh, size_t dw, size_t ow, int32_t *acc)
{
#if QK__HAVE_X86_AVX2
    if (QK__USES_AVX2(isa)) {
        qk__depthwise_row_avx2(plane, wp, w, kh, kw, sw, dh, dw, ow, acc);
        return;
    }
#endif
    (void)isa;
    qk__depthwise_row_portable(plane, wp, w, kh, kw, sw, dh, dw, ow, acc);
}
