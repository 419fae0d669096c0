"""Integer linear / matmul (docs/arithmetic.md sections 4 and 5).

``acc[m, n] = bias[n] + sum_k (x[m, k] - z_x) * (w[n, k] - z_w[n])`` over increasing ``k``
(canonical order), in ``Datapath.acc_bits`` bits with ``Datapath.overflow``, then
requantized with the per-tensor or per-output-channel ``multiplier``. Returns int64
codes ``(M, N)``.

>>> from quant.contract.datapath import Datapath
>>> x = torch.tensor([[130, 120]]); w = torch.tensor([[2, -1], [1, 1]])
>>> linear(x, w, None, x_zero_point=128, w_zero_point=0, y_zero_point=100, multiplier=[0.25, 0.5],
...        y_signed=False, datapath=Datapath.preset("fbgemm_int8")).tolist()   # acc [12, -6] -> [3, -3]
[[103, 97]]
"""

from __future__ import annotations

from typing import Optional

import torch

from quant.contract.attrs import LinearAttrs, ZeroPointLike
from quant.contract.datapath import Datapath
from quant.contract.multiplier import MultiplierLike
from quant.reference._operands import shifted_operands, weight_shape
from quant.reference.accumulate import accumulate
from quant.reference.requantize import requantize_accumulator

__all__ = ["linear", "run_linear"]


def linear(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: Optional[torch.Tensor],
    *,
    x_zero_point: int,
    w_zero_point: ZeroPointLike,
    y_zero_point: int,
    multiplier: MultiplierLike,
    y_bits: int = 8,
    y_signed: bool = True,
    y_min: Optional[int] = None,
    y_max: Optional[int] = None,
    datapath: Datapath,
) -> torch.Tensor:
    """Quantized ``y = x @ w.T`` on codes: ``x (M, K)``, ``w (N, K)`` (unpacked), ``bias (N,)`` or None."""
    attrs = LinearAttrs.build(
        w_shape=weight_shape(w, "linear"), x_zero_point=x_zero_point, w_zero_point=w_zero_point,
        y_zero_point=y_zero_point, multiplier=multiplier, y_bits=y_bits, y_signed=y_signed, y_min=y_min,
        y_max=y_max, datapath=datapath,
    )  # fmt: skip
    return run_linear(attrs, x, w, bias)


def run_linear(attrs: LinearAttrs, x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """linear of ``attrs`` on the operands: int64 codes ``(M, N)``."""
    xs, ws, bt = shifted_operands(attrs, x, w, bias)
    acc = accumulate(xs[None], ws[None], bt[None] if bt is not None else None, attrs.datapath, op=attrs.op)[0]
    out = attrs.output
    return requantize_accumulator(
        acc, attrs.requant, attrs.datapath, y_zero_point=out.zero_point, lo=out.lo, hi=out.hi, channel_dim=1, op=attrs.op
    )
