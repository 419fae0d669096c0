"""Requantization of accumulators to output codes (docs/arithmetic.md section 5) and the ``requantize`` op (section 6).

``requantize_accumulator`` maps exact int64 accumulators (``|acc| <= 2^31``) to output
codes ``y = clamp(y0 + z_y, lo, hi)`` by the datapath's requantization mode:

* ``fixed_point`` (5.1): ``y0 = multiply_by_quantized_multiplier(acc, M0, e)``, double or single rounding;
* ``float32`` / ``float64`` (5.2, 5.3): ``p = f(acc) * m``, zero point after or before rounding;
* ``pow2`` (5.4): ``y0 = rounding_right_shift(acc, k)`` (``k >= 0``) or ``saturate_int32(acc * 2^-k)``.

Worked example, ``tflite_int8`` and ``tflite_single`` on the docs/peers.md example
(``x = 422480``, ``M0 = 1125735238``, ``e = -1``: exactly ``110734.399...``):

>>> from quant.contract.datapath import Datapath
>>> x, m0, e = torch.tensor(422480), torch.tensor(1125735238), torch.tensor(-1)
>>> multiply_by_quantized_multiplier(x, m0, e, Datapath.preset("tflite_int8")).item()
110735
>>> multiply_by_quantized_multiplier(x, m0, e, Datapath.preset("tflite_single")).item()
110734
>>> requantize(torch.tensor([-3, 0, 5, 300]), in_zero_point=0, multiplier=0.5, y_zero_point=1,
...            datapath=Datapath.preset("fbgemm_int8"), y_signed=False).tolist()   # -1.5 -> -2, 2.5 -> 2
[0, 1, 3, 151]
"""

from __future__ import annotations

from typing import Optional

import torch

from quant.contract.datapath import Datapath
from quant.contract.attrs import RequantizeAttrs
from quant.reference._checks import int_tensor
from quant.reference.integer import (
    INT32_MAX,
    INT32_MIN,
    rounding_right_shift,
    saturate,
    saturating_left_shift,
    saturating_rounding_doubling_high_mul,
)
from quant.contract.multiplier import FixedPointRequant, MultiplierLike, Pow2Requant, RequantParams
from quant.reference.rounding import rounding_fn

__all__ = ["multiply_by_quantized_multiplier", "shift_by_pow2", "requantize_accumulator", "requantize", "run_requantize"]


def multiply_by_quantized_multiplier(
    x: torch.Tensor, multiplier_int: torch.Tensor, shift: torch.Tensor, datapath: Datapath
) -> torch.Tensor:
    """``y0`` of section 5.1 for int64 ``x`` with ``|x| <= 2^31`` (broadcast against ``M0``, ``e``).

    ``double``: ``rounding_right_shift(SRDHM(saturate_int32(x * 2^max(e,0)), M0, N), max(-e,0), rounding)``;
    ``single``: ``rounding_right_shift(x * M0, N - e, rounding)`` when ``N - e >= 1``, else
    ``x * M0 * 2^(e - N)`` (exact, ``|.| < 2^61``).
    """
    n = datapath.multiplier_bits
    e = shift.to(torch.int64)
    m0 = multiplier_int.to(torch.int64)
    if datapath.fixed_point_rounding == "double":
        t = saturating_left_shift(x, torch.clamp(e, min=0), 32)
        h = saturating_rounding_doubling_high_mul(t, m0, n)
        return rounding_right_shift(h, torch.clamp(-e, min=0), datapath.rounding)
    prod = x * m0  # |x| <= 2^31, M0 < 2^31: exact
    total = n - e
    right = rounding_right_shift(prod, torch.clamp(total, min=0), datapath.rounding)
    left = torch.bitwise_left_shift(prod, torch.clamp(-total, min=0))
    return torch.where(total >= 0, right, left)


def shift_by_pow2(x: torch.Tensor, k: torch.Tensor, rounding: str) -> torch.Tensor:
    """``y0`` of section 5.4: ``rounding_right_shift(x, k)`` for ``k >= 0``, ``saturate_int32(x * 2^-k)`` for ``k < 0``."""
    k = k.to(torch.int64)
    right = rounding_right_shift(x, torch.clamp(k, min=0), rounding)
    left = saturating_left_shift(x, torch.clamp(-k, min=0), 32)
    return torch.where(k >= 0, right, left)


def _per_channel(t: torch.Tensor, acc: torch.Tensor, channel_dim: Optional[int], op: str) -> torch.Tensor:
    if t.numel() == 1:
        return t.reshape(())
    if channel_dim is None:
        raise ValueError(f"{op}: a per-channel multiplier of shape {tuple(t.shape)} needs a channel axis")
    d = channel_dim % acc.dim()
    if t.numel() != acc.shape[d]:
        raise ValueError(
            f"{op}: multiplier has {t.numel()} values but dimension {d} of the input has {acc.shape[d]} channels"
        )
    return t.reshape((-1,) + (1,) * (acc.dim() - d - 1))


def requantize_accumulator(
    acc: torch.Tensor,
    params: RequantParams,
    datapath: Datapath,
    *,
    y_zero_point: int,
    lo: int,
    hi: int,
    channel_dim: Optional[int] = None,
    op: str = "requantize",
) -> torch.Tensor:
    """Output codes ``clamp(y0 + z_y, lo, hi)`` (int64) of int64 accumulators ``acc`` (section 5).

    ``params`` comes from :func:`quant.requant_params` for ``datapath``; per-channel
    parameters apply along ``channel_dim`` of ``acc``.
    """
    if acc.numel() and (int(acc.min()) < INT32_MIN or int(acc.max()) > INT32_MAX):
        raise ValueError(f"{op}: accumulator values must lie in the int32 range")
    if params.requant != datapath.requant:
        raise ValueError(f"{op}: params are for requant={params.requant!r}, datapath has {datapath.requant!r}")
    if isinstance(params, FixedPointRequant):
        m0 = _per_channel(torch.from_numpy(params.m0), acc, channel_dim, op)
        e = _per_channel(torch.from_numpy(params.exponent), acc, channel_dim, op)
        y0 = multiply_by_quantized_multiplier(acc, m0, e, datapath)
        return torch.clamp(y0 + y_zero_point, lo, hi)
    if isinstance(params, Pow2Requant):
        k = _per_channel(torch.from_numpy(params.right_shift), acc, channel_dim, op)
        y0 = shift_by_pow2(acc, k, datapath.rounding)
        return torch.clamp(y0 + y_zero_point, lo, hi)
    fdtype = torch.float32 if params.precision == "float32" else torch.float64
    m = _per_channel(torch.from_numpy(params.multiplier), acc, channel_dim, op).to(fdtype)
    p = acc.to(fdtype) * m  # one multiplication rounded to fdtype (float32: fp32(acc) * m)
    rnd = rounding_fn(datapath.rounding)
    if datapath.zero_point_order == "after_rounding":
        # clamp before rounding == clamp after rounding (round is monotone, bounds are integers)
        r = rnd(torch.clamp(p, lo - y_zero_point, hi - y_zero_point))
        return r.to(torch.int64) + y_zero_point
    q = p + torch.tensor(float(y_zero_point), dtype=fdtype)
    return rnd(torch.clamp(q, lo, hi)).to(torch.int64)


def requantize(
    q: torch.Tensor,
    *,
    in_zero_point: int,
    multiplier: MultiplierLike,
    y_zero_point: int,
    y_bits: int = 8,
    y_signed: bool = True,
    axis: Optional[int] = None,
    datapath: Datapath,
) -> torch.Tensor:
    """Requantize integer codes: ``acc = saturate_int32(q - z_in)``, then section 5 with ``multiplier``.

    ``q`` is an integer tensor of any shape whose values lie in the int32 range;
    ``multiplier`` a scalar or, with ``axis``, one value per index of ``q``'s ``axis``.
    Returns int64 codes in the ``y_bits``/``y_signed`` range, same shape as ``q``.
    """
    attrs = RequantizeAttrs.build(
        in_zero_point=in_zero_point, multiplier=multiplier, y_zero_point=y_zero_point, y_bits=y_bits,
        y_signed=y_signed, axis=axis, datapath=datapath,
    )  # fmt: skip
    return run_requantize(attrs, q)


def run_requantize(attrs: RequantizeAttrs, q: torch.Tensor) -> torch.Tensor:
    """requantize of ``attrs`` on ``q``: int64 codes of ``q``'s shape."""
    op = attrs.op
    qt = int_tensor(q, "q", op)
    if qt.numel() and (int(qt.min()) < INT32_MIN or int(qt.max()) > INT32_MAX):
        raise ValueError(f"{op}: q must lie in the int32 range")
    outer, channels, inner = attrs.channel_layout(tuple(qt.shape))
    acc = saturate(qt - attrs.in_zero_point, 32).reshape(outer, channels, inner)
    out = attrs.output
    y = requantize_accumulator(
        acc, attrs.requant, attrs.datapath, y_zero_point=out.zero_point, lo=out.lo, hi=out.hi, channel_dim=1, op=op
    )
    return y.reshape(qt.shape)
