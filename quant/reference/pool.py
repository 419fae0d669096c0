"""Average and max pooling on codes (docs/arithmetic.md section 6).

``avg_pool2d``: for each window, ``S`` = the sum of the ``c`` valid (unpadded) codes;
``y = rounding_divide(S - c * z, c, Datapath.rounding) + z`` (the count excludes
padding; the output keeps the input's scale and zero point, so no clamp is needed).
``max_pool2d``: the largest valid code of each window (padding never wins).
``kernel_size=None`` pools the whole plane (global pooling, ``stride`` and ``padding``
must be defaults). ``stride=None`` means ``stride = kernel_size``. Output size
``floor((H + 2p - d(k - 1) - 1) / s) + 1`` (no ceil mode); ``padding <= kernel_size // 2``.

>>> from quant.contract.datapath import Datapath
>>> x = torch.tensor([[[[1, 2], [4, 4]]]])
>>> avg_pool2d(x, None, zero_point=0, datapath=Datapath.preset("tflite_int8")).tolist()    # 11/4 = 2.75
[[[[3]]]]
>>> avg_pool2d(x, 2, stride=1, padding=1, zero_point=0, datapath=Datapath.preset("fbgemm_int8")).tolist()
[[[[1, 2, 2], [2, 3, 3], [4, 4, 4]]]]
>>> max_pool2d(x - 9, 2, stride=1, padding=1).tolist()
[[[[-8, -7, -7], [-5, -5, -5], [-5, -5, -5]]]]
"""

from __future__ import annotations

from typing import Optional

import torch

from quant.contract.args import IntPair
from quant.contract.attrs import AvgPool2dAttrs, MaxPool2dAttrs
from quant.contract.datapath import Datapath
from quant.reference._checks import int_tensor
from quant.reference.conv2d import im2col
from quant.reference.integer import rounding_divide

__all__ = ["avg_pool2d", "max_pool2d", "run_avg_pool2d", "run_max_pool2d"]


def avg_pool2d(
    x: torch.Tensor,
    kernel_size: Optional[IntPair],
    stride: Optional[IntPair] = None,
    padding: IntPair = 0,
    *,
    zero_point: int,
    datapath: Datapath,
) -> torch.Tensor:
    """Average pooling of codes ``x (N, C, H, W)``; int64 codes ``(N, C, H_out, W_out)`` (see module doc)."""
    return run_avg_pool2d(AvgPool2dAttrs.build(kernel_size, stride, padding, zero_point=zero_point, datapath=datapath), x)


def max_pool2d(
    x: torch.Tensor,
    kernel_size: Optional[IntPair],
    stride: Optional[IntPair] = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> torch.Tensor:
    """Max pooling of codes ``x (N, C, H, W)``; int64 codes ``(N, C, H_out, W_out)`` (see module doc)."""
    return run_max_pool2d(MaxPool2dAttrs.build(kernel_size, stride, padding, dilation), x)


def _planes(x: torch.Tensor, op: str) -> torch.Tensor:
    return int_tensor(x, "x", op, 4)


def run_max_pool2d(attrs: MaxPool2dAttrs, x: torch.Tensor) -> torch.Tensor:
    """max_pool2d of ``attrs`` on codes ``x (N, C, H, W)``: int64 codes ``(N, C, H_out, W_out)``."""
    op = attrs.op
    xt = _planes(x, op)
    n, c, ho, wo = attrs.output_shape(tuple(xt.shape))
    k, s, p, d = attrs.window.resolve(tuple(xt.shape), op)
    low = torch.iinfo(torch.int64).min
    y = im2col(xt.reshape(n * c, 1, xt.shape[2], xt.shape[3]), k, s, p, d, pad_value=low).amax(dim=(-3, -2, -1))
    if bool(torch.any(y == low)):
        raise ValueError(f"{op}: a dilated window holds only padding and has no maximum (kernel {k}, dilation {d}, padding {p})")
    return y.reshape(n, c, ho, wo)


def run_avg_pool2d(attrs: AvgPool2dAttrs, x: torch.Tensor) -> torch.Tensor:
    """avg_pool2d of ``attrs`` on codes ``x (N, C, H, W)``: int64 codes ``(N, C, H_out, W_out)``."""
    op = attrs.op
    xt = _planes(x, op)
    n, c, ho, wo = attrs.output_shape(tuple(xt.shape))
    k, s, p, d = attrs.window.resolve(tuple(xt.shape), op)
    h, w = xt.shape[2], xt.shape[3]
    z = attrs.zero_point
    total = im2col(xt.reshape(n * c, 1, h, w), k, s, p, d).sum(dim=(-3, -2, -1))  # (N*C, Ho, Wo), padding holds 0
    ones = torch.ones((1, 1, h, w), dtype=torch.int64)
    cnt = im2col(ones, k, s, p, d).sum(dim=(-3, -2, -1))  # (1, Ho, Wo): valid elements per window
    y = rounding_divide(total - cnt * z, cnt, attrs.datapath.rounding) + z
    return y.reshape(n, c, ho, wo)
