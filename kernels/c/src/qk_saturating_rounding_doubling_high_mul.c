/* qk_saturating_rounding_doubling_high_mul: saturate_int32(floor((a b + 2^(n-1)) / 2^n)) (section 5.1). */
#include "../include/qk.h"
#include "internal/qk_arith.h"

qk_status qk_saturating_rounding_doubling_high_mul(int32_t a, int32_t b, int32_t n, int32_t *out)
{
    if (out == NULL) {
        return QK_ERR_NULL;
    }
    if (n < 1 || n > 62) {
        return QK_ERR_SHIFT;
    }
    *out = qk__srdhm(a, b, n);
    return QK_OK;
}
