/*
 * quant._fakequant: the Python binding of the one-pass fake quantization (fake_quant.h), the only file
 * of quant/csrc that includes Python.h.
 *
 * The tensors arrive as their data addresses (torch's Tensor.data_ptr()) with their sizes: the caller,
 * quant.sim.fused, is the one module that calls this and checks first that each tensor is a contiguous
 * CPU float32 (uint8 mask, int32 zero point) tensor of the sizes passed. Address 0 is NULL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fake_quant.h"

static PyObject *fq_raise(int status, const char *what)
{
    if (status == FQ_ISA_UNAVAILABLE)
        PyErr_Format(PyExc_RuntimeError, "%s: the requested instruction set is not available on this CPU", what);
    else
        PyErr_Format(PyExc_ValueError, "%s: invalid sizes, granularity, rounding or code range", what);
    return NULL;
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
    fq_problem p;
    p.x = (const float *)(uintptr_t)x;
    p.out = (float *)(uintptr_t)out;
    p.mask = (uint8_t *)(uintptr_t)mask;
    p.scale = (const float *)(uintptr_t)scale;
    p.zero_point = (const int32_t *)(uintptr_t)zero_point;
    p.outer = outer;
    p.channels = channels;
    p.inner = inner;
    p.group = group;
    p.granularity = granularity;
    p.qmin = qmin;
    p.qmax = qmax;
    p.rounding = rounding;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = fq_forward(&p, threads, isa);
    Py_END_ALLOW_THREADS
    if (status != FQ_OK)
        return fq_raise(status, "fake_quant forward");
    Py_RETURN_NONE;
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
    fq_problem p;
    p.x = (const float *)(uintptr_t)x;
    p.out = (float *)(uintptr_t)out;
    p.mask = (uint8_t *)(uintptr_t)mask;
    p.scale = &scale;
    p.zero_point = &z;
    p.outer = 1;
    p.channels = 1;
    p.inner = n;
    p.group = 1;
    p.granularity = FQ_TENSOR;
    p.qmin = qmin;
    p.qmax = qmax;
    p.rounding = rounding;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = fq_forward(&p, threads, isa);
    Py_END_ALLOW_THREADS
    if (status != FQ_OK)
        return fq_raise(status, "fake_quant forward");
    Py_RETURN_NONE;
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
    {"backward", fq_py_backward, METH_VARARGS,
     "backward(grad_out, mask, grad_in, n, threads, isa): grad_in = grad_out * mask"},
    {"minmax", fq_py_minmax, METH_VARARGS, "minmax(x, n, isa): (least, greatest) of n > 0 floats, NaN if any is"},
    {"isa_available", fq_py_isa_available, METH_VARARGS, "isa_available(isa): whether the CPU runs those loops"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fq_module = {
    PyModuleDef_HEAD_INIT, "quant._fakequant", "One-pass fake quantization of float32 tensors (quant.sim.fused).",
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
