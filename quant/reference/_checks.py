"""Tensor argument checks of the reference ops: named ``TypeError``/``ValueError``s.

Scalar arguments (zero points, code and output ranges, pairs) are checked by
:mod:`quant.contract.args`, which the C kernels' wrappers share.
"""

from __future__ import annotations

from typing import Optional

import torch

from quant.contract.codes import code_range


def int_tensor(t: object, name: str, op: str, ndim: Optional[int] = None) -> torch.Tensor:
    """``t`` as an int64 tensor; ``TypeError`` unless it is an integer tensor (with ``ndim`` dims)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be an integer torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{op}: {name} must be an integer tensor of codes, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    return t.to(torch.int64)


def check_codes(t: torch.Tensor, name: str, op: str, bits: int, signed: bool) -> None:
    """``ValueError`` if ``t`` holds a value outside the ``bits``/``signed`` code range (or 0 for binary)."""
    lo, hi = code_range(bits, signed)
    if t.numel() == 0:
        return
    tmin, tmax = int(t.min()), int(t.max())
    kind = "binary" if (bits == 1 and signed) else f"{'int' if signed else 'uint'}{bits}"
    if tmin < lo or tmax > hi:
        raise ValueError(f"{op}: {name} has values in [{tmin}, {tmax}] outside the {kind} code range [{lo}, {hi}]")
    if bits == 1 and signed and bool(torch.any(t == 0)):
        raise ValueError(f"{op}: {name} holds 0, but binary codes are -1 or +1")
