"""Checks of the scalar arguments of the integer ops (docs/arithmetic.md): the one place that
accepts or refuses a zero point, an output range, a window pair or an int, used by the
validated attribute records of :mod:`quant.contract.attrs`, which both backends share.

A scalar may be a Python int, a NumPy integer or a one-element integer tensor (anything
with ``__index__`` that is not a bool); this module imports no tensor library.

>>> output_range("conv2d", 8, False, 0, 6 * 16, 0)   # fused ReLU6 at s_y = 1/16
(0, 96)
>>> pair((3, 1), "kernel_size", "max_pool2d", 1)
(3, 1)
>>> scalar_int(2.0, "groups", "conv2d")
Traceback (most recent call last):
...
TypeError: conv2d: groups must be an int, got float
"""

from __future__ import annotations

import operator
from typing import Any, Iterable, Sequence, Union, cast

import numpy as np

from quant.contract.codes import check_bits, code_kind, code_range, pack_code_range
from quant.contract.datapath import Datapath

__all__ = [
    "IntPair",
    "check_bool",
    "check_code_values",
    "check_datapath",
    "check_pack_values",
    "check_zero_point",
    "output_range",
    "pair",
    "scalar_int",
]

IntPair = Union[int, Sequence[int]]


def check_datapath(datapath: object) -> Datapath:
    """``datapath`` itself, or ``TypeError`` if it is not a :class:`Datapath`."""
    if not isinstance(datapath, Datapath):
        raise TypeError(f"datapath must be a Datapath, got {type(datapath).__name__}")
    return datapath


def _is_bool(v: object) -> bool:
    return isinstance(v, (bool, np.bool_)) or "bool" in str(getattr(v, "dtype", ""))


def scalar_int(v: object, name: str, op: str) -> int:
    """``v`` as a Python int: an int, a NumPy integer or a one-element integer tensor; never a bool."""
    if type(v) is int:
        return v
    if not _is_bool(v):
        try:
            return operator.index(v)  # type: ignore[arg-type]
        except TypeError:
            pass
    raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")


def check_bool(v: object, name: str, op: str) -> bool:
    """``v`` as a bool (a NumPy bool is accepted), or ``TypeError`` naming it."""
    if isinstance(v, np.bool_):
        return bool(v)
    if not isinstance(v, bool):
        raise TypeError(f"{op}: {name} must be a bool, got {type(v).__name__}")
    return v


def check_code_values(vmin: int, vmax: int, has_zero: bool, name: str, op: str, bits: int, signed: bool) -> None:
    """``ValueError`` unless codes with extremes ``vmin``/``vmax`` lie in the ``bits``/``signed`` code range
    (binary codes: also ``has_zero`` false). Each backend computes the extremes of its own array type."""
    lo, hi = code_range(bits, signed)
    if vmin < lo or vmax > hi:
        raise ValueError(
            f"{op}: {name} has values in [{vmin}, {vmax}] outside the {code_kind(bits, signed)} code range [{lo}, {hi}]"
        )
    if bits == 1 and signed and has_zero:
        raise ValueError(f"{op}: {name} holds 0, but binary codes are -1 or +1")


def check_zero_point(z: int, name: str, op: str, bits: int, signed: bool, supported: bool) -> None:
    """``ValueError`` unless ``z`` is a valid zero point of ``bits``/``signed`` codes (0 where unsupported or binary)."""
    lo, hi = code_range(bits, signed)
    if not supported and z != 0:
        raise ValueError(f"{op}: {name}={z} must be 0: the datapath has no zero point for this operand")
    if bits == 1 and signed:
        if z != 0:
            raise ValueError(f"{op}: {name}={z} must be 0 for binary codes")
        return
    if not lo <= z <= hi:
        raise ValueError(f"{op}: {name}={z} is outside the code range [{lo}, {hi}]")


def check_pack_values(vmin: int, vmax: int, mixes_minus_one_and_zero: bool, bits: int, signed: "bool | None") -> None:
    """``ValueError`` unless codes with extremes ``vmin``/``vmax`` can be packed in ``bits`` bits
    (:func:`quant.contract.codes.pack_code_range`); 1-bit codes may not mix -1 and 0."""
    lo, hi = pack_code_range(bits, signed)
    if vmin < lo or vmax > hi:
        raise ValueError(f"pack: codes in [{vmin}, {vmax}] do not fit {bits} bits (range [{lo}, {hi}])")
    if bits == 1 and mixes_minus_one_and_zero:
        raise ValueError("pack: 1-bit codes mix -1 and 0 (binary codes are {-1, +1}, unsigned {0, 1})")


def output_range(
    op: str, y_bits: object, y_signed: object, y_min: object, y_max: object, y_zero_point: object
) -> tuple[int, int]:
    """``[lo, hi]``: the ``y_bits``/``y_signed`` code range narrowed by ``y_min``/``y_max``."""
    bits = check_bits(y_bits, "y_bits", op)
    y_signed = check_bool(y_signed, "y_signed", op)
    z = scalar_int(y_zero_point, "y_zero_point", op)
    if bits == 1 and y_signed:
        raise ValueError(f"{op}: y_bits=1 with y_signed=True (binary codes) is not an output of requantization")
    lo, hi = code_range(bits, y_signed)
    if not lo <= z <= hi:
        raise ValueError(f"{op}: y_zero_point={z} is outside the output code range [{lo}, {hi}]")
    if y_min is not None:
        lo = max(lo, scalar_int(y_min, "y_min", op))
    if y_max is not None:
        hi = min(hi, scalar_int(y_max, "y_max", op))
    if lo > hi:
        raise ValueError(f"{op}: y_min={y_min} and y_max={y_max} leave an empty output range")
    return lo, hi


def pair(v: object, name: str, op: str, minimum: int) -> tuple[int, int]:
    """An int or an (h, w) pair as a pair of ints ``>= minimum``."""
    if hasattr(v, "tolist") and not isinstance(v, (np.integer, np.bool_)):  # an array or tensor
        listed = v.tolist()
        v = listed if isinstance(listed, list) else [listed]
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be an int or an (h, w) pair, got bool")
    if isinstance(v, (int, np.integer)):
        out = (int(v), int(v))
    else:
        try:
            items = tuple(cast(Iterable[Any], v))
        except TypeError:
            raise TypeError(f"{op}: {name} must be an int or an (h, w) pair, got {type(v).__name__}") from None
        if len(items) != 2 or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in items):
            raise ValueError(f"{op}: {name}={v!r} must be an int or an (h, w) pair of ints")
        out = (int(items[0]), int(items[1]))
    if min(out) < minimum:
        raise ValueError(f"{op}: {name}={v!r} must be >= {minimum}")
    return out
