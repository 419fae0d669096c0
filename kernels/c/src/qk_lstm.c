/* qk_lstm: one integer LSTM layer over a sequence (section 6.6), sample by sample, step by step. */
#include "../include/qk.h"
#include "internal/qk_arith.h"
#include "internal/qk_internal.h"
#include "internal/qk_recurrent.h"
#include "internal/qk_requant_core.h"

qk_status qk_lstm_scratch_bytes(size_t features, size_t hidden, size_t *bytes)
{
    return qk__rnn_scratch_bytes(4, features, hidden, bytes);
}

qk_status qk_lstm(size_t n, size_t steps, size_t features, size_t hidden, const qk_datapath *dp, const void *x,
                  size_t x_len, int32_t x_zero_point, int32_t h_zero_point, const qk_weights *w_ih,
                  const qk_weights *w_hh, const int32_t *b_ih, size_t b_ih_len, const int32_t *b_hh, size_t b_hh_len,
                  const qk_requant_params *rq_ih, const qk_requant_params *rq_hh, const qk_requant_params *rq_out,
                  int32_t cell_shift, int32_t reverse, const int16_t *sigmoid_table, const int16_t *tanh_table,
                  size_t table_len, void *y, size_t y_len, void *scratch, size_t scratch_bytes)
{
    qk__rnn_plan pl;
    qk_status st;
    size_t s, t, j, k;
    int mode;
    qk__rnn_args args = {4, n, steps, features, hidden, dp, x, x_len, x_zero_point, h_zero_point, w_ih, w_hh,
                         b_ih, b_hh, b_ih_len, b_hh_len, rq_ih, rq_hh, NULL, rq_out, reverse, sigmoid_table,
                         tanh_table, table_len, y, y_len};
    if ((st = qk__rnn_check(&args)) != QK_OK) {
        return st;
    }
    if (cell_shift < 0 || cell_shift > 15) {
        return QK_ERR_PARAM_VALUE;
    }
    if ((st = qk__rnn_prepare(&args, scratch, scratch_bytes, &pl)) != QK_OK) {
        return st;
    }
    mode = dp->rounding;
    for (s = 0; s < n; ++s) {
        for (j = 0; j < hidden; ++j) {
            pl.h[j] = h_zero_point;
            pl.c[j] = 0;
        }
        for (k = 0; k < steps; ++k) {
            t = reverse ? steps - 1 - k : k;
            if ((st = qk__rnn_gate_parts(&args, &pl, s, t)) != QK_OK) {
                return st;
            }
            for (j = 0; j < hidden; ++j) {
                int32_t i = qk__rnn_table(sigmoid_table, qk__sat16((int64_t)pl.p[j] + pl.q[j]), mode);
                int32_t f = qk__rnn_table(sigmoid_table, qk__sat16((int64_t)pl.p[hidden + j] + pl.q[hidden + j]), mode);
                int32_t g = qk__rnn_table(tanh_table, qk__sat16((int64_t)pl.p[2 * hidden + j] + pl.q[2 * hidden + j]), mode);
                int32_t o = qk__rnn_table(sigmoid_table, qk__sat16((int64_t)pl.p[3 * hidden + j] + pl.q[3 * hidden + j]), mode);
                int32_t c = qk__sat16(qk__rounding_right_shift((int64_t)f * pl.c[j], 15, mode) +
                                      qk__rounding_right_shift((int64_t)i * g, 30 - cell_shift, mode));
                int32_t v = cell_shift >= 12 ? (int32_t)qk__rounding_right_shift(c, cell_shift - 12, mode)
                                             : qk__sat16((int64_t)c * (INT64_C(1) << (12 - cell_shift)));
                int32_t h = qk__requant_value((int64_t)o * qk__rnn_table(tanh_table, v, mode), dp, rq_out, 0,
                                              rq_out->y_min, rq_out->y_max);
                pl.c[j] = c;
                pl.h[j] = h;
                if (dp->a_signed) {
                    ((int8_t *)y)[(s * steps + t) * hidden + j] = (int8_t)h;
                } else {
                    ((uint8_t *)y)[(s * steps + t) * hidden + j] = (uint8_t)h;
                }
            }
        }
    }
    return QK_OK;
}
