"""Integer LayerNorm (docs/arithmetic.md section 6.5): both backends against the element-by-element oracle on
random code widths, row lengths, gamma, bias, epsilon terms and datapaths; the dequantized result against
torch's float layer_norm; degenerate rows; refusals, alike in both backends."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
import quant.reference as ref
from quant.contract.datapath import PRESETS, Datapath
from quant.contract.layernorm import LAYERNORM_MAX_LENGTH, LayerNormAttrs, layernorm_eps_term
from tests.kernels import support
from tests.kernels.support import BACKENDS, assert_same
from tests.oracles import ops as oracle

PRESET_NAMES = sorted(PRESETS)


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    dp = PRESETS[draw(st.sampled_from(PRESET_NAMES))]
    bits, signed = draw(st.integers(2, 8)), draw(st.booleans())
    length = draw(st.sampled_from([1, 2, 3, 8, 17, 64]))
    lead = draw(st.sampled_from([(0,), (1,), (3,), (2, 2)]))
    x = support.codes(draw, (*lead, length), bits, signed)
    gamma = support.codes(draw, (length,), 8, True) if draw(st.booleans()) else None
    bias = np.array(draw(st.lists(st.integers(-(1 << 31), (1 << 31) - 1), min_size=length, max_size=length)),
                    dtype=np.int32) if draw(st.booleans()) else None  # fmt: skip
    if dp.requant == "pow2":
        m: Any = 2.0 ** -draw(st.integers(8, 30))
    else:
        one = st.floats(2.0**-30, 2.0**-6)
        m = draw(st.lists(one, min_size=length, max_size=length)) if draw(st.booleans()) else draw(one)
    y_bits, y_signed = draw(st.integers(2, 8)), draw(st.booleans())
    lo, hi = (-(1 << (y_bits - 1)), (1 << (y_bits - 1)) - 1) if y_signed else (0, (1 << y_bits) - 1)
    eps = draw(st.sampled_from([0, 1, 12345, (1 << 62) - 1, int(draw(st.integers(0, 1 << 40)))]))
    return dict(x=x, gamma=gamma, bias=bias, dp=dp, args=dict(
        length=length, x_bits=bits, x_signed=signed, eps_term=eps, multiplier=m, y_zero_point=draw(st.integers(lo, hi)),
        gamma_zero_point=draw(st.integers(-128, 127)), y_bits=y_bits, y_signed=y_signed))  # fmt: skip


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@settings(max_examples=120, deadline=None)
@given(case=cases())
def test_layernorm_matches_the_oracle(backend: str, case: dict[str, Any]) -> None:
    attrs = LayerNormAttrs.build(**case["args"], datapath=case["dp"])
    got = BACKENDS[backend].backend.layernorm(attrs, case["x"], case["gamma"], case["bias"])
    args = {k: v for k, v in case["args"].items() if k not in ("length", "x_bits", "x_signed")}
    expected = oracle.layernorm(case["x"], case["gamma"], case["bias"], **args, datapath=case["dp"])
    assert_same(got, expected, f"layernorm {backend}")


@pytest.mark.parametrize("preset", ["tflite_int8", "fbgemm_int8", "w2a2_pow2_acc16"])
def test_the_codes_are_torchs_layer_norm_within_a_rounding(preset: str) -> None:
    """Dequantized, the op is ``F.layer_norm`` of the dequantized input with the dequantized gamma and beta, to
    within one output step (the rounding) plus the integer square root's relative error."""
    torch.manual_seed(0)
    dp = Datapath.preset(preset)
    length, s_x, s_g, s_y, eps = 48, 0.05, 2.0**-6, 2.0**-5, 1e-5
    x = torch.randint(-60, 60, (16, length)) if dp.a_signed else torch.randint(0, 120, (16, length))
    g = torch.randint(-128, 128, (length,))
    beta = torch.randn(length) * 0.5
    bias = torch.round(beta * 2**15 / s_g).to(torch.int64)
    y = ref.layernorm(x, x_bits=8, x_signed=dp.a_signed, eps_term=layernorm_eps_term(eps, s_x, length),
                      multiplier=s_g / (2**15 * s_y), y_zero_point=0, gamma=g, bias=bias, y_bits=8, datapath=dp)  # fmt: skip
    real = F.layer_norm(x.double() * s_x, (length,), g.double() * s_g, bias.double() * s_g / 2**15, eps)
    inside = real.abs() < 127 * s_y
    err = (y.double() * s_y - real)[inside].abs()
    assert err.max() <= 0.5 * s_y + 1e-3 * real.abs().max(), float(err.max())


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_constant_row_is_its_bias_and_an_empty_batch_is_empty(backend: str) -> None:
    dp = PRESETS["tflite_int8"]
    attrs = LayerNormAttrs.build(length=4, x_bits=8, x_signed=True, eps_term=0, multiplier=2.0**-15, y_zero_point=3,
                                 datapath=dp)  # fmt: skip
    be = BACKENDS[backend].backend
    bias = np.array([0, 2**15, -(2**16), 5 * 2**15], dtype=np.int32)
    y = be.layernorm(attrs, np.full((2, 4), -7, np.int8), np.array([1, 2, 3, 4], np.int8), bias)
    assert y.tolist() == [[3, 4, 1, 8]] * 2
    assert be.layernorm(attrs, np.zeros((0, 4), np.int8), None, None).shape == (0, 4)


def test_the_eps_term_is_eps_in_code_units_times_l_cubed() -> None:
    assert layernorm_eps_term(1e-5, 2.0**-4, 16) == round(1e-5 * 16**3 * 256)
    assert layernorm_eps_term(1.0, 1e-30, 1024) == (1 << 62) - 1
    assert layernorm_eps_term(0.0, 0.1, 8) == 0
    with pytest.raises(ValueError, match="eps=-1.0 must be >= 0"):
        layernorm_eps_term(-1.0, 0.1, 8)
    with pytest.raises(ValueError, match="x_scale=nan must be a finite number"):
        layernorm_eps_term(1e-5, float("nan"), 8)


BAD: list[tuple[dict[str, Any], str]] = [
    ({"eps_term": -1}, "eps_term=-1 must be in 0..2\\^62-1"),
    ({"eps_term": 1 << 62}, "eps_term=4611686018427387904 must be in 0..2\\^62-1"),
    ({"gamma_zero_point": 128}, "gamma_zero_point=128 must be in \\[-128, 127\\]"),
    ({"multiplier": [2.0**-15] * 3}, "multiplier has 3 values; it must be a scalar or have one value per output channel \\(4\\)"),
    ({"x_bits": 9}, "x_bits"),
    ({"y_min": 5, "y_max": 2}, "y_min"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_attributes_are_refused_by_name(change: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = dict(x_bits=8, x_signed=True, eps_term=0, multiplier=2.0**-15, y_zero_point=0,
                                datapath=PRESETS["tflite_int8"])  # fmt: skip
    x = np.zeros((2, 4), np.int8)
    with pytest.raises(ValueError, match=message):
        kernels.layernorm(x, **{**args, **change})
    with pytest.raises(ValueError, match=message):
        ref.layernorm(torch.from_numpy(x), **{**args, **change})


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_bad_operands_are_refused_alike(backend: str) -> None:
    dp = PRESETS["tflite_int8"]
    attrs = LayerNormAttrs.build(length=4, x_bits=4, x_signed=True, eps_term=0, multiplier=2.0**-15, y_zero_point=0,
                                 datapath=dp)  # fmt: skip
    be = BACKENDS[backend].backend
    with pytest.raises(ValueError, match="x of shape \\(2, 5\\) must have 4 elements in its last dimension"):
        be.layernorm(attrs, np.zeros((2, 5), np.int8), None, None)
    with pytest.raises(ValueError, match="outside|range"):
        be.layernorm(attrs, np.full((2, 4), 9, np.int8), None, None)
    with pytest.raises(ValueError, match="gamma must hold 4 int8 codes, got 3"):
        be.layernorm(attrs, np.zeros((2, 4), np.int8), np.zeros(3, np.int8), None)
    with pytest.raises(ValueError, match="bias must hold 4 int32 values"):
        be.layernorm(attrs, np.zeros((2, 4), np.int8), None, np.zeros(5, np.int32))
    with pytest.raises(ValueError, match=f"length=20000 must be in 1..{LAYERNORM_MAX_LENGTH}"):
        LayerNormAttrs.build(length=20000, x_bits=8, x_signed=True, eps_term=0, multiplier=1.0, y_zero_point=0,
                             datapath=dp)  # fmt: skip
