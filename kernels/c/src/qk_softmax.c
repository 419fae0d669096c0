/* qk_softmax: integer softmax over one axis with an exponential table (section 6.3). */
#include "../include/qk.h"
#include "internal/qk_arith.h"
#include "internal/qk_internal.h"

#define QK__SOFTMAX_ONE (INT32_C(1) << 16)
#define QK__SOFTMAX_MAX_LENGTH ((size_t)1 << 15)

qk_status qk_softmax(const void *x, size_t x_len, size_t outer, size_t length, size_t inner, int32_t x_bits,
                     int32_t x_signed, const int32_t *table, size_t table_len, int32_t y_bits, int32_t y_signed,
                     const qk_datapath *dp, void *y, size_t y_len)
{
    qk_status st;
    size_t count, o, i, t, base;
    int32_t lo, hi, ylo, yhi, zy;
    int binary;
    if (x == NULL || table == NULL || dp == NULL || y == NULL) {
        return QK_ERR_NULL;
    }
    if ((st = qk__check_datapath(dp)) != QK_OK) {
        return st;
    }
    if (x_bits < 1 || x_bits > 8 || (x_signed != 0 && x_signed != 1)) {
        return QK_ERR_BITS;
    }
    if (y_bits < 1 || y_bits > 8 || (y_signed != 0 && y_signed != 1) || (y_bits == 1 && y_signed)) {
        return QK_ERR_BITS;
    }
    zy = y_signed ? -(INT32_C(1) << (y_bits - 1)) : 0;
    qk__code_range(y_bits, y_signed, &ylo, &yhi);
    if (length < 1 || length > QK__SOFTMAX_MAX_LENGTH) {
        return QK_ERR_SHAPE;
    }
    if (!qk__mul_size(outer, length, &count) || !qk__mul_size(count, inner, &count)) {
        return QK_ERR_SIZE;
    }
    if (x_len != count) {
        return QK_ERR_X_LENGTH;
    }
    if (y_len != count) {
        return QK_ERR_Y_LENGTH;
    }
    if (table_len != ((size_t)1 << x_bits) || table[0] != QK__SOFTMAX_ONE) {
        return QK_ERR_PARAM_LENGTH;
    }
    for (t = 1; t < table_len; ++t) {
        if (table[t] < 0 || table[t] > table[t - 1]) {
            return QK_ERR_PARAM_LENGTH;
        }
    }
    qk__code_range(x_bits, x_signed, &lo, &hi);
    binary = x_bits == 1 && x_signed;
    for (i = 0; i < count; ++i) { /* every code checked before any output is written */
        int32_t v = qk__code_at(x, i, x_signed);
        if (v < lo || v > hi || (binary && v == 0)) {
            return QK_ERR_CODE_RANGE;
        }
    }
    if (count == 0) {
        return QK_OK; /* an empty tensor: nothing to compute (outer and inner may be any size) */
    }
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < inner; ++i) {
            int32_t m = lo;
            int64_t total = 0;
            base = o * length * inner + i;
            for (t = 0; t < length; ++t) {
                int32_t v = qk__code_at(x, base + t * inner, x_signed);
                m = v > m ? v : m;
            }
            for (t = 0; t < length; ++t) {
                total += table[m - qk__code_at(x, base + t * inner, x_signed)]; /* <= 2^15 * 2^16 */
            }
            for (t = 0; t < length; ++t) {
                int64_t e = table[m - qk__code_at(x, base + t * inner, x_signed)];
                int64_t v = qk__rounding_divide(e * ((int64_t)1 << y_bits), total, dp->rounding) + zy;
                v = v < ylo ? ylo : (v > yhi ? yhi : v);
                if (y_signed) {
                    ((int8_t *)y)[base + t * inner] = (int8_t)v;
                } else {
                    ((uint8_t *)y)[base + t * inner] = (uint8_t)v;
                }
            }
        }
    }
    return QK_OK;
}
