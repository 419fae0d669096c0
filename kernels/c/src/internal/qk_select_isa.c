/* qk__select_isa: resolve the instruction-set request of a kernel call.
 *
 * The hot loops are written once in portable C; on x86 with GCC or Clang the same source is
 * also compiled for AVX2 (function attribute, no intrinsics) and chosen at run time when the
 * CPU has it. Both give identical results: only the vector width differs. */
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

qk_status qk__select_isa(int32_t isa, int32_t *selected)
{
    switch (isa) {
    case QK_ISA_AUTO:
        *selected = qk__avx2_available() ? QK_ISA_X86_AVX2 : QK_ISA_PORTABLE;
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
    default:
        return QK_ERR_ISA;
    }
}
