"""conv2d and linear (docs/arithmetic.md sections 4, 5): the C kernels equal the torch reference bit for bit.

Every case runs the C kernels with each instruction set of this machine (portable C, and the
same C compiled for AVX2 where available), with unpacked and, for 1/2/4-bit weights, packed
weights, and compares them with ``quant.reference``: equal codes, or the same exception
(``OverflowError`` in overflow="error" mode, ``ValueError`` for refused parameters).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings, strategies as st

import kernels
from quant.contract.datapath import Datapath
from tests.edge_values import code_limits
from tests.kernels import support
from tests.kernels.support import BACKENDS, C_ISAS, c_kernels, assert_same, assert_same_outcome, outcome

CONV_EXAMPLES = 300
LINEAR_EXAMPLES = 200


@st.composite
def conv_cases(draw: st.DrawFn) -> dict[str, Any]:
    dp = draw(support.datapaths())
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, og = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if draw(st.integers(0, 4)) == 0:  # depthwise, with a channel multiplier
        cg = 1
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    assume(support.conv_output_size(h, kh, sh, ph, dh) >= 1 and support.conv_output_size(w, kw, sw, pw, dw) >= 1)
    c_in, c_out = groups * cg, groups * og
    x = support.codes(draw, (n, c_in, h, w), dp.a_bits, dp.a_signed)
    wt = support.codes(draw, (c_out, cg, kh, kw), dp.w_bits, dp.w_signed)
    zw: Any = support.zero_point(draw, dp.w_bits, dp.w_signed, dp.w_zero_point)
    if dp.w_zero_point and draw(st.booleans()):
        zw = np.array([support.zero_point(draw, dp.w_bits, dp.w_signed, True) for _ in range(c_out)], dtype=np.int64)
    return dict(
        x=x,
        w=support.weight_arg(draw, wt, dp),
        bias=support.bias(draw, dp, c_out),
        x_zero_point=support.zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point),
        w_zero_point=zw,
        multiplier=support.multiplier(draw, dp, c_out),
        stride=(sh, sw) if sh != sw else sh,
        padding=(ph, pw),
        dilation=[dh, dw],
        groups=groups,
        datapath=dp,
        **support.output(draw),
    )


@st.composite
def linear_cases(draw: st.DrawFn) -> dict[str, Any]:
    dp = draw(support.datapaths())
    m, k, n = draw(st.integers(1, 9)), draw(st.integers(1, 80)), draw(st.integers(1, 9))
    x = support.codes(draw, (m, k), dp.a_bits, dp.a_signed)
    wt = support.codes(draw, (n, k), dp.w_bits, dp.w_signed)
    return dict(
        x=x,
        w=support.weight_arg(draw, wt, dp),
        bias=support.bias(draw, dp, n),
        x_zero_point=support.zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point),
        w_zero_point=support.zero_point(draw, dp.w_bits, dp.w_signed, dp.w_zero_point),
        multiplier=support.multiplier(draw, dp, n),
        datapath=dp,
        **support.output(draw),
    )


def _check_all_isas(op: str, case: dict[str, Any]) -> None:
    case = dict(case)
    x, w, b = case.pop("x"), case.pop("w"), case.pop("bias")
    expected = outcome(lambda: getattr(BACKENDS["torch_ref"], op)(x, w, b, **case))
    event(f"{op} outcome: {expected[0] if expected[0] == 'ok' else expected[1].__name__}")
    for isa in C_ISAS:
        got = outcome(lambda: getattr(c_kernels(isa), op)(x, w, b, **case))
        assert_same_outcome(got, expected, f"{op} C[{isa}] vs reference ({case['datapath'].describe()})")
    if isinstance(w, kernels.PackedWeights):  # the packed and the unpacked weights give the same codes
        got = outcome(lambda: getattr(c_kernels("auto"), op)(x, w.unpacked(), b, **case))
        assert_same_outcome(got, expected, f"{op} C unpacked weights vs reference")


@settings(max_examples=CONV_EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(conv_cases())
def test_conv2d_matches_reference(case: dict[str, Any]) -> None:
    _check_all_isas("conv2d", case)


@settings(max_examples=LINEAR_EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(linear_cases())
def test_linear_matches_reference(case: dict[str, Any]) -> None:
    _check_all_isas("linear", case)


# ----------------------------------------------------------------------------- larger, fixed cases

_SHAPES = [  # (N, C_in, H, W, C_out, k, stride, pad, dilation, groups): GEMM tiles, K tails, depthwise
    (1, 16, 12, 12, 24, 3, 1, 1, 1, 1),
    (2, 32, 7, 9, 40, 3, 2, 1, 1, 1),
    (1, 8, 10, 10, 8, 3, 1, 2, 2, 8),
    (1, 6, 9, 9, 12, 5, 1, 2, 1, 6),
    (1, 33, 6, 6, 17, 1, 1, 0, 1, 1),
    (1, 12, 8, 8, 18, 3, 2, 1, 1, 3),
    # channels-last copy in tiles of 16 channels x 16 columns, with channel and column tails; 1x1 convolutions
    # that multiply the copy directly (C_in a multiple of 16 or not, a pixel count with and without a tail)
    (1, 40, 5, 37, 8, 1, 1, 0, 1, 1),
    (1, 32, 4, 20, 8, 1, 1, 0, 1, 1),
    (1, 16, 3, 7, 5, 1, 1, 0, 1, 1),
    (2, 32, 17, 18, 8, 3, 1, 1, 1, 2),
]


@pytest.mark.parametrize("preset", sorted(support.PRESETS_BY_NAME))
@pytest.mark.parametrize("shape", _SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_conv2d_presets_larger_shapes(preset: str, shape: tuple[int, ...]) -> None:
    dp = Datapath.preset(preset)
    n, c_in, h, w, c_out, k, s, p, d, g = shape
    rng = np.random.default_rng(zlib.crc32(repr((preset, shape)).encode()))  # hash() of a str varies per process
    alo, ahi = code_limits(dp.a_bits, dp.a_signed)
    wlo, whi = code_limits(dp.w_bits, dp.w_signed)
    x = rng.integers(alo, ahi + 1, size=(n, c_in, h, w)).astype(np.int8 if dp.a_signed else np.uint8)
    wt = rng.integers(wlo, whi + 1, size=(c_out, c_in // g, k, k)).astype(np.int8)
    blo, bhi = dp.bias_range
    bias = rng.integers(max(blo, -5000), min(bhi, 5000) + 1, size=c_out).astype(np.int32)
    mult = (2.0 ** -rng.integers(6, 12, size=c_out)).astype(np.float64)
    if dp.requant != "pow2":
        mult *= rng.uniform(0.5, 1.0, size=c_out)
    kw: dict[str, Any] = dict(x_zero_point=(alo + ahi + 1) // 2 if dp.a_zero_point else 0, w_zero_point=0, y_zero_point=0,
              multiplier=mult, stride=s, padding=p, dilation=d, groups=g, datapath=dp)  # fmt: skip
    expected = outcome(lambda: BACKENDS["torch_ref"].conv2d(x, wt, bias, **kw))
    weights: list[Any] = [wt]
    if dp.w_bits in (1, 2, 4):
        weights.append(kernels.pack_weights(wt, dp.w_bits, dp.w_signed))
    for isa in C_ISAS:
        for wa in weights:
            got = outcome(lambda: c_kernels(isa).conv2d(x, wa, bias, **kw))
            assert_same_outcome(got, expected, f"conv2d {preset} {shape} C[{isa}]")


@pytest.mark.parametrize("overflow", ["wrap", "saturate", "error"])
def test_linear_long_reduction_is_chunked_exactly(overflow: str) -> None:
    """K above the int32-exact chunk of the GEMM (32768): partial sums are combined in int64."""
    dp = Datapath(name="long", a_bits=8, a_signed=True, w_bits=8, acc_bits=32, overflow=overflow)
    rng = np.random.default_rng(7)
    k = 40000
    x = np.full((2, k), -128, dtype=np.int8)
    x[1] = rng.integers(-128, 128, size=k)
    w = np.full((3, k), -128, dtype=np.int8)
    w[1] = 127
    w[2] = rng.integers(-128, 128, size=k)
    kw: dict[str, Any] = dict(x_zero_point=127, w_zero_point=0, y_zero_point=0, multiplier=2.0**-24, datapath=dp)
    expected = outcome(lambda: BACKENDS["torch_ref"].linear(x, w, None, **kw))
    for isa in C_ISAS:
        assert_same_outcome(outcome(lambda: c_kernels(isa).linear(x, w, None, **kw)), expected, f"linear K={k} {isa}")


@pytest.mark.parametrize("k", [1, 31, 257, 600])
@pytest.mark.parametrize("extreme", [False, True])
def test_every_isa_on_gemm_tiles_and_tails(k: int, extreme: bool) -> None:
    """Rows beyond one register tile plus a tail, columns beyond one 32-wide panel plus a tail, K across several
    packed blocks of pairs; ``extreme``: every product at its largest magnitude (-128 - 127 times -128)."""
    dp = Datapath(name="tiles", a_bits=8, a_signed=True, w_bits=8, acc_bits=32, overflow="wrap")
    rng = np.random.default_rng(k)
    m, n = 45, 19
    x = np.full((m, k), -128, dtype=np.int8) if extreme else rng.integers(-128, 128, size=(m, k)).astype(np.int8)
    w = np.full((n, k), -128, dtype=np.int8) if extreme else rng.integers(-128, 128, size=(n, k)).astype(np.int8)
    kw: dict[str, Any] = dict(x_zero_point=127, w_zero_point=0, y_zero_point=0, multiplier=2.0**-20, datapath=dp)
    expected = BACKENDS["torch_ref"].linear(x, w, None, **kw)
    for isa in C_ISAS:
        assert_same(c_kernels(isa).linear(x, w, None, **kw), expected, f"linear {m}x{k}x{n} {isa}")


def test_saturating_path_matches_reference_on_overflowing_sums() -> None:
    """A 16-bit saturating accumulator where many partial sums leave the range (sequential path)."""
    dp = Datapath.preset("w4a4_acc16_sat")
    rng = np.random.default_rng(3)
    x = rng.integers(12, 16, size=(1, 64, 6, 6)).astype(np.uint8)
    w = rng.integers(5, 8, size=(8, 64, 3, 3)).astype(np.int8)
    w[::2] = -8
    bias = np.array([32767, -32768, 0, 100, -100, 2**15 - 1, 0, 5], dtype=np.int32)
    kw: dict[str, Any] = dict(x_zero_point=0, w_zero_point=0, y_zero_point=0, multiplier=2.0**-10, padding=1, datapath=dp,
              y_signed=True)  # fmt: skip
    expected = BACKENDS["torch_ref"].conv2d(x, w, bias, **kw)
    for isa in C_ISAS:
        assert_same(c_kernels(isa).conv2d(x, w, bias, **kw), expected, f"saturating conv2d {isa}")
    with pytest.raises(OverflowError, match="conv2d"):
        kernels.conv2d(x, w, bias, **{**kw, "datapath": dp.with_(overflow="error")})


_DEPTHWISE_WIDE = [  # (H, W, k, stride, dilation, channel multiplier): rows beyond one 32-wide block and
    # its tails, both strides of the vectorized kernel and one it leaves to the portable loop, and kernels
    # whose taps span more than one table of 32 pairs (9x9: 81 taps; 45 pairs of adjacent taps)
    (5, 70, 3, 1, 1, 1),
    (4, 33, 3, 2, 1, 2),
    (6, 100, 5, (1, 2), (2, 1), 1),
    (3, 64, 3, 3, 1, 1),
    (11, 40, 9, 1, 1, 1),
    (12, 81, 9, 2, 1, 1),
    (4, 45, (1, 4), 2, (1, 3), 1),
]


@pytest.mark.parametrize("preset", ["fbgemm_int8", "onnx_ref", "tflite_int8", "w4a4_acc16_sat"])
@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("case", _DEPTHWISE_WIDE, ids=lambda c: "x".join(map(str, c)))
def test_depthwise_wide_rows_every_isa(preset: str, extreme: bool, case: tuple[Any, ...]) -> None:
    """Depthwise rows and planes wider than the register blocks of the vectorized kernel, every ISA against the
    reference; ``extreme``: every product at its largest magnitude (the code farthest from the zero point times
    the most negative weight)."""
    dp = Datapath.preset(preset)
    h, w, k, s, d, mult = case
    kh, kw = (k, k) if isinstance(k, int) else k
    c = 3
    rng = np.random.default_rng(zlib.crc32(repr((preset, extreme, case)).encode()))
    alo, ahi = code_limits(dp.a_bits, dp.a_signed)
    wlo, whi = code_limits(dp.w_bits, dp.w_signed)
    zx = ahi if dp.a_zero_point else 0
    if extreme:
        x = np.full((2, c, h, w), alo, dtype=np.int64)
        wt = np.full((c * mult, 1, kh, kw), wlo, dtype=np.int64)
    else:
        x = rng.integers(alo, ahi + 1, size=(2, c, h, w))
        wt = rng.integers(wlo, whi + 1, size=(c * mult, 1, kh, kw))
    xa = x.astype(np.int8 if dp.a_signed else np.uint8)
    wa = wt.astype(np.int8)
    blo, bhi = dp.bias_range
    bias = rng.integers(max(blo, -5000), min(bhi, 5000) + 1, size=c * mult).astype(np.int32)
    multiplier = (2.0 ** -rng.integers(8, 14, size=c * mult)) * rng.uniform(0.5, 1.0, size=c * mult)
    kwargs: dict[str, Any] = dict(x_zero_point=zx, w_zero_point=0, y_zero_point=3, multiplier=multiplier, stride=s,
                                  padding=(kh // 2, kw // 2), dilation=d, groups=c, datapath=dp)
    expected = outcome(lambda: BACKENDS["torch_ref"].conv2d(xa, wa, bias, **kwargs))
    for isa in C_ISAS:
        got = outcome(lambda: c_kernels(isa).conv2d(xa, wa, bias, **kwargs))
        assert_same_outcome(got, expected, f"depthwise {preset} {case} C[{isa}]")


@pytest.mark.parametrize("overflow", ["saturate", "error"])
def test_saturating_bounds_of_every_kind_agree_with_the_reference(overflow: str) -> None:
    """A 16-bit saturating accumulator where the coarse bound fails for every row, and each column meets a
    different bound: Cauchy-Schwarz holds (small inputs); it fails but the exact sum of |products| holds
    (large inputs only where the weights are 0); none holds and the sums really saturate."""
    dp = Datapath(name="acc16", a_bits=8, a_signed=False, w_bits=8, acc_bits=16, overflow=overflow)
    k = 64
    w = np.zeros((3, k), dtype=np.int8)
    w[0, : k // 2] = 100
    w[1, : k // 2] = -100
    w[2] = np.arange(k) % 7 - 3
    x = np.zeros((4, k), dtype=np.uint8)
    x[0] = 1  # Cauchy-Schwarz: 64 * 320000 <= 32767^2
    x[1, k // 2 :] = 255  # orthogonal to rows 0 and 1: T = 0 there, Cauchy-Schwarz fails
    x[2] = 255  # T = 816000 > 32767 on rows 0 and 1: sequential, saturating
    x[3] = np.arange(k) % 5
    kw: dict[str, Any] = dict(x_zero_point=0, w_zero_point=0, y_zero_point=0, multiplier=2.0**-9, datapath=dp,
                              y_signed=True)  # fmt: skip
    bias = np.array([1000, -1000, 7], dtype=np.int32)
    expected = outcome(lambda: BACKENDS["torch_ref"].linear(x, w, bias, **kw))
    assert (expected[0] == "ok") == (overflow == "saturate")
    for isa in C_ISAS:
        assert_same_outcome(outcome(lambda: c_kernels(isa).linear(x, w, bias, **kw)), expected, f"linear {isa}")
        ok_rows = outcome(lambda: c_kernels(isa).linear(x[[0, 1, 3]], w, bias, **kw))
        assert_same_outcome(ok_rows, outcome(lambda: BACKENDS["torch_ref"].linear(x[[0, 1, 3]], w, bias, **kw)),
                            f"linear without the saturating column {isa}")  # fmt: skip
        assert ok_rows[0] == "ok"
