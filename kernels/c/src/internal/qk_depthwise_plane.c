/* qk__depthwise_plane: the output plane of one channel of a convolution with one input channel per group.
 *
 * Portable body (also built for AVX2): per output row and tap (i, j), the row of the zero-padded int16
 * plane is multiplied by the int16 weight and added to the int32 row of sums, a widening multiply-add
 * along the row that compilers vectorize.
 *
 * AVX-512 (stride 1, and stride 2 with dilation 1 along the row): blocks of 32 outputs stay in
 * registers over every tap, vpmaddwd multiplies two taps per instruction, and the taps' offsets and
 * weight pairs are tabulated once per plane. The sums are exact in
 * int32 in any order (qk_internal.h), so all builds give the same accumulators. */
#include "qk_internal.h"

QK__ALWAYS_INLINE void qk__depthwise_row_body(const int16_t *plane, size_t wp, const int16_t *w, size_t kh,
                                              size_t kw, size_t sw, size_t dh, size_t dw, size_t ow, int32_t *acc)
{
    size_t i, j, col;
    for (col = 0; col < ow; ++col) {
        acc[col] = 0;
    }
    for (i = 0; i < kh; ++i) {
        for (j = 0; j < kw; ++j) {
            int16_t wv = w[i * kw + j];
            const int16_t *src = plane + i * dh * wp + j * dw;
            if (sw == 1) {
                for (col = 0; col < ow; ++col) {
                    acc[col] += (int32_t)wv * (int32_t)src[col];
                }
            } else {
                for (col = 0; col < ow; ++col) {
                    acc[col] += (int32_t)wv * (int32_t)src[col * sw];
                }
            }
        }
    }
}

QK__ALWAYS_INLINE void qk__depthwise_plane_body(const int16_t *plane, size_t wp, const int16_t *w, size_t kh,
                                                size_t kw, size_t sh, size_t sw, size_t dh, size_t dw, size_t oh,
                                                size_t ow, int32_t *acc)
{
    size_t r;
    for (r = 0; r < oh; ++r) {
        qk__depthwise_row_body(plane + r * sh * wp, wp, w, kh, kw, sw, dh, dw, ow, acc + r * ow);
    }
}

static void qk__depthwise_plane_portable(const int16_t *plane, size_t wp, const int16_t *w, size_t kh, size_t kw,
                                         size_t sh, size_t sw, size_t dh, size_t dw, size_t oh, size_t ow,
                                         int32_t *acc)
{
    qk__depthwise_plane_body(plane, wp, w, kh, kw, sh, sw, dh, dw, oh, ow, acc);
}

#if QK__HAVE_X86_AVX512_VNNI
#include <immintrin.h>

#define QK__DW_PAIRS 32 /* pairs of taps whose offsets and weights are tabulated at once */

static __mmask32 qk__dw_lanes32(size_t n)
{
    return n >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << n) - 1u);
}

static __mmask16 qk__dw_lanes16(size_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}

/* Two int16 weights as one int32 lane of vpmaddwd's second operand (a in the low half). */
static int32_t qk__dw_pair(int16_t a, int16_t b)
{
    return (int32_t)(((uint32_t)(uint16_t)b << 16) | (uint32_t)(uint16_t)a);
}

/* acc[c .. c + 16) = v (first chunk of taps) or acc + v (later chunks), n of the 16 lanes. */
QK__TARGET_AVX512_VNNI static inline void qk__dw_store(int32_t *acc, __m512i v, size_t n, int add)
{
    __mmask16 m = qk__dw_lanes16(n);
    if (add) {
        v = _mm512_add_epi32(v, _mm512_maskz_loadu_epi32(m, acc));
    }
    _mm512_mask_storeu_epi32(acc, m, v);
}

/* The offsets (from a row's first plane value) and weight pairs of the taps from *t on, at most
 * QK__DW_PAIRS pairs; *t moves past them. Returns the number of pairs.
 *   - stride 1 (`adjacent` 0): consecutive taps (t, t + 1) in (i, j) order; the last tap of an odd count
 *     is paired with itself and a zero weight;
 *   - stride 2 with dilation 1 along the row (`adjacent` 1): taps (j, j + 1) of one kernel row, which read
 *     adjacent plane values; the last tap of an odd kw is paired with the value after it and a zero weight. */
static size_t qk__dw_pairs(const int16_t *w, size_t kh, size_t kw, size_t wp, size_t dh, size_t dw, int adjacent,
                           size_t *t, size_t *offa, size_t *offb, int32_t *wpair)
{
    size_t taps = kh * kw, np = 0;
    while (np < QK__DW_PAIRS && *t < taps) {
        size_t ta = *t, tb = ta + 1, j = ta % kw;
        int16_t wb = 0;
        offa[np] = (ta / kw) * dh * wp + j * dw;
        offb[np] = offa[np];
        if (adjacent) {
            wb = j + 1 < kw ? w[tb] : 0;
            *t = j + 1 < kw ? ta + 2 : ta + 1;
        } else {
            if (tb < taps) {
                offb[np] = (tb / kw) * dh * wp + (tb % kw) * dw;
                wb = w[tb];
            }
            *t = ta + 2;
        }
        wpair[np++] = qk__dw_pair(w[ta], wb);
    }
    return np;
}

/* Stride 1, any dilation: the two rows of 32 int16 of a pair are interleaved (vpunpckl/hwd, within
 * 128-bit lanes) and vpmaddwd adds both products to one int32 lane; the lane order of the interleave
 * is undone once per 32 outputs, after the last pair. */
QK__TARGET_AVX512_VNNI static void qk__dw_rows_s1_avx512(const int16_t *plane, size_t wp, size_t sh, size_t oh,
                                                         size_t ow, const size_t *offa, const size_t *offb,
                                                         const int32_t *wpair, size_t np, int add, int32_t *acc)
{
    const __m512i idx0 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i idx1 = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    size_t r, c, p;
    for (r = 0; r < oh; ++r) {
        const int16_t *row = plane + r * sh * wp;
        int32_t *out = acc + r * ow;
        for (c = 0; c < ow; c += 32) {
            size_t n = ow - c;
            __mmask32 m = qk__dw_lanes32(n);
            __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
            for (p = 0; p < np; ++p) {
                __m512i a = _mm512_maskz_loadu_epi16(m, row + offa[p] + c);
                __m512i b = _mm512_maskz_loadu_epi16(m, row + offb[p] + c);
                __m512i pw = _mm512_set1_epi32(wpair[p]);
                lo = _mm512_add_epi32(lo, _mm512_madd_epi16(_mm512_unpacklo_epi16(a, b), pw));
                hi = _mm512_add_epi32(hi, _mm512_madd_epi16(_mm512_unpackhi_epi16(a, b), pw));
            }
            qk__dw_store(out + c, _mm512_permutex2var_epi32(lo, idx0, hi), n, add);
            if (n > 16) {
                qk__dw_store(out + c + 16, _mm512_permutex2var_epi32(lo, idx1, hi), n - 16, add);
            }
        }
    }
}

/* Stride 2, dilation 1 along the row: the taps (i, j) and (i, j + 1) of output col read the plane
 * values 2 col + j and 2 col + j + 1, one int32 lane of a plain load, so vpmaddwd needs no interleave.
 * The zero-weight partner of an odd kw reads one value past the row (or into QK__DW_SLACK). */
QK__TARGET_AVX512_VNNI static void qk__dw_rows_s2_avx512(const int16_t *plane, size_t wp, size_t sh, size_t oh,
                                                         size_t ow, const size_t *off, const int32_t *wpair,
                                                         size_t np, int add, int32_t *acc)
{
    size_t r, c, p;
    for (r = 0; r < oh; ++r) {
        const int16_t *row = plane + r * sh * wp;
        int32_t *out = acc + r * ow;
        for (c = 0; c < ow; c += 32) {
            size_t n = ow - c;
            __mmask16 m0 = qk__dw_lanes16(n), m1 = qk__dw_lanes16(n > 16 ? n - 16 : 0);
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            for (p = 0; p < np; ++p) {
                const int16_t *src = row + off[p] + 2 * c;
                __m512i pw = _mm512_set1_epi32(wpair[p]);
                s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(_mm512_maskz_loadu_epi32(m0, src), pw));
                s1 = _mm512_add_epi32(s1, _mm512_madd_epi16(_mm512_maskz_loadu_epi32(m1, src + 32), pw));
            }
            qk__dw_store(out + c, s0, n, add);
            if (n > 16) {
                qk__dw_store(out + c + 16, s1, n - 16, add);
            }
        }
    }
}

/* The whole plane, QK__DW_PAIRS pairs of taps at a time (later chunks add to acc). */
QK__TARGET_AVX512_VNNI static void qk__depthwise_plane_avx512(const int16_t *plane, size_t wp, const int16_t *w,
                                                              size_t kh, size_t kw, size_t sh, size_t sw, size_t dh,
                                                              size_t dw, size_t oh, size_t ow, int32_t *acc)
{
    size_t offa[QK__DW_PAIRS], offb[QK__DW_PAIRS], t = 0, np;
    int32_t wpair[QK__DW_PAIRS];
    int adjacent = sw == 2, add = 0;
    while (t < kh * kw) {
        np = qk__dw_pairs(w, kh, kw, wp, dh, dw, adjacent, &t, offa, offb, wpair);
        if (adjacent) {
            qk__dw_rows_s2_avx512(plane, wp, sh, oh, ow, offa, wpair, np, add, acc);
        } else {
            qk__dw_rows_s1_avx512(plane, wp, sh, oh, ow, offa, offb, wpair, np, add, acc);
        }
        add = 1;
    }
}
#endif

#if QK__HAVE_X86_AVX2
QK__TARGET_AVX2 static void qk__depthwise_plane_avx2(const int16_t *plane, size_t wp, const int16_t *w, size_t kh,
                                                     size_t kw, size_t sh, size_t sw, size_t dh, size_t dw,
                                                     size_t oh, size_t ow, int32_t *acc)
{
    qk__depthwise_plane_body(plane, wp, w, kh, kw, sh, sw, dh, dw, oh, ow, acc);
}
#endif

void qk__depthwise_plane(int32_t isa, const int16_t *plane, size_t wp, const int16_t *w, size_t kh, size_t kw,
                         size_t sh, size_t sw, size_t dh, size_t dw, size_t oh, size_t ow, int32_t *acc)
{
#if QK__HAVE_X86_AVX512_VNNI
    if (isa == QK_ISA_X86_AVX512_VNNI && (sw == 1 || (sw == 2 && dw == 1))) {
        qk__depthwise_plane_avx512(plane, wp, w, kh, kw, sh, sw, dh, dw, oh, ow, acc);
        return;
    }
#endif
#if QK__HAVE_X86_AVX2
    if (QK__USES_AVX2(isa)) {
        qk__depthwise_plane_avx2(plane, wp, w, kh, kw, sh, sw, dh, dw, oh, ow, acc);
        return;
    }
#endif
    (void)isa;
    qk__depthwise_plane_portable(plane, wp, w, kh, kw, sh, sw, dh, dw, oh, ow, acc);
}
