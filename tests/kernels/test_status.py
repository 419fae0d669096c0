"""Every status of the C kernels maps to the argument of the Python wrapper behind it (kernels.status)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kernels
import kernels.api
from kernels import _qk
from kernels.c_sources import REPO_ROOT
from kernels.status import _BY_OP, _GENERIC, STATUS_NAMES, argument_of, named_status
from tests.kernels.test_errors import _binding_conv, _requant, _weights

TYPES_H = REPO_ROOT / "kernels" / "c" / "include" / "qk_types.h"


def _statuses_in(path: Path) -> set[str]:
    return set(re.findall(r"\bQK_(ERR_[A-Z_]+)\b", path.read_text()))


def test_every_status_of_the_headers_has_a_named_argument() -> None:
    declared = _statuses_in(TYPES_H)
    returned = set().union(*(_statuses_in(p) for p in (REPO_ROOT / "kernels" / "c" / "src").rglob("*.[ch]")))
    assert returned <= declared
    assert set(STATUS_NAMES.values()) == declared  # the binding exports each value
    assert {STATUS_NAMES[s] for s in _GENERIC} == declared
    for status in STATUS_NAMES:
        assert ":" in argument_of("conv2d", status), STATUS_NAMES[status]  # "argument: allowed range"


def test_op_entries_name_real_wrappers() -> None:
    for op, status in _BY_OP:
        assert callable(getattr(kernels.api, op)), op
        assert status in STATUS_NAMES


@pytest.mark.parametrize(
    "over, argument",
    [
        (dict(weights=_weights(np.ones(53, np.int8))), "w: its element count"),
        (dict(x=np.zeros(31, np.int8)), "x: its element count"),
        (dict(y=np.empty(13, np.int8)), "y: the output array"),
        (dict(scratch=np.empty(10, np.uint8)), "scratch: must hold at least"),
        (dict(bias=np.zeros(2, np.int32)), "bias: must hold one int32 per output channel"),
        (dict(x_zero_point=300), "x_zero_point, w_zero_point, y_zero_point: each inside"),
        (dict(requant=_requant(shift=np.array([31], np.int32))), "multiplier: its exponent"),
        (dict(requant=_requant(y_min=5, y_max=4)), "y_min, y_max: must lie inside"),
        (dict(isa=17), "isa: this instruction set is not available"),
    ],
)
def test_a_status_becomes_a_message_naming_the_argument(over: dict[str, Any], argument: str) -> None:
    with pytest.raises(ValueError) as raw:
        _binding_conv(**over)
    assert isinstance(getattr(raw.value, "qk_status", None), int)  # the binding carries the value
    with pytest.raises(ValueError, match=re.escape(f"conv2d: {argument}")) as named:
        with named_status("conv2d"):
            _binding_conv(**over)
    assert f"QK_{STATUS_NAMES[getattr(raw.value, 'qk_status')]}" in str(named.value)


def test_overflow_stays_an_overflow_error_and_other_errors_pass_through() -> None:
    from quant.contract.datapath import Datapath

    dp = Datapath(acc_bits=8, overflow="error", requant="pow2", rounding="floor")
    with pytest.raises(OverflowError, match="linear: datapath.acc_bits: the accumulator left its range"):
        kernels.linear(np.array([[20, 20, -50]], np.int8), np.array([[1, 1, 1]], np.int8), np.array([100], np.int32),
                       x_zero_point=0, w_zero_point=0, y_zero_point=0, multiplier=1.0, datapath=dp)  # fmt: skip
    with pytest.raises(ValueError, match="^plain$"):
        with named_status("conv2d"):
            raise ValueError("plain")
    with pytest.raises(TypeError, match="x must hold int8"):
        with named_status("conv2d"):
            _binding_conv(x=np.zeros((1, 2, 4, 4), np.float32))


def test_the_scalar_primitives_name_their_ranges() -> None:
    with pytest.raises(ValueError, match="rounding_right_shift: v=9223372036854775808 must be in"):
        kernels.rounding_right_shift(2**63, 1, "half_away")
    with pytest.raises(ValueError, match="rounding_right_shift: k=63 must be in 0..62"):
        kernels.rounding_right_shift(5, 63, "half_away")
    with pytest.raises(ValueError, match="saturating_rounding_doubling_high_mul: n=0 must be in 1..31"):
        kernels.saturating_rounding_doubling_high_mul(1, 1, 0)
    with pytest.raises(ValueError, match="saturating_rounding_doubling_high_mul: a=2147483648 must be in"):
        kernels.saturating_rounding_doubling_high_mul(2**31, 1)
    assert kernels.rounding_right_shift(-(2**63), 62, "half_away") == -2
    assert _qk.ERR_OVERFLOW in STATUS_NAMES
