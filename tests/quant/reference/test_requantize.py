"""Requantization (docs §5) and the requantize op (§6) against the scalar oracle."""

from __future__ import annotations

from typing import Any

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import example, given, strategies as st

from quant import Datapath
from quant.reference import multiply_by_quantized_multiplier, requantize
from tests.edge_values import EDGE_INT32, INT32_MAX, INT32_MIN, acc_limits, exact_ties
from tests.oracles import requant, rounding
from tests.oracles.exact import assert_exact

MODES = ("half_away", "half_up", "half_even", "floor")


def _datapaths() -> list[Datapath]:
    out = []
    for n in (31, 24, 15, 8):
        for fpr in ("double", "single"):
            for mode in MODES:
                out.append(Datapath(name=f"fp{n}{fpr}{mode}", multiplier_bits=n, fixed_point_rounding=fpr, rounding=mode,
                                    multiplier_rounding="half_even" if n == 24 else "half_away"))
    for req in ("float32", "float64"):
        for order in ("after_rounding", "before_rounding"):
            for mode in MODES:
                out.append(Datapath(name=f"{req}{order}{mode}", requant=req, zero_point_order=order, rounding=mode))
    for mode in MODES:
        out.append(Datapath(name=f"pow2{mode}", requant="pow2", rounding=mode))
    return out


DATAPATHS = _datapaths()
multipliers = st.one_of(
    st.floats(2.0**-34, 2.0**-1, allow_nan=False),
    st.floats(2.0**-12, 4.0, allow_nan=False),
    st.sampled_from([0.5, 0.25, 1.0, 0.75, 2.0**-31, 2.0**-32, 3.0, 2.0**20]),
)


def _pow2(m: float) -> float:
    return float(2.0 ** min(30, max(-31, round(float(np.log2(m))))))


@pytest.mark.parametrize("dp", DATAPATHS, ids=lambda d: d.name)
@given(
    acc=st.lists(st.one_of(st.sampled_from(EDGE_INT32), st.integers(INT32_MIN, INT32_MAX), st.integers(-5000, 5000)),
                 min_size=1, max_size=24),
    m=multipliers,
    zy=st.integers(-128, 127),
    y_bits=st.integers(2, 8),
)
@example(acc=EDGE_INT32, m=0.2621, zy=0, y_bits=8)
@example(acc=exact_ties(3) + exact_ties(10) + acc_limits(16), m=0.125, zy=3, y_bits=8)
@example(acc=[422480, -2, 5, -5, 3, -3], m=0.5, zy=1, y_bits=8)
def test_requantize_matches_oracle(dp: Datapath, acc: list[int], m: float, zy: int, y_bits: int) -> None:
    if dp.requant == "pow2":
        m = _pow2(m)
    if dp.requant == "fixed_point" and requant.quantize_multiplier(m, dp.multiplier_bits, dp.multiplier_rounding) is None:
        return
    lo, hi = -(2 ** (y_bits - 1)), 2 ** (y_bits - 1) - 1
    zy = max(lo, min(hi, zy))
    got = requantize(torch.tensor(acc), in_zero_point=0, multiplier=m, y_zero_point=zy, y_bits=y_bits, datapath=dp)
    expected = [requant.requant_scalar(a, m, dp, zy, lo, hi) for a in acc]
    assert_exact(got, expected, f"{dp.name} m={m!r} zy={zy}")


@pytest.mark.parametrize("fpr", ["double", "single"])
@given(x=st.lists(st.integers(INT32_MIN, INT32_MAX), min_size=1, max_size=20),
       m0=st.integers(2**30, 2**31 - 1), e=st.integers(-31, 30))
@example(x=EDGE_INT32, m0=2**30, e=-1)
@example(x=EDGE_INT32, m0=2**31 - 1, e=30)
@example(x=EDGE_INT32, m0=2**31 - 1, e=-31)
def test_multiply_by_quantized_multiplier_unbounded_y0(fpr: str, x: list[int], m0: int, e: int) -> None:
    """y0 before the output clamp, over the whole exponent range (shift bounds -31..30)."""
    dp = Datapath(fixed_point_rounding=fpr)
    got = multiply_by_quantized_multiplier(torch.tensor(x), torch.tensor(m0), torch.tensor(e), dp)
    assert_exact(got, [requant.fixed_point_y0(v, m0, e, 31, fpr == "double", "half_away") for v in x], "MBQM")


def test_peers_worked_examples_from_formulas() -> None:
    """docs/peers.md §3.8: x=422480, M=1125735238, shift=-1 and x=-2, M=2^30, shift=-1 (expected from the formulas)."""
    for x, m0, e in ((422480, 1125735238, -1), (-2, 2**30, -1)):
        exact = Fraction(x * m0, 2 ** (31 - e))
        single = rounding.round_rational(exact, "half_up")  # ruy / TFLITE_SINGLE_ROUNDING
        h = (x * m0 + 2**30) // 2**31  # SRDHM, ties up
        double = rounding.round_rational(Fraction(h, 2**-e), "half_away")  # RoundingDivideByPOT
        for preset, want in (("tflite_single", single), ("tflite_int8", double)):
            got = multiply_by_quantized_multiplier(torch.tensor(x), torch.tensor(m0), torch.tensor(e), Datapath.preset(preset))
            assert int(got) == want, f"{preset} x={x}: got {int(got)}, expected {want}"
    assert single != double  # x = -2 is a negative tie: half up and half away differ there


def test_requantize_per_channel_axis() -> None:
    dp = Datapath.preset("tflite_int8")
    q = torch.arange(-60, 60).reshape(2, 3, 20)
    ms = [0.1, 0.02, 0.5]
    got = requantize(q, in_zero_point=5, multiplier=ms, y_zero_point=-3, axis=1, datapath=dp)
    for c, m in enumerate(ms):
        ref = requantize(q[:, c], in_zero_point=5, multiplier=m, y_zero_point=-3, datapath=dp)
        assert_exact(got[:, c], ref, f"channel {c}")


def test_requantize_saturates_input_difference() -> None:
    dp = Datapath.preset("fbgemm_int8")
    got = requantize(torch.tensor([INT32_MAX]), in_zero_point=-100, multiplier=2.0**-31, y_zero_point=0, datapath=dp)
    assert int(got) == requant.requant_scalar(requant.sat32(INT32_MAX + 100), 2.0**-31, dp, 0, -128, 127)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(q=torch.tensor([1.0])), TypeError, "q must be an integer tensor"),
        (dict(q=torch.tensor([2**31])), ValueError, "int32 range"),
        (dict(y_zero_point=200), ValueError, "y_zero_point=200"),
        (dict(y_bits=9), ValueError, "y_bits"),
        (dict(y_bits=1, y_signed=True), ValueError, "binary"),
        (dict(multiplier=[0.5, 0.5]), ValueError, "channel axis"),
        (dict(multiplier=[0.5, 0.5], axis=0), ValueError, "2 values"),
        (dict(axis=3), ValueError, "axis=3"),
        (dict(datapath="tflite_int8"), TypeError, "Datapath"),
        (dict(in_zero_point=1.5), TypeError, "in_zero_point"),
    ],
)
def test_requantize_errors(kwargs: dict[str, Any], exc: type, match: str) -> None:
    args: dict[str, Any] = dict(q=torch.tensor([1, 2, 3]), in_zero_point=0, multiplier=0.5, y_zero_point=0,
                                   datapath=Datapath())
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        requantize(**args)
