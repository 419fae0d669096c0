/* qk_isa_query: which instruction sets the kernels can use here. */
#include "../include/qk.h"
#include "internal/qk_internal.h"

qk_status qk_isa_query(int32_t isa, int32_t *available, int32_t *selected)
{
    int32_t sel;
    if (available == NULL || selected == NULL) {
        return QK_ERR_NULL;
    }
    if (isa < QK_ISA_AUTO || isa > QK_ISA_X86_AVX512_VNNI) {
        return QK_ERR_ISA;
    }
    *available = qk__select_isa(isa, &sel) == QK_OK;
    return qk__select_isa(QK_ISA_AUTO, selected);
}
