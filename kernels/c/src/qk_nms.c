/* qk_nms: greedy non-maximum suppression on box and score codes (section 10.1), a custom op of
 * the ABI in qk_custom.h, with its qk_nms_scratch_bytes twin. */
#include "../include/qk_custom.h"

#include <string.h>

#include "internal/qk_internal.h"

static int32_t qk__nms_code_at(const qk_custom_tensor *t, size_t i)
{
    return t->is_signed ? (int32_t)((const int8_t *)t->data)[i] : (int32_t)((const uint8_t *)t->data)[i];
}

static int qk__nms_valid_tensor(const qk_custom_tensor *t, int32_t ndim)
{
    int32_t d;
    if (t->data == NULL || t->ndim != ndim || t->bits < 1 || t->bits > 8 || (t->is_signed != 0 && t->is_signed != 1)) {
        return 0;
    }
    for (d = 0; d < ndim; ++d) {
        if (t->shape[d] < 1) {
            return 0;
        }
    }
    return 1;
}

/* Checks every argument; on QK_OK sets the batch, the box count and the element count of the scores. */
static int32_t qk__nms_check_args(const qk_custom_tensor *inputs, int32_t n_inputs, const qk_custom_param *params,
                          int32_t n_params, const qk_custom_tensor *output, size_t *n, size_t *a)
{
    const qk_custom_tensor *boxes, *scores;
    int32_t i, lo, hi;
    if (inputs == NULL || params == NULL || output == NULL) {
        return QK_ERR_NULL;
    }
    if (n_inputs != 2 || n_params != 4) {
        return QK_ERR_PARAM_LENGTH;
    }
    for (i = 0; i < 4; ++i) {
        if (params[i].values == NULL) {
            return QK_ERR_NULL;
        }
        if (params[i].count != 1) {
            return QK_ERR_PARAM_LENGTH;
        }
    }
    boxes = &inputs[0];
    scores = &inputs[1];
    if (!qk__nms_valid_tensor(boxes, 3) || !qk__nms_valid_tensor(scores, 2) || !qk__nms_valid_tensor(output, 2)) {
        return boxes->data == NULL || scores->data == NULL || output->data == NULL ? QK_ERR_NULL : QK_ERR_SHAPE;
    }
    if (boxes->shape[2] != 4 || scores->shape[0] != boxes->shape[0] || scores->shape[1] != boxes->shape[1] ||
        output->shape[0] != scores->shape[0] || output->shape[1] != scores->shape[1]) {
        return QK_ERR_SHAPE;
    }
    if (output->bits != scores->bits || output->is_signed != scores->is_signed) {
        return QK_ERR_BITS;
    }
    if (params[0].values[0] < 0 || params[0].values[0] > 65536 || params[2].values[0] < 1) {
        return QK_ERR_PARAM_VALUE;
    }
    qk__code_range(output->bits, output->is_signed, &lo, &hi);
    if (params[3].values[0] < lo || params[3].values[0] > hi) {
        return QK_ERR_OUTPUT_RANGE;
    }
    /* N * A * 4 elements must be addressable: each factor is checked against what remains. */
    if ((uint64_t)boxes->shape[0] > (uint64_t)SIZE_MAX / 4 ||
        (uint64_t)boxes->shape[1] > (uint64_t)SIZE_MAX / 4 / (uint64_t)boxes->shape[0]) {
        return QK_ERR_SIZE;
    }
    *n = (size_t)boxes->shape[0];
    *a = (size_t)boxes->shape[1];
    return QK_OK;
}

int32_t qk_nms_scratch_bytes(const qk_custom_tensor *inputs, int32_t n_inputs, const qk_custom_param *params,
                             int32_t n_params, const qk_custom_tensor *output, size_t *bytes)
{
    size_t n, a;
    int32_t status;
    if (bytes == NULL) {
        return QK_ERR_NULL;
    }
    status = qk__nms_check_args(inputs, n_inputs, params, n_params, output, &n, &a);
    if (status != QK_OK) {
        return status;
    }
    if (a > SIZE_MAX / (sizeof(int32_t) + 1) || a > (size_t)INT32_MAX) {
        return QK_ERR_SIZE;
    }
    *bytes = a * (sizeof(int32_t) + 1);
    return QK_OK;
}

/* IoU of boxes i and j (code coordinates) above iou_q16 / 2^16, exactly: inter * 2^16 > iou_q16 * union. */
static int qk__nms_overlaps(const qk_custom_tensor *boxes, size_t base, size_t i, size_t j, int64_t iou_q16)
{
    int64_t ai[4], aj[4], wi, hi_, wj, hj, iw, ih, inter, uni;
    int k;
    for (k = 0; k < 4; ++k) {
        ai[k] = qk__nms_code_at(boxes, base + 4 * i + (size_t)k);
        aj[k] = qk__nms_code_at(boxes, base + 4 * j + (size_t)k);
    }
    wi = ai[2] > ai[0] ? ai[2] - ai[0] : 0;
    hi_ = ai[3] > ai[1] ? ai[3] - ai[1] : 0;
    wj = aj[2] > aj[0] ? aj[2] - aj[0] : 0;
    hj = aj[3] > aj[1] ? aj[3] - aj[1] : 0;
    iw = (ai[2] < aj[2] ? ai[2] : aj[2]) - (ai[0] > aj[0] ? ai[0] : aj[0]);
    ih = (ai[3] < aj[3] ? ai[3] : aj[3]) - (ai[1] > aj[1] ? ai[1] : aj[1]);
    inter = (iw > 0 ? iw : 0) * (ih > 0 ? ih : 0); /* each factor < 2^9: no overflow */
    uni = wi * hi_ + wj * hj - inter;
    return uni > 0 && inter * 65536 > iou_q16 * uni;
}

int32_t qk_nms(const qk_custom_tensor *inputs, int32_t n_inputs, const qk_custom_param *params, int32_t n_params,
               qk_custom_tensor *output, void *scratch, size_t scratch_bytes)
{
    const qk_custom_tensor *boxes = inputs ? &inputs[0] : NULL, *scores = inputs ? &inputs[1] : NULL;
    size_t n, a, b, i, j, need = 0, count;
    int32_t status, lo, hi, *order;
    unsigned char *suppressed;
    int64_t iou_q16, score_min, max_det, fill, kept;
    status = qk_nms_scratch_bytes(inputs, n_inputs, params, n_params, output, &need);
    if (status != QK_OK) {
        return status;
    }
    (void)qk__nms_check_args(inputs, n_inputs, params, n_params, output, &n, &a);
    if (scratch == NULL || scratch_bytes < need) {
        return QK_ERR_SCRATCH;
    }
    iou_q16 = params[0].values[0];
    score_min = params[1].values[0];
    max_det = params[2].values[0];
    fill = params[3].values[0];
    count = n * a;
    qk__code_range(boxes->bits, boxes->is_signed, &lo, &hi);
    for (i = 0; i < count * 4; ++i) { /* every code checked before any output is written */
        int32_t v = qk__nms_code_at(boxes, i);
        if (v < lo || v > hi) {
            return QK_ERR_CODE_RANGE;
        }
    }
    qk__code_range(scores->bits, scores->is_signed, &lo, &hi);
    for (i = 0; i < count; ++i) {
        int32_t v = qk__nms_code_at(scores, i);
        if (v < lo || v > hi) {
            return QK_ERR_CODE_RANGE;
        }
    }
    order = (int32_t *)scratch;
    suppressed = (unsigned char *)scratch + a * sizeof(int32_t);
    for (b = 0; b < n; ++b) {
        size_t base = b * a;
        for (i = 0; i < a; ++i) { /* stable insertion sort: score descending, ties by index */
            int32_t s = qk__nms_code_at(scores, base + i);
            j = i;
            while (j > 0 && qk__nms_code_at(scores, base + (size_t)order[j - 1]) < s) {
                order[j] = order[j - 1];
                --j;
            }
            order[j] = (int32_t)i;
        }
        memset(suppressed, 0, a);
        kept = 0;
        for (i = 0; i < a; ++i) {
            size_t bi = (size_t)order[i];
            if (output->is_signed) {
                ((int8_t *)output->data)[base + bi] = (int8_t)fill;
            } else {
                ((uint8_t *)output->data)[base + bi] = (uint8_t)fill;
            }
        }
        for (i = 0; i < a && kept < max_det; ++i) {
            size_t bi = (size_t)order[i];
            int32_t s = qk__nms_code_at(scores, base + bi);
            if (suppressed[bi] || s < score_min) {
                continue;
            }
            ++kept;
            if (output->is_signed) {
                ((int8_t *)output->data)[base + bi] = (int8_t)s;
            } else {
                ((uint8_t *)output->data)[base + bi] = (uint8_t)s;
            }
            for (j = i + 1; j < a; ++j) {
                size_t bj = (size_t)order[j];
                if (!suppressed[bj] && qk__nms_overlaps(boxes, base * 4, bi, bj, iou_q16)) {
                    suppressed[bj] = 1;
                }
            }
        }
    }
    return QK_OK;
}
