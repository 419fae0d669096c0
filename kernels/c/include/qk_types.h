/*
 * qk_types.h: status codes, datapath and parameter structs of the integer kernel library.
 *
 * Plain C99. Every datapath knob of docs/arithmetic.md is a runtime field of qk_datapath;
 * nothing about the arithmetic is chosen at compile time. All enum-like fields are int32_t so
 * that the struct layout does not depend on the compiler's choice of enum size.
 */
#ifndef QK_TYPES_H
#define QK_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status returned by every entry point. QK_OK is 0; every other value names one problem
 * (qk_status_message gives the sentence). */
typedef enum qk_status {
    QK_OK = 0,
    QK_ERR_NULL = 1,             /* a required pointer is NULL */
    QK_ERR_DATAPATH = 2,         /* a qk_datapath field is outside its allowed values */
    QK_ERR_SHAPE = 3,            /* a dimension is not positive, or dimensions disagree */
    QK_ERR_X_LENGTH = 4,         /* the input buffer length does not match its shape */
    QK_ERR_W_LENGTH = 5,         /* the weight buffer length does not match its shape and packing */
    QK_ERR_BIAS_LENGTH = 6,      /* the bias length is not the number of output channels */
    QK_ERR_Y_LENGTH = 7,         /* the output buffer length does not match the output shape */
    QK_ERR_PARAM_LENGTH = 8,     /* a per-channel parameter array has the wrong length */
    QK_ERR_SCRATCH = 9,          /* the scratch buffer is missing or smaller than *_scratch_bytes */
    QK_ERR_BITS = 10,            /* an operand or output bit width is unsupported */
    QK_ERR_ZERO_POINT = 11,      /* a zero point is outside its operand's code range (or not allowed) */
    QK_ERR_MULTIPLIER = 12,      /* a requantization multiplier is out of range, not finite or not > 0 */
    QK_ERR_SHIFT = 13,           /* a shift or exponent is outside its bounds */
    QK_ERR_BIAS_RANGE = 14,      /* a bias value does not fit datapath bias_bits */
    QK_ERR_OUTPUT_RANGE = 15,    /* y_min/y_max are outside the output code range or y_min > y_max */
    QK_ERR_CODE_RANGE = 16,      /* an input code is outside the range of its operand (lut) */
    QK_ERR_WINDOW = 17,          /* kernel size, stride, padding or dilation is invalid */
    QK_ERR_GROUPS = 18,          /* groups does not divide the channel counts */
    QK_ERR_ISA = 19,             /* the requested instruction set is not available */
    QK_ERR_OVERFLOW = 20,        /* an accumulator left its range with overflow = QK_OVERFLOW_ERROR */
    QK_ERR_SIZE = 21,            /* a size computation would overflow size_t */
    QK_ERR_PARAM_VALUE = 22,     /* an op parameter is outside its allowed values (custom ops) */
    QK_ERR_CACHE = 23            /* a weights cache is smaller than *_cache_bytes */
} qk_status;

/* qk_datapath.overflow (docs/arithmetic.md section 4) */
#define QK_OVERFLOW_WRAP 0
#define QK_OVERFLOW_SATURATE 1
#define QK_OVERFLOW_ERROR 2

/* qk_datapath.requant (section 5) */
#define QK_REQUANT_FIXED_POINT 0
#define QK_REQUANT_FLOAT32 1
#define QK_REQUANT_FLOAT64 2
#define QK_REQUANT_POW2 3

/* qk_datapath.fixed_point_rounding (section 5.1) */
#define QK_FIXED_POINT_DOUBLE 0
#define QK_FIXED_POINT_SINGLE 1

/* rounding modes (section 2) */
#define QK_ROUND_HALF_AWAY 0
#define QK_ROUND_HALF_UP 1
#define QK_ROUND_HALF_EVEN 2
#define QK_ROUND_FLOOR 3

/* qk_datapath.zero_point_order (section 5.2) */
#define QK_ZP_AFTER_ROUNDING 0
#define QK_ZP_BEFORE_ROUNDING 1

/* instruction-set selection of the hot loops; every choice gives bit-identical results */
#define QK_ISA_AUTO 0     /* the widest available at run time */
#define QK_ISA_PORTABLE 1 /* plain C compiled for the baseline target */
#define QK_ISA_X86_AVX2 2 /* the same C compiled for x86-64 AVX2 (QK_ERR_ISA where unavailable) */
#define QK_ISA_X86_AVX512_VNNI 3 /* AVX-512 VNNI (vpdpwssd) GEMM, the rest as AVX2 (QK_ERR_ISA where unavailable) */

/* The integer datapath: one field per knob of quant.datapath.Datapath that the kernels use. */
typedef struct qk_datapath {
    int32_t w_bits;               /* weight operand bits, 1..8 */
    int32_t w_signed;             /* 0/1; 1-bit signed weights are binary {-1, +1} */
    int32_t w_zero_point;         /* 0/1: may the weight zero point be non-zero */
    int32_t a_bits;               /* activation operand bits, 1..8 */
    int32_t a_signed;             /* 0/1 */
    int32_t a_zero_point;         /* 0/1: may the activation zero point be non-zero */
    int32_t acc_bits;             /* accumulator width A, 8..32 */
    int32_t overflow;             /* QK_OVERFLOW_* */
    int32_t requant;              /* QK_REQUANT_* */
    int32_t multiplier_bits;      /* N, 8..31 (fixed_point) */
    int32_t fixed_point_rounding; /* QK_FIXED_POINT_* */
    int32_t rounding;             /* QK_ROUND_*: last requant step, add, average-pool division */
    int32_t zero_point_order;     /* QK_ZP_* (float32/float64 requant) */
    int32_t bias_bits;            /* 8..32: a bias must fit this many bits, signed */
} qk_datapath;

/* Requantization of accumulators to output codes (section 5), per tensor or per channel.
 * Which arrays are read depends on qk_datapath.requant:
 *   fixed_point: multiplier[c] = M0 in [2^(N-1), 2^N) or 0, shift[c] = e in [-31, 30];
 *   float32/float64: fmultiplier[c] = m, a finite float32 > 0;
 *   pow2: shift[c] = k in [-30, 31], the real multiplier being 2^-k.
 * Output codes are y_bits wide (1..8; 1-bit outputs must be unsigned), signed or not, and
 * clamped to [y_min, y_max], which must lie inside the code range. */
typedef struct qk_requant_params {
    size_t channels;              /* 1 (per tensor) or the number of output channels */
    const int32_t *multiplier;
    const int32_t *shift;
    const float *fmultiplier;
    int32_t y_zero_point;
    int32_t y_bits;
    int32_t y_signed;
    int32_t y_min;
    int32_t y_max;
} qk_requant_params;

/* Weights of conv2d and linear: the (C_out, K) matrix, either one code per byte (int8 when
 * the datapath's weights are signed, uint8 otherwise; packed_bits = 0) or packed along K in
 * packed_bits = 1, 2 or 4 bits per code, each row padded to a whole byte (section 3). */
typedef struct qk_weights {
    const void *data;
    size_t length;                /* bytes */
    int32_t packed_bits;          /* 0, 1, 2 or 4 */
    const int32_t *zero_point;    /* one per tensor or per output channel */
    size_t zero_point_length;     /* 1 or C_out */
    /* Optional (NULL: none), conv2d and linear only: a caller-owned buffer of at least
     * qk_conv2d_cache_bytes / qk_linear_cache_bytes bytes (64-byte aligned for speed) where the call
     * keeps the weights' decoded and prepared form. A later call reuses it where the geometry,
     * datapath, instruction set, weight bytes and zero points all equal those it was made from
     * (compared, not assumed), so results never depend on it. One call at a time per buffer. */
    void *cache;
    size_t cache_bytes;
} qk_weights;

#ifdef __cplusplus
}
#endif

#endif /* QK_TYPES_H */
