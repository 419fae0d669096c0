"""mul (docs/arithmetic.md section 6.2): both backends against an element-by-element oracle (product in the
accumulator per overflow mode, then section 5), on every datapath kind, same-shape and broadcast, and the
refusals of bad shapes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kernels
from quant.contract.datapath import PRESETS, Datapath
from tests.kernels import support
from tests.kernels.support import BACKENDS, assert_same_outcome, outcome
from tests.oracles.requant import requant_scalar


def oracle(a: np.ndarray, b: np.ndarray, *, a_zero_point: int, b_zero_point: int, multiplier: float,
           y_zero_point: int, y_bits: int = 8, y_signed: bool = True, y_min: Any = None, y_max: Any = None,
           datapath: Datapath) -> np.ndarray:  # fmt: skip
    """Section 6.2 one element at a time with Python ints."""
    lo, hi = (-(1 << (y_bits - 1)), (1 << (y_bits - 1)) - 1) if y_signed else (0, (1 << y_bits) - 1)
    lo, hi = max(lo, y_min if y_min is not None else lo), min(hi, y_max if y_max is not None else hi)
    bb = np.broadcast_to(b, a.shape)
    acc_lo, acc_hi = -(1 << (datapath.acc_bits - 1)), (1 << (datapath.acc_bits - 1)) - 1
    out = np.zeros(a.shape, dtype=np.int64)
    for idx in np.ndindex(a.shape):
        p = (int(a[idx]) - a_zero_point) * (int(bb[idx]) - b_zero_point)
        if not acc_lo <= p <= acc_hi:
            if datapath.overflow == "error":
                raise OverflowError("mul")
            if datapath.overflow == "saturate":
                p = max(acc_lo, min(acc_hi, p))
            else:
                p = ((p - acc_lo) % (1 << datapath.acc_bits)) + acc_lo
        out[idx] = requant_scalar(p, multiplier, datapath, y_zero_point, lo, hi)
    return out


@st.composite
def mul_cases(draw: st.DrawFn) -> dict[str, Any]:
    dp = draw(support.datapaths())
    shape = draw(st.sampled_from([(5,), (2, 3), (2, 3, 2, 2), (3, 1, 4)]))
    a = support.codes(draw, shape, dp.a_bits, dp.a_signed)
    broadcast = draw(st.booleans()) and len(shape) > 1
    b_shape = shape[:1] + (1,) * (len(shape) - 1) if broadcast else shape
    b = support.codes(draw, b_shape, dp.a_bits, dp.a_signed)
    m = 2.0 ** -draw(st.integers(-2, 12)) if dp.requant == "pow2" else float(draw(st.floats(2.0**-14, 2.0)))
    return dict(a=a, b=b, a_zero_point=support.zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point),
                b_zero_point=support.zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point), multiplier=m,
                datapath=dp, **support.output(draw))  # fmt: skip


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(case=mul_cases())
def test_mul_matches_the_oracle(backend: str, case: dict[str, Any]) -> None:
    case = dict(case)
    a, b = case.pop("a"), case.pop("b")
    expected = outcome(lambda: oracle(a, b, **case))
    assert_same_outcome(outcome(lambda: BACKENDS[backend].mul(a, b, **case)), expected, f"mul {backend}")


def test_mul_refusals() -> None:
    dp = PRESETS["tflite_int8"]
    kw: dict[str, Any] = dict(a_zero_point=0, b_zero_point=0, multiplier=0.5, y_zero_point=0, datapath=dp)
    a = np.zeros((2, 3, 4), np.int8)
    with pytest.raises(ValueError, match=r"b of shape \(2, 1, 4\) must have a's shape"):
        kernels.mul(a, np.zeros((2, 1, 4), np.int8), **kw)
    with pytest.raises(TypeError, match="b must have dtype int8"):
        kernels.mul(a, np.zeros((2, 3, 4), np.uint8), **kw)
    with pytest.raises(ValueError, match="must be a scalar or have one value per output channel"):
        kernels.mul(a, a, **{**kw, "multiplier": [0.5, 0.25]})
    with pytest.raises(OverflowError, match="mul"):
        kernels.mul(np.full(3, 127, np.int8), np.full(3, 127, np.int8),
                    **{**kw, "datapath": dp.with_(acc_bits=12, overflow="error")})  # fmt: skip
