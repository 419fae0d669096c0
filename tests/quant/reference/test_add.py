"""add (docs §6.1) against a scalar formulation of each requantization mode."""

from __future__ import annotations

from typing import Any

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings, strategies as st

from quant import Datapath
from quant.reference import add
from tests.edge_values import code_limits
from tests.oracles import requant, rounding
from tests.oracles.exact import assert_exact

DATAPATHS = [Datapath.preset(n) for n in ("tflite_int8", "tflite_single", "fbgemm_int8", "onnx_ref", "mlas",
                                          "w4a8_acc32", "w4a4_acc16_sat", "w2a2_pow2_acc16")] + [
    Datapath(name="fp15_double_even", multiplier_bits=15, rounding="half_even", a_bits=6, a_signed=False, acc_bits=24),
    Datapath(name="f32_before", requant="float32", zero_point_order="before_rounding", rounding="half_away"),
    Datapath(name="pow2_signed_floor", requant="pow2", rounding="floor", a_bits=8, a_signed=True),
    Datapath(name="acc8_a8", acc_bits=8, a_bits=8),
]


def _expected_one(a: int, b: int, za: int, zb: int, ma: float, mb: float, zy: int, lo: int, hi: int, dp: Datapath) -> int:
    da, db = a - za, b - zb
    if dp.requant == "fixed_point":
        left = max(0, dp.acc_bits - 4 - dp.a_bits)
        big = max(ma, mb)

        def mbqm(v: int, r: float) -> int:
            qm = requant.quantize_multiplier(r, dp.multiplier_bits, dp.multiplier_rounding)
            assert qm is not None
            return requant.fixed_point_y0(v, qm[0], qm[1], dp.multiplier_bits, dp.fixed_point_rounding == "double", dp.rounding)

        s = mbqm(da * 2**left, ma / (2 * big)) + mbqm(db * 2**left, mb / (2 * big))
        return max(lo, min(hi, mbqm(s, 2 * big / 2**left) + zy))
    if dp.requant == "pow2":
        exact = Fraction(da) * Fraction(ma) + Fraction(db) * Fraction(mb)
        k = max(1 - math.frexp(ma)[1], 1 - math.frexp(mb)[1])
        y0 = rounding.round_rational(exact, dp.rounding) if k >= 0 else requant.sat32(int(exact))
        return max(lo, min(hi, y0 + zy))
    ft = np.float32 if dp.requant == "float32" else np.float64
    p = ft(ft(np.float32(da)) * ft(np.float32(ma))) + ft(ft(np.float32(db)) * ft(np.float32(mb)))
    p = ft(p)
    if dp.zero_point_order == "after_rounding":
        return max(lo, min(hi, rounding.round_float(float(p), dp.rounding) + zy))
    return max(lo, min(hi, rounding.round_float(float(ft(p + ft(zy))), dp.rounding)))


@st.composite
def add_cases(draw: st.DrawFn) -> dict[str, Any]:
    dp = draw(st.sampled_from(DATAPATHS))
    lo, hi = code_limits(dp.a_bits, dp.a_signed)
    n = draw(st.integers(1, 30))
    a = draw(st.lists(st.sampled_from([lo, hi]) | st.integers(lo, hi), min_size=n, max_size=n))
    b = draw(st.lists(st.sampled_from([lo, hi]) | st.integers(lo, hi), min_size=n, max_size=n))
    za, zb = draw(st.integers(lo, hi)), draw(st.integers(lo, hi))
    if dp.requant == "pow2":
        ka = draw(st.integers(-3, 12))
        ma, mb = 2.0**-ka, 2.0 ** -(ka + draw(st.integers(-8, 8)))
    else:
        ma = draw(st.floats(2.0**-10, 4.0, allow_nan=False))
        mb = draw(st.floats(2.0**-10, 4.0, allow_nan=False) | st.just(ma))
    y_signed = draw(st.booleans())
    ylo, yhi = code_limits(8, y_signed)
    zy = draw(st.integers(ylo, yhi))
    return dict(dp=dp, a=a, b=b, za=za, zb=zb, ma=ma, mb=mb, zy=zy, y_signed=y_signed,
                y_min=draw(st.none() | st.just(zy)))


@settings(max_examples=120)
@given(c=add_cases())
@example(c=dict(dp=DATAPATHS[0], a=[10, -7, 100, 127, -128], b=[3, 3, 100, 127, -128], za=0, zb=0, ma=0.5, mb=0.25,
                zy=0, y_signed=True, y_min=None))
@example(c=dict(dp=DATAPATHS[4], a=[5, 7, 9], b=[0, 0, 0], za=0, zb=0, ma=0.5, mb=0.5, zy=1, y_signed=False, y_min=None))
def test_add_matches_scalar_formulation(c: dict[str, Any]) -> None:
    dp = c["dp"]
    assert isinstance(dp, Datapath)
    ylo, yhi = code_limits(8, c["y_signed"])
    if c["y_min"] is not None:
        ylo = max(ylo, c["y_min"])
    got = add(torch.tensor(c["a"]), torch.tensor(c["b"]), a_zero_point=c["za"], b_zero_point=c["zb"],
              a_multiplier=c["ma"], b_multiplier=c["mb"], y_zero_point=c["zy"], y_signed=c["y_signed"],
              y_min=c["y_min"], datapath=dp)
    expected = [_expected_one(a, b, c["za"], c["zb"], c["ma"], c["mb"], c["zy"], ylo, yhi, dp)
                for a, b in zip(c["a"], c["b"])]
    assert_exact(got, expected, f"add on {dp.name}")


def test_add_fixed_point_is_close_to_real_sum() -> None:
    """Sanity of the TFLite-style algorithm: within one LSB of the exact real result."""
    dp = Datapath.preset("tflite_int8")
    g = torch.Generator().manual_seed(3)
    a = torch.randint(-128, 128, (2000,), generator=g)
    b = torch.randint(-128, 128, (2000,), generator=g)
    got = add(a, b, a_zero_point=-5, b_zero_point=7, a_multiplier=0.37, b_multiplier=0.81, y_zero_point=0,
              y_bits=8, datapath=dp.with_(a_bits=8))
    real = torch.clamp((a + 5) * 0.37 + (b - 7) * 0.81, -128, 127)
    assert float((got - real).abs().max()) <= 1.0


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(b=torch.tensor([1, 2])), ValueError, "same shape"),
        (dict(a=torch.tensor([300])), ValueError, "a has values"),
        (dict(b_zero_point=-129), ValueError, "b_zero_point"),
        (dict(a_multiplier=-1.0), ValueError, "a_multiplier"),
        (dict(a_multiplier=[0.5, 0.5]), ValueError, "scalars"),
        (dict(a_multiplier=0.0, b_multiplier=0.0), ValueError, "both be 0"),
    ],
)
def test_add_errors(kwargs: dict[str, Any], exc: type, match: str) -> None:
    args: dict[str, Any] = dict(a=torch.tensor([1]), b=torch.tensor([2]), a_zero_point=0, b_zero_point=0,
                                   a_multiplier=0.5, b_multiplier=0.5, y_zero_point=0, datapath=Datapath.preset("tflite_int8"))
    args.update(kwargs)
    a, b = args.pop("a"), args.pop("b")
    with pytest.raises(exc, match=match):
        add(a, b, **args)


def test_add_pow2_errors() -> None:
    dp = Datapath.preset("w2a2_pow2_acc16")
    with pytest.raises(ValueError, match="power of two"):
        add(torch.tensor([1]), torch.tensor([1]), a_zero_point=0, b_zero_point=0, a_multiplier=0.3, b_multiplier=0.5,
            y_zero_point=0, datapath=dp)
    with pytest.raises(ValueError, match="2\\^-32"):
        add(torch.tensor([1]), torch.tensor([1]), a_zero_point=0, b_zero_point=0, a_multiplier=2.0**-31,
            b_multiplier=4.0, y_zero_point=0, datapath=dp)
