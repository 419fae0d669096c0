/*
 * CPython binding of the C99 integer kernel library: the only file that includes Python.h.
 *
 * It translates and nothing else: arguments become the library's structs, every array comes in
 * through the buffer protocol (C-contiguous, with its format checked against the element type
 * the kernel reads or writes and its length passed on for the library to check against the
 * shapes), the GIL is released while a kernel runs, and a qk_status becomes an exception
 * (OverflowError for an accumulator overflow in "error" mode, ValueError otherwise). There is no
 * arithmetic here. Multi-phase initialization; the module keeps no state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <string.h>

#include "qk.h"

/* ------------------------------------------------------------------ buffers */

#define QK_MAX_VIEWS 32

typedef struct {
    Py_buffer views[QK_MAX_VIEWS];
    int count;
} qk_views;

static void views_release(qk_views *vs)
{
    int i;
    for (i = 0; i < vs->count; ++i) {
        PyBuffer_Release(&vs->views[i]);
    }
    vs->count = 0;
}

/* The element-type name of a struct-module format (without byte-order prefix) for messages. */
static const char *format_name(const char *fmt)
{
    if (strcmp(fmt, "b") == 0) {
        return "int8";
    }
    if (strcmp(fmt, "B") == 0) {
        return "uint8";
    }
    if (strcmp(fmt, "i") == 0) {
        return "int32";
    }
    if (strcmp(fmt, "f") == 0) {
        return "float32";
    }
    return fmt;
}

/* Acquire `obj` as a C-contiguous buffer of format `fmt` ("b", "B", "i" or "f"); NULL with an
 * exception naming `name` otherwise. The data pointer and element count go to *data, *len. */
static int get_buffer(qk_views *vs, PyObject *obj, const char *op, const char *name, const char *fmt,
                      Py_ssize_t itemsize, int writable, void **data, size_t *len)
{
    Py_buffer *view;
    const char *f;
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (vs->count >= QK_MAX_VIEWS) {
        PyErr_Format(PyExc_RuntimeError, "%s: too many buffers", op);
        return -1;
    }
    view = &vs->views[vs->count];
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s: %s must be a C-contiguous%s buffer of %s, got %.100s", op, name,
                     writable ? " writable" : "", format_name(fmt), Py_TYPE(obj)->tp_name);
        return -1;
    }
    vs->count++;
    f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == '<') { /* native little-endian forms of the same type */
        ++f;
    }
    if (view->itemsize != itemsize || strcmp(f, fmt) != 0) {
        PyErr_Format(PyExc_TypeError, "%s: %s must hold %s elements, got format '%s' of %zd bytes", op, name,
                     format_name(fmt), view->format ? view->format : "B", view->itemsize);
        return -1;
    }
    *data = view->buf;
    *len = (size_t)(view->len / itemsize);
    return 0;
}

/* As get_buffer, but None gives NULL and length 0. */
static int get_optional_buffer(qk_views *vs, PyObject *obj, const char *op, const char *name, const char *fmt,
                               Py_ssize_t itemsize, void **data, size_t *len)
{
    if (obj == Py_None) {
        *data = NULL;
        *len = 0;
        return 0;
    }
    return get_buffer(vs, obj, op, name, fmt, itemsize, 0, data, len);
}

static const char *code_format(int is_signed)
{
    return is_signed ? "b" : "B";
}

/* ------------------------------------------------------------------ status */

/* The exception of a nonzero status: OverflowError for QK_ERR_OVERFLOW, ValueError otherwise, carrying
 * the value as the attribute `qk_status`, with which kernels.status names the argument behind it. */
static PyObject *raise_status(const char *op, qk_status st)
{
    PyObject *type = st == QK_ERR_OVERFLOW ? PyExc_OverflowError : PyExc_ValueError;
    PyObject *message = PyUnicode_FromFormat("%s: %s (qk_status %d)", op, qk_status_message(st), (int)st);
    PyObject *exc = message == NULL ? NULL : PyObject_CallOneArg(type, message);
    PyObject *code = exc == NULL ? NULL : PyLong_FromLong((long)st);
    if (code != NULL && PyObject_SetAttrString(exc, "qk_status", code) == 0) {
        PyErr_SetObject(type, exc);
    }
    Py_XDECREF(code);
    Py_XDECREF(exc);
    Py_XDECREF(message);
    return NULL;
}

static PyObject *finish(qk_views *vs, const char *op, qk_status st)
{
    views_release(vs);
    if (st != QK_OK) {
        return raise_status(op, st);
    }
    Py_RETURN_NONE;
}

/* The result of a size query: bytes as a Python int, or the status raised */
static PyObject *size_result(const char *op, qk_status st, size_t bytes)
{
    if (st != QK_OK) {
        return raise_status(op, st);
    }
    return PyLong_FromSize_t(bytes);
}

/* ------------------------------------------------------------------ struct parsing
 *
 * Every struct crossing the binding comes in as a dict keyed by the C field names. The tables
 * below pair each name with its offsetof; they are exported (abi()) so that a test proves them,
 * the Python encoders (kernels/_abi.py) and the declarations in qk.h / qk_types.h agree field by
 * field. Nothing here depends on the order of the fields. */

typedef struct {
    const char *name;
    size_t offset;
    char type; /* 'i': int32_t, 'f': float */
} qk_field;

typedef struct {
    const char *name;
    const qk_field *fields;
    size_t size;
} qk_struct_table;

#define QK_I32(s, f) {#f, offsetof(s, f), 'i'}
#define QK_F32(s, f) {#f, offsetof(s, f), 'f'}

static const qk_field DATAPATH_FIELDS[] = {
    QK_I32(qk_datapath, w_bits), QK_I32(qk_datapath, w_signed), QK_I32(qk_datapath, w_zero_point),
    QK_I32(qk_datapath, a_bits), QK_I32(qk_datapath, a_signed), QK_I32(qk_datapath, a_zero_point),
    QK_I32(qk_datapath, acc_bits), QK_I32(qk_datapath, overflow), QK_I32(qk_datapath, requant),
    QK_I32(qk_datapath, multiplier_bits), QK_I32(qk_datapath, fixed_point_rounding),
    QK_I32(qk_datapath, rounding), QK_I32(qk_datapath, zero_point_order), QK_I32(qk_datapath, bias_bits),
    {NULL, 0, 0}};

static const qk_field CONV_GEOMETRY_FIELDS[] = {
    QK_I32(qk_conv2d_geometry, n), QK_I32(qk_conv2d_geometry, c_in), QK_I32(qk_conv2d_geometry, h),
    QK_I32(qk_conv2d_geometry, w), QK_I32(qk_conv2d_geometry, c_out), QK_I32(qk_conv2d_geometry, kh),
    QK_I32(qk_conv2d_geometry, kw), QK_I32(qk_conv2d_geometry, stride_h), QK_I32(qk_conv2d_geometry, stride_w),
    QK_I32(qk_conv2d_geometry, pad_h), QK_I32(qk_conv2d_geometry, pad_w),
    QK_I32(qk_conv2d_geometry, dilation_h), QK_I32(qk_conv2d_geometry, dilation_w),
    QK_I32(qk_conv2d_geometry, groups), {NULL, 0, 0}};

static const qk_field POOL_GEOMETRY_FIELDS[] = {
    QK_I32(qk_pool2d_geometry, n), QK_I32(qk_pool2d_geometry, c), QK_I32(qk_pool2d_geometry, h),
    QK_I32(qk_pool2d_geometry, w), QK_I32(qk_pool2d_geometry, kh), QK_I32(qk_pool2d_geometry, kw),
    QK_I32(qk_pool2d_geometry, stride_h), QK_I32(qk_pool2d_geometry, stride_w),
    QK_I32(qk_pool2d_geometry, pad_h), QK_I32(qk_pool2d_geometry, pad_w),
    QK_I32(qk_pool2d_geometry, dilation_h), QK_I32(qk_pool2d_geometry, dilation_w), {NULL, 0, 0}};

/* The scalar fields of qk_requant_params (its arrays and `channels` come from the buffers). */
static const qk_field REQUANT_FIELDS[] = {
    QK_I32(qk_requant_params, y_zero_point), QK_I32(qk_requant_params, y_bits),
    QK_I32(qk_requant_params, y_signed), QK_I32(qk_requant_params, y_min), QK_I32(qk_requant_params, y_max),
    {NULL, 0, 0}};

static const qk_field ADD_FIELDS[] = {
    QK_I32(qk_add_params, a_zero_point), QK_I32(qk_add_params, b_zero_point),
    QK_I32(qk_add_params, a_multiplier), QK_I32(qk_add_params, a_shift),
    QK_I32(qk_add_params, b_multiplier), QK_I32(qk_add_params, b_shift),
    QK_I32(qk_add_params, out_multiplier), QK_I32(qk_add_params, out_shift),
    QK_F32(qk_add_params, a_fmultiplier), QK_F32(qk_add_params, b_fmultiplier),
    QK_I32(qk_add_params, y_zero_point), QK_I32(qk_add_params, y_bits), QK_I32(qk_add_params, y_signed),
    QK_I32(qk_add_params, y_min), QK_I32(qk_add_params, y_max), {NULL, 0, 0}};

static const qk_struct_table STRUCTS[] = {
    {"qk_datapath", DATAPATH_FIELDS, sizeof(qk_datapath)},
    {"qk_conv2d_geometry", CONV_GEOMETRY_FIELDS, sizeof(qk_conv2d_geometry)},
    {"qk_pool2d_geometry", POOL_GEOMETRY_FIELDS, sizeof(qk_pool2d_geometry)},
    {"qk_requant_params", REQUANT_FIELDS, sizeof(qk_requant_params)},
    {"qk_add_params", ADD_FIELDS, sizeof(qk_add_params)},
    {NULL, NULL, 0}};

static int require_dict(PyObject *d, const char *name)
{
    if (!PyDict_Check(d)) {
        PyErr_Format(PyExc_TypeError, "%s must be a dict of its fields, got %.100s", name, Py_TYPE(d)->tp_name);
        return -1;
    }
    return 0;
}

/* Fill the fields of `table` in `out` from dict `d`; `extra` counts keys of `d` handled by the
 * caller (arrays). A missing field, a key that is no field, or a value outside int32 / not a
 * number is an exception naming the struct and the field. */
static int parse_fields(PyObject *d, const char *name, const qk_field *table, Py_ssize_t extra, void *out)
{
    const qk_field *f;
    Py_ssize_t count = 0;
    if (require_dict(d, name)) {
        return -1;
    }
    for (f = table; f->name != NULL; ++f, ++count) {
        PyObject *v = PyDict_GetItemString(d, f->name); /* borrowed */
        char *dst = (char *)out + f->offset;
        if (v == NULL) {
            PyErr_Format(PyExc_TypeError, "%s: missing field '%s'", name, f->name);
            return -1;
        }
        if (f->type == 'f') {
            double x = PyFloat_AsDouble(v);
            float fx;
            if (x == -1.0 && PyErr_Occurred()) {
                return -1;
            }
            fx = (float)x;
            memcpy(dst, &fx, sizeof fx);
        } else {
            int overflow = 0;
            long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
            int32_t ix;
            if (x == -1 && PyErr_Occurred()) {
                return -1;
            }
            if (overflow || x < INT32_MIN || x > INT32_MAX) {
                PyErr_Format(PyExc_ValueError, "%s: field '%s' does not fit int32_t", name, f->name);
                return -1;
            }
            ix = (int32_t)x;
            memcpy(dst, &ix, sizeof ix);
        }
    }
    if (PyDict_Size(d) != count + extra) {
        PyErr_Format(PyExc_TypeError, "%s: the dict has %zd keys, the struct %zd fields (an unknown field?)", name,
                     PyDict_Size(d), count + extra);
        return -1;
    }
    return 0;
}

static int parse_datapath(PyObject *d, qk_datapath *dp)
{
    memset(dp, 0, sizeof *dp);
    return parse_fields(d, "qk_datapath", DATAPATH_FIELDS, 0, dp);
}

static int parse_conv_geometry(PyObject *d, qk_conv2d_geometry *g)
{
    memset(g, 0, sizeof *g);
    return parse_fields(d, "qk_conv2d_geometry", CONV_GEOMETRY_FIELDS, 0, g);
}

static int parse_pool_geometry(PyObject *d, qk_pool2d_geometry *g)
{
    memset(g, 0, sizeof *g);
    return parse_fields(d, "qk_pool2d_geometry", POOL_GEOMETRY_FIELDS, 0, g);
}

static int parse_add(PyObject *d, qk_add_params *p)
{
    memset(p, 0, sizeof *p);
    return parse_fields(d, "qk_add_params", ADD_FIELDS, 0, p);
}

static PyObject *dict_item(PyObject *d, const char *name, const char *key)
{
    PyObject *v = PyDict_GetItemString(d, key); /* borrowed */
    if (v == NULL) {
        PyErr_Format(PyExc_TypeError, "%s: missing field '%s'", name, key);
    }
    return v;
}

/* requant = {multiplier: int32 buffer | None, shift: int32 buffer | None, fmultiplier: float32
 * buffer | None, y_zero_point, y_bits, y_signed, y_min, y_max}; channels = the longest array */
static int parse_requant(qk_views *vs, PyObject *d, const char *op, qk_requant_params *rq)
{
    PyObject *m, *s, *f;
    void *pm, *ps, *pf;
    size_t lm, ls, lf;
    memset(rq, 0, sizeof *rq);
    if (require_dict(d, "qk_requant_params") || (m = dict_item(d, "qk_requant_params", "multiplier")) == NULL ||
        (s = dict_item(d, "qk_requant_params", "shift")) == NULL ||
        (f = dict_item(d, "qk_requant_params", "fmultiplier")) == NULL ||
        parse_fields(d, "qk_requant_params", REQUANT_FIELDS, 3, rq)) {
        return -1;
    }
    if (get_optional_buffer(vs, m, op, "multiplier", "i", 4, &pm, &lm) ||
        get_optional_buffer(vs, s, op, "shift", "i", 4, &ps, &ls) ||
        get_optional_buffer(vs, f, op, "fmultiplier", "f", 4, &pf, &lf)) {
        return -1;
    }
    if ((pm && ps && lm != ls) || (pm && pf && lm != lf) || (ps && pf && ls != lf)) {
        PyErr_Format(PyExc_ValueError, "%s: multiplier, shift and fmultiplier must have the same length", op);
        return -1;
    }
    rq->multiplier = (const int32_t *)pm;
    rq->shift = (const int32_t *)ps;
    rq->fmultiplier = (const float *)pf;
    rq->channels = pm ? lm : (ps ? ls : lf);
    if (rq->channels == 0) {
        PyErr_Format(PyExc_ValueError, "%s: requantization parameters are empty", op);
        return -1;
    }
    return 0;
}

/* weights = {data: int8/uint8 codes or uint8 packed rows, packed_bits, zero_point: int32 buffer
 *            [, cache: None or a writable byte buffer (conv2d and linear: qk_weights.cache)]} */
static int parse_weights(qk_views *vs, PyObject *d, const char *op, const qk_datapath *dp, qk_weights *w)
{
    PyObject *data, *bits, *zp, *cache = NULL;
    void *pd, *pz;
    size_t ld, lz;
    long packed_bits;
    if (require_dict(d, "weights") || (data = dict_item(d, "weights", "data")) == NULL ||
        (bits = dict_item(d, "weights", "packed_bits")) == NULL ||
        (zp = dict_item(d, "weights", "zero_point")) == NULL) {
        return -1;
    }
    cache = PyDict_GetItemString(d, "cache"); /* borrowed, NULL when absent */
    if (PyDict_Size(d) != (cache != NULL ? 4 : 3)) {
        PyErr_Format(PyExc_TypeError, "weights: expected the keys data, packed_bits, zero_point and optionally cache");
        return -1;
    }
    w->cache = NULL;
    w->cache_bytes = 0;
    if (cache != NULL && cache != Py_None &&
        get_buffer(vs, cache, op, "weights cache", "B", 1, 1, &w->cache, &w->cache_bytes)) {
        return -1;
    }
    packed_bits = PyLong_AsLong(bits);
    if (packed_bits == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (packed_bits < 0 || packed_bits > 8) {
        PyErr_Format(PyExc_ValueError, "%s: packed_bits=%ld must be in 0..8", op, packed_bits);
        return -1;
    }
    w->packed_bits = (int32_t)packed_bits;
    if (get_buffer(vs, data, op, "w", w->packed_bits ? "B" : code_format(dp->w_signed), 1, 0, &pd, &ld) ||
        get_buffer(vs, zp, op, "w_zero_point", "i", 4, 0, &pz, &lz)) {
        return -1;
    }
    w->data = pd;
    w->length = ld;
    w->zero_point = (const int32_t *)pz;
    w->zero_point_length = lz;
    return 0;
}

static const qk_struct_table *find_struct(const char *name)
{
    const qk_struct_table *t;
    for (t = STRUCTS; t->name != NULL; ++t) {
        if (strcmp(t->name, name) == 0) {
            return t;
        }
    }
    PyErr_Format(PyExc_KeyError, "no struct table named '%s'", name);
    return NULL;
}

/* abi() -> {struct name: (sizeof, ((field, offsetof, 'i' | 'f'), ...))} */
static PyObject *py_abi(PyObject *self, PyObject *noargs)
{
    const qk_struct_table *t;
    PyObject *out = PyDict_New();
    (void)self;
    (void)noargs;
    if (out == NULL) {
        return NULL;
    }
    for (t = STRUCTS; t->name != NULL; ++t) {
        const qk_field *f;
        PyObject *fields = PyList_New(0), *entry;
        if (fields == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        for (f = t->fields; f->name != NULL; ++f) {
            PyObject *item = Py_BuildValue("(snC)", f->name, (Py_ssize_t)f->offset, (int)f->type);
            if (item == NULL || PyList_Append(fields, item) != 0) {
                Py_XDECREF(item);
                Py_DECREF(fields);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(item);
        }
        entry = Py_BuildValue("(nN)", (Py_ssize_t)t->size, PyList_AsTuple(fields));
        Py_DECREF(fields);
        if (entry == NULL || PyDict_SetItemString(out, t->name, entry) != 0) {
            Py_XDECREF(entry);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(entry);
    }
    return out;
}

/* struct_bytes(name, fields) -> the bytes of the struct the binding fills from `fields` (its
 * scalar fields; pointers stay NULL): what a kernel would receive, for the ABI test. */
static PyObject *py_struct_bytes(PyObject *self, PyObject *args)
{
    const char *name;
    PyObject *d;
    const qk_struct_table *t;
    union {
        qk_datapath dp;
        qk_conv2d_geometry cg;
        qk_pool2d_geometry pg;
        qk_requant_params rq;
        qk_add_params ap;
    } buf;
    (void)self;
    if (!PyArg_ParseTuple(args, "sO", &name, &d) || (t = find_struct(name)) == NULL) {
        return NULL;
    }
    memset(&buf, 0, sizeof buf);
    if (parse_fields(d, t->name, t->fields, 0, &buf)) {
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)&buf, (Py_ssize_t)t->size);
}

/* ------------------------------------------------------------------ ops */

static PyObject *py_conv2d_output_size(PyObject *self, PyObject *args)
{
    PyObject *gt;
    qk_conv2d_geometry g;
    int32_t oh, ow;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "O", &gt) || parse_conv_geometry(gt, &g)) {
        return NULL;
    }
    st = qk_conv2d_output_size(&g, &oh, &ow);
    if (st != QK_OK) {
        return raise_status("conv2d", st);
    }
    return Py_BuildValue("(ii)", (int)oh, (int)ow);
}

static PyObject *py_conv2d_scratch_bytes(PyObject *self, PyObject *args)
{
    PyObject *gt, *dpt;
    qk_conv2d_geometry g;
    qk_datapath dp;
    size_t bytes = 0;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO", &gt, &dpt) || parse_conv_geometry(gt, &g) || parse_datapath(dpt, &dp)) {
        return NULL;
    }
    st = qk_conv2d_scratch_bytes(&g, &dp, &bytes);
    return size_result("conv2d", st, bytes);
}

static PyObject *py_conv2d_cache_bytes(PyObject *self, PyObject *args)
{
    PyObject *gt, *dpt, *wt;
    qk_conv2d_geometry g;
    qk_datapath dp;
    qk_weights w;
    qk_views vs = {{{0}}, 0};
    size_t bytes = 0;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOO", &gt, &dpt, &wt) || parse_conv_geometry(gt, &g) || parse_datapath(dpt, &dp) ||
        parse_weights(&vs, wt, "conv2d", &dp, &w)) {
        views_release(&vs);
        return NULL;
    }
    st = qk_conv2d_cache_bytes(&g, &dp, &w, &bytes);
    views_release(&vs);
    return size_result("conv2d", st, bytes);
}

static PyObject *py_conv2d(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"geometry", "datapath", "x", "x_zero_point", "weights", "bias", "requant", "y", "scratch",
                         "isa", NULL};
    const char *op = "conv2d";
    PyObject *gt, *dpt, *xo, *wt, *bo, *rqt, *yo, *so;
    int x_zero_point, isa;
    qk_conv2d_geometry g;
    qk_datapath dp;
    qk_weights w;
    qk_requant_params rq;
    qk_views vs = {{{0}}, 0};
    void *x, *bias, *y, *scratch;
    size_t x_len, bias_len, y_len, scratch_len;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOiOOOOOi", kw, &gt, &dpt, &xo, &x_zero_point, &wt, &bo, &rqt,
                                     &yo, &so, &isa)) {
        return NULL;
    }
    if (parse_conv_geometry(gt, &g) || parse_datapath(dpt, &dp) ||
        get_buffer(&vs, xo, op, "x", code_format(dp.a_signed), 1, 0, &x, &x_len) ||
        parse_weights(&vs, wt, op, &dp, &w) || get_optional_buffer(&vs, bo, op, "bias", "i", 4, &bias, &bias_len) ||
        parse_requant(&vs, rqt, op, &rq) ||
        get_buffer(&vs, yo, op, "y", code_format(rq.y_signed), 1, 1, &y, &y_len) ||
        get_buffer(&vs, so, op, "scratch", "B", 1, 1, &scratch, &scratch_len)) {
        views_release(&vs);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = qk_conv2d(&g, &dp, x, x_len, x_zero_point, &w, (const int32_t *)bias, bias_len, &rq, y, y_len, scratch,
                   scratch_len, isa);
    Py_END_ALLOW_THREADS
    return finish(&vs, op, st);
}

static PyObject *py_linear_scratch_bytes(PyObject *self, PyObject *args)
{
    int m, k, n;
    PyObject *dpt;
    qk_datapath dp;
    size_t bytes = 0;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "iiiO", &m, &k, &n, &dpt) || parse_datapath(dpt, &dp)) {
        return NULL;
    }
    st = qk_linear_scratch_bytes(m, k, n, &dp, &bytes);
    return size_result("linear", st, bytes);
}

static PyObject *py_linear_cache_bytes(PyObject *self, PyObject *args)
{
    int k, n;
    PyObject *dpt, *wt;
    qk_datapath dp;
    qk_weights w;
    qk_views vs = {{{0}}, 0};
    size_t bytes = 0;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "iiOO", &k, &n, &dpt, &wt) || parse_datapath(dpt, &dp) ||
        parse_weights(&vs, wt, "linear", &dp, &w)) {
        views_release(&vs);
        return NULL;
    }
    st = qk_linear_cache_bytes(k, n, &dp, &w, &bytes);
    views_release(&vs);
    return size_result("linear", st, bytes);
}

static PyObject *py_linear(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"m", "k", "n", "datapath", "x", "x_zero_point", "weights", "bias", "requant", "y",
                         "scratch", "isa", NULL};
    const char *op = "linear";
    PyObject *dpt, *xo, *wt, *bo, *rqt, *yo, *so;
    int m, k, n, x_zero_point, isa;
    qk_datapath dp;
    qk_weights w;
    qk_requant_params rq;
    qk_views vs = {{{0}}, 0};
    void *x, *bias, *y, *scratch;
    size_t x_len, bias_len, y_len, scratch_len;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iiiOOiOOOOOi", kw, &m, &k, &n, &dpt, &xo, &x_zero_point, &wt, &bo,
                                     &rqt, &yo, &so, &isa)) {
        return NULL;
    }
    if (parse_datapath(dpt, &dp) || get_buffer(&vs, xo, op, "x", code_format(dp.a_signed), 1, 0, &x, &x_len) ||
        parse_weights(&vs, wt, op, &dp, &w) || get_optional_buffer(&vs, bo, op, "bias", "i", 4, &bias, &bias_len) ||
        parse_requant(&vs, rqt, op, &rq) ||
        get_buffer(&vs, yo, op, "y", code_format(rq.y_signed), 1, 1, &y, &y_len) ||
        get_buffer(&vs, so, op, "scratch", "B", 1, 1, &scratch, &scratch_len)) {
        views_release(&vs);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = qk_linear(m, k, n, &dp, x, x_len, x_zero_point, &w, (const int32_t *)bias, bias_len, &rq, y, y_len, scratch,
                   scratch_len, isa);
    Py_END_ALLOW_THREADS
    return finish(&vs, op, st);
}

static PyObject *py_lstm_scratch_bytes(PyObject *self, PyObject *args)
{
    Py_ssize_t features, hidden;
    size_t bytes = 0;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "nn", &features, &hidden)) {
        return NULL;
    }
    if (features < 0 || hidden < 0) {
        PyErr_SetString(PyExc_ValueError, "lstm: features and hidden must be >= 0");
        return NULL;
    }
    st = qk_lstm_scratch_bytes((size_t)features, (size_t)hidden, &bytes);
    return size_result("lstm", st, bytes);
}

static PyObject *py_lstm(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"n", "steps", "features", "hidden", "datapath", "x", "x_zero_point", "h_zero_point",
                         "w_ih", "w_hh", "b_ih", "b_hh", "rq_ih", "rq_hh", "rq_out", "cell_shift", "reverse",
                         "sigmoid_table", "tanh_table", "y", "scratch", NULL};
    const char *op = "lstm";
    PyObject *dpt, *xo, *wio, *who, *bio, *bho, *rio, *rho, *roo, *sgo, *tho, *yo, *so;
    Py_ssize_t n, steps, features, hidden;
    int x_zero_point, h_zero_point, cell_shift, reverse;
    qk_datapath dp;
    qk_weights wi, wh;
    qk_requant_params ri, rh, ro;
    qk_views vs = {{{0}}, 0};
    void *x, *bi, *bh, *sg, *th, *y, *scratch;
    size_t x_len, bi_len, bh_len, sg_len, th_len, y_len, scratch_len;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "nnnnOOiiOOOOOOOipOOOO", kw, &n, &steps, &features, &hidden, &dpt,
                                     &xo, &x_zero_point, &h_zero_point, &wio, &who, &bio, &bho, &rio, &rho, &roo,
                                     &cell_shift, &reverse, &sgo, &tho, &yo, &so)) {
        return NULL;
    }
    if (n < 0 || steps < 0 || features < 0 || hidden < 0) {
        PyErr_Format(PyExc_ValueError, "%s: n, steps, features and hidden must be >= 0", op);
        return NULL;
    }
    if (parse_datapath(dpt, &dp) || get_buffer(&vs, xo, op, "x", code_format(dp.a_signed), 1, 0, &x, &x_len) ||
        parse_weights(&vs, wio, op, &dp, &wi) || parse_weights(&vs, who, op, &dp, &wh) ||
        get_optional_buffer(&vs, bio, op, "b_ih", "i", 4, &bi, &bi_len) ||
        get_optional_buffer(&vs, bho, op, "b_hh", "i", 4, &bh, &bh_len) || parse_requant(&vs, rio, op, &ri) ||
        parse_requant(&vs, rho, op, &rh) || parse_requant(&vs, roo, op, &ro) ||
        get_buffer(&vs, sgo, op, "sigmoid_table", "h", 2, 0, &sg, &sg_len) ||
        get_buffer(&vs, tho, op, "tanh_table", "h", 2, 0, &th, &th_len) ||
        get_buffer(&vs, yo, op, "y", code_format(dp.a_signed), 1, 1, &y, &y_len) ||
        get_buffer(&vs, so, op, "scratch", "B", 1, 1, &scratch, &scratch_len)) {
        views_release(&vs);
        return NULL;
    }
    if (sg_len != th_len) {
        views_release(&vs);
        return raise_status(op, QK_ERR_PARAM_LENGTH);
    }
    Py_BEGIN_ALLOW_THREADS
    st = qk_lstm((size_t)n, (size_t)steps, (size_t)features, (size_t)hidden, &dp, x, x_len, x_zero_point,
                 h_zero_point, &wi, &wh, (const int32_t *)bi, bi_len, (const int32_t *)bh, bh_len, &ri, &rh, &ro,
                 cell_shift, reverse, (const int16_t *)sg, (const int16_t *)th, sg_len, y, y_len, scratch,
                 scratch_len);
    Py_END_ALLOW_THREADS
    return finish(&vs, op, st);
}

static PyObject *py_gru_scratch_bytes(PyObject *self, PyObject *args)
{
    Py_ssize_t features, hidden;
    size_t bytes = 0;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "nn", &features, &hidden)) {
        return NULL;
    }
    if (features < 0 || hidden < 0) {
        PyErr_SetString(PyExc_ValueError, "gru: features and hidden must be >= 0");
        return NULL;
    }
    st = qk_gru_scratch_bytes((size_t)features, (size_t)hidden, &bytes);
    return size_result("gru", st, bytes);
}

static PyObject *py_gru(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"n", "steps", "features", "hidden", "datapath", "x", "x_zero_point", "h_zero_point",
                         "w_ih", "w_hh", "b_ih", "b_hh", "rq_ih", "rq_hh", "rq_hq", "rq_out", "reverse",
                         "sigmoid_table", "tanh_table", "y", "scratch", NULL};
    const char *op = "gru";
    PyObject *dpt, *xo, *wio, *who, *bio, *bho, *rio, *rho, *rqo, *roo, *sgo, *tho, *yo, *so;
    Py_ssize_t n, steps, features, hidden;
    int x_zero_point, h_zero_point, reverse;
    qk_datapath dp;
    qk_weights wi, wh;
    qk_requant_params ri, rh, rq, ro;
    qk_views vs = {{{0}}, 0};
    void *x, *bi, *bh, *sg, *th, *y, *scratch;
    size_t x_len, bi_len, bh_len, sg_len, th_len, y_len, scratch_len;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "nnnnOOiiOOOOOOOOpOOOO", kw, &n, &steps, &features, &hidden, &dpt,
                                     &xo, &x_zero_point, &h_zero_point, &wio, &who, &bio, &bho, &rio, &rho, &rqo,
                                     &roo, &reverse, &sgo, &tho, &yo, &so)) {
        return NULL;
    }
    if (n < 0 || steps < 0 || features < 0 || hidden < 0) {
        PyErr_Format(PyExc_ValueError, "%s: n, steps, features and hidden must be >= 0", op);
        return NULL;
    }
    if (parse_datapath(dpt, &dp) || get_buffer(&vs, xo, op, "x", code_format(dp.a_signed), 1, 0, &x, &x_len) ||
        parse_weights(&vs, wio, op, &dp, &wi) || parse_weights(&vs, who, op, &dp, &wh) ||
        get_optional_buffer(&vs, bio, op, "b_ih", "i", 4, &bi, &bi_len) ||
        get_optional_buffer(&vs, bho, op, "b_hh", "i", 4, &bh, &bh_len) || parse_requant(&vs, rio, op, &ri) ||
        parse_requant(&vs, rho, op, &rh) || parse_requant(&vs, rqo, op, &rq) || parse_requant(&vs, roo, op, &ro) ||
        get_buffer(&vs, sgo, op, "sigmoid_table", "h", 2, 0, &sg, &sg_len) ||
        get_buffer(&vs, tho, op, "tanh_table", "h", 2, 0, &th, &th_len) ||
        get_buffer(&vs, yo, op, "y", code_format(dp.a_signed), 1, 1, &y, &y_len) ||
        get_buffer(&vs, so, op, "scratch", "B", 1, 1, &scratch, &scratch_len)) {
        views_release(&vs);
        return NULL;
    }
    if (sg_len != th_len) {
        views_release(&vs);
        return raise_status(op, QK_ERR_PARAM_LENGTH);
    }
    Py_BEGIN_ALLOW_THREADS
    st = qk_gru((size_t)n, (size_t)steps, (size_t)features, (size_t)hidden, &dp, x, x_len, x_zero_point,
                h_zero_point, &wi, &wh, (const int32_t *)bi, bi_len, (const int32_t *)bh, bh_len, &ri, &rh, &rq, &ro,
                reverse, (const int16_t *)sg, (const int16_t *)th, sg_len, y, y_len, scratch, scratch_len);
    Py_END_ALLOW_THREADS
    return finish(&vs, op, st);
}

static PyObject *py_requantize(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"q", "outer", "channels", "inner", "in_zero_point", "datapath", "requant", "y", "isa", NULL};
    const char *op = "requantize";
    PyObject *qo, *dpt, *rqt, *yo;
    Py_ssize_t outer, channels, inner;
    int in_zero_point, isa;
    qk_datapath dp;
    qk_requant_params rq;
    qk_views vs = {{{0}}, 0};
    void *q, *y;
    size_t q_len, y_len;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OnnniOOOi", kw, &qo, &outer, &channels, &inner, &in_zero_point,
                                     &dpt, &rqt, &yo, &isa)) {
        return NULL;
    }
    if (outer < 0 || channels < 0 || inner < 0) {
        PyErr_Format(PyExc_ValueError, "%s: outer, channels and inner must be >= 0", op);
        return NULL;
    }
    if (parse_datapath(dpt, &dp) || get_buffer(&vs, qo, op, "q", "i", 4, 0, &q, &q_len) ||
        parse_requant(&vs, rqt, op, &rq) ||
        get_buffer(&vs, yo, op, "y", code_format(rq.y_signed), 1, 1, &y, &y_len)) {
        views_release(&vs);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = qk_requantize((const int32_t *)q, q_len, (size_t)outer, (size_t)channels, (size_t)inner, in_zero_point, &dp,
                       &rq, y, y_len, isa);
    Py_END_ALLOW_THREADS
    return finish(&vs, op, st);
}

static PyObject *py_add(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"a", "b", "params", "datapath", "y", NULL};
    const char *op = "add";
    PyObject *ao, *bo, *pt, *dpt, *yo;
    qk_add_params p;
    qk_datapath dp;
    qk_views vs = {{{0}}, 0};
    void *a, *b, *y;
    size_t a_len, b_len, y_len;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO", kw, &ao, &bo, &pt, &dpt, &yo)) {
        return NULL;
    }
    if (parse_add(pt, &p)) {
        return NULL;
    }
    if (parse_datapath(dpt, &dp) || get_buffer(&vs, ao, op, "a", code_format(dp.a_signed), 1, 0, &a, &a_len) ||
        get_buffer(&vs, bo, op, "b", code_format(dp.a_signed), 1, 0, &b, &b_len) ||
        get_buffer(&vs, yo, op, "y", code_format(p.y_signed), 1, 1, &y, &y_len)) {
        views_release(&vs);
        return NULL;
    }
    if (a_len != b_len) {
        views_release(&vs);
        PyErr_Format(PyExc_ValueError, "%s: a and b must have the same number of elements", op);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = qk_add(a, b, a_len, &p, &dp, y, y_len);
    Py_END_ALLOW_THREADS
    return finish(&vs, op, st);
}

static PyObject *py_mul(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"a", "b", "rows", "inner", "a_zero_point", "b_zero_point", "datapath", "requant", "y",
                         "isa", NULL};
    const char *op = "mul";
    PyObject *ao, *bo, *dpt, *rqt, *yo;
    Py_ssize_t rows, inner;
    int a_zero_point, b_zero_point, isa;
    qk_datapath dp;
    qk_requant_params rq;
    qk_views vs = {{{0}}, 0};
    void *a, *b, *y;
    size_t a_len, b_len, y_len;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOnniiOOOi", kw, &ao, &bo, &rows, &inner, &a_zero_point,
                                     &b_zero_point, &dpt, &rqt, &yo, &isa)) {
        return NULL;
    }
    if (rows < 0 || inner < 0) {
        PyErr_Format(PyExc_ValueError, "%s: rows and inner must be >= 0", op);
        return NULL;
    }
    if (parse_datapath(dpt, &dp) || get_buffer(&vs, ao, op, "a", code_format(dp.a_signed), 1, 0, &a, &a_len) ||
        get_buffer(&vs, bo, op, "b", code_format(dp.a_signed), 1, 0, &b, &b_len) ||
        parse_requant(&vs, rqt, op, &rq) ||
        get_buffer(&vs, yo, op, "y", code_format(rq.y_signed), 1, 1, &y, &y_len)) {
        views_release(&vs);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = qk_mul(a, a_len, b, b_len, (size_t)rows, (size_t)inner, a_zero_point, b_zero_point, &dp, &rq, y, y_len, isa);
    Py_END_ALLOW_THREADS
    return finish(&vs, op, st);
}

static PyObject *py_softmax(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"x", "outer", "length", "inner", "x_bits", "x_signed", "table", "y_bits", "y_signed",
                         "datapath", "y", NULL};
    const char *op = "softmax";
    PyObject *xo, *to, *dpt, *yo;
    Py_ssize_t outer, length, inner;
    int x_bits, x_signed, y_bits, y_signed;
    qk_datapath dp;
    qk_views vs = {{{0}}, 0};
    void *x, *t, *y;
    size_t x_len, t_len, y_len;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OnnnipOipOO", kw, &xo, &outer, &length, &inner, &x_bits,
                                     &x_signed, &to, &y_bits, &y_signed, &dpt, &yo)) {
        return NULL;
    }
    if (outer < 0 || length < 0 || inner < 0) {
        PyErr_Format(PyExc_ValueError, "%s: outer, length and inner must be >= 0", op);
        return NULL;
    }
    if (parse_datapath(dpt, &dp) || get_buffer(&vs, xo, op, "x", code_format(x_signed), 1, 0, &x, &x_len) ||
        get_buffer(&vs, to, op, "table", "i", 4, 0, &t, &t_len) ||
        get_buffer(&vs, yo, op, "y", code_format(y_signed), 1, 1, &y, &y_len)) {
        views_release(&vs);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = qk_softmax(x, x_len, (size_t)outer, (size_t)length, (size_t)inner, x_bits, x_signed, (const int32_t *)t,
                    t_len, y_bits, y_signed, &dp, y, y_len);
    Py_END_ALLOW_THREADS
    return finish(&vs, op, st);
}

static PyObject *py_layernorm(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"x", "rows", "length", "x_bits", "x_signed", "eps_term", "gamma", "gamma_zero_point",
                         "bias", "datapath", "requant", "y", "isa", NULL};
    const char *op = "layernorm";
    PyObject *xo, *go, *bo, *dpt, *rqt, *yo;
    Py_ssize_t rows, length;
    long long eps_term;
    int x_bits, x_signed, gamma_zero_point, isa;
    qk_datapath dp;
    qk_requant_params rq;
    qk_views vs = {{{0}}, 0};
    void *x, *g, *b, *y;
    size_t x_len, g_len, b_len, y_len;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OnnipLOiOOOOi", kw, &xo, &rows, &length, &x_bits, &x_signed,
                                     &eps_term, &go, &gamma_zero_point, &bo, &dpt, &rqt, &yo, &isa)) {
        return NULL;
    }
    if (rows < 0 || length < 0) {
        PyErr_Format(PyExc_ValueError, "%s: rows and length must be >= 0", op);
        return NULL;
    }
    if (parse_datapath(dpt, &dp) || get_buffer(&vs, xo, op, "x", code_format(x_signed), 1, 0, &x, &x_len) ||
        get_optional_buffer(&vs, go, op, "gamma", "b", 1, &g, &g_len) ||
        get_optional_buffer(&vs, bo, op, "bias", "i", 4, &b, &b_len) || parse_requant(&vs, rqt, op, &rq) ||
        get_buffer(&vs, yo, op, "y", code_format(rq.y_signed), 1, 1, &y, &y_len)) {
        views_release(&vs);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = qk_layernorm(x, x_len, (size_t)rows, (size_t)length, x_bits, x_signed, (int64_t)eps_term, (const int8_t *)g,
                      g_len, gamma_zero_point, (const int32_t *)b, b_len, &dp, &rq, y, y_len, isa);
    Py_END_ALLOW_THREADS
    return finish(&vs, op, st);
}

static PyObject *py_avg_pool2d(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"geometry", "datapath", "x", "x_signed", "zero_point", "y", NULL};
    const char *op = "avg_pool2d";
    PyObject *gt, *dpt, *xo, *yo;
    int x_signed, zero_point;
    qk_pool2d_geometry g;
    qk_datapath dp;
    qk_views vs = {{{0}}, 0};
    void *x, *y;
    size_t x_len, y_len;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOpiO", kw, &gt, &dpt, &xo, &x_signed, &zero_point, &yo)) {
        return NULL;
    }
    if (parse_pool_geometry(gt, &g) || parse_datapath(dpt, &dp) ||
        get_buffer(&vs, xo, op, "x", code_format(x_signed), 1, 0, &x, &x_len) ||
        get_buffer(&vs, yo, op, "y", code_format(x_signed), 1, 1, &y, &y_len)) {
        views_release(&vs);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = qk_avg_pool2d(&g, &dp, x, x_len, x_signed, zero_point, y, y_len);
    Py_END_ALLOW_THREADS
    return finish(&vs, op, st);
}

static PyObject *py_max_pool2d(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"geometry", "x", "x_signed", "y", NULL};
    const char *op = "max_pool2d";
    PyObject *gt, *xo, *yo;
    int x_signed;
    qk_pool2d_geometry g;
    qk_views vs = {{{0}}, 0};
    void *x, *y;
    size_t x_len, y_len;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOpO", kw, &gt, &xo, &x_signed, &yo)) {
        return NULL;
    }
    if (parse_pool_geometry(gt, &g) || get_buffer(&vs, xo, op, "x", code_format(x_signed), 1, 0, &x, &x_len) ||
        get_buffer(&vs, yo, op, "y", code_format(x_signed), 1, 1, &y, &y_len)) {
        views_release(&vs);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = qk_max_pool2d(&g, x, x_len, x_signed, y, y_len);
    Py_END_ALLOW_THREADS
    return finish(&vs, op, st);
}

static PyObject *py_lut(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"x", "channels", "inner", "x_bits", "x_signed", "table", "table_signed", "y", NULL};
    const char *op = "lut";
    PyObject *xo, *to, *yo;
    Py_ssize_t channels, inner;
    int x_bits, x_signed, table_signed;
    qk_views vs = {{{0}}, 0};
    void *x, *t, *y;
    size_t x_len, t_len, y_len;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OnnipOpO", kw, &xo, &channels, &inner, &x_bits, &x_signed, &to,
                                     &table_signed, &yo)) {
        return NULL;
    }
    if (channels < 1 || inner < 1) {
        PyErr_Format(PyExc_ValueError, "%s: channels and inner must be >= 1", op);
        return NULL;
    }
    if (get_buffer(&vs, xo, op, "x", code_format(x_signed), 1, 0, &x, &x_len) ||
        get_buffer(&vs, to, op, "table", code_format(table_signed), 1, 0, &t, &t_len) ||
        get_buffer(&vs, yo, op, "y", code_format(table_signed), 1, 1, &y, &y_len)) {
        views_release(&vs);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = qk_lut(x, x_len, (size_t)channels, (size_t)inner, x_bits, x_signed, t, t_len, table_signed, y, y_len);
    Py_END_ALLOW_THREADS
    return finish(&vs, op, st);
}

static PyObject *py_pack(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"codes", "codes_signed", "rows", "cols", "bits", "range", "packed", NULL};
    const char *op = "pack";
    PyObject *co, *po;
    int codes_signed, bits, range;
    Py_ssize_t rows, cols;
    qk_views vs = {{{0}}, 0};
    void *c, *p;
    size_t c_len, p_len;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OpnniiO", kw, &co, &codes_signed, &rows, &cols, &bits, &range,
                                     &po)) {
        return NULL;
    }
    if (rows < 0 || cols < 0) {
        PyErr_Format(PyExc_ValueError, "%s: rows and cols must be >= 0", op);
        return NULL;
    }
    if (get_buffer(&vs, co, op, "codes", code_format(codes_signed), 1, 0, &c, &c_len) ||
        get_buffer(&vs, po, op, "packed", "B", 1, 1, &p, &p_len)) {
        views_release(&vs);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = qk_pack(c, codes_signed, c_len, (size_t)rows, (size_t)cols, bits, range, (uint8_t *)p, p_len);
    Py_END_ALLOW_THREADS
    return finish(&vs, op, st);
}

static PyObject *py_unpack(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"packed", "rows", "cols", "bits", "signed", "codes", NULL};
    const char *op = "unpack";
    PyObject *po, *co;
    int bits, is_signed;
    Py_ssize_t rows, cols;
    qk_views vs = {{{0}}, 0};
    void *p, *c;
    size_t p_len, c_len;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OnnipO", kw, &po, &rows, &cols, &bits, &is_signed, &co)) {
        return NULL;
    }
    if (rows < 0 || cols < 0) {
        PyErr_Format(PyExc_ValueError, "%s: rows and cols must be >= 0", op);
        return NULL;
    }
    if (get_buffer(&vs, po, op, "packed", "B", 1, 0, &p, &p_len) ||
        get_buffer(&vs, co, op, "codes", (bits == 8 && !is_signed) ? "B" : "b", 1, 1, &c, &c_len)) {
        views_release(&vs);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = qk_unpack((const uint8_t *)p, p_len, (size_t)rows, (size_t)cols, bits, is_signed, c, c_len);
    Py_END_ALLOW_THREADS
    return finish(&vs, op, st);
}

static PyObject *py_rounding_right_shift(PyObject *self, PyObject *args)
{
    long long v;
    int k, mode;
    int64_t out;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "Lii", &v, &k, &mode)) {
        return NULL;
    }
    st = qk_rounding_right_shift((int64_t)v, k, mode, &out);
    if (st != QK_OK) {
        return raise_status("rounding_right_shift", st);
    }
    return PyLong_FromLongLong((long long)out);
}

static PyObject *py_srdhm(PyObject *self, PyObject *args)
{
    int a, b, n;
    int32_t out;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "iii", &a, &b, &n)) {
        return NULL;
    }
    st = qk_saturating_rounding_doubling_high_mul(a, b, n, &out);
    if (st != QK_OK) {
        return raise_status("saturating_rounding_doubling_high_mul", st);
    }
    return PyLong_FromLong((long)out);
}

static PyObject *py_isa_query(PyObject *self, PyObject *args)
{
    int isa;
    int32_t available, selected;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &isa)) {
        return NULL;
    }
    st = qk_isa_query(isa, &available, &selected);
    if (st != QK_OK) {
        return raise_status("isa_query", st);
    }
    return Py_BuildValue("(Oi)", available ? Py_True : Py_False, (int)selected);
}

static PyObject *py_status_message(PyObject *self, PyObject *args)
{
    int st;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &st)) {
        return NULL;
    }
    return PyUnicode_FromString(qk_status_message((qk_status)st));
}

static PyMethodDef qk_methods[] = {
    {"conv2d_output_size", py_conv2d_output_size, METH_VARARGS, "(H_out, W_out) of a conv2d geometry tuple."},
    {"conv2d_scratch_bytes", py_conv2d_scratch_bytes, METH_VARARGS, "Scratch bytes of qk_conv2d for (geometry, datapath)."},
    {"conv2d_cache_bytes", py_conv2d_cache_bytes, METH_VARARGS,
     "Bytes of a weights cache of qk_conv2d for (geometry, datapath, weights)."},
    {"conv2d", (PyCFunction)(void (*)(void))py_conv2d, METH_VARARGS | METH_KEYWORDS, "qk_conv2d."},
    {"linear_scratch_bytes", py_linear_scratch_bytes, METH_VARARGS, "Scratch bytes of qk_linear(m, k, n, datapath)."},
    {"linear_cache_bytes", py_linear_cache_bytes, METH_VARARGS,
     "Bytes of a weights cache of qk_linear for (k, n, datapath, weights)."},
    {"linear", (PyCFunction)(void (*)(void))py_linear, METH_VARARGS | METH_KEYWORDS, "qk_linear."},
    {"requantize", (PyCFunction)(void (*)(void))py_requantize, METH_VARARGS | METH_KEYWORDS, "qk_requantize."},
    {"add", (PyCFunction)(void (*)(void))py_add, METH_VARARGS | METH_KEYWORDS, "qk_add."},
    {"mul", (PyCFunction)(void (*)(void))py_mul, METH_VARARGS | METH_KEYWORDS, "qk_mul."},
    {"softmax", (PyCFunction)(void (*)(void))py_softmax, METH_VARARGS | METH_KEYWORDS, "qk_softmax."},
    {"lstm", (PyCFunction)(void (*)(void))py_lstm, METH_VARARGS | METH_KEYWORDS, "qk_lstm."},
    {"lstm_scratch_bytes", py_lstm_scratch_bytes, METH_VARARGS, "qk_lstm_scratch_bytes(features, hidden)."},
    {"gru", (PyCFunction)(void (*)(void))py_gru, METH_VARARGS | METH_KEYWORDS, "qk_gru."},
    {"gru_scratch_bytes", py_gru_scratch_bytes, METH_VARARGS, "qk_gru_scratch_bytes(features, hidden)."},
    {"layernorm", (PyCFunction)(void (*)(void))py_layernorm, METH_VARARGS | METH_KEYWORDS, "qk_layernorm."},
    {"avg_pool2d", (PyCFunction)(void (*)(void))py_avg_pool2d, METH_VARARGS | METH_KEYWORDS, "qk_avg_pool2d."},
    {"max_pool2d", (PyCFunction)(void (*)(void))py_max_pool2d, METH_VARARGS | METH_KEYWORDS, "qk_max_pool2d."},
    {"lut", (PyCFunction)(void (*)(void))py_lut, METH_VARARGS | METH_KEYWORDS, "qk_lut."},
    {"pack", (PyCFunction)(void (*)(void))py_pack, METH_VARARGS | METH_KEYWORDS, "qk_pack."},
    {"unpack", (PyCFunction)(void (*)(void))py_unpack, METH_VARARGS | METH_KEYWORDS, "qk_unpack."},
    {"rounding_right_shift", py_rounding_right_shift, METH_VARARGS, "qk_rounding_right_shift(v, k, mode)."},
    {"srdhm", py_srdhm, METH_VARARGS, "qk_saturating_rounding_doubling_high_mul(a, b, n)."},
    {"isa_query", py_isa_query, METH_VARARGS, "(available, selected by ISA_AUTO) for an ISA_* value."},
    {"status_message", py_status_message, METH_VARARGS, "The sentence of a qk_status value."},
    {"abi", py_abi, METH_NOARGS, "{struct: (sizeof, ((field, offsetof, type), ...))} of the parsed structs."},
    {"struct_bytes", py_struct_bytes, METH_VARARGS, "The bytes of a struct filled from a dict of its fields."},
    {NULL, NULL, 0, NULL}};

static int qk_exec(PyObject *m)
{
#define QK_ADD(name, value)                                                                                       \
    if (PyModule_AddIntConstant(m, name, value) != 0) {                                                           \
        return -1;                                                                                                \
    }
    QK_ADD("OVERFLOW_WRAP", QK_OVERFLOW_WRAP)
    QK_ADD("OVERFLOW_SATURATE", QK_OVERFLOW_SATURATE)
    QK_ADD("OVERFLOW_ERROR", QK_OVERFLOW_ERROR)
    QK_ADD("REQUANT_FIXED_POINT", QK_REQUANT_FIXED_POINT)
    QK_ADD("REQUANT_FLOAT32", QK_REQUANT_FLOAT32)
    QK_ADD("REQUANT_FLOAT64", QK_REQUANT_FLOAT64)
    QK_ADD("REQUANT_POW2", QK_REQUANT_POW2)
    QK_ADD("FIXED_POINT_DOUBLE", QK_FIXED_POINT_DOUBLE)
    QK_ADD("FIXED_POINT_SINGLE", QK_FIXED_POINT_SINGLE)
    QK_ADD("ROUND_HALF_AWAY", QK_ROUND_HALF_AWAY)
    QK_ADD("ROUND_HALF_UP", QK_ROUND_HALF_UP)
    QK_ADD("ROUND_HALF_EVEN", QK_ROUND_HALF_EVEN)
    QK_ADD("ROUND_FLOOR", QK_ROUND_FLOOR)
    QK_ADD("ZP_AFTER_ROUNDING", QK_ZP_AFTER_ROUNDING)
    QK_ADD("ZP_BEFORE_ROUNDING", QK_ZP_BEFORE_ROUNDING)
    QK_ADD("ISA_AUTO", QK_ISA_AUTO)
    QK_ADD("ISA_PORTABLE", QK_ISA_PORTABLE)
    QK_ADD("ISA_X86_AVX2", QK_ISA_X86_AVX2)
    QK_ADD("ISA_X86_AVX512_VNNI", QK_ISA_X86_AVX512_VNNI)
    QK_ADD("ERR_NULL", QK_ERR_NULL)
    QK_ADD("ERR_DATAPATH", QK_ERR_DATAPATH)
    QK_ADD("ERR_SHAPE", QK_ERR_SHAPE)
    QK_ADD("ERR_X_LENGTH", QK_ERR_X_LENGTH)
    QK_ADD("ERR_W_LENGTH", QK_ERR_W_LENGTH)
    QK_ADD("ERR_BIAS_LENGTH", QK_ERR_BIAS_LENGTH)
    QK_ADD("ERR_Y_LENGTH", QK_ERR_Y_LENGTH)
    QK_ADD("ERR_PARAM_LENGTH", QK_ERR_PARAM_LENGTH)
    QK_ADD("ERR_SCRATCH", QK_ERR_SCRATCH)
    QK_ADD("ERR_BITS", QK_ERR_BITS)
    QK_ADD("ERR_ZERO_POINT", QK_ERR_ZERO_POINT)
    QK_ADD("ERR_MULTIPLIER", QK_ERR_MULTIPLIER)
    QK_ADD("ERR_SHIFT", QK_ERR_SHIFT)
    QK_ADD("ERR_BIAS_RANGE", QK_ERR_BIAS_RANGE)
    QK_ADD("ERR_OUTPUT_RANGE", QK_ERR_OUTPUT_RANGE)
    QK_ADD("ERR_CODE_RANGE", QK_ERR_CODE_RANGE)
    QK_ADD("ERR_WINDOW", QK_ERR_WINDOW)
    QK_ADD("ERR_GROUPS", QK_ERR_GROUPS)
    QK_ADD("ERR_ISA", QK_ERR_ISA)
    QK_ADD("ERR_OVERFLOW", QK_ERR_OVERFLOW)
    QK_ADD("ERR_SIZE", QK_ERR_SIZE)
    QK_ADD("ERR_PARAM_VALUE", QK_ERR_PARAM_VALUE)
    QK_ADD("ERR_CACHE", QK_ERR_CACHE)
#undef QK_ADD
    return 0;
}

static PyModuleDef_Slot qk_slots[] = {{Py_mod_exec, (void *)qk_exec}, {0, NULL}};

static struct PyModuleDef qk_module = {PyModuleDef_HEAD_INIT,
                                       "_qk",
                                       "Binding of the C99 integer kernel library (kernels/c); use kernels.api.",
                                       0,
                                       qk_methods,
                                       qk_slots,
                                       NULL,
                                       NULL,
                                       NULL};

PyMODINIT_FUNC PyInit__qk(void)
{
    return PyModuleDef_Init(&qk_module);
}
