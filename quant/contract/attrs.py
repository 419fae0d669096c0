"""The validated attribute record of every op: built once, used by both backends, the IR and the exporters.

An op of docs/arithmetic.md has two kinds of inputs: **attributes** (geometry, zero points,
the requantization parameters, the output code range, the datapath) and **operands** (the
arrays of codes). Each ``*Attrs`` class here is a frozen record of the attributes of one op;
its ``build`` class method takes the op's keyword arguments as a user writes them, checks
every one of them (``TypeError``/``ValueError`` naming the op and the argument, never an
``assert``) and converts the multipliers to their integer form, so a record that exists is
valid. What depends on the operands is checked by methods of the record on plain ints
(``output_shape(x_shape)``, ``check_bias(...)``), and the code values by
:func:`quant.contract.args.check_code_values`: each backend only reads its own arrays
(extremes, shapes) and asks the record.

Every size is computed on Python ints (no overflow) and bounded here by :data:`MAX_DIM`,
the largest dimension the C kernels' ``int32_t`` fields hold.

>>> from quant.contract.datapath import Datapath
>>> attrs = Conv2dAttrs.build(w_shape=(8, 4, 3, 3), x_zero_point=0, w_zero_point=0, y_zero_point=0,
...                           multiplier=0.01, stride=2, padding=1, datapath=Datapath.preset("tflite_int8"))
>>> attrs.output_shape((1, 4, 32, 32))
(1, 8, 16, 16)
>>> attrs.output_shape((1, 3, 32, 32))
Traceback (most recent call last):
...
ValueError: conv2d: groups=1 does not fit x with 3 channels and w of shape (8, 4, 3, 3) (need C_in = groups * w.shape[1] and C_out divisible by groups)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np

from quant.contract.args import IntPair, check_bool, check_datapath, check_zero_point, output_range, pair, scalar_int
from quant.contract.codes import check_bits, code_range, window_output_size
from quant.contract.datapath import Datapath
from quant.contract.multiplier import (
    AddParams,
    MultiplierLike,
    RequantParams,
    add_params,
    multiplier_values,
    requant_params,
)

__all__ = [
    "MAX_DIM",
    "MAX_PADDED_PLANE",
    "OutputCodes",
    "Conv2dAttrs",
    "LinearAttrs",
    "RequantizeAttrs",
    "AddAttrs",
    "MulAttrs",
    "PoolWindow",
    "AvgPool2dAttrs",
    "MaxPool2dAttrs",
    "LutAttrs",
    "SoftmaxAttrs",
    "softmax_table",
    "ZeroPointLike",
]

#: Largest dimension, stride, padding or dilation an op accepts (the C kernels hold them in int32).
MAX_DIM: int = (1 << 31) - 1
#: Elements of an explicit pooling window (``kh * kw``), and of a conv2d reduction (``C_in/groups * kh * kw``),
#: at most: larger ones are refused by both backends alike (the contract, section 6).
MAX_WINDOW: int = 1 << 24
MAX_REDUCTION: int = MAX_DIM
#: Positions of a conv2d's zero-padded input plane, ``(H + 2 p_h) (W + 2 p_w)``, at most (both backends
#: materialize the plane; a padding of 2^29 around a 2x2 input is refused, not allocated).
MAX_PADDED_PLANE: int = MAX_DIM

ZeroPointLike = Union[int, Sequence[int], Any]

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


def _dims(shape: Sequence[Any], name: str, op: str, ndim: int) -> tuple[int, ...]:
    dims = tuple(int(s) for s in shape)
    if len(dims) != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {dims}")
    if any(d > MAX_DIM for d in dims):
        raise ValueError(f"{op}: {name} has a dimension above {MAX_DIM}: shape {dims}")
    return dims


def _only_the_batch_empty(dims: Sequence[int], name: str, op: str) -> None:
    """Degenerate shapes (section 6): a batch of 0 gives the empty output; an empty channel, spatial or reduction
    dimension is refused by both backends with this error."""
    if any(d < 1 for d in dims[1:]) or dims[0] < 0:
        raise ValueError(f"{op}: {name} of shape {tuple(dims)} has an empty dimension besides the batch; only the "
                         "batch N may be 0 (an empty batch gives an empty output)")  # fmt: skip


def _bounded_pair(v: object, name: str, op: str, minimum: int) -> tuple[int, int]:
    p = pair(v, name, op, minimum)
    if max(p) > MAX_DIM:
        raise ValueError(f"{op}: {name}={v!r} must be at most {MAX_DIM}")
    return p


def _with_op(op: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with its ``ValueError``/``TypeError`` prefixed by ``op``."""
    try:
        return fn(*args, **kwargs)
    except ValueError as err:
        raise ValueError(f"{op}: {err}".replace(f"{op}: {op}: ", f"{op}: ")) from None
    except TypeError as err:
        raise TypeError(f"{op}: {err}".replace(f"{op}: {op}: ", f"{op}: ")) from None


#: Real multipliers as a record keeps them: a float per tensor, a tuple per channel.
RealMultiplier = Union[float, tuple[float, ...]]


def _real(multiplier: MultiplierLike, op: str) -> RealMultiplier:
    values, shape = _with_op(op, multiplier_values, multiplier)
    return tuple(values) if shape else values[0]


def _requant(multiplier: MultiplierLike, datapath: Datapath, op: str) -> tuple[RequantParams, RealMultiplier]:
    """The integer form of ``multiplier`` and its real values (kept so a record can be rebuilt)."""
    params: RequantParams = _with_op(op, requant_params, multiplier, datapath)
    return params, _real(multiplier, op)


def _per_channel_requant(
    multiplier: MultiplierLike, datapath: Datapath, channels: int, op: str
) -> tuple[RequantParams, RealMultiplier]:
    params, real = _requant(multiplier, datapath, op)
    if params.count not in (1, channels):
        raise ValueError(
            f"{op}: multiplier has {params.count} values; it must be a scalar or have one value per "
            f"output channel ({channels})"
        )
    return params, real


def _listed(v: RealMultiplier) -> Union[float, list[float]]:
    return list(v) if isinstance(v, tuple) else v


def _weight_zero_points(w_zero_point: ZeroPointLike, c_out: int, datapath: Datapath, op: str) -> tuple[int, ...]:
    """One zero point per tensor ``(z,)`` or per output channel, each valid for the weight operand."""
    if hasattr(w_zero_point, "tolist") and not isinstance(w_zero_point, (np.integer, int)):
        dtype = str(getattr(w_zero_point, "dtype", ""))
        if "float" in dtype or "bool" in dtype or "complex" in dtype:
            raise TypeError(f"{op}: w_zero_point must be integers, got {dtype}")
        listed = w_zero_point.tolist()
        values = list(np.asarray(listed).reshape(-1).tolist()) if isinstance(listed, list) else [listed]
    elif isinstance(w_zero_point, (list, tuple)):
        values = list(w_zero_point)
    else:
        values = [scalar_int(w_zero_point, "w_zero_point", op)]
    zw = tuple(scalar_int(v, "w_zero_point", op) for v in values)
    if len(zw) not in (1, c_out):
        raise ValueError(f"{op}: w_zero_point has {len(zw)} values, w has {c_out} output channels")
    for z in sorted(set(zw)):
        check_zero_point(z, "w_zero_point", op, datapath.w_bits, datapath.w_signed, datapath.w_zero_point)
    return zw


def _x_zero_point(x_zero_point: object, datapath: Datapath, op: str, name: str = "x_zero_point") -> int:
    z = scalar_int(x_zero_point, name, op)
    check_zero_point(z, name, op, datapath.a_bits, datapath.a_signed, datapath.a_zero_point)
    return z


@dataclass(frozen=True)
class OutputCodes:
    """The output codes of a requantizing op (section 1): ``bits``-wide, ``signed`` or not,
    zero point ``zero_point``, clamped to ``[lo, hi]`` (the code range narrowed by a fused clamp)."""

    bits: int
    signed: bool
    zero_point: int
    lo: int
    hi: int

    @classmethod
    def build(
        cls, op: str, y_bits: object, y_signed: object, y_min: object, y_max: object, y_zero_point: object
    ) -> "OutputCodes":
        """Checked ``y_*`` arguments of ``op`` (see :func:`quant.contract.args.output_range`)."""
        lo, hi = output_range(op, y_bits, y_signed, y_min, y_max, y_zero_point)
        return cls(int(y_bits), bool(y_signed), scalar_int(y_zero_point, "y_zero_point", op), lo, hi)  # type: ignore[call-overload]

    def build_args(self) -> dict[str, Any]:
        """The ``y_*`` keyword arguments that build this output (the clamp as ``y_min``/``y_max``)."""
        return {"y_zero_point": self.zero_point, "y_bits": self.bits, "y_signed": self.signed, "y_min": self.lo,
                "y_max": self.hi}  # fmt: skip


def check_bias_values(
    bias: Optional[tuple[int, int, int]], c_out: int, datapath: Datapath, op: str
) -> None:
    """``bias`` is None or ``(length, min, max)`` of a 1-D bias: one value per output channel, in ``bias_bits``."""
    if bias is None:
        return
    length, bmin, bmax = bias
    if length != c_out:
        raise ValueError(f"{op}: bias has {length} values, expected one per output channel ({c_out})")
    lo, hi = datapath.bias_range
    if length and (bmin < lo or bmax > hi):
        raise ValueError(
            f"{op}: bias has values in [{bmin}, {bmax}] outside the "
            f"{datapath.bias_bits}-bit range [{lo}, {hi}] (Datapath.bias_bits)"
        )


@dataclass(frozen=True)
class Conv2dAttrs:
    """conv2d (sections 4, 5): weight ``(C_out, C_in/groups, kh, kw)``, window, zero points,
    requantization per tensor or per output channel, output codes, datapath."""

    w_shape: tuple[int, int, int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    x_zero_point: int
    w_zero_point: tuple[int, ...]
    requant: RequantParams
    multiplier: RealMultiplier
    output: OutputCodes
    datapath: Datapath
    op: str = "conv2d"

    @classmethod
    def build(
        cls,
        *,
        w_shape: Sequence[int],
        x_zero_point: int,
        w_zero_point: ZeroPointLike,
        y_zero_point: int,
        multiplier: MultiplierLike,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        y_bits: int = 8,
        y_signed: bool = True,
        y_min: Optional[int] = None,
        y_max: Optional[int] = None,
        datapath: Datapath,
    ) -> "Conv2dAttrs":
        """The checked attributes of a conv2d call (keyword names of ``kernels.conv2d``)."""
        op = "conv2d"
        dp = check_datapath(datapath)
        ws = _dims(w_shape, "w", op, 4)
        if ws[1] * ws[2] * ws[3] > MAX_REDUCTION:
            raise ValueError(f"{op}: w of shape {ws} sums {ws[1] * ws[2] * ws[3]} products per output; the reduction "
                             f"length C_in/groups * kh * kw must be at most 2^31 - 1")  # fmt: skip
        if min(ws) < 1:
            raise ValueError(f"{op}: w must have positive dimensions, got shape {ws}")
        g = scalar_int(groups, "groups", op)
        if g < 1 or ws[0] % g:
            raise ValueError(f"{op}: groups={g} does not fit w of shape {ws} (need groups >= 1 dividing C_out)")
        requant, real = _per_channel_requant(multiplier, dp, ws[0], op)
        return cls(
            w_shape=(ws[0], ws[1], ws[2], ws[3]),
            stride=_bounded_pair(stride, "stride", op, 1),
            padding=_bounded_pair(padding, "padding", op, 0),
            dilation=_bounded_pair(dilation, "dilation", op, 1),
            groups=g,
            x_zero_point=_x_zero_point(x_zero_point, dp, op),
            w_zero_point=_weight_zero_points(w_zero_point, ws[0], dp, op),
            requant=requant,
            multiplier=real,
            output=OutputCodes.build(op, y_bits, y_signed, y_min, y_max, y_zero_point),
            datapath=dp,
        )

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again (JSON-able, datapath apart)."""
        return {
            "w_shape": list(self.w_shape), "x_zero_point": self.x_zero_point, "w_zero_point": list(self.w_zero_point),
            "multiplier": _listed(self.multiplier), "stride": list(self.stride), "padding": list(self.padding),
            "dilation": list(self.dilation), "groups": self.groups, **self.output.build_args(),
        }  # fmt: skip

    @property
    def reduction_length(self) -> int:
        """``K = C_in/groups * kh * kw``: products per output, in canonical ``(c, u, v)`` order."""
        return self.w_shape[1] * self.w_shape[2] * self.w_shape[3]

    def output_shape(self, x_shape: Sequence[int]) -> tuple[int, int, int, int]:
        """``(N, C_out, H_out, W_out)`` for ``x`` of ``x_shape``; ``ValueError`` if they do not fit."""
        op = self.op
        n, c_in, h, w = _dims(x_shape, "x", op, 4)
        c_out, cg, kh, kw = self.w_shape
        if c_in != cg * self.groups:
            raise ValueError(
                f"{op}: groups={self.groups} does not fit x with {c_in} channels and w of shape {self.w_shape} "
                "(need C_in = groups * w.shape[1] and C_out divisible by groups)"
            )
        _only_the_batch_empty((n, c_in, h, w), "x", op)
        ho = window_output_size(h, kh, stride=self.stride[0], padding=self.padding[0], dilation=self.dilation[0])
        wo = window_output_size(w, kw, stride=self.stride[1], padding=self.padding[1], dilation=self.dilation[1])
        if ho < 1 or wo < 1:
            raise ValueError(f"{op}: the output would be empty ({ho}x{wo}) for input {h}x{w} and kernel {kh}x{kw}")
        plane = (h + 2 * self.padding[0]) * (w + 2 * self.padding[1])
        if plane > MAX_PADDED_PLANE:
            raise ValueError(f"{op}: padding={self.padding} around a {h}x{w} input makes a padded plane of {plane} "
                             f"positions; at most {MAX_PADDED_PLANE} are allowed")  # fmt: skip
        return n, c_out, ho, wo

    def check_bias(self, bias: Optional[tuple[int, int, int]]) -> None:
        """``bias`` is None or ``(length, min, max)``; see :func:`check_bias_values`."""
        check_bias_values(bias, self.w_shape[0], self.datapath, self.op)


@dataclass(frozen=True)
class LinearAttrs:
    """linear (sections 4, 5): weight ``(N, K)``, zero points, requantization, output codes, datapath."""

    w_shape: tuple[int, int]
    x_zero_point: int
    w_zero_point: tuple[int, ...]
    requant: RequantParams
    multiplier: RealMultiplier
    output: OutputCodes
    datapath: Datapath
    op: str = "linear"

    @classmethod
    def build(
        cls,
        *,
        w_shape: Sequence[int],
        x_zero_point: int,
        w_zero_point: ZeroPointLike,
        y_zero_point: int,
        multiplier: MultiplierLike,
        y_bits: int = 8,
        y_signed: bool = True,
        y_min: Optional[int] = None,
        y_max: Optional[int] = None,
        datapath: Datapath,
    ) -> "LinearAttrs":
        """The checked attributes of a linear call (keyword names of ``kernels.linear``)."""
        op = "linear"
        dp = check_datapath(datapath)
        ws = _dims(w_shape, "w", op, 2)
        if min(ws) < 1:
            raise ValueError(f"{op}: w must have positive dimensions, got shape {ws}")
        requant, real = _per_channel_requant(multiplier, dp, ws[0], op)
        return cls(
            w_shape=(ws[0], ws[1]),
            x_zero_point=_x_zero_point(x_zero_point, dp, op),
            w_zero_point=_weight_zero_points(w_zero_point, ws[0], dp, op),
            requant=requant,
            multiplier=real,
            output=OutputCodes.build(op, y_bits, y_signed, y_min, y_max, y_zero_point),
            datapath=dp,
        )

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again (JSON-able, datapath apart)."""
        return {
            "w_shape": list(self.w_shape), "x_zero_point": self.x_zero_point, "w_zero_point": list(self.w_zero_point),
            "multiplier": _listed(self.multiplier), **self.output.build_args(),
        }  # fmt: skip

    def output_shape(self, x_shape: Sequence[int]) -> tuple[int, int]:
        """``(M, N)`` for ``x`` of shape ``(M, K)``; ``ValueError`` if ``K`` differs from the weight's."""
        m, k = _dims(x_shape, "x", self.op, 2)
        if k != self.w_shape[1]:
            raise ValueError(f"{self.op}: x has K={k} but w has K={self.w_shape[1]} (w is (N, K))")
        return m, self.w_shape[0]

    def check_bias(self, bias: Optional[tuple[int, int, int]]) -> None:
        """``bias`` is None or ``(length, min, max)``; see :func:`check_bias_values`."""
        check_bias_values(bias, self.w_shape[0], self.datapath, self.op)


@dataclass(frozen=True)
class RequantizeAttrs:
    """requantize (sections 5, 6): input zero point, multiplier (per tensor, or along ``axis``), output codes."""

    in_zero_point: int
    requant: RequantParams
    multiplier: RealMultiplier
    axis: Optional[int]
    output: OutputCodes
    datapath: Datapath
    op: str = "requantize"

    @classmethod
    def build(
        cls,
        *,
        in_zero_point: int,
        multiplier: MultiplierLike,
        y_zero_point: int,
        y_bits: int = 8,
        y_signed: bool = True,
        axis: Optional[int] = None,
        datapath: Datapath,
    ) -> "RequantizeAttrs":
        """The checked attributes of a requantize call."""
        op = "requantize"
        dp = check_datapath(datapath)
        z_in = scalar_int(in_zero_point, "in_zero_point", op)
        if not _INT32_MIN <= z_in <= _INT32_MAX:
            raise ValueError(f"{op}: in_zero_point={z_in} must lie in the int32 range")
        output = OutputCodes.build(op, y_bits, y_signed, None, None, y_zero_point)
        ax = None if axis is None else scalar_int(axis, "axis", op)
        params, real = _requant(multiplier, dp, op)
        if ax is None and params.count != 1:
            raise ValueError(f"{op}: a per-channel multiplier of {params.count} values needs a channel axis")
        return cls(in_zero_point=z_in, requant=params, multiplier=real, axis=ax, output=output, datapath=dp)

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again (JSON-able, datapath apart)."""
        args = self.output.build_args()
        del args["y_min"], args["y_max"]  # requantize clamps to the full output range
        return {"in_zero_point": self.in_zero_point, "multiplier": _listed(self.multiplier), "axis": self.axis, **args}

    def channel_layout(self, q_shape: Sequence[int]) -> tuple[int, int, int]:
        """``(outer, channels, inner)`` of ``q``'s shape around ``axis`` (per tensor: ``(1, 1, size)``)."""
        shape = tuple(int(s) for s in q_shape)
        size = math.prod(shape)
        if self.axis is None:
            return 1, 1, size
        if not -len(shape) <= self.axis < len(shape):
            raise ValueError(f"{self.op}: axis={self.axis} is out of range for q of shape {shape}")
        ax = self.axis % len(shape)
        channels = shape[ax]
        if self.requant.count not in (1, channels):
            raise ValueError(
                f"{self.op}: multiplier has {self.requant.count} values but dimension {ax} of the input has "
                f"{channels} channels"
            )
        if self.requant.count == 1:
            return 1, 1, size
        return math.prod(shape[:ax]), channels, math.prod(shape[ax + 1 :])


@dataclass(frozen=True)
class MulAttrs:
    """mul (section 6.2): ``(a - z_a) (b - z_b)`` in the accumulator, requantized with ``M = s_a s_b / s_y``;
    ``b`` has ``a``'s shape or is broadcast along its trailing dimensions (one value per leading index)."""

    a_zero_point: int
    b_zero_point: int
    requant: RequantParams
    multiplier: RealMultiplier
    output: OutputCodes
    datapath: Datapath
    op: str = "mul"

    @classmethod
    def build(
        cls,
        *,
        a_zero_point: int,
        b_zero_point: int,
        multiplier: MultiplierLike,
        y_zero_point: int,
        y_bits: int = 8,
        y_signed: bool = True,
        y_min: Optional[int] = None,
        y_max: Optional[int] = None,
        datapath: Datapath,
    ) -> "MulAttrs":
        """The checked attributes of a mul call (``multiplier`` per tensor)."""
        op = "mul"
        dp = check_datapath(datapath)
        za = _x_zero_point(a_zero_point, dp, op, "a_zero_point")
        zb = _x_zero_point(b_zero_point, dp, op, "b_zero_point")
        params, real = _per_channel_requant(multiplier, dp, 1, op)
        output = OutputCodes.build(op, y_bits, y_signed, y_min, y_max, y_zero_point)
        return cls(a_zero_point=za, b_zero_point=zb, requant=params, multiplier=real, output=output, datapath=dp)

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again (JSON-able, datapath apart)."""
        return {"a_zero_point": self.a_zero_point, "b_zero_point": self.b_zero_point,
                "multiplier": _listed(self.multiplier), **self.output.build_args()}  # fmt: skip

    def broadcast(self, a_shape: Sequence[int], b_shape: Sequence[int]) -> tuple[int, int, bool]:
        """``(rows, inner, per_row)``: ``a`` as ``rows x inner``; ``per_row`` when ``b`` holds one value per row
        (``b``'s shape is ``a``'s with trailing dimensions of 1); ``ValueError`` for other shapes."""
        a_dims, b_dims = tuple(int(d) for d in a_shape), tuple(int(d) for d in b_shape)
        if a_dims == b_dims:
            return math.prod(a_dims), 1, False
        if len(b_dims) == len(a_dims):
            lead = len(b_dims)
            while lead > 0 and b_dims[lead - 1] == 1:
                lead -= 1
            if lead < len(a_dims) and b_dims[:lead] == a_dims[:lead]:
                return math.prod(a_dims[:lead]), math.prod(a_dims[lead:]), True
        raise ValueError(f"{self.op}: b of shape {b_dims} must have a's shape {a_dims} or be broadcast along its "
                         "trailing dimensions (e.g. (N, C, 1, 1) against (N, C, H, W))")  # fmt: skip


@dataclass(frozen=True)
class AddAttrs:
    """add (section 6.1): the zero points of both inputs, the add parameters, output codes, datapath."""

    a_zero_point: int
    b_zero_point: int
    params: AddParams
    a_multiplier: float
    b_multiplier: float
    output: OutputCodes
    datapath: Datapath
    op: str = "add"

    @classmethod
    def build(
        cls,
        *,
        a_zero_point: int,
        b_zero_point: int,
        a_multiplier: float,
        b_multiplier: float,
        y_zero_point: int,
        y_bits: int = 8,
        y_signed: bool = True,
        y_min: Optional[int] = None,
        y_max: Optional[int] = None,
        datapath: Datapath,
    ) -> "AddAttrs":
        """The checked attributes of an add call."""
        op = "add"
        dp = check_datapath(datapath)
        za = _x_zero_point(a_zero_point, dp, op, "a_zero_point")
        zb = _x_zero_point(b_zero_point, dp, op, "b_zero_point")
        output = OutputCodes.build(op, y_bits, y_signed, y_min, y_max, y_zero_point)
        params: AddParams = _with_op(op, add_params, a_multiplier, b_multiplier, dp)
        ma = float(multiplier_values(a_multiplier)[0][0])  # add_params accepted both as scalars
        mb = float(multiplier_values(b_multiplier)[0][0])
        return cls(a_zero_point=za, b_zero_point=zb, params=params, a_multiplier=ma, b_multiplier=mb, output=output,
                   datapath=dp)  # fmt: skip

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again (JSON-able, datapath apart)."""
        return {"a_zero_point": self.a_zero_point, "b_zero_point": self.b_zero_point, "a_multiplier": self.a_multiplier,
                "b_multiplier": self.b_multiplier, **self.output.build_args()}  # fmt: skip


@dataclass(frozen=True)
class PoolWindow:
    """The window of a pooling op (section 6): ``kernel_size=None`` pools the whole plane."""

    kernel_size: Optional[tuple[int, int]]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @classmethod
    def build(
        cls, op: str, kernel_size: Optional[IntPair], stride: Optional[IntPair], padding: IntPair, dilation: IntPair
    ) -> "PoolWindow":
        """Checked window arguments of ``op`` (``stride=None``: the kernel size; ``padding <= kernel // 2``)."""
        p = _bounded_pair(padding, "padding", op, 0)
        d = _bounded_pair(dilation, "dilation", op, 1)
        if kernel_size is None:
            if stride is not None or p != (0, 0) or d != (1, 1):
                raise ValueError(f"{op}: global pooling (kernel_size=None) takes no stride, padding or dilation")
            return cls(None, (1, 1), p, d)
        k = _bounded_pair(kernel_size, "kernel_size", op, 1)
        s = _bounded_pair(stride, "stride", op, 1) if stride is not None else k
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise ValueError(f"{op}: padding={p} must be at most half the kernel size {k}")
        if k[0] * k[1] > MAX_WINDOW:
            raise ValueError(f"{op}: kernel_size={k} has {k[0] * k[1]} elements; a pooling window holds at most "
                             f"2^24 = {MAX_WINDOW} (global pooling: kernel_size=None)")  # fmt: skip
        return cls(k, s, p, d)

    def build_args(self) -> dict[str, Any]:
        """``kernel_size``, ``stride``, ``padding`` as :meth:`build` takes them (global: no stride)."""
        if self.kernel_size is None:
            return {"kernel_size": None, "stride": None, "padding": list(self.padding)}
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding)}

    def resolve(
        self, x_shape: Sequence[int], op: str
    ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
        """``(kernel, stride, padding, dilation)`` on ``x`` of ``x_shape`` (global: the whole plane)."""
        _, _, h, w = _dims(x_shape, "x", op, 4)
        if self.kernel_size is None:
            return (h, w), (h, w), (0, 0), (1, 1)
        return self.kernel_size, self.stride, self.padding, self.dilation

    def output_shape(self, x_shape: Sequence[int], op: str) -> tuple[int, int, int, int]:
        """``(N, C, H_out, W_out)``; ``ValueError`` if the output would be empty."""
        n, c, h, w = _dims(x_shape, "x", op, 4)
        _only_the_batch_empty((n, c, h, w), "x", op)
        k, s, p, d = self.resolve(x_shape, op)
        ho = window_output_size(h, k[0], stride=s[0], padding=p[0], dilation=d[0])
        wo = window_output_size(w, k[1], stride=s[1], padding=p[1], dilation=d[1])
        if ho < 1 or wo < 1:
            raise ValueError(f"{op}: the output would be empty ({ho}x{wo}) for input {(h, w)} and kernel {k}")
        return n, c, ho, wo


@dataclass(frozen=True)
class AvgPool2dAttrs:
    """avg_pool2d (section 6): the window, the codes' zero point and the datapath (its ``rounding``
    rounds the division by the count of valid elements)."""

    window: PoolWindow
    zero_point: int
    datapath: Datapath
    op: str = "avg_pool2d"

    @classmethod
    def build(
        cls,
        kernel_size: Optional[IntPair],
        stride: Optional[IntPair] = None,
        padding: IntPair = 0,
        *,
        zero_point: int,
        datapath: Datapath,
    ) -> "AvgPool2dAttrs":
        """The checked attributes of an avg_pool2d call."""
        op = "avg_pool2d"
        dp = check_datapath(datapath)
        z = scalar_int(zero_point, "zero_point", op)
        if not _INT32_MIN <= z <= _INT32_MAX:
            raise ValueError(f"{op}: zero_point={z} must lie in the int32 range")
        return cls(PoolWindow.build(op, kernel_size, stride, padding, 1), z, dp)

    def output_shape(self, x_shape: Sequence[int]) -> tuple[int, int, int, int]:
        """See :meth:`PoolWindow.output_shape`."""
        return self.window.output_shape(x_shape, self.op)

    def build_args(self) -> dict[str, Any]:
        """The arguments of :meth:`build` that give this record again (JSON-able, datapath apart)."""
        return {**self.window.build_args(), "zero_point": self.zero_point}


@dataclass(frozen=True)
class MaxPool2dAttrs:
    """max_pool2d (section 6): the window; the largest valid code wins (no datapath involved)."""

    window: PoolWindow
    op: str = "max_pool2d"

    @classmethod
    def build(
        cls, kernel_size: Optional[IntPair], stride: Optional[IntPair] = None, padding: IntPair = 0, dilation: IntPair = 1
    ) -> "MaxPool2dAttrs":
        """The checked attributes of a max_pool2d call."""
        return cls(PoolWindow.build("max_pool2d", kernel_size, stride, padding, dilation))

    def output_shape(self, x_shape: Sequence[int]) -> tuple[int, int, int, int]:
        """See :meth:`PoolWindow.output_shape`."""
        return self.window.output_shape(x_shape, self.op)

    def build_args(self) -> dict[str, Any]:
        """The arguments of :meth:`build` that give this record again (JSON-able)."""
        return {**self.window.build_args(), "dilation": list(self.window.dilation)}


#: Softmax's exponential table is in units of 2^-16: ``table[0] = 2^16``.
SOFTMAX_ONE: int = 1 << 16
#: The longest softmax axis (the sum of ``2^16``-scaled exponentials stays below ``2^31``).
SOFTMAX_MAX_LENGTH: int = 1 << 15


def softmax_table(x_scale: float, x_bits: int) -> tuple[int, ...]:
    """``round(2^16 exp(-s_x d))`` for ``d = 0 .. 2^b - 1`` (float64, ties to even): softmax's exponentials
    of the distances ``d = max - q`` of ``b``-bit codes with scale ``s_x`` (section 6.3)."""
    return tuple(int(round(SOFTMAX_ONE * math.exp(-x_scale * d))) for d in range(1 << x_bits))


@dataclass(frozen=True)
class SoftmaxAttrs:
    """softmax over ``axis`` (section 6.3): ``E = table[max - q]``, ``y = round(E 2^y_bits / sum E) + z_y``,
    output scale ``2^-y_bits`` and zero point 0 (unsigned) or ``-2^(y_bits-1)`` (signed)."""

    axis: int
    x_bits: int
    x_signed: bool
    table: tuple[int, ...]
    output: OutputCodes
    datapath: Datapath
    op: str = "softmax"

    @classmethod
    def build(
        cls, *, axis: int, x_bits: int, x_signed: bool, table: Sequence[int], y_bits: int = 8, y_signed: bool = False,
        datapath: Datapath,
    ) -> "SoftmaxAttrs":  # fmt: skip
        """Checked attributes; ``table`` from :func:`softmax_table` (``2^x_bits`` entries, ``table[0] = 2^16``,
        non-increasing, none negative)."""
        op = "softmax"
        dp = check_datapath(datapath)
        ax = scalar_int(axis, "axis", op)
        if ax < 1:
            raise ValueError(f"{op}: axis={ax} must be >= 1 (a dimension after the batch)")
        bits = check_bits(x_bits, "x_bits", op)
        t = tuple(scalar_int(v, "table", op) for v in table)
        if len(t) != 1 << bits or not t or t[0] != SOFTMAX_ONE or any(b > a for a, b in zip(t, t[1:])) or t[-1] < 0:
            raise ValueError(f"{op}: table must hold 2^x_bits = {1 << bits} non-increasing entries from "
                             f"{SOFTMAX_ONE} down, none negative")  # fmt: skip
        yb = check_bits(y_bits, "y_bits", op)
        ys = check_bool(y_signed, "y_signed", op)
        z = -(1 << (yb - 1)) if ys else 0
        output = OutputCodes.build(op, yb, ys, None, None, z)
        return cls(ax, bits, check_bool(x_signed, "x_signed", op), t, output, dp)

    @property
    def scale(self) -> float:
        """The output scale ``2^-y_bits``."""
        return 2.0 ** -self.output.bits

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again (JSON-able, datapath apart)."""
        return {"axis": self.axis, "x_bits": self.x_bits, "x_signed": self.x_signed, "table": list(self.table),
                "y_bits": self.output.bits, "y_signed": self.output.signed}  # fmt: skip

    def layout(self, x_shape: Sequence[int]) -> tuple[int, int, int]:
        """``(outer, length, inner)`` of ``x`` around ``axis``; ``ValueError`` if it does not fit."""
        shape = tuple(int(d) for d in x_shape)
        if self.axis >= len(shape):
            raise ValueError(f"{self.op}: axis={self.axis} is out of range for x of shape {shape}")
        length = shape[self.axis]
        if not 1 <= length <= SOFTMAX_MAX_LENGTH:
            raise ValueError(f"{self.op}: the axis has {length} elements; 1..{SOFTMAX_MAX_LENGTH} are supported")
        return math.prod(shape[: self.axis]), length, math.prod(shape[self.axis + 1 :])


@dataclass(frozen=True)
class LutAttrs:
    """lut (section 6): the input code type and the number of tables: one (``channels = 1``) for every
    element, or one per channel (axis 1 of ``x``, e.g. PReLU's per-channel slopes); each table has
    ``2^x_bits`` entries."""

    x_bits: int
    x_signed: bool
    channels: int = 1
    op: str = "lut"

    @classmethod
    def build(cls, *, x_bits: int, x_signed: bool, channels: int = 1) -> "LutAttrs":
        """The checked attributes of a lut call."""
        c = scalar_int(channels, "channels", "lut")
        if not 1 <= c <= MAX_DIM:
            raise ValueError(f"lut: channels={c} must be in [1, {MAX_DIM}]")
        return cls(check_bits(x_bits, "x_bits", "lut"), check_bool(x_signed, "x_signed", "lut"), c)

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again."""
        return {"x_bits": self.x_bits, "x_signed": self.x_signed, "channels": self.channels}

    @property
    def table_length(self) -> int:
        """``channels * 2^x_bits``: per table, one entry per input code, in increasing code order."""
        return self.channels << self.x_bits

    def inner(self, x_shape: Sequence[int]) -> int:
        """Elements per channel and sample of an ``x`` of ``x_shape`` (``ValueError`` unless axis 1 has
        ``channels`` entries); with one table, every element is its own."""
        if self.channels == 1:
            return max(1, math.prod(x_shape))
        if len(x_shape) < 2 or x_shape[1] != self.channels:
            raise ValueError(f"{self.op}: {self.channels} per-channel tables need x of shape (N, {self.channels}, ...), "
                             f"got {tuple(x_shape)}")  # fmt: skip
        return max(1, math.prod(x_shape[2:]))

    @property
    def x_range(self) -> tuple[int, int]:
        """The input code range (binary {-1, +1} reported as ``(-1, 1)``)."""
        return code_range(self.x_bits, self.x_signed)

    def check_table(self, length: int) -> None:
        """``ValueError`` unless the table has ``2^x_bits`` entries."""
        if length != self.table_length:
            expected = f"2^x_bits = {self.table_length}" if self.channels == 1 else (
                f"channels * 2^x_bits = {self.table_length}")  # fmt: skip
            raise ValueError(f"{self.op}: table has {length} entries, expected {expected}")
