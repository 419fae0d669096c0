"""Sizes that overflow are refused, never used wrapped; huge pooling windows cost O(1) per window; both
backends refuse what the contract bounds with the same message (issue: nothing crashes, hangs or lies)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import kernels
import quant.reference as ref
from kernels import _qk
from kernels._abi import datapath_struct
from quant.contract.attrs import MAX_WINDOW, Conv2dAttrs
from quant.contract.datapath import Datapath
from tests.kernels.support import BACKENDS

DP = Datapath.preset("tflite_int8")


def test_a_padded_plane_that_does_not_fit_is_refused_not_written() -> None:
    """conv2d with padding 2^29 - 1 and stride 2^30 (a valid 1x1 output) used to wrap the plane size and segfault."""
    code = ("import numpy as np, kernels; from quant.contract.datapath import Datapath; "
            "kernels.conv2d(np.zeros((1, 16, 2, 2), np.int8), np.zeros((1, 16, 1, 1), np.int8), None, x_zero_point=0, "
            "w_zero_point=0, y_zero_point=0, multiplier=0.5, padding=2**29 - 1, stride=2**30, "
            "datapath=Datapath.preset('tflite_int8'))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Segmentation" not in done.stderr  # a Python exception, not a signal
    assert "ValueError: conv2d: padding=(536870911, 536870911) around a 2x2 input makes a padded plane" in done.stderr


def test_the_scratch_query_refuses_sizes_that_do_not_fit() -> None:
    geometry = {"n": 1, "c_in": 16, "h": 2, "w": 2, "c_out": 1, "kh": 1, "kw": 1, "stride_h": 2**30, "stride_w": 2**30,
                "pad_h": 2**29 - 1, "pad_w": 2**29 - 1, "dilation_h": 1, "dilation_w": 1, "groups": 1}  # fmt: skip
    with pytest.raises(ValueError, match="a buffer size does not fit size_t"):
        _qk.conv2d_scratch_bytes(geometry, datapath_struct(DP))
    wide = dict(geometry, c_in=2**31 - 1, kh=2**31 - 1, kw=2**31 - 1, stride_h=1, stride_w=1, pad_h=0, pad_w=0,
                h=2**31 - 1, w=2**31 - 1)  # a reduction length far beyond 2^64 once multiplied out
    with pytest.raises(ValueError, match="a buffer size does not fit size_t"):
        _qk.conv2d_scratch_bytes(wide, datapath_struct(DP))


def test_a_reduction_longer_than_the_contract_allows_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"reduction length C_in/groups \* kh \* kw must be at most 2\^31 - 1"):
        Conv2dAttrs.build(w_shape=(1, 65536, 256, 256), x_zero_point=0, w_zero_point=0, y_zero_point=0, multiplier=0.5,
                          datapath=DP)  # fmt: skip


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_huge_window_of_mostly_padding_is_computed_not_scanned(backend: str) -> None:
    """A 2048x2048 window with 1024 of padding on a 2x2 input: one window, the four codes."""
    x = np.array([[[[3, -7], [5, 1]]]], dtype=np.int8)
    got = BACKENDS[backend].max_pool2d(x, 2048, 2048, 1024)
    avg = BACKENDS[backend].avg_pool2d(x, 2048, 2048, 1024, zero_point=0, datapath=DP)
    assert got.tolist() == [[[[5]]]] and avg.tolist() == [[[[1]]]]  # (3 - 7 + 5 + 1) / 4 = 0.5 -> 1 half_away


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_windows_beyond_the_contract_are_refused_alike(backend: str) -> None:
    x = np.zeros((1, 1, 2, 2), np.int8)
    with pytest.raises(ValueError, match=rf"kernel_size=\(4097, 4096\) has {4097 * 4096} elements; a pooling window "
                                         rf"holds at most 2\^24 = {MAX_WINDOW}"):  # fmt: skip
        BACKENDS[backend].max_pool2d(x, (4097, 4096), 1, 0)


def test_the_c_core_spans_match_a_scan_of_the_window() -> None:
    """qk_max_pool2d's O(1) window bounds against the reference on random dilated, padded windows."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 9, 2))
        k = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        p = (int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1)))
        d = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        x = rng.integers(-128, 128, size=(1, 2, h, w)).astype(np.int8)
        try:
            want = ref.max_pool2d(torch.from_numpy(x.astype(np.int64)), k, s, p, d).numpy()
        except ValueError:
            with pytest.raises(ValueError):
                kernels.max_pool2d(x, k, s, p, d)
            continue
        np.testing.assert_array_equal(kernels.max_pool2d(x, k, s, p, d), want)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_an_add_of_infinite_products_of_opposite_signs_is_the_zero_point(backend: str) -> None:
    """float32 add with multipliers near FLT_MAX: +inf + -inf is 0 in both backends (the reference returned
    a code far outside the range)."""
    dp = Datapath.preset("fbgemm_int8")
    got = BACKENDS[backend].add(np.array([255, 0], np.uint8), np.array([0, 0], np.uint8), a_zero_point=0,
                                b_zero_point=128, a_multiplier=3e38, b_multiplier=3e38, y_zero_point=7, y_signed=False,
                                datapath=dp)  # fmt: skip
    assert got.tolist() == [7, 0]  # 255 m - 128 m: inf - inf -> 0 -> z_y; 0 - 128 m: -inf -> clamped to 0


EMPTY_BATCH = {
    "conv2d": lambda B: B.conv2d(np.zeros((0, 2, 3, 3), np.int8), np.zeros((1, 2, 1, 1), np.int8), None, x_zero_point=0,
                                 w_zero_point=0, y_zero_point=0, multiplier=0.5, datapath=DP),
    "linear": lambda B: B.linear(np.zeros((0, 4), np.int8), np.zeros((2, 4), np.int8), None, x_zero_point=0,
                                 w_zero_point=0, y_zero_point=0, multiplier=0.5, datapath=DP),
    "max_pool2d": lambda B: B.max_pool2d(np.zeros((0, 1, 2, 2), np.int8), 2, 2, 0),
    "avg_pool2d": lambda B: B.avg_pool2d(np.zeros((0, 1, 2, 2), np.int8), 2, 2, 0, zero_point=0, datapath=DP),
    "add": lambda B: B.add(np.zeros((0, 3), np.int8), np.zeros((0, 3), np.int8), a_zero_point=0, b_zero_point=0,
                           a_multiplier=0.5, b_multiplier=0.5, y_zero_point=0, datapath=DP),
    "mul": lambda B: B.mul(np.zeros((0, 3), np.int8), np.zeros((0, 3), np.int8), a_zero_point=0, b_zero_point=0,
                           multiplier=0.5, y_zero_point=0, datapath=DP),
    "lut": lambda B: B.lut(np.zeros((0,), np.int8), np.zeros(256, np.int8), x_bits=8, x_signed=True),
    "requantize": lambda B: B.requantize(np.zeros((0,), np.int32), in_zero_point=0, multiplier=0.5, y_zero_point=0,
                                         datapath=DP),
}  # fmt: skip
EMPTY_SHAPES = {"conv2d": (0, 1, 3, 3), "linear": (0, 2), "max_pool2d": (0, 1, 1, 1), "avg_pool2d": (0, 1, 1, 1),
                "add": (0, 3), "mul": (0, 3), "lut": (0,), "requantize": (0,)}  # fmt: skip


@pytest.mark.parametrize("op", sorted(EMPTY_BATCH))
def test_an_empty_batch_gives_the_empty_output_in_both_backends(op: str) -> None:
    """Section 6: the C wrappers used to refuse (naming nothing) what the reference accepted, and vice versa."""
    shapes = {b: EMPTY_BATCH[op](BACKENDS[b]).shape for b in BACKENDS}
    assert set(shapes.values()) == {EMPTY_SHAPES[op]}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_an_empty_dimension_besides_the_batch_is_refused_alike(backend: str) -> None:
    with pytest.raises(ValueError, match=r"max_pool2d: x of shape \(1, 0, 2, 2\) has an empty dimension besides the "
                                         r"batch; only the batch N may be 0"):  # fmt: skip
        BACKENDS[backend].max_pool2d(np.zeros((1, 0, 2, 2), np.int8), 2, 2, 0)
    with pytest.raises(ValueError, match=r"conv2d: x of shape \(1, 2, 0, 3\) has an empty dimension besides the batch"):
        BACKENDS[backend].conv2d(np.zeros((1, 2, 0, 3), np.int8), np.zeros((1, 2, 1, 1), np.int8), None, x_zero_point=0,
                                 w_zero_point=0, y_zero_point=0, multiplier=0.5, datapath=DP)  # fmt: skip


_DPS = datapath_struct(DP)
_RQ = dict(multiplier=np.array([1 << 30], np.int32), shift=np.array([-1], np.int32), fmultiplier=None, y_zero_point=0,
           y_bits=8, y_signed=1, y_min=-128, y_max=127)  # fmt: skip
_EMPTY8, _EMPTY32 = np.zeros(0, np.int8), np.zeros(0, np.int32)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "call",
    [
        lambda: _qk.pack(codes=_EMPTY8, codes_signed=True, rows=2**62, cols=0, bits=1, range=0, packed=np.zeros(0, np.uint8)),
        lambda: _qk.unpack(packed=np.zeros(0, np.uint8), rows=2**62, cols=0, bits=4, signed=True, codes=_EMPTY8),
        lambda: _qk.requantize(q=_EMPTY32, outer=2**62, channels=1, inner=0, in_zero_point=0, datapath=_DPS,
                               requant=_RQ, y=_EMPTY8, isa=_qk.ISA_AUTO),
        lambda: _qk.mul(a=_EMPTY8, b=_EMPTY8, rows=2**62, inner=0, a_zero_point=0, b_zero_point=0, datapath=_DPS,
                        requant=_RQ, y=_EMPTY8, isa=_qk.ISA_AUTO),
        lambda: _qk.softmax(x=_EMPTY8, outer=2**62, length=3, inner=0, x_bits=8, x_signed=True,
                            table=np.array([65536] * 256, np.int32), y_bits=8, y_signed=True, datapath=_DPS, y=_EMPTY8),
    ],
    ids=["pack", "unpack", "requantize", "mul", "softmax"],
)
def test_an_empty_tensor_with_a_huge_outer_count_returns_at_once(call: object) -> None:
    """An empty tensor of 2^62 rows of nothing used to loop over the rows (found by tests/fuzz: a hang)."""
    assert callable(call)
    call()


@pytest.mark.parametrize("backend", ["torch_ref", "c"])
def test_a_padded_plane_beyond_the_contract_is_refused_alike(backend: str) -> None:
    """The reference padded such planes in memory (found by tests/fuzz under ASan: a 2^59-byte allocation)."""
    x, w = np.zeros((1, 2, 2, 2), np.int8), np.zeros((1, 2, 1, 1), np.int8)
    with pytest.raises(ValueError, match=r"conv2d: padding=\(536870911, 536870911\) around a 2x2 input makes a "
                                         r"padded plane of \d+ positions; at most 2147483647"):  # fmt: skip
        BACKENDS[backend].conv2d(x, w, None, x_zero_point=0, w_zero_point=0, y_zero_point=0, multiplier=0.5,
                                 padding=2**29 - 1, stride=2**30, datapath=DP)  # fmt: skip
    # a large plane within the contract still runs (one output column, the padding read as the zero point)
    out = BACKENDS[backend].conv2d(x, w, None, x_zero_point=0, w_zero_point=0, y_zero_point=0, multiplier=0.5,
                                   padding=(0, 2**20), stride=(1, 2**30), datapath=DP)  # fmt: skip
    assert out.shape == (1, 1, 2, 1)


def test_packed_weights_whose_shape_overflows_are_refused_by_name() -> None:
    """A PackedWeights whose K = prod(shape[1:]) passes 2^63 (forged past its own check) never reaches C."""
    with pytest.raises(ValueError, match=r"PackedWeights.data has shape \(1, 8\), expected \(1, 18446744073709551616\)"):
        kernels.PackedWeights(np.zeros((1, 8), np.uint8), 4, True, (1, 2**32, 2**32, 2))
    forged = object.__new__(kernels.PackedWeights)
    for name, value in (("data", np.zeros((1, 8), np.uint8)), ("bits", 4), ("signed", True), ("shape", (1, 2**32, 2**32, 2))):
        object.__setattr__(forged, name, value)
    x = np.zeros((1, 2**32 % 7 + 1, 1, 1), np.int8)
    with pytest.raises(ValueError, match="conv2d: w has a dimension above 2147483647"):
        kernels.conv2d(x, forged, None, x_zero_point=0, w_zero_point=0, y_zero_point=0, multiplier=0.5,
                       datapath=DP.with_(w_bits=4))  # fmt: skip


@pytest.mark.parametrize("backend", ["torch_ref", "c"])
def test_unpack_shapes_are_checked_alike(backend: str) -> None:
    """The reference unpacked shape (-1,) to an empty tensor and raised a raw RuntimeError on (0, 0, 0) (tests/fuzz)."""
    import quant.reference.packing as ref_packing

    def unpack(packed: np.ndarray, bits: int, shape: tuple[int, ...]) -> np.ndarray:
        if backend == "c":
            return kernels.unpack(packed, bits, shape)
        return ref_packing.unpack(torch.from_numpy(packed), bits, shape).numpy()

    with pytest.raises(ValueError, match=r"unpack: shape=\(-1,\) must have at least one dimension, none negative"):
        unpack(np.zeros(0, np.uint8), 2, (-1,))
    assert unpack(np.zeros((0, 0, 0), np.uint8), 1, (0, 0, 0)).shape == (0, 0, 0)
    assert unpack(np.zeros((2, 0), np.uint8), 4, (2, 0)).shape == (2, 0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: kernels.conv2d(np.zeros((1, 1, 2, 2), np.int8), np.zeros((1, 1, 1, 1), np.int8), None, x_zero_point=0,
                                w_zero_point=0, y_zero_point=0, multiplier=0.5, stride=2**31, datapath=DP),
         r"conv2d: stride=2147483648 must be at most 2147483647"),  # fmt: skip
        (lambda: kernels.conv2d(np.zeros((1, 1, 2, 2), np.int8), np.zeros((1, 1, 1, 1), np.int8), None, x_zero_point=0,
                                w_zero_point=0, y_zero_point=0, multiplier=0.5, dilation=2**64, datapath=DP),
         r"conv2d: dilation=18446744073709551616 must be at most 2147483647"),  # fmt: skip
        (lambda: kernels.max_pool2d(np.zeros((1, 1, 2, 2), np.int8), 2**31), r"kernel_size=2147483648 must be at most"),
        (lambda: kernels.avg_pool2d(np.zeros((1, 1, 2, 2), np.int8), 2, padding=2**63, zero_point=0, datapath=DP),
         r"avg_pool2d: padding=9223372036854775808 must be at most 2147483647"),  # fmt: skip
        (lambda: kernels.unpack(np.zeros((1, 1), np.uint8), 4, (2**40, 2**40)),
         r"unpack: packed has shape \(1, 1\), expected \(1099511627776, 549755813888\)"),  # fmt: skip
        (lambda: kernels.rounding_right_shift(2**64, 1, "floor"), r"rounding_right_shift: v=18446744073709551616 must be in"),
    ],
)
def test_geometry_past_int32_is_refused_naming_the_argument(call: object, match: str) -> None:
    """No raw OverflowError, numpy 'array is too big' or MemoryError: a ValueError naming the argument and range."""
    assert callable(call)
    with pytest.raises(ValueError, match=match):
        call()


def test_add_input_exponents_outside_the_contract_are_refused_by_c() -> None:
    """r_a, r_b <= 1/2 (section 6.1); an exponent of 30 let the single-rounding product overflow int64 (UB,
    found by tests/fuzz under UBSan)."""
    from kernels._abi import add_struct
    from quant.contract.attrs import AddAttrs

    dp = Datapath.preset("tflite_single")
    attrs = AddAttrs.build(a_zero_point=0, b_zero_point=0, a_multiplier=0.5, b_multiplier=0.25, y_zero_point=0,
                           datapath=dp)  # fmt: skip
    a = np.full(4, 127, np.int8)
    for side in ("a", "b"):
        params = dict(add_struct(attrs), **{f"{side}_shift": 30})
        with pytest.raises(ValueError, match="qk_status 13"):
            _qk.add(a=a, b=a, params=params, datapath=datapath_struct(dp), y=np.empty(4, np.int8))
