"""The ops an :class:`~quant.ir.program.IntegerProgram` can hold, one :class:`OpDef` each, by name.

Every datapath op's attributes are the validated record of :mod:`quant.contract.attrs` (the
one both backends run; ``matmul``'s is :class:`quant.contract.matmul.MatmulAttrs`, ``layernorm``'s
:class:`quant.contract.layernorm.LayerNormAttrs`, ``lstm``'s :class:`quant.contract.lstm.LstmAttrs`,
``gru``'s :class:`quant.contract.gru.GruAttrs`), rebuilt from its ``build_args()`` when a program is loaded; an op's
operands are the program's tensors (codes) and its constant parameters (weights, biases,
tables). Layout ops (``reshape``, ``permute``, ``concat``, ``pad``, ``slice``, and ``constant``: codes the same
for every sample) only move codes and are run by NumPy
for every backend. A registered custom op (:mod:`quant.contract.custom`) is an op too, under its
dotted name, with a :class:`~quant.contract.custom.CustomOpAttrs` record.

>>> len(OPS), sorted(OPS)[:7]
(19, ['add', 'avg_pool2d', 'concat', 'constant', 'conv2d', 'gru', 'layernorm'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from quant.contract.attrs import (
    MAX_DIM,
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
from quant.contract.backend import Backend
from quant.contract.custom import CustomOpAttrs, custom_op_def, custom_op_names
from quant.contract.datapath import Datapath
from quant.contract.layernorm import LayerNormAttrs
from quant.contract.gru import GruAttrs
from quant.contract.lstm import LstmAttrs
from quant.contract.matmul import MatmulAttrs, run_matmul

__all__ = ["OPS", "ConcatAttrs", "ConstantAttrs", "SliceAttrs", "OpDef", "PadAttrs", "PermuteAttrs", "ReshapeAttrs", "op_def"]

Codes = npt.NDArray[Any]
Params = Mapping[str, Any]


@dataclass(frozen=True)
class ReshapeAttrs:
    """``reshape``: codes unchanged, shape ``(N, *shape)`` for an input of batch ``N`` (one entry may be -1)."""

    shape: tuple[int, ...]
    op: str = "reshape"

    @classmethod
    def build(cls, *, shape: Sequence[int]) -> "ReshapeAttrs":
        """Checked target shape (without the batch dimension)."""
        dims = tuple(int(d) for d in shape)
        if sum(1 for d in dims if d == -1) > 1 or any(d < -1 or d == 0 or d > MAX_DIM for d in dims):
            raise ValueError(f"reshape: shape={list(shape)} must hold positive sizes and at most one -1")
        return cls(dims)

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again."""
        return {"shape": list(self.shape)}


@dataclass(frozen=True)
class PermuteAttrs:
    """``permute``: codes unchanged, dimensions reordered by ``dims`` (the batch stays first: ``dims[0] == 0``)."""

    dims: tuple[int, ...]
    op: str = "permute"

    @classmethod
    def build(cls, *, dims: Sequence[int]) -> "PermuteAttrs":
        """Checked permutation."""
        d = tuple(int(v) for v in dims)
        if sorted(d) != list(range(len(d))) or not d or d[0] != 0:
            raise ValueError(f"permute: dims={list(dims)} must be a permutation keeping the batch dimension 0 first")
        return cls(d)

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again."""
        return {"dims": list(self.dims)}


@dataclass(frozen=True)
class ConcatAttrs:
    """``concat``: codes of the same qparams joined along ``axis`` (not the batch)."""

    axis: int
    op: str = "concat"

    @classmethod
    def build(cls, *, axis: int) -> "ConcatAttrs":
        """Checked axis."""
        if isinstance(axis, bool) or not isinstance(axis, int) or axis < 1:
            raise ValueError(f"concat: axis={axis!r} must be an int >= 1 (not the batch dimension)")
        return cls(axis)

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again."""
        return {"axis": self.axis}


@dataclass(frozen=True)
class SliceAttrs:
    """``slice``: codes unchanged, the elements ``start, start + step, ...`` below ``stop`` of dimension ``axis``
    (not the batch; ``0 <= start < stop <= size``, ``step >= 1``)."""

    axis: int
    start: int
    stop: int
    step: int = 1
    op: str = "slice"

    @classmethod
    def build(cls, *, axis: int, start: int, stop: int, step: int = 1) -> "SliceAttrs":
        """Checked slice (resolved against a shape by :meth:`output_shape`)."""
        vals = []
        for v, name in ((axis, "axis"), (start, "start"), (stop, "stop"), (step, "step")):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"slice: {name}={v!r} must be an int")
            vals.append(v)
        if vals[0] < 1 or vals[1] < 0 or vals[2] <= vals[1] or vals[3] < 1 or vals[2] > MAX_DIM:
            raise ValueError(f"slice: axis={axis} must be >= 1 (not the batch), 0 <= start={start} < stop={stop}, "
                             f"step={step} >= 1")  # fmt: skip
        return cls(vals[0], vals[1], vals[2], vals[3])

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again."""
        return {"axis": self.axis, "start": self.start, "stop": self.stop, "step": self.step}

    def output_shape(self, shape: Sequence[Optional[int]]) -> tuple[Optional[int], ...]:
        """``shape`` with dimension ``axis`` sliced; ``ValueError`` when the slice does not fit it."""
        if self.axis >= len(shape) or shape[self.axis] is None or self.stop > int(shape[self.axis] or 0):
            raise ValueError(f"slice: {self.start}:{self.stop}:{self.step} of axis {self.axis} does not fit shape "
                             f"{tuple(shape)}")  # fmt: skip
        n = len(range(self.start, self.stop, self.step))
        return (*shape[: self.axis], n, *shape[self.axis + 1 :])


@dataclass(frozen=True)
class ConstantAttrs:
    """``constant``: the same codes (parameter ``codes``, of shape ``shape``) for every sample, as ``(N, *shape)``
    for a batch of ``N`` (the batch of its one input, whose codes it does not read): what a model computes from
    its parameters and buffers alone (a learned position embedding)."""

    shape: tuple[int, ...]
    op: str = "constant"

    @classmethod
    def build(cls, *, shape: Sequence[int]) -> "ConstantAttrs":
        """Checked per-sample shape."""
        dims = tuple(int(d) for d in shape)
        if any(d < 1 or d > MAX_DIM for d in dims):
            raise ValueError(f"constant: shape={list(shape)} must hold sizes in 1..{MAX_DIM}")
        return cls(dims)

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again."""
        return {"shape": list(self.shape)}


@dataclass(frozen=True)
class PadAttrs:
    """``pad``: constant padding with the code ``value`` (the zero point pads a real 0), ``pads`` in
    ``torch.nn.functional.pad`` order (last dimension first), never the batch dimension."""

    pads: tuple[int, ...]
    value: int
    op: str = "pad"

    @classmethod
    def build(cls, *, pads: Sequence[int], value: int) -> "PadAttrs":
        """Checked padding."""
        p = tuple(int(v) for v in pads)
        if len(p) % 2 or any(v < 0 or v > MAX_DIM for v in p):
            raise ValueError(f"pad: pads={list(pads)} must be pairs of sizes >= 0")
        return cls(p, int(value))

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again."""
        return {"pads": list(self.pads), "value": self.value}


@dataclass(frozen=True)
class OpDef:
    """One op of the IR: its record type, how a record is rebuilt from JSON, its constant parameters and
    how a backend runs it on ``(operand codes, parameters)``."""

    name: str
    params: tuple[str, ...]
    build: Callable[[dict[str, Any], Datapath], Any]
    run: Callable[[Backend, Any, list[Codes], Params], Codes]
    datapath_op: bool = True


def _reshape(backend: Backend, attrs: ReshapeAttrs, xs: list[Codes], params: Params) -> Codes:
    x = xs[0]
    try:
        return np.ascontiguousarray(x.reshape((x.shape[0], *attrs.shape)))
    except ValueError:
        raise ValueError(f"reshape: codes of shape {x.shape} cannot take the shape (N, {list(attrs.shape)})") from None


def _permute(backend: Backend, attrs: PermuteAttrs, xs: list[Codes], params: Params) -> Codes:
    if xs[0].ndim != len(attrs.dims):
        raise ValueError(f"permute: codes of {xs[0].ndim} dimensions, dims={list(attrs.dims)}")
    return np.ascontiguousarray(np.transpose(xs[0], attrs.dims))


def _concat(backend: Backend, attrs: ConcatAttrs, xs: list[Codes], params: Params) -> Codes:
    return np.ascontiguousarray(np.concatenate(xs, axis=attrs.axis))


def _slice(backend: Backend, attrs: SliceAttrs, xs: list[Codes], params: Params) -> Codes:
    x = xs[0]
    attrs.output_shape(x.shape)
    index = [slice(None)] * x.ndim
    index[attrs.axis] = slice(attrs.start, attrs.stop, attrs.step)
    return np.ascontiguousarray(x[tuple(index)])


def _constant(backend: Backend, attrs: ConstantAttrs, xs: list[Codes], params: Params) -> Codes:
    codes = np.asarray(params["codes"])
    if tuple(codes.shape) != attrs.shape:
        raise ValueError(f"constant: codes of shape {tuple(codes.shape)}, the attributes are for {list(attrs.shape)}")
    return np.ascontiguousarray(np.broadcast_to(codes, (xs[0].shape[0], *attrs.shape)))


def _pad(backend: Backend, attrs: PadAttrs, xs: list[Codes], params: Params) -> Codes:
    x = xs[0]
    pairs = [(0, 0)] * x.ndim
    for i in range(len(attrs.pads) // 2):
        pairs[x.ndim - 1 - i] = (attrs.pads[2 * i], attrs.pads[2 * i + 1])
    if len(attrs.pads) // 2 >= x.ndim:
        raise ValueError(f"pad: pads={list(attrs.pads)} reach the batch dimension of codes of shape {x.shape}")
    return np.pad(x, pairs, mode="constant", constant_values=attrs.value)


def _linear(backend: Backend, attrs: LinearAttrs, xs: list[Codes], params: Params) -> Codes:
    """linear on ``(..., K)``: the leading dimensions are rows of one matrix product."""
    x = xs[0]
    rows = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
    y = backend.linear(attrs, rows, params["weight"], _bias(params))
    return y.reshape((*x.shape[:-1], y.shape[-1]))


def _requantize(backend: Backend, attrs: RequantizeAttrs, xs: list[Codes], params: Params) -> Codes:
    return backend.requantize(attrs, np.ascontiguousarray(xs[0], dtype=np.int32))


def _recurrent(backend: Backend, attrs: Union[LstmAttrs, GruAttrs], xs: list[Codes], params: Params) -> Codes:
    b_ih, b_hh = params.get("b_ih"), params.get("b_hh")
    run = backend.lstm if isinstance(attrs, LstmAttrs) else backend.gru
    return run(attrs, np.ascontiguousarray(xs[0]), params["w_ih"], params["w_hh"],  # type: ignore[arg-type]
               None if b_ih is None else np.asarray(b_ih), None if b_hh is None else np.asarray(b_hh))  # fmt: skip


def _layernorm(backend: Backend, attrs: LayerNormAttrs, xs: list[Codes], params: Params) -> Codes:
    g = params.get("gamma")
    return backend.layernorm(attrs, np.ascontiguousarray(xs[0]), None if g is None else np.asarray(g), _bias(params))


def _bias(params: Params) -> Optional[Codes]:
    b = params.get("bias")
    return None if b is None else np.asarray(b)


OPS: dict[str, OpDef] = {
    "conv2d": OpDef(
        "conv2d", ("weight", "bias"), lambda a, dp: Conv2dAttrs.build(**a, datapath=dp),
        lambda be, at, xs, p: be.conv2d(at, xs[0], p["weight"], _bias(p)),
    ),
    "linear": OpDef("linear", ("weight", "bias"), lambda a, dp: LinearAttrs.build(**a, datapath=dp), _linear),
    "requantize": OpDef("requantize", (), lambda a, dp: RequantizeAttrs.build(**a, datapath=dp), _requantize),
    "add": OpDef(
        "add", (), lambda a, dp: AddAttrs.build(**a, datapath=dp), lambda be, at, xs, p: be.add(at, xs[0], xs[1])
    ),
    "mul": OpDef(
        "mul", (), lambda a, dp: MulAttrs.build(**a, datapath=dp), lambda be, at, xs, p: be.mul(at, xs[0], xs[1])
    ),
    "softmax": OpDef(
        "softmax", (), lambda a, dp: SoftmaxAttrs.build(**a, datapath=dp), lambda be, at, xs, p: be.softmax(at, xs[0])
    ),
    "avg_pool2d": OpDef(
        "avg_pool2d", (), lambda a, dp: AvgPool2dAttrs.build(**a, datapath=dp),
        lambda be, at, xs, p: be.avg_pool2d(at, xs[0]),
    ),
    "max_pool2d": OpDef(
        "max_pool2d", (), lambda a, dp: MaxPool2dAttrs.build(**a), lambda be, at, xs, p: be.max_pool2d(at, xs[0])
    ),
    "lut": OpDef(
        "lut", ("table",), lambda a, dp: LutAttrs.build(**a), lambda be, at, xs, p: be.lut(at, xs[0], p["table"])
    ),
    "matmul": OpDef(
        "matmul", (), lambda a, dp: MatmulAttrs.build(**a, datapath=dp), lambda be, at, xs, p: run_matmul(be, at, *xs)
    ),
    "lstm": OpDef("lstm", ("w_ih", "w_hh", "b_ih", "b_hh"), lambda a, dp: LstmAttrs.build(**a, datapath=dp), _recurrent),
    "gru": OpDef("gru", ("w_ih", "w_hh", "b_ih", "b_hh"), lambda a, dp: GruAttrs.build(**a, datapath=dp), _recurrent),
    "layernorm": OpDef("layernorm", ("gamma", "bias"), lambda a, dp: LayerNormAttrs.build(**a, datapath=dp), _layernorm),
    "reshape": OpDef("reshape", (), lambda a, dp: ReshapeAttrs.build(**a), _reshape, datapath_op=False),
    "permute": OpDef("permute", (), lambda a, dp: PermuteAttrs.build(**a), _permute, datapath_op=False),
    "concat": OpDef("concat", (), lambda a, dp: ConcatAttrs.build(**a), _concat, datapath_op=False),
    "pad": OpDef("pad", (), lambda a, dp: PadAttrs.build(**a), _pad, datapath_op=False),
    "slice": OpDef("slice", (), lambda a, dp: SliceAttrs.build(**a), _slice, datapath_op=False),
    "constant": OpDef("constant", ("codes",), lambda a, dp: ConstantAttrs.build(**a), _constant, datapath_op=False),
}  # fmt: skip


def _custom_build(name: str) -> Callable[[dict[str, Any], Datapath], Any]:
    def build(args: dict[str, Any], datapath: Datapath) -> CustomOpAttrs:
        if args.get("op") != name:
            raise ValueError(f"a {name} node holds the attributes of {args.get('op')!r}")
        return CustomOpAttrs.build(**args)

    return build


def op_def(name: str) -> OpDef:
    """The op called ``name``: a built-in one, or a registered custom op (a dotted name, see
    :mod:`quant.contract.custom`); ``ValueError`` naming the known ops otherwise."""
    if name in OPS:
        return OPS[name]
    if isinstance(name, str) and "." in name:
        custom_op_def(name)  # ValueError naming the registered ones when it is not
        return OpDef(name, (), _custom_build(name), lambda be, at, xs, p: be.custom(at, xs))
    raise ValueError(f"unknown IR op {name!r}; ops: {', '.join(sorted(OPS))} and registered custom ops "
                     f"(dotted names: {', '.join(custom_op_names()) or 'none registered'})")  # fmt: skip
