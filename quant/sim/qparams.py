"""Quantization parameters from an observed range: ``qparams_from_range``.

Given the smallest and largest value seen (per tensor, per channel or per group, in the
shape :func:`quant.sim.functional.qparams_shape` gives), choose the scale ``s`` and zero
point ``z`` of ``q = clamp(round(x / s) + z, qmin, qmax)``. All arithmetic is float32
(the formulas are those of ``torch.ao.quantization``'s observers, which the tests use
as a peer), with ``Qn = qmin`` and ``Qp = qmax`` of the spec:

1. The range is widened to contain 0: ``lo = min(min_val, 0)``, ``hi = max(max_val, 0)``,
   so that the real value 0 has an exact code (padding, ReLU zeros).
2. The scale:

   * signed symmetric: ``s = max(-lo, hi) / qmax`` (binary, ``qmax = 1``: ``s = max(-lo, hi)``);
   * unsigned symmetric: ``s = hi / qmax``. Negative values cannot be represented: they
     are ignored here and clip to 0 when quantized;
   * asymmetric: ``s = (hi - lo) / (qmax - qmin)``.

3. A degenerate range (width 0: all observed values are 0, or all are negative for an
   unsigned symmetric spec) gets ``s = 1.0``: any positive scale represents 0 exactly,
   and 1.0 keeps later arithmetic finite. Otherwise ``s = max(s, eps)`` with
   ``eps = torch.finfo(torch.float32).eps`` so that ``s > 0`` always, also when a nonzero
   but subnormal range divides to 0 in float32 (as torch.ao's observers do).
4. ``scale="pow2"``: ``s = 2^ceil(log2(s))``, computed exactly from the binary exponent
   (``frexp``). Rounding up never clips more than the float scale would.
5. The zero point: 0 for symmetric specs; asymmetric
   ``z = clamp(qmin - round_half_even(lo / s), qmin, qmax)`` with the final ``s``.

The scale is a float32 tensor and the zero point an int32 tensor, both of the shape of
``min_val``. Non-finite statistics, ``min_val > max_val`` anywhere, and a scale that
overflows float32 raise ``ValueError``.

>>> import torch
>>> from quant.contract.spec import QuantSpec
>>> s, z = qparams_from_range(torch.tensor(-1.0), torch.tensor(3.0), QuantSpec(bits=4, signed=False, symmetric=False))
>>> s.item(), z.item()
(0.2666666805744171, 4)
>>> s, z = qparams_from_range(torch.tensor([-2.0, 0.0]), torch.tensor([1.0, 0.0]), QuantSpec(bits=4, granularity="channel", axis=0))
>>> s.tolist(), z.tolist()
([0.2857142984867096, 1.0], [0, 0])
>>> qparams_from_range(torch.tensor(-3.0), torch.tensor(3.0), QuantSpec(bits=4, scale="pow2"))[0].item()
0.5
"""

from __future__ import annotations

import math
import struct
from typing import Union

import torch

from quant.sim.functional import QParams
from quant.contract.spec import QuantSpec

__all__ = ["SCALE_EPS", "float32", "qparams_from_range", "range_to_qparams", "range_to_qparams_scalar", "pow2_ceil"]

#: The smallest scale ``qparams_from_range`` returns (float32 machine epsilon).
SCALE_EPS: float = float(torch.finfo(torch.float32).eps)

RangeLike = Union[torch.Tensor, float]


def pow2_ceil(s: torch.Tensor) -> torch.Tensor:
    """The smallest power of two ``>= s``, elementwise, for finite ``s > 0``; exact.

    ``frexp`` gives ``s = m * 2^e`` with ``m`` in [0.5, 1): a power of two has ``m = 0.5``
    and is kept, anything else becomes ``2^e``.

    >>> import torch
    >>> pow2_ceil(torch.tensor([0.25, 0.3, 1.0, 5.0])).tolist()
    [0.25, 0.5, 1.0, 8.0]
    """
    mant, exp = torch.frexp(s)
    return torch.where(mant == 0.5, s, torch.ldexp(torch.ones_like(s), exp))


def _as_float32(value: RangeLike, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if not (value.is_floating_point() or value.dtype in (torch.int8, torch.int16, torch.int32, torch.int64)):
            raise TypeError(f"qparams_from_range: {name} must be a real tensor, got {value.dtype}")
        return value.detach().to(torch.float32)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"qparams_from_range: {name} must be a tensor or a number, got {type(value).__name__}")
    return torch.tensor(float(value), dtype=torch.float32)


def qparams_from_range(min_val: RangeLike, max_val: RangeLike, spec: QuantSpec) -> QParams:
    """``(scale, zero_point)`` covering ``[min_val, max_val]`` under ``spec`` (see the module doc).

    ``min_val`` and ``max_val`` are tensors of one shape (the granularity's
    :func:`~quant.sim.functional.qparams_shape`) or numbers; the result has that shape,
    float32 scale and int32 zero point.
    """
    if not isinstance(spec, QuantSpec):
        raise TypeError(f"qparams_from_range: spec must be a QuantSpec, got {type(spec).__name__}")
    lo = _as_float32(min_val, "min_val")
    hi = _as_float32(max_val, "max_val")
    if lo.shape != hi.shape:
        raise ValueError(
            f"qparams_from_range: min_val has shape {tuple(lo.shape)} but max_val has shape {tuple(hi.shape)}"
        )
    if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
        raise ValueError("qparams_from_range: min_val and max_val must be finite (the observed data had NaN or Inf)")
    if bool((lo > hi).any()):
        raise ValueError("qparams_from_range: min_val > max_val for some element; the range is empty")
    scale, zero_point = range_to_qparams(lo, hi, spec)
    if not bool(torch.isfinite(scale).all()):
        raise ValueError(f"qparams_from_range: the range is too wide for a float32 scale under {spec.describe()}")
    return scale, zero_point


def range_to_qparams(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> QParams:
    """:func:`qparams_from_range` without the input checks (no host synchronization).

    For callers that produced finite float32 ``lo <= hi`` themselves (the observers).
    """
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    if spec.symmetric:
        width = torch.maximum(-lo, hi) if spec.signed else hi
        levels = float(spec.qmax)
    else:
        width = hi - lo
        levels = float(spec.qmax - spec.qmin)
    scale = width / levels
    if not spec.symmetric:
        # hi - lo of a float32 range can exceed float32 (+-3e38) while its scale fits: those in float64 (no
        # host sync; a symmetric width is one finite bound, never this case)
        exact = hi.to(torch.float64) - lo.to(torch.float64)
        scale = torch.where(torch.isinf(width), (exact / levels).to(torch.float32), scale)
    scale = torch.where(width == 0.0, torch.ones_like(scale), torch.clamp(scale, min=SCALE_EPS))
    if spec.scale == "pow2":
        scale = pow2_ceil(scale)
    if spec.symmetric:
        zero_point = torch.zeros(scale.shape, dtype=torch.int32, device=scale.device)
    else:
        zero_point = torch.clamp(spec.qmin - torch.round(lo / scale), spec.qmin, spec.qmax).to(torch.int32)
    return scale, zero_point


_F32 = struct.Struct("f")


def float32(v: float) -> float:
    """``v`` rounded to the nearest float32 (ties to even; +-Inf past the largest float32), as a Python float.

    One float32 operation on float32 operands computed in float64 and then rounded this way gives the
    correctly rounded float32 result (float64 holds more than twice float32's precision), which is how
    :func:`range_to_qparams_scalar` reproduces torch's float32 arithmetic.

    >>> float32(0.1), float32(1e39)
    (0.10000000149011612, inf)
    """
    try:
        result: float = _F32.unpack(_F32.pack(v))[0]
        return result
    except OverflowError:  # rounds past the largest float32
        return math.copysign(math.inf, v)


def range_to_qparams_scalar(lo: float, hi: float, spec: QuantSpec) -> tuple[float, int]:
    """:func:`range_to_qparams` of one float32 range given as Python floats (``lo <= hi``, finite): the same
    ``(scale, zero_point)``, bit for bit, without a tensor operation (the observers' per-tensor fast path)."""
    lo = min(lo, 0.0)
    hi = max(hi, 0.0)
    if spec.symmetric:
        width = max(-lo, hi) if spec.signed else hi
        levels = float(spec.qmax)
    else:
        width = float32(hi - lo)
        levels = float(spec.qmax - spec.qmin)
    if math.isinf(width):  # the float32 difference overflows: the float64 one, divided, then rounded
        scale = float32((hi - lo) / levels)
    else:
        scale = float32(width / levels)
    scale = 1.0 if width == 0.0 else max(scale, SCALE_EPS)
    if spec.scale == "pow2":
        mant, exp = math.frexp(scale)
        scale = scale if mant == 0.5 else math.ldexp(1.0, exp)
    if spec.symmetric:
        return scale, 0
    ratio = float32(lo / scale)
    zero_point = spec.qmin - round(ratio)  # round(): ties to even, as torch.round; exact in float32 here
    return scale, min(max(zero_point, spec.qmin), spec.qmax)
