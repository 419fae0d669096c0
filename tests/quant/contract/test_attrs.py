"""The validated attribute records: output sizes agree with PyTorch's ops and with the C library's own
``qk_conv2d_output_size``; bad attributes are refused at construction, naming the op and the argument."""

from __future__ import annotations

import dataclasses

from typing import Any, Union

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, strategies as st

from kernels import _abi, _qk
from quant.contract.attrs import (
    MAX_DIM,
    AddAttrs,
    AvgPool2dAttrs,
    Conv2dAttrs,
    LinearAttrs,
    LutAttrs,
    MaxPool2dAttrs,
    RequantizeAttrs,
)
from quant.contract.datapath import Datapath
from quant.contract.multiplier import FixedPointRequant

TFL = Datapath.preset("tflite_int8")


@st.composite
def conv_geometries(draw: st.DrawFn) -> dict[str, Any]:
    groups = draw(st.integers(1, 3))
    return dict(
        n=draw(st.integers(1, 2)), cg=draw(st.integers(1, 3)), og=draw(st.integers(1, 3)), groups=groups,
        h=draw(st.integers(1, 12)), w=draw(st.integers(1, 12)), kh=draw(st.integers(1, 4)), kw=draw(st.integers(1, 4)),
        stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding=(draw(st.integers(0, 3)), draw(st.integers(0, 3))),
        dilation=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
    )  # fmt: skip


def _conv_attrs(g: dict[str, Any]) -> Conv2dAttrs:
    return Conv2dAttrs.build(
        w_shape=(g["og"] * g["groups"], g["cg"], g["kh"], g["kw"]), x_zero_point=0, w_zero_point=0, y_zero_point=0,
        multiplier=0.5, stride=g["stride"], padding=g["padding"], dilation=g["dilation"], groups=g["groups"], datapath=TFL,
    )  # fmt: skip


@given(conv_geometries())
def test_conv2d_output_shape_is_torchs_and_the_c_librarys(g: dict[str, Any]) -> None:
    attrs = _conv_attrs(g)
    x_shape = (g["n"], g["cg"] * g["groups"], g["h"], g["w"])
    x = torch.zeros(x_shape)
    w = torch.zeros(attrs.w_shape)
    try:
        expected = tuple(F.conv2d(x, w, stride=g["stride"], padding=g["padding"], dilation=g["dilation"],
                                  groups=g["groups"]).shape)  # fmt: skip
    except RuntimeError:  # torch refuses an empty output
        with pytest.raises(ValueError, match="output would be empty"):
            attrs.output_shape(x_shape)
        with pytest.raises(ValueError, match="kernel size, stride, padding or dilation is invalid"):
            _qk.conv2d_output_size(_abi.conv2d_geometry(attrs, x_shape))
        return
    assert attrs.output_shape(x_shape) == expected
    assert _qk.conv2d_output_size(_abi.conv2d_geometry(attrs, x_shape)) == expected[2:]


@given(conv_geometries(), st.booleans())
def test_pool_output_shape_is_torchs(g: dict[str, Any], average: bool) -> None:
    k = (g["kh"], g["kw"])
    pad = (min(g["padding"][0], k[0] // 2), min(g["padding"][1], k[1] // 2))
    x = torch.zeros(g["n"], g["cg"], g["h"], g["w"])
    if average:
        attrs: Union[AvgPool2dAttrs, MaxPool2dAttrs] = AvgPool2dAttrs.build(k, g["stride"], pad, zero_point=0, datapath=TFL)
    else:
        attrs = MaxPool2dAttrs.build(k, g["stride"], pad, g["dilation"])
    try:
        if average:
            y = F.avg_pool2d(x, k, g["stride"], pad)
        else:
            y = F.max_pool2d(x, k, g["stride"], pad, g["dilation"])
        expected = tuple(y.shape)
    except RuntimeError:
        with pytest.raises(ValueError, match="output would be empty"):
            attrs.output_shape(tuple(x.shape))
        return
    assume(min(expected) > 0)
    assert attrs.output_shape(tuple(x.shape)) == expected


def test_global_pooling_takes_the_whole_plane() -> None:
    attrs = AvgPool2dAttrs.build(None, zero_point=3, datapath=TFL)
    assert attrs.window.resolve((2, 3, 5, 7), attrs.op) == ((5, 7), (5, 7), (0, 0), (1, 1))
    assert attrs.output_shape((2, 3, 5, 7)) == (2, 3, 1, 1)


@pytest.mark.parametrize(
    "over, exc, match",
    [
        (dict(groups=0), ValueError, "groups=0 does not fit"),
        (dict(groups=3), ValueError, "groups=3 does not fit"),
        (dict(groups=2.0), TypeError, "groups must be an int"),
        (dict(stride=(1, 2**31)), ValueError, f"at most {MAX_DIM}"),
        (dict(padding=-1), ValueError, "padding=-1 must be >= 0"),
        (dict(w_shape=(4, 2, 3)), ValueError, "w must have 4 dimensions"),
        (dict(w_shape=(4, 0, 3, 3)), ValueError, "positive dimensions"),
        (dict(w_shape=(2**31, 1, 1, 1)), ValueError, "dimension above"),
        (dict(w_zero_point=[0, 0, 0]), ValueError, "w_zero_point has 3 values"),
        (dict(w_zero_point=1.0), TypeError, "w_zero_point must be an int"),
        (dict(x_zero_point=True), TypeError, "x_zero_point must be an int"),
        (dict(multiplier=[0.5] * 3), ValueError, "one value per output channel"),
        (dict(datapath="tflite_int8"), TypeError, "datapath must be a Datapath"),
    ],
)
def test_conv2d_attrs_refuse_bad_attributes(over: dict[str, Any], exc: type[Exception], match: str) -> None:
    kw: dict[str, Any] = dict(w_shape=(4, 2, 3, 3), x_zero_point=0, w_zero_point=0, y_zero_point=0, multiplier=0.5,
                              datapath=TFL)  # fmt: skip
    kw.update(over)
    with pytest.raises(exc, match=match):
        Conv2dAttrs.build(**kw)


def test_records_hold_the_integer_form_and_compare_equal_when_built_alike() -> None:
    a = LinearAttrs.build(w_shape=(3, 5), x_zero_point=1, w_zero_point=[0, 0, 0], y_zero_point=2, multiplier=0.75,
                          datapath=TFL)  # fmt: skip
    assert isinstance(a.requant, FixedPointRequant) and a.requant.m0.tolist() == 1610612736
    assert a.w_zero_point == (0, 0, 0) and a.output.lo == -128 and a.output.hi == 127
    with pytest.raises(ValueError, match="x has K=4 but w has K=5"):
        a.output_shape((2, 4))
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.x_zero_point = 3  # type: ignore[misc]  # frozen
    b = LinearAttrs.build(w_shape=(3, 5), x_zero_point=1, w_zero_point=0, y_zero_point=2, multiplier=0.75, datapath=TFL)
    assert a != b  # per-channel zero points (0, 0, 0) are not the per-tensor (0,)
    c = LinearAttrs.build(w_shape=(3, 5), x_zero_point=1, w_zero_point=[0, 0, 0], y_zero_point=2,
                          multiplier=np.float64(0.75), datapath=TFL)  # fmt: skip
    assert a == c and hash(a) == hash(c) and len({a, c}) == 1
    d = LinearAttrs.build(w_shape=(3, 5), x_zero_point=1, w_zero_point=[0, 0, 0], y_zero_point=2, multiplier=0.7501,
                          datapath=TFL)  # fmt: skip
    assert a != d


def test_requantize_and_lut_records() -> None:
    r = RequantizeAttrs.build(in_zero_point=0, multiplier=[0.5, 0.25], y_zero_point=0, axis=1, datapath=TFL)
    assert r.channel_layout((2, 2, 3)) == (2, 2, 3)
    with pytest.raises(ValueError, match="has 3 channels"):
        r.channel_layout((2, 3))
    with pytest.raises(ValueError, match="in_zero_point=4294967296 must lie in the int32 range"):
        RequantizeAttrs.build(in_zero_point=2**32, multiplier=0.5, y_zero_point=0, datapath=TFL)
    lut = LutAttrs.build(x_bits=3, x_signed=True)
    assert lut.table_length == 8 and lut.x_range == (-4, 3)
    with pytest.raises(ValueError, match="x_bits=9"):
        LutAttrs.build(x_bits=9, x_signed=True)


def test_every_record_is_rebuilt_from_its_build_args() -> None:
    """``build_args()`` is the inverse of ``build``: what the IR stores to rebuild (and revalidate) a record."""
    for dp in (TFL, Datapath.preset("fbgemm_int8"), Datapath.preset("w2a2_pow2_acc16")):
        m = [0.25, 0.125] if dp.requant == "pow2" else [0.0123, 0.5]
        records = [
            Conv2dAttrs.build(w_shape=(2, 1, 3, 3), x_zero_point=0, w_zero_point=0, y_zero_point=1, multiplier=m,
                              stride=(2, 1), padding=1, dilation=(1, 2), groups=1, y_min=1, y_signed=False, datapath=dp),
            LinearAttrs.build(w_shape=(2, 5), x_zero_point=0, w_zero_point=[0, 0], y_zero_point=0, multiplier=m[0],
                              y_bits=4, datapath=dp),
            RequantizeAttrs.build(in_zero_point=-7, multiplier=m, y_zero_point=0, axis=1, datapath=dp),
        ]  # fmt: skip
        for rec in records:
            again = type(rec).build(**rec.build_args(), datapath=dp)  # type: ignore[attr-defined]
            assert again == rec and hash(again) == hash(rec)
        pool = AvgPool2dAttrs.build(3, 2, 1, zero_point=4, datapath=dp)
        assert AvgPool2dAttrs.build(**pool.build_args(), datapath=dp) == pool
    maxp = MaxPool2dAttrs.build(None)
    assert MaxPool2dAttrs.build(**maxp.build_args()) == maxp
    add = AddAttrs.build(a_zero_point=1, b_zero_point=-1, a_multiplier=0.7, b_multiplier=0.3, y_zero_point=2,
                         y_max=100, datapath=TFL)  # fmt: skip
    assert AddAttrs.build(**add.build_args(), datapath=TFL) == add
    lut = LutAttrs.build(x_bits=2, x_signed=False)
    assert LutAttrs.build(**lut.build_args()) == lut
