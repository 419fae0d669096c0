/* qk_status_message: one sentence per qk_status. */
#include "../include/qk.h"

const char *qk_status_message(qk_status status)
{
    switch (status) {
    case QK_OK:
        return "success";
    case QK_ERR_NULL:
        return "a required pointer is NULL";
    case QK_ERR_DATAPATH:
        return "a datapath field is outside its allowed values";
    case QK_ERR_SHAPE:
        return "a dimension is not positive or the shapes disagree";
    case QK_ERR_X_LENGTH:
        return "the input buffer length does not match its shape";
    case QK_ERR_W_LENGTH:
        return "the weight buffer length does not match its shape and packing";
    case QK_ERR_BIAS_LENGTH:
        return "the bias length is not the number of output channels";
    case QK_ERR_Y_LENGTH:
        return "the output buffer length does not match the output shape";
    case QK_ERR_PARAM_LENGTH:
        return "a per-channel parameter array has the wrong length";
    case QK_ERR_SCRATCH:
        return "the scratch buffer is missing or too small";
    case QK_ERR_BITS:
        return "an operand or output bit width is unsupported";
    case QK_ERR_ZERO_POINT:
        return "a zero point is outside its operand's code range or not supported by the datapath";
    case QK_ERR_MULTIPLIER:
        return "a requantization multiplier is out of range or not finite";
    case QK_ERR_SHIFT:
        return "a shift or exponent is outside its bounds";
    case QK_ERR_BIAS_RANGE:
        return "a bias value does not fit the datapath's bias_bits";
    case QK_ERR_OUTPUT_RANGE:
        return "y_min/y_max are outside the output code range or y_min > y_max";
    case QK_ERR_CODE_RANGE:
        return "an input code is outside the code range of its operand";
    case QK_ERR_WINDOW:
        return "kernel size, stride, padding or dilation is invalid";
    case QK_ERR_GROUPS:
        return "groups does not divide the channel counts";
    case QK_ERR_ISA:
        return "the requested instruction set is not available";
    case QK_ERR_OVERFLOW:
        return "the accumulator overflows (overflow='error')";
    case QK_ERR_SIZE:
        return "a buffer size does not fit size_t";
    case QK_ERR_PARAM_VALUE:
        return "an op parameter is outside its allowed values";
    case QK_ERR_CACHE:
        return "the weights cache is smaller than *_cache_bytes";
    }
    return "unknown status";
}
