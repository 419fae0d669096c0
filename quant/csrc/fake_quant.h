/*
 * One-pass fake quantization of float32 tensors, the simulation's hot path (quant.sim.fused).
 *
 * Arithmetic contract (docs/architecture.md, "The fused path of fake quantization"), element by
 * element and in IEEE single precision, exactly as quant.sim.functional.fake_quantize computes it with torch ops:
 *
 *     inv  = 1 / s                            (correctly rounded float32 division)
 *     r    = round(x * inv)                   (one float32 product, then the rounding mode)
 *     q    = clamp(r, qmin - z, qmax - z)     (NaN stays NaN, +-Inf saturate)
 *     out  = q * s
 *     mask = (q == r)                         (1 byte per element; 0 for clipped, NaN and +-Inf)
 *
 * and the backward of the straight-through estimator: grad_in = grad_out * mask; and the extremes of a
 * tensor for the observers (fq_minmax).
 * The results equal the torch path's up to the sign of a zero output (torch's own vectorized and
 * scalar clamps disagree there).
 *
 * x is viewed as (outer, channels, inner), C order, contiguous. Quantization parameters:
 *   FQ_TENSOR   one scale and zero point;
 *   FQ_CHANNEL  scale[c], zero_point[c];
 *   FQ_GROUP    groups of `group` consecutive channels: qparams of shape
 *               (outer, channels / group, inner), index (o * (channels / group) + c / group) * inner + i.
 * Plain C99 plus optional GCC/Clang target attributes for the AVX2 loops (chosen at run time);
 * no allocation except the worker threads' stacks, no globals.
 */
#ifndef QUANT_FAKE_QUANT_H
#define QUANT_FAKE_QUANT_H

#include <stddef.h>
#include <stdint.h>

enum fq_granularity { FQ_TENSOR = 0, FQ_CHANNEL = 1, FQ_GROUP = 2 };
/* The rounding modes of quant.contract.rounding that need no random draws. */
enum fq_rounding { FQ_HALF_EVEN = 0, FQ_HALF_AWAY = 1, FQ_HALF_UP = 2, FQ_FLOOR = 3 };
/* The loops: FQ_ISA_AUTO picks the best the CPU has. */
enum fq_isa { FQ_ISA_AUTO = 0, FQ_ISA_PORTABLE = 1, FQ_ISA_AVX2 = 2 };

enum fq_status { FQ_OK = 0, FQ_BAD_ARGUMENT = 1, FQ_ISA_UNAVAILABLE = 2, FQ_THREAD_FAILED = 3, FQ_NOT_FINITE = 4 };

typedef struct {
    const float *x;
    float *out;
    uint8_t *mask; /* NULL: no mask */
    const float *scale;
    const int32_t *zero_point; /* NULL: every zero point is 0 */
    int64_t outer, channels, inner;
    int64_t group; /* FQ_GROUP only */
    int granularity;
    int32_t qmin, qmax;
    int rounding;
} fq_problem;

/* Runs `p` on up to `threads` threads (1: the caller's). FQ_BAD_ARGUMENT for negative sizes, a group
 * that does not divide the channels, qmin > qmax, an unknown mode or a NULL pointer where data is. */
int fq_forward(const fq_problem *p, int threads, int isa);

/* grad_in[k] = grad_out[k] * mask[k] for k < n (any common layout). */
int fq_backward(const float *grad_out, const uint8_t *mask, float *grad_in, int64_t n, int threads, int isa);

/* LSQ's backward (quant.sim.learned) from the saved input p->x (p->out and p->mask unused), the effective
 * scales and zero points of p, and the gradient g of the values: grad_x = g * inside, inside = (qmin - z <=
 * x/s <= qmax - z, unrounded), and for each qparam j, scale_grad[j] = the sum over its elements of
 * g * (inside ? round(x/s) - x/s : clamp(round(x/s))), in double (the caller multiplies by LSQ's gradient
 * scale). scale_grad holds one double per qparam and is overwritten. One thread. */
int fq_lsq_backward(const fq_problem *p, const float *g, float *grad_x, double *scale_grad, int isa);

/* LSQ's per-tensor forward for a caller that differentiates by hand (quant.sim.quantizer.forward_parts):
 * out = fake_quantize(x) with the effective step s and zero point z, mask = inside (1 byte), and
 * d_scale = inside ? round(x/s) - x/s : clamp(round(x/s)), the derivative of the values by the step (the
 * torch path's lsq_values, element for element). */
int fq_lsq_parts(const float *x, int64_t n, float s, int32_t z, int32_t qmin, int32_t qmax, int rounding, float *out,
                 uint8_t *mask, float *d_scale, int isa);

/* PACT (quant.sim.learned, per tensor): out = fake_quantize(clamp(x, lo, a)) with the scale s, zero point 0
 * and codes [qmin, qmax], lo = -a for signed codes, else 0 (a >= FLT_EPSILON: the projected clip level). */
int fq_pact_forward(const float *x, float *out, int64_t n, float a, float s, int is_signed, int32_t qmin, int32_t qmax,
                    int rounding, int isa);

/* PACT's backward from the saved input: grad_x = g where lo <= x <= a (0 for NaN), and *alpha_grad = the sum
 * of g where x >= a, minus (signed) the sum of g where x <= -a, in double. */
int fq_pact_backward(const float *x, const float *g, float *grad_x, int64_t n, float a, int is_signed,
                     double *alpha_grad, int isa);

/* The least and greatest of x[0..n-1], n > 0; both NaN when any element is NaN (as torch.aminmax). */
int fq_minmax(const float *x, int64_t n, float *lo, float *hi, int isa);

/*
 * A per-tensor quantization site whose observer and qparams live here between two calls from Python (a
 * quantizer used at every step of a recurrence): quant.sim.quantizer's forward with a MinMaxObserver or a
 * MovingAverageMinMaxObserver, in the same float32 arithmetic (quant.sim.qparams.range_to_qparams_scalar,
 * the observers' _fold_host_range), so that the statistics, qparams and values are those of the Python path.
 */
enum fq_observer { FQ_MINMAX = 0, FQ_MOVING_AVERAGE = 1 };

typedef struct {
    int observing, quantizing; /* the quantizer's flags */
    int observer;              /* enum fq_observer */
    float momentum;            /* the moving average's, as float32 */
    int has_range;             /* in/out: whether lo, hi hold a range */
    float lo, hi;              /* in/out: the observer's running range */
    int symmetric, is_signed, pow2;
    int32_t qmin, qmax;
    int rounding;
    int calibrated;            /* in/out: whether scale, zero_point hold qparams */
    float scale;               /* in/out */
    int32_t zero_point;        /* in/out */
    int lsq;                   /* LSQ's learned step: scale and zero_point are its effective step and zero
                                * point, fixed for the run (quantizing, never observing) */
} fq_site;

/* The qparams of the range [lo, hi] (finite, lo <= hi) under the site's rule, into site->scale/zero_point. */
void fq_site_qparams(fq_site *site, float lo, float hi);

/* One call of the site on x[0..n-1] (n > 0): observe (fold the extremes, FQ_NOT_FINITE if one is NaN or
 * +-Inf, the site unchanged), then recompute the qparams; then, when quantizing, out = fake_quantize(x) and
 * mask = its straight-through mask (FQ_BAD_ARGUMENT without qparams); else out and mask are not written.
 * An LSQ site (site->lsq) gives fq_lsq_parts's out, mask and d_scale (required there, else unused; an LSQ
 * site that observes is FQ_BAD_ARGUMENT). */
int fq_site_call(fq_site *site, const float *x, int64_t n, float *out, uint8_t *mask, float *d_scale, int isa);

/* The qparams of n ranges [lo[k], hi[k]] (finite, lo <= hi) under `rule`'s spec fields (symmetric,
 * is_signed, pow2, qmin, qmax; the rest unused): fq_site_qparams element by element, which is
 * quant.sim.qparams.range_to_qparams's float32 arithmetic. */
int fq_qparams(const float *lo, const float *hi, int64_t n, const fq_site *rule, float *scale, int32_t *zero_point);

/* Per channel c of x viewed as (outer, channels, inner), C order: lo[c], hi[c] = the least and greatest
 * element, both NaN when one is NaN; FQ_NOT_FINITE (after writing them all) when an extreme is NaN or +-Inf. */
int fq_channel_extremes(const float *x, int64_t outer, int64_t channels, int64_t inner, float *lo, float *hi, int isa);

/* 1 if the loops of `isa` can run on this CPU. */
int fq_isa_available(int isa);

#endif
