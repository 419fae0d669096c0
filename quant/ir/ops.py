"""The ops an :class:`~quant.ir.program.IntegerProgram` can hold, one :class:`OpDef` each, by name.

Every datapath op's attributes are the validated record of :mod:`quant.contract.attrs` (the
one both backends run), rebuilt from its ``build_args()`` when a program is loaded; an op's
operands are the program's tensors (codes) and its constant parameters (weights, biases,
tables). Layout ops (``reshape``) only move codes and are run by NumPy for every backend.

>>> sorted(OPS)
['add', 'avg_pool2d', 'conv2d', 'linear', 'lut', 'max_pool2d', 'requantize', 'reshape']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

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
    RequantizeAttrs,
)
from quant.contract.backend import Backend
from quant.contract.datapath import Datapath

__all__ = ["OPS", "OpDef", "ReshapeAttrs", "op_def"]

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


def _requantize(backend: Backend, attrs: RequantizeAttrs, xs: list[Codes], params: Params) -> Codes:
    return backend.requantize(attrs, np.ascontiguousarray(xs[0], dtype=np.int32))


def _bias(params: Params) -> Optional[Codes]:
    b = params.get("bias")
    return None if b is None else np.asarray(b)


OPS: dict[str, OpDef] = {
    "conv2d": OpDef(
        "conv2d", ("weight", "bias"), lambda a, dp: Conv2dAttrs.build(**a, datapath=dp),
        lambda be, at, xs, p: be.conv2d(at, xs[0], p["weight"], _bias(p)),
    ),
    "linear": OpDef(
        "linear", ("weight", "bias"), lambda a, dp: LinearAttrs.build(**a, datapath=dp),
        lambda be, at, xs, p: be.linear(at, xs[0], p["weight"], _bias(p)),
    ),
    "requantize": OpDef("requantize", (), lambda a, dp: RequantizeAttrs.build(**a, datapath=dp), _requantize),
    "add": OpDef(
        "add", (), lambda a, dp: AddAttrs.build(**a, datapath=dp), lambda be, at, xs, p: be.add(at, xs[0], xs[1])
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
    "reshape": OpDef("reshape", (), lambda a, dp: ReshapeAttrs.build(**a), _reshape, datapath_op=False),
}  # fmt: skip


def op_def(name: str) -> OpDef:
    """The op called ``name``; ``ValueError`` naming the known ops otherwise."""
    try:
        return OPS[name]
    except KeyError:
        raise ValueError(f"unknown IR op {name!r}; ops: {', '.join(sorted(OPS))}") from None
