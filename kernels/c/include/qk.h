/*
 * qk.h: the integer kernel library (plain C99, no allocation, no globals).
 *
 * Every operation implements one section of docs/arithmetic.md bit for bit, for every setting
 * of the qk_datapath passed in. Every entry point returns a qk_status and never aborts; the
 * caller owns every buffer, including the scratch that operations needing one ask for through
 * their qk_<op>_scratch_bytes twin. Tensors are dense, row-major (NCHW for images); buffer
 * lengths are counts of elements and are checked against the shapes.
 *
 * Element types: activation codes are int8_t when the datapath's activations are signed and
 * uint8_t otherwise; output codes are int8_t when qk_requant_params.y_signed, else uint8_t;
 * accumulators, biases and integer parameters are int32_t.
 */
#ifndef QK_H
#define QK_H

#include <stddef.h>
#include <stdint.h>

#include "qk_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ convolution and matmul */

typedef struct qk_conv2d_geometry {
    int32_t n, c_in, h, w;           /* input (N, C_in, H, W) */
    int32_t c_out, kh, kw;           /* weight (C_out, C_in / groups, kh, kw) */
    int32_t stride_h, stride_w;      /* >= 1 */
    int32_t pad_h, pad_w;            /* >= 0, symmetric; padded positions hold x_zero_point */
    int32_t dilation_h, dilation_w;  /* >= 1 */
    int32_t groups;                  /* divides c_in and c_out */
} qk_conv2d_geometry;

/* Output height and width of a convolution or pooling window:
 * out = floor((in + 2 * pad - dilation * (k - 1) - 1) / stride) + 1, which must be >= 1. */
qk_status qk_conv2d_output_size(const qk_conv2d_geometry *g, int32_t *out_h, int32_t *out_w);

/* Scratch bytes of qk_conv2d for geometry g on datapath dp (saturate/error datapaths need more:
 * the exact overflow bound runs a second product on absolute values). */
qk_status qk_conv2d_scratch_bytes(const qk_conv2d_geometry *g, const qk_datapath *dp, size_t *bytes);

/* Bytes of a weights cache (qk_weights.cache) of qk_conv2d for geometry g, datapath dp and the weight
 * storage w (its length and number of zero points). */
qk_status qk_conv2d_cache_bytes(const qk_conv2d_geometry *g, const qk_datapath *dp, const qk_weights *w,
                                size_t *bytes);

/* 2-D convolution (sections 4, 5): y[n, o, oh, ow] = requant_o(acc) with
 * acc = bias[o] + sum over (c, i, j) in canonical order of (x - x_zero_point) * (w[o] - z_w[o]),
 * accumulated per dp->acc_bits / dp->overflow. x: n*c_in*h*w codes; w: the (C_out, K) weight
 * matrix, K = (c_in / groups) * kh * kw in (c, i, j) order; bias: NULL or c_out values
 * (bias_len 0 or c_out); y: n*c_out*out_h*out_w codes. rq->channels is 1 or c_out. */
qk_status qk_conv2d(const qk_conv2d_geometry *g, const qk_datapath *dp, const void *x, size_t x_len,
                    int32_t x_zero_point, const qk_weights *w, const int32_t *bias, size_t bias_len,
                    const qk_requant_params *rq, void *y, size_t y_len, void *scratch, size_t scratch_bytes,
                    int32_t isa);

/* Scratch bytes of qk_linear on datapath dp. */
qk_status qk_linear_scratch_bytes(int32_t m, int32_t k, int32_t n, const qk_datapath *dp, size_t *bytes);

/* Bytes of a weights cache (qk_weights.cache) of qk_linear for k inputs, n outputs, datapath dp and the
 * weight storage w. */
qk_status qk_linear_cache_bytes(int32_t k, int32_t n, const qk_datapath *dp, const qk_weights *w, size_t *bytes);

/* Fully connected layer: x (m, k) codes, w the (n, k) weight matrix, bias NULL or n values,
 * y (m, n) codes; y[r, o] = requant_o(bias[o] + sum_k (x[r, k] - z_x) * (w[o, k] - z_w[o])),
 * accumulated in increasing k per dp. rq->channels is 1 or n. */
qk_status qk_linear(int32_t m, int32_t k, int32_t n, const qk_datapath *dp, const void *x, size_t x_len,
                    int32_t x_zero_point, const qk_weights *w, const int32_t *bias, size_t bias_len,
                    const qk_requant_params *rq, void *y, size_t y_len, void *scratch, size_t scratch_bytes,
                    int32_t isa);

/* ------------------------------------------------------------------ elementwise */

/* Requantization (section 6): y = requant_c(saturate_int32(q - in_zero_point)) for q of shape
 * (outer, channels, inner) (int32), the multiplier per channel when rq->channels == channels
 * (per tensor: channels = 1 works for any shape). */
qk_status qk_requantize(const int32_t *q, size_t q_len, size_t outer, size_t channels, size_t inner,
                        int32_t in_zero_point, const qk_datapath *dp, const qk_requant_params *rq, void *y,
                        size_t y_len, int32_t isa);

/* Parameters of qk_add (section 6.1) for m_a = s_a / s_y and m_b = s_b / s_y:
 *   fixed_point: (a_multiplier, a_shift) = (M0, e) of r_a = m_a / (2 max(m_a, m_b)), likewise
 *     for r_b and for r_out = 2 max(m_a, m_b) / 2^L (out_*), L = max(0, acc_bits - 4 - a_bits);
 *   float32/float64: a_fmultiplier = fp32(m_a), b_fmultiplier = fp32(m_b), finite, >= 0;
 *   pow2: a_shift = k_a, b_shift = k_b with m = 2^-k, k in [-30, 31], |k_a - k_b| <= 32.
 * Output codes are y_bits wide (1..8, not binary), y_signed, clamped to [y_min, y_max]. */
typedef struct qk_add_params {
    int32_t a_zero_point, b_zero_point;
    int32_t a_multiplier, a_shift;
    int32_t b_multiplier, b_shift;
    int32_t out_multiplier, out_shift;
    float a_fmultiplier, b_fmultiplier;
    int32_t y_zero_point, y_bits, y_signed, y_min, y_max;
} qk_add_params;

/* Residual add (section 6.1) of `count` activation codes a and b (int8 when dp->a_signed,
 * else uint8); y gets `count` output codes (int8 when y_signed, else uint8). */
qk_status qk_add(const void *a, const void *b, size_t count, const qk_add_params *p, const qk_datapath *dp, void *y,
                 size_t y_len);

/* Elementwise product (section 6.2) of activation codes a (rows * inner of them) and b (as many, or one
 * per row, broadcast along the row): acc = (a - a_zero_point) * (b - b_zero_point) held in the
 * dp->acc_bits accumulator per dp->overflow, then y = requant(acc) with rq per tensor (channels 1).
 * a, b: int8 when dp->a_signed, else uint8; y: rows * inner codes (int8 when rq->y_signed). */
qk_status qk_mul(const void *a, size_t a_len, const void *b, size_t b_len, size_t rows, size_t inner, int32_t a_zero_point,
                 int32_t b_zero_point, const qk_datapath *dp, const qk_requant_params *rq, void *y, size_t y_len,
                 int32_t isa);

/* Integer softmax (section 6.3) over the middle axis of x viewed as (outer, length, inner): for codes q
 * of x_bits (x_signed) with maximum m along the axis, E = table[m - q] (2^x_bits entries, table[0] =
 * 2^16, non-increasing), y = clamp(rounding_divide(E * 2^y_bits, sum E, dp->rounding) + z_y) with
 * z_y = 0 (unsigned) or -2^(y_bits-1) (signed): codes of scale 2^-y_bits. 1 <= length <= 2^15. */
qk_status qk_softmax(const void *x, size_t x_len, size_t outer, size_t length, size_t inner, int32_t x_bits,
                     int32_t x_signed, const int32_t *table, size_t table_len, int32_t y_bits, int32_t y_signed,
                     const qk_datapath *dp, void *y, size_t y_len);

/* Integer LayerNorm over rows of `length` codes (section 6.5): per row, c_i = length q_i - sum q,
 * V = sum c_i^2, W0 = min(V + eps_term, 2^62 - 1), P the largest of 0..16 with W0 4^P < 2^62,
 * R = max(1, isqrt(floor(W0 4^P / length))), t_i = rounding_divide(g_i c_i 2^(15+P), R) with
 * g_i = gamma[i] - gamma_zero_point (1 when gamma is NULL), acc_i = saturate_int32(t_i + bias[i]) and
 * section 5 with rq (per tensor, or rq->channels = length: one multiplier per element of the row).
 * length in 1..2^14, eps_term in 0..2^62-1; gamma (int8) and bias (int32) hold `length` values or are
 * NULL with length 0. */
qk_status qk_layernorm(const void *x, size_t x_len, size_t rows, size_t length, int32_t x_bits, int32_t x_signed,
                       int64_t eps_term, const int8_t *gamma, size_t gamma_len, int32_t gamma_zero_point,
                       const int32_t *bias, size_t bias_len, const qk_datapath *dp, const qk_requant_params *rq,
                       void *y, size_t y_len, int32_t isa);

/* One integer LSTM layer over a sequence (section 6.6): x (n, steps, features) activation codes, y (n, steps,
 * hidden) the hidden states as activation codes (zero point h_zero_point = rq_out->y_zero_point); gate rows
 * in the order i, f, g, o: w_ih (4 hidden, features), w_hh (4 hidden, hidden) weight storage, optional int32
 * biases of 4 hidden; rq_ih/rq_hh requantize the gate accumulators to Q3.12 (per tensor or per gate row, zero
 * point 0, saturated to int16), rq_out o tanh(c) (Q0.30) to the output codes; the cell is int16 of scale
 * 2^-cell_shift (0..15); sigmoid_table and tanh_table hold the 513 entries of the contract; reverse walks the
 * steps from the last. scratch holds qk_lstm_scratch_bytes(features, hidden) bytes. */
qk_status qk_lstm_scratch_bytes(size_t features, size_t hidden, size_t *bytes);
qk_status qk_lstm(size_t n, size_t steps, size_t features, size_t hidden, const qk_datapath *dp, const void *x,
                  size_t x_len, int32_t x_zero_point, int32_t h_zero_point, const qk_weights *w_ih,
                  const qk_weights *w_hh, const int32_t *b_ih, size_t b_ih_len, const int32_t *b_hh, size_t b_hh_len,
                  const qk_requant_params *rq_ih, const qk_requant_params *rq_hh, const qk_requant_params *rq_out,
                  int32_t cell_shift, int32_t reverse, const int16_t *sigmoid_table, const int16_t *tanh_table,
                  size_t table_len, void *y, size_t y_len, void *scratch, size_t scratch_bytes);

/* One integer GRU layer over a sequence (section 6.7): as qk_lstm with 3 hidden gate rows in the order r, z,
 * n, no cell, rq_hq the requantization of h - h_zero_point to Q0.15 (zero point 0) and rq_out that of
 * (2^15 - z) n + z h (Q0.30) to the output codes. scratch holds qk_gru_scratch_bytes(features, hidden) bytes. */
qk_status qk_gru_scratch_bytes(size_t features, size_t hidden, size_t *bytes);
qk_status qk_gru(size_t n, size_t steps, size_t features, size_t hidden, const qk_datapath *dp, const void *x,
                 size_t x_len, int32_t x_zero_point, int32_t h_zero_point, const qk_weights *w_ih,
                 const qk_weights *w_hh, const int32_t *b_ih, size_t b_ih_len, const int32_t *b_hh, size_t b_hh_len,
                 const qk_requant_params *rq_ih, const qk_requant_params *rq_hh, const qk_requant_params *rq_hq,
                 const qk_requant_params *rq_out, int32_t reverse, const int16_t *sigmoid_table,
                 const int16_t *tanh_table, size_t table_len, void *y, size_t y_len, void *scratch,
                 size_t scratch_bytes);

/* ------------------------------------------------------------------ pooling */

typedef struct qk_pool2d_geometry {
    int32_t n, c, h, w;              /* input (N, C, H, W); output (N, C, out_h, out_w) */
    int32_t kh, kw;                  /* window; kh = h, kw = w, stride 1, pad 0: global */
    int32_t stride_h, stride_w;      /* >= 1 */
    int32_t pad_h, pad_w;            /* 0 <= pad <= k / 2 (padding is never counted) */
    int32_t dilation_h, dilation_w;  /* >= 1 (average pooling: 1) */
} qk_pool2d_geometry;

/* Average pooling (section 6): y = rounding_divide(sum - count * z, count, dp->rounding) + z
 * over the valid (unpadded) window elements; codes int8 (x_signed) or uint8, output likewise. */
qk_status qk_avg_pool2d(const qk_pool2d_geometry *g, const qk_datapath *dp, const void *x, size_t x_len,
                        int32_t x_signed, int32_t zero_point, void *y, size_t y_len);

/* Max pooling (section 6): the largest code of the valid window elements. */
qk_status qk_max_pool2d(const qk_pool2d_geometry *g, const void *x, size_t x_len, int32_t x_signed, void *y,
                        size_t y_len);

/* ------------------------------------------------------------------ lookup table */

/* y[i] = table[c(i)][index(x[i])] (section 6): index = x - qmin for the x_bits/x_signed code range
 * (binary {-1, +1}: index 0 for -1, 1 for +1). x: int8 (x_signed) or uint8 codes, count entries
 * laid out as (outer, channels, inner); c(i) = (i / inner) % channels is the channel of element i
 * (channels = 1: one table for every element); table: channels rows of 2^x_bits entries, int8
 * (table_signed) or uint8; y: count entries of the table's type. QK_ERR_SHAPE unless channels and
 * inner are >= 1 and channels * inner divides count; QK_ERR_CODE_RANGE when an x is outside the
 * code range. */
qk_status qk_lut(const void *x, size_t count, size_t channels, size_t inner, int32_t x_bits, int32_t x_signed,
                 const void *table, size_t table_len, int32_t table_signed, void *y, size_t y_len);

/* ------------------------------------------------------------------ sub-byte storage */

/* Pack a (rows, cols) matrix of codes (int8 when codes_signed, else uint8) into rows rows of
 * ceil(cols * bits / 8) bytes for bits in {1, 2, 4}, or one byte per code (the low 8 bits of
 * the two's complement) for other bits in 1..8 (section 3). Element i of a row sits at bits
 * (i * bits) % 8 of byte i * bits / 8, as two's complement in `bits` bits; 1-bit codes are
 * stored as 1 for +1 and 0 for -1 or 0. `range` says which codes are accepted: 1 signed,
 * 0 unsigned, -1 either ([-2^(bits-1), 2^bits - 1]); 1-bit codes may not mix -1 and 0.
 * QK_ERR_CODE_RANGE otherwise. */
qk_status qk_pack(const void *codes, int32_t codes_signed, size_t codes_len, size_t rows, size_t cols, int32_t bits,
                  int32_t range, uint8_t *packed, size_t packed_len);

/* Inverse of qk_pack: codes (int8; uint8 for unsigned 8-bit codes) of a (rows, cols) matrix;
 * signed codes are sign-extended from `bits` bits, 1-bit signed codes are {-1, +1}. Padding
 * bits are ignored. */
qk_status qk_unpack(const uint8_t *packed, size_t packed_len, size_t rows, size_t cols, int32_t bits,
                    int32_t is_signed, void *codes, size_t codes_len);

/* ------------------------------------------------------------------ primitives */

/* rounding_right_shift(v, k, mode) = round(v / 2^k) in mode (section 2), 0 <= k <= 62. */
qk_status qk_rounding_right_shift(int64_t v, int32_t k, int32_t mode, int64_t *out);

/* floor((a * b + 2^(n-1)) / 2^n) saturated to int32, 1 <= n <= 62; for n = 31 gemmlowp's
 * SaturatingRoundingDoublingHighMul (INT32_MIN * INT32_MIN gives INT32_MAX). */
qk_status qk_saturating_rounding_doubling_high_mul(int32_t a, int32_t b, int32_t n, int32_t *out);

/* Whether instruction set `isa` (QK_ISA_*) can run here (*available = 0 or 1), and which one
 * QK_ISA_AUTO selects (*selected). */
qk_status qk_isa_query(int32_t isa, int32_t *available, int32_t *selected);

/* A static sentence describing a status (never NULL). The one function that does not
 * return a qk_status. */
const char *qk_status_message(qk_status status);

#ifdef __cplusplus
}
#endif

#endif /* QK_H */
