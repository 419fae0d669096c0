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

from quant.contract.datapath import Datapath
from quant.contract.args import IntPair, check_datapath, pair, scalar_int
from quant.reference._checks import int_tensor
from quant.reference.conv2d import im2col
from quant.reference.integer import rounding_divide

__all__ = ["avg_pool2d", "max_pool2d"]


def _window(
    x: torch.Tensor,
    kernel_size: Optional[IntPair],
    stride: Optional[IntPair],
    padding: IntPair,
    dilation: IntPair,
    op: str,
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    if kernel_size is None:
        if stride is not None or pair(padding, "padding", op, 0) != (0, 0) or pair(dilation, "dilation", op, 1) != (1, 1):
            raise ValueError(f"{op}: global pooling (kernel_size=None) takes no stride, padding or dilation")
        k = (x.shape[2], x.shape[3])
        return k, k, (0, 0), (1, 1)
    k = pair(kernel_size, "kernel_size", op, 1)
    s = pair(stride, "stride", op, 1) if stride is not None else k
    p = pair(padding, "padding", op, 0)
    d = pair(dilation, "dilation", op, 1)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{op}: padding={p} must be at most half the kernel size {k}")
    ho = (x.shape[2] + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    wo = (x.shape[3] + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"{op}: the output would be empty ({ho}x{wo}) for input {tuple(x.shape[2:])} and kernel {k}")
    return k, s, p, d


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
    op = "avg_pool2d"
    datapath = check_datapath(datapath)
    xt = int_tensor(x, "x", op, 4)
    z = scalar_int(zero_point, "zero_point", op)
    k, s, p, d = _window(xt, kernel_size, stride, padding, 1, op)
    n, c, h, w = xt.shape
    win = im2col(xt.reshape(n * c, 1, h, w), k, s, p, d)  # (N*C, Ho, Wo, 1, kh, kw), padding holds 0
    ones = torch.ones((1, 1, h, w), dtype=torch.int64)
    cnt = im2col(ones, k, s, p, d).sum(dim=(-3, -2, -1))  # (1, Ho, Wo): valid elements per window
    total = win.sum(dim=(-3, -2, -1))  # (N*C, Ho, Wo)
    y = rounding_divide(total - cnt * z, cnt, datapath.rounding) + z
    return y.reshape(n, c, y.shape[1], y.shape[2])


def max_pool2d(
    x: torch.Tensor,
    kernel_size: Optional[IntPair],
    stride: Optional[IntPair] = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> torch.Tensor:
    """Max pooling of codes ``x (N, C, H, W)``; int64 codes ``(N, C, H_out, W_out)`` (see module doc)."""
    op = "max_pool2d"
    xt = int_tensor(x, "x", op, 4)
    k, s, p, d = _window(xt, kernel_size, stride, padding, dilation, op)
    n, c, h, w = xt.shape
    low = torch.iinfo(torch.int64).min
    win = im2col(xt.reshape(n * c, 1, h, w), k, s, p, d, pad_value=low)
    y = win.amax(dim=(-3, -2, -1))
    if bool(torch.any(y == low)):
        raise ValueError(f"{op}: a dilated window holds only padding and has no maximum (kernel {k}, dilation {d}, padding {p})")
    return y.reshape(n, c, y.shape[1], y.shape[2])

