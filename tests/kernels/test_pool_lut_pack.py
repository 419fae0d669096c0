"""Pooling and lookup tables (section 6), sub-byte storage (section 3), and the C primitives
(sections 2, 5.1): C equals the torch reference and ``quant.reference.packing`` bit for bit."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings, strategies as st

import kernels
import quant.reference.packing as qpacking
import quant.reference as ref
from quant.contract.datapath import Datapath
from quant.contract.rounding import INTEGER_ROUNDING_MODES
from tests.edge_values import EDGE_INT32, EDGE_MULTIPLIERS, INT32_MAX, INT32_MIN, code_limits, exact_ties
from tests.kernels import support
from tests.kernels.support import BACKENDS, assert_same, assert_same_outcome, outcome

POOL_EXAMPLES = 150
LUT_EXAMPLES = 50
PACK_EXAMPLES = 100
PRIMITIVE_EXAMPLES = 200


@st.composite
def pool_cases(draw: st.DrawFn) -> dict[str, Any]:
    signed = draw(st.booleans())
    bits = draw(st.integers(1, 8))
    n, c, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
    x = support.codes(draw, (n, c, h, w), bits, signed)
    if draw(st.integers(0, 4)) == 0:
        return dict(x=x, kernel_size=None, stride=None, padding=0, dilation=1)
    kh, kw = draw(st.integers(1, min(h, 4))), draw(st.integers(1, min(w, 4)))
    stride: Optional[Any] = draw(st.none() | st.integers(1, 3) | st.tuples(st.integers(1, 3), st.integers(1, 3)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    dilation = draw(st.integers(1, 2))
    return dict(x=x, kernel_size=(kh, kw), stride=stride, padding=padding, dilation=dilation)


@settings(max_examples=POOL_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(pool_cases(), st.sampled_from(INTEGER_ROUNDING_MODES), st.integers(-300, 300))
def test_pools_match_reference(case: dict[str, Any], rounding: str, zero_point: int) -> None:
    x = case["x"]
    args = (case["kernel_size"], case["stride"], case["padding"])
    dp = Datapath(rounding=rounding)
    expected = outcome(lambda: BACKENDS["torch_ref"].max_pool2d(x, *args, case["dilation"]))
    assert_same_outcome(outcome(lambda: BACKENDS["c"].max_pool2d(x, *args, case["dilation"])), expected, "max_pool2d")
    expected = outcome(lambda: BACKENDS["torch_ref"].avg_pool2d(x, *args, zero_point=zero_point, datapath=dp))
    got = outcome(lambda: BACKENDS["c"].avg_pool2d(x, *args, zero_point=zero_point, datapath=dp))
    assert_same_outcome(got, expected, f"avg_pool2d ({rounding}, z={zero_point})")


@settings(max_examples=LUT_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_lut_matches_reference(data: st.DataObject) -> None:
    bits, signed = data.draw(st.integers(1, 8)), data.draw(st.booleans())
    x = support.codes(data.draw, (data.draw(st.integers(1, 50)),), bits, signed)
    tsigned = data.draw(st.booleans())
    table = support.codes(data.draw, (1 << bits,), 8, tsigned)
    expected = BACKENDS["torch_ref"].lut(x, table, x_bits=bits, x_signed=signed)
    assert_same(BACKENDS["c"].lut(x, table, x_bits=bits, x_signed=signed), expected, "lut")


# ----------------------------------------------------------------------------- packing


@settings(max_examples=PACK_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 8), st.sampled_from([None, True, False]), st.integers(1, 4), st.integers(1, 37), st.data())
def test_pack_unpack_match_quant_packing(
    bits: int, signed: Optional[bool], rows: int, cols: int, data: st.DataObject
) -> None:
    as_signed = signed if signed is not None else data.draw(st.booleans())
    codes = support.codes(data.draw, (rows, cols), bits, as_signed)
    if bits == 1 and signed is None and as_signed:
        codes = codes.astype(np.int8)
    packed = kernels.pack(codes, bits, signed=signed)
    expected = qpacking.pack(torch.from_numpy(codes), bits, signed=signed).numpy()
    assert packed.dtype == np.uint8
    assert_same(packed, expected, f"pack bits={bits} signed={signed}")
    back = kernels.unpack(packed, bits, codes.shape, signed=as_signed)
    ref_back = qpacking.unpack(torch.from_numpy(packed), bits, codes.shape, signed=as_signed).numpy()
    assert back.dtype == ref_back.dtype
    assert_same(back, ref_back, "unpack")
    assert_same(back, codes, "round trip")


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("signed", [True, False])
def test_pack_weights_round_trip(bits: int, signed: bool) -> None:
    lo, hi = code_limits(bits, signed)
    rng = np.random.default_rng(bits * 2 + signed)
    w = rng.integers(lo, hi + 1, size=(5, 3, 3, 3))
    if bits == 1 and signed:
        w = np.where(w == 0, 1, w)
    w = w.astype(np.int8 if signed else np.uint8)
    pw = kernels.pack_weights(w, bits, signed)
    assert pw.data.shape == (5, (27 * bits + 7) // 8)
    assert_same(pw.unpacked(), w, "pack_weights round trip")
    assert_same(pw.data, qpacking.pack(torch.from_numpy(w.reshape(5, -1)), bits, signed=signed).numpy(), "vs quant")


# ----------------------------------------------------------------------------- primitives

_INT64_EDGES = sorted({v for e in range(63) for d in (-2, -1, 0, 1, 2) for s in (1, -1)
                       if -(2**63) <= (v := s * ((1 << e) + d)) < 2**63} | {-(2**63), 2**63 - 1})  # fmt: skip


@pytest.mark.parametrize("mode", INTEGER_ROUNDING_MODES)
def test_rounding_right_shift_edge_sweep(mode: str) -> None:
    """Every k in 0..62 on +-2 around every power of two, the int64 limits and exact ties."""
    values = list(_INT64_EDGES)
    for k in range(63):
        vs = values + (exact_ties(k) if k >= 1 else [])
        vs = [v for v in vs if -(2**63) <= v < 2**63]
        expected = ref.rounding_right_shift(torch.tensor(vs, dtype=torch.int64), k, mode).tolist()
        got = [kernels.rounding_right_shift(v, k, mode) for v in vs]
        assert got == expected, f"rounding_right_shift k={k} {mode}: first difference at {next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)}"


@settings(max_examples=PRIMITIVE_EXAMPLES)
@given(st.sampled_from(EDGE_INT32) | st.integers(INT32_MIN, INT32_MAX),
       st.sampled_from(EDGE_INT32) | st.integers(INT32_MIN, INT32_MAX), st.integers(1, 31))  # fmt: skip
@example(INT32_MIN, INT32_MIN, 31)
@example(INT32_MIN, INT32_MAX, 31)
@example(INT32_MAX, INT32_MAX, 31)
@example(-1, 1 << 30, 31)
def test_srdhm_matches_reference(a: int, b: int, n: int) -> None:
    expected = int(ref.saturating_rounding_doubling_high_mul(torch.tensor(a), torch.tensor(b), n))
    assert kernels.saturating_rounding_doubling_high_mul(a, b, n) == expected


def test_max_pool_window_of_only_padding_is_refused_by_both_backends() -> None:
    """Width 1, kernel 2, dilation 2, padding 1: the window at w=0 covers padding only."""
    x = np.arange(4, dtype=np.int8).reshape(1, 1, 4, 1)
    with pytest.raises(ValueError, match="padding"):
        ref.max_pool2d(torch.from_numpy(x), 2, stride=1, padding=1, dilation=2)
    with pytest.raises(ValueError):
        kernels.max_pool2d(x, 2, stride=1, padding=1, dilation=2)
