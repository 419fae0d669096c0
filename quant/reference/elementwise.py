"""Code-preserving elementwise and layout ops (docs/arithmetic.md section 6): clamp, pad, reshape, flatten.

>>> clamp(torch.tensor([-5, 3, 9]), lo=0, hi=6).tolist()           # fused ReLU6 with z = 0, s = 1
[0, 3, 6]
>>> pad(torch.tensor([[1, 2]]), (1, 0), value=7).tolist()          # F.pad order: last dim first
[[7, 1, 2]]
>>> flatten(torch.zeros(2, 3, 4, dtype=torch.int64)).shape
torch.Size([2, 12])
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from quant.contract.args import scalar_int
from quant.reference._checks import int_tensor

__all__ = ["clamp", "pad", "reshape", "flatten"]


def clamp(q: torch.Tensor, *, lo: int, hi: int) -> torch.Tensor:
    """``min(max(q, lo), hi)`` on integer codes (int64); ``lo <= hi``."""
    qt = int_tensor(q, "q", "clamp")
    lo_i, hi_i = scalar_int(lo, "lo", "clamp"), scalar_int(hi, "hi", "clamp")
    if lo_i > hi_i:
        raise ValueError(f"clamp: lo={lo_i} must be <= hi={hi_i}")
    return torch.clamp(qt, lo_i, hi_i)


def pad(x: torch.Tensor, padding: Sequence[int], *, value: int) -> torch.Tensor:
    """Constant padding with the code ``value`` (the zero point pads a real 0), int64.

    ``padding`` follows ``torch.nn.functional.pad``: ``(left, right[, top, bottom, ...])``
    from the last dimension backwards, all ``>= 0``.
    """
    xt = int_tensor(x, "x", "pad")
    v = scalar_int(value, "value", "pad")
    pads = tuple(padding)
    if len(pads) % 2 or len(pads) // 2 > xt.dim() or any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in pads):
        raise ValueError(f"pad: padding={padding!r} must be pairs of non-negative ints, at most one pair per dimension")
    return F.pad(xt, pads, value=v)


def reshape(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Codes unchanged, new shape (as ``torch.reshape``), int64."""
    return int_tensor(x, "x", "reshape").reshape(tuple(shape))


def flatten(x: torch.Tensor, start_dim: int = 1, end_dim: int = -1) -> torch.Tensor:
    """Codes unchanged, dimensions ``start_dim..end_dim`` merged (as ``torch.flatten``), int64."""
    return torch.flatten(int_tensor(x, "x", "flatten"), start_dim, end_dim)
