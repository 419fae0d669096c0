"""Float to codes at the model input, and codes to float (docs/arithmetic.md section 7).

``quantize`` (``round = Datapath.quantize_rounding``, ``inv = fp32(1 / fp32(s))``, one
correctly rounded float32 division), by ``Datapath.quantize_mode``:

* ``"reciprocal"`` (FBGEMM's scalar ``Quantize``, torchao): ``q = round(fp32(x) * inv) + z``;
* ``"reciprocal_fma"`` (PyTorch ``quantize_per_tensor`` on the fbgemm engine, AVX2
  ``fmadd``): ``q = round(fma(fp32(x), inv, z))``, the zero point inside one fused
  multiply-add rounded once to float32;
* ``"division"`` (TFLite, ONNX ``QuantizeLinear``, ONNX Runtime): ``q = round(fp32(x) / fp32(s)) + z``;

then ``clamp(q, qmin, qmax)``. Binary codes (``bits=1``, signed): ``+1`` if ``x >= 0``
else ``-1``. NaN is a ``ValueError``; ``+-inf`` saturate.

``dequantize``: ``fp32(q - z) * fp32(s)`` in float32.

>>> from quant.contract.datapath import Datapath
>>> x = torch.tensor([0.25, -0.25, 0.75, 100.0])
>>> quantize(x, scale=0.5, zero_point=0, datapath=Datapath.preset("tflite_int8")).tolist()    # ties away
[1, -1, 2, 127]
>>> quantize(x, scale=0.5, zero_point=0, datapath=Datapath.preset("fbgemm_int8")).tolist()    # ties to even
[0, 0, 2, 127]
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from quant.contract.datapath import Datapath
from quant.contract.args import check_datapath
from quant.contract.codes import check_bits, code_range
from quant.reference._checks import int_tensor
from quant.reference.rounding import rounding_fn

__all__ = ["quantize", "dequantize"]

ScaleLike = Union[float, Sequence[float], torch.Tensor]


def _per_axis(v: ScaleLike, name: str, x: torch.Tensor, axis: Optional[int], dtype: torch.dtype, op: str) -> torch.Tensor:
    t = torch.as_tensor(v).to(dtype) if not isinstance(v, torch.Tensor) else v.detach().to(dtype)
    if t.numel() == 1:
        return t.reshape(())
    if axis is None:
        raise ValueError(f"{op}: {name} has {t.numel()} values; pass axis for per-channel parameters")
    if not -x.dim() <= axis < x.dim():
        raise ValueError(f"{op}: axis={axis} is out of range for x of shape {tuple(x.shape)}")
    d = axis % x.dim()
    if t.dim() != 1 or t.numel() != x.shape[d]:
        raise ValueError(f"{op}: {name} must have {x.shape[d]} values along axis {axis}, got shape {tuple(t.shape)}")
    return t.reshape((-1,) + (1,) * (x.dim() - d - 1))


def quantize(
    x: torch.Tensor,
    *,
    scale: ScaleLike,
    zero_point: Union[int, Sequence[int], torch.Tensor],
    bits: int = 8,
    signed: bool = True,
    axis: Optional[int] = None,
    datapath: Datapath,
) -> torch.Tensor:
    """Codes (int64, shape of ``x``) of a floating ``x`` per the datapath's quantize mode and rounding."""
    op = "quantize"
    datapath = check_datapath(datapath)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{op}: x must be a floating tensor")
    bits = check_bits(bits, "bits", op)
    xf = x.detach().to(torch.float32)
    if bool(torch.isnan(xf).any()):
        raise ValueError(f"{op}: x contains NaN; no code represents it")
    if bits == 1 and signed:
        return torch.where(xf >= 0, 1, -1).to(torch.int64)
    s = _per_axis(scale, "scale", xf, axis, torch.float32, op)
    if not bool(torch.all(torch.isfinite(s) & (s > 0))):
        raise ValueError(f"{op}: scale must be finite and > 0 in float32")
    z = _per_axis(zero_point, "zero_point", xf, axis, torch.int64, op)
    qmin, qmax = code_range(bits, signed)
    if bool(torch.any((z < qmin) | (z > qmax))):
        raise ValueError(f"{op}: zero_point must lie in the code range [{qmin}, {qmax}]")
    rnd = rounding_fn(datapath.quantize_rounding)
    inv = torch.tensor(1.0, dtype=torch.float32) / s
    if datapath.quantize_mode == "reciprocal_fma":
        v = torch.clamp(fma_float32(xf, inv, z.to(torch.float32)), qmin, qmax)
        return rnd(v).to(torch.int64)
    v = xf * inv if datapath.quantize_mode == "reciprocal" else xf / s
    zf = z.to(torch.float32)
    v = torch.clamp(v, qmin - zf, qmax - zf)  # == clamping after rounding: bounds are integers
    return rnd(v).to(torch.int64) + z


def fma_float32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``fp32(a * b + c)`` rounded once (a float32 fused multiply-add), for float32 ``a``, ``b``, ``c``.

    ``a * b`` is exact in float64 (24 + 24 bits); the float64 sum with ``c`` is rounded to
    odd (TwoSum error term, then one step toward it when the sum is inexact and even),
    which makes the final conversion to float32 a single correct rounding.

    >>> a, b = torch.tensor([1.0 + 2.0**-23]), torch.tensor([1.0 - 2.0**-23])
    >>> float(fma_float32(a, b, torch.tensor([-1.0])) * 2.0**46)   # exact -2^-46; unfused gives 0
    -1.0
    """
    p = a.to(torch.float64) * b.to(torch.float64)
    c64 = c.to(torch.float64)
    s = p + c64
    bb = s - p
    err = (p - (s - bb)) + (c64 - bb)
    even = (s.view(torch.int64) & 1) == 0
    toward = torch.where(err > 0, torch.full_like(s, float("inf")), torch.full_like(s, float("-inf")))
    odd = torch.where((err != 0) & even & torch.isfinite(s), torch.nextafter(s, toward), s)
    return odd.to(torch.float32)


def dequantize(
    q: torch.Tensor,
    *,
    scale: ScaleLike,
    zero_point: Union[int, Sequence[int], torch.Tensor],
    axis: Optional[int] = None,
) -> torch.Tensor:
    """``fp32(q - z) * fp32(s)`` as float32 (shape of ``q``)."""
    op = "dequantize"
    qt = int_tensor(q, "q", op)
    s = _per_axis(scale, "scale", qt, axis, torch.float32, op)
    z = _per_axis(zero_point, "zero_point", qt, axis, torch.int64, op)
    return (qt - z).to(torch.float32) * s

