/* qk__load_weights: weight differences w - z_w as int16 rows for the GEMM (section 4), read
 * from one-code-per-byte storage or unpacked on the fly from 1/2/4-bit rows (section 3). */
#include <string.h>

#include "qk_internal.h"

/* Code i of a packed row (two's complement in `bits` bits; signed 1-bit codes are {-1, +1}). */
static int32_t qk__packed_code(const uint8_t *row, size_t i, int32_t bits, int32_t is_signed)
{
    size_t bit = i * (size_t)bits;
    int32_t v = (row[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
    if (!is_signed) {
        return v;
    }
    if (bits == 1) {
        return v ? 1 : -1;
    }
    return v >= (1 << (bits - 1)) ? v - (1 << bits) : v;
}

void qk__load_weights(const qk_datapath *dp, const qk_weights *w, size_t m, size_t k, size_t chan0,
                      const uint32_t *perm, size_t mp, size_t kp, int16_t *a, int16_t *a_abs, int32_t *row_wmax,
                      int64_t *row_wsum)
{
    size_t i, j;
    size_t row_bytes = w->packed_bits ? qk__packed_row_bytes(k, w->packed_bits) : k;
    memset(a, 0, mp * kp * sizeof(int16_t));
    for (i = 0; i < mp; ++i) {
        int16_t *dst = a + i * kp;
        const uint8_t *src;
        int32_t z, wmax = 0;
        int64_t wsum = 0;
        if (i >= m) {
            row_wmax[i] = 0;
            row_wsum[i] = 0;
            continue;
        }
        src = (const uint8_t *)w->data + (chan0 + i) * row_bytes;
        z = w->zero_point[w->zero_point_length == 1 ? 0 : chan0 + i];
        for (j = 0; j < k; ++j) {
            int32_t code, d;
            if (w->packed_bits) {
                code = qk__packed_code(src, j, w->packed_bits, dp->w_signed);
            } else if (dp->w_signed) {
                code = ((const int8_t *)src)[j];
            } else {
                code = src[j];
            }
            d = code - z;
            dst[perm ? perm[j] : j] = (int16_t)d;
            d = d < 0 ? -d : d;
            wmax = d > wmax ? d : wmax;
            wsum += d;
        }
        row_wmax[i] = wmax;
        row_wsum[i] = wsum;
    }
    if (a_abs != NULL) {
        for (j = 0; j < mp * kp; ++j) {
            a_abs[j] = (int16_t)(a[j] < 0 ? -a[j] : a[j]);
        }
    }
}
