"""Requantization of one accumulator (docs/arithmetic.md section 5), by its formulas.

``quantize_multiplier`` (section 5.1) with ``math.frexp`` and Fractions, the fixed-point
``y0`` with Python ints, the float32/float64 modes with NumPy scalars, one element at a
time: nothing shared with ``quant.reference`` or ``kernels``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING, Optional

import numpy as np

from tests.oracles.rounding import round_float, round_rational

if TYPE_CHECKING:
    from quant.contract.datapath import Datapath


def sat32(v: int) -> int:
    """Saturation to int32."""
    return max(-(2**31), min(2**31 - 1, v))


def quantize_multiplier(m: float, n: int, mode: str) -> Optional[tuple[int, int]]:
    """``(M0, e)`` per §5.1, or None where the contract refuses (``e > 30``)."""
    if m == 0:
        return 0, 0
    f, e = math.frexp(m)
    m0 = round_rational(Fraction(f) * 2**n, mode)
    if m0 == 2**n:
        m0, e = m0 // 2, e + 1
    if e < -31:
        return 0, 0
    if e > 30:
        return None
    return m0, e


def fixed_point_y0(acc: int, m0: int, e: int, n: int, double: bool, mode: str) -> int:
    """``y0`` of §5.1 by its formulas, with Fractions."""
    if double:
        t = sat32(acc * 2 ** max(e, 0))
        h = sat32(math.floor(Fraction(t * m0 + 2 ** (n - 1), 2**n)))
        return round_rational(Fraction(h, 2 ** max(-e, 0)), mode)
    return round_rational(Fraction(acc * m0) * Fraction(2) ** (e - n), mode)


def fixed_point_multiply(v: int, multiplier: float, dp: Datapath) -> int:
    """``y0`` of §5.1 for ``v`` and the real ``multiplier`` on the fixed-point datapath ``dp``
    (no zero point, no clamp): ``quantize_multiplier`` then ``fixed_point_y0``."""
    qm = quantize_multiplier(multiplier, dp.multiplier_bits, dp.multiplier_rounding)
    assert qm is not None
    return fixed_point_y0(v, qm[0], qm[1], dp.multiplier_bits, dp.fixed_point_rounding == "double", dp.rounding)


def requant_scalar(acc: int, multiplier: float, dp: Datapath, zy: int, lo: int, hi: int) -> int:
    """One output code of §5 for the datapath ``dp``."""
    mode = dp.rounding
    req = dp.requant
    if req == "fixed_point":
        return max(lo, min(hi, fixed_point_multiply(acc, multiplier, dp) + zy))
    if req == "pow2":
        f, e = math.frexp(multiplier)
        assert f == 0.5
        k = 1 - e
        y0 = round_rational(Fraction(acc, 2**k), mode) if k >= 0 else sat32(acc * 2**-k)
        return max(lo, min(hi, y0 + zy))
    m32 = np.float32(multiplier)
    if req == "float32":
        p = float(np.float32(np.float32(acc) * m32))
        pz = float(np.float32(np.float32(p) + np.float32(zy)))
    else:
        p = float(np.float64(acc) * np.float64(m32))
        pz = float(np.float64(p) + np.float64(zy))
    if dp.zero_point_order == "after_rounding":
        return max(lo, min(hi, round_float(p, mode) + zy))
    return max(lo, min(hi, round_float(pz, mode)))
