/* qk__rnn_check: the arguments the recurrent kernels share (sections 6.6, 6.7), checked in one order. */
#include "qk_recurrent.h"

qk_status qk__rnn_check(const qk__rnn_args *a)
{
    qk_status st;
    size_t need, rows, j;
    int32_t lo, hi;
    const qk_datapath *dp = a->dp;
    if (dp == NULL || a->x == NULL || a->w_ih == NULL || a->w_hh == NULL || a->rq_ih == NULL || a->rq_hh == NULL ||
        a->rq_out == NULL || a->sigmoid_table == NULL || a->tanh_table == NULL || a->y == NULL) {
        return QK_ERR_NULL;
    }
    if ((st = qk__check_datapath(dp)) != QK_OK) {
        return st;
    }
    if (a->steps < 1 || a->features < 1 || a->hidden < 1 || a->hidden > (size_t)INT32_MAX / a->gates) {
        return QK_ERR_SHAPE;
    }
    rows = a->gates * a->hidden;
    if (!qk__mul_size(a->n, a->steps, &need) || !qk__mul_size(need, a->features, &need)) {
        return QK_ERR_SIZE;
    }
    if (a->x_len != need) {
        return QK_ERR_X_LENGTH;
    }
    if (!qk__mul_size(a->n, a->steps, &need) || !qk__mul_size(need, a->hidden, &need)) {
        return QK_ERR_SIZE;
    }
    if (a->y_len != need) {
        return QK_ERR_Y_LENGTH;
    }
    if ((st = qk__check_x_zero_point(dp, a->x_zero_point)) != QK_OK ||
        (st = qk__check_x_zero_point(dp, a->h_zero_point)) != QK_OK) {
        return st;
    }
    if ((st = qk__check_weights(dp, a->w_ih, rows, a->features)) != QK_OK ||
        (st = qk__check_weights(dp, a->w_hh, rows, a->hidden)) != QK_OK) {
        return st;
    }
    if ((st = qk__check_bias(dp, a->b_ih, a->b_ih_len, rows)) != QK_OK ||
        (st = qk__check_bias(dp, a->b_hh, a->b_hh_len, rows)) != QK_OK) {
        return st;
    }
    if ((st = qk__check_requant(dp, a->rq_ih, rows)) != QK_OK || (st = qk__check_requant(dp, a->rq_hh, rows)) != QK_OK ||
        (a->rq_mid != NULL && (st = qk__check_requant(dp, a->rq_mid, 1)) != QK_OK) ||
        (st = qk__check_requant(dp, a->rq_out, 1)) != QK_OK) {
        return st;
    }
    if (a->rq_ih->y_zero_point != 0 || a->rq_hh->y_zero_point != 0 || (a->rq_mid != NULL && a->rq_mid->y_zero_point != 0) ||
        a->rq_out->y_bits != dp->a_bits || a->rq_out->y_signed != dp->a_signed ||
        a->rq_out->y_zero_point != a->h_zero_point) {
        return QK_ERR_ZERO_POINT; /* gates carry no zero point; the output codes are the hidden state's */
    }
    if (a->reverse != 0 && a->reverse != 1) {
        return QK_ERR_PARAM_VALUE;
    }
    if (a->table_len != QK__RNN_TABLE) {
        return QK_ERR_PARAM_LENGTH;
    }
    qk__code_range(dp->a_bits, dp->a_signed, &lo, &hi);
    for (j = 0; j < a->x_len; ++j) { /* every code checked before any output is written */
        int32_t v = qk__code_at(a->x, j, dp->a_signed);
        if (v < lo || v > hi || (dp->a_bits == 1 && dp->a_signed && v == 0)) {
            return QK_ERR_CODE_RANGE;
        }
    }
    return QK_OK;
}
