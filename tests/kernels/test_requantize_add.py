"""requantize (sections 5, 6) and add (section 6.1): C equals the torch reference bit for bit.

Accumulators include the edge values of tests/edge_values.py (+-2 around every power of two,
the int32 and accumulator limits) and exact rounding ties; multipliers include the edge
multipliers (flush threshold, renormalization, the largest exponent, refused values).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from quant.contract.datapath import Datapath
from quant.contract.rounding import INTEGER_ROUNDING_MODES
from tests.edge_values import EDGE_INT32, EDGE_MULTIPLIERS, code_limits
from tests.kernels import support
from tests.kernels.support import BACKENDS, C_ISAS, c_kernels, assert_same, assert_same_outcome, outcome

REQUANTIZE_EXAMPLES = 300
ADD_EXAMPLES = 200


@st.composite
def requantize_cases(draw: st.DrawFn) -> dict[str, Any]:
    dp = draw(support.datapaths())
    shape = draw(st.sampled_from([(7,), (3, 5), (2, 3, 4), (1, 4, 1, 3)]))
    q = support.int32_values(draw, int(np.prod(shape))).reshape(shape)
    axis = draw(st.none() | st.integers(-len(shape), len(shape) - 1))
    channels = shape[axis] if axis is not None else 1
    kind = draw(st.sampled_from(("random", "edge", "tie")))
    if kind == "edge" and dp.requant != "pow2":
        mult: Any = draw(st.sampled_from(EDGE_MULTIPLIERS))
    elif kind == "tie":  # exact powers of two: every odd accumulator is a tie somewhere
        mult = 2.0 ** -draw(st.integers(1, 6))
    else:
        mult = support.multiplier(draw, dp, channels)
    out = support.output(draw)
    out.pop("y_min", None)
    out.pop("y_max", None)
    z_in = draw(st.sampled_from([0, 0, 1, -1, 2**31 - 1, -(2**31)]) | st.integers(-(2**31), 2**31 - 1))
    return dict(q=q, in_zero_point=z_in, multiplier=mult, axis=axis, datapath=dp, **out)


@settings(max_examples=REQUANTIZE_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(requantize_cases())
def test_requantize_matches_reference(case: dict[str, Any]) -> None:
    case = dict(case)
    q = case.pop("q")
    expected = outcome(lambda: BACKENDS["torch_ref"].requantize(q, **case))
    event(f"outcome: {expected[0] if expected[0] == 'ok' else expected[1].__name__}")
    for isa in C_ISAS:
        got = outcome(lambda: c_kernels(isa).requantize(q, **case))
        assert_same_outcome(got, expected, f"requantize C[{isa}] ({case['datapath'].describe()})")


_REQUANT_DATAPATHS = [
    Datapath(name=f"{req}-{fpr}-{rnd}-{zpo}-{n}", requant=req, fixed_point_rounding=fpr, rounding=rnd,
             zero_point_order=zpo, multiplier_bits=n)
    for req in ("fixed_point", "float32", "float64", "pow2")
    for fpr in (("double", "single") if req == "fixed_point" else ("double",))
    for rnd in INTEGER_ROUNDING_MODES
    for zpo in (("after_rounding", "before_rounding") if req.startswith("float") else ("after_rounding",))
    for n in ((31, 15, 8) if req == "fixed_point" else (31,))
]  # fmt: skip


@pytest.mark.parametrize("dp", _REQUANT_DATAPATHS, ids=lambda d: d.name)
def test_requantize_edge_sweep(dp: Datapath) -> None:
    """Every edge accumulator times every edge multiplier (and ties), every rounding mode."""
    q = np.array(EDGE_INT32, dtype=np.int32)
    ties = np.array([v for k in range(1, 8) for v in (1 << (k - 1), -(1 << (k - 1)), 3 << (k - 1), -(3 << (k - 1)))],
                    dtype=np.int32)  # fmt: skip
    q = np.concatenate([q, ties])
    if dp.requant == "pow2":
        mults = [2.0**-k for k in (-30, -3, -1, 0, 1, 2, 5, 17, 31)]
    else:
        mults = list(EDGE_MULTIPLIERS) + [2.0**-k for k in (1, 2, 3, 7, 30)] + [0.0, 1e-3, 0.3]
    for m in mults:
        for zy, signed in ((0, True), (3, False), (-5, True)):
            kw = dict(in_zero_point=0, multiplier=m, y_zero_point=zy, y_signed=signed, datapath=dp)
            if not signed and zy < 0:
                continue
            expected = outcome(lambda: BACKENDS["torch_ref"].requantize(q, **kw))
            for isa in C_ISAS:
                got = outcome(lambda: c_kernels(isa).requantize(q, **kw))
                assert_same_outcome(got, expected, f"requantize {dp.name} m={m!r} zy={zy} C[{isa}]")


@pytest.mark.parametrize("rounding", INTEGER_ROUNDING_MODES)
@pytest.mark.parametrize("bits", [15, 8])
def test_requantize_fixed_single_lane_width_edge(bits: int, rounding: str) -> None:
    """Single-rounding fixed point near the largest accumulator whose product with M0 fits int32: vectors
    of 16 values that all fit, that all fit but one, and that sit exactly on the limit, for shifts from 1
    to 31 and both signs of the multiplier's effect; every ISA equals the reference."""
    from quant.contract.multiplier import FixedPointRequant, requant_params

    dp = Datapath(name=f"fixed-single-{bits}-{rounding}", requant="fixed_point", fixed_point_rounding="single",
                  rounding=rounding, multiplier_bits=bits)
    rng = np.random.default_rng(bits)
    for m in [0.75, 0.5, 0.999, 2.0**-9 * 1.37, 2.0**-20 * 1.9, 2.0**-30 * 1.01, 3.0, 2.0**-14]:
        params = requant_params(m, dp)
        assert isinstance(params, FixedPointRequant)
        m0, exponent = int(params.m0), int(params.exponent)
        lim = (2**31 - 1) // max(abs(m0), 1)
        near = np.array([lim, -lim, lim - 1, -lim + 1, lim + 1, -lim - 1, 2**31 - 1, -(2**31)], dtype=np.int64)
        fit = rng.integers(-lim, lim + 1, size=16)
        one_out = fit.copy()
        one_out[rng.integers(0, 16)] = lim + 1
        ties = (np.arange(-8, 8) * 2 + 1) << max(0, min(30, bits - exponent - 1))
        q = np.concatenate([np.clip(v, -(2**31), 2**31 - 1) for v in
                            (np.full(16, lim), np.full(16, -lim), fit, one_out, near, ties, fit[:5])]).astype(np.int32)  # fmt: skip
        kw = dict(in_zero_point=0, multiplier=m, y_zero_point=1, y_signed=True, datapath=dp)
        expected = outcome(lambda: BACKENDS["torch_ref"].requantize(q, **kw))
        for isa in C_ISAS:
            got = outcome(lambda: c_kernels(isa).requantize(q, **kw))
            assert_same_outcome(got, expected, f"requantize {dp.name} m={m!r} C[{isa}]")


@st.composite
def add_cases(draw: st.DrawFn) -> dict[str, Any]:
    dp = draw(support.datapaths())
    shape = draw(st.sampled_from([(5,), (2, 3), (1, 2, 3, 5), (40,)]))
    a = support.codes(draw, shape, dp.a_bits, dp.a_signed)
    b = support.codes(draw, shape, dp.a_bits, dp.a_signed)

    def mult() -> float:
        if dp.requant == "pow2":
            return 2.0 ** -draw(st.integers(-4, 8))
        return float(draw(st.sampled_from([0.5, 0.25, 1.0, 0.75]) | st.floats(2.0**-10, 2.0**3)))

    return dict(
        a=a,
        b=b,
        a_zero_point=support.zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point),
        b_zero_point=support.zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point),
        a_multiplier=mult(),
        b_multiplier=mult(),
        datapath=dp,
        **support.output(draw),
    )


@settings(max_examples=ADD_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(add_cases())
def test_add_matches_reference(case: dict[str, Any]) -> None:
    case = dict(case)
    a, b = case.pop("a"), case.pop("b")
    expected = outcome(lambda: BACKENDS["torch_ref"].add(a, b, **case))
    event(f"outcome: {expected[0] if expected[0] == 'ok' else expected[1].__name__}")
    got = outcome(lambda: BACKENDS["c"].add(a, b, **case))
    assert_same_outcome(got, expected, f"add ({case['datapath'].describe()})")


@pytest.mark.parametrize("preset", sorted(support.PRESETS_BY_NAME))
def test_add_every_code_pair(preset: str) -> None:
    """All pairs of activation codes (exhaustive for the preset's operand width)."""
    dp = Datapath.preset(preset)
    lo, hi = code_limits(dp.a_bits, dp.a_signed)
    grid = np.arange(lo, hi + 1)
    a = np.repeat(grid, len(grid)).astype(np.int8 if dp.a_signed else np.uint8)
    b = np.tile(grid, len(grid)).astype(a.dtype)
    zp = (lo + hi + 1) // 2 if dp.a_zero_point else 0
    for ma, mb in ((0.5, 0.25), (0.37, 0.61), (1.0, 2.0 ** -3)):
        kw = dict(a_zero_point=zp, b_zero_point=0 if not dp.a_zero_point else lo, a_multiplier=ma, b_multiplier=mb,
                  y_zero_point=0, datapath=dp)  # fmt: skip
        if dp.requant == "pow2" and ma == 0.37:
            continue
        expected = BACKENDS["torch_ref"].add(a, b, **kw)
        assert_same(BACKENDS["c"].add(a, b, **kw), expected, f"add {preset} m=({ma}, {mb})")
