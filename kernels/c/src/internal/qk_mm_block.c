/* qk__mm_block: sums of a block of columns by the int16 GEMM, then accumulation per the
 * datapath (section 4) and requantization (section 5), for conv2d and linear.
 *
 * The columns arrive as bytes (codes, sign bit flipped for signed codes, and their zero point). The
 * AVX-512 product of a prepared A takes them as they are; the other products, and the bounds and
 * sequential sums below, read their int16 rows x - z_x, made from the bytes on first use.
 *
 * The GEMM gives the exact sum S = sum_k (x_k - z_x)(w_k - z_w) (int32 per K chunk, int64
 * across chunks). Then, with A = acc_bits and lim = 2^(A-1) - 1:
 *   wrap:           acc = wrap_A(bias + S): exact modular arithmetic, order irrelevant;
 *   saturate/error: when |bias| + (a bound on T = sum_k |x_k - z_x||w_k - z_w|) <= lim, no
 *                   partial sum of the canonical order can leave the range, so acc = bias + S.
 *                   The bounds, cheapest first: max|x - z_x| * sum_k |w_k - z_w| for the
 *                   whole row; per element, Cauchy-Schwarz, T^2 <= sum_k (w_k - z_w)^2 *
 *                   sum_k (x_k - z_x)^2 (one pass over the column, no product); then T itself,
 *                   exactly, by the same GEMM on |w - z_w| and |x - z_x|, only for row blocks
 *                   where Cauchy-Schwarz fails somewhere (for K beyond one int32-exact chunk:
 *                   max_k |w_k - z_w| * sum_k |x_k - z_x| per column). An element no bound
 *                   clears is recomputed sequentially in canonical order with a clamp after
 *                   every addition (error mode: a clamp that changes the value is
 *                   QK_ERR_OVERFLOW).
 * Linear's output (transposed: channels adjacent) is requantized row by row into a block of codes and
 * written through a byte transpose. */

#include <string.h>

#include "qk_arith.h"
#include "qk_internal.h"

#define QK__MB 256 /* rows of A per GEMM call, a multiple of QK__MR: a packed block of B serves all of them */

static void qk__reserve_prepared(qk__arena *ar, qk__mm_prepared *p, size_t mp, size_t kp, int wanted)
{
    p->groups = wanted ? (int32_t *)qk__arena_take(ar, qk__z_groups(mp, kp), sizeof(int32_t)) : NULL;
    p->offset = wanted ? (int16_t *)qk__arena_take(ar, mp, sizeof(int16_t)) : NULL;
    p->sum = wanted ? (int64_t *)qk__arena_take(ar, mp, sizeof(int64_t)) : NULL;
    p->ready = 0;
}

void qk__mm_reserve(qk__arena *ar, qk__mm *mm, size_t nb_max, int with_abs)
{
    size_t nbp = qk__round_up(nb_max, QK__NR);
    size_t rows = mm->mp < QK__MB ? mm->mp : QK__MB;
    mm->sums = (int32_t *)qk__arena_take(ar, rows * nbp, sizeof(int32_t));
    mm->sums64 = mm->kp > QK__K_CHUNK ? (int64_t *)qk__arena_take(ar, rows * nbp, sizeof(int64_t)) : NULL;
    mm->xsum = (int64_t *)qk__arena_take(ar, nbp, sizeof(int64_t));
    mm->xsq = with_abs ? (int64_t *)qk__arena_take(ar, nbp, sizeof(int64_t)) : NULL;
    mm->row_wsq = with_abs ? (int64_t *)qk__arena_take(ar, mm->mp, sizeof(int64_t)) : NULL;
    mm->accrow = (int32_t *)qk__arena_take(ar, nbp, sizeof(int32_t));
    mm->codes = (uint8_t *)qk__arena_take(ar, rows * nbp, 1);
    mm->b_abs = with_abs ? (int16_t *)qk__arena_take(ar, nbp * mm->kp, sizeof(int16_t)) : NULL;
    mm->tsum = with_abs ? (int32_t *)qk__arena_take(ar, rows * nbp, sizeof(int32_t)) : NULL;
    /* reserved whatever the CPU, so that the scratch size depends on the geometry only (a measuring arena
     * hands out NULL: the condition, not the pointer, decides) */
    qk__reserve_prepared(ar, &mm->abs_ap, mm->mp, mm->kp, mm->kp <= QK__K_CHUNK && with_abs);
}

void qk__mm_reserve_a(qk__arena *ar, size_t count, size_t mp, size_t kp, qk__mm_a_store *st)
{
    int wanted = kp <= QK__K_CHUNK;
    st->groups = wanted ? (int32_t *)qk__arena_take(ar, qk__mul_sat(count, qk__z_groups(mp, kp)), sizeof(int32_t)) : NULL;
    st->offset = wanted ? (int16_t *)qk__arena_take(ar, qk__mul_sat(count, mp), sizeof(int16_t)) : NULL;
    st->sum = wanted ? (int64_t *)qk__arena_take(ar, qk__mul_sat(count, mp), sizeof(int64_t)) : NULL;
    st->ready = (int32_t *)qk__arena_take(ar, count, sizeof(int32_t));
    st->mp = mp;
    st->kp = kp;
}

qk__mm_prepared qk__mm_a_of(const qk__mm_a_store *st, size_t index)
{
    qk__mm_prepared p;
    size_t zg = qk__z_groups(st->mp, st->kp);
    p.groups = st->groups ? st->groups + index * zg : NULL;
    p.offset = st->offset ? st->offset + index * st->mp : NULL;
    p.sum = st->sum ? st->sum + index * st->mp : NULL;
    p.ready = st->ready[index];
    return p;
}

static int qk__prepare(int32_t isa, const int16_t *a, size_t mp, size_t kp, int32_t *groups, int16_t *offset,
                       int64_t *sum)
{
#if QK__HAVE_X86_AVX512_VNNI
    if (isa == QK_ISA_X86_AVX512_VNNI && groups != NULL && a != NULL) {
        return qk__gemm_avx512_prepare(a, mp, kp, groups, offset, sum);
    }
#else
    (void)isa;
    (void)a;
    (void)mp;
    (void)kp;
    (void)groups;
    (void)offset;
    (void)sum;
#endif
    return 0;
}

void qk__mm_prepare_a(int32_t isa, const int16_t *a, const qk__mm_a_store *st, size_t index)
{
    qk__mm_prepared p = qk__mm_a_of(st, index);
    st->ready[index] = qk__prepare(isa, a, st->mp, st->kp, p.groups, p.offset, p.sum);
}

static void qk__prepare_one(const qk__mm *mm, const int16_t *a, qk__mm_prepared *p)
{
    p->ready = qk__prepare(mm->isa, a, mm->mp, mm->kp, p->groups, p->offset, p->sum);
}

void qk__mm_prepare(qk__mm *mm)
{
    int64_t lim = (INT64_C(1) << (mm->dp->acc_bits - 1)) - 1;
    int coarse_fails = 0;
    size_t i;
    for (i = 0; i < mm->m && mm->a_abs != NULL; ++i) { /* |A| is multiplied only where the coarse bound fails */
        int64_t bias = mm->bias ? mm->bias[i] : 0;
        coarse_fails |= (bias < 0 ? -bias : bias) + (int64_t)mm->xmax * mm->row_wsum[i] > lim;
    }
    mm->abs_ap.ready = 0;
    mm->abs_pending = coarse_fails; /* |A| is prepared on its first product (qk__mm_block) */
    if (coarse_fails) {
        qk__sum_squares(mm->isa, mm->a, mm->m, mm->kp, mm->row_wsq);
    }
}

/* The int16 rows of the nb columns of bb, zero padded to kp values and to nbp rows */
static void qk__widen(const qk__mm_bytes *bb, size_t nb, size_t nbp, size_t kp, int16_t *restrict b)
{
    size_t j, t;
    for (j = 0; j < nbp; ++j) {
        int16_t *row = b + j * kp;
        size_t len = j < nb ? bb->k : 0;
        const uint8_t *src = bb->p + j * bb->ld;
        for (t = 0; t < len; ++t) {
            row[t] = (int16_t)((int32_t)(src[t] ^ bb->flip) - bb->zz);
        }
        memset(row + len, 0, (kp - len) * sizeof(int16_t));
    }
}

static void qk__widen_once(const qk__mm_bytes *bb, size_t nb, size_t nbp, size_t kp, int16_t *b, int *ready)
{
    if (!*ready) {
        qk__widen(bb, nb, nbp, kp, b);
        *ready = 1;
    }
}

/* c = rows i0 .. i0 + rows of a (mp x kp) times b: the prepared product where p is ready, else qk__gemm_i16 */
static void qk__product(const qk__mm *mm, const qk__mm_prepared *p, const int16_t *a, size_t i0, size_t rows,
                        const int16_t *b, size_t nbp, int32_t *c)
{
#if QK__HAVE_X86_AVX512_VNNI
    if (p->ready) {
        qk__gemm_avx512_prepared(a, i0, rows, mm->mp, nbp, mm->kp, p->groups, p->offset, p->sum, b, mm->kp, c, nbp);
        return;
    }
#else
    (void)p;
#endif
    qk__gemm_i16(mm->isa, rows, nbp, mm->kp, a + i0 * mm->kp, mm->kp, b, mm->kp, c, nbp);
}

/* mm->sums = rows i0 .. i0 + rows of the prepared A times the nb columns of bb (set only where mm->ap.ready,
 * i.e. on AVX-512) */
static void qk__product_bytes(const qk__mm *mm, size_t i0, size_t rows, const qk__mm_bytes *bb, size_t nb, size_t nbp)
{
#if QK__HAVE_X86_AVX512_VNNI
    qk__gemm_avx512_prepared_bytes(i0, rows, mm->mp, nb, mm->kp, mm->ap.groups, mm->ap.offset, mm->ap.sum, bb,
                                   mm->sums, nbp);
#else
    (void)mm;
    (void)i0;
    (void)rows;
    (void)bb;
    (void)nb;
    (void)nbp;
#endif
}

static int64_t qk__clamp_acc(int64_t v, int64_t lim, int *changed)
{
    if (v > lim) {
        *changed = 1;
        return lim;
    }
    if (v < -lim - 1) {
        *changed = 1;
        return -lim - 1;
    }
    return v;
}

/* bias, then the products in canonical order, clamping after every addition */
static qk_status qk__sequential(const qk__mm *mm, const int16_t *arow, const int16_t *brow, int64_t bias, int64_t lim,
                                int32_t *out)
{
    int changed = 0;
    int64_t acc = qk__clamp_acc(bias, lim, &changed);
    size_t t;
    for (t = 0; t < mm->k; ++t) {
        size_t pos = mm->perm ? mm->perm[t] : t;
        acc = qk__clamp_acc(acc + (int32_t)arow[pos] * (int32_t)brow[pos], lim, &changed);
    }
    if (changed && mm->dp->overflow == QK_OVERFLOW_ERROR) {
        return QK_ERR_OVERFLOW;
    }
    *out = (int32_t)acc;
    return QK_OK;
}

qk_status qk__mm_block(qk__mm *mm, const qk__mm_bytes *bb, int16_t *b, size_t nb, void *y, size_t y_stride,
                       int transposed)
{
    const qk_datapath *dp = mm->dp;
    size_t nbp = qk__round_up(nb, QK__NR), kp = mm->kp;
    int64_t lim = (INT64_C(1) << (dp->acc_bits - 1)) - 1;
    int xsum_ready = 0, xsq_ready = 0, babs_ready = 0, b_ready = 0;
    int64_t xsq_max = 0, xsq_room = -1;
    size_t i0, i, j;
    for (i0 = 0; i0 < mm->mp; i0 += QK__MB) {
        size_t rows = mm->mp - i0 < QK__MB ? mm->mp - i0 : QK__MB;
        const int16_t *a = mm->a + i0 * kp;
        int tsum_ready = 0;
        if (kp <= QK__K_CHUNK && mm->ap.ready) { /* the prepared product takes the bytes as they are */
            qk__product_bytes(mm, i0, rows, bb, nb, nbp);
        } else if (kp <= QK__K_CHUNK) {
            qk__widen_once(bb, nb, nbp, kp, b, &b_ready);
            qk__product(mm, &mm->ap, mm->a, i0, rows, b, nbp, mm->sums);
        } else {
            size_t k0;
            qk__widen_once(bb, nb, nbp, kp, b, &b_ready);
            memset(mm->sums64, 0, rows * nbp * sizeof(int64_t));
            for (k0 = 0; k0 < kp; k0 += QK__K_CHUNK) {
                size_t kc = kp - k0 < QK__K_CHUNK ? kp - k0 : QK__K_CHUNK;
                qk__gemm_i16(mm->isa, rows, nbp, kc, a + k0, kp, b + k0, kp, mm->sums, nbp);
                for (j = 0; j < rows * nbp; ++j) {
                    mm->sums64[j] += mm->sums[j];
                }
            }
        }
        for (i = i0; i < i0 + rows && i < mm->m; ++i) {
            int64_t bias = mm->bias ? mm->bias[i] : 0;
            int64_t abs_bias = bias < 0 ? -bias : bias;
            const int32_t *s32 = mm->sums + (i - i0) * nbp;
            const int64_t *s64 = mm->sums64 ? mm->sums64 + (i - i0) * nbp : NULL;
            int32_t *acc = mm->accrow;
            if (dp->overflow == QK_OVERFLOW_WRAP && s64 == NULL) {
                qk__bias_row(mm->isa, s32, nb, (int32_t)bias, dp->acc_bits, acc);
            } else if (dp->overflow == QK_OVERFLOW_WRAP) {
                for (j = 0; j < nb; ++j) {
                    acc[j] = (int32_t)qk__wrap_bits(bias + s64[j], dp->acc_bits);
                }
            } else if (abs_bias + (int64_t)mm->xmax * mm->row_wsum[i] <= lim && s64 == NULL) {
                qk__bias_row(mm->isa, s32, nb, (int32_t)bias, 32, acc);
            } else if (abs_bias + (int64_t)mm->xmax * mm->row_wsum[i] <= lim) {
                for (j = 0; j < nb; ++j) {
                    acc[j] = (int32_t)(bias + s64[j]);
                }
            } else {
                const int16_t *arow = mm->a + i * kp;
                const int32_t *trow = mm->tsum ? mm->tsum + (i - i0) * nbp : NULL;
                int64_t rem = lim - abs_bias; /* the room T may take: |bias| + T <= lim */
                if (mm->a_abs != NULL && !xsq_ready) {
                    xsq_max = 0;
                    qk__sum_squares_bytes(mm->isa, bb, nb, mm->xsq);
                    for (j = 0; j < nb; ++j) {
                        xsq_max = mm->xsq[j] > xsq_max ? mm->xsq[j] : xsq_max;
                    }
                    xsq_ready = 1;
                } else if (mm->a_abs == NULL && !xsum_ready) {
                    qk__widen_once(bb, nb, nbp, kp, b, &b_ready);
                    for (j = 0; j < nb; ++j) {
                        const int16_t *brow = b + j * kp;
                        int64_t t = 0;
                        size_t kk;
                        for (kk = 0; kk < mm->k; ++kk) {
                            t += brow[kk] < 0 ? -brow[kk] : brow[kk];
                        }
                        mm->xsum[j] = t;
                    }
                    xsum_ready = 1;
                }
                /* Cauchy-Schwarz, T^2 <= wsq xsq <= rem^2, as xsq <= floor(rem^2 / wsq) (wsq, xsq < 2^31 and
                 * rem <= 2^31: no product overflows); the whole row at once where the largest xsq passes */
                if (mm->a_abs != NULL && rem >= 0) {
                    xsq_room = mm->row_wsq[i] == 0 ? INT64_MAX : rem * rem / mm->row_wsq[i];
                }
                if (mm->a_abs != NULL && rem >= 0 && xsq_max <= xsq_room && s64 == NULL) {
                    qk__bias_row(mm->isa, s32, nb, (int32_t)bias, 32, acc);
                    j = nb;
                } else {
                    j = 0;
                }
                for (; j < nb; ++j) {
                    int safe;
                    if (mm->a_abs != NULL) {
                        safe = rem >= 0 && mm->xsq[j] <= xsq_room;
                        if (!safe && !tsum_ready) { /* T = sum_k |a_k b_k| of this row block, exactly */
                            if (!babs_ready) {
                                size_t e;
                                qk__widen_once(bb, nb, nbp, kp, b, &b_ready);
                                for (e = 0; e < nbp * kp; ++e) {
                                    mm->b_abs[e] = (int16_t)(b[e] < 0 ? -b[e] : b[e]);
                                }
                                babs_ready = 1;
                            }
                            if (mm->abs_pending) { /* |A|, once per A */
                                size_t e;
                                for (e = 0; e < mm->mp * kp; ++e) {
                                    mm->a_abs[e] = (int16_t)(mm->a[e] < 0 ? -mm->a[e] : mm->a[e]);
                                }
                                qk__prepare_one(mm, mm->a_abs, &mm->abs_ap);
                                mm->abs_pending = 0;
                            }
                            qk__product(mm, &mm->abs_ap, mm->a_abs, i0, rows, mm->b_abs, nbp, mm->tsum);
                            tsum_ready = 1;
                        }
                        safe = safe || (int64_t)trow[j] <= rem;
                    } else {
                        safe = (int64_t)mm->row_wmax[i] * mm->xsum[j] <= rem;
                    }
                    if (safe) {
                        acc[j] = (int32_t)(bias + (s64 ? s64[j] : s32[j]));
                    } else {
                        qk_status st;
                        qk__widen_once(bb, nb, nbp, kp, b, &b_ready);
                        st = qk__sequential(mm, arow, b + j * kp, bias, lim, &acc[j]);
                        if (st != QK_OK) {
                            return st;
                        }
                    }
                }
            }
            if (transposed) { /* codes of row i contiguous, moved to their strided places below */
                qk__requant_row(mm->isa, acc, nb, mm->chan0 + i, dp, mm->rq, mm->codes + (i - i0) * nbp);
            } else {
                qk__requant_row(mm->isa, acc, nb, mm->chan0 + i, dp, mm->rq, (unsigned char *)y + i * y_stride);
            }
        }
        if (transposed && i0 < mm->m) {
            size_t valid = mm->m - i0 < rows ? mm->m - i0 : rows;
            qk__transpose_codes(mm->isa, mm->codes, valid, nb, nbp, (uint8_t *)y + i0, y_stride);
        }
    }
    return QK_OK;
}
