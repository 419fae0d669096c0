"""Validation and zero-point shifting of the (x, w, bias) operands of conv2d and linear."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from quant.contract.datapath import Datapath
from quant.contract.args import check_zero_point, scalar_int
from quant.reference._checks import check_codes, int_tensor

ZeroPointLike = Union[int, Sequence[int], torch.Tensor]


def shifted_input(x: torch.Tensor, x_zero_point: object, datapath: Datapath, op: str, ndim: int) -> torch.Tensor:
    """``x - z_x`` (int64) after checking codes and zero point against the activation operand."""
    xt = int_tensor(x, "x", op, ndim)
    check_codes(xt, "x", op, datapath.a_bits, datapath.a_signed)
    zx = scalar_int(x_zero_point, "x_zero_point", op)
    check_zero_point(zx, "x_zero_point", op, datapath.a_bits, datapath.a_signed, datapath.a_zero_point)
    return xt - zx


def shifted_weight(w: object, w_zero_point: ZeroPointLike, datapath: Datapath, op: str, ndim: int) -> torch.Tensor:
    """``w - z_w`` (int64; ``z_w`` per tensor or per output channel) after checking codes and zero points."""
    if not isinstance(w, torch.Tensor):
        raise TypeError(
            f"{op}: w must be an integer torch.Tensor of codes (the reference takes unpacked weights: "
            f"use quant.reference.packing.unpack), got {type(w).__name__}"
        )
    wt = int_tensor(w, "w", op, ndim)
    check_codes(wt, "w", op, datapath.w_bits, datapath.w_signed)
    c_out = wt.shape[0]
    if isinstance(w_zero_point, (torch.Tensor, list, tuple)):
        zw = torch.as_tensor(w_zero_point)
        if zw.is_floating_point() or zw.dtype == torch.bool:
            raise TypeError(f"{op}: w_zero_point must be integers, got {zw.dtype}")
        zw = zw.to(torch.int64).reshape(-1)
        if zw.numel() == 1:
            zw = zw.expand(c_out)
        if zw.numel() != c_out:
            raise ValueError(f"{op}: w_zero_point has {zw.numel()} values, w has {c_out} output channels")
    else:
        zw = torch.full((c_out,), scalar_int(w_zero_point, "w_zero_point", op), dtype=torch.int64)
    for z in sorted(set(zw.tolist())):
        check_zero_point(int(z), "w_zero_point", op, datapath.w_bits, datapath.w_signed, datapath.w_zero_point)
    return wt - zw.reshape((-1,) + (1,) * (ndim - 1))


def checked_bias(bias: Optional[torch.Tensor], c_out: int, datapath: Datapath, op: str) -> Optional[torch.Tensor]:
    """The int64 bias ``(C_out,)`` or None; ``ValueError`` if a value does not fit ``bias_bits``."""
    if bias is None:
        return None
    bt = int_tensor(bias, "bias", op, 1)
    if bt.numel() != c_out:
        raise ValueError(f"{op}: bias has {bt.numel()} values, expected one per output channel ({c_out})")
    lo, hi = datapath.bias_range
    if bt.numel() and (int(bt.min()) < lo or int(bt.max()) > hi):
        raise ValueError(
            f"{op}: bias has values in [{int(bt.min())}, {int(bt.max())}] outside the "
            f"{datapath.bias_bits}-bit range [{lo}, {hi}] (Datapath.bias_bits)"
        )
    return bt
