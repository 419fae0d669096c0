/*
 * quant._fakequant: the Python binding of the one-pass fake quantization (fake_quant.h) and of the
 * pointwise LSTM step (lstm_step.h), the only file of quant/csrc that includes Python.h.
 *
 * The tensors arrive as their data addresses (torch's Tensor.data_ptr()) with their sizes: the caller,
 * quant.sim.fused, is the one module that calls this and checks first that each tensor is a contiguous
 * CPU float32 (uint8 mask, int32 zero point) tensor of the sizes passed. Address 0 is NULL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "fake_quant.h"
#include "lstm_step.h"

#define FQ_PTR(v) ((const float *)(uintptr_t)(v))
#define FQ_OUT(v) ((float *)(uintptr_t)(v))

static PyObject *fq_raise(int status, const char *what)
{
    if (status == FQ_ISA_UNAVAILABLE)
        PyErr_Format(PyExc_RuntimeError, "%s: the requested instruction set is not available on this CPU", what);
    else
        PyErr_Format(PyExc_ValueError, "%s: invalid sizes, granularity, rounding or code range", what);
    return NULL;
}

/* fq_forward without the GIL, its status as None or the exception. */
static PyObject *fq_call_forward(const fq_problem *p, int threads, int isa)
{
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = fq_forward(p, threads, isa);
    Py_END_ALLOW_THREADS
    if (status != FQ_OK)
        return fq_raise(status, "fake_quant forward");
    Py_RETURN_NONE;
}

static PyObject *fq_py_forward(PyObject *self, PyObject *args)
{
    unsigned long long x, out, mask, scale, zero_point;
    long long outer, channels, inner, group;
    int granularity, qmin, qmax, rounding, threads, isa;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKKKLLLLiiiiii", &x, &out, &mask, &scale, &zero_point, &outer, &channels, &inner,
                          &group, &granularity, &qmin, &qmax, &rounding, &threads, &isa))
        return NULL;
    const fq_problem p = {.x = (const float *)(uintptr_t)x, .out = (float *)(uintptr_t)out,
                             .mask = (uint8_t *)(uintptr_t)mask, .scale = (const float *)(uintptr_t)scale,
                             .zero_point = (const int32_t *)(uintptr_t)zero_point, .outer = outer,
                             .channels = channels, .inner = inner, .group = group, .granularity = granularity,
                             .qmin = qmin, .qmax = qmax, .rounding = rounding};
    return fq_call_forward(&p, threads, isa);
}

static PyObject *fq_py_lsq_backward(PyObject *self, PyObject *args)
{
    unsigned long long x, scale, zero_point, g, grad_x, scale_grad;
    long long outer, channels, inner, group;
    int granularity, qmin, qmax, rounding, isa;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKKKKLLLLiiiii", &x, &scale, &zero_point, &g, &grad_x, &scale_grad, &outer,
                          &channels, &inner, &group, &granularity, &qmin, &qmax, &rounding, &isa))
        return NULL;
    const fq_problem p = {.x = (const float *)(uintptr_t)x, .out = NULL, .mask = NULL,
                             .scale = (const float *)(uintptr_t)scale,
                             .zero_point = (const int32_t *)(uintptr_t)zero_point, .outer = outer,
                             .channels = channels, .inner = inner, .group = group, .granularity = granularity,
                             .qmin = qmin, .qmax = qmax, .rounding = rounding};
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = fq_lsq_backward(&p, (const float *)(uintptr_t)g, (float *)(uintptr_t)grad_x, (double *)(uintptr_t)scale_grad,
                             isa);
    Py_END_ALLOW_THREADS
    if (status != FQ_OK)
        return fq_raise(status, "lsq backward");
    Py_RETURN_NONE;
}

static PyObject *fq_py_lsq_parts(PyObject *self, PyObject *args)
{
    unsigned long long x, out, mask, d_scale;
    long long n;
    float s;
    int z, qmin, qmax, rounding, isa, status;
    (void)self;
    if (!PyArg_ParseTuple(args, "KLfiiiiKKKi", &x, &n, &s, &z, &qmin, &qmax, &rounding, &out, &mask, &d_scale, &isa))
        return NULL;
    status = fq_lsq_parts(FQ_PTR(x), n, s, z, qmin, qmax, rounding, FQ_OUT(out), (uint8_t *)(uintptr_t)mask,
                          FQ_OUT(d_scale), isa);
    if (status != FQ_OK)
        return fq_raise(status, "lsq parts");
    Py_RETURN_NONE;
}

static PyObject *fq_py_pact_forward(PyObject *self, PyObject *args)
{
    unsigned long long x, out;
    long long n;
    float a, s;
    int is_signed, qmin, qmax, rounding, isa, status;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKLffiiiii", &x, &out, &n, &a, &s, &is_signed, &qmin, &qmax, &rounding, &isa))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = fq_pact_forward(FQ_PTR(x), FQ_OUT(out), n, a, s, is_signed, qmin, qmax, rounding, isa);
    Py_END_ALLOW_THREADS
    if (status != FQ_OK)
        return fq_raise(status, "pact forward");
    Py_RETURN_NONE;
}

static PyObject *fq_py_pact_backward(PyObject *self, PyObject *args)
{
    unsigned long long x, g, grad_x;
    long long n;
    float a;
    int is_signed, isa, status;
    double alpha_grad = 0.0;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKLfii", &x, &g, &grad_x, &n, &a, &is_signed, &isa))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = fq_pact_backward(FQ_PTR(x), FQ_PTR(g), FQ_OUT(grad_x), n, a, is_signed, &alpha_grad, isa);
    Py_END_ALLOW_THREADS
    if (status != FQ_OK)
        return fq_raise(status, "pact backward");
    return PyFloat_FromDouble(alpha_grad);
}

static PyObject *fq_py_forward_tensor(PyObject *self, PyObject *args)
{
    unsigned long long x, out, mask;
    long long n;
    float scale;
    int zero_point, qmin, qmax, rounding, threads, isa;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKLfiiiiii", &x, &out, &mask, &n, &scale, &zero_point, &qmin, &qmax, &rounding,
                          &threads, &isa))
        return NULL;
    const int32_t z = (int32_t)zero_point;
    const fq_problem p = {.x = (const float *)(uintptr_t)x, .out = (float *)(uintptr_t)out,
                             .mask = (uint8_t *)(uintptr_t)mask, .scale = &scale, .zero_point = &z, .outer = 1,
                             .channels = 1, .inner = n, .group = 1, .granularity = FQ_TENSOR, .qmin = qmin,
                             .qmax = qmax, .rounding = rounding};
    return fq_call_forward(&p, threads, isa);
}

static PyObject *fq_py_backward(PyObject *self, PyObject *args)
{
    unsigned long long grad, mask, grad_in;
    long long n;
    int threads, isa;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKLii", &grad, &mask, &grad_in, &n, &threads, &isa))
        return NULL;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = fq_backward((const float *)(uintptr_t)grad, (const uint8_t *)(uintptr_t)mask, (float *)(uintptr_t)grad_in,
                         n, threads, isa);
    Py_END_ALLOW_THREADS
    if (status != FQ_OK)
        return fq_raise(status, "fake_quant backward");
    Py_RETURN_NONE;
}

static PyObject *fq_py_minmax(PyObject *self, PyObject *args)
{
    unsigned long long x;
    long long n;
    int isa;
    float lo = 0.0f, hi = 0.0f;
    (void)self;
    if (!PyArg_ParseTuple(args, "KLi", &x, &n, &isa))
        return NULL;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = fq_minmax((const float *)(uintptr_t)x, n, &lo, &hi, isa);
    Py_END_ALLOW_THREADS
    if (status != FQ_OK)
        return fq_raise(status, "minmax");
    return Py_BuildValue("(dd)", (double)lo, (double)hi);
}


/* The pointwise LSTM step: `parts` 1 = fq_lstm_cell, 2 = fq_lstm_hidden, 3 = both (addresses of unused
 * tensors are ignored). */
static PyObject *fq_py_lstm_pointwise(PyObject *self, PyObject *args)
{
    long long rows, hidden;
    unsigned long long pre, c_prev, act, c, tanh_c, h;
    int parts, isa, status = FQ_OK;
    (void)self;
    if (!PyArg_ParseTuple(args, "iLLKKKKKKi", &parts, &rows, &hidden, &pre, &c_prev, &act, &c, &tanh_c, &h, &isa))
        return NULL;
    if (parts < 1 || parts > 3) {
        PyErr_Format(PyExc_ValueError, "lstm_pointwise: parts=%d is not 1, 2 or 3", parts);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (parts == 3)
        status = fq_lstm_step(rows, hidden, FQ_PTR(pre), FQ_PTR(c_prev), FQ_OUT(act), FQ_OUT(c), FQ_OUT(tanh_c),
                              FQ_OUT(h), isa);
    else if (parts == 1)
        status = fq_lstm_cell(rows, hidden, FQ_PTR(pre), FQ_PTR(c_prev), FQ_OUT(act), FQ_OUT(c), isa);
    else
        status = fq_lstm_hidden(rows, hidden, FQ_PTR(act), FQ_PTR(c), FQ_OUT(tanh_c), FQ_OUT(h), isa);
    Py_END_ALLOW_THREADS
    if (status != FQ_OK)
        return fq_raise(status, "lstm_pointwise");
    Py_RETURN_NONE;
}

/* The site state lives in a bytearray of sizeof(fq_site) bytes that Python holds between calls. */
static fq_site *fq_site_of(PyObject *state)
{
    if (!PyByteArray_Check(state) || PyByteArray_GET_SIZE(state) != (Py_ssize_t)sizeof(fq_site)) {
        PyErr_SetString(PyExc_TypeError, "site state: expected the bytearray of site_new");
        return NULL;
    }
    return (fq_site *)(void *)PyByteArray_AS_STRING(state);
}

static PyObject *fq_py_site_new(PyObject *self, PyObject *args)
{
    fq_site site;
    memset(&site, 0, sizeof site);
    (void)self;
    if (!PyArg_ParseTuple(args, "iiififfiiiiiiifii", &site.observing, &site.quantizing, &site.observer, &site.momentum,
                          &site.has_range, &site.lo, &site.hi, &site.symmetric, &site.is_signed, &site.pow2,
                          &site.qmin, &site.qmax, &site.rounding, &site.calibrated, &site.scale, &site.zero_point,
                          &site.lsq))
        return NULL;
    return PyByteArray_FromStringAndSize((const char *)&site, (Py_ssize_t)sizeof site);
}

static PyObject *fq_py_site_state(PyObject *self, PyObject *args)
{
    PyObject *state;
    (void)self;
    if (!PyArg_ParseTuple(args, "O", &state))
        return NULL;
    const fq_site *site = fq_site_of(state);
    if (site == NULL)
        return NULL;
    return Py_BuildValue("(iddidi)", site->has_range, (double)site->lo, (double)site->hi, site->calibrated,
                         (double)site->scale, (int)site->zero_point);
}

static PyObject *fq_site_status(int status, const char *what)
{
    if (status == FQ_NOT_FINITE) {
        PyErr_SetString(PyExc_FloatingPointError, "the observed tensor contains NaN or Inf");
        return NULL;
    }
    return fq_raise(status, what);
}

static PyObject *fq_py_site_call(PyObject *self, PyObject *args)
{
    PyObject *state;
    unsigned long long x, out, mask, d_scale;
    long long n;
    int isa, status;
    (void)self;
    if (!PyArg_ParseTuple(args, "OKLKKKi", &state, &x, &n, &out, &mask, &d_scale, &isa))
        return NULL;
    fq_site *site = fq_site_of(state);
    if (site == NULL)
        return NULL;
    status = fq_site_call(site, FQ_PTR(x), n, FQ_OUT(out), (uint8_t *)(uintptr_t)mask, FQ_OUT(d_scale), isa);
    if (status != FQ_OK)
        return fq_site_status(status, "site");
    Py_RETURN_NONE;
}

static PyObject *fq_py_qparams(PyObject *self, PyObject *args)
{
    unsigned long long lo, hi, scale, zero_point;
    long long n;
    fq_site rule;
    memset(&rule, 0, sizeof rule);
    (void)self;
    if (!PyArg_ParseTuple(args, "KKLiiiiiKK", &lo, &hi, &n, &rule.symmetric, &rule.is_signed, &rule.pow2, &rule.qmin,
                          &rule.qmax, &scale, &zero_point))
        return NULL;
    const int status = fq_qparams(FQ_PTR(lo), FQ_PTR(hi), n, &rule, FQ_OUT(scale), (int32_t *)(uintptr_t)zero_point);
    if (status != FQ_OK)
        return fq_raise(status, "qparams");
    Py_RETURN_NONE;
}

static PyObject *fq_py_channel_extremes(PyObject *self, PyObject *args)
{
    unsigned long long x, lo, hi;
    long long outer, channels, inner;
    int isa, status;
    (void)self;
    if (!PyArg_ParseTuple(args, "KLLLKKi", &x, &outer, &channels, &inner, &lo, &hi, &isa))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = fq_channel_extremes(FQ_PTR(x), outer, channels, inner, FQ_OUT(lo), FQ_OUT(hi), isa);
    Py_END_ALLOW_THREADS
    if (status != FQ_OK && status != FQ_NOT_FINITE)
        return fq_raise(status, "channel extremes");
    return PyBool_FromLong(status == FQ_OK);
}

/* One LSTM step's pointwise part and its hidden site: (cell,) hidden, then the site on h. */
static PyObject *fq_py_lstm_step_site(PyObject *self, PyObject *args)
{
    long long rows, hidden;
    unsigned long long pre, c_prev, act, c, tanh_c, h_raw, h, mask, d_scale;
    int with_cell, isa, status;
    PyObject *state;
    (void)self;
    if (!PyArg_ParseTuple(args, "iLLKKKKKKOKKKi", &with_cell, &rows, &hidden, &pre, &c_prev, &act, &c, &tanh_c, &h_raw,
                          &state, &h, &mask, &d_scale, &isa))
        return NULL;
    fq_site *site = fq_site_of(state);
    if (site == NULL)
        return NULL;
    if (with_cell)
        status = fq_lstm_step(rows, hidden, FQ_PTR(pre), FQ_PTR(c_prev), FQ_OUT(act), FQ_OUT(c), FQ_OUT(tanh_c),
                              FQ_OUT(h_raw), isa);
    else
        status = fq_lstm_hidden(rows, hidden, FQ_PTR(act), FQ_PTR(c), FQ_OUT(tanh_c), FQ_OUT(h_raw), isa);
    if (status == FQ_OK && rows * hidden > 0)
        status = fq_site_call(site, FQ_PTR(h_raw), rows * hidden, FQ_OUT(h), (uint8_t *)(uintptr_t)mask,
                              FQ_OUT(d_scale), isa);
    if (status != FQ_OK)
        return fq_site_status(status, "lstm step");
    Py_RETURN_NONE;
}

static PyObject *fq_py_lstm_backward(PyObject *self, PyObject *args)
{
    long long rows, hidden;
    unsigned long long grad_out, grad_h, grad_c, act, tanh_c, c_prev, mh, mc, mg, dh, dc, dg, grad_pre, grad_c_prev;
    int isa, status;
    (void)self;
    if (!PyArg_ParseTuple(args, "LLKKKKKKKKKKKKKKi", &rows, &hidden, &grad_out, &grad_h, &grad_c, &act, &tanh_c,
                          &c_prev, &mh, &mc, &mg, &dh, &dc, &dg, &grad_pre, &grad_c_prev, &isa))
        return NULL;
    fq_lstm_grad g;
    g.rows = rows;
    g.hidden = hidden;
    g.grad_out = FQ_PTR(grad_out);
    g.grad_h = FQ_PTR(grad_h);
    g.grad_c = FQ_PTR(grad_c);
    g.act = FQ_PTR(act);
    g.tanh_c = FQ_PTR(tanh_c);
    g.c_prev = FQ_PTR(c_prev);
    g.mask_hidden = (const uint8_t *)(uintptr_t)mh;
    g.mask_cell = (const uint8_t *)(uintptr_t)mc;
    g.mask_gates = (const uint8_t *)(uintptr_t)mg;
    g.dscale_hidden = FQ_PTR(dh);
    g.dscale_cell = FQ_PTR(dc);
    g.dscale_gates = FQ_PTR(dg);
    g.grad_pre = FQ_OUT(grad_pre);
    g.grad_c_prev = FQ_OUT(grad_c_prev);
    Py_BEGIN_ALLOW_THREADS
    status = fq_lstm_backward(&g, isa);
    Py_END_ALLOW_THREADS
    if (status != FQ_OK)
        return fq_raise(status, "lstm_backward");
    return Py_BuildValue("(ddd)", g.scale_grad[0], g.scale_grad[1], g.scale_grad[2]);
}

static PyObject *fq_py_activation(PyObject *args, int tanh_not_sigmoid)
{
    unsigned long long x, out;
    long long n;
    int isa, status;
    if (!PyArg_ParseTuple(args, "KKLi", &x, &out, &n, &isa))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = tanh_not_sigmoid ? fq_tanh(FQ_PTR(x), FQ_OUT(out), n, isa) : fq_sigmoid(FQ_PTR(x), FQ_OUT(out), n, isa);
    Py_END_ALLOW_THREADS
    if (status != FQ_OK)
        return fq_raise(status, tanh_not_sigmoid ? "tanh" : "sigmoid");
    Py_RETURN_NONE;
}

static PyObject *fq_py_sigmoid(PyObject *self, PyObject *args)
{
    (void)self;
    return fq_py_activation(args, 0);
}

static PyObject *fq_py_tanh(PyObject *self, PyObject *args)
{
    (void)self;
    return fq_py_activation(args, 1);
}

static PyObject *fq_py_isa_available(PyObject *self, PyObject *args)
{
    int isa;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &isa))
        return NULL;
    return PyBool_FromLong(fq_isa_available(isa));
}

static PyMethodDef fq_methods[] = {
    {"forward", fq_py_forward, METH_VARARGS,
     "forward(x, out, mask, scale, zero_point, outer, channels, inner, group, granularity, qmin, qmax, rounding, "
     "threads, isa): one-pass fake quantization (addresses as integers, 0 for none)"},
    {"forward_tensor", fq_py_forward_tensor, METH_VARARGS,
     "forward_tensor(x, out, mask, n, scale, zero_point, qmin, qmax, rounding, threads, isa): forward, one scale"},
    {"lsq_backward", fq_py_lsq_backward, METH_VARARGS,
     "lsq_backward(x, scale, zero_point, grad, grad_x, scale_grad, outer, channels, inner, group, granularity, qmin, "
     "qmax, rounding, isa): LSQ's input gradient and per-qparam step sums (float64) from the saved input"},
    {"lsq_parts", fq_py_lsq_parts, METH_VARARGS,
     "lsq_parts(x, n, s, z, qmin, qmax, rounding, out, mask, d_scale, isa): LSQ's values, mask and derivative"},
    {"pact_forward", fq_py_pact_forward, METH_VARARGS,
     "pact_forward(x, out, n, a, s, signed, qmin, qmax, rounding, isa): PACT's clip then fake quantization"},
    {"pact_backward", fq_py_pact_backward, METH_VARARGS,
     "pact_backward(x, grad, grad_x, n, a, signed, isa) -> the clip level's gradient"},
    {"backward", fq_py_backward, METH_VARARGS,
     "backward(grad_out, mask, grad_in, n, threads, isa): grad_in = grad_out * mask"},
    {"minmax", fq_py_minmax, METH_VARARGS, "minmax(x, n, isa): (least, greatest) of n > 0 floats, NaN if any is"},
    {"lstm_pointwise", fq_py_lstm_pointwise, METH_VARARGS,
     "lstm_pointwise(parts, rows, hidden, pre, c_prev, act, c, tanh_c, h, isa): 1 cell, 2 hidden, 3 both"},
    {"site_new", fq_py_site_new, METH_VARARGS, "site_new(observing, quantizing, observer, momentum, has_range, lo, hi, "
     "symmetric, signed, pow2, qmin, qmax, rounding, calibrated, scale, zero_point, lsq) -> the state (a bytearray)"},
    {"site_state", fq_py_site_state, METH_VARARGS, "site_state(state) -> (has_range, lo, hi, calibrated, scale, zero_point)"},
    {"qparams", fq_py_qparams, METH_VARARGS,
     "qparams(lo, hi, n, symmetric, signed, pow2, qmin, qmax, scale, zero_point): the qparams of n ranges"},
    {"channel_extremes", fq_py_channel_extremes, METH_VARARGS,
     "channel_extremes(x, outer, channels, inner, lo, hi, isa) -> all finite: each channel's least and greatest"},
    {"site_call", fq_py_site_call, METH_VARARGS, "site_call(state, x, n, out, mask, d_scale, isa): one call of the site"},
    {"lstm_step_site", fq_py_lstm_step_site, METH_VARARGS,
     "lstm_step_site(with_cell, rows, hidden, pre, c_prev, act, c, tanh_c, h_raw, state, h, mask, d_scale, isa)"},
    {"lstm_backward", fq_py_lstm_backward, METH_VARARGS,
     "lstm_backward(rows, hidden, grad_out, grad_h, grad_c, act, tanh_c, c_prev, mask_h, mask_c, mask_g, dscale_h, "
     "dscale_c, dscale_g, grad_pre, grad_c_prev, isa) -> the three LSQ sums"},
    {"sigmoid", fq_py_sigmoid, METH_VARARGS, "sigmoid(x, out, n, isa)"},
    {"tanh", fq_py_tanh, METH_VARARGS, "tanh(x, out, n, isa)"},
    {"isa_available", fq_py_isa_available, METH_VARARGS, "isa_available(isa): whether the CPU runs those loops"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fq_module = {
    PyModuleDef_HEAD_INIT, "quant._fakequant", "One-pass fake quantization and the pointwise LSTM step of the simulation (quant.sim.fused).",
    0, fq_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fakequant(void)
{
    PyObject *m = PyModule_Create(&fq_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "ISA_AUTO", FQ_ISA_AUTO) < 0 || PyModule_AddIntConstant(m, "ISA_PORTABLE", FQ_ISA_PORTABLE) < 0 ||
        PyModule_AddIntConstant(m, "ISA_AVX2", FQ_ISA_AVX2) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
