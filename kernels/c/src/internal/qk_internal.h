/*
 * qk_internal.h: declarations shared by the kernel sources (not part of the public API).
 *
 * Internal functions carry the prefix qk__ and live one per file, named after them.
 */
#ifndef QK_INTERNAL_H
#define QK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "../../include/qk_types.h"

/* Largest reduction length whose int32 partial sums are exact: every product of two 8-bit code
 * differences is at most 255 * 255 = 65025 in magnitude, and 32768 * 65025 < 2^31. */
#define QK__K_CHUNK 32768
/* Register tile of the int16 GEMM: rows of A and rows of B handled per micro-kernel call. */
#define QK__MR 2
#define QK__NR 4
/* Target bytes of a block of B (int16 rows of kp), and the panel width of the AVX-512 kernel (QK__Z_NR). */
#define QK__B_TILE_BYTES 65536
#define QK__NB_ALIGN 32
/* Whether the hot loops are also compiled for x86 AVX2 (GCC/Clang function attributes, chosen
 * at run time; define QK_NO_ISA_DISPATCH to build the portable code only). */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(QK_NO_ISA_DISPATCH)
#define QK__HAVE_X86_AVX2 1
#else
#define QK__HAVE_X86_AVX2 0
#endif
#if defined(__GNUC__)
#define QK__ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define QK__ALWAYS_INLINE static inline
#endif
#if QK__HAVE_X86_AVX2
#define QK__TARGET_AVX2 __attribute__((target("avx2")))
#endif
/* Whether the GEMM also has an AVX-512 VNNI kernel (intrinsics under a function attribute; compilers
 * that know the avx512vnni target: GCC 8, Clang 6 and later). */
#if QK__HAVE_X86_AVX2 && ((defined(__clang__) && __clang_major__ >= 6) || (!defined(__clang__) && __GNUC__ >= 8))
#define QK__HAVE_X86_AVX512_VNNI 1
#define QK__TARGET_AVX512_VNNI __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni")))
#else
#define QK__HAVE_X86_AVX512_VNNI 0
#endif
/* Whether the loops that have no wider version run their AVX2 build under `isa`. */
#define QK__USES_AVX2(isa) ((isa) == QK_ISA_X86_AVX2 || (isa) == QK_ISA_X86_AVX512_VNNI)

/* The hot loops are written for auto-vectorization, which GCC enables only from -O3 (or with
 * -ftree-vectorize): the library asks for it, so that a build at -O2 (the usual release flag, and
 * that of exported folders) runs as fast as -O3. Integer loops only: results are unchanged.
 * Define QK_NO_VECTORIZE_PRAGMA to leave the choice to the command line. */
#if defined(__GNUC__) && !defined(__clang__) && !defined(QK_NO_VECTORIZE_PRAGMA)
#pragma GCC optimize("tree-vectorize")
#endif

/* Alignment (bytes) of every array carved out of the scratch buffer. */
#define QK__ALIGN 64

/* The code range of a bits-wide operand (binary signed 1-bit codes are {-1, +1}). */
static inline void qk__code_range(int32_t bits, int32_t is_signed, int32_t *lo, int32_t *hi)
{
    if (is_signed) {
        *lo = bits == 1 ? -1 : -(INT32_C(1) << (bits - 1));
        *hi = bits == 1 ? 1 : (INT32_C(1) << (bits - 1)) - 1;
    } else {
        *lo = 0;
        *hi = (INT32_C(1) << bits) - 1;
    }
}

/* The i-th code of an int8 (is_signed) or uint8 array. */
static inline int32_t qk__code_at(const void *p, size_t i, int32_t is_signed)
{
    return is_signed ? (int32_t)((const int8_t *)p)[i] : (int32_t)((const uint8_t *)p)[i];
}

static inline size_t qk__round_up(size_t v, size_t m)
{
    return (v + m - 1) / m * m;
}

/* Overflow-checked size arithmetic: return 0 when the result does not fit size_t. */
static inline int qk__mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > (size_t)-1 / a) {
        return 0;
    }
    *out = a * b;
    return 1;
}

static inline int qk__add_size(size_t a, size_t b, size_t *out)
{
    if (b > (size_t)-1 - a) {
        return 0;
    }
    *out = a + b;
    return 1;
}

/* Saturating size arithmetic: SIZE_MAX when the result does not fit, which every later size
 * computation keeps and the scratch arena refuses (QK_ERR_SIZE), so no wrapped size is ever used. */
static inline size_t qk__mul_sat(size_t a, size_t b)
{
    size_t out;
    return qk__mul_size(a, b, &out) ? out : (size_t)-1;
}

static inline size_t qk__add_sat(size_t a, size_t b)
{
    size_t out;
    return qk__add_size(a, b, &out) ? out : (size_t)-1;
}

/* A bump allocator over the caller's scratch buffer (no malloc in the library). Sizes are
 * rounded to QK__ALIGN; `need` accumulates the total so that the *_scratch_bytes twins and
 * the kernels share one layout function. */
typedef struct qk__arena {
    unsigned char *base; /* NULL while measuring */
    size_t used;
    int overflow;
} qk__arena;

static inline void *qk__arena_take(qk__arena *ar, size_t count, size_t elem)
{
    size_t bytes, end;
    void *p;
    if (!qk__mul_size(count, elem, &bytes) || !qk__add_size(bytes, QK__ALIGN, &bytes)) {
        ar->overflow = 1;
        return NULL;
    }
    bytes = bytes / QK__ALIGN * QK__ALIGN;
    if (!qk__add_size(ar->used, bytes, &end)) {
        ar->overflow = 1;
        return NULL;
    }
    p = ar->base ? (void *)(ar->base + ar->used) : NULL;
    ar->used = end;
    return p;
}

/* Output size of a window: floor((in + 2 pad - dil (k - 1) - 1) / stride) + 1; 0 when the
 * window does not fit (the caller has checked in, k, stride, dil >= 1 and pad >= 0). */
static inline int32_t qk__window_out(int32_t in, int32_t k, int32_t stride, int32_t pad, int32_t dil)
{
    int64_t span = (int64_t)in + 2 * (int64_t)pad - (int64_t)dil * (k - 1) - 1;
    if (span < 0 || (int64_t)in + 2 * (int64_t)pad > INT32_MAX) {
        return 0;
    }
    return (int32_t)(span / stride + 1);
}

/* Columns of B per block for rows of kp int16 (at most 256): about QK__B_TILE_BYTES, rounded up to whole
 * panels of QK__NB_ALIGN columns where that at most quadruples the block (no block then leaves part of a
 * panel empty), else to QK__NR. */
static inline size_t qk__block_columns(size_t kp)
{
    size_t nb = QK__B_TILE_BYTES / qk__mul_sat(2, kp);
    if (nb >= QK__NB_ALIGN || qk__mul_sat(2 * QK__NB_ALIGN, kp) <= 4 * (size_t)QK__B_TILE_BYTES) {
        nb = qk__round_up(nb < 1 ? 1 : nb, QK__NB_ALIGN);
    } else {
        nb = qk__round_up(nb < QK__NR ? QK__NR : nb, QK__NR);
    }
    return nb > 256 ? 256 : nb;
}

/* Validation shared by the entry points. */
qk_status qk__check_datapath(const qk_datapath *dp);

/* Output codes: y_bits in 1..8 (not binary), y_zero_point in the code range, y_min <= y_max
 * inside it. */
qk_status qk__check_output(int32_t y_bits, int32_t y_signed, int32_t y_zero_point, int32_t y_min, int32_t y_max);
qk_status qk__check_requant(const qk_datapath *dp, const qk_requant_params *rq, size_t channels);

/* acc[i] = wrap_A(bias + s[i]) for i < n, A = bits (section 4); with bits = 32 the plain sum where the
 * caller has proven it fits int32. s may equal acc. `isa` is a resolved QK_ISA_*. */
void qk__bias_row(int32_t isa, const int32_t *s, size_t n, int32_t bias, int32_t bits, int32_t *acc);

/* Requantize n accumulators of channel c (section 5) and store the codes at y[i]
 * (int8 when rq->y_signed, else uint8). `isa` is a resolved QK_ISA_*. */
void qk__requant_row(int32_t isa, const int32_t *acc, size_t n, size_t c, const qk_datapath *dp,
                     const qk_requant_params *rq, void *y);

/* The output plane of a single-input-channel convolution: acc[r * ow + col] = sum over (i, j) of
 * w[i * kw + j] * plane[(r * sh + i * dh) * wp + col * sw + j * dw] for r < oh, col < ow, in int32
 * (exact: at most QK__K_CHUNK terms of magnitude <= 255 * 255). The plane must be followed by
 * QK__DW_SLACK readable values (their products have weight 0). */
#define QK__DW_SLACK 32
void qk__depthwise_plane(int32_t isa, const int16_t *plane, size_t wp, const int16_t *w, size_t kh, size_t kw,
                         size_t sh, size_t sw, size_t dh, size_t dw, size_t oh, size_t ow, int32_t *acc);

/* The cg channel planes of one image and group (channel c at byte x + offset + c * h * w, codes int8
 * when is_signed, else uint8) as the channels-last interior of a padded byte copy, signed codes with the
 * sign bit flipped (x + 128, so that every byte is an unsigned code): byte (r, col, c) at
 * dst[(r * wp + col) * cg + c]. `isa` is a resolved QK_ISA_*. */
void qk__fill_channels_last(int32_t isa, const void *x, int32_t is_signed, size_t offset, size_t cg, size_t h,
                            size_t w, uint8_t *dst, size_t wp);

/* The weights cache (qk_weights.cache, qk_weights_cache.c). The bytes before its arena, for a key of
 * key_bytes (saturating: a size beyond size_t is SIZE_MAX). The weights' arena of a call in w's cache
 * (*wa, arena_bytes long) and whether it holds these weights under `key` (if not, the cache is marked
 * empty first), QK_ERR_CACHE where the cache is too small. Marking it valid once the arena is written. */
size_t qk__weights_cache_prefix(const qk_weights *w, size_t key_bytes);
qk_status qk__weights_cache(const qk_weights *w, const void *key, size_t key_bytes, size_t arena_bytes, qk__arena *wa,
                            int *hit);
void qk__weights_cache_stamp(const qk_weights *w, const void *key, size_t key_bytes);

/* Columns of B as rows of bytes: value k of column j is (p[j * ld + k] ^ flip) - zz for k < this->k, and 0
 * for k beyond (the bytes of 8-bit codes, sign bit flipped for signed codes, minus the zero point likewise
 * flipped). */
typedef struct qk__mm_bytes {
    const uint8_t *p;
    size_t ld, k;
    uint8_t flip;
    int32_t zz;
} qk__mm_bytes;
/* out[r] = sum_k v[r * kp + k]^2 for r < rows (kp <= QK__K_CHUNK, every |v| <= 255: exact in int32).
 * `isa` is a resolved QK_ISA_*. */
void qk__sum_squares(int32_t isa, const int16_t *v, size_t rows, size_t kp, int64_t *out);

/* The same sums for rows given as bytes: out[r] = sum_{k < b->k} ((b->p[r * b->ld + k] ^ b->flip) - b->zz)^2. */
void qk__sum_squares_bytes(int32_t isa, const qk__mm_bytes *b, size_t rows, int64_t *out);
/* dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols (bytes). `isa` is a resolved
 * QK_ISA_*. */
void qk__transpose_codes(int32_t isa, const uint8_t *src, size_t rows, size_t cols, size_t src_stride, uint8_t *dst,
                         size_t dst_stride);

/* Resolve QK_ISA_AUTO to the ISA used on this machine; QK_ERR_ISA for an unavailable one. */
qk_status qk__select_isa(int32_t isa, int32_t *selected);

/* c[i * ldc + j] = sum_k a[i * lda + k] * b[j * ldb + k] for i < m, j < n, k < kc, in int32.
 * m and n are multiples of QK__MR / QK__NR, kc is a multiple of 16 and at most QK__K_CHUNK,
 * and every |a|, |b| is at most 255, so every sum is exact. `isa` is a resolved QK_ISA_*. */
void qk__gemm_i16(int32_t isa, size_t m, size_t n, size_t kc, const int16_t *a, size_t lda, const int16_t *b,
                  size_t ldb, int32_t *c, size_t ldc);

/* Groups of k per block of the AVX-512 kernels, and the int32 size of A prepared for them: every block
 * of QK__Z_KB quadruples of k holds all mp rows. */
#define QK__Z_KB 128
static inline size_t qk__z_groups(size_t mp, size_t kp)
{
    return qk__mul_sat(qk__mul_sat((kp / 4 + QK__Z_KB - 1) / QK__Z_KB, mp), QK__Z_KB);
}

/* qk__gemm_i16's product on AVX-512 VNNI (u8 x s8 where every row of a and of b spans at most 255, as
 * differences of 8-bit codes do; int16 pairs otherwise); defined and called only where
 * QK__HAVE_X86_AVX512_VNNI, on a CPU that qk__select_isa found to have it. */
void qk__gemm_avx512(size_t m, size_t n, size_t kc, const int16_t *a, size_t lda, const int16_t *b, size_t ldb,
                     int32_t *c, size_t ldc);
/* A (mp rows of kp int16, kp a multiple of 16 and at most QK__K_CHUNK) as the int8 quadruples of the
 * u8 x s8 product, once for many products: ag (qk__z_groups(mp, kp) int32), each row's offset and sum.
 * Returns 0 (and prepares nothing usable) where a row spans more than 255. */
int qk__gemm_avx512_prepare(const int16_t *a, size_t mp, size_t kp, int32_t *ag, int16_t *offset, int64_t *sum);
/* c = rows i0 .. i0 + m of the prepared A times b (n columns, as for qk__gemm_i16, kc = kp);
 * a (the same A as int16) for a block of columns that spans more than 255. */
void qk__gemm_avx512_prepared(const int16_t *a, size_t i0, size_t m, size_t mp, size_t n, size_t kp, const int32_t *ag,
                              const int16_t *offset, const int64_t *sum, const int16_t *b, size_t ldb, int32_t *c,
                              size_t ldc);

/* The same product for n columns given as byte rows (b, k <= kp), without their int16 form: each column's
 * bytes are its uint8 operand as they are, with the column offset b->zz. */
void qk__gemm_avx512_prepared_bytes(size_t i0, size_t m, size_t mp, size_t n, size_t kp, const int32_t *ag,
                                    const int16_t *offset, const int64_t *sum, const qk__mm_bytes *b, int32_t *c,
                                    size_t ldc);
/* One matrix product with accumulation (section 4) and requantization (section 5), shared by
 * conv2d and linear. A holds the weight differences w - z_w as int16 rows of kp (a multiple
 * of 16, zero padded) in the kernel's reduction order `perm`; B holds the input differences
 * x - z_x the same way. perm[k] is the position, in that order, of the k-th term of the
 * canonical order of section 4 (NULL: identical), used only by the exact sequential path. */
/* A matrix prepared once for many AVX-512 products (qk__gemm_avx512_prepare): its int8 groups (NULL:
 * none reserved), each row's offset and sum, and whether it holds the current matrix. */
typedef struct qk__mm_prepared {
    int32_t *groups;
    int16_t *offset;
    int64_t *sum;
    int ready;
} qk__mm_prepared;

typedef struct qk__mm {
    const qk_datapath *dp;
    const qk_requant_params *rq;
    int32_t isa;                 /* resolved */
    size_t m;                    /* rows of A (output channels) */
    size_t mp;                   /* m rounded up to QK__MR (A has mp rows) */
    size_t k;                    /* reduction length */
    size_t kp;                   /* row stride of A and B, k rounded up to 16 */
    const int16_t *a;
    int16_t *a_abs;              /* scratch for |a| (same layout), or NULL: no exact absolute bound */
    const int32_t *bias;         /* m entries, or NULL */
    size_t chan0;                /* channel index of row 0 in rq */
    const int32_t *row_wmax;     /* per row: max_k |a| */
    const int64_t *row_wsum;     /* per row: sum_k |a| */
    int64_t *row_wsq;            /* per row: sum_k a^2 (set by qk__mm_prepare where a_abs is used), else NULL */
    const uint32_t *perm;        /* NULL or k entries */
    int32_t xmax;                /* max |x - z_x| over the whole input */
    int32_t *sums;               /* scratch: mp * nb_max int32 */
    int64_t *sums64;             /* scratch: mp * nb_max int64 when kp > QK__K_CHUNK, else NULL */
    int64_t *xsum;               /* scratch: nb_max entries */
    int64_t *xsq;                /* scratch: nb_max entries when a_abs is used (sum_k b^2), else NULL */
    int32_t *accrow;             /* scratch: nb_max entries */
    uint8_t *codes;              /* scratch: QK__MB x nb_max output codes, written transposed (linear) */
    int16_t *b_abs;              /* scratch: nb_max * kp when a_abs is used, else NULL */
    int32_t *tsum;               /* scratch: mp * nb_max when a_abs is used, else NULL */
    qk__mm_prepared ap;          /* A prepared for the AVX-512 u8 x s8 product (kp <= QK__K_CHUNK) */
    qk__mm_prepared abs_ap;      /* |A| likewise, when a_abs is used */
    int abs_pending;             /* |A| still to be prepared, on its first product */
} qk__mm;

/* Where a row's coarse bound fails, the rows' sums of squares (|A| is prepared later, by qk__mm_block,
 * if its product is ever needed); call after setting every field but the scratch (mm->ap: from
 * qk__mm_a_of), before qk__mm_block. */
void qk__mm_prepare(qk__mm *mm);

/* Storage for `count` matrices A (mp x kp) prepared for the AVX-512 product (the groups of a convolution),
 * carved from the weights' arena so that a weights cache keeps them; ready[i]: whether matrix i holds a
 * usable prepared form. */
typedef struct qk__mm_a_store {
    int32_t *groups;
    int16_t *offset;
    int64_t *sum;
    int32_t *ready;
    size_t mp, kp;
} qk__mm_a_store;
void qk__mm_reserve_a(qk__arena *ar, size_t count, size_t mp, size_t kp, qk__mm_a_store *st);
/* Prepare matrix `index` of st from a (the int16 A) for ISA `isa` (a resolved QK_ISA_*; nothing usable
 * where it has no prepared form). */
void qk__mm_prepare_a(int32_t isa, const int16_t *a, const qk__mm_a_store *st, size_t index);
/* The prepared matrix `index` of st, as qk__mm's ap. */
qk__mm_prepared qk__mm_a_of(const qk__mm_a_store *st, size_t index);

/* Compute the outputs of the nb (<= nb_max) columns whose bytes bb gives; b (nb_max rounded to QK__NR rows
 * of kp int16) receives their int16 rows (zero padded) only where a product or a bound needs them (the
 * AVX-512 product of a prepared A, the coarse bound and Cauchy-Schwarz take the bytes).
 * Output (row i, column j) goes to y byte index i * y_stride + j (conv2d: rows are channels, columns
 * pixels) or, when `transposed`, j * y_stride + i (linear: columns are the batch's rows).
 * Returns QK_ERR_OVERFLOW in overflow = error mode when a clamp would change a value. */
qk_status qk__mm_block(qk__mm *mm, const qk__mm_bytes *bb, int16_t *b, size_t nb, void *y, size_t y_stride,
                       int transposed);

/* Scratch needed by qk__mm_block for nb_max columns (measured with an arena); with_abs
 * reserves the buffers of the exact absolute bound (saturate/error datapaths). */
void qk__mm_reserve(qk__arena *ar, qk__mm *mm, size_t nb_max, int with_abs);

/* Whether the exact absolute bound sum_k |a_k b_k| is used: saturate/error and K within one
 * int32-exact chunk. */
static inline int qk__mm_uses_abs(const qk_datapath *dp, size_t kp)
{
    return dp->overflow != QK_OVERFLOW_WRAP && kp <= QK__K_CHUNK;
}

/* Validate weight storage of a (rows, k) matrix against the datapath: packing (0, or
 * dp->w_bits in {1, 2, 4}), byte length, zero points (count 1 or rows, in the weight code
 * range, all 0 when the datapath has no weight zero point). */
qk_status qk__check_weights(const qk_datapath *dp, const qk_weights *w, size_t rows, size_t k);

/* Validate an activation zero point against the datapath's activation operand. */
qk_status qk__check_x_zero_point(const qk_datapath *dp, int32_t zero_point);

/* Validate a bias (NULL with length 0, or `channels` values that fit dp->bias_bits). */
qk_status qk__check_bias(const qk_datapath *dp, const int32_t *bias, size_t bias_len, size_t channels);

/* max |x - z| over n activation codes (int8 when is_signed, else uint8). */
int32_t qk__max_abs_diff(const void *x, size_t n, int32_t is_signed, int32_t z);

/* Fill A (mp x kp int16, rows >= m and columns >= k zero) with w - z_w from the weight
 * storage; kernel order position of canonical index k is perm[k] (NULL: identical; else tmp
 * holds k int16 for the decoding). Also fills row_wmax and row_wsum. `isa` is a resolved
 * QK_ISA_* (the same values whatever it is). */
void qk__load_weights(int32_t isa, const qk_datapath *dp, const qk_weights *w, size_t m, size_t k, size_t chan0,
                      const uint32_t *perm, int16_t *tmp, size_t mp, size_t kp, int16_t *a, int32_t *row_wmax,
                      int64_t *row_wsum);

/* Bytes of one packed row of cols `bits`-bit codes: ceil(cols * bits / 8) (section 3). */
static inline size_t qk__packed_row_bytes(size_t cols, int32_t bits)
{
    size_t per_byte = (size_t)(8 / bits);
    return cols / per_byte + (cols % per_byte != 0);
}

#endif /* QK_INTERNAL_H */
