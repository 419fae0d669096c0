"""``import_onnx``: the :class:`~quant.ir.program.IntegerProgram` of a QOperator ONNX file.

It reads the ``qoperator`` form :func:`quant.export.export_onnx` writes, and what ONNX Runtime's static
quantizer (``onnxruntime.quantization.quantize_static`` with ``QuantFormat.QOperator``) produces for small
CNNs. Each group of ONNX nodes becomes one program node, derived from the graph alone:

* ``QuantizeLinear`` of a float graph input: the program's input, named after the graph input;
* ``QLinearConv``: conv2d with the multiplier ONNX Runtime computes, ``fp32(fp32(x_scale w_scale) / y_scale)``
  per output channel; ``QGemm`` (com.microsoft, ``transA = 0``, ``alpha = beta = 1``) and ``QLinearMatMul``:
  linear, the same way (``Reshape`` to rows around a ``QGemm`` of a higher-rank input is one linear);
  a ``Clip`` right after a requantizing op is its fused clamp;
* ``DequantizeLinear`` then ``QuantizeLinear`` with scale 1: requantize; two ``DequantizeLinear``, ``Add``,
  ``QuantizeLinear`` with scale 1: add; two ``DequantizeLinear`` of scale 1, ``Mul``, ``Mul`` by a constant,
  ``QuantizeLinear`` with scale 1: mul, and with ``MatMul`` for the first ``Mul``: matmul;
  ``DequantizeLinear`` of scale 1, ``AveragePool`` /
  ``GlobalAveragePool``, ``QuantizeLinear`` with scale 1: avg_pool2d; ``Cast`` to int32, ``Add`` of
  ``-qmin`` (and ``c * 256`` per channel), ``Gather`` of an int8/uint8 table: lut; the int64 chain of
  :mod:`quant.export.onnx_qoperator` (``ReduceMax``, ``Sub``, ``Gather``, ``ReduceSum``, ``Mul``, a float64
  ``Div`` and ``Round``, ``Add``, ``Clip``, ``Cast``): softmax;
* ``QLinearAdd`` / ``QLinearMul`` (com.microsoft): add / mul with ``m_a = fp32(s_a / s_y)``,
  ``m_b = fp32(s_b / s_y)`` (mul: ``fp32(fp32(s_a s_b) / s_y)``). ONNX Runtime's own kernels for these
  compute in float with fused multiply-adds, so the program can differ from ONNX Runtime by one code at
  a rounding boundary;
* ``QLinearGlobalAveragePool`` (com.microsoft): avg_pool2d when input and output qparams are equal and the
  plane size makes the two computations one (:func:`~quant.export.onnx_qoperator.exact_global_average`),
  otherwise a depthwise conv2d of ones over the plane with ONNX Runtime's factor
  ``fp32(x_scale / fp32(y_scale n))``, which is ONNX Runtime's computation exactly;
  ``QLinearAveragePool`` with equal qparams: avg_pool2d (ONNX Runtime adds the zero point before rounding,
  so ties can differ);
* ``lowbit.IntegerLayerNorm`` (the model-local function of :mod:`quant.export.onnx_functions`, its body
  checked against the one written for the file's opset): layernorm, gamma ones and a zero bias read as none;
* ``MaxPool`` (global when it has no ``strides`` and its kernel is the plane), ``Reshape`` (first entry 0 or
  -1: the batch), ``Flatten`` (axis 1), ``Transpose`` (batch first), ``Concat``, ``Pad`` (constant),
  ``Identity``;
* ``Shape`` (the batch), ``Concat`` with a shape and ``Expand`` of an int8/uint8 initializer: constant;
  ``Slice`` of codes along one axis: slice;
* ``DequantizeLinear`` of output codes: the program's output is those codes.

Any other op is refused with a ``ValueError`` naming it (e.g. ``Conv``: a float op, the QDQ form). The
datapath is the one in the file's metadata (``lowbit.datapath_knobs``), else ``mlas`` for uint8
activations and ``mlas`` with int8 activations (named ``mlas_s8``) for int8 ones, ONNX Runtime's
quantizer's default. Tensor scales are those of ``lowbit.tensors`` when the file has them (the
qoperator form's integer ops carry unit scales), else the producing op's output scale; the record
arguments of ``lowbit.nodes`` are taken where they describe the computation the graph does (the float64
real multiplier of a float32 one, one weight zero point for many equal ones, the padding as written),
and a file whose metadata contradicts its graph is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper

from quant.contract.codes import code_range
from quant.contract.datapath import PRESETS, Datapath
from quant.export.onnx_format import (
    DATAPATH_KEY,
    FORMAT_KEY,
    KNOBS_KEY,
    MS_DOMAIN,
    NODES_KEY,
    ORIGINS_KEY,
    TENSORS_KEY,
    qoperator_datapath_problems,
)
from quant.export.onnx_functions import INTEGER_LAYERNORM, LOWBIT_DOMAIN, integer_layernorm_function
from quant.export.onnx_qoperator import exact_global_average, onnx_pads
from quant.ir.ops import PadAttrs, op_def
from quant.ir.program import IntegerProgram, Node, TensorInfo

__all__ = ["import_onnx", "program_from_model", "MLAS_S8"]

#: The datapath of a file with int8 activations and no metadata: ``mlas`` with signed activations.
MLAS_S8: Datapath = PRESETS["mlas"].with_(name="mlas_s8", a_signed=True)

Shape = tuple[Optional[int], ...]
F32 = npt.NDArray[np.float32]


# ---------------------------------------------------------------------- what an ONNX tensor stands for
@dataclass(frozen=True)
class _Codes:
    """The codes of the program tensor ``tensor``."""

    tensor: str


@dataclass(frozen=True)
class _FloatInput:
    """A float graph input."""

    name: str


@dataclass(frozen=True)
class _Dequant:
    """``fp32(codes - zero_point) * scale`` (per ``axis`` when ``scale`` is 1-D)."""

    tensor: str
    scale: F32
    zero_point: npt.NDArray[np.int64]
    axis: int


@dataclass(frozen=True)
class _Sum:
    a: _Dequant
    b: _Dequant


@dataclass(frozen=True)
class _Product:
    """``a * b`` (``op`` mul) or ``a @ b`` (``op`` matmul) of two scale-1 dequantized tensors."""

    a: _Dequant
    b: _Dequant
    op: str = "mul"


@dataclass(frozen=True)
class _Scaled:
    product: _Product
    multiplier: F32


@dataclass(frozen=True)
class _Mean:
    source: _Dequant
    window: dict[str, Any]


@dataclass(frozen=True)
class _Index:
    """int32 ``codes + offset`` (``offset`` scalar, or broadcast along axis 1)."""

    tensor: str
    offset: npt.NDArray[np.int64]


@dataclass(frozen=True)
class _Softmax:
    """A stage of the softmax chain over ``axis`` of ``tensor``'s codes: ``wide`` (int64 codes), ``max``,
    ``distance``, ``exp`` (the table's entries), ``sum``, ``scaled`` (``E 2^k``), ``scaled_f64``, ``sum_f64``,
    ``ratio``, ``rounded_f64``, ``rounded``, ``shifted`` (``+ z_y``), ``clamped``."""

    stage: str
    tensor: str
    axis: Optional[int] = None
    table: tuple[int, ...] = ()
    bits: int = 0
    zero_point: int = 0
    bounds: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class _Batch:
    """``Shape(tensor)[0:1]``: the batch of ``tensor``'s codes; with ``dims``, ``Concat`` of it and ``dims``."""

    tensor: str
    dims: Optional[tuple[int, ...]] = None


@dataclass(frozen=True)
class _Rows:
    """The codes of ``tensor`` reshaped to rows ``(-1, K)`` for a ``QGemm``."""

    tensor: str


@dataclass
class _Record:
    """One program node being built; ``rows`` while its output is a ``QGemm``'s rows not yet reshaped back."""

    name: str
    op: str
    inputs: tuple[str, ...]
    output: str
    args: dict[str, Any]
    params: dict[str, Any]
    signed: bool
    stated_scale: Optional[float]
    like: Optional[str] = None  # the output keeps this input's qparams
    rows: bool = False
    attrs: Any = None
    shape: Shape = ()


Symbol = Union[_Codes, _FloatInput, _Dequant, _Sum, _Product, _Scaled, _Mean, _Index, _Softmax, _Batch, _Rows, _Record]


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class _Importer:
    def __init__(self, model: onnx.ModelProto, source: str) -> None:
        self.model = model
        self.source = source
        self.meta = {p.key: p.value for p in model.metadata_props}
        if self.meta.get(FORMAT_KEY) == "qdq":
            raise ValueError(f"import_onnx({source}): a qdq file; its float ops between QuantizeLinear and "
                             "DequantizeLinear have no integer definition, only the qoperator form is imported")  # fmt: skip
        self.tensor_meta: dict[str, Any] = json.loads(self.meta.get(TENSORS_KEY, "{}"))
        self.node_meta: dict[str, Any] = json.loads(self.meta.get(NODES_KEY, "{}"))
        self.origins: dict[str, str] = json.loads(self.meta.get(ORIGINS_KEY, "{}"))
        self.datapath: Optional[Datapath] = None
        if KNOBS_KEY in self.meta:
            self.datapath = Datapath(**json.loads(self.meta[KNOBS_KEY]))
            problems = qoperator_datapath_problems(self.datapath)
            if problems or self.meta.get(DATAPATH_KEY, self.datapath.name) != self.datapath.name:
                raise ValueError(f"import_onnx({source}): the metadata's datapath {self.datapath.name!r} is not what a "
                                 f"qoperator graph computes: {'; '.join(problems) or 'preset name and knobs differ'}")  # fmt: skip
        graph = model.graph
        self.consts: dict[str, npt.NDArray[Any]] = {t.name: np.array(numpy_helper.to_array(t)) for t in graph.initializer}
        self.uses: dict[str, int] = {}
        for n in graph.node:
            for t in n.input:
                self.uses[t] = self.uses.get(t, 0) + 1
        for o in graph.output:
            self.uses[o.name] = self.uses.get(o.name, 0) + 1
        self.symbols: dict[str, Symbol] = {}
        self.input_shapes: dict[str, Shape] = {}
        for vi in graph.input:
            if vi.name in self.consts:
                continue
            t = vi.type.tensor_type
            if t.elem_type != onnx.TensorProto.FLOAT:
                raise ValueError(f"import_onnx({source}): graph input {vi.name!r} is not float; the program quantizes "
                                 "float inputs with QuantizeLinear")  # fmt: skip
            dims = t.shape.dim
            shape: list[Optional[int]] = [None]
            for d in dims[1:]:
                if not d.HasField("dim_value"):
                    raise ValueError(f"import_onnx({source}): graph input {vi.name!r} has a dimension without a size")
                shape.append(int(d.dim_value))
            self.input_shapes[vi.name] = tuple(shape)
            self.symbols[vi.name] = _FloatInput(vi.name)
        self.inputs: list[str] = []
        self.input_infos: dict[str, TensorInfo] = {}
        self.records: list[_Record] = []
        self.by_output: dict[str, _Record] = {}
        self._auto_names: set[str] = set()

    # ------------------------------------------------------------------ helpers
    def fail(self, node: onnx.NodeProto, why: str) -> ValueError:
        label = f"{node.name!r} ({node.op_type})" if node.name else f"({node.op_type})"
        return ValueError(f"import_onnx({self.source}): node {label}: {why}")

    def const(self, node: onnx.NodeProto, index: int, what: str) -> npt.NDArray[Any]:
        name = node.input[index] if index < len(node.input) else ""
        if name not in self.consts:
            raise self.fail(node, f"{what} ({name or 'missing'}) must be an initializer")
        return self.consts[name]

    def optional_const(self, node: onnx.NodeProto, index: int, what: str) -> Optional[npt.NDArray[Any]]:
        if index >= len(node.input) or not node.input[index]:
            return None
        return self.const(node, index, what)

    def sym(self, node: onnx.NodeProto, index: int) -> Symbol:
        name = node.input[index]
        if name in self.symbols:
            return self.symbols[name]
        if name in self.consts:
            raise self.fail(node, f"input {name!r} is a constant; the program's ops read tensors of codes")
        raise self.fail(node, f"input {name!r} is not produced by an op this importer reads")

    def codes(self, node: onnx.NodeProto, index: int) -> str:
        s = self.sym(node, index)
        if isinstance(s, _Codes):
            return s.tensor
        if isinstance(s, _Rows):
            raise self.fail(node, "reads codes reshaped to rows across the batch, which only a QGemm may read")
        raise self.fail(node, f"input {node.input[index]!r} is not a tensor of codes (it is {type(s).__name__.strip('_')})")

    def zero_point(self, node: onnx.NodeProto, index: int, what: str) -> tuple[int, bool]:
        """A scalar zero point and whether its type is signed."""
        z = self.const(node, index, what)
        if z.dtype not in (np.int8, np.uint8):
            raise self.fail(node, f"{what} has type {z.dtype}; codes are int8 or uint8")
        if z.size != 1:
            raise self.fail(node, f"{what} must be one value")
        return int(z.reshape(-1)[0]), z.dtype == np.int8

    def scale(self, node: onnx.NodeProto, index: int, what: str) -> np.float32:
        s = self.const(node, index, what)
        if s.dtype != np.float32 or s.size != 1:
            raise self.fail(node, f"{what} must be one float32")
        return np.float32(s.reshape(-1)[0])

    def shape_of(self, tensor: str) -> Shape:
        if tensor in self.input_infos:
            return self.input_infos[tensor].shape
        return self.by_output[tensor].shape

    def signed_of(self, tensor: str) -> bool:
        if tensor in self.input_infos:
            return self.input_infos[tensor].signed
        return self.by_output[tensor].signed

    def dp(self, node: onnx.NodeProto) -> Datapath:
        if self.datapath is None:
            raise self.fail(node, "comes before the QuantizeLinear of a float graph input")
        return self.datapath

    def node_name(self, node: onnx.NodeProto, op: str) -> str:
        name = node.name or f"{op}_{len(self.records)}"
        while name in self._auto_names:
            name = f"{name}_"
        self._auto_names.add(name)
        return name

    # ------------------------------------------------------------------ records
    def emit(self, node: onnx.NodeProto, op: str, inputs: tuple[str, ...], args: dict[str, Any],
             params: Optional[dict[str, Any]] = None, *, signed: bool, stated_scale: Optional[float] = None,
             like: Optional[str] = None, rows: bool = False) -> _Record:  # fmt: skip
        name = self.node_name(node, op)
        r = _Record(name, op, inputs, node.output[0], args, params or {}, signed, stated_scale, like, rows)
        self.build(node, r)
        self.records.append(r)
        self.by_output[r.output] = r
        self.symbols[node.output[0]] = r if r.rows else _Codes(r.output)
        return r

    def build(self, node: onnx.NodeProto, r: _Record, args: Optional[dict[str, Any]] = None) -> None:
        """Build the record from the graph's arguments (or ``args``) and compute its output shape."""
        try:
            r.attrs = op_def(r.op).build(dict(r.args if args is None else args), self.dp(node))
        except (TypeError, ValueError) as err:
            raise self.fail(node, f"as {r.op}: {err}") from None
        x = self.shape_of(r.inputs[0])
        per_sample = (1, *(int(d) for d in x[1:] if d is not None))
        a = r.attrs
        try:
            if r.op in ("conv2d", "avg_pool2d", "max_pool2d"):
                out = a.output_shape(per_sample)
                r.shape = (None, *out[1:])
            elif r.op == "linear":
                r.shape = (*x[:-1], a.w_shape[0])
            elif r.op == "matmul":
                r.shape = (*x[:-1], a.n)
            elif r.op == "layernorm":
                a.rows(per_sample)
                r.shape = x
            elif r.op == "constant":
                r.shape = (None, *a.shape)
            elif r.op == "slice":
                r.shape = a.output_shape(x)
            elif r.op == "reshape":
                size = math.prod(per_sample)
                dims = list(a.shape)
                if -1 in dims:
                    known = math.prod(d for d in dims if d != -1)
                    if known == 0 or size % known:
                        raise ValueError(f"cannot reshape {x} to (N, {dims})")
                    dims[dims.index(-1)] = size // known
                if math.prod(dims) != size:
                    raise ValueError(f"cannot reshape {x} to (N, {dims})")
                r.shape = (None, *dims)
            elif r.op == "permute":
                r.shape = tuple(x[d] for d in a.dims)
            elif r.op == "concat":
                shapes = [self.shape_of(t) for t in r.inputs]
                ax = a.axis
                if any(len(s) != len(x) or s[:ax] != x[:ax] or s[ax + 1:] != x[ax + 1:] for s in shapes):
                    raise ValueError(f"inputs of shapes {shapes} do not join along axis {ax}")
                r.shape = (*x[:ax], sum(int(s[ax] or 0) for s in shapes), *x[ax + 1:])
            elif r.op == "pad":
                pads = onnx_pads(a, len(x))
                rank = len(x)
                r.shape = (None, *(int(x[d] or 0) + int(pads[d] + pads[rank + d]) for d in range(1, rank)))
            elif r.op == "mul":
                a.broadcast(per_sample, (1, *(int(d) for d in self.shape_of(r.inputs[1])[1:] if d is not None)))
                r.shape = x
            else:
                r.shape = x
        except ValueError as err:
            raise self.fail(node, f"as {r.op}: {err}") from None
        if r.op == "lut":
            a.inner(per_sample)

    def reconcile(self, node: onnx.NodeProto, r: _Record) -> dict[str, Any]:
        """The metadata's arguments of node ``r.name`` when they describe the graph's computation, else the graph's;
        ``ValueError`` when the metadata names this node with another op or other arithmetic."""
        entry = self.node_meta.get(r.name)
        if entry is None:
            return r.args
        meta = dict(entry.get("args", {}))
        if entry.get("op") != r.op:
            raise self.fail(node, f"the metadata records node {r.name!r} as {entry.get('op')!r}, the graph computes {r.op}")
        for key in set(r.args) | set(meta):
            g, m = r.args.get(key), meta.get(key)
            if key in ("multiplier", "a_multiplier", "b_multiplier"):
                g32 = np.asarray(g, np.float32).reshape(-1)
                same = m is not None and np.array_equal(g32, np.asarray(m, np.float64).astype(np.float32).reshape(-1))
            elif key == "w_zero_point":
                same = g is not None and m is not None and set(np.asarray(g).reshape(-1).tolist()) == set(
                    np.asarray(m).reshape(-1).tolist())
            elif key == "pads":
                rank = len(self.shape_of(r.inputs[0]))
                same = m is not None and np.array_equal(onnx_pads(PadAttrs.build(pads=g or [], value=0), rank),
                                                        onnx_pads(PadAttrs.build(pads=m, value=0), rank))  # fmt: skip
            else:
                same = _plain(g) == _plain(m)
            if not same:
                raise self.fail(node, f"the metadata's {key}={m!r} of node {r.name!r} contradicts the graph's {g!r}")
        return meta

    # ------------------------------------------------------------------ ops
    def quantize_linear(self, node: onnx.NodeProto) -> None:
        """The program input (of a float graph input), or the requantize / add / mul / avg_pool2d whose float value
        ``QuantizeLinear`` with scale 1 rounds."""
        src = self.sym(node, 0)
        z, signed = self.zero_point(node, 2, "y_zero_point")
        s = self.scale(node, 1, "y_scale")
        if isinstance(src, _FloatInput):
            name = src.name
            if name in self.input_infos:
                raise self.fail(node, f"graph input {name!r} is quantized twice")
            if self.datapath is None:
                self.datapath = MLAS_S8 if signed else PRESETS["mlas"]
            self.inputs.append(name)
            self.input_infos[name] = TensorInfo(name, self.input_shapes[name], 8, signed, self.tensor_scale(node, name, float(s)),
                                                self.tensor_zero_point(node, name, z))  # fmt: skip
            self.symbols[node.output[0]] = _Codes(name)
            return
        if s != 1.0:
            raise self.fail(node, f"QuantizeLinear with scale {float(s)!r} of a float value: a float round trip the "
                                  "contract does not define (the qoperator form quantizes results with scale 1)")  # fmt: skip
        out = dict(y_zero_point=z, y_bits=8, y_signed=signed)
        if isinstance(src, _Dequant):
            zs = set(src.zero_point.reshape(-1).tolist())
            if len(zs) != 1:
                raise self.fail(node, "a requantize has one input zero point")
            per_axis = src.scale.ndim == 1
            self.emit(node, "requantize", (src.tensor,), dict(in_zero_point=zs.pop(), multiplier=src.scale,
                      axis=src.axis if per_axis else None, **out), signed=signed)  # fmt: skip
        elif isinstance(src, _Sum):
            terms = (src.a, src.b)
            for t in terms:
                if t.scale.size != 1 or t.zero_point.size != 1:
                    raise self.fail(node, "an add takes per-tensor multipliers")
            self.emit(node, "add", (src.a.tensor, src.b.tensor), dict(
                a_zero_point=int(src.a.zero_point.reshape(-1)[0]), b_zero_point=int(src.b.zero_point.reshape(-1)[0]),
                a_multiplier=float(src.a.scale.reshape(-1)[0]), b_multiplier=float(src.b.scale.reshape(-1)[0]),
                y_min=code_range(8, signed)[0], y_max=code_range(8, signed)[1], **out), signed=signed)  # fmt: skip
        elif isinstance(src, _Scaled):
            p = src.product
            dims = {}
            if p.op == "matmul":
                dims = dict(k=int(self.shape_of(p.a.tensor)[-1] or 0), n=int(self.shape_of(p.b.tensor)[-1] or 0))
            self.emit(node, p.op, (p.a.tensor, p.b.tensor), dict(
                **dims, a_zero_point=int(p.a.zero_point.reshape(-1)[0]), b_zero_point=int(p.b.zero_point.reshape(-1)[0]),
                multiplier=src.multiplier, y_min=code_range(8, signed)[0], y_max=code_range(8, signed)[1], **out),
                signed=signed)  # fmt: skip
        elif isinstance(src, _Mean):
            z_in = int(src.source.zero_point.reshape(-1)[0])
            if z_in != z:
                raise self.fail(node, f"an average keeps its input's zero point {z_in}, this writes {z}")
            self.emit(node, "avg_pool2d", (src.source.tensor,), dict(**src.window, zero_point=z), signed=signed,
                      like=src.source.tensor)  # fmt: skip
        else:
            raise self.fail(node, f"QuantizeLinear of {type(src).__name__.strip('_')} is outside the qoperator subset")

    def dequantize_linear(self, node: onnx.NodeProto) -> None:
        """``fp32(q - z) * scale`` of codes (refused for an initializer: a QDQ weight)."""
        src = node.input[0]
        if src in self.consts:
            raise self.fail(node, f"DequantizeLinear of the initializer {src!r}: weights as floats make a QDQ graph; "
                                  "import_onnx reads the qoperator form")  # fmt: skip
        tensor = self.codes(node, 0)
        scale = self.const(node, 1, "x_scale")
        zp = self.optional_const(node, 2, "x_zero_point")
        if scale.dtype != np.float32:
            raise self.fail(node, "x_scale must be float32")
        zero = np.zeros(scale.shape, np.int64) if zp is None else zp.astype(np.int64)
        axis = int(_attr(node, "axis", 1))
        self.symbols[node.output[0]] = _Dequant(tensor, scale.astype(np.float32), zero, axis)

    def add(self, node: onnx.NodeProto) -> None:
        """A sum of two dequantized tensors, a lut index plus its offset, or a softmax's ``+ z_y``."""
        a = self.symbols.get(node.input[0])
        if isinstance(a, _Softmax) and a.stage == "rounded":
            z = self.const(node, 1, "the output zero point")
            self.symbols[node.output[0]] = self.softmax_step(node, a, "shifted", zero_point=int(z.reshape(-1)[0]))
            return
        if isinstance(a, _Index):
            offset = self.const(node, 1, "the index offset")
            if offset.dtype != np.int32:
                raise self.fail(node, "an index offset is int32")
            self.symbols[node.output[0]] = _Index(a.tensor, a.offset + offset.astype(np.int64))
            return
        b = self.symbols.get(node.input[1])
        if isinstance(a, _Dequant) and isinstance(b, _Dequant):
            self.symbols[node.output[0]] = _Sum(a, b)
            return
        raise self.fail(node, "Add of other than two DequantizeLinear (an add) or an index and its offset (a lut)")

    def mul(self, node: onnx.NodeProto) -> None:
        """A product of two scale-1 dequantized tensors, that product by its multiplier, or a softmax's ``E 2^k``."""
        a = self.symbols.get(node.input[0])
        if isinstance(a, _Softmax) and a.stage == "exp":
            one = int(self.const(node, 1, "2^k").reshape(-1)[0])
            if one < 1 or one & (one - 1):
                raise self.fail(node, f"a softmax scales by a power of two 2^k, not {one}")
            self.symbols[node.output[0]] = self.softmax_step(node, a, "scaled", bits=one.bit_length() - 1)
            return
        if isinstance(a, _Product):
            m = self.const(node, 1, "the multiplier")
            if m.dtype != np.float32 or m.size != 1:
                raise self.fail(node, "a mul's multiplier is one float32")
            self.symbols[node.output[0]] = _Scaled(a, m.astype(np.float32).reshape(()))
            return
        b = self.symbols.get(node.input[1])
        if isinstance(a, _Dequant) and isinstance(b, _Dequant) and all(
                d.scale.size == 1 and float(d.scale.reshape(-1)[0]) == 1.0 for d in (a, b)):
            self.symbols[node.output[0]] = _Product(a, b)
            return
        raise self.fail(node, "Mul of other than two DequantizeLinear of scale 1 (a mul's product) or a product and "
                              "its multiplier")  # fmt: skip

    def matmul(self, node: onnx.NodeProto) -> None:
        """The product of a matmul: ``MatMul`` of two scale-1 dequantized tensors (then ``Mul`` by its multiplier)."""
        a, b = self.symbols.get(node.input[0]), self.symbols.get(node.input[1])
        if isinstance(a, _Dequant) and isinstance(b, _Dequant) and all(
                d.scale.size == 1 and float(d.scale.reshape(-1)[0]) == 1.0 for d in (a, b)):
            self.symbols[node.output[0]] = _Product(a, b, "matmul")
            return
        raise self.fail(node, "MatMul of other than two DequantizeLinear of scale 1 (a matmul's product); a "
                              "constant operand is QLinearMatMul")  # fmt: skip

    def integer_layernorm(self, node: onnx.NodeProto) -> None:
        """layernorm: the ``lowbit.IntegerLayerNorm`` function (its body the one :mod:`quant.export.onnx_functions`
        writes) of codes, with constant ``gamma - z_g``, bias, ``E``, float32 multiplier(s) and ``z_y``."""
        opset = next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 0)
        body = next((f for f in self.model.functions if (f.domain, f.name) == (LOWBIT_DOMAIN, INTEGER_LAYERNORM)), None)
        if body is None or body.SerializeToString() != integer_layernorm_function(opset).SerializeToString():
            raise self.fail(node, f"the model's {LOWBIT_DOMAIN}.{INTEGER_LAYERNORM} function is not section 6.5's (the "
                                  "body quant.export writes)")  # fmt: skip
        x = self.codes(node, 0)
        factors, bias, eps, m = (self.const(node, i, what) for i, what in
                                 ((1, "gamma - z_g"), (2, "the bias"), (3, "E"), (4, "the multiplier")))  # fmt: skip
        if any(a.dtype != np.int64 for a in (factors, bias, eps)) or m.dtype != np.float32:
            raise self.fail(node, "gamma - z_g, the bias and E are int64, the multiplier float32")
        length = factors.size
        if factors.shape != (length,) or bias.shape != (length,) or m.size not in (1, length) or eps.size != 1:
            raise self.fail(node, f"gamma - z_g and the bias hold one value per element of the row, the multiplier one "
                                  f"or as many ({length}), E one")  # fmt: skip
        z, signed = self.zero_point(node, 5, "y_zero_point")
        entry = self.node_meta.get(node.name, {})
        z_g = int(entry.get("args", {}).get("gamma_zero_point", 0)) if entry.get("op") == "layernorm" else 0
        gamma = factors + z_g
        params: dict[str, Any] = {}
        if not (z_g == 0 and bool(np.all(factors == 1))):  # ones: no gamma (the program's canonical form)
            if int(gamma.min()) < -128 or int(gamma.max()) > 127:
                raise self.fail(node, f"gamma codes (gamma - z_g plus z_g = {z_g}) outside int8")
            params["gamma"] = gamma.astype(np.int8)
        if bool(np.any(bias != 0)):  # zeros: no bias
            if int(bias.min()) < -(1 << 31) or int(bias.max()) > (1 << 31) - 1:
                raise self.fail(node, "the bias must fit int32")
            params["bias"] = bias.astype(np.int32)
        lo, hi = code_range(8, signed)
        multiplier = float(m.reshape(-1)[0]) if m.size == 1 else [float(v) for v in m.reshape(-1)]
        self.emit(node, "layernorm", (x,), dict(length=length, x_bits=8, x_signed=self.signed_of(x),
                  eps_term=int(eps.reshape(-1)[0]), multiplier=multiplier, gamma_zero_point=z_g, y_zero_point=z,
                  y_bits=8, y_signed=signed, y_min=lo, y_max=hi), params, signed=signed)  # fmt: skip

    def _window(self, node: onnx.NodeProto, default_kernel: Optional[list[int]] = None) -> dict[str, Any]:
        if _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or _attr(node, "ceil_mode", 0):
            raise self.fail(node, "auto_pad and ceil_mode are not supported")
        kernel = list(_attr(node, "kernel_shape", default_kernel or []))
        if len(kernel) != 2:
            raise self.fail(node, f"kernel_shape={kernel}: 2-D windows only")
        pads = list(_attr(node, "pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:]:
            raise self.fail(node, f"pads={pads}: padding must be symmetric")
        strides = _attr(node, "strides")
        return {"kernel_size": kernel, "stride": list(strides) if strides is not None else [1, 1], "padding": pads[:2],
                "has_strides": strides is not None}  # fmt: skip

    def average_pool(self, node: onnx.NodeProto) -> None:
        """The float average of a scale-1 dequantized tensor (an avg_pool2d once ``QuantizeLinear`` rounds it)."""
        src = self.symbols.get(node.input[0])
        if not isinstance(src, _Dequant) or src.scale.size != 1 or float(src.scale.reshape(-1)[0]) != 1.0:
            raise self.fail(node, "AveragePool of other than a DequantizeLinear of scale 1 (an avg_pool2d)")
        if _attr(node, "count_include_pad", 0) != 0:
            raise self.fail(node, "count_include_pad=1: the contract averages the valid positions only")
        if node.op_type == "GlobalAveragePool":
            window: dict[str, Any] = {"kernel_size": None, "stride": None, "padding": [0, 0]}
        else:
            w = self._window(node)
            window = {"kernel_size": w["kernel_size"], "stride": w["stride"], "padding": w["padding"]}
        self.symbols[node.output[0]] = _Mean(src, window)

    def max_pool(self, node: onnx.NodeProto) -> None:
        """max_pool2d (global when there is no ``strides`` attribute and the kernel is the plane)."""
        if len(node.output) > 1 and node.output[1]:
            raise self.fail(node, "MaxPool's indices output is not supported")
        x = self.codes(node, 0)
        w = self._window(node)
        dilation = list(_attr(node, "dilations", [1, 1]))
        plane = list(self.shape_of(x)[2:])
        if not w["has_strides"] and w["kernel_size"] == plane and w["padding"] == [0, 0] and dilation == [1, 1]:
            args: dict[str, Any] = {"kernel_size": None, "stride": None, "padding": [0, 0], "dilation": [1, 1]}
        else:
            args = {"kernel_size": w["kernel_size"], "stride": w["stride"], "padding": w["padding"], "dilation": dilation}
        self.emit(node, "max_pool2d", (x,), args, signed=self.signed_of(x), like=x)

    def qlinear_conv(self, node: onnx.NodeProto) -> None:
        """conv2d with ONNX Runtime's multiplier ``fp32(fp32(x_scale w_scale) / y_scale)``."""
        x = self.codes(node, 0)
        xs, (xz, _) = self.scale(node, 1, "x_scale"), self.zero_point(node, 2, "x_zero_point")
        w = self.const(node, 3, "w")
        if w.dtype != np.int8 or w.ndim != 4:
            raise self.fail(node, f"weights of type {w.dtype} and rank {w.ndim}: int8 (C_out, C_in/groups, kh, kw) only")
        ws = self.const(node, 4, "w_scale").astype(np.float32)
        wz = self.const(node, 5, "w_zero_point")
        ys, (yz, signed) = self.scale(node, 6, "y_scale"), self.zero_point(node, 7, "y_zero_point")
        bias = self.optional_const(node, 8, "B")
        if np.any(wz != 0):
            raise self.fail(node, "weight zero points must be 0 (the datapath's weights are symmetric)")
        window = self._window(node, list(w.shape[2:]))
        if list(w.shape[2:]) != window["kernel_size"]:
            raise self.fail(node, f"kernel_shape {window['kernel_size']} differs from the weight's {list(w.shape[2:])}")
        m = ((xs * ws).astype(np.float32) / ys).astype(np.float32)  # ONNX Runtime's ComputeOutputScale
        args = dict(w_shape=list(w.shape), x_zero_point=xz, w_zero_point=[0] * max(1, wz.size), multiplier=m,
                    stride=window["stride"], padding=window["padding"], dilation=list(_attr(node, "dilations", [1, 1])),
                    groups=int(_attr(node, "group", 1)), y_zero_point=yz, y_bits=8, y_signed=signed,
                    y_min=code_range(8, signed)[0], y_max=code_range(8, signed)[1])  # fmt: skip
        params: dict[str, Any] = {"weight": w.astype(np.int8)}
        if bias is not None:
            params["bias"] = bias.astype(np.int32)
        self.emit(node, "conv2d", (x,), args, params, signed=signed, stated_scale=float(ys))

    def _linear(self, node: onnx.NodeProto, x_sym: Symbol, w: npt.NDArray[np.int8], m: F32, wz: npt.NDArray[Any], xz: int,
                yz: int, signed: bool, ys: float, bias: Optional[npt.NDArray[Any]]) -> None:  # fmt: skip
        if np.any(wz != 0):
            raise self.fail(node, "weight zero points must be 0 (the datapath's weights are symmetric)")
        rows = isinstance(x_sym, _Rows)
        if isinstance(x_sym, _Rows):
            x = x_sym.tensor
        elif isinstance(x_sym, _Codes):
            x = x_sym.tensor
            if node.op_type == "QGemm" and len(self.shape_of(x)) != 2:
                raise self.fail(node, "QGemm of a tensor of rank other than 2")
        else:
            raise self.fail(node, "reads other than codes")
        args = dict(w_shape=list(w.shape), x_zero_point=xz, w_zero_point=[0] * max(1, wz.size), multiplier=m,
                    y_zero_point=yz, y_bits=8, y_signed=signed, y_min=code_range(8, signed)[0],
                    y_max=code_range(8, signed)[1])  # fmt: skip
        params: dict[str, Any] = {"weight": w.astype(np.int8)}
        if bias is not None:
            params["bias"] = bias.astype(np.int32).reshape(-1)
        self.emit(node, "linear", (x,), args, params, signed=signed, stated_scale=ys, rows=rows)

    def qgemm(self, node: onnx.NodeProto) -> None:
        """linear with ONNX Runtime's multiplier (``alpha = 1``), of codes or of their rows."""
        if _attr(node, "transA", 0) or float(_attr(node, "alpha", 1.0)) != 1.0 or float(_attr(node, "beta", 1.0)) != 1.0:
            raise self.fail(node, "transA, alpha and beta other than 0, 1, 1")
        if len(node.input) < 9 or not node.input[7]:
            raise self.fail(node, "a QGemm without y_scale has float outputs")
        x_sym = self.sym(node, 0)
        xs, (xz, _) = self.scale(node, 1, "a_scale"), self.zero_point(node, 2, "a_zero_point")
        b = self.const(node, 3, "B")
        if b.dtype != np.int8 or b.ndim != 2:
            raise self.fail(node, f"B of type {b.dtype}: int8 weights only")
        w = b if _attr(node, "transB", 0) else b.T
        bs = self.const(node, 4, "b_scale").astype(np.float32)
        bz = self.const(node, 5, "b_zero_point")
        bias = self.optional_const(node, 6, "C")
        ys, (yz, signed) = self.scale(node, 7, "y_scale"), self.zero_point(node, 8, "y_zero_point")
        m = ((np.float32(1.0) * xs * bs).astype(np.float32) / ys).astype(np.float32)  # ONNX Runtime's, alpha = 1
        self._linear(node, x_sym, np.ascontiguousarray(w), m, bz, xz, yz, signed, float(ys), bias)

    def qlinear_matmul(self, node: onnx.NodeProto) -> None:
        """linear of an (..., K) tensor by a constant (K, N) ``b``, with ONNX Runtime's multiplier."""
        x_sym = self.sym(node, 0)
        xs, (xz, _) = self.scale(node, 1, "a_scale"), self.zero_point(node, 2, "a_zero_point")
        b = self.const(node, 3, "b")
        if b.dtype != np.int8 or b.ndim != 2:
            raise self.fail(node, f"b of type {b.dtype} and rank {b.ndim}: int8 (K, N) weights only")
        bs = self.const(node, 4, "b_scale").astype(np.float32).reshape(-1)
        bz = self.const(node, 5, "b_zero_point")
        ys, (yz, signed) = self.scale(node, 6, "y_scale"), self.zero_point(node, 7, "y_zero_point")
        m = ((xs * bs).astype(np.float32) / ys).astype(np.float32)
        self._linear(node, x_sym, np.ascontiguousarray(b.T), m, bz, xz, yz, signed, float(ys), None)

    def qlinear_binary(self, node: onnx.NodeProto) -> None:
        """``QLinearAdd`` as add (``fp32(s_a / s_y)``, ``fp32(s_b / s_y)``), ``QLinearMul`` as mul."""
        a, b = self.codes(node, 0), self.codes(node, 3)
        sa, (za, _) = self.scale(node, 1, "A_scale"), self.zero_point(node, 2, "A_zero_point")
        sb, (zb, _) = self.scale(node, 4, "B_scale"), self.zero_point(node, 5, "B_zero_point")
        sc, (zc, signed) = self.scale(node, 6, "C_scale"), self.zero_point(node, 7, "C_zero_point")
        rng = dict(y_zero_point=zc, y_bits=8, y_signed=signed, y_min=code_range(8, signed)[0], y_max=code_range(8, signed)[1])
        if node.op_type == "QLinearAdd":
            if self.shape_of(a) != self.shape_of(b):
                raise self.fail(node, f"QLinearAdd of shapes {self.shape_of(a)} and {self.shape_of(b)}: the contract's "
                                      "add takes equal shapes")  # fmt: skip
            self.emit(node, "add", (a, b), dict(a_zero_point=za, b_zero_point=zb, a_multiplier=float(np.float32(sa / sc)),
                      b_multiplier=float(np.float32(sb / sc)), **rng), signed=signed, stated_scale=float(sc))  # fmt: skip
        else:
            m = np.float32(np.float32(sa * sb) / sc)
            self.emit(node, "mul", (a, b), dict(a_zero_point=za, b_zero_point=zb, multiplier=m, **rng), signed=signed,
                      stated_scale=float(sc))  # fmt: skip

    def qlinear_global_average_pool(self, node: onnx.NodeProto) -> None:
        """avg_pool2d where the contract's average is ONNX Runtime's, else ONNX Runtime's computation as a depthwise
        conv2d of ones."""
        if _attr(node, "channels_last", 0):
            raise self.fail(node, "channels_last=1 is not supported")
        x = self.codes(node, 0)
        xs, (xz, _) = self.scale(node, 1, "x_scale"), self.zero_point(node, 2, "x_zero_point")
        ys, (yz, signed) = self.scale(node, 3, "y_scale"), self.zero_point(node, 4, "y_zero_point")
        shape = self.shape_of(x)
        if len(shape) != 4:
            raise self.fail(node, f"input of rank {len(shape)}: 2-D planes only")
        h, w = int(shape[2] or 0), int(shape[3] or 0)
        if xs == ys and xz == yz and exact_global_average(h * w):
            self.emit(node, "avg_pool2d", (x,), dict(kernel_size=None, stride=None, padding=[0, 0], zero_point=xz),
                      signed=signed, like=x)  # fmt: skip
            return
        channels = int(shape[1] or 0)
        factor = np.float32(xs / np.float32(ys * np.float32(h * w)))  # MLAS's ScaleInput / (ScaleOutput * ImageSize)
        args = dict(w_shape=[channels, 1, h, w], x_zero_point=xz, w_zero_point=[0], multiplier=factor, stride=[1, 1],
                    padding=[0, 0], dilation=[1, 1], groups=channels, y_zero_point=yz, y_bits=8, y_signed=signed,
                    y_min=code_range(8, signed)[0], y_max=code_range(8, signed)[1])  # fmt: skip
        self.emit(node, "conv2d", (x,), args, {"weight": np.ones((channels, 1, h, w), np.int8)}, signed=signed,
                  stated_scale=float(ys))  # fmt: skip

    def qlinear_average_pool(self, node: onnx.NodeProto) -> None:
        """avg_pool2d of equal input and output qparams (ties with an odd zero point may differ from ONNX Runtime)."""
        x = self.codes(node, 0)
        xs, (xz, _) = self.scale(node, 1, "x_scale"), self.zero_point(node, 2, "x_zero_point")
        ys, (yz, signed) = self.scale(node, 3, "y_scale"), self.zero_point(node, 4, "y_zero_point")
        if xs != ys or xz != yz:
            raise self.fail(node, "QLinearAveragePool with different input and output qparams (ONNX Runtime's float "
                                  "formula has no contract op)")  # fmt: skip
        if _attr(node, "count_include_pad", 0) != 0 or _attr(node, "channels_last", 0):
            raise self.fail(node, "count_include_pad=1 or channels_last=1 is not supported")
        w = self._window(node)
        self.emit(node, "avg_pool2d", (x,), dict(kernel_size=w["kernel_size"], stride=w["stride"], padding=w["padding"],
                  zero_point=xz), signed=signed, like=x)  # fmt: skip

    def cast(self, node: onnx.NodeProto) -> None:
        """A lut's int32 index, a softmax's int64 codes, or the next softmax stage."""
        to = _attr(node, "to")
        src = self.symbols.get(node.input[0])
        if isinstance(src, _Softmax):
            nxt = {("scaled", onnx.TensorProto.DOUBLE): "scaled_f64", ("sum", onnx.TensorProto.DOUBLE): "sum_f64",
                   ("rounded_f64", onnx.TensorProto.INT64): "rounded"}.get((src.stage, to))  # fmt: skip
            if nxt is not None:
                self.symbols[node.output[0]] = self.softmax_step(node, src, nxt)
                return
            if src.stage == "clamped" and to in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8):
                self.softmax(node, src, signed=to == onnx.TensorProto.INT8)
                return
            raise self.fail(node, f"Cast to type {to} after the softmax stage {src.stage!r}")
        if to == onnx.TensorProto.INT64:
            self.symbols[node.output[0]] = _Softmax("wide", self.codes(node, 0))
            return
        if to != onnx.TensorProto.INT32:
            raise self.fail(node, "Cast of codes to other than int32 (a lut's index) or int64 (a softmax)")
        self.symbols[node.output[0]] = _Index(self.codes(node, 0), np.zeros((), np.int64))

    # ------------------------------------------------------------------ softmax, stage by stage
    def softmax_step(self, node: onnx.NodeProto, s: _Softmax, stage: str, **changes: Any) -> _Softmax:
        return _Softmax(stage, s.tensor, **{**{k: getattr(s, k) for k in ("axis", "table", "bits", "zero_point", "bounds")},
                                          **changes})  # fmt: skip

    def softmax_symbol(self, node: onnx.NodeProto, index: int, stage: str) -> _Softmax:
        s = self.symbols.get(node.input[index]) if index < len(node.input) else None
        if not isinstance(s, _Softmax) or s.stage != stage:
            raise self.fail(node, f"input {index} is not the softmax stage {stage!r} (the chain export_onnx writes)")
        return s

    def _axes(self, node: onnx.NodeProto) -> int:
        axes = _attr(node, "axes")
        if axes is None:
            axes = self.const(node, 1, "axes").reshape(-1).tolist()
        if len(axes) != 1 or int(_attr(node, "keepdims", 1)) != 1:
            raise self.fail(node, "a softmax reduces one axis, keeping it")
        return int(axes[0])

    def reduce_max(self, node: onnx.NodeProto) -> None:
        """A softmax's axis maximum."""
        s = self.softmax_symbol(node, 0, "wide")
        self.symbols[node.output[0]] = self.softmax_step(node, s, "max", axis=self._axes(node))

    def sub(self, node: onnx.NodeProto) -> None:
        """A softmax's distances ``m - q``."""
        top, wide = self.softmax_symbol(node, 0, "max"), self.softmax_symbol(node, 1, "wide")
        if top.tensor != wide.tensor:
            raise self.fail(node, "a softmax's distances are from the maximum of the same codes")
        self.symbols[node.output[0]] = self.softmax_step(node, top, "distance")

    def reduce_sum(self, node: onnx.NodeProto) -> None:
        """A softmax's sum of exponentials."""
        s = self.softmax_symbol(node, 0, "exp")
        if self._axes(node) != s.axis:
            raise self.fail(node, "a softmax sums along the axis of its maximum")
        self.symbols[node.output[0]] = self.softmax_step(node, s, "sum")

    def div(self, node: onnx.NodeProto) -> None:
        """A softmax's float64 quotient ``E 2^k / S``."""
        num, den = self.softmax_symbol(node, 0, "scaled_f64"), self.softmax_symbol(node, 1, "sum_f64")
        if num.tensor != den.tensor:
            raise self.fail(node, "a softmax divides by the sum of its own exponentials")
        self.symbols[node.output[0]] = self.softmax_step(node, num, "ratio")

    def round(self, node: onnx.NodeProto) -> None:
        """A softmax's quotient rounded half to even."""
        self.symbols[node.output[0]] = self.softmax_step(node, self.softmax_symbol(node, 0, "ratio"), "rounded_f64")

    def softmax(self, node: onnx.NodeProto, s: _Softmax, signed: bool) -> None:
        """The softmax node the chain ending in ``s`` computes."""
        if self.dp(node).rounding != "half_even":
            raise self.fail(node, "a softmax rounded by ONNX's Round needs a half-to-even datapath")
        if s.bounds != code_range(s.bits, signed) or s.zero_point != (-(1 << (s.bits - 1)) if signed else 0):
            raise self.fail(node, f"a softmax's output has zero point {-(1 << (s.bits - 1)) if signed else 0} and the "
                                  f"whole {s.bits}-bit range, not {s.zero_point} and {list(s.bounds)}")  # fmt: skip
        x_signed = self.signed_of(s.tensor)
        self.emit(node, "softmax", (s.tensor,), dict(axis=s.axis, x_bits=8, x_signed=x_signed, table=list(s.table),
                  y_bits=s.bits, y_signed=signed), signed=signed, stated_scale=2.0 ** -s.bits)  # fmt: skip

    def gather(self, node: onnx.NodeProto) -> None:
        """A lut (an int8/uint8 table by the index of codes) or a softmax's exponentials (an int64 table)."""
        table = self.const(node, 0, "the table")
        index = self.symbols.get(node.input[1])
        if isinstance(index, _Softmax) and index.stage == "distance":
            if table.dtype != np.int64 or table.ndim != 1 or _attr(node, "axis", 0):
                raise self.fail(node, "a softmax's exponentials are a 1-D int64 table")
            self.symbols[node.output[0]] = self.softmax_step(node, index, "exp", table=tuple(int(v) for v in table))
            return
        if not isinstance(index, _Index) or table.dtype not in (np.int8, np.uint8) or table.ndim != 1 or _attr(node, "axis", 0):
            raise self.fail(node, "Gather of other than an int8/uint8 table by the index of codes (a lut)")
        x_signed = self.signed_of(index.tensor)
        qmin = code_range(8, x_signed)[0]
        offset = index.offset
        channels = 1
        if offset.ndim:
            channels = int(offset.shape[0])
            want = (np.arange(channels) * 256 - qmin).reshape(offset.shape)
            if offset.shape[1:] != (1,) * (offset.ndim - 1) or not np.array_equal(offset, want):
                raise self.fail(node, "per-channel offsets must be c * 256 - qmin along axis 1")
        elif int(offset) != -qmin:
            raise self.fail(node, f"the index offset {int(offset)} is not -qmin = {-qmin}")
        if table.size != channels * 256:
            raise self.fail(node, f"a table of {table.size} entries, expected {channels * 256}")
        values = table.reshape(channels, 256) if channels > 1 else table.reshape(256)
        self.emit(node, "lut", (index.tensor,), dict(x_bits=8, x_signed=x_signed, channels=channels), {"table": values},
                  signed=table.dtype == np.int8)  # fmt: skip

    def reshape(self, node: onnx.NodeProto) -> None:
        """reshape (first entry the batch), codes as rows for a ``QGemm``, or those rows reshaped back."""
        src = self.sym(node, 0)
        shape = self.const(node, 1, "shape").astype(np.int64).reshape(-1).tolist()
        if _attr(node, "allowzero", 0):
            raise self.fail(node, "allowzero=1 is not supported")
        if isinstance(src, _Record) and src.rows:
            want = [-1, *(int(d) for d in src.shape[1:] if d is not None)]
            if shape != want:
                raise self.fail(node, f"reshapes the rows of {src.name!r} to {shape}, not back to {want}")
            del self.by_output[src.output]
            src.output, src.rows = node.output[0], False
            self.by_output[src.output] = src
            self.symbols[node.output[0]] = _Codes(src.output)
            return
        x = self.codes(node, 0)
        xshape = self.shape_of(x)
        if len(xshape) > 2 and shape == [-1, int(xshape[-1] or 0)] and self.uses.get(node.output[0], 0) >= 1:
            self.symbols[node.output[0]] = _Rows(x)
            return
        if not shape or shape[0] not in (0, -1) or (shape[0] == -1 and -1 in shape[1:]) or 0 in shape[1:]:
            raise self.fail(node, f"shape={shape}: the first entry must be the batch (0 or -1)")
        self.emit(node, "reshape", (x,), dict(shape=shape[1:]), signed=self.signed_of(x), like=x)

    def flatten(self, node: onnx.NodeProto) -> None:
        """reshape to ``(N, size)`` (``axis = 1``)."""
        x = self.codes(node, 0)
        if int(_attr(node, "axis", 1)) != 1:
            raise self.fail(node, "Flatten along an axis other than 1")
        size = math.prod(int(d or 0) for d in self.shape_of(x)[1:])
        self.emit(node, "reshape", (x,), dict(shape=[size]), signed=self.signed_of(x), like=x)

    def transpose(self, node: onnx.NodeProto) -> None:
        """permute by ``perm``."""
        x = self.codes(node, 0)
        perm = list(_attr(node, "perm", []))
        self.emit(node, "permute", (x,), dict(dims=perm), signed=self.signed_of(x), like=x)

    def slice(self, node: onnx.NodeProto) -> None:
        """slice: ``Slice`` of codes along one axis (constant starts, ends, axes, steps)."""
        x = self.codes(node, 0)
        starts, ends = self.const(node, 1, "starts"), self.const(node, 2, "ends")
        axes = self.optional_const(node, 3, "axes")
        steps = self.optional_const(node, 4, "steps")
        if starts.size != 1 or ends.size != 1 or (axes is not None and axes.size != 1) or (steps is not None and steps.size != 1):
            raise self.fail(node, "a slice narrows one axis")
        rank = len(self.shape_of(x))
        axis = int(axes.reshape(-1)[0]) % rank if axes is not None else 0
        size = int(self.shape_of(x)[axis] or 0)
        start, stop, step = slice(int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0]),
                                  int(steps.reshape(-1)[0]) if steps is not None else 1).indices(size)  # fmt: skip
        self.emit(node, "slice", (x,), dict(axis=axis, start=start, stop=stop, step=step), signed=self.signed_of(x), like=x)

    def shape(self, node: onnx.NodeProto) -> None:
        """A constant's batch: ``Shape(codes)`` from 0 to 1."""
        if int(_attr(node, "start", 0)) != 0 or int(_attr(node, "end", 0)) != 1:
            raise self.fail(node, "Shape other than the batch (start 0, end 1) of a constant's Expand")
        self.symbols[node.output[0]] = _Batch(self.codes(node, 0))

    def expand(self, node: onnx.NodeProto) -> None:
        """constant: ``Expand`` of an int8/uint8 initializer ``(1, *shape)`` to a batch and that shape."""
        codes = self.const(node, 0, "the constant's codes")
        target = self.symbols.get(node.input[1])
        if not isinstance(target, _Batch) or target.dims is None or codes.dtype not in (np.int8, np.uint8):
            raise self.fail(node, "Expand other than of int8/uint8 codes to Concat(Shape(codes)[0:1], shape) (a constant)")
        if codes.shape != (1, *target.dims):
            raise self.fail(node, f"a constant's codes have shape {codes.shape}, it expands to (N, {list(target.dims)})")
        self.emit(node, "constant", (target.tensor,), dict(shape=list(target.dims)), {"codes": codes.reshape(target.dims)},
                  signed=codes.dtype == np.int8)  # fmt: skip

    def concat(self, node: onnx.NodeProto) -> None:
        """concat along ``axis`` (of codes of one scale and zero point), or a constant's target shape."""
        first = self.symbols.get(node.input[0])
        if isinstance(first, _Batch) and len(node.input) == 2:
            dims = self.const(node, 1, "the constant's shape")
            self.symbols[node.output[0]] = _Batch(first.tensor, tuple(int(d) for d in dims.reshape(-1)))
            return
        xs = tuple(self.codes(node, i) for i in range(len(node.input)))
        rank = len(self.shape_of(xs[0]))
        axis = int(_attr(node, "axis", 1)) % rank
        self.emit(node, "concat", xs, dict(axis=axis), signed=self.signed_of(xs[0]), like=xs[0])

    def pad(self, node: onnx.NodeProto) -> None:
        """pad (constant), in ``torch.nn.functional.pad`` order."""
        x = self.codes(node, 0)
        if _attr(node, "mode", b"constant") not in (b"constant", "constant") or (len(node.input) > 3 and node.input[3]):
            raise self.fail(node, "only constant padding of every axis is supported")
        pads = self.const(node, 1, "pads").astype(np.int64).reshape(-1).tolist()
        value = self.optional_const(node, 2, "constant_value")
        rank = len(self.shape_of(x))
        if len(pads) != 2 * rank or pads[0] or pads[rank]:
            raise self.fail(node, f"pads={pads} must have 2 x rank entries and leave the batch alone")
        torch_order: list[int] = []
        for d in range(rank - 1, 0, -1):
            torch_order += [pads[d], pads[rank + d]]
        while len(torch_order) > 2 and torch_order[-2:] == [0, 0]:
            torch_order = torch_order[:-2]
        code = 0 if value is None else int(value.reshape(-1)[0])
        self.emit(node, "pad", (x,), dict(pads=torch_order, value=code), signed=self.signed_of(x), like=x)

    def identity(self, node: onnx.NodeProto) -> None:
        """The input itself."""
        self.symbols[node.output[0]] = self.sym(node, 0)

    def clip(self, node: onnx.NodeProto) -> None:
        """The fused clamp of the requantizing op whose single-use output it reads, or a softmax's clamp."""
        src = self.sym(node, 0)
        if isinstance(src, _Softmax) and src.stage == "shifted":
            low, high = (int(self.const(node, i, what).reshape(-1)[0]) for i, what in ((1, "min"), (2, "max")))
            self.symbols[node.output[0]] = self.softmax_step(node, src, "clamped", bounds=(low, high))
            return
        r = self.by_output.get(src.tensor) if isinstance(src, _Codes) else None
        if r is None or "y_min" not in r.args or self.uses.get(src.tensor, 0) != 1 or r.like is not None:  # type: ignore[union-attr]
            raise self.fail(node, "Clip of codes other than a requantizing op's single-use output (a fused clamp)")
        lo = self.const(node, 1, "min")
        hi = self.const(node, 2, "max")
        r.args = {**r.args, "y_min": max(int(lo.reshape(-1)[0]), r.args["y_min"]), "y_max": min(int(hi.reshape(-1)[0]), r.args["y_max"])}
        del self.by_output[r.output]
        r.output = node.output[0]
        self.by_output[r.output] = r
        self.build(node, r)
        self.symbols[node.output[0]] = _Codes(r.output)

    # ------------------------------------------------------------------ the program
    def tensor_scale(self, node: onnx.NodeProto, tensor: str, stated: Optional[float]) -> float:
        meta = self.tensor_meta.get(tensor)
        if meta is not None:
            return float(meta["scale"])
        if stated is None:
            raise self.fail(node, f"the scale of {tensor!r} is stated neither by the graph nor by the metadata")
        return stated

    def tensor_zero_point(self, node: onnx.NodeProto, tensor: str, graph_zero_point: int) -> int:
        meta = self.tensor_meta.get(tensor)
        if meta is not None and int(meta["zero_point"]) != graph_zero_point:
            raise self.fail(node, f"the metadata's zero point {meta['zero_point']} of {tensor!r} contradicts the "
                                  f"graph's {graph_zero_point}")  # fmt: skip
        return graph_zero_point

    def run(self) -> IntegerProgram:
        """Read every node in order (``ValueError`` for an op outside the subset), then build the program."""
        handlers: dict[tuple[str, str], Callable[[onnx.NodeProto], None]] = {
            ("", "QuantizeLinear"): self.quantize_linear, ("", "DequantizeLinear"): self.dequantize_linear,
            ("", "QLinearConv"): self.qlinear_conv, ("", "QLinearMatMul"): self.qlinear_matmul,
            (MS_DOMAIN, "QGemm"): self.qgemm, (MS_DOMAIN, "QLinearAdd"): self.qlinear_binary,
            (MS_DOMAIN, "QLinearMul"): self.qlinear_binary,
            (MS_DOMAIN, "QLinearGlobalAveragePool"): self.qlinear_global_average_pool,
            (MS_DOMAIN, "QLinearAveragePool"): self.qlinear_average_pool,
            (LOWBIT_DOMAIN, INTEGER_LAYERNORM): self.integer_layernorm,
            ("", "Add"): self.add, ("", "Mul"): self.mul, ("", "MatMul"): self.matmul, ("", "AveragePool"): self.average_pool,
            ("", "GlobalAveragePool"): self.average_pool, ("", "MaxPool"): self.max_pool, ("", "Cast"): self.cast,
            ("", "Gather"): self.gather, ("", "Reshape"): self.reshape, ("", "Flatten"): self.flatten,
            ("", "Transpose"): self.transpose, ("", "Concat"): self.concat, ("", "Pad"): self.pad,
            ("", "Identity"): self.identity, ("", "Clip"): self.clip, ("", "ReduceMax"): self.reduce_max,
            ("", "Sub"): self.sub, ("", "ReduceSum"): self.reduce_sum, ("", "Shape"): self.shape, ("", "Expand"): self.expand,
            ("", "Slice"): self.slice, ("", "Div"): self.div, ("", "Round"): self.round,
        }  # fmt: skip
        for node in self.model.graph.node:
            domain = "" if node.domain in ("", "ai.onnx") else node.domain
            handler = handlers.get((domain, node.op_type))
            if handler is None:
                where = f"{node.domain}." if domain else ""
                raise self.fail(node, f"{where}{node.op_type} is outside the qoperator subset import_onnx reads "
                                      f"({', '.join(sorted(op for _, op in handlers))})")  # fmt: skip
            handler(node)
        return self.program()

    def program(self) -> IntegerProgram:
        """The program of the records read: tensors in the metadata's order when known, outputs from the graph's."""
        graph = self.model.graph
        if self.datapath is None or not self.inputs:
            raise ValueError(f"import_onnx({self.source}): no QuantizeLinear of a float graph input")
        outputs: list[str] = []
        for o in graph.output:
            s = self.symbols.get(o.name)
            if isinstance(s, _Dequant):
                s = _Codes(s.tensor)
            if not isinstance(s, _Codes):
                raise ValueError(f"import_onnx({self.source}): graph output {o.name!r} is neither codes nor their "
                                 "DequantizeLinear")  # fmt: skip
            if s.tensor not in outputs:
                outputs.append(s.tensor)
        tensors: dict[str, TensorInfo] = dict(self.input_infos)
        nodes = []
        dummy = onnx.NodeProto()
        for r in self.records:
            if r.rows:
                raise ValueError(f"import_onnx({self.source}): the rows of {r.name!r} are never reshaped back")
            dummy.name, dummy.op_type = r.name, r.op
            if r.like is not None:
                stated, z = tensors[r.like].scale, tensors[r.like].zero_point
            elif r.op in ("lut", "constant"):  # their output qparams are stated by the metadata only
                meta = self.tensor_meta.get(r.output)
                stated, z = None, int(meta["zero_point"]) if meta is not None else 0
            else:
                stated, z = r.stated_scale, int(r.attrs.output.zero_point)
            scale = self.tensor_scale(dummy, r.output, stated)
            z = self.tensor_zero_point(dummy, r.output, z)
            if r.op == "concat" and any((tensors[t].scale, tensors[t].zero_point) != (scale, z) for t in r.inputs):
                raise ValueError(f"import_onnx({self.source}): node {r.name!r} (Concat) joins codes of different qparams")
            tensors[r.output] = TensorInfo(r.output, r.shape, 8, r.signed, scale, z)
            args = self.reconcile(dummy, r)  # the whole group is read: its clamp is known
            if args is not r.args:
                self.build(dummy, r, args)
            nodes.append(Node(r.name, r.op, r.inputs, r.output, r.attrs, r.params))
        order = [t for t in self.tensor_meta if t in tensors]  # the program's own order of its tensors, when known
        tensors = {t: tensors[t] for t in order + [t for t in tensors if t not in self.tensor_meta]}
        origins = {k: v for k, v in self.origins.items() if v in tensors}
        return IntegerProgram(self.datapath, tensors, nodes, self.inputs, outputs, origins)


def _plain(v: Any) -> Any:
    """JSON-like form of an argument (tuples as lists, NumPy scalars as Python numbers)."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def program_from_model(model: onnx.ModelProto, *, source: str = "model") -> IntegerProgram:
    """The program of the QOperator ``model`` (see the module docstring); ``ValueError`` naming the first node
    outside the subset, or metadata that contradicts the graph."""
    return _Importer(model, source).run()


def import_onnx(path: Union[str, Path]) -> IntegerProgram:
    """The :class:`~quant.ir.program.IntegerProgram` of the QOperator ONNX file ``path``: one written by
    :func:`quant.export.export_onnx` (``form="qoperator"``) comes back equal to the exported program (same
    digest), one from ONNX Runtime's static quantizer is read on the ``mlas`` datapath (see the module
    docstring for the ops read and how)."""
    try:
        model = onnx.load(str(path))
    except OSError as err:
        raise ValueError(f"import_onnx: cannot read {str(path)!r}: {err}") from None
    except Exception as err:  # a protobuf DecodeError for a file that is not ONNX
        raise ValueError(f"import_onnx: {str(path)!r} is not an ONNX model ({type(err).__name__}: {err})") from None
    return program_from_model(model, source=str(path))
