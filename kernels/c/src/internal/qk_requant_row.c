/* qk__requant_row: requantize a row of int32 accumulators of one channel (section 5).
 *
 * The per-element definitions are the inline functions of qk_requant_core.h. These loops are
 * equal formulations for int32 accumulators, shaped so that compilers vectorize them (no
 * branches on data, 32-bit lanes where the value range allows, one loop per mode):
 *   - fixed_point double: h = floor((t * M0 + 2^(N-1)) / 2^N) is taken as a logical shift of
 *     the product biased by 2^62 (|t * M0| < 2^62), and h fits int32 because M0 < 2^N; the
 *     rounding right shift then runs on int32 lanes;
 *   - fixed_point single: the same biased shift on int64 lanes;
 *   - float32/float64: the product is clamped to a range where truncation through an int32
 *     is defined and which still lies outside every output range, rounded by mode, clamped.
 * The final clamp is done before adding the zero point, clamp(v, lo - z, hi - z) + z, so no
 * intermediate can leave int32. The AVX-512 build has explicit vectors for float requantization
 * rounding half to even or toward -inf (the conversion instruction rounds so itself) and for
 * fixed-point requantization (the same integer arithmetic on int64 lanes). */
#include "qk_arith.h"
#include "qk_internal.h"
#include "qk_requant_core.h"

#define QK__CHUNK 256

/* round(h / 2^k) on int32 lanes, 1 <= k <= 31, for a constant mode */
QK__ALWAYS_INLINE int32_t qk__rrs32(int32_t h, int k, int rnd)
{
    uint32_t u = (uint32_t)h, sign = h < 0 ? ~UINT32_C(0) : 0u;
    uint32_t r = u & ((UINT32_C(1) << k) - 1u), half = UINT32_C(1) << (k - 1);
    int32_t q = qk__u32_to_i32(((u ^ sign) >> k) ^ sign);
    switch (rnd) {
    case QK_ROUND_FLOOR:
        return q;
    case QK_ROUND_HALF_UP:
        return q + (r >= half);
    case QK_ROUND_HALF_EVEN:
        return q + (r + ((uint32_t)q & 1u) > half);
    default: /* half away from zero: ties of negative values go down */
        return q + (r + (~sign & 1u) > half);
    }
}

QK__ALWAYS_INLINE int32_t qk__clamp32(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

QK__ALWAYS_INLINE void qk__row_fixed_double(const int32_t *acc, size_t len, int32_t *out, int32_t m0, int32_t e, int n,
                                 int rnd, int32_t zy, int32_t lo, int32_t hi)
{
    size_t i;
    int left = e > 0 ? e : 0, right = e < 0 ? -e : 0;
    uint64_t bias = (UINT64_C(1) << 62) + (UINT64_C(1) << (n - 1));
    int64_t unbias = INT64_C(1) << (62 - n);
    int32_t lz = lo - zy, hz = hi - zy;
    if (left > 0) {
        for (i = 0; i < len; ++i) {
            int32_t t = qk__saturate_int32((int64_t)acc[i] * (INT64_C(1) << left));
            int32_t h = (int32_t)(qk__u64_to_i64(((uint64_t)((int64_t)t * m0) + bias) >> n) - unbias);
            out[i] = qk__clamp32(h, lz, hz) + zy;
        }
        return;
    }
#define QK__LOOP(R)                                                                                               \
    for (i = 0; i < len; ++i) {                                                                                   \
        int32_t h = (int32_t)(qk__u64_to_i64(((uint64_t)((int64_t)acc[i] * m0) + bias) >> n) - unbias);           \
        out[i] = qk__clamp32(qk__rrs32(h, right, R), lz, hz) + zy;                                                \
    }
    if (right == 0) {
        for (i = 0; i < len; ++i) {
            int32_t h = (int32_t)(qk__u64_to_i64(((uint64_t)((int64_t)acc[i] * m0) + bias) >> n) - unbias);
            out[i] = qk__clamp32(h, lz, hz) + zy;
        }
        return;
    }
    switch (rnd) {
    case QK_ROUND_FLOOR:
        QK__LOOP(QK_ROUND_FLOOR)
        break;
    case QK_ROUND_HALF_UP:
        QK__LOOP(QK_ROUND_HALF_UP)
        break;
    case QK_ROUND_HALF_EVEN:
        QK__LOOP(QK_ROUND_HALF_EVEN)
        break;
    default:
        QK__LOOP(QK_ROUND_HALF_AWAY)
        break;
    }
#undef QK__LOOP
}

/* round(p / 2^s) for |p| < 2^62, 1 <= s <= 62, then clamped into [lz, hz] */
QK__ALWAYS_INLINE int32_t qk__rrs64_clamped(int64_t p, int s, int rnd, int64_t lz, int64_t hz)
{
    uint64_t u = (uint64_t)p + (UINT64_C(1) << 62); /* >= 0: logical shift = floor */
    uint64_t r = u & ((UINT64_C(1) << s) - 1u), half = UINT64_C(1) << (s - 1);
    int64_t q = qk__u64_to_i64(u >> s) - (INT64_C(1) << (62 - s));
    switch (rnd) {
    case QK_ROUND_FLOOR:
        break;
    case QK_ROUND_HALF_UP:
        q += r >= half;
        break;
    case QK_ROUND_HALF_EVEN:
        q += r + ((uint64_t)q & 1u) > half;
        break;
    default:
        q += r + (p >= 0) > half;
        break;
    }
    return (int32_t)qk__clamp64(q, lz, hz);
}

QK__ALWAYS_INLINE void qk__row_fixed_single(const int32_t *acc, size_t len, int32_t *out, int32_t m0, int32_t e, int n,
                                 int rnd, int32_t zy, int32_t lo, int32_t hi)
{
    size_t i;
    int s = n - e;
    int64_t lz = lo - zy, hz = hi - zy;
    if (s <= 0) { /* exact product, |.| < 2^61 */
        for (i = 0; i < len; ++i) {
            out[i] = (int32_t)qk__clamp64(qk__shl64((int64_t)acc[i] * m0, -s), lz, hz) + zy;
        }
        return;
    }
#define QK__LOOP(R)                                                                                               \
    for (i = 0; i < len; ++i) {                                                                                   \
        out[i] = qk__rrs64_clamped((int64_t)acc[i] * m0, s, R, lz, hz) + zy;                                      \
    }
    switch (rnd) {
    case QK_ROUND_FLOOR:
        QK__LOOP(QK_ROUND_FLOOR)
        break;
    case QK_ROUND_HALF_UP:
        QK__LOOP(QK_ROUND_HALF_UP)
        break;
    case QK_ROUND_HALF_EVEN:
        QK__LOOP(QK_ROUND_HALF_EVEN)
        break;
    default:
        QK__LOOP(QK_ROUND_HALF_AWAY)
        break;
    }
#undef QK__LOOP
}

QK__ALWAYS_INLINE void qk__row_pow2(const int32_t *acc, size_t len, int32_t *out, int32_t k, int rnd, int32_t zy, int32_t lo,
                         int32_t hi)
{
    size_t i;
    int32_t lz = lo - zy, hz = hi - zy;
    if (k <= 0) { /* exact product 2^-k * acc, clamped (saturating to int32 first changes nothing) */
        for (i = 0; i < len; ++i) {
            out[i] = (int32_t)qk__clamp64((int64_t)acc[i] * (INT64_C(1) << -k), lz, hz) + zy;
        }
        return;
    }
#define QK__LOOP(R)                                                                                               \
    for (i = 0; i < len; ++i) {                                                                                   \
        out[i] = qk__clamp32(qk__rrs32(acc[i], k, R), lz, hz) + zy;                                               \
    }
    switch (rnd) {
    case QK_ROUND_FLOOR:
        QK__LOOP(QK_ROUND_FLOOR)
        break;
    case QK_ROUND_HALF_UP:
        QK__LOOP(QK_ROUND_HALF_UP)
        break;
    case QK_ROUND_HALF_EVEN:
        QK__LOOP(QK_ROUND_HALF_EVEN)
        break;
    default:
        QK__LOOP(QK_ROUND_HALF_AWAY)
        break;
    }
#undef QK__LOOP
}

/* round(p) by mode for a float32 p in [-2^23, 2^23]: t = trunc(p) through int32 and the
 * exact difference d = p - t decide; comparisons give 0/1 so the loops stay branch-free. */
QK__ALWAYS_INLINE int32_t qk__round_f32_i32(float p, int rnd)
{
    int32_t t = (int32_t)p;
    float d = p - (float)t;
    int32_t odd = (int32_t)((uint32_t)t & 1u);
    switch (rnd) {
    case QK_ROUND_FLOOR:
        return t - (d < 0.0f);
    case QK_ROUND_HALF_UP:
        return t + (d >= 0.5f) - (d < -0.5f);
    case QK_ROUND_HALF_EVEN:
        return t + (d > 0.5f) - (d < -0.5f) + odd * ((d == 0.5f) - (d == -0.5f));
    default:
        return t + (d >= 0.5f) - (d <= -0.5f);
    }
}

/* The same for a float64 p in [-2^30, 2^30]. */
QK__ALWAYS_INLINE int32_t qk__round_f64_i32(double p, int rnd)
{
    int32_t t = (int32_t)p;
    double d = p - (double)t;
    int32_t odd = (int32_t)((uint32_t)t & 1u);
    switch (rnd) {
    case QK_ROUND_FLOOR:
        return t - (d < 0.0);
    case QK_ROUND_HALF_UP:
        return t + (d >= 0.5) - (d < -0.5);
    case QK_ROUND_HALF_EVEN:
        return t + (d > 0.5) - (d < -0.5) + odd * ((d == 0.5) - (d == -0.5));
    default:
        return t + (d >= 0.5) - (d <= -0.5);
    }
}

QK__ALWAYS_INLINE float qk__clampf(float v, float lo, float hi)
{
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

QK__ALWAYS_INLINE double qk__clampd(double v, double lo, double hi)
{
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

#define QK__BY_ROUNDING(LOOP)                                                                                     \
    switch (rnd) {                                                                                                \
    case QK_ROUND_FLOOR:                                                                                          \
        LOOP(QK_ROUND_FLOOR)                                                                                      \
        break;                                                                                                    \
    case QK_ROUND_HALF_UP:                                                                                        \
        LOOP(QK_ROUND_HALF_UP)                                                                                    \
        break;                                                                                                    \
    case QK_ROUND_HALF_EVEN:                                                                                      \
        LOOP(QK_ROUND_HALF_EVEN)                                                                                  \
        break;                                                                                                    \
    default:                                                                                                      \
        LOOP(QK_ROUND_HALF_AWAY)                                                                                  \
        break;                                                                                                    \
    }

/* max |acc[i]| (as a float, for the range test of the float loops) */
QK__ALWAYS_INLINE float qk__max_abs_f(const int32_t *acc, size_t len)
{
    uint32_t mx = 0;
    size_t i;
    for (i = 0; i < len; ++i) {
        uint32_t u = (uint32_t)acc[i], neg = 0u - u;
        uint32_t v = acc[i] < 0 ? neg : u;
        mx = v > mx ? v : mx;
    }
    return (float)mx;
}

/* Float requantization. When every |p| (plus the zero point) stays below 2^22, p goes to
 * int32 directly (the common case; the loop has no float selects and vectorizes). Otherwise
 * p is first clamped to +-2^23 (float32) or +-2^30 (float64): every output bound is within
 * 2^9 of 0, so the clamped result is the same, and the truncation through int32 stays
 * defined. Monotonicity of rounded multiplication makes the range test exact. */
QK__ALWAYS_INLINE void qk__row_float32(const int32_t *acc, size_t len, int32_t *out, float m, int rnd, int zp_before,
                            int32_t zy, int32_t lo, int32_t hi)
{
    size_t i;
    const float big = 8388608.0f;
    int in_range = qk__max_abs_f(acc, len) * m < 4194304.0f;
    if (zp_before) {
        float fz = (float)zy;
#define QK__LOOP(R)                                                                                               \
    if (in_range) {                                                                                               \
        for (i = 0; i < len; ++i) {                                                                               \
            float p = (float)acc[i] * m;                                                                          \
            float q = p + fz;                                                                                     \
            out[i] = qk__clamp32(qk__round_f32_i32(q, R), lo, hi);                                                \
        }                                                                                                         \
    } else {                                                                                                      \
        for (i = 0; i < len; ++i) {                                                                               \
            float p = (float)acc[i] * m;                                                                          \
            float q = p + fz;                                                                                     \
            out[i] = qk__clamp32(qk__round_f32_i32(qk__clampf(q, -big, big), R), lo, hi);                         \
        }                                                                                                         \
    }
        QK__BY_ROUNDING(QK__LOOP)
#undef QK__LOOP
    } else {
        int32_t lz = lo - zy, hz = hi - zy;
#define QK__LOOP(R)                                                                                               \
    if (in_range) {                                                                                               \
        for (i = 0; i < len; ++i) {                                                                               \
            float p = (float)acc[i] * m;                                                                          \
            out[i] = qk__clamp32(qk__round_f32_i32(p, R), lz, hz) + zy;                                           \
        }                                                                                                         \
    } else {                                                                                                      \
        for (i = 0; i < len; ++i) {                                                                               \
            float p = (float)acc[i] * m;                                                                          \
            out[i] = qk__clamp32(qk__round_f32_i32(qk__clampf(p, -big, big), R), lz, hz) + zy;                    \
        }                                                                                                         \
    }
        QK__BY_ROUNDING(QK__LOOP)
#undef QK__LOOP
    }
}

QK__ALWAYS_INLINE void qk__row_float64(const int32_t *acc, size_t len, int32_t *out, float m, int rnd, int zp_before,
                            int32_t zy, int32_t lo, int32_t hi)
{
    size_t i;
    const double big = 1073741824.0, dm = (double)m;
    int in_range = (double)qk__max_abs_f(acc, len) * dm < 536870912.0;
    if (zp_before) {
        double dz = (double)zy;
#define QK__LOOP(R)                                                                                               \
    if (in_range) {                                                                                               \
        for (i = 0; i < len; ++i) {                                                                               \
            double p = (double)acc[i] * dm;                                                                       \
            double q = p + dz;                                                                                    \
            out[i] = qk__clamp32(qk__round_f64_i32(q, R), lo, hi);                                                \
        }                                                                                                         \
    } else {                                                                                                      \
        for (i = 0; i < len; ++i) {                                                                               \
            double p = (double)acc[i] * dm;                                                                       \
            double q = p + dz;                                                                                    \
            out[i] = qk__clamp32(qk__round_f64_i32(qk__clampd(q, -big, big), R), lo, hi);                         \
        }                                                                                                         \
    }
        QK__BY_ROUNDING(QK__LOOP)
#undef QK__LOOP
    } else {
        int32_t lz = lo - zy, hz = hi - zy;
#define QK__LOOP(R)                                                                                               \
    if (in_range) {                                                                                               \
        for (i = 0; i < len; ++i) {                                                                               \
            double p = (double)acc[i] * dm;                                                                       \
            out[i] = qk__clamp32(qk__round_f64_i32(p, R), lz, hz) + zy;                                           \
        }                                                                                                         \
    } else {                                                                                                      \
        for (i = 0; i < len; ++i) {                                                                               \
            double p = (double)acc[i] * dm;                                                                       \
            out[i] = qk__clamp32(qk__round_f64_i32(qk__clampd(p, -big, big), R), lz, hz) + zy;                    \
        }                                                                                                         \
    }
        QK__BY_ROUNDING(QK__LOOP)
#undef QK__LOOP
    }
}

QK__ALWAYS_INLINE void qk__requant_row_body(const int32_t *acc, size_t n, size_t c, const qk_datapath *dp,
                                            const qk_requant_params *rq, void *y)
{
    int32_t out[QK__CHUNK];
    size_t ch = rq->channels == 1 ? 0 : c, i0, i;
    int32_t lo = rq->y_min, hi = rq->y_max, zy = rq->y_zero_point;
    int zp_before = dp->zero_point_order == QK_ZP_BEFORE_ROUNDING;
    for (i0 = 0; i0 < n; i0 += QK__CHUNK) {
        size_t len = n - i0 < QK__CHUNK ? n - i0 : QK__CHUNK;
        const int32_t *a = acc + i0;
        switch (dp->requant) {
        case QK_REQUANT_FIXED_POINT:
            if (dp->fixed_point_rounding == QK_FIXED_POINT_SINGLE) {
                qk__row_fixed_single(a, len, out, rq->multiplier[ch], rq->shift[ch], dp->multiplier_bits,
                                     dp->rounding, zy, lo, hi);
            } else {
                qk__row_fixed_double(a, len, out, rq->multiplier[ch], rq->shift[ch], dp->multiplier_bits,
                                     dp->rounding, zy, lo, hi);
            }
            break;
        case QK_REQUANT_FLOAT32:
            qk__row_float32(a, len, out, rq->fmultiplier[ch], dp->rounding, zp_before, zy, lo, hi);
            break;
        case QK_REQUANT_FLOAT64:
            qk__row_float64(a, len, out, rq->fmultiplier[ch], dp->rounding, zp_before, zy, lo, hi);
            break;
        default:
            qk__row_pow2(a, len, out, rq->shift[ch], dp->rounding, zy, lo, hi);
            break;
        }
        if (rq->y_signed) {
            int8_t *dst = (int8_t *)y + i0;
            for (i = 0; i < len; ++i) {
                dst[i] = (int8_t)out[i];
            }
        } else {
            uint8_t *dst = (uint8_t *)y + i0;
            for (i = 0; i < len; ++i) {
                dst[i] = (uint8_t)out[i];
            }
        }
    }
}

static void qk__requant_row_portable(const int32_t *acc, size_t n, size_t c, const qk_datapath *dp,
                                     const qk_requant_params *rq, void *y)
{
    qk__requant_row_body(acc, n, c, dp, rq, y);
}

#if QK__HAVE_X86_AVX2
QK__TARGET_AVX2 static void qk__requant_row_avx2(const int32_t *acc, size_t n, size_t c, const qk_datapath *dp,
                                                 const qk_requant_params *rq, void *y)
{
    qk__requant_row_body(acc, n, c, dp, rq, y);
}
#endif

#if QK__HAVE_X86_AVX512_VNNI
#include <immintrin.h>

/* The first bytes of v selected by mask (its low lanes) stored at dst: a plain store when all 16 are, as
 * the narrowing stores with a memory operand are slow on some cores */
QK__TARGET_AVX512_VNNI static inline void qk__store_bytes16(__m128i v, __mmask16 mask, char *dst)
{
    if (mask == (__mmask16)0xFFFF) {
        _mm_storeu_si128((__m128i *)(void *)dst, v);
    } else if (mask == (__mmask16)0xFF) {
        _mm_storel_epi64((__m128i *)(void *)dst, v);
    } else {
        _mm_mask_storeu_epi8(dst, mask, v);
    }
}

/* Float requantization rounding half to even or toward -inf, 16 lanes at a time: the product (and the
 * zero point before rounding) in the precision of the datapath, exactly as the loops above compute it;
 * then clamped to +-2^23 (float32) or +-2^30 (float64), which changes no clamped result; then converted
 * with the rounding mode embedded in the instruction (independent of MXCSR); clamped, and written as
 * bytes (every value is already inside the byte's range, so truncation is exact). */
QK__TARGET_AVX512_VNNI static void qk__requant_float_avx512(const int32_t *acc, size_t n, int is_f64, float m,
                                                            int rnd, int zp_before, int32_t zy, int32_t lo,
                                                            int32_t hi, void *y)
{
    const __m512 m32 = _mm512_set1_ps(m), fz = _mm512_set1_ps((float)zy), big32 = _mm512_set1_ps(8388608.0f);
    const __m512d m64 = _mm512_set1_pd((double)m), dz = _mm512_set1_pd((double)zy);
    const __m512d big64 = _mm512_set1_pd(1073741824.0);
    const __m512i vlo = _mm512_set1_epi32(zp_before ? lo : lo - zy), vhi = _mm512_set1_epi32(zp_before ? hi : hi - zy);
    const __m512i vz = _mm512_set1_epi32(zp_before ? 0 : zy);
    size_t i;
    for (i = 0; i < n; i += 16) {
        __mmask16 mask = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        __m512i a = _mm512_maskz_loadu_epi32(mask, acc + i), q;
        if (is_f64) {
            __m512d p0 = _mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(a)), m64);
            __m512d p1 = _mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(a, 1)), m64);
            __m256i q0, q1;
            if (zp_before) {
                p0 = _mm512_add_pd(p0, dz);
                p1 = _mm512_add_pd(p1, dz);
            }
            p0 = _mm512_min_pd(_mm512_max_pd(p0, _mm512_sub_pd(_mm512_setzero_pd(), big64)), big64);
            p1 = _mm512_min_pd(_mm512_max_pd(p1, _mm512_sub_pd(_mm512_setzero_pd(), big64)), big64);
            if (rnd == QK_ROUND_HALF_EVEN) {
                q0 = _mm512_cvt_roundpd_epi32(p0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                q1 = _mm512_cvt_roundpd_epi32(p1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            } else {
                q0 = _mm512_cvt_roundpd_epi32(p0, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
                q1 = _mm512_cvt_roundpd_epi32(p1, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
            }
            q = _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1);
        } else {
            __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(a), m32);
            if (zp_before) {
                p = _mm512_add_ps(p, fz);
            }
            p = _mm512_min_ps(_mm512_max_ps(p, _mm512_sub_ps(_mm512_setzero_ps(), big32)), big32);
            if (rnd == QK_ROUND_HALF_EVEN) {
                q = _mm512_cvt_roundps_epi32(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            } else {
                q = _mm512_cvt_roundps_epi32(p, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
            }
        }
        q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, vlo), vhi), vz);
        qk__store_bytes16(_mm512_cvtepi32_epi8(q), mask, (char *)y + i);
    }
}

/* round(v / 2^s) by mode on int64 lanes, |v| < 2^62, 1 <= s <= 62: qk__rrs64_clamped's arithmetic (the
 * biased value is >= 0, so its logical shift is the floor) before the clamp. */
QK__TARGET_AVX512_VNNI static inline __m512i qk__rrs_epi64(__m512i v, int s, int rnd)
{
    const __m512i one = _mm512_set1_epi64(1);
    __m512i u = _mm512_add_epi64(v, _mm512_set1_epi64(INT64_C(1) << 62));
    __m512i r = _mm512_and_si512(u, _mm512_set1_epi64((INT64_C(1) << s) - 1));
    __m512i half = _mm512_set1_epi64(INT64_C(1) << (s - 1));
    __m512i q = _mm512_sub_epi64(_mm512_srl_epi64(u, _mm_cvtsi32_si128(s)), _mm512_set1_epi64(INT64_C(1) << (62 - s)));
    __mmask8 up;
    switch (rnd) {
    case QK_ROUND_FLOOR:
        return q;
    case QK_ROUND_HALF_UP:
        up = _mm512_cmpge_epu64_mask(r, half);
        break;
    case QK_ROUND_HALF_EVEN:
        up = _mm512_cmpgt_epu64_mask(_mm512_add_epi64(r, _mm512_and_si512(q, one)), half);
        break;
    default:
        up = _mm512_cmpgt_epu64_mask(_mm512_mask_add_epi64(r, _mm512_cmpge_epi64_mask(v, _mm512_setzero_si512()), r, one),
                                     half);
        break;
    }
    return _mm512_mask_add_epi64(q, up, q, one);
}

/* round(p / 2^s) by mode on int32 lanes, 1 <= s <= 31: qk__rrs32's arithmetic (the arithmetic shift is the
 * floor, the low bits the remainder of it, compared unsigned) */
QK__TARGET_AVX512_VNNI static inline __m512i qk__rrs_epi32(__m512i p, int s, int rnd)
{
    const __m512i one = _mm512_set1_epi32(1);
    __m512i q = _mm512_sra_epi32(p, _mm_cvtsi32_si128(s));
    __m512i r = _mm512_and_si512(p, _mm512_set1_epi32((int32_t)((UINT32_C(1) << s) - 1u)));
    __m512i half = _mm512_set1_epi32((int32_t)(UINT32_C(1) << (s - 1)));
    __mmask16 up;
    switch (rnd) {
    case QK_ROUND_FLOOR:
        return q;
    case QK_ROUND_HALF_UP:
        up = _mm512_cmpge_epu32_mask(r, half);
        break;
    case QK_ROUND_HALF_EVEN:
        up = _mm512_cmpgt_epu32_mask(_mm512_add_epi32(r, _mm512_and_si512(q, one)), half);
        break;
    default:
        up = _mm512_cmpgt_epu32_mask(_mm512_mask_add_epi32(r, _mm512_cmpge_epi32_mask(p, _mm512_setzero_si512()), r, one),
                                     half);
        break;
    }
    return _mm512_mask_add_epi32(q, up, q, one);
}

/* The fixed-point requantization of 8 accumulators on int64 lanes (the loops' integer arithmetic for the
 * shifts they handle with a rounding shift: single n - e >= 1, double any e), clamped before the zero
 * point is added, as the 8 low bytes of the result. */
QK__TARGET_AVX512_VNNI static inline __m128i qk__fixed8(__m256i acc8, int is_double, int32_t m0, int32_t e, int nbits,
                                                        int rnd, int32_t zy, int32_t lo, int32_t hi)
{
    const __m512i vm = _mm512_set1_epi64(m0);
    int left = e > 0 ? e : 0, right = e < 0 ? -e : 0;
    __m512i a = _mm512_cvtepi32_epi64(acc8), q;
    if (is_double) {
        const __m512i bias = _mm512_set1_epi64((int64_t)((UINT64_C(1) << 62) + (UINT64_C(1) << (nbits - 1))));
        if (left > 0) { /* saturate_int32(acc 2^left): |acc 2^left| < 2^61 */
            a = _mm512_min_epi64(_mm512_max_epi64(_mm512_sll_epi64(a, _mm_cvtsi32_si128(left)),
                                                  _mm512_set1_epi64(INT32_MIN)),
                                 _mm512_set1_epi64(INT32_MAX));
        }
        q = _mm512_sub_epi64(_mm512_srl_epi64(_mm512_add_epi64(_mm512_mul_epi32(a, vm), bias), _mm_cvtsi32_si128(nbits)),
                             _mm512_set1_epi64(INT64_C(1) << (62 - nbits)));
        if (right > 0) {
            q = qk__rrs_epi64(q, right, rnd);
        }
    } else {
        q = qk__rrs_epi64(_mm512_mul_epi32(a, vm), nbits - e, rnd);
    }
    q = _mm512_min_epi64(_mm512_max_epi64(q, _mm512_set1_epi64((int64_t)lo - zy)), _mm512_set1_epi64((int64_t)hi - zy));
    return _mm512_cvtepi64_epi8(_mm512_add_epi64(q, _mm512_set1_epi64(zy)));
}

/* Fixed-point requantization, 16 accumulators at a time, written as bytes. Single rounding with a shift
 * s = n - e in 1..31 runs on int32 lanes wherever every |acc| of the 16 is at most (2^31 - 1) / |M0| (the
 * product then fits int32, so its rounding shift is qk__rrs32's); everything else on int64 lanes. */
QK__TARGET_AVX512_VNNI static void qk__requant_fixed_avx512(const int32_t *acc, size_t n, int is_double, int32_t m0,
                                                            int32_t e, int nbits, int rnd, int32_t zy, int32_t lo,
                                                            int32_t hi, void *y)
{
    int s = nbits - e, lanes32 = !is_double && s >= 1 && s <= 31;
    int64_t m_abs = m0 < 0 ? -(int64_t)m0 : (int64_t)m0;
    const __m512i vlim = _mm512_set1_epi32(m_abs == 0 ? INT32_MAX : (int32_t)(INT32_MAX / m_abs));
    const __m512i vm = _mm512_set1_epi32(m0), vlz = _mm512_set1_epi32(lo - zy), vhz = _mm512_set1_epi32(hi - zy);
    const __m512i vz = _mm512_set1_epi32(zy);
    size_t i;
    for (i = 0; i < n; i += 16) {
        __mmask16 mask = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        __m512i a = _mm512_maskz_loadu_epi32(mask, acc + i);
        __m128i out;
        /* |INT32_MIN| does not fit an int32 lane: abs gives INT32_MIN, which as unsigned exceeds every limit */
        if (lanes32 && _mm512_cmpgt_epu32_mask(_mm512_abs_epi32(a), vlim) == 0) {
            __m512i q = qk__rrs_epi32(_mm512_mullo_epi32(a, vm), s, rnd);
            q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, vlz), vhz), vz);
            out = _mm512_cvtepi32_epi8(q);
        } else {
            __m128i l = qk__fixed8(_mm512_castsi512_si256(a), is_double, m0, e, nbits, rnd, zy, lo, hi);
            __m128i h = qk__fixed8(_mm512_extracti64x4_epi64(a, 1), is_double, m0, e, nbits, rnd, zy, lo, hi);
            out = _mm_unpacklo_epi64(l, h);
        }
        qk__store_bytes16(out, mask, (char *)y + i);
    }
}

QK__TARGET_AVX512_VNNI static void qk__requant_row_avx512(const int32_t *acc, size_t n, size_t c, const qk_datapath *dp,
                                                         const qk_requant_params *rq, void *y)
{
    if ((dp->requant == QK_REQUANT_FLOAT32 || dp->requant == QK_REQUANT_FLOAT64) &&
        (dp->rounding == QK_ROUND_HALF_EVEN || dp->rounding == QK_ROUND_FLOOR)) {
        qk__requant_float_avx512(acc, n, dp->requant == QK_REQUANT_FLOAT64, rq->fmultiplier[rq->channels == 1 ? 0 : c],
                                 dp->rounding, dp->zero_point_order == QK_ZP_BEFORE_ROUNDING, rq->y_zero_point,
                                 rq->y_min, rq->y_max, y);
        return;
    }
    if (dp->requant == QK_REQUANT_FIXED_POINT) {
        size_t ch = rq->channels == 1 ? 0 : c;
        int is_double = dp->fixed_point_rounding != QK_FIXED_POINT_SINGLE;
        if (is_double || dp->multiplier_bits - rq->shift[ch] >= 1) {
            qk__requant_fixed_avx512(acc, n, is_double, rq->multiplier[ch], rq->shift[ch], dp->multiplier_bits,
                                     dp->rounding, rq->y_zero_point, rq->y_min, rq->y_max, y);
            return;
        }
    }
    qk__requant_row_body(acc, n, c, dp, rq, y);
}
#endif

void qk__requant_row(int32_t isa, const int32_t *acc, size_t n, size_t c, const qk_datapath *dp,
                     const qk_requant_params *rq, void *y)
{
#if QK__HAVE_X86_AVX512_VNNI
    if (isa == QK_ISA_X86_AVX512_VNNI) {
        qk__requant_row_avx512(acc, n, c, dp, rq, y);
        return;
    }
#endif
#if QK__HAVE_X86_AVX2
    if (QK__USES_AVX2(isa)) {
        qk__requant_row_avx2(acc, n, c, dp, rq, y);
        return;
    }
#endif
    (void)isa;
    qk__requant_row_portable(acc, n, c, dp, rq, y);
}
