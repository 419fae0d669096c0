/* qk_pack: sub-byte storage of a (rows, cols) code matrix (section 3). */
#include <string.h>

#include "../include/qk.h"
#include "internal/qk_internal.h"

qk_status qk_pack(const void *codes, int32_t codes_signed, size_t codes_len, size_t rows, size_t cols, int32_t bits,
                  int32_t range, uint8_t *packed, size_t packed_len)
{
    size_t need, row_bytes, r, i;
    int32_t lo, hi;
    int packs, seen_minus = 0, seen_zero = 0;
    if (codes == NULL || packed == NULL) {
        return QK_ERR_NULL;
    }
    if (bits < 1 || bits > 8 || (codes_signed != 0 && codes_signed != 1) || range < -1 || range > 1) {
        return QK_ERR_BITS;
    }
    if (!qk__mul_size(rows, cols, &need)) {
        return QK_ERR_SIZE;
    }
    if (codes_len != need) {
        return QK_ERR_X_LENGTH;
    }
    packs = bits == 1 || bits == 2 || bits == 4;
    row_bytes = packs ? qk__packed_row_bytes(cols, bits) : cols;
    if (!qk__mul_size(rows, row_bytes, &need)) {
        return QK_ERR_SIZE;
    }
    if (packed_len != need) {
        return QK_ERR_Y_LENGTH;
    }
    if (range < 0) {
        lo = -(INT32_C(1) << (bits - 1));
        hi = (INT32_C(1) << bits) - 1;
    } else {
        qk__code_range(bits, range, &lo, &hi);
    }
    for (i = 0; i < codes_len; ++i) { /* check every code before writing */
        int32_t v = codes_signed ? ((const int8_t *)codes)[i] : ((const uint8_t *)codes)[i];
        if (v < lo || v > hi) {
            return QK_ERR_CODE_RANGE;
        }
        seen_minus |= v == -1;
        seen_zero |= v == 0;
    }
    if (bits == 1 && seen_minus && seen_zero) {
        return QK_ERR_CODE_RANGE; /* binary {-1, +1} and unsigned {0, 1} codes mixed */
    }
    if (codes_len == 0) {
        return QK_OK; /* an empty matrix: nothing to pack (rows may be any size) */
    }
    memset(packed, 0, packed_len);
    for (r = 0; r < rows; ++r) {
        uint8_t *dst = packed + r * row_bytes;
        for (i = 0; i < cols; ++i) {
            size_t at = r * cols + i;
            int32_t v = codes_signed ? ((const int8_t *)codes)[at] : ((const uint8_t *)codes)[at];
            unsigned field = bits == 1 ? (unsigned)(v == 1) : ((unsigned)v & ((1u << bits) - 1u));
            if (packs) {
                size_t bit = i * (size_t)bits;
                dst[bit >> 3] = (uint8_t)(dst[bit >> 3] | (field << (bit & 7)));
            } else {
                dst[i] = (uint8_t)field;
            }
        }
    }
    return QK_OK;
}
