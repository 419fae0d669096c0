"""Rounding of real tensors to integers, one function per mode of :mod:`quant.contract.rounding`.

Each function maps a floating tensor to the integer-valued floating tensor of the same
dtype and shape; NaN stays NaN and +-Inf stay +-Inf. All are exact: no mode is
computed as ``floor(x + 0.5)``, which is wrong for the float just below 0.5 (in
float32, ``0.49999997 + 0.5`` rounds to ``1.0``).

The modes and their ties are defined in :mod:`quant.contract.rounding` (section 2).

>>> import torch
>>> x = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
>>> round_half_away(x).tolist()
[-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]
>>> round_half_up(x).tolist()
[-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
>>> round_half_up(torch.tensor([0.49999997])).tolist()
[0.0]
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

RoundingFn = Callable[[torch.Tensor], torch.Tensor]


def round_half_even(x: torch.Tensor) -> torch.Tensor:
    """Nearest integer, ties to even (IEEE ``nearbyint`` in the default mode)."""
    return torch.round(x)


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Nearest integer, ties away from zero (C ``round``).

    ``t = trunc(x)`` and ``x - t`` are exact in floating point, so the tie test is exact.
    """
    t = torch.trunc(x)
    return t + torch.where((x - t).abs() >= 0.5, torch.sign(x), torch.zeros_like(x))


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    """Nearest integer, ties toward +infinity: ``floor(x) + (x - floor(x) >= 1/2)``.

    ``x - floor(x)`` is exact whenever it can be close to 1/2, so the tie test is exact.
    """
    f = torch.floor(x)
    return f + ((x - f) >= 0.5).to(x.dtype)


def round_floor(x: torch.Tensor) -> torch.Tensor:
    """Largest integer not above ``x`` (truncation toward -infinity)."""
    return torch.floor(x)


def round_stochastic(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``floor(x + u)`` with ``u ~ U[0, 1)``: rounds up with probability ``x - floor(x)``.

    Unbiased: ``E[round_stochastic(x)] = x``. Pass a seeded ``generator`` for
    reproducible draws.
    """
    u = torch.rand(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    f = torch.floor(x)
    return f + ((x - f) > u).to(x.dtype)


_ROUNDING: dict[str, RoundingFn] = {
    "half_even": round_half_even,
    "half_away": round_half_away,
    "half_up": round_half_up,
    "floor": round_floor,
    "stochastic": round_stochastic,
}


def round_to_integer(x: torch.Tensor, mode: str, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``x`` rounded in ``mode`` (any of ``quant.contract.rounding.ROUNDING_MODES``), as a new tensor;
    ``generator`` seeds the draws of ``stochastic``."""
    if mode == "stochastic":
        return round_stochastic(x, generator)
    return rounding_fn(mode)(x)


def rounding_fn(mode: str) -> RoundingFn:
    """The rounding function of a mode name (one of ``quant.contract.rounding.ROUNDING_MODES``)."""
    try:
        return _ROUNDING[mode]
    except KeyError:
        raise ValueError(f"rounding mode {mode!r} is not one of {', '.join(map(repr, _ROUNDING))}") from None
