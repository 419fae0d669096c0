"""Elementwise multiply of two quantized tensors (docs/arithmetic.md section 6.2).

``acc = (a - z_a) (b - z_b)``, one product held in the ``A``-bit accumulator (``Datapath.overflow``:
wrapped, saturated, or an ``OverflowError`` naming the op), then requantized by section 5 with
``M = s_a s_b / s_y`` to ``clamp(y0 + z_y, lo, hi)``. ``b`` has ``a``'s shape, or ``a``'s leading
dimensions and 1 elsewhere (one factor per channel, as a squeeze-excitation gate).

>>> from quant.contract.datapath import Datapath
>>> a = torch.tensor([[10, -7], [3, 100]]); b = torch.tensor([[2], [-1]])
>>> mul(a, b, a_zero_point=0, b_zero_point=0, multiplier=0.25, y_zero_point=0,
...     datapath=Datapath.preset("tflite_int8")).tolist()     # [20, -14] / 4 and [-3, -100] / 4, ties away
[[5, -4], [-1, -25]]
"""

from __future__ import annotations

from typing import Optional

import torch

from quant.contract.attrs import MulAttrs
from quant.contract.datapath import Datapath
from quant.contract.multiplier import MultiplierLike
from quant.reference._checks import codes_tensor
from quant.reference.integer import wrap
from quant.reference.requantize import requantize_accumulator

__all__ = ["mul", "run_mul"]


def mul(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    a_zero_point: int,
    b_zero_point: int,
    multiplier: MultiplierLike,
    y_zero_point: int,
    y_bits: int = 8,
    y_signed: bool = True,
    y_min: Optional[int] = None,
    y_max: Optional[int] = None,
    datapath: Datapath,
) -> torch.Tensor:
    """Quantized ``a * b`` of activation codes (see the module doc); int64 codes of ``a``'s shape."""
    attrs = MulAttrs.build(
        a_zero_point=a_zero_point, b_zero_point=b_zero_point, multiplier=multiplier, y_zero_point=y_zero_point,
        y_bits=y_bits, y_signed=y_signed, y_min=y_min, y_max=y_max, datapath=datapath,
    )  # fmt: skip
    return run_mul(attrs, a, b)


def run_mul(attrs: MulAttrs, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mul of ``attrs`` on the operands: int64 codes of ``a``'s shape."""
    op, dp = attrs.op, attrs.datapath
    at = codes_tensor(a, "a", op, dp.a_bits, dp.a_signed)
    bt = codes_tensor(b, "b", op, dp.a_bits, dp.a_signed)
    attrs.broadcast(tuple(at.shape), tuple(bt.shape))
    acc = (at - attrs.a_zero_point) * (bt - attrs.b_zero_point)
    lo_acc, hi_acc = dp.acc_range
    if dp.overflow == "wrap":
        acc = wrap(acc, dp.acc_bits)
    elif acc.numel() and (int(acc.min()) < lo_acc or int(acc.max()) > hi_acc):
        if dp.overflow == "error":
            raise OverflowError(f"{op}: a product leaves the {dp.acc_bits}-bit accumulator")
        acc = torch.clamp(acc, lo_acc, hi_acc)
    out = attrs.output
    return requantize_accumulator(acc, attrs.requant, dp, y_zero_point=out.zero_point, lo=out.lo, hi=out.hi, op=op)
