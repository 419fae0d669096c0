"""Integer conv2d (docs/arithmetic.md sections 4 and 5): accumulate in A bits, then requantize.

For output ``(n, c_out, i, j)`` with ``G = groups`` and ``g = c_out // (C_out / G)``::

    acc = bias[c_out] + sum_{c, u, v} (x[n, g*C_in/G + c, i*s_h + u*d_h - p_h, j*s_w + v*d_w - p_w] - z_x)
                                      * (w[c_out, c, u, v] - z_w[c_out])

over ``(c, u, v)`` in increasing flattened order (the canonical order of section 4); padded
positions hold ``z_x`` (their term is 0). ``acc`` follows ``Datapath.overflow`` in
``Datapath.acc_bits`` bits and is requantized with the per-tensor or per-output-channel
``multiplier`` (section 5). Output int64 codes ``(N, C_out, H_out, W_out)`` with
``H_out = floor((H + 2 p_h - d_h (kh - 1) - 1) / s_h) + 1``.

>>> from quant.contract.datapath import Datapath
>>> x = torch.tensor([[[[1, 2], [3, 4]]]]); w = torch.tensor([[[[1, -1], [2, 0]]]])
>>> conv2d(x, w, torch.tensor([10]), x_zero_point=1, w_zero_point=0, y_zero_point=-3, multiplier=0.5,
...        datapath=Datapath.preset("tflite_int8")).tolist()   # acc = 10 + 0 - 1 + 4 = 13; 6.5 -> 7; 7 - 3
[[[[4]]]]
"""

from __future__ import annotations

import sys
from typing import Optional

import torch
import torch.nn.functional as F

from quant.contract.args import IntPair
from quant.contract.attrs import Conv2dAttrs, ZeroPointLike
from quant.contract.codes import window_output_size
from quant.contract.datapath import Datapath
from quant.contract.multiplier import MultiplierLike
from quant.reference._operands import shifted_operands, weight_shape
from quant.reference.accumulate import accumulate
from quant.reference.requantize import requantize_accumulator

__all__ = ["conv2d", "run_conv2d", "conv2d_accumulate", "im2col"]


def im2col(
    x: torch.Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    pad_value: int = 0,
) -> torch.Tensor:
    """Windows of ``x (N, C, H, W)`` as ``(N, H_out, W_out, C, kh, kw)`` (int64; padding holds ``pad_value``)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    xp = F.pad(x, (pw, pw, ph, ph), value=pad_value) if (ph or pw) else x
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    win = xp.unfold(2, span_h, sh).unfold(3, span_w, sw)  # (N, C, Ho, Wo, span_h, span_w)
    win = win[..., ::dh, ::dw]
    return win.permute(0, 2, 3, 1, 4, 5)


def conv2d_accumulate(
    xs: torch.Tensor,
    ws: torch.Tensor,
    bias: Optional[torch.Tensor],
    *,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    datapath: Datapath,
    op: str = "conv2d",
) -> torch.Tensor:
    """A-bit accumulators ``(N, C_out, H_out, W_out)`` of zero-point-shifted ``xs`` and ``ws`` (section 4)."""
    n, c_in, h, w_ = xs.shape
    c_out, cg, kh, kw = ws.shape
    og = c_out // groups
    ho = window_output_size(h, kh, stride=stride[0], padding=padding[0], dilation=dilation[0])
    wo = window_output_size(w_, kw, stride=stride[1], padding=padding[1], dilation=dilation[1])
    k = cg * kh * kw
    wmat = ws.reshape(groups, og, k)
    bmat = bias.reshape(groups, og) if bias is not None else None
    per_image = ho * wo * c_in * kh * kw
    chunk = int(getattr(sys.modules[accumulate.__module__], "CHUNK_ELEMENTS"))
    step = max(1, chunk // max(per_image, 1))
    outs = []
    for start in range(0, n, step):
        cols = im2col(xs[start : start + step], (kh, kw), stride, padding, dilation)  # (b, Ho, Wo, C_in, kh, kw)
        b = cols.shape[0]
        cols = cols.reshape(b, ho * wo, groups, k).permute(2, 0, 1, 3).reshape(groups, b * ho * wo, k)
        acc = accumulate(cols, wmat, bmat, datapath, op=op)  # (G, b*Ho*Wo, og)
        outs.append(acc.reshape(groups, b, ho, wo, og).permute(1, 0, 4, 2, 3).reshape(b, c_out, ho, wo))
    return torch.cat(outs, dim=0)


def conv2d(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: Optional[torch.Tensor],
    *,
    x_zero_point: int,
    w_zero_point: ZeroPointLike,
    y_zero_point: int,
    multiplier: MultiplierLike,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    y_bits: int = 8,
    y_signed: bool = True,
    y_min: Optional[int] = None,
    y_max: Optional[int] = None,
    datapath: Datapath,
) -> torch.Tensor:
    """Quantized conv2d on codes; returns int64 output codes ``(N, C_out, H_out, W_out)`` (see module doc).

    ``x (N, C_in, H, W)`` activation codes; ``w (C_out, C_in/groups, kh, kw)`` weight codes
    (unpacked); ``bias`` int ``(C_out,)`` or None, within ``Datapath.bias_bits``;
    ``w_zero_point`` an int or one per output channel; ``multiplier`` a float or one per
    output channel; ``y_min``/``y_max`` an optional fused clamp in output codes.
    """
    attrs = Conv2dAttrs.build(
        w_shape=weight_shape(w, "conv2d"), x_zero_point=x_zero_point, w_zero_point=w_zero_point,
        y_zero_point=y_zero_point, multiplier=multiplier, stride=stride, padding=padding, dilation=dilation,
        groups=groups, y_bits=y_bits, y_signed=y_signed, y_min=y_min, y_max=y_max, datapath=datapath,
    )  # fmt: skip
    return run_conv2d(attrs, x, w, bias)


def run_conv2d(attrs: Conv2dAttrs, x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """conv2d of ``attrs`` on the operands: int64 codes ``(N, C_out, H_out, W_out)``."""
    xs, ws, bt = shifted_operands(attrs, x, w, bias)
    if xs.shape[0] == 0:  # an empty batch: the empty output (section 6)
        return torch.empty(attrs.output_shape(tuple(xs.shape)), dtype=torch.int64)
    acc = conv2d_accumulate(
        xs, ws, bt, stride=attrs.stride, padding=attrs.padding, dilation=attrs.dilation, groups=attrs.groups,
        datapath=attrs.datapath, op=attrs.op,
    )  # fmt: skip
    out = attrs.output
    return requantize_accumulator(
        acc, attrs.requant, attrs.datapath, y_zero_point=out.zero_point, lo=out.lo, hi=out.hi, channel_dim=1, op=attrs.op
    )
