/*
 * Self-checking random sweep over the C kernel library, built with AddressSanitizer and
 * UndefinedBehaviorSanitizer by tests/kernels/test_c_library.py. It prints nothing and exits 0
 * when every property holds; otherwise it prints the first failure and exits 1.
 *
 * Properties (all checkable in C alone):
 *   - conv2d/linear with packed 1/2/4-bit weights equal the same weights unpacked;
 *   - the portable and the auto-selected instruction set give identical codes;
 *   - wrap: the output equals the requantization (qk_requantize) of the exact int64 sum
 *     recomputed here with naive loops and reduced modulo 2^A;
 *   - saturate/error: it equals the requantization of the sequential clamped sum in the
 *     canonical order, and error mode reports QK_ERR_OVERFLOW exactly when a clamp changes a value;
 *   - qk_requantize (vectorizable row code) equals the per-element definition of section 5;
 *   - nms keeps only scores at or above score_min, at most max_detections boxes, no two overlapping;
 *   - pack/unpack round trips; pools and lut run on random shapes; the primitives satisfy
 *     their defining inequalities.
 *
 * Usage: sanitizer_driver [seed] [iterations]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qk.h"
#include "qk_custom.h"
#include "qk_requant_core.h"

static uint64_t rng_state = 88172645463325252ull;

static uint64_t next_u64(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int32_t rnd_int(int32_t lo, int32_t hi) /* inclusive */
{
    return (int32_t)((int64_t)lo + (int64_t)(next_u64() % (uint64_t)((int64_t)hi - lo + 1)));
}

static int failures = 0;

#define CHECK(cond, ...)                                                                                          \
    do {                                                                                                          \
        if (!(cond)) {                                                                                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                  \
            fprintf(stderr, __VA_ARGS__);                                                                         \
            fprintf(stderr, "\n");                                                                                \
            failures++;                                                                                           \
            return;                                                                                               \
        }                                                                                                         \
    } while (0)

static void code_range(int32_t bits, int32_t is_signed, int32_t *lo, int32_t *hi)
{
    if (is_signed) {
        *lo = bits == 1 ? -1 : -(1 << (bits - 1));
        *hi = bits == 1 ? 1 : (1 << (bits - 1)) - 1;
    } else {
        *lo = 0;
        *hi = (1 << bits) - 1;
    }
}

static int32_t random_code(int32_t bits, int32_t is_signed)
{
    int32_t lo, hi, v;
    code_range(bits, is_signed, &lo, &hi);
    v = (next_u64() & 3) == 0 ? ((next_u64() & 1) ? lo : hi) : rnd_int(lo, hi);
    if (bits == 1 && is_signed && v == 0) {
        v = 1;
    }
    return v;
}

static void store_code(void *p, size_t i, int32_t is_signed, int32_t v)
{
    if (is_signed) {
        ((int8_t *)p)[i] = (int8_t)v;
    } else {
        ((uint8_t *)p)[i] = (uint8_t)v;
    }
}

static int32_t load_code(const void *p, size_t i, int32_t is_signed)
{
    return is_signed ? ((const int8_t *)p)[i] : ((const uint8_t *)p)[i];
}

static qk_datapath random_datapath(void)
{
    qk_datapath dp;
    dp.w_bits = rnd_int(1, 8);
    dp.w_signed = rnd_int(0, 1);
    dp.w_zero_point = (dp.w_bits == 1 && dp.w_signed) ? 0 : rnd_int(0, 1);
    dp.a_bits = rnd_int(1, 8);
    dp.a_signed = rnd_int(0, 1);
    dp.a_zero_point = (dp.a_bits == 1 && dp.a_signed) ? 0 : rnd_int(0, 1);
    dp.acc_bits = (next_u64() & 1) ? 32 : rnd_int(8, 32);
    dp.overflow = rnd_int(0, 2);
    dp.requant = rnd_int(0, 3);
    dp.multiplier_bits = rnd_int(8, 31);
    dp.fixed_point_rounding = rnd_int(0, 1);
    dp.rounding = rnd_int(0, 3);
    dp.zero_point_order = rnd_int(0, 1);
    dp.bias_bits = rnd_int(8, 32);
    return dp;
}

/* per-channel parameters valid for dp (arrays of `channels`) */
static void random_requant(const qk_datapath *dp, size_t channels, int32_t *m0, int32_t *shift, float *fm,
                           qk_requant_params *rq)
{
    size_t c;
    int32_t n = dp->multiplier_bits;
    for (c = 0; c < channels; ++c) {
        m0[c] = (next_u64() & 15) == 0 ? 0 : rnd_int(1 << (n - 1), n == 31 ? INT32_MAX : (1 << n) - 1);
        shift[c] = dp->requant == QK_REQUANT_POW2 ? rnd_int(-3, 24) : rnd_int(-24, 3);
        if ((next_u64() & 31) == 0) {
            shift[c] = dp->requant == QK_REQUANT_POW2 ? rnd_int(-30, 31) : rnd_int(-31, 30);
        }
        fm[c] = (float)rnd_int(1, 1 << 20) / (float)(1 << rnd_int(10, 30));
    }
    rq->channels = channels;
    rq->multiplier = m0;
    rq->shift = shift;
    rq->fmultiplier = fm;
    rq->y_bits = rnd_int(1, 8);
    rq->y_signed = rq->y_bits == 1 ? 0 : rnd_int(0, 1);
    code_range(rq->y_bits, rq->y_signed, &rq->y_min, &rq->y_max);
    rq->y_zero_point = rnd_int(rq->y_min, rq->y_max);
    if ((next_u64() & 3) == 0) {
        rq->y_min = rnd_int(rq->y_min, rq->y_max);
    }
}

static int64_t clamp_acc(int64_t v, int32_t bits, int *changed)
{
    int64_t lo = -(INT64_C(1) << (bits - 1)), hi = (INT64_C(1) << (bits - 1)) - 1;
    if (v < lo || v > hi) {
        *changed = 1;
        return v < lo ? lo : hi;
    }
    return v;
}

static int64_t wrap_acc(int64_t v, int32_t bits)
{
    int64_t m = INT64_C(1) << bits, lo = -(INT64_C(1) << (bits - 1));
    int64_t r = (v - lo) % m;
    return (r < 0 ? r + m : r) + lo;
}

/* ---------------------------------------------------------------------------------- conv2d */

static void check_conv2d(void)
{
    qk_datapath dp = random_datapath();
    qk_conv2d_geometry g;
    int32_t groups = rnd_int(1, 3), cg = rnd_int(1, 4), og = rnd_int(1, 5), oh, ow, zx, zw[16];
    int32_t m0[16], sh[16], bias[16];
    float fm[16];
    qk_requant_params rq;
    qk_weights wu, wp;
    size_t x_len, w_len, y_len, k, scratch_bytes, p_len, i, o;
    void *x, *w, *y1, *y2, *y3, *scratch;
    static const int32_t wider[] = {QK_ISA_AUTO, QK_ISA_X86_AVX2, QK_ISA_X86_AVX512_VNNI};
    int32_t isa;
    uint8_t *packed = NULL;
    int32_t *acc32;
    qk_status st, st2;
    int overflowed = 0;
    if ((next_u64() & 3) == 0) {
        cg = 1;
    } else if ((next_u64() & 3) == 0) {
        cg = rnd_int(16, 20); /* channel tiles of the channels-last copy */
    }
    g.n = rnd_int(1, 2);
    g.c_in = groups * cg;
    g.c_out = groups * og;
    g.h = rnd_int(1, 10);
    g.w = (next_u64() & 3) == 0 ? rnd_int(30, 70) : rnd_int(1, 10); /* rows beyond a 32-wide vector block */
    g.kh = rnd_int(1, 3);
    g.kw = rnd_int(1, 3);
    g.stride_h = rnd_int(1, 2);
    g.stride_w = rnd_int(1, 3);
    g.pad_h = rnd_int(0, 2);
    g.pad_w = rnd_int(0, 2);
    g.dilation_h = rnd_int(1, 2);
    g.dilation_w = rnd_int(1, 2);
    g.groups = groups;
    if (qk_conv2d_output_size(&g, &oh, &ow) != QK_OK) {
        return;
    }
    k = (size_t)cg * (size_t)g.kh * (size_t)g.kw;
    x_len = (size_t)g.n * (size_t)g.c_in * (size_t)g.h * (size_t)g.w;
    w_len = (size_t)g.c_out * k;
    y_len = (size_t)g.n * (size_t)g.c_out * (size_t)oh * (size_t)ow;
    x = malloc(x_len);
    w = malloc(w_len);
    y1 = malloc(y_len);
    y2 = malloc(y_len);
    y3 = malloc(y_len);
    acc32 = (int32_t *)malloc(y_len * sizeof(int32_t));
    for (i = 0; i < x_len; ++i) {
        store_code(x, i, dp.a_signed, random_code(dp.a_bits, dp.a_signed));
    }
    for (i = 0; i < w_len; ++i) {
        store_code(w, i, dp.w_signed, random_code(dp.w_bits, dp.w_signed));
    }
    zx = dp.a_zero_point ? random_code(dp.a_bits, dp.a_signed) : 0;
    for (o = 0; o < (size_t)g.c_out; ++o) {
        int64_t blo = -(INT64_C(1) << (dp.bias_bits - 1)), bhi = (INT64_C(1) << (dp.bias_bits - 1)) - 1;
        int64_t scale = INT64_C(1) << rnd_int(0, dp.bias_bits - 1);
        zw[o] = dp.w_zero_point ? random_code(dp.w_bits, dp.w_signed) : 0;
        bias[o] = (int32_t)((int64_t)rnd_int(-(1 << 30), 1 << 30) % scale);
        bias[o] = bias[o] < blo ? (int32_t)blo : (bias[o] > bhi ? (int32_t)bhi : bias[o]);
    }
    random_requant(&dp, (size_t)g.c_out, m0, sh, fm, &rq);
    wu.data = w;
    wu.length = w_len;
    wu.packed_bits = 0;
    wu.zero_point = zw;
    wu.zero_point_length = (size_t)g.c_out;
    wu.cache = NULL;
    wu.cache_bytes = 0;
    CHECK(qk_conv2d_scratch_bytes(&g, &dp, &scratch_bytes) == QK_OK, "scratch_bytes");
    scratch = malloc(scratch_bytes);
    st = qk_conv2d(&g, &dp, x, x_len, zx, &wu, bias, (size_t)g.c_out, &rq, y1, y_len, scratch, scratch_bytes,
                   QK_ISA_PORTABLE);
    for (isa = 0; isa < (int32_t)(sizeof(wider) / sizeof(wider[0])); ++isa) {
        int32_t available = 0, selected = 0;
        if (qk_isa_query(wider[isa], &available, &selected) != QK_OK || !available) {
            continue;
        }
        st2 = qk_conv2d(&g, &dp, x, x_len, zx, &wu, bias, (size_t)g.c_out, &rq, y2, y_len, scratch, scratch_bytes,
                        wider[isa]);
        if (st != st2 || (st == QK_OK && memcmp(y1, y2, y_len) != 0)) {
            fprintf(stderr, "FAIL conv2d: portable and ISA %d differ (status %d, %d)\n", wider[isa], st, st2);
            failures++;
        }
    }
    { /* a weights cache, missed then hit, gives the codes of a call without one; one byte short is refused */
        size_t cache_bytes = 0;
        int rep;
        qk_weights wc = wu;
        CHECK(qk_conv2d_cache_bytes(&g, &dp, &wu, &cache_bytes) == QK_OK, "conv2d cache_bytes");
        wc.cache = malloc(cache_bytes);
        wc.cache_bytes = cache_bytes;
        for (rep = 0; rep < 2; ++rep) {
            st2 = qk_conv2d(&g, &dp, x, x_len, zx, &wc, bias, (size_t)g.c_out, &rq, y2, y_len, scratch,
                            scratch_bytes, QK_ISA_AUTO);
            if (st != st2 || (st == QK_OK && memcmp(y1, y2, y_len) != 0)) {
                fprintf(stderr, "FAIL conv2d: with a weights cache (call %d) the codes differ (status %d, %d)\n",
                        rep, st, st2);
                failures++;
            }
        }
        wc.cache_bytes = cache_bytes - 1;
        if (st == QK_OK && qk_conv2d(&g, &dp, x, x_len, zx, &wc, bias, (size_t)g.c_out, &rq, y2, y_len, scratch,
                                     scratch_bytes, QK_ISA_AUTO) != QK_ERR_CACHE) {
            fprintf(stderr, "FAIL conv2d: a weights cache one byte short is not refused\n");
            failures++;
        }
        free(wc.cache);
    }
    if (dp.w_bits == 1 || dp.w_bits == 2 || dp.w_bits == 4) {
        int8_t *codes = (int8_t *)malloc(w_len);
        for (i = 0; i < w_len; ++i) {
            codes[i] = (int8_t)load_code(w, i, dp.w_signed);
        }
        p_len = (size_t)g.c_out * ((k * (size_t)dp.w_bits + 7) / 8);
        packed = (uint8_t *)malloc(p_len);
        if (qk_pack(codes, 1, w_len, (size_t)g.c_out, k, dp.w_bits, dp.w_signed, packed, p_len) != QK_OK) {
            fprintf(stderr, "FAIL pack of conv weights\n");
            failures++;
        } else {
            wp = wu;
            wp.data = packed;
            wp.length = p_len;
            wp.packed_bits = dp.w_bits;
            st2 = qk_conv2d(&g, &dp, x, x_len, zx, &wp, bias, (size_t)g.c_out, &rq, y3, y_len, scratch, scratch_bytes,
                            QK_ISA_AUTO);
            if (st != st2 || (st == QK_OK && memcmp(y1, y3, y_len) != 0)) {
                fprintf(stderr, "FAIL conv2d: packed and unpacked weights differ (status %d, %d)\n", st, st2);
                failures++;
            }
        }
        free(codes);
    }
    /* exact recomputation of every accumulator, then the library's requantization */
    {
        size_t b, oc, r, c;
        int32_t gi, u, v, cc;
        for (b = 0; b < (size_t)g.n; ++b) {
            for (oc = 0; oc < (size_t)g.c_out; ++oc) {
                gi = (int32_t)(oc / (size_t)og);
                for (r = 0; r < (size_t)oh; ++r) {
                    for (c = 0; c < (size_t)ow; ++c) {
                        int64_t exact = bias[oc], seq;
                        int changed = 0;
                        seq = clamp_acc(bias[oc], dp.acc_bits, &changed);
                        for (cc = 0; cc < cg; ++cc) {
                            for (u = 0; u < g.kh; ++u) {
                                for (v = 0; v < g.kw; ++v) {
                                    int64_t row = (int64_t)r * g.stride_h + (int64_t)u * g.dilation_h - g.pad_h;
                                    int64_t col = (int64_t)c * g.stride_w + (int64_t)v * g.dilation_w - g.pad_w;
                                    int32_t xv = zx, wv;
                                    int64_t prod;
                                    if (row >= 0 && row < g.h && col >= 0 && col < g.w) {
                                        xv = load_code(x,
                                                       ((b * (size_t)g.c_in + (size_t)(gi * cg + cc)) * (size_t)g.h +
                                                        (size_t)row) * (size_t)g.w + (size_t)col,
                                                       dp.a_signed);
                                    }
                                    wv = load_code(w, oc * k + (size_t)((cc * g.kh + u) * g.kw + v), dp.w_signed);
                                    prod = (int64_t)(xv - zx) * (wv - zw[oc]);
                                    exact += prod;
                                    seq = clamp_acc(seq + prod, dp.acc_bits, &changed);
                                }
                            }
                        }
                        overflowed |= changed;
                        acc32[((b * (size_t)g.c_out + oc) * (size_t)oh + r) * (size_t)ow + c] =
                            (int32_t)(dp.overflow == QK_OVERFLOW_WRAP ? wrap_acc(exact, dp.acc_bits) : seq);
                    }
                }
            }
        }
    }
    if (dp.overflow == QK_OVERFLOW_ERROR && overflowed) {
        CHECK(st == QK_ERR_OVERFLOW, "conv2d: error mode with an overflow returned %d", st);
    } else {
        CHECK(st == QK_OK, "conv2d returned %d (%s)", st, qk_status_message(st));
        CHECK(qk_requantize(acc32, y_len, (size_t)g.n, (size_t)g.c_out, (size_t)oh * (size_t)ow, 0, &dp, &rq, y3,
                            y_len, QK_ISA_PORTABLE) == QK_OK,
              "requantize of the recomputed accumulators");
        for (i = 0; i < y_len; ++i) {
            int32_t a = load_code(y1, i, rq.y_signed), e = load_code(y3, i, rq.y_signed);
            CHECK(a == e, "conv2d element %zu: %d, recomputed %d (acc %d, A=%d, overflow=%d)", i, a, e, acc32[i],
                  dp.acc_bits, dp.overflow);
        }
    }
    free(x);
    free(w);
    free(y1);
    free(y2);
    free(y3);
    free(acc32);
    free(scratch);
    free(packed);
}

/* ---------------------------------------------------------------------------------- linear */

static void check_linear(void)
{
    qk_datapath dp = random_datapath();
    int32_t m = rnd_int(1, 9), k = rnd_int(1, 300), n = rnd_int(1, 9), zx, zw, m0[16], sh[16], bias[16];
    float fm[16];
    qk_requant_params rq;
    qk_weights wu;
    size_t i, scratch_bytes, r, o, t;
    void *x, *w, *y1, *y2, *scratch;
    int32_t *acc;
    qk_status st;
    int overflowed = 0;
    if ((next_u64() & 3) == 0) { /* tiles of 16 rows x 16 channels of the transposed output, and their edges */
        m = rnd_int(16, 40);
        n = rnd_int(14, 16);
    }
    x = malloc((size_t)m * (size_t)k);
    w = malloc((size_t)n * (size_t)k);
    y1 = malloc((size_t)m * (size_t)n);
    y2 = malloc((size_t)m * (size_t)n);
    acc = (int32_t *)malloc((size_t)m * (size_t)n * sizeof(int32_t));
    for (i = 0; i < (size_t)m * (size_t)k; ++i) {
        store_code(x, i, dp.a_signed, random_code(dp.a_bits, dp.a_signed));
    }
    for (i = 0; i < (size_t)n * (size_t)k; ++i) {
        store_code(w, i, dp.w_signed, random_code(dp.w_bits, dp.w_signed));
    }
    zx = dp.a_zero_point ? random_code(dp.a_bits, dp.a_signed) : 0;
    zw = dp.w_zero_point ? random_code(dp.w_bits, dp.w_signed) : 0;
    for (o = 0; o < (size_t)n; ++o) {
        bias[o] = rnd_int(-(1 << 7), (1 << 7) - 1);
    }
    random_requant(&dp, 1, m0, sh, fm, &rq);
    wu.data = w;
    wu.length = (size_t)n * (size_t)k;
    wu.packed_bits = 0;
    wu.zero_point = &zw;
    wu.zero_point_length = 1;
    wu.cache = NULL;
    wu.cache_bytes = 0;
    qk_linear_scratch_bytes(m, k, n, &dp, &scratch_bytes);
    scratch = malloc(scratch_bytes);
    st = qk_linear(m, k, n, &dp, x, (size_t)m * (size_t)k, zx, &wu, bias, (size_t)n, &rq, y1, (size_t)m * (size_t)n,
                   scratch, scratch_bytes, QK_ISA_AUTO);
    for (r = 0; r < (size_t)m; ++r) {
        for (o = 0; o < (size_t)n; ++o) {
            int64_t exact = bias[o], seq;
            int changed = 0;
            seq = clamp_acc(bias[o], dp.acc_bits, &changed);
            for (t = 0; t < (size_t)k; ++t) {
                int64_t prod = (int64_t)(load_code(x, r * (size_t)k + t, dp.a_signed) - zx) *
                               (load_code(w, o * (size_t)k + t, dp.w_signed) - zw);
                exact += prod;
                seq = clamp_acc(seq + prod, dp.acc_bits, &changed);
            }
            overflowed |= changed;
            acc[r * (size_t)n + o] = (int32_t)(dp.overflow == QK_OVERFLOW_WRAP ? wrap_acc(exact, dp.acc_bits) : seq);
        }
    }
    if (dp.overflow == QK_OVERFLOW_ERROR && overflowed) {
        CHECK(st == QK_ERR_OVERFLOW, "linear: error mode with an overflow returned %d", st);
    } else {
        CHECK(st == QK_OK, "linear returned %d", st);
        CHECK(qk_requantize(acc, (size_t)m * (size_t)n, 1, 1, (size_t)m * (size_t)n, 0, &dp, &rq, y2,
                            (size_t)m * (size_t)n, QK_ISA_AUTO) == QK_OK,
              "requantize");
        for (i = 0; i < (size_t)m * (size_t)n; ++i) {
            CHECK(load_code(y1, i, rq.y_signed) == load_code(y2, i, rq.y_signed), "linear element %zu", i);
        }
    }
    { /* every other instruction set the machine has gives the same status and codes */
        static const int32_t isas[] = {QK_ISA_PORTABLE, QK_ISA_X86_AVX2, QK_ISA_X86_AVX512_VNNI};
        size_t e;
        for (e = 0; e < sizeof(isas) / sizeof(isas[0]); ++e) {
            int32_t available = 0, selected = 0;
            qk_status st2;
            if (qk_isa_query(isas[e], &available, &selected) != QK_OK || !available) {
                continue;
            }
            st2 = qk_linear(m, k, n, &dp, x, (size_t)m * (size_t)k, zx, &wu, bias, (size_t)n, &rq, y2,
                            (size_t)m * (size_t)n, scratch, scratch_bytes, isas[e]);
            CHECK(st2 == st && (st != QK_OK || memcmp(y1, y2, (size_t)m * (size_t)n) == 0),
                  "linear: ISA %d differs from auto (status %d, %d)", isas[e], st2, st);
        }
    }
    { /* one weights cache shared by every instruction set in turn (a miss whenever the ISA changes) */
        static const int32_t isas[] = {QK_ISA_AUTO, QK_ISA_PORTABLE, QK_ISA_X86_AVX2, QK_ISA_X86_AVX512_VNNI};
        size_t e, cache_bytes = 0;
        int rep;
        qk_weights wc = wu;
        CHECK(qk_linear_cache_bytes(k, n, &dp, &wu, &cache_bytes) == QK_OK, "linear cache_bytes");
        wc.cache = malloc(cache_bytes);
        wc.cache_bytes = cache_bytes;
        for (e = 0; e < sizeof(isas) / sizeof(isas[0]); ++e) {
            int32_t available = 0, selected = 0;
            if (qk_isa_query(isas[e], &available, &selected) != QK_OK || !available) {
                continue;
            }
            for (rep = 0; rep < 2; ++rep) {
                qk_status st2 = qk_linear(m, k, n, &dp, x, (size_t)m * (size_t)k, zx, &wc, bias, (size_t)n, &rq, y2,
                                          (size_t)m * (size_t)n, scratch, scratch_bytes, isas[e]);
                CHECK(st2 == st && (st != QK_OK || memcmp(y1, y2, (size_t)m * (size_t)n) == 0),
                      "linear: with a weights cache, ISA %d call %d differs (status %d, %d)", isas[e], rep, st2, st);
            }
        }
        free(wc.cache);
    }
    free(x);
    free(w);
    free(y1);
    free(y2);
    free(acc);
    free(scratch);
}

/* ---------------------------------------------------------------------------------- mul */

static void check_mul(void)
{
    qk_datapath dp = random_datapath();
    int32_t m0[1], sh[1], za, zb;
    float fm[1];
    qk_requant_params rq;
    size_t rows = (size_t)rnd_int(1, 12), inner = (size_t)rnd_int(1, 40), n = rows * inner, i;
    int per_row = (int)(next_u64() & 1);
    size_t b_len = per_row ? rows : n;
    void *a = malloc(n), *b = malloc(b_len), *y = malloc(n);
    int32_t *acc = (int32_t *)malloc(n * sizeof(int32_t));
    int overflowed = 0;
    qk_status st;
    for (i = 0; i < n; ++i) {
        store_code(a, i, dp.a_signed, random_code(dp.a_bits, dp.a_signed));
    }
    for (i = 0; i < b_len; ++i) {
        store_code(b, i, dp.a_signed, random_code(dp.a_bits, dp.a_signed));
    }
    za = dp.a_zero_point ? random_code(dp.a_bits, dp.a_signed) : 0;
    zb = dp.a_zero_point ? random_code(dp.a_bits, dp.a_signed) : 0;
    random_requant(&dp, 1, m0, sh, fm, &rq);
    for (i = 0; i < n; ++i) {
        int64_t p = (int64_t)(load_code(a, i, dp.a_signed) - za) *
                    (load_code(b, per_row ? i / inner : i, dp.a_signed) - zb);
        int changed = 0;
        int64_t sat = clamp_acc(p, dp.acc_bits, &changed);
        overflowed |= changed;
        acc[i] = (int32_t)(dp.overflow == QK_OVERFLOW_WRAP ? wrap_acc(p, dp.acc_bits) : sat);
    }
    st = qk_mul(a, n, b, b_len, rows, inner, za, zb, &dp, &rq, y, n, QK_ISA_AUTO);
    if (dp.overflow == QK_OVERFLOW_ERROR && overflowed) {
        CHECK(st == QK_ERR_OVERFLOW, "mul: error mode with an overflow returned %d", st);
    } else {
        CHECK(st == QK_OK, "mul returned %d", st);
        for (i = 0; i < n; ++i) {
            int32_t e = qk__requant_value(acc[i], &dp, &rq, 0, rq.y_min, rq.y_max);
            CHECK(load_code(y, i, rq.y_signed) == e, "mul element %zu: %d, expected %d", i,
                  load_code(y, i, rq.y_signed), e);
        }
    }
    free(a);
    free(b);
    free(y);
    free(acc);
}

/* ---------------------------------------------------------------------------------- softmax */

static void check_softmax(void)
{
    qk_datapath dp = random_datapath();
    int32_t bits = rnd_int(1, 8), is_signed = (int32_t)(next_u64() & 1), y_bits = rnd_int(2, 8);
    int32_t y_signed = (int32_t)(next_u64() & 1), table[256], zy, ylo, yhi;
    size_t outer = (size_t)rnd_int(1, 4), length = (size_t)rnd_int(1, 40), inner = (size_t)rnd_int(1, 5);
    size_t n = outer * length * inner, i, t, o, k, tl = (size_t)1 << bits;
    void *x = malloc(n), *y = malloc(n);
    if (bits == 1 && is_signed) {
        bits = 2;
        tl = 4;
    }
    table[0] = 1 << 16;
    for (t = 1; t < tl; ++t) {
        table[t] = table[t - 1] - rnd_int(0, table[t - 1] / 2);
    }
    for (i = 0; i < n; ++i) {
        store_code(x, i, is_signed, random_code(bits, is_signed));
    }
    CHECK(qk_softmax(x, n, outer, length, inner, bits, is_signed, table, tl, y_bits, y_signed, &dp, y, n) == QK_OK,
          "softmax status");
    zy = y_signed ? -(1 << (y_bits - 1)) : 0;
    ylo = y_signed ? -(1 << (y_bits - 1)) : 0;
    yhi = y_signed ? (1 << (y_bits - 1)) - 1 : (1 << y_bits) - 1;
    for (o = 0; o < outer; ++o) {
        for (k = 0; k < inner; ++k) {
            int32_t m = INT32_MIN;
            int64_t total = 0;
            for (t = 0; t < length; ++t) {
                int32_t v = load_code(x, (o * length + t) * inner + k, is_signed);
                m = v > m ? v : m;
            }
            for (t = 0; t < length; ++t) {
                total += table[m - load_code(x, (o * length + t) * inner + k, is_signed)];
            }
            for (t = 0; t < length; ++t) {
                size_t at = (o * length + t) * inner + k;
                int64_t e = table[m - load_code(x, at, is_signed)];
                int64_t v = qk__rounding_divide(e << y_bits, total, dp.rounding) + zy;
                v = v < ylo ? ylo : (v > yhi ? yhi : v);
                CHECK(load_code(y, at, y_signed) == (int32_t)v, "softmax element %zu: %d, expected %d", at,
                      load_code(y, at, y_signed), (int)v);
            }
        }
    }
    free(x);
    free(y);
}

/* ---------------------------------------------------------------------------------- layernorm */

/* gamma of ones is no gamma; adding a constant to every code of a row changes nothing (the mean cancels);
 * the portable and the auto-selected instruction set agree; per-element requantization of equal
 * multipliers is per-tensor requantization. */
static void check_layernorm(void)
{
    qk_datapath dp = random_datapath();
    int32_t bits = rnd_int(2, 7), is_signed = (int32_t)(next_u64() & 1), room, shift;
    size_t rows = (size_t)rnd_int(1, 6), length = (size_t)rnd_int(1, 300), n = rows * length, i;
    int32_t m0[300], sh[300], *bias = (int32_t *)malloc(length * sizeof(int32_t));
    float fm[300];
    int8_t *ones = (int8_t *)malloc(length);
    qk_requant_params rq, rq_each;
    int64_t eps = next_u64() % 3 == 0 ? 0 : (int64_t)(next_u64() % ((uint64_t)1 << 50));
    void *x = malloc(n), *shifted = malloc(n), *y = malloc(n), *y2 = malloc(n);
    /* the shifted codes stay 8-bit codes of the same signedness */
    room = is_signed ? 128 - (1 << (bits - 1)) : 256 - (1 << bits);
    shift = is_signed ? rnd_int(-room, room) : rnd_int(0, room);
    for (i = 0; i < n; ++i) {
        int32_t v = random_code(bits, is_signed);
        store_code(x, i, is_signed, v);
        store_code(shifted, i, is_signed, v + shift);
    }
    for (i = 0; i < length; ++i) {
        ones[i] = 1;
        bias[i] = rnd_int(-(1 << 24), 1 << 24);
    }
    random_requant(&dp, 1, m0, sh, fm, &rq);
    for (i = 1; i < length; ++i) {
        m0[i] = m0[0];
        sh[i] = sh[0];
        fm[i] = fm[0];
    }
    rq_each = rq;
    rq_each.channels = length;
    CHECK(qk_layernorm(x, n, rows, length, bits, is_signed, eps, NULL, 0, 0, bias, length, &dp, &rq, y, n,
                       QK_ISA_AUTO) == QK_OK, "layernorm status");
    CHECK(qk_layernorm(x, n, rows, length, bits, is_signed, eps, ones, length, 0, bias, length, &dp, &rq_each, y2, n,
                       QK_ISA_PORTABLE) == QK_OK, "layernorm status (gamma of ones, per element)");
    CHECK(memcmp(y, y2, n) == 0, "layernorm: gamma of ones or per-element multipliers changed the codes");
    CHECK(qk_layernorm(shifted, n, rows, length, 8, is_signed, eps, NULL, 0, 0, bias, length, &dp, &rq, y2, n,
                       QK_ISA_AUTO) == QK_OK, "layernorm status (shifted)");
    CHECK(memcmp(y, y2, n) == 0, "layernorm: shifting every code by %d changed the codes", shift);
    free(x);
    free(shifted);
    free(y);
    free(y2);
    free(ones);
    free(bias);
}

/* ---------------------------------------------------------------------------------- nms */

static int64_t box_area(const int64_t *b)
{
    return (b[2] > b[0] ? b[2] - b[0] : 0) * (b[3] > b[1] ? b[3] - b[1] : 0);
}

static void check_nms(void)
{
    int32_t bits = rnd_int(2, 8), is_signed = (int32_t)(next_u64() & 1), lo, hi;
    size_t n = (size_t)rnd_int(1, 3), a = (size_t)rnd_int(1, 20), i, j, b, need = 0, kept;
    int64_t p[4];
    qk_custom_tensor t[2], out;
    qk_custom_param params[4];
    void *boxes = malloc(n * a * 4), *scores = malloc(n * a), *y = malloc(n * a), *scratch;
    code_range(bits, is_signed, &lo, &hi);
    for (i = 0; i < n * a * 4; ++i) {
        store_code(boxes, i, is_signed, rnd_int(lo, (next_u64() & 1) ? hi : (lo + 5 < hi ? lo + 5 : hi)));
    }
    for (i = 0; i < n * a; ++i) {
        store_code(scores, i, is_signed, rnd_int(lo, hi));
    }
    p[0] = rnd_int(0, 65536);
    p[1] = rnd_int(lo - 1, hi + 1);
    p[2] = rnd_int(1, (int32_t)a + 1);
    p[3] = rnd_int(lo, hi);
    memset(t, 0, sizeof t);
    memset(&out, 0, sizeof out);
    t[0].data = boxes;
    t[0].ndim = 3;
    t[0].shape[0] = (int64_t)n;
    t[0].shape[1] = (int64_t)a;
    t[0].shape[2] = 4;
    t[1].data = scores;
    t[1].ndim = 2;
    t[1].shape[0] = (int64_t)n;
    t[1].shape[1] = (int64_t)a;
    out = t[1];
    out.data = y;
    t[0].bits = t[1].bits = out.bits = bits;
    t[0].is_signed = t[1].is_signed = out.is_signed = is_signed;
    for (i = 0; i < 4; ++i) {
        params[i].values = &p[i];
        params[i].count = 1;
    }
    CHECK(qk_nms_scratch_bytes(t, 2, params, 4, &out, &need) == QK_OK, "nms scratch status");
    scratch = malloc(need);
    CHECK(qk_nms(t, 2, params, 4, &out, scratch, need - 1) == QK_ERR_SCRATCH, "nms with short scratch");
    CHECK(qk_nms(t, 2, params, 4, &out, scratch, need) == QK_OK, "nms status");
    for (b = 0; b < n; ++b) { /* kept boxes (output != fill): their scores, at most max_detections, none overlapping */
        kept = 0;
        for (i = 0; i < a; ++i) {
            int32_t yi = load_code(y, b * a + i, is_signed), si = load_code(scores, b * a + i, is_signed);
            int64_t bi[4];
            CHECK(yi == si || yi == p[3], "nms element %zu: %d is neither the score %d nor the fill", i, yi, si);
            if (yi == p[3]) {
                continue;
            }
            CHECK(si >= p[1], "nms kept a score %d below score_min %d", si, (int)p[1]);
            ++kept;
            for (j = 0; j < 4; ++j) {
                bi[j] = load_code(boxes, (b * a + i) * 4 + j, is_signed);
            }
            for (j = 0; j < a; ++j) {
                int64_t bj[4], iw, ih, inter, uni;
                size_t k;
                if (j == i || load_code(y, b * a + j, is_signed) == p[3]) {
                    continue;
                }
                for (k = 0; k < 4; ++k) {
                    bj[k] = load_code(boxes, (b * a + j) * 4 + k, is_signed);
                }
                iw = (bi[2] < bj[2] ? bi[2] : bj[2]) - (bi[0] > bj[0] ? bi[0] : bj[0]);
                ih = (bi[3] < bj[3] ? bi[3] : bj[3]) - (bi[1] > bj[1] ? bi[1] : bj[1]);
                inter = (iw > 0 ? iw : 0) * (ih > 0 ? ih : 0);
                uni = box_area(bi) + box_area(bj) - inter;
                CHECK(!(uni > 0 && inter * 65536 > p[0] * uni), "nms kept boxes %zu and %zu that overlap", i, j);
            }
        }
        CHECK((int64_t)kept <= p[2], "nms kept %zu boxes, max_detections %d", kept, (int)p[2]);
    }
    p[0] = 65537;
    CHECK(qk_nms(t, 2, params, 4, &out, scratch, need) == QK_ERR_PARAM_VALUE, "nms with iou_q16 > 2^16");
    free(scratch);
    free(boxes);
    free(scores);
    free(y);
}

/* ---------------------------------------------------------------------------------- requantize */

static void check_requantize(void)
{
    qk_datapath dp = random_datapath();
    int32_t q[300], m0[3], sh[3], z_in = (next_u64() & 3) ? 0 : rnd_int(INT32_MIN, INT32_MAX);
    float fm[3];
    int8_t y[300];
    qk_requant_params rq;
    size_t i, n = 300;
    int isa;
    for (i = 0; i < n; ++i) {
        int e = rnd_int(0, 31);
        int64_t v = (int64_t)(next_u64() % (UINT64_C(1) << e)) * ((next_u64() & 1) ? 1 : -1);
        q[i] = (next_u64() & 7) == 0 ? ((next_u64() & 1) ? INT32_MIN : INT32_MAX) : (int32_t)v;
    }
    random_requant(&dp, 3, m0, sh, fm, &rq);
    for (isa = QK_ISA_AUTO; isa <= QK_ISA_PORTABLE; ++isa) {
        CHECK(qk_requantize(q, n, 10, 3, 10, z_in, &dp, &rq, y, n, isa) == QK_OK, "requantize status");
        for (i = 0; i < n; ++i) {
            size_t c = (i / 10) % 3;
            int64_t acc = (int64_t)q[i] - z_in;
            int32_t e;
            acc = acc < INT32_MIN ? INT32_MIN : (acc > INT32_MAX ? INT32_MAX : acc);
            e = qk__requant_value(acc, &dp, &rq, c, rq.y_min, rq.y_max);
            CHECK(load_code(y, i, rq.y_signed) == e,
                  "requantize element %zu (acc %lld, mode %d/%d rnd %d zpo %d, M0 %d e %d m %g): %d, expected %d", i,
                  (long long)acc, dp.requant, dp.fixed_point_rounding, dp.rounding, dp.zero_point_order, m0[c], sh[c],
                  (double)fm[c], load_code(y, i, rq.y_signed), e);
        }
    }
}

/* ---------------------------------------------------------------------------------- the rest */

static void check_pack_pools_lut_add(void)
{
    int32_t bits = rnd_int(1, 8), is_signed = rnd_int(0, 1), lo, hi;
    size_t rows = (size_t)rnd_int(1, 5), cols = (size_t)rnd_int(1, 40), i, p_len;
    int8_t codes[200], back[200];
    uint8_t packed[200];
    qk_pool2d_geometry g;
    qk_datapath dp = random_datapath();
    qk_add_params ap;
    int32_t oh, ow;
    uint8_t x[400], y[400], table[256];
    uint8_t b8[400];
    code_range(bits, is_signed, &lo, &hi);
    for (i = 0; i < rows * cols; ++i) {
        codes[i] = (int8_t)random_code(bits, is_signed);
        if (bits == 8 && !is_signed) {
            codes[i] = (int8_t)rnd_int(0, 127);
        }
    }
    p_len = (bits == 1 || bits == 2 || bits == 4) ? rows * ((cols * (size_t)bits + 7) / 8) : rows * cols;
    CHECK(qk_pack(codes, 1, rows * cols, rows, cols, bits, is_signed, packed, p_len) == QK_OK, "pack");
    CHECK(qk_unpack(packed, p_len, rows, cols, bits, is_signed, back, rows * cols) == QK_OK, "unpack");
    CHECK(memcmp(codes, back, rows * cols) == 0, "pack/unpack round trip (bits %d signed %d)", bits, is_signed);

    g.n = 1;
    g.c = rnd_int(1, 3);
    g.h = rnd_int(1, 8);
    g.w = rnd_int(1, 8);
    g.kh = rnd_int(1, g.h);
    g.kw = rnd_int(1, g.w);
    g.stride_h = rnd_int(1, 3);
    g.stride_w = rnd_int(1, 3);
    g.pad_h = rnd_int(0, g.kh / 2);
    g.pad_w = rnd_int(0, g.kw / 2);
    g.dilation_h = 1;
    g.dilation_w = 1;
    for (i = 0; i < 400; ++i) {
        x[i] = (uint8_t)rnd_int(0, 255);
    }
    oh = (g.h + 2 * g.pad_h - g.kh) / g.stride_h + 1;
    ow = (g.w + 2 * g.pad_w - g.kw) / g.stride_w + 1;
    CHECK(qk_max_pool2d(&g, x, (size_t)(g.c * g.h * g.w), is_signed, y, (size_t)(g.c * oh * ow)) == QK_OK, "max_pool");
    CHECK(qk_avg_pool2d(&g, &dp, x, (size_t)(g.c * g.h * g.w), is_signed, rnd_int(-300, 300), y,
                        (size_t)(g.c * oh * ow)) == QK_OK,
          "avg_pool");
    /* the global average of a constant plane is that constant */
    g.kh = g.h;
    g.kw = g.w;
    g.pad_h = g.pad_w = 0;
    memset(x, 77, sizeof x);
    CHECK(qk_avg_pool2d(&g, &dp, x, (size_t)(g.c * g.h * g.w), 0, 5, y, (size_t)g.c) == QK_OK && y[0] == 77,
          "global average of a constant");

    for (i = 0; i < 256; ++i) {
        table[i] = (uint8_t)(255 - i);
    }
    for (i = 0; i < 100; ++i) {
        store_code(x, i, is_signed, random_code(bits, is_signed));
    }
    CHECK(qk_lut(x, 100, 1, 100, bits, is_signed, table, (size_t)1 << bits, 0, y, 100) == QK_OK, "lut");
    for (i = 0; i < 100; ++i) {
        int32_t v = load_code(x, i, is_signed);
        size_t idx = (bits == 1 && is_signed) ? (size_t)(v > 0) : (size_t)(v - lo);
        CHECK(y[i] == table[idx], "lut element %zu", i);
    }
    if (bits <= 5) { /* per channel: 100 = 2 x 5 channels x 10, one table row of 2^bits entries per channel */
        uint8_t rows[5 * 32];
        for (i = 0; i < 5 * ((size_t)1 << bits); ++i) {
            rows[i] = (uint8_t)rnd_int(0, 255);
        }
        CHECK(qk_lut(x, 100, 5, 10, bits, is_signed, rows, 5 * ((size_t)1 << bits), 0, y, 100) == QK_OK, "lut rows");
        for (i = 0; i < 100; ++i) {
            int32_t v = load_code(x, i, is_signed);
            size_t idx = (bits == 1 && is_signed) ? (size_t)(v > 0) : (size_t)(v - lo);
            CHECK(y[i] == rows[((i / 10) % 5) * ((size_t)1 << bits) + idx], "lut row element %zu", i);
        }
        CHECK(qk_lut(x, 100, 3, 10, bits, is_signed, rows, 3 * ((size_t)1 << bits), 0, y, 100) == QK_ERR_SHAPE,
              "lut rows that do not divide the count");
    }

    for (i = 0; i < 400; ++i) {
        store_code(x, i, dp.a_signed, random_code(dp.a_bits, dp.a_signed));
        store_code(b8, i, dp.a_signed, random_code(dp.a_bits, dp.a_signed));
    }
    memset(&ap, 0, sizeof ap);
    ap.a_zero_point = dp.a_zero_point ? random_code(dp.a_bits, dp.a_signed) : 0;
    ap.b_zero_point = dp.a_zero_point ? random_code(dp.a_bits, dp.a_signed) : 0;
    ap.a_multiplier = ap.b_multiplier = ap.out_multiplier = 1 << (dp.multiplier_bits - 1);
    ap.a_shift = dp.requant == QK_REQUANT_POW2 ? rnd_int(-3, 20) : rnd_int(-20, 0);
    ap.b_shift = dp.requant == QK_REQUANT_POW2 ? rnd_int(-3, 20) : rnd_int(-20, 0);
    ap.out_shift = rnd_int(-31, 30);
    ap.a_fmultiplier = 0.375f;
    ap.b_fmultiplier = 3.0e38f;
    ap.y_bits = 8;
    ap.y_signed = 1;
    ap.y_min = -128;
    ap.y_max = 127;
    CHECK(qk_add(x, b8, 400, &ap, &dp, y, 400) == QK_OK, "add");
}

static void check_primitives(void)
{
    int i;
    int32_t out32;
    CHECK(qk_saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN, 31, &out32) == QK_OK && out32 == INT32_MAX,
          "srdhm(INT32_MIN, INT32_MIN)");
    for (i = 0; i < 2000; ++i) {
        int64_t v = (int64_t)(next_u64() >> rnd_int(2, 63)) * ((next_u64() & 1) ? 1 : -1), r, q2k, diff;
        int32_t k = rnd_int(1, 60), mode = rnd_int(0, 3);
        CHECK(qk_rounding_right_shift(v, k, mode, &r) == QK_OK, "rrs status");
        q2k = (int64_t)((uint64_t)r << k); /* |r * 2^k| <= |v| + 2^k */
        diff = v - q2k;
        if (mode == QK_ROUND_FLOOR) {
            CHECK(diff >= 0 && diff < (INT64_C(1) << k), "floor rrs(%lld, %d) = %lld", (long long)v, k, (long long)r);
        } else {
            CHECK(diff >= -(INT64_C(1) << (k - 1)) && diff <= (INT64_C(1) << (k - 1)), "rrs(%lld, %d, %d) = %lld",
                  (long long)v, k, mode, (long long)r);
        }
    }
}

int main(int argc, char **argv)
{
    long iterations = argc > 2 ? strtol(argv[2], NULL, 10) : 300, it;
    if (argc > 1) {
        rng_state ^= (uint64_t)strtoull(argv[1], NULL, 10) * UINT64_C(0x9E3779B97F4A7C15);
    }
    check_primitives();
    for (it = 0; it < iterations && failures == 0; ++it) {
        check_conv2d();
        check_linear();
        check_requantize();
        check_mul();
        check_softmax();
        check_layernorm();
        check_nms();
        check_pack_pools_lut_add();
    }
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    return 0;
}
