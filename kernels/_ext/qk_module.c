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

#include <string.h>

#include "qk.h"

/* ------------------------------------------------------------------ buffers */

#define QK_MAX_VIEWS 8

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

static PyObject *raise_status(const char *op, qk_status st)
{
    if (st == QK_ERR_OVERFLOW) {
        PyErr_Format(PyExc_OverflowError, "%s: %s", op, qk_status_message(st));
    } else {
        PyErr_Format(PyExc_ValueError, "%s: %s (qk_status %d)", op, qk_status_message(st), (int)st);
    }
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

/* ------------------------------------------------------------------ struct parsing */

static int require_tuple(PyObject *t, const char *name)
{
    if (!PyTuple_Check(t)) {
        PyErr_Format(PyExc_TypeError, "%s must be a tuple, got %.100s", name, Py_TYPE(t)->tp_name);
        return -1;
    }
    return 0;
}

static int parse_datapath(PyObject *t, qk_datapath *dp)
{
    return !require_tuple(t, "datapath") && PyArg_ParseTuple(t, "iiiiiiiiiiiiii;datapath must be a tuple of 14 ints", &dp->w_bits, &dp->w_signed,
                            &dp->w_zero_point, &dp->a_bits, &dp->a_signed, &dp->a_zero_point, &dp->acc_bits,
                            &dp->overflow, &dp->requant, &dp->multiplier_bits, &dp->fixed_point_rounding,
                            &dp->rounding, &dp->zero_point_order, &dp->bias_bits)
               ? 0
               : -1;
}

static int parse_conv_geometry(PyObject *t, qk_conv2d_geometry *g)
{
    return !require_tuple(t, "geometry") && PyArg_ParseTuple(t, "iiiiiiiiiiiiii;geometry must be a tuple of 14 ints", &g->n, &g->c_in, &g->h, &g->w,
                            &g->c_out, &g->kh, &g->kw, &g->stride_h, &g->stride_w, &g->pad_h, &g->pad_w,
                            &g->dilation_h, &g->dilation_w, &g->groups)
               ? 0
               : -1;
}

static int parse_pool_geometry(PyObject *t, qk_pool2d_geometry *g)
{
    return !require_tuple(t, "geometry") && PyArg_ParseTuple(t, "iiiiiiiiiiii;geometry must be a tuple of 12 ints", &g->n, &g->c, &g->h, &g->w,
                            &g->kh, &g->kw, &g->stride_h, &g->stride_w, &g->pad_h, &g->pad_w, &g->dilation_h,
                            &g->dilation_w)
               ? 0
               : -1;
}

/* requant = (multiplier int32 | None, shift int32 | None, fmultiplier float32 | None,
 *            y_zero_point, y_bits, y_signed, y_min, y_max); channels = the longest array */
static int parse_requant(qk_views *vs, PyObject *t, const char *op, qk_requant_params *rq)
{
    PyObject *m, *s, *f;
    void *pm, *ps, *pf;
    size_t lm, ls, lf;
    if (require_tuple(t, "requant") || !PyArg_ParseTuple(t, "OOOiiiii;requant must be (multiplier, shift, fmultiplier, y_zero_point, y_bits, "
                             "y_signed, y_min, y_max)",
                          &m, &s, &f, &rq->y_zero_point, &rq->y_bits, &rq->y_signed, &rq->y_min, &rq->y_max)) {
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

/* weights = (data uint8 or int8/uint8 codes, packed_bits, zero_point int32) */
static int parse_weights(qk_views *vs, PyObject *t, const char *op, const qk_datapath *dp, qk_weights *w)
{
    PyObject *data, *zp;
    void *pd, *pz;
    size_t ld, lz;
    if (require_tuple(t, "weights") || !PyArg_ParseTuple(t, "OiO;weights must be (data, packed_bits, zero_point)", &data, &w->packed_bits, &zp)) {
        return -1;
    }
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
    if (st != QK_OK) {
        return raise_status("conv2d", st);
    }
    return PyLong_FromSize_t(bytes);
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
    if (st != QK_OK) {
        return raise_status("linear", st);
    }
    return PyLong_FromSize_t(bytes);
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
    if (require_tuple(pt, "params") || !PyArg_ParseTuple(pt, "iiiiiiiiffiiiii;params must be a tuple of 15 numbers", &p.a_zero_point,
                          &p.b_zero_point, &p.a_multiplier, &p.a_shift, &p.b_multiplier, &p.b_shift,
                          &p.out_multiplier, &p.out_shift, &p.a_fmultiplier, &p.b_fmultiplier, &p.y_zero_point,
                          &p.y_bits, &p.y_signed, &p.y_min, &p.y_max)) {
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
    static char *kw[] = {"x", "x_bits", "x_signed", "table", "table_signed", "y", NULL};
    const char *op = "lut";
    PyObject *xo, *to, *yo;
    int x_bits, x_signed, table_signed;
    qk_views vs = {{{0}}, 0};
    void *x, *t, *y;
    size_t x_len, t_len, y_len;
    qk_status st;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OipOpO", kw, &xo, &x_bits, &x_signed, &to, &table_signed, &yo)) {
        return NULL;
    }
    if (get_buffer(&vs, xo, op, "x", code_format(x_signed), 1, 0, &x, &x_len) ||
        get_buffer(&vs, to, op, "table", code_format(table_signed), 1, 0, &t, &t_len) ||
        get_buffer(&vs, yo, op, "y", code_format(table_signed), 1, 1, &y, &y_len)) {
        views_release(&vs);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = qk_lut(x, x_len, x_bits, x_signed, t, t_len, table_signed, y, y_len);
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
    {"conv2d", (PyCFunction)(void (*)(void))py_conv2d, METH_VARARGS | METH_KEYWORDS, "qk_conv2d."},
    {"linear_scratch_bytes", py_linear_scratch_bytes, METH_VARARGS, "Scratch bytes of qk_linear(m, k, n, datapath)."},
    {"linear", (PyCFunction)(void (*)(void))py_linear, METH_VARARGS | METH_KEYWORDS, "qk_linear."},
    {"requantize", (PyCFunction)(void (*)(void))py_requantize, METH_VARARGS | METH_KEYWORDS, "qk_requantize."},
    {"add", (PyCFunction)(void (*)(void))py_add, METH_VARARGS | METH_KEYWORDS, "qk_add."},
    {"avg_pool2d", (PyCFunction)(void (*)(void))py_avg_pool2d, METH_VARARGS | METH_KEYWORDS, "qk_avg_pool2d."},
    {"max_pool2d", (PyCFunction)(void (*)(void))py_max_pool2d, METH_VARARGS | METH_KEYWORDS, "qk_max_pool2d."},
    {"lut", (PyCFunction)(void (*)(void))py_lut, METH_VARARGS | METH_KEYWORDS, "qk_lut."},
    {"pack", (PyCFunction)(void (*)(void))py_pack, METH_VARARGS | METH_KEYWORDS, "qk_pack."},
    {"unpack", (PyCFunction)(void (*)(void))py_unpack, METH_VARARGS | METH_KEYWORDS, "qk_unpack."},
    {"rounding_right_shift", py_rounding_right_shift, METH_VARARGS, "qk_rounding_right_shift(v, k, mode)."},
    {"srdhm", py_srdhm, METH_VARARGS, "qk_saturating_rounding_doubling_high_mul(a, b, n)."},
    {"isa_query", py_isa_query, METH_VARARGS, "(available, selected by ISA_AUTO) for an ISA_* value."},
    {"status_message", py_status_message, METH_VARARGS, "The sentence of a qk_status value."},
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
    QK_ADD("ERR_OVERFLOW", QK_ERR_OVERFLOW)
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
