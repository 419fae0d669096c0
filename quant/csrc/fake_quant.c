/* One-pass fake quantization (fake_quant.h): the loops per instruction set, the work split, the threads. */
#include "fake_quant.h"

#include <math.h>
#include <pthread.h>

#define FQ_ATTR
#define FQ_NAME(name) name##_portable
#include "fake_quant_loops.h"
#undef FQ_ATTR
#undef FQ_NAME

#if defined(__GNUC__) && defined(__x86_64__)
#define FQ_HAVE_AVX2 1
#define FQ_ATTR __attribute__((target("avx2")))
#define FQ_NAME(name) name##_avx2
#include "fake_quant_loops.h"
#undef FQ_ATTR
#undef FQ_NAME
#else
#define FQ_HAVE_AVX2 0
#endif

/* Elements per work unit of a per-tensor problem or a backward, and the least work worth a thread. */
#define FQ_CHUNK ((int64_t)16384)
#define FQ_MIN_PER_THREAD ((int64_t)65536)
#define FQ_MAX_THREADS 64

typedef void (*fq_run_fn)(const float *, float *, uint8_t *, int64_t, float, float, float, int);
typedef void (*fq_run_each_fn)(const float *, float *, uint8_t *, int64_t, const float *, const int32_t *, int32_t,
                               int32_t, int);
typedef void (*fq_masked_fn)(const float *, const uint8_t *, float *, int64_t);
typedef void (*fq_extremes_fn)(const float *, int64_t, float *, float *);
typedef double (*fq_lsq_run_fn)(const float *, const float *, float *, int64_t, float, float, float, int);
typedef void (*fq_lsq_run_each_fn)(const float *, const float *, float *, int64_t, const float *, const int32_t *,
                                   int32_t, int32_t, int, double *);

typedef void (*fq_pact_run_fn)(const float *, float *, int64_t, float, float, float, float, float, int);
typedef double (*fq_pact_grad_fn)(const float *, const float *, float *, int64_t, float, float, int);

typedef void (*fq_lsq_parts_fn)(const float *, int64_t, float, float, float, int, float *, uint8_t *, float *);

typedef struct {
    fq_lsq_parts_fn lsq_parts;
    fq_pact_run_fn pact_run;
    fq_pact_grad_fn pact_grad;
    fq_run_fn run;
    fq_run_each_fn run_each;
    fq_masked_fn masked;
    fq_extremes_fn extremes;
    fq_lsq_run_fn lsq_run;
    fq_lsq_run_each_fn lsq_run_each;
} fq_loops;

int fq_isa_available(int isa)
{
    if (isa == FQ_ISA_PORTABLE)
        return 1;
#if FQ_HAVE_AVX2
    if (isa == FQ_ISA_AVX2) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") ? 1 : 0;
    }
#endif
    return 0;
}

/* Every loop of one instruction set (fake_quant_loops.h's names with its suffix). */
#define FQ_SET_LOOPS(l, sfx)                                                                 \
    do {                                                                                     \
        (l)->run = fq_run_##sfx, (l)->run_each = fq_run_each_##sfx, (l)->masked = fq_masked_##sfx; \
        (l)->extremes = fq_extremes_##sfx, (l)->lsq_run = fq_lsq_run_##sfx;                \
        (l)->lsq_run_each = fq_lsq_run_each_##sfx, (l)->lsq_parts = fq_lsq_parts_run_##sfx; \
        (l)->pact_run = fq_pact_run_##sfx, (l)->pact_grad = fq_pact_grad_##sfx;            \
    } while (0)

static int fq_pick(int isa, fq_loops *loops)
{
    if (isa == FQ_ISA_AUTO)
        isa = fq_isa_available(FQ_ISA_AVX2) ? FQ_ISA_AVX2 : FQ_ISA_PORTABLE;
    if (isa != FQ_ISA_PORTABLE && isa != FQ_ISA_AVX2)
        return FQ_BAD_ARGUMENT;
    if (!fq_isa_available(isa))
        return FQ_ISA_UNAVAILABLE;
#if FQ_HAVE_AVX2
    if (isa == FQ_ISA_AVX2) {
        FQ_SET_LOOPS(loops, avx2);
        return FQ_OK;
    }
#endif
    FQ_SET_LOOPS(loops, portable);
    return FQ_OK;
}

/* One thread's share: units [u0, u1) of a forward (p != NULL) or of a backward. */
typedef struct {
    const fq_problem *p;
    const float *grad;
    const uint8_t *mask;
    float *grad_in;
    int64_t n;
    int64_t u0, u1;
    fq_loops loops;
} fq_job;

static int64_t fq_forward_units(const fq_problem *p)
{
    const int64_t n = p->outer * p->channels * p->inner;
    switch (p->granularity) {
    case FQ_TENSOR: return (n + FQ_CHUNK - 1) / FQ_CHUNK;
    case FQ_CHANNEL: return p->outer * p->channels;
    default: return p->outer * (p->channels / p->group);
    }
}

static void fq_forward_share(const fq_job *job)
{
    const fq_problem *p = job->p;
    const int64_t n = p->outer * p->channels * p->inner;
    for (int64_t u = job->u0; u < job->u1; ++u) {
        if (p->granularity == FQ_TENSOR) {
            const int64_t off = u * FQ_CHUNK, len = n - off < FQ_CHUNK ? n - off : FQ_CHUNK;
            const int32_t z = p->zero_point != NULL ? p->zero_point[0] : 0;
            job->loops.run(p->x + off, p->out + off, p->mask != NULL ? p->mask + off : NULL, len, p->scale[0],
                           (float)(p->qmin - z), (float)(p->qmax - z), p->rounding);
        } else if (p->granularity == FQ_CHANNEL) {
            const int64_t c = u % p->channels, off = u * p->inner;
            const int32_t z = p->zero_point != NULL ? p->zero_point[c] : 0;
            job->loops.run(p->x + off, p->out + off, p->mask != NULL ? p->mask + off : NULL, p->inner, p->scale[c],
                           (float)(p->qmin - z), (float)(p->qmax - z), p->rounding);
        } else {
            /* unit u is group (o, g) with o * (channels / group) + g == u: its elements start at
             * u * group * inner, its qparams at u * inner */
            const int64_t base = u * p->group * p->inner, q = u * p->inner;
            const int32_t *z = p->zero_point != NULL ? p->zero_point + q : NULL;
            if (p->inner == 1) {
                const int32_t z0 = z != NULL ? z[0] : 0;
                job->loops.run(p->x + base, p->out + base, p->mask != NULL ? p->mask + base : NULL, p->group,
                               p->scale[q], (float)(p->qmin - z0), (float)(p->qmax - z0), p->rounding);
            } else {
                for (int64_t j = 0; j < p->group; ++j) {
                    const int64_t off = base + j * p->inner;
                    job->loops.run_each(p->x + off, p->out + off, p->mask != NULL ? p->mask + off : NULL, p->inner,
                                        p->scale + q, z, p->qmin, p->qmax, p->rounding);
                }
            }
        }
    }
}

static void fq_backward_share(const fq_job *job)
{
    const int64_t off = job->u0 * FQ_CHUNK;
    int64_t end = job->u1 * FQ_CHUNK;
    if (end > job->n)
        end = job->n;
    if (end > off)
        job->loops.masked(job->grad + off, job->mask + off, job->grad_in + off, end - off);
}

static void fq_share(const fq_job *job)
{
    if (job->p != NULL)
        fq_forward_share(job);
    else
        fq_backward_share(job);
}

static void *fq_thread(void *arg)
{
    fq_share((const fq_job *)arg);
    return NULL;
}

/* Splits units [0, units) of `proto` over up to `threads` threads, the caller running the last share. A
 * thread that cannot start leaves its share to the caller. */
static int fq_parallel(const fq_job *proto, int64_t units, int64_t elements, int threads)
{
    int64_t t = threads < 1 ? 1 : threads;
    if (t > FQ_MAX_THREADS)
        t = FQ_MAX_THREADS;
    if (t > elements / FQ_MIN_PER_THREAD)
        t = elements / FQ_MIN_PER_THREAD;
    if (t > units)
        t = units;
    if (t <= 1) {
        fq_job job = *proto;
        job.u0 = 0;
        job.u1 = units;
        fq_share(&job);
        return FQ_OK;
    }
    fq_job jobs[FQ_MAX_THREADS];
    pthread_t ids[FQ_MAX_THREADS];
    int started[FQ_MAX_THREADS];
    for (int64_t i = 0; i < t; ++i) {
        jobs[i] = *proto;
        jobs[i].u0 = units * i / t;
        jobs[i].u1 = units * (i + 1) / t;
        started[i] = 0;
    }
    for (int64_t i = 0; i + 1 < t; ++i)
        started[i] = pthread_create(&ids[i], NULL, fq_thread, &jobs[i]) == 0;
    fq_share(&jobs[t - 1]);
    for (int64_t i = 0; i + 1 < t; ++i) {
        if (started[i])
            pthread_join(ids[i], NULL);
        else
            fq_share(&jobs[i]);
    }
    return FQ_OK;
}

/* The element count of a problem's sizes into *n (computed without overflow), or FQ_BAD_ARGUMENT. */
static int fq_problem_size(const fq_problem *p, int64_t *n)
{
    if (p == NULL || p->outer < 0 || p->channels < 0 || p->inner < 0 || p->qmin > p->qmax)
        return FQ_BAD_ARGUMENT;
    if (p->rounding < FQ_HALF_EVEN || p->rounding > FQ_FLOOR)
        return FQ_BAD_ARGUMENT;
    if (p->granularity < FQ_TENSOR || p->granularity > FQ_GROUP)
        return FQ_BAD_ARGUMENT;
    if (p->granularity == FQ_GROUP && (p->group <= 0 || p->channels % p->group != 0))
        return FQ_BAD_ARGUMENT;
    int64_t count = p->outer;
    if (p->channels != 0 && count > INT64_MAX / p->channels)
        return FQ_BAD_ARGUMENT;
    count *= p->channels;
    if (p->inner != 0 && count > INT64_MAX / p->inner)
        return FQ_BAD_ARGUMENT;
    *n = count * p->inner;
    return FQ_OK;
}

int fq_forward(const fq_problem *p, int threads, int isa)
{
    int64_t n = 0;
    if (fq_problem_size(p, &n) != FQ_OK)
        return FQ_BAD_ARGUMENT;
    if (n == 0)
        return FQ_OK;
    if (p->x == NULL || p->out == NULL || p->scale == NULL)
        return FQ_BAD_ARGUMENT;
    fq_job proto = {0};
    const int status = fq_pick(isa, &proto.loops);
    if (status != FQ_OK)
        return status;
    proto.p = p;
    return fq_parallel(&proto, fq_forward_units(p), n, threads);
}

int fq_backward(const float *grad_out, const uint8_t *mask, float *grad_in, int64_t n, int threads, int isa)
{
    if (n < 0)
        return FQ_BAD_ARGUMENT;
    if (n == 0)
        return FQ_OK;
    if (grad_out == NULL || mask == NULL || grad_in == NULL)
        return FQ_BAD_ARGUMENT;
    fq_job proto = {0};
    const int status = fq_pick(isa, &proto.loops);
    if (status != FQ_OK)
        return status;
    proto.grad = grad_out;
    proto.mask = mask;
    proto.grad_in = grad_in;
    proto.n = n;
    return fq_parallel(&proto, (n + FQ_CHUNK - 1) / FQ_CHUNK, n, threads);
}

int fq_minmax(const float *x, int64_t n, float *lo, float *hi, int isa)
{
    if (x == NULL || lo == NULL || hi == NULL || n <= 0)
        return FQ_BAD_ARGUMENT;
    fq_loops loops;
    const int status = fq_pick(isa, &loops);
    if (status != FQ_OK)
        return status;
    loops.extremes(x, n, lo, hi);
    return FQ_OK;
}

int fq_lsq_backward(const fq_problem *p, const float *g, float *grad_x, double *scale_grad, int isa)
{
    int64_t n = 0;
    if (fq_problem_size(p, &n) != FQ_OK)
        return FQ_BAD_ARGUMENT;
    const int64_t count = p->granularity == FQ_TENSOR    ? 1
                          : p->granularity == FQ_CHANNEL ? p->channels
                                                         : p->outer * (p->channels / p->group) * p->inner;
    if (scale_grad == NULL && count > 0)
        return FQ_BAD_ARGUMENT;
    for (int64_t j = 0; j < count; ++j)
        scale_grad[j] = 0.0;
    if (n == 0)
        return FQ_OK;
    if (p->x == NULL || p->scale == NULL || g == NULL || grad_x == NULL)
        return FQ_BAD_ARGUMENT;
    fq_loops loops;
    const int status = fq_pick(isa, &loops);
    if (status != FQ_OK)
        return status;
    const int32_t *zp = p->zero_point;
    if (p->granularity == FQ_TENSOR) {
        const int32_t z = zp != NULL ? zp[0] : 0;
        scale_grad[0] = loops.lsq_run(p->x, g, grad_x, n, p->scale[0], (float)(p->qmin - z), (float)(p->qmax - z),
                                      p->rounding);
    } else if (p->granularity == FQ_CHANNEL) {
        for (int64_t u = 0; u < p->outer * p->channels; ++u) {
            const int64_t c = u % p->channels, off = u * p->inner;
            const int32_t z = zp != NULL ? zp[c] : 0;
            scale_grad[c] += loops.lsq_run(p->x + off, g + off, grad_x + off, p->inner, p->scale[c],
                                           (float)(p->qmin - z), (float)(p->qmax - z), p->rounding);
        }
    } else {
        for (int64_t u = 0; u < p->outer * (p->channels / p->group); ++u) {
            const int64_t base = u * p->group * p->inner, q = u * p->inner;
            if (p->inner == 1) {
                const int32_t z = zp != NULL ? zp[q] : 0;
                scale_grad[q] += loops.lsq_run(p->x + base, g + base, grad_x + base, p->group, p->scale[q],
                                               (float)(p->qmin - z), (float)(p->qmax - z), p->rounding);
            } else {
                for (int64_t j = 0; j < p->group; ++j) {
                    const int64_t off = base + j * p->inner;
                    loops.lsq_run_each(p->x + off, g + off, grad_x + off, p->inner, p->scale + q,
                                       zp != NULL ? zp + q : NULL, p->qmin, p->qmax, p->rounding, scale_grad + q);
                }
            }
        }
    }
    return FQ_OK;
}

int fq_pact_forward(const float *x, float *out, int64_t n, float a, float s, int is_signed, int32_t qmin, int32_t qmax,
                    int rounding, int isa)
{
    if (n < 0 || qmin > qmax || rounding < FQ_HALF_EVEN || rounding > FQ_FLOOR || !(a > 0.0f) || !(s > 0.0f))
        return FQ_BAD_ARGUMENT;
    if (n == 0)
        return FQ_OK;
    if (x == NULL || out == NULL)
        return FQ_BAD_ARGUMENT;
    fq_loops loops;
    const int status = fq_pick(isa, &loops);
    if (status != FQ_OK)
        return status;
    loops.pact_run(x, out, n, a, is_signed ? -a : 0.0f, s, (float)qmin, (float)qmax, rounding);
    return FQ_OK;
}

int fq_pact_backward(const float *x, const float *g, float *grad_x, int64_t n, float a, int is_signed,
                     double *alpha_grad, int isa)
{
    if (n < 0 || !(a > 0.0f) || alpha_grad == NULL)
        return FQ_BAD_ARGUMENT;
    *alpha_grad = 0.0;
    if (n == 0)
        return FQ_OK;
    if (x == NULL || g == NULL || grad_x == NULL)
        return FQ_BAD_ARGUMENT;
    fq_loops loops;
    const int status = fq_pick(isa, &loops);
    if (status != FQ_OK)
        return status;
    *alpha_grad = loops.pact_grad(x, g, grad_x, n, a, is_signed ? -a : 0.0f, is_signed);
    return FQ_OK;
}

int fq_lsq_parts(const float *x, int64_t n, float s, int32_t z, int32_t qmin, int32_t qmax, int rounding, float *out,
                 uint8_t *mask, float *d_scale, int isa)
{
    if (n < 0 || qmin > qmax || rounding < FQ_HALF_EVEN || rounding > FQ_FLOOR || !(s > 0.0f))
        return FQ_BAD_ARGUMENT;
    if (n == 0)
        return FQ_OK;
    if (x == NULL || out == NULL || mask == NULL || d_scale == NULL)
        return FQ_BAD_ARGUMENT;
    fq_loops loops;
    const int status = fq_pick(isa, &loops);
    if (status != FQ_OK)
        return status;
    loops.lsq_parts(x, n, s, (float)(qmin - z), (float)(qmax - z), rounding, out, mask, d_scale);
    return FQ_OK;
}
