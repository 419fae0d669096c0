"""Integer primitives of the datapath (docs/arithmetic.md sections 2, 4 and 5), on int64 tensors.

Every function takes integer tensors (or Python ints), computes exactly in int64 and
returns an int64 tensor; broadcasting follows PyTorch. Names spell the arithmetic, as in
gemmlowp: ``rounding_right_shift`` is ``RoundingDivideByPOT`` generalized to every
rounding mode, ``saturating_rounding_doubling_high_mul`` is gemmlowp's
``SaturatingRoundingDoublingHighMul`` generalized to an ``n``-bit multiplier.

>>> v = torch.tensor([-5, -3, -1, 1, 3, 5])
>>> rounding_right_shift(v, 1, "half_away").tolist()   # -2.5 -1.5 -0.5 0.5 1.5 2.5
[-3, -2, -1, 1, 2, 3]
>>> rounding_right_shift(v, 1, "half_up").tolist()
[-2, -1, 0, 1, 2, 3]
>>> rounding_right_shift(v, 1, "half_even").tolist()
[-2, -2, 0, 0, 2, 2]
>>> rounding_right_shift(v, 1, "floor").tolist()
[-3, -2, -1, 0, 1, 2]
>>> saturating_rounding_doubling_high_mul(torch.tensor([-2**31, 3]), torch.tensor([-2**31, 2**30])).tolist()
[2147483647, 2]
>>> wrap(torch.tensor([127, 128, -129]), 8).tolist()
[127, -128, 127]
"""

from __future__ import annotations

from typing import Union

import torch

__all__ = [
    "IntLike",
    "INT32_MIN",
    "INT32_MAX",
    "as_int64",
    "saturate",
    "wrap",
    "fits",
    "rounding_right_shift",
    "rounding_divide",
    "saturating_left_shift",
    "saturating_rounding_doubling_high_mul",
]

IntLike = Union[torch.Tensor, int]

INT32_MIN: int = -(1 << 31)
INT32_MAX: int = (1 << 31) - 1
_ROUNDINGS = ("half_away", "half_up", "half_even", "floor")


def as_int64(v: IntLike, name: str = "value") -> torch.Tensor:
    """``v`` as an int64 tensor; ``TypeError`` naming ``name`` for a non-integer input."""
    if isinstance(v, bool):
        raise TypeError(f"{name} must be an integer or an integer tensor, got bool")
    if isinstance(v, int):
        return torch.tensor(v, dtype=torch.int64)
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be an integer or an integer tensor, got {type(v).__name__}")
    if v.is_floating_point() or v.is_complex() or v.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {v.dtype}")
    return v.to(torch.int64)


def _check_bits(bits: int, name: str = "bits") -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 63:
        raise ValueError(f"{name}={bits!r} must be an integer in 1..63")


def saturate(v: IntLike, bits: int) -> torch.Tensor:
    """``clamp(v, -2^(bits-1), 2^(bits-1) - 1)``: signed saturation to ``bits`` bits."""
    _check_bits(bits)
    return torch.clamp(as_int64(v), -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def wrap(v: IntLike, bits: int) -> torch.Tensor:
    """``((v + 2^(bits-1)) mod 2^bits) - 2^(bits-1)``: two's-complement wrap to ``bits`` bits."""
    _check_bits(bits)
    h = 1 << (bits - 1)
    return ((as_int64(v) + h) & ((1 << bits) - 1)) - h


def fits(v: IntLike, bits: int) -> torch.Tensor:
    """Boolean tensor: ``-2^(bits-1) <= v <= 2^(bits-1) - 1``."""
    _check_bits(bits)
    t = as_int64(v)
    return (t >= -(1 << (bits - 1))) & (t <= (1 << (bits - 1)) - 1)


def _check_mode(mode: str) -> None:
    if mode not in _ROUNDINGS:
        raise ValueError(f"rounding mode {mode!r} is not one of {', '.join(map(repr, _ROUNDINGS))}")


def _round_quotient(q: torch.Tensor, r: torch.Tensor, d: torch.Tensor, v: torch.Tensor, mode: str) -> torch.Tensor:
    """Round ``v / d = q + r / d`` (``0 <= r < d``, ``q = floor(v / d)``) with ``mode``."""
    if mode == "floor":
        return q
    twice = 2 * r
    if mode == "half_up":
        return q + (twice >= d).to(torch.int64)
    tie = twice == d
    if mode == "half_away":
        up = (twice > d) | (tie & (v >= 0))
    else:  # half_even
        up = (twice > d) | (tie & ((q & 1) == 1))
    # r == 0 never rounds up (also covers d == 1, where 2r == d is impossible anyway).
    return q + (up & (r != 0)).to(torch.int64)


def rounding_right_shift(v: IntLike, k: IntLike, mode: str) -> torch.Tensor:
    """``round(v / 2^k)`` with rounding ``mode`` (section 2), for ``0 <= k <= 62``; ``k = 0`` gives ``v``.

    ``v`` is any int64 value; ``k`` an int or an integer tensor broadcast against ``v``.
    ``half_away`` is gemmlowp's ``RoundingDivideByPOT``; ``half_up`` is
    ``(v + 2^(k-1)) >> k``; ``floor`` is ``v >> k``.
    """
    _check_mode(mode)
    vt = as_int64(v, "v")
    kt = as_int64(k, "k")
    if kt.numel() and (int(kt.min()) < 0 or int(kt.max()) > 62):
        raise ValueError(f"rounding_right_shift: shift k must be in 0..62, got {int(kt.min())}..{int(kt.max())}")
    q = torch.bitwise_right_shift(vt, kt)
    d = torch.bitwise_left_shift(torch.ones_like(kt), kt)
    r = vt - q * d
    return _round_quotient(q, r, d, vt, mode)


def rounding_divide(v: IntLike, d: IntLike, mode: str) -> torch.Tensor:
    """``round(v / d)`` with rounding ``mode`` for integers ``v`` and ``d >= 1`` (average pooling)."""
    _check_mode(mode)
    vt = as_int64(v, "v")
    dt = as_int64(d, "d")
    if dt.numel() and int(dt.min()) < 1:
        raise ValueError(f"rounding_divide: divisor d must be >= 1, got {int(dt.min())}")
    q = torch.div(vt, dt, rounding_mode="floor")
    r = vt - q * dt
    return _round_quotient(q, r, dt, vt, mode)


def saturating_left_shift(v: IntLike, k: IntLike, bits: int = 32) -> torch.Tensor:
    """``saturate(v * 2^k, bits)`` for ``0 <= k <= 62`` and ``bits <= 62`` (exact: no bit is lost before saturation)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 62:
        raise ValueError(f"saturating_left_shift: bits={bits!r} must be an integer in 1..62")
    vt = as_int64(v, "v")
    kt = as_int64(k, "k")
    if kt.numel() and (int(kt.min()) < 0 or int(kt.max()) > 62):
        raise ValueError(f"saturating_left_shift: shift k must be in 0..62, got {int(kt.min())}..{int(kt.max())}")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    # v * 2^k > hi  <=>  v > floor(hi / 2^k);  v * 2^k < lo  <=>  v < ceil(lo / 2^k) = -((-lo) >> k).
    over = vt > torch.bitwise_right_shift(torch.full_like(kt, hi), kt)
    under = vt < -torch.bitwise_right_shift(torch.full_like(kt, -lo), kt)
    shifted = torch.bitwise_left_shift(vt, kt)  # exact wherever neither bound is crossed
    return torch.where(over, hi, torch.where(under, lo, shifted))


def saturating_rounding_doubling_high_mul(a: IntLike, b: IntLike, n: int = 31) -> torch.Tensor:
    """``saturate_int32(floor((a * b + 2^(n-1)) / 2^n))`` for int32 ``a``, ``b`` and ``1 <= n <= 31``.

    For ``n = 31`` this is gemmlowp's ``SaturatingRoundingDoublingHighMul`` (ARM ``VQRDMULH``):
    ties round toward +infinity, and ``a = b = -2^31`` saturates to ``2^31 - 1``. The
    product is exact in int64 (``|a * b| <= 2^62``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 31:
        raise ValueError(f"saturating_rounding_doubling_high_mul: n={n!r} must be an integer in 1..31")
    at = as_int64(a, "a")
    bt = as_int64(b, "b")
    for name, t in (("a", at), ("b", bt)):
        if t.numel() and (int(t.min()) < INT32_MIN or int(t.max()) > INT32_MAX):
            raise ValueError(f"saturating_rounding_doubling_high_mul: {name} must be in the int32 range")
    return torch.clamp(torch.bitwise_right_shift(at * bt + (1 << (n - 1)), n), INT32_MIN, INT32_MAX)
