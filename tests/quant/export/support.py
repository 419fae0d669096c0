"""Shared pieces of the ONNX export tests: the zoo programs (built once per session), ONNX Runtime runs that
expose every program tensor, one-node programs drawn by hypothesis, and the CPU check for exact MLAS sums."""

from __future__ import annotations

import functools
import math
import platform
from typing import Any, Callable, Optional

import numpy as np
import onnx
import pytest
import torch
from hypothesis import strategies as st
from onnx import helper

from quant.contract.attrs import (
    AddAttrs,
    AvgPool2dAttrs,
    Conv2dAttrs,
    LinearAttrs,
    LutAttrs,
    MaxPool2dAttrs,
    MulAttrs,
    RequantizeAttrs,
    SoftmaxAttrs,
    softmax_table,
)
from quant.contract.codes import code_range
from quant.contract.datapath import PRESETS, Datapath
from experiments.zoo import zoo_models, zoo_program
from quant.export.agreement import ort_session
from quant.export.onnx_export import onnx_model
from quant.export.onnx_import import MLAS_S8
from quant.ir.ops import ConcatAttrs, PadAttrs, PermuteAttrs, ReshapeAttrs
from quant.ir.program import IntegerProgram, Node, TensorInfo
from tests.oracles.exact import assert_exact

MLAS = PRESETS["mlas"]
#: Zoo models the qoperator form refuses on mlas, and the op that stops it.
QOPERATOR_REFUSED = {"detector": "detection.nms"}
ZOO_NAMES = sorted(zoo_models())


@functools.lru_cache(maxsize=None)
def zoo_case(name: str, preset: str) -> tuple[IntegerProgram, Callable[[int], Any]]:
    """The zoo model ``name`` lowered for ``preset`` (:func:`experiments.zoo.zoo_program`), once per session."""
    return zoo_program(name, preset)


def zoo_inputs(make_input: Callable[[int], Any], batch: int = 64) -> torch.Tensor:
    """Seeded inputs, the last quarter scaled up 8x so the input codes reach both ends of their range."""
    torch.manual_seed(1)
    x: torch.Tensor = make_input(batch)
    x[3 * batch // 4:] *= 8
    return x


def int8_sums_are_exact() -> bool:
    """Whether MLAS's u8 x s8 kernels accumulate in exact int32 here: with AVX-VNNI, AVX512-VNNI or AMX (or off
    x86); without them they add pairs of products in saturating int16 (docs/arithmetic.md section 8)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return True
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


#: Mark for tests whose bit-exactness needs MLAS's exact int32 sums.
needs_exact_int8_sums = pytest.mark.xfail(not int8_sums_are_exact(), strict=False,
                                          reason="MLAS's u8 x s8 kernels saturate int16 pairs on x86 without VNNI")  # fmt: skip


def run_every_tensor(program: IntegerProgram, *xs: Any, form: str = "qoperator", level: str = "basic") -> dict[str, np.ndarray]:
    """ONNX Runtime's codes of every program tensor (8-bit ones) and the graph's own outputs, by ONNX name."""
    model = onnx_model(program, form=form)
    known = {o.name for o in model.graph.output}
    model.graph.output.extend([vi for vi in model.graph.value_info if vi.name not in known])
    session = ort_session(model.SerializeToString(), level)
    feeds = {name: np.asarray(x, dtype=np.float32) for name, x in zip(program.inputs, xs)}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def onnx_names(program: IntegerProgram) -> dict[str, str]:
    """Program tensor -> the ONNX tensor holding its codes (inputs: ``<name>_quantized``)."""
    return {t: (f"{t}_quantized" if t in program.inputs else t) for t in program.tensors}


def assert_codes_equal(program: IntegerProgram, outs: dict[str, np.ndarray], trace: dict[str, np.ndarray], what: str) -> None:
    """Every program tensor's ONNX Runtime codes equal the program's own, exactly."""
    for tensor, name in onnx_names(program).items():
        assert name in outs, f"{what}: ONNX Runtime did not return {name!r}"
        assert_exact(torch.from_numpy(outs[name].astype(np.int64)), trace[tensor].astype(np.int64), f"{what}, tensor {tensor!r}")


# ---------------------------------------------------------------------- one-node programs
def one_node(dp: Datapath, op: str, attrs: Any, inputs: list[TensorInfo], y: TensorInfo,
             params: Optional[dict[str, Any]] = None) -> IntegerProgram:  # fmt: skip
    """A program of one node ``op`` from ``inputs`` to ``y``."""
    tensors = {t.name: t for t in (*inputs, y)}
    return IntegerProgram(dp, tensors, [Node(op, op, tuple(t.name for t in inputs), y.name, attrs, params or {})],
                          [t.name for t in inputs], [y.name])  # fmt: skip


def random_codes(info: TensorInfo, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Codes of ``info``'s shape with batch ``batch`` over the whole code range."""
    lo, hi = code_range(info.bits, info.signed)
    shape = (batch, *(int(d) for d in info.shape[1:] if d is not None))
    return rng.integers(lo, hi + 1, shape).astype(info.dtype)


def float_inputs(program: IntegerProgram, codes: list[np.ndarray]) -> list[np.ndarray]:
    """Float inputs that quantize back to ``codes`` (their dequantized values)."""
    xs = [program.dequantize_tensor(c, program.tensors[n]) for c, n in zip(codes, program.inputs)]
    for x, c, i in zip(xs, codes, range(len(codes))):
        assert np.array_equal(program.quantize_input(torch.from_numpy(x), i), c)
    return xs


_scales = st.floats(0.0009765625, 0.5, width=32)


@st.composite
def datapaths(draw: st.DrawFn) -> Datapath:
    """mlas (uint8 activations) or its int8-activation variant."""
    dp: Datapath = draw(st.sampled_from([MLAS, MLAS_S8]))
    return dp


def _act(draw: st.DrawFn, name: str, shape: tuple[Optional[int], ...], dp: Datapath) -> TensorInfo:
    lo, hi = code_range(8, dp.a_signed)
    return TensorInfo(name, shape, 8, dp.a_signed, float(draw(_scales)), draw(st.integers(lo, hi)))


def _multipliers(draw: st.DrawFn, rng: np.random.Generator, channels: int) -> Any:
    kind = draw(st.sampled_from(["scalar", "one", "per_channel"]))
    values = np.exp(rng.uniform(math.log(1e-4), math.log(2.0), channels))
    if kind == "scalar":
        return float(values[0])
    return [float(values[0])] if kind == "one" else values.tolist()


def _clamp(draw: st.DrawFn, dp: Datapath) -> dict[str, int]:
    lo, hi = code_range(8, dp.a_signed)
    if draw(st.booleans()):
        return {}
    a, b = sorted((draw(st.integers(lo, hi)), draw(st.integers(lo, hi))))
    return {"y_min": a, "y_max": b}


@st.composite
def conv_programs(draw: st.DrawFn) -> IntegerProgram:
    """conv2d of random geometry, full-range weights, optional bias, multipliers per tensor or channel, clamp."""
    dp = draw(datapaths())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    groups, cin_g, cout_g = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h, w = draw(st.integers(dilation[0] * (kh - 1) + 1, 9)), draw(st.integers(dilation[1] * (kw - 1) + 1, 9))
    c_out = groups * cout_g
    x = _act(draw, "x", (None, groups * cin_g, h, w), dp)
    yq = _act(draw, "y", (None, c_out, 1, 1), dp)
    attrs = Conv2dAttrs.build(w_shape=(c_out, cin_g, kh, kw), x_zero_point=x.zero_point, w_zero_point=0,
                              y_zero_point=yq.zero_point, multiplier=_multipliers(draw, rng, c_out), stride=stride,
                              padding=padding, dilation=dilation, groups=groups, y_signed=dp.a_signed, datapath=dp,
                              **_clamp(draw, dp))  # fmt: skip
    out = attrs.output_shape((1, groups * cin_g, h, w))
    y = TensorInfo("y", (None, *out[1:]), 8, dp.a_signed, yq.scale, yq.zero_point)
    params: dict[str, Any] = {"weight": rng.integers(-128, 128, (c_out, cin_g, kh, kw)).astype(np.int8)}
    if draw(st.booleans()):
        params["bias"] = rng.integers(-(1 << 16), 1 << 16, c_out).astype(np.int32)
    return one_node(dp, "conv2d", attrs, [x], y, params)


@st.composite
def linear_programs(draw: st.DrawFn) -> IntegerProgram:
    """linear on rank 2 to 4 inputs, optional bias, multipliers per tensor or channel, clamp."""
    dp = draw(datapaths())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k, n = draw(st.integers(1, 40)), draw(st.integers(1, 8))
    lead = tuple(draw(st.lists(st.integers(1, 4), max_size=2)))
    x = _act(draw, "x", (None, *lead, k), dp)
    yq = _act(draw, "y", (None, *lead, n), dp)
    attrs = LinearAttrs.build(w_shape=(n, k), x_zero_point=x.zero_point, w_zero_point=0, y_zero_point=yq.zero_point,
                              multiplier=_multipliers(draw, rng, n), y_signed=dp.a_signed, datapath=dp, **_clamp(draw, dp))  # fmt: skip
    params: dict[str, Any] = {"weight": rng.integers(-128, 128, (n, k)).astype(np.int8)}
    if draw(st.booleans()):
        params["bias"] = rng.integers(-(1 << 16), 1 << 16, n).astype(np.int32)
    return one_node(dp, "linear", attrs, [x], yq, params)


@st.composite
def elementwise_programs(draw: st.DrawFn) -> IntegerProgram:
    """requantize (per tensor or per channel), add, mul (same shape or one factor per channel) or lut (one table
    or one per channel) on a random 4-D tensor."""
    dp = draw(datapaths())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (None, draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    c = int(shape[1] or 1)
    x = _act(draw, "a", shape, dp)
    y = _act(draw, "y", shape, dp)
    op = draw(st.sampled_from(["requantize", "add", "mul", "lut"]))
    lo, hi = code_range(8, dp.a_signed)
    if op == "requantize":
        per_channel = draw(st.booleans())
        m = np.exp(rng.uniform(math.log(1e-3), math.log(8.0), c if per_channel else 1))
        attrs: Any = RequantizeAttrs.build(in_zero_point=x.zero_point, multiplier=m.tolist() if per_channel else float(m[0]),
                                           y_zero_point=y.zero_point, y_signed=dp.a_signed, axis=1 if per_channel else None,
                                           datapath=dp)  # fmt: skip
        return one_node(dp, op, attrs, [x], y)
    if op == "lut":
        channels = draw(st.sampled_from([1, c]))
        attrs = LutAttrs.build(x_bits=8, x_signed=dp.a_signed, channels=channels)
        table = rng.integers(lo, hi + 1, (channels, 256) if channels > 1 else 256).astype(y.dtype)
        return one_node(dp, op, attrs, [x], y, {"table": table})
    b_shape = shape if op == "add" or draw(st.booleans()) else (None, c, 1, 1)
    b = _act(draw, "b", b_shape, dp)
    if op == "add":
        attrs = AddAttrs.build(a_zero_point=x.zero_point, b_zero_point=b.zero_point, a_multiplier=x.scale / y.scale,
                               b_multiplier=b.scale / y.scale, y_zero_point=y.zero_point, y_signed=dp.a_signed,
                               datapath=dp, **_clamp(draw, dp))  # fmt: skip
    else:
        attrs = MulAttrs.build(a_zero_point=x.zero_point, b_zero_point=b.zero_point, multiplier=x.scale * b.scale / y.scale,
                               y_zero_point=y.zero_point, y_signed=dp.a_signed, datapath=dp, **_clamp(draw, dp))  # fmt: skip
    return one_node(dp, op, attrs, [x, b], y)


@st.composite
def softmax_programs(draw: st.DrawFn) -> IntegerProgram:
    """softmax over a random axis of a random tensor (rank 2 to 4), signed or unsigned codes out."""
    dp = draw(datapaths())
    shape = (None, *draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    x = _act(draw, "x", shape, dp)
    y_signed = draw(st.booleans())
    attrs = SoftmaxAttrs.build(axis=draw(st.integers(1, len(shape) - 1)), x_bits=8, x_signed=dp.a_signed,
                               table=softmax_table(x.scale, 8), y_bits=8, y_signed=y_signed, datapath=dp)  # fmt: skip
    y = TensorInfo("y", shape, 8, y_signed, attrs.scale, attrs.output.zero_point)
    return one_node(dp, "softmax", attrs, [x], y)


@st.composite
def pool_programs(draw: st.DrawFn) -> IntegerProgram:
    """avg_pool2d / max_pool2d: windows with stride and padding (max: dilation), or global over planes whose size
    takes either route of the qoperator form (a power of two, odd, other)."""
    dp = draw(datapaths())
    op = draw(st.sampled_from(["avg_pool2d", "max_pool2d"]))
    if draw(st.booleans()):
        h, w = draw(st.sampled_from([(4, 4), (2, 8), (7, 7), (6, 6), (3, 5), (1, 6), (5, 2)]))
        window: dict[str, Any] = {"kernel_size": None}
    else:
        k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        window = {"kernel_size": k, "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                  "padding": (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))}  # fmt: skip
        h, w = draw(st.integers(k[0], 8)), draw(st.integers(k[1], 8))
    x = _act(draw, "x", (None, draw(st.integers(1, 3)), h, w), dp)
    if op == "avg_pool2d":
        attrs: Any = AvgPool2dAttrs.build(**window, zero_point=x.zero_point, datapath=dp)
    else:
        attrs = MaxPool2dAttrs.build(**window)
    out = attrs.output_shape((1, *(int(d) for d in x.shape[1:] if d is not None)))
    y = TensorInfo("y", (None, *out[1:]), 8, dp.a_signed, x.scale, x.zero_point)
    return one_node(dp, op, attrs, [x], y)


@st.composite
def layout_programs(draw: st.DrawFn) -> IntegerProgram:
    """reshape, permute, concat or pad of a random 4-D tensor (same qparams in and out)."""
    dp = draw(datapaths())
    shape = (None, draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dims = [int(d) for d in shape[1:] if d is not None]
    x = _act(draw, "x", shape, dp)
    op = draw(st.sampled_from(["reshape", "permute", "concat", "pad"]))

    def like(name: str, new_shape: tuple[Optional[int], ...]) -> TensorInfo:
        return TensorInfo(name, new_shape, 8, x.signed, x.scale, x.zero_point)

    if op == "reshape":
        target = draw(st.sampled_from([[-1], [dims[0], -1], [dims[2], dims[1], dims[0]], [math.prod(dims), 1]]))
        attrs: Any = ReshapeAttrs.build(shape=target)
        size = math.prod(dims)
        resolved = [size // math.prod(d for d in target if d != -1) if d == -1 else d for d in target]
        return one_node(dp, op, attrs, [x], like("y", (None, *resolved)))
    if op == "permute":
        perm = [0, *draw(st.permutations([1, 2, 3]))]
        return one_node(dp, op, PermuteAttrs.build(dims=perm), [x], like("y", tuple(shape[d] for d in perm)))
    if op == "concat":
        axis = draw(st.integers(1, 3))
        other: list[Optional[int]] = list(shape)
        other[axis] = draw(st.integers(1, 3))
        b = like("b", tuple(other))
        joined: list[Optional[int]] = list(shape)
        joined[axis] = int(shape[axis] or 0) + int(other[axis] or 0)
        return one_node(dp, op, ConcatAttrs.build(axis=axis), [x, b], like("y", tuple(joined)))
    pads = draw(st.lists(st.integers(0, 2), min_size=2, max_size=6).filter(lambda p: len(p) % 2 == 0))
    attrs = PadAttrs.build(pads=pads, value=x.zero_point)
    out: list[Optional[int]] = list(shape)
    for i in range(len(pads) // 2):
        d = len(shape) - 1 - i
        out[d] = int(shape[d] or 0) + pads[2 * i] + pads[2 * i + 1]
    return one_node(dp, op, attrs, [x], like("y", tuple(out)))


def onnx_float_model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], x_shape: list[Any],
                     y_shape: list[Any]) -> onnx.ModelProto:  # fmt: skip
    """A float ONNX model (opset 13) from ``x`` to ``y``, as a framework's exporter writes one."""
    g = helper.make_graph(nodes, "float_net", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, y_shape)], inits)  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model
