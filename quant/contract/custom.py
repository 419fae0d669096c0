"""Custom ops of the integer datapath: what a registered op is, and the validated record of one call.

A custom op (docs/arithmetic.md section 10) is an op the contract does not define but a user
(or this project, for :mod:`quant.custom.nms`) does, with three implementations that must agree:

* ``float_fn(*tensors, **options)``: the real-valued function the model calls (fast mode,
  calibration, float evaluation);
* ``reference(*codes, **params)``: the integer definition, on int64 torch tensors of codes,
  returning int64 codes (the ``"torch_ref"`` backend and exact simulation run it);
* a C function of the ABI in ``kernels/c/include/qk_custom.h`` (the ``"c"`` backend runs it),
  found by ``c_symbol`` in the kernel library itself (``c_library=None``) or in a user's
  shared library.

The bridge from reals to integers is ``integer_params(inputs, output, datapath, **options)``:
from the qparams of the operands (:class:`CustomOperand`) and the call's options it returns the
op's integer parameters by name (ints or sequences of ints), which is all the integer
implementations see. :class:`CustomOpAttrs` is the validated record of one call: the op, its
integer parameters in the registered order, the output code type and per-sample shape. Both
backends, the IR and the exporters read that record.

The registry itself (:func:`register_custom_op`, :func:`custom_op_def`) lives here so that
either backend finds an op's implementations by name; :func:`quant.register_op` is the
public way in.

>>> attrs = CustomOpAttrs.build(op="example.negate", params={"zero_point": 3}, x_bits=[8], x_signed=[False],
...                             y_bits=8, y_signed=False, shape=(4,), param_names=("zero_point",))
>>> attrs.build_args()["params"], attrs.param("zero_point")
({'zero_point': 3}, 3)
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

from quant.contract.args import check_bool
from quant.contract.codes import check_bits

__all__ = [
    "CUSTOM_MAX_DIMS",
    "CustomOpAttrs",
    "CustomOpDef",
    "CustomOperand",
    "ParamValue",
    "custom_op_def",
    "custom_op_names",
    "register_custom_op",
    "unregister_custom_op",
]

#: Dimensions of a tensor crossing the C ABI (``QK_CUSTOM_MAX_DIMS``), the batch included.
CUSTOM_MAX_DIMS = 8
_INT64 = (-(1 << 63), (1 << 63) - 1)
_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

#: One integer parameter: a scalar or a sequence of int64 values.
ParamValue = Union[int, tuple[int, ...]]


class CustomOperand(NamedTuple):
    """One operand (or the output) of a custom op as ``integer_params`` sees it: ``bits``-wide ``signed``
    codes standing for ``scale * (code - zero_point)``, per-sample ``shape`` (the batch excluded)."""

    scale: float
    zero_point: int
    bits: int
    signed: bool
    shape: tuple[int, ...]


@dataclass(frozen=True)
class CustomOpDef:
    """A registered custom op (see the module docstring).

    ``n_inputs`` tensors of codes go in, one comes out; ``param_names`` fixes the order in which
    the C function receives the integer parameters; ``output_like`` is the index of the input
    whose qparams the output keeps (NMS returns scores), or ``None`` for qparams from calibration.
    """

    name: str
    n_inputs: int
    param_names: tuple[str, ...]
    float_fn: Callable[..., Any]
    integer_params: Callable[..., Mapping[str, Any]]
    reference: Callable[..., Any]
    c_symbol: str
    c_library: Optional[str] = None
    output_like: Optional[int] = None
    doc: str = ""
    #: The C99 sources of the C function, for the standalone C export (``c_library=None``: the kernel
    #: library's own source of ``c_symbol``).
    c_sources: tuple[str, ...] = ()
    #: ``check_params(attrs)``: refuses (``ValueError``) integer parameters or code types the op cannot take,
    #: when the record is built, so both backends see the same refusal (the C function checks again).
    check_params: Optional[Callable[["CustomOpAttrs"], None]] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"register_op: name={self.name!r} must be a dotted lower-case name such as "
                             "'detection.nms' (a namespace keeps custom ops apart from the built-in ones)")  # fmt: skip
        if isinstance(self.n_inputs, bool) or not isinstance(self.n_inputs, int) or not 1 <= self.n_inputs <= 16:
            raise ValueError(f"register_op {self.name!r}: n_inputs={self.n_inputs!r} must be an int in [1, 16]")
        names = self.param_names
        if len(set(names)) != len(names) or any(not (isinstance(n, str) and n.isidentifier()) or keyword.iskeyword(n)
                                                for n in names):  # fmt: skip
            raise ValueError(f"register_op {self.name!r}: param_names={list(names)!r} must be distinct identifiers")
        for what in ("float_fn", "integer_params", "reference"):
            if not callable(getattr(self, what)):
                raise TypeError(f"register_op {self.name!r}: {what} must be callable")
        if not isinstance(self.c_symbol, str) or not self.c_symbol.isidentifier():
            raise ValueError(f"register_op {self.name!r}: c_symbol={self.c_symbol!r} must be a C identifier")
        if self.c_library is not None and not isinstance(self.c_library, str):
            raise TypeError(f"register_op {self.name!r}: c_library must be a path (str) or None (the kernel library)")
        if not isinstance(self.c_sources, tuple) or not all(isinstance(s, str) and s.endswith(".c") for s in self.c_sources):
            raise ValueError(f"register_op {self.name!r}: c_sources={self.c_sources!r} must be paths of .c files")
        if self.output_like is not None and (
            isinstance(self.output_like, bool) or not isinstance(self.output_like, int)
            or not 0 <= self.output_like < self.n_inputs
        ):  # fmt: skip
            raise ValueError(f"register_op {self.name!r}: output_like={self.output_like!r} must be None or an input "
                             f"index in [0, {self.n_inputs - 1}]")  # fmt: skip


_REGISTRY: dict[str, CustomOpDef] = {}
#: Custom ops this project ships: name -> the module that registers it when imported.
BUILTIN_CUSTOM_OPS: dict[str, str] = {"detection.nms": "quant.custom.nms"}


def register_custom_op(op: CustomOpDef) -> CustomOpDef:
    """Add ``op`` to the registry; a name is registered once."""
    if op.name in _REGISTRY:
        raise ValueError(f"register_op: a custom op named {op.name!r} is already registered")
    _REGISTRY[op.name] = op
    return op


def unregister_custom_op(name: str) -> None:
    """Take the op called ``name`` out of the registry (``KeyError`` when there is none)."""
    del _REGISTRY[name]


def custom_op_names() -> list[str]:
    """The registered custom ops (those shipped register when first asked for by name)."""
    return sorted(_REGISTRY)


def custom_op_def(name: str) -> CustomOpDef:
    """The custom op called ``name``; a shipped one is imported on first use; ``ValueError`` otherwise."""
    if name not in _REGISTRY and name in BUILTIN_CUSTOM_OPS:
        import importlib

        importlib.import_module(BUILTIN_CUSTOM_OPS[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(custom_op_names()) or "none"
        raise ValueError(f"custom op {name!r} is not registered (registered: {known}); register it with "
                         "quant.register_op before loading or running a program that uses it") from None  # fmt: skip


def _param_value(v: Any, op: str, name: str) -> ParamValue:
    def one(x: Any) -> int:
        if isinstance(x, bool) or not hasattr(x, "__index__"):
            raise TypeError(f"{op}: parameter {name!r} must hold ints, got {type(x).__name__}")
        i = int(x.__index__())
        if not _INT64[0] <= i <= _INT64[1]:
            raise ValueError(f"{op}: parameter {name!r} holds {i}, outside int64")
        return i

    if isinstance(v, (list, tuple)) or (hasattr(v, "tolist") and getattr(v, "ndim", 0) >= 1):
        values = v.tolist() if hasattr(v, "tolist") else list(v)
        if any(isinstance(x, (list, tuple)) for x in values):
            raise ValueError(f"{op}: parameter {name!r} must be an int or a flat sequence of ints")
        return tuple(one(x) for x in values)
    if hasattr(v, "tolist"):  # a 0-d array or tensor
        v = v.tolist()
    return one(v)


@dataclass(frozen=True)
class CustomOpAttrs:
    """One call of a custom op: the op's registered ``op`` name, its integer ``params`` (name, value) in
    the registered order, the code type of each input (``x_bits``, ``x_signed``), the output codes
    (``y_bits``, ``y_signed``) and the output's per-sample ``shape``; its batch is the first input's."""

    op: str
    params: tuple[tuple[str, ParamValue], ...]
    x_bits: tuple[int, ...]
    x_signed: tuple[bool, ...]
    y_bits: int
    y_signed: bool
    shape: tuple[int, ...]

    @classmethod
    def build(
        cls,
        *,
        op: str,
        params: Mapping[str, Any],
        x_bits: Sequence[int],
        x_signed: Sequence[bool],
        y_bits: int,
        y_signed: bool,
        shape: Sequence[int],
        param_names: Optional[Sequence[str]] = None,
    ) -> "CustomOpAttrs":
        """The checked record; ``param_names`` defaults to the registered op's (it must be registered)."""
        op_def: Optional[CustomOpDef] = None
        if param_names is None:
            op_def = custom_op_def(op)
            names, n_inputs = op_def.param_names, op_def.n_inputs
        else:
            names, n_inputs = tuple(param_names), len(x_bits)
        if len(x_bits) != n_inputs or len(x_signed) != n_inputs:
            raise ValueError(f"{op}: x_bits={list(x_bits)} and x_signed={list(x_signed)} must describe its "
                             f"{n_inputs} input(s)")  # fmt: skip
        if not isinstance(params, Mapping):
            raise TypeError(f"{op}: integer parameters must be a mapping of name -> int(s), got {type(params).__name__}")
        missing, extra = [n for n in names if n not in params], sorted(set(params) - set(names))
        if missing or extra:
            raise ValueError(f"{op}: integer parameters must be exactly {list(names)}"
                             f"{'; missing ' + str(missing) if missing else ''}"
                             f"{'; unexpected ' + str(extra) if extra else ''}")  # fmt: skip
        values = tuple((n, _param_value(params[n], op, n)) for n in names)
        dims = tuple(shape)
        if any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= (1 << 31) - 1 for d in dims):
            raise ValueError(f"{op}: output shape {list(dims)} must hold ints in [1, 2^31 - 1]")
        if len(dims) + 1 > CUSTOM_MAX_DIMS:
            raise ValueError(f"{op}: outputs of {len(dims) + 1} dimensions; the C ABI holds {CUSTOM_MAX_DIMS}")
        xb = tuple(check_bits(b, f"x_bits[{i}]", op) for i, b in enumerate(x_bits))
        xs = tuple(check_bool(v, f"x_signed[{i}]", op) for i, v in enumerate(x_signed))
        record = cls(op, values, xb, xs, check_bits(y_bits, "y_bits", op), check_bool(y_signed, "y_signed", op), dims)
        if op_def is not None and op_def.check_params is not None:
            try:
                op_def.check_params(record)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{op}: {err}".replace(f"{op}: {op}: ", f"{op}: ")) from None
        return record

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again (JSON-able)."""
        return {"op": self.op, "params": {n: list(v) if isinstance(v, tuple) else v for n, v in self.params},
                "x_bits": list(self.x_bits), "x_signed": list(self.x_signed), "y_bits": self.y_bits, "y_signed": self.y_signed, "shape": list(self.shape)}  # fmt: skip

    def describe(self) -> str:
        """``name=value`` of every integer parameter (long sequences shortened), for ``print(program)``."""

        def short(v: ParamValue) -> str:
            if isinstance(v, int):
                return str(v)
            return "[" + ", ".join(map(str, v[:4])) + (", ..." if len(v) > 4 else "") + "]"

        return " ".join(f"{n}={short(v)}" for n, v in self.params)

    def batch(self, input_shapes: Sequence[Sequence[int]]) -> int:
        """The batch ``N`` of a call on inputs of ``input_shapes`` (the first input's first dimension).

        Degenerate shapes (section 6), the same in both backends: when every input's batch is 0 the
        output is the empty ``(0, *shape)`` and the op is not called; any other empty dimension (or a
        scalar input) is a ``ValueError`` naming the input.
        """
        for i, dims in enumerate(input_shapes):
            if len(dims) == 0 or any(d < 1 for d in dims[1:]):
                raise ValueError(f"{self.op}: input {i} of shape {tuple(dims)} has an empty dimension besides the "
                                 "batch (or none at all); only the batch N may be 0 (an empty batch gives an empty "
                                 "output)")  # fmt: skip
        batches = [int(dims[0]) for dims in input_shapes]
        if 0 in batches and any(batches):
            raise ValueError(f"{self.op}: the inputs' batches {batches} mix empty and non-empty")
        return batches[0] if batches else 0

    @property
    def param_dict(self) -> dict[str, ParamValue]:
        """The integer parameters by name (the reference's keyword arguments)."""
        return dict(self.params)

    def param(self, name: str) -> ParamValue:
        """One integer parameter."""
        return self.param_dict[name]
