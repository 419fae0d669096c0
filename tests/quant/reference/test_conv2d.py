"""conv2d and linear (docs §4, §5) against per-element Python loops and float64 torch convolutions."""

from __future__ import annotations

import importlib
from typing import Any, Optional

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from quant import Datapath
from quant.reference import conv2d, linear
from quant.reference.conv2d import conv2d_accumulate
from tests.edge_values import code_limits
from tests.oracles import accumulation, requant
from tests.oracles.exact import assert_exact

accumulate_module = importlib.import_module("quant.reference.accumulate")

SMALL_ACC = [
    Datapath(name=f"acc{a}{o}", acc_bits=a, overflow=o, bias_bits=min(a, 32))
    for a in (8, 10, 12, 16) for o in ("wrap", "saturate", "error")
]
PRESETS = [Datapath.preset(n) for n in ("tflite_int8", "tflite_single", "fbgemm_int8", "onnx_ref", "mlas", "w4a8_acc32",
                                        "w4a4_acc16_sat", "w2a2_pow2_acc16")]
DATAPATHS = PRESETS + SMALL_ACC + [
    Datapath(name="w_zp_uint", w_bits=3, w_signed=False, w_zero_point=True, a_bits=5, a_signed=True, acc_bits=12,
             overflow="saturate", requant="float64", zero_point_order="before_rounding", rounding="half_up", bias_bits=12),
    Datapath(name="binary_w", w_bits=1, w_signed=True, a_bits=1, a_signed=False, acc_bits=8, overflow="saturate",
             requant="fixed_point", multiplier_bits=8, fixed_point_rounding="single", rounding="floor", bias_bits=8),
]


def _codes(draw: st.DrawFn, shape: tuple[int, ...], bits: int, signed: bool) -> np.ndarray:
    lo, hi = code_limits(bits, signed)
    n = int(np.prod(shape))
    vals = draw(st.lists(st.sampled_from([lo, hi]) | st.integers(lo, hi), min_size=n, max_size=n))
    arr = np.array(vals, dtype=np.int64).reshape(shape)
    if bits == 1 and signed:
        arr = np.where(arr == 0, 1, arr)
    return arr


def _zero_point(draw: st.DrawFn, bits: int, signed: bool, supported: bool) -> int:
    if not supported or (bits == 1 and signed):
        return 0
    lo, hi = code_limits(bits, signed)
    return draw(st.integers(lo, hi))


def _multiplier(draw: st.DrawFn, dp: Datapath) -> float:
    if dp.requant == "pow2":
        return 2.0 ** draw(st.integers(-12, 2))
    return draw(st.floats(2.0**-14, 2.0, allow_nan=False))


@st.composite
def conv_cases(draw: st.DrawFn) -> dict[str, Any]:
    dp = draw(st.sampled_from(DATAPATHS))
    groups = draw(st.integers(1, 3))
    cin_g, cout_g = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 1))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 6))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 6))
    n = draw(st.integers(1, 2))
    x = _codes(draw, (n, groups * cin_g, h, w), dp.a_bits, dp.a_signed)
    wt = _codes(draw, (groups * cout_g, cin_g, kh, kw), dp.w_bits, dp.w_signed)
    c_out = groups * cout_g
    per_channel_zw = dp.w_zero_point and draw(st.booleans())
    zw: object = [_zero_point(draw, dp.w_bits, dp.w_signed, True) for _ in range(c_out)] if per_channel_zw else \
        _zero_point(draw, dp.w_bits, dp.w_signed, dp.w_zero_point)
    blo, bhi = dp.bias_range
    bias = draw(st.none() | st.lists(st.integers(blo, bhi) | st.integers(-50, 50), min_size=c_out, max_size=c_out))
    per_channel_m = draw(st.booleans())
    mult: object = [_multiplier(draw, dp) for _ in range(c_out)] if per_channel_m else _multiplier(draw, dp)
    y_signed = draw(st.booleans())
    y_bits = draw(st.integers(2, 8))
    ylo, yhi = code_limits(y_bits, y_signed)
    zy = draw(st.integers(ylo, yhi))
    y_min = draw(st.none() | st.just(zy))
    return dict(dp=dp, x=x, w=wt, bias=bias, zx=_zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point), zw=zw,
                zy=zy, mult=mult, stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups,
                y_bits=y_bits, y_signed=y_signed, y_min=y_min)


def _conv_products(c: dict[str, Any]) -> tuple[np.ndarray, list[list[int]]]:
    """Per output element (flattened NCHW order), the products in canonical order: straight from §4."""
    x, w = c["x"], c["w"]
    assert isinstance(x, np.ndarray) and isinstance(w, np.ndarray)
    n, cin, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = c["stride"], c["padding"], c["dilation"]
    groups = c["groups"]
    assert isinstance(groups, int)
    zx = c["zx"]
    zw = c["zw"] if isinstance(c["zw"], list) else [c["zw"]] * cout
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out: list[list[int]] = []
    for b in range(n):
        for o in range(cout):
            g = o // (cout // groups)
            for i in range(ho):
                for j in range(wo):
                    prods = []
                    for ci in range(cin_g):
                        for u in range(kh):
                            for v in range(kw):
                                r, s = i * sh + u * dh - ph, j * sw + v * dw - pw
                                xv = int(x[b, g * cin_g + ci, r, s]) if (0 <= r < h and 0 <= s < wd) else zx
                                prods.append((xv - zx) * (int(w[o, ci, u, v]) - zw[o]))
                    out.append(prods)
    return np.array((n, cout, ho, wo)), out


def _expected(c: dict[str, Any], shape: np.ndarray, products: list[list[int]], channel_of: list[int]) -> Optional[list[int]]:
    dp = c["dp"]
    assert isinstance(dp, Datapath)
    bias = c["bias"]
    mult = c["mult"]
    ylo, yhi = code_limits(c["y_bits"], c["y_signed"])
    if c.get("y_min") is not None:
        ylo = max(ylo, c["y_min"])
    res = []
    for prods, ch in zip(products, channel_of):
        b = bias[ch] if isinstance(bias, list) else 0
        try:
            acc = accumulation.accumulate_scalar(b, prods, dp.acc_bits, dp.overflow)
        except OverflowError:
            return None
        m = mult[ch] if isinstance(mult, list) else mult
        res.append(requant.requant_scalar(acc, m, dp, c["zy"], ylo, yhi))
    return res


def _run_conv(c: dict[str, Any]) -> torch.Tensor:
    return conv2d(
        torch.from_numpy(c["x"]), torch.from_numpy(c["w"]),
        torch.tensor(c["bias"], dtype=torch.int32) if c["bias"] is not None else None,
        x_zero_point=c["zx"], w_zero_point=c["zw"], y_zero_point=c["zy"], multiplier=c["mult"],
        stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"],
        y_bits=c["y_bits"], y_signed=c["y_signed"], y_min=c["y_min"], datapath=c["dp"],
    )


@settings(max_examples=150)
@given(c=conv_cases())
def test_conv2d_matches_per_element_loops(c: dict[str, Any]) -> None:
    shape, products = _conv_products(c)
    n, cout, ho, wo = (int(v) for v in shape)
    channel_of = [o for _ in range(n) for o in range(cout) for _ in range(ho * wo)]
    expected = _expected(c, shape, products, channel_of)
    dp = c["dp"]
    if expected is None:
        with pytest.raises(OverflowError, match="conv2d"):
            _run_conv(c)
        return
    got = _run_conv(c)
    assert got.dtype == torch.int64
    assert_exact(got, np.array(expected).reshape(n, cout, ho, wo), f"conv2d on {dp.name}")


@st.composite
def linear_cases(draw: st.DrawFn) -> dict[str, Any]:
    dp = draw(st.sampled_from(DATAPATHS))
    m, k, n = draw(st.integers(1, 4)), draw(st.integers(1, 40)), draw(st.integers(1, 4))
    x = _codes(draw, (m, k), dp.a_bits, dp.a_signed)
    w = _codes(draw, (n, k), dp.w_bits, dp.w_signed)
    blo, bhi = dp.bias_range
    bias = draw(st.none() | st.lists(st.integers(blo, bhi), min_size=n, max_size=n))
    mult: object = [_multiplier(draw, dp) for _ in range(n)] if draw(st.booleans()) else _multiplier(draw, dp)
    zw: object = _zero_point(draw, dp.w_bits, dp.w_signed, dp.w_zero_point)
    return dict(dp=dp, x=x, w=w, bias=bias, zx=_zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point), zw=zw,
                zy=0, mult=mult, y_bits=8, y_signed=True, y_min=None)


@settings(max_examples=150)
@given(c=linear_cases())
def test_linear_matches_per_element_loops(c: dict[str, Any]) -> None:
    x, w = c["x"], c["w"]
    assert isinstance(x, np.ndarray) and isinstance(w, np.ndarray)
    zx, zw = c["zx"], c["zw"]
    products = [[(int(x[i, kk]) - zx) * (int(w[j, kk]) - zw) for kk in range(x.shape[1])]
                for i in range(x.shape[0]) for j in range(w.shape[0])]
    channel_of = [j for _ in range(x.shape[0]) for j in range(w.shape[0])]
    expected = _expected(c, np.array([]), products, channel_of)

    def run() -> torch.Tensor:
        return linear(torch.from_numpy(x), torch.from_numpy(w),
                      torch.tensor(c["bias"], dtype=torch.int32) if c["bias"] is not None else None,
                      x_zero_point=zx, w_zero_point=zw, y_zero_point=0, multiplier=c["mult"],
                      datapath=c["dp"])

    if expected is None:
        with pytest.raises(OverflowError, match="linear"):
            run()
        return
    assert_exact(run(), np.array(expected).reshape(x.shape[0], w.shape[0]), "linear")


@pytest.mark.parametrize("overflow", ["wrap", "saturate"])
def test_conv2d_accumulate_large_against_float64_conv(overflow: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A larger conv (many outputs, chunked) against torch's float64 conv of the shifted codes.

    With a 32-bit accumulator nothing saturates, so the exact float64 sums are the answer; the
    chunk size is lowered so that the chunked paths run.
    """
    monkeypatch.setattr(accumulate_module, "CHUNK_ELEMENTS", 1000)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-128, 128, (3, 8, 13, 11), generator=g)
    w = torch.randint(-128, 128, (12, 4, 3, 3), generator=g)
    b = torch.randint(-(2**20), 2**20, (12,), generator=g)
    dp = Datapath(acc_bits=32, overflow=overflow)
    got = conv2d_accumulate(x - 3, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, datapath=dp)
    ref = F.conv2d((x - 3).double(), w.double(), b.double(), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    assert_exact(got, ref.to(torch.int64), "conv2d_accumulate vs float64 conv")


def test_saturation_path_is_exercised_at_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """16-bit saturating accumulation on a conv with many saturating outputs, chunked, against the loops."""
    monkeypatch.setattr(accumulate_module, "CHUNK_ELEMENTS", 500)
    rng = np.random.default_rng(1)
    c: dict[str, Any] = dict(
        dp=Datapath(acc_bits=12, overflow="saturate", bias_bits=12), x=rng.integers(-128, 128, (1, 6, 7, 7)),
        w=rng.integers(-128, 128, (4, 3, 3, 3)), bias=[int(v) for v in rng.integers(-2048, 2048, 4)], zx=-2, zw=0,
        zy=0, mult=2.0**-5, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=2, y_bits=8, y_signed=True,
        y_min=None)
    shape, products = _conv_products(c)
    n, cout, ho, wo = (int(v) for v in shape)
    channel_of = [o for _ in range(n) for o in range(cout) for _ in range(ho * wo)]
    expected = _expected(c, shape, products, channel_of)
    assert expected is not None
    bias = c["bias"]
    assert isinstance(bias, list)
    clamped = [accumulation.accumulate_scalar(bias[ch], p, 12, "saturate") != bias[ch] + sum(p)
               for p, ch in zip(products, channel_of)]
    assert sum(clamped) > 20  # the sequential clamp really decides many outputs
    assert_exact(_run_conv(c), np.array(expected).reshape(n, cout, ho, wo), "saturating conv")


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(x=torch.zeros(1, 2, 3, 3)), TypeError, "x must be an integer tensor"),
        (dict(x=torch.full((1, 2, 3, 3), 200)), ValueError, r"x has values in \[200, 200\]"),
        (dict(w=torch.full((2, 2, 1, 1), -129)), ValueError, "w has values"),
        (dict(w=np.zeros((2, 2, 1, 1), np.int8)), TypeError, "unpacked weights"),
        (dict(x_zero_point=300), ValueError, "x_zero_point=300"),
        (dict(w_zero_point=1), ValueError, "w_zero_point=1 must be 0"),
        (dict(bias=torch.tensor([2**31, 0])), ValueError, "bias has values"),
        (dict(bias=torch.tensor([1])), ValueError, "one per output channel"),
        (dict(groups=3), ValueError, "groups=3"),
        (dict(stride=0), ValueError, "stride"),
        (dict(padding=(1, 2, 3)), ValueError, "padding"),
        (dict(multiplier=[0.5, 0.5, 0.5]), ValueError, "multiplier"),
        (dict(y_min=5, y_max=4), ValueError, "empty output range"),
        (dict(w=torch.zeros(2, 2, 5, 5, dtype=torch.int64)), ValueError, "empty"),
    ],
)
def test_conv2d_errors(kwargs: dict[str, Any], exc: type, match: str) -> None:
    args: dict[str, Any] = dict(x=torch.zeros(1, 2, 3, 3, dtype=torch.int64), w=torch.zeros(2, 2, 1, 1, dtype=torch.int64),
                                   bias=None, x_zero_point=0, w_zero_point=0, y_zero_point=0, multiplier=0.5,
                                   datapath=Datapath.preset("tflite_int8"))
    args.update(kwargs)
    x, w, bias = args.pop("x"), args.pop("w"), args.pop("bias")
    with pytest.raises(exc, match=match):
        conv2d(x, w, bias, **args)


def test_linear_errors() -> None:
    dp = Datapath.preset("tflite_int8")
    with pytest.raises(ValueError, match="K=3"):
        linear(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(4, 5, dtype=torch.int64), None, x_zero_point=0,
               w_zero_point=0, y_zero_point=0, multiplier=0.1, datapath=dp)
    with pytest.raises(ValueError, match="2 dimensions"):
        linear(torch.zeros(3, dtype=torch.int64), torch.zeros(4, 3, dtype=torch.int64), None, x_zero_point=0,
               w_zero_point=0, y_zero_point=0, multiplier=0.1, datapath=dp)
