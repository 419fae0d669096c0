/* qk_rounding_right_shift: round(v / 2^k) in a rounding mode, 0 <= k <= 62 (section 2). */
#include "../include/qk.h"
#include "internal/qk_arith.h"

qk_status qk_rounding_right_shift(int64_t v, int32_t k, int32_t mode, int64_t *out)
{
    if (out == NULL) {
        return QK_ERR_NULL;
    }
    if (mode < QK_ROUND_HALF_AWAY || mode > QK_ROUND_FLOOR) {
        return QK_ERR_DATAPATH;
    }
    if (k < 0 || k > 62) {
        return QK_ERR_SHIFT;
    }
    *out = qk__rounding_right_shift(v, k, mode);
    return QK_OK;
}
