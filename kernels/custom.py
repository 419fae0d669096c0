"""Custom ops on the C side: the ABI of ``kernels/c/include/qk_custom.h`` called through ``ctypes``.

A registered custom op (:mod:`quant.contract.custom`) names a C function by ``c_symbol``, in
the kernel library itself (``c_library=None``: the compiled ``kernels._qk`` exports every
public C symbol) or in a user's shared library. :func:`run_custom` checks the input codes
against the op's record, fills one ``qk_custom_tensor`` per input and for the output (allocated
here with the record's shape), the ``qk_custom_param`` array in the registered order and a
64-byte aligned scratch of the size ``<symbol>_scratch_bytes`` asks for, calls the function with
the GIL released, and turns a nonzero status into a ``ValueError`` naming the op and the symbol.

:func:`compile_custom_op` builds a user's C99 sources into such a shared library with the
system compiler (``$CC``, else ``cc``), against the kernel library's headers.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from kernels import _qk
from kernels.api import SCRATCH_ALIGN
from quant.contract.args import check_code_values
from quant.contract.custom import CUSTOM_MAX_DIMS, CustomOpAttrs, CustomOpDef, custom_op_def

__all__ = ["CustomParam", "CustomTensor", "compile_custom_op", "custom_function", "custom_scratch_bytes", "run_custom"]

Codes = npt.NDArray[Any]
INCLUDE_DIR = Path(__file__).parent / "c" / "include"


class CustomTensor(ctypes.Structure):
    """``qk_custom_tensor``."""

    _fields_ = [
        ("data", ctypes.c_void_p),
        ("shape", ctypes.c_int64 * CUSTOM_MAX_DIMS),
        ("ndim", ctypes.c_int32),
        ("bits", ctypes.c_int32),
        ("is_signed", ctypes.c_int32),
        ("reserved", ctypes.c_int32),
    ]


class CustomParam(ctypes.Structure):
    """``qk_custom_param``."""

    _fields_ = [("values", ctypes.POINTER(ctypes.c_int64)), ("count", ctypes.c_int64)]


_TensorP = ctypes.POINTER(CustomTensor)
_ParamP = ctypes.POINTER(CustomParam)
_FN = ctypes.CFUNCTYPE(ctypes.c_int32, _TensorP, ctypes.c_int32, _ParamP, ctypes.c_int32, _TensorP, ctypes.c_void_p,
                       ctypes.c_size_t)  # fmt: skip
_SCRATCH_FN = ctypes.CFUNCTYPE(ctypes.c_int32, _TensorP, ctypes.c_int32, _ParamP, ctypes.c_int32, _TensorP,
                               ctypes.POINTER(ctypes.c_size_t))  # fmt: skip
_LIBRARIES: dict[str, ctypes.CDLL] = {}


def _library(op: CustomOpDef) -> ctypes.CDLL:
    path = op.c_library if op.c_library is not None else str(_qk.__file__)
    lib = _LIBRARIES.get(path)
    if lib is None:
        try:
            lib = ctypes.CDLL(path)
        except OSError as err:
            raise ValueError(f"custom op {op.name!r}: cannot load c_library={path!r}: {err}") from None
        _LIBRARIES[path] = lib
    return lib


def custom_function(op: CustomOpDef) -> tuple[Any, Optional[Any]]:
    """The C function of ``op`` and its ``<symbol>_scratch_bytes`` twin (None where not exported)."""
    lib = _library(op)
    try:
        fn = _FN((op.c_symbol, lib))
    except AttributeError:
        where = "the kernel library" if op.c_library is None else repr(op.c_library)
        raise ValueError(f"custom op {op.name!r}: {where} exports no function {op.c_symbol!r}") from None
    try:
        scratch = _SCRATCH_FN((op.c_symbol + "_scratch_bytes", lib))
    except AttributeError:
        scratch = None
    return fn, scratch


def _tensor(a: Codes, bits: int, signed: bool) -> CustomTensor:
    t = CustomTensor()
    t.data = a.ctypes.data
    for i, d in enumerate(a.shape):
        t.shape[i] = d
    t.ndim = a.ndim
    t.bits = bits
    t.is_signed = int(signed)
    return t


class _Call:
    """The ABI structs of one call: ``qk_custom_tensor`` of each input and the output, ``qk_custom_param``
    of each parameter (the arrays they point to are kept alive here)."""

    def __init__(self, attrs: CustomOpAttrs, arrays: Sequence[Codes], y: Codes) -> None:
        self.arrays, self.y = arrays, y
        self.inputs = (CustomTensor * len(arrays))(*(_tensor(a, b, s) for a, b, s in zip(arrays, attrs.x_bits,
                                                                                         attrs.x_signed)))  # fmt: skip
        self.output = _tensor(y, attrs.y_bits, attrs.y_signed)
        self.values = [np.ascontiguousarray(np.atleast_1d(np.asarray(v, dtype=np.int64))) for _, v in attrs.params]
        self.params = (CustomParam * max(1, len(self.values)))()
        for i, v in enumerate(self.values):
            self.params[i].values = v.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
            self.params[i].count = v.size

    def scratch_bytes(self, op: CustomOpDef) -> int:
        """What ``<symbol>_scratch_bytes`` asks for (0 when the library exports none)."""
        _, scratch_fn = custom_function(op)
        if scratch_fn is None:
            return 0
        size = ctypes.c_size_t(0)
        st = scratch_fn(self.inputs, len(self.arrays), self.params, len(self.values), ctypes.byref(self.output),
                        ctypes.byref(size))  # fmt: skip
        if st != 0:
            raise _status(op, f"{op.c_symbol}_scratch_bytes", st)
        return int(size.value)


def _status(op: CustomOpDef, what: str, status: int) -> ValueError:
    known = 0 < status <= 64 and _qk.status_message(status) != "unknown status"
    meaning = f" ({_qk.status_message(status)})" if known else ""
    return ValueError(f"custom op {op.name!r}: the C function {what} returned status {status}{meaning}")


def run_custom(attrs: CustomOpAttrs, xs: Sequence[Codes]) -> Codes:
    """The C implementation of ``attrs.op`` on the input codes ``xs``: codes ``(N, *attrs.shape)``."""
    op = custom_op_def(attrs.op)
    if len(xs) != op.n_inputs:
        raise ValueError(f"{op.name}: takes {op.n_inputs} input(s), got {len(xs)}")
    arrays = []
    for i, (x, bits, signed) in enumerate(zip(xs, attrs.x_bits, attrs.x_signed)):
        dtype = np.int8 if signed else np.uint8
        if not isinstance(x, np.ndarray) or x.dtype != dtype:
            got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
            raise TypeError(f"{op.name}: input {i} must be a numpy array of {np.dtype(dtype)} codes, got {got}")
        if x.ndim > CUSTOM_MAX_DIMS:
            raise ValueError(f"{op.name}: input {i} of shape {x.shape}: the C ABI takes 1 to {CUSTOM_MAX_DIMS} "
                             "dimensions")  # fmt: skip
        if x.size:
            check_code_values(int(x.min()), int(x.max()), bits == 1 and signed and bool((x == 0).any()),
                              f"input {i}", op.name, bits, signed)  # fmt: skip
        arrays.append(np.ascontiguousarray(x))
    batch = attrs.batch([a.shape for a in arrays])  # only the batch may be empty (section 6)
    y = np.empty((batch, *attrs.shape), dtype=np.int8 if attrs.y_signed else np.uint8)
    if batch == 0:
        return y
    call = _Call(attrs, arrays, y)
    fn, _ = custom_function(op)
    nbytes = call.scratch_bytes(op)
    raw = np.empty(nbytes + SCRATCH_ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % SCRATCH_ALIGN
    scratch = raw[start : start + nbytes]
    st = fn(call.inputs, len(arrays), call.params, len(call.values), ctypes.byref(call.output),
            scratch.ctypes.data if nbytes else None, nbytes)  # fmt: skip
    if st != 0:
        raise _status(op, op.c_symbol, st)
    return y


def custom_scratch_bytes(attrs: CustomOpAttrs, input_shapes: Sequence[Sequence[int]], batch: int) -> int:
    """The bytes ``<symbol>_scratch_bytes`` asks for on inputs of ``input_shapes`` and the output of batch
    ``batch`` (0 when the function has no such twin); what the standalone C export reserves."""
    op = custom_op_def(attrs.op)
    _, scratch_fn = custom_function(op)
    if scratch_fn is None:
        return 0
    arrays = [np.zeros(tuple(s), dtype=np.int8 if sg else np.uint8) for s, sg in zip(input_shapes, attrs.x_signed)]
    y = np.zeros((batch, *attrs.shape), dtype=np.int8 if attrs.y_signed else np.uint8)
    return _Call(attrs, arrays, y).scratch_bytes(op)


def compile_custom_op(
    sources: Sequence[Union[str, Path]],
    output: Union[str, Path],
    *,
    cc: Optional[str] = None,
    cflags: Sequence[str] = ("-O2",),
) -> Path:
    """Build C99 ``sources`` into the shared library ``output`` (``-std=c99 -shared -fPIC``, the kernel
    library's ``include`` folder on the path) with ``cc`` (default ``$CC`` or ``cc``); the path of the library.
    ``RuntimeError`` with the compiler's messages when the build fails."""
    compiler = shlex.split(cc or os.environ.get("CC") or "cc")
    srcs = [str(s) for s in sources]
    if not srcs:
        raise ValueError("compile_custom_op: sources must name at least one C file")
    out = Path(output)
    cmd = [*compiler, "-std=c99", "-shared", "-fPIC", *cflags, f"-I{INCLUDE_DIR}", *srcs, "-o", str(out)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as err:
        raise RuntimeError(f"compile_custom_op: cannot run the C compiler {compiler[0]!r}: {err}") from None
    if done.returncode != 0:
        raise RuntimeError(f"compile_custom_op: {' '.join(cmd)} failed:\n{done.stderr.strip()}")
    return out
