/* qk_requantize: y = requant_c(saturate_int32(q - in_zero_point)) (sections 5, 6). */
#include "../include/qk.h"
#include "internal/qk_arith.h"
#include "internal/qk_internal.h"

#define QK__CHUNK 256

qk_status qk_requantize(const int32_t *q, size_t q_len, size_t outer, size_t channels, size_t inner,
                        int32_t in_zero_point, const qk_datapath *dp, const qk_requant_params *rq, void *y,
                        size_t y_len, int32_t isa)
{
    qk_status st;
    size_t need, o, c, i0, i;
    int32_t sel, acc[QK__CHUNK];
    if (q == NULL || dp == NULL || rq == NULL || y == NULL) {
        return QK_ERR_NULL;
    }
    if ((st = qk__check_datapath(dp)) != QK_OK) {
        return st;
    }
    if (channels < 1) {
        return QK_ERR_SHAPE;
    }
    if (!qk__mul_size(outer, channels, &need) || !qk__mul_size(need, inner, &need)) {
        return QK_ERR_SIZE;
    }
    if (q_len != need) {
        return QK_ERR_X_LENGTH;
    }
    if (y_len != need) {
        return QK_ERR_Y_LENGTH;
    }
    if ((st = qk__check_requant(dp, rq, channels)) != QK_OK) {
        return st;
    }
    if ((st = qk__select_isa(isa, &sel)) != QK_OK) {
        return st;
    }
    if (need == 0) {
        return QK_OK; /* an empty tensor: nothing to compute (outer may be any size) */
    }
    for (o = 0; o < outer; ++o) {
        for (c = 0; c < channels; ++c) {
            size_t base = (o * channels + c) * inner;
            for (i0 = 0; i0 < inner; i0 += QK__CHUNK) {
                size_t len = inner - i0 < QK__CHUNK ? inner - i0 : QK__CHUNK;
                const int32_t *src = q + base + i0;
                for (i = 0; i < len; ++i) {
                    acc[i] = qk__saturate_int32((int64_t)src[i] - in_zero_point);
                }
                qk__requant_row(sel, acc, len, c, dp, rq, (unsigned char *)y + base + i0);
            }
        }
    }
    return QK_OK;
}
