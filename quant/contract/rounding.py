"""Rounding modes of the contract (docs/arithmetic.md section 2) and exact rounding of rationals.

The mode names are the vocabulary every other part uses: ``QuantSpec.rounding`` takes
any of :data:`ROUNDING_MODES`; a datapath rounds only deterministically, with one of
:data:`INTEGER_ROUNDING_MODES`. :func:`round_fraction` is the definition of each mode on
an exact rational; the tensor implementations live in :mod:`quant.reference.rounding`.

=============  ===========================  ======  ======  ======  ======
mode           rule at a tie                 -2.5    -0.5    0.5     2.5
=============  ===========================  ======  ======  ======  ======
half_even      to the even neighbour         -2      -0      0       2
half_away      away from zero                -3      -1      1       3
half_up        toward +infinity              -2      -0      1       3
floor          (no ties) toward -infinity    -3      -1      0       2
stochastic     up with probability frac(x)   -3|-2   -1|0    0|1     2|3
=============  ===========================  ======  ======  ======  ======

>>> from fractions import Fraction
>>> [round_fraction(Fraction(v, 2), "half_away") for v in (-5, -1, 1, 5)]
[-3, -1, 1, 3]
>>> [round_fraction(Fraction(v, 2), "half_up") for v in (-5, -1, 1, 5)]
[-2, 0, 1, 3]
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Literal

__all__ = ["ROUNDING_MODES", "INTEGER_ROUNDING_MODES", "Rounding", "check_rounding_mode", "round_fraction"]

#: Every rounding mode of a quantizer (``QuantSpec.rounding``).
ROUNDING_MODES: tuple[str, ...] = ("half_even", "half_away", "half_up", "floor", "stochastic")
#: The deterministic modes a datapath can round with (no stochastic rounding in integer hardware).
INTEGER_ROUNDING_MODES: tuple[str, ...] = ("half_away", "half_up", "half_even", "floor")

Rounding = Literal["half_even", "half_away", "half_up", "floor", "stochastic"]


def check_rounding_mode(mode: object, allowed: tuple[str, ...] = INTEGER_ROUNDING_MODES) -> str:
    """``mode`` itself, or ``ValueError`` naming the allowed modes."""
    if not isinstance(mode, str) or mode not in allowed:
        raise ValueError(f"rounding mode {mode!r} is not one of {', '.join(map(repr, allowed))}")
    return mode


def round_fraction(x: Fraction, mode: str) -> int:
    """``round(x)`` of an exact rational with a deterministic rounding mode (section 2)."""
    check_rounding_mode(mode)
    fl = math.floor(x)
    rem = x - fl
    if mode == "floor" or rem == 0:
        return fl
    half = Fraction(1, 2)
    if rem != half:
        return fl + (1 if rem > half else 0)
    if mode == "half_up":
        return fl + 1
    if mode == "half_away":
        return fl + (1 if x > 0 else 0)
    return fl + (fl & 1)  # half_even
