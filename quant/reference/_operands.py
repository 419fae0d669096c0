"""The (x, w, bias) operands of conv2d and linear: checked against their attribute record, zero points subtracted."""

from __future__ import annotations

from typing import Optional, Union

import torch

from quant.contract.attrs import Conv2dAttrs, LinearAttrs
from quant.reference._checks import codes_tensor, extremes, int_tensor

__all__ = ["weight_shape", "shifted_operands"]


def weight_shape(w: object, op: str) -> tuple[int, ...]:
    """The shape of weight codes ``w``: what the op's attribute record needs (the reference takes unpacked codes)."""
    if not isinstance(w, torch.Tensor):
        raise TypeError(
            f"{op}: w must be an integer torch.Tensor of codes (the reference takes unpacked weights: "
            f"use quant.reference.packing.unpack), got {type(w).__name__}"
        )
    return tuple(w.shape)


def shifted_operands(
    attrs: Union[Conv2dAttrs, LinearAttrs], x: object, w: object, bias: object
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """``(x - z_x, w - z_w, bias)`` as int64 after checking codes, shapes and the bias against ``attrs``."""
    op, dp = attrs.op, attrs.datapath
    xt = codes_tensor(x, "x", op, dp.a_bits, dp.a_signed, len(attrs.w_shape))
    attrs.output_shape(tuple(xt.shape))
    if weight_shape(w, op) != attrs.w_shape:
        raise ValueError(f"{op}: w has shape {weight_shape(w, op)}, the op's attributes are for {attrs.w_shape}")
    wt = codes_tensor(w, "w", op, dp.w_bits, dp.w_signed, len(attrs.w_shape))
    bt = None if bias is None else int_tensor(bias, "bias", op, 1)
    attrs.check_bias(extremes(bt))
    zw = torch.tensor(attrs.w_zero_point, dtype=torch.int64)
    ws = wt - zw.reshape((-1,) + (1,) * (wt.dim() - 1))
    return xt - attrs.x_zero_point, ws, bt
