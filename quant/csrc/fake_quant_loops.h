/*
 * The loops of fake_quant.c, included once per instruction set with FQ_ATTR (a target attribute or
 * nothing) and FQ_NAME(name) (the name with the set's suffix) defined. Each loop has one rounding mode
 * and one mask choice, so that the compiler vectorizes it; the arithmetic is fake_quant.h's contract.
 */

FQ_ATTR static inline float FQ_NAME(fq_half_away)(float v)
{
    /* trunc(v) + sign(v) where |v - trunc(v)| >= 1/2, as quant.reference.rounding.round_half_away */
    const float t = truncf(v);
    return t + (fabsf(v - t) >= 0.5f ? copysignf(1.0f, v) : 0.0f);
}

FQ_ATTR static inline float FQ_NAME(fq_half_up)(float v)
{
    const float f = floorf(v);
    return f + (v - f >= 0.5f ? 1.0f : 0.0f);
}

#define FQ_CLAMP(r, lo, hi) ((r) < (lo) ? (lo) : ((r) > (hi) ? (hi) : (r)))

/* LOOP(ROUNDED) once per rounding mode, ROUNDED the mode's rounding of v: one loop per mode vectorizes. */
#ifndef FQ_BY_ROUNDING
#define FQ_BY_ROUNDING(LOOP)                                              \
    switch (rounding) {                                                   \
    case FQ_HALF_EVEN: LOOP(rintf(v)) break;                              \
    case FQ_HALF_AWAY: LOOP(FQ_NAME(fq_half_away)(v)) break;              \
    case FQ_HALF_UP: LOOP(FQ_NAME(fq_half_up)(v)) break;                  \
    default: LOOP(floorf(v)) break;                                       \
    }
#endif

/* One run of n elements sharing (s, lo, hi); ROUNDED is an expression of v = x * inv. */
#define FQ_LOOP(ROUNDED)                                                  \
    if (mask != NULL) {                                                   \
        for (int64_t k = 0; k < n; ++k) {                                 \
            const float v = x[k] * inv;                                   \
            const float r = ROUNDED;                                      \
            const float q = FQ_CLAMP(r, lo, hi);                          \
            out[k] = q * s;                                               \
            mask[k] = (uint8_t)(q == r);                                  \
        }                                                                 \
    } else {                                                              \
        for (int64_t k = 0; k < n; ++k) {                                 \
            const float v = x[k] * inv;                                   \
            const float r = ROUNDED;                                      \
            out[k] = FQ_CLAMP(r, lo, hi) * s;                             \
        }                                                                 \
    }

FQ_ATTR static void FQ_NAME(fq_run)(const float *x, float *out, uint8_t *mask, int64_t n, float s, float lo,
                                    float hi, int rounding)
{
    const float inv = 1.0f / s;
    FQ_BY_ROUNDING(FQ_LOOP)
}
#undef FQ_LOOP

/* One run of n elements, each with its own scale s[k] and zero point z[k] (z NULL: 0). */
#define FQ_LOOP(ROUNDED)                                                  \
    for (int64_t k = 0; k < n; ++k) {                                     \
        const float sk = s[k];                                            \
        const int32_t zk = z != NULL ? z[k] : 0;                          \
        const float lo = (float)(qmin - zk), hi = (float)(qmax - zk);     \
        const float v = x[k] * (1.0f / sk);                               \
        const float r = ROUNDED;                                          \
        const float q = FQ_CLAMP(r, lo, hi);                              \
        out[k] = q * sk;                                                  \
        if (mask != NULL)                                                 \
            mask[k] = (uint8_t)(q == r);                                  \
    }

FQ_ATTR static void FQ_NAME(fq_run_each)(const float *x, float *out, uint8_t *mask, int64_t n, const float *s,
                                         const int32_t *z, int32_t qmin, int32_t qmax, int rounding)
{
    FQ_BY_ROUNDING(FQ_LOOP)
}
#undef FQ_LOOP
#undef FQ_CLAMP

FQ_ATTR static void FQ_NAME(fq_masked)(const float *g, const uint8_t *mask, float *out, int64_t n)
{
    for (int64_t k = 0; k < n; ++k)
        out[k] = g[k] * (float)mask[k];
}

/* The extremes in FQ_LANES independent lanes (elementwise over the lanes, so that the compiler vectorizes
 * it; a plain running min/max is a reduction it leaves scalar), then over the lanes and the tail. */
#ifndef FQ_LANES
#define FQ_LANES 32
#endif
FQ_ATTR static void FQ_NAME(fq_extremes)(const float *x, int64_t n, float *lo, float *hi)
{
    float a[FQ_LANES], b[FQ_LANES];
    int32_t nan[FQ_LANES];
    for (int l = 0; l < FQ_LANES; ++l) {
        a[l] = b[l] = x[0];
        nan[l] = 0;
    }
    int64_t k = 0;
    for (; k + FQ_LANES <= n; k += FQ_LANES) {
        for (int l = 0; l < FQ_LANES; ++l) {
            const float v = x[k + l];
            a[l] = v < a[l] ? v : a[l];
            b[l] = v > b[l] ? v : b[l];
            nan[l] |= v != v;
        }
    }
    float amin = a[0], bmax = b[0];
    int any_nan = 0;
    for (int l = 0; l < FQ_LANES; ++l) {
        amin = a[l] < amin ? a[l] : amin;
        bmax = b[l] > bmax ? b[l] : bmax;
        any_nan |= nan[l];
    }
    for (; k < n; ++k) {
        const float v = x[k];
        amin = v < amin ? v : amin;
        bmax = v > bmax ? v : bmax;
        any_nan |= v != v;
    }
    *lo = any_nan ? NAN : amin;
    *hi = any_nan ? NAN : bmax;
}

/* LSQ's backward over one run sharing (s, lo, hi) (fake_quant.h): grad_x = g * inside, and the run's sum of
 * g * ds in double, in FQ_SUM_LANES lanes (elementwise over the lanes, so that the compiler vectorizes it). */
#ifndef FQ_SUM_LANES
#define FQ_SUM_LANES 8
#endif
#define FQ_LSQ_LOOP(ROUNDED)                                                                          \
    for (; k + FQ_SUM_LANES <= n; k += FQ_SUM_LANES) {                                                \
        for (int l = 0; l < FQ_SUM_LANES; ++l) {                                                      \
            const float v = x[k + l] * inv;                                                           \
            const float r = ROUNDED;                                                                  \
            const float q = FQ_CLAMP(r, lo, hi);                                                      \
            const float c = FQ_CLAMP(v, lo, hi);                                                      \
            const int inside = c == v;                                                                \
            const float ds = inside ? q - v : q;                                                      \
            grad_x[k + l] = g[k + l] * (inside ? 1.0f : 0.0f);                                        \
            acc[l] += (double)g[k + l] * (double)ds;                                                  \
        }                                                                                             \
    }                                                                                                 \
    for (; k < n; ++k) {                                                                              \
        const float v = x[k] * inv;                                                                   \
        const float r = ROUNDED;                                                                      \
        const float q = FQ_CLAMP(r, lo, hi);                                                          \
        const float c = FQ_CLAMP(v, lo, hi);                                                          \
        const int inside = c == v;                                                                    \
        grad_x[k] = g[k] * (inside ? 1.0f : 0.0f);                                                    \
        acc[0] += (double)g[k] * (double)(inside ? q - v : q);                                        \
    }

#define FQ_CLAMP(r, lo, hi) ((r) < (lo) ? (lo) : ((r) > (hi) ? (hi) : (r)))
FQ_ATTR static double FQ_NAME(fq_lsq_run)(const float *x, const float *g, float *grad_x, int64_t n, float s, float lo,
                                          float hi, int rounding)
{
    const float inv = 1.0f / s;
    double acc[FQ_SUM_LANES];
    for (int l = 0; l < FQ_SUM_LANES; ++l)
        acc[l] = 0.0;
    int64_t k = 0;
    FQ_BY_ROUNDING(FQ_LSQ_LOOP)
    double sum = 0.0;
    for (int l = 0; l < FQ_SUM_LANES; ++l)
        sum += acc[l];
    return sum;
}
#undef FQ_LSQ_LOOP

/* The same for a run whose element k has its own scale s[k], zero point z[k] (NULL: 0) and sum sums[k]. */
FQ_ATTR static void FQ_NAME(fq_lsq_run_each)(const float *x, const float *g, float *grad_x, int64_t n, const float *s,
                                             const int32_t *z, int32_t qmin, int32_t qmax, int rounding, double *sums)
{
    for (int64_t k = 0; k < n; ++k) {
        const int32_t zk = z != NULL ? z[k] : 0;
        const float lo = (float)(qmin - zk), hi = (float)(qmax - zk);
        const float v = x[k] * (1.0f / s[k]);
        float r;
        switch (rounding) {
        case FQ_HALF_EVEN: r = rintf(v); break;
        case FQ_HALF_AWAY: r = FQ_NAME(fq_half_away)(v); break;
        case FQ_HALF_UP: r = FQ_NAME(fq_half_up)(v); break;
        default: r = floorf(v); break;
        }
        const float q = FQ_CLAMP(r, lo, hi);
        const float c = FQ_CLAMP(v, lo, hi);
        const int inside = c == v;
        grad_x[k] = g[k] * (inside ? 1.0f : 0.0f);
        sums[k] += (double)g[k] * (double)(inside ? q - v : q);
    }
}
#undef FQ_CLAMP

/* PACT (quant.sim.learned): clip to [lo, a] (lo = -a signed, 0 unsigned), then fake-quantize with s. */
#define FQ_CLAMP(r, lo, hi) ((r) < (lo) ? (lo) : ((r) > (hi) ? (hi) : (r)))
#define FQ_PACT_LOOP(ROUNDED)                                             \
    for (int64_t k = 0; k < n; ++k) {                                     \
        const float y = FQ_CLAMP(x[k], lo, a);                            \
        const float v = y * inv;                                          \
        const float r = ROUNDED;                                          \
        out[k] = FQ_CLAMP(r, qlo, qhi) * s;                               \
    }

FQ_ATTR static void FQ_NAME(fq_pact_run)(const float *x, float *out, int64_t n, float a, float lo, float s, float qlo,
                                         float qhi, int rounding)
{
    const float inv = 1.0f / s;
    FQ_BY_ROUNDING(FQ_PACT_LOOP)
}
#undef FQ_PACT_LOOP

/* PACT's backward from the saved input: grad_x = g where lo <= x <= a, and the sum of g where x >= a minus
 * (lo = -a) the sum where x <= -a, in FQ_SUM_LANES double lanes. */
FQ_ATTR static double FQ_NAME(fq_pact_grad)(const float *x, const float *g, float *grad_x, int64_t n, float a, float lo,
                                            int is_signed)
{
    double acc[FQ_SUM_LANES];
    for (int l = 0; l < FQ_SUM_LANES; ++l)
        acc[l] = 0.0;
    int64_t k = 0;
    for (; k + FQ_SUM_LANES <= n; k += FQ_SUM_LANES) {
        for (int l = 0; l < FQ_SUM_LANES; ++l) {
            const float v = x[k + l], gv = g[k + l];
            const float inside = FQ_CLAMP(v, lo, a) == v ? 1.0f : 0.0f;
            const float d = (v >= a ? 1.0f : 0.0f) - (is_signed && v <= lo ? 1.0f : 0.0f);
            grad_x[k + l] = gv * inside;
            acc[l] += (double)gv * (double)d;
        }
    }
    for (; k < n; ++k) {
        const float v = x[k], gv = g[k];
        const float inside = FQ_CLAMP(v, lo, a) == v ? 1.0f : 0.0f;
        const float d = (v >= a ? 1.0f : 0.0f) - (is_signed && v <= lo ? 1.0f : 0.0f);
        grad_x[k] = gv * inside;
        acc[0] += (double)gv * (double)d;
    }
    double sum = 0.0;
    for (int l = 0; l < FQ_SUM_LANES; ++l)
        sum += acc[l];
    return sum;
}
#undef FQ_CLAMP

/* LSQ's values, inside mask and derivative by the step over one run sharing (s, lo, hi) (fq_lsq_parts). */
#define FQ_CLAMP(r, lo, hi) ((r) < (lo) ? (lo) : ((r) > (hi) ? (hi) : (r)))
#define FQ_LSQ_PARTS_LOOP(ROUNDED)                                        \
    for (int64_t k = 0; k < n; ++k) {                                     \
        const float v = x[k] * inv;                                       \
        const float r = ROUNDED;                                          \
        const float q = FQ_CLAMP(r, lo, hi);                              \
        const float c = FQ_CLAMP(v, lo, hi);                              \
        const int inside = c == v;                                        \
        out[k] = q * s;                                                   \
        mask[k] = (uint8_t)inside;                                        \
        d_scale[k] = q + (-c) * (inside ? 1.0f : 0.0f);                   \
    }

FQ_ATTR static void FQ_NAME(fq_lsq_parts_run)(const float *x, int64_t n, float s, float lo, float hi, int rounding,
                                              float *out, uint8_t *mask, float *d_scale)
{
    const float inv = 1.0f / s;
    FQ_BY_ROUNDING(FQ_LSQ_PARTS_LOOP)
}
#undef FQ_LSQ_PARTS_LOOP
#undef FQ_CLAMP
