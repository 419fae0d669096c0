/* qk__check_requant: output code range and per-channel requantization parameters (section 5). */
#include "qk_internal.h"

qk_status qk__check_requant(const qk_datapath *dp, const qk_requant_params *rq, size_t channels)
{
    qk_status st;
    size_t c;
    if (rq == NULL) {
        return QK_ERR_NULL;
    }
    if (rq->channels != 1 && rq->channels != channels) {
        return QK_ERR_PARAM_LENGTH;
    }
    if ((st = qk__check_output(rq->y_bits, rq->y_signed, rq->y_zero_point, rq->y_min, rq->y_max)) != QK_OK) {
        return st;
    }
    switch (dp->requant) {
    case QK_REQUANT_FIXED_POINT:
        if (rq->multiplier == NULL || rq->shift == NULL) {
            return QK_ERR_NULL;
        }
        for (c = 0; c < rq->channels; ++c) {
            int32_t m0 = rq->multiplier[c], e = rq->shift[c];
            int32_t n = dp->multiplier_bits;
            if (m0 != 0 && (m0 < (INT32_C(1) << (n - 1)) || (n < 31 && m0 >= (INT32_C(1) << n)))) {
                return QK_ERR_MULTIPLIER;
            }
            if (e < -31 || e > 30) {
                return QK_ERR_SHIFT;
            }
        }
        break;
    case QK_REQUANT_FLOAT32:
    case QK_REQUANT_FLOAT64:
        if (rq->fmultiplier == NULL) {
            return QK_ERR_NULL;
        }
        for (c = 0; c < rq->channels; ++c) {
            float m = rq->fmultiplier[c];
            if (!(m >= 0.0f && m <= 3.40282347e38f)) { /* rejects NaN, +-Inf, negatives */
                return QK_ERR_MULTIPLIER;
            }
        }
        break;
    default: /* QK_REQUANT_POW2 */
        if (rq->shift == NULL) {
            return QK_ERR_NULL;
        }
        for (c = 0; c < rq->channels; ++c) {
            if (rq->shift[c] < -30 || rq->shift[c] > 31) {
                return QK_ERR_SHIFT;
            }
        }
        break;
    }
    return QK_OK;
}
