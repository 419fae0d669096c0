/* qk__gemm_avx512: qk__gemm_i16's product with AVX-512 VNNI (intrinsics and two instructions under a
 * function attribute, chosen at run time: qk__select_isa). Same contract, same results bit for bit.
 *
 * An outer-product micro-kernel: B is packed per panel of 32 columns and block of k, A's rows per
 * block of k, and R rows x 32 columns of int32 sums stay in 2R zmm registers over the whole block
 * (no reduction across lanes). Two kernels:
 *
 *   u8 x s8 (vpdpbusd, 64 products per instruction): every row of A and of B holds differences of
 *     8-bit codes, so each spans at most 255 (max - min). With c_i = -128 - min_k a[i][k] and
 *     d_j = -min_k b[j][k], a'= a + c_i is int8 and b' = b + d_j is uint8, and over the kc terms
 *       sum a b = sum a' b' - d_j sum_k a[i][k] - c_i sum_k b[j][k] - kc c_i d_j.
 *     vpdpbusd adds four u8 x s8 products to an int32 lane with wrap-around; |sum a' b'| is at most
 *     kc 128 255 < 2^31 for kc <= QK__K_CHUNK, so it is exact, and the correction is done in int64.
 *     Columns given as bytes (qk__gemm_avx512_prepared_bytes) are b' themselves, the codes, with
 *     d_j = their zero point, and sum_k b[j][k] is taken from the packed bytes: no scan, no int16 copy.
 *   int16 (vpdpwssd, 32 products per instruction): pairs of int16, exact for the same reason as the
 *     portable build; used where a row spans more than 255 (not for code differences, but allowed by
 *     the contract).
 *
 * Vectors are written with intrinsics; the two accumulating instructions are written as inline
 * assembly, because GCC copies every accumulator of _mm512_dpwssd_epi32 / _mm512_dpbusd_epi32 to a
 * new register and back on each call in a loop. */
#include "qk_internal.h"

#if QK__HAVE_X86_AVX512_VNNI
#include <immintrin.h>
#include <string.h>

#define QK__Z_NR 32   /* columns per panel: two zmm of 16 int32 lanes */
#define QK__Z_MB 64   /* rows of A per chunk; QK__Z_KB (qk_internal.h): int32 groups of k per block */

static __mmask16 qk__lanes16(size_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}

static __mmask32 qk__lanes32(size_t n)
{
    return n >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << n) - 1u);
}

/* Transpose a 16 x 16 block of int32 in registers: lane c of r[j] becomes lane j of r[c] (unpacks
 * within 128-bit lanes, then two rounds of 128-bit lane shuffles). */
QK__TARGET_AVX512_VNNI static void qk__transpose16(__m512i r[16])
{
    __m512i t[16];
    int i, e;
    for (i = 0; i < 8; ++i) { /* rows 2i and 2i+1 interleaved: elements 0-1 and 2-3 of each lane */
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (i = 0; i < 4; ++i) { /* r[4i + e], lane L: rows 4i .. 4i+3 at element 4L + e */
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (e = 0; e < 4; ++e) { /* lanes 0, 2 (0x88) and 1, 3 (0xDD) of two row groups */
        t[e] = _mm512_shuffle_i32x4(r[e], r[4 + e], 0x88);
        t[e + 4] = _mm512_shuffle_i32x4(r[e], r[4 + e], 0xDD);
        t[e + 8] = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], 0x88);
        t[e + 12] = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], 0xDD);
    }
    for (e = 0; e < 4; ++e) { /* element c = 4L + e of every row */
        r[e] = _mm512_shuffle_i32x4(t[e], t[e + 8], 0x88);
        r[e + 8] = _mm512_shuffle_i32x4(t[e], t[e + 8], 0xDD);
        r[e + 4] = _mm512_shuffle_i32x4(t[e + 4], t[e + 12], 0x88);
        r[e + 12] = _mm512_shuffle_i32x4(t[e + 4], t[e + 12], 0xDD);
    }
}

/* 16 int32 groups of row p from group g0 (take <= 16 of them; the rest zero): pairs of int16 as they
 * are (bytes = 0), or quadruples of int16 + offset truncated to bytes (bytes = 1: the offset makes each
 * a uint8 or int8 value). */
QK__TARGET_AVX512_VNNI static __m512i qk__groups(const int16_t *p, size_t g0, size_t take, int bytes, int16_t offset)
{
    if (!bytes) {
        return _mm512_maskz_loadu_epi32(qk__lanes16(take), p + 2 * g0);
    } else {
        __m512i off = _mm512_set1_epi16(offset);
        size_t n = 4 * take; /* int16 values */
        __m512i lo = _mm512_add_epi16(_mm512_maskz_loadu_epi16(qk__lanes32(n), p + 4 * g0), off);
        __m512i hi = _mm512_add_epi16(_mm512_maskz_loadu_epi16(qk__lanes32(n > 32 ? n - 32 : 0), p + 4 * g0 + 32), off);
        __m512i v = _mm512_castsi256_si512(_mm512_cvtepi16_epi8(lo));
        v = _mm512_inserti64x4(v, _mm512_cvtepi16_epi8(hi), 1);
        return _mm512_maskz_mov_epi32(qk__lanes16(take), v);
    }
}

/* panel[q][jj] = group q0 + q of column j0 + jj of b (q < qn, jj < 32; zero for jj >= nc), offsets
 * d[jj] when bytes: sixteen columns by sixteen groups at a time, loaded, transposed, stored. */
QK__TARGET_AVX512_VNNI static void qk__pack_panel(const int16_t *b, size_t ldb, size_t j0, size_t nc, size_t q0,
                                                  size_t qn, int bytes, const int16_t *d, int32_t *panel)
{
    size_t h, q, jj;
    for (h = 0; h < QK__Z_NR; h += 16) {
        for (q = 0; q < qn; q += 16) {
            size_t take = qn - q < 16 ? qn - q : 16;
            __m512i r[16];
            for (jj = 0; jj < 16; ++jj) {
                r[jj] = h + jj < nc ? qk__groups(b + (j0 + h + jj) * ldb, q0 + q, take, bytes, bytes ? d[h + jj] : 0)
                                    : _mm512_setzero_si512();
            }
            qk__transpose16(r);
            for (jj = 0; jj < take; ++jj) {
                _mm512_store_si512((void *)(panel + (q + jj) * QK__Z_NR + h), r[jj]);
            }
        }
    }
}

/* The same panel from byte rows (qk__mm_bytes): the four bytes of each group as they are (XORed with
 * b->flip; bytes past b->k read as 0), so that every value is a uint8. colsum[jj] += the sum of the
 * packed bytes of column jj, which the correction needs (the column offset is b->zz). */
QK__TARGET_AVX512_VNNI static void qk__pack_panel_bytes(const qk__mm_bytes *b, size_t j0, size_t nc, size_t q0,
                                                        size_t qn, int32_t *panel, __m512i colsum[2])
{
    const __m512i flip = _mm512_set1_epi8((char)b->flip), ones = _mm512_set1_epi8(1);
    size_t h, q, jj;
    for (h = 0; h < QK__Z_NR; h += 16) {
        for (q = 0; q < qn; q += 16) {
            size_t take = qn - q < 16 ? qn - q : 16, at = 4 * (q0 + q);
            size_t valid = b->k > at ? b->k - at : 0;
            __mmask64 m = valid >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << valid) - 1);
            __m512i r[16];
            for (jj = 0; jj < 16; ++jj) {
                r[jj] = h + jj < nc ? _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, b->p + (j0 + h + jj) * b->ld + at), flip)
                                    : _mm512_setzero_si512();
            }
            qk__transpose16(r);
            for (jj = 0; jj < take; ++jj) {
                _mm512_store_si512((void *)(panel + (q + jj) * QK__Z_NR + h), r[jj]);
                colsum[h / 16] = _mm512_dpbusd_epi32(colsum[h / 16], r[jj], ones);
            }
        }
    }
}

/* ag[r][q] = group q0 + q of row r of a (r < rows, q < qn), offsets c[r] when bytes. */
QK__TARGET_AVX512_VNNI static void qk__pack_rows(const int16_t *a, size_t lda, size_t rows, size_t q0, size_t qn,
                                                 int bytes, const int16_t *c, int32_t *ag)
{
    size_t r, q;
    for (r = 0; r < rows; ++r) {
        for (q = 0; q < qn; q += 16) {
            size_t take = qn - q < 16 ? qn - q : 16;
            __m512i g = qk__groups(a + r * lda, q0 + q, take, bytes, bytes ? c[r] : 0);
            _mm512_storeu_si512((void *)(ag + r * QK__Z_KB + q), g);
        }
    }
}

/* acc += the products of the broadcast group x and the panel vector p: int16 pairs or u8 x s8 quadruples */
#define QK__DPWSSD(acc, p, x) __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(p), "v"(x))
#define QK__DPBUSD(acc, p, x) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(p), "v"(x))

/* Accumulators of row r (named, not an array: they stay in registers), their start (zero, or c's sums
 * past the first block), one group of k, and the masked store to c. */
#define QK__Z_DECL(r) __m512i s##r##a, s##r##b
#define QK__Z_INIT(r)                                                                                             \
    s##r##a = first ? _mm512_setzero_si512() : _mm512_maskz_loadu_epi32(m0, c + (r) * ldc);                       \
    s##r##b = first ? _mm512_setzero_si512() : _mm512_maskz_loadu_epi32(m1, c + (r) * ldc + 16)
#define QK__Z_STEP(r, OP)                                                                                         \
    do {                                                                                                          \
        __m512i x = _mm512_set1_epi32(ag[(r) * QK__Z_KB + q]);                                                    \
        OP(s##r##a, p0, x);                                                                                       \
        OP(s##r##b, p1, x);                                                                                       \
    } while (0)
#define QK__Z_STORE(r)                                                                                            \
    _mm512_mask_storeu_epi32(c + (r) * ldc, m0, s##r##a);                                                         \
    _mm512_mask_storeu_epi32(c + (r) * ldc + 16, m1, s##r##b)

/* c[r][0 .. 31] (lanes masked by m0, m1) = (first) or += the block's sums, for 8 rows or 2 */
#define QK__Z_KERNELS(NAME, OP)                                                                                   \
    QK__TARGET_AVX512_VNNI __attribute__((noinline)) static void NAME##8(size_t qn, const int32_t *panel,         \
                                                                         const int32_t *ag, int32_t *c, size_t ldc, \
                                                                         int first, __mmask16 m0, __mmask16 m1)   \
    {                                                                                                             \
        QK__Z_DECL(0); QK__Z_DECL(1); QK__Z_DECL(2); QK__Z_DECL(3);                                               \
        QK__Z_DECL(4); QK__Z_DECL(5); QK__Z_DECL(6); QK__Z_DECL(7);                                               \
        size_t q;                                                                                                 \
        QK__Z_INIT(0); QK__Z_INIT(1); QK__Z_INIT(2); QK__Z_INIT(3);                                               \
        QK__Z_INIT(4); QK__Z_INIT(5); QK__Z_INIT(6); QK__Z_INIT(7);                                               \
        for (q = 0; q < qn; ++q) {                                                                                \
            __m512i p0 = _mm512_load_si512((const void *)(panel + q * QK__Z_NR));                                 \
            __m512i p1 = _mm512_load_si512((const void *)(panel + q * QK__Z_NR + 16));                            \
            QK__Z_STEP(0, OP); QK__Z_STEP(1, OP); QK__Z_STEP(2, OP); QK__Z_STEP(3, OP);                           \
            QK__Z_STEP(4, OP); QK__Z_STEP(5, OP); QK__Z_STEP(6, OP); QK__Z_STEP(7, OP);                           \
        }                                                                                                         \
        QK__Z_STORE(0); QK__Z_STORE(1); QK__Z_STORE(2); QK__Z_STORE(3);                                           \
        QK__Z_STORE(4); QK__Z_STORE(5); QK__Z_STORE(6); QK__Z_STORE(7);                                           \
    }                                                                                                             \
    QK__TARGET_AVX512_VNNI __attribute__((noinline)) static void NAME##2(size_t qn, const int32_t *panel,         \
                                                                         const int32_t *ag, int32_t *c, size_t ldc, \
                                                                         int first, __mmask16 m0, __mmask16 m1)   \
    {                                                                                                             \
        QK__Z_DECL(0); QK__Z_DECL(1);                                                                             \
        size_t q;                                                                                                 \
        QK__Z_INIT(0); QK__Z_INIT(1);                                                                             \
        for (q = 0; q < qn; ++q) {                                                                                \
            __m512i p0 = _mm512_load_si512((const void *)(panel + q * QK__Z_NR));                                 \
            __m512i p1 = _mm512_load_si512((const void *)(panel + q * QK__Z_NR + 16));                            \
            QK__Z_STEP(0, OP); QK__Z_STEP(1, OP);                                                                 \
        }                                                                                                         \
        QK__Z_STORE(0); QK__Z_STORE(1);                                                                           \
    }

QK__Z_KERNELS(qk__rows_i16_, QK__DPWSSD)
QK__Z_KERNELS(qk__rows_u8s8_, QK__DPBUSD)

/* min, max and sum of each of `rows` rows of kc int16 (kc a multiple of 16) */
QK__TARGET_AVX512_VNNI static void qk__row_stats(const int16_t *p, size_t ld, size_t rows, size_t kc, int32_t *mn,
                                                 int32_t *mx, int64_t *sum)
{
    const __m512i ones = _mm512_set1_epi16(1);
    size_t r, k;
    for (r = 0; r < rows; ++r) {
        const int16_t *row = p + r * ld;
        __m512i vmin = _mm512_set1_epi16(INT16_MAX), vmax = _mm512_set1_epi16(INT16_MIN), vsum = _mm512_setzero_si512();
        for (k = 0; k < kc; k += 32) {
            __mmask32 m = qk__lanes32(kc - k);
            __m512i v = _mm512_maskz_loadu_epi16(m, row + k);
            vmin = _mm512_mask_min_epi16(vmin, m, vmin, v);
            vmax = _mm512_mask_max_epi16(vmax, m, vmax, v);
            vsum = _mm512_add_epi32(vsum, _mm512_madd_epi16(v, ones)); /* <= 2 * 2^15 * 2^15 / 32 per lane */
        }
        {
            int16_t lo[32], hi[32];
            int i;
            int32_t a = INT16_MAX, b = INT16_MIN;
            _mm512_storeu_si512((void *)lo, vmin);
            _mm512_storeu_si512((void *)hi, vmax);
            for (i = 0; i < 32; ++i) {
                a = lo[i] < a ? lo[i] : a;
                b = hi[i] > b ? hi[i] : b;
            }
            mn[r] = a;
            mx[r] = b;
            sum[r] = _mm512_reduce_add_epi32(vsum);
        }
    }
}

/* c = the m rows of a times every column of b (m <= QK__Z_MB unless prep is given). bytes: the u8 x s8 product with the rows'
 * offsets ca and sums asum (the columns' are found here; a panel with a column spanning more than 255 takes
 * the int16 product), its int8 groups from prep (row stride QK__Z_KB, block stride prep_block) when prep is
 * not NULL, else packed here per block; not bytes: the int16 product. bb (with bytes and prep): the
 * columns as byte rows instead of b, packed as they are with the column offset bb->zz. */
QK__TARGET_AVX512_VNNI static void qk__gemm_columns(size_t m, size_t n, size_t kc, const int16_t *a, size_t lda,
                                                    const int32_t *prep, size_t prep_block, int bytes,
                                                    const int16_t *ca, const int64_t *asum, const int16_t *b,
                                                    size_t ldb, const qk__mm_bytes *bb, int32_t *c, size_t ldc)
{
    int32_t panel[QK__Z_KB * QK__Z_NR] __attribute__((aligned(64)));
    int32_t ag[QK__Z_MB * QK__Z_KB] __attribute__((aligned(64)));
    int32_t bmin[QK__Z_NR], bmax[QK__Z_NR];
    int64_t bsum[QK__Z_NR];
    int16_t db[QK__Z_NR];
    size_t i, j0, q0, jj;
    for (j0 = 0; j0 < n; j0 += QK__Z_NR) {
        size_t nc = n - j0 < QK__Z_NR ? n - j0 : QK__Z_NR;
        __mmask16 m0 = qk__lanes16(nc), m1 = qk__lanes16(nc > 16 ? nc - 16 : 0);
        int u8 = bytes;
        size_t groups;
        __m512i colsum[2];
        colsum[0] = colsum[1] = _mm512_setzero_si512();
        if (bb != NULL) {
            for (jj = 0; jj < QK__Z_NR; ++jj) {
                db[jj] = (int16_t)bb->zz;
            }
        } else if (u8) {
            qk__row_stats(b + j0 * ldb, ldb, nc, kc, bmin, bmax, bsum);
            for (jj = 0; jj < nc && u8; ++jj) {
                u8 = bmax[jj] - bmin[jj] <= 255;
                db[jj] = (int16_t)(u8 ? -bmin[jj] : 0);
            }
        }
        groups = u8 ? kc / 4 : kc / 2;
        for (q0 = 0; q0 < groups; q0 += QK__Z_KB) {
            size_t qn = groups - q0 < QK__Z_KB ? groups - q0 : QK__Z_KB;
            int prepared = u8 && prep != NULL; /* every row at once; else QK__Z_MB rows packed here at a time */
            size_t r0, chunk = prepared ? m : QK__Z_MB;
            if (bb != NULL) {
                qk__pack_panel_bytes(bb, j0, nc, q0, qn, panel, colsum);
            } else {
                qk__pack_panel(b, ldb, j0, nc, q0, qn, u8, db, panel);
            }
            for (r0 = 0; r0 < m; r0 += chunk) {
                size_t rn = m - r0 < chunk ? m - r0 : chunk;
                const int32_t *blk = ag;
                int32_t *cr = c + r0 * ldc + j0;
                if (prepared) {
                    blk = prep + (q0 / QK__Z_KB) * prep_block + r0 * QK__Z_KB;
                } else {
                    qk__pack_rows(a + r0 * lda, lda, rn, q0, qn, u8, ca + r0, ag);
                }
                for (i = 0; i + 8 <= rn; i += 8) {
                    if (u8) {
                        qk__rows_u8s8_8(qn, panel, blk + i * QK__Z_KB, cr + i * ldc, ldc, q0 == 0, m0, m1);
                    } else {
                        qk__rows_i16_8(qn, panel, blk + i * QK__Z_KB, cr + i * ldc, ldc, q0 == 0, m0, m1);
                    }
                }
                for (; i < rn; i += 2) { /* m and QK__Z_MB are multiples of QK__MR = 2 */
                    if (u8) {
                        qk__rows_u8s8_2(qn, panel, blk + i * QK__Z_KB, cr + i * ldc, ldc, q0 == 0, m0, m1);
                    } else {
                        qk__rows_i16_2(qn, panel, blk + i * QK__Z_KB, cr + i * ldc, ldc, q0 == 0, m0, m1);
                    }
                }
            }
        }
        if (bb != NULL) { /* sum b = sum b' - kc d over what was multiplied (bytes past bb->k included) */
            int32_t cs[QK__Z_NR];
            _mm512_storeu_si512((void *)cs, colsum[0]);
            _mm512_storeu_si512((void *)(cs + 16), colsum[1]);
            for (jj = 0; jj < nc; ++jj) {
                bsum[jj] = (int64_t)cs[jj] - (int64_t)kc * bb->zz;
            }
        }
        if (u8) { /* sum a b = sum a' b' - d_j sum a - c_i sum b - kc c_i d_j */
            for (i = 0; i < m; ++i) {
                int32_t *row = c + i * ldc + j0;
                for (jj = 0; jj < nc; ++jj) {
                    int64_t v = (int64_t)row[jj] - (int64_t)db[jj] * asum[i] - (int64_t)ca[i] * bsum[jj] -
                                (int64_t)kc * ca[i] * db[jj];
                    row[jj] = (int32_t)v;
                }
            }
        }
    }
}

/* each row's offset to int8 and whether every row spans at most 255 */
QK__TARGET_AVX512_VNNI static int qk__row_offsets(const int16_t *a, size_t lda, size_t m, size_t kc, int16_t *ca,
                                                  int64_t *asum)
{
    int32_t amin[QK__Z_MB], amax[QK__Z_MB];
    size_t i;
    int fit = 1;
    qk__row_stats(a, lda, m, kc, amin, amax, asum);
    for (i = 0; i < m; ++i) {
        fit &= amax[i] - amin[i] <= 255;
        ca[i] = (int16_t)(-128 - amin[i]);
    }
    return fit;
}

QK__TARGET_AVX512_VNNI void qk__gemm_avx512(size_t m, size_t n, size_t kc, const int16_t *a, size_t lda,
                                            const int16_t *b, size_t ldb, int32_t *c, size_t ldc)
{
    int16_t ca[QK__Z_MB];
    int64_t asum[QK__Z_MB];
    size_t i0;
    for (i0 = 0; i0 < m; i0 += QK__Z_MB) {
        size_t rows = m - i0 < QK__Z_MB ? m - i0 : QK__Z_MB;
        const int16_t *ar = a + i0 * lda;
        int bytes = qk__row_offsets(ar, lda, rows, kc, ca, asum);
        qk__gemm_columns(rows, n, kc, ar, lda, NULL, 0, bytes, ca, asum, b, ldb, NULL, c + i0 * ldc, ldc);
    }
}

QK__TARGET_AVX512_VNNI int qk__gemm_avx512_prepare(const int16_t *a, size_t mp, size_t kp, int32_t *ag,
                                                   int16_t *offset, int64_t *sum)
{
    size_t i0, q0, groups = kp / 4, blocks = (groups + QK__Z_KB - 1) / QK__Z_KB;
    for (i0 = 0; i0 < mp; i0 += QK__Z_MB) {
        size_t rows = mp - i0 < QK__Z_MB ? mp - i0 : QK__Z_MB;
        if (!qk__row_offsets(a + i0 * kp, kp, rows, kp, offset + i0, sum + i0)) {
            return 0;
        }
    }
    for (q0 = 0; q0 < blocks * QK__Z_KB; q0 += QK__Z_KB) {
        size_t qn = groups - q0 < QK__Z_KB ? groups - q0 : QK__Z_KB;
        qk__pack_rows(a, kp, mp, q0, qn, 1, offset, ag + (q0 / QK__Z_KB) * mp * QK__Z_KB);
    }
    return 1;
}

QK__TARGET_AVX512_VNNI void qk__gemm_avx512_prepared(const int16_t *a, size_t i0, size_t m, size_t mp, size_t n,
                                                     size_t kp, const int32_t *ag, const int16_t *offset,
                                                     const int64_t *sum, const int16_t *b, size_t ldb, int32_t *c,
                                                     size_t ldc)
{
    qk__gemm_columns(m, n, kp, a + i0 * kp, kp, ag + i0 * QK__Z_KB, mp * QK__Z_KB, 1, offset + i0, sum + i0, b, ldb,
                     NULL, c, ldc);
}

QK__TARGET_AVX512_VNNI void qk__gemm_avx512_prepared_bytes(size_t i0, size_t m, size_t mp, size_t n, size_t kp,
                                                           const int32_t *ag, const int16_t *offset, const int64_t *sum,
                                                           const qk__mm_bytes *b, int32_t *c, size_t ldc)
{
    qk__gemm_columns(m, n, kp, NULL, kp, ag + i0 * QK__Z_KB, mp * QK__Z_KB, 1, offset + i0, sum + i0, NULL, 0, b, c,
                     ldc);
}
#else
/* Without a compiler that targets AVX-512 VNNI the function is never called (qk__gemm_i16 and
 * qk__select_isa know it); this keeps the translation unit non-empty. */
typedef int qk__gemm_avx512_unavailable;
#endif
