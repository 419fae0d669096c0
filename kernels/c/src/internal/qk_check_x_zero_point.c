/* qk__check_x_zero_point: an activation zero point inside the activation code range, and 0 when
 * the datapath has no activation zero point (section 1). */
#include "qk_internal.h"

qk_status qk__check_x_zero_point(const qk_datapath *dp, int32_t zero_point)
{
    int32_t lo, hi;
    qk__code_range(dp->a_bits, dp->a_signed, &lo, &hi);
    if (zero_point < lo || zero_point > hi || (!dp->a_zero_point && zero_point != 0)) {
        return QK_ERR_ZERO_POINT;
    }
    return QK_OK;
}
