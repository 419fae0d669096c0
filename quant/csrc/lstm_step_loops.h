/*
 * The loops of lstm_step.c, included once per instruction set with FQ_ATTR and FQ_NAME defined (as
 * fake_quant_loops.h). Branch-free so that the compiler vectorizes them.
 */

/* e^x for finite x in [-87.3, 88.3]: x = n ln2 + r with |r| <= ln2 / 2 (Cody-Waite, ln2 in two parts), the
 * degree-7 Taylor polynomial of e^r (truncation below 1e-8 relative), times 2^n built in the exponent bits. */
FQ_ATTR static inline float FQ_NAME(fq_exp_reduced)(float x)
{
    const float n = rintf(x * 1.44269504088896341f);
    const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) * 8388608; /* (n + 127) << 23, n in [-126, 127]: no overflow */
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n;
}

/* x clamped to [lo, hi], NaN to lo (the callers put NaN back): the reduced exponential's domain. */
#define FQ_EXP_DOMAIN(x, lo, hi) ((x) != (x) ? (lo) : ((x) < (lo) ? (lo) : ((x) > (hi) ? (hi) : (x))))

FQ_ATTR static inline float FQ_NAME(fq_sigmoid1)(float x)
{
    /* 1 / (1 + e^-x); below -87.3 the result is under 1e-38 (absolute error, not relative) */
    const float e = FQ_NAME(fq_exp_reduced)(FQ_EXP_DOMAIN(-x, -87.3f, 88.3f));
    const float s = 1.0f / (1.0f + e);
    return x != x ? x : s;
}

FQ_ATTR static inline float FQ_NAME(fq_tanh1)(float x)
{
    /* |x| < 0.625: x + x s P(s), s = x^2 (the minimax odd polynomial of the Cephes library's tanhf);
     * else sign(x) (1 - 2 / (e^{2|x|} + 1)), which is +-1 to float32 precision from |x| = 9 on */
    const float ax = fabsf(x);
    const float s = x * x;
    float p = -5.70498872745e-3f;
    p = p * s + 2.06390887954e-2f;
    p = p * s - 5.37397155531e-2f;
    p = p * s + 1.33314422036e-1f;
    p = p * s - 3.33332819422e-1f;
    const float small = x + x * (s * p);
    const float e = FQ_NAME(fq_exp_reduced)(FQ_EXP_DOMAIN(2.0f * ax, -87.3f, 88.3f));
    const float large = copysignf(1.0f - 2.0f / (e + 1.0f), x);
    const float t = ax < 0.625f ? small : large;
    return x != x ? x : t;
}

FQ_ATTR static void FQ_NAME(fq_sigmoid_loop)(const float *x, float *out, int64_t n)
{
    for (int64_t k = 0; k < n; ++k)
        out[k] = FQ_NAME(fq_sigmoid1)(x[k]);
}

FQ_ATTR static void FQ_NAME(fq_tanh_loop)(const float *x, float *out, int64_t n)
{
    for (int64_t k = 0; k < n; ++k)
        out[k] = FQ_NAME(fq_tanh1)(x[k]);
}

/* One row of the cell (lstm_step.h): the four gates of unit j and its cell in one loop; restrict: no output
 * overlaps an input. */
FQ_ATTR static void FQ_NAME(fq_cell_row)(int64_t H, const float *restrict p, const float *restrict cp,
                                         float *restrict a, float *restrict cr)
{
    const float *restrict p0 = p, *restrict p1 = p + H, *restrict p2 = p + 2 * H, *restrict p3 = p + 3 * H;
    float *restrict a0 = a, *restrict a1 = a + H, *restrict a2 = a + 2 * H, *restrict a3 = a + 3 * H;
    for (int64_t j = 0; j < H; ++j) {
        const float ai = FQ_NAME(fq_sigmoid1)(p0[j]), af = FQ_NAME(fq_sigmoid1)(p1[j]);
        const float ag = FQ_NAME(fq_tanh1)(p2[j]), ao = FQ_NAME(fq_sigmoid1)(p3[j]);
        a0[j] = ai, a1[j] = af, a2[j] = ag, a3[j] = ao;
        cr[j] = af * cp[j] + ai * ag;
    }
}

FQ_ATTR static void FQ_NAME(fq_hidden_row)(int64_t H, const float *restrict ao, const float *restrict c,
                                           float *restrict tc, float *restrict h)
{
    for (int64_t j = 0; j < H; ++j) {
        const float t = FQ_NAME(fq_tanh1)(c[j]);
        tc[j] = t;
        h[j] = ao[j] * t;
    }
}

/* The cell, and with tc and h (else NULL) the hidden state, row by row (the row's data stays in cache). */
FQ_ATTR static void FQ_NAME(fq_step_loop)(int64_t rows, int64_t H, const float *pre, const float *c_prev, float *act,
                                          float *c, float *tc, float *h)
{
    for (int64_t r = 0; r < rows; ++r) {
        FQ_NAME(fq_cell_row)(H, pre + r * 4 * H, c_prev + r * H, act + r * 4 * H, c + r * H);
        if (tc != NULL && h != NULL)
            FQ_NAME(fq_hidden_row)(H, act + r * 4 * H + 3 * H, c + r * H, tc + r * H, h + r * H);
    }
}

FQ_ATTR static void FQ_NAME(fq_hidden_loop)(int64_t rows, int64_t H, const float *act, const float *c, float *tc,
                                            float *h)
{
    for (int64_t r = 0; r < rows; ++r)
        FQ_NAME(fq_hidden_row)(H, act + r * 4 * H + 3 * H, c + r * H, tc + r * H, h + r * H);
}

/* One row of the backward (lstm_step.h), every mask given; restrict: no output overlaps an input. The four
 * gates' slices as pointers of their own, so that the compiler vectorizes the loop. */
FQ_ATTR static void FQ_NAME(fq_backward_row)(int64_t H, const float *restrict go, const float *restrict gh,
                                             const float *restrict gc, const float *restrict a,
                                             const float *restrict tc, const float *restrict cp,
                                             const uint8_t *restrict mh, const uint8_t *restrict mc,
                                             const uint8_t *restrict mg, float *restrict gp, float *restrict gcp)
{
    const float *restrict a0 = a, *restrict a1 = a + H, *restrict a2 = a + 2 * H, *restrict a3 = a + 3 * H;
    const uint8_t *restrict m0 = mg, *restrict m1 = mg + H, *restrict m2 = mg + 2 * H, *restrict m3 = mg + 3 * H;
    float *restrict g0 = gp, *restrict g1 = gp + H, *restrict g2 = gp + 2 * H, *restrict g3 = gp + 3 * H;
    for (int64_t j = 0; j < H; ++j) {
        const float ai = a0[j], af = a1[j], ag = a2[j], ao = a3[j], t = tc[j];
        const float dh = (go[j] + gh[j]) * (float)mh[j];
        const float dc = (dh * ao * (1.0f - t * t) + gc[j]) * (float)mc[j];
        g0[j] = dc * ag * (ai * (1.0f - ai)) * (float)m0[j];
        g1[j] = dc * cp[j] * (af * (1.0f - af)) * (float)m1[j];
        g2[j] = dc * ai * (1.0f - ag * ag) * (float)m2[j];
        g3[j] = dh * t * (ao * (1.0f - ao)) * (float)m3[j];
        gcp[j] = dc * af;
    }
}

FQ_ATTR static void FQ_NAME(fq_backward_loop)(const fq_lstm_grad *g)
{
    const int64_t H = g->hidden;
    for (int64_t r = 0; r < g->rows; ++r)
        FQ_NAME(fq_backward_row)(H, g->grad_out + r * H, g->grad_h + r * H, g->grad_c + r * H, g->act + r * 4 * H,
                                 g->tanh_c + r * H, g->c_prev + r * H, g->mask_hidden + r * H, g->mask_cell + r * H,
                                 g->mask_gates + r * 4 * H, g->grad_pre + r * 4 * H, g->grad_c_prev + r * H);
}

/* LSQ's sums of the backward: each site's output gradient (before its mask) times its d(values)/d(step),
 * accumulated in double (a scalar loop: a reduction), from the gradients fq_backward_loop computes. */
FQ_ATTR static void FQ_NAME(fq_backward_sums)(fq_lstm_grad *g)
{
    const int64_t H = g->hidden;
    double sum_h = 0.0, sum_c = 0.0, sum_g = 0.0;
    for (int64_t r = 0; r < g->rows; ++r) {
        for (int64_t j = 0; j < H; ++j) {
            const int64_t k = r * H + j;
            const float *a = g->act + r * 4 * H;
            const float ai = a[j], af = a[H + j], ag = a[2 * H + j], ao = a[3 * H + j], t = g->tanh_c[k];
            const float dh_in = g->grad_out[k] + g->grad_h[k];
            const float dh = dh_in * (float)g->mask_hidden[k];
            const float dc_in = dh * ao * (1.0f - t * t) + g->grad_c[k];
            const float dc = dc_in * (float)g->mask_cell[k];
            if (g->dscale_hidden != NULL)
                sum_h += (double)dh_in * (double)g->dscale_hidden[k];
            if (g->dscale_cell != NULL)
                sum_c += (double)dc_in * (double)g->dscale_cell[k];
            if (g->dscale_gates != NULL) {
                const float *dg = g->dscale_gates + r * 4 * H;
                sum_g += (double)(dc * ag * (ai * (1.0f - ai))) * (double)dg[j] +
                         (double)(dc * g->c_prev[k] * (af * (1.0f - af))) * (double)dg[H + j] +
                         (double)(dc * ai * (1.0f - ag * ag)) * (double)dg[2 * H + j] +
                         (double)(dh * t * (ao * (1.0f - ao))) * (double)dg[3 * H + j];
            }
        }
    }
    g->scale_grad[0] = sum_h;
    g->scale_grad[1] = sum_c;
    g->scale_grad[2] = sum_g;
}
