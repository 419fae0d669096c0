/* CPython binding of the C99 integer kernel library (the only file that includes Python.h). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyMethodDef qk_methods[] = {
    {NULL, NULL, 0, NULL}
};

static PyModuleDef_Slot qk_slots[] = {
    {0, NULL}
};

static struct PyModuleDef qk_module = {
    PyModuleDef_HEAD_INIT, "_qk", "Integer kernels (C99 core binding).", 0, qk_methods, qk_slots,
    NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__qk(void) { return PyModuleDef_Init(&qk_module); }
