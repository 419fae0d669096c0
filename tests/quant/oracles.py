"""Independent scalar formulations of docs/arithmetic.md, used as oracles by the reference tests.

Written from the document with Python ints, ``fractions.Fraction``, ``math.frexp`` and
NumPy float32/float64 scalars, one element at a time: deliberately nothing shared with
``quant.reference`` (no torch, no vectorization), so agreement is evidence, not tautology.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional, Sequence

import numpy as np
import torch


def assert_exact(actual: torch.Tensor, expected: object, what: str) -> None:
    """Exact equality; on failure name the first differing index and both values."""
    exp = torch.as_tensor(np.asarray(expected, dtype=np.int64)) if not isinstance(expected, torch.Tensor) else expected
    exp = exp.to(torch.int64)
    act = actual.to(torch.int64)
    assert tuple(act.shape) == tuple(exp.shape), f"{what}: shape {tuple(act.shape)} != expected {tuple(exp.shape)}"
    diff = (act != exp).nonzero()
    if diff.shape[0]:
        idx = tuple(int(i) for i in diff[0].tolist())
        raise AssertionError(
            f"{what}: {diff.shape[0]} of {act.numel()} values differ; first at index {idx}: "
            f"got {int(act[idx])}, expected {int(exp[idx])}"
        )


# --------------------------------------------------------------------- rounding (§2)
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


# --------------------------------------------------------------------- multipliers (§5.1)
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


def sat32(v: int) -> int:
    return max(-(2**31), min(2**31 - 1, v))


def fixed_point_y0(acc: int, m0: int, e: int, n: int, double: bool, mode: str) -> int:
    """``y0`` of §5.1 by its formulas, with Fractions."""
    if double:
        t = sat32(acc * 2 ** max(e, 0))
        h = sat32(math.floor(Fraction(t * m0 + 2 ** (n - 1), 2**n)))
        return round_rational(Fraction(h, 2 ** max(-e, 0)), mode)
    return round_rational(Fraction(acc * m0) * Fraction(2) ** (e - n), mode)


def requant_scalar(acc: int, multiplier: float, dp: object, zy: int, lo: int, hi: int) -> int:
    """One output code of §5 for the datapath ``dp`` (a ``quant.Datapath``)."""
    mode = dp.rounding  # type: ignore[attr-defined]
    req = dp.requant  # type: ignore[attr-defined]
    if req == "fixed_point":
        qm = quantize_multiplier(multiplier, dp.multiplier_bits, dp.multiplier_rounding)  # type: ignore[attr-defined]
        assert qm is not None
        y0 = fixed_point_y0(acc, qm[0], qm[1], dp.multiplier_bits, dp.fixed_point_rounding == "double", mode)  # type: ignore[attr-defined]
        return max(lo, min(hi, y0 + zy))
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
    if dp.zero_point_order == "after_rounding":  # type: ignore[attr-defined]
        return max(lo, min(hi, round_float(p, mode) + zy))
    return max(lo, min(hi, round_float(pz, mode)))


# --------------------------------------------------------------------- accumulation (§4)
def accumulate_scalar(bias: int, products: Sequence[int], acc_bits: int, overflow: str) -> int:
    """The accumulator of §4, one add at a time in the canonical order. Raises OverflowError for 'error'."""
    lo, hi = -(2 ** (acc_bits - 1)), 2 ** (acc_bits - 1) - 1
    if overflow == "wrap":
        s = bias + sum(products)
        return int((s - lo) % (1 << acc_bits) + lo)
    s = bias
    for step in [0, *products]:
        s += step
        c = max(lo, min(hi, s))
        if c != s and overflow == "error":
            raise OverflowError("accumulator overflow")
        s = c
    return s


def tflite_quantize_multiplier(m: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier (docs/peers.md §3.2): frexp, std::round(q * 2^31), renormalize, flush."""
    if m == 0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = math.floor(q * 2.0**31 + 0.5)  # std::round of a positive double; exact below 2^52
    if q_fixed == 2**31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift
