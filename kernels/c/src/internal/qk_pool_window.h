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

/* floor(a / d) for d > 0. */
static inline int64_t qk__floor_div(int64_t a, int64_t d)
{
    return a >= 0 ? a / d : -((-a + d - 1) / d);
}

/* First and one-past-last kernel index u with 0 <= o * s + u * d - p < in (both 0 when there is
 * none): the positions grow with u, so the valid u are one range, computed in O(1). */
static inline void qk__pool_span(int64_t o, int64_t s, int64_t p, int64_t d, int64_t k, int64_t in, int64_t *u0,
                                 int64_t *u1)
{
    int64_t start = o * s - p;
    int64_t lo = -qk__floor_div(start, d); /* ceil(-start / d) */
    int64_t hi = qk__floor_div(in - 1 - start, d) + 1;
    lo = lo < 0 ? 0 : lo;
    hi = hi > k ? k : hi;
    if (hi <= lo) {
        lo = hi = 0;
    }
    *u0 = lo;
    *u1 = hi;
}

#endif /* QK_POOL_WINDOW_H */
