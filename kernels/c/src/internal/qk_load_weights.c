/* qk__load_weights: weight differences w - z_w as int16 rows for the GEMM (section 4), read
 * from one-code-per-byte storage or unpacked on the fly from 1/2/4-bit rows (section 3).
 *
 * Each row is decoded byte by byte into contiguous int16 values (loops the compiler
 * vectorizes), then, for convolutions whose kernel order differs from the canonical one,
 * permuted; the per-row bounds max|w - z_w| and sum|w - z_w| follow in a separate vectorizable
 * loop. The body is compiled for the baseline target and, where
 * QK__HAVE_X86_AVX2, for AVX2 too (chosen by `isa`, as the GEMM's). */
#include <string.h>

#include "qk_internal.h"

/* Codes of a row minus z into out[0..k): two's complement fields sign-extended by
 * (f ^ half) - half; signed 1-bit codes are 2 f - 1. */
QK__ALWAYS_INLINE void qk__decode_row(const uint8_t *src, size_t k, int32_t packed_bits, int32_t is_signed, int32_t z,
                                      int16_t *restrict out)
{
    size_t j;
    switch (packed_bits) {
    case 0:
        if (is_signed) {
            const int8_t *s = (const int8_t *)src;
            for (j = 0; j < k; ++j) {
                out[j] = (int16_t)(s[j] - z);
            }
        } else {
            for (j = 0; j < k; ++j) {
                out[j] = (int16_t)(src[j] - z);
            }
        }
        return;
    case 4: {
        int32_t half = is_signed ? 8 : 0;
        size_t t, full = k / 2;
        for (t = 0; t < full; ++t) {
            int32_t b = src[t];
            out[2 * t] = (int16_t)((((b & 15) ^ half) - half) - z);
            out[2 * t + 1] = (int16_t)((((b >> 4) ^ half) - half) - z);
        }
        if (2 * full < k) {
            out[2 * full] = (int16_t)((((src[full] & 15) ^ half) - half) - z);
        }
        return;
    }
    case 2: {
        int32_t half = is_signed ? 2 : 0;
        size_t t, full = k / 4;
        for (t = 0; t < full; ++t) {
            int32_t b = src[t];
            out[4 * t] = (int16_t)((((b & 3) ^ half) - half) - z);
            out[4 * t + 1] = (int16_t)(((((b >> 2) & 3) ^ half) - half) - z);
            out[4 * t + 2] = (int16_t)(((((b >> 4) & 3) ^ half) - half) - z);
            out[4 * t + 3] = (int16_t)(((((b >> 6) & 3) ^ half) - half) - z);
        }
        for (j = 4 * full; j < k; ++j) {
            out[j] = (int16_t)(((((src[full] >> (2 * (j & 3))) & 3) ^ half) - half) - z);
        }
        return;
    }
    default: { /* 1 bit */
        int32_t scale = is_signed ? 2 : 1, offset = (is_signed ? 1 : 0) + z;
        size_t t, full = k / 8, u;
        for (t = 0; t < full; ++t) {
            int32_t b = src[t];
            for (u = 0; u < 8; ++u) {
                out[8 * t + u] = (int16_t)(scale * ((b >> u) & 1) - offset);
            }
        }
        for (j = 8 * full; j < k; ++j) {
            out[j] = (int16_t)(scale * ((src[full] >> (j & 7)) & 1) - offset);
        }
        return;
    }
    }
}

QK__ALWAYS_INLINE void qk__load_weights_body(const qk_datapath *dp, const qk_weights *w, size_t m, size_t k,
                                             size_t chan0, const uint32_t *perm, int16_t *tmp, size_t mp, size_t kp,
                                             int16_t *a, int32_t *row_wmax, int64_t *row_wsum)
{
    size_t i, j;
    size_t row_bytes = w->packed_bits ? qk__packed_row_bytes(k, w->packed_bits) : k;
    for (i = 0; i < mp; ++i) {
        int16_t *dst = a + i * kp;
        int32_t wmax = 0;
        int64_t wsum = 0;
        if (i >= m) {
            memset(dst, 0, kp * sizeof(int16_t));
            row_wmax[i] = 0;
            row_wsum[i] = 0;
            continue;
        }
        {
            const uint8_t *src = (const uint8_t *)w->data + (chan0 + i) * row_bytes;
            int32_t z = w->zero_point[w->zero_point_length == 1 ? 0 : chan0 + i];
            if (perm != NULL) { /* decode in canonical order, then move to the kernel order */
                qk__decode_row(src, k, w->packed_bits, dp->w_signed, z, tmp);
                for (j = 0; j < k; ++j) {
                    dst[perm[j]] = tmp[j];
                }
            } else {
                qk__decode_row(src, k, w->packed_bits, dp->w_signed, z, dst);
            }
        }
        memset(dst + k, 0, (kp - k) * sizeof(int16_t));
        for (j = 0; j < k; j += 65536) { /* int32 partial sums: 65536 * 255 < 2^31 */
            size_t end = k - j < 65536 ? k : j + 65536, t;
            int32_t part = 0;
            for (t = j; t < end; ++t) {
                int32_t d = dst[t] < 0 ? -dst[t] : dst[t];
                wmax = d > wmax ? d : wmax;
                part += d;
            }
            wsum += part;
        }
        row_wmax[i] = wmax;
        row_wsum[i] = wsum;
    }
}

static void qk__load_weights_portable(const qk_datapath *dp, const qk_weights *w, size_t m, size_t k, size_t chan0,
                                      const uint32_t *perm, int16_t *tmp, size_t mp, size_t kp, int16_t *a,
                                      int32_t *row_wmax, int64_t *row_wsum)
{
    qk__load_weights_body(dp, w, m, k, chan0, perm, tmp, mp, kp, a, row_wmax, row_wsum);
}

#if QK__HAVE_X86_AVX2
QK__TARGET_AVX2 static void qk__load_weights_avx2(const qk_datapath *dp, const qk_weights *w, size_t m, size_t k,
                                                  size_t chan0, const uint32_t *perm, int16_t *tmp, size_t mp,
                                                  size_t kp, int16_t *a, int32_t *row_wmax, int64_t *row_wsum)
{
    qk__load_weights_body(dp, w, m, k, chan0, perm, tmp, mp, kp, a, row_wmax, row_wsum);
}
#endif

void qk__load_weights(int32_t isa, const qk_datapath *dp, const qk_weights *w, size_t m, size_t k, size_t chan0,
                      const uint32_t *perm, int16_t *tmp, size_t mp, size_t kp, int16_t *a, int32_t *row_wmax,
                      int64_t *row_wsum)
{
#if QK__HAVE_X86_AVX2
    if (QK__USES_AVX2(isa)) {
        qk__load_weights_avx2(dp, w, m, k, chan0, perm, tmp, mp, kp, a, row_wmax, row_wsum);
        return;
    }
#endif
    (void)isa;
    qk__load_weights_portable(dp, w, m, k, chan0, perm, tmp, mp, kp, a, row_wmax, row_wsum);
}
