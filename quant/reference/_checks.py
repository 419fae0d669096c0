"""Tensor side of the argument checks of the reference ops: torch tensors in, named errors out.

What is checked is decided once, by :mod:`quant.contract.attrs` and
:func:`quant.contract.args.check_code_values`; these helpers only read a tensor's dtype,
shape and extremes and hand them over, exactly as the C kernels' wrappers do for NumPy arrays.
"""

from __future__ import annotations

from typing import Optional

import torch

from quant.contract.args import check_code_values


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
    if t.numel() == 0:
        return
    has_zero = bits == 1 and signed and bool(torch.any(t == 0))
    check_code_values(int(t.min()), int(t.max()), has_zero, name, op, bits, signed)


def codes_tensor(t: object, name: str, op: str, bits: int, signed: bool, ndim: Optional[int] = None) -> torch.Tensor:
    """``t`` as an int64 tensor of valid ``bits``/``signed`` codes (see :func:`int_tensor`, :func:`check_codes`)."""
    tt = int_tensor(t, name, op, ndim)
    check_codes(tt, name, op, bits, signed)
    return tt


def extremes(t: Optional[torch.Tensor]) -> Optional[tuple[int, int, int]]:
    """``(length, min, max)`` of a 1-D tensor (``(0, 0, 0)`` when empty), or None: what a bias check needs."""
    if t is None:
        return None
    if t.numel() == 0:
        return 0, 0, 0
    return t.numel(), int(t.min()), int(t.max())
