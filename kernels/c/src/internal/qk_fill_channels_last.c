/* qk__fill_channels_last: cg channel planes of one image as the channels-last interior of the padded byte
 * copy the convolution gathers from (section 4: the values x - z_x are these bytes minus the zero point).
 *
 * Signed codes are stored with the sign bit flipped (x + 128), so every byte is an unsigned code and
 * (x + 128) - (z + 128) = x - z. The portable loop takes channels in blocks of 16 so that every source
 * row is read in order and every 16 destination bytes are written together. The AVX2 build transposes
 * tiles of 16 channels x 16 columns of bytes in registers (qk_transpose16.h) and stores each column's
 * 16 channels at once; the edges run the portable loop. Both give the same bytes. */
#include "qk_internal.h"
#include "qk_transpose16.h"

QK__ALWAYS_INLINE void qk__fill_cl_scalar(const uint8_t *xb, unsigned flip, size_t hw, size_t w, size_t r, size_t c0,
                                          size_t cn, size_t col0, size_t col1, size_t cg, uint8_t *restrict dst,
                                          size_t wp)
{
    size_t col, c;
    for (col = col0; col < col1; ++col) {
        uint8_t *d = dst + (r * wp + col) * cg + c0;
        const uint8_t *s = xb + c0 * hw + r * w + col;
        for (c = 0; c < cn; ++c) {
            d[c] = (uint8_t)(s[c * hw] ^ flip);
        }
    }
}

static void qk__fill_channels_last_portable(const uint8_t *xb, unsigned flip, size_t cg, size_t h, size_t w,
                                            uint8_t *restrict dst, size_t wp)
{
    size_t r, c0;
    for (r = 0; r < h; ++r) {
        for (c0 = 0; c0 < cg; c0 += 16) {
            qk__fill_cl_scalar(xb, flip, h * w, w, r, c0, cg - c0 < 16 ? cg - c0 : 16, 0, w, cg, dst, wp);
        }
    }
}

#if QK__HAVE_X86_AVX2
QK__TARGET_AVX2 static void qk__fill_channels_last_avx2(const uint8_t *xb, unsigned flip, size_t cg, size_t h,
                                                        size_t w, uint8_t *restrict dst, size_t wp)
{
    size_t hw = h * w, r, c0, col, i;
    const __m128i vflip = _mm_set1_epi8((char)flip);
    for (r = 0; r < h; ++r) {
        for (c0 = 0; c0 + 16 <= cg; c0 += 16) {
            for (col = 0; col + 16 <= w; col += 16) {
                __m128i t[16];
                const uint8_t *s = xb + c0 * hw + r * w + col;
                for (i = 0; i < 16; ++i) {
                    t[i] = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(const void *)(s + i * hw)), vflip);
                }
                qk__transpose16_bytes(t);
                for (i = 0; i < 16; ++i) { /* t[i]: the 16 channels of column col + i */
                    _mm_storeu_si128((__m128i *)(void *)(dst + (r * wp + col + i) * cg + c0), t[i]);
                }
            }
            qk__fill_cl_scalar(xb, flip, hw, w, r, c0, 16, col, w, cg, dst, wp);
        }
        if (c0 < cg) {
            qk__fill_cl_scalar(xb, flip, hw, w, r, c0, cg - c0, 0, w, cg, dst, wp);
        }
    }
}
#endif

void qk__fill_channels_last(int32_t isa, const void *x, int32_t is_signed, size_t offset, size_t cg, size_t h,
                            size_t w, uint8_t *dst, size_t wp)
{
    unsigned flip = is_signed ? 0x80u : 0u;
    const uint8_t *xb = (const uint8_t *)x + offset;
#if QK__HAVE_X86_AVX2
    if (QK__USES_AVX2(isa)) {
        qk__fill_channels_last_avx2(xb, flip, cg, h, w, dst, wp);
        return;
    }
#endif
    (void)isa;
    qk__fill_channels_last_portable(xb, flip, cg, h, w, dst, wp);
}
