/* qk_conv2d_output_size: out = floor((in + 2 pad - dilation (k - 1) - 1) / stride) + 1. */
#include "../include/qk.h"
#include "internal/qk_internal.h"

qk_status qk_conv2d_output_size(const qk_conv2d_geometry *g, int32_t *out_h, int32_t *out_w)
{
    if (g == NULL || out_h == NULL || out_w == NULL) {
        return QK_ERR_NULL;
    }
    if (g->h < 1 || g->w < 1 || g->kh < 1 || g->kw < 1) {
        return QK_ERR_SHAPE;
    }
    if (g->stride_h < 1 || g->stride_w < 1 || g->dilation_h < 1 || g->dilation_w < 1 || g->pad_h < 0 ||
        g->pad_w < 0) {
        return QK_ERR_WINDOW;
    }
    *out_h = qk__window_out(g->h, g->kh, g->stride_h, g->pad_h, g->dilation_h);
    *out_w = qk__window_out(g->w, g->kw, g->stride_w, g->pad_w, g->dilation_w);
    return (*out_h < 1 || *out_w < 1) ? QK_ERR_WINDOW : QK_OK;
}
