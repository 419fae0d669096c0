/* qk_pool_window.h: validation of a pooling geometry (section 6), shared by the two pools. */
#ifndef QK_POOL_WINDOW_H
#define QK_POOL_WINDOW_H

#include "../../include/qk.h"
#include "qk_internal.h"

/* Check g and the buffer lengths; set the output size. */
static inline qk_status qk__pool_check(const qk_pool2d_geometry *g, size_t x_len, size_t y_len, int32_t *oh,
                                       int32_t *ow)
{
    size_t need;
    if (g->n < 1 || g->c < 1 || g->h < 1 || g->w < 1) {
        return QK_ERR_SHAPE;
    }
    if (g->kh < 1 || g->kw < 1 || g->stride_h < 1 || g->stride_w < 1 || g->dilation_h < 1 || g->dilation_w < 1 ||
        g->pad_h < 0 || g->pad_w < 0 || g->pad_h > g->kh / 2 || g->pad_w > g->kw / 2) {
        return QK_ERR_WINDOW;
    }
    *oh = qk__window_out(g->h, g->kh, g->stride_h, g->pad_h, g->dilation_h);
    *ow = qk__window_out(g->w, g->kw, g->stride_w, g->pad_w, g->dilation_w);
    if (*oh < 1 || *ow < 1) {
        return QK_ERR_WINDOW;
    }
    if (!qk__mul_size((size_t)g->n * (size_t)g->c, (size_t)g->h * (size_t)g->w, &need)) {
        return QK_ERR_SIZE;
    }
    if (x_len != need) {
        return QK_ERR_X_LENGTH;
    }
    if (!qk__mul_size((size_t)g->n * (size_t)g->c, (size_t)*oh * (size_t)*ow, &need)) {
        return QK_ERR_SIZE;
    }
    return y_len == need ? QK_OK : QK_ERR_Y_LENGTH;
}

/* First and one-past-last kernel index u with 0 <= o * s + u * d - p < in. */
static inline void qk__pool_span(int64_t o, int64_t s, int64_t p, int64_t d, int64_t k, int64_t in, int64_t *u0,
                                 int64_t *u1)
{
    int64_t start = o * s - p, u;
    *u0 = 0;
    *u1 = 0;
    for (u = 0; u < k; ++u) {
        int64_t pos = start + u * d;
        if (pos >= 0 && pos < in) {
            if (*u1 == 0) {
                *u0 = u;
            }
            *u1 = u + 1;
        }
    }
}

#endif /* QK_POOL_WINDOW_H */
