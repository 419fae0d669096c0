"""quant.contract.accumulator: the L1 limit of a target is the largest one no input can make overflow."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from quant.contract.accumulator import AccumulatorTarget, max_input_offset
from quant.contract.codes import code_range
from quant.contract.datapath import PRESETS, Datapath


def _brute_force_offset(bits: int, signed: bool, zero_point: bool) -> int:
    """max |x - z| over codes x and the zero points z the operand admits (0 alone without zero points)."""
    lo, hi = code_range(bits, signed)
    codes = [-1, 1] if (bits == 1 and signed) else range(lo, hi + 1)
    zeros = range(lo, hi + 1) if zero_point else [0]
    return max(abs(x - z) for x in codes for z in zeros)


@pytest.mark.parametrize("bits,signed,zero_point", [(b, s, z) for b in range(1, 9) for s in (False, True)
                                                     for z in (False, True) if not (b == 1 and s and z)])  # fmt: skip
def test_the_largest_input_offset_is_the_brute_force_one(bits: int, signed: bool, zero_point: bool) -> None:
    assert max_input_offset(bits, signed, zero_point) == _brute_force_offset(bits, signed, zero_point)


@given(acc_bits=st.integers(8, 32), input_bits=st.integers(1, 8), signed=st.booleans(), zero_point=st.booleans())
@example(acc_bits=16, input_bits=4, signed=False, zero_point=True)
@example(acc_bits=8, input_bits=4, signed=True, zero_point=False)
@example(acc_bits=32, input_bits=1, signed=True, zero_point=False)
def test_the_limit_is_exactly_the_largest_safe_l1_norm(acc_bits: int, input_bits: int, signed: bool, zero_point: bool) -> None:
    """D T fits the accumulator on both sides and D (T + 1) does not: codes of one sign reach D ||q||_1."""
    if input_bits == 1 and signed and zero_point:
        return
    d = max_input_offset(input_bits, signed, zero_point)
    if ((1 << (acc_bits - 1)) - 1) // d < 1:
        with pytest.raises(ValueError, match="L1 limit"):
            AccumulatorTarget(acc_bits, input_bits, signed, zero_point)
        return
    t = AccumulatorTarget(acc_bits, input_bits, signed, zero_point)
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    assert t.max_input_offset == d
    assert lo <= -d * t.l1_limit and d * t.l1_limit <= hi
    assert d * (t.l1_limit + 1) > hi


def test_small_targets_agree_with_exhaustive_product_sums() -> None:
    """Every vector of two int3 codes with ||q||_1 <= T, every input and zero point: the sum stays in range."""
    for acc_bits, bits, signed, zp in itertools.product((8, 9), (2, 3), (False, True), (False, True)):
        t = AccumulatorTarget(acc_bits, bits, signed, zp)
        lo, hi = code_range(bits, signed)
        zeros = range(lo, hi + 1) if zp else [0]
        q_range = range(-t.l1_limit, t.l1_limit + 1)
        worst = max(abs((x1 - z) * q1 + (x2 - z) * q2)
                    for q1 in q_range for q2 in q_range if abs(q1) + abs(q2) <= t.l1_limit
                    for z in zeros for x1 in (lo, hi) for x2 in (lo, hi))  # fmt: skip
        assert worst <= (1 << (acc_bits - 1)) - 1 and worst == t.max_input_offset * t.l1_limit


def test_a_target_from_every_preset() -> None:
    for dp in PRESETS.values():
        t = AccumulatorTarget.of(dp)
        assert (t.acc_bits, t.input_bits, t.input_signed, t.input_zero_point) == (dp.acc_bits, dp.a_bits, dp.a_signed,
                                                                                   dp.a_zero_point)  # fmt: skip
    assert AccumulatorTarget.of(Datapath.preset("w4a4_acc16_sat")).l1_limit == 32767 // 15


@pytest.mark.parametrize("kwargs,message", [
    (dict(acc_bits=40, input_bits=4, input_signed=False), r"AccumulatorTarget\.acc_bits=40 must be an integer in 8\.\.32"),
    (dict(acc_bits=7, input_bits=4, input_signed=False), r"AccumulatorTarget\.acc_bits=7 must be an integer in 8\.\.32"),
    (dict(acc_bits=16, input_bits=0, input_signed=False), r"AccumulatorTarget\.input_bits=0 must be an integer in 1\.\.8"),
    (dict(acc_bits=16, input_bits=9, input_signed=False), r"AccumulatorTarget\.input_bits=9 must be an integer in 1\.\.8"),
    (dict(acc_bits=True, input_bits=4, input_signed=False), r"AccumulatorTarget\.acc_bits=True must be an integer"),
    (dict(acc_bits=16, input_bits=4, input_signed=1), r"AccumulatorTarget\.input_signed=1 must be a bool"),
    (dict(acc_bits=16, input_bits=4, input_signed=False, input_zero_point="yes"),
     r"AccumulatorTarget\.input_zero_point='yes' must be a bool"),
    (dict(acc_bits=16, input_bits=1, input_signed=True, input_zero_point=True), r"input_zero_point=True is not allowed for binary"),
    (dict(acc_bits=8, input_bits=8, input_signed=False), r"acc_bits must be at least 9 for input_bits=8"),
])  # fmt: skip
def test_bad_targets_name_the_field_and_the_allowed_range(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AccumulatorTarget(**kwargs)  # type: ignore[arg-type]


def test_of_refuses_what_is_not_a_datapath() -> None:
    with pytest.raises(TypeError, match="expects a Datapath"):
        AccumulatorTarget.of("w4a4_acc16_sat")  # type: ignore[arg-type]
