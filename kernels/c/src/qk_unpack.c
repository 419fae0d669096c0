/* qk_unpack: codes of a (rows, cols) matrix from sub-byte storage (section 3). */
#include "../include/qk.h"
#include "internal/qk_internal.h"

qk_status qk_unpack(const uint8_t *packed, size_t packed_len, size_t rows, size_t cols, int32_t bits,
                    int32_t is_signed, void *codes, size_t codes_len)
{
    size_t need, row_bytes, r, i;
    int packs;
    if (packed == NULL || codes == NULL) {
        return QK_ERR_NULL;
    }
    if (bits < 1 || bits > 8 || (is_signed != 0 && is_signed != 1)) {
        return QK_ERR_BITS;
    }
    packs = bits == 1 || bits == 2 || bits == 4;
    row_bytes = packs ? qk__packed_row_bytes(cols, bits) : cols;
    if (!qk__mul_size(rows, row_bytes, &need)) {
        return QK_ERR_SIZE;
    }
    if (packed_len != need) {
        return QK_ERR_X_LENGTH;
    }
    if (!qk__mul_size(rows, cols, &need)) {
        return QK_ERR_SIZE;
    }
    if (codes_len != need) {
        return QK_ERR_Y_LENGTH;
    }
    if (codes_len == 0) {
        return QK_OK; /* an empty matrix: nothing to unpack (rows may be any size) */
    }
    for (r = 0; r < rows; ++r) {
        const uint8_t *src = packed + r * row_bytes;
        for (i = 0; i < cols; ++i) {
            int32_t field, v;
            if (packs) {
                size_t bit = i * (size_t)bits;
                field = (src[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
            } else {
                field = src[i] & ((1 << bits) - 1);
            }
            if (!is_signed) {
                v = field;
            } else if (bits == 1) {
                v = 2 * field - 1;
            } else {
                v = field >= (1 << (bits - 1)) ? field - (1 << bits) : field;
            }
            if (bits == 8 && !is_signed) {
                ((uint8_t *)codes)[r * cols + i] = (uint8_t)v;
            } else {
                ((int8_t *)codes)[r * cols + i] = (int8_t)v;
            }
        }
    }
    return QK_OK;
}
