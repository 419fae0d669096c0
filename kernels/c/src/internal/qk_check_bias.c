/* qk__check_bias: bias presence, length and range (section 4: a bias must fit bias_bits). */
#include "qk_internal.h"

qk_status qk__check_bias(const qk_datapath *dp, const int32_t *bias, size_t bias_len, size_t channels)
{
    size_t i;
    int64_t lo = -(INT64_C(1) << (dp->bias_bits - 1)), hi = (INT64_C(1) << (dp->bias_bits - 1)) - 1;
    if (bias == NULL) {
        return bias_len == 0 ? QK_OK : QK_ERR_NULL;
    }
    if (bias_len != channels) {
        return QK_ERR_BIAS_LENGTH;
    }
    for (i = 0; i < bias_len; ++i) {
        if (bias[i] < lo || bias[i] > hi) {
            return QK_ERR_BIAS_RANGE;
        }
    }
    return QK_OK;
}
