"""One ABI: the structs declared in the C headers, the binding's field tables and the Python encoders agree
field by field, and every value the encoders produce lands in the C field of its name."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels import _abi, _qk
from quant.contract.attrs import AddAttrs, Conv2dAttrs, OutputCodes
from quant.contract.datapath import PRESETS, Datapath
from quant.contract.multiplier import requant_params
from tests.kernels.support import datapaths

INCLUDE = Path(__file__).resolve().parents[2] / "kernels" / "c" / "include"
_C_TYPES = {"int32_t": "i", "float": "f"}


def header_structs() -> dict[str, list[tuple[str, str]]]:
    """``{struct: [(field, C type), ...]}`` in declaration order, read from the public headers."""
    text = "\n".join(p.read_text() for p in sorted(INCLUDE.glob("*.h")))
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    out: dict[str, list[tuple[str, str]]] = {}
    for name, body in re.findall(r"typedef struct (qk_\w+)\s*\{(.*?)\}\s*\1\s*;", text, flags=re.S):
        fields: list[tuple[str, str]] = []
        for decl in body.split(";"):
            decl = " ".join(decl.split())
            if not decl:
                continue
            m = re.fullmatch(r"(const )?(\w+)\s*(\*?)\s*(.+)", decl)
            assert m is not None, f"{name}: cannot read the declaration {decl!r}"
            ctype = m.group(2) + ("*" if m.group(3) else "")
            for field in m.group(4).split(","):
                fields.append((field.strip().lstrip("*"), ctype))
        out[name] = fields
    return out


HEADERS = header_structs()
ABI = _qk.abi()


@pytest.mark.parametrize("name", sorted(ABI))
def test_binding_tables_follow_the_headers(name: str) -> None:
    """Each binding table names the header's scalar fields in declaration order, with their types and offsets."""
    size, table = ABI[name]
    scalars = [(f, _C_TYPES[t]) for f, t in HEADERS[name] if t in _C_TYPES]
    assert [(f, t) for f, _, t in table] == scalars
    offsets = [o for _, o, _ in table]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    if all(t in _C_TYPES for _, t in HEADERS[name]):  # a struct of 4-byte scalars only: packed, no padding
        assert offsets == [4 * i for i in range(len(table))] and size == 4 * len(table)


def test_every_struct_that_crosses_the_binding_is_declared() -> None:
    assert set(ABI) <= set(HEADERS)
    assert {"qk_datapath", "qk_conv2d_geometry", "qk_pool2d_geometry", "qk_requant_params", "qk_add_params"} <= set(ABI)


def _decode(name: str, raw: bytes) -> dict[str, Any]:
    """Read back each field of a struct from its bytes at the offset and type the binding reports."""
    _, table = ABI[name]
    return {f: struct.unpack_from("=" + t, raw, offset)[0] for f, offset, t in table}


def _fields(name: str) -> set[str]:
    return {f for f, _, _ in ABI[name][1]}


@given(datapaths())
def test_datapath_values_land_in_their_fields(dp: Datapath) -> None:
    fields = _abi.datapath_struct(dp)
    assert set(fields) == _fields("qk_datapath")
    assert _decode("qk_datapath", _qk.struct_bytes("qk_datapath", fields)) == fields


def _distinct_values(name: str) -> dict[str, Any]:
    """A different value for every field, so a value landing in the wrong field is seen."""
    return {f: (float(i) + 0.5 if t == "f" else 1000 + i) for i, (f, _, t) in enumerate(ABI[name][1])}


@pytest.mark.parametrize("name", sorted(ABI))
def test_each_value_lands_in_the_field_of_its_name(name: str) -> None:
    fields = _distinct_values(name)
    assert _decode(name, _qk.struct_bytes(name, fields)) == fields


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_encoders_produce_exactly_the_fields_of_the_structs(preset: str) -> None:
    dp = PRESETS[preset]
    multiplier = 0.25
    conv = Conv2dAttrs.build(w_shape=(4, 2, 3, 3), x_zero_point=0, w_zero_point=0, y_zero_point=0,
                             multiplier=multiplier, padding=1, y_signed=False, datapath=dp)  # fmt: skip
    geometry = _abi.conv2d_geometry(conv, (1, 2, 5, 5))
    assert set(geometry) == _fields("qk_conv2d_geometry")
    assert _decode("qk_conv2d_geometry", _qk.struct_bytes("qk_conv2d_geometry", geometry)) == geometry
    pool = _abi.pool_geometry((1, 2, 5, 5), ((3, 3), (2, 2), (1, 1), (1, 1)))
    assert set(pool) == _fields("qk_pool2d_geometry")
    rq = _abi.requant_struct(requant_params(multiplier, dp), OutputCodes.build("t", 8, False, None, None, 3))
    assert set(rq) == _fields("qk_requant_params") | {"multiplier", "shift", "fmultiplier"}
    add = AddAttrs.build(a_zero_point=0, b_zero_point=0, a_multiplier=0.5, b_multiplier=0.25, y_zero_point=0,
                         y_signed=False, datapath=dp)  # fmt: skip
    params = _abi.add_struct(add)
    assert set(params) == _fields("qk_add_params")
    decoded = _decode("qk_add_params", _qk.struct_bytes("qk_add_params", params))
    assert decoded == {k: (float(np.float32(v)) if isinstance(v, float) else v) for k, v in params.items()}


@given(st.sampled_from(sorted(ABI)), st.data())
def test_unknown_or_missing_fields_are_refused(name: str, data: st.DataObject) -> None:
    fields = _distinct_values(name)
    drop = data.draw(st.sampled_from(sorted(fields)))
    with pytest.raises(TypeError, match=f"missing field '{drop}'"):
        _qk.struct_bytes(name, {k: v for k, v in fields.items() if k != drop})
    with pytest.raises(TypeError, match="unknown field"):
        _qk.struct_bytes(name, {**fields, "not_a_field": 0})
