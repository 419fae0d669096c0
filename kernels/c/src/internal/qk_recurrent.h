/* Shared by the recurrent kernels (qk_lstm, qk_gru; sections 6.6, 6.7): the section-4 dot product of one
 * gate row, the contract's interpolated sigmoid/tanh tables on Q3.12 values, the int16 clamp. */
#ifndef QK_RECURRENT_H
#define QK_RECURRENT_H

#include "qk_arith.h"
#include "qk_internal.h"
#include "qk_requant_core.h"

#define QK__RNN_TABLE 513
#define QK__LO16 (-32768)
#define QK__HI16 32767

/* The arguments every recurrent kernel takes; rq_mid is the GRU's requantization of h - z_h to Q0.15 (NULL for
 * the LSTM). */
typedef struct qk__rnn_args {
    size_t gates, n, steps, features, hidden;
    const qk_datapath *dp;
    const void *x;
    size_t x_len;
    int32_t x_zero_point, h_zero_point;
    const qk_weights *w_ih, *w_hh;
    const int32_t *b_ih, *b_hh;
    size_t b_ih_len, b_hh_len;
    const qk_requant_params *rq_ih, *rq_hh, *rq_mid, *rq_out;
    int32_t reverse;
    const int16_t *sigmoid_table, *tanh_table;
    size_t table_len;
    const void *y;
    size_t y_len;
} qk__rnn_args;

/* The scratch of a recurrent kernel: weight rows, the step's centred operands, the states and the gate parts. */
typedef struct qk__rnn_plan {
    int16_t *wi, *wh;     /* w - z_w rows: G H x F and G H x H */
    int32_t *wmax;        /* row bounds (filled by the loader, unused here) */
    int64_t *wsum;
    int32_t *xd, *hd;     /* x_t - z_x (F) and h - z_h (H) */
    int32_t *h, *c;       /* hidden codes (H), the LSTM's cell (H) */
    int32_t *p, *q;       /* gate parts, Q3.12 (G H each): the LSTM's sums in p, the GRU's two parts in p and q */
} qk__rnn_plan;

/* Carve the plan of `gates` rows per hidden unit from the arena (sizes only when ar->base is NULL). */
static inline qk_status qk__rnn_layout(size_t gates, size_t f, size_t hidden, qk__arena *ar, qk__rnn_plan *pl)
{
    size_t rows = qk__mul_sat(gates, hidden), big = rows > f ? rows : f;
    pl->wi = (int16_t *)qk__arena_take(ar, qk__mul_sat(rows, f), sizeof(int16_t));
    pl->wh = (int16_t *)qk__arena_take(ar, qk__mul_sat(rows, hidden), sizeof(int16_t));
    pl->wmax = (int32_t *)qk__arena_take(ar, big, sizeof(int32_t));
    pl->wsum = (int64_t *)qk__arena_take(ar, big, sizeof(int64_t));
    pl->xd = (int32_t *)qk__arena_take(ar, f, sizeof(int32_t));
    pl->hd = (int32_t *)qk__arena_take(ar, hidden, sizeof(int32_t));
    pl->h = (int32_t *)qk__arena_take(ar, hidden, sizeof(int32_t));
    pl->c = (int32_t *)qk__arena_take(ar, hidden, sizeof(int32_t));
    pl->p = (int32_t *)qk__arena_take(ar, rows, sizeof(int32_t));
    pl->q = (int32_t *)qk__arena_take(ar, rows, sizeof(int32_t));
    return ar->overflow ? QK_ERR_SIZE : QK_OK;
}

/* *bytes of the plan of `gates` rows per hidden unit (QK_ERR_SHAPE for an empty layer). */
static inline qk_status qk__rnn_scratch_bytes(size_t gates, size_t features, size_t hidden, size_t *bytes)
{
    qk__arena ar = {NULL, 0, 0};
    qk__rnn_plan pl;
    qk_status st;
    if (bytes == NULL) {
        return QK_ERR_NULL;
    }
    if (features < 1 || hidden < 1) {
        return QK_ERR_SHAPE;
    }
    st = qk__rnn_layout(gates, features, hidden, &ar, &pl);
    if (st == QK_OK) {
        *bytes = ar.used;
    }
    return st;
}

/* Check the arguments in one order (pointers, datapath, shapes and lengths, zero points, weights, biases,
 * requantizations, direction, tables, every input code) before anything is computed. */
qk_status qk__rnn_check(const qk__rnn_args *a);

/* bias + sum_k a[k] w[k] in the A-bit accumulator (section 4); QK_ERR_OVERFLOW in error mode. */
static inline qk_status qk__rnn_dot(const int32_t *a, const int16_t *w, size_t k, int32_t bias, const qk_datapath *dp,
                              int64_t *out)
{
    int64_t lo = -(INT64_C(1) << (dp->acc_bits - 1)), hi = (INT64_C(1) << (dp->acc_bits - 1)) - 1, s = bias;
    size_t j;
    if (dp->overflow == QK_OVERFLOW_WRAP) {
        for (j = 0; j < k; ++j) {
            s += (int64_t)a[j] * w[j]; /* |s| <= 2^31 + k 2^18: exact */
        }
        *out = qk__wrap_bits(s, dp->acc_bits);
        return QK_OK;
    }
    for (j = 0; j <= k; ++j) {
        if (j > 0) {
            s += (int64_t)a[j - 1] * w[j - 1];
        }
        if (s < lo || s > hi) {
            if (dp->overflow == QK_OVERFLOW_ERROR) {
                return QK_ERR_OVERFLOW;
            }
            s = s < lo ? lo : hi;
        }
    }
    *out = s;
    return QK_OK;
}

/* T[n] + rrs((T[n + 1] - T[n]) d, 7) of the Q3.12 value p: u = p + 2^15, n = u >> 7, d = u & 127. */
static inline int32_t qk__rnn_table(const int16_t *t, int32_t p, int mode)
{
    int32_t u = p + 32768, n = u >> 7, d = u & 127;
    return t[n] + (int32_t)qk__rounding_right_shift((int64_t)(t[n + 1] - t[n]) * d, 7, mode);
}

static inline int32_t qk__sat16(int64_t v)
{
    return (int32_t)qk__clamp64(v, QK__LO16, QK__HI16);
}

/* The plan carved from `scratch` (QK_ERR_SCRATCH when it is missing or short) and both weight matrices loaded as
 * w - z_w rows; the arguments were checked by qk__rnn_check. */
static inline qk_status qk__rnn_prepare(const qk__rnn_args *a, void *scratch, size_t scratch_bytes, qk__rnn_plan *pl)
{
    qk__arena ar = {NULL, 0, 0};
    qk_status st;
    size_t rows = a->gates * a->hidden;
    if ((st = qk__rnn_layout(a->gates, a->features, a->hidden, &ar, pl)) != QK_OK) {
        return st;
    }
    if (scratch == NULL || scratch_bytes < ar.used) {
        return QK_ERR_SCRATCH;
    }
    ar.base = (unsigned char *)scratch;
    ar.used = 0;
    qk__rnn_layout(a->gates, a->features, a->hidden, &ar, pl);
    qk__load_weights(QK_ISA_PORTABLE, a->dp, a->w_ih, rows, a->features, 0, NULL, NULL, rows, a->features, pl->wi,
                     pl->wmax, pl->wsum);
    qk__load_weights(QK_ISA_PORTABLE, a->dp, a->w_hh, rows, a->hidden, 0, NULL, NULL, rows, a->hidden, pl->wh,
                     pl->wmax, pl->wsum);
    return QK_OK;
}

/* Step t of sample s: xd = x_t - z_x, hd = h - z_h, and every gate row's input part (p) and recurrent part (q),
 * each requantized to Q3.12 and saturated to int16 (sections 6.6, 6.7); QK_ERR_OVERFLOW in error mode. */
static inline qk_status qk__rnn_gate_parts(const qk__rnn_args *a, qk__rnn_plan *pl, size_t s, size_t t)
{
    const qk_datapath *dp = a->dp;
    size_t j, f = a->features, hidden = a->hidden, rows = a->gates * a->hidden;
    qk_status st;
    for (j = 0; j < f; ++j) {
        pl->xd[j] = qk__code_at(a->x, (s * a->steps + t) * f + j, dp->a_signed) - a->x_zero_point;
    }
    for (j = 0; j < hidden; ++j) {
        pl->hd[j] = pl->h[j] - a->h_zero_point;
    }
    for (j = 0; j < rows; ++j) {
        int64_t acc_x, acc_h;
        if ((st = qk__rnn_dot(pl->xd, pl->wi + j * f, f, a->b_ih != NULL ? a->b_ih[j] : 0, dp, &acc_x)) != QK_OK ||
            (st = qk__rnn_dot(pl->hd, pl->wh + j * hidden, hidden, a->b_hh != NULL ? a->b_hh[j] : 0, dp, &acc_h)) !=
                QK_OK) {
            return st;
        }
        pl->p[j] = qk__requant_value(acc_x, dp, a->rq_ih, j, QK__LO16, QK__HI16);
        pl->q[j] = qk__requant_value(acc_h, dp, a->rq_hh, j, QK__LO16, QK__HI16);
    }
    return QK_OK;
}

#endif /* QK_RECURRENT_H */
