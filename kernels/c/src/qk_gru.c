/* qk_gru: one integer GRU layer over a sequence (section 6.7), sample by sample, step by step. */
#include "../include/qk.h"
#include "internal/qk_arith.h"
#include "internal/qk_internal.h"
#include "internal/qk_recurrent.h"
#include "internal/qk_requant_core.h"

qk_status qk_gru_scratch_bytes(size_t features, size_t hidden, size_t *bytes)
{
    return qk__rnn_scratch_bytes(3, features, hidden, bytes);
}

qk_status qk_gru(size_t n, size_t steps, size_t features, size_t hidden, const qk_datapath *dp, const void *x,
                 size_t x_len, int32_t x_zero_point, int32_t h_zero_point, const qk_weights *w_ih,
                 const qk_weights *w_hh, const int32_t *b_ih, size_t b_ih_len, const int32_t *b_hh, size_t b_hh_len,
                 const qk_requant_params *rq_ih, const qk_requant_params *rq_hh, const qk_requant_params *rq_hq,
                 const qk_requant_params *rq_out, int32_t reverse, const int16_t *sigmoid_table,
                 const int16_t *tanh_table, size_t table_len, void *y, size_t y_len, void *scratch,
                 size_t scratch_bytes)
{
    qk__rnn_plan pl;
    qk_status st;
    size_t s, t, j, k;
    int mode;
    qk__rnn_args args = {3, n, steps, features, hidden, dp, x, x_len, x_zero_point, h_zero_point, w_ih, w_hh,
                         b_ih, b_hh, b_ih_len, b_hh_len, rq_ih, rq_hh, rq_hq, rq_out, reverse, sigmoid_table,
                         tanh_table, table_len, y, y_len};
    if ((st = qk__rnn_check(&args)) != QK_OK) {
        return st;
    }
    if ((st = qk__rnn_prepare(&args, scratch, scratch_bytes, &pl)) != QK_OK) {
        return st;
    }
    mode = dp->rounding;
    for (s = 0; s < n; ++s) {
        for (j = 0; j < hidden; ++j) {
            pl.h[j] = h_zero_point;
        }
        for (k = 0; k < steps; ++k) {
            t = reverse ? steps - 1 - k : k;
            if ((st = qk__rnn_gate_parts(&args, &pl, s, t)) != QK_OK) {
                return st;
            }
            for (j = 0; j < hidden; ++j) {
                int32_t rg = qk__rnn_table(sigmoid_table, qk__sat16((int64_t)pl.p[j] + pl.q[j]), mode);
                int32_t zg = qk__rnn_table(sigmoid_table, qk__sat16((int64_t)pl.p[hidden + j] + pl.q[hidden + j]), mode);
                int32_t ng = qk__rnn_table(tanh_table, qk__sat16((int64_t)pl.p[2 * hidden + j] +
                                           qk__rounding_right_shift((int64_t)rg * pl.q[2 * hidden + j], 15, mode)), mode);
                int32_t hq = qk__requant_value(pl.hd[j], dp, rq_hq, 0, QK__LO16, QK__HI16);
                int64_t acc = (int64_t)(32768 - zg) * ng + (int64_t)zg * hq; /* Q0.30, |acc| <= 2^30 */
                pl.h[j] = qk__requant_value(acc, dp, rq_out, 0, rq_out->y_min, rq_out->y_max);
                if (dp->a_signed) {
                    ((int8_t *)y)[(s * steps + t) * hidden + j] = (int8_t)pl.h[j];
                } else {
                    ((uint8_t *)y)[(s * steps + t) * hidden + j] = (uint8_t)pl.h[j];
                }
            }
        }
    }
    return QK_OK;
}
