/*
 * qk_custom.h: the ABI of custom ops (docs/arithmetic.md section 10), and the custom ops the
 * kernel library ships.
 *
 * A custom op registered with quant.register_op(..., c_symbol="my_op", c_library="libmine.so")
 * is one C function of type qk_custom_fn, exported under that name from the kernel library
 * (c_library=None) or from the user's shared library, plus an optional qk_custom_scratch_fn
 * named "<symbol>_scratch_bytes". Plain C99; no allocation, no globals written; the caller owns
 * every buffer:
 *
 *   - inputs[0 .. n_inputs-1]: tensors of codes, dense row-major, the batch first;
 *   - params[0 .. n_params-1]: the op's integer parameters in the order of the registration's
 *     param_names (a scalar is one value);
 *   - output: data allocated by the caller with the shape filled in (the batch of inputs[0],
 *     then the per-sample output shape of the program), bits and signedness set;
 *   - scratch: scratch_bytes bytes (64-byte aligned; NULL when 0), as many as
 *     <symbol>_scratch_bytes asked for (0 when the library exports no such function).
 *
 * A function returns 0 (QK_OK) after writing every output code, or a nonzero status without a
 * defined output: a qk_status value (qk_status_message gives its sentence) or any other code,
 * which the Python side reports as it is.
 */
#ifndef QK_CUSTOM_H
#define QK_CUSTOM_H

#include <stddef.h>
#include <stdint.h>

#include "qk_types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QK_CUSTOM_MAX_DIMS 8

/* A tensor of codes: int8_t elements when is_signed, else uint8_t; bits-wide codes (1..8). */
typedef struct qk_custom_tensor {
    void *data;
    int64_t shape[QK_CUSTOM_MAX_DIMS]; /* shape[0 .. ndim-1]; the rest 0 */
    int32_t ndim;                      /* 1..QK_CUSTOM_MAX_DIMS */
    int32_t bits;
    int32_t is_signed;
    int32_t reserved;                  /* 0 */
} qk_custom_tensor;

/* One integer parameter: count int64 values (1 for a scalar). */
typedef struct qk_custom_param {
    const int64_t *values;
    int64_t count;
} qk_custom_param;

typedef int32_t (*qk_custom_fn)(const qk_custom_tensor *inputs, int32_t n_inputs, const qk_custom_param *params,
                                int32_t n_params, qk_custom_tensor *output, void *scratch, size_t scratch_bytes);
typedef int32_t (*qk_custom_scratch_fn)(const qk_custom_tensor *inputs, int32_t n_inputs,
                                        const qk_custom_param *params, int32_t n_params,
                                        const qk_custom_tensor *output, size_t *bytes);

/* ------------------------------------------------------------------ detection.nms (section 10.1)
 *
 * Greedy non-maximum suppression of each sample's A boxes, as detection post-processing does it
 * (MobileSSD): inputs[0] box codes (N, A, 4) as (x1, y1, x2, y2) of one scale, inputs[1] score
 * codes (N, A); output (N, A) of the scores' code type: a kept box's score code, else `fill`.
 * Parameters, in order: iou_q16 (the IoU threshold t as t * 2^16, 0..65536), score_min (the
 * smallest score code that may be kept), max_detections (>= 1), fill (a code of the output type).
 *
 * Boxes are visited by score code, highest first, ties by lower index. A box is kept unless a
 * kept box overlaps it with IoU > t, tested exactly on the code differences:
 * inter * 2^16 > iou_q16 * union (never when union = 0), where widths are max(0, x2 - x1) and the
 * intersection's max(0, min(x2) - max(x1)), likewise in y; at most max_detections boxes are kept
 * and a box with a score code below score_min never is. Scratch: A int32 indices and A bytes. */
int32_t qk_nms(const qk_custom_tensor *inputs, int32_t n_inputs, const qk_custom_param *params, int32_t n_params,
               qk_custom_tensor *output, void *scratch, size_t scratch_bytes);
int32_t qk_nms_scratch_bytes(const qk_custom_tensor *inputs, int32_t n_inputs, const qk_custom_param *params,
                             int32_t n_params, const qk_custom_tensor *output, size_t *bytes);

#ifdef __cplusplus
}
#endif

#endif /* QK_CUSTOM_H */
