"""What an ONNX file written by :func:`quant.export.export_onnx` holds besides its graph: the metadata keys,
the element types of code tensors, and the datapath the ``qoperator`` form computes.

Metadata (``ModelProto.metadata_props``, every value a string):

* ``lowbit.format``: ``"qoperator"`` or ``"qdq"``; ``lowbit.version``: :data:`METADATA_VERSION`;
* ``lowbit.datapath``: the datapath's preset name, ``lowbit.datapath_knobs``: every field of the
  :class:`~quant.contract.datapath.Datapath` as JSON (sorted keys);
* ``lowbit.program_digest``: :meth:`IntegerProgram.digest() <quant.ir.program.IntegerProgram.digest>`;
* what the graph does not hold, for :func:`quant.export.import_onnx`: ``lowbit.tensors`` (every program
  tensor's scale as a float64, zero point, bits and signedness: the qoperator form's integer ops carry
  unit scales), ``lowbit.nodes`` (each node's op and record arguments: the float64 real multipliers the
  graph holds as float32, the number of weight zero points, the padding as the program wrote it) and
  ``lowbit.origins`` (:attr:`IntegerProgram.origins <quant.ir.program.IntegerProgram.origins>`). The
  importer derives every node from the graph and takes these only where they describe the same
  computation.

>>> code_elem_type(8, False) == onnx.TensorProto.UINT8, code_elem_type(4, True) == onnx.TensorProto.INT4
(True, True)
>>> qoperator_datapath_problems(Datapath.preset("mlas"))
[]
>>> qoperator_datapath_problems(Datapath.preset("fbgemm_int8"))
["quantize_mode='reciprocal_fma' (QuantizeLinear divides: 'division')"]
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import numpy.typing as npt
import onnx

from quant.contract.datapath import Datapath

__all__ = [
    "FORMS",
    "METADATA_VERSION",
    "FORMAT_KEY",
    "VERSION_KEY",
    "DATAPATH_KEY",
    "KNOBS_KEY",
    "DIGEST_KEY",
    "TENSORS_KEY",
    "NODES_KEY",
    "ORIGINS_KEY",
    "MS_DOMAIN",
    "QOPERATOR_MIN_OPSET",
    "code_container",
    "code_elem_type",
    "code_numpy_dtype",
    "float32_array",
    "min_opset_for_bits",
    "qoperator_datapath_problems",
]

#: The two graph forms :func:`quant.export.export_onnx` writes.
FORMS: tuple[str, ...] = ("qoperator", "qdq")
#: Version of the metadata layout below.
METADATA_VERSION = 1

FORMAT_KEY = "lowbit.format"
VERSION_KEY = "lowbit.version"
DATAPATH_KEY = "lowbit.datapath"
KNOBS_KEY = "lowbit.datapath_knobs"
DIGEST_KEY = "lowbit.program_digest"
TENSORS_KEY = "lowbit.tensors"
NODES_KEY = "lowbit.nodes"
ORIGINS_KEY = "lowbit.origins"

#: The domain of ONNX Runtime's contrib ops (QGemm, QLinearGlobalAveragePool, QLinearAdd, ...).
MS_DOMAIN = "com.microsoft"
#: Per-axis DequantizeLinear (per-channel requantize) needs opset 13.
QOPERATOR_MIN_OPSET = 13

_ELEM_TYPES: dict[tuple[int, bool], int] = {
    (8, True): onnx.TensorProto.INT8,
    (8, False): onnx.TensorProto.UINT8,
    (4, True): onnx.TensorProto.INT4,
    (4, False): onnx.TensorProto.UINT4,
    (2, True): onnx.TensorProto.INT2,
    (2, False): onnx.TensorProto.UINT2,
}

#: The first opset whose QuantizeLinear / DequantizeLinear take these element types.
_MIN_OPSET_FOR_BITS: dict[int, int] = {8: 13, 4: 21, 2: 25}


def code_elem_type(bits: int, signed: bool) -> Optional[int]:
    """The ONNX element type holding ``bits``-wide codes exactly (int8/uint8, int4/uint4, int2/uint2), or
    ``None`` for widths ONNX has no type of (1, 3, 5, 6, 7 bits: they travel in an 8-bit container)."""
    return _ELEM_TYPES.get((bits, signed))


def code_container(bits: int, signed: bool) -> tuple[int, int]:
    """``(ONNX element type, width)`` that holds ``bits``-wide codes: their own type (the same width), or the
    8-bit type of their signedness, which holds them with a range narrower than its own.

    >>> code_container(3, False) == (onnx.TensorProto.UINT8, 8), code_container(4, True) == (onnx.TensorProto.INT4, 4)
    (True, True)
    """
    own = _ELEM_TYPES.get((bits, signed))
    if own is not None:
        return own, bits
    return _ELEM_TYPES[(8, signed)], 8


def code_numpy_dtype(signed: bool) -> type[np.integer[Any]]:
    """int8 for signed 8-bit codes, uint8 for unsigned ones."""
    return np.int8 if signed else np.uint8


def min_opset_for_bits(bits: int) -> int:
    """The first opset whose QuantizeLinear/DequantizeLinear hold codes of ``bits`` bits in their own type
    (13 for 8 bits and the 8-bit containers, 21 for int4, 25 for int2)."""
    return _MIN_OPSET_FOR_BITS.get(bits, 13)


def qoperator_datapath_problems(datapath: Datapath) -> list[str]:
    """Why ``datapath`` is not the arithmetic of ONNX Runtime's CPU kernels (empty when it is).

    The ``qoperator`` form is run by ONNX Runtime's MLAS kernels: 8-bit activations with a zero point and
    int8 weights without one (docs/arithmetic.md section 1), an int32 accumulator that wraps (section 4)
    with an int32 bias, requantization by one float32 product with the zero point added after rounding
    half to even (section 5.2), and float inputs quantized by a float32 division rounded half to even
    (section 7, ``QuantizeLinear``). That is the ``mlas`` preset; a datapath differing in any of these
    knobs computes something ONNX Runtime does not.
    """
    want: list[tuple[str, object, str]] = [
        ("w_bits", 8, "int8 weights"), ("w_signed", True, "int8 weights"),
        ("w_zero_point", False, "symmetric weights (MLAS's symmetric kernels)"),
        ("a_bits", 8, "8-bit activations"), ("a_zero_point", True, "activations with a zero point"),
        ("acc_bits", 32, "int32 accumulator"), ("overflow", "wrap", "int32 accumulator"),
        ("bias_bits", 32, "int32 bias"), ("requant", "float32", "one float32 product"),
        ("zero_point_order", "after_rounding", "zero point added after rounding"),
        ("rounding", "half_even", "round half to even"),
        ("quantize_mode", "division", "QuantizeLinear divides"),
        ("quantize_rounding", "half_even", "QuantizeLinear rounds half to even"),
    ]  # fmt: skip
    return [f"{field}={getattr(datapath, field)!r} ({why}: {value!r})" for field, value, why in want
            if getattr(datapath, field) != value]  # fmt: skip


def float32_array(values: Any) -> npt.NDArray[np.float32]:
    """``values`` as a float32 NumPy array (kept as given when already float32)."""
    return np.asarray(values, dtype=np.float32)
