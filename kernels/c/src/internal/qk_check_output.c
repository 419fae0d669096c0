/* qk__check_output: the output code range of requantizing ops (section 1). */
#include "qk_internal.h"

qk_status qk__check_output(int32_t y_bits, int32_t y_signed, int32_t y_zero_point, int32_t y_min, int32_t y_max)
{
    int32_t lo, hi;
    if (y_bits < 1 || y_bits > 8 || (y_signed != 0 && y_signed != 1) || (y_bits == 1 && y_signed)) {
        return QK_ERR_BITS; /* binary {-1, +1} outputs cannot come from a rounding */
    }
    qk__code_range(y_bits, y_signed, &lo, &hi);
    if (y_zero_point < lo || y_zero_point > hi) {
        return QK_ERR_ZERO_POINT;
    }
    if (y_min < lo || y_max > hi || y_min > y_max) {
        return QK_ERR_OUTPUT_RANGE;
    }
    return QK_OK;
}
