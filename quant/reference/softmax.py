"""Integer softmax over one axis (docs/arithmetic.md section 6.3).

For codes ``q`` along the axis with maximum ``m``: ``E = table[m - q]`` (the exponentials
``round(2^16 exp(-s_x (m - q)))`` of :func:`quant.contract.attrs.softmax_table`), ``S = sum E``
exactly, ``y = clamp(rounding_divide(E 2^y_bits, S, Datapath.rounding) + z_y, lo, hi)``: codes of
scale ``2^-y_bits`` and zero point 0 (unsigned) or ``-2^(y_bits-1)`` (signed).

>>> from quant.contract.attrs import softmax_table
>>> from quant.contract.datapath import Datapath
>>> softmax(torch.tensor([[4, 4, 0]]), axis=1, x_bits=8, x_signed=True, table=softmax_table(0.5, 8),
...         datapath=Datapath.preset("fbgemm_int8")).tolist()   # e^0, e^0, e^-2 of 2.135: 0.468, 0.468, 0.063
[[120, 120, 16]]
"""

from __future__ import annotations

from typing import Sequence

import torch

from quant.contract.attrs import SoftmaxAttrs
from quant.contract.datapath import Datapath
from quant.reference._checks import codes_tensor
from quant.reference.integer import rounding_divide

__all__ = ["softmax", "run_softmax"]


def softmax(
    x: torch.Tensor,
    *,
    axis: int,
    x_bits: int,
    x_signed: bool,
    table: Sequence[int],
    y_bits: int = 8,
    y_signed: bool = False,
    datapath: Datapath,
) -> torch.Tensor:
    """Integer softmax of codes ``x`` over ``axis`` (see the module doc); int64 codes of ``x``'s shape."""
    attrs = SoftmaxAttrs.build(axis=axis, x_bits=x_bits, x_signed=x_signed, table=table, y_bits=y_bits,
                               y_signed=y_signed, datapath=datapath)  # fmt: skip
    return run_softmax(attrs, x)


def run_softmax(attrs: SoftmaxAttrs, x: torch.Tensor) -> torch.Tensor:
    """softmax of ``attrs`` on codes ``x``."""
    op = attrs.op
    xt = codes_tensor(x, "x", op, attrs.x_bits, attrs.x_signed)
    attrs.layout(tuple(xt.shape))
    table = torch.tensor(attrs.table, dtype=torch.int64)
    m = xt.amax(dim=attrs.axis, keepdim=True)
    e = table[m - xt]
    total = e.sum(dim=attrs.axis, keepdim=True)
    y = rounding_divide(e * (1 << attrs.output.bits), total, attrs.datapath.rounding) + attrs.output.zero_point
    return torch.clamp(y, attrs.output.lo, attrs.output.hi)
