/* qk__weights_cache: the weights' arena of a conv2d or linear call in its weights cache (qk_weights.cache),
 * and whether it already holds these weights under the call's key; the cache's layout and stamping.
 *
 * Layout of a cache: a 64-byte header; the key (the op's geometry, datapath and resolved ISA, as bytes
 * the op fills with every padding byte zero); a copy of the weight bytes and of the zero points; then
 * the weights' arena (decoded rows, their bounds, the prepared product forms), each part starting on a
 * multiple of 64 bytes. A call reuses the arena only where the header is valid and the key, the weight
 * bytes and the zero points all equal the stored copies, so a cache never gives another answer than a
 * call without one, whatever the caller changed in between (in place or not). */
#include <string.h>

#include "qk_internal.h"

#define QK__CACHE_MAGIC UINT64_C(0x716b5f7763616368) /* "qk_wcach" */

typedef struct qk__cache_header {
    uint64_t magic;
    uint64_t key_bytes;
    uint64_t w_length;
    uint64_t zp_length;
    int32_t packed_bits;
    int32_t valid;
} qk__cache_header;

static size_t qk__round64(size_t n)
{
    return qk__add_sat(n, QK__ALIGN - 1) / QK__ALIGN * QK__ALIGN;
}

size_t qk__weights_cache_prefix(const qk_weights *w, size_t key_bytes)
{
    size_t zp = qk__mul_sat(w->zero_point_length, sizeof(int32_t));
    return qk__add_sat(qk__add_sat(QK__ALIGN, qk__round64(key_bytes)), qk__add_sat(qk__round64(w->length), qk__round64(zp)));
}

static int qk__weights_cache_matches(const qk_weights *w, const void *key, size_t key_bytes)
{
    const unsigned char *c = (const unsigned char *)w->cache;
    qk__cache_header h;
    size_t at;
    memcpy(&h, c, sizeof(h));
    if (h.magic != QK__CACHE_MAGIC || h.valid != 1 || h.key_bytes != key_bytes || h.w_length != w->length ||
        h.zp_length != w->zero_point_length || h.packed_bits != w->packed_bits) {
        return 0;
    }
    at = QK__ALIGN;
    if (memcmp(c + at, key, key_bytes) != 0) {
        return 0;
    }
    at += qk__round64(key_bytes);
    if (memcmp(c + at, w->data, w->length) != 0) {
        return 0;
    }
    at += qk__round64(w->length);
    return memcmp(c + at, w->zero_point, w->zero_point_length * sizeof(int32_t)) == 0;
}

static void qk__weights_cache_invalidate(const qk_weights *w)
{
    qk__cache_header h;
    memset(&h, 0, sizeof(h));
    memcpy(w->cache, &h, sizeof(h));
}

void qk__weights_cache_stamp(const qk_weights *w, const void *key, size_t key_bytes)
{
    unsigned char *c = (unsigned char *)w->cache;
    qk__cache_header h;
    size_t at = QK__ALIGN;
    memcpy(c + at, key, key_bytes);
    at += qk__round64(key_bytes);
    memcpy(c + at, w->data, w->length);
    at += qk__round64(w->length);
    memcpy(c + at, w->zero_point, w->zero_point_length * sizeof(int32_t));
    memset(&h, 0, sizeof(h));
    h.magic = QK__CACHE_MAGIC;
    h.key_bytes = key_bytes;
    h.w_length = w->length;
    h.zp_length = w->zero_point_length;
    h.packed_bits = w->packed_bits;
    h.valid = 1;
    memcpy(c, &h, sizeof(h));
}

qk_status qk__weights_cache(const qk_weights *w, const void *key, size_t key_bytes, size_t arena_bytes, qk__arena *wa,
                            int *hit)
{
    size_t prefix = qk__weights_cache_prefix(w, key_bytes);
    if (w->cache_bytes < qk__add_sat(prefix, arena_bytes)) {
        return QK_ERR_CACHE;
    }
    wa->base = (unsigned char *)w->cache + prefix;
    wa->used = 0;
    *hit = qk__weights_cache_matches(w, key, key_bytes);
    if (!*hit) {
        qk__weights_cache_invalidate(w);
    }
    return QK_OK;
}
