/* qk_linear: fully connected layer y = x w^T (sections 4, 5).
 *
 * Weight rows w - z_w become zero-padded int16 rows; qk__mm_block multiplies them with blocks of the
 * input rows as they are (bytes), accumulates and requantizes. The reduction order is the
 * canonical increasing k. */
#include <string.h>

#include "../include/qk.h"
#include "internal/qk_internal.h"

typedef struct qk__linear_plan {
    size_t kp, np, nb_max;
    int16_t *a;
    int16_t *a_abs;
    int32_t *wmax;
    int64_t *wsum;
    int16_t *b;
    qk__mm_a_store ast; /* A prepared for the AVX-512 product */
    qk__mm mm;
} qk__linear_plan;

/* What a weights cache of a linear layer depends on besides the weight bytes (padding bytes zero). */
typedef struct qk__linear_key {
    int32_t k, n, isa, unused;
    qk_datapath dp;
} qk__linear_key;

/* The layout (base NULL: measure only): what depends on the weights alone from wa (the weights cache, or
 * the scratch), the rest from ar (the scratch); wa may be ar. */
static qk_status qk__linear_layout(int32_t m, int32_t k, int32_t n, const qk_datapath *dp, qk__arena *wa,
                                   qk__arena *ar, qk__linear_plan *pl)
{
    size_t nb;
    if (m < 1 || k < 1 || n < 1) {
        return QK_ERR_SHAPE;
    }
    pl->kp = qk__round_up((size_t)k, 16);
    pl->np = qk__round_up((size_t)n, QK__MR);
    nb = qk__block_columns(pl->kp);
    if (nb > qk__round_up((size_t)m, QK__NR)) {
        nb = qk__round_up((size_t)m, QK__NR);
    }
    pl->nb_max = nb;
    memset(&pl->mm, 0, sizeof(pl->mm));
    pl->a = (int16_t *)qk__arena_take(wa, qk__mul_sat(pl->np, pl->kp), sizeof(int16_t));
    pl->wmax = (int32_t *)qk__arena_take(wa, pl->np, sizeof(int32_t));
    pl->wsum = (int64_t *)qk__arena_take(wa, pl->np, sizeof(int64_t));
    qk__mm_reserve_a(wa, 1, pl->np, pl->kp, &pl->ast);
    pl->a_abs = qk__mm_uses_abs(dp, pl->kp) ? (int16_t *)qk__arena_take(ar, qk__mul_sat(pl->np, pl->kp), sizeof(int16_t)) : NULL;
    pl->b = (int16_t *)qk__arena_take(ar, nb * pl->kp, sizeof(int16_t));
    pl->mm.mp = pl->np;
    pl->mm.kp = pl->kp;
    qk__mm_reserve(ar, &pl->mm, nb, qk__mm_uses_abs(dp, pl->kp));
    return ar->overflow || wa->overflow ? QK_ERR_SIZE : QK_OK;
}

qk_status qk_linear_scratch_bytes(int32_t m, int32_t k, int32_t n, const qk_datapath *dp, size_t *bytes)
{
    qk__arena ar = {NULL, 0, 0};
    qk__linear_plan pl;
    qk_status st;
    if (dp == NULL || bytes == NULL) {
        return QK_ERR_NULL;
    }
    if ((st = qk__check_datapath(dp)) != QK_OK) {
        return st;
    }
    st = qk__linear_layout(m, k, n, dp, &ar, &ar, &pl);
    if (st == QK_OK) {
        *bytes = ar.used;
    }
    return st;
}

static qk__linear_key qk__linear_key_of(int32_t k, int32_t n, const qk_datapath *dp, int32_t isa)
{
    qk__linear_key key;
    memset(&key, 0, sizeof(key));
    key.k = k;
    key.n = n;
    key.isa = isa;
    key.dp = *dp;
    return key;
}

qk_status qk_linear_cache_bytes(int32_t k, int32_t n, const qk_datapath *dp, const qk_weights *w, size_t *bytes)
{
    qk__arena ar = {NULL, 0, 0}, wa = {NULL, 0, 0};
    qk__linear_plan pl;
    qk_status st;
    if (dp == NULL || w == NULL || bytes == NULL) {
        return QK_ERR_NULL;
    }
    if ((st = qk__check_datapath(dp)) != QK_OK) {
        return st;
    }
    if ((st = qk__linear_layout(1, k, n, dp, &wa, &ar, &pl)) != QK_OK) { /* the weights' part does not depend on m */
        return st;
    }
    *bytes = qk__add_sat(qk__weights_cache_prefix(w, sizeof(qk__linear_key)), wa.used);
    return *bytes == SIZE_MAX ? QK_ERR_SIZE : QK_OK;
}

qk_status qk_linear(int32_t m, int32_t k, int32_t n, const qk_datapath *dp, const void *x, size_t x_len,
                    int32_t x_zero_point, const qk_weights *w, const int32_t *bias, size_t bias_len,
                    const qk_requant_params *rq, void *y, size_t y_len, void *scratch, size_t scratch_bytes,
                    int32_t isa)
{
    qk__arena ar = {NULL, 0, 0}, wa = {NULL, 0, 0};
    qk__linear_plan pl;
    qk__linear_key key;
    qk_status st;
    size_t need, r0, kk = (size_t)k;
    int32_t sel;
    int cached, hit = 0;
    if (dp == NULL || x == NULL || w == NULL || rq == NULL || y == NULL) {
        return QK_ERR_NULL;
    }
    cached = w->cache != NULL;
    if ((st = qk__check_datapath(dp)) != QK_OK) {
        return st;
    }
    if ((st = qk__linear_layout(m, k, n, dp, cached ? &wa : &ar, &ar, &pl)) != QK_OK) {
        return st;
    }
    if (!qk__mul_size((size_t)m, kk, &need)) {
        return QK_ERR_SIZE;
    }
    if (x_len != need) {
        return QK_ERR_X_LENGTH;
    }
    if ((st = qk__check_x_zero_point(dp, x_zero_point)) != QK_OK) {
        return st;
    }
    if ((st = qk__check_weights(dp, w, (size_t)n, kk)) != QK_OK) {
        return st;
    }
    if ((st = qk__check_bias(dp, bias, bias_len, (size_t)n)) != QK_OK) {
        return st;
    }
    if ((st = qk__check_requant(dp, rq, (size_t)n)) != QK_OK) {
        return st;
    }
    if (!qk__mul_size((size_t)m, (size_t)n, &need)) {
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
        key = qk__linear_key_of(k, n, dp, sel);
        if ((st = qk__weights_cache(w, &key, sizeof(key), wa.used, &wa, &hit)) != QK_OK) {
            return st;
        }
    }
    ar.base = (unsigned char *)scratch;
    ar.used = 0;
    qk__linear_layout(m, k, n, dp, cached ? &wa : &ar, &ar, &pl);
    if (!hit) {
        qk__load_weights(sel, dp, w, (size_t)n, kk, 0, NULL, NULL, pl.np, pl.kp, pl.a, pl.wmax, pl.wsum);
        qk__mm_prepare_a(sel, pl.a, &pl.ast, 0);
        if (cached) {
            qk__weights_cache_stamp(w, &key, sizeof(key));
        }
    }
    pl.mm.dp = dp;
    pl.mm.rq = rq;
    pl.mm.isa = sel;
    pl.mm.m = (size_t)n;
    pl.mm.k = kk;
    pl.mm.a = pl.a;
    pl.mm.a_abs = pl.a_abs;
    pl.mm.bias = bias;
    pl.mm.chan0 = 0;
    pl.mm.row_wmax = pl.wmax;
    pl.mm.row_wsum = pl.wsum;
    pl.mm.perm = NULL;
    pl.mm.xmax = qk__max_abs_diff(x, x_len, dp->a_signed, x_zero_point);
    pl.mm.ap = qk__mm_a_of(&pl.ast, 0);
    qk__mm_prepare(&pl.mm);
    for (r0 = 0; r0 < (size_t)m; r0 += pl.nb_max) {
        size_t nb = (size_t)m - r0 < pl.nb_max ? (size_t)m - r0 : pl.nb_max;
        /* the input rows themselves; signed codes read with the sign bit flipped: (x + 128) - (z + 128) */
        qk__mm_bytes bb;
        bb.p = (const uint8_t *)x + r0 * kk;
        bb.ld = kk;
        bb.k = kk;
        bb.flip = dp->a_signed ? 0x80u : 0u;
        bb.zz = dp->a_signed ? x_zero_point + 128 : x_zero_point;
        st = qk__mm_block(&pl.mm, &bb, pl.b, nb, (unsigned char *)y + r0 * (size_t)n, (size_t)n, 1);
        if (st != QK_OK) {
            return st;
        }
    }
    return QK_OK;
}
