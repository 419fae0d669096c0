"""Integer LayerNorm over the last axis (docs/arithmetic.md section 6.5), in int64.

Per row of ``L`` codes: ``c_i = L q_i - sum q``, ``V = sum c_i^2``, ``W0 = min(V + E, 2^62 - 1)``, the
normalization shift ``P`` (the largest of 0..16 with ``W0 4^P < 2^62``), ``R = max(1, isqrt(floor(W0 4^P / L)))``,
``t_i = rounding_divide(g_i c_i 2^(15+P), R)``, ``acc_i = saturate_int32(t_i + b_i)`` and section 5.

>>> from quant.contract.datapath import Datapath
>>> layernorm(torch.tensor([[10, 20, 30, 40]]), x_bits=8, x_signed=True, eps_term=0, multiplier=2.0 ** -15 / 0.05,
...           y_zero_point=0, datapath=Datapath.preset("fbgemm_int8")).tolist()   # (-1.34, -0.45, 0.45, 1.34) / 0.05
[[-27, -9, 9, 27]]
"""

from __future__ import annotations

from typing import Optional

import torch

from quant.contract.datapath import Datapath
from quant.contract.layernorm import LAYERNORM_FRACTION_BITS, LAYERNORM_MAX_EPS_TERM, LayerNormAttrs
from quant.contract.multiplier import MultiplierLike
from quant.reference._checks import codes_tensor, extremes, int_tensor
from quant.reference.integer import rounding_divide, saturate
from quant.reference.requantize import requantize_accumulator

__all__ = ["layernorm", "run_layernorm", "isqrt"]

_MAX_SHIFT = 16


def isqrt(n: torch.Tensor) -> torch.Tensor:
    """``floor(sqrt(n))`` of int64 values ``0 <= n < 2^62``, exactly (a float64 estimate, corrected)."""
    r = torch.sqrt(n.to(torch.float64)).to(torch.int64)
    for _ in range(2):  # the estimate is within 1 of the root for n < 2^62
        r = torch.where(r * r > n, r - 1, r)
        r = torch.where((r + 1) * (r + 1) <= n, r + 1, r)
    return r


def layernorm(
    x: torch.Tensor,
    *,
    x_bits: int,
    x_signed: bool,
    eps_term: int,
    multiplier: MultiplierLike,
    y_zero_point: int,
    gamma: Optional[torch.Tensor] = None,
    gamma_zero_point: int = 0,
    bias: Optional[torch.Tensor] = None,
    y_bits: int = 8,
    y_signed: bool = True,
    y_min: Optional[int] = None,
    y_max: Optional[int] = None,
    datapath: Datapath,
) -> torch.Tensor:
    """Integer LayerNorm of codes ``x`` over its last axis (see the module doc); int64 codes of ``x``'s shape."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise TypeError("layernorm: x must be an integer torch.Tensor of at least one dimension")
    attrs = LayerNormAttrs.build(
        length=int(x.shape[-1]), x_bits=x_bits, x_signed=x_signed, eps_term=eps_term, multiplier=multiplier,
        y_zero_point=y_zero_point, gamma_zero_point=gamma_zero_point, y_bits=y_bits, y_signed=y_signed, y_min=y_min,
        y_max=y_max, datapath=datapath,
    )  # fmt: skip
    return run_layernorm(attrs, x, gamma, bias)


def run_layernorm(
    attrs: LayerNormAttrs, x: torch.Tensor, gamma: Optional[torch.Tensor], bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """layernorm of ``attrs`` on codes ``x`` with int8 ``gamma`` codes and int32 ``bias`` (either may be None)."""
    op = attrs.op
    xt = codes_tensor(x, "x", op, attrs.x_bits, attrs.x_signed)
    rows, n = attrs.rows(tuple(xt.shape)), attrs.length
    g = None if gamma is None else codes_tensor(gamma, "gamma", op, 8, True, ndim=1)
    b = None if bias is None else int_tensor(bias, "bias", op, ndim=1)
    attrs.check_params(extremes(g), extremes(b))
    q = xt.reshape(rows, n)
    c = n * q - q.sum(dim=1, keepdim=True)  # |c| < 2^23
    v = (c * c).sum(dim=1, keepdim=True)  # < 2^60
    w0 = torch.clamp(v + attrs.eps_term, max=LAYERNORM_MAX_EPS_TERM)
    p = torch.zeros_like(w0)
    for k in range(1, _MAX_SHIFT + 1):  # the largest P with W0 4^P < 2^62 (W0 < 2^62 / 4^k as an exact bound)
        p = torch.where(w0 < (1 << (62 - 2 * k)), torch.full_like(p, k), p)
    r = torch.clamp(isqrt(torch.div(w0 << (2 * p), n, rounding_mode="floor")), min=1)
    gc = c if g is None else (g - attrs.gamma_zero_point).reshape(1, n) * c  # |g c| < 2^31
    t = rounding_divide(gc << (LAYERNORM_FRACTION_BITS + p), r, attrs.datapath.rounding)
    acc = saturate(t if b is None else t + b.reshape(1, n), 32)
    out = attrs.output
    y = requantize_accumulator(acc, attrs.requant, attrs.datapath, y_zero_point=out.zero_point, lo=out.lo, hi=out.hi,
                               channel_dim=1, op=op)  # fmt: skip
    return y.reshape(xt.shape)
