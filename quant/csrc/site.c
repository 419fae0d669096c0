/* The per-tensor quantization site of a recurrence (fake_quant.h, fq_site): observer, qparams, values. */
#include <float.h>
#include <math.h>

#include "fake_quant.h"

/* Python's min(a, b) and max(a, b) on floats: a unless b is strictly beyond it (the sign of a zero too). */
static float fq_py_min(float a, float b) { return b < a ? b : a; }
static float fq_py_max(float a, float b) { return b > a ? b : a; }

void fq_site_qparams(fq_site *site, float lo, float hi)
{
    /* quant.sim.qparams.range_to_qparams_scalar, operation for operation in float32 */
    lo = fq_py_min(lo, 0.0f);
    hi = fq_py_max(hi, 0.0f);
    float width, levels;
    if (site->symmetric) {
        width = site->is_signed ? fq_py_max(-lo, hi) : hi;
        levels = (float)site->qmax;
    } else {
        width = hi - lo;
        levels = (float)(site->qmax - site->qmin);
    }
    float scale;
    if (isinf(width)) /* the float32 difference overflows: the float64 one, divided, then rounded */
        scale = (float)(((double)hi - (double)lo) / (double)levels);
    else
        scale = width / levels;
    scale = width == 0.0f ? 1.0f : fq_py_max(scale, FLT_EPSILON);
    if (site->pow2) {
        int e = 0;
        const float mant = frexpf(scale, &e);
        scale = mant == 0.5f ? scale : ldexpf(1.0f, e);
    }
    int32_t zero_point = 0;
    if (!site->symmetric) {
        float ratio = rintf(lo / scale); /* |lo / scale| <= the code range: no overflow below */
        ratio = ratio < -1.0e9f ? -1.0e9f : (ratio > 1.0e9f ? 1.0e9f : ratio);
        int64_t z = (int64_t)site->qmin - (int64_t)ratio;
        z = z < site->qmin ? site->qmin : (z > site->qmax ? site->qmax : z);
        zero_point = (int32_t)z;
    }
    site->scale = scale;
    site->zero_point = zero_point;
    site->calibrated = 1;
}

int fq_site_call(fq_site *site, const float *x, int64_t n, float *out, uint8_t *mask, float *d_scale, int isa)
{
    if (site == NULL || x == NULL || n <= 0 || site->qmin > site->qmax)
        return FQ_BAD_ARGUMENT;
    if (site->lsq) {
        if (site->observing || !site->quantizing || !site->calibrated || out == NULL || mask == NULL || d_scale == NULL)
            return FQ_BAD_ARGUMENT;
        return fq_lsq_parts(x, n, site->scale, site->zero_point, site->qmin, site->qmax, site->rounding, out, mask,
                            d_scale, isa);
    }
    if (site->observing) {
        float lo = 0.0f, hi = 0.0f;
        const int status = fq_minmax(x, n, &lo, &hi, isa);
        if (status != FQ_OK)
            return status;
        if (!isfinite(lo) || !isfinite(hi))
            return FQ_NOT_FINITE;
        if (site->has_range && site->observer == FQ_MOVING_AVERAGE) {
            lo = site->lo + site->momentum * (lo - site->lo);
            hi = site->hi + site->momentum * (hi - site->hi);
        } else if (site->has_range) {
            lo = fq_py_min(site->lo, lo);
            hi = fq_py_max(site->hi, hi);
        }
        site->lo = lo;
        site->hi = hi;
        site->has_range = 1;
        if (site->quantizing)
            fq_site_qparams(site, lo, hi);
    }
    if (!site->quantizing)
        return FQ_OK;
    if (!site->calibrated || out == NULL)
        return FQ_BAD_ARGUMENT;
    const fq_problem p = {.x = x, .out = out, .mask = mask, .scale = &site->scale, .zero_point = &site->zero_point,
                             .outer = 1, .channels = 1, .inner = n, .group = 1, .granularity = FQ_TENSOR,
                             .qmin = site->qmin, .qmax = site->qmax, .rounding = site->rounding};
    return fq_forward(&p, 1, isa);
}

int fq_qparams(const float *lo, const float *hi, int64_t n, const fq_site *rule, float *scale, int32_t *zero_point)
{
    if (rule == NULL || n < 0 || rule->qmin > rule->qmax || (n > 0 && (lo == NULL || hi == NULL || scale == NULL ||
                                                                     zero_point == NULL)))
        return FQ_BAD_ARGUMENT;
    fq_site site = *rule;
    for (int64_t k = 0; k < n; ++k) {
        fq_site_qparams(&site, lo[k], hi[k]);
        scale[k] = site.scale;
        zero_point[k] = site.zero_point;
    }
    return FQ_OK;
}

int fq_channel_extremes(const float *x, int64_t outer, int64_t channels, int64_t inner, float *lo, float *hi, int isa)
{
    if (outer < 0 || channels < 0 || inner < 0)
        return FQ_BAD_ARGUMENT;
    if (outer == 0 || inner == 0 || channels == 0)
        return outer == 0 || inner == 0 ? FQ_BAD_ARGUMENT : FQ_OK; /* a channel without elements has no extremes */
    if (x == NULL || lo == NULL || hi == NULL || outer > INT64_MAX / channels || outer * channels > INT64_MAX / inner)
        return FQ_BAD_ARGUMENT;
    int finite = 1;
    for (int64_t c = 0; c < channels; ++c) {
        float a = 0.0f, b = 0.0f;
        for (int64_t o = 0; o < outer; ++o) {
            float ra = 0.0f, rb = 0.0f;
            const int status = fq_minmax(x + (o * channels + c) * inner, inner, &ra, &rb, isa);
            if (status != FQ_OK)
                return status;
            if (o == 0 || ra != ra) /* NaN stays */
                a = ra, b = rb;
            else if (a == a) {
                a = ra < a ? ra : a;
                b = rb > b ? rb : b;
            }
        }
        lo[c] = a;
        hi[c] = b;
        if (!isfinite(a) || !isfinite(b))
            finite = 0;
    }
    return finite ? FQ_OK : FQ_NOT_FINITE;
}
