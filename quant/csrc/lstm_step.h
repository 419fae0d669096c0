/*
 * The pointwise part of one step of the simulation's quantized LSTM (quant.sim.recurrent), forward and
 * backward, for rows of `hidden` units, float32, C order, the gates in PyTorch's order i, f, g, o:
 *
 *     forward (fq_lstm_cell)     a = (sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)) of pre (rows x 4H)
 *                                c = a_f * c_prev + a_i * a_g
 *     forward (fq_lstm_hidden)   t = tanh(c),  h = a_o * t
 *
 * Each product and sum is one rounded float32 operation, in the order written. sigmoid and tanh are this
 * file's (fq_sigmoid, fq_tanh): within 3 ulp of the exact function (tests/quant/sim/test_fused.py), the
 * same in training and inference, vectorized, NaN in NaN out. The quantization sites (the gate
 * pre-activations, the cell, the hidden state) lie between these calls, in Python. No output of a call
 * overlaps one of its inputs or another output.
 *
 * The backward (fq_lstm_backward) takes the gradient reaching h_t (from the layer's output and from step
 * t+1), and the one reaching c_t from step t+1, and gives those of the gate pre-activations and of c_{t-1}
 * through the sites' straight-through masks (1 byte per element, 0 or 1; all ones for a float site), and
 * each LSQ site's sum of its output gradient x d(values)/d(step) in double (NULL: not LSQ). Every pointer
 * but the d(values)/d(step) ones is required, and the two outputs overlap no input.
 */
#ifndef QUANT_LSTM_STEP_H
#define QUANT_LSTM_STEP_H

#include <stdint.h>

#include "fake_quant.h"

typedef struct {
    int64_t rows, hidden;
    const float *grad_out;  /* rows x H: dL/dh_t from the layer's output */
    const float *grad_h;    /* rows x H: dL/dh_t from step t + 1 */
    const float *grad_c;    /* rows x H: dL/dc_t from step t + 1 */
    const float *act;       /* rows x 4H: the forward's a */
    const float *tanh_c;    /* rows x H: the forward's t */
    const float *c_prev;    /* rows x H */
    const uint8_t *mask_hidden, *mask_cell, *mask_gates; /* rows x H, rows x H, rows x 4H */
    const float *dscale_hidden, *dscale_cell, *dscale_gates; /* LSQ's d(values)/d(step), as the masks; NULL */
    float *grad_pre;        /* out, rows x 4H (row stride 4H) */
    float *grad_c_prev;     /* out, rows x H */
    double scale_grad[3];   /* out: hidden, cell, gates: sum of the site's output gradient x dscale */
} fq_lstm_grad;

int fq_lstm_cell(int64_t rows, int64_t hidden, const float *pre, const float *c_prev, float *act, float *c, int isa);
int fq_lstm_hidden(int64_t rows, int64_t hidden, const float *act, const float *c, float *tanh_c, float *h, int isa);
/* fq_lstm_cell then fq_lstm_hidden in one pass (the same values); tanh_c and h both NULL: the cell only. */
int fq_lstm_step(int64_t rows, int64_t hidden, const float *pre, const float *c_prev, float *act, float *c,
                 float *tanh_c, float *h, int isa);
int fq_lstm_backward(fq_lstm_grad *g, int isa);

/* out[k] = sigmoid(x[k]) / tanh(x[k]) for k < n: the functions the LSTM step uses. */
int fq_sigmoid(const float *x, float *out, int64_t n, int isa);
int fq_tanh(const float *x, float *out, int64_t n, int isa);

#endif
