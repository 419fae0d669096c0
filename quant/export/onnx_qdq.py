"""The ``qdq`` form: an :class:`~quant.ir.program.IntegerProgram` as float ONNX ops between ``QuantizeLinear`` /
``DequantizeLinear`` pairs, the form ONNX Runtime's and other runtimes' quantization tools exchange.

Every program tensor ``t`` is its codes (``QuantizeLinear`` to ``t``'s scale and zero point, in the ONNX
type of its width: int8/uint8, int4/uint4 from opset 21, int2/uint2 from opset 25; 1-, 3-, 5-, 6- and 7-bit
codes travel in int8/uint8 with a ``Clip`` to their range before the ``QuantizeLinear``) and the float
``t_dequantized`` the ops read. Weights are initializers of codes in their own type with a
``DequantizeLinear`` of scale ``s_w = M s_y / s_x`` per output channel (the program keeps ``M``, not
``s_w``); biases are int32 with a ``DequantizeLinear`` of scale ``s_x s_w``.

* ``conv2d``: ``Conv``; ``linear``: ``Gemm`` (``transB = 1``) on rows, ``MatMul`` + ``Add`` on higher ranks;
  ``add``: ``Add``; ``mul``: ``Mul``; ``softmax``: ``Softmax``; ``layernorm``: ``LayerNormalization``
  (gamma and beta as ``DequantizeLinear`` of their codes); ``avg_pool2d``: ``AveragePool``
  (``count_include_pad = 0``) / ``GlobalAveragePool``; ``max_pool2d``: ``MaxPool``; ``reshape``,
  ``permute``, ``concat``, ``pad``, ``slice``: ``Reshape``, ``Transpose``, ``Concat``, ``Pad`` (of the real 0),
  ``Slice``; a fused
  clamp is a float ``Clip`` before the output's ``QuantizeLinear``;
* ``requantize``: the ``QuantizeLinear`` of the dequantized input to the output's qparams; ``constant``: its
  dequantized codes ``Expand``-ed to the batch, then ``QuantizeLinear``;
* ``lut``: the input's index ``DequantizeLinear(q, 1, qmin)`` (exact), ``Cast`` to int64, ``Gather`` on the
  dequantized table (the function itself is not in the program), then the output's ``QuantizeLinear``.

This is not the program's arithmetic: the float ops round differently from the datapath's integer
requantization, so the codes agree only mostly; :mod:`quant.export.agreement` measures how much.
Not expressible: binary ({-1, +1}) codes, custom ops (``detection.nms`` and any registered op).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import numpy.typing as npt
import torch
from onnx import TensorProto

from quant.contract.attrs import AvgPool2dAttrs, Conv2dAttrs, LutAttrs, MaxPool2dAttrs, RequantizeAttrs, SoftmaxAttrs
from quant.contract.codes import code_range
from quant.contract.layernorm import LAYERNORM_FRACTION_BITS, LayerNormAttrs
from quant.export.onnx_format import code_container, code_elem_type, min_opset_for_bits
from quant.export.onnx_graph import GraphBuilder
from quant.export.onnx_qoperator import onnx_pads
from quant.ir.ops import ConcatAttrs, PadAttrs, PermuteAttrs, ReshapeAttrs, SliceAttrs
from quant.ir.program import IntegerProgram, Node, PackedTensor, TensorInfo
from quant.reference.packing import unpack

__all__ = ["QDQ_OPS", "build_qdq", "check_qdq", "qdq_min_opset"]


def _weight_codes(node: Node) -> tuple[npt.NDArray[np.int64], int, bool]:
    """The weight codes of ``node`` as int64 (unpacked when packed), their bits and signedness."""
    w = node.params["weight"]
    if isinstance(w, PackedTensor):
        k = int(np.prod(w.shape[1:]))
        codes = unpack(torch.from_numpy(w.data), w.bits, (w.shape[0], k), w.signed).reshape(w.shape)
        return codes.numpy().astype(np.int64), w.bits, w.signed
    dp = node.attrs.datapath
    return np.asarray(w).astype(np.int64), dp.w_bits, dp.w_signed


class _Writer:
    """Writes one program into a :class:`GraphBuilder` (see the module docstring)."""

    def __init__(self, program: IntegerProgram, g: GraphBuilder) -> None:
        self.p = program
        self.g = g
        self.names: dict[str, str] = {}  # program tensor -> ONNX tensor of its codes
        self._float: dict[str, str] = {}  # program tensor -> ONNX tensor of its dequantized values

    def info(self, tensor: str) -> TensorInfo:
        """The program tensor ``tensor``."""
        return self.p.tensors[tensor]

    def qparams(self, base: str, info: TensorInfo) -> tuple[str, str]:
        """The scale (float32) and zero point (in the codes' ONNX type) initializers of ``info``."""
        _, width = code_container(info.bits, info.signed)
        scale = self.g.constant(f"{base}/scale", np.float32(info.scale))
        return scale, self.g.codes_constant(f"{base}/zero_point", info.zero_point, width, info.signed)

    def dequantized(self, tensor: str) -> str:
        """The float ``DequantizeLinear`` of ``tensor``'s codes (one per tensor, made on first use)."""
        if tensor not in self._float:
            info = self.info(tensor)
            name = self.g.fresh(f"{tensor}_dequantized")
            scale, zp = self.qparams(f"{tensor}/dequantize", info)
            self.g.node("DequantizeLinear", [self.names[tensor], scale, zp], [name], name=f"{tensor}/dequantize")
            self._float[tensor] = name
        return self._float[tensor]

    def quantize(self, node: Node, value: str, info: Optional[TensorInfo] = None, name: Optional[str] = None) -> None:
        """``QuantizeLinear`` of the float ``value`` to the node's output tensor, after a float ``Clip`` when the
        output range (a fused clamp, or a width without an ONNX type) is narrower than the codes' type."""
        info = info or self.info(node.output)
        out = getattr(node.attrs, "output", None)
        lo, hi = (out.lo, out.hi) if out is not None else code_range(info.bits, info.signed)
        _, width = code_container(info.bits, info.signed)
        if (lo, hi) != code_range(width, info.signed):
            s = np.float64(np.float32(info.scale))
            bounds = [self.g.constant(f"{node.name}/clip_{k}", np.float32((v - info.zero_point) * s))
                      for k, v in (("min", lo), ("max", hi))]  # fmt: skip
            clipped = self.g.fresh(f"{node.output}/clipped")
            self.g.node("Clip", [value, *bounds], [clipped], name=f"{node.name}/clip")
            value = clipped
        scale, zp = self.qparams(node.name, info)
        self.names[node.output] = node.output
        self.g.node("QuantizeLinear", [value, scale, zp], [node.output], name=name or node.name)

    def temp(self, node: Node, role: str) -> str:
        """A fresh tensor name ``<output>/<role>``."""
        return self.g.fresh(f"{node.output}/{role}")

    def weight_and_bias(self, node: Node, transpose: bool) -> tuple[str, str, npt.NDArray[np.float32]]:
        """The float weight (``(C_out, ...)``, or ``(K, N)`` transposed) and bias (``""`` if none) of a conv2d /
        linear node, both ``DequantizeLinear`` of their codes, and the weight scales ``s_w``."""
        a = node.attrs
        x, y = self.info(node.inputs[0]), self.info(node.output)
        codes, bits, signed = _weight_codes(node)
        if bits == 1 and signed:
            raise ValueError(f"node {node.name!r} ({node.op}): binary weights {{-1, +1}} have no ONNX form")
        m = np.asarray(a.multiplier, dtype=np.float64)
        s_w = (m * float(np.float32(y.scale)) / float(np.float32(x.scale))).astype(np.float32)
        zw = np.asarray(a.w_zero_point, dtype=np.int64)
        if zw.size > 1 and s_w.ndim == 0:
            s_w = np.full(zw.shape, s_w, np.float32)
        per_channel = s_w.ndim == 1
        if transpose:
            codes = codes.T
        _, width = code_container(bits, signed)
        w_name = self.g.codes_constant(f"{node.name}/weight", codes, width, signed)
        zw_arr = np.broadcast_to(zw, s_w.shape) if per_channel else np.array(zw[0])
        axis = (1 if transpose else 0) if per_channel else None
        weight = self.temp(node, "weight")
        self.g.node("DequantizeLinear", [w_name, self.g.constant(f"{node.name}/w_scale", s_w),
                    self.g.codes_constant(f"{node.name}/w_zero_point", zw_arr, width, signed)], [weight],
                    name=f"{node.name}/weight", axis=axis)  # fmt: skip
        bias = ""
        if "bias" in node.params:
            b = np.asarray(node.params["bias"]).astype(np.int32)
            b_scale = (np.float32(x.scale) * s_w).astype(np.float32)
            if not per_channel:
                b_scale = np.full(b.shape, b_scale, np.float32)
            bias = self.temp(node, "bias")
            self.g.node("DequantizeLinear", [self.g.constant(f"{node.name}/bias", b),
                        self.g.constant(f"{node.name}/bias_scale", b_scale)], [bias], name=f"{node.name}/bias", axis=0)  # fmt: skip
        return weight, bias, s_w

    # ------------------------------------------------------------------ ops
    def conv2d(self, node: Node) -> None:
        """``Conv`` of the dequantized input, weight and bias, then the output's ``QuantizeLinear``."""
        a: Conv2dAttrs = node.attrs
        weight, bias, _ = self.weight_and_bias(node, transpose=False)
        out = self.temp(node, "float")
        ph, pw = a.padding
        self.g.node("Conv", [self.dequantized(node.inputs[0]), weight] + ([bias] if bias else []), [out],
                    name=f"{node.name}/conv", kernel_shape=list(a.w_shape[2:]), strides=list(a.stride),
                    pads=[ph, pw, ph, pw], dilations=list(a.dilation), group=a.groups)  # fmt: skip
        self.quantize(node, out)

    def linear(self, node: Node) -> None:
        """``Gemm`` (transB = 1) on rows, ``MatMul`` + ``Add`` on higher ranks, then the output's ``QuantizeLinear``."""
        x = self.info(node.inputs[0])
        out = self.temp(node, "float")
        if len(x.shape) == 2:
            weight, bias, _ = self.weight_and_bias(node, transpose=False)
            self.g.node("Gemm", [self.dequantized(node.inputs[0]), weight] + ([bias] if bias else []), [out],
                        name=f"{node.name}/gemm", transB=1)  # fmt: skip
        else:
            weight, bias, _ = self.weight_and_bias(node, transpose=True)
            product = self.temp(node, "matmul") if bias else out
            self.g.node("MatMul", [self.dequantized(node.inputs[0]), weight], [product], name=f"{node.name}/matmul")
            if bias:
                self.g.node("Add", [product, bias], [out], name=f"{node.name}/bias_add")
        self.quantize(node, out)

    def requantize(self, node: Node) -> None:
        """The ``QuantizeLinear`` of the dequantized input (per channel: scale ``s_x / M[c]`` along ``axis``)."""
        a: RequantizeAttrs = node.attrs
        x, y = self.info(node.inputs[0]), self.info(node.output)
        m = np.asarray(a.multiplier, dtype=np.float64)
        if m.ndim == 0:
            self.quantize(node, self.dequantized(node.inputs[0]))
            return
        # one output scale per channel: s_x / M[c]
        scale = self.g.constant(f"{node.name}/scale", (float(np.float32(x.scale)) / m).astype(np.float32))
        _, width = code_container(y.bits, y.signed)
        zp = self.g.codes_constant(f"{node.name}/zero_point", np.full(m.shape, y.zero_point), width, y.signed)
        self.names[node.output] = node.output
        self.g.node("QuantizeLinear", [self.dequantized(node.inputs[0]), scale, zp], [node.output], name=node.name,
                    axis=a.axis)  # fmt: skip

    def add(self, node: Node) -> None:
        """``Add`` of the dequantized inputs, then the output's ``QuantizeLinear``."""
        out = self.temp(node, "float")
        self.g.node("Add", [self.dequantized(t) for t in node.inputs], [out], name=f"{node.name}/add")
        self.quantize(node, out)

    def mul(self, node: Node) -> None:
        """``Mul`` of the dequantized inputs, then the output's ``QuantizeLinear``."""
        out = self.temp(node, "float")
        self.g.node("Mul", [self.dequantized(t) for t in node.inputs], [out], name=f"{node.name}/mul")
        self.quantize(node, out)

    def matmul(self, node: Node) -> None:
        """``MatMul`` of the dequantized inputs, then the output's ``QuantizeLinear``."""
        out = self.temp(node, "float")
        self.g.node("MatMul", [self.dequantized(t) for t in node.inputs], [out], name=f"{node.name}/matmul")
        self.quantize(node, out)

    def softmax(self, node: Node) -> None:
        """``Softmax`` of the dequantized input, then ``QuantizeLinear`` to scale ``2^-k``."""
        a: SoftmaxAttrs = node.attrs
        out = self.temp(node, "float")
        self.g.node("Softmax", [self.dequantized(node.inputs[0])], [out], name=f"{node.name}/softmax", axis=a.axis)
        self.quantize(node, out)

    def layernorm(self, node: Node) -> None:
        """``LayerNormalization`` over the last axis of the dequantized input with gamma ``DequantizeLinear(g, s_g,
        z_g)`` (ones without), beta ``DequantizeLinear(b, s_g 2^-15)``, ``eps = E s_x^2 / L^3``; ``QuantizeLinear``."""
        a: LayerNormAttrs = node.attrs
        x, y = self.info(node.inputs[0]), self.info(node.output)
        s_g = np.asarray(a.multiplier, np.float64).reshape(-1) * 2.0**LAYERNORM_FRACTION_BITS * y.scale
        per_element = s_g.size > 1
        gamma, bias = node.params.get("gamma"), node.params.get("bias")
        if gamma is None:
            scale = self.g.constant(f"{node.name}/gamma", np.ones(a.length, np.float32))
        else:
            scale = self.temp(node, "gamma")
            self.g.node("DequantizeLinear", [self.g.constant(f"{node.name}/gamma_codes", np.asarray(gamma).astype(np.int8)),
                        self.g.constant(f"{node.name}/gamma_scale", s_g.astype(np.float32)),
                        self.g.constant(f"{node.name}/gamma_zero_point",
                                        np.full(s_g.shape, a.gamma_zero_point, np.int8))], [scale],
                        name=f"{node.name}/gamma", axis=0 if per_element else None)  # fmt: skip
        inputs = [self.dequantized(node.inputs[0]), scale]
        if bias is not None:
            beta = self.temp(node, "beta")
            self.g.node("DequantizeLinear", [self.g.constant(f"{node.name}/bias", np.asarray(bias).astype(np.int32)),
                        self.g.constant(f"{node.name}/bias_scale", (s_g / 2.0**LAYERNORM_FRACTION_BITS).astype(np.float32)),
                        self.g.constant(f"{node.name}/bias_zero_point", np.zeros(s_g.shape, np.int32))], [beta],
                        name=f"{node.name}/beta", axis=0 if per_element else None)  # fmt: skip
            inputs.append(beta)
        eps = float(a.eps_term) * x.scale**2 / float(a.length) ** 3
        out = self.temp(node, "float")
        self.g.node("LayerNormalization", inputs, [out], name=f"{node.name}/layernorm", axis=-1, epsilon=eps)
        self.quantize(node, out)

    def avg_pool2d(self, node: Node) -> None:
        """``AveragePool`` (``count_include_pad = 0``) or ``GlobalAveragePool``, then ``QuantizeLinear``."""
        a: AvgPool2dAttrs = node.attrs
        out = self.temp(node, "float")
        src = self.dequantized(node.inputs[0])
        if a.window.kernel_size is None:
            self.g.node("GlobalAveragePool", [src], [out], name=f"{node.name}/pool")
        else:
            (ph, pw), k, s = a.window.padding, a.window.kernel_size, a.window.stride
            self.g.node("AveragePool", [src], [out], name=f"{node.name}/pool", kernel_shape=list(k), strides=list(s),
                        pads=[ph, pw, ph, pw], count_include_pad=0)  # fmt: skip
        self.quantize(node, out)

    def max_pool2d(self, node: Node) -> None:
        """``MaxPool`` or ``GlobalMaxPool`` of the dequantized input, then ``QuantizeLinear``."""
        a: MaxPool2dAttrs = node.attrs
        out = self.temp(node, "float")
        src = self.dequantized(node.inputs[0])
        if a.window.kernel_size is None:
            self.g.node("GlobalMaxPool", [src], [out], name=f"{node.name}/pool")
        else:
            (ph, pw), k, s = a.window.padding, a.window.kernel_size, a.window.stride
            self.g.node("MaxPool", [src], [out], name=f"{node.name}/pool", kernel_shape=list(k), strides=list(s),
                        pads=[ph, pw, ph, pw], dilations=list(a.window.dilation))  # fmt: skip
        self.quantize(node, out)

    def lut(self, node: Node) -> None:
        """``Gather`` of the dequantized table by the index ``DequantizeLinear(q, 1, qmin)``, then ``QuantizeLinear``."""
        a: LutAttrs = node.attrs
        x, y = self.info(node.inputs[0]), self.info(node.output)
        qmin = a.x_range[0]
        _, width = code_container(x.bits, x.signed)
        index_f = self.temp(node, "index_float")
        self.g.node("DequantizeLinear", [self.names[node.inputs[0]], self.g.shared_constant("unit_scale", np.float32(1.0)),
                    self.g.codes_constant(f"{node.name}/qmin", qmin, width, x.signed)], [index_f],
                    name=f"{node.name}/index_float")  # fmt: skip
        index = self.temp(node, "index")
        self.g.node("Cast", [index_f], [index], name=f"{node.name}/index", to=TensorProto.INT64)
        if a.channels > 1:
            offset = (np.arange(a.channels, dtype=np.int64) << a.x_bits).reshape((a.channels,) + (1,) * (len(x.shape) - 2))
            rows = self.temp(node, "row_index")
            self.g.node("Add", [index, self.g.constant(f"{node.name}/offset", offset)], [rows], name=f"{node.name}/offset")
            index = rows
        table = np.asarray(node.params["table"]).reshape(-1).astype(np.int64)
        values = ((table - y.zero_point).astype(np.float32) * np.float32(y.scale)).astype(np.float32)
        out = self.temp(node, "float")
        self.g.node("Gather", [self.g.constant(f"{node.name}/table", values), index], [out], name=f"{node.name}/gather", axis=0)
        self.quantize(node, out)

    def slice(self, node: Node) -> None:
        """``Slice`` of the dequantized input along ``axis``, then ``QuantizeLinear``."""
        a: SliceAttrs = node.attrs
        out = self.temp(node, "float")
        inputs = [self.dequantized(node.inputs[0])] + [self.g.constant(f"{node.name}/{k}", np.array([v], np.int64))
                                                       for k, v in (("starts", a.start), ("ends", a.stop),
                                                                    ("axes", a.axis), ("steps", a.step))]  # fmt: skip
        self.g.node("Slice", inputs, [out], name=f"{node.name}/slice")
        self.quantize(node, out)

    def constant(self, node: Node) -> None:
        """The dequantized codes ``Expand``-ed to the batch of the node's input, then ``QuantizeLinear``."""
        info = self.info(node.output)
        values = (np.asarray(node.params["codes"]).astype(np.float32) - np.float32(info.zero_point)) * np.float32(info.scale)
        out = self.temp(node, "float")
        self.g.batch_constant(f"{node.name}/values", values.astype(np.float32), self.names[node.inputs[0]], out)
        self.quantize(node, out)

    def reshape(self, node: Node) -> None:
        """``Reshape`` of the dequantized input to ``[0, *shape]``, then ``QuantizeLinear``."""
        a: ReshapeAttrs = node.attrs
        out = self.temp(node, "float")
        shape = self.g.constant(f"{node.name}/shape", np.array([0, *a.shape], np.int64))
        self.g.node("Reshape", [self.dequantized(node.inputs[0]), shape], [out], name=f"{node.name}/reshape")
        self.quantize(node, out)

    def permute(self, node: Node) -> None:
        """``Transpose`` of the dequantized input, then ``QuantizeLinear``."""
        a: PermuteAttrs = node.attrs
        out = self.temp(node, "float")
        self.g.node("Transpose", [self.dequantized(node.inputs[0])], [out], name=f"{node.name}/transpose", perm=list(a.dims))
        self.quantize(node, out)

    def concat(self, node: Node) -> None:
        """``Concat`` of the dequantized inputs, then ``QuantizeLinear``."""
        a: ConcatAttrs = node.attrs
        out = self.temp(node, "float")
        self.g.node("Concat", [self.dequantized(t) for t in node.inputs], [out], name=f"{node.name}/concat", axis=a.axis)
        self.quantize(node, out)

    def pad(self, node: Node) -> None:
        """``Pad`` of the dequantized input with the real value of the code ``value``, then ``QuantizeLinear``."""
        a: PadAttrs = node.attrs
        x = self.info(node.inputs[0])
        out = self.temp(node, "float")
        value = np.float32(np.float32(a.value - x.zero_point) * np.float32(x.scale))
        self.g.node("Pad", [self.dequantized(node.inputs[0]), self.g.constant(f"{node.name}/pads", onnx_pads(a, len(x.shape), node)),
                    self.g.constant(f"{node.name}/value", value)], [out], name=f"{node.name}/pad", mode="constant")  # fmt: skip
        self.quantize(node, out)


#: The program ops this form writes, by name.
QDQ_OPS: dict[str, Callable[[_Writer, Node], None]] = {
    "conv2d": _Writer.conv2d, "linear": _Writer.linear, "requantize": _Writer.requantize, "add": _Writer.add,
    "mul": _Writer.mul, "matmul": _Writer.matmul, "softmax": _Writer.softmax, "layernorm": _Writer.layernorm, "constant": _Writer.constant, "slice": _Writer.slice,
    "avg_pool2d": _Writer.avg_pool2d,
    "max_pool2d": _Writer.max_pool2d, "lut": _Writer.lut, "reshape": _Writer.reshape, "permute": _Writer.permute,
    "concat": _Writer.concat, "pad": _Writer.pad,
}  # fmt: skip


def check_qdq(program: IntegerProgram) -> None:
    """``ValueError`` naming the first node or tensor of ``program`` the qdq form cannot express."""
    for node in program.nodes:
        if node.op not in QDQ_OPS:
            why = "custom ops have no ONNX counterpart" if "." in node.op else "no ONNX form"
            raise ValueError(f"export_onnx(form='qdq'): node {node.name!r} ({node.op}) cannot be expressed: {why}")
    for info in program.tensors.values():
        if info.bits == 1 and info.signed:
            raise ValueError(f"export_onnx(form='qdq'): tensor {info.name!r} holds binary codes {{-1, +1}}, which "
                             "QuantizeLinear cannot produce")  # fmt: skip
    dp = program.datapath
    if dp.w_bits == 1 and dp.w_signed:
        raise ValueError(f"export_onnx(form='qdq'): datapath {dp.name!r} has binary weights {{-1, +1}}, which "
                         "DequantizeLinear cannot hold")  # fmt: skip


def qdq_min_opset(program: IntegerProgram) -> int:
    """The first opset holding every code type and op of ``program`` (13; 17 with a layernorm, for
    ``LayerNormalization``; 21 with 4-bit codes; 25 with 2-bit codes)."""
    widths = {t.bits for t in program.tensors.values()}
    widths.add(program.datapath.w_bits)
    ops = 17 if any(n.op == "layernorm" for n in program.nodes) else 13
    return max(ops, *(min_opset_for_bits(b) if code_elem_type(b, True) is not None else 13 for b in widths))


def build_qdq(program: IntegerProgram, g: GraphBuilder) -> dict[str, str]:
    """Write ``program`` in the qdq form into ``g``; returns the ONNX tensor holding each program tensor's codes.
    ``ValueError`` as :func:`check_qdq`."""
    check_qdq(program)
    w = _Writer(program, g)
    for name in program.inputs:
        info = program.tensors[name]
        codes = g.fresh(f"{name}_quantized")
        scale, zp = w.qparams(f"{name}/quantize", info)
        source = name
        _, width = code_container(info.bits, info.signed)
        if width != info.bits:  # codes narrower than their container: clip the real range first
            s = np.float64(np.float32(info.scale))
            lo, hi = code_range(info.bits, info.signed)
            bounds = [g.constant(f"{name}/clip_{k}", np.float32((v - info.zero_point) * s)) for k, v in (("min", lo), ("max", hi))]
            source = g.fresh(f"{name}/clipped")
            g.node("Clip", [name, *bounds], [source], name=f"{name}/clip")
        g.node("QuantizeLinear", [source, scale, zp], [codes], name=f"{name}/quantize")
        w.names[name] = codes
    for node in program.nodes:
        try:
            QDQ_OPS[node.op](w, node)
        except ValueError as err:
            text = str(err)
            raise ValueError(text if text.startswith("export_onnx") else f"export_onnx(form='qdq'): {text}") from None
    return w.names
