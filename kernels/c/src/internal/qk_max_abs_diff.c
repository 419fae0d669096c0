/* qk__max_abs_diff: max |x - z| over activation codes, the input side of the accumulation
 * bound of section 4 (|bias| + max|x - z_x| * sum|w - z_w| < 2^(A-1) proves no overflow). */
#include "qk_internal.h"

int32_t qk__max_abs_diff(const void *x, size_t n, int32_t is_signed, int32_t z)
{
    int32_t lo = 255, hi = -255, d1, d2;
    size_t i;
    if (n == 0) {
        return 0;
    }
    if (is_signed) {
        const int8_t *p = (const int8_t *)x;
        int8_t mn = p[0], mx = p[0];
        for (i = 1; i < n; ++i) {
            mn = p[i] < mn ? p[i] : mn;
            mx = p[i] > mx ? p[i] : mx;
        }
        lo = mn;
        hi = mx;
    } else {
        const uint8_t *p = (const uint8_t *)x;
        uint8_t mn = p[0], mx = p[0];
        for (i = 1; i < n; ++i) {
            mn = p[i] < mn ? p[i] : mn;
            mx = p[i] > mx ? p[i] : mx;
        }
        lo = mn;
        hi = mx;
    }
    d1 = hi - z;
    d2 = z - lo;
    d1 = d1 < 0 ? -d1 : d1;
    d2 = d2 < 0 ? -d2 : d2;
    return d1 > d2 ? d1 : d2;
}
