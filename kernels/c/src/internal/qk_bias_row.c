/* qk__bias_row: the accumulators of one channel from its exact product sums (section 4).
 *
 * acc[i] = wrap_A(bias + s[i]): the addition is done on uint32 (modulo 2^32, then the low A bits
 * sign-extended), which is the wrap mode's definition for A <= 32 and, with A = 32, the exact sum
 * wherever the caller has proven that bias + s[i] fits int32 (saturate/error datapaths whose bound
 * holds). Written for auto-vectorization; portable body, AVX2 and AVX-512 builds of it. */
#include "qk_arith.h"
#include "qk_internal.h"

QK__ALWAYS_INLINE void qk__bias_row_body(const int32_t *s, size_t n, int32_t bias, int32_t bits, int32_t *acc)
{
    uint32_t mask = bits >= 32 ? ~UINT32_C(0) : (UINT32_C(1) << bits) - 1u;
    uint32_t sign = UINT32_C(1) << (bits - 1), b = (uint32_t)bias;
    size_t i;
    for (i = 0; i < n; ++i) {
        acc[i] = qk__u32_to_i32((((b + (uint32_t)s[i]) & mask) ^ sign) - sign);
    }
}

static void qk__bias_row_portable(const int32_t *s, size_t n, int32_t bias, int32_t bits, int32_t *acc)
{
    qk__bias_row_body(s, n, bias, bits, acc);
}

#if QK__HAVE_X86_AVX2
QK__TARGET_AVX2 static void qk__bias_row_avx2(const int32_t *s, size_t n, int32_t bias, int32_t bits, int32_t *acc)
{
    qk__bias_row_body(s, n, bias, bits, acc);
}
#endif

#if QK__HAVE_X86_AVX512_VNNI
QK__TARGET_AVX512_VNNI static void qk__bias_row_avx512(const int32_t *s, size_t n, int32_t bias, int32_t bits,
                                                       int32_t *acc)
{
    qk__bias_row_body(s, n, bias, bits, acc);
}
#endif

void qk__bias_row(int32_t isa, const int32_t *s, size_t n, int32_t bias, int32_t bits, int32_t *acc)
{
#if QK__HAVE_X86_AVX512_VNNI
    if (isa == QK_ISA_X86_AVX512_VNNI) {
        qk__bias_row_avx512(s, n, bias, bits, acc);
        return;
    }
#endif
#if QK__HAVE_X86_AVX2
    if (QK__USES_AVX2(isa)) {
        qk__bias_row_avx2(s, n, bias, bits, acc);
        return;
    }
#endif
    (void)isa;
    qk__bias_row_portable(s, n, bias, bits, acc);
}
