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

from quant.contract.datapath import Datapath
from quant.contract.args import check_datapath, output_range, scalar_int
from quant.reference._operands import ZeroPointLike, checked_bias, shifted_input, shifted_weight
from quant.reference.accumulate import accumulate
from quant.reference.requantize import requantize_accumulator
from quant.contract.multiplier import MultiplierLike, requant_params

__all__ = ["linear"]


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
    op = "linear"
    datapath = check_datapath(datapath)
    xs = shifted_input(x, x_zero_point, datapath, op, 2)
    ws = shifted_weight(w, w_zero_point, datapath, op, 2)
    if xs.shape[1] != ws.shape[1]:
        raise ValueError(f"{op}: x has K={xs.shape[1]} but w has K={ws.shape[1]} (w is (N, K))")
    n_out = ws.shape[0]
    bt = checked_bias(bias, n_out, datapath, op)
    z_y = scalar_int(y_zero_point, "y_zero_point", op)
    lo, hi = output_range(op, y_bits, y_signed, y_min, y_max, z_y)
    params = requant_params(multiplier, datapath)
    if params.shape not in ((), (1,), (n_out,)):
        raise ValueError(f"{op}: multiplier must be a scalar or have one value per output channel ({n_out})")
    acc = accumulate(xs[None], ws[None], bt[None] if bt is not None else None, datapath, op=op)[0]
    return requantize_accumulator(acc, params, datapath, y_zero_point=z_y, lo=lo, hi=hi, channel_dim=1, op=op)
