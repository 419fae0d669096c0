/*
 * qk_arith.h: the integer primitives of docs/arithmetic.md, free of undefined behaviour.
 *
 * Internal header (static inline). Signed overflow and shifts of negative values never occur:
 * shifts and wrapping arithmetic are done on uint64_t, and unsigned results are mapped back to
 * signed types by qk__u64_to_i64 / qk__u32_to_i32, which compilers reduce to nothing.
 */
#ifndef QK_ARITH_H
#define QK_ARITH_H

#include <stdint.h>

#include "../../include/qk_types.h"

/* The int64_t whose two's-complement representation is u (well defined for every u). */
static inline int64_t qk__u64_to_i64(uint64_t u)
{
    if (u <= (uint64_t)INT64_MAX) {
        return (int64_t)u;
    }
    return -(int64_t)(~u) - 1;
}

static inline int32_t qk__u32_to_i32(uint32_t u)
{
    if (u <= (uint32_t)INT32_MAX) {
        return (int32_t)u;
    }
    return -(int32_t)(~u) - 1;
}

/* floor(v / 2^k) for 0 <= k <= 63: an arithmetic right shift computed on unsigned bits. */
static inline int64_t qk__asr64(int64_t v, int k)
{
    uint64_t sign = v < 0 ? ~(uint64_t)0 : 0;
    return qk__u64_to_i64((((uint64_t)v ^ sign) >> k) ^ sign);
}

/* v * 2^k for 0 <= k <= 62 when the exact result fits int64_t (callers guarantee it). */
static inline int64_t qk__shl64(int64_t v, int k)
{
    return qk__u64_to_i64((uint64_t)v << k);
}

static inline int64_t qk__clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

static inline int32_t qk__saturate_int32(int64_t v)
{
    return (int32_t)qk__clamp64(v, INT32_MIN, INT32_MAX);
}

/* The A-bit two's-complement value congruent to v modulo 2^A (1 <= A <= 64). */
static inline int64_t qk__wrap_bits(int64_t v, int bits)
{
    uint64_t u, sign;
    if (bits >= 64) {
        return v;
    }
    u = (uint64_t)v & ((UINT64_C(1) << bits) - 1u);
    sign = UINT64_C(1) << (bits - 1);
    /* sign-extend: (u ^ sign) - sign, in unsigned arithmetic */
    return qk__u64_to_i64((u ^ sign) - sign);
}

/* round(v / 2^k) with rounding mode `mode` (QK_ROUND_*), 0 <= k <= 62 (section 2).
 * No intermediate value leaves int64: the remainder bits decide the rounding. */
static inline int64_t qk__rounding_right_shift(int64_t v, int k, int mode)
{
    int64_t q;
    uint64_t r, half;
    if (k <= 0) {
        return v;
    }
    q = qk__asr64(v, k);
    r = (uint64_t)v & ((UINT64_C(1) << k) - 1u); /* v - q * 2^k, in [0, 2^k) */
    half = UINT64_C(1) << (k - 1);
    switch (mode) {
    case QK_ROUND_FLOOR:
        return q;
    case QK_ROUND_HALF_UP:
        return q + (r >= half);
    case QK_ROUND_HALF_EVEN:
        return q + (r > half || (r == half && ((uint64_t)q & 1u)));
    default: /* QK_ROUND_HALF_AWAY */
        return q + (v < 0 ? (r > half) : (r >= half));
    }
}

/* round(v / d) for d >= 1 with rounding mode `mode` (average pooling, section 6). */
static inline int64_t qk__rounding_divide(int64_t v, int64_t d, int mode)
{
    int64_t q = v / d, r = v % d; /* C truncation; |v| is far below INT64_MAX */
    int64_t twice;
    if (r < 0) { /* make it floor division: 0 <= r < d */
        q -= 1;
        r += d;
    }
    twice = 2 * r; /* r < d <= 2^31 */
    switch (mode) {
    case QK_ROUND_FLOOR:
        return q;
    case QK_ROUND_HALF_UP:
        return q + (twice >= d);
    case QK_ROUND_HALF_EVEN:
        return q + (twice > d || (twice == d && ((uint64_t)q & 1u)));
    default: /* QK_ROUND_HALF_AWAY: ties go away from zero; the tie value is q + 1/2 */
        return q + (twice > d || (twice == d && q >= 0));
    }
}

/* floor((a * b + 2^(n-1)) / 2^n) saturated to int32, 1 <= n <= 62: gemmlowp's
 * SaturatingRoundingDoublingHighMul for n = 31 (ties half up; INT32_MIN * INT32_MIN gives
 * INT32_MAX), generalised to an n-bit multiplier (section 5.1). */
static inline int32_t qk__srdhm(int32_t a, int32_t b, int n)
{
    int64_t ab = (int64_t)a * (int64_t)b; /* |ab| <= 2^62 */
    return qk__saturate_int32(qk__asr64(ab + (INT64_C(1) << (n - 1)), n));
}

/* Round a float32 value to an integer-valued float32 with mode `mode`, exactly and without
 * depending on the floating-point environment. t = trunc(p) goes through an integer cast
 * (|p| < 2^23); d = p - t is exact (Sterbenz), so the tie tests below are exact. */
static inline float qk__round_f32(float p, int mode)
{
    float t, d;
    if (!(p < 8388608.0f && p > -8388608.0f)) {
        return p; /* |p| >= 2^23 is already an integer */
    }
    t = (float)(int32_t)p;
    d = p - t; /* in (-1, 1), sign of p */
    switch (mode) {
    case QK_ROUND_FLOOR:
        return d < 0.0f ? t - 1.0f : t;
    case QK_ROUND_HALF_UP:
        return d >= 0.5f ? t + 1.0f : (d < -0.5f ? t - 1.0f : t);
    case QK_ROUND_HALF_EVEN:
        if (d > 0.5f || (d == 0.5f && ((uint32_t)(int32_t)t & 1u))) {
            return t + 1.0f;
        }
        if (d < -0.5f || (d == -0.5f && ((uint32_t)(int32_t)t & 1u))) {
            return t - 1.0f;
        }
        return t;
    default: /* half away from zero */
        return d >= 0.5f ? t + 1.0f : (d <= -0.5f ? t - 1.0f : t);
    }
}

/* The same for float64 values (|p| < 2^52 are rounded, larger ones are integers). */
static inline double qk__round_f64(double p, int mode)
{
    double t, d;
    if (!(p < 4503599627370496.0 && p > -4503599627370496.0)) {
        return p;
    }
    t = (double)(int64_t)p;
    d = p - t;
    switch (mode) {
    case QK_ROUND_FLOOR:
        return d < 0.0 ? t - 1.0 : t;
    case QK_ROUND_HALF_UP:
        return d >= 0.5 ? t + 1.0 : (d < -0.5 ? t - 1.0 : t);
    case QK_ROUND_HALF_EVEN:
        if (d > 0.5 || (d == 0.5 && ((uint64_t)(int64_t)t & 1u))) {
            return t + 1.0;
        }
        if (d < -0.5 || (d == -0.5 && ((uint64_t)(int64_t)t & 1u))) {
            return t - 1.0;
        }
        return t;
    default:
        return d >= 0.5 ? t + 1.0 : (d <= -0.5 ? t - 1.0 : t);
    }
}

/* An integer-valued double clamped into [lo, hi] and converted (no out-of-range conversion). */
static inline int64_t qk__f64_to_i64_clamped(double v, int64_t lo, int64_t hi)
{
    if (v <= (double)lo) {
        return lo;
    }
    if (v >= (double)hi) {
        return hi;
    }
    return (int64_t)v;
}

#endif /* QK_ARITH_H */
