/* qk_conv2d: 2-D convolution with groups, stride, padding and dilation (sections 4, 5).
 *
 * Two schedules, the same results:
 *   - general: per image and group, the input becomes a channels-last byte copy of the codes
 *     (sign bit flipped for signed codes), padded with the zero point; blocks of output pixels
 *     gather their receptive fields from it (contiguous runs of kw * C_in/groups bytes) into
 *     byte rows (a 1x1 convolution with stride 1 and no padding takes its rows from the copy
 *     directly); qk__mm_block multiplies them, as x - z_x, with the weight rows w - z_w,
 *     reordered the same way (kh, kw, c). Exact sums do not depend on the order; the
 *     sequential saturating path maps back to the canonical (c, kh, kw) order.
 *   - one input channel per group (depthwise, any channel multiplier): direct accumulation
 *     of each output plane from a zero-padded int16 plane (qk__depthwise_plane), vectorized
 *     along the rows; bias, overflow and requantization then run over the whole plane.
 * Padded positions hold x_zero_point, i.e. a difference of 0. The weights' part of the layout (decoded
 * rows, their bounds, the prepared product form) lives in the weights cache where the caller gives one
 * (qk_weights.cache), else in the scratch. */
#include <string.h>

#include "../include/qk.h"
#include "internal/qk_arith.h"
#include "internal/qk_internal.h"


typedef struct qk__conv_plan {
    int32_t oh, ow;
    size_t groups, cg, mg, mgp, k, kp, hp, wp, pixels, nb_max;
    int depthwise;
    int16_t *a;
    int16_t *a_abs; /* general schedule, saturate/error: |a| */
    int32_t *wmax;
    int64_t *wsum;
    uint32_t *perm;  /* NULL when the kernel order is the canonical one (C_in/groups == 1 or 1x1) */
    int16_t *wtmp;   /* k int16: a weight row in canonical order, when perm is used */
    int16_t *xpad;  /* depthwise: hp * wp + QK__DW_SLACK int16 */
    uint8_t *xcl;   /* general: hp * wp * cg bytes, the channels-last copy */
    uint8_t *bcols; /* general: nb_max * kp bytes, the gathered columns */
    int16_t *b;     /* general: nb_max (rounded to QK__NR) * kp, their int16 rows where needed */
    int32_t *accplane; /* depthwise: oh * ow */
    qk__mm_a_store ast; /* general: A of each group prepared for the AVX-512 product */
    qk__mm mm;
} qk__conv_plan;

/* What a weights cache of a convolution depends on besides the weight bytes: the weight matrix's shape,
 * the datapath and the resolved ISA (every padding byte zero, so that keys compare as bytes). */
typedef struct qk__conv_key {
    int32_t c_in, c_out, kh, kw, groups, isa;
    qk_datapath dp;
} qk__conv_key;

/* The layout of a geometry and datapath (base NULL: measure only): what depends on the weights alone
 * from wa (the weights cache, or the scratch), the rest from ar (the scratch); wa may be ar. */
static qk_status qk__conv_layout(const qk_conv2d_geometry *g, const qk_datapath *dp, qk__arena *wa, qk__arena *ar,
                                 qk__conv_plan *pl)
{
    qk_status st = qk_conv2d_output_size(g, &pl->oh, &pl->ow);
    size_t rows;
    if (st != QK_OK) {
        return st;
    }
    if (g->n < 1 || g->c_in < 1 || g->c_out < 1) {
        return QK_ERR_SHAPE;
    }
    if (g->groups < 1 || g->c_in % g->groups != 0 || g->c_out % g->groups != 0) {
        return QK_ERR_GROUPS;
    }
    pl->groups = (size_t)g->groups;
    pl->cg = (size_t)(g->c_in / g->groups);
    pl->mg = (size_t)(g->c_out / g->groups);
    /* Every product of dimensions saturates (qk__mul_sat): a size that does not fit size_t ends as
     * QK_ERR_SIZE below, never as a wrapped, small size. */
    pl->k = qk__mul_sat(qk__mul_sat(pl->cg, (size_t)g->kh), (size_t)g->kw);
    if (pl->k > UINT32_MAX) {
        return QK_ERR_SIZE;
    }
    pl->kp = qk__round_up(pl->k, 16);
    pl->hp = qk__add_sat((size_t)g->h, qk__mul_sat(2, (size_t)g->pad_h));
    pl->wp = qk__add_sat((size_t)g->w, qk__mul_sat(2, (size_t)g->pad_w));
    pl->pixels = qk__mul_sat((size_t)pl->oh, (size_t)pl->ow);
    pl->depthwise = pl->cg == 1 && pl->k <= QK__K_CHUNK;
    memset(&pl->mm, 0, sizeof(pl->mm));
    if (pl->depthwise) {
        pl->mgp = pl->mg;
        rows = (size_t)g->c_out;
        pl->a = (int16_t *)qk__arena_take(wa, qk__mul_sat(rows, pl->kp), sizeof(int16_t));
        pl->a_abs = NULL;
        pl->wmax = (int32_t *)qk__arena_take(wa, rows, sizeof(int32_t));
        pl->wsum = (int64_t *)qk__arena_take(wa, rows, sizeof(int64_t));
        pl->perm = NULL;
        pl->wtmp = NULL;
        pl->xpad = (int16_t *)qk__arena_take(ar, qk__add_sat(qk__mul_sat(pl->hp, pl->wp), QK__DW_SLACK), sizeof(int16_t));
        pl->xcl = NULL;
        pl->bcols = NULL;
        pl->b = NULL;
        pl->accplane = (int32_t *)qk__arena_take(ar, pl->pixels, sizeof(int32_t));
        pl->nb_max = 0;
    } else {
        size_t nb = qk__block_columns(pl->kp);
        if (nb > qk__round_up(pl->pixels, QK__NR)) {
            nb = qk__round_up(pl->pixels, QK__NR);
        }
        pl->nb_max = nb;
        pl->mgp = qk__round_up(pl->mg, QK__MR);
        rows = qk__mul_sat(pl->groups, pl->mgp);
        pl->a = (int16_t *)qk__arena_take(wa, qk__mul_sat(rows, pl->kp), sizeof(int16_t));
        qk__mm_reserve_a(wa, pl->groups, pl->mgp, pl->kp, &pl->ast);
        pl->a_abs = qk__mm_uses_abs(dp, pl->kp) ? (int16_t *)qk__arena_take(ar, qk__mul_sat(rows, pl->kp), sizeof(int16_t)) : NULL;
        pl->wmax = (int32_t *)qk__arena_take(wa, rows, sizeof(int32_t));
        pl->wsum = (int64_t *)qk__arena_take(wa, rows, sizeof(int64_t));
        if (pl->cg > 1 && (size_t)g->kh * (size_t)g->kw > 1) {
            pl->perm = (uint32_t *)qk__arena_take(ar, pl->k, sizeof(uint32_t));
            pl->wtmp = (int16_t *)qk__arena_take(ar, pl->k, sizeof(int16_t));
        } else {
            pl->perm = NULL;
            pl->wtmp = NULL;
        }
        pl->xpad = NULL;
        pl->xcl = (uint8_t *)qk__arena_take(ar, qk__mul_sat(qk__mul_sat(pl->hp, pl->wp), pl->cg), 1);
        pl->bcols = (uint8_t *)qk__arena_take(ar, qk__mul_sat(nb, pl->kp), 1);
        pl->b = (int16_t *)qk__arena_take(ar, qk__mul_sat(nb, pl->kp), sizeof(int16_t));
        pl->accplane = NULL;
        pl->mm.mp = pl->mgp;
        pl->mm.kp = pl->kp;
        qk__mm_reserve(ar, &pl->mm, nb, qk__mm_uses_abs(dp, pl->kp));
    }
    return ar->overflow || wa->overflow ? QK_ERR_SIZE : QK_OK;
}

qk_status qk_conv2d_scratch_bytes(const qk_conv2d_geometry *g, const qk_datapath *dp, size_t *bytes)
{
    qk__arena ar = {NULL, 0, 0};
    qk__conv_plan pl;
    qk_status st;
    if (g == NULL || dp == NULL || bytes == NULL) {
        return QK_ERR_NULL;
    }
    if ((st = qk__check_datapath(dp)) != QK_OK) {
        return st;
    }
    st = qk__conv_layout(g, dp, &ar, &ar, &pl);
    if (st == QK_OK) {
        *bytes = ar.used;
    }
    return st;
}

static qk__conv_key qk__conv_key_of(const qk_conv2d_geometry *g, const qk_datapath *dp, int32_t isa)
{
    qk__conv_key key;
    memset(&key, 0, sizeof(key));
    key.c_in = g->c_in;
    key.c_out = g->c_out;
    key.kh = g->kh;
    key.kw = g->kw;
    key.groups = g->groups;
    key.isa = isa;
    key.dp = *dp;
    return key;
}

qk_status qk_conv2d_cache_bytes(const qk_conv2d_geometry *g, const qk_datapath *dp, const qk_weights *w,
                                size_t *bytes)
{
    qk__arena ar = {NULL, 0, 0}, wa = {NULL, 0, 0};
    qk__conv_plan pl;
    qk_status st;
    if (g == NULL || dp == NULL || w == NULL || bytes == NULL) {
        return QK_ERR_NULL;
    }
    if ((st = qk__check_datapath(dp)) != QK_OK) {
        return st;
    }
    if ((st = qk__conv_layout(g, dp, &wa, &ar, &pl)) != QK_OK) {
        return st;
    }
    *bytes = qk__add_sat(qk__weights_cache_prefix(w, sizeof(qk__conv_key)), wa.used);
    return *bytes == SIZE_MAX ? QK_ERR_SIZE : QK_OK;
}

/* x - z_x of image n, channel c into the interior of a padded plane (dst: its first interior position).
 * Signed codes are read as bytes with the sign bit flipped (x + 128), so one unsigned loop
 * serves both: (x + 128) - (z + 128) = x - z. */
static void qk__fill_plane(const void *restrict x, int32_t is_signed, size_t offset, int32_t z, size_t h, size_t w,
                           int16_t *restrict dst, size_t wp)
{
    size_t r, col;
    unsigned flip = is_signed ? 0x80u : 0u;
    int32_t zz = is_signed ? z + 128 : z;
    for (r = 0; r < h; ++r) {
        int16_t *d = dst + r * wp;
        const uint8_t *s = (const uint8_t *)x + offset + r * w;
        for (col = 0; col < w; ++col) {
            d[col] = (int16_t)((int32_t)(s[col] ^ flip) - zz);
        }
    }
}

static qk_status qk__conv_general(const qk_conv2d_geometry *g, const qk_datapath *dp, const void *x, int32_t zx,
                                  const int32_t *bias, void *y, qk__conv_plan *pl)
{
    size_t n, grp, p0, jj, i, j;
    size_t cg = pl->cg, kp = pl->kp, wp = pl->wp, ow = (size_t)pl->ow;
    size_t kh = (size_t)g->kh, kw = (size_t)g->kw;
    size_t sh = (size_t)g->stride_h, sw = (size_t)g->stride_w, dh = (size_t)g->dilation_h, dw = (size_t)g->dilation_w;
    /* a 1x1 convolution with stride 1 and no padding is a plain GEMM on the channels-last copy: no gather */
    int direct = kh == 1 && kw == 1 && sh == 1 && sw == 1 && g->pad_h == 0 && g->pad_w == 0;
    qk__mm_bytes bb;
    bb.flip = 0; /* the copy holds the flipped codes already */
    bb.zz = dp->a_signed ? zx + 128 : zx;
    bb.k = pl->k;
    memset(pl->xcl, bb.zz, pl->hp * pl->wp * cg); /* padding: the zero point, a difference of 0 */
    for (n = 0; n < (size_t)g->n; ++n) {
        for (grp = 0; grp < pl->groups; ++grp) {
            qk__mm mm = pl->mm;
            size_t offset = ((n * (size_t)g->c_in + grp * cg) * (size_t)g->h) * (size_t)g->w;
            qk__fill_channels_last(pl->mm.isa, x, dp->a_signed, offset, cg, (size_t)g->h, (size_t)g->w,
                                   pl->xcl + ((size_t)g->pad_h * wp + (size_t)g->pad_w) * cg, wp);
            mm.a = pl->a + grp * pl->mgp * kp;
            mm.a_abs = pl->a_abs ? pl->a_abs + grp * pl->mgp * kp : NULL;
            mm.row_wmax = pl->wmax + grp * pl->mgp;
            mm.row_wsum = pl->wsum + grp * pl->mgp;
            mm.bias = bias ? bias + grp * pl->mg : NULL;
            mm.chan0 = grp * pl->mg;
            mm.ap = qk__mm_a_of(&pl->ast, grp);
            qk__mm_prepare(&mm);
            for (p0 = 0; p0 < pl->pixels; p0 += pl->nb_max) {
                size_t nb = pl->pixels - p0 < pl->nb_max ? pl->pixels - p0 : pl->nb_max;
                qk_status st;
                if (direct) { /* the columns are the channels-last pixels themselves */
                    bb.p = pl->xcl + p0 * cg;
                    bb.ld = cg;
                } else { /* each column's receptive field, in (kh, kw, c) order: runs of kw * cg bytes */
                    bb.p = pl->bcols;
                    bb.ld = kp;
                }
                for (jj = 0; jj < nb && !direct; ++jj) {
                    uint8_t *row = pl->bcols + jj * kp;
                    size_t idx = 0, p = p0 + jj, r0 = (p / ow) * sh, c0 = (p % ow) * sw;
                    for (i = 0; i < kh; ++i) {
                        const uint8_t *src = pl->xcl + ((r0 + i * dh) * wp + c0) * cg;
                        if (dw == 1) {
                            memcpy(row + idx, src, kw * cg);
                            idx += kw * cg;
                        } else {
                            for (j = 0; j < kw; ++j) {
                                memcpy(row + idx, src + j * dw * cg, cg);
                                idx += cg;
                            }
                        }
                    }
                }
                st = qk__mm_block(&mm, &bb, pl->b, nb,
                                  (unsigned char *)y + (n * (size_t)g->c_out + grp * pl->mg) * pl->pixels + p0,
                                  pl->pixels, 0);
                if (st != QK_OK) {
                    return st;
                }
            }
        }
    }
    return QK_OK;
}

static qk_status qk__conv_depthwise(const qk_conv2d_geometry *g, const qk_datapath *dp,
                                    const qk_requant_params *rq, const void *x, int32_t zx, int32_t xmax,
                                    const int32_t *bias, void *y, qk__conv_plan *pl, int32_t isa)
{
    size_t n, o, r, i, j, col;
    size_t ow = (size_t)pl->ow, oh = (size_t)pl->oh, wp = pl->wp, kh = (size_t)g->kh, kw = (size_t)g->kw;
    size_t sh = (size_t)g->stride_h, sw = (size_t)g->stride_w, dh = (size_t)g->dilation_h, dw = (size_t)g->dilation_w;
    size_t mult = pl->mg;
    int64_t lim = (INT64_C(1) << (dp->acc_bits - 1)) - 1;
    int32_t *acc = pl->accplane;
    memset(pl->xpad, 0, (pl->hp * pl->wp + QK__DW_SLACK) * sizeof(int16_t));
    for (n = 0; n < (size_t)g->n; ++n) {
        for (o = 0; o < (size_t)g->c_out; ++o) {
            const int16_t *arow = pl->a + o * pl->kp;
            int64_t b = bias ? bias[o] : 0, abs_b = b < 0 ? -b : b;
            int plane_safe = abs_b + (int64_t)xmax * pl->wsum[o] <= lim; /* read only off the wrap path */
            if (o % mult == 0) {
                size_t offset = ((n * (size_t)g->c_in + o / mult) * (size_t)g->h) * (size_t)g->w;
                qk__fill_plane(x, dp->a_signed, offset, zx, (size_t)g->h, (size_t)g->w,
                               pl->xpad + (size_t)g->pad_h * wp + (size_t)g->pad_w, wp);
            }
            if (dp->overflow == QK_OVERFLOW_WRAP) {
                qk__depthwise_plane(isa, pl->xpad, wp, arow, kh, kw, sh, sw, dh, dw, oh, ow, acc);
                qk__bias_row(isa, acc, pl->pixels, (int32_t)b, dp->acc_bits, acc);
            } else if (plane_safe) {
                qk__depthwise_plane(isa, pl->xpad, wp, arow, kh, kw, sh, sw, dh, dw, oh, ow, acc);
                qk__bias_row(isa, acc, pl->pixels, (int32_t)b, 32, acc);
            } else {
                for (r = 0; r < oh; ++r) {
                    for (col = 0; col < ow; ++col) {
                        /* sequential, canonical (kh, kw) order, clamp after every addition */
                        int changed = 0;
                        int64_t s = b;
                        if (s > lim || s < -lim - 1) {
                            s = s > lim ? lim : -lim - 1;
                            changed = 1;
                        }
                        for (i = 0; i < kh; ++i) {
                            for (j = 0; j < kw; ++j) {
                                s += (int32_t)arow[i * kw + j] *
                                     (int32_t)pl->xpad[(r * sh + i * dh) * wp + col * sw + j * dw];
                                if (s > lim || s < -lim - 1) {
                                    s = s > lim ? lim : -lim - 1;
                                    changed = 1;
                                }
                            }
                        }
                        if (changed && dp->overflow == QK_OVERFLOW_ERROR) {
                            return QK_ERR_OVERFLOW;
                        }
                        acc[r * ow + col] = (int32_t)s;
                    }
                }
            }
            qk__requant_row(isa, acc, pl->pixels, o, dp, rq, (unsigned char *)y + (n * (size_t)g->c_out + o) * pl->pixels);
        }
    }
    return QK_OK;
}

qk_status qk_conv2d(const qk_conv2d_geometry *g, const qk_datapath *dp, const void *x, size_t x_len,
                    int32_t x_zero_point, const qk_weights *w, const int32_t *bias, size_t bias_len,
                    const qk_requant_params *rq, void *y, size_t y_len, void *scratch, size_t scratch_bytes,
                    int32_t isa)
{
    qk__arena ar = {NULL, 0, 0}, wa = {NULL, 0, 0};
    qk__conv_plan pl;
    qk__conv_key key;
    qk_status st;
    size_t need, grp;
    int32_t sel, xmax;
    int cached, hit = 0;
    if (g == NULL || dp == NULL || x == NULL || w == NULL || rq == NULL || y == NULL) {
        return QK_ERR_NULL;
    }
    cached = w->cache != NULL;
    if ((st = qk__check_datapath(dp)) != QK_OK) {
        return st;
    }
    if ((st = qk__conv_layout(g, dp, cached ? &wa : &ar, &ar, &pl)) != QK_OK) {
        return st;
    }
    if (!qk__mul_size((size_t)g->n * (size_t)g->c_in, (size_t)g->h * (size_t)g->w, &need)) {
        return QK_ERR_SIZE;
    }
    if (x_len != need) {
        return QK_ERR_X_LENGTH;
    }
    if ((st = qk__check_x_zero_point(dp, x_zero_point)) != QK_OK) {
        return st;
    }
    if ((st = qk__check_weights(dp, w, (size_t)g->c_out, pl.k)) != QK_OK) {
        return st;
    }
    if ((st = qk__check_bias(dp, bias, bias_len, (size_t)g->c_out)) != QK_OK) {
        return st;
    }
    if ((st = qk__check_requant(dp, rq, (size_t)g->c_out)) != QK_OK) {
        return st;
    }
    if (!qk__mul_size((size_t)g->n * (size_t)g->c_out, pl.pixels, &need)) {
        return QK_ERR_SIZE;
    }
    if (y_len != need) {
        return QK_ERR_Y_LENGTH;
    }
    if ((st = qk__select_isa(isa, &sel)) != QK_OK) {
        return st;
    }
    if (scratch == NULL || scratch_bytes < ar.used) {
        return QK_ERR_SCRATCH;
    }
    if (cached) {
        key = qk__conv_key_of(g, dp, sel);
        if ((st = qk__weights_cache(w, &key, sizeof(key), wa.used, &wa, &hit)) != QK_OK) {
            return st;
        }
    }
    ar.base = (unsigned char *)scratch;
    ar.used = 0;
    qk__conv_layout(g, dp, cached ? &wa : &ar, &ar, &pl);
    xmax = qk__max_abs_diff(x, x_len, dp->a_signed, x_zero_point);
    if (pl.depthwise) {
        if (!hit) {
            qk__load_weights(sel, dp, w, (size_t)g->c_out, pl.k, 0, NULL, NULL, (size_t)g->c_out, pl.kp, pl.a,
                             pl.wmax, pl.wsum);
        }
        if (cached && !hit) {
            qk__weights_cache_stamp(w, &key, sizeof(key));
        }
        return qk__conv_depthwise(g, dp, rq, x, x_zero_point, xmax, bias, y, &pl, sel);
    }
    if (pl.perm != NULL) {
        size_t t = 0, c, i, j; /* canonical (c, i, j) -> kernel order (i, j, c) */
        for (c = 0; c < pl.cg; ++c) {
            for (i = 0; i < (size_t)g->kh; ++i) {
                for (j = 0; j < (size_t)g->kw; ++j, ++t) {
                    pl.perm[t] = (uint32_t)((i * (size_t)g->kw + j) * pl.cg + c);
                }
            }
        }
    }
    for (grp = 0; grp < pl.groups && !hit; ++grp) {
        qk__load_weights(sel, dp, w, pl.mg, pl.k, grp * pl.mg, pl.perm, pl.wtmp, pl.mgp, pl.kp,
                         pl.a + grp * pl.mgp * pl.kp, pl.wmax + grp * pl.mgp, pl.wsum + grp * pl.mgp);
        qk__mm_prepare_a(sel, pl.a + grp * pl.mgp * pl.kp, &pl.ast, grp);
    }
    if (cached && !hit) {
        qk__weights_cache_stamp(w, &key, sizeof(key));
    }
    pl.mm.dp = dp;
    pl.mm.rq = rq;
    pl.mm.isa = sel;
    pl.mm.m = pl.mg;
    pl.mm.k = pl.k;
    pl.mm.perm = pl.perm;
    pl.mm.xmax = xmax;
    return qk__conv_general(g, dp, x, x_zero_point, bias, y, &pl);
}
