/*
 * A self-checking sweep of quant/csrc (fake_quant.h, lstm_step.h), built with ASan + UBSan by
 * tests/quant/sim/test_fake_quant_c.py: random problems of every granularity, rounding and size (0 and
 * 1 included), with NaN, +-Inf, ties and float32 extremes, through every entry point (the recurrence's
 * quantization site included), threads 1 and 3, on
 * every loop set this CPU runs. The loop sets must agree bit for bit, the threaded run with the one-thread
 * run, and the refusals must be FQ_BAD_ARGUMENT. Prints nothing and exits 0 when all holds; otherwise
 * names the first failure and exits 1.
 *
 * usage: fake_quant_sanitizer_driver SEED CASES
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_quant.h"
#include "lstm_step.h"

static uint64_t rng_state;

static uint32_t next_u32(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}

static int64_t below(int64_t n) { return n <= 0 ? 0 : (int64_t)(next_u32() % (uint32_t)n); }

static float random_value(float scale)
{
    switch (below(12)) {
    case 0: return NAN;
    case 1: return INFINITY;
    case 2: return -INFINITY;
    case 3: return 3.4e38f;
    case 4: return -0.0f;
    case 5: return scale * (float)(below(64) - 32) * 0.5f; /* exact ties in steps */
    default: return scale * ((float)next_u32() / 4294967296.0f * 40.0f - 20.0f);
    }
}

static int failures;

static void fail(const char *what, int64_t c)
{
    if (failures++ == 0)
        fprintf(stdout, "failure: %s (case %lld)\n", what, (long long)c);
}

/* Bitwise equality, NaN == NaN and 0.0 == -0.0. */
static int same(const float *a, const float *b, int64_t n)
{
    for (int64_t k = 0; k < n; ++k)
        if (!(a[k] == b[k] || (a[k] != a[k] && b[k] != b[k])))
            return 0;
    return 1;
}

static void *checked_malloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (p == NULL) {
        fprintf(stdout, "out of memory\n");
        exit(2);
    }
    return p;
}

static void fake_quant_case(int64_t c, int isa)
{
    fq_problem p;
    memset(&p, 0, sizeof p);
    p.granularity = (int)below(3);
    p.outer = below(4);
    p.channels = 1 + below(9);
    p.inner = below(2) ? 1 : below(300);
    p.group = 1;
    if (p.granularity == FQ_GROUP) {
        p.group = 1 + below(3);
        p.channels *= p.group;
    }
    if (below(10) == 0) /* large enough for several threads */
        p.inner = 70000;
    const int bits = 1 + (int)below(8);
    p.qmin = below(2) ? -(1 << (bits - 1)) : 0;
    p.qmax = p.qmin == 0 ? (1 << bits) - 1 : (1 << (bits - 1)) - 1;
    p.rounding = (int)below(4);
    const int64_t n = p.outer * p.channels * p.inner;
    const int64_t nq = p.granularity == FQ_TENSOR ? 1
                       : p.granularity == FQ_CHANNEL ? p.channels
                                                     : p.outer * (p.channels / p.group) * p.inner;
    float *x = checked_malloc(sizeof(float) * (size_t)n), *out = checked_malloc(sizeof(float) * (size_t)n);
    float *out_ref = checked_malloc(sizeof(float) * (size_t)n), *g = checked_malloc(sizeof(float) * (size_t)n);
    float *gx = checked_malloc(sizeof(float) * (size_t)n), *gx_ref = checked_malloc(sizeof(float) * (size_t)n);
    uint8_t *mask = checked_malloc((size_t)n), *mask_ref = checked_malloc((size_t)n);
    float *scale = checked_malloc(sizeof(float) * (size_t)nq);
    int32_t *zp = checked_malloc(sizeof(int32_t) * (size_t)nq);
    double *sums = checked_malloc(sizeof(double) * (size_t)nq), *sums_ref = checked_malloc(sizeof(double) * (size_t)nq);
    for (int64_t j = 0; j < nq; ++j) {
        scale[j] = ldexpf(1.0f + (float)below(1000) / 1000.0f, (int)below(40) - 20);
        zp[j] = p.qmin + (int32_t)below(p.qmax - p.qmin + 1);
    }
    for (int64_t k = 0; k < n; ++k) {
        x[k] = random_value(scale[0] * (float)(1 << bits));
        g[k] = random_value(1.0f);
    }
    p.x = x;
    p.scale = scale;
    p.zero_point = below(2) ? zp : NULL;
    /* the portable loops on one thread are the reference */
    p.out = out_ref;
    p.mask = mask_ref;
    if (fq_forward(&p, 1, FQ_ISA_PORTABLE) != FQ_OK)
        fail("forward (portable)", c);
    p.out = out;
    p.mask = mask;
    if (fq_forward(&p, 1 + 2 * (int)below(2), isa) != FQ_OK || !same(out, out_ref, n) || memcmp(mask, mask_ref, (size_t)n))
        fail("forward: loop sets or threads disagree", c);
    p.mask = NULL;
    if (fq_forward(&p, 3, isa) != FQ_OK || !same(out, out_ref, n))
        fail("forward without a mask", c);
    if (fq_backward(g, mask_ref, gx_ref, n, 1, FQ_ISA_PORTABLE) != FQ_OK ||
        fq_backward(g, mask_ref, gx, n, 3, isa) != FQ_OK || !same(gx, gx_ref, n))
        fail("backward", c);
    if (fq_lsq_backward(&p, g, gx_ref, sums_ref, FQ_ISA_PORTABLE) != FQ_OK || fq_lsq_backward(&p, g, gx, sums, isa) != FQ_OK ||
        !same(gx, gx_ref, n))
        fail("lsq backward", c);
    for (int64_t j = 0; j < nq; ++j)
        if (!(sums[j] == sums_ref[j] || (sums[j] != sums[j] && sums_ref[j] != sums_ref[j])))
            fail("lsq backward: the loop sets' sums disagree", c);
    {
        const float a = (nq > 0 ? scale[0] : 1.0f) * (float)(1 + below(16)), s = a / (float)(p.qmax > 0 ? p.qmax : 1);
        const int is_signed = p.qmin < 0;
        double ga = 0.0, ga_ref = 0.0;
        if (fq_pact_forward(x, out_ref, n, a, s, is_signed, p.qmin, p.qmax, p.rounding, FQ_ISA_PORTABLE) != FQ_OK ||
            fq_pact_forward(x, out, n, a, s, is_signed, p.qmin, p.qmax, p.rounding, isa) != FQ_OK || !same(out, out_ref, n))
            fail("pact forward", c);
        if (fq_pact_backward(x, g, gx_ref, n, a, is_signed, &ga_ref, FQ_ISA_PORTABLE) != FQ_OK ||
            fq_pact_backward(x, g, gx, n, a, is_signed, &ga, isa) != FQ_OK || !same(gx, gx_ref, n) ||
            !(ga == ga_ref || (ga != ga && ga_ref != ga_ref)))
            fail("pact backward", c);
        if (fq_pact_forward(x, out, n, 0.0f, s, 0, 0, 1, 0, isa) != FQ_BAD_ARGUMENT ||
            fq_pact_backward(x, g, gx, n, a, 0, NULL, isa) != FQ_BAD_ARGUMENT)
            fail("pact refusals", c);
    }
    {
        const float s = nq > 0 ? scale[0] : 1.0f;
        const int32_t z = nq > 0 ? zp[0] : 0;
        float *d = checked_malloc(sizeof(float) * (size_t)n), *d_ref = checked_malloc(sizeof(float) * (size_t)n);
        if (fq_lsq_parts(x, n, s, z, p.qmin, p.qmax, p.rounding, out_ref, mask_ref, d_ref, FQ_ISA_PORTABLE) != FQ_OK ||
            fq_lsq_parts(x, n, s, z, p.qmin, p.qmax, p.rounding, out, mask, d, isa) != FQ_OK || !same(out, out_ref, n) ||
            memcmp(mask, mask_ref, (size_t)n) || !same(d, d_ref, n))
            fail("lsq parts", c);
        if (fq_lsq_parts(x, n, 0.0f, z, p.qmin, p.qmax, p.rounding, out, mask, d, isa) != FQ_BAD_ARGUMENT)
            fail("lsq parts refusal", c);
        free(d), free(d_ref);
    }
    if (n > 0) { /* per-channel extremes against a scalar loop, and the qparams of those ranges */
        float *clo = checked_malloc(sizeof(float) * (size_t)p.channels), *chi = checked_malloc(sizeof(float) * (size_t)p.channels);
        float *cs = checked_malloc(sizeof(float) * (size_t)p.channels);
        int32_t *cz = checked_malloc(sizeof(int32_t) * (size_t)p.channels);
        const int status = fq_channel_extremes(x, p.outer, p.channels, p.inner, clo, chi, isa);
        int finite = 1;
        for (int64_t ch = 0; ch < p.channels; ++ch) {
            float a = INFINITY, b = -INFINITY;
            int nan = 0;
            for (int64_t o = 0; o < p.outer; ++o)
                for (int64_t i = 0; i < p.inner; ++i) {
                    const float v = x[(o * p.channels + ch) * p.inner + i];
                    nan |= v != v;
                    a = v < a ? v : a;
                    b = v > b ? v : b;
                }
            if (nan ? (clo[ch] == clo[ch] || chi[ch] == chi[ch]) : (clo[ch] != a || chi[ch] != b))
                fail("channel extremes", c);
            finite &= !nan && isfinite(a) && isfinite(b);
            if (!nan && isfinite(a) && isfinite(b))
                continue;
            clo[ch] = -1.0f, chi[ch] = 2.0f; /* finite ranges for the qparams below */
        }
        if (status != (finite ? FQ_OK : FQ_NOT_FINITE))
            fail("channel extremes status", c);
        fq_site rule;
        memset(&rule, 0, sizeof rule);
        rule.qmin = p.qmin, rule.qmax = p.qmax, rule.symmetric = (int)below(2), rule.is_signed = p.qmin < 0, rule.pow2 = (int)below(2);
        if (fq_qparams(clo, chi, p.channels, &rule, cs, cz) != FQ_OK)
            fail("qparams", c);
        for (int64_t ch = 0; ch < p.channels; ++ch)
            if (!(cs[ch] > 0.0f) || cz[ch] < p.qmin || cz[ch] > p.qmax)
                fail("qparams range", c);
        free(clo), free(chi), free(cs), free(cz);
    }
    if (n > 0) {
        float lo = 0.0f, hi = 0.0f, lo_ref = 0.0f, hi_ref = 0.0f;
        if (fq_minmax(x, n, &lo_ref, &hi_ref, FQ_ISA_PORTABLE) != FQ_OK || fq_minmax(x, n, &lo, &hi, isa) != FQ_OK ||
            !same(&lo, &lo_ref, 1) || !same(&hi, &hi_ref, 1))
            fail("minmax", c);
    }
    free(x), free(out), free(out_ref), free(g), free(gx), free(gx_ref), free(mask), free(mask_ref), free(scale);
    free(zp), free(sums), free(sums_ref);
}

static void lstm_case(int64_t c, int isa)
{
    const int64_t rows = below(5), H = below(40);
    const size_t small = (size_t)(rows * H), wide = 4 * small;
    float *pre = checked_malloc(sizeof(float) * wide), *cp = checked_malloc(sizeof(float) * small);
    float *act[2], *cc[2], *tc[2], *h[2], *gp[2], *gcp[2];
    for (int i = 0; i < 2; ++i) {
        act[i] = checked_malloc(sizeof(float) * wide), gp[i] = checked_malloc(sizeof(float) * wide);
        cc[i] = checked_malloc(sizeof(float) * small), tc[i] = checked_malloc(sizeof(float) * small);
        h[i] = checked_malloc(sizeof(float) * small), gcp[i] = checked_malloc(sizeof(float) * small);
    }
    float *go = checked_malloc(sizeof(float) * small), *gh = checked_malloc(sizeof(float) * small);
    float *gc = checked_malloc(sizeof(float) * small), *ds = checked_malloc(sizeof(float) * wide);
    uint8_t *masks = checked_malloc(small + small + wide); /* hidden, cell, gates */
    for (size_t k = 0; k < small + small + wide; ++k)
        masks[k] = (uint8_t)below(2);
    for (size_t k = 0; k < wide; ++k) {
        pre[k] = random_value(4.0f);
        ds[k] = random_value(1.0f);
    }
    for (size_t k = 0; k < small; ++k) {
        cp[k] = random_value(2.0f), go[k] = random_value(1.0f), gh[k] = random_value(1.0f), gc[k] = random_value(1.0f);
    }
    const int isas[2] = {FQ_ISA_PORTABLE, isa};
    const int use_dh = (int)below(2), use_dc = (int)below(2), use_dg = (int)below(2); /* LSQ sites or not */
    double scale_grad[2][3];
    for (int i = 0; i < 2; ++i) {
        if (fq_lstm_cell(rows, H, pre, cp, act[i], cc[i], isas[i]) != FQ_OK ||
            fq_lstm_hidden(rows, H, act[i], cc[i], tc[i], h[i], isas[i]) != FQ_OK)
            fail("lstm forward", c);
        fq_lstm_grad g = {rows, H, go, gh, gc, act[0], tc[0], cp, masks, masks + small, masks + 2 * small,
                          use_dh ? ds : NULL, use_dc ? ds + small : NULL, use_dg ? ds : NULL,
                          gp[i], gcp[i], {0.0, 0.0, 0.0}};
        if (fq_lstm_backward(&g, isas[i]) != FQ_OK)
            fail("lstm backward", c);
        memcpy(scale_grad[i], g.scale_grad, sizeof g.scale_grad);
    }
    if (!same(act[0], act[1], (int64_t)wide) || !same(cc[0], cc[1], (int64_t)small) ||
        !same(tc[0], tc[1], (int64_t)small) || !same(h[0], h[1], (int64_t)small))
        fail("lstm forward: the loop sets disagree", c);
    if (!same(gp[0], gp[1], (int64_t)wide) || !same(gcp[0], gcp[1], (int64_t)small))
        fail("lstm backward: the loop sets disagree", c);
    /* the one-pass step (the gradients' buffers, compared above, reused): the cell's then the hidden's values */
    if (fq_lstm_step(rows, H, pre, cp, gp[0], gcp[0], gcp[1], go, isa) != FQ_OK ||
        fq_lstm_step(rows, H, pre, cp, gp[1], gh, NULL, NULL, isa) != FQ_OK)
        fail("lstm step", c);
    if (!same(act[0], gp[0], (int64_t)wide) || !same(cc[0], gcp[0], (int64_t)small) ||
        !same(tc[0], gcp[1], (int64_t)small) || !same(h[0], go, (int64_t)small) || !same(act[0], gp[1], (int64_t)wide) ||
        !same(cc[0], gh, (int64_t)small))
        fail("lstm step: not the cell then the hidden state", c);
    for (int q = 0; q < 3; ++q)
        if (!(scale_grad[0][q] == scale_grad[1][q] || (scale_grad[0][q] != scale_grad[0][q] && scale_grad[1][q] != scale_grad[1][q])))
            fail("lstm backward: the loop sets' sums disagree", c);
    if (fq_sigmoid(pre, act[0], (int64_t)wide, isa) != FQ_OK || fq_tanh(pre, act[1], (int64_t)wide, isa) != FQ_OK)
        fail("activations", c);
    for (size_t k = 0; k < wide; ++k) { /* the ranges, and NaN in NaN out */
        const float s = act[0][k], t = act[1][k];
        if (pre[k] != pre[k] ? (s == s || t == t) : !(s >= 0.0f && s <= 1.0f && t >= -1.0f && t <= 1.0f))
            fail("activation range", c);
    }
    free(pre), free(cp), free(go), free(gh), free(gc), free(ds), free(masks);
    for (int i = 0; i < 2; ++i)
        free(act[i]), free(gp[i]), free(cc[i]), free(tc[i]), free(h[i]), free(gcp[i]);
}

static void site_case(int64_t c, int isa)
{
    const int64_t n = 1 + below(500);
    float *x = checked_malloc(sizeof(float) * (size_t)n), *out[2];
    uint8_t *mask[2];
    for (int i = 0; i < 2; ++i)
        out[i] = checked_malloc(sizeof(float) * (size_t)n), mask[i] = checked_malloc((size_t)n);
    fq_site proto;
    memset(&proto, 0, sizeof proto);
    const int bits = 1 + (int)below(8);
    proto.is_signed = (int)below(2);
    proto.symmetric = (int)below(2);
    proto.pow2 = (int)below(2);
    proto.qmin = proto.is_signed ? -(1 << (bits - 1)) : 0;
    proto.qmax = proto.is_signed ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
    proto.observer = (int)below(2);
    proto.momentum = 0.01f + (float)below(100) / 100.0f;
    proto.rounding = (int)below(4);
    proto.observing = 1;
    proto.quantizing = (int)below(4) != 0;
    fq_site site[2] = {proto, proto};
    const int isas[2] = {FQ_ISA_PORTABLE, isa};
    for (int call = 0; call < 4; ++call) {
        const float scale = ldexpf(1.0f, (int)below(60) - 30);
        for (int64_t k = 0; k < n; ++k) {
            x[k] = random_value(scale);
            if (x[k] != x[k] || isinf(x[k]))
                x[k] = 0.5f * scale;
        }
        const int nan_call = below(8) == 0;
        if (nan_call)
            x[below(n)] = below(2) ? NAN : -INFINITY;
        for (int i = 0; i < 2; ++i) {
            const fq_site before = site[i];
            const int status = fq_site_call(&site[i], x, n, out[i], mask[i], NULL, isas[i]);
            if (nan_call && (status != FQ_NOT_FINITE || memcmp(&before, &site[i], sizeof before)))
                fail("site: a NaN or Inf batch must be refused, the site unchanged", c);
            if (!nan_call && status != FQ_OK)
                fail("site call", c);
        }
        if (!nan_call && proto.quantizing && (!same(out[0], out[1], n) || memcmp(mask[0], mask[1], (size_t)n)))
            fail("site: the loop sets disagree", c);
        if (memcmp(&site[0], &site[1], sizeof site[0]))
            fail("site: the loop sets' states disagree", c);
    }
    fq_site bad = proto;
    bad.observing = 0, bad.quantizing = 1, bad.calibrated = 0;
    if (fq_site_call(&bad, x, n, out[0], mask[0], NULL, isa) != FQ_BAD_ARGUMENT ||
        fq_site_call(&bad, x, 0, out[0], NULL, NULL, isa) != FQ_BAD_ARGUMENT)
        fail("site refusals", c);
    /* an LSQ site: fq_lsq_parts's values, mask and derivative with its fixed step; it never observes */
    float *d_scale[2];
    for (int i = 0; i < 2; ++i)
        d_scale[i] = checked_malloc(sizeof(float) * (size_t)n);
    fq_site lsq = proto;
    lsq.lsq = 1, lsq.observing = 0, lsq.quantizing = 1, lsq.calibrated = 1;
    lsq.scale = ldexpf(1.0f + (float)below(100) / 100.0f, (int)below(20) - 10);
    lsq.zero_point = proto.qmin + (int32_t)below((uint64_t)(proto.qmax - proto.qmin) + 1);
    if (fq_site_call(&lsq, x, n, out[0], mask[0], d_scale[0], isa) != FQ_OK ||
        fq_lsq_parts(x, n, lsq.scale, lsq.zero_point, lsq.qmin, lsq.qmax, lsq.rounding, out[1], mask[1], d_scale[1],
                     FQ_ISA_PORTABLE) != FQ_OK)
        fail("lsq site call", c);
    if (!same(out[0], out[1], n) || memcmp(mask[0], mask[1], (size_t)n) || !same(d_scale[0], d_scale[1], n))
        fail("lsq site: not fq_lsq_parts", c);
    fq_site lsq_bad = lsq;
    lsq_bad.observing = 1;
    if (fq_site_call(&lsq_bad, x, n, out[0], mask[0], d_scale[0], isa) != FQ_BAD_ARGUMENT ||
        fq_site_call(&lsq, x, n, out[0], mask[0], NULL, isa) != FQ_BAD_ARGUMENT)
        fail("lsq site refusals", c);
    for (int i = 0; i < 2; ++i)
        free(d_scale[i]);
    free(x);
    for (int i = 0; i < 2; ++i)
        free(out[i]), free(mask[i]);
}

static void refusals(void)
{
    fq_problem p;
    memset(&p, 0, sizeof p);
    float v = 1.0f;
    p.x = &v, p.out = &v, p.scale = &v, p.outer = 1, p.channels = 1, p.inner = 1, p.qmin = 0, p.qmax = 1;
    fq_problem bad = p;
    bad.qmin = 2;
    if (fq_forward(&bad, 1, FQ_ISA_AUTO) != FQ_BAD_ARGUMENT)
        fail("qmin > qmax accepted", -1);
    bad = p, bad.rounding = 7;
    if (fq_forward(&bad, 1, FQ_ISA_AUTO) != FQ_BAD_ARGUMENT)
        fail("an unknown rounding accepted", -1);
    bad = p, bad.granularity = FQ_GROUP, bad.group = 3, bad.channels = 4;
    if (fq_forward(&bad, 1, FQ_ISA_AUTO) != FQ_BAD_ARGUMENT)
        fail("a group that does not divide accepted", -1);
    bad = p, bad.outer = INT64_MAX / 2, bad.channels = 4;
    if (fq_forward(&bad, 1, FQ_ISA_AUTO) != FQ_BAD_ARGUMENT)
        fail("an overflowing size accepted", -1);
    bad = p, bad.x = NULL;
    if (fq_forward(&bad, 1, FQ_ISA_AUTO) != FQ_BAD_ARGUMENT || fq_forward(&p, 1, 9) != FQ_BAD_ARGUMENT)
        fail("a NULL input or an unknown loop set accepted", -1);
    if (fq_backward(&v, NULL, &v, 1, 1, FQ_ISA_AUTO) != FQ_BAD_ARGUMENT || fq_minmax(&v, 0, &v, &v, 0) != FQ_BAD_ARGUMENT)
        fail("backward / minmax refusals", -1);
    if (fq_lstm_step(2, 2, &v, &v, &v, &v, &v, NULL, 0) != FQ_BAD_ARGUMENT)
        fail("lstm step: tanh_c without h", 0);
    if (fq_lstm_cell(-1, 2, &v, &v, &v, &v, 0) != FQ_BAD_ARGUMENT || fq_lstm_cell(INT64_MAX / 2, 3, &v, &v, &v, &v, 0) != FQ_BAD_ARGUMENT)
        fail("lstm size refusals", -1);
    fq_lstm_grad g;
    memset(&g, 0, sizeof g);
    g.rows = 1, g.hidden = 1;
    if (fq_lstm_backward(&g, 0) != FQ_BAD_ARGUMENT || fq_lstm_backward(NULL, 0) != FQ_BAD_ARGUMENT)
        fail("lstm backward refusals", -1);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stdout, "usage: %s SEED CASES\n", argv[0]);
        return 2;
    }
    rng_state = strtoull(argv[1], NULL, 10);
    const int64_t cases = strtoll(argv[2], NULL, 10);
    const int isa = fq_isa_available(FQ_ISA_AVX2) ? FQ_ISA_AVX2 : FQ_ISA_PORTABLE;
    refusals();
    for (int64_t c = 0; c < cases && failures == 0; ++c) {
        fake_quant_case(c, isa);
        lstm_case(c, isa);
        site_case(c, isa);
    }
    return failures ? 1 : 0;
}
