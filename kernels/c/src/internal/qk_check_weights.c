/* qk__check_weights: weight storage of conv2d/linear against the datapath (sections 1, 3). */
#include "qk_internal.h"

qk_status qk__check_weights(const qk_datapath *dp, const qk_weights *w, size_t rows, size_t k)
{
    size_t need, i;
    int32_t lo, hi;
    if (w == NULL || w->data == NULL || w->zero_point == NULL) {
        return QK_ERR_NULL;
    }
    if (w->packed_bits != 0) {
        if (w->packed_bits != 1 && w->packed_bits != 2 && w->packed_bits != 4) {
            return QK_ERR_BITS;
        }
        if (w->packed_bits != dp->w_bits) {
            return QK_ERR_BITS;
        }
        if (!qk__mul_size(rows, qk__packed_row_bytes(k, w->packed_bits), &need)) {
            return QK_ERR_SIZE;
        }
    } else if (!qk__mul_size(rows, k, &need)) {
        return QK_ERR_SIZE;
    }
    if (w->length != need) {
        return QK_ERR_W_LENGTH;
    }
    if (w->zero_point_length != 1 && w->zero_point_length != rows) {
        return QK_ERR_PARAM_LENGTH;
    }
    qk__code_range(dp->w_bits, dp->w_signed, &lo, &hi);
    for (i = 0; i < w->zero_point_length; ++i) {
        int32_t z = w->zero_point[i];
        if (z < lo || z > hi || (!dp->w_zero_point && z != 0)) {
            return QK_ERR_ZERO_POINT;
        }
    }
    return QK_OK;
}
