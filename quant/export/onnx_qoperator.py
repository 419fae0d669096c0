"""The ``qoperator`` form: an :class:`~quant.ir.program.IntegerProgram` as integer ONNX ops that ONNX Runtime's
CPU kernels (MLAS) compute exactly as the program does, code for code.

It expresses programs on the ``mlas`` datapath (:func:`~quant.export.onnx_format.qoperator_datapath_problems`
names the knobs of any other datapath that stand in the way): 8-bit activations, int8 weights, an int32
accumulator, requantization by one float32 product ``p = fp32(acc) * m`` rounded half to even with the
zero point added after rounding (docs/arithmetic.md section 5.2). The graph takes the FLOAT input, quantizes
it with ``QuantizeLinear`` (section 7's ``division`` mode is ONNX's), and returns the output CODES first,
then their ``DequantizeLinear`` (``<output>_dequantized``).

How each op is written, and why ONNX Runtime computes it exactly:

* ``conv2d``: ``QLinearConv`` (int32 bias, weight zero point 0) [+ ``Clip`` of a fused clamp]. ONNX Runtime
  computes the multiplier as ``fp32(fp32(x_scale * w_scale) / y_scale)``; the exact multipliers of a
  program are not reachable that way from the tensors' own scales (for about one channel in six no
  float32 ``w_scale`` gives ``fp32(M)``), so the node carries ``x_scale = y_scale = 1`` and
  ``w_scale = fp32(M)`` per channel, for which the formula returns ``fp32(M)`` exactly. The real scales
  of the tensors are in the file's metadata and on the ``QuantizeLinear``/``DequantizeLinear`` at its
  ends.
* ``linear``: ``QGemm`` (com.microsoft; ``QLinearMatMul`` has no bias input), ``transB = 1``, the same unit
  scales; inputs of rank above 2 go through ``Reshape`` to rows and back.
* ``requantize``: ``DequantizeLinear(q, m, z_in)`` (ONNX Runtime computes ``fp32(q - z_in) * m``: the
  contract's ``fp32(acc) * m``) then ``QuantizeLinear(·, 1, z_y)`` (a division by 1 is exact; it rounds
  half to even, adds ``z_y`` and saturates). Per-channel multipliers use the per-axis form.
* ``add``: ``DequantizeLinear(a, fp32(m_a), z_a)`` and ``DequantizeLinear(b, fp32(m_b), z_b)``, a float
  ``Add``, ``QuantizeLinear(·, 1, z_y)`` [+ ``Clip``]: section 6.1's float32 formula, operation for operation.
  (``QLinearAdd`` is not used: its AVX2 kernel computes ``fma(a, s_a/s_y, fma(b, s_b/s_y, z_y - ...))``
  with the zero points folded into one float constant, which differs in the last bit.)
* ``mul``: ``DequantizeLinear`` of both with scale 1 (exact differences), ``Mul`` (an exact product below
  2^24), ``Mul`` by ``fp32(M)``, ``QuantizeLinear(·, 1, z_y)`` [+ ``Clip``]. (``QLinearMul`` is not used: its
  NEON kernel adds the zero point before rounding, so it is not the contract's formula on every CPU.)
* ``avg_pool2d``: global pooling over ``n`` positions with ``n`` a power of two up to 2^16, or odd below
  8192: ``QLinearGlobalAveragePool`` (com.microsoft) with the tensor's own scale in and out (its float32
  factor ``s / (s n)`` is ``1/n`` exactly, or close enough that no rounding of an odd ``n`` moves).
  Otherwise ``DequantizeLinear(q, 1, z)``, the float ``AveragePool`` (``count_include_pad = 0``) or
  ``GlobalAveragePool`` (an exact sum divided once, correctly rounded: no tie is created or lost for
  windows up to 2^15), ``QuantizeLinear(·, 1, z)``. (``QLinearAveragePool`` adds the zero point before
  rounding, which moves ties when ``z`` is odd.)
* ``max_pool2d``: ``MaxPool`` on the codes (global pooling: the whole plane, no ``strides`` attribute).
* ``lut``: ``Cast`` to int32, ``Add`` of ``-qmin`` (plus ``c * 2^b`` for channel ``c`` of per-channel
  tables), ``Gather`` on the int8/uint8 table.
* ``softmax`` (section 6.3) in int64: ``Cast``, ``ReduceMax``, ``Sub`` (the distances ``m - q``), ``Gather`` on
  the exponential table, ``ReduceSum``, ``Mul`` by ``2^k``; the rounding division ``E 2^k / S`` in float64
  (``Cast``, ``Div``, ``Round``: exact, since ``E 2^k <= 2^24`` and ``S < 2^31`` make any quotient that is not
  a tie at least ``2^-32`` from one, far above float64's error), then ``Cast``, ``Add`` of ``z_y``, ``Clip``,
  ``Cast`` to the codes.
* ``layernorm`` (section 6.5): one node of the model-local function ``lowbit.IntegerLayerNorm``
  (:mod:`quant.export.onnx_functions`), whose body is the op in int64 ONNX ops, with ``gamma - z_g``, the
  bias, ``E``, ``fp32(M)`` and ``z_y`` as constant inputs [+ ``Clip``].
* ``constant``: ``Expand`` of its codes (an initializer of shape ``(1, *shape)``) to ``Concat(Shape(x)[0:1],
  shape)``, ``x`` the tensor whose batch it takes.
* ``slice``: ``Slice`` of the codes (one axis, start, end, step).
* ``reshape``, ``permute``, ``concat``, ``pad``: ``Reshape`` (batch kept: ``0``), ``Transpose``, ``Concat``,
  ``Pad`` (constant, the code ``value``) on the codes.

Ops from the com.microsoft domain: ``QGemm`` and ``QLinearGlobalAveragePool``; from the ``lowbit`` domain:
the model-local function ``IntegerLayerNorm``. Everything else is the default ONNX domain.

Not expressible (``ValueError`` naming the node, the op and the form): custom ops (``detection.nms`` and any
registered op: ONNX has no counterpart of their C and Python definitions),
codes other than 8 bits, weight zero points that differ between channels (ONNX Runtime's ``QLinearConv``
needs one), and any datapath other than ``mlas``'s arithmetic.

Exactness is measured by ``tests/quant/export/test_onnx_qoperator.py``. On x86 CPUs without VNNI, MLAS's
u8 x s8 kernels add pairs of products in saturating int16, so full-range uint8 activations may differ
there (docs/arithmetic.md section 8); with AVX-VNNI, AVX512-VNNI or AMX the accumulation is exact int32.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import numpy.typing as npt
from onnx import TensorProto

from quant.contract.layernorm import LayerNormAttrs
from quant.contract.matmul import MatmulAttrs
from quant.export.onnx_functions import INTEGER_LAYERNORM, LOWBIT_DOMAIN, integer_layernorm_function
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
)
from quant.contract.codes import code_range
from quant.contract.multiplier import FloatAdd, FloatRequant
from quant.export.onnx_format import (
    MS_DOMAIN,
    QOPERATOR_MIN_OPSET,
    code_elem_type,
    code_numpy_dtype,
    float32_array,
    qoperator_datapath_problems,
)
from quant.export.onnx_graph import GraphBuilder
from quant.ir.ops import ConcatAttrs, PadAttrs, PermuteAttrs, ReshapeAttrs, SliceAttrs
from quant.ir.program import IntegerProgram, Node, PackedTensor, TensorInfo

__all__ = ["QOPERATOR_OPS", "build_qoperator", "check_qoperator", "exact_global_average", "MAX_AVERAGE_WINDOW",
           "onnx_pads", "qoperator_min_opset"]

#: The largest averaging window the float ``AveragePool`` route computes exactly (section 6 rounding).
MAX_AVERAGE_WINDOW = 1 << 15


def exact_global_average(count: int) -> bool:
    """Whether ``QLinearGlobalAveragePool`` over ``count`` positions, with equal input and output qparams, is
    the contract's ``rounding_divide(S - n z, n, half_even) + z``: its factor ``fp32(s / fp32(s n))`` is
    ``1/n`` exactly for ``n`` a power of two (and ``fp32(acc)`` exact for ``n <= 2^16``); for odd ``n`` no
    tie exists and the factor's error (``<= 2^-22`` relative, ``255 * 2^-22`` absolute) stays below the
    ``1/(2n)`` distance to the nearest tie while ``n < 8192``.

    >>> [n for n in (1, 4, 6, 16, 49, 36, 1 << 16, 1 << 17) if exact_global_average(n)]
    [1, 4, 16, 49, 65536]
    """
    if count < 1:
        return False
    if count & (count - 1) == 0:
        return count <= 1 << 16
    return count % 2 == 1 and count < 8192


class _Writer:
    """Writes one program's nodes into a :class:`GraphBuilder` (see the module docstring)."""

    def __init__(self, program: IntegerProgram, g: GraphBuilder) -> None:
        self.p = program
        self.g = g
        self.names: dict[str, str] = {}  # program tensor -> ONNX tensor of its codes
        self.unit = ""

    # ------------------------------------------------------------------ helpers
    def info(self, tensor: str) -> TensorInfo:
        """The program tensor ``tensor``."""
        return self.p.tensors[tensor]

    def codes(self, tensor: str) -> str:
        """The ONNX tensor holding ``tensor``'s codes."""
        return self.names[tensor]

    def zero_point(self, base: str, value: int, info: TensorInfo, shape: tuple[int, ...] = ()) -> str:
        """An initializer of ``value`` in ``info``'s code type (``ValueError`` outside its range)."""
        lo, hi = code_range(info.bits, info.signed)
        if not lo <= value <= hi:
            raise ValueError(f"zero point {value} outside the {info.bits}-bit code range of tensor {info.name!r}")
        return self.g.constant(base, np.full(shape, value, dtype=code_numpy_dtype(info.signed)))

    def unit_scale(self) -> str:
        """The shared float32 1.0."""
        return self.g.shared_constant("unit_scale", np.float32(1.0))

    def result(self, node: Node) -> str:
        """Where the node's main op writes: its output, or a temporary a fused ``Clip`` then narrows."""
        self.names[node.output] = node.output
        return self.g.fresh(f"{node.output}/unclamped") if self._clamp_bounds(node) else node.output

    def _clamp_bounds(self, node: Node) -> Optional[tuple[int, int]]:
        out = getattr(node.attrs, "output", None)
        info = self.info(node.output)
        if out is None or (out.lo, out.hi) == code_range(info.bits, info.signed):
            return None
        return out.lo, out.hi

    def clamp(self, node: Node, produced: str) -> None:
        """``Clip`` of ``produced`` to the node's output range when a fused clamp narrows it."""
        bounds = self._clamp_bounds(node)
        if bounds is None:
            return
        info = self.info(node.output)
        dtype = code_numpy_dtype(info.signed)
        lo = self.g.constant(f"{node.name}/clip_min", np.array(bounds[0], dtype))
        hi = self.g.constant(f"{node.name}/clip_max", np.array(bounds[1], dtype))
        self.g.node("Clip", [produced, lo, hi], [node.output], name=f"{node.name}/clip")

    def quantize_unit(self, node: Node, value: str, out: str) -> None:
        """``QuantizeLinear(value, 1, z_y)``: round half to even, add the output zero point, saturate."""
        info = self.info(node.output)
        zp = self.zero_point(f"{node.name}/y_zero_point", info.zero_point, info)
        self.g.node("QuantizeLinear", [value, self.unit_scale(), zp], [out], name=node.name)

    @staticmethod
    def float_multiplier(attrs: Any, node: Node) -> npt.NDArray[np.float32]:
        """The float32 multipliers of a requantizing record (``ValueError`` for another requantization)."""
        requant = attrs.requant
        if not isinstance(requant, FloatRequant) or requant.precision != "float32":
            raise ValueError(f"node {node.name!r} ({node.op}): requantization {requant!r} is not float32")
        return float32_array(requant.multiplier)

    @staticmethod
    def weight(node: Node) -> npt.NDArray[np.int8]:
        """The node's int8 weight codes (``ValueError`` for packed sub-byte weights)."""
        w = node.params["weight"]
        if isinstance(w, PackedTensor):
            raise ValueError(f"node {node.name!r} ({node.op}): {w.bits}-bit packed weights; the qoperator form holds int8")
        return np.asarray(w).astype(np.int8)

    def weight_zero_point(self, node: Node, zw: tuple[int, ...], scale: npt.NDArray[np.float32]) -> str:
        """The weight zero point, of the scale's shape (QGemm needs equal shapes; QLinearConv one value)."""
        if len(set(zw)) != 1:
            raise ValueError(f"node {node.name!r} ({node.op}) cannot be expressed in the qoperator form: weight zero "
                             f"points differ between channels ({sorted(set(zw))}); ONNX Runtime takes one")  # fmt: skip
        return self.g.constant(f"{node.name}/w_zero_point", np.full(scale.shape, zw[0], dtype=np.int8))

    # ------------------------------------------------------------------ ops
    def conv2d(self, node: Node) -> None:
        """``QLinearConv`` (x_scale = y_scale = 1, w_scale = fp32(M) per channel, int32 bias) [+ ``Clip``]."""
        a: Conv2dAttrs = node.attrs
        x, y = self.info(node.inputs[0]), self.info(node.output)
        m = self.float_multiplier(a, node)
        inputs = [
            self.codes(node.inputs[0]), self.unit_scale(),
            self.zero_point(f"{node.name}/x_zero_point", a.x_zero_point, x),
            self.g.constant(f"{node.name}/weight", self.weight(node)),
            self.g.constant(f"{node.name}/w_scale", m),
            self.weight_zero_point(node, a.w_zero_point, m),
            self.unit_scale(), self.zero_point(f"{node.name}/y_zero_point", a.output.zero_point, y),
        ]  # fmt: skip
        if "bias" in node.params:
            inputs.append(self.g.constant(f"{node.name}/bias", np.asarray(node.params["bias"]).astype(np.int32)))
        out = self.result(node)
        ph, pw = a.padding
        self.g.node("QLinearConv", inputs, [out], name=node.name, kernel_shape=list(a.w_shape[2:]),
                    strides=list(a.stride), pads=[ph, pw, ph, pw], dilations=list(a.dilation), group=a.groups)  # fmt: skip
        self.clamp(node, out)

    def linear(self, node: Node) -> None:
        """``QGemm`` (com.microsoft, transB = 1, the same unit scales) on rows [``Reshape`` around it] [+ ``Clip``]."""
        a: LinearAttrs = node.attrs
        x, y = self.info(node.inputs[0]), self.info(node.output)
        m = self.float_multiplier(a, node)
        src = self.codes(node.inputs[0])
        rank = len(x.shape)
        if rank > 2:
            rows = self.g.fresh(f"{node.output}/rows")
            shape = self.g.constant(f"{node.name}/rows_shape", np.array([-1, a.w_shape[1]], np.int64))
            self.g.node("Reshape", [src, shape], [rows], name=f"{node.name}/rows")
            src = rows
        bias = ""
        if "bias" in node.params:
            bias = self.g.constant(f"{node.name}/bias", np.asarray(node.params["bias"]).astype(np.int32))
        out = self.result(node)
        gemm_out = self.g.fresh(f"{node.output}/rows_out") if rank > 2 else out
        inputs = [
            src, self.unit_scale(), self.zero_point(f"{node.name}/x_zero_point", a.x_zero_point, x),
            self.g.constant(f"{node.name}/weight", self.weight(node)), self.g.constant(f"{node.name}/w_scale", m),
            self.weight_zero_point(node, a.w_zero_point, m), bias,
            self.unit_scale(), self.zero_point(f"{node.name}/y_zero_point", a.output.zero_point, y),
        ]  # fmt: skip
        self.g.node("QGemm", inputs, [gemm_out], name=node.name, domain=MS_DOMAIN, transB=1)
        if rank > 2:
            dims = [-1, *(int(d) for d in y.shape[1:] if d is not None)]
            shape = self.g.constant(f"{node.name}/out_shape", np.array(dims, np.int64))
            self.g.node("Reshape", [gemm_out, shape], [out], name=f"{node.name}/unrows")
        self.clamp(node, out)

    def requantize(self, node: Node) -> None:
        """``DequantizeLinear(q, fp32(M), z_in)`` (per axis for per-channel M), ``QuantizeLinear(·, 1, z_y)``."""
        a: RequantizeAttrs = node.attrs
        x = self.info(node.inputs[0])
        m = self.float_multiplier(a, node)
        per_axis = m.ndim == 1
        zp = self.zero_point(f"{node.name}/x_zero_point", a.in_zero_point, x, (m.shape[0],) if per_axis else ())
        scaled = self.g.fresh(f"{node.output}/scaled")
        self.g.node("DequantizeLinear", [self.codes(node.inputs[0]), self.g.constant(f"{node.name}/multiplier", m), zp],
                    [scaled], name=f"{node.name}/scale", axis=a.axis if per_axis else None)  # fmt: skip
        out = self.result(node)
        self.quantize_unit(node, scaled, out)
        self.clamp(node, out)

    def add(self, node: Node) -> None:
        """``DequantizeLinear`` of each input by its multiplier, ``Add``, ``QuantizeLinear(·, 1, z_y)`` [+ ``Clip``]."""
        a: AddAttrs = node.attrs
        params = a.params
        if not isinstance(params, FloatAdd) or params.requant != "float32":
            raise ValueError(f"node {node.name!r} (add): parameters {params!r} are not float32")
        terms = []
        for i, (mult, zero) in enumerate(((params.a, a.a_zero_point), (params.b, a.b_zero_point))):
            src = node.inputs[i]
            term = self.g.fresh(f"{node.output}/term{i}")
            self.g.node("DequantizeLinear", [self.codes(src), self.g.constant(f"{node.name}/multiplier{i}",
                        float32_array(mult.multiplier)), self.zero_point(f"{node.name}/zero_point{i}", zero,
                        self.info(src))], [term], name=f"{node.name}/term{i}")  # fmt: skip
            terms.append(term)
        total = self.g.fresh(f"{node.output}/sum")
        self.g.node("Add", terms, [total], name=f"{node.name}/sum")
        out = self.result(node)
        self.quantize_unit(node, total, out)
        self.clamp(node, out)

    def mul(self, node: Node) -> None:
        """``DequantizeLinear`` of both with scale 1, ``Mul``, ``Mul`` by fp32(M), ``QuantizeLinear(·, 1, z_y)`` [+ ``Clip``]."""
        a: MulAttrs = node.attrs
        self.product(node, "Mul", (a.a_zero_point, a.b_zero_point), self.float_multiplier(a, node))

    def matmul(self, node: Node) -> None:
        """The form of :meth:`mul` with ``MatMul`` (a sum of integer-valued float products) for the product."""
        a: MatmulAttrs = node.attrs
        zero_points = (a.linear.x_zero_point, a.linear.w_zero_point[0])
        self.product(node, "MatMul", zero_points, self.float_multiplier(a.linear, node))

    def product(self, node: Node, op_type: str, zero_points: tuple[int, int], m: npt.NDArray[np.float32]) -> None:
        """``DequantizeLinear`` of both inputs with scale 1 (exact differences), ``op_type`` of them, ``Mul`` by
        ``m``, ``QuantizeLinear(·, 1, z_y)`` [+ ``Clip``]."""
        factors = []
        for i, zero in enumerate(zero_points):
            src = node.inputs[i]
            factor = self.g.fresh(f"{node.output}/factor{i}")
            self.g.node("DequantizeLinear", [self.codes(src), self.unit_scale(),
                        self.zero_point(f"{node.name}/zero_point{i}", zero, self.info(src))], [factor],
                        name=f"{node.name}/factor{i}")  # fmt: skip
            factors.append(factor)
        product = self.g.fresh(f"{node.output}/product")
        self.g.node(op_type, factors, [product], name=f"{node.name}/product")
        scaled = self.g.fresh(f"{node.output}/scaled")
        self.g.node("Mul", [product, self.g.constant(f"{node.name}/multiplier", m)], [scaled], name=f"{node.name}/scale")
        out = self.result(node)
        self.quantize_unit(node, scaled, out)
        self.clamp(node, out)

    def avg_pool2d(self, node: Node) -> None:
        """``QLinearGlobalAveragePool`` where :func:`exact_global_average`, else ``DequantizeLinear(q, 1, z)``, the float
        average (one correctly rounded division of an exact sum), ``QuantizeLinear(·, 1, z)``."""
        a: AvgPool2dAttrs = node.attrs
        x = self.info(node.inputs[0])
        plane = (1, *(int(d) for d in x.shape[1:] if d is not None))
        kernel, stride, padding, _ = a.window.resolve(plane, a.op)
        out = self.result(node)
        src = self.codes(node.inputs[0])
        if a.window.kernel_size is None and exact_global_average(kernel[0] * kernel[1]):
            scale = self.g.constant(f"{node.name}/scale", np.float32(x.scale))
            zp = self.zero_point(f"{node.name}/zero_point", a.zero_point, x)
            self.g.node("QLinearGlobalAveragePool", [src, scale, zp, scale, zp], [out], name=node.name,
                        domain=MS_DOMAIN, channels_last=0)  # fmt: skip
            return
        if kernel[0] * kernel[1] > MAX_AVERAGE_WINDOW:
            raise ValueError(f"node {node.name!r} (avg_pool2d) cannot be expressed in the qoperator form: a window of "
                             f"{kernel[0] * kernel[1]} elements (exact up to {MAX_AVERAGE_WINDOW})")  # fmt: skip
        diff = self.g.fresh(f"{node.output}/centered")
        self.g.node("DequantizeLinear", [src, self.unit_scale(), self.zero_point(f"{node.name}/zero_point", a.zero_point, x)],
                    [diff], name=f"{node.name}/center")  # fmt: skip
        mean = self.g.fresh(f"{node.output}/mean")
        if a.window.kernel_size is None:
            self.g.node("GlobalAveragePool", [diff], [mean], name=f"{node.name}/mean")
        else:
            self.g.node("AveragePool", [diff], [mean], name=f"{node.name}/mean", kernel_shape=list(kernel),
                        strides=list(stride), pads=[padding[0], padding[1], padding[0], padding[1]],
                        count_include_pad=0)  # fmt: skip
        zp = self.zero_point(f"{node.name}/y_zero_point", a.zero_point, x)
        self.g.node("QuantizeLinear", [mean, self.unit_scale(), zp], [out], name=node.name)

    def max_pool2d(self, node: Node) -> None:
        """``MaxPool`` on the codes (global: the plane as kernel, no ``strides`` attribute)."""
        a: MaxPool2dAttrs = node.attrs
        x = self.info(node.inputs[0])
        out = self.result(node)
        if a.window.kernel_size is None:
            plane = [int(d) for d in x.shape[2:] if d is not None]
            self.g.node("MaxPool", [self.codes(node.inputs[0])], [out], name=node.name, kernel_shape=plane)
            return
        ph, pw = a.window.padding
        self.g.node("MaxPool", [self.codes(node.inputs[0])], [out], name=node.name,
                    kernel_shape=list(a.window.kernel_size), strides=list(a.window.stride), pads=[ph, pw, ph, pw],
                    dilations=list(a.window.dilation))  # fmt: skip

    def lut(self, node: Node) -> None:
        """``Cast`` to int32, ``Add`` of ``-qmin`` (+ ``c 2^b`` per channel), ``Gather`` on the table."""
        a: LutAttrs = node.attrs
        x, y = self.info(node.inputs[0]), self.info(node.output)
        index = self.g.fresh(f"{node.output}/index")
        self.g.node("Cast", [self.codes(node.inputs[0])], [index], name=f"{node.name}/index", to=TensorProto.INT32)
        qmin = a.x_range[0]
        offset: npt.NDArray[np.int32] = np.array(-qmin, dtype=np.int32)
        if a.channels > 1:
            rank = len(x.shape)
            offset = (np.arange(a.channels, dtype=np.int32) * (1 << a.x_bits) - qmin).reshape((a.channels,) + (1,) * (rank - 2))
        if offset.ndim or int(offset) != 0:
            shifted = self.g.fresh(f"{node.output}/row_index")
            self.g.node("Add", [index, self.g.constant(f"{node.name}/offset", offset)], [shifted], name=f"{node.name}/offset")
            index = shifted
        table = np.asarray(node.params["table"]).reshape(-1)
        lo, hi = code_range(y.bits, y.signed)
        if table.size and (int(table.min()) < lo or int(table.max()) > hi):
            raise ValueError(f"node {node.name!r} (lut): table values outside the codes of {node.output!r}")
        out = self.result(node)
        self.g.node("Gather", [self.g.constant(f"{node.name}/table", table.astype(code_numpy_dtype(y.signed))), index],
                    [out], name=node.name, axis=0)  # fmt: skip

    def softmax(self, node: Node) -> None:
        """Section 6.3 in int64 ops, the rounding division in float64 (see the module docstring)."""
        a: SoftmaxAttrs = node.attrs
        y = self.info(node.output)
        if a.datapath.rounding != "half_even":
            raise ValueError(f"node {node.name!r} (softmax): rounding {a.datapath.rounding!r}; ONNX's Round is half to even")
        axes = self.g.constant(f"{node.name}/axes", np.array([a.axis], np.int64))

        def step(op: str, inputs: list[str], role: str, **attributes: Any) -> str:
            out = self.g.fresh(f"{node.output}/{role}")
            self.g.node(op, inputs, [out], name=f"{node.name}/{role}", **attributes)
            return out

        q = step("Cast", [self.codes(node.inputs[0])], "wide", to=TensorProto.INT64)
        top = step("ReduceMax", [q, axes], "max", keepdims=1)
        distance = step("Sub", [top, q], "distance")
        table = self.g.constant(f"{node.name}/table", np.array(a.table, np.int64))
        e = step("Gather", [table, distance], "exp", axis=0)
        total = step("ReduceSum", [e, axes], "sum", keepdims=1)
        scaled = step("Mul", [e, self.g.constant(f"{node.name}/output_one", np.array(1 << a.output.bits, np.int64))], "scaled")
        ratio = step("Div", [step("Cast", [scaled], "scaled_f64", to=TensorProto.DOUBLE),
                             step("Cast", [total], "sum_f64", to=TensorProto.DOUBLE)], "ratio")
        rounded = step("Cast", [step("Round", [ratio], "rounded_f64")], "rounded", to=TensorProto.INT64)
        shifted = step("Add", [rounded, self.g.constant(f"{node.name}/y_zero_point", np.array(a.output.zero_point, np.int64))],
                       "shifted")  # fmt: skip
        clamped = step("Clip", [shifted, self.g.constant(f"{node.name}/clip_min", np.array(a.output.lo, np.int64)),
                                self.g.constant(f"{node.name}/clip_max", np.array(a.output.hi, np.int64))], "clamped")  # fmt: skip
        elem = TensorProto.INT8 if y.signed else TensorProto.UINT8
        self.g.node("Cast", [clamped], [self.result(node)], name=node.name, to=elem)

    def layernorm(self, node: Node) -> None:
        """The ``lowbit`` function ``IntegerLayerNorm`` (section 6.5 in int64 ONNX ops, :mod:`quant.export.onnx_functions`)
        with constant ``gamma - z_g`` (ones without gamma), bias (zeros without), ``E``, ``fp32(M)``, ``z_y``
        [+ ``Clip``]."""
        a: LayerNormAttrs = node.attrs
        y = self.info(node.output)
        if a.datapath.rounding != "half_even":
            raise ValueError(f"node {node.name!r} (layernorm): rounding {a.datapath.rounding!r}; the function rounds half to even")
        gamma, bias = node.params.get("gamma"), node.params.get("bias")
        g = np.ones(a.length, np.int64) if gamma is None else np.asarray(gamma).astype(np.int64) - a.gamma_zero_point
        b = np.zeros(a.length, np.int64) if bias is None else np.asarray(bias).astype(np.int64)
        self.g.function(integer_layernorm_function)
        inputs = [self.codes(node.inputs[0]), self.g.constant(f"{node.name}/gamma", g), self.g.constant(f"{node.name}/bias", b),
                  self.g.constant(f"{node.name}/eps_term", np.array(a.eps_term, np.int64)),
                  self.g.constant(f"{node.name}/multiplier", self.float_multiplier(a, node).reshape(-1)),
                  self.zero_point(f"{node.name}/y_zero_point", y.zero_point, y)]  # fmt: skip
        out = self.result(node)
        self.g.node(INTEGER_LAYERNORM, inputs, [out], name=node.name, domain=LOWBIT_DOMAIN)
        self.clamp(node, out)

    def slice(self, node: Node) -> None:
        """``Slice`` of the codes along ``axis``."""
        a: SliceAttrs = node.attrs
        inputs = [self.codes(node.inputs[0])] + [self.g.constant(f"{node.name}/{k}", np.array([v], np.int64))
                                                 for k, v in (("starts", a.start), ("ends", a.stop), ("axes", a.axis),
                                                              ("steps", a.step))]  # fmt: skip
        self.g.node("Slice", inputs, [self.result(node)], name=node.name)

    def constant(self, node: Node) -> None:
        """``Expand`` of the codes to the batch of the node's input (:meth:`GraphBuilder.batch_constant`)."""
        self.g.batch_constant(node.name, np.asarray(node.params["codes"]), self.codes(node.inputs[0]), self.result(node))

    def reshape(self, node: Node) -> None:
        """``Reshape`` to ``[0, *shape]`` (0 keeps the batch)."""
        a: ReshapeAttrs = node.attrs
        shape = self.g.constant(f"{node.name}/shape", np.array([0, *a.shape], np.int64))
        self.g.node("Reshape", [self.codes(node.inputs[0]), shape], [self.result(node)], name=node.name)

    def permute(self, node: Node) -> None:
        """``Transpose`` by ``dims``."""
        a: PermuteAttrs = node.attrs
        self.g.node("Transpose", [self.codes(node.inputs[0])], [self.result(node)], name=node.name, perm=list(a.dims))

    def concat(self, node: Node) -> None:
        """``Concat`` along ``axis``."""
        a: ConcatAttrs = node.attrs
        self.g.node("Concat", [self.codes(t) for t in node.inputs], [self.result(node)], name=node.name, axis=a.axis)

    def pad(self, node: Node) -> None:
        """``Pad`` (constant) with the code ``value``."""
        a: PadAttrs = node.attrs
        x = self.info(node.inputs[0])
        self.g.node("Pad", [self.codes(node.inputs[0]), self.g.constant(f"{node.name}/pads", onnx_pads(a, len(x.shape), node)),
                    self.zero_point(f"{node.name}/value", a.value, x)], [self.result(node)], name=node.name,
                    mode="constant")  # fmt: skip


def onnx_pads(attrs: PadAttrs, rank: int, node: Optional[Node] = None) -> npt.NDArray[np.int64]:
    """``attrs.pads`` (``torch.nn.functional.pad`` order: last dimension first) as ONNX's
    ``[begin_0, ..., begin_{r-1}, end_0, ..., end_{r-1}]``; ``ValueError`` if they reach the batch.

    >>> onnx_pads(PadAttrs.build(pads=[1, 1, 2, 0], value=0), 4).tolist()
    [0, 0, 2, 1, 0, 0, 0, 1]
    """
    pairs = len(attrs.pads) // 2
    if pairs >= rank:
        raise ValueError(f"node {getattr(node, 'name', '?')!r} (pad): pads={list(attrs.pads)} reach the batch dimension")
    begin, end = [0] * rank, [0] * rank
    for i in range(pairs):
        begin[rank - 1 - i], end[rank - 1 - i] = attrs.pads[2 * i], attrs.pads[2 * i + 1]
    return np.array(begin + end, np.int64)


#: The program ops this form writes, by name.
QOPERATOR_OPS: dict[str, Callable[[_Writer, Node], None]] = {
    "conv2d": _Writer.conv2d, "linear": _Writer.linear, "requantize": _Writer.requantize, "add": _Writer.add,
    "mul": _Writer.mul, "matmul": _Writer.matmul, "avg_pool2d": _Writer.avg_pool2d, "max_pool2d": _Writer.max_pool2d, "lut": _Writer.lut,
    "softmax": _Writer.softmax, "layernorm": _Writer.layernorm, "constant": _Writer.constant, "slice": _Writer.slice,
    "reshape": _Writer.reshape, "permute": _Writer.permute, "concat": _Writer.concat,
    "pad": _Writer.pad,
}  # fmt: skip

def check_qoperator(program: IntegerProgram) -> None:
    """``ValueError`` naming the first thing of ``program`` the qoperator form cannot express (see module doc)."""
    problems = qoperator_datapath_problems(program.datapath)
    if problems:
        raise ValueError(f"export_onnx(form='qoperator'): datapath {program.datapath.name!r} is not ONNX Runtime's "
                         f"arithmetic (the mlas preset): {'; '.join(problems)}")  # fmt: skip
    for node in program.nodes:
        if node.op not in QOPERATOR_OPS:
            why = "custom ops have no ONNX counterpart" if "." in node.op else "no ONNX form"
            raise ValueError(f"export_onnx(form='qoperator'): node {node.name!r} ({node.op}) cannot be expressed: {why}")
    for info in program.tensors.values():
        if info.bits != 8 or code_elem_type(info.bits, info.signed) is None:
            raise ValueError(f"export_onnx(form='qoperator'): tensor {info.name!r} has {info.bits}-bit codes; "
                             "the qoperator form holds 8-bit codes")  # fmt: skip


def qoperator_min_opset(program: IntegerProgram) -> int:
    """The first opset holding the ops ``program`` needs: 13 (per-axis DequantizeLinear), 15 with a layernorm
    (``Shape`` with ``start``), 18 with a softmax (``ReduceMax`` takes its axes as an input)."""
    ops = {n.op for n in program.nodes}
    return 18 if "softmax" in ops else (15 if "layernorm" in ops else QOPERATOR_MIN_OPSET)


def build_qoperator(program: IntegerProgram, g: GraphBuilder) -> dict[str, str]:
    """Write ``program``'s inputs (``QuantizeLinear`` of the float input), nodes and output codes into ``g``;
    returns the ONNX tensor holding each program tensor's codes. ``ValueError`` as :func:`check_qoperator`."""
    check_qoperator(program)
    w = _Writer(program, g)
    for name in program.inputs:
        info = program.tensors[name]
        codes = g.fresh(f"{name}_quantized")
        scale = g.constant(f"{name}/scale", np.float32(info.scale))
        zp = w.zero_point(f"{name}/zero_point", info.zero_point, info)
        g.node("QuantizeLinear", [name, scale, zp], [codes], name=f"{name}/quantize")
        w.names[name] = codes
    for node in program.nodes:
        try:
            QOPERATOR_OPS[node.op](w, node)
        except ValueError as err:
            text = str(err)
            raise ValueError(text if text.startswith("export_onnx") else f"export_onnx(form='qoperator'): {text}") from None
    return w.names
