/* qk_add: residual add of two activation tensors with rescale (section 6.1). */
#include "../include/qk.h"
#include "internal/qk_arith.h"
#include "internal/qk_internal.h"
#include "internal/qk_requant_core.h"

static qk_status qk__check_fixed(const qk_datapath *dp, int32_t m0, int32_t e)
{
    int32_t n = dp->multiplier_bits;
    if (m0 != 0 && (m0 < (INT32_C(1) << (n - 1)) || (n < 31 && m0 >= (INT32_C(1) << n)))) {
        return QK_ERR_MULTIPLIER;
    }
    return (e < -31 || e > 30) ? QK_ERR_SHIFT : QK_OK;
}

/* y0 of section 5.1 (double or single rounding per the datapath) */
static int64_t qk__mbqm(const qk_datapath *dp, int64_t v, int32_t m0, int32_t e)
{
    if (dp->fixed_point_rounding == QK_FIXED_POINT_SINGLE) {
        return qk__rq_fixed_single(v, m0, e, dp->multiplier_bits, dp->rounding);
    }
    return qk__rq_fixed_double(v, m0, e, dp->multiplier_bits, dp->rounding);
}

qk_status qk_add(const void *a, const void *b, size_t count, const qk_add_params *p, const qk_datapath *dp, void *y,
                 size_t y_len)
{
    qk_status st;
    int32_t alo, ahi, lo, hi, zy, sa;
    size_t i;
    int left;
    if (a == NULL || b == NULL || p == NULL || dp == NULL || y == NULL) {
        return QK_ERR_NULL;
    }
    if ((st = qk__check_datapath(dp)) != QK_OK) {
        return st;
    }
    if (y_len != count) {
        return QK_ERR_Y_LENGTH;
    }
    if ((st = qk__check_x_zero_point(dp, p->a_zero_point)) != QK_OK ||
        (st = qk__check_x_zero_point(dp, p->b_zero_point)) != QK_OK) {
        return st;
    }
    if ((st = qk__check_output(p->y_bits, p->y_signed, p->y_zero_point, p->y_min, p->y_max)) != QK_OK) {
        return st;
    }
    switch (dp->requant) {
    case QK_REQUANT_FIXED_POINT:
        if ((st = qk__check_fixed(dp, p->a_multiplier, p->a_shift)) != QK_OK ||
            (st = qk__check_fixed(dp, p->b_multiplier, p->b_shift)) != QK_OK ||
            (st = qk__check_fixed(dp, p->out_multiplier, p->out_shift)) != QK_OK) {
            return st;
        }
        if (p->a_shift > 0 || p->b_shift > 0) {
            /* r_a, r_b <= 1/2 (section 6.1), so e <= 0: a larger exponent leaves the domain in which
             * |a'|, |b'| < 2^(A-4) and the single-rounding product acc * M0 fits int64 */
            return QK_ERR_SHIFT;
        }
        break;
    case QK_REQUANT_FLOAT32:
    case QK_REQUANT_FLOAT64:
        if (!(p->a_fmultiplier >= 0.0f && p->a_fmultiplier <= 3.40282347e38f) ||
            !(p->b_fmultiplier >= 0.0f && p->b_fmultiplier <= 3.40282347e38f)) {
            return QK_ERR_MULTIPLIER;
        }
        break;
    default:
        if (p->a_shift < -30 || p->a_shift > 31 || p->b_shift < -30 || p->b_shift > 31 ||
            p->a_shift - p->b_shift > 32 || p->b_shift - p->a_shift > 32) {
            return QK_ERR_SHIFT;
        }
        break;
    }
    qk__code_range(dp->a_bits, dp->a_signed, &alo, &ahi);
    lo = p->y_min;
    hi = p->y_max;
    zy = p->y_zero_point;
    sa = dp->a_signed;
    left = dp->acc_bits - 4 - dp->a_bits;
    left = left > 0 ? left : 0;
    for (i = 0; i < count; ++i) {
        int32_t ca = qk__code_at(a, i, sa), cb = qk__code_at(b, i, sa), out;
        int64_t da, db;
        if (ca < alo || ca > ahi || cb < alo || cb > ahi ||
            (dp->a_bits == 1 && dp->a_signed && (ca == 0 || cb == 0))) {
            return QK_ERR_CODE_RANGE;
        }
        da = (int64_t)ca - p->a_zero_point;
        db = (int64_t)cb - p->b_zero_point;
        switch (dp->requant) {
        case QK_REQUANT_FIXED_POINT: {
            int64_t sa_ = qk__mbqm(dp, qk__shl64(da, left), p->a_multiplier, p->a_shift);
            int64_t sb_ = qk__mbqm(dp, qk__shl64(db, left), p->b_multiplier, p->b_shift);
            out = qk__rq_finish(qk__mbqm(dp, sa_ + sb_, p->out_multiplier, p->out_shift), zy, lo, hi);
            break;
        }
        case QK_REQUANT_FLOAT32: {
            float pa = (float)da * p->a_fmultiplier; /* two rounded products, one rounded sum */
            float pb = (float)db * p->b_fmultiplier;
            float s = pa + pb;
            s = s == s ? s : 0.0f; /* +inf + -inf (multipliers near FLT_MAX): no defined code */
            if (dp->zero_point_order == QK_ZP_BEFORE_ROUNDING) {
                float q = s + (float)zy;
                q = q < (float)lo ? (float)lo : (q > (float)hi ? (float)hi : q);
                out = (int32_t)qk__round_f32(q, dp->rounding);
            } else {
                float flo = (float)(lo - zy), fhi = (float)(hi - zy);
                s = s < flo ? flo : (s > fhi ? fhi : s);
                out = (int32_t)qk__round_f32(s, dp->rounding) + zy;
            }
            break;
        }
        case QK_REQUANT_FLOAT64: {
            double pa = (double)da * (double)p->a_fmultiplier;
            double pb = (double)db * (double)p->b_fmultiplier;
            double s = pa + pb;
            if (dp->zero_point_order == QK_ZP_BEFORE_ROUNDING) {
                double q = s + (double)zy;
                q = q < (double)lo ? (double)lo : (q > (double)hi ? (double)hi : q);
                out = (int32_t)qk__round_f64(q, dp->rounding);
            } else {
                double dlo = (double)(lo - zy), dhi = (double)(hi - zy);
                s = s < dlo ? dlo : (s > dhi ? dhi : s);
                out = (int32_t)qk__round_f64(s, dp->rounding) + zy;
            }
            break;
        }
        default: {
            int32_t ka = p->a_shift, kb = p->b_shift, k = ka > kb ? ka : kb;
            int64_t v = qk__shl64(da, k - ka) + qk__shl64(db, k - kb); /* |v| < 2^42 */
            int64_t y0;
            if (k >= 0) {
                y0 = qk__rounding_right_shift(v, k, dp->rounding);
            } else { /* saturate_int32(v * 2^-k); |v| >= 2^32 saturates either way */
                y0 = qk__saturate_int32(qk__shl64(qk__clamp64(v, -(INT64_C(1) << 32), INT64_C(1) << 32), -k));
            }
            out = qk__rq_finish(y0, zy, lo, hi);
            break;
        }
        }
        if (p->y_signed) {
            ((int8_t *)y)[i] = (int8_t)out;
        } else {
            ((uint8_t *)y)[i] = (uint8_t)out;
        }
    }
    return QK_OK;
}
