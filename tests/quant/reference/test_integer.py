"""Integer primitives and multiplier conversion against exact rational definitions (docs §2, §5.1)."""

from __future__ import annotations

from typing import Any

import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import example, given, strategies as st

from quant import Datapath, requant_params
from quant.reference.integer import (
    rounding_divide,
    rounding_right_shift,
    saturate,
    saturating_left_shift,
    saturating_rounding_doubling_high_mul,
    wrap,
)
from quant.contract.multiplier import FixedPointRequant, FloatRequant, Pow2Requant, quantize_multiplier
from tests.edge_values import EDGE_INT32, EDGE_MULTIPLIERS, INT32_MAX, INT32_MIN, exact_ties
from tests.oracles import peers, requant, rounding
from tests.oracles.exact import assert_exact

MODES = ("half_away", "half_up", "half_even", "floor")
int32s = st.integers(INT32_MIN, INT32_MAX)
edge_or_any = st.one_of(st.sampled_from(EDGE_INT32), int32s)


def _vector(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


@pytest.mark.parametrize("mode", MODES)
@given(values=st.lists(st.one_of(st.sampled_from(EDGE_INT32), st.integers(-(2**62), 2**62)), min_size=1, max_size=40),
       k=st.integers(0, 62))
@example(values=EDGE_INT32, k=1)
@example(values=EDGE_INT32, k=31)
@example(values=exact_ties(5) + exact_ties(1) + [-1, 1, 0], k=5)
def test_rounding_right_shift_is_exact_rounding(mode: str, values: list[int], k: int) -> None:
    got = rounding_right_shift(_vector(values), k, mode)
    assert_exact(got, [rounding.round_rational(Fraction(v, 2**k), mode) for v in values], f"rrs k={k} {mode}")


@pytest.mark.parametrize("mode", MODES)
@given(values=st.lists(edge_or_any, min_size=1, max_size=30), ks=st.data())
def test_rounding_right_shift_per_element_shift(mode: str, values: list[int], ks: st.DataObject) -> None:
    shifts = ks.draw(st.lists(st.integers(0, 40), min_size=len(values), max_size=len(values)))
    got = rounding_right_shift(_vector(values), _vector(shifts), mode)
    assert_exact(got, [rounding.round_rational(Fraction(v, 2**k), mode) for v, k in zip(values, shifts)], "rrs")


def test_rounding_right_shift_matches_gemmlowp_rdbpot() -> None:
    """half_away is gemmlowp's RoundingDivideByPOT (mask/threshold form, docs/peers.md §3.1)."""
    def rdbpot(x: int, e: int) -> int:
        mask = (1 << e) - 1
        rem = x & mask
        threshold = (mask >> 1) + (1 if x < 0 else 0)
        return (x >> e) + (1 if rem > threshold else 0)

    values = [v for v in EDGE_INT32] + exact_ties(3) + exact_ties(10)
    for e in range(0, 32):
        assert_exact(rounding_right_shift(_vector(values), e, "half_away"), [rdbpot(v, e) for v in values], f"e={e}")


@pytest.mark.parametrize("mode", MODES)
@given(values=st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=30), d=st.integers(1, 10**6))
@example(values=[-9, -3, 3, 9, 15, -15, 0], d=6)
@example(values=[-5, 5, 1, -1], d=2)
def test_rounding_divide_is_exact_rounding(mode: str, values: list[int], d: int) -> None:
    got = rounding_divide(_vector(values), d, mode)
    assert_exact(got, [rounding.round_rational(Fraction(v, d), mode) for v in values], f"divide d={d} {mode}")


@given(values=st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=30), bits=st.integers(1, 62))
@example(values=EDGE_INT32, bits=16)
@example(values=EDGE_INT32, bits=32)
def test_saturate_and_wrap(values: list[int], bits: int) -> None:
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    assert_exact(saturate(_vector(values), bits), [max(lo, min(hi, v)) for v in values], "saturate")
    assert_exact(wrap(_vector(values), bits), [(v - lo) % 2**bits + lo for v in values], "wrap")


@given(values=st.lists(edge_or_any, min_size=1, max_size=30), k=st.integers(0, 62), bits=st.sampled_from([8, 16, 32]))
@example(values=EDGE_INT32, k=0, bits=32)
@example(values=EDGE_INT32, k=30, bits=32)
def test_saturating_left_shift(values: list[int], k: int, bits: int) -> None:
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    got = saturating_left_shift(_vector(values), k, bits)
    assert_exact(got, [max(lo, min(hi, v * 2**k)) for v in values], f"sls k={k}")


def _srdhm_gemmlowp(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul as docs/peers.md §3.1 states it (C truncating division)."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    num = ab + nudge
    q = abs(num) // (1 << 31)
    return q if num >= 0 else -q


@given(a=st.lists(edge_or_any, min_size=1, max_size=30), b=edge_or_any)
@example(a=EDGE_INT32, b=INT32_MIN)
@example(a=EDGE_INT32, b=INT32_MAX)
@example(a=[INT32_MIN, -1, 1, -(2**30), 3], b=1 << 30)
def test_srdhm_matches_gemmlowp_and_rational(a: list[int], b: int) -> None:
    got = saturating_rounding_doubling_high_mul(_vector(a), torch.tensor(b))
    assert_exact(got, [_srdhm_gemmlowp(x, b) for x in a], "SRDHM vs gemmlowp")
    rational = [requant.sat32(math.floor(Fraction(x * b + 2**30, 2**31))) for x in a]
    assert_exact(got, rational, "SRDHM vs floor((ab + 2^30) / 2^31)")


@given(a=st.lists(st.integers(-(2**15), 2**15 - 1), min_size=1, max_size=20), b=st.integers(-(2**15), 2**15 - 1))
@example(a=[-(2**15), -1, 1, 2**15 - 1], b=-(2**15))
def test_srdhm_n15_is_the_int16_version(a: list[int], b: int) -> None:
    def srdhm16(x: int, y: int) -> int:
        if x == y == -(2**15):
            return 2**15 - 1
        ab = x * y
        num = ab + ((1 << 14) if ab >= 0 else 1 - (1 << 14))
        q = abs(num) // (1 << 15)
        return q if num >= 0 else -q

    got = saturating_rounding_doubling_high_mul(_vector(a), torch.tensor(b), 15)
    # N=15 on int32 does not saturate: at x = b = -2^15 the result is the rational floor((ab + 2^14) / 2^15)
    expected = [srdhm16(x, b) if not (x == b == -(2**15)) else math.floor(Fraction(x * b + 2**14, 2**15)) for x in a]
    assert_exact(got, expected, "SRDHM n=15")


# --------------------------------------------------------------------- §5.1 multipliers


@given(m=st.floats(min_value=2.0**-45, max_value=2.0**29, allow_nan=False, allow_infinity=False))
@example(m=EDGE_MULTIPLIERS[0])
@example(m=EDGE_MULTIPLIERS[1])
@example(m=EDGE_MULTIPLIERS[2])
@example(m=EDGE_MULTIPLIERS[5])
@example(m=float(np.float32(0.1) * np.float32(0.02) / np.float32(0.3)))
def test_quantize_multiplier_matches_tflite(m: float) -> None:
    assert quantize_multiplier(m, 31, "half_away") == peers.tflite_quantize_multiplier(m)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [8, 15, 16, 24, 31])
@given(m=st.one_of(st.sampled_from(EDGE_MULTIPLIERS), st.floats(2.0**-40, 2.0**31, allow_nan=False)))
def test_quantize_multiplier_rational(mode: str, n: int, m: float) -> None:
    expected = requant.quantize_multiplier(m, n, mode)
    if expected is None:
        with pytest.raises(ValueError, match="too large"):
            quantize_multiplier(m, n, mode)
        return
    m0, e = quantize_multiplier(m, n, mode)
    assert (m0, e) == expected
    assert m0 == 0 or 2 ** (n - 1) <= m0 < 2**n
    assert -31 <= e <= 30
    if m0:
        assert abs(Fraction(m0) * Fraction(2) ** (e - n) - Fraction(m)) <= Fraction(2) ** (e - n)


def test_requant_params_per_mode() -> None:
    ms = [0.75, 2.0**-33, 0.001, 3.0]
    p = requant_params(ms, Datapath.preset("tflite_int8"))
    assert isinstance(p, FixedPointRequant) and p.shape == (4,) and p.multiplier_bits == 31
    assert list(zip(p.m0.tolist(), p.exponent.tolist())) == [peers.tflite_quantize_multiplier(m) for m in ms]
    assert p.m0.dtype == np.int32 and p.exponent.dtype == np.int32
    f = requant_params(np.array(ms), Datapath.preset("mlas"))
    assert isinstance(f, FloatRequant) and f.multiplier.dtype == np.float32 and f.precision == "float32"
    assert f.multiplier.tolist() == [float(np.float32(m)) for m in ms]
    m32 = torch.tensor([0.1, 0.2], dtype=torch.float32)
    mf = requant_params(m32, Datapath.preset("onnx_ref"))
    assert isinstance(mf, FloatRequant) and mf.precision == "float64"
    assert torch.equal(torch.from_numpy(mf.multiplier), m32)
    pow2s = [2.0**-31, 1.0, 2.0**30, 0.25]
    p2 = requant_params(pow2s, Datapath.preset("w2a2_pow2_acc16"))
    shifts = [1 - math.frexp(m)[1] for m in pow2s]  # m = 2^-k, k the right shift of docs §5.4
    assert all(Fraction(m) == Fraction(2) ** -k for m, k in zip(pow2s, shifts))
    assert isinstance(p2, Pow2Requant) and p2.right_shift.tolist() == shifts
    assert requant_params(0.5, Datapath()).shape == ()


@pytest.mark.parametrize(
    "multiplier,dp,exc,match",
    [
        (-0.5, Datapath(), ValueError, "finite and >= 0"),
        (float("nan"), Datapath(), ValueError, "finite"),
        (2.0**30, Datapath(), ValueError, "too large"),
        ([0.5, float("inf")], Datapath(), ValueError, r"multiplier\[1\]"),
        (0.3, Datapath.preset("w2a2_pow2_acc16"), ValueError, "power of two"),
        (2.0**-32, Datapath.preset("w2a2_pow2_acc16"), ValueError, "power of two"),
        (1e39, Datapath.preset("mlas"), ValueError, "float32"),
        ([[0.5]], Datapath(), ValueError, "1-D"),
        ("0.5", Datapath(), TypeError, "multiplier"),
        ([], Datapath(), ValueError, "empty"),
    ],
)
def test_requant_params_errors(multiplier: Any, dp: Datapath, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        requant_params(multiplier, dp)
