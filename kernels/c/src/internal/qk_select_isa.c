/* qk__select_isa: resolve the instruction-set request of a kernel call.
 *
 * The hot loops are written once in portable C; on x86 with GCC or Clang the same source is
 * also compiled for AVX2 (function attribute, no intrinsics) and chosen at run time when the
 * CPU has it. The int16 GEMM also has an AVX-512 VNNI kernel (intrinsics under a function
 * attribute, qk_gemm_avx512.c), chosen first where the CPU has AVX-512 F/BW/VL and VNNI; the other
 * loops run their AVX2 build under it. Every choice gives identical results. */
#include "qk_internal.h"

static int qk__avx2_available(void)
{
#if QK__HAVE_X86_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    return 0;
#endif
}

static int qk__avx512_vnni_available(void)
{
#if QK__HAVE_X86_AVX512_VNNI
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")
               ? 1
               : 0;
#else
    return 0;
#endif
}

qk_status qk__select_isa(int32_t isa, int32_t *selected)
{
    switch (isa) {
    case QK_ISA_AUTO:
        *selected = qk__avx512_vnni_available() ? QK_ISA_X86_AVX512_VNNI
                    : qk__avx2_available()      ? QK_ISA_X86_AVX2
                                                : QK_ISA_PORTABLE;
        return QK_OK;
    case QK_ISA_PORTABLE:
        *selected = QK_ISA_PORTABLE;
        return QK_OK;
    case QK_ISA_X86_AVX2:
        if (!qk__avx2_available()) {
            return QK_ERR_ISA;
        }
        *selected = QK_ISA_X86_AVX2;
        return QK_OK;
    case QK_ISA_X86_AVX512_VNNI:
        if (!qk__avx512_vnni_available()) {
            return QK_ERR_ISA;
        }
        *selected = QK_ISA_X86_AVX512_VNNI;
        return QK_OK;
    default:
        return QK_ERR_ISA;
    }
}
