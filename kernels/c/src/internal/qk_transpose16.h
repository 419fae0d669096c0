/* qk__transpose16_bytes: a 16 x 16 byte matrix held in 16 SSE registers (t[i]: row i) transposed in place
 * (t[j]: column j), by four rounds of byte interleaves of rows i and i + 8 (a perfect shuffle: each round
 * rotates the four bits of the row index into the column index). Included by the AVX2 builds of the
 * loops that move bytes between channel-major and channel-minor order. */
#ifndef QK_TRANSPOSE16_H
#define QK_TRANSPOSE16_H

#include "qk_internal.h"

#if QK__HAVE_X86_AVX2
#include <immintrin.h>

QK__TARGET_AVX2 static inline void qk__transpose16_bytes(__m128i *t)
{
    __m128i u[16];
    int round, i;
    for (round = 0; round < 4; ++round) {
        for (i = 0; i < 8; ++i) {
            u[2 * i] = _mm_unpacklo_epi8(t[i], t[i + 8]);
            u[2 * i + 1] = _mm_unpackhi_epi8(t[i], t[i + 8]);
        }
        for (i = 0; i < 16; ++i) {
            t[i] = u[i];
        }
    }
}
#endif

#endif /* QK_TRANSPOSE16_H */
