"""matmul of two activation tensors (docs/arithmetic.md section 6.4) on both backends against the linear oracle
of tests/oracles (an independent definition), on random shapes, datapaths and zero points; refusals by name."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quant.contract.backend import get_backend
from quant.contract.datapath import Datapath
from quant.contract.matmul import MatmulAttrs, run_matmul
from tests.kernels.support import codes, datapaths, output, zero_point
from tests.oracles import ops

TFL = Datapath.preset("tflite_int8")


def _oracle(a: np.ndarray, b: np.ndarray, **kw: Any) -> np.ndarray:
    """Per batch index, the oracle's linear of ``a`` by ``b^T`` with ``z_b`` as its zero point."""
    k, n, batch = b.shape[-2], b.shape[-1], int(np.prod(a.shape[:-2], dtype=np.int64))
    a2, b2 = a.reshape(batch, a.shape[-2], k), b.reshape(batch, k, n)
    za, zb = kw.pop("a_zero_point"), kw.pop("b_zero_point")
    out = [ops.linear(a2[i], b2[i].T, None, x_zero_point=za, w_zero_point=zb, **kw) for i in range(a2.shape[0])]
    return np.stack(out).reshape(*a.shape[:-1], n) if out else np.zeros((*a.shape[:-1], n), np.int64)


@given(st.data())
def test_both_backends_equal_the_oracle(data: st.DataObject) -> None:
    draw: Any = data.draw
    dp: Datapath = draw(datapaths())
    batch = tuple(draw(st.lists(st.integers(0 if draw(st.booleans()) else 1, 3), max_size=2)))
    m, k, n = draw(st.integers(0, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 5))
    a = codes(draw, (*batch, m, k), dp.a_bits, dp.a_signed)
    b = codes(draw, (*batch, k, n), dp.a_bits, dp.a_signed)
    mult = 2.0 ** -draw(st.integers(0, 12)) if dp.requant == "pow2" else float(2.0 ** draw(st.floats(-14.0, 1.0)))
    kw: dict[str, Any] = dict(a_zero_point=zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point),
                              b_zero_point=zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point),
                              multiplier=mult, datapath=dp, **output(draw))  # fmt: skip
    attrs = MatmulAttrs.build(k=k, n=n, **kw)
    outcomes: dict[str, tuple[str, Any]] = {}
    for backend in ("torch_ref", "c"):
        try:
            outcomes[backend] = ("ok", run_matmul(get_backend(backend), attrs, a, b).astype(np.int64))
        except OverflowError:
            outcomes[backend] = ("overflow", None)
    try:
        expected: Any = ("ok", _oracle(a, b, **kw))
    except OverflowError:
        expected = ("overflow", None)
    for backend, got in outcomes.items():
        assert got[0] == expected[0], backend
        if got[0] == "ok":
            assert got[1].shape == (*batch, m, n)
            np.testing.assert_array_equal(got[1], expected[1], err_msg=backend)


def test_refusals_name_the_argument() -> None:
    kw: dict[str, Any] = dict(k=3, n=2, a_zero_point=0, b_zero_point=0, multiplier=0.5, y_zero_point=0, datapath=TFL)
    with pytest.raises(ValueError, match=r"matmul: a_zero_point=300 is outside the code range"):
        MatmulAttrs.build(**{**kw, "a_zero_point": 300})
    with pytest.raises(ValueError, match=r"matmul: b_zero_point=-200 is outside the code range"):
        MatmulAttrs.build(**{**kw, "b_zero_point": -200})
    with pytest.raises(ValueError, match=r"matmul: multiplier must be one value"):
        MatmulAttrs.build(**{**kw, "multiplier": [0.5, 0.25]})
    with pytest.raises(ValueError, match=r"matmul: multiplier=-1.0 must be finite and >= 0"):
        MatmulAttrs.build(**{**kw, "multiplier": -1.0})
    with pytest.raises(ValueError, match=r"matmul: k=0 must be in 1..2147483647"):
        MatmulAttrs.build(**{**kw, "k": 0})
    attrs = MatmulAttrs.build(**kw)
    a, b = np.zeros((2, 4, 3), np.int8), np.zeros((2, 3, 2), np.int8)
    assert run_matmul(get_backend("c"), attrs, a, b).shape == (2, 4, 2)
    with pytest.raises(ValueError, match=r"matmul: a and b must have the same batch dimensions, got \(2,\) and \(3,\)"):
        run_matmul(get_backend("c"), attrs, a, np.zeros((3, 3, 2), np.int8))
    with pytest.raises(ValueError, match=r"do not fit k=3, n=2"):
        run_matmul(get_backend("torch_ref"), attrs, a, np.zeros((2, 4, 2), np.int8))
