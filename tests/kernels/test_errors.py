"""Bad input to the C kernels raises the named exception, both from the wrappers and from the C checks."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

import kernels
from kernels import _qk
from kernels._abi import datapath_struct
from quant.contract.datapath import Datapath
from tests.oracles import ops

TFL = Datapath.preset("tflite_int8")
W4A4 = Datapath.preset("w4a4_acc16_sat")


def _conv_args(**over: Any) -> dict[str, Any]:
    kw: dict[str, Any] = dict(
        x=np.zeros((1, 2, 4, 4), dtype=np.int8),
        w=np.ones((3, 2, 3, 3), dtype=np.int8),
        bias=np.zeros(3, dtype=np.int32),
        x_zero_point=0,
        w_zero_point=0,
        y_zero_point=0,
        multiplier=0.25,
        datapath=TFL,
    )
    kw.update(over)
    return kw


def _conv(**over: Any) -> np.ndarray:
    kw = _conv_args(**over)
    return kernels.conv2d(kw.pop("x"), kw.pop("w"), kw.pop("bias"), **kw)


@pytest.mark.parametrize(
    "over, exc, match",
    [
        (dict(x=np.zeros((1, 2, 4, 4), dtype=np.int16)), TypeError, "x must have dtype int8, got int16"),
        (dict(x=np.zeros((1, 2, 4, 4), dtype=np.uint8)), TypeError, "x must have dtype int8"),
        (dict(x=[[1]]), TypeError, "x must be a numpy.ndarray"),
        (dict(x=np.zeros((1, 2, 4, 8), dtype=np.int8)[..., ::2]), ValueError, "x must be C-contiguous"),
        (dict(x=np.zeros((2, 4, 4), dtype=np.int8)), ValueError, "x must have 4 dimensions"),
        (dict(x=np.zeros((1, 3, 4, 4), dtype=np.int8)), ValueError, "groups=1 does not fit"),
        (dict(w=np.ones((3, 2, 3, 3), dtype=np.uint8)), TypeError, "w must have dtype int8"),
        (dict(bias=np.zeros(3, dtype=np.int64)), TypeError, "bias must have dtype int32"),
        (dict(bias=np.zeros(4, dtype=np.int32)), ValueError, "bias has 4 values"),
        (dict(x_zero_point=200), ValueError, "x_zero_point=200 is outside the code range"),
        (dict(w_zero_point=1), ValueError, "w_zero_point=1 must be 0"),
        (dict(w_zero_point=np.array([0, 0])), ValueError, "w_zero_point has 2 values"),
        (dict(y_zero_point=128), ValueError, "y_zero_point=128 is outside"),
        (dict(y_bits=9), ValueError, "y_bits=9 must be an integer in 1..8"),
        (dict(y_bits=1, y_signed=True), ValueError, "binary codes"),
        (dict(y_min=5, y_max=4), ValueError, "empty output range"),
        (dict(multiplier=-0.5), ValueError, r"multiplier=-0.5 must be finite and >= 0"),
        (dict(multiplier=float("nan")), ValueError, "must be finite"),
        (dict(multiplier=2.0**31), ValueError, "too large for fixed-point"),
        (dict(multiplier=[0.5, 0.5]), ValueError, "one value per output channel"),
        (dict(multiplier=np.ones((3, 1))), ValueError, "1-D per-channel"),
        (dict(multiplier=0.3, datapath=Datapath(requant="pow2")), ValueError, "exact power of two"),
        (dict(stride=0), ValueError, "stride=0 must be >= 1"),
        (dict(padding=(1, 2, 3)), ValueError, "padding"),
        (dict(w=np.ones((3, 2, 5, 5), dtype=np.int8)), ValueError, "output would be empty"),
        (dict(datapath="tflite_int8"), TypeError, "datapath must be a Datapath"),
        (dict(bias=np.array([2**20, 0, 0], dtype=np.int32), datapath=W4A4, x=np.zeros((1, 2, 4, 4), np.uint8),
              w=np.ones((3, 2, 3, 3), np.int8), x_zero_point=0), ValueError, "outside the 16-bit range"),  # fmt: skip
        (dict(x=np.full((1, 2, 4, 4), 16, np.uint8), datapath=W4A4), ValueError,
         r"x has values in \[16, 16\] outside the uint4 code range \[0, 15\]"),  # fmt: skip
    ],
)
def test_conv2d_bad_input(over: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        _conv(**over)


def test_binary_operand_holding_zero() -> None:
    dp = Datapath(name="bin", w_bits=1, w_signed=True, a_bits=8)
    with pytest.raises(ValueError, match="w holds 0, but binary codes are -1 or \\+1"):
        kernels.linear(np.zeros((1, 3), np.int8), np.array([[1, 0, -1]], np.int8), None, x_zero_point=0,
                       w_zero_point=0, y_zero_point=0, multiplier=1.0, datapath=dp)  # fmt: skip


def test_overflow_error_mode_raises_overflow_error_naming_the_op() -> None:
    dp = Datapath(acc_bits=8, overflow="error", requant="pow2", rounding="floor")
    x, w = np.array([[20, 20, -50]], np.int8), np.array([[1, 1, 1]], np.int8)
    kw: dict[str, Any] = dict(x_zero_point=0, w_zero_point=0, y_zero_point=0, multiplier=1.0)
    with pytest.raises(OverflowError):  # the sequential accumulation of docs §4 leaves the 8-bit range
        ops.linear(x, w, np.array([100], np.int32), **kw, datapath=dp)
    with pytest.raises(OverflowError, match="linear"):
        kernels.linear(x, w, np.array([100], np.int32), **kw, datapath=dp)
    sat = dp.with_(overflow="saturate")
    got = kernels.linear(x, w, np.array([100], np.int32), **kw, datapath=sat)
    expected = ops.linear(x, w, np.array([100], np.int32), **kw, datapath=sat)
    assert got.tolist() == expected.tolist()
    unclamped = x.astype(np.int64) @ w.T.astype(np.int64) + 100
    assert expected.tolist() != unclamped.tolist()  # the sequential 8-bit clamp decides this output
    xs = np.full((1, 1, 3, 3), 100, np.int8)
    with pytest.raises(OverflowError, match="conv2d"):
        kernels.conv2d(xs, np.ones((1, 1, 3, 3), np.int8), None, **kw, datapath=dp)


def test_packed_weights_validation() -> None:
    w = np.ones((3, 2, 3, 3), dtype=np.int8)
    with pytest.raises(ValueError, match="PackedWeights.bits=3"):
        kernels.PackedWeights(np.zeros((3, 9), np.uint8), 3, True, (3, 2, 3, 3))
    with pytest.raises(ValueError, match="expected \\(3, 9\\)"):
        kernels.PackedWeights(np.zeros((3, 8), np.uint8), 4, True, (3, 2, 3, 3))
    with pytest.raises(ValueError, match="packed weights are int4 but datapath 'tflite_int8' has int8"):
        _conv(w=kernels.pack_weights(w, 4, True))
    with pytest.raises(ValueError, match="pack: codes in \\[-3, -3\\] do not fit 2 bits"):
        kernels.pack_weights(np.full((2, 2), -3, np.int8), 2, True)


def test_pack_unpack_bad_input() -> None:
    with pytest.raises(ValueError, match="bits=0"):
        kernels.pack(np.zeros(4, np.int8), 0)
    with pytest.raises(TypeError, match="codes must have dtype int8 or uint8"):
        kernels.pack(np.zeros(4, np.int32), 4)
    with pytest.raises(ValueError, match="1-bit codes mix -1 and 0"):
        kernels.pack(np.array([-1, 0, 1], np.int8), 1)
    with pytest.raises(ValueError, match="packed has shape \\(3,\\), expected \\(2,\\)"):
        kernels.unpack(np.zeros(3, np.uint8), 4, (4,))
    with pytest.raises(TypeError, match="packed must have dtype uint8"):
        kernels.unpack(np.zeros(2, np.int8), 4, (4,))


def test_other_ops_bad_input() -> None:
    with pytest.raises(ValueError, match="table has 3 entries, expected 2\\^x_bits = 4"):
        kernels.lut(np.zeros(2, np.int8), np.zeros(3, np.int8), x_bits=2, x_signed=True)
    with pytest.raises(ValueError, match="x has values in \\[5, 5\\] outside the int2 code range"):
        kernels.lut(np.full(2, 5, np.int8), np.zeros(4, np.int8), x_bits=2, x_signed=True)
    with pytest.raises(ValueError, match="padding=\\(2, 2\\) must be at most half"):
        kernels.max_pool2d(np.zeros((1, 1, 4, 4), np.int8), 2, padding=2)
    with pytest.raises(ValueError, match="max_pool2d: kernel_size, .*a dilated window that holds only padding has no maximum"):
        kernels.max_pool2d(np.zeros((1, 1, 1, 1), np.int8), (1, 2), stride=1, padding=(0, 1), dilation=(1, 2))
    with pytest.raises(ValueError, match="global pooling"):
        kernels.avg_pool2d(np.zeros((1, 1, 4, 4), np.int8), None, stride=1, zero_point=0, datapath=TFL)
    with pytest.raises(ValueError, match="a and b must have the same shape"):
        kernels.add(np.zeros(3, np.int8), np.zeros(4, np.int8), a_zero_point=0, b_zero_point=0, a_multiplier=0.5,
                    b_multiplier=0.5, y_zero_point=0, datapath=TFL)  # fmt: skip
    with pytest.raises(ValueError, match="must not both be 0"):
        kernels.add(np.zeros(3, np.int8), np.zeros(3, np.int8), a_zero_point=0, b_zero_point=0, a_multiplier=0.0,
                    b_multiplier=0.0, y_zero_point=0, datapath=TFL)  # fmt: skip
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        kernels.requantize(np.zeros((2, 2), np.int32), in_zero_point=0, multiplier=[0.5, 0.5], y_zero_point=0, axis=2,
                           datapath=TFL)  # fmt: skip
    with pytest.raises(ValueError, match="needs a channel axis"):
        kernels.requantize(np.zeros((2, 2), np.int32), in_zero_point=0, multiplier=[0.5, 0.5], y_zero_point=0,
                           datapath=TFL)  # fmt: skip
    with pytest.raises(ValueError, match="isa='sse9'"):
        kernels.requantize(np.zeros(2, np.int32), in_zero_point=0, multiplier=0.5, y_zero_point=0, datapath=TFL,
                           isa="sse9")  # fmt: skip
    with pytest.raises(ValueError, match="mode='nearest'"):
        kernels.rounding_right_shift(5, 1, "nearest")


def test_datapath_the_kernels_cannot_honour() -> None:
    """A Datapath whose fields were forced past its own validation is refused (by the wrapper or by C)."""
    broken = dataclasses.replace(TFL)
    object.__setattr__(broken, "overflow", "clip")
    with pytest.raises(ValueError, match="cannot run datapath"):
        _conv(datapath=broken)
    broken = dataclasses.replace(TFL)
    object.__setattr__(broken, "acc_bits", 40)
    with pytest.raises(ValueError, match="conv2d: datapath: a field outside its allowed values .*QK_ERR_DATAPATH"):
        _conv(datapath=broken)


# ----------------------------------------------------------------------------- C-side checks through the binding


_GEOMETRY = dict(n=1, c_in=2, h=4, w=4, c_out=3, kh=3, kw=3, stride_h=1, stride_w=1, pad_h=0, pad_w=0,
                 dilation_h=1, dilation_w=1, groups=1)  # fmt: skip


def _requant(**over: Any) -> dict[str, Any]:
    rq: dict[str, Any] = dict(multiplier=np.array([1 << 30], np.int32), shift=np.array([-1], np.int32),
                              fmultiplier=None, y_zero_point=0, y_bits=8, y_signed=1, y_min=-128, y_max=127)  # fmt: skip
    rq.update(over)
    return rq


def _weights(data: Any, packed_bits: int = 0) -> dict[str, Any]:
    return dict(data=data, packed_bits=packed_bits, zero_point=np.zeros(1, np.int32))


def _binding_conv(**over: Any) -> None:
    x = np.zeros((1, 2, 4, 4), np.int8)
    args: dict[str, Any] = dict(
        geometry=_GEOMETRY,
        datapath=datapath_struct(TFL),
        x=x,
        x_zero_point=0,
        weights=_weights(np.ones(54, np.int8)),
        bias=None,
        requant=_requant(),
        y=np.empty(12, np.int8),
        scratch=np.empty(_qk.conv2d_scratch_bytes(_GEOMETRY, datapath_struct(TFL)), np.uint8),
        isa=_qk.ISA_AUTO,
    )
    args.update(over)
    _qk.conv2d(**args)


@pytest.mark.parametrize(
    "over, exc, match",
    [
        ({}, None, ""),
        (dict(weights=_weights(np.ones(53, np.int8))), ValueError, "weight buffer length"),
        (dict(weights=_weights(np.ones(3 * 9, np.uint8), 4)), ValueError, "bit width"),
        (dict(weights=_weights(np.ones(3 * 9, np.uint8), 8)), ValueError, "bit width"),
        (dict(x=np.zeros(31, np.int8)), ValueError, "input buffer length"),
        (dict(y=np.empty(13, np.int8)), ValueError, "output buffer length"),
        (dict(scratch=np.empty(10, np.uint8)), ValueError, "scratch buffer"),
        (dict(bias=np.zeros(2, np.int32)), ValueError, "bias length"),
        (dict(x_zero_point=300), ValueError, "zero point"),
        (dict(requant=_requant(multiplier=np.array([1 << 29], np.int32))), ValueError, "multiplier"),
        (dict(requant=_requant(shift=np.array([31], np.int32))), ValueError, "shift"),
        (dict(requant=_requant(y_min=5, y_max=4)), ValueError, "y_min/y_max"),
        (dict(isa=17), ValueError, "instruction set"),
        (dict(x=np.zeros((1, 2, 4, 4), np.float32)), TypeError, "x must hold int8 elements"),
        (dict(x=np.zeros((1, 2, 4, 8), np.int8)[..., ::2]), TypeError, "x must be a C-contiguous buffer"),
        (dict(y=np.empty(12, np.int8)[::1].copy().view(np.uint8)), TypeError, "y must hold int8"),
        (dict(datapath=(1, 2, 3)), TypeError, "datapath must be a dict of its fields"),
        (dict(datapath={**datapath_struct(TFL), "acc_width": 32}), TypeError, "an unknown field"),
        (dict(datapath={k: v for k, v in datapath_struct(TFL).items() if k != "rounding"}), TypeError,
         "qk_datapath: missing field 'rounding'"),  # fmt: skip
        (dict(datapath={**datapath_struct(TFL), "acc_bits": 2**40}), ValueError, "'acc_bits' does not fit int32_t"),
        (dict(geometry={**_GEOMETRY, "kh": 2.5}), TypeError, "integer"),
        (dict(requant={k: v for k, v in _requant().items() if k != "shift"}), TypeError, "missing field 'shift'"),
    ],
)
def test_c_checks_through_the_binding(over: dict[str, Any], exc: Any, match: str) -> None:
    if exc is None:
        _binding_conv(**over)
        return
    with pytest.raises(exc, match=match):
        _binding_conv(**over)


def test_binding_read_only_output_is_refused() -> None:
    y = np.empty(12, np.int8)
    y.setflags(write=False)
    with pytest.raises(TypeError, match="y must be a C-contiguous writable buffer"):
        _binding_conv(y=y)


def test_scratch_buffers_start_on_the_kernels_alignment() -> None:
    """The kernels lay their scratch arrays out at multiples of 64 bytes from its start: keep that aligned."""
    from kernels.api import SCRATCH_ALIGN, _scratch

    for n in (1, 63, 64, 1000, 1 << 20):
        s = _scratch(n)
        assert s.ctypes.data % SCRATCH_ALIGN == 0 and s.size == n and s.flags.c_contiguous and s.flags.writeable
