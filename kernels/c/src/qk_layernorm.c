/* qk_layernorm: integer LayerNorm over the last axis (section 6.5). */
#include "../include/qk.h"
#include "internal/qk_arith.h"
#include "internal/qk_internal.h"

#define QK__LN_MAX_LENGTH ((size_t)1 << 14)
#define QK__LN_MAX_W0 ((INT64_C(1) << 62) - 1)
#define QK__LN_FRACTION_BITS 15
#define QK__LN_MAX_SHIFT 16
#define QK__LN_CHUNK 256

/* floor(sqrt(n)), bit by bit. */
static uint64_t qk__isqrt64(uint64_t n)
{
    uint64_t r = 0, bit = (uint64_t)1 << 62;
    while (bit > n) {
        bit >>= 2;
    }
    while (bit != 0) {
        if (n >= r + bit) {
            n -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    return r;
}

qk_status qk_layernorm(const void *x, size_t x_len, size_t rows, size_t length, int32_t x_bits, int32_t x_signed,
                       int64_t eps_term, const int8_t *gamma, size_t gamma_len, int32_t gamma_zero_point,
                       const int32_t *bias, size_t bias_len, const qk_datapath *dp, const qk_requant_params *rq,
                       void *y, size_t y_len, int32_t isa)
{
    qk_status st;
    size_t count, r, i, i0, n;
    int32_t lo, hi, sel, acc[QK__LN_CHUNK];
    int binary, per_element;
    if (x == NULL || dp == NULL || rq == NULL || y == NULL) {
        return QK_ERR_NULL;
    }
    if ((st = qk__check_datapath(dp)) != QK_OK) {
        return st;
    }
    if (x_bits < 1 || x_bits > 8 || (x_signed != 0 && x_signed != 1)) {
        return QK_ERR_BITS;
    }
    if (length < 1 || length > QK__LN_MAX_LENGTH) {
        return QK_ERR_SHAPE;
    }
    if (!qk__mul_size(rows, length, &count)) {
        return QK_ERR_SIZE;
    }
    if (x_len != count) {
        return QK_ERR_X_LENGTH;
    }
    if (y_len != count) {
        return QK_ERR_Y_LENGTH;
    }
    if ((gamma != NULL && gamma_len != length) || (gamma == NULL && gamma_len != 0)) {
        return QK_ERR_PARAM_LENGTH;
    }
    if ((bias != NULL && bias_len != length) || (bias == NULL && bias_len != 0)) {
        return QK_ERR_BIAS_LENGTH;
    }
    if (gamma_zero_point < -128 || gamma_zero_point > 127) {
        return QK_ERR_ZERO_POINT;
    }
    if (eps_term < 0 || eps_term > QK__LN_MAX_W0) {
        return QK_ERR_PARAM_VALUE;
    }
    if ((st = qk__check_requant(dp, rq, length)) != QK_OK) {
        return st;
    }
    if ((st = qk__select_isa(isa, &sel)) != QK_OK) {
        return st;
    }
    qk__code_range(x_bits, x_signed, &lo, &hi);
    binary = x_bits == 1 && x_signed;
    for (i = 0; i < count; ++i) { /* every code checked before any output is written */
        int32_t v = qk__code_at(x, i, x_signed);
        if (v < lo || v > hi || (binary && v == 0)) {
            return QK_ERR_CODE_RANGE;
        }
    }
    per_element = rq->channels != 1;
    n = length;
    for (r = 0; r < rows; ++r) {
        size_t base = r * length;
        int64_t total = 0, v = 0, w0, den;
        int p = 0;
        for (i = 0; i < n; ++i) {
            total += qk__code_at(x, base + i, x_signed); /* |total| <= 2^8 * 2^14 */
        }
        for (i = 0; i < n; ++i) {
            int64_t c = (int64_t)n * qk__code_at(x, base + i, x_signed) - total; /* |c| < 2^23 */
            v += c * c;                                                         /* < 2^60 in all */
        }
        w0 = v > QK__LN_MAX_W0 - eps_term ? QK__LN_MAX_W0 : v + eps_term;
        while (p < QK__LN_MAX_SHIFT && w0 < (INT64_C(1) << (62 - 2 * (p + 1)))) {
            ++p;
        }
        den = (int64_t)qk__isqrt64((uint64_t)(w0 * (INT64_C(1) << (2 * p))) / (uint64_t)n);
        den = den < 1 ? 1 : den;
        for (i0 = 0; i0 < n; i0 += QK__LN_CHUNK) {
            size_t len = n - i0 < QK__LN_CHUNK ? n - i0 : QK__LN_CHUNK;
            for (i = 0; i < len; ++i) {
                size_t k = i0 + i;
                int64_t c = (int64_t)n * qk__code_at(x, base + k, x_signed) - total;
                int64_t g = gamma != NULL ? (int64_t)gamma[k] - gamma_zero_point : 1;
                int64_t t = qk__rounding_divide(g * c * (INT64_C(1) << (QK__LN_FRACTION_BITS + p)), den, dp->rounding);
                acc[i] = qk__saturate_int32(t + (bias != NULL ? bias[k] : 0));
            }
            if (per_element) {
                for (i = 0; i < len; ++i) {
                    qk__requant_row(sel, acc + i, 1, i0 + i, dp, rq, (unsigned char *)y + base + i0 + i);
                }
            } else {
                qk__requant_row(sel, acc, len, 0, dp, rq, (unsigned char *)y + base + i0);
            }
        }
    }
    return QK_OK;
}
