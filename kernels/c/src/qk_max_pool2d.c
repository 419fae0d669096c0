/* qk_max_pool2d: the largest code of the valid window elements (section 6; padding never wins).
 * A window without any valid element (possible only with dilation) is QK_ERR_WINDOW. */
#include "../include/qk.h"
#include "internal/qk_internal.h"
#include "internal/qk_pool_window.h"

qk_status qk_max_pool2d(const qk_pool2d_geometry *g, const void *x, size_t x_len, int32_t x_signed, void *y,
                        size_t y_len)
{
    qk_status st;
    int32_t oh, ow;
    size_t plane, i, j;
    if (g == NULL || x == NULL || y == NULL) {
        return QK_ERR_NULL;
    }
    if (x_signed != 0 && x_signed != 1) {
        return QK_ERR_BITS;
    }
    if ((st = qk__pool_check(g, x_len, y_len, &oh, &ow)) != QK_OK) {
        return st;
    }
    for (plane = 0; plane < (size_t)g->n * (size_t)g->c; ++plane) {
        size_t xo = plane * (size_t)g->h * (size_t)g->w, yo = plane * (size_t)oh * (size_t)ow;
        for (i = 0; i < (size_t)oh; ++i) {
            int64_t u0, u1, u;
            qk__pool_span((int64_t)i, g->stride_h, g->pad_h, g->dilation_h, g->kh, g->h, &u0, &u1);
            for (j = 0; j < (size_t)ow; ++j) {
                int64_t v0, v1, v;
                int32_t best = -256;
                qk__pool_span((int64_t)j, g->stride_w, g->pad_w, g->dilation_w, g->kw, g->w, &v0, &v1);
                if (u0 == u1 || v0 == v1) {
                    return QK_ERR_WINDOW; /* a dilated window that holds only padding has no maximum */
                }
                for (u = u0; u < u1; ++u) {
                    int64_t r = (int64_t)i * g->stride_h - g->pad_h + u * g->dilation_h;
                    if (r < 0 || r >= g->h) {
                        continue; /* a dilated window can skip rows inside [u0, u1) */
                    }
                    for (v = v0; v < v1; ++v) {
                        int64_t col = (int64_t)j * g->stride_w - g->pad_w + v * g->dilation_w;
                        size_t at;
                        int32_t code;
                        if (col < 0 || col >= g->w) {
                            continue;
                        }
                        at = xo + (size_t)r * (size_t)g->w + (size_t)col;
                        code = x_signed ? ((const int8_t *)x)[at] : ((const uint8_t *)x)[at];
                        best = code > best ? code : best;
                    }
                }
                if (x_signed) {
                    ((int8_t *)y)[yo + i * (size_t)ow + j] = (int8_t)best;
                } else {
                    ((uint8_t *)y)[yo + i * (size_t)ow + j] = (uint8_t)best;
                }
            }
        }
    }
    return QK_OK;
}
