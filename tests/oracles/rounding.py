"""Rounding (docs/arithmetic.md section 2), exactly, through rational values.

``fractions.Fraction`` and ``math.floor`` only: nothing shared with ``quant.reference``
or ``kernels``.
"""

from __future__ import annotations

import math
from fractions import Fraction


def round_rational(x: Fraction, mode: str) -> int:
    """Textbook rounding of an exact rational."""
    if mode == "floor":
        return math.floor(x)
    if mode == "half_up":
        return math.floor(x + Fraction(1, 2))
    if mode == "half_away":
        mag = math.floor(abs(x) + Fraction(1, 2))
        return mag if x >= 0 else -mag
    if mode == "half_even":
        return int(round(x))  # Fraction.__round__ rounds half to even, exactly
    raise ValueError(mode)


def float32_of(x: Fraction) -> float:
    """The float32 nearest to the rational ``x`` (ties to even), exactly (normal and subnormal range)."""
    if x == 0:
        return 0.0
    mag = abs(x)
    e = mag.numerator.bit_length() - mag.denominator.bit_length() - 24
    while mag / Fraction(2) ** e >= 2**24:
        e += 1
    while mag / Fraction(2) ** e < 2**23:
        e -= 1
    e = max(e, -149)  # subnormals: fixed quantum 2^-149
    m = round_rational(mag / Fraction(2) ** e, "half_even")
    v = float(Fraction(m) * Fraction(2) ** e)
    return v if x > 0 else -v


def round_float(v: float, mode: str) -> int:
    """Rounding of a finite float (exactly, through its rational value)."""
    return round_rational(Fraction(v), mode)
