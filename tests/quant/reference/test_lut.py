"""lut, clamp, pad, reshape, flatten (docs §6)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from quant.reference import clamp, flatten, lut, pad, reshape
from tests.edge_values import code_limits
from tests.oracles.exact import assert_exact


@given(bits=st.integers(1, 8), signed=st.booleans(), data=st.data())
def test_lut_is_table_indexing(bits: int, signed: bool, data: st.DataObject) -> None:
    lo, hi = code_limits(bits, signed)
    codes = [c for c in range(lo, hi + 1) if not (bits == 1 and signed and c == 0)]
    table = data.draw(st.lists(st.integers(-128, 255), min_size=2**bits, max_size=2**bits))
    x = data.draw(st.lists(st.sampled_from(codes), min_size=1, max_size=50))
    got = lut(torch.tensor(x), torch.tensor(table), x_bits=bits, x_signed=signed)
    assert_exact(got, [table[codes.index(v)] for v in x], f"lut {bits} {signed}")


def test_lut_sigmoid_table_on_int8() -> None:
    codes = torch.arange(-128, 128)
    table = torch.round(torch.sigmoid(codes.double() / 16) * 255).to(torch.int64)
    assert_exact(lut(codes, table, x_bits=8, x_signed=True), table, "sigmoid table")


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(table=torch.zeros(15, dtype=torch.int64)), ValueError, "16"),
        (dict(x=torch.tensor([8])), ValueError, "x has values"),
        (dict(x_bits=9), ValueError, "x_bits"),
        (dict(table=torch.zeros(16)), TypeError, "table"),
    ],
)
def test_lut_errors(kwargs: dict[str, Any], exc: type, match: str) -> None:
    args: dict[str, Any] = dict(x=torch.tensor([1]), table=torch.zeros(16, dtype=torch.int64), x_bits=4, x_signed=True)
    args.update(kwargs)
    x, table = args.pop("x"), args.pop("table")
    with pytest.raises(exc, match=match):
        lut(x, table, **args)


def test_clamp_pad_reshape_flatten() -> None:
    q = torch.tensor([[-5, 3], [9, 0]], dtype=torch.int8)
    assert_exact(clamp(q, lo=0, hi=6), torch.clamp(q, 0, 6), "clamp vs torch.clamp")
    assert clamp(q, lo=0, hi=6).dtype == torch.int64
    assert_exact(pad(q, (1, 0, 0, 1), value=3), F.pad(q, (1, 0, 0, 1), value=3), "pad vs F.pad")
    assert_exact(reshape(q, (4,)), torch.reshape(q, (4,)), "reshape vs torch.reshape")
    x = torch.arange(24, dtype=torch.int64).reshape(2, 3, 4)
    assert_exact(flatten(x), torch.flatten(x, 1), "flatten vs torch.flatten")
    with pytest.raises(ValueError, match="lo=2"):
        clamp(q, lo=2, hi=1)
    with pytest.raises(ValueError, match="padding"):
        pad(q, (1,), value=0)
    with pytest.raises(TypeError, match="integer"):
        reshape(q.float(), (4,))
