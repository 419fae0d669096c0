"""Elementwise add of two quantized tensors with rescaling (docs/arithmetic.md section 6.1).

Real result ``y = (a - z_a) m_a + (b - z_b) m_b`` in output units, with
``m_a = s_a / s_y`` and ``m_b = s_b / s_y``; output ``clamp(round(y) + z_y, lo, hi)`` where
each requantization mode defines ``round``:

* ``fixed_point`` (TFLite's ADD, generalized): ``L = Datapath.add_left_shift``;
  ``a' = MBQM((a - z_a) * 2^L, r_a)``, ``b' = MBQM((b - z_b) * 2^L, r_b)``,
  ``y0 = MBQM(a' + b', r_out)`` with the parameters of :func:`quant.contract.multiplier.add_params`
  and MBQM the fixed-point multiply of section 5.1 (``multiply_by_quantized_multiplier``);
* ``float32``: ``p = fp32(a - z_a) * fp32(m_a) + fp32(b - z_b) * fp32(m_b)`` (two float32
  products, one float32 sum), then rounded as in section 5.2 (zero point after or before);
* ``float64``: the same in float64 with the float32 multipliers (section 5.3);
* ``pow2``: ``m_a = 2^-k_a``, ``m_b = 2^-k_b``, ``k = max(k_a, k_b)``;
  ``v = (a - z_a) 2^(k - k_a) + (b - z_b) 2^(k - k_b)`` (exact);
  ``y0 = rounding_right_shift(v, k)`` for ``k >= 0``, else ``saturate_int32(v * 2^-k)``.

>>> from quant.contract.datapath import Datapath
>>> a = torch.tensor([10, -7]); b = torch.tensor([3, 3])
>>> add(a, b, a_zero_point=0, b_zero_point=1, a_multiplier=0.5, b_multiplier=0.25, y_zero_point=0,
...     datapath=Datapath.preset("w2a2_pow2_acc16").with_(a_bits=8, a_signed=True)).tolist()  # 5.5 -> 6, -3.0
[6, -3]
"""

from __future__ import annotations

from typing import Optional

import torch

from quant.contract.attrs import AddAttrs
from quant.contract.datapath import Datapath
from quant.reference._checks import codes_tensor
from quant.reference.integer import rounding_right_shift, saturating_left_shift
from quant.reference.requantize import multiply_by_quantized_multiplier
from quant.contract.multiplier import FixedPointAdd, FixedPointRequant, Pow2Add
from quant.reference.rounding import rounding_fn

__all__ = ["add", "run_add"]


def add(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    a_zero_point: int,
    b_zero_point: int,
    a_multiplier: float,
    b_multiplier: float,
    y_zero_point: int,
    y_bits: int = 8,
    y_signed: bool = True,
    y_min: Optional[int] = None,
    y_max: Optional[int] = None,
    datapath: Datapath,
) -> torch.Tensor:
    """Quantized ``a + b`` of two same-shape activation code tensors; returns int64 codes (see module doc)."""
    attrs = AddAttrs.build(
        a_zero_point=a_zero_point, b_zero_point=b_zero_point, a_multiplier=a_multiplier, b_multiplier=b_multiplier,
        y_zero_point=y_zero_point, y_bits=y_bits, y_signed=y_signed, y_min=y_min, y_max=y_max, datapath=datapath,
    )  # fmt: skip
    return run_add(attrs, a, b)


def run_add(attrs: AddAttrs, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """add of ``attrs`` on two same-shape activation code tensors: int64 codes."""
    op, datapath = attrs.op, attrs.datapath
    at = codes_tensor(a, "a", op, datapath.a_bits, datapath.a_signed)
    bt = codes_tensor(b, "b", op, datapath.a_bits, datapath.a_signed)
    if at.shape != bt.shape:
        raise ValueError(f"{op}: a and b must have the same shape, got {tuple(at.shape)} and {tuple(bt.shape)}")
    params, z_y, lo, hi = attrs.params, attrs.output.zero_point, attrs.output.lo, attrs.output.hi
    da, db = at - attrs.a_zero_point, bt - attrs.b_zero_point
    if isinstance(params, FixedPointAdd):

        def mbqm(v: torch.Tensor, prm: FixedPointRequant) -> torch.Tensor:
            return multiply_by_quantized_multiplier(v, torch.from_numpy(prm.m0), torch.from_numpy(prm.exponent), datapath)

        shifted = 1 << params.left_shift
        y0 = mbqm(mbqm(da * shifted, params.a) + mbqm(db * shifted, params.b), params.out)
        return torch.clamp(y0 + z_y, lo, hi)
    if isinstance(params, Pow2Add):
        ka, kb = int(params.a.right_shift), int(params.b.right_shift)
        k = max(ka, kb)
        v = da * (1 << (k - ka)) + db * (1 << (k - kb))
        if k >= 0:
            y0 = rounding_right_shift(v, k, datapath.rounding)
        else:
            y0 = saturating_left_shift(v, -k, 32)
        return torch.clamp(y0 + z_y, lo, hi)
    fdtype = torch.float32 if params.requant == "float32" else torch.float64
    ma = torch.from_numpy(params.a.multiplier).to(fdtype)
    mb = torch.from_numpy(params.b.multiplier).to(fdtype)
    p = da.to(fdtype) * ma + db.to(fdtype) * mb  # two rounded products, one rounded sum (no FMA on CPU eager)
    p = torch.where(torch.isnan(p), torch.zeros((), dtype=fdtype), p)  # +inf + -inf: 0 (section 6.1)
    rnd = rounding_fn(datapath.rounding)
    if datapath.zero_point_order == "after_rounding":
        return rnd(torch.clamp(p, lo - z_y, hi - z_y)).to(torch.int64) + z_y
    q = p + torch.tensor(float(z_y), dtype=fdtype)
    return rnd(torch.clamp(q, lo, hi)).to(torch.int64)
