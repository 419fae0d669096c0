"""The structs that cross the binding, as dicts keyed by their C field names.

``kernels/c/include/qk_types.h`` and ``qk.h`` declare the structs; the binding fills them by
field name (``kernels/_ext/qk_module.c``, its tables exported by ``_qk.abi()``); the functions
here are the only place a Python value becomes a field. No field order is written anywhere but
in the headers: ``tests/kernels/test_abi.py`` proves the headers, the binding's tables and these
encoders agree field by field, and that each value lands in the field of its name.

>>> from quant.contract.datapath import Datapath
>>> datapath_struct(Datapath.preset("w4a4_acc16_sat"))["acc_bits"]
16
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import numpy.typing as npt

from kernels import _qk
from quant.contract.attrs import AddAttrs, Conv2dAttrs, OutputCodes
from quant.contract.datapath import Datapath
from quant.contract.multiplier import FixedPointAdd, FixedPointRequant, FloatAdd, FloatRequant, RequantParams

__all__ = [
    "ISAS",
    "add_struct",
    "conv2d_geometry",
    "datapath_struct",
    "isa_code",
    "pool_geometry",
    "requant_struct",
    "weights_struct",
]

#: Instruction-set choices of the hot loops (all give identical results).
ISAS: dict[str, int] = {"auto": _qk.ISA_AUTO, "portable": _qk.ISA_PORTABLE, "avx2": _qk.ISA_X86_AVX2,
                        "avx512_vnni": _qk.ISA_X86_AVX512_VNNI}  # fmt: skip

_OVERFLOW = {"wrap": _qk.OVERFLOW_WRAP, "saturate": _qk.OVERFLOW_SATURATE, "error": _qk.OVERFLOW_ERROR}
_REQUANT = {
    "fixed_point": _qk.REQUANT_FIXED_POINT,
    "float32": _qk.REQUANT_FLOAT32,
    "float64": _qk.REQUANT_FLOAT64,
    "pow2": _qk.REQUANT_POW2,
}
_FIXED_POINT = {"double": _qk.FIXED_POINT_DOUBLE, "single": _qk.FIXED_POINT_SINGLE}
ROUNDING: dict[str, int] = {
    "half_away": _qk.ROUND_HALF_AWAY,
    "half_up": _qk.ROUND_HALF_UP,
    "half_even": _qk.ROUND_HALF_EVEN,
    "floor": _qk.ROUND_FLOOR,
}
_ZP_ORDER = {"after_rounding": _qk.ZP_AFTER_ROUNDING, "before_rounding": _qk.ZP_BEFORE_ROUNDING}


def isa_code(isa: str) -> int:
    """The ``QK_ISA_*`` value of an instruction-set name; ``ValueError`` naming the choices."""
    if isa not in ISAS:
        raise ValueError(f"isa={isa!r} is not one of {', '.join(map(repr, ISAS))}")
    return ISAS[isa]


def datapath_struct(dp: Datapath, op: str = "datapath") -> dict[str, int]:
    """``qk_datapath`` of ``dp``; ``ValueError`` for a value the kernels cannot honour."""
    try:
        return {
            "w_bits": int(dp.w_bits), "w_signed": int(dp.w_signed), "w_zero_point": int(dp.w_zero_point),
            "a_bits": int(dp.a_bits), "a_signed": int(dp.a_signed), "a_zero_point": int(dp.a_zero_point),
            "acc_bits": int(dp.acc_bits), "overflow": _OVERFLOW[dp.overflow], "requant": _REQUANT[dp.requant],
            "multiplier_bits": int(dp.multiplier_bits),
            "fixed_point_rounding": _FIXED_POINT[dp.fixed_point_rounding],
            "rounding": ROUNDING[dp.rounding], "zero_point_order": _ZP_ORDER[dp.zero_point_order],
            "bias_bits": int(dp.bias_bits),
        }  # fmt: skip
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{op}: the kernels cannot run datapath {dp.name!r}: unsupported value {err}") from None


def _flat(a: npt.NDArray[Any], dtype: type[np.generic]) -> npt.NDArray[Any]:
    return np.ascontiguousarray(a.reshape(-1), dtype=dtype)


def requant_struct(params: RequantParams, output: OutputCodes) -> dict[str, Any]:
    """``qk_requant_params``: the arrays of the requantization variant and the output code range."""
    if isinstance(params, FixedPointRequant):
        arrays = {"multiplier": _flat(params.m0, np.int32), "shift": _flat(params.exponent, np.int32), "fmultiplier": None}
    elif isinstance(params, FloatRequant):
        arrays = {"multiplier": None, "shift": None, "fmultiplier": _flat(params.multiplier, np.float32)}
    else:
        arrays = {"multiplier": None, "shift": _flat(params.right_shift, np.int32), "fmultiplier": None}
    return {
        **arrays,
        "y_zero_point": output.zero_point, "y_bits": output.bits, "y_signed": int(output.signed),
        "y_min": output.lo, "y_max": output.hi,
    }  # fmt: skip


def weights_struct(
    data: npt.NDArray[Any], packed_bits: int, zero_point: Sequence[int], cache: Optional[npt.NDArray[np.uint8]] = None
) -> dict[str, Any]:
    """``qk_weights``: codes (or packed rows), ``packed_bits`` (0 unpacked), the zero points and, for conv2d and
    linear, an optional weights cache (``qk_weights.cache``: a writable byte buffer)."""
    struct = {"data": data, "packed_bits": packed_bits, "zero_point": np.array(zero_point, dtype=np.int32)}
    if cache is not None:
        struct["cache"] = cache
    return struct


def add_struct(attrs: AddAttrs) -> dict[str, Any]:
    """``qk_add_params`` of an add record (unused multiplier fields are 0)."""
    p = attrs.params
    fixed = {k: 0 for k in ("a_multiplier", "a_shift", "b_multiplier", "b_shift", "out_multiplier", "out_shift")}
    floats = {"a_fmultiplier": 0.0, "b_fmultiplier": 0.0}
    if isinstance(p, FixedPointAdd):
        for side, rp in (("a", p.a), ("b", p.b), ("out", p.out)):
            fixed[f"{side}_multiplier"], fixed[f"{side}_shift"] = int(rp.m0), int(rp.exponent)
    elif isinstance(p, FloatAdd):
        floats = {"a_fmultiplier": float(p.a.multiplier), "b_fmultiplier": float(p.b.multiplier)}
    else:
        fixed["a_shift"], fixed["b_shift"] = int(p.a.right_shift), int(p.b.right_shift)
    out = attrs.output
    return {
        "a_zero_point": attrs.a_zero_point, "b_zero_point": attrs.b_zero_point, **fixed, **floats,
        "y_zero_point": out.zero_point, "y_bits": out.bits, "y_signed": int(out.signed), "y_min": out.lo,
        "y_max": out.hi,
    }  # fmt: skip


def conv2d_geometry(attrs: Conv2dAttrs, x_shape: Sequence[int]) -> dict[str, int]:
    """``qk_conv2d_geometry`` of a conv2d record on an input of ``x_shape`` (already checked)."""
    n, c_in, h, w = (int(s) for s in x_shape)
    c_out, _, kh, kw = attrs.w_shape
    return {
        "n": n, "c_in": c_in, "h": h, "w": w, "c_out": c_out, "kh": kh, "kw": kw,
        "stride_h": attrs.stride[0], "stride_w": attrs.stride[1], "pad_h": attrs.padding[0], "pad_w": attrs.padding[1],
        "dilation_h": attrs.dilation[0], "dilation_w": attrs.dilation[1], "groups": attrs.groups,
    }  # fmt: skip


def pool_geometry(
    x_shape: Sequence[int],
    window: tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]],
) -> dict[str, int]:
    """``qk_pool2d_geometry`` of an input of ``x_shape`` and a ``(kernel, stride, padding, dilation)`` window."""
    n, c, h, w = (int(s) for s in x_shape)
    k, s, p, d = window
    return {
        "n": n, "c": c, "h": h, "w": w, "kh": k[0], "kw": k[1], "stride_h": s[0], "stride_w": s[1],
        "pad_h": p[0], "pad_w": p[1], "dilation_h": d[0], "dilation_w": d[1],
    }  # fmt: skip
