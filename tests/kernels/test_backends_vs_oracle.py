"""Both backends (the torch reference and the C kernels) against element-by-element Python oracles.

One test per op, parametrized over the backends through the NumPy adapter of
``tests/kernels/support.py``: the same random case goes to ``quant.reference`` and to
``kernels`` and each must equal ``tests/oracles/ops.py`` (exact codes, or OverflowError
where the oracle's sequential accumulation overflows in "error" mode).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from tests.kernels import support
from tests.kernels.support import BACKENDS, assert_same_outcome, outcome
from tests.kernels.test_conv_linear import conv_cases, linear_cases
from tests.kernels.test_pool_lut_pack import pool_cases
from tests.kernels.test_requantize_add import add_cases, requantize_cases
from tests.oracles import ops

EXAMPLES = 40
_SETTINGS = settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _oracle_outcome(fn: Callable[[], np.ndarray]) -> tuple[str, Any]:
    """The oracle's result; cases the contract refuses (the oracle has no checks) are skipped."""
    try:
        return "ok", fn()
    except OverflowError:
        return "error", OverflowError
    except (AssertionError, ValueError, ZeroDivisionError, OverflowError, TypeError):
        assume(False)
        raise


def _unpacked(w: Any) -> Any:
    return w.unpacked() if hasattr(w, "unpacked") else w


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@_SETTINGS
@given(case=conv_cases())
def test_conv2d(backend: str, case: dict[str, Any]) -> None:
    case = dict(case)
    x, w, b = case.pop("x"), case.pop("w"), case.pop("bias")
    assume(x.size * int(np.prod(_unpacked(w).shape[1:])) <= 4000)
    expected = _oracle_outcome(lambda: ops.conv2d(x, _unpacked(w), b, **case))
    got = outcome(lambda: BACKENDS[backend].conv2d(x, w, b, **case))
    assert_same_outcome(got, expected, f"conv2d {backend} vs oracle")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@_SETTINGS
@given(case=linear_cases())
def test_linear(backend: str, case: dict[str, Any]) -> None:
    case = dict(case)
    x, w, b = case.pop("x"), case.pop("w"), case.pop("bias")
    expected = _oracle_outcome(lambda: ops.linear(x, _unpacked(w), b, **case))
    got = outcome(lambda: BACKENDS[backend].linear(x, w, b, **case))
    assert_same_outcome(got, expected, f"linear {backend} vs oracle")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@_SETTINGS
@given(case=requantize_cases())
def test_requantize(backend: str, case: dict[str, Any]) -> None:
    case = dict(case)
    q = case.pop("q")
    assume(outcome(lambda: BACKENDS["torch_ref"].requantize(q, **case))[0] == "ok")
    expected = _oracle_outcome(lambda: ops.requantize(q, **case))
    assert_same_outcome(outcome(lambda: BACKENDS[backend].requantize(q, **case)), expected, f"requantize {backend}")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@_SETTINGS
@given(case=add_cases())
def test_add(backend: str, case: dict[str, Any]) -> None:
    case = dict(case)
    a, b = case.pop("a"), case.pop("b")
    assume(outcome(lambda: BACKENDS["torch_ref"].add(a, b, **case))[0] == "ok")
    expected = _oracle_outcome(lambda: ops.add(a, b, **case))
    assert_same_outcome(outcome(lambda: BACKENDS[backend].add(a, b, **case)), expected, f"add {backend}")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@_SETTINGS
@given(case=pool_cases(), rounding=st.sampled_from(("half_away", "half_up", "half_even", "floor")),
       zero_point=st.integers(-20, 300))  # fmt: skip
def test_pools(backend: str, case: dict[str, Any], rounding: str, zero_point: int) -> None:
    from quant.contract.datapath import Datapath

    x = case["x"]
    args = (case["kernel_size"], case["stride"], case["padding"])
    expected = _oracle_outcome(lambda: ops.max_pool2d(x, *args, case["dilation"]))
    assert_same_outcome(outcome(lambda: BACKENDS[backend].max_pool2d(x, *args, case["dilation"])), expected, "max")
    dp = Datapath(rounding=rounding)
    expected = _oracle_outcome(lambda: ops.avg_pool2d(x, *args, zero_point=zero_point, datapath=dp))
    got = outcome(lambda: BACKENDS[backend].avg_pool2d(x, *args, zero_point=zero_point, datapath=dp))
    assert_same_outcome(got, expected, f"avg_pool2d {backend}")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@_SETTINGS
@given(data=st.data())
def test_lut(backend: str, data: st.DataObject) -> None:
    bits, signed = data.draw(st.integers(1, 8)), data.draw(st.booleans())
    x = support.codes(data.draw, (data.draw(st.integers(1, 30)),), bits, signed)
    table = support.codes(data.draw, (1 << bits,), 8, data.draw(st.booleans()))
    expected = ops.lut(x, table, x_bits=bits, x_signed=signed)
    got = BACKENDS[backend].lut(x, table, x_bits=bits, x_signed=signed)
    assert_same_outcome(("ok", got), ("ok", expected), f"lut {backend}")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@_SETTINGS
@given(data=st.data())
def test_lut_per_channel(backend: str, data: st.DataObject) -> None:
    bits, signed, channels = data.draw(st.integers(1, 8)), data.draw(st.booleans()), data.draw(st.integers(2, 6))
    shape = (data.draw(st.integers(1, 3)), channels, *data.draw(st.sampled_from([(), (3,), (2, 5)])))
    x = support.codes(data.draw, shape, bits, signed)
    table = support.codes(data.draw, (channels, 1 << bits), 8, data.draw(st.booleans()))
    expected = ops.lut(x, table, x_bits=bits, x_signed=signed, channels=channels)
    got = BACKENDS[backend].lut(x, table, x_bits=bits, x_signed=signed, channels=channels)
    assert_same_outcome(("ok", got), ("ok", expected), f"lut {backend}")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_lut_per_channel_refusals_are_the_same(backend: str) -> None:
    table = np.zeros((3, 4), np.int8)
    with pytest.raises(ValueError, match=r"lut: 3 per-channel tables need x of shape \(N, 3, ...\), got \(2, 4\)"):
        BACKENDS[backend].lut(np.zeros((2, 4), np.int8), table, x_bits=2, x_signed=True, channels=3)
    with pytest.raises(ValueError, match=r"lut: table has 8 entries, expected channels \* 2\^x_bits = 12"):
        BACKENDS[backend].lut(np.zeros((2, 3), np.int8), table[:2], x_bits=2, x_signed=True, channels=3)
    with pytest.raises(ValueError, match=r"lut: table must have 2 dimensions, got shape \(12,\)"):
        BACKENDS[backend].lut(np.zeros((2, 3), np.int8), table.reshape(-1), x_bits=2, x_signed=True, channels=3)
