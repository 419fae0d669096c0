/* The pointwise part of the simulation's LSTM step (lstm_step.h): the loops per instruction set and their checks. */
#include "lstm_step.h"

#include <math.h>
#include <string.h>

#define FQ_ATTR
#define FQ_NAME(name) name##_portable
#include "lstm_step_loops.h"
#undef FQ_ATTR
#undef FQ_NAME

#if defined(__GNUC__) && defined(__x86_64__)
#define FQ_LSTM_AVX2 1
#define FQ_ATTR __attribute__((target("avx2")))
#define FQ_NAME(name) name##_avx2
#include "lstm_step_loops.h"
#undef FQ_ATTR
#undef FQ_NAME
#else
#define FQ_LSTM_AVX2 0
#endif

/* FQ_ISA_AVX2 / FQ_ISA_PORTABLE for a request, or -1 (bad) / -2 (unavailable). */
static int fq_lstm_isa(int isa)
{
    if (isa == FQ_ISA_AUTO)
        isa = fq_isa_available(FQ_ISA_AVX2) ? FQ_ISA_AVX2 : FQ_ISA_PORTABLE;
    if (isa != FQ_ISA_PORTABLE && isa != FQ_ISA_AVX2)
        return -1;
    if (!fq_isa_available(isa) || (isa == FQ_ISA_AVX2 && !FQ_LSTM_AVX2))
        return -2;
    return isa;
}

#define FQ_LSTM_PICK(isa)                                                        \
    const int chosen = fq_lstm_isa(isa);                                         \
    if (chosen < 0)                                                              \
        return chosen == -1 ? FQ_BAD_ARGUMENT : FQ_ISA_UNAVAILABLE;

/* rows * 4 * hidden fits int64 (and so do the smaller products). */
static int fq_lstm_sizes(int64_t rows, int64_t hidden)
{
    if (rows < 0 || hidden < 0)
        return 0;
    return hidden == 0 || rows <= INT64_MAX / 4 / hidden;
}

int fq_lstm_cell(int64_t rows, int64_t hidden, const float *pre, const float *c_prev, float *act, float *c, int isa)
{
    return fq_lstm_step(rows, hidden, pre, c_prev, act, c, NULL, NULL, isa);
}

int fq_lstm_step(int64_t rows, int64_t hidden, const float *pre, const float *c_prev, float *act, float *c,
                 float *tanh_c, float *h, int isa)
{
    if (!fq_lstm_sizes(rows, hidden))
        return FQ_BAD_ARGUMENT;
    if (rows * hidden == 0)
        return FQ_OK;
    if (pre == NULL || c_prev == NULL || act == NULL || c == NULL || (tanh_c == NULL) != (h == NULL))
        return FQ_BAD_ARGUMENT;
    FQ_LSTM_PICK(isa)
#if FQ_LSTM_AVX2
    if (chosen == FQ_ISA_AVX2) {
        fq_step_loop_avx2(rows, hidden, pre, c_prev, act, c, tanh_c, h);
        return FQ_OK;
    }
#endif
    fq_step_loop_portable(rows, hidden, pre, c_prev, act, c, tanh_c, h);
    return FQ_OK;
}

int fq_lstm_hidden(int64_t rows, int64_t hidden, const float *act, const float *c, float *tanh_c, float *h, int isa)
{
    if (!fq_lstm_sizes(rows, hidden))
        return FQ_BAD_ARGUMENT;
    if (rows * hidden == 0)
        return FQ_OK;
    if (act == NULL || c == NULL || tanh_c == NULL || h == NULL)
        return FQ_BAD_ARGUMENT;
    FQ_LSTM_PICK(isa)
#if FQ_LSTM_AVX2
    if (chosen == FQ_ISA_AVX2) {
        fq_hidden_loop_avx2(rows, hidden, act, c, tanh_c, h);
        return FQ_OK;
    }
#endif
    fq_hidden_loop_portable(rows, hidden, act, c, tanh_c, h);
    return FQ_OK;
}

int fq_lstm_backward(fq_lstm_grad *g, int isa)
{
    if (g == NULL || !fq_lstm_sizes(g->rows, g->hidden))
        return FQ_BAD_ARGUMENT;
    g->scale_grad[0] = g->scale_grad[1] = g->scale_grad[2] = 0.0;
    if (g->rows * g->hidden == 0)
        return FQ_OK;
    if (g->grad_out == NULL || g->grad_h == NULL || g->grad_c == NULL || g->act == NULL || g->tanh_c == NULL ||
        g->c_prev == NULL || g->mask_hidden == NULL || g->mask_cell == NULL || g->mask_gates == NULL ||
        g->grad_pre == NULL || g->grad_c_prev == NULL)
        return FQ_BAD_ARGUMENT;
    FQ_LSTM_PICK(isa)
    const int sums = g->dscale_hidden != NULL || g->dscale_cell != NULL || g->dscale_gates != NULL;
#if FQ_LSTM_AVX2
    if (chosen == FQ_ISA_AVX2) {
        if (sums)
            fq_backward_sums_avx2(g);
        fq_backward_loop_avx2(g);
        return FQ_OK;
    }
#endif
    if (sums)
        fq_backward_sums_portable(g);
    fq_backward_loop_portable(g);
    return FQ_OK;
}

int fq_sigmoid(const float *x, float *out, int64_t n, int isa)
{
    if (n < 0 || (n > 0 && (x == NULL || out == NULL)))
        return FQ_BAD_ARGUMENT;
    FQ_LSTM_PICK(isa)
#if FQ_LSTM_AVX2
    if (chosen == FQ_ISA_AVX2) {
        fq_sigmoid_loop_avx2(x, out, n);
        return FQ_OK;
    }
#endif
    fq_sigmoid_loop_portable(x, out, n);
    return FQ_OK;
}

int fq_tanh(const float *x, float *out, int64_t n, int isa)
{
    if (n < 0 || (n > 0 && (x == NULL || out == NULL)))
        return FQ_BAD_ARGUMENT;
    FQ_LSTM_PICK(isa)
#if FQ_LSTM_AVX2
    if (chosen == FQ_ISA_AVX2) {
        fq_tanh_loop_avx2(x, out, n);
        return FQ_OK;
    }
#endif
    fq_tanh_loop_portable(x, out, n);
    return FQ_OK;
}
