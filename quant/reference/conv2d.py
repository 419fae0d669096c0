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

from quant.contract.datapath import Datapath
from quant.contract.args import IntPair, check_datapath, output_range, pair, scalar_int
from quant.reference._operands import ZeroPointLike, checked_bias, shifted_input, shifted_weight
from quant.reference.accumulate import accumulate
from quant.reference.requantize import requantize_accumulator
from quant.contract.multiplier import MultiplierLike, requant_params

__all__ = ["conv2d", "conv2d_accumulate", "im2col"]


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
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w_ + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"{op}: the output would be empty ({ho}x{wo}) for input {h}x{w_} and kernel {kh}x{kw}")
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
    op = "conv2d"
    datapath = check_datapath(datapath)
    xs = shifted_input(x, x_zero_point, datapath, op, 4)
    ws = shifted_weight(w, w_zero_point, datapath, op, 4)
    groups = scalar_int(groups, "groups", op)
    c_in, c_out = xs.shape[1], ws.shape[0]
    if groups < 1 or c_in % groups or c_out % groups or ws.shape[1] * groups != c_in:
        raise ValueError(
            f"{op}: groups={groups} does not fit x with {c_in} channels and w of shape {tuple(ws.shape)} "
            "(need C_in = groups * w.shape[1] and C_out divisible by groups)"
        )
    st = pair(stride, "stride", op, 1)
    pd = pair(padding, "padding", op, 0)
    dl = pair(dilation, "dilation", op, 1)
    bt = checked_bias(bias, c_out, datapath, op)
    z_y = scalar_int(y_zero_point, "y_zero_point", op)
    lo, hi = output_range(op, y_bits, y_signed, y_min, y_max, z_y)
    params = requant_params(multiplier, datapath)
    if params.shape not in ((), (1,), (c_out,)):
        raise ValueError(f"{op}: multiplier must be a scalar or have one value per output channel ({c_out})")
    acc = conv2d_accumulate(
        xs, ws, bt, stride=st, padding=pd, dilation=dl, groups=groups, datapath=datapath, op=op
    )
    return requantize_accumulator(acc, params, datapath, y_zero_point=z_y, lo=lo, hi=hi, channel_dim=1, op=op)
