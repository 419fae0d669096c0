"""Table lookup on codes (docs/arithmetic.md section 6): the exact form of any elementwise function of a b-bit input.

``y = table[x - qmin]`` for a table of ``2^b`` output codes, one per input code in
increasing order (``qmin = -2^(b-1)`` signed, ``0`` unsigned). Binary codes {-1, +1}
index the table by their stored bit: ``-1 -> table[0]``, ``+1 -> table[1]``.

>>> lut(torch.tensor([-2, -1, 0, 1]), torch.tensor([0, 0, 0, 1]), x_bits=2, x_signed=True).tolist()  # ReLU on int2
[0, 0, 0, 1]
"""

from __future__ import annotations

import torch

from quant.contract.codes import code_range
from quant.reference._checks import check_codes, int_tensor

__all__ = ["lut"]


def lut(x: torch.Tensor, table: torch.Tensor, *, x_bits: int, x_signed: bool) -> torch.Tensor:
    """``table[x - qmin]`` as int64, shape of ``x``; ``table`` is an integer tensor of ``2^x_bits`` entries."""
    op = "lut"
    if isinstance(x_bits, bool) or not isinstance(x_bits, int) or not 1 <= x_bits <= 8:
        raise ValueError(f"{op}: x_bits={x_bits!r} must be an integer in 1..8")
    if not isinstance(x_signed, bool):
        raise TypeError(f"{op}: x_signed must be a bool, got {type(x_signed).__name__}")
    xt = int_tensor(x, "x", op)
    tt = int_tensor(table, "table", op, 1)
    if tt.numel() != 1 << x_bits:
        raise ValueError(f"{op}: table has {tt.numel()} entries, expected 2^x_bits = {1 << x_bits}")
    check_codes(xt, "x", op, x_bits, x_signed)
    if x_bits == 1 and x_signed:
        index = (xt + 1) // 2
    else:
        index = xt - code_range(x_bits, x_signed)[0]
    return tt[index]
