/* qk_mul: elementwise product of two activation tensors, requantized (section 6.2). */
#include "../include/qk.h"
#include "internal/qk_arith.h"
#include "internal/qk_internal.h"

#define QK__CHUNK 256

qk_status qk_mul(const void *a, size_t a_len, const void *b, size_t b_len, size_t rows, size_t inner, int32_t a_zero_point,
                 int32_t b_zero_point, const qk_datapath *dp, const qk_requant_params *rq, void *y, size_t y_len,
                 int32_t isa)
{
    qk_status st;
    size_t count, r, i0, i;
    int32_t sel, acc[QK__CHUNK];
    int64_t lo, hi;
    int per_row;
    if (a == NULL || b == NULL || dp == NULL || rq == NULL || y == NULL) {
        return QK_ERR_NULL;
    }
    if ((st = qk__check_datapath(dp)) != QK_OK) {
        return st;
    }
    if (!qk__mul_size(rows, inner, &count)) {
        return QK_ERR_SIZE;
    }
    if (a_len != count) {
        return QK_ERR_X_LENGTH;
    }
    if (b_len != count && b_len != rows) {
        return QK_ERR_PARAM_LENGTH;
    }
    per_row = b_len != count; /* then b_len == rows: one factor per row */
    if (y_len != count) {
        return QK_ERR_Y_LENGTH;
    }
    if ((st = qk__check_x_zero_point(dp, a_zero_point)) != QK_OK ||
        (st = qk__check_x_zero_point(dp, b_zero_point)) != QK_OK) {
        return st;
    }
    if ((st = qk__check_requant(dp, rq, 1)) != QK_OK) {
        return st;
    }
    if ((st = qk__select_isa(isa, &sel)) != QK_OK) {
        return st;
    }
    if (count == 0) {
        return QK_OK; /* an empty tensor: nothing to compute (rows may be any size) */
    }
    lo = -(INT64_C(1) << (dp->acc_bits - 1));
    hi = (INT64_C(1) << (dp->acc_bits - 1)) - 1;
    for (r = 0; r < rows; ++r) {
        for (i0 = 0; i0 < inner; i0 += QK__CHUNK) {
            size_t len = inner - i0 < QK__CHUNK ? inner - i0 : QK__CHUNK;
            size_t base = r * inner + i0;
            for (i = 0; i < len; ++i) {
                int64_t av = qk__code_at(a, base + i, dp->a_signed) - (int64_t)a_zero_point;
                int64_t bv = qk__code_at(b, per_row ? r : base + i, dp->a_signed) - (int64_t)b_zero_point;
                int64_t p = av * bv; /* |p| <= 255 * 255 */
                if (p < lo || p > hi) {
                    if (dp->overflow == QK_OVERFLOW_ERROR) {
                        return QK_ERR_OVERFLOW;
                    }
                    if (dp->overflow == QK_OVERFLOW_SATURATE) {
                        p = p < lo ? lo : hi;
                    }
                }
                acc[i] = (int32_t)p;
            }
            if (dp->overflow == QK_OVERFLOW_WRAP) {
                qk__bias_row(sel, acc, len, 0, dp->acc_bits, acc);
            }
            qk__requant_row(sel, acc, len, 0, dp, rq, (unsigned char *)y + base);
        }
    }
    return QK_OK;
}
