/* qk_lut: y = table[c][x - qmin] (section 6), one table row per channel; binary codes index by their stored bit. */
#include "../include/qk.h"
#include "internal/qk_internal.h"

qk_status qk_lut(const void *x, size_t count, size_t channels, size_t inner, int32_t x_bits, int32_t x_signed,
                 const void *table, size_t table_len, int32_t table_signed, void *y, size_t y_len)
{
    int32_t lo, hi;
    size_t i, row;
    int binary;
    if (x == NULL || table == NULL || y == NULL) {
        return QK_ERR_NULL;
    }
    if (x_bits < 1 || x_bits > 8 || (x_signed != 0 && x_signed != 1) || (table_signed != 0 && table_signed != 1)) {
        return QK_ERR_BITS;
    }
    if (channels < 1 || inner < 1 || inner > SIZE_MAX / channels || count % (channels * inner) != 0) {
        return QK_ERR_SHAPE;
    }
    row = (size_t)1 << x_bits;
    if (channels > SIZE_MAX / row || table_len != channels * row) {
        return QK_ERR_PARAM_LENGTH;
    }
    if (y_len != count) {
        return QK_ERR_Y_LENGTH;
    }
    qk__code_range(x_bits, x_signed, &lo, &hi);
    binary = x_bits == 1 && x_signed;
    for (i = 0; i < count; ++i) { /* check every code before writing any output */
        int32_t v = x_signed ? ((const int8_t *)x)[i] : ((const uint8_t *)x)[i];
        if (v < lo || v > hi || (binary && v == 0)) {
            return QK_ERR_CODE_RANGE;
        }
    }
    for (i = 0; i < count; ++i) {
        int32_t v = x_signed ? ((const int8_t *)x)[i] : ((const uint8_t *)x)[i];
        size_t idx = ((i / inner) % channels) * row + (binary ? (size_t)(v > 0) : (size_t)(v - lo));
        if (table_signed) {
            ((int8_t *)y)[i] = ((const int8_t *)table)[idx];
        } else {
            ((uint8_t *)y)[i] = ((const uint8_t *)table)[idx];
        }
    }
    return QK_OK;
}
