"""Bit-exactness of the presets against the peers they model (docs/arithmetic.md §8, docs/peers.md),
for both backends: the torch reference and the C kernels.

(a) ``fbgemm_int8``: PyTorch quantized conv2d/linear on the fbgemm engine, and quantize_per_tensor.
(b) ``mlas``: ONNX Runtime QLinearConv (int32 bias) / QLinearMatMul / QuantizeLinear, ORT_ENABLE_BASIC.
(c) ``onnx_ref``: ``onnx.reference.ReferenceEvaluator`` QLinearConv / QLinearMatMul / QuantizeLinear.
(d) ``tflite_int8`` / ``tflite_single``: no TFLite runtime is installed; the gemmlowp/TFLite/CMSIS-NN
    semantics stated in docs/peers.md §3.1-3.3 are re-derived here with Python ints and compared.
(e) ``fbgemm_int8`` and ``onnx_ref`` really differ (zero point order), and each matches its own peer.

On x86 without VNNI, FBGEMM's and MLAS's u8 x s8 kernels sum pairs of products in saturating
int16 (vpmaddubsw), so activations are kept to 7 bits ([0, 127]) for those two peers (PyTorch's
default qconfig does the same); the ONNX reference has no such limit and gets full-range data.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from fractions import Fraction
from typing import Any, Optional

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import example, given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from quant import Datapath
from quant.reference import multiply_by_quantized_multiplier, quantize, requantize
from tests.edge_values import EDGE_INT32, INT32_MAX, INT32_MIN
from tests.kernels.support import BACKENDS
from tests.oracles import peers, requant
from tests.oracles.exact import assert_exact

FBGEMM = Datapath.preset("fbgemm_int8")
MLAS = Datapath.preset("mlas")
ONNX_REF = Datapath.preset("onnx_ref")
TFLITE = Datapath.preset("tflite_int8")
TFLITE_SINGLE = Datapath.preset("tflite_single")


@pytest.fixture(autouse=True)
def _fbgemm_engine() -> Iterator[None]:
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch.backends.quantized.engine = old


# --------------------------------------------------------------------- random problems
@st.composite
def conv_problems(draw: st.DrawFn, x_max: int = 255) -> dict[str, Any]:
    groups = draw(st.integers(1, 3))
    cin_g, cout_g = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h = draw(st.integers(dilation[0] * (kh - 1) + 1, 7))
    w = draw(st.integers(dilation[1] * (kw - 1) + 1, 7))
    n = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    c_out = groups * cout_g
    return dict(
        x=rng.integers(0, x_max + 1, (n, groups * cin_g, h, w)), w=rng.integers(-128, 128, (c_out, cin_g, kh, kw)),
        sx=np.float32(rng.uniform(0.002, 0.1)), sw=rng.uniform(0.001, 0.05, c_out).astype(np.float32),
        sy=np.float32(rng.uniform(0.01, 0.5)), zx=int(rng.integers(0, x_max + 1)), zy=int(rng.integers(0, 256)),
        bias=rng.integers(-3000, 3000, c_out), stride=stride, padding=padding, dilation=dilation, groups=groups,
    )


def _fp32_multiplier(sx: np.float32, sw: np.ndarray, sy: np.float32) -> np.ndarray:
    """docs/peers.md: the multiplier computed in float32 as (s_x * s_w[c]) / s_y."""
    return ((sx * sw).astype(np.float32) / sy).astype(np.float32)


def _ours(op: str, backend: str, x: Any, w: Any, bias: Optional[np.ndarray], dp: Datapath, **kw: Any) -> torch.Tensor:
    """``op`` ("conv2d" or "linear") of one backend (torch reference or C kernels) as int64 codes."""
    fn = getattr(BACKENDS[backend], op)
    out = fn(np.asarray(x).astype(np.int8 if dp.a_signed else np.uint8), np.asarray(w).astype(np.int8),
             None if bias is None else np.asarray(bias).astype(np.int32), datapath=dp, **kw)
    return torch.from_numpy(np.asarray(out).astype(np.int64))


def _ours_conv(p: dict[str, Any], dp: Datapath, bias: Optional[np.ndarray], backend: str) -> torch.Tensor:
    return _ours(
        "conv2d", backend, p["x"], p["w"], bias,
        dp, x_zero_point=p["zx"], w_zero_point=0, y_zero_point=p["zy"],
        multiplier=_fp32_multiplier(p["sx"], p["sw"], p["sy"]),
        stride=p["stride"], padding=p["padding"], dilation=p["dilation"], groups=p["groups"],
        y_bits=8, y_signed=False,
    )


# --------------------------------------------------------------------- (a) fbgemm
def _exact_float_bias(p: dict[str, Any]) -> np.ndarray:
    """Integer biases b whose float form fp32(b * fp32(s_x s_w)) FBGEMM maps back to exactly b (else 0)."""
    a = (p["sx"] * p["sw"]).astype(np.float32)
    b = np.asarray(p["bias"])
    bf = (b.astype(np.float32) * a).astype(np.float32)
    back = (bf / a).astype(np.float32)
    return np.where(back == b.astype(np.float32), b, 0)


def _fbgemm_conv(p: dict[str, Any], bias: Optional[np.ndarray]) -> torch.Tensor:
    qx = torch._make_per_tensor_quantized_tensor(torch.from_numpy(p["x"]).to(torch.uint8), float(p["sx"]), p["zx"])
    qw = torch._make_per_channel_quantized_tensor(
        torch.from_numpy(p["w"]).to(torch.int8), torch.from_numpy(np.asarray(p["sw"], np.float64)),
        torch.zeros(len(p["sw"]), dtype=torch.int64), 0)
    fbias = None
    if bias is not None:
        a = (p["sx"] * p["sw"]).astype(np.float32)
        fbias = torch.from_numpy((bias.astype(np.float32) * a).astype(np.float32))
    packed = torch.ops.quantized.conv2d_prepack(qw, fbias, list(p["stride"]), list(p["padding"]),
                                                list(p["dilation"]), p["groups"])
    out: torch.Tensor = torch.ops.quantized.conv2d(qx, packed, float(p["sy"]), p["zy"]).int_repr().to(torch.int64)
    return out


@pytest.mark.parametrize("backend", list(BACKENDS))
@settings(max_examples=40)
@given(p=conv_problems(x_max=127), with_bias=st.booleans())
def test_fbgemm_conv2d(backend: str, p: dict[str, Any], with_bias: bool) -> None:
    bias = _exact_float_bias(p) if with_bias else None
    assert_exact(_ours_conv(p, FBGEMM, bias, backend), _fbgemm_conv(p, bias),
                 f"fbgemm_int8 conv2d ({backend}) vs torch.ops.quantized.conv2d")


@pytest.mark.parametrize("backend", list(BACKENDS))
@settings(max_examples=40)
@given(m=st.integers(1, 8), k=st.integers(1, 64), n=st.integers(1, 8), seed=st.integers(0, 2**32 - 1),
       with_bias=st.booleans())
def test_fbgemm_linear(backend: str, m: int, k: int, n: int, seed: int, with_bias: bool) -> None:
    rng = np.random.default_rng(seed)
    p: dict[str, Any] = dict(x=rng.integers(0, 128, (m, k)), w=rng.integers(-128, 128, (n, k)),
                                sx=np.float32(rng.uniform(0.002, 0.1)), sw=rng.uniform(0.001, 0.05, n).astype(np.float32),
                                sy=np.float32(rng.uniform(0.01, 0.5)), zx=int(rng.integers(0, 128)),
                                zy=int(rng.integers(0, 256)), bias=rng.integers(-3000, 3000, n))
    bias = _exact_float_bias(p) if with_bias else None
    qx = torch._make_per_tensor_quantized_tensor(torch.from_numpy(p["x"]).to(torch.uint8), float(p["sx"]), p["zx"])
    qw = torch._make_per_channel_quantized_tensor(torch.from_numpy(p["w"]).to(torch.int8),
                                                  torch.from_numpy(np.asarray(p["sw"], np.float64)), torch.zeros(n, dtype=torch.int64), 0)
    a = (p["sx"] * p["sw"]).astype(np.float32)
    fbias = torch.from_numpy((bias.astype(np.float32) * a).astype(np.float32)) if bias is not None else None
    packed = torch.ops.quantized.linear_prepack(qw, fbias)
    peer = torch.ops.quantized.linear(qx, packed, float(p["sy"]), p["zy"]).int_repr().to(torch.int64)
    ours = _ours("linear", backend, p["x"], p["w"], bias, FBGEMM, x_zero_point=p["zx"], w_zero_point=0,
                 y_zero_point=p["zy"], multiplier=_fp32_multiplier(p["sx"], p["sw"], p["sy"]), y_signed=False)
    assert_exact(ours, peer, f"fbgemm_int8 linear ({backend}) vs torch.ops.quantized.linear")


@given(x=st.lists(st.floats(-300, 300, width=32) | st.sampled_from([0.5, 1.5, -2.5, 127.5]), min_size=1, max_size=40),
       scale=st.floats(2.0**-10, 4.0, width=32), zp=st.integers(0, 255))
@example(x=[-27.750002, 127.5, 0.5], scale=0.3, zp=0)
def test_fbgemm_quantize_per_tensor(x: list[float], scale: float, zp: int) -> None:
    xt = torch.tensor(x, dtype=torch.float32)
    peer = torch.quantize_per_tensor(xt, scale, zp, torch.quint8).int_repr().to(torch.int64)
    ours = quantize(xt, scale=scale, zero_point=zp, bits=8, signed=False, datapath=FBGEMM)
    assert_exact(ours, peer, "fbgemm_int8 quantize vs torch.quantize_per_tensor")


# --------------------------------------------------------------------- (b) mlas, (c) onnx_ref
def _qlinearconv_model(p: dict[str, Any], with_bias: bool) -> bytes:
    c_out = len(p["sw"])
    inits = [
        numpy_helper.from_array(np.array(p["sx"], np.float32), "xs"), numpy_helper.from_array(np.array(p["zx"], np.uint8), "xz"),
        numpy_helper.from_array(np.asarray(p["w"]).astype(np.int8), "w"), numpy_helper.from_array(np.asarray(p["sw"], np.float32), "ws"),
        numpy_helper.from_array(np.zeros(c_out, np.int8), "wz"), numpy_helper.from_array(np.array(p["sy"], np.float32), "ys"),
        numpy_helper.from_array(np.array(p["zy"], np.uint8), "yz"),
    ]
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    if with_bias:
        inits.append(numpy_helper.from_array(np.asarray(p["bias"]).astype(np.int32), "b"))
        names.append("b")
    kh, kw = np.asarray(p["w"]).shape[2:]
    (ph, pw) = p["padding"]
    node = helper.make_node("QLinearConv", names, ["y"], strides=list(p["stride"]), pads=[ph, pw, ph, pw],
                            dilations=list(p["dilation"]), group=p["groups"], kernel_shape=[int(kh), int(kw)])
    x_shape = list(np.asarray(p["x"]).shape)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    data: bytes = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    return data


def _ref_run(model: bytes, feeds: dict[str, np.ndarray]) -> np.ndarray:
    outs: Any = ReferenceEvaluator(model).run(None, feeds)
    return np.asarray(outs[0])


def _ort(model: bytes, feeds: dict[str, np.ndarray]) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, feeds)[0])


@pytest.mark.parametrize("backend", list(BACKENDS))
@settings(max_examples=40)
@given(p=conv_problems(x_max=127), with_bias=st.booleans())
def test_mlas_qlinearconv(backend: str, p: dict[str, Any], with_bias: bool) -> None:
    """ORT adds the int32 bias to the accumulator, multiplies fp32(acc) by the fp32 scale, rounds, then adds z_y."""
    peer = _ort(_qlinearconv_model(p, with_bias), {"x": np.asarray(p["x"]).astype(np.uint8)})
    ours = _ours_conv(p, MLAS, np.asarray(p["bias"]) if with_bias else None, backend)
    assert_exact(ours, torch.from_numpy(peer.astype(np.int64)), f"mlas conv2d ({backend}) vs ORT QLinearConv")


@pytest.mark.parametrize("backend", list(BACKENDS))
@settings(max_examples=40)
@given(p=conv_problems(x_max=255), with_bias=st.booleans())
def test_onnx_reference_qlinearconv(backend: str, p: dict[str, Any], with_bias: bool) -> None:
    """onnx.reference: float64 product of the float32 multiplier, zero point before rounding, half to even."""
    peer = _ref_run(_qlinearconv_model(p, with_bias), {"x": np.asarray(p["x"]).astype(np.uint8)})
    ours = _ours_conv(p, ONNX_REF, np.asarray(p["bias"]) if with_bias else None, backend)
    assert_exact(ours, torch.from_numpy(peer.astype(np.int64)), f"onnx_ref conv2d ({backend}) vs onnx.reference QLinearConv")


def _qlinearmatmul_model(m: int, k: int, n: int, sa: np.float32, za: int, b: np.ndarray, sb: np.float32,
                         sy: np.float32, zy: int) -> bytes:
    inits = [
        numpy_helper.from_array(np.array(sa, np.float32), "as"), numpy_helper.from_array(np.array(za, np.uint8), "az"),
        numpy_helper.from_array(b.astype(np.int8), "b"), numpy_helper.from_array(np.array(sb, np.float32), "bs"),
        numpy_helper.from_array(np.array(0, np.int8), "bz"), numpy_helper.from_array(np.array(sy, np.float32), "ys"),
        numpy_helper.from_array(np.array(zy, np.uint8), "yz"),
    ]
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, [m, n])], inits)
    data: bytes = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    return data


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("peer_name", ["mlas", "onnx_ref"])
@settings(max_examples=30)
@given(m=st.integers(1, 6), k=st.integers(1, 64), n=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_qlinearmatmul(peer_name: str, backend: str, m: int, k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x_max = 127 if peer_name == "mlas" else 255
    a = rng.integers(0, x_max + 1, (m, k))
    w = rng.integers(-128, 128, (n, k))
    sa, sb, sy = (np.float32(rng.uniform(0.002, 0.1)), np.float32(rng.uniform(0.001, 0.05)),
                  np.float32(rng.uniform(0.01, 0.5)))
    za, zy = int(rng.integers(0, x_max + 1)), int(rng.integers(0, 256))
    model = _qlinearmatmul_model(m, k, n, sa, za, w.T.copy(), sb, sy, zy)
    feeds = {"a": a.astype(np.uint8)}
    if peer_name == "mlas":
        peer = _ort(model, feeds)
    else:
        peer = np.asarray(_ref_run(model, feeds))
    mult = np.float32(np.float32(sa * sb) / sy)
    ours = _ours("linear", backend, a, w, None, Datapath.preset(peer_name), x_zero_point=za, w_zero_point=0,
                 y_zero_point=zy, multiplier=np.array(mult, np.float32), y_signed=False)
    assert_exact(ours, torch.from_numpy(peer.astype(np.int64)), f"{peer_name} linear ({backend}) vs QLinearMatMul")


@pytest.mark.parametrize("peer_name", ["mlas", "onnx_ref"])
@settings(max_examples=20)
@given(x=st.lists(st.floats(-300, 300, width=32) | st.sampled_from([0.5, 1.5, -2.5, 127.5]), min_size=1, max_size=40),
       scale=st.floats(2.0**-10, 4.0, width=32), zp=st.integers(0, 255))
@example(x=[-27.750002, 127.5, 0.5], scale=0.3, zp=0)
def test_quantize_linear(peer_name: str, x: list[float], scale: float, zp: int) -> None:
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s"), numpy_helper.from_array(np.array(zp, np.uint8), "z")]
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, [len(x)])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    xs = np.array(x, np.float32)
    peer = _ort(model, {"x": xs}) if peer_name == "mlas" else np.asarray(_ref_run(model, {"x": xs}))
    ours = quantize(torch.from_numpy(xs), scale=scale, zero_point=zp, bits=8, signed=False,
                    datapath=Datapath.preset(peer_name))
    assert_exact(ours, torch.from_numpy(peer.astype(np.int64)), f"{peer_name} quantize vs QuantizeLinear")


# --------------------------------------------------------------------- (d) TFLite / gemmlowp / CMSIS-NN semantics
def _c_div(a: int, b: int) -> int:
    """C integer division (truncation toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul (docs/peers.md §3.1)."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return _c_div(ab + nudge, 1 << 31)


def _rdbpot(x: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT (docs/peers.md §3.1), mask/threshold form."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def _tflite_mbqm(x: int, m: int, shift: int, single: bool) -> int:
    """TFLite MultiplyByQuantizedMultiplier (docs/peers.md §3.2), default (double) and TFLITE_SINGLE_ROUNDING."""
    if single:
        total = 31 - shift
        return (x * m + (1 << (total - 1))) >> total
    left, right = max(shift, 0), max(-shift, 0)
    return _rdbpot(_srdhm(max(INT32_MIN, min(INT32_MAX, x * (1 << left))), m), right)




def _cmsis_single(x: int, m: int, shift: int) -> int:
    """CMSIS-NN arm_nn_requantize with CMSIS_NN_USE_SINGLE_ROUNDING (docs/peers.md §3.3)."""
    total = 31 - shift
    return ((x * m >> (total - 1)) + 1) >> 1


def test_tflite_worked_examples() -> None:
    """docs/peers.md §3.8: expected values from the Fraction form of the documented semantics."""
    for x, m0, shift in ((422480, 1125735238, -1), (-2, 1 << 30, -1)):
        exact = Fraction(x * m0, 1 << (31 - shift))
        single_expected = int((exact + Fraction(1, 2)).__floor__())  # one rounding, half up
        h = (x * m0 + (1 << 30)) // (1 << 31)  # SRDHM: half up at bit 31
        hq = Fraction(h, 1 << -shift)
        double_expected = int((abs(hq) + Fraction(1, 2)).__floor__()) * (1 if hq >= 0 else -1)  # half away
        for dp, want in ((TFLITE_SINGLE, single_expected), (TFLITE, double_expected)):
            got = int(multiply_by_quantized_multiplier(torch.tensor(x), torch.tensor(m0), torch.tensor(shift), dp))
            assert got == want == _tflite_mbqm(x, m0, shift, dp is TFLITE_SINGLE), (dp.name, x, got, want)
    assert single_expected != double_expected  # the negative tie tells the modes apart


@settings(max_examples=60)
@given(x=st.lists(st.sampled_from(EDGE_INT32) | st.integers(-(2**24), 2**24), min_size=1, max_size=40),
       m0=st.integers(1 << 30, (1 << 31) - 1) | st.sampled_from([1 << 30, (1 << 31) - 1]),
       shift=st.integers(-31, 30))
@example(x=EDGE_INT32, m0=1 << 30, shift=-1)
@example(x=EDGE_INT32, m0=(1 << 31) - 1, shift=0)
def test_tflite_multiply_by_quantized_multiplier(x: list[int], m0: int, shift: int) -> None:
    xs = torch.tensor(x)
    for dp, single in ((TFLITE, False), (TFLITE_SINGLE, True)):
        got = multiply_by_quantized_multiplier(xs, torch.tensor(m0), torch.tensor(shift), dp)
        assert_exact(got, [_tflite_mbqm(v, m0, shift, single) for v in x], f"{dp.name} MBQM shift={shift}")
    got_single = multiply_by_quantized_multiplier(xs, torch.tensor(m0), torch.tensor(shift), TFLITE_SINGLE)
    assert_exact(got_single, [_cmsis_single(v, m0, shift) for v in x], "CMSIS-NN single rounding")


@pytest.mark.parametrize("backend", list(BACKENDS))
@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), single=st.booleans())
def test_tflite_conv_per_channel_reference(backend: str, seed: int, single: bool) -> None:
    """TFLite ConvPerChannel (docs/peers.md §3.2) re-derived with Python ints, against conv2d on the tflite presets."""
    rng = np.random.default_rng(seed)
    n, cin, cout, h, w, kh, kw = 1, int(rng.integers(1, 4)), int(rng.integers(1, 4)), 5, 4, 3, 2
    x = rng.integers(-128, 128, (n, cin, h, w))
    wt = rng.integers(-127, 128, (cout, cin, kh, kw))
    bias = rng.integers(-20000, 20000, cout)
    zx, zy = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
    mults = [float(v) for v in rng.uniform(1e-4, 0.05, cout)]
    qms = [peers.tflite_quantize_multiplier(m) for m in mults]
    input_offset, output_offset = -zx, zy
    ho, wo = h - kh + 1, w - kw + 1
    expected = np.zeros((n, cout, ho, wo), np.int64)
    for o in range(cout):
        for i in range(ho):
            for j in range(wo):
                acc = 0
                for c in range(cin):
                    for u in range(kh):
                        for v in range(kw):
                            acc += int(wt[o, c, u, v]) * (int(x[0, c, i + u, j + v]) + input_offset)
                acc += int(bias[o])
                acc = _tflite_mbqm(acc, qms[o][0], qms[o][1], single) + output_offset
                expected[0, o, i, j] = max(-128, min(127, acc))
    dp = TFLITE_SINGLE if single else TFLITE
    ours = _ours("conv2d", backend, x, wt, bias, dp, x_zero_point=zx, w_zero_point=0, y_zero_point=zy,
                 multiplier=np.array(mults))
    assert_exact(ours, expected, f"{dp.name} conv2d ({backend}) vs TFLite ConvPerChannel")


# --------------------------------------------------------------------- (e) the knobs matter
def test_fbgemm_and_onnx_ref_differ_and_each_matches_its_peer() -> None:
    """A tie with an odd output zero point: FBGEMM rounds then adds z_y, the ONNX reference adds then rounds."""
    m, k, n = 1, 1, 1
    sa, sb, sy = np.float32(0.5), np.float32(1.0), np.float32(1.0)
    za, zy = 10, 1
    a = np.array([[15, 13, 11, 17]]).T.reshape(4, 1)  # acc = 5, 3, 1, 7 -> 2.5, 1.5, 0.5, 3.5
    w = np.array([[1]])
    # ONNX reference QLinearMatMul
    model = _qlinearmatmul_model(4, k, n, sa, za, w.T.copy(), sb, sy, zy)
    onnx_peer = torch.from_numpy(_ref_run(model, {"a": a.astype(np.uint8)}).astype(np.int64))
    # PyTorch quantized linear (fbgemm)
    qx = torch._make_per_tensor_quantized_tensor(torch.from_numpy(a).to(torch.uint8), float(sa), za)
    qw = torch._make_per_channel_quantized_tensor(torch.from_numpy(w).to(torch.int8), torch.tensor([float(sb)], dtype=torch.float64),
                                                  torch.zeros(1, dtype=torch.int64), 0)
    fb_peer = torch.ops.quantized.linear(qx, torch.ops.quantized.linear_prepack(qw, None), float(sy), zy).int_repr().to(torch.int64)
    assert not torch.equal(onnx_peer, fb_peer), "the two peers should disagree on these ties"
    mult = torch.tensor(np.float32(np.float32(sa * sb) / sy))
    for dp, peer in ((FBGEMM, fb_peer), (ONNX_REF, onnx_peer)):
        for backend in BACKENDS:
            ours = _ours("linear", backend, a, w, None, dp, x_zero_point=za, w_zero_point=0, y_zero_point=zy,
                         multiplier=mult.numpy(), y_signed=False)
            assert_exact(ours, peer, f"{dp.name} ({backend}) on ties")
    # and the float64 product alone (zero point 0) also separates float32 from float64 requantization:
    acc = torch.tensor([2**24 + 1])
    f32 = requantize(acc, in_zero_point=0, multiplier=2.0**-25, y_zero_point=0, y_bits=8, y_signed=False, datapath=FBGEMM)
    f64 = requantize(acc, in_zero_point=0, multiplier=2.0**-25, y_zero_point=0, y_bits=8, y_signed=False, datapath=ONNX_REF)
    want = [requant.requant_scalar(int(acc), 2.0**-25, dp, 0, 0, 255) for dp in (FBGEMM, ONNX_REF)]
    assert [int(f32), int(f64)] == want  # fp32(2^24 + 1) / 2^25 is a tie at 0.5; float64 keeps the + 1
    assert want[0] != want[1]
