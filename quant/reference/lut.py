"""Table lookup on codes (docs/arithmetic.md section 6): the exact form of any elementwise function of a b-bit input.

``y = table[x - qmin]`` for a table of ``2^b`` output codes, one per input code in
increasing order (``qmin = -2^(b-1)`` signed, ``0`` unsigned). Binary codes {-1, +1}
index the table by their stored bit: ``-1 -> table[0]``, ``+1 -> table[1]``. With
``channels`` tables (shape ``(channels, 2^b)``), element ``x[n, c, ...]`` reads row ``c``: the
exact form of a function with per-channel parameters (PReLU).

>>> lut(torch.tensor([-2, -1, 0, 1]), torch.tensor([0, 0, 0, 1]), x_bits=2, x_signed=True).tolist()  # ReLU on int2
[0, 0, 0, 1]
>>> lut(torch.tensor([[-2, -2]]), torch.tensor([[-2, -1, 0, 1], [-1, -1, 0, 1]]), x_bits=2, x_signed=True,
...     channels=2).tolist()                                       # PReLU with slopes 1 and 1/2
[[-2, -1]]
"""

from __future__ import annotations

import torch

from quant.contract.attrs import LutAttrs
from quant.reference._checks import check_codes, int_tensor

__all__ = ["lut", "run_lut"]


def lut(x: torch.Tensor, table: torch.Tensor, *, x_bits: int, x_signed: bool, channels: int = 1) -> torch.Tensor:
    """``table[x - qmin]`` as int64, shape of ``x``; ``table`` is an integer tensor of ``2^x_bits`` entries, or
    of shape ``(channels, 2^x_bits)``: row ``c`` for the elements of channel ``c`` (axis 1 of ``x``)."""
    return run_lut(LutAttrs.build(x_bits=x_bits, x_signed=x_signed, channels=channels), x, table)


def run_lut(attrs: LutAttrs, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """lut of ``attrs``: ``table[x - qmin]`` as int64, shape of ``x``."""
    op = attrs.op
    xt = int_tensor(x, "x", op)
    tt = int_tensor(table, "table", op, 1 if attrs.channels == 1 else 2)
    attrs.check_table(tt.numel())
    inner = attrs.inner(tuple(xt.shape))
    check_codes(xt, "x", op, attrs.x_bits, attrs.x_signed)
    if attrs.x_bits == 1 and attrs.x_signed:
        index = (xt + 1) // 2
    else:
        index = xt - attrs.x_range[0]
    if attrs.channels > 1:  # row c of the table for the elements of channel c (axis 1)
        channel = (torch.arange(xt.numel()) // inner % attrs.channels).reshape(xt.shape)
        index = index + channel * (1 << attrs.x_bits)
    return tt.reshape(-1)[index]
