"""quantize / dequantize (docs §7) against NumPy float32 scalar arithmetic and exact rounding."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import example, given, strategies as st

from quant import Datapath
from quant.reference import dequantize, quantize
from tests.edge_values import code_limits
from tests.oracles import rounding
from tests.oracles.exact import assert_exact

MODES = ("half_away", "half_up", "half_even", "floor")
f32 = st.floats(-1e4, 1e4, width=32, allow_nan=False)


def _code(v: float, s: float, z: int, method: str, mode: str, qmin: int, qmax: int) -> int:
    """One code of docs §7 from NumPy float32 scalars and exact rounding (finite ``v``)."""
    v32, s32 = np.float32(v), np.float32(s)
    inv = np.float32(1.0) / s32
    if method == "reciprocal_fma":
        fused = rounding.float32_of(Fraction(float(v32)) * Fraction(float(inv)) + z)
        return max(qmin, min(qmax, rounding.round_float(fused, mode)))
    r = v32 * inv if method == "reciprocal" else v32 / s32
    return max(qmin, min(qmax, rounding.round_float(float(np.float32(r)), mode) + z))


@pytest.mark.parametrize("method", ["reciprocal", "reciprocal_fma", "division"])
@pytest.mark.parametrize("mode", MODES)
@given(x=st.lists(f32, min_size=1, max_size=30), s=st.floats(2.0**-13, 10, width=32), z=st.integers(-128, 255),
       bits=st.integers(2, 8), signed=st.booleans())
@example(x=[-27.750002, 0.25, -0.25, 0.75, 1e4, -1e4, 0.0], s=0.3, z=0, bits=8, signed=True)
@example(x=[0.5, 1.5, 2.5, -0.5, -1.5], s=1.0, z=3, bits=4, signed=False)
def test_quantize_matches_float32_scalars(method: str, mode: str, x: list[float], s: float, z: int, bits: int,
                                          signed: bool) -> None:
    qmin, qmax = code_limits(bits, signed)
    z = max(qmin, min(qmax, z))
    expected = [_code(v, s, z, method, mode, qmin, qmax) for v in x]
    dp = Datapath(quantize_mode=method, quantize_rounding=mode)
    got = quantize(torch.tensor(x, dtype=torch.float32), scale=s, zero_point=z, bits=bits, signed=signed, datapath=dp)
    assert_exact(got, expected, f"quantize {method} {mode}")


def test_quantize_per_channel_binary_and_infinities() -> None:
    dp = Datapath.preset("tflite_int8")
    qmin, qmax = code_limits(8, True)
    rows, scales, zps = [[0.5, -0.5], [3.0, -3.0]], [0.5, 2.0], [1, -1]
    got = quantize(torch.tensor(rows), scale=torch.tensor(scales), zero_point=torch.tensor(zps), axis=0, datapath=dp)
    expected = [[_code(v, s, z, dp.quantize_mode, dp.quantize_rounding, qmin, qmax) for v in row]
                for row, s, z in zip(rows, scales, zps)]
    assert_exact(got, expected, "per channel")
    binary = [0.0, -0.0, -1e-9, 3.0]  # docs §7: sign codes, +1 at zero (either sign)
    assert_exact(quantize(torch.tensor(binary), scale=1.0, zero_point=0, bits=1, datapath=dp),
                 [1 if v >= 0 else -1 for v in binary], "binary")
    assert_exact(quantize(torch.tensor([float("inf"), -float("inf")]), scale=1.0, zero_point=0, datapath=dp),
                 [qmax, qmin], "inf")
    with pytest.raises(ValueError, match="NaN"):
        quantize(torch.tensor([float("nan")]), scale=1.0, zero_point=0, datapath=dp)
    with pytest.raises(ValueError, match="scale"):
        quantize(torch.tensor([1.0]), scale=0.0, zero_point=0, datapath=dp)
    with pytest.raises(ValueError, match="zero_point"):
        quantize(torch.tensor([1.0]), scale=1.0, zero_point=200, datapath=dp)
    with pytest.raises(TypeError, match="floating"):
        quantize(torch.tensor([1]), scale=1.0, zero_point=0, datapath=dp)
    with pytest.raises(ValueError, match="axis"):
        quantize(torch.tensor(rows), scale=[0.5, 2.0], zero_point=0, datapath=dp)


def test_dequantize() -> None:
    q = torch.tensor([[0, 5], [-3, 7]])
    got = dequantize(q, scale=torch.tensor([0.5, 0.1]), zero_point=torch.tensor([1, 2]), axis=1)
    expected = np.array([[np.float32(-1) * np.float32(0.5), np.float32(3) * np.float32(0.1)],
                         [np.float32(-4) * np.float32(0.5), np.float32(5) * np.float32(0.1)]], dtype=np.float32)
    assert got.dtype == torch.float32 and np.array_equal(got.numpy(), expected)
