/* qk__check_datapath: every qk_datapath field within its allowed values (docs/arithmetic.md). */
#include "qk_internal.h"

static int qk__in(int32_t v, int32_t lo, int32_t hi)
{
    return v >= lo && v <= hi;
}

qk_status qk__check_datapath(const qk_datapath *dp)
{
    if (dp == NULL) {
        return QK_ERR_NULL;
    }
    if (!qk__in(dp->w_bits, 1, 8) || !qk__in(dp->w_signed, 0, 1) || !qk__in(dp->w_zero_point, 0, 1) ||
        !qk__in(dp->a_bits, 1, 8) || !qk__in(dp->a_signed, 0, 1) || !qk__in(dp->a_zero_point, 0, 1) ||
        !qk__in(dp->acc_bits, 8, 32) || !qk__in(dp->overflow, QK_OVERFLOW_WRAP, QK_OVERFLOW_ERROR) ||
        !qk__in(dp->requant, QK_REQUANT_FIXED_POINT, QK_REQUANT_POW2) || !qk__in(dp->multiplier_bits, 8, 31) ||
        !qk__in(dp->fixed_point_rounding, QK_FIXED_POINT_DOUBLE, QK_FIXED_POINT_SINGLE) ||
        !qk__in(dp->rounding, QK_ROUND_HALF_AWAY, QK_ROUND_FLOOR) ||
        !qk__in(dp->zero_point_order, QK_ZP_AFTER_ROUNDING, QK_ZP_BEFORE_ROUNDING) || !qk__in(dp->bias_bits, 8, 32)) {
        return QK_ERR_DATAPATH;
    }
    /* binary operands {-1, +1} have no zero point */
    if ((dp->w_bits == 1 && dp->w_signed && dp->w_zero_point) || (dp->a_bits == 1 && dp->a_signed && dp->a_zero_point)) {
        return QK_ERR_DATAPATH;
    }
    return QK_OK;
}
