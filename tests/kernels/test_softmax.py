"""Integer softmax (docs/arithmetic.md section 6.3): both backends against an element-by-element oracle on
random code widths, axes and output widths; the exponential table against exp; refusals."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from quant.contract.attrs import SOFTMAX_ONE, SoftmaxAttrs, softmax_table
from quant.contract.datapath import PRESETS
from quant.contract.rounding import INTEGER_ROUNDING_MODES
from tests.kernels import support
from tests.kernels.support import BACKENDS, assert_same
from tests.oracles.rounding import round_rational


def oracle(x: np.ndarray, *, axis: int, table: list[int], y_bits: int, y_signed: bool, mode: str) -> np.ndarray:
    """Section 6.3 with Python ints and exact rationals, one output at a time."""
    lo, hi = (-(1 << (y_bits - 1)), (1 << (y_bits - 1)) - 1) if y_signed else (0, (1 << y_bits) - 1)
    z = -(1 << (y_bits - 1)) if y_signed else 0
    xs = np.moveaxis(x.astype(np.int64), axis, -1)
    out = np.zeros(xs.shape, dtype=np.int64)
    for idx in np.ndindex(xs.shape[:-1]):
        row = [int(v) for v in xs[idx]]
        m = max(row)
        e = [table[m - v] for v in row]
        s = sum(e)
        out[idx] = [max(lo, min(hi, round_rational(Fraction(ei << y_bits, s), mode) + z)) for ei in e]
    return np.moveaxis(out, -1, axis)


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    bits, signed = draw(st.integers(2, 8)), draw(st.booleans())
    shape = draw(st.sampled_from([(2, 5), (1, 3, 4), (2, 2, 3, 2), (3, 17)]))
    axis = draw(st.integers(1, len(shape) - 1))
    x = support.codes(draw, shape, bits, signed)
    scale = float(draw(st.floats(2.0**-8, 2.0)))
    y_bits = draw(st.integers(2, 8))
    y_signed = draw(st.booleans())
    mode = draw(st.sampled_from(INTEGER_ROUNDING_MODES))
    return dict(x=x, axis=axis, bits=bits, signed=signed, table=list(softmax_table(scale, bits)), y_bits=y_bits,
                y_signed=y_signed, mode=mode)  # fmt: skip


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@settings(max_examples=80)
@given(case=cases())
def test_softmax_matches_the_oracle(backend: str, case: dict[str, Any]) -> None:
    dp = PRESETS["tflite_int8"].with_(rounding=case["mode"])
    attrs = SoftmaxAttrs.build(axis=case["axis"], x_bits=case["bits"], x_signed=case["signed"], table=case["table"],
                               y_bits=case["y_bits"], y_signed=case["y_signed"], datapath=dp)  # fmt: skip
    got = BACKENDS[backend].backend.softmax(attrs, case["x"])
    expected = oracle(case["x"], axis=case["axis"], table=case["table"], y_bits=case["y_bits"],
                      y_signed=case["y_signed"], mode=case["mode"])  # fmt: skip
    assert_same(got, expected, f"softmax {backend}")


def test_the_table_is_exp_in_units_of_2_to_the_minus_16() -> None:
    t = softmax_table(0.25, 4)
    assert len(t) == 16 and t[0] == SOFTMAX_ONE
    assert all(abs(v - SOFTMAX_ONE * math.exp(-0.25 * d)) <= 0.5 for d, v in enumerate(t))


def test_softmax_refusals() -> None:
    dp = PRESETS["fbgemm_int8"]
    good: dict[str, Any] = dict(axis=1, x_bits=8, x_signed=True, table=softmax_table(0.1, 8), datapath=dp)
    with pytest.raises(ValueError, match="table must hold 2\\^x_bits = 256"):
        kernels.softmax(np.zeros((2, 3), np.int8), **{**good, "table": [SOFTMAX_ONE] * 4})
    with pytest.raises(ValueError, match="axis=0 must be >= 1"):
        kernels.softmax(np.zeros((2, 3), np.int8), **{**good, "axis": 0})
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        kernels.softmax(np.zeros((2, 3), np.int8), **{**good, "axis": 2})
    with pytest.raises(TypeError, match="x must have dtype int8"):
        kernels.softmax(np.zeros((2, 3), np.uint8), **good)
