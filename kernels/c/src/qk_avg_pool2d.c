/* qk_avg_pool2d: y = rounding_divide(S - c * z, c, rounding) + z over the c valid window
 * elements (section 6; padding is not counted, no ceil mode, dilation 1). */
#include "../include/qk.h"
#include "internal/qk_arith.h"
#include "internal/qk_internal.h"
#include "internal/qk_pool_window.h"

qk_status qk_avg_pool2d(const qk_pool2d_geometry *g, const qk_datapath *dp, const void *x, size_t x_len,
                        int32_t x_signed, int32_t zero_point, void *y, size_t y_len)
{
    qk_status st;
    int32_t oh, ow;
    size_t plane, i, j, r, c;
    if (g == NULL || dp == NULL || x == NULL || y == NULL) {
        return QK_ERR_NULL;
    }
    if ((st = qk__check_datapath(dp)) != QK_OK) {
        return st;
    }
    if (x_signed != 0 && x_signed != 1) {
        return QK_ERR_BITS;
    }
    if ((st = qk__pool_check(g, x_len, y_len, &oh, &ow)) != QK_OK) {
        return st;
    }
    if (g->dilation_h != 1 || g->dilation_w != 1) {
        return QK_ERR_WINDOW;
    }
    for (plane = 0; plane < (size_t)g->n * (size_t)g->c; ++plane) {
        size_t xo = plane * (size_t)g->h * (size_t)g->w, yo = plane * (size_t)oh * (size_t)ow;
        for (i = 0; i < (size_t)oh; ++i) {
            int64_t u0, u1;
            qk__pool_span((int64_t)i, g->stride_h, g->pad_h, 1, g->kh, g->h, &u0, &u1);
            for (j = 0; j < (size_t)ow; ++j) {
                int64_t v0, v1, sum = 0, cnt, avg;
                qk__pool_span((int64_t)j, g->stride_w, g->pad_w, 1, g->kw, g->w, &v0, &v1);
                cnt = (u1 - u0) * (v1 - v0); /* >= 1: padding <= kernel / 2 */
                for (r = (size_t)((int64_t)i * g->stride_h - g->pad_h + u0);
                     r < (size_t)((int64_t)i * g->stride_h - g->pad_h + u1); ++r) {
                    size_t c0 = (size_t)((int64_t)j * g->stride_w - g->pad_w + v0);
                    size_t c1 = (size_t)((int64_t)j * g->stride_w - g->pad_w + v1);
                    if (x_signed) {
                        const int8_t *row = (const int8_t *)x + xo + r * (size_t)g->w;
                        for (c = c0; c < c1; ++c) {
                            sum += row[c];
                        }
                    } else {
                        const uint8_t *row = (const uint8_t *)x + xo + r * (size_t)g->w;
                        for (c = c0; c < c1; ++c) {
                            sum += row[c];
                        }
                    }
                }
                avg = qk__rounding_divide(sum - cnt * zero_point, cnt, dp->rounding) + zero_point;
                if (x_signed) {
                    ((int8_t *)y)[yo + i * (size_t)ow + j] = (int8_t)avg;
                } else {
                    ((uint8_t *)y)[yo + i * (size_t)ow + j] = (uint8_t)avg;
                }
            }
        }
    }
    return QK_OK;
}
