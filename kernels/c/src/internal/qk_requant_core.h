/*
 * qk_requant_core.h: requantization of one accumulator to an output code (docs/arithmetic.md
 * section 5), as static inline functions with the mode as an argument, so that a loop calling
 * them with constant modes compiles to straight-line code for that mode.
 *
 * Inputs: acc is exact (|acc| < 2^33: an A-bit accumulator, or q - z_in of requantize).
 * Channel parameters have been validated by qk__check_requant (qk_internal.h).
 */
#ifndef QK_REQUANT_CORE_H
#define QK_REQUANT_CORE_H

#include <stdint.h>

#include "qk_arith.h"
#include "../../include/qk_types.h"

/* fixed_point, double rounding (section 5.1):
 * t = saturate_int32(acc * 2^max(e,0)); h = srdhm(t, M0, N); y0 = rrs(h, max(-e,0), rnd). */
static inline int64_t qk__rq_fixed_double(int64_t acc, int32_t m0, int32_t e, int n, int rnd)
{
    int left = e > 0 ? e : 0, right = e < 0 ? -e : 0;
    int32_t t = qk__saturate_int32(qk__shl64(acc, left));
    return qk__rounding_right_shift(qk__srdhm(t, m0, n), right, rnd);
}

/* fixed_point, single rounding: y0 = rrs(acc * M0, N - e, rnd) for N - e >= 1 (at most 62),
 * else the exact acc * M0 * 2^(e - N) (|y0| < 2^61: |acc| <= 2^31, M0 < 2^N, e <= 30). */
static inline int64_t qk__rq_fixed_single(int64_t acc, int32_t m0, int32_t e, int n, int rnd)
{
    if (n - e >= 1) {
        return qk__rounding_right_shift(acc * (int64_t)m0, n - e, rnd);
    }
    return qk__shl64(acc * (int64_t)m0, e - n);
}

/* pow2: the real multiplier is 2^-k; y0 = rrs(acc, k, rnd) for k >= 0, else
 * saturate_int32(acc * 2^-k) (section 5.4). */
static inline int64_t qk__rq_pow2(int64_t acc, int32_t k, int rnd)
{
    if (k >= 0) {
        return qk__rounding_right_shift(acc, k, rnd);
    }
    return qk__saturate_int32(qk__shl64(acc, -k));
}

/* The clamped code of y0 + z_y for an integer y0. */
static inline int32_t qk__rq_finish(int64_t y0, int32_t zy, int32_t lo, int32_t hi)
{
    return (int32_t)qk__clamp64(y0 + zy, lo, hi);
}

/* float32 (section 5.2): p = fp32(acc) * m in float32; zero point after or before rounding. */
static inline int32_t qk__rq_float32(int64_t acc, float m, int rnd, int zp_before, int32_t zy, int32_t lo,
                                     int32_t hi)
{
    float x = (float)acc; /* round to nearest even */
    float p = x * m;      /* one float32 multiplication, no contraction */
    if (zp_before) {
        float q = p + (float)zy;
        return (int32_t)qk__f64_to_i64_clamped((double)qk__round_f32(q, rnd), lo, hi);
    }
    return qk__rq_finish(qk__f64_to_i64_clamped((double)qk__round_f32(p, rnd), -(INT64_C(1) << 40),
                                                INT64_C(1) << 40),
                         zy, lo, hi);
}

/* float64 (section 5.3): p = f64(acc) * f64(m) in float64. */
static inline int32_t qk__rq_float64(int64_t acc, float m, int rnd, int zp_before, int32_t zy, int32_t lo,
                                     int32_t hi)
{
    double x = (double)acc; /* exact for |acc| < 2^53 */
    double p = x * (double)m;
    if (zp_before) {
        double q = p + (double)zy;
        return (int32_t)qk__f64_to_i64_clamped(qk__round_f64(q, rnd), lo, hi);
    }
    return qk__rq_finish(qk__f64_to_i64_clamped(qk__round_f64(p, rnd), -(INT64_C(1) << 40), INT64_C(1) << 40),
                         zy, lo, hi);
}

/* Requantize one accumulator of channel c: the general entry (modes read from dp). */
static inline int32_t qk__requant_value(int64_t acc, const qk_datapath *dp, const qk_requant_params *rq, size_t c,
                                        int32_t lo, int32_t hi)
{
    size_t i = rq->channels == 1 ? 0 : c;
    switch (dp->requant) {
    case QK_REQUANT_FIXED_POINT:
        if (dp->fixed_point_rounding == QK_FIXED_POINT_SINGLE) {
            return qk__rq_finish(
                qk__rq_fixed_single(acc, rq->multiplier[i], rq->shift[i], dp->multiplier_bits, dp->rounding),
                rq->y_zero_point, lo, hi);
        }
        return qk__rq_finish(
            qk__rq_fixed_double(acc, rq->multiplier[i], rq->shift[i], dp->multiplier_bits, dp->rounding),
            rq->y_zero_point, lo, hi);
    case QK_REQUANT_FLOAT32:
        return qk__rq_float32(acc, rq->fmultiplier[i], dp->rounding, dp->zero_point_order == QK_ZP_BEFORE_ROUNDING,
                              rq->y_zero_point, lo, hi);
    case QK_REQUANT_FLOAT64:
        return qk__rq_float64(acc, rq->fmultiplier[i], dp->rounding, dp->zero_point_order == QK_ZP_BEFORE_ROUNDING,
                              rq->y_zero_point, lo, hi);
    default: /* QK_REQUANT_POW2 */
        return qk__rq_finish(qk__rq_pow2(acc, rq->shift[i], dp->rounding), rq->y_zero_point, lo, hi);
    }
}

#endif /* QK_REQUANT_CORE_H */
